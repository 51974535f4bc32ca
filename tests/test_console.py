"""What a run prints: --help lists the project's flags; without a terminal, plain progress
lines instead of a bar; no third-party INFO logging (Orbax, absl) or import noise by default."""
import io
import os
import re
import sys

import pytest

from agdjax import logging as runlog
import childproc  # tests/childproc.py: a child's crash is rerun like a worker's

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRESS = re.compile(r"^env steps [\d,]+/[\d,]+ \(\d+%\), [\d,]+ env steps/s, eval return (-?\d+\.\d|n/a) "
                      r"\(mean over seeds, last evaluation\), ETA \d\d:\d\d:\d\d$")


def run_module(args, module="experiments.halfcheetah", **kwargs):
    env = dict(os.environ, JAX_LOG_COMPILES="1", JAX_PLATFORMS="cpu")
    return childproc.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, text=True,
                         timeout=900, **kwargs)


@pytest.mark.parametrize("module", ["experiments.halfcheetah", "experiments"])
def test_help_lists_the_projects_flags(module):
    p = run_module(["--help"], module=module, capture_output=True)
    assert p.returncode == 0, p.stderr[-2000:]
    for flag in ("--guide:", "--guide_scale:", "--agent:", "--preset:", "--log_level:", "--progress_every_s:"):
        assert flag in p.stdout, flag
    assert "none, sag, eag, reward" in p.stdout and "<warning|info|debug>" in p.stdout
    assert "Compiling" not in p.stderr  # nothing compiled


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_plain_progress_lines():
    """Without a terminal: a line after a chunk once every_s seconds passed, and the last state
    at close; env steps/s and ETA from the average rate."""
    clock, lines = FakeClock(), []
    p = runlog.Progress(1000, tty=False, every_s=30.0, print_fn=lines.append, clock=clock)
    for step, t in [(100, 10), (200, 20), (300, 31), (400, 40), (500, 50), (600, 62)]:
        clock.t = t
        p.update(step, 0.0, float("nan") if step < 300 else 12.345)
    assert lines == ["env steps 300/1,000 (30%), 10 env steps/s, eval return 12.3 (mean over seeds, "
                     "last evaluation), ETA 00:01:12",
                     "env steps 600/1,000 (60%), 10 env steps/s, eval return 12.3 (mean over seeds, "
                     "last evaluation), ETA 00:00:41"]
    clock.t = 70
    p.update(700, 0.0, 20.0)
    p.close()
    assert len(lines) == 3 and lines[-1].startswith("env steps 700/1,000 (70%)")
    assert all(PROGRESS.match(line) for line in lines)
    # a state already printed is not printed again at close; disabled: nothing
    p = runlog.Progress(10, tty=False, every_s=0.0, print_fn=lines.append, clock=clock)
    p.update(10, 0.0, 1.0)
    p.close()
    assert len(lines) == 4
    p = runlog.Progress(10, enabled=False, tty=False, every_s=0.0, print_fn=lines.append, clock=clock)
    p.update(10, 0.0, 1.0)
    p.close()
    assert len(lines) == 4


def test_drop_lines_and_mujoco_warning(capsys):
    out = io.StringIO()
    f = runlog._DropLines(out, runlog._WARP_LINES)
    print("Failed to import warp:", "No module named 'warp'", file=f)
    print("keep", "me", file=f)
    print("Failed to import mujoco_warp: x\nalso kept", end="", file=f)
    f.flush()
    assert out.getvalue() == "keep me\nalso kept"
    runlog._mujoco_warning("compiler attribute 'settotalmass' is deprecated and will be removed")
    runlog._mujoco_warning("Nan, Inf or huge value in QACC at DOF 0")
    assert capsys.readouterr().err == "WARNING: Nan, Inf or huge value in QACC at DOF 0\n"


def test_smoke_run_output_without_a_terminal(tmp_path):
    """stdout to a file: the compile lines, plain progress, and no Orbax/absl INFO lines or
    warp/settotalmass noise on stdout or stderr."""
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out, "w") as fo, open(err, "w") as fe:
        p = run_module(["--preset=smoke", "--backend=spring", f"--logdir={tmp_path / 'run'}",
                        "--checkpoint_every=32"], stdout=fo, stderr=fe)
    stdout, stderr = out.read_text(), err.read_text()
    assert p.returncode == 0, stderr[-3000:]
    both = stdout + stderr
    for noise in ("CheckpointManager", "Finalize", "Failed to import", "settotalmass", "Using JAX default device"):
        assert noise not in both, noise
    assert not re.search(r"^I\d{4} ", both, re.M)  # absl's INFO format
    lines = stdout.splitlines()
    assert lines[1].startswith("compiling the training program (halfcheetah, spring backend, guide none, "
                               "smoke preset, 1 seed); XLA's output is cached in ")
    assert re.match(r"^compiled in \d+\.\d s$", lines[2])
    progress = [line for line in lines if line.startswith("env steps")]
    assert len(progress) == 1 and PROGRESS.match(progress[0]) and "64/64 (100%)" in progress[0]
    assert lines[-1].startswith("done: final eval return")
    assert os.path.isdir(tmp_path / "run" / "checkpoints" / "3")  # Orbax did save, quietly
