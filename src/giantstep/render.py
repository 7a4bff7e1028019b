"""What the ``giantstep`` command prints: tables and summaries of results, rendered with rich.

Every function takes library objects (a ``RunResult``, a prediction, a DataFrame of the store)
and prints them, or returns a rich renderable; none computes anything of its own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def vectors(rows: list[list[float]], digits: str = ".2g") -> str:
    """Directions as rows in target coordinates, e.g. ``(1, 0) (0, 1)``; ``{0}`` if none."""
    return " ".join("(" + ", ".join(f"{x:{digits}}" for x in r) + ")" for r in rows) or "{0}"


#: The error theory's variants, in the order they are printed (giantstep.theory.errors).
ERROR_VARIANTS = ("random_features", "spiked", "trained_layer")


def errors_table(result: Any) -> Table:
    """Train and test error of the ridge readout per ridge value; with ``predicted_errors``,
    a column per variant of the theory beside the measured one (rows: test, then train)."""
    predicted = getattr(result, "predicted_errors", None)
    if predicted is None:
        table = Table(title="ridge readout (mean squared error)")
        table.add_column("ridge λ", justify="right")
        table.add_column("train error", justify="right")
        table.add_column("test error", justify="right")
        for e in result.errors:
            table.add_row(f"{e.ridge:g}", f"{e.train_error:.4f}", f"{e.test_error:.4f}")
        return table
    shown = [name for name in ERROR_VARIANTS if getattr(predicted, name).errors is not None]
    table = Table(title="ridge readout (mean squared error): measured and predicted")
    table.add_column("ridge λ", justify="right")
    table.add_column("error")
    table.add_column("measured", justify="right")
    for name in shown:
        table.add_column(name.replace("_", " "), justify="right")
    for i, e in enumerate(result.errors):
        for kind in ("test", "train"):
            theory = [
                f"{getattr(getattr(predicted, name).errors[i], f'{kind}_error'):.4f}"
                for name in shown
            ]
            table.add_row(
                f"{e.ridge:g}" if kind == "test" else "",
                kind,
                f"{getattr(e, f'{kind}_error'):.4f}",
                *theory,
                end_section=kind == "train",
            )
    return table


def theory_notes(predicted: Any) -> list[str]:
    """One line per variant of the error theory that is out of scope (its reason) or flagged
    (its warning)."""
    lines = []
    for name in ERROR_VARIANTS:
        variant = getattr(predicted, name)
        if variant.reason:
            lines.append(f"{name}: not predicted — {variant.reason}")
        if variant.warning:
            lines.append(f"{name}: warning — {variant.warning}")
    return lines


def alignment_table(result: Any) -> Table:
    """Per step: alignment with each target direction, the update cosine, and the learned
    subspace (``giantstep.overlaps``) beside the predictor's (``theory.learnable``)."""
    rank = len(result.alignment[0].direction_alignment)
    table = Table(title="first layer vs target directions")
    table.add_column("step", justify="right")
    for k in range(rank):
        table.add_column(f"align z{k + 1}", justify="right")
    table.add_column("update cosine", justify="right")
    dim = result.config.dim
    table.add_column("eigenvalues × d", justify="right")
    table.add_column("learned", justify="right")
    table.add_column("predicted", justify="right")
    for a in result.alignment:
        cosine = "—" if a.update_cosine is None else f"{a.update_cosine:.4f}"
        values = " ".join(f"{v * dim:.3g}" for v in a.subspace_eigenvalues)
        predicted = "—" if a.predicted is None else vectors(a.predicted)
        table.add_row(
            str(a.step),
            *(f"{v:.4f}" for v in a.direction_alignment),
            cosine,
            values,
            vectors(a.learned),
            predicted,
        )
    return table


def _band_rule(s: Any) -> str:
    """The band rule's count, or why there is none at band ℓ (its μ_k are not resolved)."""
    if s.predicted_spikes is None and s.band is not None:
        return f"nothing at ℓ = {s.band} (needs μ_k, k ≤ ℓ, past those computed exactly)"
    return str(s.predicted_spikes)


def spectrum_summary(s: Any) -> str:
    """Bulk edge, mean spike, learned spikes against the band rule, ‖F − F_ℓ‖."""
    mean = "none" if s.mean_spike is None else f"{s.mean_spike:.4g} (reported apart)"
    spikes = ", ".join(f"{a.value:.4g} ({a.kind})" for a in s.spike_alignment) or "none"
    lines = [
        f"spectrum of F/√n: bulk edge of F₀ {s.bulk_edge:.4g} · mean spike {mean}",
        f"learned spikes: {s.spikes} — {spikes} — band rule predicts {_band_rule(s)}",
    ]
    if s.approximation_error:
        norms = ", ".join(f"ℓ={k + 1}: {v:.3f}" for k, v in enumerate(s.approximation_error))
        lines.append(f"‖F − F_ℓ‖_op/√n: {norms}")
    return "\n".join(lines)


