"""The ``giantstep`` command."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from giantstep.config import ConfigError, load_config
from giantstep.train import DivergenceError

#: Exit code for bad input and diverging runs (the same as click's usage errors).
EXIT_BAD_INPUT = 2


def _fail(message: str) -> None:
    click.echo(f"giantstep: error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def reports_bad_input(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn config errors and divergence into a one-line message and exit code 2."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (ConfigError, DivergenceError) as err:
            _fail(str(err))

    return wrapper


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file: the file is whole or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _run_table(result: Any) -> Table:
    table = Table(title="ridge readout (mean squared error)")
    table.add_column("ridge λ", justify="right")
    table.add_column("train error", justify="right")
    table.add_column("test error", justify="right")
    for e in result.errors:
        table.add_row(f"{e.ridge:g}", f"{e.train_error:.4f}", f"{e.test_error:.4f}")
    return table


def _alignment_table(result: Any) -> Table:
    rank = len(result.alignment[0].direction_alignment)
    table = Table(title="first layer vs target directions")
    table.add_column("step", justify="right")
    for k in range(rank):
        table.add_column(f"align z{k + 1}", justify="right")
    table.add_column("update cosine", justify="right")
    # The learned subspace (giantstep.overlaps) beside the predictor's (theory.learnable).
    dim = result.config.dim
    table.add_column("eigenvalues × d", justify="right")
    table.add_column("learned", justify="right")
    table.add_column("predicted", justify="right")
    for a in result.alignment:
        cosine = "—" if a.update_cosine is None else f"{a.update_cosine:.4f}"
        values = " ".join(f"{v * dim:.3g}" for v in a.subspace_eigenvalues)
        predicted = "—" if a.predicted is None else _span(a.predicted)
        table.add_row(
            str(a.step),
            *(f"{v:.4f}" for v in a.direction_alignment),
            cosine,
            values,
            _span(a.learned),
            predicted,
        )
    return table


def _span(rows: list[list[float]]) -> str:
    """Directions as rows in target coordinates, e.g. ``(1, 0) (0, 1)``; ``{0}`` if none."""
    return " ".join("(" + ", ".join(f"{x:.2g}" for x in r) + ")" for r in rows) or "{0}"


def _spectrum_summary(s: Any) -> str:
    mean = "none" if s.mean_spike is None else f"{s.mean_spike:.4g} (reported apart)"
    spikes = ", ".join(f"{a.value:.4g} ({a.kind})" for a in s.spike_alignment) or "none"
    lines = [
        f"spectrum of F/√n: bulk edge of F₀ {s.bulk_edge:.4g} · mean spike {mean}",
        f"learned spikes: {s.spikes} — {spikes} — band rule predicts {s.predicted_spikes}",
    ]
    if s.approximation_error:
        norms = ", ".join(f"ℓ={k + 1}: {v:.3f}" for k, v in enumerate(s.approximation_error))
        lines.append(f"‖F − F_ℓ‖_op/√n: {norms}")
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="giantstep")
def main() -> None:
    """Simulate, measure and predict what two-layer networks learn from giant gradient steps."""


@main.command()
@click.argument("config_file", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key; VALUE is a TOML literal, else a string.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object and nothing else.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write result.json into this directory.",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    help="Spread the run's sample blocks over a Dask cluster's workers (tcp://host:port).",
)
@reports_bad_input
def run(
    config_file: str | None,
    overrides: tuple[str, ...],
    as_json: bool,
    out: Path | None,
    scheduler: str | None,
):
    """Run one experiment (the built-in default if no CONFIG_FILE is given)."""
    from giantstep.experiment import run as run_experiment

    config = load_config(config_file, overrides)
    progress = not as_json and sys.stderr.isatty()
    if scheduler is None:
        result = run_experiment(config, progress=progress)
    else:
        from giantstep.distributed import connect, run_spread

        with connect(scheduler) as client:
            result = run_spread(config, client, progress=progress)
    text = result.model_dump_json(indent=2)
    if out is not None:
        write_atomically(out / "result.json", text + "\n")
    if as_json:
        click.echo(text)
        return
    console = Console()
    c = result.config
    console.print(
        f"[bold]giantstep[/bold] {c.preset} · σ = {c.activation} · target {c.target.expression}"
        f" · d = {c.dim}, N = {c.width}, n = {c.train.batch_size}, T = {c.train.steps}"
        f" · residual {c.train.residual}"
    )
    console.print(f"step size η = {result.step_size:.6g}")
    console.print(_alignment_table(result))
    console.print(
        f"learned: eigenvalues of M̂ᵀM̂/N above {c.measure.learned_threshold:g}/d · predicted: "
        f"Dandi et al.'s rules for n = Θ(d^{c.batch_exponent()}) (set theory.batch_exponent)"
    )
    if result.predicted_update_cosine is not None:
        console.print(
            f"predicted update cosine γ = {result.predicted_update_cosine:.4f} "
            "(the theory's limit for residual y after one step)"
        )
    console.print(_run_table(result))
    if result.spectrum is not None:
        console.print(_spectrum_summary(result.spectrum))
    console.print(
        f"{result.seconds:.1f} s · peak memory {result.peak_memory_bytes / 2**20:.0f} MiB"
    )


def _hermite_coefficients(activation: str, max_degree: int):
    """μ_0..μ_K of an activation named on the command line; exit 2 naming it if unknown."""
    from giantstep.activations import get_activation

    try:
        return get_activation(activation).hermite_coefficients(max_degree)
    except ValueError as err:
        _fail(f"activation: {err}")


@main.group()
def theory() -> None:
    """Predictions of the papers, without simulating."""


@theory.command()
@click.argument("activation")
@click.option("--max-degree", default=8, show_default=True, type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def hermite(activation: str, max_degree: int, as_json: bool) -> None:
    """Hermite coefficients μ_k = E[σ(g) He_k(g)] of an activation."""
    coefficients = _hermite_coefficients(activation, max_degree)
    if as_json:
        click.echo(json.dumps({"activation": activation, "coefficients": coefficients.tolist()}))
        return
    table = Table(title=f"Hermite coefficients of {activation}")
    table.add_column("k", justify="right")
    table.add_column("μ_k", justify="right")
    for k, mu in enumerate(coefficients):
        # Below the quadrature's accuracy a coefficient is zero (tanh has no even ones).
        table.add_row(str(k), f"{mu:.12g}" if abs(mu) > 1e-12 else "0")
    Console().print(table)
    click.echo("μ_k = E[σ(g) He_k(g)], g ~ N(0,1); σ = Σ_k μ_k He_k / k!")


@theory.command()
@click.argument("expression")
@click.option(
    "--batch-exponent",
    "-k",
    required=True,
    type=click.IntRange(min=1),
    help="κ of the batch size n = Θ(d^κ).",
)
@click.option("--steps", "-T", default=3, show_default=True, type=click.IntRange(min=0))
@click.option("--activation", default="relu", show_default=True, help="The student's σ.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def learnable(expression: str, batch_exponent: int, steps: int, activation: str, as_json: bool):
    """The target directions T giant steps learn at n = Θ(d^κ) (Dandi et al.'s rules)."""
    from giantstep.activations import get_activation
    from giantstep.targets import parse_target
    from giantstep.theory.learnable import activation_support, predict

    try:
        parse_target(expression)
    except ValueError as err:
        _fail(f"expression: {err}")
    try:
        get_activation(activation)
    except ValueError as err:
        _fail(f"activation: {err}")
    try:
        prediction = predict(expression, batch_exponent, steps, activation)
    except ValueError as err:
        _fail(f"expression: {err}")
    if as_json:
        click.echo(json.dumps(prediction.to_dict()))
        return
    names = [f"z{i + 1}" for i in range(prediction.rank)]

    def vector(v: Any) -> str:
        return "(" + ", ".join(f"{x:.4g}" for x in v) + ")"

    table = Table(
        title=f"{expression}: learned subspace, n = Θ(d^{batch_exponent}), σ = {activation}"
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
            " ".join(vector(v) for v in added) or "—",
            " ".join(vector(v) for v in basis) or "{0}",
        )
    Console().print(table)
    exact = (
        "exact (polynomial)"
        if prediction.exact
        else f"numerical, degrees ≤ {prediction.max_degree}"
    )
    click.echo(f"leap index {prediction.leap_index} · Hermite tensors {exact}")
    support = activation_support(activation, len(prediction.coefficients) - 1)
    mu = ", ".join(
        f"μ{k}={m:.3g}" if support[k] else f"μ{k}=0"
        for k, m in enumerate(prediction.coefficients)
        if k
    )
    click.echo(f"σ = {activation}: {mu}")


@theory.command()
@click.option("--activation", default="relu", show_default=True, help="The student's σ.")
@click.option("--max-degree", default=6, show_default=True, type=click.IntRange(min=1, max=9))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def phases(activation: str, max_degree: int, as_json: bool) -> None:
    """Moniri et al.'s band rule: spikes after one step with η = c·n^α, by band of α."""
    from giantstep.theory.bands import bands

    mu = _hermite_coefficients(activation, max_degree)
    rows = bands(mu)
    if as_json:
        payload = {
            "activation": activation,
            "coefficients": mu.tolist(),
            "bands": [
                {"ell": b.ell, "lower": str(b.lower), "upper": str(b.upper),
                 "degrees": list(b.degrees), "spikes": b.spikes}
                for b in rows
            ],
        }  # fmt: skip
        click.echo(json.dumps(payload))
        return
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


@main.command()
@click.option("--quick", is_flag=True, help="A small workload (seconds) instead of n = 10^6.")
@click.option(
    "--dtype",
    "dtypes",
    multiple=True,
    type=click.Choice(["float64", "float32"]),
    help="Only these dtypes (default: both).",
)
def bench(quick: bool, dtypes: tuple[str, ...]) -> None:
    """Measure this machine's GEMM rate and the reference workload's speed and memory."""
    from giantstep.bench import run_benchmark

    run_benchmark(quick=quick, dtypes=dtypes or ("float64", "float32"))


@main.command()
@click.argument("name", required=False)
@click.option("--quick", is_flag=True, help="Small sizes (CI); the default sizes are a paper's.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reproduce-out"),
    show_default=True,
    help="Where the figures go.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def reproduce(name: str | None, quick: bool, out: Path, as_json: bool) -> None:
    """Reproduce a paper's claim: measured vs predicted, a figure, exit 1 if a prediction fails.

    Without NAME, list the reproductions.
    """
    from giantstep.reproduce import reproductions

    available = reproductions()
    if name is None:
        for key, function in available.items():
            click.echo(f"{key:24s} {(function.__doc__ or '').strip().splitlines()[0]}")
        return
    if name not in available:
        _fail(f"reproduce: unknown reproduction '{name}'; one of {', '.join(available)}")
    report = available[name](quick, out)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        console = Console()
        console.print(report.table())
        for figure in report.figures:
            console.print(f"figure: {figure}")
        verdict = "all predictions hold" if report.ok else "a prediction FAILED"
        console.print(f"{report.seconds:.0f} s · {verdict}")
    sys.exit(0 if report.ok else 1)


# -- sweeps, the results store and plots (giantstep.sweep / store / plots) ---------------------


def _sweep_progress():
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


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option(
    "--store",
    "store_path",
    default="results.sqlite",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The SQLite results store; runs already in it are skipped.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Local processes running at once (default: the number of cores).",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    help="Run on a Dask cluster, e.g. tcp://host:8786, instead of local processes.",
)
@click.option(
    "--executor",
    type=click.Choice(["processes", "inprocess", "dask"]),
    default=None,
    help="Where runs execute (default: dask with --scheduler, else processes).",
)
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the Dask scheduler.",
)
@click.option("--retry", is_flag=True, help="Also rerun diverged runs (failed ones always are).")
@click.option("--dry-run", is_flag=True, help="Validate and list the runs; run nothing.")
@reports_bad_input
def sweep(
    sweep_file: str,
    store_path: Path,
    workers: int | None,
    scheduler: str | None,
    executor: str | None,
    connect_timeout: float,
    retry: bool,
    dry_run: bool,
) -> None:
    """Run every config of a sweep file not yet in the results store.

    Each finished run is stored at once (one transaction): killing the sweep loses only the
    runs in flight, and the same command finishes the rest. A run that fails or diverges is
    recorded with its error and the sweep goes on.
    """
    from giantstep.store import Store
    from giantstep.sweep import load_sweep, run_sweep

    executor = executor or ("dask" if scheduler else "processes")
    if scheduler and executor != "dask":
        _fail(f"--scheduler {scheduler}: only with --executor dask")
    plan = load_sweep(sweep_file)
    runs = plan.expand()  # every config validated before any run
    if dry_run:
        status: dict[str, str] = {}
        if store_path.exists():
            with Store(store_path) as store:
                status = store.status(p.key for p in runs)
        for planned in runs:
            state = status.get(planned.key, "to run")
            click.echo(f"{planned.key[:12]}  {state:8s}  {planned.label()}")
        click.echo(f"{len(runs)} runs, {len(runs) - len(status)} not in {store_path}")
        return
    client = None
    if executor == "dask":
        from giantstep.sweep import connect

        if scheduler is None:
            _fail("--executor dask needs --scheduler ADDRESS")
        client = connect(scheduler, connect_timeout)
    progress, callback = _sweep_progress()
    try:
        with Store(store_path) as store, progress:
            summary = run_sweep(
                runs,
                store,
                executor=executor,
                workers=workers,
                client=client,
                retry=retry,
                callback=callback,
                name=plan.name,
            )
    finally:
        if client is not None:
            client.close()
    click.echo(
        f"{summary.total} runs: {summary.done} done, {summary.skipped} already in "
        f"{store_path}, {summary.failed} failed · {summary.seconds:.1f} s"
    )


