"""Performance metrics of a backtest (equity curve + round-trip trades), in dollars on a fixed capital.

The strategies trade a fixed 1 contract, so money is accounted in $ per contract on a fixed capital: a day's
return is its $ PnL over the capital, not over that day's (drifting) equity, and totals add dollars, never
compound returns (López de Prado 2018, AFML ch. 14). The same $ PnL is the same return on any day.

Conventions (all results are finite floats, also with zero trades or a single day):
    daily $ PnL     P_d = E_d - E_{d-1} (net of costs), E_d = equity at the last bar of trade date d, E_0 =
                    capital; `daily_pnl` also sums each day's costs. Days are trade dates (CME sessions
                    17:00-16:00 CT), not calendar days.
    daily returns   r_d = P_d / capital (fixed capital; the ratios below are unchanged by the capital chosen).
    Sharpe          mean(r) / std(r, ddof=1) * sqrt(252) (Sharpe 1994, "The Sharpe Ratio", ex-post, risk-free
                    rate 0; Lo 2002 for the sqrt(252) annualisation of i.i.d. daily returns). 0 with < 2 days.
    Sortino         mean(r) / DD * sqrt(252), DD = sqrt(mean(min(r_d, 0)^2)) over ALL days, target 0
                    (Sortino & Price 1994, "Performance Measurement in a Downside Risk Framework"; the
                    full-sample downside deviation as in Rollinger & Hoffman, "Sortino: A 'Sharper' Ratio",
                    Red Rock Capital 2013).
    n/a             `compute_metrics` reports Sharpe and Sortino as None ("n/a") on fewer than `min_days` daily
                    returns (default MIN_DAYS_FOR_RATIOS = 20: one day gives Sortino +-15.87, a week is noise)
                    and when the deviation is 0 (no down day, constant returns): such a window is never ranked
                    on them (`ratio_for_ranking` refuses).
    Ratios with a zero denominator (Sharpe with constant returns, Sortino with no down day, profit factor
                    with no losing trade) are +RATIO_CAP when the numerator is > 0, -RATIO_CAP when < 0 and
                    0.0 when it is 0 (instead of inf/NaN, so metadata and comparisons stay finite).
    total return    (E_end - capital) / capital = sum_d P_d / capital.
    annualised      mean_d(r_d) * 252 (arithmetic: a fixed-size position does not compound).
    max drawdown %  max_t (1 - E_t / max_{s<=t} E_s) * 100 on the per-bar equity, peak starting at capital.
    win rate        share of round trips with pnl (net of costs) > 0; 0 with no trades.
    profit factor   sum of winning trades' net pnl / |sum of losing trades' net pnl| (cap rule above).
    average trade   mean net pnl per round trip in $; 0 with no trades.
    time in market  share of bars with a non-zero position.
    turnover        contracts traded (sum of |position change|), both sides counted.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

__all__ = [
    "MIN_DAYS_FOR_RATIOS",
    "RATIO_CAP",
    "TRADING_DAYS",
    "compute_metrics",
    "daily_pnl",
    "daily_returns",
    "format_metric",
    "max_drawdown_pct",
    "profit_factor",
    "ratio_for_ranking",
    "safe_ratio",
    "sharpe_ratio",
    "sortino_ratio",
    "win_rate",
]

TRADING_DAYS = 252
RATIO_CAP = 100.0
MIN_DAYS_FOR_RATIOS = 20
_TINY = 1e-12


def safe_ratio(num: float, den: float) -> float:
    """num / den, or +-RATIO_CAP / 0.0 when den == 0 (module doc)."""
    if den > 0:
        return float(num / den)
    if num > 0:
        return RATIO_CAP
    return -RATIO_CAP if num < 0 else 0.0


def daily_pnl(equity: pl.DataFrame, capital: float) -> pl.DataFrame:
    """trade_date, pnl_usd (net of costs), cost_usd: each trade date's $ change of equity (the first from
    `capital`) and its summed costs, per contract."""
    if equity.height == 0:
        return pl.DataFrame(schema={"trade_date": pl.Date, "pnl_usd": pl.Float64, "cost_usd": pl.Float64})
    has_cost = "cost" in equity.columns
    eod = (
        equity.group_by("trade_date", maintain_order=True)
        .agg(pl.col("equity").last(), (pl.col("cost").sum() if has_cost else pl.lit(0.0)).alias("cost_usd"))
        .sort("trade_date")
    )
    e = np.concatenate([[capital], eod["equity"].to_numpy().astype(np.float64)])
    return pl.DataFrame(
        {"trade_date": eod["trade_date"], "pnl_usd": np.diff(e), "cost_usd": eod["cost_usd"].cast(pl.Float64)}
    )


def daily_returns(equity: pl.DataFrame, capital: float) -> np.ndarray:
    """Daily $ PnL over the fixed capital (module doc), the first day measured from `capital`."""
    return daily_pnl(equity, capital)["pnl_usd"].to_numpy() / capital


def sharpe_ratio(r: np.ndarray, periods: int = TRADING_DAYS) -> float:
    """mean / std(ddof=1) * sqrt(periods); 0 with fewer than 2 returns."""
    if len(r) < 2:
        return 0.0
    sd = float(np.std(r, ddof=1))
    return _annualised_ratio(float(np.mean(r)), sd, periods)


def sortino_ratio(r: np.ndarray, periods: int = TRADING_DAYS) -> float:
    """mean / sqrt(mean(min(r, 0)^2)) * sqrt(periods) (target 0, all days in the downside mean)."""
    if len(r) == 0:
        return 0.0
    dd = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    return _annualised_ratio(float(np.mean(r)), dd, periods)


def _annualised_ratio(mean: float, dev: float, periods: int) -> float:
    """mean / dev * sqrt(periods); a deviation below 1e-12 (rounding of constant returns) counts as 0."""
    if dev <= _TINY:
        return safe_ratio(mean if abs(mean) > _TINY else 0.0, 0.0)
    return mean / dev * math.sqrt(periods)


def max_drawdown_pct(equity: np.ndarray, capital: float) -> float:
    """Largest peak-to-trough fall in % of the peak (peak starts at `capital`); >= 0."""
    if len(equity) == 0:
        return 0.0
    peak = np.maximum.accumulate(np.concatenate([[capital], equity]))[1:]
    return float(np.max(1.0 - equity / peak) * 100.0) if np.all(peak > 0) else 100.0


def win_rate(pnl: np.ndarray) -> float:
    return float(np.mean(pnl > 0)) if len(pnl) else 0.0


def profit_factor(pnl: np.ndarray) -> float:
    """Gross profit / gross loss of round trips (net of costs); cap rule for no losses."""
    return safe_ratio(float(pnl[pnl > 0].sum()), float(-pnl[pnl < 0].sum()))


def compute_metrics(
    equity: pl.DataFrame, trades: pl.DataFrame, capital: float = 10_000.0, min_days: int = MIN_DAYS_FOR_RATIOS
) -> dict[str, float | None]:
    """Every metric of the module doc. `equity`: per bar trade_date, position, equity ($, starting at
    capital), cost, traded; `trades`: one row per round trip with `pnl` (net of costs). Sharpe and
    Sortino are None (n/a) below `min_days` daily returns or with a zero deviation."""
    eq = equity["equity"].to_numpy().astype(np.float64)
    end = float(eq[-1]) if len(eq) else capital
    r = daily_returns(equity, capital)
    n_days = len(r)
    total = end / capital - 1.0
    annual = float(np.mean(r)) * TRADING_DAYS if n_days else 0.0
    pnl = trades["pnl"].to_numpy().astype(np.float64) if trades.height else np.zeros(0)
    pos = equity["position"].to_numpy().astype(np.float64)
    enough = n_days >= max(min_days, 2)
    return {
        "capital": float(capital),
        "final_equity": end,
        "total_return": float(total),
        "annualised_return": float(annual),
        "sharpe": float(sharpe_ratio(r)) if enough and float(np.std(r, ddof=1)) > _TINY else None,
        "sortino": float(sortino_ratio(r)) if enough and bool(np.any(r < -_TINY)) else None,
        "max_drawdown_pct": max_drawdown_pct(eq, capital),
        "win_rate": win_rate(pnl),
        "profit_factor": profit_factor(pnl),
        "average_trade": float(pnl.mean()) if len(pnl) else 0.0,
        "n_trades": float(len(pnl)),
        "time_in_market": float(np.mean(pos != 0)) if len(pos) else 0.0,
        "turnover_contracts": float(np.abs(equity["traded"].to_numpy()).sum()) if equity.height else 0.0,
        "total_cost": float(equity["cost"].sum()) if equity.height else 0.0,
        "n_days": float(n_days),
    }


def format_metric(value: float | None, fmt: str = "{:.4g}") -> str:
    """A metric for a table: "n/a" where it is undefined (too few days, zero deviation)."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def ratio_for_ranking(metrics: dict[str, float | None], key: str, where: str) -> float:
    """A Sharpe/Sortino to rank on, refusing n/a: too short a window must never pick a model or seed."""
    value = metrics.get(key)
    if value is None:
        raise ValueError(
            f"{where}: {key} is n/a ({metrics.get('n_days', 0):.0f} days; at least {MIN_DAYS_FOR_RATIOS} with a "
            "non-zero deviation are needed): lengthen the window or rank on another metric"
        )
    return float(value)
