"""``inputs``: Gaussian, Rademacher and spherical inputs at the same sizes (universality).

Moniri's one-step setting (``studies.setting``, ``α = 0.3``: two spikes by the band rule) for
each input distribution, with the teacher direction ``β`` Haar-random (delocalised) or a
coordinate axis ``e_1`` (``target.directions = "coordinates"``, localised): spike count against
the band rule, the update cosine against ``γ``, the ridge test error (the error theory beside
it for Gaussian inputs, where ``predicted_errors`` is present) and the fit's ``He₂`` projection.
Then Dandi's multi-index staircase ``z1 + z1*z2`` (``dandi`` preset, ``N = 64``, ``n = 4d``,
``η = 2N``, two steps, residual ``y − f``): the learned-subspace eigenvalues (× d) after step 2.

Why the axis matters: with Rademacher entries ``⟨e_1, x⟩ = x_1 = ±1``, so ``He₂(x_1) = 0`` and
the target ``z + He₂(z)/2`` is the linear ``x_1``: ``E[y²] = 1`` instead of 1.5. A Haar ``β``
makes ``⟨β, x⟩`` Gaussian up to ``O(1/√d)`` (a CLT), and spherical inputs have Gaussian
coordinates up to ``O(1/d)`` — there the Gaussian theory should carry over.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from giantstep.studies.core import Row, Study, finding, group_by, save_figure  # noqa: E402
from giantstep.studies.setting import (  # noqa: E402
    RIDGE_INDEX,
    moniri,
    test_error,
    update_cosine,
)
from giantstep.studies.steps import projection  # noqa: E402

ALPHA = 0.3
DISTRIBUTIONS = ("gaussian", "rademacher", "sphere")
DIRECTIONS = ("random", "coordinates")


def sizes(quick: bool) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """(single-index d values, multi-index d values, seeds); n = 4d."""
    return ((400,), (200,), 2) if quick else ((250, 500, 1000), (200, 400, 800), 3)


def multi_index(dim: int, distribution: str, directions: str, seed: int) -> dict:
    """Dandi's staircase z1 + z1*z2 at n = 4d, two steps."""
    return {
        "seed": seed, "dim": dim, "width": 64, "preset": "dandi", "activation": "relu",
        "data": {"distribution": distribution},
        "target": {"expression": "z1 + z1*z2", "directions": directions},
        "train": {"steps": 2, "batch_size": 4 * dim, "residual": "y-f",
                  "step_size": {"scale": 2.0, "width_exponent": 1.0}},
        "readout": {"samples": 256, "ridge": [0.01]}, "test": {"samples": 256},
        "theory": {"batch_exponent": 1},
    }  # fmt: skip


def configs(quick: bool) -> list[dict]:
    """Every (distribution, direction, d, seed), single- then multi-index."""
    single, multi, seeds = sizes(quick)
    grid = [(x, b, s) for x in DISTRIBUTIONS for b in DIRECTIONS for s in range(seeds)]
    return [
        moniri(d, 4 * d, ALPHA, seed=s, data={"distribution": x}, target={"directions": b})
        for d in single for x, b, s in grid
    ] + [multi_index(d, x, b, s) for d in multi for x, b, s in grid]  # fmt: skip


def subspace(row: Row, k: int) -> float | None:
    """Eigenvalue ``k`` (descending) of ``M̂ᵀM̂/N`` after step 2, in units of ``1/d``."""
    values = row.get("alignment.2.subspace_eigenvalues")
    return None if values is None else float(np.asarray(values)[k]) * row.config["dim"]


KEYS = ("target.expression", "dim", "data.distribution", "target.directions")