@main.command()
@click.argument("store_path", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("filters", nargs=-1, metavar="[KEY=VALUE]...")
@click.option(
    "--export",
    "export_format",
    type=click.Choice(["csv", "parquet"]),
    default=None,
    help="Write the selected runs to --out instead of listing them.",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--columns", default=None, help="Comma-separated columns to list.")
@reports_bad_input
def results(
    store_path: Path,
    filters: tuple[str, ...],
    export_format: str | None,
    out: Path | None,
    columns: str | None,
) -> None:
    """List the runs of a results store, those matching every KEY=VALUE (e.g. seed=0)."""
    import numpy as np

    from giantstep.store import (
        export,
        load,
        select,
        summary_columns,
        varying_config_columns,
    )

    frame = select(load(store_path, arrays=export_format is not None), filters)
    if export_format is not None:
        if out is None:
            _fail("--export needs --out FILE")
        export(frame, out, export_format)
        click.echo(f"{len(frame)} runs written to {out}")
        return
    if frame.empty:
        click.echo(f"{store_path}: no runs" + (" match" if filters else ""))
        return
    shown = columns.split(",") if columns else summary_columns(frame)
    missing = [c for c in shown if c not in frame.columns]
    if missing:
        _fail(f"--columns: no column {missing[0]!r} in the store")
    order = [c for c in varying_config_columns(frame) if frame[c].map(np.isscalar).all()]
    try:  # rows in the order of the varied keys, for reading
        frame = frame.sort_values(order, kind="stable")
    except (TypeError, ValueError):  # mixed types in a column: keep the store's order
        pass
    table = Table(title=f"{store_path}: {len(frame)} runs")
    for c in shown:
        table.add_column(c, overflow="fold", no_wrap=c != "error")
    for _, row in frame.iterrows():
        table.add_row(*(row[c][:12] if c == "key" else _cell(row[c]) for c in shown))
    # Piped output is not cut to 80 columns: the table is read by tools and people alike.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None:
        return "—"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


@main.command()
@click.argument("store_path", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("filters", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--x", "x", required=True, help="Config key on the x axis, e.g. train.batch_size.")
@click.option("--y", "y", required=True, help="Metric, e.g. alignment.1.update_cosine.")
@click.option("--hue", default=None, help="Config key: one line per value.")
@click.option("--theory", default=None, help="Column of the prediction (default: predicted_<y>).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("plot.png"),
    show_default=True,
    help="PNG, PDF or SVG file.",
)
@click.option("--logx", is_flag=True)
@click.option("--logy", is_flag=True)
@reports_bad_input
def plot(
    store_path: Path,
    filters: tuple[str, ...],
    x: str,
    y: str,
    hue: str | None,
    theory: str | None,
    out: Path,
    logx: bool,
    logy: bool,
) -> None:
    """Plot a metric against a config key: mean ± sd over the other keys (seeds), with theory."""
    from giantstep.plots import plot_frame
    from giantstep.store import load, select

    frame = select(load(store_path, arrays=False), filters)
    written = plot_frame(frame, x, y, hue=hue, out=out, theory=theory, logx=logx, logy=logy)
    click.echo(f"figure: {written}")
