"""``python -m jaxpool.compare``: the report's fields, the consistency of its numbers, its reference and CLI."""

import json

import numpy as np
import pytest

from jaxpool import compare
from jaxpool.compare import IMPLEMENTATIONS, OPS, cli, report
from jaxpool.compare.config import Config, random_inputs
from jaxpool.compare.hlo import opcode_histogram
from jaxpool.compare.numerics import reference
from tests import reference as ref

SHAPE = (2, 8, 8, 3)
GEOMETRIES = (((2, 2), 0), ((3, 3), 1))
CONFIGS = [Config(op, SHAPE, window, (2, 2), pad) for op in ("max", "avg") for window, pad in GEOMETRIES]
MODES = ("fwd", "fwd_bwd")
FIELDS = {
    "config",
    "implementation",
    "framework",
    "errors",
    "recipients",
    "hlo",
    "compile_s",
    "memory",
    "residual_bytes",
    "timings",
    "ratios",
    "environment",
}
HLO_KEYS = {"reduce-window", "select-and-scatter", "scatter", "gather", "sort", "fusion", "collectives", "instructions"}


@pytest.fixture(scope="module")
def records():
    return compare.compare(CONFIGS, rounds=3, min_sample_ms=0.2)


def _find(records, op, window, implementation):
    found = [r for r in records if r["config"]["op"] == op and tuple(r["config"]["window"]) == window]
    return next(r for r in found if r["implementation"] == implementation)


def _scatters(record):
    hlo = record["hlo"]["fwd_bwd"]
    return hlo["scatter"] + hlo["select-and-scatter"]


def test_every_record_has_all_fields(records):
    names = {r["implementation"] for r in records}
    assert {"jaxpool", "jaxpool[xla]", "flax", "reduce_window"} <= names
    for r in records:
        assert set(r) == FIELDS
        assert set(r["errors"]) == {"forward", "gradient"}
        assert set(r["recipients"]) == {"tie", "nan", "nan_forward"}
        assert set(r["timings"]) == set(r["ratios"]) == set(MODES)
        for t in r["timings"].values():
            assert set(t) == {"median_ms", "q25_ms", "q75_ms", "iqr_ms", "samples", "calls_per_sample"}
            assert t["samples"] == 3
        if r["framework"] == "jax":
            assert all(set(r["hlo"][m]) == HLO_KEYS for m in MODES)
            assert all(set(r["memory"][m]) == {"temp_bytes", "argument_bytes", "output_bytes"} for m in MODES)
            assert all(r["compile_s"][m] > 0 for m in MODES)
            assert r["residual_bytes"] >= 0
        else:
            assert r["hlo"] is r["memory"] is r["compile_s"] is r["residual_bytes"] is None


def test_one_record_per_applicable_implementation(records):
    for config in CONFIGS:
        names = [r["implementation"] for r in records if r["config"]["name"] == config.name]
        assert len(names) == len(set(names))
        assert ("jaxpool[xla]" in names) == (config.op == "max")


def test_jaxpool_matches_the_float64_reference(records):
    for r in records:
        if r["implementation"] == "jaxpool":
            assert r["errors"]["forward"] < 1e-6
            assert r["errors"]["gradient"] < 1e-5


def test_compiled_max_gradient_has_no_scatter_only_on_jaxpool(records):
    for window, _ in GEOMETRIES:
        assert _scatters(_find(records, "max", window, "jaxpool")) == 0
        for peer in ("jaxpool[xla]", "flax", "reduce_window"):
            assert _scatters(_find(records, "max", window, peer)) >= 1, peer
    for r in records:
        if r["config"]["op"] == "avg" and r["framework"] == "jax":
            assert _scatters(r) == 0


def test_tie_and_nan_gradient_recipients(records):
    for window, _ in GEOMETRIES:
        assert _find(records, "max", window, "jaxpool")["recipients"] == {"tie": "first", "nan": "nan", "nan_forward": True}
        assert _find(records, "avg", window, "jaxpool")["recipients"]["tie"] == "split"
    torch_rows = [r for r in records if r["implementation"] == "torch" and r["config"]["op"] == "max"]
    assert all(r["recipients"]["tie"] == "first" and r["recipients"]["nan"] == "nan" for r in torch_rows)


def test_jaxpool_keeps_fewer_residual_bytes_than_flax(records):
    for window, _ in GEOMETRIES:
        jaxpool_bytes = _find(records, "max", window, "jaxpool")["residual_bytes"]
        assert 0 < jaxpool_bytes < _find(records, "max", window, "flax")["residual_bytes"]


