"""The ``giantstep`` command: parses the command line, calls the library, prints with render."""

from __future__ import annotations

import gc
import json
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from giantstep import render
from giantstep.config import ConfigError, load_config
from giantstep.executors import open_executor
from giantstep.files import OutputPathError, output_path, write_text_atomically
from giantstep.hermite import MAX_DEGREE as MAX_HERMITE_DEGREE
from giantstep.render import ERROR_VARIANTS
from giantstep.theory.learnable import MAX_STEPS
from giantstep.train import DivergenceError

#: Longest --connect-timeout: a day (1e308 s waited for ever on an unreachable scheduler).
MAX_CONNECT_TIMEOUT = 86_400.0
#: Most local worker processes (--workers): beyond a C int, the pool's semaphore overflowed
#: (exit 1); far beyond any machine's cores.
MAX_WORKERS = 4096

#: Exit code for bad input and diverging runs (the same as click's usage errors).
EXIT_BAD_INPUT = 2
#: Exit code for an unexpected internal error (a bug: rerun with --debug for the traceback).
EXIT_INTERNAL = 1
#: Exit code after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def _fail(message: str) -> None:
    _say_error(message)
    sys.exit(EXIT_BAD_INPUT)


#: Longest stretch without a space an error line shows whole: a 60 KB target expression or a
#: 100 KB ``--set`` key was echoed in full.
LONGEST_WORD = 200


def _say_error(message: object) -> None:
    """``giantstep: error: MESSAGE`` on stderr, its overlong words cut in the middle."""

    def cut(word: re.Match) -> str:
        text = word.group()
        return f"{text[:120]}…[{len(text) - 160} characters]…{text[-40:]}"

    overlong = r"\S{" + str(LONGEST_WORD + 1) + ",}"
    text = re.sub(overlong, cut, str(message))
    click.echo(f"giantstep: error: {text}", err=True)


def _os_error(err: OSError) -> str:
    """A one-line message for a failed read or write: the file and the system's reason."""
    where = f" {err.filename}" if err.filename else ""
    return f"cannot use{where}: {err.strerror or err}"


