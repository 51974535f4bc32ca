"""benchmarks.memory: the state's bytes per seed equal the sum of an initialised state's
leaves / N, its parts sum to the whole, the JSON has every field, the plan's arithmetic, and
bad flags exit 2 with one line. The smoke preset on the positional backend, N in {1, 2}."""
import contextlib
import io
import json

import jax
import numpy as np
import pytest

from agdjax import loop
from agdjax.config import make_config
from benchmarks import memory

ARGS = ["--preset=smoke", "--backend=positional", "--guide=sag", "--num_seeds=1,2", "--phases=imagine"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """(JSON, stdout) of one benchmark run."""
    out = tmp_path_factory.mktemp("memory") / "memory.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert memory.main(ARGS + [f"--out={out}"]) == 0
    return json.loads(out.read_text()), buf.getvalue()


@pytest.fixture(scope="module")
def real_state():
    """A TrainState of 2 seeds, initialised (allocated) the way the driver does it."""
    cfg = make_config("halfcheetah", "smoke", backend="positional", guide="sag")
    _, init, _ = loop.compile_program(cfg, 2, jax.devices()[:1])
    return jax.block_until_ready(init(*loop.member_inputs(cfg, [{"seed": 0}, {"seed": 1}])))


def leaf_bytes(tree):
    return sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree))


def test_per_seed_state_bytes_are_the_sum_of_the_leaves(bench, real_state):
    r, _ = bench
    total = leaf_bytes(real_state)
    assert r["state"]["per_seed"]["total"] * 2 == total
    assert r["state"]["by_n"]["2"]["total"] == total and r["state"]["by_n"]["1"]["total"] * 2 == total
    for v in list(r["state"]["by_n"].values()) + [r["state"]["per_seed"]]:  # parts: exactly the whole
        assert set(v["groups"]) == set(memory.GROUP_NAMES) and sum(v["groups"].values()) == v["total"]
    g = r["state"]["by_n"]["2"]["groups"]
    assert g["replay"] == leaf_bytes(real_state.replay) and g["agent"] == leaf_bytes(real_state.agent)
    assert g["denoiser"] == leaf_bytes((real_state.denoiser, real_state.denoiser_ema, real_state.denoiser_opt))
    assert g["reward_model"] == leaf_bytes((real_state.reward_model, real_state.reward_opt))
    assert g["environment"] == leaf_bytes((real_state.env, real_state.episode_return))


def test_json_and_table(bench, real_state):
    r, stdout = bench
    assert r["platform"] == "cpu" and "CPU compile" in r["note"] and r["num_seeds"] == [1, 2]
    for n in ("1", "2"):
        c = r["run_chunk"]["by_n"][n]
        assert all(c[k] is not None and c[k] >= 0 for k in memory.STATS) and c["temp"] > 0
        assert c["alias"] == r["state"]["by_n"][n]["total"]  # the donated state is reused in place
        state = r["state"]["by_n"][n]["total"]
        assert c["extra"] == c["temp"] + c["generated_code"] + (c["argument"] - state) + (c["output"] - c["alias"])
    fit = r["run_chunk"]["fit"]["extra"]
    assert fit["fixed"] + 2 * fit["per_seed"] == pytest.approx(r["run_chunk"]["by_n"]["2"]["extra"])
    leaves = {jax.tree_util.keystr(k, simple=True, separator=".") for k, _ in
              jax.tree_util.tree_leaves_with_path(real_state)}
    for c in r["run_chunk"]["by_n"]["2"]["state_copies"]:
        assert c["copies"] >= 1 and c["bytes_per_seed"] > 0 and set(c["leaves"]) <= leaves
    assert set(r["phases"]) == {"imagine"} and r["phases"]["imagine"]["by_n"]["2"]["temp"] > 0
    p = r["plan"]
    assert p["usable_bytes"] == 80e9 * 0.75 and p["largest_phase"] == "imagine"
    assert p["per_seed_bytes"] == pytest.approx(r["state"]["per_seed"]["total"] + fit["per_seed"])
    assert p["max_seeds"] == memory.max_seeds(p["usable_bytes"], p["fixed_bytes"], p["per_seed_bytes"]) > 0
    assert "| replay |" in stdout and "| temporaries (activations) |" in stdout and "largest N on 80 GB" in stdout


