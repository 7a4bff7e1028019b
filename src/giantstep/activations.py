"""Student activations ``σ`` with their derivatives and Hermite coefficients.

An activation is named by a string (the config's ``activation`` key):

- ``tanh``, ``relu``, ``leaky_relu`` (slope 0.01) or ``leaky_relu(s)``, ``erf``, ``sigmoid``,
  ``softplus``, ``gelu`` (``x Φ(x)``), ``sin``, ``abs``, ``sign``, ``linear``;
- ``He<k>`` (``He1`` .. ``He9`` and beyond): the probabilists' Hermite polynomial;
- ``poly(c0, c1, ..., cm)``: ``c0 + c1 x + ... + cm x^m``;
- ``py:module:function`` or ``py:module:function:derivative``: a user callable (numpy in,
  numpy out); without a derivative it is computed by central differences (error ~1e-10).

Every method keeps the input's floating dtype and returns fresh arrays the caller may overwrite.

**Checking is not building.** :func:`check_activation` is what config validation calls: it reads
the spec and never imports anything, so validating a config (``sweep --dry-run`` included)
runs no user code. A ``py:`` spec runs the named module's code when the activation is built for a
run, so it is refused unless the caller opts in (``allow_python=True``; ``--allow-python`` on
the command line). :func:`get_activation` builds: it imports a ``py:`` module and calls the
function once on a small array, so a function that is not an array function fails there with a
message (:class:`UserFunctionError`), not deep inside a run. Sizes are bounded: ``He<k>`` and
``poly(...)`` up to degree ``hermite.MAX_DEGREE``, specs up to ``MAX_SPEC_LENGTH`` characters.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.polynomial import hermite_e
from scipy import special

from giantstep.errors import ConfigError
from giantstep.hermite import MAX_DEGREE, check_degree, coefficients, hermite, rounding_bound

Function = Callable[[np.ndarray], np.ndarray]

#: Longest activation spec, in characters (a poly(...) of the largest degree fits).
MAX_SPEC_LENGTH = 4000
#: Most coefficients of ``poly(c0, ..., cm)``: degree m up to ``hermite.MAX_DEGREE``.
MAX_POLY_COEFFICIENTS = MAX_DEGREE + 1
_IDENTIFIER = r"[A-Za-z_]\w*"
_PYTHON_SPEC = re.compile(
    rf"py:({_IDENTIFIER}(?:\.{_IDENTIFIER})*):({_IDENTIFIER})(?::({_IDENTIFIER}))?"
)
#: The array a user function is tried on when it is built: 2-D, like the pre-activations.
_PROBE = np.linspace(-2.0, 2.0, 12).reshape(3, 4)


class UserFunctionError(ConfigError):
    """A ``py:`` activation (or a callable given to ``Activation.from_callable``) cannot be
    imported, raised, or did not return an array of its input's shape."""


ACTIVATION_FORMS = (
    "tanh, relu, leaky_relu, leaky_relu(s), erf, sigmoid, softplus, gelu, sin, abs, sign, "
    "linear, He1..He9 (He<k>), poly(c0, c1, ...), py:module:function[:derivative]"
)


def _floats(x) -> np.ndarray:
    """``x`` as a float array: itself if it is one; Python numbers and numpy scalars as 0-d
    arrays, integers as float64 (relu of a float raised AttributeError, poly of ints
    UFuncTypeError, relu of ints returned ints)."""
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        return x
    x = np.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(np.float64)