class Giantstep(click.Group):
    """The command group: no traceback reaches a user, whatever the input or the environment.

    Expected failures (bad input, a diverging run, a file that cannot be read or written, too
    little memory) exit 2 with one line; anything else is a bug in giantstep: exit 1 with one
    line and a hint to rerun with ``--debug`` for the traceback. Ctrl-C exits 130 quietly.
    """

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command, turning every failure into a message and an exit code."""
        if not ctx.params.get("debug"):
            # Overflow in hostile inputs is reported by giantstep's own finiteness checks, in
            # one line naming the cause; numpy's warnings would only repeat it as noise.
            warnings.simplefilter("ignore", RuntimeWarning)
            # The same in a sweep's worker processes, which read it when they start (unless
            # the user chose their own).
            if not os.environ.get("PYTHONWARNINGS"):
                os.environ["PYTHONWARNINGS"] = "ignore::RuntimeWarning"
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except (ConfigError, DivergenceError, ValueError) as err:
            _say_error(err)
            ctx.exit(EXIT_BAD_INPUT)
        except OSError as err:
            _say_error(_os_error(err))
            ctx.exit(EXIT_BAD_INPUT)
        except MemoryError:
            click.echo("giantstep: error: out of memory (lower the sizes)", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except Exception as err:
            if ctx.params.get("debug"):
                raise
            click.echo(
                f"giantstep: internal error: {type(err).__name__}: {err} "
                "(a bug in giantstep; rerun with --debug for the traceback)",
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)


def reports_bad_input(flags: dict[str, str] | None = None) -> Callable:
    """Turn config errors and divergence into a one-line message and exit code 2.

    Library errors name the argument (``scheduler: ...``); ``flags`` maps such a leading
    argument name to the command's flag (``--scheduler: ...``).
    """
    names = {"override": "--set", **(flags or {})}
    pattern = re.compile(rf"^({'|'.join(map(re.escape, names))})\b")

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return command(*args, **kwargs)
            except (ConfigError, DivergenceError) as err:
                _fail(pattern.sub(lambda m: names[m.group(1)], str(err), count=1))

        return wrapper

    return decorate


_allow_python = click.option(
    "--allow-python",
    is_flag=True,
    help="Accept activations py:module:function, which import and run that module's code "
    "(a config or sweep file naming one is code: only for files you trust).",
)


_all_versions = click.option(
    "--all-versions",
    is_flag=True,
    help="Also the runs of other giantstep versions (by default only this version's).",
)


@click.group(cls=Giantstep, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="giantstep")
@click.option("--debug", is_flag=True, help="Show the traceback of an unexpected error.")
def main(debug: bool) -> None:
    """Simulate, measure and predict what two-layer networks learn from giant gradient steps.

    Bad input exits 2 with a message naming the key; Ctrl-C exits 130.
    """


def command_line() -> None:
    """The ``giantstep`` command and ``python -m giantstep``: :func:`main`, for a process of its
    own."""
    # The ~100 000 objects of the modules imported by now (numpy, scipy, numba, pydantic) live
    # as long as the process: frozen, the garbage collector no longer walks them in its full
    # collections, four of which run as the interpreter exits — 0.25 s of every command's
    # exit after a run. Not in main(), which tests and scripts call in their own processes.
    gc.freeze()
    main()


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
    help="Spread every streamed sum of the run over a Dask cluster's workers (tcp://host:port).",
)
@_allow_python
@reports_bad_input({"scheduler": "--scheduler"})
def run(
    config_file: str | None,
    overrides: tuple[str, ...],
    as_json: bool,
    out: Path | None,
    scheduler: str | None,
    allow_python: bool,
):
    """Run one experiment (the built-in default if no CONFIG_FILE is given)."""
    from giantstep.experiment import run as run_experiment

    config = load_config(config_file, overrides, allow_python=allow_python)
    if out is not None:
        _check_writable(out)
        _check_out_file(out / "result.json", out)
    progress = not as_json and sys.stderr.isatty()
    with open_executor("dask" if scheduler else "inprocess", scheduler=scheduler) as executor:
        result = run_experiment(config, executor=executor, progress=progress)
    text = result.model_dump_json(indent=2)
    if out is not None:
        write_text_atomically(out / "result.json", text + "\n")
    if as_json:
        click.echo(text)
    else:
        render.print_run(result)


def _check_writable(folder: Path, given: Path | None = None) -> None:
    """Exit 2 before any work if ``folder`` could not be created or written to (it is not
    created here: a run that then fails leaves nothing behind). ``given``: the ``--out`` to
    name, when it is a file in ``folder``."""
    shown = given or folder
    existing = folder.absolute()
    while not existing.exists():
        if existing.is_symlink():  # a folder cannot be made where a dangling link is
            _fail(f"--out {shown}: {existing} is a symbolic link to {os.readlink(existing)}, "
                  "which does not exist")  # fmt: skip
        existing = existing.parent
    if not existing.is_dir():
        _fail(f"--out {shown}: {existing} is not a folder")
    if not os.access(existing, os.W_OK):
        _fail(f"--out {shown}: cannot write into {existing}")
    try:  # what access() cannot tell: /proc, a read-only mount, root's writes
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        _fail(f"--out {shown}: cannot write into {existing} ({err.strerror or err})")


def _file_path(value: str | None, option: str) -> Path | None:
    """``value`` as a Path; exit 2 naming ``option`` if it ends in a slash, which names a folder
    (``Path`` drops it: --store out/x/ made a file out/x)."""
    if value is not None and value.endswith(("/", os.sep)):
        _fail(
            f"{option} {value}: ends in '/', a folder: name the store's file (e.g. {value}r.sqlite)"
        )
    return None if value is None else Path(value)


def _check_not_the_store(out: Path, store_path: Path) -> None:
    """Exit 2 if ``--out`` is the store itself or one of SQLite's files beside it: the export
    replaced the store (exit 0)."""
    store = os.path.realpath(store_path)
    if os.path.realpath(out) in [store] + [store + end for end in ("-wal", "-shm", "-journal")]:
        _fail(f"--out {out}: is the results store {store_path} (or its journal): write the "
              "export elsewhere")  # fmt: skip


def _check_out_file(path: Path, out: Path | None = None) -> None:
    """Exit 2 naming ``--out`` before any work if the file ``path`` (``--out`` itself, or a
    file inside the folder ``out``) cannot be written: it exists and is not a regular file (a
    FIFO, a device, a socket, a folder: replacing it would put a regular file in its place),
    or a folder above it is a file. A symbolic link to a regular file is written through (the
    file it points at is replaced, the link kept; giantstep.files.output_path)."""
    try:
        output_path(path)
    except OutputPathError as err:
        where = f"{out} ({err})" if out is not None else str(err)
        _fail(f"--out {where}")


def _activation(spec: str, allow_python: bool):
    """The activation named on the command line; exit 2 naming it if unknown or not allowed."""
    from giantstep.activations import check_activation, get_activation

    try:
        return get_activation(check_activation(spec, allow_python=allow_python))
    except ValueError as err:
        _fail(_naming_activation(spec, err))


def _hermite_coefficients(spec: str, max_degree: int, allow_python: bool):
    """μ_0..μ_K of an activation named on the command line; exit 2 naming it if unknown, or
    naming --max-degree if a μ_k (of a non-polynomial σ, by quadrature) is lost in rounding."""
    activation = _activation(spec, allow_python)
    try:
        mu = activation.hermite_coefficients(max_degree)
        lost = activation.first_lost_degree(max_degree)
        if lost is not None:
            _fail(
                f"--max-degree {max_degree}: μ_k of {spec} is lost in rounding from "
                f"k = {lost} on (quadrature in double precision; He_k grows like "
                f"sqrt(k!)): at most --max-degree {lost - 1}"
            )
        return mu
    except ValueError as err:
        _fail(_naming_activation(spec, err))


def _naming_activation(spec: str, err: ValueError) -> str:
    """``activation SPEC: why``, once: some of the library's messages name it already."""
    prefix = f"activation {spec}: "
    return str(err) if str(err).startswith(prefix) else prefix + str(err)


