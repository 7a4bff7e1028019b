"""Student activations ``σ`` with their derivatives and Hermite coefficients.

An activation is named by a string (the config's ``activation`` key):

- ``tanh``, ``relu``, ``leaky_relu`` (slope 0.01) or ``leaky_relu(s)``, ``erf``, ``sigmoid``,
  ``softplus``, ``gelu`` (``x Φ(x)``), ``sin``, ``abs``, ``sign``, ``linear``;
- ``He<k>`` (``He1`` .. ``He9`` and beyond): the probabilists' Hermite polynomial;
- ``poly(c0, c1, ..., cm)``: ``c0 + c1 x + ... + cm x^m``;
- ``py:module:function`` or ``py:module:function:derivative``: a user callable (numpy in,
  numpy out); without a derivative it is computed by central differences (error ~1e-10).

Every method keeps the input's floating dtype and returns fresh arrays the caller may overwrite.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import special

from giantstep.hermite import coefficients, hermite

Function = Callable[[np.ndarray], np.ndarray]

ACTIVATION_FORMS = (
    "tanh, relu, leaky_relu, leaky_relu(s), erf, sigmoid, softplus, gelu, sin, abs, sign, "
    "linear, He1..He9 (He<k>), poly(c0, c1, ...), py:module:function[:derivative]"
)


@dataclass(frozen=True)
class Activation:
    """``σ`` and ``σ'`` acting elementwise; ``kinks`` are where σ or σ' jumps."""

    name: str
    function: Function
    derivative_function: Function
    kinks: tuple[float, ...] = ()
    # Optional fused σ, σ' (e.g. tanh: σ' = 1 − σ²) for the training loop's hot path.
    fused: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None
    # (name, p, q) of the compiled pass in giantstep.kernels that computes the same σ, σ'.
    kernel: tuple[str, tuple[float, ...], tuple[float, ...]] | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.function(x)

    def derivative(self, x: np.ndarray) -> np.ndarray:
        """``σ'(x)``, a fresh array of x's shape and dtype."""
        return self.derivative_function(x)

    def value_and_derivative(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(σ(x), σ'(x))``, two fresh arrays of x's shape and dtype."""
        if self.fused is not None:
            return self.fused(x)
        return self.function(x), self.derivative_function(x)

    def hermite_coefficients(self, max_degree: int) -> np.ndarray:
        """``μ_0(σ) .. μ_K(σ)``: (K + 1,), quadrature split at the kinks."""
        return coefficients(self.function, max_degree, self.kinks)

    @classmethod
    def from_callable(
        cls,
        function: Function,
        derivative: Function | None = None,
        *,
        name: str | None = None,
        kinks: tuple[float, ...] = (),
    ) -> Activation:
        """Wrap a user's numpy function; without a derivative, use central differences."""
        if not callable(function):
            raise ValueError(f"{function!r} is not callable")
        if derivative is None:
            derivative = _central_difference(function)
        elif not callable(derivative):
            raise ValueError(f"{derivative!r} is not callable")
        return cls(
            name or getattr(function, "__name__", "custom"),
            _fresh(function),
            _fresh(derivative),
            kinks,
        )


