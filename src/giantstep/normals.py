"""Standard normal draws, bit for bit numpy's ``Generator(Philox(key)).standard_normal``, faster.

A chunk of a stream is drawn from its own Philox generator (``giantstep.data``): numpy fills it at
~60 M normals/s per core, most of it per-number overhead (a call through the bit generator's
function pointer for each 64-bit word, then the ziggurat's). Here the same two algorithms run in
one compiled loop: Philox4x64-10 (Salmon et al. 2011, as numpy implements it: the counter is
incremented before each block of four words, words are used in order, a float32 draw takes the
low then the high half of a word) and numpy's ziggurat (``random_standard_normal`` and
``random_standard_normal_f`` in numpy/random/src/distributions/distributions.c, with its tables,
``giantstep._ziggurat``). The numbers are numpy's to the last bit (tested on many keys, both
dtypes, across the rejection branches); what changes is the speed.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from giantstep import _ziggurat as zig

_JIT = {"cache": True, "nogil": True}


@intrinsic
def _mulhilo(typingctx, a, b):
    """(high, low) 64-bit halves of the 128-bit product a·b of two uint64 (one mul on x86-64)."""
    signature = types.UniTuple(types.uint64, 2)(types.uint64, types.uint64)

    def codegen(context, builder, sig, args):
        wide = ir.IntType(128)
        product = builder.mul(builder.zext(args[0], wide), builder.zext(args[1], wide))
        high = builder.trunc(builder.lshr(product, ir.Constant(wide, 64)), ir.IntType(64))
        low = builder.trunc(product, ir.IntType(64))
        return context.make_tuple(builder, sig.return_type, (high, low))

    return signature, codegen


_M0, _M1 = np.uint64(0xD2E7470EE14C6C93), np.uint64(0xCA5A826395121157)
_W0, _W1 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBB67AE8584CAA73B)


@njit(inline="always", **_JIT)
def _refill(state, words):
    """The next block of four words into ``words``; state = [c0, c1, c2, c3, k0, k1, ...]."""
    state[0] += np.uint64(1)  # the counter first, with its carry, as numpy does
    if state[0] == 0:
        state[1] += np.uint64(1)
        if state[1] == 0:
            state[2] += np.uint64(1)
            if state[2] == 0:
                state[3] += np.uint64(1)
    c0, c1, c2, c3, k0, k1 = state[0], state[1], state[2], state[3], state[4], state[5]
    for round_ in range(10):
        if round_:
            k0 += _W0
            k1 += _W1
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    words[0], words[1], words[2], words[3] = c0, c1, c2, c3


@njit(inline="always", **_JIT)
def _next64(state, words):
    """numpy's ``philox_next``; state[6] is the position in ``words`` (4: empty)."""
    if state[6] == 4:
        _refill(state, words)
        state[6] = 0
    word = words[state[6]]
    state[6] += np.uint64(1)
    return word


@njit(inline="always", **_JIT)
def _next32(state, words):
    """numpy's ``philox_next32``: the low half of a word, then its high half (state[7], [8])."""
    if state[7]:
        state[7] = 0
        return np.uint32(state[8])
    word = _next64(state, words)
    state[7] = 1
    state[8] = word >> np.uint64(32)
    return np.uint32(word & np.uint64(0xFFFFFFFF))