def test_run_chunk_does_not_copy_the_replay(bench, real_state):
    """The evaluation's start states are read from the replay at the end of the iteration
    before (train.make_run_chunk); read at the start of the evaluated iteration, XLA copied
    replay.obs and replay.physics whole, 3 times, at every iteration (337 MB per seed at the
    paper preset)."""
    r, _ = bench
    # the detector sees a replay copy when there is one (a synthetic copy in XLA's text format)
    obs = real_state.replay.data.obs
    line = f"  %copy.1 = f32[{','.join(map(str, obs.shape))}]{{3,2,1,0}} copy(%p.1)"
    seen = memory.state_copies(line, real_state, obs.shape[0])
    assert [c["copies"] for c in seen if "replay.data.obs" in c["leaves"]] == [1], seen
    for n in ("1", "2"):
        copies = r["run_chunk"]["by_n"][n]["state_copies"]
        assert copies is not None
        assert not [c for c in copies if any(leaf.startswith("replay.") for leaf in c["leaves"])], copies


def test_plan_arithmetic():
    assert memory.max_seeds(80e9, 1e9, 2e9) == 39
    assert memory.max_seeds(10, 0, 3) == 3 and memory.max_seeds(9, 0, 3) == 3
    assert memory.max_seeds(5, 6, 1) == 0  # not even the fixed part fits
    assert memory.max_seeds(10, -4, 3) == 3  # a negative fitted fixed part counts as 0
    with pytest.raises(ValueError):
        memory.max_seeds(10, 0, 0)
    a, b = memory.fit_line([1, 2, 4], [5, 7, 11])
    assert (a, b) == pytest.approx((3, 2))
    assert memory.fit_line([4], [12]) == (0.0, 3.0)


def test_state_copies_names_the_copied_leaves():
    f32 = lambda *s: jax.ShapeDtypeStruct(s, np.float32)
    state = {"replay": {"obs": f32(2, 10, 17), "next_obs": f32(2, 10, 17)}, "w": f32(2, 17, 4), "k": f32(2, 2)}
    hlo = ("%copy.1 = f32[2,10,17]{2,1,0} copy(%a)\n  %copy.2 = f32[2,10,17]{2,1,0} copy(%b)\n"
           "%copy.3 = s32[2,10,17]{2,1,0} copy(%c)\n%copy.4 = f32[2,2]{1,0} copy(%d)\n"
           "%add.1 = f32[2,17,4]{2,1,0} add(%e)")  # other dtype, leaf under 1% of the state, not a copy
    assert memory.state_copies(hlo, state, 2) == [
        {"shape": "f32[10,17]", "bytes_per_seed": 680, "copies": 2, "leaves": ["replay.next_obs", "replay.obs"]}]
    # one seed: the program is the per-seed one, without the seed axis
    assert memory.state_copies("%c = f32[17,4]{1,0} copy(%x)", {"w": f32(1, 17, 4)}, 1)[0]["copies"] == 1


@pytest.mark.parametrize("flag, needle", [
    ("--num_seeds=0", "positive"), ("--num_seeds=a,b", "integers"), ("--device_memory_gb=-1", "positive"),
    ("--memory_fraction=1.5", "(0, 1]"), ("--wm_error_batch=-1", "wm_error_batch"), ("--preset=huge", "preset"),
    ("--phases=nope", "not a phase"), ("--wm_error_batch=0 --phases=wm_error", "not a phase"),
    ("--bogus=1", "unrecognized")])
def test_bad_flag_exits_2_with_one_line(flag, needle, capsys):
    args = ["--backend=positional", "--num_seeds=1"] + flag.split()
    assert memory.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and needle in err, err
