"""``giantstep bench``: this machine's own GEMM and normal rates, and the reference workload.

The roofline ratio is the wall time over the time the machine needs at best: the run's matrix
flops at this machine's GEMM rate plus its normal draws at this machine's generator rate.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from giantstep.config import ExperimentConfig, validate_config
from giantstep.data import generator


def reference_config(dtype: str, quick: bool = False) -> ExperimentConfig:
    """One step plus readout at ``d = N = 1000``, ``n = 10^6``, readout 10^5, test 10^4."""
    scale = 10 if quick else 1
    return validate_config(
        {
            "dim": 1000,
            "width": 1000,
            "activation": "relu",
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


def normal_rate(dtype: str, count: int = 20_000_000, repeats: int = 3) -> float:
    """Best standard normals per second of one Philox generator filling an array."""
    rng = generator(0, 98)
    out = np.empty(count, dtype=dtype)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        rng.standard_normal(out=out, dtype=out.dtype)
        best = min(best, time.perf_counter() - start)
    return count / best


def _run_in_child(config: ExperimentConfig, queue: Any) -> None:
    from giantstep.experiment import run

    result = run(config)
    queue.put((result.seconds, result.peak_memory_bytes))


def timed_run(config: ExperimentConfig) -> tuple[float, int]:
    """(seconds, peak memory bytes) of the run in a fresh process, so its peak is its own."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_run_in_child, args=(config, queue))
    child.start()
    seconds, peak = queue.get()
    child.join()
    return seconds, peak


def run_benchmark(quick: bool = False, dtypes: tuple[str, ...] = ("float64", "float32")) -> None:
    """Measure and print the machine's rates and the reference workload's speed and memory."""
    # Wide enough for the nine columns even in a pipe (rich's default there is 80).
    console = Console(width=max(Console().width, 130))
    table = Table(title="giantstep bench: one step + readout" + (" (quick)" if quick else ""))
    for column in (
        "dtype",
        "n",
        "wall s",
        "GFLOP/s",
        "GEMM GFLOP/s",
        "% of GEMM",
        "normals M/s",
        "roofline ratio",
        "peak MiB",
    ):
        table.add_column(column, justify="right")
    walls = {}
    for dtype in dtypes:
        config = reference_config(dtype, quick)
        flops, normals = workload(config)
        gemm, draws = gemm_rate(dtype), normal_rate(dtype)
        seconds, peak = timed_run(config)
        walls[dtype] = seconds
        achieved = flops / seconds
        table.add_row(
            dtype,
            f"{config.train.batch_size:,}",
            f"{seconds:.1f}",
            f"{achieved / 1e9:.1f}",
            f"{gemm / 1e9:.1f}",
            f"{100 * achieved / gemm:.0f}%",
            f"{draws / 1e6:.0f}",
            f"{seconds / (flops / gemm + normals / draws):.2f}",
            f"{peak / 2**20:.0f}",
        )
    console.print(table)
    if {"float64", "float32"} <= walls.keys():
        console.print(f"float32 speed-up over float64: {walls['float64'] / walls['float32']:.2f}×")
