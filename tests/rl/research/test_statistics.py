"""research_stats against hand-computed values and slow, obvious loop implementations."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from arch.bootstrap import optimal_block_length
from scipy import stats

from phoenix_rl.research.protocol import canonical_json, protocol_hash
from phoenix_rl.research.statistics import (
    EULER_GAMMA,
    MIN_TRADES,
    deflated_sharpe_ratio,
    edge_verdict,
    fixed_capital_total,
    holm_adjust,
    mean_ci,
    min_bootstrap_reps,
    paired_bootstrap_ci,
    pbo_cscv,
    probabilistic_sharpe_ratio,
    seed_day_bootstrap,
    total_columns,
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
    constant = mean_ci([0.5] * 6)
    assert (constant["mean"], constant["low"], constant["high"], constant["n_days"]) == (0.5, 0.5, 0.5, 6)
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


# --- fixed capital, seeds x days, multiplicity, verdicts, pre-registration (issue 24) -----------------------------


def test_fixed_capital_total_by_hand():
    # $730 a day for 63 days (three test months that each restart at $10k) on $10k: 45,990 / 10,000
    assert fixed_capital_total([730.0] * 63, 10_000.0) == pytest.approx(4.599)
    compounded = float(np.prod([1 + 730 * 21 / 10_000] * 3) - 1)  # the months' growth multiplied: 12.95
    assert fixed_capital_total([730.0] * 63, 10_000.0) < compounded / 2
    np.testing.assert_allclose(total_columns(np.array([[1.0, -2.0], [3.0, 5.0]])), [4.0, 3.0])
    with pytest.raises(ValueError, match="capital must be > 0"):
        fixed_capital_total([1.0], 0.0)


def slow_two_stage_ci(a: np.ndarray, b: np.ndarray, block: float, reps: int, seed: int) -> tuple[float, float]:
    """Seeds with replacement per arm, then one Politis-Romano day resample shared by both: loops only."""
    rng = np.random.default_rng(seed)
    n, means = a.shape[1], []
    for _ in range(reps):
        sa = [int(rng.integers(a.shape[0])) for _ in range(a.shape[0])]
        sb = [int(rng.integers(b.shape[0])) for _ in range(b.shape[0])]
        i, days = int(rng.integers(n)), []
        for k in range(n):
            if k and rng.random() < 1 / block:
                i = int(rng.integers(n))
            days.append(i % n)
            i += 1
        va = sum(a[s, d] for s in sa for d in days) / (len(sa) * n)
        vb = sum(b[s, d] for s in sb for d in days) / (len(sb) * n)
        means.append(va - vb)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def test_seed_resampling_widens_the_ci_when_seeds_disagree_and_equals_days_only_when_they_agree():
    rng = np.random.default_rng(7)
    days = rng.normal(100.0, 300.0, 60)  # $ a day: the market's noise, shared by every seed
    equal = np.tile(days, (10, 1))
    alone = mean_ci(days, reps=1000, seed=3)
    same = seed_day_bootstrap(equal, None, reps=1000, seed=3)
    assert (same["low"], same["high"]) == pytest.approx((alone["low"], alone["high"]), rel=1e-12)  # same day draws
    assert same["p_value"] == alone["p_value"]
    assert same["n_seeds"] == [10] and alone["n_seeds"] == [1]
    # seeds that disagree: each training run adds its own level (sd $150 a day) to the same days
    spread = days + rng.normal(0.0, 150.0, (10, 1))
    wide = seed_day_bootstrap(spread, None, reps=1000, seed=3)
    days_only = mean_ci(spread.mean(axis=0), reps=1000, seed=3)  # the old way: average the seeds first
    assert wide["mean"] == pytest.approx(days_only["mean"])
    assert wide["high"] - wide["low"] > 1.3 * (days_only["high"] - days_only["low"])
    # paired, each arm its own seeds, against a slow loop implementation
    other = days[None, :] + rng.normal(-50.0, 100.0, (4, 1))
    fast = seed_day_bootstrap(spread, other, reps=1000, seed=0)
    low, high = slow_two_stage_ci(spread, other, fast["block_length"], 1000, seed=11)
    width = high - low
    assert fast["n_seeds"] == [10, 4] and fast["n_days"] == 60
    assert fast["low"] == pytest.approx(low, abs=0.12 * width) and fast["high"] == pytest.approx(high, abs=0.12 * width)
    assert fast == seed_day_bootstrap(spread, other, reps=1000, seed=0)  # seeded -> reproducible
    with pytest.raises(ValueError, match="join them on trade_date"):
        seed_day_bootstrap(spread, other[:, :-1])


def test_holm_against_a_hand_case():
    # p = 0.01, 0.04, 0.03, 0.20 at alpha 0.05. Sorted: 0.01 x 4 = 0.04 (reject), 0.03 x 3 = 0.09 (stop: keep
    # it and everything after); adjusted p are the running maxima: 0.04, 0.09, 0.09, 0.20
    family = {k: {"p_value": p, "mean": 1.0} for k, p in zip("abcd", (0.01, 0.04, 0.03, 0.20), strict=True)}
    out = holm_adjust(family, alpha=0.05)
    assert {k: round(v["p_adjusted"], 12) for k, v in out.items()} == {"a": 0.04, "b": 0.09, "c": 0.09, "d": 0.2}
    assert {k: v["reject"] for k, v in out.items()} == {"a": True, "b": False, "c": False, "d": False}
    assert all(v["family_size"] == 4 for v in out.values())
    # each alone at 0.05 would have rejected three of the four
    assert sum(v["p_value"] < 0.05 for v in family.values()) == 3
    assert holm_adjust({}) == {}
    # the bootstrap's smallest p is 2 / (reps + 1): with 6 tests at 0.05 it takes 239 replications to reject
    assert min_bootstrap_reps(6, 0.05) == 239 and 6 * 2 / (239 + 1) <= 0.05 < 6 * 2 / (238 + 1)


def test_p_value_inverts_the_percentile_interval():
    rng = np.random.default_rng(2)
    for shift in (0.0, 0.3, 1.0):
        x = rng.normal(shift, 1.0, 40)
        out = mean_ci(x, reps=2000, seed=1)
        excludes = out["low"] > 0 or out["high"] < 0
        assert excludes == (out["p_value"] < 0.05) or abs(out["p_value"] - 0.05) < 0.01


def test_edge_verdict_says_no_evidence_on_five_round_trips_and_on_noise():
    # the reviewer's case: one position a session on 5 held-out days, +1.4 % after costs
    few = edge_verdict([60.0, -20.0, 45.0, 30.0, 25.0], [60.0, -20.0, 45.0, 30.0, 25.0], [0.0] * 5)
    assert not few["edge"] and few["verdict"].startswith("no evidence of a tradeable edge: too little data")
    assert f"5 round trip(s), need >= {MIN_TRADES}" in few["verdict"]
    rng = np.random.default_rng(5)
    noise = edge_verdict(rng.normal(-5.0, 150.0, 20), rng.normal(-0.5, 20.0, 200), rng.normal(0.0, 150.0, 20))
    assert not noise["edge"] and noise["verdict"].startswith("no evidence of a tradeable edge: agent $")
    assert noise["tests"]["daily_vs_flat"]["family_size"] == 3


def test_edge_verdict_claims_an_edge_on_a_clearly_positive_long_series():
    rng = np.random.default_rng(6)
    daily = rng.normal(700.0, 250.0, 63)
    trades = rng.normal(12.0, 40.0, 2_000)
    rule = daily + rng.normal(300.0, 200.0, 63)  # the tuned rule makes more: the agent does not beat it
    out = edge_verdict(daily, trades, rule)
    assert out["edge"] and out["verdict"].startswith("evidence of a tradeable edge: agent $+")
    assert "the agent is worse than the tuned OFI rule" in out["verdict"]
    assert out["tests"]["daily_vs_flat"]["p_adjusted"] < 0.05 and out["tests"]["per_trade_vs_0"]["reject"]
    with pytest.raises(ValueError, match="align on trade_date"):
        edge_verdict(daily, trades, rule[:-1])


def test_protocol_hash_is_stable_under_key_order_and_changes_with_any_field():
    import datetime as dt

    config = {"market": {"seed": 11, "strength": 0.5}, "seeds": list(range(1, 11)), "alpha": 0.05,
              "windows": {"test": [dt.date(2024, 3, 1), dt.date(2024, 3, 29)]}}  # fmt: skip
    shuffled = {"windows": config["windows"], "alpha": 0.05, "seeds": config["seeds"],
                "market": {"strength": 0.5, "seed": 11}}  # fmt: skip
    digest = protocol_hash(config)
    assert digest == protocol_hash(shuffled) and len(digest) == 64
    assert canonical_json(config) == canonical_json(shuffled)
    assert '"test":["2024-03-01","2024-03-29"]' in canonical_json(config)
    changed = [
        config | {"alpha": 0.1},
        config | {"seeds": list(range(1, 10))},
        config | {"market": {"seed": 11, "strength": 0.0}},
        config | {"windows": {"test": [dt.date(2024, 3, 1), dt.date(2024, 3, 28)]}},
        config | {"extra": None},
    ]
    assert len({digest, *(protocol_hash(c) for c in changed)}) == 1 + len(changed)
