"""The calibration math and the choice of calibration subnets (pure functions, synthetic data)."""

from __future__ import annotations

import numpy as np
import pytest

from latencykit.lut.calibration import GroupFit, fit_group_coefficients, select_calibration


def synthetic(n: int, coefficients: list[float], intercept: float, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.5, 3.0, size=(n, len(coefficients))) * np.arange(1, len(coefficients) + 1)
    y = intercept + X @ np.array(coefficients)
    return X, y * (1 + noise * rng.standard_normal(n))


def test_recovers_known_coefficients_with_enough_data() -> None:
    truth = [0.9, 1.25, 1.0, 0.8]
    X, y = synthetic(80, truth, 0.3, 0.002)
    fit = fit_group_coefficients(X, y)
    assert np.allclose(fit.coefficients, truth, atol=0.03)
    assert abs(fit.intercept_ms - 0.3) < 0.3
    assert fit.n == 80 and fit.loo_rmspe_pct < 1.0
    assert np.allclose(fit.predict(X), y, rtol=0.02)


def test_shrinks_toward_one_with_collinear_groups_and_little_data() -> None:
    rng = np.random.default_rng(1)
    base = rng.uniform(1, 3, size=6)
    X = np.column_stack([base, 0.5 * base + 0.01 * rng.standard_normal(6), rng.uniform(1, 2, 6)])
    y = X.sum(1) * (1 + 0.01 * rng.standard_normal(6))  # the table is right, up to noise
    fit = fit_group_coefficients(X, y)
    assert np.all(np.abs(fit.coefficients - 1) < 0.2), fit
    assert np.all(fit.coefficients >= 0)


def test_coefficients_never_go_negative() -> None:
    X, y = synthetic(40, [1.0, -0.5, 1.0], 0.0, 0.001, seed=2)
    fit = fit_group_coefficients(X, y, alphas=(1e-6,))
    assert np.all(fit.coefficients >= 0)


def test_unused_group_keeps_coefficient_one_and_round_trips() -> None:
    X, y = synthetic(20, [1.1, 1.0], 0.1, 0.002, seed=3)
    X = np.column_stack([X, np.zeros(20)])
    fit = fit_group_coefficients(X, y)
    assert fit.coefficients[2] == 1.0
    again = GroupFit.from_dict(fit.to_dict())
    assert np.array_equal(again.coefficients, fit.coefficients) and again.alpha == fit.alpha


def test_too_few_subnets_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        fit_group_coefficients(np.ones((2, 2)), np.ones(2))


def test_selection_spans_the_space_and_is_seeded(tiny) -> None:
    archs = select_calibration(tiny, 8, seed=0)
    assert len(archs) == len(set(archs)) == 8
    assert archs[0] == tiny.smallest() and archs[1] == tiny.largest()
    flops = [tiny.flops(a) for a in archs]
    assert min(flops) == flops[0] and max(flops) == flops[1]
    assert select_calibration(tiny, 8, seed=0) == archs
    assert select_calibration(tiny, 0) == []


def test_a_small_nearly_constant_group_is_not_traded_against_the_intercept() -> None:
    rng = np.random.default_rng(4)
    X = np.column_stack([rng.uniform(4, 12, 20), rng.uniform(1, 4, 20), 0.08 + 0.001 * rng.standard_normal(20)])
    y = 0.3 + X @ np.array([0.9, 1.15, 1.0]) * (1 + 0.01 * rng.standard_normal(20))
    fit = fit_group_coefficients(X, y)
    assert abs(fit.coefficients[2] - 1) < 0.1, fit
