"""Errors that reach the user as one line and an exit code, never as a traceback."""
import sys


class UserFacingError(Exception):
    """A failure the user can act on; the message names the file or flag involved."""

    exit_code = 1


class UsageError(UserFacingError):
    """Bad flag, path or data. The message names the flag or file and what was expected."""

    exit_code = 2


def run_cli(action, *args):
    """Run a command's body; turn user-facing errors into one stderr line and an exit code."""
    try:
        action(*args)
    except UserFacingError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