@njit(inline="always", **_JIT)
def _next_double(state, words):
    return np.float64(_next64(state, words) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(inline="always", **_JIT)
def _next_float(state, words):
    return np.float32(_next32(state, words) >> np.uint32(8)) * np.float32(1.0 / 16777216.0)


@njit(**_JIT)
def _normals64(state, words, out, ki, wi, fi, nor_r, nor_inv_r):
    """``random_standard_normal`` for each element of out (float64, 1-d)."""
    position = np.intp(
        state[6]
    )  # kept in a register on the common path; synced around the rare one
    for i in range(out.shape[0]):
        while True:
            if position == 4:
                _refill(state, words)
                position = np.intp(0)
            r = words[position]
            position += 1
            idx = np.intp(r & np.uint64(0xFF))
            r >>= np.uint64(8)
            rabs = (r >> np.uint64(1)) & np.uint64(0x000FFFFFFFFFFFFF)
            x = np.float64(rabs) * wi[idx]
            if r & np.uint64(1):
                x = -x
            if rabs < ki[idx]:
                out[i] = x
                break
            state[6] = np.uint64(position)
            if idx == 0:
                while True:
                    xx = -nor_inv_r * np.log1p(-_next_double(state, words))
                    yy = -np.log1p(-_next_double(state, words))
                    if yy + yy > xx * xx:
                        tail = nor_r + xx
                        out[i] = -tail if (rabs >> np.uint64(8)) & np.uint64(1) else tail
                        break
                position = np.intp(state[6])
                break
            uniform = _next_double(state, words)
            position = np.intp(state[6])
            if (fi[idx - 1] - fi[idx]) * uniform + fi[idx] < np.exp(-0.5 * x * x):
                out[i] = x
                break
    state[6] = np.uint64(position)


@njit(**_JIT)
def _normals32(state, words, out, ki, wi, fi, nor_r, nor_inv_r):
    """``random_standard_normal_f`` for each element of out (float32, 1-d)."""
    position, half, upper = np.intp(state[6]), np.intp(state[7]), np.uint32(state[8])
    for i in range(out.shape[0]):
        while True:
            if half:
                r = upper
                half = np.intp(0)
            else:
                if position == 4:
                    _refill(state, words)
                    position = np.intp(0)
                word = words[position]
                position += 1
                r = np.uint32(word & np.uint64(0xFFFFFFFF))
                upper = np.uint32(word >> np.uint64(32))
                half = np.intp(1)
            idx = np.intp(r & np.uint32(0xFF))
            rabs = (r >> np.uint32(9)) & np.uint32(0x0007FFFFF)
            x = np.float32(rabs) * wi[idx]
            if (r >> np.uint32(8)) & np.uint32(1):
                x = -x
            if rabs < ki[idx]:
                out[i] = x
                break
            state[6], state[7], state[8] = np.uint64(position), np.uint64(half), np.uint64(upper)
            if idx == 0:
                while True:
                    xx = -nor_inv_r * np.log1p(-_next_float(state, words))
                    yy = -np.log1p(-_next_float(state, words))
                    if yy + yy > xx * xx:
                        tail = nor_r + xx
                        out[i] = -tail if (rabs >> np.uint32(8)) & np.uint32(1) else tail
                        break
                position, half, upper = np.intp(state[6]), np.intp(state[7]), np.uint32(state[8])
                break
            uniform = _next_float(state, words)
            position, half, upper = np.intp(state[6]), np.intp(state[7]), np.uint32(state[8])
            bound = np.exp(-0.5 * np.float64(x) * np.float64(x))
            if (fi[idx - 1] - fi[idx]) * uniform + fi[idx] < bound:
                out[i] = x
                break
    state[6], state[7], state[8] = np.uint64(position), np.uint64(half), np.uint64(upper)


def philox_state(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The state of a new ``Philox(key=key)`` (counter 0, no words buffered): (state, words)."""
    state = np.zeros(9, dtype=np.uint64)
    state[4:6] = key
    state[6] = 4
    return state, np.zeros(4, dtype=np.uint64)


def fill(state: np.ndarray, words: np.ndarray, out: np.ndarray) -> None:
    """Fill ``out`` (contiguous float64 or float32) with standard normals, advancing the state:
    the numbers ``Generator(Philox).standard_normal(out=out, dtype=out.dtype)`` gives."""
    if not out.flags.c_contiguous or out.dtype not in (np.float64, np.float32):
        raise ValueError(f"out: a contiguous float64 or float32 array (got {out.dtype}, "
                         f"contiguous={out.flags.c_contiguous})")  # fmt: skip
    flat = out.reshape(-1)  # a view: contiguous
    if out.dtype == np.float64:
        _normals64(state, words, flat, zig.KI_DOUBLE, zig.WI_DOUBLE, zig.FI_DOUBLE, zig.NOR_R,
                   zig.NOR_INV_R)  # fmt: skip
    else:
        _normals32(state, words, flat, zig.KI_FLOAT, zig.WI_FLOAT, zig.FI_FLOAT, zig.NOR_R_F,
                   zig.NOR_INV_R_F)  # fmt: skip
