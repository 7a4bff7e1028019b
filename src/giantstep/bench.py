"""``giantstep bench``: this machine's own GEMM and normal rates, and how close runs come to them.

The **roofline** of a run is the time the machine needs at best for its two kinds of heavy
work: its matrix flops at this machine's GEMM rate (a 2048² product, all cores) plus its normal
draws at this machine's best generator rate over all its cores (independent Philox generators,
one per thread, as the runs draw them); both rates are measured in the same invocation. The
**roofline ratio** is the wall time over the roofline: 1.0 is the machine's limit. The
elementwise work (``σ``, ``σ'``, the residual product; not in the roofline) is timed on its own
and reported as its share of the wall time.

Workloads: the reference run (one giant step plus readout at ``d = N = 1000``, ``n = 10^6``,
ridge set 10^5, test set 10^4) with relu and with tanh, in float64 and float32, each in a fresh
process; and the small network (``dandi`` preset, ``d = 800``, ``N = 64``, ``n = 3200``, 3 steps,
ridge and test sets 2048) as a sweep of several seeds in one process, timed per run.
``benchmarks/peer.py`` runs the papers' dense approach (whole matrices in memory) beside
giantstep on the same work at ``n = 10^5`` with tanh.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from giantstep import normals
from giantstep.config import ConfigError, ExperimentConfig, validate_config
from giantstep.data import draw_threads, generator, philox_key
from giantstep.executors import ignoring_ctrl_c

#: Most seeds of the small-network sweep (``--seeds``): a second each at most; 10^8 seeds held
#: their configs in memory for minutes before the first run.
MAX_SEEDS = 1000


def reference_config(
    dtype: str, quick: bool = False, activation: str = "relu", scale: int | None = None
) -> ExperimentConfig:
    """One step plus readout at ``d = N = 1000``, ``n = 10^6 / scale²``, readout 10^5 / scale,
    test 10^4 / scale (``scale`` 10 with ``quick``, else 1)."""
    scale = scale or (10 if quick else 1)
    return validate_config(
        {
            "dim": 1000,
            "width": 1000,
            "activation": activation,
            "target": {"expression": "z1 + He2(z1)/2"},
            "train": {
                "steps": 1,
                "batch_size": 1_000_000 // scale**2,
                "residual": "y-f",
                "step_size": {"scale": 2.0, "batch_exponent": 0.3},
            },
            "readout": {"samples": 100_000 // scale, "ridge": [1e-3, 1e-2, 1e-1]},
            "test": {"samples": 10_000 // scale},
            "compute": {"dtype": dtype},
        }
    )


def small_config(seed: int, dtype: str = "float64") -> ExperimentConfig:
    """The small network: ``dandi`` preset, d = 800, N = 64, n = 3200 = 4d, 3 steps, relu."""
    return validate_config(
        {
            "seed": seed,
            "dim": 800,
            "width": 64,
            "preset": "dandi",
            "activation": "relu",
            "target": {"expression": "z1 + z1*z2"},
            "train": {
                "steps": 3,
                "batch_size": 3200,
                "step_size": {"scale": 2.0, "batch_exponent": 0.0, "width_exponent": 1.0},
            },
            "readout": {"samples": 2048, "ridge": [0.01]},
            "test": {"samples": 2048},
            "measure": {"overlap_matrices": True},
            "compute": {"dtype": dtype},
        }
    )


def workload(config: ExperimentConfig) -> tuple[float, float]:
    """(matrix flops, normal draws) of one run: GEMMs ``X Wᵀ``, ``Gᵀ X`` and ``FᵀF``."""
    d, width, rank = config.dim, config.width, 1
    train_rows = config.train.steps * config.train.batch_size
    readout_rows = config.readout.samples + config.test.samples
    flops = train_rows * (4 * d * width + 2 * d * rank) + readout_rows * (
        2 * d * width + width * (width + 1) + 2 * width + 2 * d * rank
    )
    normals = (train_rows + readout_rows) * (d + 1)
    return float(flops), float(normals)


def gemm_rate(dtype: str, size: int = 2048, repeats: int = 5) -> float:
    """Best achieved flop/s of a ``size``-square matrix product in ``dtype``."""
    rng = generator(0, 99)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    out = np.empty_like(a)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def normal_rate(
    dtype: str, threads: int | None = None, count: int = 20_000_000, repeats: int = 3
) -> float:
    """Best standard normals per second, ``threads`` independent Philox generators (default:
    every core) each filling its share of one array with ``giantstep.normals``, as the runs'
    chunks are filled."""
    threads = threads or draw_threads()
    out = np.empty(count, dtype=dtype)
    parts = np.array_split(out, threads)
    states = [normals.philox_state(philox_key(0, 98, t)) for t in range(threads)]
    normals.fill(*states[0], out[:1])  # compiled (or loaded) before the clock starts
    best = np.inf
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(lambda k: normals.fill(*states[k], parts[k]), range(threads)))
            best = min(best, time.perf_counter() - start)
    return count / best


def elementwise_seconds(config: ExperimentConfig, repeats: int = 3) -> float:
    """Seconds of one run's elementwise passes, timed on one block and scaled to the run's rows:
    ``σ``, ``σ'`` and the residual product on the gradient rows, ``σ`` on the readout rows."""
    from giantstep import kernels
    from giantstep.activations import get_activation

    activation = get_activation(config.activation)
    rows, width = config.compute.block_size, config.width
    rng = generator(0, 97)
    pre = rng.standard_normal((rows, width)).astype(config.compute.dtype)
    r = rng.standard_normal(rows).astype(pre.dtype)
    a = rng.standard_normal(width).astype(pre.dtype)
    gradient = values = np.inf
    for _ in range(repeats):
        work = pre.copy()
        start = time.perf_counter()
        _, slope = kernels.values_and_slopes(activation, work)
        kernels.scale(slope, r, a)
        gradient = min(gradient, time.perf_counter() - start)
        work = pre.copy()
        start = time.perf_counter()
        kernels.values(activation, work)
        values = min(values, time.perf_counter() - start)
    train_rows = config.train.steps * config.train.batch_size
    readout_rows = config.readout.samples + config.test.samples
    return (train_rows * gradient + readout_rows * values) / rows


