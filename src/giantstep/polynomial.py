"""Exact polynomials in ``r`` Gaussian coordinates, for targets written as polynomials.

A polynomial is a map from exponent tuples ``(k_1, ..., k_r)`` to coefficients. Gaussian
moments are exact: ``E[z^k] = (k − 1)!!`` for even k and 0 for odd k, coordinates independent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import comb, prod

import numpy as np

Exponents = tuple[int, ...]


def gaussian_moment(k: int) -> float:
    """``E[g^k]`` for ``g ~ N(0, 1)``; ``inf`` where ``(k − 1)!!`` exceeds double precision
    (k > 300), so that an expectation overflows to a non-finite number the caller can name
    instead of raising OverflowError from deep inside."""
    if k % 2:
        return 0.0
    try:
        return float(prod(range(k - 1, 0, -2)))
    except OverflowError:
        return float("inf")


def monomial_count(rank: int, degree: int) -> int:
    """Number of monomials of total degree ≤ ``degree`` in ``rank`` coordinates,
    ``C(rank + degree, rank)``: a bound on the terms of any polynomial of that degree."""
    return comb(rank + degree, rank)


@dataclass(frozen=True)
class Polynomial:
    """``Σ c_α z^α`` in ``rank`` coordinates; ``terms`` maps exponent tuples to coefficients."""

    rank: int
    terms: dict[Exponents, float] = field(default_factory=dict)

    @classmethod
    def constant(cls, rank: int, value: float) -> Polynomial:
        """The constant ``value`` in ``rank`` coordinates."""
        return cls(rank, {(0,) * rank: float(value)} if value else {})

    @classmethod
    def variable(cls, rank: int, index: int) -> Polynomial:
        """``z_{index+1}`` (index counts from 0)."""
        exponents = [0] * rank
        exponents[index] = 1
        return cls(rank, {tuple(exponents): 1.0})

    @property
    def degree(self) -> int:
        """The total degree (0 for a constant)."""
        return max((sum(e) for e in self.terms), default=0)

    @property
    def constant_value(self) -> float | None:
        """The value if the polynomial is a constant, else None."""
        if self.degree:
            return None
        return self.terms.get((0,) * self.rank, 0.0)

    def _combine(self, other: Polynomial, sign: float) -> Polynomial:
        terms = dict(self.terms)
        for e, c in other.terms.items():
            terms[e] = terms.get(e, 0.0) + sign * c
        return Polynomial(self.rank, {e: c for e, c in terms.items() if c != 0.0})

    def __add__(self, other: Polynomial) -> Polynomial:
        return self._combine(other, 1.0)

    def __sub__(self, other: Polynomial) -> Polynomial:
        return self._combine(other, -1.0)

    def __neg__(self) -> Polynomial:
        return self.scale(-1.0)

    def scale(self, factor: float) -> Polynomial:
        """``factor · p``."""
        if factor == 0:
            return Polynomial(self.rank)
        return Polynomial(self.rank, {e: c * factor for e, c in self.terms.items()})

    def __mul__(self, other: Polynomial) -> Polynomial:
        terms: dict[Exponents, float] = {}
        for e1, c1 in self.terms.items():
            for e2, c2 in other.terms.items():
                e = tuple(a + b for a, b in zip(e1, e2, strict=True))
                terms[e] = terms.get(e, 0.0) + c1 * c2
        return Polynomial(self.rank, {e: c for e, c in terms.items() if c != 0.0})

    def __pow__(self, power: int) -> Polynomial:
        result = Polynomial.constant(self.rank, 1.0)
        for _ in range(power):
            result = result * self
        return result

    def hermite(self, k: int) -> Polynomial:
        """``He_k(p)`` by the recurrence ``He_{j+1} = p He_j − j He_{j−1}``."""
        previous, current = Polynomial(self.rank), Polynomial.constant(self.rank, 1.0)
        for j in range(k):
            previous, current = current, self * current - previous.scale(j)
        return current

    def expectation(self) -> float:
        """``E[p(h)]`` for ``h ~ N(0, I_r)``, exactly."""
        return sum(c * prod(gaussian_moment(k) for k in e) for e, c in self.terms.items())

    def __call__(self, h: np.ndarray) -> np.ndarray:
        """Values at the rows of h: (rows, r) → (rows,), dtype of h."""
        h = np.asarray(h)
        result = np.zeros(h.shape[0], dtype=h.dtype)
        for e, c in self.terms.items():
            term = np.full(h.shape[0], c, dtype=h.dtype)
            for i, k in enumerate(e):
                if k:
                    term *= h[:, i] ** k
            result += term
        return result
