"""Fused elementwise passes over a block's pre-activations, compiled by numba.

The hot loop of a block is BLAS (``X Wᵀ``, ``Gᵀ X``, ``FᵀF``) plus elementwise work on the
(rows, N) pre-activations: ``σ``, ``σ'`` and the residual product ``σ'(X Wᵀ) ⊙ (r aᵀ)``. numpy
does that in several passes, each reading and writing the whole block, on one core. Here each
is one pass, in place, over the rows on every core (``prange``), with inner loops LLVM
vectorises.

- ``relu``, ``leaky_relu(s)``, ``poly(...)`` and ``He<k>``: the same IEEE operations in the
  same order as the numpy path, so the same bits.
- ``tanh``: Cephes' algorithm (a rational function below 0.625, ``1 − 2/(e^{2|x|} + 1)`` above,
  with ``e^y`` from a Padé approximant and an exact power of two), written in arithmetic so that
  it vectorises; it agrees with ``numpy.tanh`` to an ulp or two (about 2e-16 relative).
- ``erf``, ``sigmoid``, ``softplus``, ``gelu``: the C library's ``erf``, ``erfc``, ``exp`` and
  ``log1p``, one call per element, on every core; within a few ulps of scipy's.

Arithmetic is in float64 whatever the block's dtype (float32 blocks are rounded once, on the
store). Compiled code is cached on disk (numba's ``cache=True``), so only a machine's first run
pays the compilation (a second or two per kernel); every later process loads it.

An activation without a kernel (``sin``, ``abs``, a user's callable) keeps the numpy path.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# Kernel kinds (the first entry of ``Activation.kernel``).
RELU, LEAKY, TANH, ERF, SIGMOID, SOFTPLUS, GELU, HERMITE, POLY = range(9)
KINDS = {
    "relu": RELU,
    "leaky_relu": LEAKY,
    "tanh": TANH,
    "erf": ERF,
    "sigmoid": SIGMOID,
    "softplus": SOFTPLUS,
    "gelu": GELU,
    "hermite": HERMITE,
    "poly": POLY,
}

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
_PARALLEL = {**_JIT, "parallel": True}

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_LN2 = math.log(2.0)


@njit(**_JIT)
def _exp_positive(y):
    """``e^y`` for 0 ≤ y ≤ 40 (Cephes exp: Padé on ``|r| ≤ ln2/2`` times ``2^k``, k exact)."""
    k = np.floor(1.4426950408889634 * y + 0.5)
    if not k >= 0.0:  # NaN: any k keeps the result NaN; a shift by garbage would not
        k = 0.0
    if k > 60.0:
        k = 60.0
    r = y - k * 6.93145751953125e-1
    r = r - k * 1.42860682030941723212e-6
    rr = r * r
    p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr + 1.0)
    q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
         + 2.27265548208155028766e-1) * rr + 2.0  # fmt: skip
    e = 1.0 + 2.0 * (p / (q - p))
    return e * float(np.int64(1) << np.int64(k))


@njit(**_JIT)
def _tanh(x):
    """``tanh(x)`` in float64 (Cephes tanh.c), branch-free enough to vectorise."""
    z = abs(x)
    if z > 20.0:  # tanh is 1 to the last bit beyond ~19.06; NaN stays NaN below
        z = 20.0
    large = 1.0 - 2.0 / (_exp_positive(2.0 * z) + 1.0)
    if x < 0:
        large = -large
    s = x * x
    small = x + x * s * (
        ((-9.64399179425052238628e-1 * s - 9.92877231001918586564e1) * s
         - 1.61468768441708447952e3)
        / (((s + 1.12811678491632931402e2) * s + 2.23548839060100448583e3) * s
           + 4.84406305325125486048e3)
    )  # fmt: skip
    return small if z < 0.625 else large


@njit(**_JIT)
def _expit(x):
    """scipy's ``expit``: ``1/(1 + e^{-x})``, without overflow for negative x."""
    if x < 0:
        e = math.exp(x)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(-x))


@njit(**_JIT)
def _softplus(x):
    """numpy's ``logaddexp(0, x)``."""
    if x == 0:
        return _LN2
    if x < 0:
        return math.log1p(math.exp(x))
    if x > 0:
        return x + math.log1p(math.exp(-x))
    return x  # NaN


