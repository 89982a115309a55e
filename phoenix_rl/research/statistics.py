"""Statistics that guard a research protocol against selection bias and noise (pure: numpy, scipy, arch).

Why: a search over many configurations always finds one with a good backtest. These tests ask whether it is
better than the best of that many lucky draws (DSR), whether the in-sample winner tends to lose out of sample
(PBO), and whether a difference between two strategies' daily returns survives autocorrelated resampling.

Money is in dollars per contract on a fixed capital (`fixed_capital_total`): a 1-contract strategy's total is
its summed daily $ PnL over the capital, never a product of returns across fold resets (López de Prado 2018,
"Advances in Financial Machine Learning", ch. 14). Confidence intervals resample training seeds as well as days
(`seed_day_bootstrap`), and verdicts are Holm-corrected across the comparisons of one report (`holm_adjust`,
`versus_verdict`, `edge_verdict`) and say "no evidence" below MIN_DAYS days / MIN_TRADES round trips.

Conventions: Sharpe ratios here are per period (mean / std with ddof=1, not annualised), so the trial Sharpe
ratios passed to the DSR must be per period too. Skewness and kurtosis are the sample moments (biased,
scipy's default) and kurtosis is RAW (a normal distribution has 3), as in Bailey & López de Prado (2014).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
from arch.bootstrap import StationaryBootstrap, optimal_block_length
from scipy import stats

__all__ = [
    "EULER_GAMMA",
    "MIN_DAYS",
    "MIN_TRADES",
    "deflated_sharpe_ratio",
    "edge_verdict",
    "fixed_capital_total",
    "holm_adjust",
    "mean_ci",
    "min_bootstrap_reps",
    "paired_bootstrap_ci",
    "pbo_cscv",
    "probabilistic_sharpe_ratio",
    "seed_day_bootstrap",
    "sharpe_columns",
    "total_columns",
    "underpowered",
    "versus_verdict",
    "window_edge_verdict",
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


def total_columns(block: np.ndarray) -> np.ndarray:
    """Each column's total (sum of its daily $ PnL, or of fixed-capital daily returns): the selection metric of a
    study that picks by total return on fixed capital, for `pbo_cscv`."""
    return block.sum(axis=0)


def fixed_capital_total(daily_pnl: Any, capital: float) -> float:
    """Total return of a fixed-size strategy: sum of its daily $ PnL (net of costs) over the capital.

    Folds that each restart at `capital` do not compound: the position is 1 contract whatever the equity, so the
    months' dollars add (AFML ch. 14: PnL and returns on a stated capital base). E.g. $730 a day for 63 days on
    $10k is 4.599 (+460%), not (1 + 21 x 730 / 10k ...) compounded.
    """
    if capital <= 0:
        raise ValueError(f"capital must be > 0, got {capital}")
    return float(np.sum(np.asarray(daily_pnl, dtype=float)) / capital)


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


def _stationary_block(d: np.ndarray) -> float:
    """Politis & White (2004) mean block length of the stationary bootstrap (arch); 1 where it is undefined."""
    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            block = float(optimal_block_length(d)["stationary"].iloc[0])
    except ValueError:  # too few days for Politis-White's autocorrelation estimates: resample single days
        block = 1.0
    return max(1.0, block) if math.isfinite(block) else 1.0


def _p_two_sided(draws: np.ndarray) -> float:
    """Two-sided bootstrap p-value of H0: mean = 0, by inverting the percentile interval: twice the smaller tail
    share of the bootstrap means on either side of 0, with the +1 correction of Davison & Hinkley (1997, eq. 4.11)
    so that it is never 0 with a finite number of replications."""
    reps = draws.size
    below, above = (np.sum(draws <= 0.0) + 1) / (reps + 1), (np.sum(draws >= 0.0) + 1) / (reps + 1)
    return float(min(1.0, 2.0 * min(below, above)))


def _as_seed_matrix(x: Any, name: str) -> np.ndarray:
    m = np.asarray(x, dtype=float)
    m = m.reshape(1, -1) if m.ndim == 1 else m
    if m.ndim != 2 or m.shape[0] < 1:
        raise ValueError(f"{name}: expected seeds x days (2-D) or one day series, got shape {np.shape(x)}")
    if m.shape[1] < MIN_DAYS:
        raise ValueError(f"{name}: {m.shape[1]} day(s), need >= {MIN_DAYS} for a bootstrap CI; backtest more days")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name}: contains NaN/inf; align the series on trade_date and drop missing days")
    return m


def seed_day_bootstrap(
    a: Any, b: Any | None = None, alpha: float = 0.05, reps: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Two-stage (cluster) bootstrap CI and p-value of mean(a) - mean(b) over seeds and days.

    a, b: seeds x days matrices (or one day series = one seed) on the SAME trade dates, columns aligned; b None
    compares a with 0 (flat). Each replication draws each arm's seeds with replacement (its own draws: the
    training runs of two arms are independent), then one stationary-bootstrap resample of the days shared by both
    arms (pairing by trade date: common market noise cancels), and takes mean over drawn seeds and days. So the
    variance between training runs is in the interval as well as the variance between days (Davison & Hinkley
    1997, "Bootstrap Methods and their Application", section 3.8: resample the clusters, then within them;
    days by Politis & Romano 1994 with Politis & White's 2004 block length, on the seed-mean series). With one
    seed, or equal seeds, it is the days-only stationary bootstrap exactly (same day draws). The p-value
    inverts the percentile interval (`_p_two_sided`).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    ma = _as_seed_matrix(a, "a")
    mb = None if b is None else _as_seed_matrix(b, "b")
    if mb is not None and mb.shape[1] != ma.shape[1]:
        raise ValueError(f"a has {ma.shape[1]} days, b {mb.shape[1]}: join them on trade_date first")
    ia, ib = getattr(a, "index", None), getattr(b, "index", None)
    if ia is not None and ib is not None and not ia.equals(ib):
        raise ValueError("a and b have different indexes (days): align them on trade_date first")
    d = ma.mean(axis=0) - (mb.mean(axis=0) if mb is not None else 0.0)
    mean, n_days = float(d.mean()), int(d.size)
    n_seeds = [int(ma.shape[0])] + ([int(mb.shape[0])] if mb is not None else [])
    spread = float(np.ptp(ma, axis=0).max()) + (float(np.ptp(mb, axis=0).max()) if mb is not None else 0.0)
    out: dict[str, Any] = {"mean": mean, "n_days": n_days, "n_seeds": n_seeds}
    if np.std(d) < _TINY and spread < _TINY:  # every resample has the same mean
        return out | {"low": mean, "high": mean, "p_value": 0.0 if abs(mean) > _TINY else 1.0, "block_length": 1.0}
    block = _stationary_block(d) if np.std(d) >= _TINY else 1.0
    days = StationaryBootstrap(block, np.arange(n_days), seed=seed)
    seeds = np.random.default_rng(np.random.SeedSequence([seed, 1]))  # its own stream: days draw as days-only
    draws = np.empty(reps)
    for k, (pos, _) in enumerate(days.bootstrap(reps)):
        idx = pos[0]
        sa = ma[seeds.integers(ma.shape[0], size=ma.shape[0])] if ma.shape[0] > 1 else ma
        value = sa.mean(axis=0)[idx].mean()
        if mb is not None:
            sb = mb[seeds.integers(mb.shape[0], size=mb.shape[0])] if mb.shape[0] > 1 else mb
            value -= sb.mean(axis=0)[idx].mean()
        draws[k] = value
    low, high = np.percentile(draws, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return out | {"low": float(low), "high": float(high), "p_value": _p_two_sided(draws), "block_length": block}


def _bootstrap_mean(d: np.ndarray, alpha: float, reps: int, seed: int) -> dict:
    """Days-only stationary bootstrap of mean(d): the one-seed case of `seed_day_bootstrap`."""
    return seed_day_bootstrap(d, None, alpha, reps, seed)


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


# --- verdicts: one tested place for every "beats" / "no evidence" line --------------------------------------------

MIN_TRADES = 30  # round trips below which no edge is claimed: a handful of positions is one bet, not a strategy


def holm_adjust(results: Mapping[str, dict[str, Any]], alpha: float = 0.05) -> dict[str, dict[str, Any]]:
    """Holm's step-down correction of the bootstrap p-values of one family of comparisons.

    Holm (1979), "A simple sequentially rejective multiple test procedure", Scand. J. Statistics 6: controls
    the familywise error rate at alpha for any dependence between the tests (the comparisons here share days
    and arms), via statsmodels' `multipletests(method="holm")`. Returns each result with `p_adjusted`,
    `reject` (familywise at alpha) and `family_size` added.
    """
    from statsmodels.stats.multitest import multipletests

    names = list(results)
    if not names:
        return {}
    reject, adjusted, _, _ = multipletests([results[n]["p_value"] for n in names], alpha=alpha, method="holm")
    return {
        n: dict(results[n]) | {"p_adjusted": float(p), "reject": bool(r), "family_size": len(names)}
        for n, p, r in zip(names, adjusted, reject, strict=True)
    }


def min_bootstrap_reps(family_size: int, alpha: float = 0.05) -> int:
    """Fewest replications with which a family of `family_size` Holm-corrected bootstrap tests can reject at all:
    the smallest p-value is 2 / (reps + 1) (`_p_two_sided`), and Holm multiplies the smallest by the family size."""
    return math.ceil(2 * family_size / alpha) - 1


def underpowered(n_days: int, n_trades: float | None = None, min_trades: int = MIN_TRADES) -> str | None:
    """Why a comparison has too little data to claim anything (None when it has enough)."""
    if n_days < MIN_DAYS:
        return f"{n_days} trade date(s), need >= {MIN_DAYS}"
    if n_trades is not None and n_trades < min_trades:
        return f"{n_trades:.0f} round trip(s), need >= {min_trades}"
    return None


def versus_verdict(name: str, other: str, result: Mapping[str, Any], n_trades: float | None = None) -> str:
    """Plain words for a (familywise-corrected) comparison name - other; other = "flat" means vs 0.

    `result` is a `seed_day_bootstrap` result after `holm_adjust` (`reject`, `p_adjusted`); without them the
    raw CI decides (a family of one). Below `underpowered`'s minimum it is "no evidence" whatever the CI says.
    """
    short = underpowered(int(result["n_days"]), n_trades)
    if short is not None:
        return f"no evidence that {name} differs from {other}: too little data ({short})"
    family = int(result.get("family_size", 1))
    reject = result["reject"] if "reject" in result else (result["low"] > 0 or result["high"] < 0)
    p = result.get("p_adjusted", result.get("p_value"))
    how = f"Holm-adjusted p = {p:.3g} in a family of {family}" if p is not None else "the CI excludes 0"
    if reject and result["mean"] > 0:
        return f"{name} beats {other} ({how})"
    if reject and result["mean"] < 0:
        return f"{name} is worse than {other} ({how})"
    return f"no evidence that {name} differs from {other} ({how})"


def edge_verdict(
    agent_daily_pnl: Any,
    agent_trade_pnl: Any,
    rule_daily_pnl: Any,
    alpha: float = 0.05,
    reps: int = 2000,
    seed: int = 0,
    min_trades: int = MIN_TRADES,
) -> dict[str, Any]:
    """Did an agent show a tradeable edge after costs on held-out days, and did it beat the tuned rule?

    One family of three tests, Holm-corrected (`holm_adjust`): the agent's mean daily $ PnL vs 0 (flat; stationary
    bootstrap over days), its mean net $ PnL per round trip vs 0 (i.i.d. bootstrap over trades, arch), and its
    daily $ PnL minus the train-tuned rule's on the same days (paired). An edge is claimed only when both the daily
    and the per-trade tests reject with a positive mean, with >= MIN_DAYS days and >= `min_trades` round trips;
    otherwise the verdict says "no evidence". Inputs in $ per contract (fixed capital); days aligned.
    """
    from arch.bootstrap import IIDBootstrap

    agent = np.asarray(agent_daily_pnl, dtype=float).ravel()
    rule = np.asarray(rule_daily_pnl, dtype=float).ravel()
    trades = np.asarray(agent_trade_pnl, dtype=float).ravel()
    n_days, n_trades = int(agent.size), int(trades.size)
    short = underpowered(n_days, n_trades, min_trades)
    out: dict[str, Any] = {"n_days": n_days, "n_trades": n_trades, "edge": False, "tests": {}}
    if short is not None:
        out["verdict"] = (
            f"no evidence of a tradeable edge: too little data ({short}); agent ${agent.sum():+,.0f} after costs "
            f"over {n_days} held-out day(s), {n_trades} round trip(s)"
        )
        return out
    if rule.size != agent.size:
        raise ValueError(f"edge_verdict: agent has {agent.size} days, the rule {rule.size}: align on trade_date")
    tests = {"daily_vs_flat": seed_day_bootstrap(agent, None, alpha, reps, seed)}
    iid = IIDBootstrap(trades, seed=seed)
    draws = np.array([pos[0].mean() for pos, _ in iid.bootstrap(reps)])
    low, high = np.percentile(draws, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    tests["per_trade_vs_0"] = {
        "mean": float(trades.mean()),
        "low": float(low),
        "high": float(high),
        "p_value": _p_two_sided(draws),
        "n_days": n_days,
        "n_trades": n_trades,
    }
    tests["daily_vs_tuned_rule"] = seed_day_bootstrap(agent, rule, alpha, reps, seed)
    tests = holm_adjust(tests, alpha)
    day, trade, vs_rule = tests["daily_vs_flat"], tests["per_trade_vs_0"], tests["daily_vs_tuned_rule"]
    edge = day["reject"] and day["mean"] > 0 and trade["reject"] and trade["mean"] > 0
    money = (
        f"agent ${day['mean']:+,.0f}/day [{day['low']:+,.0f}, {day['high']:+,.0f}] over {n_days} held-out days, "
        f"{n_trades} round trips (${trade['mean']:+,.2f} each) after costs; Holm p {day['p_adjusted']:.3g} "
        f"(days), {trade['p_adjusted']:.3g} (trades)"
    )
    rule_words = versus_verdict("the agent", "the tuned OFI rule", vs_rule)
    head = "evidence of a tradeable edge" if edge else "no evidence of a tradeable edge"
    return out | {"edge": bool(edge), "tests": tests, "verdict": f"{head}: {money}; {rule_words}"}


def window_edge_verdict(equity: Any, trades: Any, capital: float, **kwargs: Any) -> dict[str, Any]:
    """`edge_verdict` of one backtest window from its per-bar rows: `equity` (polars; ts, trade_date, strategy,
    equity, cost) and `trades` (strategy, pnl) of every strategy, the agent against flat and `tuned_ofi_rule`
    paired by trade date. The one path of the demo's verdict line and of evaluation_metrics' edge check."""
    import polars as pl

    from phoenix_rl.evaluation.metrics import daily_pnl

    def days(strategy: str) -> pl.DataFrame:
        rows = equity.filter(pl.col("strategy") == strategy).sort("ts")
        if rows.is_empty():
            raise ValueError(f"window_edge_verdict: no {strategy} equity rows in this window; backtest it first")
        return daily_pnl(rows, capital)

    paired = days("agent").join(days("tuned_ofi_rule"), on="trade_date", suffix="_rule")
    agent_trades = trades.filter(pl.col("strategy") == "agent")["pnl"].to_numpy()
    out = edge_verdict(paired["pnl_usd"].to_numpy(), agent_trades, paired["pnl_usd_rule"].to_numpy(), **kwargs)
    return out | {
        "agent_total_return": float(paired["pnl_usd"].sum()) / capital,
        "rule_total_return": float(paired["pnl_usd_rule"].sum()) / capital,
    }
