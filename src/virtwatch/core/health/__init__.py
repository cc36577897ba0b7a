"""Health: the registry and monitor of checks, and the checks virtwatch runs."""
