"""Figures from the results store: a metric against a config key, mean and spread over the rest.

``plot_store(path, x="train.batch_size", y="alignment.1.update_cosine", hue="activation")``
groups the finished runs by ``(hue, x)``; every other varied key (typically ``seed``) is averaged
over, and the title names those keys: the line is the mean, the band ``± one standard
deviation``, the points the runs. Where the runs carry a prediction for the metric
(``predicted_<name>`` at the metric's level or above, e.g. ``predicted_update_cosine`` for
``alignment.1.update_cosine``), it is drawn dashed beside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from giantstep.config import ConfigError
from giantstep.files import atomic_path


def theory_columns(columns: Any, metric: str) -> list[str]:
    """The columns holding predictions of ``metric`` (none, one, or one per variant).

    For ``a.b.name``: ``a.b.predicted_name``, then ``a.predicted_name``, then
    ``predicted_name`` (the first that exists); and for a metric inside a list of the result,
    such as ``errors.0.test_error``, the variants of its prediction
    ``predicted_errors.<variant>.errors.0.test_error`` (random features, spiked, trained layer).
    """
    *parents, leaf = metric.split(".")
    if leaf.startswith("predicted_") or metric.startswith("predicted_"):
        return []
    found = []
    for depth in range(len(parents), -1, -1):
        candidate = ".".join([*parents[:depth], f"predicted_{leaf}"])
        if candidate in columns:
            found.append(candidate)
            break
    if parents:
        prefix, suffix = f"predicted_{parents[0]}.", f".{metric}"
        depth = metric.count(".") + 2
        found += sorted(
            c
            for c in columns
            if c.startswith(prefix) and c.endswith(suffix) and c.count(".") == depth
        )
    return found


#: Line styles of the predictions, one per variant.
THEORY_STYLES = ("--", ":", "-.")


def _variant(column: str) -> str:
    """``predicted_errors.spiked.errors.0.test_error`` → ``spiked``; else the column."""
    parts = column.split(".")
    return parts[1] if len(parts) > 2 and parts[0].startswith("predicted_") else column


def _numeric(frame, column: str, argument: str) -> np.ndarray:
    import pandas as pd

    values = pd.to_numeric(frame[column], errors="coerce")
    if values.isna().all():
        raise ConfigError(f"{argument} {column}: not a number in any run")
    return values.to_numpy(dtype=float)


def plot_frame(
    frame,
    x: str,
    y: str,
    hue: str | None = None,
    out: str | Path = "plot.png",
    theory: str | list[str] | None = None,
    logx: bool = False,
    logy: bool = False,
    title: str | None = None,
) -> Path:
    """Draw ``y`` against ``x`` from a DataFrame of ``giantstep.load``; returns the file written.

    ``theory``: the column(s) of the prediction, drawn dashed (default: every prediction of
    ``y`` the runs carry, see :func:`theory_columns`; one line style per variant).
    Raises ConfigError naming a column that does not exist or holds no numbers.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    out = Path(out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ConfigError(f"out {out}: the figure must end in .png, .pdf or .svg")
    if frame.empty:
        raise ConfigError("the store has no runs to plot")
    asked = [theory] if isinstance(theory, str) else list(theory or [])
    named = [("x", x), ("y", y), ("hue", hue)] + [("theory", t) for t in asked]
    for option, column in named:
        if column is not None and column not in frame.columns:
            known = ", ".join(map(str, frame.columns))
            raise ConfigError(f"{option} {column}: no such column in the store (columns: {known})")
    runs = frame[frame["status"] == "ok"] if "status" in frame.columns else frame
    if runs.empty:
        raise ConfigError("the store has no finished runs to plot")
    data = runs.assign(_y=_numeric(runs, y, "y"))
    if asked:
        predictions = {t: _numeric(runs, t, "theory") for t in asked}
    else:  # what the runs predict; a variant out of its regime holds no number: not drawn
        found = {t: pd.to_numeric(runs[t], errors="coerce") for t in theory_columns(runs, y)}
        predictions = {t: v.to_numpy(dtype=float) for t, v in found.items() if v.notna().any()}
    data = data.assign(**{f"_theory{k}": v for k, v in enumerate(predictions.values())})

    numeric_x = pd.to_numeric(data[x], errors="coerce")
    categories: list | None = None
    if numeric_x.isna().any():  # a categorical x (an activation, a preset): evenly spaced
        if logx:
            raise ConfigError(f"--logx: {x} takes values that are not numbers: no log axis")
        categories = sorted(data[x].astype(str).unique())
        numeric_x = data[x].astype(str).map({c: i for i, c in enumerate(categories)})
    data = data.assign(_x=numeric_x.astype(float))
    for wanted, option, column, values in ((logx, "logx", x, data["_x"]),
                                           (logy, "logy", y, data["_y"])):  # fmt: skip
        if wanted and (values <= 0).any():  # a log axis silently dropped those runs
            raise ConfigError(
                f"--{option}: {int((values <= 0).sum())} run(s) have {column} ≤ 0, which a log "
                f"axis cannot show: plot without --{option}"
            )
    groups = [(None, data)] if hue is None else list(data.groupby(hue, sort=True, dropna=False))

    fig, ax = plt.subplots(figsize=(6, 4.2), layout="constrained")
    for i, (label, group) in enumerate(groups):
        color = f"C{i % 10}"
        stats = group.groupby("_x", sort=True)["_y"].agg(["mean", "std", "count"])
        xs = np.asarray(stats.index, dtype=float)
        mean = stats["mean"].to_numpy()
        spread = np.nan_to_num(stats["std"].to_numpy())
        name = y if hue is None else f"{hue} = {label}"
        ax.plot(xs, mean, "o-", color=color, label=f"{name} (measured)")
        ax.fill_between(xs, mean - spread, mean + spread, color=color, alpha=0.2, lw=0)
        ax.plot(group["_x"], group["_y"], ".", color=color, alpha=0.35, ms=4)
        for k, column in enumerate(predictions):
            predicted = group.groupby("_x", sort=True)[f"_theory{k}"].mean()
            if predicted.notna().any():
                ax.plot(
                    np.asarray(predicted.index, dtype=float),
                    predicted.to_numpy(),
                    THEORY_STYLES[k % len(THEORY_STYLES)],
                    color=color,
                    label=f"{'' if hue is None else name + ' '}{_variant(column)} (theory)",
                )
    seeds = data.groupby([c for c in (hue, "_x") if c is not None])["_y"].count()
    if categories is not None:
        ax.set_xticks(range(len(categories)), categories)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    from matplotlib.ticker import NullFormatter

    for flag, axis, set_scale in ((logx, ax.xaxis, ax.set_xscale), (logy, ax.yaxis, ax.set_yscale)):
        if flag:
            set_scale("log")
            axis.set_minor_formatter(NullFormatter())  # minor labels collide on short ranges
    n_runs = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
    over = ", ".join(averaged_keys(runs, x, hue))
    default = f"{y} vs {x}\nmean ± sd over {n_runs} runs per point" + (f" ({over})" if over else "")
    ax.set_title(title or default, fontsize=10)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _write(fig, out)


def averaged_keys(frame, x: str, hue: str | None = None) -> list[str]:
    """The config keys that take several values among the runs of one ``(hue, x)`` point: what
    its mean is over (typically ``seed``; named in the figure's title, since a key varied by the
    sweep but not plotted is averaged too)."""
    from giantstep.store import varying_config_columns

    keys = [c for c in varying_config_columns(frame) if c not in (x, hue)]
    points = frame.groupby([c for c in (hue, x) if c is not None], dropna=False)
    return [c for c in keys if (points[c].agg(lambda v: v.astype(str).nunique()) > 1).any()]


def _write(fig, out: Path) -> Path:
    """Write ``fig`` to ``out`` atomically (a failure leaves no half-written file), close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=130)
    finally:
        plt.close(fig)
    return out


def plot_store(path: str | Path, x: str, y: str, **kwargs: Any) -> Path:
    """``plot_frame`` on the runs of the store at ``path``."""
    from giantstep.store import load

    return plot_frame(load(path, arrays=False), x, y, **kwargs)


#: The ratios n/d and n₀/d the error theory was tested in against simulation (§4).
TESTED_RATIOS = (1, 32)
#: Line styles of the error theory's variants in a learning curve.
VARIANT_STYLES = {"random_features": "-", "spiked": "--", "trained_layer": ":"}


def check_figure_path(out: str | Path) -> Path:
    """``out`` as a Path; raises ConfigError unless it ends in .png, .pdf or .svg."""
    out = Path(out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ConfigError(f"out {out}: the figure must end in .png, .pdf or .svg")
    return out


def plot_learning_curve(curve: Any, out: str | Path) -> Path:
    """Draw a ``giantstep.learning_curve.LearningCurve``: test and training error against
    ``key / dim`` (log), one colour per ridge value, one line style per variant (random
    features solid, spiked dashed, trained layer dotted; points where a variant was solved at
    only some values). Returns the file written (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from giantstep.learning_curve import curve_rows

    out = check_figure_path(out)
    c = curve.config
    rows = curve_rows(curve)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained", sharex=True)
    symbol = "n" if curve.key == "readout.samples" else "n₀"
    for ax, kind in zip(axes, ("test", "train"), strict=True):
        for i, ridge in enumerate(c.readout.ridge):
            chosen = [r for r in rows if r["ridge"] == ridge]
            for name in (v for v in VARIANT_STYLES if v in curve.variants):
                points = [
                    (r[curve.key] / c.dim, r[f"{name}.{kind}_error"])
                    for r in chosen
                    if r[f"{name}.{kind}_error"] is not None
                ]
                if not points:
                    continue
                xs, ys = zip(*points, strict=True)
                sparse = len(points) < len(chosen)
                ax.plot(
                    xs,
                    ys,
                    VARIANT_STYLES[name],
                    marker="o" if sparse or len(points) == 1 else None,
                    ms=3,
                    color=f"C{i % 10}",
                    label=f"{name.replace('_', ' ')}, λ = {ridge:g}",
                )
        # THEORY-ERRORS.md §4: the sizes tested against simulation.
        ax.axvspan(*TESTED_RATIOS, color="0.93", zorder=0, lw=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{curve.key} / dim  ({symbol}/d; shaded: the tested range)")
        ax.set_ylabel(f"predicted {kind} error")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize="x-small", ncol=1 + (len(c.readout.ridge) > 2))
    fixed = (
        f"n0 = {c.train.batch_size}"
        if curve.key == "readout.samples"
        else f"n = {c.readout.samples}"
    )
    fig.suptitle(
        f"theory (no simulation): {c.preset}, σ = {c.activation}, σ* = {c.target.expression}, "
        f"d = {c.dim}, N = {c.width}, {fixed}, T = {c.train.steps}, residual {c.train.residual}",
        fontsize=9,
    )
    return _write(fig, out)
