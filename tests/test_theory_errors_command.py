"""``giantstep theory errors``: the error theory's curves without simulating the readout."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import giantstep
from error_configs import CUI, SMALL, with_
from giantstep.cli import main
from giantstep.config import ConfigError, validate_config
from giantstep.experiment import build
from giantstep.learning_curve import geometric_grid, parse_grid, predict_curve, subgrid
from giantstep.theory.errors import VARIANTS

# ---------------------------------------------------------------------------------------------


def test_geometric_grid_and_subgrid():
    grid = geometric_grid(100, 100000, 50)
    assert grid[0] == 100 and grid[-1] == 100000 and len(grid) == 50
    ratios = np.diff(np.log(grid))
    assert np.allclose(ratios, ratios.mean(), atol=0.01)
    assert geometric_grid(1, 4, 10) == [1, 2, 3, 4]  # rounded values are kept once
    assert geometric_grid(7, 7, 1) == [7]
    assert subgrid(grid, 5) == [grid[0], grid[12], grid[24], grid[37], grid[49]]
    assert subgrid(grid, 1) == [100000] and subgrid([3, 1, 2], 9) == [1, 2, 3]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("readout.samples", "expected KEY=START:STOP:COUNT"),
        ("readout.samples=100:1000", "expected KEY=START:STOP:COUNT"),
        ("=1:2:3", "expected KEY=START:STOP:COUNT"),
        ("dim=100:1000:5", "runs over readout.samples or train.batch_size, not 'dim'"),
        ("readout.samples=1e2:1000:5", "START must be an integer"),
        ("readout.samples=100:1000.5:5", "STOP must be an integer"),
        ("train.batch_size=100:1000:x", "COUNT must be an integer"),
        ("readout.samples=0:1000:5", "1 ≤ START ≤ STOP"),
        ("readout.samples=1000:100:5", "1 ≤ START ≤ STOP"),
        ("readout.samples=100:1000:0", "COUNT must be between 1 and 1000"),
        ("readout.samples=100:100:5", "use COUNT = 1"),
    ],
)
def test_a_bad_grid_is_named(text, message):
    with pytest.raises(ConfigError, match="^over ") as info:
        parse_grid(text)
    assert message in str(info.value)


def assert_same(variant: dict, reference: dict, rel: float = 1e-9) -> None:
    """Two dumped ErrorVariants: the same reason and warning, errors equal to ``rel``."""
    assert {k: v for k, v in variant.items() if k != "errors"} == {
        k: v for k, v in reference.items() if k != "errors"
    }
    assert (variant["errors"] is None) == (reference["errors"] is None)
    for mine, theirs in zip(variant["errors"] or [], reference["errors"] or [], strict=True):
        assert mine["ridge"] == theirs["ridge"]
        assert mine["test_error"] == pytest.approx(theirs["test_error"], rel=rel)
        assert mine["train_error"] == pytest.approx(theirs["train_error"], rel=rel)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--over", "readout.samples=100:1000"], "--over"),
        (["--over", "width=100:1000:5"], "--over"),
        (["--over", "readout.samples=1e2:1000:5"], "--over"),
        (["--set", "colour=blue"], "colour"),
        (["--set", "theory.errors=maybe"], "theory.errors"),
        (["--variant", "everything"], "--variant"),
        (["--slow-points", "0"], "--slow-points"),
        (["--out", "curve.txt"], "--out"),
        (["--over", "readout.samples=100:20000000000:3"], "readout.samples"),
        (["--set", "width=100000000"], "width: the theory needs about"),
        (["--set", "dim=100000000000"], "dim, width: the theory needs about"),
    ],
)
def test_theory_errors_refuses_bad_input_naming_it(args, named):
    out = CliRunner().invoke(
        main, ["theory", "errors", "--set", "dim=30", "--set", "width=30", *args]
    )
    assert out.exit_code == 2, out.output
    assert named in out.stderr and isinstance(out.exception, SystemExit)


def test_a_refusal_comes_before_any_work_and_without_a_traceback(tmp_path):
    figure = tmp_path / "curve.png"
    out = subprocess.run(
        [sys.executable, "-m", "giantstep", "theory", "errors", "--over", "readout.samples=1:2",
         "--out", str(figure)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2 and out.stderr.startswith("giantstep: error: --over")
    assert "Traceback" not in out.stderr and not figure.exists()


def test_theory_errors_matches_the_run(tmp_path):
    """The command's numbers are the run's: same W₀, same step, same solver."""
    config = tmp_path / "small.toml"
    config.write_text(
        "dim = 60\nwidth = 50\n[train]\nresidual = 'y'\nbatch_size = 240\n"
        "[train.step_size]\nscale = 2.0\n[readout]\nsamples = 120\nridge = [0.01, 0.1]\n"
    )
    out = CliRunner().invoke(
        main,
        ["theory", "errors", str(config), "--over", "readout.samples=60:480:4", "--json"],
    )
    assert out.exit_code == 0, out.output
    curve = json.loads(out.output)
    assert curve["key"] == "readout.samples" and curve["variants"] == list(VARIANTS)
    assert [p["value"] for p in curve["points"]] == [60, 120, 240, 480]
    run = giantstep.run(with_(SMALL, readout={"samples": 240}))
    at_240 = curve["points"][2]["predicted_errors"]
    for name in VARIANTS:
        # Equal up to the solver's tolerance (a curve warm-starts each size from the last).
        assert_same(at_240[name], run.predicted_errors.model_dump()[name])
    # More samples, smaller test error (λ = 0.01, n past N = 50).
    tests = [p["predicted_errors"]["trained_layer"]["errors"][0]["test_error"] for p in
             curve["points"][1:]]  # fmt: skip
    assert tests == sorted(tests, reverse=True)


def test_a_batch_size_curve_takes_the_step_per_value():
    config = validate_config(CUI)
    curve = predict_curve(config, "train.batch_size", [60, 240])
    baseline = curve.points[0].predicted_errors.random_features
    assert curve.points[1].predicted_errors.random_features == baseline  # W₀ only
    for point in curve.points:
        run = giantstep.run(with_(CUI, train={"batch_size": point.value}))
        assert point.predicted_errors.spiked == run.predicted_errors.spiked
        assert point.predicted_errors.trained_layer == run.predicted_errors.trained_layer
        assert point.predicted_errors.random_features == run.predicted_errors.random_features
    # A larger batch learns a better direction: the predicted error falls.
    spiked = [p.predicted_errors.spiked.errors[0].test_error for p in curve.points]
    assert spiked[1] < spiked[0]


def test_variants_and_slow_points_choose_what_is_solved():
    config = validate_config(SMALL)  # moniri: the predicted layer has unequal neurons
    only = predict_curve(config, "readout.samples", [60, 120], variants=["random_features"])
    for point in only.points:
        assert point.predicted_errors.random_features.errors is not None
        for name in ("spiked", "trained_layer"):
            variant = getattr(point.predicted_errors, name)
            assert variant.errors is None and "not computed" in variant.reason
    values = geometric_grid(60, 960, 5)
    sparse = predict_curve(config, "readout.samples", values, slow_points=2)
    full = predict_curve(config, "readout.samples", values)
    for point, reference in zip(sparse.points, full.points, strict=True):
        assert point.predicted_errors.random_features == reference.predicted_errors.random_features
        for name in ("spiked", "trained_layer"):
            variant = getattr(point.predicted_errors, name)
            if point.value in (values[0], values[-1]):
                assert_same(
                    variant.model_dump(), getattr(reference.predicted_errors, name).model_dump()
                )
            else:
                assert variant.errors is None and "slow_points = 2" in variant.reason
    # Cui's setting: the predicted layer is homogeneous, so spiked is solved everywhere.
    cui = predict_curve(validate_config(CUI), "readout.samples", values, slow_points=2)
    assert all(p.predicted_errors.spiked.errors is not None for p in cui.points)
    assert [p.predicted_errors.trained_layer.errors is not None for p in cui.points] == [
        True, False, False, False, True
    ]  # fmt: skip


def test_theory_errors_prints_a_table_and_draws_the_curve(tmp_path):
    figure = tmp_path / "curve.png"
    out = CliRunner().invoke(
        main,
        ["theory", "errors", "--set", "dim=40", "--set", "width=40",
         "--set", "readout.ridge=[0.01,0.1]", "--over", "train.batch_size=40:640:3",
         "--variant", "random_features", "--variant", "spiked", "--out", str(figure)],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "predicted errors, ridge λ = 0.01" in out.output
    assert "predicted errors, ridge λ = 0.1" in out.output
    assert "n0/d" in out.output and "trained layer" not in out.output
    assert "spiked: warning" in out.output  # relu × He₂ at n0 < 32 d
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_full_solver_variants_name_the_unequal_neurons():
    from giantstep.learning_curve import _trained
    from giantstep.theory.errors import full_solver_variants, predict_learning_curve

    for data, expected in ((SMALL, ["spiked", "trained_layer"]), (CUI, ["trained_layer"])):
        config = validate_config(data)
        initial, teacher = build(config)
        trained = _trained(config, initial, teacher)
        assert full_solver_variants(config, initial, teacher, trained) == expected
        assert full_solver_variants(config, initial, teacher) == expected[:-1]
    config = validate_config(with_(SMALL, train={"steps": 0}))
    initial, teacher = build(config)
    assert full_solver_variants(config, initial, teacher, initial) == []
    with pytest.raises(ValueError, match="variants: unknown 'everything'"):
        predict_learning_curve(config, initial, teacher, [60], variants=["everything"])
