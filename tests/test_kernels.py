"""The compiled elementwise passes against the plain numpy path of every activation."""

import multiprocessing
import uuid
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pytest

from giantstep import kernels
from giantstep.activations import Activation, get_activation
from giantstep.experiment import run
from giantstep.scratch import scratch

WITH_KERNEL = [
    "relu", "leaky_relu", "leaky_relu(0.2)", "tanh", "erf", "sigmoid", "softplus", "gelu",
    "He0", "He1", "He2", "He3", "He6", "poly(0.5)", "poly(1, -2, 0.5, 0.25)",
]  # fmt: skip
#: The same IEEE operations in the same order as the numpy path: the same bits in float64.
EXACT = {"relu", "leaky_relu", "leaky_relu(0.2)", "He0", "He1", "He2", "He3", "He6", "poly(0.5)",
         "poly(1, -2, 0.5, 0.25)"}  # fmt: skip


def inputs(dtype=np.float64) -> np.ndarray:
    """(rows, 13) pre-activations: Gaussian bulk, a wide grid, the branch points and extremes."""
    rng = np.random.default_rng(0)
    special = [0.0, -0.0, 1e-300, -5e-324, 1e-8, 0.6249999, 0.625, 0.6250001, -0.625, 19.0,
               19.1, -25.0, 40.0, 700.0, -700.0, 1e10, -1e10]  # fmt: skip
    x = np.concatenate([rng.standard_normal(6000) * 3, np.linspace(-40, 40, 4001), special])
    x = np.resize(x, (len(x) // 13 + 1) * 13).reshape(-1, 13)
    return np.ascontiguousarray(x, dtype=dtype)


def close(actual, expected, rtol, floor=1e-3):
    # Relative to the value, with a floor of a few ulps of the array's scale: σ' = 1 − tanh²,
    # gelu's σ' = Φ + xφ and polynomials near their roots cancel, so the numpy path itself is
    # only that accurate there (in float32 the kernels, computing in float64, are the better).
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * floor * scale)


@pytest.mark.parametrize("name", WITH_KERNEL)
def test_kernels_agree_with_numpy(name):
    activation = get_activation(name)
    assert activation.kernel is not None
    x = inputs()
    value, slope = kernels.values_and_slopes(activation, x.copy())
    close(value, activation(x), 1e-12)
    close(slope, activation.derivative(x), 1e-12)
    close(kernels.values(activation, x.copy()), activation(x), 1e-12)
    r, a = np.linspace(-2, 2, len(x)), np.linspace(1, 3, x.shape[1])
    reference = activation.derivative(x) * r[:, None] * a
    close(kernels.scaled_slopes(activation, x.copy(), r, a), reference, 1e-12)
    if name in EXACT:
        np.testing.assert_array_equal(value, activation(x))
        np.testing.assert_array_equal(slope, activation.derivative(x))
    x32 = np.clip(inputs(np.float32), -40, 40)  # He6(1e10) overflows float32 in numpy
    value32, slope32 = kernels.values_and_slopes(activation, x32.copy())
    assert value32.dtype == slope32.dtype == np.float32
    close(value32, activation(x32).astype(np.float64), 1e-5, floor=1.0)


def test_non_finite_inputs_stay_non_finite():
    x = np.array([[np.nan, np.inf, -np.inf, 1.0]])
    for name in ("tanh", "erf", "sigmoid", "softplus", "relu"):
        activation = get_activation(name)
        value = kernels.values(activation, x.copy())
        np.testing.assert_array_equal(np.isnan(value), np.isnan(activation(x)), err_msg=name)


def test_a_block_cut_in_rows_gives_the_same_bits():
    # A run's result must not depend on the block size: each element is computed alone.
    x = inputs()
    for name in WITH_KERNEL:
        activation = get_activation(name)
        whole = kernels.values_and_slopes(activation, x.copy())
        for cut in (1, 7, 256):
            parts = [kernels.values_and_slopes(activation, x[i : i + cut].copy())
                     for i in range(0, len(x), cut)]  # fmt: skip
            for k in range(2):
                np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])