def analyse(rows: list[Row], quick: bool, out: Path):
    """Per (d, distribution, direction): spikes, cosine, error, He₂; eigenvalues·d (multi)."""
    findings = []
    groups = group_by(rows, *KEYS)
    for (expression, d, x, b), runs in groups.items():
        name = f"{x}, β {'= e_1' if b == 'coordinates' else 'Haar'}, d = {d}"
        if expression == "z1 + z1*z2":
            findings += [
                finding(name, "z1 + z1*z2: eigenvalue 1 × d", runs, lambda r: subspace(r, 0)),
                finding(name, "z1 + z1*z2: eigenvalue 2 × d", runs, lambda r: subspace(r, 1),
                        note="learned above 10"),
            ]  # fmt: skip
            continue
        gaussian = x == "gaussian"
        findings += [
            finding(name, "spikes", runs, lambda r: r.get("spectrum.spikes"),
                    lambda r: r.get("spectrum.predicted_spikes")),
            finding(name, "cos(update, β)", runs, update_cosine,
                    lambda r: r.get("predicted_update_cosine")),
            finding(name, "test error", runs, test_error,
                    (lambda r: r.predicted_test_error(RIDGE_INDEX)) if gaussian else None),
            finding(name, "⟨f̂, He₂(⟨β,x⟩)⟩", runs, lambda r: projection(r, 2),
                    note="the target's own: 1"),
        ]  # fmt: skip
    conclusions = [
        _verdict(findings, d) for d in sorted({d for e, d, _, _ in groups if "*" not in e})
    ]
    return findings, conclusions, save_figure(_figure(groups), out, "inputs")


def _verdict(findings, d) -> str:
    def value(x, b, quantity):
        label = f"{x}, β {'= e_1' if b == 'coordinates' else 'Haar'}, d = {d}"
        return next(f for f in findings if f.group == label and f.quantity == quantity)

    ref = value("gaussian", "random", "cos(update, β)")
    parts = []
    for x in DISTRIBUTIONS:
        for b in DIRECTIONS:
            c, e = value(x, b, "cos(update, β)"), value(x, b, "test error")
            parts.append(f"{x}/{'e_1' if b == 'coordinates' else 'Haar'}: cos {c.measured:.3f} "
                         f"(γ {ref.predicted:.3f}), error {e.measured:.3f}")  # fmt: skip
    return f"d = {d}: " + "; ".join(parts)


def _figure(groups) -> plt.Figure:
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    quantities = (
        ("cos(update, β)", update_cosine), ("test error", test_error),
        ("⟨f̂, He₂⟩", lambda r: projection(r, 2)),
    )  # fmt: skip
    labels = [f"{x[:5]}/{'e1' if b == 'coordinates' else 'Haar'}" for x in DISTRIBUTIONS
              for b in DIRECTIONS]  # fmt: skip
    dims = sorted({d for e, d, _, _ in groups if "*" not in e})
    width = 0.8 / len(dims)
    for i, d in enumerate(dims):
        for ax, (title, measure) in zip(axes[:3], quantities, strict=True):
            values = [
                np.mean([measure(r) for r in groups[("z1 + He2(z1)/2", d, x, b)] if r.ok])
                for x in DISTRIBUTIONS for b in DIRECTIONS
            ]  # fmt: skip
            ax.bar(np.arange(6) + i * width, values, width, label=f"d = {d}")
            ax.set_title(title)
    multi = sorted({d for e, d, _, _ in groups if "*" in e})
    for i, d in enumerate(multi):
        values = [
            np.mean([subspace(r, 1) for r in groups[("z1 + z1*z2", d, x, b)] if r.ok])
            for x in DISTRIBUTIONS for b in DIRECTIONS
        ]  # fmt: skip
        axes[3].bar(np.arange(6) + i * 0.8 / len(multi), values, 0.8 / len(multi),
                    label=f"d = {d}")  # fmt: skip
    axes[3].axhline(10, color="red", lw=0.8, ls=":")
    axes[3].set_yscale("log")
    axes[3].set_title("z1 + z1*z2, step 2: 2nd eigenvalue × d")
    for ax in axes:
        ax.set_xticks(np.arange(6) + 0.3, labels, rotation=45, fontsize=7)
        ax.legend(fontsize=7)
    fig.suptitle("input distributions: relu, σ* = z + He₂(z)/2, one step at α = 0.3, n = 4d")
    return fig


STUDIES = {
    "inputs": Study(
        "inputs",
        "Gaussian vs Rademacher vs spherical inputs, Haar or axis β: where universality breaks.",
        configs,
        analyse,
    )
}
