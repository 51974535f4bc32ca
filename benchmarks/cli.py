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


def write_json(res: dict, path: str) -> None:
    """Writes `res` as JSON to `path` (its folder made; written beside and renamed in, so a
    killed benchmark never leaves half a file or destroys an earlier one)."""
    import json
    import os
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=2)
    os.replace(tmp, path)


def write_result(res: dict, path: str, text: str) -> None:
    """`write_json(res, path)`, then prints `text` and the path."""
    write_json(res, path)
    print(text)
    print(f"wrote {path}")
