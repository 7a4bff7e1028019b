"""Probabilists' Hermite polynomials and Gaussian expectations.

Convention (SCIENCE.md §2): ``μ_k(f) = E[f(g) He_k(g)]`` with ``g ~ N(0, 1)``, so that
``f = Σ_k μ_k He_k / k!``.

Expectations use composite Gauss–Legendre quadrature on ``[-RANGE, RANGE]`` with the pieces
split at the function's kinks: plain Gauss–Hermite converges only algebraically for a function
with a kink (200 nodes miss ``μ_6(relu)`` in the fourth digit), while on pieces where the
function is smooth Gauss–Legendre converges geometrically. The Gaussian mass outside ±RANGE
is ``~1e-42``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

RANGE = 14.0
PIECE_WIDTH = 0.5
NODES_PER_PIECE = 40
#: Highest Hermite degree computed (``hermite``, ``hermite_table``, ``coefficients``; the
#: activations ``He<k>``, ``poly(...)`` and the CLI's ``--max-degree`` use it too). Up to it
#: everything stays finite in double precision: ``He_k(±RANGE) ≈ 14^128 ≈ 5e146``,
#: ``k! ≈ 4e215`` (the normalisations ``sqrt(k!)``) and the moments ``(2k − 1)!! ≈ 7e252`` of a
#: degree-k polynomial's square. Far beyond any degree the theory uses, far below the degree
#: whose table (K + 1 rows of every quadrature node) would exhaust memory.
MAX_DEGREE = 128


def check_degree(degree: int, what: str = "Hermite degree") -> int:
    """``degree`` if it is an integer in ``0..MAX_DEGREE``, else ValueError saying why."""
    if isinstance(degree, bool) or not isinstance(degree, int | np.integer):
        raise ValueError(f"{what} must be an integer, got {degree!r}")
    if degree < 0:
        raise ValueError(f"{what} must be >= 0, got {degree}")
    if degree > MAX_DEGREE:
        raise ValueError(
            f"{what} {degree} is above the limit MAX_DEGREE = {MAX_DEGREE} "
            "(higher degrees overflow double precision)"
        )
    return int(degree)


def hermite(k: int, x: np.ndarray | float) -> np.ndarray:
    """``He_k(x)`` by the three-term recurrence ``He_{k+1} = x He_k − k He_{k−1}``.

    Shape and floating dtype of x (float32 stays float32). ValueError if k is not in
    ``0..MAX_DEGREE``.
    """
    k = check_degree(k)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(float)
    previous, current = np.zeros_like(x), np.ones_like(x)
    for j in range(k):
        previous, current = current, x * current - j * previous
    return current


def hermite_table(max_degree: int, x: np.ndarray) -> np.ndarray:
    """``He_0(x) .. He_K(x)`` stacked: (K + 1, *x.shape); ValueError if K > MAX_DEGREE."""
    max_degree = check_degree(max_degree, "max_degree")
    x = np.asarray(x, dtype=float)
    table = np.empty((max_degree + 1, *x.shape))
    table[0] = 1.0
    if max_degree >= 1:
        table[1] = x
    for j in range(1, max_degree):
        table[j + 1] = x * table[j] - j * table[j - 1]
    return table


# Per-coordinate (range, piece width, nodes per piece) of the product rule for E over N(0, I_r):
# the node count per coordinate shrinks with r so that the rule stays under ~5e6 points.
_PRODUCT_RULES = {
    1: (RANGE, PIECE_WIDTH, NODES_PER_PIECE),
    2: (12.0, 1.0, 30),
    3: (10.0, 2.5, 20),
    4: (8.0, 4.0, 10),
}


@lru_cache(maxsize=32)
def gaussian_rule(
    kinks: tuple[float, ...] = (),
    span: float = RANGE,
    piece_width: float = PIECE_WIDTH,
    nodes_per_piece: int = NODES_PER_PIECE,
) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (M,), (M,) for ``E[f(g)]``: composite Gauss–Legendre × Gaussian density."""
    inner = sorted({float(k) for k in kinks if -span < k < span})
    breaks = np.array([-span, *inner, span])
    reference_nodes, reference_weights = np.polynomial.legendre.leggauss(nodes_per_piece)
    nodes, weights = [], []
    for left, right in zip(breaks[:-1], breaks[1:], strict=True):
        pieces = max(1, int(np.ceil((right - left) / piece_width)))
        edges = np.linspace(left, right, pieces + 1)
        half = np.diff(edges)[:, None] / 2
        middle = (edges[:-1] + edges[1:])[:, None] / 2
        nodes.append((middle + half * reference_nodes).ravel())
        weights.append((half * reference_weights).ravel())
    x = np.concatenate(nodes)
    w = np.concatenate(weights) * np.exp(-x * x / 2) / np.sqrt(2 * np.pi)
    return x, w


