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


def test_a_common_scale_is_learnt_not_pushed_into_the_intercept() -> None:
    """Whole models 8% slower than their layers in every group: few, collinear subnets still give one
    scale of about 1.08 (not 1.0 plus an intercept that is right only for mid-sized subnets)."""
    rng = np.random.default_rng(5)
    base = rng.uniform(5, 20, size=12)
    X = np.column_stack([0.6 * base, 0.3 * base + rng.uniform(0, 1, 12), 0.1 * base + 0.2])
    y = 1.08 * X.sum(1) * (1 + 0.005 * rng.standard_normal(12))
    fit = fit_group_coefficients(X, y)
    assert np.allclose(fit.coefficients, 1.08, atol=0.03), fit
    assert abs(fit.intercept_ms) < 0.3, fit
    small, large = X[np.argmin(base)][None], X[np.argmax(base)][None]
    for x in (small, large):  # right at both ends of the range, not only in the middle
        assert abs(fit.predict(x)[0] / (1.08 * x.sum()) - 1) < 0.01


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


def test_selection_is_spread_like_random_subnets_and_seeded(tiny) -> None:
    """The calibration subnets' FLOPs follow the distribution of random subnets (no octile of 2,000
    independent random subnets holds more than 3 of 8), not the space's extremes; a quarter of them
    are the parameter-heavy kind a search picks (the two with the most params per FLOP rank in the top
    15% of random subnets, the densest in the top 2%, for every seed)."""
    archs = select_calibration(tiny, 8, seed=0)
    assert len(archs) == len(set(archs)) == 8
    flops = np.array([tiny.flops(a) for a in archs], dtype=float)
    assert np.all(np.diff(flops) >= 0)
    reference = np.array([tiny.flops(tiny.decode(g)) for g in tiny.sample_genes(2000, 123)], dtype=float)
    edges = np.quantile(reference, np.linspace(0, 1, 9))
    counts = np.histogram(flops, bins=edges)[0]
    assert counts.max() <= 3 and (counts > 0).sum() >= 5, counts
    random_density = np.array([tiny.params(tiny.decode(g)) / tiny.flops(tiny.decode(g))
                               for g in tiny.sample_genes(2000, 123)])
    for seed in range(5):
        second, densest = sorted(tiny.params(a) / tiny.flops(a) for a in select_calibration(tiny, 8, seed=seed))[-2:]
        assert (random_density >= densest).mean() <= 0.02 and (random_density >= second).mean() <= 0.15, seed
    assert tiny.smallest() not in archs and tiny.largest() not in archs
    assert select_calibration(tiny, 8, seed=0) == archs
    assert select_calibration(tiny, 8, seed=1) != archs
    assert select_calibration(tiny, 0) == []


def test_a_small_nearly_constant_group_is_not_traded_against_the_intercept() -> None:
    rng = np.random.default_rng(4)
    X = np.column_stack([rng.uniform(4, 12, 20), rng.uniform(1, 4, 20), 0.08 + 0.001 * rng.standard_normal(20)])
    y = 0.3 + X @ np.array([0.9, 1.15, 1.0]) * (1 + 0.01 * rng.standard_normal(20))
    fit = fit_group_coefficients(X, y)
    assert abs(fit.coefficients[2] - 1) < 0.1, fit


def test_the_weights_term_is_recovered_and_never_negative() -> None:
    """Subnets that cost 0.3 ms per million parameters on top of their table sums: the free last column
    gets 0.3 and the groups stay at 1; where the weights cost nothing the term is 0, and it never goes
    negative even when the data would pull it there."""
    rng = np.random.default_rng(7)
    X = rng.uniform(1, 5, size=(24, 2)) * [1, 2]
    params = rng.uniform(1, 6, 24)
    design = np.column_stack([X, params])
    heavy = X.sum(1) + 0.3 * params
    fit = fit_group_coefficients(design, heavy * (1 + 0.002 * rng.standard_normal(24)), free=1)
    assert fit.coefficients[2] == pytest.approx(0.3, abs=0.03) and np.allclose(fit.coefficients[:2], 1, atol=0.03)
    assert np.allclose(fit.predict(design), heavy, rtol=0.01)
    plain = fit_group_coefficients(design, X.sum(1), free=1)
    assert plain.coefficients[2] == pytest.approx(0.0, abs=1e-3) and np.allclose(plain.coefficients[:2], 1, atol=1e-3)
    light = fit_group_coefficients(design, X.sum(1) - 0.2 * params + 3.0, free=1, alphas=(1e-6,))
    assert light.coefficients[2] == pytest.approx(0.0, abs=1e-9) and np.all(light.coefficients >= 0)
    with pytest.raises(ValueError, match="groups \\+ 3"):
        fit_group_coefficients(design, heavy, free=3)
