"""``full-training``: one giant step against a fully trained network, on the same data budget.

Moniri et al.'s first open question. The target ``σ* = z + He₂(z)/2`` is learned four ways:

1. random features (``T = 0``) + ridge;
2. one giant step (``η = 2·n^α``, ``α = 0.3``, residual ``y``) on a batch of ``n`` + ridge;
3. three giant steps on the same reused batch + ridge;
4. a fully trained network (``train.mode = "full"``): both layers, full-batch Adam on the
   ``2n`` samples the giant-step runs use in all (their batch of ``n`` — the first ``n`` rows
   of the same stream — and ``n`` more, standing for their ridge set), until the training loss
   stops improving, the weight decay chosen on a validation split of those ``2n``.

Rungs 1–3 report the smallest test error over the ridge path (the papers' convention, an
oracle choice that favours them); rung 4 the network's own test error. The finding "captured"
is ``(E_RF − E_1)/(E_RF − E_full)``: the share of the fully trained network's gain over random
features that one giant step already has.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from giantstep.studies.core import Finding, Row, Study, finding, over_seeds, save_figure  # noqa: E402
from giantstep.studies.setting import RIDGES, moniri  # noqa: E402
from giantstep.studies.steps import best_error  # noqa: E402

ALPHA = 0.3
RUNGS = ("random features", "1 giant step", "3 giant steps", "fully trained")


def sizes(quick: bool) -> tuple[int, tuple[int, ...], int, list[float]]:
    """(d = N, the n values, seeds, weight decays tried)."""
    if quick:
        return 64, (256, 1024), 2, [1e-3, 1e-2]
    return 100, (400, 1600), 3, [1e-4, 1e-3, 1e-2]


def configs(quick: bool) -> list[dict]:
    """The four rungs at each n and seed."""
    dim, ns, seeds, decays = sizes(quick)
    test = 4096
    out = []
    for n in ns:
        for seed in range(seeds):
            out += [
                moniri(dim, n, ALPHA, seed=seed, steps=0, spectrum=False, test=test),
                moniri(dim, n, ALPHA, seed=seed, steps=1, spectrum=False, test=test),
                moniri(dim, n, ALPHA, seed=seed, steps=3, spectrum=False, test=test,
                       train={"reuse_batch": True}),
                moniri(dim, n, ALPHA, seed=seed, spectrum=False, test=test, train={
                    "mode": "full", "batch_size": 2 * n,
                    "full": {"optimizer": "adam", "learning_rate": 1e-2, "epochs": 2000,
                             "patience": 20, "weight_decay": decays,
                             "validation_fraction": 0.2},
                }),
            ]  # fmt: skip
    return out


def rung(row: Row) -> str:
    """Which of the four a run is."""
    if row.config.get("train.mode") == "full":
        return RUNGS[3]
    return {0: RUNGS[0], 1: RUNGS[1]}.get(row.config["train.steps"], RUNGS[2])


def batch(row: Row) -> int:
    """The n of the rung's setting (the fully trained network gets 2n)."""
    n = row.config["train.batch_size"]
    return n // 2 if rung(row) == RUNGS[3] else n


def error(row: Row) -> float | None:
    """Test error: best over the ridge path (rungs 1–3) or the network's own (rung 4)."""
    if rung(row) == RUNGS[3]:
        return row.get("full_training.test_error")
    return best_error(row)


def predicted(row: Row) -> float | None:
    """The error theory at the ridge value the best error was found at (rungs 1–2)."""
    if rung(row) not in RUNGS[:2] or not row.ok:
        return None
    values = [row.get(f"errors.{i}.test_error") for i in range(len(RIDGES))]
    return row.predicted_test_error(int(np.nanargmin([np.nan if v is None else v for v in values])))


def analyse(rows: list[Row], quick: bool, out: Path):
    """The ladder at each n, the share of the gain one step captures, full training's curve."""
    findings: list[Finding] = []
    conclusions = []
    ns = sorted({batch(r) for r in rows})
    ladder: dict[int, dict[str, list[Row]]] = {}
    for r in rows:
        ladder.setdefault(batch(r), {}).setdefault(rung(r), []).append(r)
    for n in ns:
        for name in RUNGS:
            runs = ladder[n].get(name, [])
            findings.append(finding(f"n = {n}", f"test error, {name}", runs, error, predicted))
        full = ladder[n][RUNGS[3]]
        findings += [
            finding(f"n = {n}", "full: train loss, first epoch", full,
                    lambda r: r.get("full_training.loss_curve")[0]),
            finding(f"n = {n}", "full: train loss, last epoch", full,
                    lambda r: r.get("full_training.loss_curve")[-1]),
            finding(f"n = {n}", "full: epochs", full, lambda r: r.get("full_training.epochs")),
            finding(f"n = {n}", "full: converged", full,
                    lambda r: float(bool(r.get("full_training.converged")))),
            finding(f"n = {n}", "full: weight decay chosen", full,
                    lambda r: r.get("full_training.weight_decay")),
        ]  # fmt: skip
        captured = []
        for seed_rows in zip(*(ladder[n][name] for name in RUNGS), strict=True):
            e = [error(r) for r in seed_rows]
            if None not in e and e[0] != e[3]:
                captured.append((e[0] - e[1]) / (e[0] - e[3]))
        mean, spread, count = over_seeds(captured)
        findings.append(Finding(f"n = {n}", "one step's share of the full gain", mean, spread,
                                count, note="(E_RF − E_1)/(E_RF − E_full)"))  # fmt: skip
        means = {name: over_seeds(error(r) for r in ladder[n][name])[0] for name in RUNGS}
        conclusions.append(
            f"n = {n}: " + " > ".join(f"{name} {means[name]:.3f}" for name in RUNGS)
            + (f"; one step captures {mean:.0%} of the fully trained network's gain"
               if mean is not None else "")
        )  # fmt: skip
    return findings, conclusions, save_figure(_figure(ladder, ns), out, "full-training")


def _figure(ladder, ns) -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / len(ns)
    for i, n in enumerate(ns):
        means = [over_seeds(error(r) for r in ladder[n][name]) for name in RUNGS]
        axes[0].bar(np.arange(4) + i * width, [m for m, _, _ in means], width,
                    yerr=[s or 0 for _, s, _ in means], label=f"n = {n}")  # fmt: skip
        for r in ladder[n][RUNGS[3]]:
            if r.ok:
                curve = r.get("full_training.loss_curve")
                axes[1].plot(curve, color=f"C{i}", lw=1, label=f"train, n = {n}")
                valid = r.get("full_training.validation_curve")
                if valid is not None:
                    axes[1].plot(valid, color=f"C{i}", lw=1, ls="--", label=f"validation, n = {n}")
    axes[0].set_xticks(np.arange(4) + width * (len(ns) - 1) / 2, RUNGS, fontsize=8)
    axes[0].set_ylabel("test error")
    axes[0].legend(fontsize=8)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("mean squared error")
    axes[1].set_title("full training (Adam), chosen weight decay")
    handles, labels = axes[1].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    axes[1].legend(unique.values(), unique.keys(), fontsize=7)
    fig.suptitle("σ* = z + He₂(z)/2, relu: random features, giant steps, full training")
    return fig


STUDIES = {
    "full-training": Study(
        "full-training",
        "Random features, 1 and 3 giant steps, a fully trained network: the test-error ladder.",
        configs,
        analyse,
    )
}
