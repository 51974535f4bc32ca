"""Checkpoints, resuming and the non-finite guard (agdjax/checkpoint.py, agdjax/loop.py).

One smoke config (positional backend, total 128 env steps = 8 iterations = 5 chunks of 2,
the last of which only evaluates) is compiled once and reused by every test of this module
(loop.run keeps compiled programs per (config, n_seeds) in-process)."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agdjax import checkpoint as ckpt_lib
from agdjax import logging as runlog
from agdjax import loop
from agdjax.config import make_config
import childproc  # tests/childproc.py: a child's crash is rerun like a worker's

N = 128  # env steps: 8 iterations of 16


def cfg_for(total=N):
    return make_config("halfcheetah", "smoke", guide="sag", backend="positional", total_env_steps=total)


def strip(rows):
    """Rows without the wall-clock field."""
    return [{k: v for k, v in r.items() if k != "env_steps_per_s"} for r in rows]


def metric_lines(run_dir):
    return strip(runlog.read_rows(str(run_dir)))


def steps_of(run_dir):
    return ckpt_lib.Checkpointer(os.path.join(run_dir, "checkpoints"), read_only=True).all_steps()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """A run that never stopped, checkpointing every chunk: (dir, state, rows)."""
    d = tmp_path_factory.mktemp("full")
    state, rows, summary = loop.run(cfg_for(), [0], str(d), progress=False, checkpoint_every=32)
    assert summary["final_env_steps"] == N
    return d, state, rows


def abstract_state():
    return loop._compiled(cfg_for(), 1).abstract


def test_full_run_checkpoints(full_run):
    d, _, rows = full_run
    # every chunk saved (steps 1..5, the last one final); only the last 3 are kept
    assert steps_of(d) == [3, 4, 5]
    ck = ckpt_lib.Checkpointer(os.path.join(d, "checkpoints"), read_only=True)
    assert all(ck.check(s) is None for s in ck.all_steps())
    r = ck.restore_step(5, abstract_state())
    assert r.driver["final"] and r.driver["rows"] == len(rows) == 9
    r4 = ck.restore_step(4, abstract_state())
    assert not r4.driver["final"] and r4.driver["next_chunk"] == 4 and r4.driver["rows"] == 8
    # the PRNG key comes back as the same uint32 array
    assert r.state.key.dtype == jnp.uint32


def test_interrupted_run_resumes_exactly(full_run, tmp_path):
    """Stopped after 3 of 5 chunks (checkpoint every 2 chunks: the newest is before chunk 2, so
    chunk 2's rows are cut from metrics.jsonl and rewritten); resumed, it equals the run that
    never stopped: the same rows (but wall-clock env_steps_per_s) and the same final state."""
    d_full, state_full, rows_full = full_run
    cfg = cfg_for()
    with pytest.raises(loop._Interrupted):
        loop.run(cfg, [0], str(tmp_path), progress=False, checkpoint_every=64, _stop_after_chunk=2)
    assert steps_of(tmp_path) == [2]
    assert runlog.count_rows(str(tmp_path)) == 6  # iterations 0..5 were written
    state, rows, summary = loop.run(cfg, [0], str(tmp_path), progress=False, checkpoint_every=64,
                                    resume=True)
    assert summary["resumed_from_env_steps"] == 64
    assert strip(rows) == strip(rows_full)
    assert metric_lines(tmp_path) == metric_lines(d_full)
    assert len(metric_lines(tmp_path)) == 9
    assert ckpt_lib.trees_equal(state, state_full)
    assert steps_of(tmp_path) == [2, 4, 5]
    assert json.load(open(tmp_path / "summary.json"))["final_eval_return_mean"] == \
        json.load(open(d_full / "summary.json"))["final_eval_return_mean"]


def test_resume_finished_run_to_larger_budget(full_run, tmp_path):
    """A run of N/2 env steps that finished, resumed to N, equals a run of N from the start."""
    d_full, state_full, rows_full = full_run
    loop.run(cfg_for(N // 2), [0], str(tmp_path), progress=False, checkpoint_every=32)
    assert steps_of(tmp_path) == [1, 2, 3]  # 3 = final state of the short run
    state, rows, _ = loop.run(cfg_for(N), [0], str(tmp_path), progress=False, checkpoint_every=32,
                              resume=True)
    assert metric_lines(tmp_path) == metric_lines(d_full)
    assert strip(rows) == strip(rows_full)
    assert ckpt_lib.trees_equal(state, state_full)
    assert json.load(open(tmp_path / "config.json"))["config"]["total_env_steps"] == N


_RESUME_KILL_SCRIPT = r"""
import os, signal, sys
from agdjax import logging as runlog, loop
from agdjax.config import make_config
run_dir, sig, total = sys.argv[1], getattr(signal, sys.argv[2]), int(sys.argv[3])
def die(self, rows):  # the resumed run's first new rows are ready: killed just before writing them
    os.kill(os.getpid(), sig)
runlog.RunWriter.write_rows = die
cfg = make_config("halfcheetah", "smoke", guide="sag", backend="positional", total_env_steps=total)
loop.run(cfg, [0], run_dir, progress=False, checkpoint_every=32, resume=True)
print("not killed")
"""


def files_of(d):
    return {os.path.relpath(p, d): open(p, "rb").read() for p in map(str, d.rglob("*")) if os.path.isfile(p)}


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_resume_killed_before_its_first_chunk_changes_nothing(full_run, tmp_path, sig):
    """A finished run resumed to a larger budget and killed after compiling, restoring and
    computing its first chunk, before writing it: every file of the run is there, byte for
    byte (checkpoints, metrics.jsonl, config.json, summary.json, TensorBoard), and nothing
    was added; resuming it again ends as the run that never stopped."""
    d_full, state_full, _ = full_run
    run = tmp_path / "run"
    loop.run(cfg_for(N // 2), [0], str(run), progress=False, checkpoint_every=32)
    saved = json.load(open(run / "config.json"))["config"]
    assert saved["c"] == 3.0 and saved["guide_scale"] is None  # resolved: AGD-MBRL's halfcheetah sag scale
    before = files_of(run)
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5", JAX_PLATFORMS="cpu")
    p = childproc.run([sys.executable, "-c", _RESUME_KILL_SCRIPT, str(run), sig, str(N)], env=env,
                      capture_output=True, text=True, timeout=900)
    assert p.returncode == -getattr(signal, sig), p.stderr[-3000:]
    assert "from checkpoint step 2" in p.stdout
    after = files_of(run)
    assert sorted(after) == sorted(before)
    assert [k for k in before if after[k] != before[k]] == []
    state, _, _ = loop.run(cfg_for(N), [0], str(run), progress=False, checkpoint_every=32, resume=True)
    assert metric_lines(run) == metric_lines(d_full)
    assert ckpt_lib.trees_equal(state, state_full)
    assert json.load(open(run / "config.json"))["config"]["total_env_steps"] == N


def test_resume_refuses_other_config(full_run, tmp_path):
    d_full, _, _ = full_run
    shutil.copytree(d_full, tmp_path / "run")
    other = make_config("halfcheetah", "smoke", guide="none", backend="positional", total_env_steps=N)
    with pytest.raises(ValueError, match="guide"):
        loop.run(other, [0], str(tmp_path / "run"), progress=False, resume=True)
    with pytest.raises(ValueError, match="seeds"):
        loop.run(cfg_for(), [1], str(tmp_path / "run"), progress=False, resume=True)
    with pytest.raises(FileExistsError):  # not resuming: an existing run is never overwritten
        loop.run(cfg_for(), [0], str(tmp_path / "run"), progress=False, checkpoint_every=32)
    assert metric_lines(tmp_path / "run") == metric_lines(d_full)


def test_resume_complete_run_changes_nothing(full_run, tmp_path):
    d_full, state_full, rows_full = full_run
    run = tmp_path / "run"
    shutil.copytree(d_full, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    logs = []
    state, rows, summary = loop.run(cfg_for(), [0], str(run), progress=False, checkpoint_every=32,
                                    resume=True, log_fn=logs.append)
    assert any("already complete" in m for m in logs)
    assert rows == rows_full and summary["final_env_steps"] == N
    assert ckpt_lib.trees_equal(state, state_full)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def _largest_file(step_dir):
    files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs]
    return max(files, key=os.path.getsize)


@pytest.mark.parametrize("damage", ["truncate_largest", "truncate_metadata", "truncate_sharding",
                                    "no_manifest"])
def test_cut_short_checkpoint_is_detected(full_run, tmp_path, damage):
    """Files of the newest checkpoint cut short (or its save never finished): it is detected
    and the previous checkpoint is used."""
    d_full, _, _ = full_run
    ck_dir = tmp_path / "checkpoints"
    shutil.copytree(d_full / "checkpoints", ck_dir)
    step_dir = ck_dir / "5"
    target = {"truncate_largest": _largest_file(step_dir),
              "truncate_metadata": step_dir / "state" / "_METADATA",
              "truncate_sharding": step_dir / "state" / "_sharding",  # Orbax alone reads past this
              "no_manifest": step_dir / ckpt_lib.MANIFEST}[damage]
    if damage == "no_manifest":
        os.remove(target)
    else:
        with open(target, "r+b") as f:
            f.truncate(os.path.getsize(target) // 2)
    logs = []
    ck = ckpt_lib.Checkpointer(str(ck_dir), read_only=True, log_fn=logs.append)
    assert ck.check(5) is not None and ck.check(4) is None
    r = ck.restore(abstract_state())
    assert r.step == 4 and not r.driver["final"]
    assert any("skipping step 5" in m for m in logs)


def test_resume_after_cut_short_checkpoint(full_run, tmp_path):
    """A run whose newest checkpoint is damaged resumes from the previous one and still ends
    with the uninterrupted run's metrics; the damaged step is replaced."""
    d_full, state_full, _ = full_run
    run = tmp_path / "run"
    shutil.copytree(d_full, run)
    big = _largest_file(run / "checkpoints" / "5")
    with open(big, "r+b") as f:
        f.truncate(os.path.getsize(big) - 1)
    logs = []
    state, _, _ = loop.run(cfg_for(), [0], str(run), progress=False, checkpoint_every=32,
                           resume=True, log_fn=logs.append)
    assert any("skipping step 5" in m for m in logs) and any("from checkpoint step 4" in m for m in logs)
    assert metric_lines(run) == metric_lines(d_full)
    assert ckpt_lib.trees_equal(state, state_full)
    assert ckpt_lib.Checkpointer(str(run / "checkpoints"), read_only=True).check(5) is None


_KILL_SCRIPT = r"""
import os, signal, sys
import jax, jax.numpy as jnp
from agdjax import checkpoint as C
directory, where = sys.argv[1], sys.argv[2]
ck = C.Checkpointer(directory)
ck.save(1, {"w": jnp.arange(100.0), "key": jax.random.PRNGKey(0)}, {"step": 1})
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
if where == "before_rename":  # Orbax wrote every file into its tmp directory, not renamed yet
    from orbax.checkpoint._src.path import atomicity
    async def finalize(self):
        die()
    atomicity.AtomicRenameTemporaryPath.finalize = finalize
    atomicity.CommitFileTemporaryPath.finalize = finalize
else:  # renamed by Orbax, our manifest not written yet
    C.write_manifest = die
ck.save(2, {"w": jnp.arange(100.0) + 1, "key": jax.random.PRNGKey(1)}, {"step": 2})
print("not killed")
"""


@pytest.mark.parametrize("where", ["before_rename", "before_manifest"])
def test_save_killed_by_sigkill_leaves_previous_checkpoint(tmp_path, where):
    """A process SIGKILLed in the middle of a save: Orbax's tmp directory is never taken for
    a step, a renamed step without our manifest is not valid, and the previous step restores."""
    d = tmp_path / "ck"
    p = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(d), where], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    names = sorted(os.listdir(d))
    if where == "before_rename":
        assert names[0] == "1" and any(n.startswith("2.orbax-checkpoint-tmp") for n in names), names
    else:
        assert names == ["1", "2"]
    ck = ckpt_lib.Checkpointer(str(d), read_only=True, log_fn=lambda m: None)
    assert ck.valid_steps() == [1]
    abstract = {"w": jax.ShapeDtypeStruct((100,), jnp.float32), "key": jax.ShapeDtypeStruct((2,), jnp.uint32)}
    r = ck.restore(abstract)
    assert r.step == 1
    np.testing.assert_array_equal(r.state["w"], np.arange(100.0))
    np.testing.assert_array_equal(r.state["key"], np.asarray(jax.random.PRNGKey(0)))
    # a writer opening the directory again removes the unfinished tmp directory and saves on
    ck2 = ckpt_lib.Checkpointer(str(d))
    ck2.save(2, {"w": jnp.zeros(100), "key": jax.random.PRNGKey(2)}, {"step": 2})
    assert ck2.valid_steps() == [1, 2]
    assert sorted(os.listdir(d)) == ["1", "2"]