@main.group()
def theory() -> None:
    """Predictions of the papers, without simulating."""


@theory.command()
@click.argument("activation")
@click.option(
    "--max-degree", default=8, show_default=True, type=click.IntRange(0, MAX_HERMITE_DEGREE)
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_allow_python
def hermite(activation: str, max_degree: int, as_json: bool, allow_python: bool) -> None:
    """Hermite coefficients μ_k = E[σ(g) He_k(g)] of an activation."""
    coefficients = _hermite_coefficients(activation, max_degree, allow_python)
    if as_json:
        click.echo(json.dumps({"activation": activation, "coefficients": coefficients.tolist()}))
    else:
        render.print_hermite(activation, coefficients)


@theory.command()
@click.argument("expression")
@click.option(
    "--batch-exponent",
    "-k",
    required=True,
    type=click.IntRange(min=1),
    help="κ of the batch size n = Θ(d^κ).",
)
@click.option(
    "--steps", "-T", default=3, show_default=True, type=click.IntRange(min=0, max=MAX_STEPS)
)
@click.option("--activation", default="relu", show_default=True, help="The student's σ.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_allow_python
def learnable(
    expression: str,
    batch_exponent: int,
    steps: int,
    activation: str,
    as_json: bool,
    allow_python: bool,
):
    """The target directions T giant steps learn at n = Θ(d^κ) (Dandi et al.'s rules)."""
    from giantstep.targets import parse_target
    from giantstep.theory.learnable import activation_support, predict

    def named(err: ValueError) -> str:  # a target's own errors already name their key
        text = str(err)
        return text if text.startswith("target.expression") else f"expression: {text}"

    try:
        parse_target(expression)
    except ValueError as err:
        _fail(named(err))
    _activation(activation, allow_python)
    try:
        prediction = predict(expression, batch_exponent, steps, activation=activation)
    except ValueError as err:
        _fail(named(err))
    if as_json:
        click.echo(json.dumps(prediction.to_dict()))
    else:
        support = activation_support(activation, len(prediction.coefficients) - 1)
        render.print_learnable(prediction, support)


@theory.command()
@click.option("--activation", default="relu", show_default=True, help="The student's σ.")
@click.option("--max-degree", default=6, show_default=True, type=click.IntRange(min=1, max=9))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_allow_python
def phases(activation: str, max_degree: int, as_json: bool, allow_python: bool) -> None:
    """Moniri et al.'s band rule: spikes after one step with η = c·n^α, by band of α."""
    from giantstep.theory.bands import bands

    mu = _hermite_coefficients(activation, max_degree, allow_python)
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
    else:
        render.print_phases(activation, rows)


@theory.command("errors")
@click.argument("config_file", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key; VALUE is a TOML literal, else a string.",
)
@click.option(
    "--over",
    "overs",
    metavar="KEY=START:STOP:COUNT",
    multiple=True,
    help="A curve over readout.samples or train.batch_size: COUNT integers from START to "
    "STOP, evenly spaced in log (default: the config's sizes, one point). Once.",
)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    type=click.Choice(ERROR_VARIANTS),
    help="Only this variant, repeatable (default: all three). random_features is fast; "
    "trained_layer, and spiked for unequal neurons (moniri), cost ~0.5 s per size and ridge "
    "value at N = 1000.",
)
@click.option(
    "--slow-points",
    type=click.IntRange(min=1),
    default=None,
    help="Solve the variants that need the N × N solver at only this many of the --over "
    "values (evenly spaced in log); the others at every value.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object and nothing else.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw the curve (test and train error) into this PNG, PDF or SVG file.",
)
@_allow_python
@reports_bad_input({"over": "--over", "variants": "--variant", "out": "--out"})
def theory_errors(
    config_file: str | None,
    overrides: tuple[str, ...],
    overs: tuple[str, ...],
    variants: tuple[str, ...],
    slow_points: int | None,
    as_json: bool,
    out: Path | None,
    allow_python: bool,
) -> None:
    """The theory's ridge errors without simulating the readout (giantstep.theory.errors).

    Draws W₀ (and takes the step, for trained_layer: once for a readout.samples curve, per
    value for a train.batch_size curve) and prints the predicted test and training errors.
    """
    from giantstep.learning_curve import parse_grid, predict_curve
    from giantstep.plots import check_figure_path, plot_learning_curve

    if len(overs) > 1:  # the last one won, silently
        _fail(f"--over: one curve at a time, got {len(overs)}: {', '.join(overs)}")
    over = overs[0] if overs else None

    config = load_config(config_file, overrides, allow_python=allow_python)
    key, values = parse_grid(over) if over is not None else ("readout.samples", None)
    if out is not None:
        check_figure_path(out)
        _check_out_file(out)
        _check_writable(out.parent, out)
    curve = predict_curve(
        config, key, values, variants=variants or ERROR_VARIANTS, slow_points=slow_points
    )
    if out is not None:
        plot_learning_curve(curve, out)
    if as_json:
        click.echo(curve.model_dump_json(indent=2))
    else:
        render.print_learning_curve(curve)
        if out is not None:
            click.echo(f"figure: {out}")


@main.command()
@click.option("--quick", is_flag=True, help="A small workload (seconds) instead of n = 10^6.")
@click.option(
    "--dtype",
    "dtypes",
    multiple=True,
    type=click.Choice(["float64", "float32"]),
    help="Only these dtypes (default: both).",
)
@click.option(
    "--activation",
    "activations",
    multiple=True,
    help="Only these activations for the reference workload (default: relu and tanh).",
)
@click.option(
    "--seeds", default=8, show_default=True, help="Runs of the small-network sweep (at least 1)."
)
@reports_bad_input({"seeds": "--seeds", "activation": "--activation"})
def bench(quick: bool, dtypes: tuple[str, ...], activations: tuple[str, ...], seeds: int) -> None:
    """Measure this machine's GEMM and normal rates and each workload's roofline ratio.

    Bad options (``--seeds`` below 1, an unknown activation) exit 2 before any work; a workload
    that fails in its process (e.g. an activation that is not finite on the run's inputs) exits
    2 with its message, and one whose process dies without a result exits 2 saying how it ended.
    """
    from giantstep.bench import BenchChildError, run_benchmark

    for spec in activations:
        if spec.strip().startswith("py:"):
            _fail(f"--activation {spec}: bench measures built-in activations only, not py:")
    try:
        run_benchmark(
            quick=quick,
            dtypes=dtypes or ("float64", "float32"),
            activations=activations or ("relu", "tanh"),
            seeds=seeds,
        )
    except BenchChildError as err:
        _fail(str(err))


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
    _check_writable(out)  # before the runs (--out /dev/null failed only after all of them)
    report = available[name](quick, out)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        render.print_report(report)
    sys.exit(0 if report.ok else 1)


# -- sweeps, the results store and plots (giantstep.sweep / store / plots) ---------------------


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option(
    "--store",
    "store_path",
    default="results.sqlite",
    show_default=True,
    type=click.Path(dir_okay=False),
    callback=lambda ctx, param, value: _file_path(value, "--store"),
    help="The SQLite results store; runs already in it are skipped.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=MAX_WORKERS),
    default=None,
    help="Local processes running at once (default: the number of cores); refused if that "
    "many processes would not fit in memory.",
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
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds to wait for the Dask scheduler (finite, above 0).",
)
@click.option("--retry", is_flag=True, help="Also rerun diverged runs (failed ones always are).")
@click.option("--dry-run", is_flag=True, help="Validate and list the runs; run nothing.")
@_allow_python
@reports_bad_input({"scheduler": "--scheduler", "executor": "--executor"})
def sweep(
    sweep_file: str,
    store_path: Path,
    workers: int | None,
    scheduler: str | None,
    executor: str | None,
    connect_timeout: float,
    retry: bool,
    dry_run: bool,
    allow_python: bool,
) -> None:
    """Run every config of a sweep file not yet in the results store.

    Each finished run is stored at once (one transaction): killing the sweep loses only the
    runs in flight, and the same command finishes the rest. A run that fails or diverges is
    recorded with its error and the sweep goes on.
    """
    from giantstep.store import Store
    from giantstep.sweep import load_sweep, run_sweep

    if not (math.isfinite(connect_timeout) and 0 < connect_timeout <= MAX_CONNECT_TIMEOUT):
        _fail(
            f"--connect-timeout: must be a number of seconds above 0 and at most "
            f"{MAX_CONNECT_TIMEOUT:g} (a day), got {connect_timeout}"
        )
    kind = executor or ("dask" if scheduler else "processes")
    if workers is not None and kind != "processes":  # it was ignored
        _fail(f"--workers: sets the local processes; --executor {kind} has none of its own")
    plan = load_sweep(sweep_file)
    runs = plan.expand(allow_python=allow_python)  # every config validated before any run
    if dry_run:
        status: dict[str, str] = {}
        if store_path.exists():
            with Store(store_path, readonly=True) as store:
                status = store.status(p.key for p in runs)
        render.print_dry_run(runs, status, store_path)
        return
    if kind == "processes":
        workers = _workers_that_fit(workers, [planned.config for planned in runs])
    progress, callback = render.sweep_progress()
    with (
        open_executor(
            executor, workers=workers, scheduler=scheduler, timeout=connect_timeout
        ) as pool,
        Store(store_path) as store,
        progress,
    ):
        summary = run_sweep(
            runs, store, executor=pool, retry=retry, callback=callback, name=plan.name
        )
    render.print_sweep_summary(summary, store_path)


#: Resident memory of a local worker process before its run's own arrays: the interpreter with
#: giantstep imported, numpy, BLAS and the compiled passes loaded. Measured 2026-12-07 (Linux,
#: Python 3.11, OpenBLAS): 136 MiB after ``python3 -c "import giantstep"`` and 186 MiB after a
#: tiny run; rounded up.
WORKER_BASELINE_BYTES = 200 * 2**20


def _workers_that_fit(workers: int | None, configs: list) -> int | None:
    """The local worker count for ``--workers``: exit 2 naming it if that many processes,
    each holding its run's memory (giantstep.experiment.memory_estimate, the estimate
    check_memory uses: the largest run here) and the interpreter (WORKER_BASELINE_BYTES),
    exceed the machine's available memory; without ``--workers``, the default (one per core)
    lowered to what fits. One process always may run: a run too large on its own is
    run_sweep's to refuse, naming the run (compute.memory_limit is what one run may use).
    A pool starts no more processes than it has runs, so at most ``len(configs)`` count.
    """
    import psutil

    from giantstep.executors import cores
    from giantstep.experiment import memory_estimate, readable_bytes

    if not configs:
        return workers
    need = max(sum(memory_estimate(config).values()) for config in configs)
    limit = psutil.virtual_memory().available
    fit = max(1, int(limit // (need + WORKER_BASELINE_BYTES)))
    if workers is None:
        return min(cores(), fit) if fit < cores() else None
    processes = min(workers, len(configs))
    if processes > fit:
        total = processes * (need + WORKER_BASELINE_BYTES)
        _fail(
            f"--workers {workers}: {processes} worker processes need about "
            f"{readable_bytes(total)} ({readable_bytes(need)} for the largest run + "
            f"{readable_bytes(WORKER_BASELINE_BYTES)} for each process's interpreter) but "
            f"available memory is {readable_bytes(limit)}; at most {fit} fit"
        )
    return workers


def _say_hidden_versions(store_path: Path, all_versions: bool) -> None:
    """On stderr: how many runs of other giantstep versions the command leaves out."""
    from giantstep.store import Store, library_version

    if all_versions:
        return
    with Store(store_path, readonly=True) as store:
        others = {v: n for v, n in store.versions().items() if v != library_version()}
    if others:
        listed = ", ".join(f"{n} of {v}" for v, n in sorted(others.items()))
        click.echo(
            f"left out: runs of other giantstep versions ({listed}); --all-versions shows them",
            err=True,
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
@click.option("--columns", default=None, help="Comma-separated columns to list, or to export.")
@_all_versions
@reports_bad_input({"fmt": "--export"})
def results(
    store_path: Path,
    filters: tuple[str, ...],
    export_format: str | None,
    out: Path | None,
    columns: str | None,
    all_versions: bool,
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

    if export_format is not None and out is not None:
        _check_out_file(out)
        _check_writable(out.parent, out)
        _check_not_the_store(out, store_path)
    if out is not None and export_format is None:  # it was ignored: the runs were listed
        _fail("--out: writes an export; add --export csv or --export parquet")
    frame = load(store_path, arrays=export_format is not None, all_versions=all_versions)
    _say_hidden_versions(store_path, all_versions)
    if frame.empty and export_format is None:  # no columns to filter on either
        click.echo(f"{store_path}: no runs")
        return
    frame = select(frame, filters)
    chosen = list(dict.fromkeys(columns.split(","))) if columns else None  # once each
    missing = [c for c in chosen or [] if c not in frame.columns]
    if missing and export_format is None:
        arrays = load(store_path, arrays=True, all_versions=all_versions).columns
        if missing[0] in arrays:
            _fail(f"--columns: {missing[0]!r} holds arrays, which a listing leaves out: "
                  "export it (--export csv or parquet)")  # fmt: skip
    if missing:
        _fail(f"--columns: no column {missing[0]!r} in the store")
    if export_format is not None:
        if out is None:
            _fail("--export needs --out FILE")
        export(frame[chosen] if chosen else frame, out, export_format)
        click.echo(f"{len(frame)} runs written to {out}")
        return
    if frame.empty:
        click.echo(f"{store_path}: no runs" + (" match" if filters else ""))
        return
    shown = chosen or summary_columns(frame)
    order = [c for c in varying_config_columns(frame) if frame[c].map(np.isscalar).all()]
    try:  # rows in the order of the varied keys, for reading
        frame = frame.sort_values(order, kind="stable")
    except (TypeError, ValueError):  # mixed types in a column: keep the store's order
        pass
    render.print_runs(frame, shown, f"{store_path}: {len(frame)} runs")


@main.command()
@click.argument("store_path", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("filters", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--x", "x", required=True, help="Config key on the x axis, e.g. train.batch_size.")
@click.option("--y", "y", required=True, help="Metric, e.g. alignment.1.update_cosine.")
@click.option("--hue", default=None, help="Config key: one line per value.")
@click.option(
    "--theory",
    multiple=True,
    help="Column of a prediction, repeatable (default: every prediction of y in the store).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("plot.png"),
    show_default=True,
    help="PNG, PDF or SVG file.",
)
@click.option("--logx", is_flag=True)
@click.option("--logy", is_flag=True)
@_all_versions
@reports_bad_input({"x": "--x", "y": "--y", "hue": "--hue", "theory": "--theory", "out": "--out"})
def plot(
    store_path: Path,
    filters: tuple[str, ...],
    x: str,
    y: str,
    hue: str | None,
    theory: tuple[str, ...],
    out: Path,
    logx: bool,
    logy: bool,
    all_versions: bool,
) -> None:
    """Plot a metric against a config key: mean ± sd over the other keys (seeds), with theory."""
    from giantstep.plots import plot_frame
    from giantstep.store import load, select

    _check_out_file(out)
    _check_writable(out.parent, out)
    frame = load(store_path, arrays=False, all_versions=all_versions)
    if not frame.empty and filters:
        frame = select(frame, filters)
        if frame.empty:  # it said 'the store has no runs to plot'
            _fail(f"{' '.join(filters)}: no run of {store_path} matches")
    _say_hidden_versions(store_path, all_versions)
    written = plot_frame(frame, x, y, hue=hue, out=out, theory=list(theory), logx=logx, logy=logy)
    click.echo(f"figure: {written}")


@main.command()
@click.argument("name", required=False)
@click.option("--quick", is_flag=True, help="Small sizes (seconds; CI).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("study-out"),
    show_default=True,
    help="Where the figures (PNG and PDF) and, by default, the store go.",
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False),
    callback=lambda ctx, param, value: _file_path(value, "--store"),
    default=None,
    help="The results store (default OUT/NAME.sqlite); runs already in it are skipped.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=MAX_WORKERS),
    default=1,
    show_default=True,
    help="Local processes running the study's runs (1: in this process).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@reports_bad_input()
def study(
    name: str | None,
    quick: bool,
    out: Path,
    store_path: Path | None,
    workers: int,
    as_json: bool,
) -> None:
    """Run a study of the papers' open questions: findings beside the theory, and a figure.

    Without NAME, list the studies. A study is a sweep through the results store: killed, it
    finishes where it stopped when rerun.
    """
    from giantstep.studies import run_study, studies

    available = studies()
    if name is None:
        for key, item in available.items():
            click.echo(f"{key:16s} {item.summary}")
        return
    if name not in available:
        _fail(f"study: unknown study '{name}'; one of {', '.join(available)}")
    _check_writable(out)
    if workers > 1:  # as a sweep's: refused when that many processes would not fit
        from giantstep.config import validate_config

        configs = [validate_config(c) for c in available[name].configs(quick)]
        workers = _workers_that_fit(workers, configs)
    with open_executor("processes" if workers > 1 else "inprocess", workers=workers) as pool:
        report = run_study(
            available[name], quick=quick, out=out, store_path=store_path, executor=pool
        )
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        render.print_study(report)