def test_user_callables_keep_the_numpy_path():
    activation = Activation.from_callable(np.sin, np.cos, name="mine")
    assert activation.kernel is None
    x = inputs()
    value, slope = kernels.values_and_slopes(activation, x.copy())
    np.testing.assert_array_equal(value, np.sin(x))
    np.testing.assert_array_equal(slope, np.cos(x))


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_block_size_changes_the_rounding_only(activation):
    config = {"dim": 40, "width": 30, "activation": activation,
              "train": {"batch_size": 3000}, "readout": {"samples": 2000, "ridge": [0.01]},
              "test": {"samples": 1000}}  # fmt: skip
    small = run({**config, "compute": {"block_size": 256}})
    large = run({**config, "compute": {"block_size": 4096}})
    assert small.errors[0].test_error == pytest.approx(large.errors[0].test_error, rel=1e-12)


def test_the_compiled_tanh_agrees_with_numpy(monkeypatch):
    # Used where numpy's float64 tanh is a scalar loop (no AVX512); test it everywhere.
    monkeypatch.setattr(kernels, "_NUMPY_TANH_FLOAT64", False)
    activation, x = get_activation("tanh"), inputs()
    value, slope = kernels.values_and_slopes(activation, x.copy())
    close(value, np.tanh(x), 1e-15)
    close(slope, 1 - np.tanh(x) ** 2, 1e-15, floor=1.0)
    assert np.signbit(kernels.values(activation, np.array([[-0.0, 0.0]])))[0].tolist() == [
        True,
        False,
    ]
    # float32 blocks keep numpy's own (vectorised) float32 tanh everywhere.
    x32 = np.clip(inputs(np.float32), -40, 40)
    np.testing.assert_array_equal(kernels.values(activation, x32.copy()), np.tanh(x32))
    parts = [kernels.values(activation, x[i : i + 5].copy()) for i in range(0, len(x), 5)]
    np.testing.assert_array_equal(np.concatenate(parts), kernels.values(activation, x.copy()))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba has one thread here")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_passes_split_over_threads_give_the_same_bits(monkeypatch, dtype):
    # Large blocks are cut in rows over numba's threads (numpy's tanh over a thread pool):
    # each element is computed alone, so the bits are those of one thread.
    x = np.clip(inputs(dtype), -40, 40)
    r, a = np.linspace(-2, 2, len(x), dtype=dtype), np.linspace(1, 3, x.shape[1], dtype=dtype)
    one_thread = {}
    for name in WITH_KERNEL:
        activation = get_activation(name)
        one_thread[name] = (
            *kernels.values_and_slopes(activation, x.copy()),
            kernels.scaled_slopes(activation, x.copy(), r, a),
        )
    monkeypatch.setattr(kernels, "ELEMENTS_PER_THREAD", 997)  # ~10 threads' worth of rows
    for name in WITH_KERNEL:
        activation = get_activation(name)
        split = (
            *kernels.values_and_slopes(activation, x.copy()),
            kernels.scaled_slopes(activation, x.copy(), r, a),
        )
        for actual, expected in zip(split, one_thread[name], strict=True):
            np.testing.assert_array_equal(actual, expected, err_msg=name)
    tanh = get_activation("tanh")
    if dtype == np.float32 or kernels._NUMPY_TANH_FLOAT64:  # numpy's own tanh, in pieces
        np.testing.assert_array_equal(kernels.values(tanh, x.copy()), np.tanh(x))
    np.testing.assert_array_equal(kernels.scale(x.copy(), r, a), x * r[:, None] * a)


def test_scale_is_the_numpy_product_on_every_path():
    # Compiled for row-contiguous blocks whose dtypes agree; numpy's in-place products
    # otherwise (a column-major slope, r or a of another dtype): the same (slope·r_i)·a_j.
    x = inputs()
    r, a = np.linspace(-2, 2, len(x)), np.linspace(1, 3, x.shape[1])
    for slope, r_, a_ in [
        (x.copy(), r, a),
        (np.asfortranarray(x), r, a),
        (x.copy(), r.astype(np.float32), a),
        (x.copy(), r, a.astype(np.float32)),
    ]:
        reference = slope * r_[:, None] * a_
        result = kernels.scale(slope, r_, a_)
        assert result is slope  # in place
        np.testing.assert_array_equal(result, reference)