def rates(dtype: str) -> dict[str, float]:
    """This machine's GEMM flop/s (in ``dtype``) and normals/s (all cores, and one thread) now.
    The normals are float64 whatever the dtype: a float32 run draws them so and rounds them
    (``data.SampleStream``), the same samples as a float64 run."""
    return {
        "gemm": gemm_rate(dtype),
        "normals": normal_rate("float64"),
        "normals_one_thread": normal_rate("float64", threads=1),
    }


def _run_in_child(configs: list[ExperimentConfig]) -> tuple:
    """The small-network sweep: every seed in this one process, each run timed."""
    from giantstep.experiment import run

    run(configs[0].model_copy(update={"seed": 10_000}))  # warm: imports, compiled kernels
    machine = rates(configs[0].compute.dtype)
    seconds = [run(config).seconds for config in configs]
    peak = run(configs[0]).peak_memory_bytes
    return seconds, peak, elementwise_seconds(configs[0]), machine


def _run_reference_in_child(config: ExperimentConfig) -> tuple:
    """One reference run; the machine's rates are measured just before it, in this process,
    so that the roofline describes the machine as the run found it."""
    from giantstep.experiment import run

    machine = rates(config.compute.dtype)
    result = run(config)
    return [result.seconds], result.peak_memory_bytes, elementwise_seconds(config), machine


class BenchChildError(RuntimeError):
    """A workload's process exited (killed, crashed) without sending its result or its error."""


class _ChildTraceback(Exception):
    """The traceback of an error in a workload's process (shown by ``--debug``)."""


def _child_main(target, argument, connection, filters: list) -> None:
    """In the workload's process: send ``("ok", result)`` or, if ``target`` raised,
    ``(kind, error type, message, traceback)`` — kind ``"input"`` for bad input (ValueError,
    a diverging run: the CLI's exit 2), ``"memory"`` or ``"error"`` — instead of printing a
    traceback."""
    import traceback

    from giantstep.train import DivergenceError

    warnings.filters[:] = filters  # the parent's: the CLI's hides numpy's overflow warnings
    # Stopped by the parent (Ctrl-C there): leave as from sys.exit, so that what the process
    # holds is released (killed outright, multiprocessing's tracker reported a leaked semaphore).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        result = target(argument)
    except Exception as err:  # noqa: BLE001 - everything goes back to the parent
        if isinstance(err, ValueError | DivergenceError):
            kind = "input"
        elif isinstance(err, MemoryError):
            kind = "memory"
        else:
            kind = "error"
        connection.send((kind, type(err).__name__, str(err), traceback.format_exc()))
        connection.close()
        sys.exit(1)  # the error is the parent's to report: no traceback here
    connection.send(("ok", result))
    connection.close()


def _picklable(items: list) -> list:
    """The items that can be sent to another process (a warnings filter on a class defined in
    a notebook cannot)."""
    import pickle

    kept = []
    for item in items:
        try:
            pickle.dumps(item)
        except Exception:  # noqa: BLE001, S112 - whatever pickling raises, leave it here
            continue
        kept.append(item)
    return kept


