"""Which target directions a few giant steps learn: the rules of Dandi et al. (SCIENCE.md §3 [D]).

**Hermite tensors.** For a target ``g*`` of the coordinates ``h ∈ R^r``,
``C_n = E[g*(h) He_n(h)]`` is the symmetric tensor (r,)*n whose entry at indices ``(i_1..i_n)``
is ``E[g*(h) Π_i He_{α_i}(h_i)]`` with ``α`` the multiplicities of the indices.
Polynomial targets (``Target.polynomial``) get their tensors exactly, with
:class:`giantstep.polynomial.Polynomial`, up to their degree (all higher ones vanish).
Other targets are integrated numerically with the tensor-product quadrature of
:func:`giantstep.hermite.product_rule` (rank ≤ 4, split at the coordinate hyperplanes where
relu/sign/abs have kinks), up to degree ``NUMERICAL_MAX_DEGREE``. The entries are accurate to
about ``1e-12`` for smooth targets and kinks on coordinate hyperplanes (``sign(z1*z2*z3)``),
and to about ``1e-5`` when a kink is tilted (``relu(z1 - 0.5*z2)``) — checked in the tests
against closed forms. Terms of higher degree are ignored: a direction that first appears above
that degree is not predicted.

**Rules** (batch ``n = Θ(d^κ)`` with the matching step size; ``μ_n = μ_n(σ)`` the student's
Hermite coefficients at unit variance):

- step 1 learns ``U_1 = Σ range(C_n)`` over ``n ≤ κ`` with ``μ_n ≠ 0`` (range of the unfolding
  ``r × r^{n−1}``);
- step t + 1 splits ``h`` into its part in the learned ``U_t`` and the rest ``U_t^⊥``; a Hermite
  term of degree ``m`` in ``U_t`` and ``k`` in the rest (``1 ≤ k ≤ κ``, any ``m``) adds the
  directions of the rest it carries — the range of ``C_{m+k}`` with its first ``k`` legs projected
  on ``U_t^⊥`` and the other ``m`` on ``U_t`` — when ``μ_{m+k} ≠ 0`` (a direction entering
  linearly beside degree ``m`` needs ``μ_{m+1}``). Step 1 is the case ``U_0 = {0}``.

The projections make every rule independent of the basis of the coordinates. The zeros of
``μ_n`` that matter are structural (relu: odd ``n ≥ 3``, by homogeneity; tanh: even ``n``, by
parity) and so hold at any pre-activation variance; an activation whose ``μ_n`` vanishes only
at unit variance is a corner these rules do not cover.

**Tolerance.** A tensor's range keeps the singular values above ``tol · sqrt(n! E[g*²])``
(``‖C_n‖_F² ≤ n! E[g*²]``) with ``tol = RANGE_TOLERANCE`` (1e-7) for polynomial targets and
``NUMERICAL_TOLERANCE`` (1e-4, above the quadrature error of tilted kinks) otherwise; ``μ_n``
counts as non-zero when ``|μ_n| > RANGE_TOLERANCE · sqrt(n! Σ_k μ_k²/k!)`` — far above the
quadrature error of the activation's coefficients (~1e-12), far below any that matters.

**Leap index.** The smallest ``κ`` for which the rules, with an activation whose every ``μ_n`` is
non-zero, reach every direction the target depends on (the sum of the ranges of all ``C_n``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import lru_cache
from math import factorial, prod, sqrt

import numpy as np

from giantstep.activations import get_activation
from giantstep.hermite import _PRODUCT_RULES as _NUMERICAL_RANKS
from giantstep.hermite import hermite_table, product_rule
from giantstep.polynomial import Polynomial
from giantstep.targets import Target, TargetMomentError, parse_target

#: Highest Hermite degree integrated for a target that is not a polynomial.
NUMERICAL_MAX_DEGREE = 6
#: Relative size below which a singular value or a Hermite coefficient is zero.
RANGE_TOLERANCE = 1e-7
#: The same for targets integrated numerically (their tilted kinks cost accuracy).
NUMERICAL_TOLERANCE = 1e-4
#: Largest tensor (entries) built; a polynomial of high degree in many coordinates is refused.
MAX_TENSOR_ENTRIES = 2_000_000
#: Highest order (degree) of a Hermite tensor: numpy arrays have at most 32 dimensions (64
#: from numpy 2), and C_n has n.
MAX_TENSOR_ORDER = 32
#: Most multiply-adds the rules may spend on one prediction (leap index included): about a
#: second on an idle 2-core machine (He9(z1)*He9(z2) needs 4e8). Their cost grows like
#: D³ r^(D+2) for degree D in r coordinates (He5(z1)*He4(z2)*He4(z3) took 25 s); a prediction
#: that needs more is refused, whatever the steps.
MAX_RULE_WORK = 500_000_000
#: Most steps predicted. After a step that adds nothing no later one does (the rule depends
#: only on the learned subspace), so steps cost nothing past the fixed point, but each is a
#: row of the answer.
MAX_STEPS = 10_000
#: Multiply-adds charged per tensor contraction on top of its arithmetic (Python's overhead).
_CALL_COST = 20_000


class _Work:
    """A budget of multiply-adds for the rules; ValueError naming MAX_RULE_WORK when spent."""

    def __init__(self, expression: str, limit: int = MAX_RULE_WORK):
        self.expression = expression
        self.left = limit

    def spend(self, amount: int) -> None:
        self.left -= amount
        if self.left < 0:
            raise ValueError(
                f"'{self.expression}': the learnability rules need more than "
                f"MAX_RULE_WORK = {MAX_RULE_WORK:.0e} operations for this target (its Hermite "
                "tensors are too large: lower its degree or its number of coordinates)"
            )


def _multi_indices(rank: int, degree: int):
    """Exponent tuples of total degree ``degree`` in ``rank`` coordinates."""
    for split in itertools.combinations_with_replacement(range(rank), degree):
        yield tuple(split.count(i) for i in range(rank))


def _moment_with_hermite(b: int, a: int) -> int:
    """``E[g^b He_a(g)]`` for ``g ~ N(0, 1)``: ``b! / (j! 2^j)`` with ``b = a + 2j``, else 0
    (from ``g^b = Σ_j b!/(j! 2^j (b−2j)!) He_{b−2j}(g)`` and ``E[He_a He_m] = a! δ_am``)."""
    if a > b or (b - a) % 2:
        return 0
    j = (b - a) // 2
    return factorial(b) // (factorial(j) * 2**j)


def _polynomial_coefficients(polynomial: Polynomial, max_degree: int) -> dict:
    """``E[p(h) He_α(h)]`` for |α| ≤ max_degree, exactly (Gaussian moments of a polynomial).

    Coordinates are independent, so a monomial ``z^β`` contributes
    ``Π_i E[z_i^{β_i} He_{α_i}(z_i)]`` to exactly the α with ``α ≤ β`` of the same parity per
    coordinate: the cost is the number of such (β, α) pairs, not #α × terms².
    """
    rank = polynomial.rank
    result = dict.fromkeys(
        (alpha for degree in range(max_degree + 1) for alpha in _multi_indices(rank, degree)),
        0.0,
    )
    for beta, c in polynomial.terms.items():
        # Per coordinate, the α_i that z_i^{β_i} reaches, with their moments.
        options = [[(a, _moment_with_hermite(b, a)) for a in range(b % 2, b + 1, 2)] for b in beta]
        for choice in itertools.product(*options):
            alpha = tuple(a for a, _ in choice)
            if alpha in result:
                result[alpha] += c * float(prod(m for _, m in choice))
    return result


def _numerical_coefficients(target: Target, max_degree: int) -> dict:
    """``E[g*(h) He_α(h)]`` for |α| ≤ max_degree by the product quadrature (rank ≤ 4)."""
    rank = target.rank
    nodes, weights = product_rule(rank, target.kinks())
    per_axis = round(len(weights) ** (1 / rank))
    # The rule is a tensor grid (meshgrid 'ij'): the last coordinate runs fastest.
    axis_nodes = nodes[:per_axis, rank - 1]
    table = hermite_table(max_degree, axis_nodes)  # (D + 1, per_axis)
    # A target that overflows gives non-finite coefficients, named by the second moment.
    with np.errstate(all="ignore"):
        grid = (weights * target.values(nodes)).reshape((per_axis,) * rank)
        for _ in range(rank):
            # Contract the leading node axis; the new degree axis goes last, so after r
            # contractions the axes are (α_1 .. α_r) in order.
            grid = np.tensordot(grid, table, axes=([0], [1]))
    return {
        alpha: float(grid[alpha])
        for degree in range(max_degree + 1)
        for alpha in _multi_indices(rank, degree)
    }


@lru_cache(maxsize=64)
def _coefficients_of(expression: str) -> tuple[dict, int, float]:
    """(``c_α`` for |α| ≤ D, D, ``E[g*²]``), every size checked before it is built."""
    target = parse_target(expression)
    if target.polynomial is None and target.rank > max(_NUMERICAL_RANKS):
        kind = (
            f"a polynomial of degree {target.degree} too large to expand exactly "
            "(giantstep.targets.MAX_TERMS)"
            if target.degree is not None
            else "not a polynomial"
        )
        raise ValueError(
            f"'{expression}' is {kind}, and the numerical Hermite tensors need rank "
            f"<= {max(_NUMERICAL_RANKS)}, not {target.rank}"
        )
    degree = target.polynomial.degree if target.polynomial is not None else NUMERICAL_MAX_DEGREE
    if degree > MAX_TENSOR_ORDER:
        raise ValueError(
            f"'{expression}' has degree {degree}: its Hermite tensor C_{degree} would have "
            f"{degree} indices, above the limit MAX_TENSOR_ORDER = {MAX_TENSOR_ORDER}"
        )
    entries = target.rank**degree
    if entries > MAX_TENSOR_ENTRIES:
        size = str(entries) if entries < 10**12 else f"{float(entries):.2e}"
        raise ValueError(
            f"'{expression}': C_{degree} in {target.rank} coordinates has {size} entries, "
            f"above the limit MAX_TENSOR_ENTRIES = {MAX_TENSOR_ENTRIES}"
        )
    if target.polynomial is not None:
        coefficients = _polynomial_coefficients(target.polynomial, degree)
        # Parseval: E[p²] = Σ_α c_α²/α!, exact since every c_α of p is here — no p·p product.
        second_moment = sum(
            c * c / prod(factorial(a) for a in alpha) for alpha, c in coefficients.items()
        )
        if not np.isfinite(second_moment):
            raise TargetMomentError(
                f"target.expression: E[g*²] of '{expression}' is not finite ({second_moment})"
            )
    else:
        coefficients = _numerical_coefficients(target, degree)
        second_moment = target.second_moment()
    return coefficients, degree, second_moment


def _scale(target: Target) -> float:
    """``tol · sqrt(E[g*²])``: the size below which a singular value of ``C_n/sqrt(n!)`` is 0."""
    tol = RANGE_TOLERANCE if target.polynomial is not None else NUMERICAL_TOLERANCE
    return tol * np.sqrt(_coefficients_of(target.expression)[2])


def hermite_coefficients(target: Target | str) -> dict[tuple[int, ...], float]:
    """``c_α = E[g*(h) He_α(h)]`` for every multi-index α up to the degree used (see module)."""
    expression = target if isinstance(target, str) else target.expression
    return dict(_coefficients_of(expression)[0])


def hermite_tensors(target: Target | str) -> list[np.ndarray]:
    """``[C_0, C_1, ..., C_D]``: C_n of shape (r,)*n (exact for polynomials, D their degree).

    Parameters
    ----------
    target : Target or str
        ``g*`` (a parsed target or its expression in ``z1..zr``).

    Returns
    -------
    list of numpy.ndarray
        ``C_n = E[g*(h) He_n(h)]``, symmetric, shape (r,)*n.

    Raises
    ------
    ValueError
        For a target the predictor cannot integrate (non-polynomial of rank > 4, too many
        tensor entries).

    Examples
    --------
    >>> c = hermite_tensors("z1 + z1*z2")
    >>> c[1].tolist(), c[2].tolist()
    ([1.0, 0.0], [[0.0, 1.0], [1.0, 0.0]])
    """
    expression = target if isinstance(target, str) else target.expression
    return [tensor.copy() for tensor in _tensors_of(expression)]


@lru_cache(maxsize=8)  # up to ~MAX_TENSOR_ENTRIES floats each
def _tensors_of(expression: str) -> tuple[np.ndarray, ...]:
    coefficients, degree, _ = _coefficients_of(expression)
    rank = parse_target(expression).rank
    return tuple(_symmetric_tensor(coefficients, rank, n) for n in range(degree + 1))


def _symmetric_tensor(coefficients: dict, rank: int, n: int) -> np.ndarray:
    """C_n (r,)*n: the entry at (i_1..i_n) is the coefficient of the multiplicities of the i's.

    Vectorised: the sorted index tuple, read as a base-r number (< r^n), keys every entry.
    """
    if n == 0:
        return np.array(coefficients[(0,) * rank])
    index = np.indices((rank,) * n, dtype=np.int16).reshape(n, -1)
    index.sort(axis=0)
    key = (rank ** np.arange(n, dtype=np.int64)) @ index
    lookup = np.zeros(rank**n)
    for alpha in _multi_indices(rank, n):
        legs = [i for i, a in enumerate(alpha) for _ in range(a)]
        lookup[sum(i * rank**j for j, i in enumerate(legs))] = coefficients[alpha]
    return lookup[key].reshape((rank,) * n)


def _project_legs(tensor: np.ndarray, rest: np.ndarray, learned: np.ndarray, k: int) -> np.ndarray:
    """The unfolding (r, r^{n−1}) of ``tensor`` with legs 1..k projected by ``rest`` (r, r) and
    legs k+1..n by ``learned`` (r, r)."""
    n = tensor.ndim
    for leg in range(n):
        projector = rest if leg < k else learned
        # tensordot puts the contracted leg last; after n of them the order is restored.
        tensor = np.tensordot(tensor, projector, axes=([0], [0]))
    return tensor.reshape(tensor.shape[0], -1) if n > 1 else tensor.reshape(-1, 1)


def _orthonormal_range(columns: np.ndarray, tolerance: float) -> np.ndarray:
    """Orthonormal basis (r, k) of the span of columns (r, m), singular values > tolerance."""
    if columns.size == 0:
        return np.zeros((columns.shape[0], 0))
    u, s, _ = np.linalg.svd(columns, full_matrices=False)
    return u[:, s > tolerance]


def canonical_basis(basis: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """A basis of span(basis (r, k)) that depends only on the subspace: Gram–Schmidt on the
    projections of e_1, e_2, ... (so axis-aligned subspaces give coordinate vectors): (k, r)."""
    rank, k = basis.shape
    projector = basis @ basis.T
    vectors: list[np.ndarray] = []
    for i in range(rank):
        v = projector[:, i].copy()
        for u in vectors:
            v -= (u @ v) * u
        norm = np.linalg.norm(v)
        if norm > tol:
            vectors.append(v / norm)
        if len(vectors) == k:
            break
    result = np.array(vectors).reshape(len(vectors), rank)
    # Tiny entries are rounding of exact zeros: make them zeros for a readable answer.
    result[np.abs(result) < 1e-12] = 0.0
    return result


def activation_support(activation: str, max_degree: int) -> list[bool]:
    """``[μ_0 ≠ 0, ..., μ_D ≠ 0]`` for the named activation (see RANGE_TOLERANCE)."""
    sigma = get_activation(activation)
    mu = sigma.hermite_coefficients(max_degree)
    scale = np.sqrt(
        max(float(np.sum(mu**2 / [float(factorial(k)) for k in range(len(mu))])), 1e-300)
    )
    return [bool(abs(m) > RANGE_TOLERANCE * sqrt(factorial(k)) * scale) for k, m in enumerate(mu)]


def step_rule(
    tensors: list[np.ndarray],
    learned: np.ndarray,
    batch_exponent: int,
    support: list[bool],
    scale: float,
    work: _Work | None = None,
) -> np.ndarray:
    """Directions (r, k), orthonormal and ⊥ learned (r, u), that one more step adds.

    work: a budget the contractions are charged to (ValueError when it is spent).
    """
    rank = tensors[1].shape[0] if len(tensors) > 1 else learned.shape[0]
    on_learned = learned @ learned.T
    rest = np.eye(rank) - on_learned
    columns = []
    for n in range(1, len(tensors)):
        if not support[n]:
            continue
        tolerance = sqrt(factorial(n)) * scale
        for k in range(1, min(batch_exponent, n) + 1):
            if n - k and not learned.shape[1]:
                continue  # a term needing learned coordinates when none are learned
            if work is not None:
                work.spend(n * (tensors[n].size * rank + _CALL_COST))
            block = _project_legs(tensors[n], rest, on_learned, k)
            if work is not None:
                work.spend(block.size * rank)  # its SVD
            columns.append(_orthonormal_range(block, tolerance))
    if not columns:
        return np.zeros((rank, 0))
    new = _orthonormal_range(np.concatenate(columns, axis=1), 1e-6)
    # Numerically the new directions are ⊥ learned to rounding; make it exact.
    new = new - learned @ (learned.T @ new)
    return np.linalg.qr(new)[0][:, : new.shape[1]] if new.shape[1] else new


@dataclass
class Prediction:
    """The predicted learned subspace after each step.

    subspaces[t]: (dim U_t, r) orthonormal rows in target coordinates, t = 0..steps
    (``subspaces[0]`` is empty); added[t − 1]: the rows step t adds; coefficients: μ_0..μ_D.
    """

    expression: str
    activation: str
    batch_exponent: int
    rank: int
    coefficients: list[float]
    subspaces: list[np.ndarray] = field(default_factory=list)
    added: list[np.ndarray] = field(default_factory=list)
    leap_index: int | None = None
    max_degree: int = 0
    exact: bool = True

    def to_dict(self) -> dict:
        """The prediction as plain JSON data (the ``theory learnable --json`` output)."""
        return {
            "expression": self.expression,
            "activation": self.activation,
            "batch_exponent": self.batch_exponent,
            "rank": self.rank,
            "exact": self.exact,
            "max_degree": self.max_degree,
            "activation_coefficients": self.coefficients,
            "leap_index": self.leap_index,
            "steps": [
                {
                    "step": t,
                    "dimension": int(u.shape[0]),
                    "basis": u.tolist(),
                    "added": self.added[t - 1].tolist() if t else [],
                }
                for t, u in enumerate(self.subspaces)
            ],
        }


def _iterate(
    tensors: list[np.ndarray],
    batch_exponent: int,
    steps: int,
    support: list[bool],
    scale: float,
    work: _Work | None = None,
) -> list[np.ndarray]:
    """The added directions (k_t, r) of steps 1..steps."""
    rank = tensors[1].shape[0] if len(tensors) > 1 else 1
    learned = np.zeros((rank, 0))
    added = []
    for _ in range(steps):
        new = step_rule(tensors, learned, batch_exponent, support, scale, work)
        if not new.shape[1]:
            # The learned subspace is a fixed point: every later step adds nothing too.
            added += [np.zeros((0, rank))] * (steps - len(added))
            break
        added.append(canonical_basis(new))
        learned = np.concatenate([learned, new], axis=1)
    return added


def relevant_subspace(tensors: list[np.ndarray], scale: float) -> np.ndarray:
    """Orthonormal basis (r, k) of every direction the target depends on (Σ_n range C_n)."""
    rank = tensors[1].shape[0] if len(tensors) > 1 else 1
    columns = [
        _orthonormal_range(tensors[n].reshape(rank, -1), sqrt(factorial(n)) * scale)
        for n in range(1, len(tensors))
    ]
    if not columns:
        return np.zeros((rank, 0))
    return _orthonormal_range(np.concatenate(columns, axis=1), 1e-6)


def _is_constant(target: Target) -> bool:
    """Whether ``g*`` is constant on Gaussian inputs: its variance is zero (exactly, for a
    polynomial; to rounding, ``RANGE_TOLERANCE`` of ``E[g*²]``, by quadrature)."""
    second = target.second_moment()
    if target.is_polynomial:
        return second - target.polynomial.expectation() ** 2 <= 0.0
    return second - target.expectation() ** 2 <= RANGE_TOLERANCE * second


def leap_index(target: Target | str, work: _Work | None = None) -> int | None:
    """The target's leap index (module docstring); None if above the degree integrated.

    Parameters
    ----------
    target : Target or str
        ``g*``.
    work : optional
        A budget of operations shared with a caller (default: a fresh one).

    Returns
    -------
    int or None

    Raises
    ------
    ValueError
        If the rules would need more than MAX_RULE_WORK operations.

    Examples
    --------
    >>> leap_index("z1 + z1*z2"), leap_index("z1*z2"), leap_index("He3(z1)")
    (1, 2, 3)
    """
    target = parse_target(target) if isinstance(target, str) else target
    work = work if work is not None else _Work(target.expression)
    tensors = hermite_tensors(target)
    scale = _scale(target)
    needed = relevant_subspace(tensors, scale).shape[1]
    if needed == 0:
        # No direction in the degrees integrated: nothing to learn only if g* is a constant;
        # He7(z1) + 0*tanh(z1) (numerical, to degree 6) gave 0 for its leap 7.
        return 0 if _is_constant(target) else None
    every = [True] * len(tensors)
    for kappa in range(1, len(tensors)):
        # Each useful step adds a direction, so rank steps reach the fixed point.
        added = _iterate(tensors, kappa, target.rank, every, scale, work)
        if sum(a.shape[0] for a in added) == needed:
            return kappa
    return None


def predict(
    target: Target | str, batch_exponent: int, steps: int, activation: str = "relu"
) -> Prediction:
    """The learned subspace after each of ``steps`` steps at ``n = Θ(d^batch_exponent)``.

    Parameters
    ----------
    target : Target or str
        ``g*``.
    batch_exponent : int
        ``κ ≥ 1`` of the batch size ``n = Θ(d^κ)``.
    steps : int
        Number of giant steps ``T ≥ 0``.
    activation : str
        The student's σ (its Hermite coefficients decide which degrees count).

    Returns
    -------
    Prediction
        ``subspaces[t]`` (dim U_t, r): orthonormal rows in target coordinates, t = 0..T.

    Raises
    ------
    ValueError
        For ``κ < 1``, ``T < 0``, or a target beyond the predictor. Bounded like the parser:
        more than MAX_STEPS steps, a tensor above MAX_TENSOR_ENTRIES entries, a non-polynomial
        target of rank above 4, or rules that would need more than MAX_RULE_WORK operations
        are refused naming the limit — in about a second at most.

    Examples
    --------
    >>> p = predict("z1 + z1*z2", 1, 2, activation="relu")
    >>> [u.tolist() for u in p.subspaces]
    [[], [[1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]
    >>> [u.tolist() for u in predict("z1 + z1*z2", 1, 2, activation="tanh").subspaces]
    [[], [[1.0, 0.0]], [[1.0, 0.0]]]
    """
    for name, value in (("the batch exponent κ", batch_exponent), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if batch_exponent < 1:
        raise ValueError(f"the batch exponent κ must be >= 1, got {batch_exponent}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if steps > MAX_STEPS:
        raise ValueError(f"steps {steps} is above the limit MAX_STEPS = {MAX_STEPS}")
    target = parse_target(target) if isinstance(target, str) else target
    work = _Work(target.expression)
    tensors = hermite_tensors(target)
    degree = len(tensors) - 1
    mu = get_activation(activation).hermite_coefficients(max(degree, 1))
    support = activation_support(activation, max(degree, 1))
    scale = _scale(target)
    rank = target.rank
    added = _iterate(tensors, batch_exponent, steps, support, scale, work) if degree else []
    added += [np.zeros((0, rank))] * (steps - len(added))
    subspaces = [np.zeros((0, rank))]
    for new in added:
        subspaces.append(np.concatenate([subspaces[-1], new], axis=0))
    return Prediction(
        expression=target.expression,
        activation=activation,
        batch_exponent=batch_exponent,
        rank=rank,
        coefficients=mu.tolist(),
        subspaces=subspaces,
        added=added,
        leap_index=leap_index(target, work),
        max_degree=degree,
        exact=target.polynomial is not None,
    )


def dimension_sequence(prediction: Prediction) -> list[int]:
    """``dim U_t`` for t = 0..steps."""
    return [u.shape[0] for u in prediction.subspaces]


__all__ = [
    "MAX_RULE_WORK",
    "MAX_STEPS",
    "MAX_TENSOR_ENTRIES",
    "MAX_TENSOR_ORDER",
    "NUMERICAL_MAX_DEGREE",
    "RANGE_TOLERANCE",
    "Prediction",
    "activation_support",
    "canonical_basis",
    "dimension_sequence",
    "hermite_coefficients",
    "hermite_tensors",
    "leap_index",
    "predict",
]
