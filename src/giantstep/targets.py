"""Targets ``y = g*(W* x) + ε``: a safe expression parser and the teacher that labels samples.

A target expression is written in the coordinates ``z1 .. zr`` of ``h = W* x`` with numbers,
``+ - * / **``, parentheses and the functions ``He1 .. He9``, ``tanh``, ``relu``, ``sign``, ``abs``,
``exp``, ``erf``. It is parsed with :mod:`ast` and only those nodes are accepted: nothing is
evaluated by Python, so ``__import__('os')``, attributes, subscripts and other names are rejected.

**Bounded before any work.** An expression is text from a config, a command line or a sweep
file, so it is measured before it is built: its length, the node count and nesting depth of its
syntax tree and its largest coordinate index are checked on the tree before anything is
allocated; the degree of every polynomial part is bounded bottom-up as the tree is compiled
(``deg(p ± q) = max``, ``deg(pq) = sum``, ``deg(p**k) = k·deg(p)``, ``deg(He_k(p)) = k·deg(p)``)
and refused above ``MAX_DEGREE``; and an exact expansion is only computed when its term count,
bounded by ``min(terms(p)·terms(q), C(r + deg, r))``, and its cost fit ``MAX_TERMS`` and
``MAX_EXPANSION_WORK`` — otherwise the target is evaluated numerically (``polynomial`` is None).
Exceeding a limit raises ValueError naming it; parsing any text takes milliseconds.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from math import prod

import numpy as np
from scipy import special

from giantstep.corruption import corrupt
from giantstep.data import TEACHER, Block, generator
from giantstep.errors import ConfigError
from giantstep.hermite import MAX_DEGREE as _HERMITE_MAX_DEGREE
from giantstep.hermite import PIECE_WIDTH, RANGE, gaussian_rule, hermite, product_rule
from giantstep.polynomial import Polynomial, monomial_count

#: Longest expression, in characters.
MAX_LENGTH = 2000
#: Most nodes of the syntax tree (numbers, names, operators, calls: ``z1 + 2*z2`` has 5). Each
#: node is one array operation per block of samples and per quadrature node.
MAX_NODES = 1000
#: A rank-1 moment is computed again on a rule reaching ``|z| = WIDE_RANGE``; if that moves it
#: by more than EDGE_TOLERANCE of its size (the sum of its terms' absolute values), the part
#: beyond ``|z| = RANGE`` matters and the target is refused (the rules are accurate to ~1e-10):
#: exp(3.5 z) passes (E[y²] peaks at z = 7), exp(4 z) does not.
WIDE_RANGE = 20.0
EDGE_TOLERANCE = 1e-10
#: A rank-1 moment is computed again with the rule's pieces halved; if that moves it by more than
#: SETTLED of its size, the pieces are halved again, up to REFINEMENTS times (256 times the
#: nodes, tens of milliseconds), and the first value its refinement confirms is kept. The rule
#: is exact to ~1e-10 for smooth targets (their moments are unchanged), but a sharp peak or a
#: cusp needs finer pieces: the rule alone gave E[y²] of 1/(z1² + 1e-5) 0.26 % low (of
#: 1/(z1² + 1e-7) 47 % low), E|z|^0.2 (of abs(z1)**0.1) 4e-6 off.
SETTLED = 1e-6
#: ... while the sum of the terms' absolute values grows by at most this fraction.
SIZE_GROWTH = 1e-2
REFINEMENTS = 8
#: A rank-1 target is probed at each zero of a divisor (``1/z1``, ``z1**-2``) on ``|z| ≤ RANGE``:
#: ``y² ~ |z − z0|^(−α)`` there is integrable iff ``α < 1``, i.e. iff ``y²·ε`` falls as ``ε → 0``.
#: Measured at ``ε = POLE_PROBE[0]`` and ``[1]``; if it keeps ``POLE_RATIO`` of its value or more
#: (α ≳ 0.99), ``E[y²]`` is infinite. The quadrature's nodes miss the pole and gave a finite
#: number for ``1/z1``.
POLE_PROBE = (1e-3, 1e-9)
POLE_RATIO = 0.9
#: ``|y|`` growing by more than this from ``ε = 1e-3`` to ``1e-9`` is unbounded at the pole: its
#: moments, even when finite, are out of the quadrature's reach (measured 0.7 % low for
#: ``abs(z1)**-0.25``, whose ``|y|`` grows 32-fold). A removable singularity stays put.
UNBOUNDED = 2.0
#: Deepest nesting of the syntax tree. Compiling and evaluating recurse once per level (a few
#: Python frames each), so this keeps both far below Python's recursion limit. Parentheses,
#: calls and signs nest; the terms of a sum ``a + b - c ...`` or a product ``a * b * c`` do not.
MAX_DEPTH = 100
#: Largest coordinate index ``z_k``: the rank r of ``W*`` (r × d), and the length of every
#: exponent tuple of the exact polynomial; the theory's targets have a handful.
MAX_RANK = 100
#: Highest degree of any polynomial part of an expression (``(z1**32)**10`` is refused): the
#: same as the Hermite degrees giantstep computes, up to which the exact Gaussian moments of
#: the square of the polynomial stay finite in double precision.
MAX_DEGREE = _HERMITE_MAX_DEGREE
#: Most terms of an exact polynomial expansion; a target that may have more is evaluated
#: numerically instead. Its exact moments cost up to terms² products (``second_moment``).
MAX_TERMS = 1000
#: Most products of two terms (weighted by the rank, ~1 µs each) spent on expanding one
#: expression exactly; past it the rest is evaluated numerically. Keeps parsing well under 1 s.
MAX_EXPANSION_WORK = 300_000
#: Integer powers up to this are expanded exactly (higher ones are evaluated numerically).
MAX_POLYNOMIAL_POWER = 32
#: Largest label noise ``target.noise``. Labels are O(1); a noise a million times larger is
#: noise alone, and far larger ones overflow the squared labels summed over a block in float32.
MAX_NOISE = 1e6
#: Rows of quadrature nodes evaluated at once: an expression nested k deep holds up to k
#: intermediate arrays, so the millions of nodes of a rank-4 rule are evaluated in slices.
_EVALUATION_ROWS = 1 << 16
_KINKED = {"relu": lambda x: np.maximum(x, 0), "sign": np.sign, "abs": np.abs}
_SMOOTH = {"tanh": np.tanh, "exp": np.exp, "erf": special.erf}
_HERMITE = {f"He{k}": k for k in range(1, 10)}
FUNCTIONS = (*_HERMITE, *_SMOOTH, *_KINKED)

Evaluator = Callable[[np.ndarray], "np.ndarray | float"]


class NonFiniteLabelsError(ConfigError):
    """The target produced labels that are not finite for some inputs (``1/(relu(z1) -
    relu(z1))``, ``exp(exp(exp(z1)))``).

    A property of ``target.expression``, not of the step size: the run stops naming the key,
    distinct from a diverging step (``train.DivergenceError``). A ConfigError, so the command
    line reports it as bad input (exit code 2). ``target.noise`` cannot cause it: check_noise
    bounds the noise far below what could push a finite label over.
    """


class TargetMomentError(ConfigError):
    """A Gaussian moment of the target (``E[g*²]``, ``E[g* h]``) is not a finite number."""


def check_noise(noise: float) -> float:
    """``noise`` as a float if it is a finite standard deviation in ``[0, MAX_NOISE]``.

    ValueError saying why otherwise (the config layer prefixes the key ``target.noise``).
    """
    if isinstance(noise, bool) or not isinstance(noise, int | float | np.integer | np.floating):
        raise ValueError(f"the label noise is a number, got {type(noise).__name__}")
    value = float(noise)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"the label noise is a standard deviation >= 0, got {noise!r}")
    if value > MAX_NOISE:
        raise ValueError(
            f"the label noise {value:g} is above the limit MAX_NOISE = {MAX_NOISE:g} "
            "(labels are O(1); larger noise overflows their squares)"
        )
    return value


@dataclass(frozen=True)
class Target:
    """A parsed target ``g*``: ``target(h)`` maps (rows, r) coordinates to (rows,) labels.

    polynomial: the exact polynomial when g* is one (He_k of polynomials included) and its
    expansion fits ``MAX_TERMS``/``MAX_EXPANSION_WORK``, else None. degree: the degree of g*
    when it is a polynomial, expanded or not, else None.
    """

    expression: str
    rank: int
    evaluate: Evaluator = field(repr=False)
    polynomial: Polynomial | None = field(repr=False)
    # Arguments of relu/sign/abs, kept to find the kinks of rank-1 targets.
    kinked_arguments: tuple[Evaluator, ...] = field(repr=False, default=())
    degree: int | None = None
    # Divisors that vary (``a/b``, the base of ``b**-k``), kept to find the poles of rank-1 targets.
    divisors: tuple[Evaluator, ...] = field(repr=False, default=())

    @property
    def is_polynomial(self) -> bool:
        """Whether g* is a polynomial (then its Gaussian moments are exact)."""
        return self.polynomial is not None

    def __call__(self, h: np.ndarray) -> np.ndarray:
        h = np.asarray(h)
        with np.errstate(all="ignore"):
            value = self.evaluate(h)
        # Labels in the inputs' float type; of integer inputs in float64 (z1/2 + 0.25 gave 0).
        dtype = h.dtype if np.issubdtype(h.dtype, np.floating) else np.float64
        return np.array(np.broadcast_to(value, h.shape[:1]), dtype=dtype)

    def values(self, h: np.ndarray) -> np.ndarray:
        """``self(h)`` computed ``_EVALUATION_ROWS`` rows at a time (the same numbers, bounded
        memory): for the millions of nodes of a quadrature rule."""
        h = np.asarray(h)
        if h.shape[0] <= _EVALUATION_ROWS:
            return self(h)
        out = np.empty(h.shape[0], dtype=h.dtype)
        for start in range(0, h.shape[0], _EVALUATION_ROWS):
            out[start : start + _EVALUATION_ROWS] = self(h[start : start + _EVALUATION_ROWS])
        return out

    def kinks(self) -> tuple[float, ...]:
        """Rank 1: the points where an argument of relu/sign/abs changes sign (on ±RANGE)."""
        if self.rank != 1:
            return (0.0,)
        return tuple(sorted({0.0} | _zeros(self.kinked_arguments)))

    def check_poles(self, finite_too: bool = True) -> None:
        """Rank 1: TargetMomentError if ``y`` is unbounded at a zero of a divisor (``POLE_PROBE``):
        ``E[y²]`` is infinite there (``1/z1``, ``abs(z1)**-0.5``), or — ``finite_too``, for a
        moment that did not settle — finite but out of the quadrature's reach
        (``abs(z1)**-0.25``, a peak as sharp as ``1/(z1**2 + 3e-9)``). Removable singularities
        (``tanh(z1)/z1``) pass. Poles beyond ``|z| = RANGE`` and those of rank ≥ 2 targets are
        not looked for."""
        if self.rank != 1 or not self.divisors:
            return
        near, nearer = POLE_PROBE
        for pole in sorted(_zeros(self.divisors, touching=True)):
            for side in (-1.0, 1.0):
                points = np.array([[pole + side * near], [pole + side * nearer]])
                with np.errstate(all="ignore"):
                    far, close = np.abs(self(points))
                if np.isfinite(close) and close <= UNBOUNDED * far:
                    continue
                # (To 8 decimals: a smooth dip's bottom is only known to ~1e-8, √eps; the
                # dip of z1**2 + 1e-7 is at 0, not at -2.6e-12.)
                where = round(pole, 8) + 0.0
                what = f"target.expression: '{_shorten(self.expression)}' has a pole at z1 = "
                with np.errstate(all="ignore"):
                    integrable = close**2 * nearer < POLE_RATIO * far**2 * near
                if np.isfinite(close) and integrable:
                    if not finite_too:
                        continue
                    raise TargetMomentError(
                        f"{what}{where:.6g} (or a peak as sharp): its moments are finite, but "
                        f"the quadrature does not resolve it (its pieces halved {REFINEMENTS} "
                        "times still move them)"
                    )
                raise TargetMomentError(
                    f"{what}{where:.6g} where y² is not integrable: E[y²] is infinite (a "
                    "Gaussian input falls near it often enough)"
                )

    def expectation(self, weight: Callable[[np.ndarray], np.ndarray] | None = None) -> float:
        """``E[g*(h) w(h)]`` for ``h ~ N(0, I_r)`` by quadrature split at the kinks (rank ≤ 4).

        weight: (M, r) → (M,), default 1. Accurate to ~1e-10 when g* is smooth away from the
        kinks (rank 1: found; rank ≥ 2: the coordinate hyperplanes ``z_i = 0``); rank 1, to
        ``SETTLED`` where it is not (a sharp peak, a cusp): finer rules until two agree. The
        result may be inf or nan when g* overflows; the moments below name that.
        TargetMomentError (rank 1) when a rule reaching |z| = WIDE_RANGE gives another value
        (the part beyond the rule's |z| = RANGE, which it drops, is not negligible), or when
        ``REFINEMENTS`` halvings of the rule's pieces do not settle it.
        """
        kinks = self.kinks()  # once: a root search for each kinked argument
        nodes, weights = product_rule(self.rank, kinks)
        values = self._integrand(nodes, weight)
        with np.errstate(all="ignore"):
            total = float(weights @ values)
        if self.rank == 1 and np.isfinite(total):
            # The rule stops at |z| = RANGE: a target growing like exp(c z) puts its moments
            # beyond it (exp(10 z): E[y²] = e^200 came out as 7e77). A rule reaching further
            # measures what the first one lost.
            wide_nodes, wide_weights = gaussian_rule(kinks, WIDE_RANGE)
            wide_values = self._integrand(wide_nodes[:, None], weight)
            with np.errstate(all="ignore"):
                wide = float(wide_weights @ wide_values)
                size = float(np.abs(weights) @ np.abs(values))
            lost = abs(wide - total) / size if size else 0.0
            if not lost <= EDGE_TOLERANCE:  # nan too: the target overflows out there
                raise TargetMomentError(
                    f"target.expression: the Gaussian moments of '{_shorten(self.expression)}' "
                    f"lie partly beyond |z| = {RANGE:g}: reaching |z| = {WIDE_RANGE:g} changes "
                    f"them by {lost:.1e} of their size; the target grows too fast for them"
                )
            try:
                total = self._settled(total, size, kinks, weight)
            except TargetMomentError:
                # From any moment (the config's mean comes first): a pole says better.
                self.check_poles()
                raise
        return total

    def _settled(self, total: float, size: float, kinks: tuple[float, ...], weight) -> float:
        """Rank 1: the first of the rules with pieces ``PIECE_WIDTH / 2^k`` (``total`` and its
        ``size``, the sum of its terms' absolute values, are k = 0) that the next one confirms
        to ``SETTLED`` with a size grown by at most ``SIZE_GROWTH``; TargetMomentError if none
        does up to k = ``REFINEMENTS``, or if a finer rule overflows."""
        for level in range(1, REFINEMENTS + 1):
            nodes, weights = gaussian_rule(kinks, RANGE, PIECE_WIDTH / 2**level)
            values = self._integrand(nodes[:, None], weight)
            with np.errstate(all="ignore"):
                finer = float(weights @ values)
                finer_size = float(np.abs(weights) @ np.abs(values))
            if not np.isfinite(finer):
                raise TargetMomentError(
                    f"target.expression: the Gaussian moments of '{_shorten(self.expression)}' "
                    "are not finite on a finer quadrature rule: the target overflows between "
                    "the first rule's nodes"
                )
            # Of the larger size: a peak the coarser rule missed is seen by the finer one.
            scale = max(size, finer_size)
            change = abs(finer - total) / scale if scale else 0.0
            # And the size must stop growing: where E|g w| is infinite, its growth dwarfs the
            # change of a moment whose two sides cancel (sign(z1)/abs(z1)**1.5 settled at 0).
            # Not to SETTLED: |g w| has kinks between the nodes (at the zeros of He_k),
            # which move a smooth target's size by more than that.
            growth = finer_size / size - 1 if size else 0.0
            if change <= SETTLED and growth <= SIZE_GROWTH:
                return total
            total, size = finer, finer_size
        raise TargetMomentError(
            f"target.expression: the Gaussian moments of '{_shorten(self.expression)}' do not "
            f"settle: with the quadrature's pieces halved {REFINEMENTS} times they still move by "
            f"{change:.1e} of their size"
            + (f", and the size by {growth:+.0%}" if growth > SIZE_GROWTH else "")
            + " (a peak or a singularity too sharp for the rule)"
        )

    def _integrand(self, nodes: np.ndarray, weight) -> np.ndarray:
        """``g*(h) w(h)`` at a rule's nodes (M, r): (M,)."""
        values = self.values(nodes)
        if weight is not None:
            with np.errstate(all="ignore"):
                values = values * weight(nodes)
        return values

    def _finite(self, value: float, what: str) -> float:
        if not np.isfinite(value):
            raise TargetMomentError(
                f"target.expression: {what} of '{_shorten(self.expression)}' is not finite "
                f"({value}): the target overflows double precision for typical Gaussian inputs"
            )
        return value

    def second_moment(self, noise: float = 0.0) -> float:
        """``E[y²] = E[g*(h)²] + noise²`` (exact for polynomials).

        TargetMomentError if it is not finite; ValueError if ``noise`` is refused by
        :func:`check_noise`.
        """
        noise = check_noise(noise)
        if self.polynomial is not None:
            moment = (self.polynomial * self.polynomial).expectation()
        else:
            try:
                moment = self._finite(self.expectation(lambda h: self.values(h)), "E[y²]")
            except TargetMomentError:
                self.check_poles()  # a pole, if there is one, says better what went wrong
                raise
            # The rules' nodes miss a pole: where E[y²] is infinite they still give a number.
            self.check_poles(finite_too=False)
        return self._finite(moment + noise**2, "E[y²]")

    def linear_coefficients(self) -> np.ndarray:
        """``C_1 = E[g*(h) h]``: (r,) (exact for polynomials); TargetMomentError if not finite."""
        if self.polynomial is not None:
            c1 = np.array(
                [
                    (self.polynomial * Polynomial.variable(self.rank, k)).expectation()
                    for k in range(self.rank)
                ]
            )
        else:
            c1 = np.array([self.expectation(lambda h, k=k: h[:, k]) for k in range(self.rank)])
        for k, value in enumerate(c1):
            self._finite(float(value), f"E[g*(h) z{k + 1}]")
        return c1


def _count(n: int) -> str:
    return str(n) if n < 10**6 else f"{float(n):.3g}"


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class _Part:
    """A compiled sub-expression: its evaluator, its exact expansion (None if it is not a
    polynomial or was not expanded) and its degree (None if it is not a polynomial)."""

    evaluate: Evaluator
    polynomial: Polynomial | None
    degree: int | None


class _Compiler:
    """Turns a whitelisted AST into an evaluator and, where possible, an exact polynomial.

    Degrees are bounded bottom-up as the tree is compiled, and every expansion is priced before
    it is computed: a polynomial part of degree above MAX_DEGREE is refused; one whose
    expansion may exceed MAX_TERMS terms, or the remaining MAX_EXPANSION_WORK, is left
    unexpanded (evaluated numerically), so compiling costs milliseconds whatever the text.
    """

    def __init__(self, expression: str, rank: int, tree: ast.AST):
        self.expression = expression
        self.rank = rank
        self.kinked_arguments: list[Evaluator] = []
        self.divisors: list[Evaluator] = []
        self.with_variables = _with_variables(tree)
        self.work_left = MAX_EXPANSION_WORK
        # A product of two terms costs a tuple of `rank` sums; ~1 µs up to rank 8.
        self.pair_cost = 1 + rank // 8

    def reject(self, node: ast.AST, why: str) -> ValueError:
        snippet = ast.get_source_segment(self.expression, node) or type(node).__name__
        return ValueError(f"{why}: '{_shorten(snippet)}' in '{_shorten(self.expression)}'")

    def bounded(self, node: ast.AST, degree: int | None) -> int | None:
        if degree is not None and degree > MAX_DEGREE:
            raise self.reject(
                node,
                f"polynomial of degree {_count(degree)}, above the limit MAX_DEGREE = {MAX_DEGREE} "
                "(its values and Gaussian moments overflow double precision)",
            )
        return degree

    def afford(self, pairs: int, terms: int) -> bool:
        """Whether an expansion of ``pairs`` term products into at most ``terms`` terms fits
        the limits; if so its cost is spent."""
        cost = pairs * self.pair_cost
        if terms > MAX_TERMS or cost > self.work_left:
            return False
        self.work_left -= cost
        return True

    def terms_bound(self, degree: int, *counts: int) -> int:
        """Terms of a product of polynomials with ``counts`` terms and total ``degree``."""
        return min(prod(counts), monomial_count(self.rank, degree))

    def compile(self, node: ast.AST) -> _Part:
        if _chain(node) is not None:
            return self.chain(node)
        return self.fold(node, self.compile_node(node))

    def fold(self, node: ast.AST, part: _Part) -> _Part:
        """A part without coordinates folded to its value, so '2**9999' or '(-8)**0.5' fail
        here and not mid-run."""
        if id(node) in self.with_variables:
            return part
        try:
            with np.errstate(all="raise", under="ignore"):  # an underflow is a finite 0
                value = complex(part.evaluate(np.zeros((1, self.rank))))
        except (ArithmeticError, ValueError, TypeError, FloatingPointError):
            value = complex("nan")
        if value.imag or not np.isfinite(value.real):
            raise self.reject(node, "not a finite real number")
        return _Part((lambda h: value.real), Polynomial.constant(self.rank, value.real), 0)

    def chain(self, node: ast.BinOp) -> _Part:
        """``a + b - c + ...`` or ``a * b * c ...``: compiled in a loop and evaluated in one,
        so a long sum costs neither recursion depth nor nested calls (the same arithmetic, in
        the same order, as the nested form)."""
        family = _chain(node)
        spine = []
        leftmost: ast.AST = node
        while _chain(leftmost) == family:
            spine.append(leftmost)
            leftmost = leftmost.left
        part = self.compile(leftmost)
        base, steps = part.evaluate, []
        for link in reversed(spine):
            right = self.compile(link.right)
            polynomial, degree = self.arithmetic(link, part, right)
            steps.append((_OPERATORS[type(link.op)], right.evaluate))
            part = _Part(_sequence(base, tuple(steps)), polynomial, degree)
            if id(link) not in self.with_variables:
                part = self.fold(link, part)
                base, steps = part.evaluate, []
        return part

    def compile_node(self, node: ast.AST) -> _Part:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise self.reject(node, "only numbers are allowed as constants")
            try:
                value = float(node.value)
            except OverflowError:  # an integer literal with hundreds of digits
                raise self.reject(node, "not a finite real number") from None
            return _Part((lambda h: value), Polynomial.constant(self.rank, value), 0)
        if isinstance(node, ast.Name):
            index = _variable_index(node.id)
            if index is None:
                raise self.reject(node, f"unknown name (use z1..zr or {', '.join(FUNCTIONS)})")
            return _Part((lambda h: h[:, index - 1]), Polynomial.variable(self.rank, index - 1), 1)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
            operand = self.compile(node.operand)
            if isinstance(node.op, ast.UAdd):
                return operand
            f, p = operand.evaluate, operand.polynomial
            return _Part((lambda h: -f(h)), -p if p is not None else None, operand.degree)
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.reject(node, "not allowed in a target expression")

    def arithmetic(
        self, node: ast.BinOp, left: _Part, right: _Part
    ) -> tuple[Polynomial | None, int | None]:
        """The expansion (if affordable) and degree of ``left (+|-|*) right``."""
        p, q = left.polynomial, right.polynomial
        both = left.degree is not None and right.degree is not None
        if isinstance(node.op, ast.Add | ast.Sub):
            degree = max(left.degree, right.degree) if both else None
            polynomial = None
            if p is not None and q is not None and self.afford(0, len(p.terms) + len(q.terms)):
                polynomial = p + q if isinstance(node.op, ast.Add) else p - q
            return polynomial, degree
        degree = self.bounded(node, left.degree + right.degree) if both else None
        polynomial = None
        if p is not None and q is not None:
            tp, tq = len(p.terms), len(q.terms)
            if self.afford(tp * tq, self.terms_bound(degree, tp, tq)):
                polynomial = p * q
        return polynomial, degree

    def binary(self, node: ast.BinOp) -> _Part:
        left, right = self.compile(node.left), self.compile(node.right)
        f, g = left.evaluate, right.evaluate
        p, q = left.polynomial, right.polynomial
        if isinstance(node.op, ast.Div):
            divisor = q.constant_value if q is not None else None
            if divisor == 0:
                raise self.reject(node, "division by zero")
            polynomial = p.scale(1 / divisor) if p is not None and divisor is not None else None
            degree = left.degree if divisor is not None else None
            if divisor is None:
                self.divisors.append(g)
            return _Part((lambda h: f(h) / g(h)), polynomial, degree)
        if isinstance(node.op, ast.Pow):
            return self.power(node, left, right)
        raise self.reject(node, "operator not allowed (use + - * / **)")

    def power(self, node: ast.BinOp, left: _Part, right: _Part) -> _Part:
        f, g = left.evaluate, right.evaluate
        p, q = left.polynomial, right.polynomial
        power = q.constant_value if q is not None else None
        base = p.constant_value if p is not None else None
        if power is None:
            if base is None or base <= 0:
                raise self.reject(node, "a variable exponent needs a positive number as base")
        elif power != int(power) and base is None and not _non_negative(node.left):
            # Otherwise half the Gaussian inputs give NaN labels, found only mid-run.
            raise self.reject(
                node, "a fractional power needs a base that is never negative (abs, relu, exp)"
            )
        if power is not None and power < 0 and base is None:
            self.divisors.append(f)  # b**-k = 1/b**k
        degree = None
        polynomial = None
        if left.degree is not None and power is not None and power == int(power) and power >= 0:
            k = int(power)
            degree = self.bounded(node, k * left.degree)
            if p is not None and k <= MAX_POLYNOMIAL_POWER:
                tp = len(p.terms)
                # p**k multiplies k times by p; the i-th product has p**i on the left.
                pairs = sum(self.terms_bound(i * left.degree, *(tp,) * i) * tp for i in range(k))
                if self.afford(pairs, self.terms_bound(degree, *(tp,) * k)):
                    polynomial = p**k
        return _Part((lambda h: f(h) ** g(h)), polynomial, degree)

    def call(self, node: ast.Call) -> _Part:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in FUNCTIONS:
            raise self.reject(node, f"unknown function (use {', '.join(FUNCTIONS)})")
        if len(node.args) != 1 or node.keywords:
            raise self.reject(node, f"{name} takes exactly one argument")
        argument = self.compile(node.args[0])
        f, p = argument.evaluate, argument.polynomial
        if name in _HERMITE:
            k = _HERMITE[name]
            degree = None
            polynomial = None
            if argument.degree is not None:
                degree = self.bounded(node, k * argument.degree)
                if p is not None:
                    tp = len(p.terms)
                    # He_{j+1}(p) = p He_j(p) − j He_{j−1}(p): k products with He_j(p) on the left.
                    pairs = sum(
                        min((tp + 1) ** j, monomial_count(self.rank, j * argument.degree)) * tp
                        for j in range(k)
                    )
                    bound = min((tp + 1) ** k, monomial_count(self.rank, degree))
                    if self.afford(pairs, bound):
                        polynomial = p.hermite(k)
            return _Part((lambda h: hermite(k, f(h))), polynomial, degree)
        if name in _KINKED:
            self.kinked_arguments.append(f)
        function = {**_SMOOTH, **_KINKED}[name]
        return _Part((lambda h: function(f(h))), None, None)


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _chain(node: ast.AST) -> str | None:
    """The family of a link of a left-nested chain (``+``/``-`` or ``*``), else None."""
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Add | ast.Sub):
            return "sum"
        if isinstance(node.op, ast.Mult):
            return "product"
    return None


def _sequence(base: Evaluator, steps: tuple) -> Evaluator:
    """``base(h) op_1 g_1(h) op_2 g_2(h) ...``, left to right, in one loop."""

    def evaluate(h: np.ndarray) -> np.ndarray | float:
        value = base(h)
        for op, g in steps:
            value = op(value, g(h))
        return value

    return evaluate


def _with_variables(tree: ast.AST) -> set[int]:
    """ids of the nodes whose subtree uses a coordinate z_k (one pass, no recursion)."""
    order = list(ast.walk(tree))  # breadth first: every child comes after its parent
    found: set[int] = set()
    for node in reversed(order):
        if (isinstance(node, ast.Name) and _variable_index(node.id)) or any(
            id(child) in found for child in ast.iter_child_nodes(node)
        ):
            found.add(id(node))
    return found


def _non_negative(node: ast.AST) -> bool:
    """Whether the expression is non-negative by its outer function, whatever its argument."""
    return isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("abs", "relu", "exp")


def _variable_index(name: str) -> int | None:
    if name.startswith("z") and name[1:].isdigit() and int(name[1:]) >= 1:
        return int(name[1:])
    return None


def _tree_size(tree: ast.Expression) -> tuple[int, int]:
    """(node count, nesting depth) of the expression nodes of ``tree``, without recursion;
    the links of a chain ``a + b - c ...`` or ``a * b * c ...`` share one level."""
    nodes, depth = 0, 0
    stack = [(tree.body, 1)]
    while stack:
        node, level = stack.pop()
        nodes += 1
        depth = max(depth, level)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                # The left operand continuing a chain (a + b + c) is compiled in a loop.
                same = child is getattr(node, "left", None) and _chain(child) == _chain(node)
                stack.append((child, level if same and _chain(node) else level + 1))
    return nodes, depth


def parse_target(expression: str) -> Target:
    """Parse ``expression`` into a Target; ValueError saying what is wrong otherwise.

    Every limit of the module docstring is checked before the work it bounds; parsing any text
    takes milliseconds and little memory. Results are cached by text.
    """
    if not isinstance(expression, str):
        raise ValueError(f"a target expression is a string, got {type(expression).__name__}")
    return _parse(expression.strip())


@lru_cache(maxsize=256)
def _parse(text: str) -> Target:
    if not text:
        raise ValueError("the target expression is empty")
    if len(text) > MAX_LENGTH:
        raise ValueError(
            f"the target expression has {len(text)} characters, above the limit "
            f"MAX_LENGTH = {MAX_LENGTH}"
        )
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, RecursionError, MemoryError, ValueError) as err:
        reason = type(err).__name__
        raise ValueError(f"'{_shorten(text)}' is not a valid expression ({reason})") from None
    nodes, depth = _tree_size(tree)
    if nodes > MAX_NODES:
        raise ValueError(
            f"'{_shorten(text)}' has {nodes} terms, operators and calls, above the limit "
            f"MAX_NODES = {MAX_NODES}"
        )
    if depth > MAX_DEPTH:
        raise ValueError(
            f"'{_shorten(text)}' is nested {depth} levels deep, above the limit "
            f"MAX_DEPTH = {MAX_DEPTH}"
        )
    indices = [
        index
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and (index := _variable_index(node.id)) is not None
    ]
    rank = max(indices, default=1)
    if rank > MAX_RANK:
        raise ValueError(
            f"'{_shorten(text)}' uses z{rank}, above the limit MAX_RANK = {MAX_RANK} "
            f"(the largest coordinate index of a target)"
        )
    compiler = _Compiler(text, rank, tree)
    try:
        part = compiler.compile(tree.body)
    except RecursionError:
        raise ValueError(f"'{_shorten(text)}' is nested too deeply") from None
    if not indices:
        raise ValueError(f"'{_shorten(text)}' uses no coordinate z1..zr")
    return Target(
        text,
        rank,
        part.evaluate,
        part.polynomial,
        tuple(compiler.kinked_arguments),
        part.degree,
        tuple(compiler.divisors),
    )


