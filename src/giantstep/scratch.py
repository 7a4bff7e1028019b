"""Arrays a thread reuses from block to block: a fresh array per block costs its page faults
every block (a 32 MB block: ~2,700 faults)."""

from __future__ import annotations

import math
import threading

import numpy as np

_arrays = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An array of ``shape`` and ``dtype`` that the calling thread reuses under ``name``: the
    same memory as the last call with this name and dtype when that was as large, so the next
    such call overwrites it."""
    arrays = _arrays.__dict__.setdefault("arrays", {})
    key = (name, np.dtype(dtype).str)
    size = math.prod(shape)
    buffer = arrays.get(key)
    if buffer is None or buffer.size < size:
        buffer = arrays[key] = np.empty(size, dtype=dtype)
    return buffer[:size].reshape(shape)
