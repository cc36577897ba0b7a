"""One module per command: `run_*(args) -> exit code`."""
