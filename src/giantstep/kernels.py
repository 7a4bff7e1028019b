"""Fused elementwise passes over a block's pre-activations, compiled by numba.

The hot loop of a block is BLAS (``X Wᵀ``, ``Gᵀ X``, ``FᵀF``) plus elementwise work on the
(rows, N) pre-activations: ``σ``, ``σ'`` and the residual product ``σ'(X Wᵀ) ⊙ (r aᵀ)``. numpy
does that in several passes, each reading and writing the whole block, on one core. Here each
is one pass, in place, over the rows on every core (``prange``), with inner loops LLVM
vectorises.

- ``relu``, ``leaky_relu(s)``, ``poly(...)`` and ``He<k>``: the same IEEE operations in the
  same order as the numpy path, so the same bits.
- ``tanh``: where numpy's own tanh is vectorised (float32; float64 on AVX512 machines) it is
  used, its rows split over the cores, and ``1 − t²`` and the products follow in one compiled
  pass: the numpy path's bits. Elsewhere, Cephes' algorithm (a rational function below 0.625,
  ``(e − 1)/(e + 1)`` with ``e = e^{2|x|}`` above, from a Padé approximant and an exact power of
  two) written in arithmetic with one division so that it vectorises: within a few ulps of
  ``numpy.tanh`` (measured: at most 5e-16 relative).
- ``erf``, ``sigmoid``, ``softplus``, ``gelu``: the C library's ``erf``, ``erfc``, ``exp`` and
  ``log1p``, one call per element, on every core; within a few ulps of scipy's.

Arithmetic is in float64 whatever the block's dtype (float32 blocks are rounded once, on the
store). Each activation has its own pass, compiled on first use and cached on disk (numba's
``cache=True``): only a machine's first run pays the compilation (about a second per pass and
dtype); every later process loads it.

An activation without a kernel (``sin``, ``abs``, a user's callable) keeps the numpy path.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from functools import lru_cache

import numba
import numpy as np
from numba import njit, prange

try:
    from numpy._core._multiarray_umath import __cpu_features__
except ImportError:  # numpy < 2
    from numpy.core._multiarray_umath import __cpu_features__

# What a pass computes from the pre-activations x (rows, N), in place.
VALUES, BOTH, SCALED_SLOPES = 0, 1, 2  # σ(x); σ(x) into out and σ'(x); σ'(x) ⊙ (r aᵀ)

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
_INLINE = {**_JIT, "inline": "always"}
_PARALLEL = {**_JIT, "parallel": True}

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_LN2 = math.log(2.0)


@njit(**_INLINE)
def _tanh(x):
    """``tanh(x)`` in float64, vectorisable, with one division per element.

    Cephes' tanh: below |x| = 0.625 the rational ``x + x s P(s)/Q(s)``, ``s = x²``; above,
    ``(e − 1)/(e + 1)`` with ``e = e^{2|x|}`` from Cephes' exp (``2^k (Q + P)/(Q − P)``, a Padé
    approximant on ``|r| ≤ ln2/2``, ``2^k`` exact). Each branch is written as a numerator
    and a denominator, chosen before the one division.
    """
    z = abs(x)
    if z > 20.0:  # tanh is ±1 to the last bit beyond ~19.06; NaN stays NaN
        z = 20.0
    y = 2.0 * z
    k = np.floor(1.4426950408889634 * y + 0.5)
    if not k >= 0.0:  # NaN: any k keeps the result NaN; a shift by garbage would not
        k = 0.0
    r = y - k * 6.93145751953125e-1
    r = r - k * 1.42860682030941723212e-6
    rr = r * r
    p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr + 1.0)
    q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
         + 2.27265548208155028766e-1) * rr + 2.0  # fmt: skip
    power = float(np.int64(1) << np.int64(k))  # 2^k, k ≤ 58
    e_numerator, e_denominator = (q + p) * power, q - p  # e = e_numerator / e_denominator
    s = x * x
    small_numerator = x * (
        (((s + 1.12811678491632931402e2) * s + 2.23548839060100448583e3) * s
         + 4.84406305325125486048e3)
        + s * ((-9.64399179425052238628e-1 * s - 9.92877231001918586564e1) * s
               - 1.61468768441708447952e3)
    )  # fmt: skip
    small_denominator = ((s + 1.12811678491632931402e2) * s + 2.23548839060100448583e3) * s
    small_denominator += 4.84406305325125486048e3
    if z < 0.625:
        numerator, denominator = small_numerator, small_denominator
    else:
        numerator = e_numerator - e_denominator
        denominator = e_numerator + e_denominator
        if x < 0:
            numerator = -numerator
    return numerator / denominator


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


@njit(**_INLINE)
def _relu(x, p, q):
    # numpy's maximum(x, 0): keeps -0.0 and NaN
    return (0.0 if x < 0.0 else x), (1.0 if x > 0.0 else 0.0)


@njit(**_INLINE)
def _leaky(x, p, q):
    return (x if x > 0.0 else p[0] * x), (1.0 if x > 0.0 else p[0])


@njit(**_INLINE)
def _tanh_pair(x, p, q):
    t = _tanh(x)
    return t, 1.0 - t * t


@njit(**_INLINE)
def _erf(x, p, q):
    return math.erf(x), math.exp(-(x * x)) * _TWO_OVER_SQRT_PI


@njit(**_INLINE)
def _sigmoid(x, p, q):
    s = _expit(x)
    return s, s * (1.0 - s)


@njit(**_INLINE)
def _softplus_pair(x, p, q):
    return _softplus(x), _expit(x)


@njit(**_INLINE)
def _gelu(x, p, q):
    cdf = 0.5 * math.erfc(-x * _INV_SQRT_2)
    return x * cdf, cdf + x * math.exp(-(x * x) / 2.0) * _INV_SQRT_2PI


@njit(**_INLINE)
def _hermite(x, p, q):
    # The numpy path's recurrence He_{j+1} = x He_j − j He_{j−1}; σ' = k He_{k−1}
    degree = int(p[0])
    previous, current = 0.0, 1.0
    for j in range(degree - 1):
        previous, current = current, x * current - j * previous
    if degree == 0:
        return current, 0.0
    return x * current - (degree - 1) * previous, degree * current


@njit(**_INLINE)
def _poly(x, p, q):
    # Horner with c0..cm (p) and the derivative's coefficients (q), as the numpy path
    value = p[-1]
    for j in range(len(p) - 2, -1, -1):
        value = value * x + p[j]
    slope = q[-1]
    for j in range(len(q) - 2, -1, -1):
        slope = slope * x + q[j]
    return value, slope


# One pass per activation, so that a run compiles only its own (a second or so each, once
# per machine: the cache is on disk). The loops over a row are the same in each; numba cannot
# cache a pass that takes the scalar function as an argument.
@njit(**_PARALLEL)
def _pass_relu(x, out, r, a, mode, p, q):
    for i in prange(x.shape[0]):
        row, values = x[i], out[i]
        if mode == VALUES:
            for j in range(row.shape[0]):
                row[j] = _relu(np.float64(row[j]), p, q)[0]
        elif mode == BOTH:
            for j in range(row.shape[0]):
                v, s = _relu(np.float64(row[j]), p, q)
                values[j] = v
                row[j] = s
        else:
            ri = r[i]
            for j in range(row.shape[0]):
                row[j] = _relu(np.float64(row[j]), p, q)[1]
                row[j] *= ri
                row[j] *= a[j]


@njit(**_PARALLEL)
def _pass_leaky_relu(x, out, r, a, mode, p, q):
    for i in prange(x.shape[0]):
        row, values = x[i], out[i]
        if mode == VALUES:
            for j in range(row.shape[0]):
                row[j] = _leaky(np.float64(row[j]), p, q)[0]
        elif mode == BOTH:
            for j in range(row.shape[0]):
                v, s = _leaky(np.float64(row[j]), p, q)
                values[j] = v
                row[j] = s
        else:
            ri = r[i]
            for j in range(row.shape[0]):
                row[j] = _leaky(np.float64(row[j]), p, q)[1]
                row[j] *= ri
                row[j] *= a[j]


@njit(**_PARALLEL)
def _pass_tanh(x, out, r, a, mode, p, q):
    for i in prange(x.shape[0]):
        row, values = x[i], out[i]
        if mode == VALUES:
            for j in range(row.shape[0]):
                row[j] = _tanh_pair(np.float64(row[j]), p, q)[0]
        elif mode == BOTH:
            for j in range(row.shape[0]):
                v, s = _tanh_pair(np.float64(row[j]), p, q)
                values[j] = v
                row[j] = s
        else:
            ri = r[i]
            for j in range(row.shape[0]):
                row[j] = _tanh_pair(np.float64(row[j]), p, q)[1]
                row[j] *= ri
                row[j] *= a[j]


@njit(**_PARALLEL)
def _pass_erf(x, out, r, a, mode, p, q):
    for i in prange(x.shape[0]):
        row, values = x[i], out[i]
        if mode == VALUES:
            for j in range(row.shape[0]):
                row[j] = _erf(np.float64(row[j]), p, q)[0]
        elif mode == BOTH:
            for j in range(row.shape[0]):
                v, s = _erf(np.float64(row[j]), p, q)
                values[j] = v
                row[j] = s
        else:
            ri = r[i]
            for j in range(row.shape[0]):
                row[j] = _erf(np.float64(row[j]), p, q)[1]
                row[j] *= ri
                row[j] *= a[j]


@njit(**_PARALLEL)
def _pass_sigmoid(x, out, r, a, mode, p, q):
    for i in prange(x.shape[0]):
        row, values = x[i], out[i]
        if mode == VALUES:
            for j in range(row.shape[0]):
                row[j] = _sigmoid(np.float64(row[j]), p, q)[0]
        elif mode == BOTH:
            for j in range(row.shape[0]):
                v, s = _sigmoid(np.float64(row[j]), p, q)
                values[j] = v
                row[j] = s
        else:
            ri = r[i]
            for j in range(row.shape[0]):
                row[j] = _sigmoid(np.float64(row[j]), p, q)[1]
                row[j] *= ri
                row[j] *= a[j]


@njit(**_PARALLEL)
def _pass_softplus(x, out, r, a, mode, p, q):
    for i in prange(x.shape[0]):
        row, values = x[i], out[i]
        if mode == VALUES:
            for j in range(row.shape[0]):
                row[j] = _softplus_pair(np.float64(row[j]), p, q)[0]
        elif mode == BOTH:
            for j in range(row.shape[0]):
                v, s = _softplus_pair(np.float64(row[j]), p, q)
                values[j] = v
                row[j] = s
        else:
            ri = r[i]
            for j in range(row.shape[0]):
                row[j] = _softplus_pair(np.float64(row[j]), p, q)[1]
                row[j] *= ri
                row[j] *= a[j]


@njit(**_PARALLEL)
def _pass_gelu(x, out, r, a, mode, p, q):
    for i in prange(x.shape[0]):
        row, values = x[i], out[i]
        if mode == VALUES:
            for j in range(row.shape[0]):
                row[j] = _gelu(np.float64(row[j]), p, q)[0]
        elif mode == BOTH:
            for j in range(row.shape[0]):
                v, s = _gelu(np.float64(row[j]), p, q)
                values[j] = v
                row[j] = s
        else:
            ri = r[i]
            for j in range(row.shape[0]):
                row[j] = _gelu(np.float64(row[j]), p, q)[1]
                row[j] *= ri
                row[j] *= a[j]


@njit(**_PARALLEL)
def _pass_hermite(x, out, r, a, mode, p, q):
    for i in prange(x.shape[0]):
        row, values = x[i], out[i]
        if mode == VALUES:
            for j in range(row.shape[0]):
                row[j] = _hermite(np.float64(row[j]), p, q)[0]
        elif mode == BOTH:
            for j in range(row.shape[0]):
                v, s = _hermite(np.float64(row[j]), p, q)
                values[j] = v
                row[j] = s
        else:
            ri = r[i]
            for j in range(row.shape[0]):
                row[j] = _hermite(np.float64(row[j]), p, q)[1]
                row[j] *= ri
                row[j] *= a[j]


@njit(**_PARALLEL)
def _pass_poly(x, out, r, a, mode, p, q):
    for i in prange(x.shape[0]):
        row, values = x[i], out[i]
        if mode == VALUES:
            for j in range(row.shape[0]):
                row[j] = _poly(np.float64(row[j]), p, q)[0]
        elif mode == BOTH:
            for j in range(row.shape[0]):
                v, s = _poly(np.float64(row[j]), p, q)
                values[j] = v
                row[j] = s
        else:
            ri = r[i]
            for j in range(row.shape[0]):
                row[j] = _poly(np.float64(row[j]), p, q)[1]
                row[j] *= ri
                row[j] *= a[j]


_PASSES = {
    "relu": _pass_relu,
    "leaky_relu": _pass_leaky_relu,
    "tanh": _pass_tanh,
    "erf": _pass_erf,
    "sigmoid": _pass_sigmoid,
    "softplus": _pass_softplus,
    "gelu": _pass_gelu,
    "hermite": _pass_hermite,
    "poly": _pass_poly,
}


@njit(**_PARALLEL)
def _tanh_slopes(x, out, r, a, mode):
    """σ' = 1 − t² from t = tanh(x) already in x (and copied to out), as the numpy path."""
    for i in prange(x.shape[0]):
        row, values = x[i], out[i]
        if mode == BOTH:
            for j in range(row.shape[0]):
                values[j] = row[j]
                row[j] = 1.0 - row[j] * row[j]
        else:
            ri = r[i]
            for j in range(row.shape[0]):
                row[j] = 1.0 - row[j] * row[j]
                row[j] *= ri
                row[j] *= a[j]