def test_nonfinite_metric_stops_run_and_keeps_checkpoint(full_run, tmp_path):
    """A NaN loss in chunk 2 stops the run with a message naming it, the seed and the env
    step; that state is not saved, the previous checkpoint restores, and resuming from it
    finishes with the uninterrupted run's metrics."""
    d_full, state_full, _ = full_run
    with pytest.raises(loop.NonFiniteError) as e:
        loop.run(cfg_for(), [0], str(tmp_path), progress=False, checkpoint_every=32,
                 _inject_nan_at_chunk=2, _inject_nan_into="diffusion_loss")
    msg = str(e.value)
    assert "\n" not in msg
    # chunk 2 = iterations 4, 5; the loss of iteration 4 is logged at env step 5 * 16
    assert re.search(r"non-finite diffusion_loss for seed 0 at env step 80\b", msg), msg
    assert "checkpoints/2" in msg
    assert steps_of(tmp_path) == [1, 2]  # step 3 (after chunk 2) was not saved
    assert runlog.count_rows(str(tmp_path)) == 4  # chunk 2's rows were not written
    r = ckpt_lib.Checkpointer(str(tmp_path / "checkpoints"), read_only=True).restore(abstract_state())
    assert r.step == 2 and loop.nonfinite_parameter(r.state, [0]) is None
    state, _, _ = loop.run(cfg_for(), [0], str(tmp_path), progress=False, checkpoint_every=32, resume=True)
    assert metric_lines(tmp_path) == metric_lines(d_full)
    assert ckpt_lib.trees_equal(state, state_full)