def _in_child(target, argument, name: str = "workload") -> Any:
    """``target(argument)`` in a fresh (spawned) process; its return value.

    The parent sleeps until the child sends something or exits (no polling: nothing runs
    beside the measurement). An exception in the child is raised here: ValueError for bad
    input (its message first, e.g. a non-finite activation), MemoryError, or RuntimeError;
    a child that exits without sending anything (killed, crashed) raises BenchChildError
    with its exit code — never a hang.
    """
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_child_main, args=(target, argument, sender, _picklable(warnings.filters))
    )
    with ignoring_ctrl_c():  # the parent handles Ctrl-C, and stops the child (below)
        child.start()
    sender.close()  # the child holds the only sending end: its exit closes the pipe
    try:
        wait([receiver, child.sentinel])
        try:
            message = receiver.recv() if receiver.poll() else None
        except (EOFError, OSError):
            message = None
    except BaseException:  # Ctrl-C: the workload stops with the command
        child.terminate()
        raise
    finally:
        receiver.close()
        child.join()
    if message is None:
        code = child.exitcode
        how = f"exited with code {code}" if code >= 0 else f"was killed by signal {-code}"
        raise BenchChildError(f"bench {name}: its process {how} before sending a result")
    if message[0] == "ok":
        return message[1]
    kind, error_type, text, remote = message
    cause = _ChildTraceback(remote)
    if kind == "input":
        raise ValueError(f"bench {name}: {text}") from cause
    if kind == "memory":
        raise MemoryError(f"bench {name}: {text}") from cause
    raise RuntimeError(f"bench {name}: {error_type}: {text} (in its process)") from cause


def timed_run(config: ExperimentConfig) -> tuple[float, int]:
    """(seconds, peak memory bytes) of the run in a fresh process, so its peak is its own."""
    seconds, peak, _, _ = _in_child(_run_reference_in_child, config)
    return seconds[0], peak


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def _table(title: str) -> Table:
    table = Table(title=title)
    for column in (
        "workload",
        "dtype",
        "GEMM GFLOP/s",
        "normals M/s",
        "wall s",
        "roofline s",
        "roofline ratio",
        "GEMM s",
        "draws s",
        "elementwise s",
        "elementwise share",
        "peak MiB",
    ):
        table.add_column(column, justify="right")
    return table


def run_benchmark(
    quick: bool = False,
    dtypes: tuple[str, ...] = ("float64", "float32"),
    activations: tuple[str, ...] = ("relu", "tanh"),
    seeds: int = 8,
) -> dict[str, Any]:
    """Measure and print the machine's rates and each workload's wall time, roofline ratio,
    elementwise share and peak memory; return the rows as a dict.

    Raises
    ------
    ConfigError
        Before any work, naming ``seeds`` (fewer than 1) or ``activation`` (not a valid
        activation: the config's own check).
    ValueError, MemoryError, RuntimeError, BenchChildError
        If a workload fails in its process (see ``_in_child``), e.g. an activation that is
        not finite on the run's inputs.
    """
    if not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(
            f"seeds: the small-network sweep takes 1 to {MAX_SEEDS} seeds, got {seeds}"
        )
    # Every workload's config validated (the activations with it) before the first starts.
    references = [
        (activation, dtype, reference_config(dtype, quick, activation))
        for activation in activations
        for dtype in dtypes
    ]
    smalls = [(dtype, [small_config(seed, dtype) for seed in range(seeds)]) for dtype in dtypes[:1]]
    # Wide enough for the columns even in a pipe (rich's default there is 80).
    console = Console(width=max(Console().width, 170))
    console.print(f"machine: {draw_threads()} cores; load average at the start {_load():.2f}")
    table = _table("giantstep bench" + (" (quick)" if quick else ""))
    rows: dict[str, Any] = {}

    def add(name, dtype, config, seconds, peak, elementwise, machine):
        flops, normals = workload(config)
        gemm, draws = flops / machine["gemm"], normals / machine["normals"]
        rows[f"{name} {dtype}"] = {
            "wall": seconds, "roofline": gemm + draws, "ratio": seconds / (gemm + draws),
            "elementwise": elementwise, "peak_mib": peak / 2**20, **machine,
        }  # fmt: skip
        table.add_row(
            name,
            dtype,
            f"{machine['gemm'] / 1e9:.0f}",
            f"{machine['normals'] / 1e6:.0f} ({machine['normals_one_thread'] / 1e6:.0f})",
            f"{seconds:.3g}",
            f"{gemm + draws:.3g}",
            f"{seconds / (gemm + draws):.2f}",
            f"{gemm:.3g}",
            f"{draws:.3g}",
            f"{elementwise:.3g}",
            f"{100 * elementwise / seconds:.0f}%",
            f"{peak / 2**20:.0f}",
        )

    for activation, dtype, config in references:
        name = f"reference {activation}"
        measured = _in_child(_run_reference_in_child, config, f"{name} {dtype}")
        seconds, peak, elementwise, machine = measured
        add(name, dtype, config, seconds[0], peak, elementwise, machine)
    for dtype, configs in smalls:
        measured = _in_child(_run_in_child, configs, f"small {dtype}")
        seconds, peak, elementwise, machine = measured
        add(f"small ×{seeds} (median)", dtype, configs[0], float(np.median(seconds)), peak,
            elementwise, machine)  # fmt: skip
    console.print(table)
    console.print(
        f"load average at the end {_load():.2f}; GEMM: GFLOP/s of a 2048² product, "
        "normals: M/s on every core (on one), both measured just before each workload"
    )
    for activation in activations:
        key64, key32 = f"reference {activation} float64", f"reference {activation} float32"
        if key64 in rows and key32 in rows:
            speedup = rows[key64]["wall"] / rows[key32]["wall"]
            console.print(f"{activation}: float32 speed-up over float64: {speedup:.2f}×")
    return rows