@njit(**_PARALLEL)
def _scale(g, r, a):
    for i in prange(g.shape[0]):
        row, ri = g[i], r[i]
        for j in range(row.shape[0]):
            row[j] *= ri
            row[j] *= a[j]


#: numpy's own tanh is vectorised for float32 everywhere and for float64 on AVX512_SKX (here
#: 440 M/s on one core, 2.5× the compiled one); there it is used, on every core, and σ' and
#: the products follow in a compiled pass. Elsewhere numpy's float64 tanh is a scalar loop
#: (60–70 M/s) and the compiled tanh is used.
_NUMPY_TANH_FLOAT64 = bool(__cpu_features__.get("AVX512_SKX"))
_ufunc_pool: ThreadPoolExecutor | None = None
_ufunc_pool_owner = -1


def _rows_in_parallel(ufunc, x: np.ndarray) -> None:
    """``ufunc(x, out=x)`` with the rows split over numba's threads (numpy drops the GIL)."""
    global _ufunc_pool, _ufunc_pool_owner
    threads = _threads(x)
    if threads == 1:
        ufunc(x, out=x)
        return
    # A forked child inherits the pool but not its threads: its tasks would wait forever.
    if (
        _ufunc_pool is None
        or _ufunc_pool_owner != os.getpid()
        or _ufunc_pool._max_workers < threads - 1
    ):
        _ufunc_pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="giantstep-ufunc")
        _ufunc_pool_owner = os.getpid()
    parts = np.array_split(np.arange(len(x)), threads)
    futures = [_ufunc_pool.submit(ufunc, x[p[0] : p[-1] + 1], out=x[p[0] : p[-1] + 1])
               for p in parts[1:]]  # fmt: skip
    ufunc(x[: parts[0][-1] + 1], out=x[: parts[0][-1] + 1])
    for future in futures:
        future.result()