def product_rule(rank: int, kinks: tuple[float, ...] = (0.0,)) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (M, r) and weights (M,) for ``E[f(h)]``, ``h ~ N(0, I_r)``, r ≤ 4.

    Each coordinate's rule is split at ``kinks``; accurate to ~1e-10 for functions that are
    smooth away from the hyperplanes ``h_i = kink``.
    """
    if rank not in _PRODUCT_RULES:
        raise ValueError(f"numerical Gaussian expectations support rank 1..4, got {rank}")
    x, w = gaussian_rule(tuple(kinks), *_PRODUCT_RULES[rank])
    grids = np.meshgrid(*([x] * rank), indexing="ij")
    weights = np.ones(())
    for _ in range(rank):
        weights = np.multiply.outer(weights, w)
    return np.stack([g.ravel() for g in grids], axis=1), weights.ravel()


def gaussian_expectation(
    f: Callable[[np.ndarray], np.ndarray], kinks: Sequence[float] = ()
) -> float:
    """``E[f(g)]``, ``g ~ N(0, 1)``; ``f`` is called once on a vector of nodes.

    kinks: points where f or a derivative jumps (the quadrature is split there).
    """
    x, w = gaussian_rule(tuple(kinks))
    return float(np.dot(w, np.asarray(f(x), dtype=float)))


def rounding_bound(
    f: Callable[[np.ndarray], np.ndarray], max_degree: int, kinks: Sequence[float] = ()
) -> np.ndarray:
    """(K + 1,): a bound on the rounding error of each ``μ_k`` of :func:`coefficients`, machine
    epsilon times the sum of its terms' magnitudes. ``He_k`` grows like ``sqrt(k!)``, so the
    terms cancel ever more: past ``k ≈ 20`` the bound of a bounded σ exceeds 1e-7 and the
    computed ``μ_k`` of a smooth σ are lost (tanh, erf: from ``k ≈ 24``)."""
    table, weighted = _terms(f, max_degree, kinks)
    return np.finfo(float).eps * (np.abs(table) @ np.abs(weighted))


def coefficients(
    f: Callable[[np.ndarray], np.ndarray], max_degree: int, kinks: Sequence[float] = ()
) -> np.ndarray:
    """``μ_0(f) .. μ_K(f)``: (K + 1,), accurate to ~1e-12 when the kinks of f are given.

    ValueError if K is not in ``0..MAX_DEGREE``.
    """
    table, weighted = _terms(f, max_degree, kinks)
    return table @ weighted


def _terms(
    f: Callable[[np.ndarray], np.ndarray], max_degree: int, kinks: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """``He_0..He_K`` at the rule's nodes (K + 1, M) and ``w · f`` there (M,), the terms of
    every ``μ_k``; ValueError if K is out of range or f is not finite on the nodes."""
    max_degree = check_degree(max_degree, "max_degree")
    x, w = gaussian_rule(tuple(kinks))
    values = np.asarray(f(x), dtype=float)
    if values.shape != x.shape:
        values = np.broadcast_to(values, x.shape)
    if not np.isfinite(values).all():
        raise ValueError("the function is not finite on the quadrature nodes")
    return hermite_table(max_degree, x), w * values
