"""Errors that reach the user as one line and an exit code, never as a traceback, and the
one wrapper every command line runs its body in."""
import os
import sys

TRACEBACK_VARIABLE = "DAVIDNET_TRACEBACK"  # set to 1: an unexpected error shows its traceback


class UserFacingError(Exception):
    """A failure the user can act on; the message names the file or flag involved."""

    exit_code = 1


class UsageError(UserFacingError):
    """Bad flag, path or data. The message names the flag or file and what was expected."""

    exit_code = 2


class Stopped(UserFacingError):
    """The work stopped before its end, having kept what it had: a signal (exit 128 +
    signal number, a checkpoint saved) or a child run that stopped (its exit code)."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


def cause(error, limit=300):
    """An exception in one line: its type and the first line of its message (at most
    `limit` characters), for a message that says why something failed."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:limit]}" if lines else type(error).__name__


def run_cli(action, *args):
    """Run a command's body (parsing included); its int result is the exit code (None: 0).
    User-facing errors become one stderr line and their exit code; Ctrl-C 130; anything
    unexpected one line and exit 1 (its traceback with DAVIDNET_TRACEBACK=1)."""
    try:
        result = action(*args)
    except UserFacingError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        print(f"error: unexpected {cause(e)} (set {TRACEBACK_VARIABLE}=1 for the traceback)",
              file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0
