"""The Gram statistics of the features: their dtype path, progress and executor arguments.

Each test is small (well under a second); they pin what mutation testing found unpinned.
"""

from __future__ import annotations

import numpy as np
import pytest

from giantstep.activations import get_activation
from giantstep.data import RIDGE, SampleStream
from giantstep.model import initialize
from giantstep.readout import feature_statistics
from giantstep.targets import Teacher


def _setting(dtype):
    network = initialize(0, 6, 5, activation=get_activation("tanh"))
    teacher = Teacher.draw(0, "z1", 5)
    stream = SampleStream(0, (RIDGE, 0), 5, dtype=dtype)
    return network, teacher, stream


def test_float32_features_are_computed_in_float32_and_summed_in_float64():
    network, teacher, stream = _setting(np.float32)
    stats = feature_statistics(network, teacher, stream, n_samples=768, block_size=256)
    # A float32 stream computes its features in float32 (the sums of blocks go to float64):
    # the Gram matrix is the float32 one to float32 rounding, and it is *not* the float64 one,
    # which a first layer left in float64 would give.
    x = stream.rows(0, 768).x.copy()
    assert x.dtype == np.float32
    f32 = np.tanh(x @ network.first_layer.T.astype(np.float32)).astype(np.float64)
    f64 = np.tanh(x.astype(np.float64) @ network.first_layer.T)
    np.testing.assert_allclose(stats.gram, f32.T @ f32, rtol=1e-5)
    assert np.abs(stats.gram - f64.T @ f64).max() > 1e-9 * np.abs(f64.T @ f64).max()


def test_progress_is_called_per_block_and_a_bad_executor_is_refused():
    network, teacher, stream = _setting(np.float64)
    calls = []
    feature_statistics(
        network, teacher, stream, n_samples=768, block_size=256, progress=calls.append
    )
    assert sum(calls) == 3  # one call per block of 256 rows, with the blocks done
    with pytest.raises((TypeError, ValueError), match="executor"):
        feature_statistics(network, teacher, stream, n_samples=768, block_size=256, executor="nope")
