"""One command-line convention for every entry point, framework-free: a parser whose errors
are one line (`error: ...`) and exit code 2, with no usage dump, and argparse types that
check a value's range and say what was expected."""
import argparse

from legacy_eager.errors import UsageError


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (run_cli prints it), no usage dump
        raise UsageError(message)


def checked(kind, expected, ok):
    """An argparse type: parse with `kind`, then require ok(value)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value
    return parse


def positive(kind, name):
    return checked(kind, f"a positive {name}", lambda v: v > 0)


def non_negative(kind, name):
    return checked(kind, f"a {name} >= 0", lambda v: v >= 0)


fraction = checked(float, "a number in [0, 1)", lambda v: 0 <= v < 1)  # a rate: momentum, dropout
