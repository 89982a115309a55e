"""research_stats against hand-computed values and slow, obvious loop implementations."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from arch.bootstrap import optimal_block_length
from scipy import stats

from phoenix_rl.research.statistics import (
    EULER_GAMMA,
    deflated_sharpe_ratio,
    mean_ci,
    paired_bootstrap_ci,
    pbo_cscv,
    probabilistic_sharpe_ratio,
)


def slow_psr(x: list[float], sr_star: float) -> float:
    """PSR with every moment written out as a loop (raw kurtosis, biased moments)."""
    n = len(x)
    mu = sum(x) / n
    m2 = sum((v - mu) ** 2 for v in x) / n
    m3 = sum((v - mu) ** 3 for v in x) / n
    m4 = sum((v - mu) ** 4 for v in x) / n
    sr = mu / math.sqrt(sum((v - mu) ** 2 for v in x) / (n - 1))
    g3, g4 = m3 / m2**1.5, m4 / m2**2
    z = (sr - sr_star) * math.sqrt(n - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_psr_hand_symmetric_two_point():
    # x = 0,2,0,2: mean 1, sd(ddof=1) = sqrt(4/3) -> SR = sqrt(3)/2; skew 0, raw kurtosis 1 -> denominator 1.
    # PSR = Phi(sqrt(3)/2 * sqrt(3)) = Phi(1.5).
    assert probabilistic_sharpe_ratio([0, 2, 0, 2]) == pytest.approx(0.9331927987311419, abs=1e-12)
    assert probabilistic_sharpe_ratio([0, 2, 0, 2], sr_benchmark=math.sqrt(3) / 2) == pytest.approx(0.5)


def test_psr_hand_skewed():
    # x = 0,0,0,3: SR = 0.75/1.5 = 0.5; skew = 2/sqrt(3); raw kurtosis = 7/3 (moments worked out by hand).
    den = math.sqrt(1 - 2 / math.sqrt(3) * 0.5 + (7 / 3 - 1) / 4 * 0.25)
    expected = stats.norm.cdf(0.5 * math.sqrt(3) / den)
    assert probabilistic_sharpe_ratio([0, 0, 0, 3]) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.88822, abs=1e-4)


def test_psr_matches_slow_reference():
    x = np.random.default_rng(3).standard_t(4, size=250) * 0.01 + 0.001
    for sr_star in (0.0, 0.05, -0.02):
        assert probabilistic_sharpe_ratio(x, sr_star) == pytest.approx(slow_psr(list(x), sr_star), abs=1e-10)


def test_dsr_hand_two_trials():
    # Trials [0, 1]: V = 0.5 (ddof=1); N = 2 -> Phi^-1(1/2) = 0, so SR0 = sqrt(.5) * gamma * Phi^-1(1 - 1/(2e)).
    x = [0, 2, 0, 2]
    out = deflated_sharpe_ratio(x, [0.0, 1.0])
    sr0 = math.sqrt(0.5) * EULER_GAMMA * stats.norm.ppf(1 - 1 / (2 * math.e))
    assert out["sr0"] == pytest.approx(sr0, abs=1e-12)
    assert out["sr0"] == pytest.approx(0.3676, abs=1e-3)
    assert out["sr"] == pytest.approx(math.sqrt(3) / 2)
    assert out["skew"] == pytest.approx(0.0, abs=1e-12) and out["kurtosis"] == pytest.approx(1.0)
    assert out["dsr"] == pytest.approx(slow_psr(x, sr0), abs=1e-12)
    assert out["n_trials"] == 2


def test_dsr_expected_max_matches_monte_carlo():
    # The False Strategy theorem's SR0 approximates E[max of N iid N(0, V)]; check against simulation.
    rng = np.random.default_rng(0)
    trials = rng.normal(0, 0.1, size=100)
    out = deflated_sharpe_ratio(rng.normal(0.01, 1, 300), trials)
    sd = float(np.std(trials, ddof=1))
    mc_max = rng.normal(0, sd, size=(20000, 100)).max(axis=1).mean()
    assert out["sr0"] == pytest.approx(mc_max, rel=0.02)
    # More trials deflate more; an explicit n_trials overrides the count.
    assert deflated_sharpe_ratio(np.arange(10) - 3.0, trials, n_trials=1000)["sr0"] > out["sr0"]


def test_dsr_errors():
    with pytest.raises(ValueError, match=">= 2 finite trials"):
        deflated_sharpe_ratio([1, 2, 3, 4], [0.1])
    with pytest.raises(ValueError, match="n_trials"):
        deflated_sharpe_ratio([1, 2, 3, 4], [0.1, 0.2], n_trials=1)
    with pytest.raises(ValueError, match="constant"):
        probabilistic_sharpe_ratio([1, 1, 1, 1])


def mean_metric(block: np.ndarray) -> np.ndarray:
    return block.mean(axis=0)


def test_pbo_hand_overfit_and_robust():
    # S = 2: two combinations. The IS winner of each half is the OOS worst -> w = 1/4, logit log(1/3), PBO = 1.
    overfit = np.array([[2, 1, 0], [2, 1, 0], [-1, 0, 1], [-1, 0, 1]], dtype=float)
    out = pbo_cscv(overfit, n_splits=2, metric=mean_metric)
    assert out["n_combinations"] == 2 and out["pbo"] == 1.0
    np.testing.assert_allclose(out["logits"], [math.log(1 / 3)] * 2)
    # Config 0 best in both halves -> OOS rank 3 of 3, w = 3/4, logit log 3, PBO = 0.
    robust = np.array([[2, 1, 0], [2, 1, 0], [3, 1, 0], [3, 1, 0]], dtype=float)
    out = pbo_cscv(robust, n_splits=2, metric=mean_metric)
    assert out["pbo"] == 0.0
    np.testing.assert_allclose(out["logits"], [math.log(3)] * 2)


def slow_pbo(perf: np.ndarray, s: int) -> list[float]:
    """CSCV written out with row masks, per-column loops and ranks by counting."""
    t, n = perf.shape
    size = t // s
    rows = perf[t - size * s :]
    logits = []
    for is_ids in combinations(range(s), s // 2):
        mask = np.zeros(len(rows), dtype=bool)
        for g in is_ids:
            mask[g * size : (g + 1) * size] = True

        def sharpe(block: np.ndarray, j: int) -> float:
            col = block[:, j]
            return float(col.mean() / col.std(ddof=1))

        is_sr = [sharpe(rows[mask], j) for j in range(n)]
        oos_sr = [sharpe(rows[~mask], j) for j in range(n)]
        best = max(range(n), key=lambda j: is_sr[j])
        below = sum(v < oos_sr[best] for v in oos_sr)
        ties = sum(v == oos_sr[best] for v in oos_sr)
        w = (below + (ties + 1) / 2) / (n + 1)
        logits.append(math.log(w / (1 - w)))
    return logits


def test_pbo_matches_slow_reference_and_drops_oldest_rows():
    perf = np.random.default_rng(1).normal(0, 1, size=(83, 6))  # 83 = 8*10 + 3: the 3 oldest rows are dropped
    out = pbo_cscv(perf, n_splits=8)
    assert out["n_combinations"] == math.comb(8, 4)
    np.testing.assert_allclose(out["logits"], slow_pbo(perf, 8))
    assert out["pbo"] == pytest.approx(np.mean(np.array(slow_pbo(perf, 8)) <= 0))
    np.testing.assert_allclose(pbo_cscv(perf[3:], n_splits=8)["logits"], out["logits"])


def test_pbo_noise_vs_edge():
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 1, size=(400, 20))
    assert 0.2 < pbo_cscv(noise, n_splits=8)["pbo"] < 0.8
    edge = noise.copy()
    edge[:, 0] += 0.5
    assert pbo_cscv(edge, n_splits=8)["pbo"] == 0.0


def test_pbo_errors():
    with pytest.raises(ValueError, match="fewer than n_splits"):
        pbo_cscv(np.zeros((10, 3)), n_splits=16)
    with pytest.raises(ValueError, match=">= 2 configurations"):
        pbo_cscv(np.zeros((40, 1)))
    with pytest.raises(ValueError, match="even"):
        pbo_cscv(np.zeros((40, 3)), n_splits=5)


def slow_stationary_ci(d: np.ndarray, block: float, reps: int, alpha: float, seed: int) -> tuple[float, float]:
    """Politis-Romano resampling by hand: start anywhere, continue the block with prob 1 - 1/block, wrap around."""
    rng = np.random.default_rng(seed)
    n, means = len(d), []
    for _ in range(reps):
        i, total = int(rng.integers(n)), 0.0
        for k in range(n):
            if k and rng.random() < 1 / block:
                i = int(rng.integers(n))
            total += d[i % n]
            i += 1
        means.append(total / n)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def test_paired_ci_matches_slow_stationary_bootstrap():
    rng = np.random.default_rng(4)
    e = rng.normal(0, 1, 301)
    diff = 0.2 + e[1:] + 0.5 * e[:-1]  # MA(1): autocorrelated days
    b = rng.normal(0, 1, 300)
    out = paired_bootstrap_ci(b + diff, b, reps=2000, seed=0)
    assert out["mean"] == pytest.approx(diff.mean())
    assert out["n_days"] == 300
    assert out["block_length"] == pytest.approx(float(optimal_block_length(diff)["stationary"].iloc[0]))
    low, high = slow_stationary_ci(diff, out["block_length"], 2000, 0.05, seed=1)
    width = high - low
    assert out["low"] == pytest.approx(low, abs=0.1 * width)
    assert out["high"] == pytest.approx(high, abs=0.1 * width)
    assert out == paired_bootstrap_ci(b + diff, b, reps=2000, seed=0)  # seeded -> reproducible


def test_mean_ci_hand_constant_and_iid_width():
    assert mean_ci([0.5] * 6) == {"mean": 0.5, "low": 0.5, "high": 0.5, "block_length": 1.0, "n_days": 6}
    x = np.random.default_rng(5).normal(0.1, 1, 500)
    out = mean_ci(x)
    assert out["low"] < out["mean"] < out["high"]
    assert out["high"] - out["low"] == pytest.approx(2 * 1.96 / math.sqrt(500), rel=0.2)  # iid: normal-theory width


def test_bootstrap_errors():
    with pytest.raises(ValueError, match="need >= 5"):
        mean_ci([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="join them on trade_date"):
        paired_bootstrap_ci(np.ones(10), np.ones(9))
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap_ci([1, 2, np.nan, 4, 5], [1, 2, 3, 4, 5])
    a = pd.Series(np.arange(6.0), index=pd.date_range("2024-03-11", periods=6))
    b = pd.Series(np.arange(6.0), index=pd.date_range("2024-03-12", periods=6))
    with pytest.raises(ValueError, match="different indexes"):
        paired_bootstrap_ci(a, b)
