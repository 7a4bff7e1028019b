"""giantstep beside the dense approach of the papers' notebooks, on the same work.

    python3 benchmarks/peer.py            # n = 10^5, readout 10^4, test 10^3, d = N = 1000, tanh
    python3 benchmarks/peer.py --quick    # a tenth of the rows
    python3 benchmarks/peer.py --dtype float32                        # both sides in float32
    python3 benchmarks/peer.py --dtype float32 --dense-dtype float64  # giantstep's float32 beside
                                                                      # the notebooks' float64

The dense peer holds every matrix in memory, as the notebooks do: it draws the whole n × d batch
with one numpy generator, forms σ(X Wᵀ) and σ'(X Wᵀ) whole, takes the giant step, then forms
the readout and test features whole and solves the ridge system. giantstep runs the same
config (moniri preset, one step ``η = 2 n^0.3``, residual ``y − f``, ridge 10⁻³, 10⁻², 10⁻¹),
without its predicted errors (``theory.errors``), which the dense side does not compute.
Each side runs in a fresh process, several times in turn (A B A B ...); the script prints
their median wall times (whole process: start-up, imports and compilation included), the
speed-up and the test errors (different random draws: they agree within sampling noise, which
is printed too: the spread of the dense test error over seeds). Both sides compute in float64,
as the notebooks do, unless ``--dtype`` / ``--dense-dtype`` say otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

DIM = WIDTH = 1000
RIDGES = (1e-3, 1e-2, 1e-1)


def sizes(quick: bool) -> tuple[int, int, int]:
    """(gradient batch, readout, test) rows."""
    scale = 10 if quick else 1
    return 100_000 // scale, 10_000 // scale, 1_000 // scale


def dense(seed: int, quick: bool, dtype: str) -> dict:
    """The notebooks' way: whole matrices, one generator, tanh."""
    import numpy as np

    n, m, m_test = sizes(quick)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((WIDTH, DIM), dtype=dtype)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    a = rng.standard_normal(WIDTH, dtype=dtype) / np.sqrt(WIDTH, dtype=dtype)
    beta = rng.standard_normal(DIM, dtype=dtype)
    beta /= np.linalg.norm(beta)

    def data(rows):
        x = rng.standard_normal((rows, DIM), dtype=dtype)
        z = x @ beta
        return x, z + (z**2 - 1) / 2  # z1 + He2(z1)/2

    x, y = data(n)
    pre = x @ w.T
    f = np.tanh(pre)
    r = y - f @ a
    gradient = -(((1 - f**2) * np.outer(r, a)).T @ x) / n
    w = w - 2.0 * n**0.3 * gradient
    x_train, y_train = data(m)
    x_test, y_test = data(m_test)
    features, features_test = np.tanh(x_train @ w.T), np.tanh(x_test @ w.T)
    gram, cross = features.T @ features / m, features.T @ y_train / m
    errors = []
    for ridge in RIDGES:
        coefficients = np.linalg.solve(gram + ridge * np.eye(WIDTH, dtype=dtype), cross)
        errors.append(float(np.mean((y_test - features_test @ coefficients) ** 2)))
    return {"test_errors": errors}


def streamed(seed: int, quick: bool, dtype: str) -> dict:
    """giantstep on the same config."""
    import giantstep

    n, m, m_test = sizes(quick)
    result = giantstep.run(
        {
            "seed": seed,
            "dim": DIM,
            "width": WIDTH,
            "activation": "tanh",
            "target": {"expression": "z1 + He2(z1)/2"},
            "train": {
                "batch_size": n,
                "residual": "y-f",
                "step_size": {"scale": 2.0, "batch_exponent": 0.3},
            },
            "readout": {"samples": m, "ridge": list(RIDGES)},
            "test": {"samples": m_test},
            "compute": {"dtype": dtype},
            # The same work as the dense side: its predicted errors (theory.errors, the N × N
            # equations of THEORY-ERRORS.md) are a result the dense side does not compute.
            "theory": {"errors": False},
        }
    )
    return {"test_errors": [e.test_error for e in result.errors]}


def timed(side: str, seed: int, quick: bool, dtype: str) -> tuple[float, dict]:
    """Wall seconds of a fresh process running one side, and what it returned."""
    command = [sys.executable, __file__, "--side", side, "--seed", str(seed), "--dtype", dtype]
    started = time.perf_counter()
    output = subprocess.run(
        command + (["--quick"] if quick else []), check=True, capture_output=True, text=True
    ).stdout
    return time.perf_counter() - started, json.loads(output.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="giantstep's compute.dtype, and the dense side's unless --dense-dtype",
    )
    parser.add_argument(
        "--dense-dtype",
        choices=("float64", "float32"),
        help="the dense side's dtype (default: --dtype)",
    )
    parser.add_argument("--side", choices=("dense", "giantstep"), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run = dense if args.side == "dense" else streamed
        print(json.dumps(run(args.seed, args.quick, args.dtype)))
        return
    walls: dict[str, list[float]] = {"dense": [], "giantstep": []}
    errors: dict[str, list[float]] = {"dense": [], "giantstep": []}
    dtypes = {"giantstep": args.dtype, "dense": args.dense_dtype or args.dtype}
    ratios = []
    for seed in range(args.repeats):
        pair = {}
        for side in ("giantstep", "dense"):
            seconds, out = timed(side, seed, args.quick, dtypes[side])
            walls[side].append(seconds)
            errors[side].append(out["test_errors"][1])
            pair[side] = seconds
        ratios.append(pair["dense"] / pair["giantstep"])
    n, m, m_test = sizes(args.quick)
    print(f"d = N = {DIM}, n = {n:,}, readout {m:,}, test {m_test:,}, tanh, "
          f"{args.repeats} runs each (fresh processes, in turn)")  # fmt: skip
    for side in ("dense", "giantstep"):
        spread = statistics.stdev(errors[side]) if len(errors[side]) > 1 else float("nan")
        print(
            f"{side:10s} {dtypes[side]} wall median {statistics.median(walls[side]):6.2f} s "
            f"(min {min(walls[side]):.2f}, max {max(walls[side]):.2f}); "
            f"test error (ridge 1e-2) mean {statistics.mean(errors[side]):.4f} ± {spread:.4f}"
        )
    print(f"giantstep speed-up over dense (median of the pairs): {statistics.median(ratios):.2f}×")


if __name__ == "__main__":
    main()