#: Elements per thread below which a pass runs on one thread: handing a small block to a second
#: thread costs more than it saves while BLAS's threads still hold the cores (measured at
#: N = 64: a 3200 × 64 gradient step took 22 ms on one thread, 44 ms on two, best of 30).
ELEMENTS_PER_THREAD = 1 << 19


def _threads(x: np.ndarray) -> int:
    return max(1, min(numba.get_num_threads(), x.size // ELEMENTS_PER_THREAD))


#: Taken by a pass where passes must take turns (:func:`_passes_take_turns`).
_turn = threading.Lock()


@lru_cache(maxsize=1)
def _passes_take_turns() -> bool:
    """Whether passes must take turns, one at a time in the process. Several threads pass
    blocks at once here (a small network's block parts, a threaded Dask worker's tasks), and
    numba's workqueue threading layer — its fallback where OpenMP and TBB are missing — aborts
    the process on concurrent launches. OpenMP and TBB are threadsafe, and there taking turns
    anyway cost a dandi-size run ~4 % (median of 8 alternated pairs)."""
    numba.get_num_threads()  # starts numba's threads, which chooses the layer
    return numba.threading_layer() == "workqueue"


@contextmanager
def _pass_over(x: np.ndarray) -> Iterator[None]:
    """The context of one pass over ``x``: ``_threads(x)`` numba threads, its turn if need be."""
    with _turn if _passes_take_turns() else nullcontext():
        previous = numba.get_num_threads()
        numba.set_num_threads(_threads(x))
        try:
            yield
        finally:
            numba.set_num_threads(previous)


def _run(kernel, mode: int, x, out=None, r=None, a=None) -> None:
    """One pass of ``kernel`` = (name, p, q); unused arrays get placeholders of fixed types, so
    that each pass compiles once per dtype."""
    with _pass_over(x):
        _run_on(kernel, mode, x, out, r, a)


def _run_on(kernel, mode: int, x, out, r, a) -> None:
    name, p, q = kernel
    p = np.asarray(p or (0.0,), dtype=np.float64)
    q = np.asarray(q or (0.0,), dtype=np.float64)
    unused = np.zeros(1, dtype=x.dtype)
    out = x[:1] if out is None else out
    r = unused if r is None else np.ascontiguousarray(r)
    a = unused if a is None else np.ascontiguousarray(a)
    if name == "tanh" and (x.dtype == np.float32 or _NUMPY_TANH_FLOAT64):
        _rows_in_parallel(np.tanh, x)
        if mode != VALUES:
            _tanh_slopes(x, out, r if mode == SCALED_SLOPES else unused, a, mode)
        return
    _PASSES[name](x, out, r, a, mode, p, q)


def _ready(pre: np.ndarray) -> bool:
    """A 2-d float array whose rows are contiguous (the passes go row by row): a whole block,
    or its first N columns when the labels' h is in the last r (``GradientSum.forward``)."""
    return (
        pre.ndim == 2
        and pre.dtype in (np.float64, np.float32)
        and pre.strides[1] == pre.itemsize
        and pre.strides[0] >= pre.shape[1] * pre.itemsize
    )


def values(activation, pre: np.ndarray) -> np.ndarray:
    """``σ(pre)`` (rows, N), overwriting ``pre`` when the activation has a kernel."""
    if activation.kernel is None or not _ready(pre):
        return activation(pre)
    _run(activation.kernel, VALUES, pre)
    return pre


def values_and_slopes(
    activation, pre: np.ndarray, value: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(σ(pre), σ'(pre))``; with a kernel, ``σ'`` overwrites ``pre`` and ``σ`` goes to
    ``value`` (a fresh array if None)."""
    if activation.kernel is None or not _ready(pre):
        return activation.value_and_derivative(pre)
    value = np.empty_like(pre) if value is None else value
    _run(activation.kernel, BOTH, pre, out=value)
    return value, pre


def scale(slope: np.ndarray, r: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``slope ⊙ (r aᵀ)`` in place, as ``(slope · r_i) · a_j`` (the numpy path's order)."""
    if _ready(slope) and r.dtype == slope.dtype and a.dtype == slope.dtype:
        with _pass_over(slope):
            _scale(slope, np.ascontiguousarray(r), np.ascontiguousarray(a))
    else:
        slope *= r[:, None]
        slope *= a
    return slope


def scaled_slopes(activation, pre: np.ndarray, r: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``σ'(pre) ⊙ (r aᵀ)`` (rows, N), overwriting ``pre`` when the activation has a kernel."""
    same = r.dtype == pre.dtype and a.dtype == pre.dtype
    if activation.kernel is None or not _ready(pre) or not same:
        return scale(activation.derivative(pre), r, a)
    _run(activation.kernel, SCALED_SLOPES, pre, r=r, a=a)
    return pre