def _zeros(functions: tuple[Evaluator, ...], touching: bool = False) -> set[float]:
    """The points of ``[−RANGE, RANGE]`` where one of ``functions`` (rank 1: (M, 1) → (M,))
    is zero: where it is zero on a fine grid or changes sign (then found to 1e-15); with
    ``touching``, also every local minimum of ``|f|`` (located to the last bit), where ``f`` may
    touch zero (``(z1 − 0.3)**2``, ``abs(z1 − 1.2)**0.7``) or come close (``z1**2 + 1e-7``):
    the caller probes the target there (:meth:`Target.check_poles`)."""
    # Here, not at the top: scipy.optimize adds ~80 ms to every process's import of giantstep,
    # and only targets with kinks (relu, abs, sign) or divisors need a root.
    from scipy import optimize

    grid = np.linspace(-RANGE, RANGE, 28001)
    found: set[float] = set()
    for function in functions:

        def at(t: float, f=function) -> float:
            return float(np.ravel(f(np.array([[t]])))[0])

        with np.errstate(all="ignore"):
            values = np.broadcast_to(function(grid[:, None]), grid.shape)
            exact = values == 0
            if touching:  # a pole is a point: a divisor zero on an interval (relu) is not one
                padded = np.pad(exact, 1)
                exact = exact & ~(padded[:-2] | padded[2:])
            found.update(grid[exact])
            # Signs, not the product of neighbours: that overflows (1e200·z) or underflows
            # to 0 (1e-200·z) and then misses the change of sign.
            signs = np.sign(values)
            for i in np.flatnonzero(signs[:-1] * signs[1:] < 0):
                found.add(optimize.brentq(at, grid[i], grid[i + 1], xtol=1e-15))
            if not touching:
                continue
            size = np.abs(values)
            low = np.flatnonzero((size[1:-1] < size[:-2]) & (size[1:-1] < size[2:])) + 1
            low = low[size[low] > 0]  # a zero on the grid is found already (exact)
            # Every minimum, not only those a search brings to "zero": |f| at the last bit
            # is 1e-16 for abs(z1 − 1.2), 1e-11 for abs(z1 − 1.2)**0.7 and 3e-9 for
            # z1**2 + 3e-9, whose 1/f peaks too sharply for the quadrature all the same (even
            # refined, Target.expectation). The probes of check_poles tell a pole from a dip.
            for i in low:
                # Golden section to the last bit (~60 steps): the bounded Brent search stopped
                # at sqrt(eps)·|x|, 2e-9 from the zero of abs(z1 − 1.234567).
                where = optimize.golden(
                    lambda t, f=at: abs(f(t)), brack=(grid[i - 1], grid[i], grid[i + 1]),
                    tol=1e-15,
                )  # fmt: skip
                found.add(float(where))
    return found


