"""Moniri et al. (SCIENCE.md §3 [M]): spikes, equivalence with ``F_ℓ``, non-linear learning.

Each reproduction runs the streamed pipeline with ``spectrum.enabled`` over a sweep of the
step-size exponent ``α`` (``η = c·n^α``, ``train.step_size.batch_exponent``) and, where the claim
is about a limit, of ``n``; it prints measured against predicted and draws a figure.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from giantstep.experiment import RunResult, run  # noqa: E402
from giantstep.reproduce.report import Check, Report, save_figure  # noqa: E402

TARGET = "z1 + He2(z1)/2"
SCALE = 2.0
RIDGE = 1e-3
#: Widest network given the error theory's line: its N × N solver (moniri's unequal a_j) costs
#: ~8 s per variant at N = 2000 and would cost ~15 min and ~5 GB at N = 8000.
THEORY_MAX_WIDTH = 2000
#: How each variant of the error theory is drawn beside the measured line of the same colour.
THEORY_STYLES = {"trained_layer": "--", "spiked": ":", "random_features": "-."}


def _config(
    dim: int, n: int, alpha: float, *, activation: str = "relu", residual: str = "y",
    max_degree: int = 3, top: int = 40, seed: int = 0, theory: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """``d = N = dim``, batch, ridge and test sets of ``n`` samples, ``η = 2·n^α``; with
    ``theory``, the predicted errors (``theory.errors``)."""
    return {
        "seed": seed,
        "dim": dim,
        "width": dim,
        "preset": "moniri",
        "activation": activation,
        "target": {"expression": TARGET, "noise": 0.0},
        "train": {
            "steps": 1,
            "batch_size": n,
            "residual": residual,
            "step_size": {"scale": SCALE, "batch_exponent": alpha},
        },
        "readout": {"samples": n, "ridge": [RIDGE]},
        "test": {"samples": n},
        "spectrum": {"enabled": True, "top": top, "max_degree": max_degree},
        "theory": {"errors": theory},
    }


def _predicted(runs: list[RunResult], variant: str) -> float | None:
    """The mean over runs of a variant's predicted test error (ridge 0), None if any run
    has none (theory off, or the variant out of scope)."""
    values = []
    for r in runs:
        errors = r.predicted_errors and getattr(r.predicted_errors, variant).errors
        if not errors:
            return None
        values.append(errors[0].test_error)
    return sum(values) / len(values)


def _theory_lines(ax, xs, runs: list[list[RunResult]], colors: dict[str, str], legend=True) -> None:
    """Each variant's mean predicted test error against xs (runs[i]: the runs at xs[i]),
    where every run at an x has it; colors: variant → colour."""
    for variant, color in colors.items():
        points = [(x, _predicted(rs, variant)) for x, rs in zip(xs, runs, strict=True)]
        points = [(x, y) for x, y in points if y is not None]
        if points:
            name = f"theory: {variant.replace('_', ' ')}" if legend else "_nolegend_"
            ax.plot(*zip(*points, strict=True), THEORY_STYLES[variant], color=color, lw=1.2,
                    label=name)  # fmt: skip


def _bulk_top(result: RunResult) -> float:
    """The largest value of ``F`` that is neither the mean spike nor a learned spike."""
    s = result.spectrum
    taken = {a.value for a in s.spike_alignment} | {s.mean_spike}
    return next(v for v in s.singular_values if v not in taken)


def _spectrum_figure(results: dict[float, RunResult], out: Path, name: str) -> Path:
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), sharey=True)
    for ax, (alpha, r) in zip(axes, results.items(), strict=True):
        s = r.spectrum
        after = [v for v in s.singular_values if v != s.mean_spike]
        before = sorted(s.initial_singular_values, reverse=True)[1:]  # F_0's mean spike set aside
        ax.plot(range(1, len(before) + 1), before, "s", ms=3, color="0.6", label="F₀ (initial)")
        ax.plot(range(1, len(after) + 1), after, "o", ms=3, color="C0", label="F (after step)")
        spikes = [a.value for a in s.spike_alignment]
        ax.plot(range(1, len(spikes) + 1), spikes, "o", ms=9, mfc="none", color="C3",
                label="learned spikes")  # fmt: skip
        for i, a in enumerate(s.spike_alignment):
            ax.annotate(a.kind, (i + 1, a.value), xytext=(6, 0), textcoords="offset points",
                        fontsize=8)  # fmt: skip
        ax.axhline(s.bulk_edge, color="C2", ls="--", lw=1, label="bulk edge of F₀")
        ax.set_yscale("log")
        ax.set_xlabel("rank (mean spike removed)")
        ax.set_title(f"α = {alpha}: {s.spikes} spikes (band rule {s.predicted_spikes})")
    axes[0].set_ylabel("singular value of F/√n")
    axes[0].legend(fontsize=7)
    c = next(iter(results.values())).config
    fig.suptitle(
        f"{c.activation}, σ* = {c.target.expression}, d = N = {c.dim}, "
        f"n = {c.train.batch_size}, η = {SCALE}·n^α, residual {c.train.residual}"
    )
    return save_figure(fig, out / f"{name}.png")


def spikes(quick: bool, out: Path) -> Report:
    """One giant step adds ℓ(α) spikes to the spectrum, each aligned with a polynomial feature."""
    started = time.perf_counter()
    dim, n = (400, 1600) if quick else (2000, 8000)
    alphas = (0.1, 0.2, 0.3)
    report = Report("moniri-spikes")
    results = {alpha: run(_config(dim, n, alpha, max_degree=2)) for alpha in alphas}
    for alpha, r in results.items():
        s = r.spectrum
        report.checks.append(Check(
            f"learned spikes at α = {alpha} (residual y)",
            f"{s.spikes} ({', '.join(f'{a.value:.3g}' for a in s.spike_alignment)} > edge "
            f"{s.bulk_edge:.3g})",
            f"{s.predicted_spikes} (band ℓ = {s.band})",
            s.spikes == s.predicted_spikes,
        ))  # fmt: skip
        kinds = [a.kind for a in s.spike_alignment]
        expected = [f"degree {k}" for k in range(1, s.spikes + 1)]
        cos2 = [a.cos2[f"He{k + 1}(X̃ζ̂)"] for k, a in enumerate(s.spike_alignment)]
        report.checks.append(Check(
            f"spike k aligned with He_k(X̃ζ̂) at α = {alpha}",
            ", ".join(f"{k}: cos² {c:.2f}" for k, c in zip(kinds, cos2, strict=True)),
            ", ".join(expected),
            kinds == expected,
        ))  # fmt: skip
        report.checks.append(Check(
            f"mean spike reported apart at α = {alpha}",
            f"{s.mean_spike:.3g}, cos²(u, 1/√n) = {s.mean_spike_cos2:.3f}",
            "present (μ₀(relu) ≠ 0), cos² ≈ 1",
            s.mean_spike is not None and s.mean_spike_cos2 > 0.9,
        ))  # fmt: skip
        measured = r.alignment[1].update_cosine
        report.checks.append(Check(
            f"cos(update, β) at α = {alpha}",
            f"{measured:.3f}",
            f"γ = {r.predicted_update_cosine:.3f} ± 0.03",
            abs(measured - r.predicted_update_cosine) < 0.03,
        ))  # fmt: skip
    last = results[alphas[-1]].spectrum
    bulk = _bulk_top(results[alphas[-1]])
    report.checks.append(Check(
        f"the moved bulk of F is not counted (α = {alphas[-1]})",
        f"bulk top {bulk:.4g} = edge × {bulk / last.bulk_edge:.3f}; {last.spikes} spikes",
        f"above F₀'s edge {last.bulk_edge:.4g}, no spike",
        bulk > last.bulk_edge and last.spikes == last.predicted_spikes,
    ))  # fmt: skip
    # Residual y − f: the network's own output; the alignment tells its direction apart.
    yf = run(_config(dim, n, alphas[-1], residual="y-f", max_degree=2)).spectrum
    tilt_y = last.spike_alignment[0].cos2["X̃W0ᵀa"]
    tilt_yf = yf.spike_alignment[0].cos2["X̃W0ᵀa"] if yf.spike_alignment else float("nan")
    report.checks.append(Check(
        f"residual y − f (α = {alphas[-1]}): target spikes, outliers along X̃W₀ᵀa",
        f"{yf.target_spikes} target + {yf.network_spikes} network; degree-1 spike cos² with "
        f"X̃W₀ᵀa {tilt_yf:.3f} (residual y: {tilt_y:.3f})",
        f"{last.predicted_spikes} target; the y − f spike tilts towards X̃W₀ᵀa",
        yf.target_spikes == last.predicted_spikes and tilt_yf > tilt_y,
    ))  # fmt: skip
    report.figures.append(_spectrum_figure(results, out, "moniri-spikes"))
    report.seconds = time.perf_counter() - started
    return report


def _error(r: RunResult, ell: int) -> tuple[float, float]:
    row = next(e for e in r.spectrum.approximation_ridge_errors if e.ell == ell)
    return row.train_error, row.test_error


def equivalence(quick: bool, out: Path) -> Report:
    """Ridge on F equals ridge on F_ℓ; ‖F − F_ℓ‖ shrinks with n while ‖F − F_{ℓ−1}‖ grows."""
    started = time.perf_counter()
    # ‖F − F_ℓ‖ is set by the extreme entries of the update's triplet, which fluctuate from
    # seed to seed by ~15% at n ≤ 4000: the quick sizes average three seeds.
    sizes, seeds = ((1000, 4000), (0, 1, 2)) if quick else ((2000, 8000, 32000), (0,))
    alpha, ell = 0.3, 2
    report = Report("moniri-equivalence")
    runs = {
        n: [
            run(_config(n // 4, n, alpha, activation="softplus", max_degree=ell, top=8, seed=k,
                        theory=n // 4 <= THEORY_MAX_WIDTH))
            for k in seeds
        ]
        for n in sizes
    }  # fmt: skip

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    over = f"mean of {len(seeds)} seeds" if len(seeds) > 1 else f"seed {seeds[0]}"
    band = runs[sizes[0]][0].spectrum.band
    report.checks.append(Check("band at α = 0.3 (softplus)", f"ℓ = {band}", "ℓ = 2", band == ell))
    norms = {
        k: [mean([r.spectrum.approximation_error[k - 1] for r in rs]) for rs in runs.values()]
        for k in (ell, ell - 1)
    }
    report.checks.append(Check(
        f"‖F − F_{ell}‖_op/√n, n = {', '.join(map(str, sizes))} ({over})",
        ", ".join(f"{v:.3f}" for v in norms[ell]),
        "decreasing",
        all(a > b for a, b in zip(norms[ell], norms[ell][1:], strict=False)),
    ))  # fmt: skip
    report.checks.append(Check(
        f"‖F − F_{ell - 1}‖_op/√n, same n",
        ", ".join(f"{v:.3f}" for v in norms[ell - 1]),
        "increasing",
        all(a < b for a, b in zip(norms[ell - 1], norms[ell - 1][1:], strict=False)),
    ))  # fmt: skip
    gaps = []
    for n, rs in runs.items():
        f_train = mean([r.errors[0].train_error for r in rs])
        f_test = mean([r.errors[0].test_error for r in rs])
        l_train, l_test = (mean([_error(r, ell)[i] for r in rs]) for i in (0, 1))
        p_train, p_test = (mean([_error(r, ell - 1)[i] for r in rs]) for i in (0, 1))
        gaps.append(max(abs(l_test - f_test) / f_test, abs(l_train - f_train) / f_train))
        report.checks.append(Check(
            f"ridge {RIDGE:g}, n = {n}: train / test error on F, F_{ell}, F_{ell - 1}",
            f"F {f_train:.3f}/{f_test:.3f}, F_{ell} {l_train:.3f}/{l_test:.3f} "
            f"(gap {gaps[-1]:.1%}), F_{ell - 1} {p_train:.3f}/{p_test:.3f}",
            f"F_{ell - 1} worse than F (> 10%)",
            p_test > 1.1 * f_test,
        ))  # fmt: skip
    # Equivalence is a limit (Thms 4.1–4.2): the gap must close as n grows. At n = 2000 a
    # single seed can still be ~7% apart; the claim is checked where the limit is reached.
    report.checks.append(Check(
        f"errors on F_{ell} equal those on F as n grows",
        "relative gap " + ", ".join(f"{g:.1%}" for g in gaps),
        "within 5% at the largest n, no larger than at the smallest",
        gaps[-1] < 0.05 and gaps[-1] <= gaps[0],
    ))  # fmt: skip
    report.figures.append(_equivalence_figure(runs, ell, over, out))
    report.seconds = time.perf_counter() - started
    return report


def _equivalence_figure(runs: dict[int, list[RunResult]], ell: int, over: str, out: Path) -> Path:
    sizes = list(runs)

    def mean(values) -> float:
        values = list(values)
        return sum(values) / len(values)

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for k, style in ((ell - 1, "s--"), (ell, "o-")):
        norms = [mean(r.spectrum.approximation_error[k - 1] for r in rs) for rs in runs.values()]
        left.plot(sizes, norms, style, label=f"‖F − F_{k}‖")
    left.set_xscale("log")
    left.set_xlabel("n  (d = N = n/4)")
    left.set_ylabel("‖·‖_op / √n")
    left.legend()
    right.plot(sizes, [mean(r.errors[0].test_error for r in rs) for rs in runs.values()], "o-",
               color="C0", label="F")  # fmt: skip
    for i, (k, style) in enumerate(((ell, "x--"), (ell - 1, "s:"), (0, "^:")), start=1):
        errors = [mean(_error(r, k)[1] for r in rs) for rs in runs.values()]
        right.plot(sizes, errors, style, color=f"C{i}",
                   label=f"F_{k}" if k else "F₀ (random features)")  # fmt: skip
    # The error theory: F after the step (trained layer, predicted layer), F₀ (random features).
    colors = {"trained_layer": "C0", "spiked": "C0", "random_features": "C3"}
    _theory_lines(right, sizes, list(runs.values()), colors)
    right.set_xscale("log")
    right.set_xlabel("n")
    right.set_ylabel(f"test error (ridge {RIDGE:g})")
    right.legend(fontsize=7)
    widest = max(n for n in sizes if n // 4 <= THEORY_MAX_WIDTH)
    stop = "" if widest == sizes[-1] else f"; theory up to n = {widest} (N = {widest // 4})"
    fig.suptitle(f"softplus, σ* = {TARGET}, η = {SCALE}·n^0.3, residual y ({over}{stop})")
    return save_figure(fig, out / "moniri-equivalence.png")


def nonlinear(quick: bool, out: Path) -> Report:
    """For ℓ ≥ 2 the degree-2 part of σ* is learned; for ℓ = 1 only the linear part."""
    started = time.perf_counter()
    shapes = ((250, 1000), (500, 2000)) if quick else ((1000, 4000), (2000, 8000))
    alphas = (0.0, 0.1, 0.2, 0.3)
    report = Report("moniri-nonlinear")
    grid = {
        (dim, n): {
            alpha: run(_config(dim, n, alpha, max_degree=2, top=8, theory=True)) for alpha in alphas
        }
        for dim, n in shapes
    }
    he2 = {key: [r.spectrum.projections[0][1] for r in row.values()] for key, row in grid.items()}
    he1 = {key: [r.spectrum.projections[0][0] for r in row.values()] for key, row in grid.items()}
    test = {key: [r.errors[0].test_error for r in row.values()] for key, row in grid.items()}
    target = next(iter(next(iter(grid.values())).values())).spectrum.target_projections
    largest = shapes[-1]
    small = [v for a, v in zip(alphas, he2[largest], strict=True) if a <= 0.1]
    report.checks.append(Check(
        f"⟨f̂, He₂(⟨β,x⟩)⟩ at α ≤ 0.1 (n = {largest[1]})",
        ", ".join(f"{v:.3f}" for v in small),
        f"≈ 0 (< 0.15); target's {target[1]:g}",
        all(abs(v) < 0.15 for v in small),
    ))  # fmt: skip
    report.checks.append(Check(
        f"⟨f̂, He₂(⟨β,x⟩)⟩ at α = 0.3 (n = {largest[1]})",
        f"{he2[largest][-1]:.3f}",
        "partially learned (> 0.35; ≈ 0.5 at n = 8000)",
        he2[largest][-1] > 0.35,
    ))  # fmt: skip
    report.checks.append(Check(
        f"⟨f̂, He₁(⟨β,x⟩)⟩ (n = {largest[1]}, α = {', '.join(map(str, alphas))})",
        ", ".join(f"{v:.3f}" for v in he1[largest]),
        f"linear part learned at every α (> 0.6; target's {target[0]:g})",
        all(v > 0.6 for v in he1[largest]),
    ))  # fmt: skip
    report.checks.append(Check(
        f"test error over α (n = {largest[1]})",
        ", ".join(f"{v:.3f}" for v in test[largest]),
        "falls with α (≈ 0.9 → ≈ 0.49 at n = 8000)",
        all(a > b for a, b in zip(test[largest], test[largest][1:], strict=False)),
    ))  # fmt: skip
    trend = "; ".join(
        f"n = {key[1]}: " + ", ".join(f"{v:.2f}" for v in values) for key, values in he2.items()
    )
    # Below n ≈ 4000 the He₂ projection at α = 0.2 still grows with n (η = c·n^α grows too):
    # the sharpening is checked at the default sizes only; the quick figure shows both n.
    if not quick:
        below = [i for i, a in enumerate(alphas) if 0 < a < 0.25]
        sharper = all(he2[shapes[0]][i] > he2[largest][i] for i in below) and (
            he2[largest][-1] - he2[largest][below[-1]]
            > he2[shapes[0]][-1] - he2[shapes[0]][below[-1]]
        )
        report.checks.append(Check(
            "the transition at α = 1/4 sharpens as n grows",
            trend,
            "He₂ projection at α < 1/4 falls with n, the step across 1/4 grows",
            sharper,
        ))  # fmt: skip
    report.figures.append(_nonlinear_figure(alphas, he1, he2, test, target, grid, out))
    report.seconds = time.perf_counter() - started
    return report


def _nonlinear_figure(alphas, he1, he2, test, target, grid, out: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for i, key in enumerate(he2):
        label = f"d = N = {key[0]}, n = {key[1]}"
        left.plot(alphas, he2[key], "o-", color=f"C{i}", label=f"He₂, {label}")
        left.plot(alphas, he1[key], "s--", color=f"C{i}", alpha=0.6, label=f"He₁, {label}")
        right.plot(alphas, test[key], "o-", color=f"C{i}", label=label)
        runs = [[grid[key][alpha]] for alpha in alphas]
        _theory_lines(right, alphas, runs, dict.fromkeys(THEORY_STYLES, f"C{i}"), legend=i == 0)
    left.axhline(target[1], color="0.5", lw=0.8, ls=":")
    left.axvline(0.25, color="0.7", lw=0.8)
    right.axvline(0.25, color="0.7", lw=0.8)
    left.set_xlabel("α")
    left.set_ylabel("E[f̂(x) He_k(⟨β,x⟩)]  (target: 1, 1)")
    right.set_xlabel("α")
    right.set_ylabel(f"test error (ridge {RIDGE:g})")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.suptitle(f"relu, σ* = {TARGET}, η = {SCALE}·n^α, residual y")
    return save_figure(fig, out / "moniri-nonlinear.png")


REPRODUCTIONS = {
    "moniri-spikes": spikes,
    "moniri-equivalence": equivalence,
    "moniri-nonlinear": nonlinear,
}
