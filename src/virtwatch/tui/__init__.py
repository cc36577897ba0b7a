"""The Textual dashboard and the command line: the composition root lives in `cli.py`."""
