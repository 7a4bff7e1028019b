"""``many-steps`` and ``large-step``: several giant steps, and step sizes past ``α = 1/2``.

``many-steps``: Moniri's single-index setting (``studies.setting``) over ``T = 1..4`` steps on
fresh batches and on one reused batch, at ``α = 0.1, 0.2, 0.3``: the spikes after ``T`` steps and
their degrees (the probe each spike's left vector is aligned with), the fit's projections on
``He_k(⟨β, x⟩)`` and the test error. The band rule describes one step (its column is that).

``large-step``: one step at ``α = 0.3 … 0.7`` (``η = 2·n^α``): spikes, the update cosine against
``γ``, the neurons' alignment with ``β``, the test error and the mean squared norm of the rows;
and a second, true-gradient step (residual ``y − f``) at the same ``η``, where an overshoot shows.
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
    RIDGES,
    moniri,
    test_error,
    update_cosine,
)


def degree_count(row: Row, k: int) -> int | None:
    """How many of the run's learned spikes are aligned with the degree-``k`` probe."""
    if not row.ok:
        return None
    spikes = int(row.get("spectrum.spikes", 0))
    kinds = [row.get(f"spectrum.spike_alignment.{i}.kind") for i in range(spikes)]
    return kinds.count(f"degree {k}")


def projection(row: Row, k: int) -> float | None:
    """``E[f̂(x) He_k(⟨β,x⟩)]`` of the fit at the study's ridge value."""
    values = row.get("spectrum.projections")
    return None if values is None else float(np.asarray(values)[RIDGE_INDEX][k - 1])


# -- many-steps -------------------------------------------------------------------------------


def many_sizes(quick: bool) -> tuple[int, tuple[float, ...], tuple[int, ...], int]:
    """(d, the α values, the step counts T, seeds); n = 4d."""
    return (200, (0.1, 0.3), (1, 2, 3), 2) if quick else (500, (0.1, 0.2, 0.3), (1, 2, 3, 4), 3)


def many_configs(quick: bool) -> list[dict]:
    """Every (α, T, fresh or reused batch, seed); T = 1 once (reuse changes nothing)."""
    dim, alphas, counts, seeds = many_sizes(quick)
    return [
        moniri(
            dim, 4 * dim, alpha, seed=seed, steps=t, max_degree=3, train={"reuse_batch": reuse}
        )  # fmt: skip
        for alpha in alphas
        for t in counts
        for reuse in ((False,) if t == 1 else (False, True))
        for seed in range(seeds)
    ]


MANY_KEYS = ("train.step_size.batch_exponent", "train.reuse_batch", "train.steps")


def many_analyse(rows: list[Row], quick: bool, out: Path):
    """Per (α, batches, T): spikes, degree-2 spikes, He₁/He₂ projections, test error."""
    findings = []
    groups = group_by(rows, *MANY_KEYS)
    for (alpha, reuse, t), runs in groups.items():
        name = f"α = {alpha:g}, {'reused' if reuse else 'fresh'} batch, T = {t}"
        band = (lambda r: r.get("spectrum.predicted_spikes")) if t == 1 else None
        findings += [
            finding(name, "spikes", runs, lambda r: r.get("spectrum.spikes"), band),
            finding(name, "degree-2 spikes", runs, lambda r: degree_count(r, 2)),
            finding(name, "⟨f̂, He₁⟩", runs, lambda r: projection(r, 1)),
            finding(name, "⟨f̂, He₂⟩", runs, lambda r: projection(r, 2)),
            finding(name, "test error", runs, test_error,
                    (lambda r: r.predicted_test_error(RIDGE_INDEX)) if t == 1 else None),
            finding(name, f"cos(W_{t} − W_0, β)", runs, lambda r, t=t: update_cosine(r, t)),
        ]  # fmt: skip
    conclusions = []
    for alpha in sorted({a for a, _, _ in groups}):
        for reuse in (False, True):
            he2 = {
                t: np.mean([projection(r, 2) for r in runs if r.ok])
                for (a, u, t), runs in groups.items()
                if a == alpha and (u == reuse or t == 1)
            }
            trail = ", ".join(f"T={t}: {v:.2f}" for t, v in sorted(he2.items()))
            conclusions.append(
                f"α = {alpha:g}, {'reused' if reuse else 'fresh'} batches: ⟨f̂, He₂⟩ {trail}"
            )
    return findings, conclusions, save_figure(_many_figure(groups), out, "many-steps")


def _many_figure(groups: dict) -> plt.Figure:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    alphas = sorted({a for a, _, _ in groups})
    for color, alpha in zip(("C0", "C1", "C2"), alphas, strict=False):
        for reuse, style in ((False, "o-"), (True, "s--")):
            points = sorted(
                (t, runs) for (a, u, t), runs in groups.items()
                if a == alpha and (u == reuse or t == 1)
            )  # fmt: skip
            ts = [t for t, _ in points]
            for ax, measure in zip(axes, (
                lambda r: r.get("spectrum.spikes"), lambda r: projection(r, 2), test_error
            ), strict=True):  # fmt: skip
                values = [np.mean([measure(r) for r in runs if r.ok]) for _, runs in points]
                label = f"α = {alpha:g}, {'reused' if reuse else 'fresh'}"
                ax.plot(ts, values, style, color=color, label=label)
    for ax, title in zip(axes, ("learned spikes", "⟨f̂, He₂(⟨β,x⟩)⟩", "test error"), strict=True):
        ax.set_xlabel("steps T")
        ax.set_title(title)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(fontsize=7)
    fig.suptitle("several giant steps: relu, σ* = z + He₂(z)/2, η = 2·n^α, n = 4d")
    return fig


