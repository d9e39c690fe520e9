"""Errors that reach the user as one line and exit code 2, never as a traceback."""


class UsageError(Exception):
    """Bad flag, path or data. The message names the flag or file and what was expected."""

    exit_code = 2
