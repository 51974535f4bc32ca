"""Reference side of the throughput table (issue 11): the public PyTorch AGD-MBRL code, timed
on this machine (torch on the CPU, fp32, 2 threads), paper HalfCheetah settings, random weights.

    /work/torchvenv/bin/python benchmarks/reference_torch.py \\
        --reference_dir=/work/ref/AGD-MBRL --polygrad_dir=/work/ref/polygrad-world-models \\
        --repeats=3 --out=docs/data/issue11/reference_torch_cpu.json

Run with a torch environment of its own (`python3 -m venv /work/torchvenv &&
/work/torchvenv/bin/pip install torch numpy einops`); this script imports neither jax nor
agdjax, and torch is no dependency of the project. The two checkouts are exports of the public
repositories: `danielefoffano/AGD-MBRL` (the paper's code, measured at d5da436) and
`marc-rigter/polygrad-world-models` (PolyGRAD, 62d0054; only its reverse step is used, for the
unguided measure). The JSON records the SHA-256 of every reference file used.

Nothing of the reference is copied here: its own classes are imported from the checkout and
built exactly as its `scripts/online_rl.py` builds them, through its `polygrad.utils.
create_configs` and its config `config/online_rl/cheetah.py` (on `config/base_config.py`):
`ResidualMLPDenoiser` (6 blocks of width 1024), `GaussianDiffusion` (T = 128, x0 prediction),
`OnlineSequenceDataset` (GaussianNormalizer), `Trainer` (Adam 3e-4, batch 256, EMA 0.99 every 10
steps), `ActorCritic` (2x256 LayerNorm ELU) and `DiffusionWMAgent` (policy guidance 'grad',
clip_std 3, clamp 0.25 for t <= 10). The data are 5 random 1000-step episodes (the config's
5000 prefill steps), obs 17, action 6; all weights are the random initial ones.

Measures (each is preceded by `--warmup` / `--train_warmup` untimed calls; the median of
`--repeats` timed calls is reported, and sag and unguided calls alternate so that a change of load hits both):
1. `sag` imagination: `DiffusionWMAgent.imagine` on 512 start states (the config's
   agent_batch_size), horizon 10, 128 reverse steps, as the reference always runs it: at every
   step the denoiser, the policy-guidance step on the actions (actor forward, log-prob
   gradient) and, for t >= 1, the state-advantage guide (critic forward and input gradient of
   sum log sigmoid(A), U = V = sigma^2 I, scale 4, posterior recomputed). transitions/s =
   512 * 10 / seconds per call.
2. unguided imagination: the AGD reference has no switch for its state guide (it is
   unconditional in `polygrad/sampling/functions.py::policy_guided_sample_fn`; its
   `guidance_type` only selects the action guidance). So the same agent call is timed with
   that function swapped, inside `polygrad.models.diffusion`, for PolyGRAD's own
   `policy_guided_sample_fn` (the AGD one less the guide block; a wrapper drops the two extra
   arguments AGD passes it). Policy guidance is kept: PolyGRAD always applies it.
3. guide cost = sag seconds / unguided seconds.
4. denoiser training: `Trainer.train(10)`, i.e. 10 optimizer steps of batch 256 windows of
   horizon 10 (forward, x0 loss with its per-step `.item()` metrics, backward, Adam) and the one
   EMA update those 10 steps contain (the reference updates its EMA every 10 steps, after step
   2000, so the trainer is started at step 2001). windows/s = 10 * 256 / seconds per call. It
   includes the reference's data loading (its DataLoader over `OnlineSequenceDataset`, 256
   `__getitem__` calls and collation per step); the same call with the loader replaced by one
   pre-collated batch is reported beside it as `model_only`.

Not timed: the world-model error check the trainer runs every 10000 steps against the
simulator (`sample_freq` set to 0) and the actor-critic update that follows imagination.

Adapter (no reference code changed): `polygrad/__init__.py` is not run (it registers the gym
MuJoCo environments, which need gym and mujoco), by entering the package into `sys.modules`
with its path only; modules the imported code names but never calls at these settings are
stubbed when absent: `scipy` (`scipy.stats.chi`, `scipy.interpolate`), `git` (GitPython),
`tap` (typed-argument-parser) and `dill`. The reference runs its denoiser under
`torch.autocast(device_type="cuda")` and a CUDA `GradScaler`; on a CPU torch disables both, so
everything here is fp32.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import io
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import types
import warnings

# Run as a file, Python puts benchmarks/ first on sys.path, where profile.py would shadow the
# standard library's `profile` (which torch imports).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402

OBS_DIM, ACT_DIM, SIM_STATE_DIM = 17, 6, 18  # HalfCheetah: observation, action, qpos + qvel
EMA_START, EMA_EVERY = 2000, 10  # reference Trainer defaults (polygrad/utils/training.py)
STUBBED = ("scipy", "scipy.stats", "scipy.interpolate", "scipy.spatial", "scipy.spatial.transform",
           "git", "tap", "dill")
REFERENCE_FILES = ("config/base_config.py", "config/online_rl/cheetah.py", "polygrad/models/diffusion.py",
                   "polygrad/models/mlp_denoiser_network.py", "polygrad/models/helpers.py",
                   "polygrad/sampling/functions.py", "polygrad/utils/training.py", "polygrad/utils/config.py",
                   "polygrad/agent/a2c.py", "polygrad/agent/common.py", "polygrad/agent/functions.py",
                   "polygrad/agent/diffusion_wm_agent.py", "polygrad/datasets/sequence.py",
                   "polygrad/datasets/normalization.py", "polygrad/datasets/buffer.py")
UPSTREAM_STEP_FILE = "polygrad/sampling/functions.py"


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference_dir", required=True, help="export of danielefoffano/AGD-MBRL")
    p.add_argument("--polygrad_dir", default=None,
                   help="export of marc-rigter/polygrad-world-models (for the unguided measure; "
                        "without it that measure is reported as not taken)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per measure (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before each imagination measure")
    p.add_argument("--train_warmup", type=int, default=1,
                   help="untimed calls before each training measure (the first allocates Adam's state)")
    p.add_argument("--train_steps", type=int, default=EMA_EVERY,
                   help="optimizer steps per timed training call (10 = one EMA period)")
    p.add_argument("--only", default="imagination,training", help="imagination, training or both")
    p.add_argument("--n_diffusion_steps", type=int, default=None,
                   help="override T (smoke checks only; the JSON then says paper_settings=false)")
    p.add_argument("--batch", type=int, default=None,
                   help="override the imagination batch (smoke checks only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/reference_torch_cpu.json", help="JSON path")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- adapter
def _stub_module(name: str) -> types.ModuleType:
    """An empty module whose every attribute is a fresh placeholder class (so `from x import
    Y`, `class P(Y)` and `import x as y` succeed); calling into it is never needed here."""
    mod = types.ModuleType(name)
    mod.__path__ = []  # a package, so that stubbed submodules can be imported from it
    mod.__reference_stub__ = True
    cache = {}

    def __getattr__(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return cache.setdefault(attr, type(attr, (), {"__module__": name}))

    mod.__getattr__ = __getattr__
    return mod


def stub_missing_modules(names=STUBBED) -> list[str]:
    """Enters a stub into `sys.modules` for each name in `names` that is not installed; returns
    the names stubbed."""
    stubbed = []
    for name in names:
        top = name.split(".")[0]
        if top not in stubbed and importlib.util.find_spec(top) is not None:
            continue
        sys.modules[name] = _stub_module(name)
        stubbed.append(name)
    return stubbed


def import_reference(reference_dir: str) -> types.SimpleNamespace:
    """Imports the reference's modules from `reference_dir`, with `polygrad/__init__.py` (gym
    environment registration) skipped and absent unused dependencies stubbed."""
    reference_dir = os.path.abspath(reference_dir)
    sys.path.insert(0, reference_dir)
    stubbed = stub_missing_modules()
    pkg = types.ModuleType("polygrad")
    pkg.__path__ = [os.path.join(reference_dir, "polygrad")]
    sys.modules["polygrad"] = pkg
    utils = importlib.import_module("polygrad.utils")
    return types.SimpleNamespace(
        dir=reference_dir, stubbed=stubbed, utils=utils,
        diffusion=importlib.import_module("polygrad.models.diffusion"),
        sampling=importlib.import_module("polygrad.sampling.functions"),
        cheetah=importlib.import_module("config.online_rl.cheetah"))


def load_upstream_step(polygrad_dir: str):
    """PolyGRAD's `policy_guided_sample_fn` (no state guide), loaded from its own file under a
    private module name, wrapped to accept and drop the `value_f` and `sample_c` arguments that
    AGD's `p_sample_loop` passes. Its imports (`polygrad.models.helpers.extract`,
    `apply_conditioning`) resolve to AGD's helpers, which are the same functions."""
    path = os.path.join(os.path.abspath(polygrad_dir), UPSTREAM_STEP_FILE)
    spec = importlib.util.spec_from_file_location("polygrad_upstream_sampling_functions", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def unguided_step(*args, value_f=None, sample_c=None, **kwargs):
        return mod.policy_guided_sample_fn(*args, **kwargs)

    return unguided_step, path


@contextlib.contextmanager
def reverse_step(ref, step_fn):
    """Within the block, AGD's `p_sample_loop` uses `step_fn` as its policy-guided reverse step
    (it looks the module global `policy_guided_sample_fn` up at call time)."""
    original = ref.diffusion.policy_guided_sample_fn
    ref.diffusion.policy_guided_sample_fn = step_fn
    try:
        yield
    finally:
        ref.diffusion.policy_guided_sample_fn = original


# ----------------------------------------------------------------------------- setup
class _SpaceShape:
    """What `create_configs` reads of a gym space: its shape."""

    def __init__(self, dim):
        self.shape = (dim,)


class FakeEnv:
    """Stands in for the gym env in `create_configs` (observation and action sizes only); the
    trainer and agent keep it for evaluation, which is not timed."""
    observation_space = _SpaceShape(OBS_DIM)
    action_space = _SpaceShape(ACT_DIM)


def paper_args(ref, savepath: str, overrides: dict) -> types.SimpleNamespace:
    """The reference's HalfCheetah config (`config/online_rl/cheetah.py` over `base_config.py`)
    as the argument namespace `create_configs` expects."""
    cfg = dict(ref.cheetah.base)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return types.SimpleNamespace(**cfg, savepath=savepath)


def random_episodes(n_steps: int, episode_len: int, rng: np.random.Generator) -> list[dict]:
    """Episodes shaped like `scripts/online_rl.py`'s (random numbers, no terminal)."""
    eps = []
    for _ in range(n_steps // episode_len):
        obs = rng.normal(size=(episode_len + 1, OBS_DIM)).astype(np.float32)
        eps.append({"observations": obs[:-1], "next_observations": obs[1:],
                    "actions": rng.uniform(-1, 1, (episode_len, ACT_DIM)).astype(np.float32),
                    "rewards": rng.normal(size=episode_len).astype(np.float32),
                    "terminals": np.zeros(episode_len, bool), "timeouts": np.zeros(episode_len, bool),
                    "sim_states": rng.normal(size=(episode_len, SIM_STATE_DIM))})
    return eps


def build(ref, args, seed: int) -> types.SimpleNamespace:
    """Dataset, denoiser, diffusion, trainer, actor-critic and agent, built with the calls of
    `scripts/online_rl.py` (random weights); the reference's config printing is silenced."""
    episodes = random_episodes(args.n_prefill_steps, args.max_path_length, np.random.default_rng(seed))
    with contextlib.redirect_stdout(io.StringIO()):
        configs = ref.utils.create_configs(args, FakeEnv())
        model = configs["model_config"]()
        diffusion = configs["diffusion_config"](model)
        dataset = configs["dataset_config"](episodes)
        trainer = configs["trainer_config"](diffusion, dataset, FakeEnv(), None)
        ac = configs["ac_config"](normalizer=dataset.normalizer)
        agent = configs["agent_config"](diffusion_model=trainer.ema_model, actor_critic=ac,
                                        dataset=dataset, env=FakeEnv(), renderer=None)
    return types.SimpleNamespace(model=model, diffusion=diffusion, dataset=dataset, trainer=trainer,
                                 ac=ac, agent=agent)


def start_conditions(dataset, batch: int) -> dict:
    """One batch of start states as the agent receives them (`online_rl.py`'s agent_dataloader):
    {0: [batch, obs_dim]} normalised observations."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=0, shuffle=True)
    return next(iter(loader)).conditions


# ----------------------------------------------------------------------------- timing
def timed(fn, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls of `fn()`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def summary(times: list[float], items_per_call: int, unit: str, what: str) -> dict:
    """Median seconds per call, items per second and the raw times."""
    med = statistics.median(times)
    return {f"{unit}_per_s": items_per_call / med, "s_per_call": med, "times_s": times,
            f"{unit}_per_call": items_per_call, "what": what}


def measure_imagination(ref, built, batch: int, horizon: int, steps: int, cli, step_fn) -> dict:
    """sag and unguided imagination, calls alternating; see the module docstring."""
    cond = start_conditions(built.dataset, batch)
    sag = lambda: built.agent.imagine(dict(cond), step=1)

    def unguided():
        with reverse_step(ref, step_fn):
            built.agent.imagine(dict(cond), step=1)

    fns = {"sag": sag} if step_fn is None else {"sag": sag, "unguided": unguided}
    for name, fn in fns.items():
        timed(fn, cli.warmup, 0)
    times = {name: [] for name in fns}
    for _ in range(cli.repeats):
        for name, fn in fns.items():
            times[name] += timed(fn, 0, 1)
    n = batch * horizon
    res = {"batch": batch, "horizon": horizon, "n_diffusion_steps": steps,
           "sag": summary(times["sag"], n, "transitions",
                          "DiffusionWMAgent.imagine: AGD p_sample_loop with policy_guided_sample_fn "
                          "(denoiser + policy guidance 'grad' + state-advantage guide for t >= 1)")}
    if step_fn is None:
        res["unguided"] = {"not_measured": "no --polygrad_dir: the AGD reference cannot switch its "
                                           "state guide off, PolyGRAD's reverse step is needed"}
        return res
    res["unguided"] = summary(times["unguided"], n, "transitions",
                              "the same call with PolyGRAD's policy_guided_sample_fn (denoiser + policy "
                              "guidance 'grad', no state guide)")
    res["guide_cost"] = res["sag"]["s_per_call"] / res["unguided"]["s_per_call"]
    return res


def measure_training(built, batch: int, horizon: int, cli) -> dict:
    """Trainer.train(n) at the paper batch, with the reference's loader and with one fixed batch."""
    trainer = built.trainer
    trainer.sample_freq = 0  # the 10000-step world-model check against the simulator
    trainer.step = EMA_START + 1
    n = cli.train_steps
    call = lambda: trainer.train(n, current_step=trainer.step)
    quiet = lambda: contextlib.redirect_stdout(io.StringIO())  # its loss print every 100 steps
    with quiet():
        t_full = timed(call, cli.train_warmup, cli.repeats)
        loader = trainer.dataloader
        trainer.dataloader = itertools.repeat(next(loader))
        t_model = timed(call, cli.train_warmup, cli.repeats)
        trainer.dataloader = loader
    what = (f"Trainer.train({n}): {n} x (batch from its DataLoader over OnlineSequenceDataset, "
            f"GaussianDiffusion.loss, backward, Adam) + EMA every {EMA_EVERY} steps")
    res = {"batch": batch, "horizon": horizon, "steps_per_call": n,
           "ema_updates_per_call": n / EMA_EVERY,  # on average over calls; exactly 1 at n = 10
           **summary(t_full, n * batch, "windows", what),
           "model_only": summary(t_model, n * batch, "windows",
                                 what.replace("batch from its DataLoader over OnlineSequenceDataset",
                                              "one pre-collated batch"))}
    res["s_per_step"] = res["s_per_call"] / n
    return res


# ----------------------------------------------------------------------------- report
def file_hashes(root: str, paths) -> dict:
    """SHA-256 of each reference file used, to tell the version measured."""
    return {p: hashlib.sha256(open(os.path.join(root, p), "rb").read()).hexdigest() for p in paths}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform.processor())."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def table(res: dict) -> str:
    """The short markdown table printed at the end."""
    lines = [f"torch {res['torch']} CPU, {res['threads']} threads, fp32; load average "
             f"{res['load_average_start'][0]:.2f} -> {res['load_average_end'][0]:.2f}",
             "", "| measure | value | s per call | timed |", "|---|---|---|---|"]
    im = res.get("imagination")
    if im:
        for name in ("sag", "unguided"):
            v = im[name]
            if "not_measured" in v:
                lines.append(f"| {name} imagination | not measured | | {v['not_measured']} |")
            else:
                lines.append(f"| {name} imagination, transitions/s | {v['transitions_per_s']:.0f} | "
                             f"{v['s_per_call']:.2f} | {v['what']} |")
        if "guide_cost" in im:
            lines.append(f"| guide cost (sag / unguided) | {im['guide_cost']:.2f} | | |")
    tr = res.get("denoiser_training")
    if tr:
        for label, v in (("", tr), (" (model only)", tr["model_only"])):
            lines.append(f"| denoiser training{label}, windows/s | {v['windows_per_s']:.0f} | "
                         f"{v['s_per_call']:.3f} | {v['what']} |")
    return "\n".join(lines)


def write_json(res: dict, path: str) -> None:
    """Writes `res` to `path` (folder made; written beside and renamed in)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=2)
    os.replace(tmp, path)


def main(argv=None) -> int:
    cli = parse_args(argv)
    only = set(cli.only.split(","))
    torch.set_num_threads(cli.threads)
    torch.manual_seed(cli.seed)
    np.random.seed(cli.seed)  # the reference's dataset samples windows with np.random
    warnings.filterwarnings("ignore", message=".*CUDA is not available.*")
    warnings.filterwarnings("ignore", message=".*torch.cuda.amp.GradScaler.*")
    ref = import_reference(cli.reference_dir)
    res = {"torch": torch.__version__, "threads": torch.get_num_threads(),
           "interop_threads": torch.get_num_interop_threads(), "dtype": "float32", "device": "cpu",
           "cpu": cpu_model(), "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M"),
           "load_average_start": list(os.getloadavg()), "repeats": cli.repeats, "warmup": cli.warmup,
           "train_warmup": cli.train_warmup,
           "statistic": "median", "stubbed_modules": ref.stubbed,
           "paper_settings": cli.n_diffusion_steps is None and cli.batch is None,
           "reference_files": file_hashes(ref.dir, REFERENCE_FILES)}
    step_fn = None
    if cli.polygrad_dir:
        step_fn, path = load_upstream_step(cli.polygrad_dir)
        res["polygrad_files"] = file_hashes(cli.polygrad_dir, [UPSTREAM_STEP_FILE])
    with tempfile.TemporaryDirectory() as savepath:
        args = paper_args(ref, savepath, {"n_diffusion_steps": cli.n_diffusion_steps})
        built = build(ref, args, cli.seed)
    res["config"] = {k: getattr(args, k) for k in (
        "env_name", "horizon", "n_diffusion_steps", "hidden_dim", "num_layers", "embed_dim", "batch_size",
        "agent_batch_size", "learning_rate", "ema_decay", "guidance_type", "guidance_scale", "clip_std",
        "clip_state_change", "states_for_guidance", "update_states", "predict_epsilon", "noise_sched_tau")}
    res["config"]["denoiser_parameters"] = sum(p.numel() for p in built.model.parameters())
    if "imagination" in only:
        batch = cli.batch or args.agent_batch_size
        res["imagination"] = measure_imagination(ref, built, batch, args.horizon, args.n_diffusion_steps,
                                                 cli, step_fn)
    if "training" in only:
        res["denoiser_training"] = measure_training(built, args.batch_size, args.horizon, cli)
    res["load_average_end"] = list(os.getloadavg())
    write_json(res, cli.out)
    print(table(res))
    print(f"wrote {cli.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
