"""What the benchmark commands share: a parser whose errors are one line, and the one-line
failure (exit status 2)."""
from __future__ import annotations

import argparse
import sys


class UsageError(Exception):
    """Bad command-line input; the message is the one line shown."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: raises UsageError instead of printing the usage block."""

    def error(self, message):
        raise UsageError(message)


def fail(msg) -> int:
    """Prints `error: msg` as one line on stderr; returns the exit status 2."""
    print(f"error: {' '.join(str(msg).split())}", file=sys.stderr)
    return 2
