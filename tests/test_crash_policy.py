"""The suite's crash policy (setup.cfg, tests/childproc.py), run on a small inner session with
the project's own pytest settings: a test whose worker or child process crashes, or which
hangs past the faulthandler timeout, is run again on a fresh worker (up to twice); a failing
test is never rerun; a test that crashes every time fails; and the session ends."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SETUP_CFG = os.path.join(os.path.dirname(HERE), "setup.cfg")

INNER = '''
import os, sys, time, ctypes
import childproc
D = {d!r}

def once(name):
    first = not os.path.exists(os.path.join(D, name))
    open(os.path.join(D, name), "a").write("x")
    # the worker tells the controller a test's rerun budget as the test starts, without waiting
    # for an answer; a test that crashes within milliseconds can beat that message (the suite's
    # tests crash after seconds of compiling)
    time.sleep(0.5)
    return first

def test_worker_segfaults_once():
    if once("worker"):
        ctypes.string_at(0)

def test_child_segfaults_once():
    crash = "import ctypes; ctypes.string_at(0)" if once("child") else "pass"
    assert childproc.run([sys.executable, "-c", crash]).returncode == 0

def test_hangs_once():
    if once("hang"):
        time.sleep(120)

def test_fails():
    once("fails")
    assert False

def test_crashes_every_time():
    once("always")
    ctypes.string_at(0)
'''


def test_crashes_and_hangs_are_run_once_more_failures_are_not(tmp_path):
    (tmp_path / "test_inner.py").write_text(INNER.format(d=str(tmp_path)))
    (tmp_path / "conftest.py").write_text("import childproc\n\ndef pytest_configure(config):\n"
                                          "    childproc.keep_stderr()\n")
    env = dict(os.environ, PYTHONPATH=HERE)
    env.pop("PYTEST_XDIST_WORKER", None)
    p = subprocess.run([sys.executable, "-m", "pytest", "-c", SETUP_CFG, "--rootdir", str(tmp_path),
                        "-p", "no:cacheprovider", "-o", "faulthandler_timeout=5", str(tmp_path)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    summary = p.stdout.strip().splitlines()[-1]
    assert "2 failed, 3 passed, 5 rerun" in summary, p.stdout[-3000:]
    assert "FAILED" in p.stdout and "test_fails" in p.stdout and "test_crashes_every_time" in p.stdout
    assert "crashed with signal 11" in p.stderr  # the child's crash is reported, not lost
    runs = {name: (tmp_path / name).read_text() for name in ("worker", "child", "hang", "fails", "always")}
    assert runs == {"worker": "xx", "child": "xx", "hang": "xx", "fails": "x", "always": "xxx"}