@njit(**_JIT)
def _value_slope(kind, p, q, x):
    """``(σ(x), σ'(x))`` for one element, in float64."""
    if kind == RELU:
        value = x if (x >= 0 or x != x) else 0.0
        return value, 1.0 if x > 0 else 0.0
    if kind == LEAKY:
        return (x, 1.0) if x > 0 else (p[0] * x, p[0])
    if kind == TANH:
        t = _tanh(x)
        return t, 1.0 - t * t
    if kind == ERF:
        return math.erf(x), math.exp(-(x * x)) * _TWO_OVER_SQRT_PI
    if kind == SIGMOID:
        s = _expit(x)
        return s, s * (1.0 - s)
    if kind == SOFTPLUS:
        return _softplus(x), _expit(x)
    if kind == GELU:
        cdf = 0.5 * math.erfc(-x * _INV_SQRT_2)
        return x * cdf, cdf + x * math.exp(-(x * x) / 2.0) * _INV_SQRT_2PI
    if kind == HERMITE:
        degree = int(p[0])
        previous, current = 0.0, 1.0
        for j in range(degree - 1):
            previous, current = current, x * current - j * previous
        slope = degree * current if degree else 0.0
        if degree:
            previous, current = current, x * current - (degree - 1) * previous
        return current, slope
    # POLY: Horner, coefficients p (c0..cm) and q (the derivative's)
    value = p[-1]
    for j in range(len(p) - 2, -1, -1):
        value = value * x + p[j]
    slope = q[-1]
    for j in range(len(q) - 2, -1, -1):
        slope = slope * x + q[j]
    return value, slope


@njit(**_PARALLEL)
def _values(pre, kind, p, q):
    rows, cols = pre.shape
    for i in prange(rows):
        for j in range(cols):
            pre[i, j] = _value_slope(kind, p, q, np.float64(pre[i, j]))[0]


@njit(**_PARALLEL)
def _values_and_slopes(pre, value, kind, p, q):
    rows, cols = pre.shape
    for i in prange(rows):
        for j in range(cols):
            v, s = _value_slope(kind, p, q, np.float64(pre[i, j]))
            value[i, j] = v
            pre[i, j] = s


@njit(**_PARALLEL)
def _scaled_slopes(pre, kind, p, q, r, a):
    rows, cols = pre.shape
    for i in prange(rows):
        for j in range(cols):
            pre[i, j] = _value_slope(kind, p, q, np.float64(pre[i, j]))[1]
            pre[i, j] *= r[i]
            pre[i, j] *= a[j]


@njit(**_PARALLEL)
def _scale(g, r, a):
    rows, cols = g.shape
    for i in prange(rows):
        for j in range(cols):
            g[i, j] *= r[i]
            g[i, j] *= a[j]


def _arguments(kernel) -> tuple[int, np.ndarray, np.ndarray]:
    name, p, q = kernel
    return KINDS[name], np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)


def _ready(pre: np.ndarray) -> bool:
    return pre.flags.c_contiguous and pre.ndim == 2 and pre.dtype in (np.float64, np.float32)


def values(activation, pre: np.ndarray) -> np.ndarray:
    """``σ(pre)`` (rows, N), overwriting ``pre`` when the activation has a kernel."""
    if activation.kernel is None or not _ready(pre):
        return activation(pre)
    _values(pre, *_arguments(activation.kernel))
    return pre


def values_and_slopes(activation, pre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(σ(pre), σ'(pre))``; with a kernel, ``σ'`` overwrites ``pre``."""
    if activation.kernel is None or not _ready(pre):
        return activation.value_and_derivative(pre)
    value = np.empty_like(pre)
    _values_and_slopes(pre, value, *_arguments(activation.kernel))
    return value, pre


def scale(slope: np.ndarray, r: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``slope ⊙ (r aᵀ)`` in place, as ``(slope · r_i) · a_j`` (the numpy path's order)."""
    if _ready(slope) and r.dtype == slope.dtype and a.dtype == slope.dtype:
        _scale(slope, r, a)
    else:
        slope *= r[:, None]
        slope *= a
    return slope


def scaled_slopes(activation, pre: np.ndarray, r: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``σ'(pre) ⊙ (r aᵀ)`` (rows, N), overwriting ``pre`` when the activation has a kernel."""
    same = r.dtype == pre.dtype and a.dtype == pre.dtype
    if activation.kernel is None or not _ready(pre) or not same:
        return scale(activation.derivative(pre), r, a)
    _scaled_slopes(pre, *_arguments(activation.kernel), r, a)
    return pre
