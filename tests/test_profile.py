"""benchmarks/profile.py: the part-by-part accounting (known answers on cheap functions) and
its bad-input checks. The profile itself is a benchmark (docs/RESULTS.md), not a test."""
import jax.numpy as jnp
import pytest

from benchmarks import profile


def test_measure_accounts_for_every_part():
    """rest = whole - the parts not contained in another one; shares are s / whole."""
    x = jnp.ones((64, 64))
    parts = {"a": lambda x: x @ x, "b": lambda x: jnp.tanh(x), "a inside": lambda x: x + 1.0,
             "whole": lambda x: jnp.tanh(x @ x) + 1.0}
    res = profile._measure(parts, (x,), repeats=2, peak=1e9, inside=("a inside",))
    assert set(res) == {"a", "b", "a inside", "whole", "rest"}
    assert res["rest"]["s"] == pytest.approx(res["whole"]["s"] - res["a"]["s"] - res["b"]["s"])
    for v in res.values():
        assert v["share"] == pytest.approx(v["s"] / res["whole"]["s"])
    assert res["whole"]["share"] == 1.0
    assert res["a"]["gflop_per_s"] > 0  # a matmul: XLA counts its 2 n^3 FLOPs


@pytest.mark.parametrize("argv,says", [(["--preset=huge"], "--preset='huge'"), (["--guide=reward"], "--guide='reward'"),
                                       (["--repeats=0"], "--repeats=0")])
def test_bad_input_one_line_exit_2(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        profile.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and says in err[0], err