def test_timings_positive_and_ratios_relative_to_the_fastest(records):
    for config in CONFIGS:
        rows = [r for r in records if r["config"]["name"] == config.name]
        for mode in MODES:
            for r in rows:
                t = r["timings"][mode]
                assert 0 < t["q25_ms"] <= t["median_ms"] <= t["q75_ms"]
                assert r["ratios"][mode] >= 1.0
                assert r["ratios"][mode] == pytest.approx(t["median_ms"] / min(s["timings"][mode]["median_ms"] for s in rows))
            assert min(r["ratios"][mode] for r in rows) == 1.0


def test_reference_ties_go_first_and_nan_wins():
    config = Config("max", (1, 2, 4, 1), (2, 2), (2, 2), 0)
    x = np.array([[1.0, 3.0, 1.0, 2.0], [3.0, 2.0, np.nan, 5.0]]).reshape(config.shape)
    y, dx = reference(config, x, np.array([10.0, 20.0]).reshape(config.out_shape))
    assert y[0, 0, 0, 0] == 3.0 and np.isnan(y[0, 0, 1, 0])
    np.testing.assert_array_equal(dx.reshape(2, 4), [[0, 10, 0, 0], [0, 0, 20, 0]])


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_reference_agrees_with_the_test_suite_oracle(config):
    x, ct = (a.astype(np.float64) for a in random_inputs(config, seed=1))
    y, dx = reference(config, x, ct)
    xc, ctc = np.moveaxis(x, -1, 1), np.moveaxis(ct, -1, 1)  # the oracle is channels_first
    geometry = (config.window, config.strides, config.pads)
    if config.op == "max":
        expected = ref.max_pool(xc, *geometry, (1, 1), False)[0], ref.max_pool_grad(xc, ctc, *geometry, (1, 1), False)
    else:
        expected = ref.avg_pool(xc, *geometry, False), ref.avg_pool_grad(xc, ctc, *geometry, False)
    for actual, oracle in zip((y, dx), expected):
        np.testing.assert_allclose(actual, np.moveaxis(oracle, 1, -1), rtol=1e-12, atol=1e-12)


def test_hlo_histogram_counts_opcodes_not_metadata():
    text = """
ENTRY %main (p: f32[4]) -> (f32[4], f32[4]) {
  %p = f32[4]{0} parameter(0), metadata={op_name="jit(f)/select_and_scatter/scatter" source_file="gather.py"}
  %s.1 = (f32[4]{0}, s32[4]{0}) reduce-window(%p, %c), window={size=2}, to_apply=%scatter_add
  %f = f32[4]{0:T(256)} fusion(%p), kind=kLoop, calls=%gather_computation
  %u = (f32[], f32[], f32[], f32[], f32[], /*index=5*/f32[]) tuple(%p, %p, %p, %p, %p, %p)
  ROOT %t = (f32[4]{0}, f32[4]{0}) tuple(%p, %p), metadata={op_name="gather"}
}"""
    assert opcode_histogram(text) == {
        "reduce-window": 1,
        "select-and-scatter": 0,
        "scatter": 0,
        "gather": 0,
        "sort": 0,
        "fusion": 1,
        "collectives": 0,
        "instructions": 5,
    }


def test_config_validation():
    with pytest.raises(ValueError, match="spatial axes"):
        Config("max", (2, 8, 8), (2, 2), (2, 2))
    with pytest.raises(ValueError, match="op must be"):
        Config("bogus", SHAPE, (2, 2), (2, 2))
    assert Config("max", (1, 5, 5, 1), (2, 2), (2, 2), "SAME").pads == ((0, 1), (0, 1))


SMALL = "--op max --shape 1,4,4,2 --window 2 --stride 2 --padding 0 --rounds 2 --min-sample-ms 0.1".split()


