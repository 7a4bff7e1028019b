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
    for a in result.alignment:
        cosine = "—" if a.update_cosine is None else f"{a.update_cosine:.4f}"
        table.add_row(str(a.step), *(f"{v:.4f}" for v in a.direction_alignment), cosine)
    return table


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
@reports_bad_input
def run(config_file: str | None, overrides: tuple[str, ...], as_json: bool, out: Path | None):
    """Run one experiment (the built-in default if no CONFIG_FILE is given)."""
    from giantstep.experiment import run as run_experiment

    config = load_config(config_file, overrides)
    result = run_experiment(config, progress=not as_json and sys.stderr.isatty())
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


@main.group()
def theory() -> None:
    """Predictions of the papers, without simulating."""


@theory.command()
@click.argument("activation")
@click.option("--max-degree", default=8, show_default=True, type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def hermite(activation: str, max_degree: int, as_json: bool) -> None:
    """Hermite coefficients μ_k = E[σ(g) He_k(g)] of an activation."""
    from giantstep.activations import get_activation

    try:
        coefficients = get_activation(activation).hermite_coefficients(max_degree)
    except ValueError as err:
        _fail(f"activation: {err}")
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
@click.option("--activation", default="relu", show_default=True, help="The student's σ.")
@click.option("--max-degree", default=6, show_default=True, type=click.IntRange(min=1, max=9))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def phases(activation: str, max_degree: int, as_json: bool) -> None:
    """Moniri et al.'s band rule: spikes after one step with η = c·n^α, by band of α."""
    from giantstep.activations import get_activation
    from giantstep.theory.bands import bands

    try:
        mu = get_activation(activation).hermite_coefficients(max_degree)
    except ValueError as err:
        _fail(f"activation: {err}")
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