# -- large-step -------------------------------------------------------------------------------

ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7)


def large_sizes(quick: bool) -> tuple[tuple[int, ...], int]:
    """(the d values, seeds); n = 4d."""
    return ((200,), 2) if quick else ((250, 500, 1000), 2)


def large_configs(quick: bool) -> list[dict]:
    """One step (residual y, spectrum) and two true-gradient steps (y − f) at each α."""
    dims, seeds = large_sizes(quick)
    one = [
        moniri(d, 4 * d, alpha, seed=seed, max_degree=4)
        for d in dims for alpha in ALPHAS for seed in range(seeds)
    ]  # fmt: skip
    two = [
        moniri(d, 4 * d, alpha, seed=seed, steps=2, spectrum=False, train={"residual": "y-f"})
        for d in dims for alpha in ALPHAS for seed in range(seeds)
    ]  # fmt: skip
    return one + two


def best_error(row: Row) -> float | None:
    """The smallest test error over the ridge path."""
    values = [row.get(f"errors.{i}.test_error") for i in range(len(RIDGES))]
    values = [v for v in values if v is not None]
    return min(values) if values else None


def large_analyse(rows: list[Row], quick: bool, out: Path):
    """Per (d, α): spikes, cosine vs γ, alignment, error, row norms; the second y − f step."""
    findings = []
    groups = group_by(rows, "dim", "train.steps", "train.step_size.batch_exponent")
    best: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for (d, t, alpha), runs in groups.items():
        name = f"d = {d}, α = {alpha:g}" + (", 2nd step y − f" if t == 2 else "")
        if t == 1:
            findings += [
                finding(name, "spikes", runs, lambda r: r.get("spectrum.spikes"),
                        lambda r: r.get("spectrum.predicted_spikes")),
                finding(name, "cos(update, β)", runs, update_cosine,
                        lambda r: r.get("predicted_update_cosine")),
            ]  # fmt: skip
        findings += [
            finding(name, "rms cos(w_j, β)", runs,
                    lambda r, t=t: r.get(f"alignment.{t}.direction_alignment")[0]),
            finding(name, "mean ‖w_j‖²", runs,
                    lambda r, t=t: r.get(f"alignment.{t}.overlap_q_diagonal")),
            finding(name, "test error (best ridge)", runs, best_error),
            finding(name, "diverged runs", runs,
                    lambda r: float(not r.ok), note="of the seeds"),
        ]  # fmt: skip
        errors = [best_error(r) for r in runs if r.ok]
        if errors:
            best.setdefault((d, t), []).append((float(np.mean(errors)), alpha))
    conclusions = []
    for (d, t), values in sorted(best.items()):
        error, alpha = min(values)
        what = "one step (y)" if t == 1 else "two steps (y − f)"
        conclusions.append(f"d = {d}, n = {4 * d}, {what}: the test error is smallest at "
                           f"α = {alpha:g} ({error:.3f})")  # fmt: skip
    return findings, conclusions, save_figure(_large_figure(groups), out, "large-step")


def _large_figure(groups: dict) -> plt.Figure:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    dims = sorted({d for d, _, _ in groups})
    for color, d in zip(("C0", "C1", "C2"), dims, strict=False):
        for t, style in ((1, "o-"), (2, "s--")):
            points = sorted((a, runs) for (m, s, a), runs in groups.items() if m == d and s == t)
            xs = [a for a, _ in points]
            for ax, measure in zip(axes, (
                best_error,
                lambda r, t=t: r.get(f"alignment.{t}.direction_alignment")[0],
                lambda r, t=t: r.get(f"alignment.{t}.overlap_q_diagonal"),
            ), strict=True):  # fmt: skip
                values = [np.mean([measure(r) for r in runs if r.ok] or [np.nan])
                          for _, runs in points]  # fmt: skip
                label = f"d = {d}, " + ("1 step, y" if t == 1 else "2 steps, y − f")
                ax.plot(xs, values, style, color=color, label=label)
    axes[2].set_yscale("log")
    for ax, title in zip(axes, ("test error (best ridge)", "rms cos(w_j, β)", "mean ‖w_j‖²"),
                         strict=True):  # fmt: skip
        ax.axvline(0.5, color="0.5", lw=0.8, ls=":")
        ax.set_xlabel("α  (η = 2·n^α)")
        ax.set_title(title)
    axes[0].legend(fontsize=7)
    fig.suptitle("large steps: relu, σ* = z + He₂(z)/2, n = 4d (dotted: α = 1/2)")
    return fig


STUDIES = {
    "many-steps": Study(
        "many-steps",
        "T = 1..4 giant steps (fresh and reused batches) at α = 0.1..0.3: spikes, degrees, He_k.",
        many_configs,
        many_analyse,
    ),
    "large-step": Study(
        "large-step",
        "α = 0.3..0.7, past 1/2: spikes, cosine vs γ, alignment, test error, weight growth.",
        large_configs,
        large_analyse,
    ),
}