def test_main_writes_valid_json(tmp_path, capsys):
    path = tmp_path / "out.json"
    assert compare.main([*SMALL, "--impl", "jaxpool,flax", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert [r["implementation"] for r in data] == ["jaxpool", "flax"]
    assert data[0]["config"]["name"] == "max 1x4x4x2 2x2/2 p0 float32"
    assert "jaxpool" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--window", "0,3"], "positive"),
        (["--window", "a,b"], "integers"),
        (["--window", "3,3,3"], "spatial"),
        (["--padding", "-1"], "non-negative"),
        (["--op", "bogus"], "bogus"),
        (["--op", "max,"], "not in"),
        (["--full", "--op", "max"], "--full"),
        (["--shape", "4,4"], "spatial axis"),
        (["--rounds", "0"], "at least 1"),
        (["--rounds", "x"], "integer"),
        (["--min-sample-ms", "nan"], "finite"),
        (["--min-sample-ms", "-1"], "finite"),
        (["--seed", "-1"], "at least 0"),
        (["--json", "/nonexistent-folder/out.json"], "does not exist"),
        (["--plot", "/nonexistent-folder/p.png"], "does not exist"),
        (["--json", "."], "is a folder"),
        (["--op", "fractional", "--shape", "1,4,4,1", "--window", "4", "--stride", "1"], "output_size"),
    ],
)
def test_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and err.startswith("python -m jaxpool.compare: error: ")  # one line, no traceback


def test_cli_validates_before_any_work(monkeypatch, capsys):
    monkeypatch.setattr(cli, "compare", lambda *a, **k: pytest.fail("ran the comparison"))
    with pytest.raises(SystemExit):
        compare.main([*SMALL, "--json", "/nonexistent-folder/out.json"])


def test_cli_subprocess_bad_value_one_error_line_exit_2():
    import os
    import pathlib
    import subprocess
    import sys

    root = str(pathlib.Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "jaxpool.compare", "--json", "/no/such/dir/x.json"]
    run = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2
    assert run.stderr.startswith("python -m jaxpool.compare: error: argument --json: folder") and run.stderr.count("\n") == 1


def test_op_all_selects_every_op():
    args = cli._parser().parse_args(["--op", "all", "--shape", "1,8,8,2", "--padding", "0"])
    assert [c.op for c in cli._configs(args, cli._parser())] == list(OPS)


def test_plot_without_matplotlib_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(report, "matplotlib_missing", lambda: "--plot needs matplotlib")
    with pytest.raises(SystemExit) as exit_info:
        compare.main([*SMALL, "--plot", str(tmp_path / "p.png")])
    assert exit_info.value.code == 2
    assert "matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "p.png"
    assert compare.main([*SMALL, "--impl", "jaxpool,flax", "--plot", str(path)]) == 0
    assert path.read_bytes()[:4] == b"\x89PNG"


# --- every op: jaxpool and each peer against the float64 reference, or jaxpool against PyTorch ----------------------

# maxblur has neither a NumPy definition here nor a peer: tests/test_more_pools.py checks it.
EVERY = [Config(op, (2, 6, 7, 3), (3, 2), (2, 2), 1 if OPS[op].padding else 0) for op in OPS if op not in ("unpool", "maxblur")]
# max_unpool with overlapping windows writes one element twice: PyTorch's gradient counts it twice, jaxpool's once
# (d out / d x = 1): compared on tiling windows only.
EVERY.append(Config("unpool", (2, 6, 8, 3), (2, 2), (2, 2), 0))


def _outputs(name, config):
    """``(y, dx)`` of one implementation (float64 NHWC), or None where it lacks the op or cannot run."""
    impl = IMPLEMENTATIONS[name]
    if impl.unavailable():
        return None
    pool = impl.build(config)
    if pool is None:
        return None
    prepared = impl.prepare(pool, config, *random_inputs(config, seed=2), measure=False)
    return prepared.y, prepared.dx


@pytest.mark.parametrize("config", EVERY, ids=lambda c: c.op)
def test_every_op_every_peer_matches_the_reference_or_torch(config):
    x, ct = random_inputs(config, seed=2)
    expected = reference(config, x.astype(np.float64), ct.astype(np.float64))
    results = {name: out for name in IMPLEMENTATIONS if (out := _outputs(name, config)) is not None}
    assert "jaxpool" in results
    if expected is None:  # no NumPy definition here (fractional, spp, unpool): PyTorch decides
        if "torch" not in results:
            pytest.skip("PyTorch is not installed")
        expected = results["torch"]
    for name, (y, dx) in results.items():
        np.testing.assert_allclose(y, expected[0], rtol=2e-5, atol=2e-5, err_msg=f"{name} forward")
        np.testing.assert_allclose(dx, expected[1], rtol=2e-5, atol=2e-5, err_msg=f"{name} gradient")


def test_every_op_has_a_peer_or_a_reference():
    for name, spec in OPS.items():
        peers = [spec.xla, spec.flax, spec.reduce_window, spec.torch, spec.window]
        if name != "maxblur":  # jaxpool-only, without a NumPy definition here
            assert any(p is not None for p in peers), name