def test_scratch_arrays_are_reused_per_name_and_dtype():
    name = f"test-{uuid.uuid4()}"  # not one an earlier call in this process (or its parent) made
    a = scratch(name, (3, 4), np.float64)
    b = scratch(name, (2, 5), np.float64)  # smaller: the same memory
    assert a.shape == (3, 4) and b.shape == (2, 5) and np.shares_memory(a, b)
    assert np.shares_memory(scratch(name, (4, 3), np.float64), a)  # as large: too
    c = scratch(name, (3, 4), np.float32)  # another dtype: its own array
    assert c.dtype == np.float32 and not np.shares_memory(a, c)
    d = scratch(name, (5, 5), np.float64)  # larger: a new array
    assert d.shape == (5, 5) and d.dtype == np.float64 and not np.shares_memory(a, d)
    with ThreadPoolExecutor(1) as pool:  # another thread: its own arrays
        e = pool.submit(scratch, name, (5, 5), np.float64).result()
    assert not np.shares_memory(d, e)


def test_kernel_passes_overwrite_their_input_as_documented():
    """values, values_and_slopes and scaled_slopes overwrite pre (and fill the value buffer
    given) when the activation has a kernel, the block is row-contiguous and the dtypes agree;
    otherwise they return new arrays from the numpy path."""
    activation = get_activation("tanh")
    x = inputs()
    r, a = np.linspace(-2, 2, len(x)), np.linspace(1, 3, x.shape[1])
    pre, buffer = x.copy(), np.empty_like(x)
    value, slope = kernels.values_and_slopes(activation, pre, buffer)
    assert value is buffer and slope is pre
    pre = x.copy()
    assert kernels.values(activation, pre) is pre
    pre = x.copy()
    assert kernels.scaled_slopes(activation, pre, r, a) is pre
    for r_, a_ in [(r.astype(np.float32), a), (r, a.astype(np.float32))]:  # mixed dtypes
        pre = x.copy()
        result = kernels.scaled_slopes(activation, pre, r_, a_)
        assert result is not pre
        np.testing.assert_array_equal(result, activation.derivative(x) * r_[:, None] * a_)
    pre = np.asfortranarray(x)  # rows not contiguous: the numpy path
    value, slope = kernels.values_and_slopes(activation, pre)
    assert slope is not pre and value is not pre


def _tanh_in_pieces(x):
    return kernels.values(get_activation("tanh"), x)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba has one thread here")
def test_a_forked_child_splits_a_block_with_threads_of_its_own(monkeypatch):
    """A child forked after the parent split a block has the parent's pool but none of its
    threads: it must start its own, not wait forever for the parent's."""
    monkeypatch.setattr(kernels, "ELEMENTS_PER_THREAD", 997)
    x = np.clip(inputs(np.float32), -40, 40)
    expected = _tanh_in_pieces(x.copy())  # the parent's pool now exists
    with multiprocessing.get_context("fork").Pool(1) as pool:
        result = pool.apply_async(_tanh_in_pieces, (x.copy(),)).get(timeout=60)
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("pieces", [1, 2, 3, 5])
def test_a_ufunc_split_in_row_pieces_is_the_whole_ufunc(monkeypatch, pieces):
    # Any number of pieces (this machine may have fewer cores): each piece's rows, in place;
    # one piece needs no pool (none started yet, as in a fresh process).
    monkeypatch.setattr(kernels, "_threads", lambda x: pieces)
    monkeypatch.setattr(kernels, "_ufunc_pool", None)
    x = inputs(np.float32)
    split = x.copy()
    kernels._rows_in_parallel(np.tanh, split)
    np.testing.assert_array_equal(split, np.tanh(x))


def test_blocks_whose_rows_overlap_take_the_numpy_path():
    # A pass overwrites its rows in place: rows that share memory would be computed from
    # values already overwritten, so such views are left to numpy.
    base = np.linspace(-3, 3, 40)
    overlapping = np.lib.stride_tricks.as_strided(base, shape=(20, 8), strides=(8, 8))
    for name in ("tanh", "relu", "erf"):
        activation = get_activation(name)
        expected = activation(overlapping.copy())  # the numpy path, on the same values
        view = np.lib.stride_tricks.as_strided(base.copy(), shape=(20, 8), strides=(8, 8))
        np.testing.assert_array_equal(kernels.values(activation, view), expected, err_msg=name)
