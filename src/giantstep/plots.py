"""Figures from the results store: a metric against a config key, mean and spread over the rest.

``plot_store(path, x="train.batch_size", y="alignment.1.update_cosine", hue="activation")``
groups the finished runs by ``(hue, x)``; every other varied key (typically ``seed``) is averaged
over: the line is the mean, the band ``± one standard deviation``, the points the runs. Where
the runs carry a prediction for the metric (``predicted_<name>`` at the metric's level or above,
e.g. ``predicted_update_cosine`` for ``alignment.1.update_cosine``), it is drawn dashed beside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from giantstep.config import ConfigError
from giantstep.files import atomic_path


def theory_column(columns: Any, metric: str) -> str | None:
    """The column holding the prediction of ``metric``, if any.

    For ``a.b.name``: ``a.b.predicted_name``, then ``a.predicted_name``, then ``predicted_name``.
    """
    *parents, leaf = metric.split(".")
    if leaf.startswith("predicted_"):
        return None
    for depth in range(len(parents), -1, -1):
        candidate = ".".join([*parents[:depth], f"predicted_{leaf}"])
        if candidate in columns:
            return candidate
    return None


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
    theory: str | None = None,
    logx: bool = False,
    logy: bool = False,
    title: str | None = None,
) -> Path:
    """Draw ``y`` against ``x`` from a DataFrame of ``giantstep.load``; returns the file written.

    Raises ConfigError naming a column that does not exist or holds no numbers.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ConfigError(f"out {out}: the figure must end in .png, .pdf or .svg")
    if frame.empty:
        raise ConfigError("the store has no runs to plot")
    for option, column in (("x", x), ("y", y), ("hue", hue), ("theory", theory)):
        if column is not None and column not in frame.columns:
            known = ", ".join(map(str, frame.columns))
            raise ConfigError(f"{option} {column}: no such column in the store (columns: {known})")
    runs = frame[frame["status"] == "ok"] if "status" in frame.columns else frame
    if runs.empty:
        raise ConfigError("the store has no finished runs to plot")
    if theory is None:
        theory = theory_column(runs.columns, y)
    data = runs.assign(_y=_numeric(runs, y, "y"))
    if theory is not None:
        data = data.assign(_theory=_numeric(runs, theory, "theory"))
    import pandas as pd

    numeric_x = pd.to_numeric(data[x], errors="coerce")
    categories: list | None = None
    if numeric_x.isna().any():  # a categorical x (an activation, a preset): evenly spaced
        categories = sorted(data[x].astype(str).unique())
        numeric_x = data[x].astype(str).map({c: i for i, c in enumerate(categories)})
    data = data.assign(_x=numeric_x.astype(float))
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
        if theory is not None:
            predicted = group.groupby("_x", sort=True)["_theory"].mean()
            if predicted.notna().any():
                ax.plot(
                    np.asarray(predicted.index, dtype=float),
                    predicted.to_numpy(),
                    "--",
                    color=color,
                    label=f"{'' if hue is None else name + ' '}{theory} (theory)",
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
    ax.set_title(title or f"{y} vs {x}\nmean ± sd over {n_runs} runs per point", fontsize=10)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
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
