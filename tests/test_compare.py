"""`python -m agdjax.compare` on run directories written by hand (no training): groups, the
table, the figure, intervals (rliable), runs with different evaluation points, NaN rows."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from agdjax import compare
from agdjax.config import make_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_run(d, seeds, curves, wall_s=100.0, summary=True, wm=None, sampled_offset=None, **cfg_over):
    """A run directory: config.json, metrics.jsonl (a row per seed per 16 env steps, eval_return
    only at the keys of curves[seed], NaN on some other rows, as JSON writes it; with
    sampled_offset also eval_return_sampled = eval_return + sampled_offset), summary.json."""
    cfg = make_config("halfcheetah", "smoke", backend="spring", **cfg_over).to_dict()
    os.makedirs(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"config": cfg, "seeds": seeds}, f)
    last = max(max(c) for c in curves.values())
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        for step in range(0, last + 1, 8):
            for s in seeds:
                row = {"seed": s, "env_steps": step, "diffusion_loss": 0.5}
                if step in curves[s]:
                    row["eval_return"] = curves[s][step]
                    if sampled_offset is not None:
                        row["eval_return_sampled"] = curves[s][step] + sampled_offset
                elif step % 16 == 0:
                    row["eval_return"] = float("nan")
                if wm and step > 0:
                    row.update({k: v * step for k, v in wm[s].items()})
                f.write(json.dumps(row) + "\n")
    if summary:
        with open(os.path.join(d, "summary.json"), "w") as f:
            json.dump({"compile_s": 10.0, "prefill_s": 1.0, "train_s": wall_s - 11.0}, f)
    return str(d)


@pytest.fixture
def runs(tmp_path):
    """sag (guide_scale default, 2 seeds) + sag (guide_scale 4.0 given: same group, 1 seed);
    none (1 seed, other eval points, no summary); eag (3 seeds, every return 5.0)."""
    sag_a = write_run(tmp_path / "sag_a", [0, 1], {0: {0: 0.0, 32: 10.0, 64: 20.0},
                                                   1: {0: 2.0, 32: 14.0, 64: 30.0}},
                      guide="sag", wm={0: {"wm_state_error_1": 0.01, "wm_reward_error": 0.1},
                                       1: {"wm_state_error_1": 0.03, "wm_reward_error": 0.3}})
    sag_b = write_run(tmp_path / "sag_b", [2], {2: {0: 1.0, 32: 12.0, 64: 40.0}}, guide="sag",
                      guide_scale=4.0, wall_s=300.0)
    none = write_run(tmp_path / "none", [0], {0: {0: 1.0, 24: 3.0, 48: 5.0, 64: 7.0}}, summary=False)
    eag = write_run(tmp_path / "eag", [0, 1, 2], {s: {0: 5.0, 32: 5.0, 64: 5.0} for s in range(3)},
                    guide="eag")
    return {"sag_a": sag_a, "sag_b": sag_b, "none": none, "eag": eag}


def by_label(result):
    return {g["label"]: g for g in result["groups"]}


def test_report_groups_and_numbers(runs, tmp_path):
    out = tmp_path / "report"
    result = compare.compare([runs["sag_a"], runs["none"], runs["sag_b"], runs["eag"]], str(out),
                             steps=[32, 48], reps=2000)
    g = by_label(result)
    assert set(g) == {"sag c=4", "none", "eag c=3"}
    assert [x["n_seeds"] for x in result["groups"]] == [3, 1, 3]
    assert g["sag c=4"]["runs"] == [runs["sag_a"], runs["sag_b"]]
    # sag: at 32 the seeds have 10, 14, 12; at the end 20, 30, 40
    m, lo, hi, n = g["sag c=4"]["at_steps"]["32"]
    assert (m, n) == (12.0, 3) and 10.0 <= lo < 12.0 < hi <= 14.0
    m, lo, hi, n = g["sag c=4"]["end"]
    assert (m, n) == (30.0, 3) and 20.0 <= lo < m < hi <= 40.0
    assert g["sag c=4"]["end_env_steps"] == [64]
    assert g["sag c=4"]["iqm_end"][0] == pytest.approx(30.0)
    aucs = [np.mean([0, 10, 20]), np.mean([2, 14, 30]), np.mean([1, 12, 40])]
    assert g["sag c=4"]["auc"][0] == pytest.approx(np.mean(aucs))
    # 48 env steps: sag has no evaluation there, each seed's latest one before it (32) counts
    assert g["sag c=4"]["at_steps"]["48"][0] == 12.0
    # world-model errors: last logged value (step 64) of each seed, mean over the seeds that log it
    assert g["sag c=4"]["wm"]["wm_state_error_1"] == pytest.approx(64 * 0.02)
    assert g["sag c=4"]["wm"]["wm_reward_error"] == pytest.approx(64 * 0.2)
    assert "wm_state_error_last" not in g["sag c=4"]["wm"] and g["none"]["wm"] == {}
    assert g["sag c=4"]["wall_s"] == pytest.approx(200.0) and g["none"]["wall_s"] is None
    # one seed: the interval is the point; at 32 the none run's latest evaluation is at 24
    assert g["none"]["at_steps"]["32"] == (3.0, 3.0, 3.0, 1)
    assert g["none"]["end"][:3] == (7.0, 7.0, 7.0)
    # a constant series: zero width everywhere
    for key in ("end", "iqm_end", "auc"):
        assert g["eag c=3"][key][0] == g["eag c=3"][key][1] == g["eag c=3"][key][2] == 5.0
    for step, (m, lo, hi, n) in result["curves"]["eag c=3"].items():
        assert m == lo == hi == 5.0 and n == 3
    # the pointwise curve of a group with different eval points keeps every one of them
    assert list(result["curves"]["none"]) == ["0", "24", "48", "64"]
    assert list(result["curves"]["sag c=4"]) == ["0", "32", "64"]

    md = (out / "compare.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| group | seeds | 32 steps | 48 steps | end | IQM end | AUC |")
    assert any(line.startswith("| sag c=4 | 3 | 12.0 [") for line in table)
    assert any(line.startswith("| eag c=3 | 3 | 5.0 [5.0, 5.0] |") for line in table)
    assert "| wm_state_error_1 | wm_state_error_last | wm_reward_error |" not in md  # none logs _last
    assert "| group | wm_state_error_1 | wm_reward_error | wall time (h:mm:ss) | runs |" in md
    assert "0:03:20" in md  # the sag runs' mean wall time, 200 s
    png = (out / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert json.loads((out / "compare.json").read_text())["steps"] == [32, 48]


def test_steps_past_a_run_and_default_steps(runs):
    groups = compare.group_runs([compare.load_run(runs["sag_a"]), compare.load_run(runs["none"])])
    st = compare.group_stats(groups[0], [64, 100], reps=500)
    assert st["at_steps"]["64"][3] == 2
    assert math.isnan(st["at_steps"]["100"][0]) and st["at_steps"]["100"][3] == 0  # runs ended at 64
    assert compare.default_steps(groups) == [24, 32, 48]  # equal fractions of 64 on eval points


def test_labels_name_what_differs(tmp_path):
    a = write_run(tmp_path / "a", [0], {0: {0: 1.0, 64: 2.0}}, guide="sag", guide_scale=3.0)
    b = write_run(tmp_path / "b", [0], {0: {0: 1.0, 64: 2.0}}, guide="none", agent="ppo", model_free=True)
    c = write_run(tmp_path / "c", [0], {0: {0: 1.0, 64: 2.0}}, guide="sag", guide_scale=3.0,
                  denoiser_dtype="bfloat16")
    groups = compare.group_runs([compare.load_run(d) for d in (a, b, c)])
    assert [g["label"] for g in groups] == ["sag c=3 denoiser_dtype=float32", "ppo (model-free)",
                                            "sag c=3 denoiser_dtype=bfloat16"]


def test_a_run_that_predates_env_action_groups_as_raw(tmp_path):
    """config.json files written before Config.env_action existed ran the 'raw' rule: they pool
    with 'raw' runs and are told apart from 'clipped' ones (config._PREDATING_VALUES)."""
    old = write_run(tmp_path / "old", [0], {0: {0: 1.0, 64: 2.0}}, guide="sag", guide_scale=3.0)
    with open(os.path.join(old, "config.json")) as f:
        d = json.load(f)
    del d["config"]["env_action"]
    with open(os.path.join(old, "config.json"), "w") as f:
        json.dump(d, f)
    raw = write_run(tmp_path / "raw", [1], {1: {0: 1.0, 64: 2.0}}, guide="sag", guide_scale=3.0, env_action="raw")
    new = write_run(tmp_path / "new", [0], {0: {0: 1.0, 64: 2.0}}, guide="sag", guide_scale=3.0)
    groups = compare.group_runs([compare.load_run(x) for x in (old, raw, new)])
    assert [(g["label"], len(g["members"])) for g in groups] == [("sag c=3 env_action=raw", 2),
                                                                ("sag c=3 env_action=clipped", 1)]


def test_cli(runs, tmp_path):
    env = dict(os.environ)
    p = subprocess.run([sys.executable, "-m", "agdjax.compare", runs["sag_a"], runs["eag"], "--steps=32",
                        "--reps=500"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "2 groups: sag c=4, eag c=3" in p.stdout
    assert os.path.isfile(os.path.join(runs["sag_a"], "compare.md"))
    assert os.path.isfile(os.path.join(runs["sag_a"], "compare.png"))
    p = subprocess.run([sys.executable, "-m", "agdjax.compare", str(tmp_path / "missing")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "missing" in p.stderr


def write_sweep(d, member_extra=None):
    """A `--guide=sag --guide_scale=0,3` sweep run over seeds 0 and 1; a member's eval return
    rises linearly from 0 to 10 * c + seed at env step 64."""
    os.makedirs(d)
    cfg = make_config("halfcheetah", "smoke", backend="spring", guide="sag", sweep={"guide_scale": [0.0, 3.0]})
    members = [{"seed": s, "guide_scale": c} for c in (0.0, 3.0) for s in (0, 1)]
    with open(d / "config.json", "w") as f:
        json.dump({"config": {**cfg.to_dict(), "c": [0.0, 3.0]}, "seeds": [0, 1],
                   "members": [dict(m, **(member_extra or {})) for m in members]}, f)
    with open(d / "metrics.jsonl", "w") as f:
        for step in (0, 64):
            for m in members:
                f.write(json.dumps({**m, "env_steps": step, "eval_return": (10 * m["guide_scale"] + m["seed"])
                                    * step / 64}) + "\n")
    return str(d)


def test_sweep_members_join_the_groups_of_their_values(tmp_path):
    """A sweep run (guide_scale 0 and 3, seeds 0 and 1; rows carry the swept value) splits
    into one group per value, and a separate run at guide_scale 3 joins the c=3 group."""
    d = write_sweep(tmp_path / "sweep", {"actor_lr_max": 3e-5})
    single = write_run(tmp_path / "single", [5], {5: {0: 0.0, 64: 35.0}}, guide="sag", guide_scale=3.0)
    result = compare.compare([d, single], str(tmp_path / "out"), steps=[64], reps=200)
    groups = by_label(result)
    assert set(groups) == {"sag c=0", "sag c=3"}
    assert groups["sag c=0"]["n_seeds"] == 2 and groups["sag c=0"]["end"][0] == pytest.approx(0.5)
    assert groups["sag c=3"]["n_seeds"] == 3 and groups["sag c=3"]["end"][0] == pytest.approx((30 + 31 + 35) / 3)
    assert os.path.isfile(tmp_path / "out" / "compare.png")


def test_zero_scale_members_pool_with_none_on_request(tmp_path):
    """A sweep's c = 0 members join a separate `none` run's group with zero_scale_is_none, and
    stay their own group without it; c = 3 members are never pooled with `none`."""
    d = write_sweep(tmp_path / "sweep")
    none = write_run(tmp_path / "none", [5, 6], {5: {0: 0.0, 64: 5.0}, 6: {0: 0.0, 64: 6.0}}, guide="none")
    zero = write_run(tmp_path / "zero", [7], {7: {0: 0.0, 64: 7.0}}, guide="sag", guide_scale=0.0)  # unswept
    runs = [d, none, zero]
    apart = by_label(compare.compare(runs, str(tmp_path / "a"), steps=[64], reps=200))
    assert set(apart) == {"sag c=0", "sag c=3", "none"} and apart["sag c=0"]["n_seeds"] == 3
    pooled = by_label(compare.compare(runs, str(tmp_path / "b"), steps=[64], reps=200, zero_scale_is_none=True))
    assert set(pooled) == {"none", "sag c=3"}
    assert pooled["none"]["n_seeds"] == 5 and pooled["none"]["end"][0] == pytest.approx((0 + 1 + 5 + 6 + 7) / 5)
    assert pooled["sag c=3"]["n_seeds"] == 2
    assert compare.main(runs + ["--out", str(tmp_path / "c"), "--steps=64", "--reps=200", "--zero_scale_is_none"]) == 0
    with open(tmp_path / "c" / "compare.json") as f:
        assert {g["label"] for g in json.load(f)["groups"]} == {"none", "sag c=3"}


def test_the_sampled_action_evaluation_on_request(tmp_path):
    """--metric=eval_return_sampled reports that field (known answer: the mean action's curve +
    100); a run that never logged it is an error naming it, as is an unknown metric."""
    new = write_run(tmp_path / "new", [0, 1], {0: {0: 0.0, 32: 10.0}, 1: {0: 2.0, 32: 30.0}},
                    guide="sag", sampled_offset=100.0)
    mean = by_label(compare.compare([new], str(tmp_path / "m"), steps=[32], reps=200))
    got = by_label(compare.compare([new], str(tmp_path / "s"), steps=[32], reps=200, metric="eval_return_sampled"))
    assert mean["sag c=4"]["at_steps"]["32"][0] == pytest.approx(20.0)
    assert got["sag c=4"]["at_steps"]["32"][0] == pytest.approx(120.0)
    assert "eval_return_sampled" in open(tmp_path / "s" / "compare.md").read()
    old = write_run(tmp_path / "old", [0], {0: {0: 1.0, 32: 3.0}})
    with pytest.raises(ValueError, match="old logged no eval_return_sampled"):
        compare.compare([new, old], str(tmp_path / "x"), metric="eval_return_sampled")
    with pytest.raises(ValueError, match="is not one of eval_return, eval_return_sampled"):
        compare.compare([new], str(tmp_path / "x"), metric="train_return")
