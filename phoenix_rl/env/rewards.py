"""Reward shaping for the trading env: optional terms on top of the per-bar pnl, all off by default.

Why: the plain reward (pnl of the bar, net of costs) is what we finally care about; shaping terms are
experiments (set as HPO parameters) and must be opt-in, so RewardConfig() reproduces the plain reward exactly.

    r_t = base_t + win_bonus * 1[closed_trade_pnl > 0] - loss_penalty * 1[closed_trade_pnl < 0]
          - hold_penalty * 1[position != 0 and bars_held > hold_bars]

base_t is pnl_step, or with differential="sharpe"/"sortino" the differential Sharpe ratio / differential
downside deviation ratio of pnl_step (Moody & Saffell), which rewards each bar's marginal contribution to a
risk-adjusted return instead of raw pnl. The hold term is "hold discipline": a flat cost per bar a position
is kept beyond hold_bars, pushing the agent to close stale positions rather than let them drift.
Bonus/penalty are constants per closed round trip (in reward units), not scaled by the trade's pnl.
"""

from __future__ import annotations

import math

from phoenix_rl.config import RewardConfig

__all__ = ["RewardConfig", "RewardShaper", "differential_downside_ratio", "differential_sharpe"]

_TINY = 1e-12


def differential_sharpe(r: float, a_prev: float, b_prev: float, eta: float) -> tuple[float, float, float]:
    """One step of the differential Sharpe ratio; returns (D_t, A_t, B_t).

    A_t = A_{t-1} + eta (R_t - A_{t-1}), B_t = B_{t-1} + eta (R_t^2 - B_{t-1}),
    D_t = (B_{t-1} dA_t - 0.5 A_{t-1} dB_t) / (B_{t-1} - A_{t-1}^2)^{3/2}, dA_t = R_t - A_{t-1},
    dB_t = R_t^2 - B_{t-1} (Moody & Saffell 1998, "Performance functions and reinforcement learning for
    trading systems and portfolios", J. Forecasting 17, section 2.3; Moody & Saffell 2001, IEEE TNN 12(4),
    eq. 9). D_t = 0 while the EMA variance B - A^2 is ~0 (the start: A_0 = B_0 = 0), where it is undefined.
    """
    d_a, d_b = r - a_prev, r * r - b_prev
    var = b_prev - a_prev * a_prev
    d = (b_prev * d_a - 0.5 * a_prev * d_b) / var**1.5 if var > _TINY else 0.0
    return d, a_prev + eta * d_a, b_prev + eta * d_b


def differential_downside_ratio(r: float, a_prev: float, dd2_prev: float, eta: float) -> tuple[float, float, float]:
    """One step of the differential downside deviation ratio (Sortino analogue); returns (D_t, A_t, DD2_t).

    A_t = A_{t-1} + eta (R_t - A_{t-1}), DD2_t = DD2_{t-1} + eta (min(R_t, 0)^2 - DD2_{t-1}),
    D_t = (R_t - 0.5 A_{t-1}) / DD_{t-1}                                         if R_t > 0,
    D_t = (DD2_{t-1} (R_t - 0.5 A_{t-1}) - 0.5 A_{t-1} R_t^2) / DD_{t-1}^3       if R_t <= 0
    (Moody & Saffell 2001, "Learning to trade via direct reinforcement", IEEE TNN 12(4), section II-D,
    eqs. 12-14). D_t = 0 while DD2 ~ 0 (no loss seen yet), where the ratio is undefined.
    """
    dd2_new = dd2_prev + eta * (min(r, 0.0) ** 2 - dd2_prev)
    a_new = a_prev + eta * (r - a_prev)
    if dd2_prev <= _TINY:
        return 0.0, a_new, dd2_new
    dd = math.sqrt(dd2_prev)
    if r > 0:
        return (r - 0.5 * a_prev) / dd, a_new, dd2_new
    d = (dd2_prev * (r - 0.5 * a_prev) - 0.5 * a_prev * r * r) / dd**3
    return d, a_new, dd2_new


class RewardShaper:
    """Shaped reward with explicit state (the EMAs of the differential ratios); reset() at every episode start."""

    def __init__(self, config: RewardConfig | None = None) -> None:
        self.config = config or RewardConfig()
        self.reset()

    def reset(self) -> None:
        """Forget the previous episode: A_0 = B_0 = DD2_0 = 0."""
        self.a = 0.0
        self.b = 0.0
        self.dd2 = 0.0

    def step(self, pnl_step: float, closed_trade_pnl: float | None, position: float, bars_held: int) -> float:
        """Reward of one bar: pnl_step (or its differential ratio), plus the trade and hold terms (module doc).

        closed_trade_pnl is the net pnl of a round trip closed on this bar (None if none closed);
        bars_held counts the bars the current position has been open.
        """
        cfg = self.config
        if cfg.differential == "sharpe":
            reward, self.a, self.b = differential_sharpe(pnl_step, self.a, self.b, cfg.eta)
        elif cfg.differential == "sortino":
            reward, self.a, self.dd2 = differential_downside_ratio(pnl_step, self.a, self.dd2, cfg.eta)
        else:
            reward = pnl_step
        if closed_trade_pnl is not None:
            if closed_trade_pnl > 0:
                reward += cfg.win_bonus
            elif closed_trade_pnl < 0:
                reward -= cfg.loss_penalty
        if position != 0 and bars_held > cfg.hold_bars:
            reward -= cfg.hold_penalty
        return reward
