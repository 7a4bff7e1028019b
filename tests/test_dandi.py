"""Dandi et al. end to end: the per-step record of a run, and the quick reproductions."""

import numpy as np
import pytest

from giantstep import ConfigError, run
from giantstep.config import validate_config
from giantstep.experiment import build
from giantstep.overlaps import learned_subspace
from giantstep.reproduce import reproductions
from giantstep.reproduce.dandi import REPRODUCTIONS
from giantstep.theory.learnable import predict
from giantstep.train import StepPlan, giant_steps


def small(**extra):
    config = {
        "dim": 120,
        "width": 24,
        "preset": "dandi",
        "activation": "relu",
        "target": {"expression": "z1 + z1*z2"},
        "train": {
            "steps": 2,
            "batch_size": 480,
            "step_size": {"scale": 2.0, "batch_exponent": 0.0, "width_exponent": 1.0},
        },
        "readout": {"samples": 256},
        "test": {"samples": 256},
    }
    config.update(extra)
    return config


def test_each_step_records_overlaps_learned_and_predicted_subspaces():
    config = validate_config(small(measure={"overlap_matrices": True}))
    result = run(config)
    network, teacher = build(config)
    layers = [network.first_layer]
    plan = StepPlan(480, config.compute.block_size)
    steps = giant_steps(network, teacher, plan, steps=2, step_size=result.step_size, seed=0)
    layers += [n.first_layer for n in steps]
    prediction = predict("z1 + z1*z2", 1, 2, activation="relu")
    for a, w in zip(result.alignment, layers, strict=True):
        # Full matrices are the dense products; the eigenvalues are those of M̂ᵀM̂/N.
        np.testing.assert_allclose(a.m, w @ teacher.directions.T, atol=1e-10)
        np.testing.assert_allclose(a.q, w @ w.T, atol=1e-10)
        subspace = learned_subspace(w, teacher.directions)
        np.testing.assert_allclose(a.subspace_eigenvalues, subspace.eigenvalues, atol=1e-12)
        np.testing.assert_allclose(np.array(a.learned).reshape(-1, 2), subspace.learned)
        np.testing.assert_allclose(
            np.array(a.predicted).reshape(-1, 2), prediction.subspaces[a.step], atol=1e-12
        )
        np.testing.assert_allclose(a.overlap_m_rms, np.sqrt(np.mean(np.array(a.m) ** 2, axis=0)))
    assert result.alignment[0].learned == [] and result.alignment[0].predicted == []
    assert len(result.alignment[1].learned) == 1  # z1 after one step, even at d = 120
    # Without the option the matrices are not stored.
    assert run(small()).alignment[1].m is None


@pytest.mark.parametrize(
    ("dim", "batch", "explicit", "kappa"),
    [(800, 3200, None, 1), (200, 80000, None, 2), (100, 1600, None, 2), (100, 1600, 1, 1)],
)
def test_batch_exponent_of_the_prediction(dim, batch, explicit, kappa):
    theory = {} if explicit is None else {"batch_exponent": explicit}
    config = validate_config(
        small(dim=dim, train={"batch_size": batch}, theory=theory, target={"expression": "z1"})
    )
    assert config.batch_exponent() == kappa


def test_bad_measure_and_theory_keys_are_named():
    with pytest.raises(ConfigError, match="theory.batch_exponent"):
        validate_config(small(theory={"batch_exponent": 0}))
    with pytest.raises(ConfigError, match="measure.learned_threshold"):
        validate_config(small(measure={"learned_threshold": -1.0}))
    with pytest.raises(ConfigError, match="measure.overlap_matrix"):
        validate_config(small(measure={"overlap_matrix": True}))


def test_reproductions_are_discovered():
    assert {"dandi-batch", "dandi-staircase", "dandi-leap"} <= set(reproductions())


@pytest.mark.parametrize("name", list(REPRODUCTIONS))
def test_quick_reproduction_holds(name, tmp_path):
    report = REPRODUCTIONS[name](True, tmp_path)
    failed = [c for c in report.checks if not c.holds]
    assert not failed, failed
    assert len(report.checks) >= 4
    assert all(p.exists() and p.stat().st_size > 0 for p in report.figures)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REPRODUCTIONS))
def test_default_size_reproduction_holds(name, tmp_path):
    report = REPRODUCTIONS[name](False, tmp_path)
    assert report.ok, [c for c in report.checks if not c.holds]