def test_nonfinite_parameter_stops_run(tmp_path):
    with pytest.raises(loop.NonFiniteError) as e:
        loop.run(cfg_for(), [0], str(tmp_path), progress=False, checkpoint_every=32,
                 _inject_nan_at_chunk=1, _inject_nan_into="params")
    msg = str(e.value)
    assert re.search(r"non-finite parameter agent\.actor\.\S+ for seed 0 at env step 64\b", msg), msg
    assert steps_of(tmp_path) == [1]
    assert ckpt_lib.Checkpointer(str(tmp_path / "checkpoints"), read_only=True).restore(abstract_state()).step == 1


def test_nonfinite_metric_detection_unit():
    """NaN placeholders (no evaluation, no agent update yet, the eval-only last iteration)
    are not errors; a NaN where the value was computed, or any inf, is; seeds are named."""
    cfg = cfg_for()  # E = 16, eval every 32, agent from 16 env steps, n_iters 8, 2 iterations per chunk
    nan = np.nan
    names = ("diffusion_loss", "actor_loss", "eval_return", "train_return")

    def metrics(**over):
        m = {k: np.ones((3, 2), np.float32) for k in names}
        m.update({k: np.asarray(v, np.float32) for k, v in over.items()})
        return m

    seeds = [5, 6, 7]
    # iterations 0, 1: eval only at 0, agent only from iteration 1, train_return may be NaN
    ok = metrics(eval_return=[[1, nan]] * 3, actor_loss=[[nan, 1]] * 3, train_return=[[nan, nan]] * 3)
    assert loop.nonfinite_metric(cfg, ok, 0, seeds) is None
    # iteration 8 = n_iters only evaluates, iteration 9 is padding
    last = metrics(diffusion_loss=[[nan, nan]] * 3, actor_loss=[[nan, nan]] * 3, eval_return=[[1, nan]] * 3)
    assert loop.nonfinite_metric(cfg, last, 8, seeds) is None
    bad = metrics(eval_return=[[1, nan]] * 3, actor_loss=[[1, 1], [1, nan], [1, nan]])
    assert loop.nonfinite_metric(cfg, bad, 0, seeds) == ("actor_loss", 32, [6, 7])
    inf = metrics(eval_return=[[1, nan]] * 3, train_return=[[1, 1], [1, 1], [np.inf, 1]])
    assert loop.nonfinite_metric(cfg, inf, 0, seeds) == ("train_return", 16, [7])
    ev = metrics(eval_return=[[nan, nan], [1, nan], [1, nan]])
    assert loop.nonfinite_metric(cfg, ev, 0, seeds) == ("eval_return", 0, [5])


