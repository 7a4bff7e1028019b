"""Symmetric eigendecompositions of the small matrices (N × N, d × d), safe on a busy machine."""

from __future__ import annotations

import contextlib
from functools import lru_cache

import numpy as np
import scipy.linalg
from threadpoolctl import ThreadpoolController


@lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    # Finding the BLAS libraries takes ~1.5 ms; a run with many steps asks many times.
    return ThreadpoolController()


#: Below this many first-layer weights (N·d) a run's GEMMs go on one BLAS thread. At that size
#: the normal draws (on every core) are most of the work, and OpenBLAS's threads, spinning
#: between the small products, take the cores from them: a dandi-size run (d = 800, N = 64)
#: took 0.57 s with two BLAS threads and 0.24 s with one here; a full-training epoch of
#: 64 × 64 weights was 40-150x slower on a busy machine.
ONE_THREAD_WEIGHTS = 1 << 18


def small_network(weights: int) -> bool:
    """Whether a network of ``weights`` first-layer weights (N·d) is small: below
    ``ONE_THREAD_WEIGHTS``. A small network's run

    - puts its GEMMs on one BLAS thread (:func:`blas_threads_for`);
    - takes its labels' target coordinates ``h = X W*ᵀ`` from the forward product, as ``r``
      more columns of ``X [W; W*]ᵀ``: the thin ``X W*ᵀ`` of its own (rows × d × r, r ≤ a few)
      ran at a memory-bound ~5 GB/s on one BLAS thread, 3 ms of a dandi-size step's 23, while
      the r extra columns cost the forward product ~3 % (its last bits differ from the thin
      product's for some shapes). Large networks keep the product of their own: their
      elementwise passes are faster on contiguous pre-activations than on the strided view;
    - sums each block in parts (``in_parts``, ``giantstep.reduction``), the second on a helper
      thread where there is a second core: one block on one BLAS thread keeps one core busy.
    """
    return weights < ONE_THREAD_WEIGHTS


def blas_threads_for(weights: int):
    """A context in which BLAS uses one thread if ``weights`` (N·d) is a small network's, else
    its own."""
    if small_network(weights):
        return _controller().limit(limits=1, user_api="blas")
    return contextlib.nullcontext()


def symmetric_eigh(
    matrix: np.ndarray, subset_by_index: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (k,) ascending and eigenvectors (n, k) of a symmetric matrix (n, n).

    Runs on one BLAS thread: the eigensolver makes many small BLAS calls, and when OpenBLAS's
    threads compete with another process for the cores (a sweep's other workers, a second job)
    each call waits on spinning threads — a 1000 × 1000 solve went from 0.2 s to 10 s on this
    2-core machine. On an idle machine one thread costs little: the GEMMs are the work.
    """
    with _controller().limit(limits=1, user_api="blas"):
        return scipy.linalg.eigh(matrix, subset_by_index=subset_by_index)


def top_singular_triplet(matrix: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Top singular value s, left (rows,) and right (cols,) unit vectors of matrix (rows, cols).

    From the eigenvector of the smaller Gram matrix; the other vector is its image, normalised
    by its own norm (= s). A zero matrix gives s = 0 and zero vectors.
    """
    largest = np.max(np.abs(matrix)) if matrix.size else 0.0
    if np.isfinite(largest) and largest > 1e100:  # (inf or nan: the eigensolver refuses it)
        # A huge matrix (a diverging run's update) would overflow its Gram matrix; the vectors
        # are scale-free, so solve for the matrix scaled by a power of two (exact), then scale s.
        exponent = int(np.frexp(largest)[1])
        value, left, right = top_singular_triplet(np.ldexp(matrix, -exponent))
        return float(np.ldexp(value, exponent)), left, right
    rows, cols = matrix.shape
    if rows <= cols:
        _, vector = symmetric_eigh(matrix @ matrix.T, (rows - 1, rows - 1))
        left = vector[:, 0]
        right = matrix.T @ left
        value = float(np.linalg.norm(right))
        return value, left, (right / value if value else right)
    _, vector = symmetric_eigh(matrix.T @ matrix, (cols - 1, cols - 1))
    right = vector[:, 0]
    left = matrix @ right
    value = float(np.linalg.norm(left))
    return value, (left / value if value else left), right
