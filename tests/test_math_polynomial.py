"""Exact polynomials in Gaussian coordinates against the mathematics: the ring operations
agree with arithmetic on their values, He_k of a polynomial with numpy's Hermite series, and
the exact expectations with the double factorials and Isserlis' theorem, written out here."""

import numpy as np
import pytest

from giantstep.polynomial import Polynomial, gaussian_moment, monomial_count

RANK = 3


def points(dtype=np.float64):
    return np.random.default_rng(7).standard_normal((50, RANK)).astype(dtype)


def z(i):
    return Polynomial.variable(RANK, i)


def one(value=1.0):
    return Polynomial.constant(RANK, value)


def test_gaussian_moments_are_double_factorials():
    # E[g^k] = (k − 1)!! = 1·3·5···(k − 1) for even k, 0 for odd k.
    expected = [1, 0, 1, 0, 3, 0, 15, 0, 105, 0, 945, 0, 10395]
    assert [gaussian_moment(k) for k in range(13)] == expected
    assert gaussian_moment(300) == pytest.approx(float(np.prod(np.arange(299, 0, -2.0))))
    assert gaussian_moment(302) == float("inf")  # (301)!! > 1.8e308
    assert gaussian_moment(301) == 0.0


def test_monomial_count_is_stars_and_bars():
    # Monomials z1^a z2^b with a + b ≤ 3: 1 + 2 + 3 + 4 = 10.
    count = sum(1 for a in range(4) for b in range(4) if a + b <= 3)
    assert monomial_count(2, 3) == count == 10
    assert monomial_count(3, 0) == 1 and monomial_count(1, 5) == 6


def test_constants_and_variables():
    zero = Polynomial.constant(RANK, 0.0)
    assert zero.terms == {} and zero.constant_value == 0.0 and zero.degree == 0
    c = one(2.5)
    assert c.terms == {(0, 0, 0): 2.5} and c.constant_value == 2.5
    np.testing.assert_array_equal(c(points()), np.full(50, 2.5))
    for i in range(RANK):
        v = z(i)
        assert v.terms == {tuple(int(j == i) for j in range(RANK)): 1.0}
        assert v.degree == 1 and v.constant_value is None
        np.testing.assert_array_equal(v(points()), points()[:, i])


def test_ring_operations_agree_with_arithmetic_on_values():
    h = points()
    p = z(0) + z(1).scale(2.0) - one(0.5)  # z1 + 2 z2 − 1/2
    q = z(2) * z(0) + one(3.0)  # z1 z3 + 3
    pv, qv = h[:, 0] + 2 * h[:, 1] - 0.5, h[:, 0] * h[:, 2] + 3
    np.testing.assert_allclose(p(h), pv, rtol=1e-14)
    np.testing.assert_allclose(q(h), qv, rtol=1e-14)
    np.testing.assert_allclose((p + q)(h), pv + qv, rtol=1e-14)
    np.testing.assert_allclose((p - q)(h), pv - qv, rtol=1e-14)
    np.testing.assert_allclose((-p)(h), -pv, rtol=1e-14)
    np.testing.assert_allclose((p * q)(h), pv * qv, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose((p**3)(h), pv**3, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose((p**0)(h), np.ones(50))
    assert (p * q).degree == 3 and (p**3).degree == 3 and (q**2).degree == 4
    # Cancellation leaves no zero terms: (z1 + z2)(z1 − z2) = z1² − z2².
    square = (z(0) + z(1)) * (z(0) - z(1))
    assert square.terms == {(2, 0, 0): 1.0, (0, 2, 0): -1.0}
    assert (p - p).terms == {} and (p * one(0.0)).terms == {}
    # Scaling by zero is the zero polynomial in the same coordinates.
    zero = p.scale(0.0)
    assert zero.rank == RANK and zero.terms == {} and zero.constant_value == 0.0
    np.testing.assert_array_equal(zero(h), np.zeros(50))


def test_polynomials_in_different_coordinates_do_not_mix():
    with pytest.raises(ValueError):
        Polynomial.variable(2, 0) * Polynomial.variable(3, 0)


def test_values_keep_the_dtype_of_the_points():
    p = z(0) * z(1) + one(0.25)
    for dtype in (np.float32, np.float64):
        values = p(points(dtype))
        assert values.dtype == dtype
        np.testing.assert_allclose(values, points()[:, 0] * points()[:, 1] + 0.25, rtol=1e-6)


@pytest.mark.parametrize("k", [0, 1, 2, 3, 5])
def test_hermite_of_a_polynomial_is_the_hermite_series_of_its_values(k):
    h = points()
    p = z(0).scale(0.6) + z(1).scale(0.8)
    values = 0.6 * h[:, 0] + 0.8 * h[:, 1]
    reference = np.polynomial.hermite_e.hermeval(values, [0] * k + [1])
    np.testing.assert_allclose(p.hermite(k)(h), reference, rtol=1e-12, atol=1e-12)
    assert p.hermite(k).degree == k


def test_expectations_are_exact():
    # Isserlis: E[(z1 + z2)^4] = 3 (E[(z1 + z2)²])² = 12; E[z1² z2² z3²] = 1; E[z1^4 z3²] = 3.
    assert ((z(0) + z(1)) ** 4).expectation() == 12.0
    assert (z(0) * z(0) * z(1) * z(1) * z(2) * z(2)).expectation() == 1.0
    assert (z(0) ** 4 * z(2) ** 2).expectation() == 3.0
    assert (z(0) * z(1) + one(2.0)).expectation() == 2.0
    # He_k of a unit-variance linear form: E[He_j He_k] = k! δ_jk.
    u = z(0).scale(0.6) + z(2).scale(0.8)
    assert (u.hermite(3) * u.hermite(3)).expectation() == pytest.approx(6.0, rel=1e-14)
    assert (u.hermite(4) * u.hermite(4)).expectation() == pytest.approx(24.0, rel=1e-14)
    assert (u.hermite(3) * u.hermite(1)).expectation() == pytest.approx(0.0, abs=1e-14)
    assert u.hermite(2).expectation() == pytest.approx(0.0, abs=1e-15)