def test_plot_cli(full_run, tmp_path):
    d_full, _, _ = full_run
    other = tmp_path / "other"
    shutil.copytree(d_full, other, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    cfg = json.load(open(other / "config.json"))
    cfg["config"]["guide"] = "none"
    json.dump(cfg, open(other / "config.json", "w"))
    out = tmp_path / "both.png"
    p = subprocess.run([sys.executable, "-m", "agdjax.plot", str(d_full), str(other), "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert out.stat().st_size > 1000
    from agdjax.plot import labelled_runs
    assert [label for label, _ in labelled_runs([str(d_full), str(other)])] == \
        ["halfcheetah sag", "halfcheetah none"]
    p = subprocess.run([sys.executable, "-m", "agdjax.plot", str(tmp_path / "missing")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "missing" in p.stderr


def test_cli_resume_continues_with_the_runs_flags(full_run, tmp_path):
    """`python -m experiments.halfcheetah --logdir=RUN --resume --total_env_steps=N` on a
    finished run of N/2 steps: the other flags come from the run, and the finished
    metrics.jsonl equals the one of the run of N that never stopped (compiled programs come
    from the persistent cache of this test session)."""
    d_full, _, _ = full_run
    run = tmp_path / "run"
    loop.run(cfg_for(N // 2), [0], str(run), progress=False, checkpoint_every=32)
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5", JAX_PLATFORMS="cpu")
    p = childproc.run([sys.executable, "-m", "experiments.halfcheetah", f"--logdir={run}", "--resume",
                       f"--total_env_steps={N}", "--checkpoint_every=32", "--progress=false"],
                      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env=env,
                      capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "preset=smoke" in p.stdout and "backend=positional" in p.stdout and "guide=sag" in p.stdout
    assert "(resume)" in p.stdout and "from checkpoint step 2" in p.stdout
    assert metric_lines(run) == metric_lines(d_full)


def test_save_due_schedule():
    """Known answers of the checkpoint schedule (loop._save_due): every `every_chunks` chunks
    after the first, always before the last chunk, never with checkpoints off, and not the
    state a resume started from."""
    def due(every, n, resumed_at=None):  # the chunks the loop runs: from the one a resume restored
        return [c for c in range(resumed_at or 0, n) if loop._save_due(c, every, n, resumed_at)]
    assert due(2, 6) == [2, 4, 5]
    assert due(1, 3) == [1, 2]
    assert due(None, 6) == []
    assert due(2, 6, resumed_at=4) == [5]  # 4 is the checkpoint the resume restored
    assert due(2, 6, resumed_at=2) == [4, 5]
    assert due(10, 6) == [5]
