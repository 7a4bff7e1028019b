"""Overlaps' helpers on hand-built cases: signs of single and zero columns, principal cosines at
their edges (empty spans, one coordinate, rounding above 1), the learned threshold's scale.

Each test is small (well under a second); they pin what mutation testing found unpinned.
"""

from __future__ import annotations

import numpy as np

from giantstep.overlaps import (
    canonical_signs,
    learned_subspace,
    principal_cosines,
    same_subspace,
    summarize,
)


def test_canonical_signs_of_a_single_entry_a_zero_column_and_integers():
    np.testing.assert_array_equal(canonical_signs(np.array([[-2.0]])), [[2.0]])
    # A zero column has no sign to fix: it stays zero (no NaN).
    np.testing.assert_array_equal(
        canonical_signs(np.array([[0.0, -1.0], [0.0, 0.5]])), [[0.0, 1.0], [0.0, -0.5]]
    )
    flipped = canonical_signs([[1, -3], [-2, 1]])  # integers: floats out
    assert flipped.dtype == np.float64
    np.testing.assert_array_equal(flipped, [[-1.0, 3.0], [2.0, -1.0]])
    assert canonical_signs(np.zeros((3, 0))).shape == (3, 0)


def test_principal_cosines_at_their_edges():
    assert principal_cosines(np.zeros((0, 3)), np.eye(3)[:1]).shape == (0,)
    assert principal_cosines(np.eye(3)[:1], np.zeros((0, 3))).shape == (0,)
    # One coordinate: the spans of 2 and -5 are the same line.
    np.testing.assert_array_equal(principal_cosines([[2.0]], [[-5.0]]), [1.0])
    # A span against a rescaled copy of itself: every cosine is 1 up to rounding, which can
    # land above 1 (it does for some of these); they are cosines, so never above 1.
    rng = np.random.default_rng(0)
    for _ in range(40):
        a = rng.standard_normal((2, 5))
        cosines = principal_cosines(a, 3.0 * a)
        assert np.all(cosines <= 1.0) and np.allclose(cosines, 1.0, rtol=0, atol=1e-12)


def test_same_subspace_tolerance_is_its_argument():
    e = np.eye(2)
    tilted = np.array([[1.0, 0.5]])  # cosine 1/sqrt(1.25) ≈ 0.894 with e_1
    assert not same_subspace(e[:1], tilted)  # default 0.9
    assert same_subspace(e[:1], tilted, tolerance=0.89)


def test_summary_of_a_hand_built_gram_matrix():
    # Q = [[4, 1, -2], [1, 9, 0], [-2, 0, 1]]: diagonal mean 14/3, off-diagonal rms
    # sqrt((1 + 4 + 0) · 2 / 6) = sqrt(5/3); M = [[3], [0], [-4]]: rms sqrt(25/3).
    q = np.array([[4.0, 1.0, -2.0], [1.0, 9.0, 0.0], [-2.0, 0.0, 1.0]])
    s = summarize(np.array([[3.0], [0.0], [-4.0]]), q)
    np.testing.assert_allclose(s.m_rms, [np.sqrt(25 / 3)], rtol=1e-15)
    np.testing.assert_allclose(s.q_diagonal_mean, 14 / 3, rtol=1e-15)
    np.testing.assert_allclose(s.q_offdiagonal_rms, np.sqrt(5 / 3), rtol=1e-15)
    # One neuron has no pairs: the off-diagonal rms is 0, not a division by zero.
    assert summarize(np.array([[1.0]]), np.array([[2.0]])).q_offdiagonal_rms == 0.0
    # Small off-diagonal entries are not floored: sqrt(mean of 0.1²) = 0.1.
    small = summarize(np.zeros((2, 1)), np.array([[1.0, 0.1], [0.1, 1.0]]))
    np.testing.assert_allclose(small.q_offdiagonal_rms, 0.1, rtol=1e-12)
    # ... nor lost beside a large diagonal: off-diagonal entries 1e-9 of it.
    tiny = np.eye(50) + 1e-9 * (np.ones((50, 50)) - np.eye(50))
    np.testing.assert_allclose(
        summarize(np.zeros((50, 1)), tiny).q_offdiagonal_rms, 1e-9, rtol=1e-12
    )


def test_learned_threshold_is_factor_over_dim_and_strict_below():
    # Four neurons along e_1 of R^5 and one along e_2: S = M̂ᵀM̂/N = diag(4/5, 1/5) in the
    # coordinates (e_1, e_2). Threshold factor/d: at factor 1.25, 1.25/5 = 0.25 (e_1 only); at
    # factor 0.5, 0.1 (both).
    w = np.zeros((5, 5))
    w[:4, 0] = [1.0, 2.0, 3.0, 4.0]  # unequal norms: the cosines are 1 all the same
    w[4, 1] = 7.0
    directions = np.eye(5)[:2]
    sub = learned_subspace(w, directions, factor=1.25)
    np.testing.assert_allclose(sub.eigenvalues, [0.8, 0.2], rtol=1e-15)
    assert sub.threshold == 0.25 and sub.dimension == 1
    np.testing.assert_array_equal(sub.learned, [[1.0, 0.0]])
    assert learned_subspace(w, directions, factor=0.5).dimension == 2
    # Strictly above: at factor 1 the threshold 1/5 is the second eigenvalue, exactly.
    assert learned_subspace(w, directions, factor=1.0).dimension == 1


def test_same_subspace_of_empty_lists_and_at_a_tolerance_of_one():
    # An empty list is the empty span, on either side.
    assert same_subspace([], np.zeros((0, 3))) and same_subspace(np.zeros((0, 3)), [])
    assert not same_subspace([], np.eye(3)[:1])
    # Cosines must be *above* the tolerance: identical lines have cosine exactly 1.
    e = np.eye(3)
    assert same_subspace(e[:1], e[:1], tolerance=0.999)
    assert not same_subspace(e[:1], e[:1], tolerance=1.0)


def test_principal_cosines_and_same_subspace_count_the_span_not_the_rows():
    """Dependent rows: [[1,0],[1,0]] against e2 gave cosine 1 (QR kept an arbitrary second
    column), and span{e1} (two rows) was 'the same' as the plane; a zero row counted too."""
    np.testing.assert_allclose(principal_cosines([[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0]]), [0.0])
    assert principal_cosines([[0.0, 0.0]], [[1.0, 0.0]]).shape == (0,)
    assert not same_subspace([[1.0, 0.0], [2.0, 0.0]], np.eye(2))
    assert same_subspace([[1.0, 1.0], [2.0, 2.0]], [[3.0, 3.0]])
    plane = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])  # rank 2 in 3 rows
    np.testing.assert_allclose(principal_cosines(plane, np.eye(3)), [1.0, 1.0], atol=1e-15)
    assert same_subspace(plane, np.eye(3)[:2]) and not same_subspace(plane, np.eye(3))


def test_row_spans_do_not_depend_on_the_rows_scale():
    """The rank's tolerance is relative to the largest singular value: rows of size 1e-20
    still span their line, and 1e20 times dependent rows still span one line."""
    np.testing.assert_allclose(principal_cosines(1e-20 * np.eye(2)[:1], np.eye(2)[:1]), [1.0])
    assert same_subspace(1e20 * np.array([[1.0, 2.0], [2.0, 4.0]]), [[1.0, 2.0]])
    assert same_subspace(1e-20 * np.eye(3)[:2], np.eye(3)[:2])