def teacher_directions(rng: np.random.Generator, rank: int, dim: int) -> np.ndarray:
    """``W*``: (rank, dim) with orthonormal rows, Haar-distributed (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, rank)))
    # Fixing the signs of diag(R) makes Q Haar and a deterministic function of the draw.
    return (q * np.sign(np.diag(r))).T.copy()


#: How ``W*`` is drawn (the config's ``target.directions``): Haar-random orthonormal rows, or
#: the first ``r`` coordinate axes ``e_1 .. e_r`` (localised: ``h = (x_1, .., x_r)``).
DIRECTIONS = ("random", "coordinates")


@dataclass(frozen=True)
class Teacher:
    """``y = g*(W* x) + noise · ε``: a target, its directions and the label noise level.

    directions: (r, d) orthonormal rows ``W*``; noise: the standard deviation ``σ_ε``, in
    ``[0, MAX_NOISE]`` (a ConfigError naming ``target.noise`` otherwise); corruption: the
    fraction ``p`` of labels replaced by labels independent of ``x`` (``giantstep.corruption``).
    """

    target: Target
    directions: np.ndarray
    noise: float = 0.0
    corruption: float = 0.0

    def __post_init__(self) -> None:
        try:
            check_noise(self.noise)
        except ValueError as err:
            raise ConfigError(f"target.noise: {err}") from None

    @classmethod
    def draw(
        cls,
        seed: int,
        expression: str,
        dim: int,
        noise: float = 0.0,
        *,
        corruption: float = 0.0,
        directions: str = "random",
    ) -> Teacher:
        """The teacher of ``seed``: ``W*`` drawn from the seed's own teacher generator (or the
        coordinate axes, ``directions="coordinates"``)."""
        target = parse_target(expression)
        if directions not in DIRECTIONS:
            raise ValueError(f"directions: unknown {directions!r}; one of {', '.join(DIRECTIONS)}")
        is_number = isinstance(corruption, int | float | np.integer | np.floating)
        if isinstance(corruption, bool) or not is_number or not 0 <= corruption <= 1:
            raise ValueError(f"corruption: a fraction in [0, 1] (got {corruption!r})")
        if target.rank > dim:  # W* (r × d) cannot have r orthonormal rows
            raise ValueError(
                f"dim: the target '{_shorten(expression)}' uses z{target.rank}, so W* needs "
                f"{target.rank} orthonormal directions: at least dim = {target.rank} (got {dim})"
            )
        if directions == "coordinates":
            w_star = np.eye(target.rank, dim)
        else:
            w_star = teacher_directions(generator(seed, TEACHER), target.rank, dim)
        return cls(target, w_star, noise, corruption)

    def clean_labels(
        self, block: Block, h: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(h, y) of a block before corruption: ``h = x W*ᵀ`` (rows, r), ``y = g*(h) + σ_ε ε``;
        ``h`` is computed unless given (as columns of a product the caller made anyway).

        Raises NonFiniteLabelsError if a label is not finite: the target overflows or divides
        by zero at some inputs, which would otherwise surface steps later as non-finite weights,
        mistaken for a diverging step. (The noise, at most MAX_NOISE times a normal draw, cannot
        push a finite label over: the gap to overflow is far wider, ~1e292.)
        """
        if h is None:
            h = block.x @ self.directions.T.astype(block.x.dtype)
        y = self.target(h)
        if not np.isfinite(y).all():
            raise self._non_finite(h, y)
        if self.noise:
            y += self.noise * block.noise
        return h, y

    def labels(self, block: Block, h: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(h, y) of a block: h (rows, r) the target coordinates ``x W*ᵀ`` (computed unless
        given), y (rows,) labels (a fraction ``corruption`` of them replaced by decoy labels)."""
        h, y = self.clean_labels(block, h)
        if self.corruption:
            y = corrupt(block, y, self.corruption, lambda b: self.clean_labels(b)[1])
        return h, y

    def below(self, weights: np.ndarray, dtype) -> np.ndarray:
        """``[W; W*]`` (N + r, d) in ``dtype``: weights (N, d) with the directions below, so
        that one product ``X [W; W*]ᵀ`` gives a block's pre-activations and its ``h``."""
        return np.vstack([weights, self.directions]).astype(dtype, copy=False)

    def _non_finite(self, h: np.ndarray, y: np.ndarray) -> NonFiniteLabelsError:
        row = int(np.flatnonzero(~np.isfinite(y))[0])
        point = ", ".join(f"{v:.3g}" for v in h[row, :4]) + (", ..." if h.shape[1] > 4 else "")
        precision = (
            f" in {h.dtype} (compute.dtype; float64 has a far larger range)"
            if h.dtype != np.float64
            else ""
        )
        return NonFiniteLabelsError(
            f"target.expression: the target is not finite for some inputs ({y[row]} at "
            f"h = ({point})) of "
            f"'{_shorten(self.target.expression)}'{precision}: the labels overflow or divide by "
            "zero there. This is the target, not a diverging step: change the expression."
        )
