"""Bad input to `python -m experiments.halfcheetah`: one line on stderr naming the flag, the
value and what is allowed; exit status 2; no traceback; nothing in the run directory touched;
nothing compiled (JAX_LOG_COMPILES=1 would add lines to stderr)."""
import hashlib
import json
import os
import sys

import pytest

from agdjax.config import Config, make_config
import childproc  # tests/childproc.py: a child's crash is rerun like a worker's

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ["--preset=smoke", "--backend=positional"]


@pytest.fixture
def fake_run(tmp_path):
    """A run directory as a smoke run leaves it (guide none, seed 0, 64 env steps)."""
    d = tmp_path / "run"
    (d / "checkpoints" / "1").mkdir(parents=True)
    cfg = make_config("halfcheetah", "smoke", guide="none", backend="positional")
    (d / "config.json").write_text(json.dumps({"config": cfg.to_dict(), "seeds": [0]}, indent=2))
    (d / "metrics.jsonl").write_text('{"seed": 0, "env_steps": 0, "eval_return": 1.0}\n')
    (d / "summary.json").write_text("{}")
    (d / "checkpoints" / "1" / "data").write_bytes(b"\x00" * 100)
    return d


def snapshot(d):
    out = {}
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.stat(p)
            digest = hashlib.sha256(open(p, "rb").read()).hexdigest() if os.path.isfile(p) else "dir"
            out[os.path.relpath(p, d)] = (digest, st.st_mtime_ns)
    return out


def run_cli(args, env_extra=None, module="experiments.halfcheetah"):
    env = dict(os.environ, JAX_LOG_COMPILES="1", JAX_PLATFORMS="cpu")
    env.update(env_extra or {})
    return childproc.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)


def check_fails(p, *needles):
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, (p.returncode, p.stderr[-3000:])
    assert len(lines) == 1, p.stderr[-3000:]
    assert lines[0].startswith("error: ") and "Traceback" not in p.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# (flags, what the message must name) -- each checked against an existing run directory
BAD_VALUES = [
    (["--guide=bogus"], ["--guide='bogus'", "none, sag, eag, reward"]),
    (["--agent=bogus"], ["--agent='bogus'", "a2c, ppo, trpo"]),
    (["--imagination=bogus"], ["--imagination='bogus'", "diffusion, oracle"]),
    (["--model_free", "--agent=ppo", "--imagination=oracle"], ["--imagination=oracle", "--model_free"]),
    (["--backend=bogus"], ["--backend='bogus'", "mjx, spring, positional, generalized"]),
    (["--preset=bogus"], ["--preset='bogus'", "auto, paper, cpu, smoke"]),
    (["--task=bogus"], ["--task='bogus'", "halfcheetah, hopper, walker2d, reacher"]),
    (["--task=hopper"], ["--task='hopper'", "experiments.hopper"]),
    (["--num_seeds=0"], ["--num_seeds=0", "positive"]),
    (["--num_seeds=-3"], ["--num_seeds=-3", "positive"]),
    (["--seed=-1"], ["--seed=-1", ">= 0"]),
    (["--total_env_steps=0"], ["--total_env_steps=0", "positive"]),
    (["--total_env_steps=-16"], ["--total_env_steps=-16", "positive"]),
    (["--total_env_steps=65"], ["--total_env_steps=65", "multiple of"]),
    (["--checkpoint_every=0"], ["--checkpoint_every=0", "positive"]),
    (["--iters_per_chunk=0"], ["--iters_per_chunk=0", "positive"]),
    (["--diffusion_steps_per_env_step=-1"], ["diffusion_steps_per_env_step=-1", "whole number"]),
    (["--diffusion_steps_per_env_step=0.01"], ["diffusion_steps_per_env_step=0.01", "whole number"]),
    (["--diffusion_steps_per_env_step=nan"], ["diffusion_steps_per_env_step=nan", "whole number"]),
    (["--checkpoint_every=-5"], ["--checkpoint_every=-5", "positive"]),
    (["--guide_scale=-1"], ["--guide_scale=-1", ">= 0"]),
    # sweeps: a comma-separated list of a SWEEPABLE setting
    (["--guide=sag", "--guide_scale=1,x"], ["--guide_scale='1,x'", "separated by commas"]),
    (["--guide=sag", "--guide_scale=3,nan"], ["--guide_scale='3,nan'", "separated by commas"]),
    (["--guide=sag", "--guide_scale=1,3,1"], ["--guide_scale=1.0,3.0,1.0", "repeats a value"]),
    (["--guide=sag", "--agent=ppo", "--actor_lr_max=1e-4,3e-4"], ["--actor_lr_max=0.0001,0.0003", "a2c"]),
    (["--guide=sag", "--actor_lr_max=0"], ["--actor_lr_max=0", "positive"]),
    (["--guide=sag", "--diffusion_lr=-1"], ["--diffusion_lr=-1", "positive"]),
    (["--guide=sag", "--guide_scale=0,-1"], ["--guide_scale=-1", ">= 0"]),
    (["--guide_scale=0,3"], ["--guide_scale=0,3", "--guide=none has no guide scale"]),
    (["--guide=sag", "--actor_lr_max=0,1e-4"], ["--actor_lr_max=0,0.0001", "positive"]),
    (["--model_free", "--agent=ppo", "--diffusion_lr=1e-4,3e-4"], ["--diffusion_lr=0.0001,0.0003",
                                                                  "--model_free"]),
    (["--sampling_steps=0"], ["--sampling_steps=0", "1..4"]),
    (["--sampling_steps=5"], ["--sampling_steps=5", "1..4", "diffusion steps"]),
    (["--denoiser_dtype=float16"], ["--denoiser_dtype='float16'", "float32, bfloat16"]),
    (["--num_seeds=abc"], ["--num_seeds=abc"]),
    (["--bogus_flag=1"], ["bogus_flag"]),
    (["--num_processes=2"], ["--num_processes", "need --distributed"]),
]


