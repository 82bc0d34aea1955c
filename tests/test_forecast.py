"""The learning-curve forecast and the stopping rule (alod.forecast) on known curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alod import forecast as F


def power_law(n, a=0.6, b=0.9, c=0.4):
    return a - b * np.asarray(n, float) ** -c


def test_fit_recovers_the_parameters_of_a_noisy_power_law():
    rng = np.random.default_rng(0)
    n = np.repeat([100, 200, 400, 800, 1600, 3200, 6400], 3)  # 7 budgets x 3 seeds
    y = power_law(n) + rng.normal(0, 0.003, len(n))
    fit = F.fit_power_law(n, y)
    assert fit.a == pytest.approx(0.6, abs=0.02)
    assert fit.b == pytest.approx(0.9, rel=0.25)
    assert fit.c == pytest.approx(0.4, abs=0.08)
    # and without noise, exactly
    exact = F.fit_power_law(n, power_law(n))
    assert (exact.a, exact.b, exact.c) == pytest.approx((0.6, 0.9, 0.4), rel=1e-4)


def test_forecast_band_covers_the_truth_and_labels_to_target():
    rng = np.random.default_rng(1)
    n = np.tile([100, 200, 400, 800], 3)
    seeds = np.repeat([0, 1, 2], 4)
    y = power_law(n) + rng.normal(0, 0.004, len(n))
    fc = F.forecast(n, y, seeds, target=0.55, seed=0)
    assert fc.now == 800 and "3 seeds" in fc.band and fc.has_band
    for m, (mid, low, high) in fc.at.items():
        assert low <= mid <= high
        assert abs(mid - power_law(800 * m)) < 0.03
    true_n = (0.9 / (0.6 - 0.55)) ** (1 / 0.4)
    mid, low, high = fc.to_target
    assert mid == pytest.approx(true_n, rel=0.5) and low <= mid <= high
    m = fc.metrics()
    assert {"forecast_mAP50.x1.5", "forecast_mAP50.x2.low", "forecast_mAP50.x5.high", "forecast_asymptote",
            "forecast_labels_to_target", "forecast_labels_to_target.high"} <= set(m)
    assert all(math.isfinite(v) for v in m.values())


def test_unreachable_target_is_inf_and_not_logged():
    n = [100, 200, 400, 800]
    fc = F.forecast(n, power_law(n), target=0.7)  # above the asymptote 0.6
    assert fc.to_target[0] == math.inf
    assert "forecast_labels_to_target" not in fc.metrics()
    assert "never" in fc.describe()


@pytest.mark.parametrize("n, y", [([], []), ([20], [0.1]), ([20, 40], [0.1, 0.2]),
                                  ([0, 20, 40], [0.05, 0.1, 0.2]),  # zero labels do not count
                                  ([20, 20, 40, 40], [0.1, 0.11, 0.2, 0.21])])  # two label counts, four points
def test_refuses_fewer_than_three_label_counts_saying_why(n, y):
    with pytest.raises(F.NotEnoughPoints, match="three parameters") as e:
        F.forecast(n, y)
    assert "3 or more different numbers of labels" in str(e.value)


def test_three_points_forecast_without_a_band():
    n = [20, 40, 60]
    fc = F.forecast(n, power_law(n, a=0.3, b=0.5, c=0.5))
    assert not fc.has_band and "no band" in fc.band
    assert math.isnan(fc.at[2.0][1])
    assert set(fc.metrics()) == {"forecast_asymptote", "forecast_mAP50.x1.5", "forecast_mAP50.x2",
                                 "forecast_mAP50.x5"}


def test_fit_keeps_the_curve_rising_and_below_one():
    falling = F.fit_power_law([10, 20, 40, 80], [0.5, 0.45, 0.42, 0.4])
    assert falling.b == 0  # more labels never hurt on average: a flat line at the mean
    assert falling.a == pytest.approx(np.mean([0.5, 0.45, 0.42, 0.4]))
    steep = F.fit_power_law([10, 20, 40], [0.5, 0.9, 0.99])
    assert steep.a <= 1.0


# --- the stopping rule on made-up histories -----------------------------------------------------


def test_stop_rule_keeps_labeling_while_the_curve_rises():
    n = [1000, 2000, 3000, 4000, 5000]
    y = power_law(n, a=0.6, b=5.0, c=0.5)  # still gains ~0.01 per 1000 at 5000
    d = F.stop_rule(n, y, min_gain=0.005, horizon=1000)
    assert not d.stop and d.gain_per_1000 > 0.005 and d.reason.startswith("keep labeling")


def test_stop_rule_stops_once_flat():
    n = [1000, 2000, 3000, 4000, 5000, 6000]
    y = power_law(n, a=0.6, b=5.0, c=1.5) + np.array([0.001, -0.001, 0.0005, -0.0005, 0.0, 0.0002])
    d = F.stop_rule(n, y, min_gain=0.005, horizon=1000)
    assert d.stop and d.gain_per_1000 < 0.005 and d.gain_high < 0.005
    assert "flattened" in d.reason and "threshold 0.005" in d.reason


def test_stop_rule_waits_for_a_band():
    n = [20, 40, 60]
    d = F.stop_rule(n, [0.30, 0.29, 0.30], min_gain=1.0, horizon=20)  # flat, but only three points
    assert not d.stop and "no band yet" in d.reason
    d = F.stop_rule(n[:2], [0.3, 0.31], min_gain=1.0, horizon=20)
    assert not d.stop and "three parameters" in d.reason


def test_stop_rule_band_guards_against_noise():
    # four noisy points whose point fit is flat but whose band still allows a steep rise: keep labeling
    n = [20, 40, 60, 80]
    d = F.stop_rule(n, [0.16, 0.20, 0.15, 0.19], min_gain=0.5, horizon=20)
    assert math.isfinite(d.gain_high)
    assert d.stop == (d.gain_high < 0.5)


def test_a_curve_without_flattening_fits_at_the_bound_and_says_it_is_an_extrapolation():
    n = [50, 100, 150, 200]
    straight = F.forecast(n, [0.05 + 0.001 * x for x in n])  # mAP50 still rising in a straight line
    assert straight.fit.at_bound and straight.fit.a == 1.0
    assert "asymptote at its bound 1" in straight.describe() and "extrapolation" in straight.describe()
    saturating = F.forecast(n, power_law(n))
    assert not saturating.fit.at_bound and "bound" not in saturating.describe()
