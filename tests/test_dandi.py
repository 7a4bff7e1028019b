"""Dandi et al. end to end: the per-step record of a run, and the quick reproductions."""

import numpy as np
import pytest

import dense
from giantstep import ConfigError, run
from giantstep.activations import get_activation
from giantstep.config import validate_config
from giantstep.data import TRAIN, SampleStream
from giantstep.model import initialize
from giantstep.overlaps import same_subspace
from giantstep.reproduce import reproductions
from giantstep.reproduce.dandi import REPRODUCTIONS
from giantstep.targets import Teacher


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
    """Each step's record against an independent reference: the weights from dense steps
    W ← W − η ∇L (dense.py, checked against the loss), M̂ᵀM̂/N summed neuron by neuron, and
    the subspaces the rules give by hand for z1 + z1·z2 with relu at κ = 1: {0}, z1, (z1, z2)."""
    config = validate_config(small(measure={"overlap_matrices": True}))
    result = run(config)
    assert result.step_size == pytest.approx(2.0 * 24)  # η = c·N
    network = initialize(0, 24, 120, activation=get_activation("relu"), preset="dandi")
    directions = Teacher.draw(0, "z1 + z1*z2", 120).directions
    a, s = network.second_layer, network.output_scale
    layers = [network.first_layer]
    for t in range(2):
        x, noise = dense.rows(SampleStream(0, (TRAIN, t), 120), 480)
        y = dense.labels(x, noise, directions, "z1 + z1*z2", 0.0)
        layers.append(layers[-1] - result.step_size * dense.gradient(
            layers[-1], a, s, x, y, "relu", "y-f"))  # fmt: skip
    by_hand = [np.zeros((0, 2)), np.array([[1.0, 0.0]]), np.eye(2)]
    for record, w, predicted in zip(result.alignment, layers, by_hand, strict=True):
        np.testing.assert_allclose(record.m, w @ directions.T, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(record.q, w @ w.T, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(
            record.overlap_m_rms, np.sqrt(np.mean((w @ directions.T) ** 2, axis=0)), rtol=1e-9
        )
        values, vectors = np.linalg.eigh(dense.subspace_matrix(w, directions))
        np.testing.assert_allclose(record.subspace_eigenvalues, values[::-1], rtol=1e-9)
        learned = vectors[:, values > 10 / 120].T
        assert same_subspace(np.array(record.learned).reshape(-1, 2), learned, 1 - 1e-9)
        assert same_subspace(np.array(record.predicted).reshape(-1, 2), predicted, 1 - 1e-12)
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
