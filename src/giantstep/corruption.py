"""Corrupted labels: a fraction ``p`` of the labels replaced by labels independent of ``x``.

The config's ``target.corruption = p``. Sample ``i`` of a stream is corrupted with probability
``p``; its label is then replaced by ``y'_i = g*(W* x'_i) + σ_ε ε'_i``, the clean label of a
*decoy* input ``x'_i`` drawn from the same distribution as the inputs, independently of
everything else: the corrupted label has the clean label distribution but carries no
information on ``x_i``. So ``E[y²]`` is unchanged while ``ζ = Xᵀy/n`` keeps only ``(1 − p)`` of
its signal.

Only the training labels are corrupted — the gradient batches and the ridge set. The test set
keeps clean labels, so a run's ``test_error`` measures the learned function against the clean
target (plus ``σ_ε²``): how much the corruption cost, not how noisy the test labels are.

Both draws are keyed by the sample, like the inputs (``giantstep.data``): chunk ``c`` of stream
``s`` for seed ``k`` takes its corruption coins from ``SeedSequence(k, spawn_key=(CORRUPTION, *s,
c))`` and its decoy inputs from the stream ``(CORRUPTION, *s)``. A sample is corrupted, and
replaced by the same decoy, whatever the block size, the worker or the other rows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from giantstep.data import CHUNK_ROWS, CORRUPTION, TEST, Block, SampleStream, generator

Labeller = Callable[[Block], np.ndarray]


def corrupted_mask(stream: SampleStream, start: int, rows: int, fraction: float) -> np.ndarray:
    """(rows,) bool: which of rows ``start .. start + rows`` of ``stream`` are corrupted.

    Examples
    --------
    >>> from giantstep.data import SampleStream
    >>> stream = SampleStream(0, (0, 0), 3)
    >>> a = corrupted_mask(stream, 0, 1024, 0.3)
    >>> b = corrupted_mask(stream, 512, 512, 0.3)
    >>> bool((a[512:] == b).all()), round(float(a.mean()), 1)
    (True, 0.3)
    """
    if start % CHUNK_ROWS:
        raise ValueError(f"start={start} must be a multiple of {CHUNK_ROWS}")
    first = start // CHUNK_ROWS
    chunks = -(-rows // CHUNK_ROWS)
    coins = np.concatenate(
        [
            generator(stream.seed, CORRUPTION, *stream.key, first + c).random(CHUNK_ROWS)
            for c in range(chunks)
        ]
    )
    return coins[:rows] < fraction


def decoy_stream(stream: SampleStream) -> SampleStream:
    """The stream of decoy inputs whose clean labels replace the corrupted ones of ``stream``."""
    return SampleStream(
        stream.seed,
        (CORRUPTION, *stream.key),
        stream.dim,
        distribution=stream.distribution,
        dtype=stream.dtype,
    )


def corrupt(block: Block, y: np.ndarray, fraction: float, clean: Labeller) -> np.ndarray:
    """``y`` (rows,) with the corrupted samples' labels replaced (in place) by decoy labels;
    the test set's labels are returned unchanged.

    Parameters
    ----------
    block : Block
        The rows, drawn from a ``SampleStream`` (``block.stream`` keys the draws).
    y : numpy.ndarray
        (rows,) the clean labels of the block.
    fraction : float
        ``p`` in [0, 1].
    clean : callable
        Block -> (rows,) clean labels; applied to the decoy inputs.

    Returns
    -------
    numpy.ndarray
        ``y``.

    Raises
    ------
    ValueError
        If the block does not come from a stream.
    """
    if block.stream is None:
        raise ValueError("block: label corruption needs a block drawn from a SampleStream")
    if block.stream.key[0] == TEST:
        return y
    rows = len(y)
    mask = corrupted_mask(block.stream, block.start, rows, fraction)
    if mask.any():
        decoys = decoy_stream(block.stream).rows(block.start, block.start + rows)
        y[mask] = clean(decoys)[mask]
    return y
