"""Statistics that guard a research protocol against selection bias and noise (pure: numpy, scipy, arch).

Why: a search over many configurations always finds one with a good backtest. These tests ask whether it is
better than the best of that many lucky draws (DSR), whether the in-sample winner tends to lose out of sample
(PBO), and whether a difference between two strategies' daily returns survives autocorrelated resampling.

Conventions: Sharpe ratios here are per period (mean / std with ddof=1, not annualised), so the trial Sharpe
ratios passed to the DSR must be per period too. Skewness and kurtosis are the sample moments (biased,
scipy's default) and kurtosis is RAW (a normal distribution has 3), as in Bailey & López de Prado (2014).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Any

import numpy as np
from arch.bootstrap import StationaryBootstrap, optimal_block_length
from scipy import stats

__all__ = [
    "EULER_GAMMA",
    "MIN_DAYS",
    "deflated_sharpe_ratio",
    "mean_ci",
    "paired_bootstrap_ci",
    "pbo_cscv",
    "probabilistic_sharpe_ratio",
    "sharpe_columns",
]

EULER_GAMMA = 0.5772156649015329
MIN_DAYS = 5
_TINY = 1e-12


def _as_returns(returns: Any, name: str = "returns") -> np.ndarray:
    x = np.asarray(returns, dtype=float).ravel()
    if x.size < 3 or not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: need >= 3 finite per-period returns, got {x.size} (drop NaN days first)")
    if np.std(x) < _TINY:
        raise ValueError(f"{name}: returns are constant, the Sharpe ratio and its standard error are undefined")
    return x


def _psr(sr: float, sr_star: float, n: int, skew: float, kurt: float) -> float:
    var_term = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    return float(stats.norm.cdf((sr - sr_star) * math.sqrt(n - 1) / math.sqrt(max(var_term, _TINY))))


def probabilistic_sharpe_ratio(returns: Any, sr_benchmark: float = 0.0) -> float:
    """P(true SR > sr_benchmark) given the sample's length, skewness and raw kurtosis.

    PSR = Phi((SR - SR*) sqrt(T-1) / sqrt(1 - g3 SR + (g4-1)/4 SR^2)) (Bailey & López de Prado 2012, "The
    Sharpe Ratio Efficient Frontier", eq. 11; restated as eq. 2 of "The Deflated Sharpe Ratio", 2014).
    """
    x = _as_returns(returns)
    sr = float(x.mean() / x.std(ddof=1))
    return _psr(sr, sr_benchmark, x.size, float(stats.skew(x)), float(stats.kurtosis(x, fisher=False)))


def deflated_sharpe_ratio(returns: Any, trial_sharpes: Sequence[float], n_trials: int | None = None) -> dict:
    """PSR against the Sharpe ratio the best of n_trials unskilled trials is expected to reach.

    SR0 = sqrt(V[SR_n]) ((1-gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e))), gamma = Euler-Mascheroni,
    DSR = PSR(SR0) (Bailey & López de Prado 2014, "The Deflated Sharpe Ratio", J. Portfolio Management
    40(5), eq. 2 and the False Strategy theorem). trial_sharpes are the per-period SRs of ALL trials tried,
    pruned ones included, since each was a draw; V uses ddof=1. N defaults to len(trial_sharpes); pass
    n_trials when the effective number of independent trials is known to be different (e.g. clustered).
    """
    x = _as_returns(returns)
    trials = np.asarray(trial_sharpes, dtype=float).ravel()
    trials = trials[np.isfinite(trials)]
    if trials.size < 2:
        raise ValueError(f"trial_sharpes: need the per-period SRs of >= 2 finite trials, got {trials.size}")
    n = int(n_trials) if n_trials is not None else int(trials.size)
    if n < 2:
        raise ValueError(f"n_trials must be >= 2 (the expected maximum of one trial is undefined), got {n}")
    sd = math.sqrt(float(np.var(trials, ddof=1)))
    sr0 = sd * ((1 - EULER_GAMMA) * stats.norm.ppf(1 - 1 / n) + EULER_GAMMA * stats.norm.ppf(1 - 1 / (n * math.e)))
    sr = float(x.mean() / x.std(ddof=1))
    skew, kurt = float(stats.skew(x)), float(stats.kurtosis(x, fisher=False))
    return {
        "sr": sr,
        "sr0": float(sr0),
        "dsr": _psr(sr, float(sr0), x.size, skew, kurt),
        "n_trials": n,
        "skew": skew,
        "kurtosis": kurt,
    }


def sharpe_columns(block: np.ndarray) -> np.ndarray:
    """Per-period Sharpe ratio of each column (ddof=1); 0 for a constant column."""
    sd = block.std(axis=0, ddof=1)
    mean = block.mean(axis=0)
    return np.divide(mean, sd, out=np.zeros_like(mean), where=sd > _TINY)


def pbo_cscv(perf: Any, n_splits: int = 16, metric: Callable[[np.ndarray], np.ndarray] = sharpe_columns) -> dict:
    """Probability of Backtest Overfitting by combinatorially symmetric cross-validation.

    Rows (periods) are cut into S contiguous groups of equal size (the oldest T mod S rows are dropped); for
    each of the C(S, S/2) choices of S/2 groups as in-sample (rest out-of-sample) the IS-best configuration's
    OOS relative rank w = rank/(N+1) (ascending, ties averaged) gives the logit log(w/(1-w)); PBO = share of
    logits <= 0, i.e. the IS winner lands at or below the OOS median (Bailey, Borwein, López de Prado & Zhu
    2017, "The Probability of Backtest Overfitting", J. Computational Finance 20(4), section 2.2).
    metric maps a (rows x N) block to N scores, higher = better.
    """
    m = np.asarray(perf, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"perf must be T x N (periods x configurations), got shape {m.shape}")
    t, n = m.shape
    if n_splits < 2 or n_splits % 2:
        raise ValueError(f"n_splits must be an even number >= 2, got {n_splits}")
    if n < 2:
        raise ValueError(f"perf has {n} configuration column(s); PBO compares >= 2 configurations")
    if t < n_splits:
        raise ValueError(f"perf has {t} rows, fewer than n_splits={n_splits}; use fewer splits or more periods")
    if not np.all(np.isfinite(m)):
        raise ValueError("perf contains NaN/inf; fill or drop those periods first")
    size = t // n_splits
    groups = m[t - size * n_splits :].reshape(n_splits, size, n)
    logits = []
    for is_ids in combinations(range(n_splits), n_splits // 2):
        oos_ids = [g for g in range(n_splits) if g not in is_ids]
        is_score = metric(groups[list(is_ids)].reshape(-1, n))
        oos_score = metric(groups[oos_ids].reshape(-1, n))
        best = int(np.argmax(is_score))
        w = stats.rankdata(oos_score)[best] / (n + 1)
        logits.append(math.log(w / (1 - w)))
    lam = np.asarray(logits)
    return {"pbo": float(np.mean(lam <= 0)), "logits": lam, "n_combinations": int(lam.size)}


def _bootstrap_mean(d: np.ndarray, alpha: float, reps: int, seed: int) -> dict:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    mean = float(d.mean())
    if np.std(d) < _TINY:  # every resample has the same mean; optimal_block_length is undefined here
        return {"mean": mean, "low": mean, "high": mean, "block_length": 1.0, "n_days": int(d.size)}
    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            block = float(optimal_block_length(d)["stationary"].iloc[0])
    except ValueError:  # too few days for Politis-White's autocorrelation estimates: resample single days
        block = 1.0
    block = max(1.0, block) if math.isfinite(block) else 1.0
    bs = StationaryBootstrap(block, d, seed=seed)
    ci = bs.conf_int(lambda y: np.array([y.mean()]), reps=reps, method="percentile", size=1 - alpha)
    return {"mean": mean, "low": float(ci[0, 0]), "high": float(ci[1, 0]), "block_length": block, "n_days": d.size}


def _daily(x: Any, name: str) -> np.ndarray:
    d = np.asarray(x, dtype=float).ravel()
    if d.size < MIN_DAYS:
        raise ValueError(f"{name}: {d.size} day(s), need >= {MIN_DAYS} for a bootstrap CI; backtest more days")
    if not np.all(np.isfinite(d)):
        raise ValueError(f"{name}: contains NaN/inf; align the two series on trade_date and drop missing days")
    return d


def mean_ci(x: Any, alpha: float = 0.05, reps: int = 2000, seed: int = 0) -> dict:
    """Stationary-bootstrap percentile CI of mean(x) (e.g. daily returns vs 0).

    Politis & Romano 1994, "The Stationary Bootstrap", JASA 89; mean block length by Politis & White 2004
    with the Patton, Politis & White 2009 correction (arch's optimal_block_length), so autocorrelated days
    are resampled in blocks rather than as if independent.
    """
    return _bootstrap_mean(_daily(x, "x"), alpha, reps, seed)


def paired_bootstrap_ci(a_daily: Any, b_daily: Any, alpha: float = 0.05, reps: int = 2000, seed: int = 0) -> dict:
    """Stationary-bootstrap CI of mean(a - b) over the same days (paired: common market noise cancels).

    Inputs must be aligned day by day: equal lengths, and equal indexes when both are pandas objects.
    Method as in mean_ci (Politis & Romano 1994; Politis & White 2004).
    """
    a, b = _daily(a_daily, "a_daily"), _daily(b_daily, "b_daily")
    if a.size != b.size:
        raise ValueError(f"a_daily has {a.size} days, b_daily {b.size}: join them on trade_date first")
    ia, ib = getattr(a_daily, "index", None), getattr(b_daily, "index", None)
    if ia is not None and ib is not None and not ia.equals(ib):
        raise ValueError("a_daily and b_daily have different indexes (days): align them on trade_date first")
    return _bootstrap_mean(a - b, alpha, reps, seed)
