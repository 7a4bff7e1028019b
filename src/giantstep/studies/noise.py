"""``label-noise``: additive label noise and corrupted labels against one giant step.

Moniri's setting (``studies.setting``, ``α = 0.3``) with ``y = σ*(⟨β, x⟩) + σ_ε ε`` for several
``σ_ε``, and with a fraction ``p`` of the training labels replaced by decoy labels independent of
``x`` (``target.corruption``). Beside the measured update cosine, the theory's
``γ = (1 − p) μ₁(σ*) / sqrt((1 − p)² μ₁(σ*)² + (E[σ*²] + σ_ε²)·d/n)``: noise enters through
``E[y²]`` only; corruption keeps ``E[y²]`` and shrinks ``ζ``'s signal by ``(1 − p)``. The test set
keeps clean labels under corruption (and noisy ones under ``σ_ε``), so the finding reports the
excess test error ``test error − σ_ε²``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from giantstep.studies.core import Finding, Row, Study, finding, group_by, save_figure  # noqa: E402
from giantstep.studies.setting import moniri, test_error, update_cosine  # noqa: E402

ALPHA = 0.3
#: (σ_ε, p) settings: noise alone, then corruption alone.
QUICK_GRID = [(0.0, 0.0), (1.0, 0.0), (0.0, 0.5), (0.0, 1.0)]
GRID = [(0.0, 0.0), (0.5, 0.0), (1.0, 0.0), (2.0, 0.0), (0.0, 0.25), (0.0, 0.5), (0.0, 1.0)]


def sizes(quick: bool) -> tuple[int, tuple[int, ...], int]:
    """(d, the batch sizes n, seeds)."""
    return (200, (800, 3200), 2) if quick else (500, (2000, 8000), 3)


def configs(quick: bool) -> list[dict]:
    """Every (n, σ_ε, p, seed)."""
    dim, ns, seeds = sizes(quick)
    return [
        moniri(dim, n, ALPHA, seed=seed, target={"noise": noise, "corruption": p})
        for n in ns
        for noise, p in (QUICK_GRID if quick else GRID)
        for seed in range(seeds)
    ]


KEYS = ("train.batch_size", "target.noise", "target.corruption")


def analyse(rows: list[Row], quick: bool, out: Path):
    """Cosine vs γ, spikes vs the band rule, excess test error, for each (n, σ_ε, p)."""
    findings: list[Finding] = []
    groups = group_by(rows, *KEYS)
    for (n, noise, p), runs in groups.items():
        name = f"n = {n}, σ_ε = {noise:g}, p = {p:g}"
        findings.append(finding(
            name, "cos(update, β)", runs, update_cosine,
            lambda r: r.get("predicted_update_cosine"),
        ))  # fmt: skip
        findings.append(finding(
            name, "spikes", runs, lambda r: r.get("spectrum.spikes"),
            lambda r: r.get("spectrum.predicted_spikes"),
        ))  # fmt: skip
        findings.append(finding(
            name, "excess test error", runs,
            lambda r, s=noise: None if test_error(r) is None else test_error(r) - s**2,
            # The error theory knows label noise but not corruption.
            (lambda r, s=noise: None if r.predicted_test_error(1) is None
             else r.predicted_test_error(1) - s**2) if p == 0 else None,
        ))  # fmt: skip
    largest = max(n for n, _, _ in groups)
    gaps = [
        abs(f.measured - f.predicted)
        for f in findings
        if f.quantity.startswith("cos") and f.group.startswith(f"n = {largest},")
        and f.measured is not None and f.predicted  # p = 1: γ = 0, |cos| is a noise floor
    ]  # fmt: skip
    conclusions = [
        f"At n = {largest} the update cosine follows γ = (1−p)μ₁/sqrt((1−p)²μ₁² + (E[σ*²] + "
        f"σ_ε²)d/n) within {max(gaps, default=float('nan')):.3f} wherever γ > 0 (at p = 1, "
        "γ = 0 and |cos| is the noise floor of a random direction, about sqrt(1/d)).",
        "Spikes: the theory column is the noise-free band rule at α = 0.3. Excess test error = "
        "test error − σ_ε² at ridge 0.01, on clean test labels under corruption; its theory "
        "(predicted_errors, where present) knows σ_ε but not corruption, so it is shown for "
        "p = 0 only.",
    ]
    return findings, conclusions, save_figure(_figure(groups), out, "label-noise")


def _figure(groups: dict) -> plt.Figure:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ns = sorted({n for n, _, _ in groups})
    for color, n in zip(("C0", "C1", "C2", "C3"), ns, strict=False):
        for panel, (ax, axis) in enumerate(zip(axes[:2], ("noise", "corruption"), strict=True)):
            points = sorted(
                (noise if axis == "noise" else p, runs)
                for (m, noise, p), runs in groups.items()
                if m == n and (p == 0 if axis == "noise" else noise == 0)
            )
            xs = [x for x, _ in points]
            cos = [[update_cosine(r) for r in runs if r.ok] for _, runs in points]
            gamma = [runs[0].get("predicted_update_cosine") for _, runs in points]
            ax.plot(xs, [sum(c) / len(c) for c in cos], "o-", color=color, label=f"n = {n}")
            ax.plot(xs, gamma, "--", color=color, lw=1)
            ax.set_xlabel("σ_ε" if axis == "noise" else "corruption p")
            ax.set_ylabel("cos(update, β)  (dashed: γ)")
            if panel == 0:
                ax.legend(fontsize=8)
        points = sorted(
            (p, noise, runs) for (m, noise, p), runs in groups.items() if m == n and noise == 0
        )
        errors = [[test_error(r) for r in runs if r.ok] for _, _, runs in points]
        axes[2].plot([p for p, _, _ in points], [sum(e) / len(e) for e in errors], "o-",
                     color=color, label=f"n = {n}")  # fmt: skip
    axes[2].set_xlabel("corruption p")
    axes[2].set_ylabel("test error on clean labels")
    axes[2].legend(fontsize=8)
    fig.suptitle("label noise and corrupted labels: one step, relu, σ* = z + He₂(z)/2, α = 0.3")
    return fig


STUDIES = {
    "label-noise": Study(
        "label-noise",
        "Label noise σ_ε and corrupted labels p: the update cosine against γ, spikes, errors.",
        configs,
        analyse,
    )
}
