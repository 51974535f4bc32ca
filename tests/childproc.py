"""`run`: `subprocess.run` for tests whose child process compiles JAX programs.

A child killed by SIGSEGV, SIGBUS or SIGABRT crashed inside native code (XLA has done so in
CI: a segfault while serialising an executable for the compilation cache). Under pytest-xdist
that crash is passed on to the worker, which exits, so the suite's crash policy (setup.cfg:
the test is run again on a fresh worker) covers crashes in children as it does in workers.
Any other exit status, including the signals a test sends on purpose, is the test's to judge.
"""
import os
import signal
import subprocess
import sys

CRASH_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT)
STDERR_FD = None  # the worker's real stderr: what goes to a test's captured one is lost on exit


def keep_stderr():
    """Call from `pytest_configure`, before any test's output is captured."""
    global STDERR_FD
    STDERR_FD = os.dup(2)


def run(cmd, **kwargs):
    """`subprocess.run(cmd, **kwargs)`; re-raises a crash of the child in the xdist worker."""
    p = subprocess.run(cmd, **kwargs)
    if -p.returncode in CRASH_SIGNALS and os.environ.get("PYTEST_XDIST_WORKER"):
        tail = p.stderr[-2000:] if isinstance(p.stderr, str) else ""
        msg = f"child {cmd[:3]} crashed with signal {-p.returncode}; stderr tail:\n{tail}\n"
        if STDERR_FD is not None:
            os.write(STDERR_FD, msg.encode())
        else:
            sys.stderr.write(msg)
            sys.stderr.flush()
        os._exit(70)
    return p