def print_run(result: Any) -> None:
    """The whole human-readable report of one run."""
    console = Console()
    c = result.config
    console.print(
        f"[bold]giantstep[/bold] {c.preset} · σ = {c.activation} · target {c.target.expression}"
        f" · d = {c.dim}, N = {c.width}, n = {c.train.batch_size}, T = {c.train.steps}"
        f" · residual {c.train.residual}"
    )
    console.print(f"step size η = {result.step_size:.6g}")
    console.print(alignment_table(result))
    console.print(
        f"learned: eigenvalues of M̂ᵀM̂/N above {c.measure.learned_threshold:g}/d · predicted: "
        f"Dandi et al.'s rules for n = Θ(d^{c.batch_exponent()}) (set theory.batch_exponent)"
    )
    if result.predicted_update_cosine is not None:
        console.print(
            f"predicted update cosine γ = {result.predicted_update_cosine:.4f} "
            "(the theory's limit for residual y after one step)"
        )
    console.print(errors_table(result))
    if result.predicted_errors is not None:
        console.print(
            "predicted: random features = ridge on the initial layer W0 (no step) · spiked = "
            "the layer the step is predicted to give · trained layer = given this run's W1",
            highlight=False,
        )
        for line in theory_notes(result.predicted_errors):
            console.print(line, markup=False, highlight=False)
    if result.spectrum is not None:
        console.print(spectrum_summary(result.spectrum))
    theory = (
        "" if result.theory_seconds is None else f" (error theory {result.theory_seconds:.1f} s)"
    )
    console.print(
        f"{result.seconds:.1f} s{theory} · peak memory {result.peak_memory_bytes / 2**20:.0f} MiB"
    )


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def print_learning_curve(curve: Any) -> None:
    """The predicted errors of a ``LearningCurve``: one table per ridge value (a row per value
    of the curve's key, a test and a train column per variant asked for), then each variant's
    reasons and warnings once, and the time."""
    from giantstep.learning_curve import curve_rows

    console = Console()
    c = curve.config
    console.print(
        f"[bold]giantstep theory errors[/bold] {c.preset} · σ = {c.activation} · target "
        f"{c.target.expression} · d = {c.dim}, N = {c.width}, n0 = {c.train.batch_size}, "
        f"n = {c.readout.samples}, T = {c.train.steps} · residual {c.train.residual}",
        highlight=False,
    )
    rows = curve_rows(curve)
    shown = [name for name in ERROR_VARIANTS if name in curve.variants]
    symbol = "n" if curve.key == "readout.samples" else "n0"
    for ridge in c.readout.ridge:
        table = Table(title=f"predicted errors, ridge λ = {ridge:g}")
        table.add_column(curve.key, justify="right")
        table.add_column(f"{symbol}/d", justify="right")
        for name in shown:
            label = name.replace("_", " ")
            table.add_column(f"{label}\ntest", justify="right")
            table.add_column(f"{label}\ntrain", justify="right")
        for row in rows:
            if row["ridge"] != ridge:
                continue
            value = row[curve.key]
            cells = [
                _cell(row[f"{name}.{kind}_error"]) for name in shown for kind in ("test", "train")
            ]
            table.add_row(str(value), f"{value / c.dim:.3g}", *cells)
        console.print(table)
    notes = dict.fromkeys(
        line for point in curve.points for line in theory_notes(point.predicted_errors)
    )
    for line in notes:
        if line.split(":", 1)[0] in shown:
            console.print(line, markup=False, highlight=False)
    console.print(f"{len(curve.points)} values · {curve.seconds:.1f} s")


def print_hermite(activation: str, coefficients: Any) -> None:
    """The table of ``μ_k`` of an activation."""
    table = Table(title=f"Hermite coefficients of {activation}")
    table.add_column("k", justify="right")
    table.add_column("μ_k", justify="right")
    for k, mu in enumerate(coefficients):
        # Below the quadrature's accuracy a coefficient is zero (tanh has no even ones).
        table.add_row(str(k), f"{mu:.12g}" if abs(mu) > 1e-12 else "0")
    Console().print(table)
    click.echo("μ_k = E[σ(g) He_k(g)], g ~ N(0,1); σ = Σ_k μ_k He_k / k!")