@pytest.mark.parametrize("flags,needles", BAD_VALUES, ids=[" ".join(f) for f, _ in BAD_VALUES])
def test_bad_value(fake_run, flags, needles):
    before = snapshot(fake_run)
    check_fails(run_cli(SMOKE + [f"--logdir={fake_run}", *flags]), *needles)
    assert snapshot(fake_run) == before


def test_seeds_not_divisible_by_devices(tmp_path):
    p = run_cli(SMOKE + ["--num_seeds=3", f"--logdir={tmp_path / 'new'}"],
                env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    check_fails(p, "--num_seeds=3", "over the 2 devices", "multiple of 2")
    assert not (tmp_path / "new").exists()


def test_distributed_single_process(tmp_path):
    """--distributed runs jax.distributed.initialize() (here: a coordinator on localhost, one
    process) and then the run as usual (model-free PPO: the driver's loop with the
    cheapest program to compile; the compile is not shared with other tests, its cache key
    names the distributed client)."""
    import socket
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    p = run_cli(SMOKE + ["--model_free", "--agent=ppo", "--distributed", f"--coordinator_address=localhost:{port}", "--num_processes=1",
                         "--process_id=0", "--progress=false", f"--logdir={tmp_path / 'run'}"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert "done: final eval return" in p.stdout
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert rows[-1]["env_steps"] == 64 and "eval_return" in rows[-1]


def test_unwritable_logdir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    check_fails(run_cli(SMOKE + [f"--logdir={blocker / 'run'}"]), f"--logdir={blocker / 'run'}",
                "not writable")
    assert blocker.read_text() == "keep me"


def test_logdir_holding_a_run_without_resume(fake_run):
    before = snapshot(fake_run)
    check_fails(run_cli(SMOKE + [f"--logdir={fake_run}"]), f"--logdir={fake_run}", "already holds a run",
                "--resume")
    assert snapshot(fake_run) == before


def test_resume_missing_run(tmp_path):
    check_fails(run_cli(SMOKE + ["--resume", f"--logdir={tmp_path / 'nothing'}"]), "--resume",
                f"--logdir={tmp_path / 'nothing'}", "no run")
    assert not (tmp_path / "nothing").exists()
    check_fails(run_cli(SMOKE + ["--resume"]), "--resume", "--logdir")


RESUME_MISMATCH = [
    (["--guide=sag"], ["--guide='sag'", "'none'", "only --total_env_steps"]),
    (["--preset=cpu"], ["--preset='cpu'", "'smoke'"]),
    (["--backend=spring"], ["--backend='spring'", "'positional'"]),
    (["--guide_scale=2.5"], ["--guide_scale=2.5"]),
    (["--guide_scale=0,3"], ["--guide_scale=0,3", "None"]),
    (["--num_seeds=2"], ["--seed/--num_seeds", "[0, 1]", "[0]"]),
    (["--seed=4"], ["--seed/--num_seeds", "[4]", "[0]"]),
    (["--total_env_steps=32"], ["--total_env_steps=32", "64"]),
]


@pytest.mark.parametrize("flags,needles", RESUME_MISMATCH, ids=[" ".join(f) for f, _ in RESUME_MISMATCH])
def test_resume_with_different_config(fake_run, flags, needles):
    before = snapshot(fake_run)
    check_fails(run_cli(SMOKE + ["--resume", f"--logdir={fake_run}", *flags]), *needles)
    assert snapshot(fake_run) == before


def test_task_flag_on_generic_entry_point(tmp_path):
    check_fails(run_cli(SMOKE, module="experiments"), "--task", "halfcheetah, hopper")
    check_fails(run_cli(SMOKE + ["--task=hopper", "--guide=bogus"], module="experiments"), "--guide='bogus'")


def test_scale_action_input_flag_and_resume_keep_the_runs_value():
    """--scale_action_input overrides the preset; without it the preset decides (cpu: False),
    and a resumed run keeps its saved values, preset ones included (cpu runs from before the
    changes used True and a 256x2 denoiser)."""
    from absl import flags
    from experiments import common
    f = flags.FLAGS

    def build(argv, saved=None, field="scale_action_input"):
        f.unparse_flags()
        f(["prog"] + argv)
        try:
            return getattr(common.build_config("halfcheetah", "cpu", saved), field)
        finally:
            f.unparse_flags()

    assert build(["--preset=cpu"]) is False
    assert build(["--preset=cpu", "--scale_action_input=true"]) is True
    assert build(["--preset=cpu"], saved=({"preset": "cpu", "scale_action_input": True}, [0])) is True
    old = ({"preset": "cpu", "scale_action_input": True, "denoiser_hidden": 256, "denoiser_blocks": 2,
            "c": 3.0, "a_field_since_removed": 1}, [0])
    assert build(["--preset=cpu"], saved=old, field="denoiser_hidden") == 256
    # a field the run's config.json predates takes its default, as the resume checks assume
    assert build(["--preset=cpu"], saved=old, field="n_diffusion_steps") == Config().n_diffusion_steps != 16
    assert build(["--preset=cpu"], field="denoiser_hidden") == make_config("halfcheetah", "cpu").denoiser_hidden
    assert build(["--preset=cpu", "--scale_action_input=false"], saved=old) is False
    # the state guide's last-row ablation: off unless asked for, kept on resume
    assert build(["--preset=cpu", "--guide=sag"], field="guide_last_row") is False
    assert build(["--preset=cpu", "--guide=sag", "--guide_last_row"], field="guide_last_row") is True
    assert build(["--preset=cpu"], saved=({"preset": "cpu", "guide": "sag", "guide_last_row": True}, [0]),
                 field="guide_last_row") is True
    # the simulator's action rule: the reference's 'clipped' unless asked for; kept on resume; a
    # run whose config.json predates the field ran 'raw' and resumes so (config._PREDATING_VALUES)
    assert build(["--preset=cpu"], field="env_action") == "clipped"
    assert build(["--preset=cpu", "--env_action=raw"], field="env_action") == "raw"
    assert build(["--preset=cpu"], saved=({"preset": "cpu", "env_action": "clipped"}, [0]),
                 field="env_action") == "clipped"
    assert build(["--preset=cpu"], saved=old, field="env_action") == "raw"


def test_sweep_flags_build_the_sweep_and_resume_keeps_it():
    """A SWEEPABLE flag with one value sets its field, with several the sweep; on --resume the
    run's sweep is kept, and one given again must match it."""
    from absl import flags
    from experiments import common
    f = flags.FLAGS

    def build(argv, saved=None):
        f.unparse_flags()
        f(["prog"] + argv)
        try:
            return common.build_config("halfcheetah", "cpu", saved)
        finally:
            f.unparse_flags()

    cfg = build(["--preset=cpu", "--guide=sag", "--guide_scale=0,1,3", "--actor_lr_max=1e-4,3e-4"])
    assert cfg.sweep == (("guide_scale", (0.0, 1.0, 3.0)), ("actor_lr_max", (1e-4, 3e-4)))
    assert cfg.guide_scale is None
    one = build(["--preset=cpu", "--guide=sag", "--guide_scale=2", "--diffusion_lr=1e-4"])
    assert one.sweep == () and one.guide_scale == 2.0 and one.diffusion_lr == 1e-4
    saved = ({**cfg.to_dict(), "c": [0.0, 1.0, 3.0]}, [0])
    assert build(["--preset=cpu"], saved=saved).sweep == cfg.sweep
    f.unparse_flags()
    f(["prog", "--guide_scale=0,1,3"])
    try:
        common.check_resume_flags(saved, "cpu", "somewhere")  # the same list: accepted
    finally:
        f.unparse_flags()
