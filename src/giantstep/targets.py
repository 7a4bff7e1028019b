"""Targets ``y = g*(W* x) + ε``: a safe expression parser and the teacher that labels samples.

A target expression is written in the coordinates ``z1 .. zr`` of ``h = W* x`` with numbers,
``+ - * / **``, parentheses and the functions ``He1 .. He9``, ``tanh``, ``relu``, ``sign``, ``abs``,
``exp``, ``erf``. It is parsed with :mod:`ast` and only those nodes are accepted: nothing is
evaluated by Python, so ``__import__('os')``, attributes, subscripts and other names are rejected.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import optimize, special

from giantstep.data import TEACHER, Block, generator
from giantstep.hermite import RANGE, hermite, product_rule
from giantstep.polynomial import Polynomial

MAX_LENGTH = 2000
MAX_POLYNOMIAL_POWER = 32
_KINKED = {"relu": lambda x: np.maximum(x, 0), "sign": np.sign, "abs": np.abs}
_SMOOTH = {"tanh": np.tanh, "exp": np.exp, "erf": special.erf}
_HERMITE = {f"He{k}": k for k in range(1, 10)}
FUNCTIONS = (*_HERMITE, *_SMOOTH, *_KINKED)

Evaluator = Callable[[np.ndarray], "np.ndarray | float"]


@dataclass(frozen=True)
class Target:
    """A parsed target ``g*``: ``target(h)`` maps (rows, r) coordinates to (rows,) labels.

    polynomial: the exact polynomial when g* is one (He_k of polynomials included), else None.
    """

    expression: str
    rank: int
    evaluate: Evaluator = field(repr=False)
    polynomial: Polynomial | None = field(repr=False)
    # Arguments of relu/sign/abs, kept to find the kinks of rank-1 targets.
    kinked_arguments: tuple[Evaluator, ...] = field(repr=False, default=())

    @property
    def is_polynomial(self) -> bool:
        """Whether g* is a polynomial (then its Gaussian moments are exact)."""
        return self.polynomial is not None

    def __call__(self, h: np.ndarray) -> np.ndarray:
        h = np.asarray(h)
        with np.errstate(all="ignore"):
            value = self.evaluate(h)
        return np.array(np.broadcast_to(value, h.shape[:1]), dtype=h.dtype)

    def kinks(self) -> tuple[float, ...]:
        """Rank 1: the points where an argument of relu/sign/abs changes sign (on ±RANGE)."""
        if self.rank != 1:
            return (0.0,)
        grid = np.linspace(-RANGE, RANGE, 28001)
        found = {0.0}
        for argument in self.kinked_arguments:
            values = np.broadcast_to(argument(grid[:, None]), grid.shape)
            found.update(grid[values == 0])
            for i in np.flatnonzero(values[:-1] * values[1:] < 0):
                found.add(
                    optimize.brentq(
                        lambda t, f=argument: float(np.ravel(f(np.array([[t]])))[0]),
                        grid[i],
                        grid[i + 1],
                        xtol=1e-15,
                    )
                )
        return tuple(sorted(found))

    def expectation(self, weight: Callable[[np.ndarray], np.ndarray] | None = None) -> float:
        """``E[g*(h) w(h)]`` for ``h ~ N(0, I_r)`` by quadrature split at the kinks (rank ≤ 4).

        weight: (M, r) → (M,), default 1. Accurate to ~1e-10 when g* is smooth away from the
        kinks (rank 1: found; rank ≥ 2: the coordinate hyperplanes ``z_i = 0``).
        """
        nodes, weights = product_rule(self.rank, self.kinks())
        values = self(nodes)
        if weight is not None:
            values = values * weight(nodes)
        return float(weights @ values)

    def second_moment(self, noise: float = 0.0) -> float:
        """``E[y²] = E[g*(h)²] + noise²`` (exact for polynomials)."""
        if self.polynomial is not None:
            return (self.polynomial * self.polynomial).expectation() + noise**2
        return self.expectation(lambda h: self(h)) + noise**2

    def linear_coefficients(self) -> np.ndarray:
        """``C_1 = E[g*(h) h]``: (r,) (exact for polynomials)."""
        if self.polynomial is not None:
            return np.array(
                [
                    (self.polynomial * Polynomial.variable(self.rank, k)).expectation()
                    for k in range(self.rank)
                ]
            )
        return np.array([self.expectation(lambda h, k=k: h[:, k]) for k in range(self.rank)])


class _Compiler:
    """Turns a whitelisted AST into an evaluator and, where possible, an exact polynomial."""

    def __init__(self, expression: str, rank: int):
        self.expression = expression
        self.rank = rank
        self.kinked_arguments: list[Evaluator] = []

    def reject(self, node: ast.AST, why: str) -> ValueError:
        snippet = ast.get_source_segment(self.expression, node) or type(node).__name__
        return ValueError(f"{why}: '{snippet}' in '{self.expression}'")

    def compile(self, node: ast.AST) -> tuple[Evaluator, Polynomial | None]:
        evaluate, polynomial = self.compile_node(node)
        if any(isinstance(n, ast.Name) and _variable_index(n.id) for n in ast.walk(node)):
            return evaluate, polynomial
        # A constant part is folded now, so '2**9999' or '(-8)**0.5' fail here and not mid-run.
        try:
            with np.errstate(all="raise"):
                value = complex(evaluate(np.zeros((1, self.rank))))
        except (ArithmeticError, ValueError, TypeError, FloatingPointError):
            value = complex("nan")
        if value.imag or not np.isfinite(value.real):
            raise self.reject(node, "not a finite real number")
        return (lambda h: value.real), Polynomial.constant(self.rank, value.real)

    def compile_node(self, node: ast.AST) -> tuple[Evaluator, Polynomial | None]:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise self.reject(node, "only numbers are allowed as constants")
            value = float(node.value)
            return (lambda h: value), Polynomial.constant(self.rank, value)
        if isinstance(node, ast.Name):
            index = _variable_index(node.id)
            if index is None:
                raise self.reject(node, f"unknown name (use z1..zr or {', '.join(FUNCTIONS)})")
            return (lambda h: h[:, index - 1]), Polynomial.variable(self.rank, index - 1)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
            f, p = self.compile(node.operand)
            if isinstance(node.op, ast.UAdd):
                return f, p
            return (lambda h: -f(h)), (-p if p is not None else None)
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.reject(node, "not allowed in a target expression")

    def binary(self, node: ast.BinOp) -> tuple[Evaluator, Polynomial | None]:
        (f, p), (g, q) = self.compile(node.left), self.compile(node.right)
        if isinstance(node.op, ast.Add):
            return (lambda h: f(h) + g(h)), _both(p, q, Polynomial.__add__)
        if isinstance(node.op, ast.Sub):
            return (lambda h: f(h) - g(h)), _both(p, q, Polynomial.__sub__)
        if isinstance(node.op, ast.Mult):
            return (lambda h: f(h) * g(h)), _both(p, q, Polynomial.__mul__)
        if isinstance(node.op, ast.Div):
            divisor = q.constant_value if q is not None else None
            if divisor == 0:
                raise self.reject(node, "division by zero")
            polynomial = p.scale(1 / divisor) if p is not None and divisor is not None else None
            return (lambda h: f(h) / g(h)), polynomial
        if isinstance(node.op, ast.Pow):
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
            polynomial = None
            if p is not None and power is not None and power == int(power):
                if 0 <= power <= MAX_POLYNOMIAL_POWER:
                    polynomial = p ** int(power)
            return (lambda h: f(h) ** g(h)), polynomial
        raise self.reject(node, "operator not allowed (use + - * / **)")

    def call(self, node: ast.Call) -> tuple[Evaluator, Polynomial | None]:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in FUNCTIONS:
            raise self.reject(node, f"unknown function (use {', '.join(FUNCTIONS)})")
        if len(node.args) != 1 or node.keywords:
            raise self.reject(node, f"{name} takes exactly one argument")
        f, p = self.compile(node.args[0])
        if name in _HERMITE:
            k = _HERMITE[name]
            return (lambda h: hermite(k, f(h))), (p.hermite(k) if p is not None else None)
        if name in _KINKED:
            self.kinked_arguments.append(f)
        function = {**_SMOOTH, **_KINKED}[name]
        return (lambda h: function(f(h))), None


def _non_negative(node: ast.AST) -> bool:
    """Whether the expression is non-negative by its outer function, whatever its argument."""
    return isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("abs", "relu", "exp")


def _both(p: Polynomial | None, q: Polynomial | None, operation) -> Polynomial | None:
    return None if p is None or q is None else operation(p, q)


def _variable_index(name: str) -> int | None:
    if name.startswith("z") and name[1:].isdigit() and int(name[1:]) >= 1:
        return int(name[1:])
    return None


@lru_cache(maxsize=256)
def parse_target(expression: str) -> Target:
    """Parse ``expression`` into a Target; ValueError saying what is wrong otherwise."""
    if not isinstance(expression, str):
        raise ValueError(f"a target expression is a string, got {type(expression).__name__}")
    text = expression.strip()
    if not text:
        raise ValueError("the target expression is empty")
    if len(text) > MAX_LENGTH:
        raise ValueError(f"the target expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, RecursionError, MemoryError) as err:
        raise ValueError(f"'{text}' is not a valid expression ({type(err).__name__})") from None
    indices = [
        index
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and (index := _variable_index(node.id)) is not None
    ]
    rank = max(indices, default=1)
    compiler = _Compiler(text, rank)
    try:
        evaluate, polynomial = compiler.compile(tree.body)
    except RecursionError:
        raise ValueError(f"'{text}' is nested too deeply") from None
    if not indices:
        raise ValueError(f"'{text}' uses no coordinate z1..zr")
    return Target(text, rank, evaluate, polynomial, tuple(compiler.kinked_arguments))


def teacher_directions(rng: np.random.Generator, rank: int, dim: int) -> np.ndarray:
    """``W*``: (rank, dim) with orthonormal rows, Haar-distributed (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, rank)))
    # Fixing the signs of diag(R) makes Q Haar and a deterministic function of the draw.
    return (q * np.sign(np.diag(r))).T.copy()


@dataclass(frozen=True)
class Teacher:
    """``y = g*(W* x) + noise · ε``: a target, its directions and the label noise level.

    directions: (r, d) orthonormal rows ``W*``; noise: the standard deviation ``σ_ε``.
    """

    target: Target
    directions: np.ndarray
    noise: float = 0.0

    @classmethod
    def draw(cls, seed: int, expression: str, dim: int, noise: float = 0.0) -> Teacher:
        """The teacher of ``seed``: ``W*`` drawn from the seed's own teacher generator."""
        target = parse_target(expression)
        directions = teacher_directions(generator(seed, TEACHER), target.rank, dim)
        return cls(target, directions, noise)

    def labels(self, block: Block) -> tuple[np.ndarray, np.ndarray]:
        """(h, y) of a block: h (rows, r) the target coordinates ``x W*ᵀ``, y (rows,) labels."""
        h = block.x @ self.directions.T.astype(block.x.dtype)
        y = self.target(h)
        if self.noise:
            y += self.noise * block.noise
        return h, y