def print_learnable(prediction: Any, support: list[bool]) -> None:
    """The learned subspace after each step, the leap index and the activation's ``μ_k``."""
    names = [f"z{i + 1}" for i in range(prediction.rank)]
    table = Table(
        title=f"{prediction.expression}: learned subspace, n = Θ(d^{prediction.batch_exponent}),"
        f" σ = {prediction.activation}"
    )
    table.add_column("step", justify="right")
    table.add_column("dim", justify="right")
    table.add_column(f"added directions in ({', '.join(names)})")
    table.add_column("basis of the learned subspace")
    for t, basis in enumerate(prediction.subspaces):
        added = prediction.added[t - 1] if t else basis
        table.add_row(
            str(t),
            str(basis.shape[0]),
            vectors(added, ".4g") if len(added) else "—",
            vectors(basis, ".4g"),
        )
    Console().print(table)
    exact = (
        "exact (polynomial)"
        if prediction.exact
        else f"numerical, degrees ≤ {prediction.max_degree}"
    )
    leap = prediction.leap_index
    leap = f"above {prediction.max_degree}" if leap is None else leap
    click.echo(f"leap index {leap} · Hermite tensors {exact}")
    mu = ", ".join(
        f"μ{k}={m:.3g}" if support[k] else f"μ{k}=0"
        for k, m in enumerate(prediction.coefficients)
        if k
    )
    click.echo(f"σ = {prediction.activation}: {mu}")


def print_phases(activation: str, rows: list[Any]) -> None:
    """The band table of Moniri et al.'s rule."""
    table = Table(title=f"spikes of one giant step, σ = {activation} (η = c·n^α)")
    for column in ("α band", "ℓ", "spiking degrees k (μ_k ≠ 0)", "spikes"):
        table.add_column(column)
    for b in rows:
        degrees = ", ".join(map(str, b.degrees)) or "—"
        table.add_row(f"({b.lower}, {b.upper})", str(b.ell), degrees, str(b.spikes))
    Console().print(table)
    click.echo(
        "Term k separates from the bulk iff α > (k−1)/(2k); term ℓ+1 is negligible iff "
        "α < ℓ/(2ℓ+2). At a boundary the count depends on the constants. The mean spike "
        "(μ_0 ≠ 0) is not counted."
    )


def print_report(report: Any) -> None:
    """A reproduction's checks, figures and verdict."""
    console = Console()
    console.print(report.table())
    for figure in report.figures:
        console.print(f"figure: {figure}", markup=False)
    verdict = "all predictions hold" if report.ok else "a prediction FAILED"
    console.print(f"{report.seconds:.0f} s · {verdict}")


def sweep_progress() -> tuple[Any, Callable]:
    """A rich progress bar over runs (on a terminal) or one line per run; a sweep callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tty = sys.stderr.isatty()
    progress = Progress(
        TextColumn("sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not tty,
    )
    state: dict[str, Any] = {}

    def callback(summary, planned, outcome) -> None:
        counts = f"done {summary.done} · skipped {summary.skipped} · failed {summary.failed}"
        finished = summary.done + summary.skipped + summary.failed
        if "task" not in state:
            state["task"] = progress.add_task("runs", total=summary.total, counts=counts)
        progress.update(state["task"], completed=finished, counts=counts)
        if planned is not None and not tty:
            verdict = "ok" if outcome.result is not None else "FAILED"
            if outcome.diverged:
                verdict = "diverged"
            click.echo(f"[{finished}/{summary.total}] {verdict} {planned.label()}", err=True)

    return progress, callback


def print_dry_run(runs: list[Any], status: dict[str, str], store_path: Any) -> None:
    """Each planned run with its state in the store, and how many are left to run."""
    for planned in runs:
        state = status.get(planned.key, "to run")
        click.echo(f"{planned.key[:12]}  {state:8s}  {planned.label()}")
    click.echo(f"{len(runs)} runs, {len(runs) - len(status)} not in {store_path}")


def print_sweep_summary(summary: Any, store_path: Any) -> None:
    """One line: runs done, skipped, failed, and the time."""
    held = (
        f", {summary.held} still running in another sweep on it (rerun to finish them)"
        if summary.held
        else ""
    )
    click.echo(
        f"{summary.total} runs: {summary.done} done, {summary.skipped} already in "
        f"{store_path}, {summary.failed} failed{held} · {summary.seconds:.1f} s"
    )


def cell(value: Any) -> str:
    """A value of the store as a short table cell."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None:
        return "—"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def print_runs(frame: Any, columns: list[str], title: str) -> None:
    """The runs of a store (a DataFrame) as a table of ``columns``."""
    # Escaped: a path or value with [...] was read as rich markup (MarkupError, exit 1).
    table = Table(title=escape(title))
    for c in columns:
        table.add_column(escape(c), overflow="fold", no_wrap=c != "error")
    for _, row in frame.iterrows():
        table.add_row(*(escape(row[c][:12] if c == "key" else cell(row[c])) for c in columns))
    # Piped output is not cut to 80 columns: the table is read by tools and people alike.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def print_study(report: Any) -> None:
    """A study's findings, its conclusions, figures and what ran."""
    console = Console()
    console.print(report.table())
    for line in report.conclusions:
        console.print(f"• {line}", markup=False)
    for figure in report.figures:
        console.print(f"figure: {figure}", markup=False)
    if report.ran_now == report.runs:
        where = f"all run now, stored in {report.store}"
    else:
        where = f"{report.ran_now} run now, the rest from {report.store}"
    console.print(f"{report.seconds:.0f} s · {report.runs} runs ({where})", markup=False)