def _fresh(f: Function) -> Function:
    """f with its output as a new array of the input's dtype (user functions may return views)."""

    def wrapped(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return np.array(np.broadcast_to(f(x), x.shape), dtype=x.dtype)

    return wrapped


def _central_difference(f: Function) -> Function:
    def derivative(x: np.ndarray) -> np.ndarray:
        x64 = np.asarray(x, dtype=float)
        # Step ~ eps^(1/3) balances truncation and rounding error of the central difference.
        h = 6e-6 * np.maximum(1.0, np.abs(x64))
        return ((np.asarray(f(x64 + h)) - np.asarray(f(x64 - h))) / (2 * h)).astype(
            np.asarray(x).dtype
        )

    return derivative


def _tanh_fused(x):
    value = np.tanh(x)
    slope = np.square(value)
    np.subtract(1, slope, out=slope)
    return value, slope


def _relu_fused(x):
    slope = (x > 0).astype(x.dtype)
    return np.maximum(x, 0), slope


def _sigmoid_derivative(x):
    s = special.expit(x)
    return s * (1 - s)


def _gelu(x):
    return x * special.ndtr(x)


def _gelu_derivative(x):
    return special.ndtr(x) + x * np.exp(-np.square(x) / 2) * x.dtype.type(1 / np.sqrt(2 * np.pi))


def _erf_derivative(x):
    return np.exp(-np.square(x)) * x.dtype.type(2 / np.sqrt(np.pi))


def _leaky_relu(slope: float) -> Activation:
    if not np.isfinite(slope):
        raise ValueError(f"leaky_relu slope must be finite, got {slope}")
    return Activation(
        f"leaky_relu({slope:g})",
        lambda x: np.where(x > 0, x, slope * x),
        lambda x: np.where(x > 0, x.dtype.type(1), x.dtype.type(slope)),
        kinks=(0.0,),
        kernel=("leaky_relu", (slope,), ()),
    )


def _hermite_activation(k: int) -> Activation:
    return Activation(
        f"He{k}",
        lambda x: hermite(k, x),
        (lambda x: k * hermite(k - 1, x)) if k else (lambda x: np.zeros_like(x)),
        kernel=("hermite", (float(k),), ()),
    )


def _polynomial(coefs: list[float]) -> Activation:
    """``Σ_j c_j x^j`` by Horner's rule with Python floats (keeps float32 inputs float32)."""

    def evaluate(c: list[float], x: np.ndarray) -> np.ndarray:
        result = np.full_like(x, c[-1])
        for cj in reversed(c[:-1]):
            result *= x
            result += cj
        return result

    slopes = [j * c for j, c in enumerate(coefs)][1:] or [0.0]
    name = "poly(" + ", ".join(f"{c:g}" for c in coefs) + ")"
    return Activation(
        name,
        lambda x: evaluate(coefs, x),
        lambda x: evaluate(slopes, x),
        kernel=("poly", tuple(coefs), tuple(slopes)),
    )


def _user_function(spec: str) -> Activation:
    parts = spec.split(":")
    if len(parts) not in (3, 4) or not all(parts[1:]):
        raise ValueError(f"'{spec}' is not of the form py:module:function[:derivative]")
    module_name, names = parts[1], parts[2:]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import module '{module_name}': {err}") from None
    functions = []
    for name in names:
        if not callable(getattr(module, name, None)):
            raise ValueError(f"module '{module_name}' has no function '{name}'")
        functions.append(getattr(module, name))
    return Activation.from_callable(*functions, name=spec)


_FIXED: dict[str, Activation] = {
    "tanh": Activation(
        "tanh", np.tanh, lambda x: _tanh_fused(x)[1], fused=_tanh_fused, kernel=("tanh", (), ())
    ),
    "relu": Activation(
        "relu",
        lambda x: np.maximum(x, 0),
        lambda x: (x > 0).astype(x.dtype),
        (0.0,),
        _relu_fused,
        kernel=("relu", (), ()),
    ),
    "erf": Activation("erf", special.erf, _erf_derivative, kernel=("erf", (), ())),
    "sigmoid": Activation(
        "sigmoid", special.expit, _sigmoid_derivative, kernel=("sigmoid", (), ())
    ),
    "softplus": Activation(
        "softplus", lambda x: np.logaddexp(0, x), special.expit, kernel=("softplus", (), ())
    ),
    "gelu": Activation("gelu", _gelu, _gelu_derivative, kernel=("gelu", (), ())),
    "sin": Activation("sin", np.sin, np.cos),
    "abs": Activation("abs", np.abs, lambda x: np.sign(x), (0.0,)),
    "sign": Activation("sign", np.sign, lambda x: np.zeros_like(x), (0.0,)),
    "linear": Activation("linear", lambda x: np.array(x), lambda x: np.ones_like(x)),
    "leaky_relu": _leaky_relu(0.01),
}

ACTIVATION_NAMES = tuple(_FIXED)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


@lru_cache(maxsize=64)
def get_activation(spec: str) -> Activation:
    """The activation named by ``spec`` (see the module docstring); ValueError if unknown."""
    if not isinstance(spec, str):
        raise ValueError(f"an activation is named by a string, got {type(spec).__name__}")
    spec = spec.strip()
    if spec in _FIXED:
        return _FIXED[spec]
    if match := re.fullmatch(r"He(\d+)", spec):
        return _hermite_activation(int(match.group(1)))
    if match := re.fullmatch(rf"leaky_relu\(\s*({_NUMBER})\s*\)", spec):
        return _leaky_relu(float(match.group(1)))
    if match := re.fullmatch(r"poly\((.*)\)", spec):
        terms = [t.strip() for t in match.group(1).split(",")]
        if not all(re.fullmatch(_NUMBER, t) for t in terms):
            raise ValueError(f"'{spec}': poly(...) takes numbers c0, c1, ..., e.g. poly(0, 1, 0.5)")
        return _polynomial([float(t) for t in terms])
    if spec.startswith("py:"):
        return _user_function(spec)
    raise ValueError(f"unknown activation '{spec}'; use one of: {ACTIVATION_FORMS}")