#: A Hermite coefficient whose rounding bound (``hermite.rounding_bound``) is above this is lost:
#: the quadrature, in double precision, cannot tell it from another value nearby — nor a zero
#: ``μ_k`` from a small one. SCIENCE.md §3 asks 1e-8; the bound was seen exceeded 1.5-fold.
LOST_IN_ROUNDING = 1e-9


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
    # A polynomial σ in the Hermite basis, σ = Σ_j b_j He_j: its μ_j = j! b_j exactly.
    hermite_series: tuple[float, ...] | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.function(_floats(x))

    def derivative(self, x: np.ndarray) -> np.ndarray:
        """``σ'(x)``, a fresh array of x's shape and dtype."""
        return self.derivative_function(_floats(x))

    def value_and_derivative(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(σ(x), σ'(x))``, two fresh arrays of x's shape and dtype."""
        x = _floats(x)
        if self.fused is not None:
            return self.fused(x)
        return self.function(x), self.derivative_function(x)

    def hermite_coefficients(self, max_degree: int) -> np.ndarray:
        """``μ_0(σ) .. μ_K(σ)``: (K + 1,), exact for a polynomial σ, else by quadrature split
        at the kinks — whose rounding (``σ`` times ``He_k``, which grows like ``sqrt(k!)``)
        swamps ``μ_k`` of a smooth σ from ``k ≈ 24`` on (``hermite.coefficients``)."""
        if self.hermite_series is None:
            return coefficients(self.function, max_degree, self.kinks)
        max_degree = check_degree(max_degree, "max_degree")
        series = np.zeros(max_degree + 1)
        kept = self.hermite_series[: max_degree + 1]
        series[: len(kept)] = kept
        return series * np.array([float(math.factorial(j)) for j in range(max_degree + 1)])

    def hermite_rounding(self, max_degree: int) -> np.ndarray:
        """(K + 1,): a bound on the rounding error of each ``μ_k`` of
        :meth:`hermite_coefficients` (``hermite.rounding_bound``; zeros for a polynomial σ)."""
        if self.hermite_series is not None:
            return np.zeros(check_degree(max_degree, "max_degree") + 1)
        return rounding_bound(self.function, max_degree, self.kinks)

    def first_lost_degree(self, max_degree: int) -> int | None:
        """The first ``k ≤ K`` whose ``μ_k`` is lost in rounding (its bound above
        ``LOST_IN_ROUNDING``; 17 for tanh, 18 for relu), or None."""
        lost = np.flatnonzero(self.hermite_rounding(max_degree) > LOST_IN_ROUNDING)
        return int(lost[0]) if lost.size else None

    @classmethod
    def from_callable(
        cls,
        function: Function,
        derivative: Function | None = None,
        *,
        name: str | None = None,
        kinks: tuple[float, ...] = (),
    ) -> Activation:
        """Wrap a user's numpy function; without a derivative, use central differences.

        Each function is called once on a small (3, 4) float64 array: UserFunctionError if it
        raises or does not return a numeric array of that shape (``print``, ``math.sin``).
        """
        name = name or getattr(function, "__name__", "custom")
        if not callable(function):
            raise UserFunctionError(f"activation {name}: {function!r} is not callable")
        if derivative is None:
            _probe(name, "", function)
            derivative = _central_difference(function)
        elif not callable(derivative):
            raise UserFunctionError(f"activation {name}: {derivative!r} is not callable")
        else:
            _probe(name, "", function)
            _probe(name, "its derivative ", derivative)
        return cls(name, _fresh(name, function), _fresh(name, derivative), kinks)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype} and shape {value.shape}"
    return f"a {type(value).__name__}"


def _probe(name: str, role: str, f: Function) -> None:
    """Call f once on _PROBE; UserFunctionError unless it returns a numeric array of its shape.

    role: "" for the function itself, "its derivative " for the derivative.
    """
    try:
        with np.errstate(all="ignore"):
            out = f(_PROBE.copy())
    except (Exception, SystemExit) as err:  # noqa: BLE001 - any failure of user code, named
        raise UserFunctionError(
            f"activation {name}: {role}raised {type(err).__name__} on a float64 array of shape "
            f"{_PROBE.shape}: {err}"
        ) from None
    try:
        array = np.asarray(out)
    except Exception:  # noqa: BLE001 - whatever it returned is not an array
        array = None
    if array is None or array.shape != _PROBE.shape or array.dtype.kind not in "biuf":
        raise UserFunctionError(
            f"activation {name}: {role}did not return an array of the input's shape "
            f"(given a float64 array of shape {_PROBE.shape}, it returned {_describe(out)}); "
            "it must map a numpy array elementwise to one of the same shape"
        )


def _fresh(name: str, f: Function) -> Function:
    """f with its output as a new array of the input's dtype (user functions may return views).

    A failure of the user's function mid-run is reported as UserFunctionError naming it.
    """

    def wrapped(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        try:
            out = f(x)
        except (Exception, SystemExit) as err:  # noqa: BLE001 - user code: named, not a traceback
            raise UserFunctionError(
                f"activation {name}: failed on an array of dtype {x.dtype} and shape {x.shape} "
                f"({type(err).__name__}: {err})"
            ) from err
        if np.shape(out) != x.shape:  # broadcast, it would give every entry one row's value
            raise UserFunctionError(
                f"activation {name}: given an array of shape {x.shape} it returned "
                f"{_describe(out)}; it must map a numpy array elementwise to one of the same shape"
            )
        return np.array(out, dtype=x.dtype)

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
    # Explicit outputs: on a 0-d array a ufunc returns a scalar, which out= cannot take.
    value = np.tanh(x, out=np.empty_like(x))
    slope = np.square(value, out=np.empty_like(value))
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
    check_degree(k, "the degree of the activation He<k>")
    return Activation(
        f"He{k}",
        lambda x: hermite(k, x),
        (lambda x: k * hermite(k - 1, x)) if k else (lambda x: np.zeros_like(x)),
        kernel=("hermite", (float(k),), ()),
        hermite_series=(0.0,) * k + (1.0,),
    )


def _polynomial(coefs: list[float]) -> Activation:
    """``Σ_j c_j x^j`` by Horner's rule with Python floats (keeps float32 inputs float32)."""

    def evaluate(c: list[float], x: np.ndarray) -> np.ndarray:
        result = np.full_like(x, c[-1])
        for cj in reversed(c[:-1]):
            result *= x
            result += cj
        return result

    if len(coefs) > MAX_POLY_COEFFICIENTS:
        raise ValueError(
            f"poly(...) has {len(coefs)} coefficients, above the limit MAX_POLY_COEFFICIENTS = "
            f"{MAX_POLY_COEFFICIENTS} (degree hermite.MAX_DEGREE = {MAX_DEGREE})"
        )
    if not all(np.isfinite(coefs)):
        raise ValueError(f"poly(...) coefficients must be finite numbers, got {coefs}")
    slopes = [j * c for j, c in enumerate(coefs)][1:] or [0.0]
    name = "poly(" + ", ".join(f"{c:g}" for c in coefs) + ")"
    return Activation(
        name,
        lambda x: evaluate(coefs, x),
        lambda x: evaluate(slopes, x),
        kernel=("poly", tuple(coefs), tuple(slopes)),
        hermite_series=tuple(float(b) for b in hermite_e.poly2herme(coefs)),
    )


def _python_spec(spec: str) -> tuple[str, list[str]]:
    """(module, [function, derivative?]) of ``py:module:function[:derivative]``; syntax only."""
    match = _PYTHON_SPEC.fullmatch(spec)
    if match is None:
        raise ValueError(
            f"'{_shorten(spec)}' is not of the form py:module:function[:derivative] "
            "(module a dotted name, functions names in it)"
        )
    module, function, derivative = match.groups()
    return module, [function] + ([derivative] if derivative else [])


def _user_function(spec: str) -> Activation:
    module_name, names = _python_spec(spec)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserFunctionError(
            f"activation {spec}: cannot import module '{module_name}': {err}"
        ) from None
    except (Exception, SystemExit) as err:  # noqa: BLE001 - its code failed importing
        raise UserFunctionError(
            f"activation {spec}: importing module '{module_name}' raised "
            f"{type(err).__name__}: {err}"
        ) from None
    functions = []
    for name in names:
        if not callable(getattr(module, name, None)):
            raise UserFunctionError(
                f"activation {spec}: module '{module_name}' has no function '{name}'"
            )
        functions.append(getattr(module, name))
    return Activation.from_callable(*functions, name=spec)


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    "linear": Activation(
        "linear", lambda x: np.array(x), lambda x: np.ones_like(x), hermite_series=(0.0, 1.0)
    ),
    "leaky_relu": _leaky_relu(0.01),
}

ACTIVATION_NAMES = tuple(_FIXED)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def check_activation(spec: str, allow_python: bool = False) -> str:
    """Validate an activation spec without building anything user-defined; returns it stripped.

    The config's check (``activation``): named, ``He<k>``, ``leaky_relu(s)`` and ``poly(...)``
    specs are parsed and their limits checked; a ``py:module:function[:derivative]`` spec is
    checked for its syntax only — the module is **not** imported — and refused unless
    ``allow_python``, since building it runs that module's code. ValueError saying why.
    """
    text = _spec_text(spec)
    if text.startswith("py:"):
        module, _ = _python_spec(text)
        if not allow_python:
            raise ValueError(
                f"'{text}' runs the code of Python module '{module}' (imported when the run "
                "starts); allow it with --allow-python on the command line, or "
                "allow_python=True in load_config/validate_config"
            )
        return text
    get_activation(text)
    return text


def _spec_text(spec: str) -> str:
    if not isinstance(spec, str):
        raise ValueError(f"an activation is named by a string, got {type(spec).__name__}")
    text = spec.strip()
    if len(text) > MAX_SPEC_LENGTH:
        raise ValueError(
            f"the activation spec has {len(text)} characters, above the limit "
            f"MAX_SPEC_LENGTH = {MAX_SPEC_LENGTH}"
        )
    return text


def get_activation(spec: str) -> Activation:
    """The activation named by ``spec`` (see the module docstring), built: a ``py:`` spec
    imports its module and tries the function (UserFunctionError if it is not an array
    function). ValueError if the spec is unknown or past a limit."""
    return _build(_spec_text(spec))


@lru_cache(maxsize=64)
def _build(spec: str) -> Activation:
    if spec in _FIXED:
        return _FIXED[spec]
    if match := re.fullmatch(r"He(\d+)", spec):
        return _hermite_activation(int(match.group(1)))
    if match := re.fullmatch(rf"leaky_relu\(\s*({_NUMBER})\s*\)", spec):
        return _leaky_relu(float(match.group(1)))
    if match := re.fullmatch(r"poly\((.*)\)", spec):
        terms = [t.strip() for t in match.group(1).split(",")]
        if not all(re.fullmatch(_NUMBER, t) for t in terms):
            raise ValueError(
                f"'{_shorten(spec)}': poly(...) takes numbers c0, c1, ..., e.g. poly(0, 1, 0.5)"
            )
        return _polynomial([float(t) for t in terms])
    if spec.startswith("py:"):
        return _user_function(spec)
    raise ValueError(f"unknown activation '{_shorten(spec)}'; use one of: {ACTIVATION_FORMS}")
