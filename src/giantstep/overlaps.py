"""Overlaps of the first layer with the target directions, and the learned subspace.

``M = W W*ᵀ`` (N × r) and ``Q = W Wᵀ`` (N × N) are the order parameters of Dandi et al.
The *learned subspace* must not depend on the basis of the target coordinates: a population
of neurons along ``z1 + z2`` overlaps both coordinates but has learned one direction. So we
take ``M̂``, the overlaps of the *normalised* rows ``w_j/‖w_j‖`` with ``W*`` (N × r), and the
eigen-decomposition of the r × r matrix ``S = M̂ᵀM̂/N``:

- ``S`` rotates with the target coordinates (``W* → R W*`` gives ``S → R S Rᵀ``), so its
  eigenvalues and eigenvectors are a property of the subspace, not of the basis;
- ``vᵀ S v`` is the mean squared cosine of the neurons with the direction ``v·W*``;
- at a random initialisation (rows uniform on the sphere, independent of ``W*``),
  ``E[S] = I/d``: every eigenvalue is about ``1/d`` (fluctuating by ``~2 sqrt(r/N)/d``);
- a direction that a macroscopic fraction of neurons has aligned with has an ``O(1)`` eigenvalue.

**Threshold.** A direction counts as learned when its eigenvalue exceeds
``LEARNED_THRESHOLD / d`` (default 10/d, the config key ``measure.learned_threshold``). It scales
with ``1/d`` because the baseline does. At finite d a direction the theory says is *not* learned
still grows from ``1/d`` (the step multiplies the neurons' random components along it by
``O(1)`` factors, roughly doubling it per step in the ``dandi`` preset at ``η = 2N``), so after
``T`` steps it sits near ``2^T/d``; a learned one grows like ``O(1)``, i.e. like ``d`` in units of
``1/d``. The two separate only as ``d`` grows: the reproductions run several ``d`` and report
the eigenvalues in units of ``1/d`` so that the widening gap is visible, not hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: A direction is learned when its eigenvalue of ``M̂ᵀM̂/N`` exceeds this many times ``1/d``.
LEARNED_THRESHOLD = 10.0


def overlaps(first_layer: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``M = W W*ᵀ`` (N, r) and ``Q = W Wᵀ`` (N, N) for W (N, d) and W* (r, d)."""
    return first_layer @ directions.T, first_layer @ first_layer.T


def normalized_overlaps(first_layer: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """``M̂``: cosines of the rows of W (N, d) with the orthonormal rows of W* (r, d): (N, r)."""
    norms = np.linalg.norm(first_layer, axis=1, keepdims=True)
    overlaps = first_layer @ directions.T
    # A zero row has no direction: cosine 0 with every W*_k, not 0/0 = NaN in every result.
    return np.divide(overlaps, norms, out=np.zeros_like(overlaps), where=norms > 0)


@dataclass(frozen=True)
class OverlapSummary:
    """Summaries of M and Q that do not grow with N.

    m_rms: (r,) ``sqrt(mean_j M_jk²)``; q_diagonal_mean: ``mean_j ‖w_j‖²``;
    q_offdiagonal_rms: ``sqrt(mean_{j≠l} Q_jl²)``.
    """

    m_rms: list[float]
    q_diagonal_mean: float
    q_offdiagonal_rms: float


def summarize(m: np.ndarray, q: np.ndarray) -> OverlapSummary:
    """OverlapSummary from ``M`` (N, r) and ``Q`` (N, N) (see :func:`overlaps`)."""
    width = q.shape[0]
    diagonal = np.diag(q)
    # The off-diagonal entries themselves: sum(Q²) − sum(diag²) cancels when they are small.
    off_diagonal = q[~np.eye(width, dtype=bool)]
    off = float(off_diagonal @ off_diagonal) / max(width * (width - 1), 1)
    return OverlapSummary(
        m_rms=np.sqrt(np.mean(m**2, axis=0)).tolist(),
        q_diagonal_mean=float(np.mean(diagonal)),
        q_offdiagonal_rms=float(np.sqrt(max(off, 0.0))),
    )


@dataclass(frozen=True)
class LearnedSubspace:
    """Eigen-decomposition of ``M̂ᵀM̂/N`` and the directions above the threshold.

    eigenvalues: (r,) descending; eigenvectors: (r, r) columns in target coordinates, each with
    its largest-magnitude entry positive (eigenvectors have no sign); threshold: the eigenvalue
    a learned direction must exceed (``factor/d``); learned: (k, r) rows, the learned directions.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    threshold: float
    learned: np.ndarray

    @property
    def dimension(self) -> int:
        """The number of learned directions."""
        return self.learned.shape[0]


def canonical_signs(vectors: np.ndarray) -> np.ndarray:
    """Columns of vectors (r, k) flipped so that each largest-magnitude entry is positive."""
    vectors = np.array(vectors, dtype=float)
    if vectors.size == 0:
        return vectors
    rows = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[rows, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return vectors * signs


def learned_subspace(
    first_layer: np.ndarray, directions: np.ndarray, factor: float = LEARNED_THRESHOLD
) -> LearnedSubspace:
    """The learned subspace of W (N, d) in the coordinates of W* (r, d); threshold ``factor/d``."""
    if not 0 < factor < math.inf:  # NaN too: it made the threshold NaN, and nothing learned
        raise ValueError(
            f"the learned-direction threshold factor must be finite and > 0, got {factor}"
        )
    m_hat = normalized_overlaps(first_layer, directions)
    width, dim = first_layer.shape
    values, vectors = np.linalg.eigh(m_hat.T @ m_hat / width)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], canonical_signs(vectors[:, order])
    threshold = factor / dim
    return LearnedSubspace(values, vectors, threshold, vectors[:, values > threshold].T.copy())


def row_basis(a: np.ndarray) -> np.ndarray:
    """(rank, r) orthonormal rows spanning the rows of a (k, r): from its SVD, keeping the
    singular values above rounding (a QR kept k columns however many rows were dependent)."""
    a = np.atleast_2d(np.asarray(a, dtype=float))
    if a.size == 0:
        return np.zeros((0, a.shape[-1]))
    _, values, rows = np.linalg.svd(a, full_matrices=False)
    rank = int(np.sum(values > max(a.shape) * np.finfo(float).eps * values.max(initial=0.0)))
    return rows[:rank]


def principal_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosines of the principal angles between the row spans of a (k, r) and b (l, r).

    Rows need not be orthonormal nor independent; returns (min(rank a, rank b),) descending
    (empty if either span is {0}).
    """
    qa, qb = row_basis(a), row_basis(b)
    if len(qa) == 0 or len(qb) == 0:
        return np.zeros(0)
    return np.clip(np.linalg.svd(qa @ qb.T, compute_uv=False), 0.0, 1.0)


def same_subspace(a: np.ndarray, b: np.ndarray, tolerance: float = 0.9) -> bool:
    """Whether the spans of the rows of a and b have the same dimension and every principal
    cosine above ``tolerance`` (two spans {0} are the same)."""
    if len(row_basis(a)) != len(row_basis(b)):
        return False
    return bool(np.all(principal_cosines(a, b) > tolerance))
