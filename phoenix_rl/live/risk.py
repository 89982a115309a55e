"""Phoenix's pre-trade risk engine for paper and live trading (issue 14): the checks NautilusTrader's RiskEngine
leaves open, in its shape (STYLE.md): a frozen config, a trading state ACTIVE / REDUCING / HALTED, every order
checked, and every rejection and every state change carrying its reason.

Gaps it closes, found in Nautilus 1.221: `max_notional_per_order` is not enforced on margin accounts (futures),
so position and notional limits live here; the order-rate throttle also delays a kill switch's flattening
order, so flattening orders here bypass the rate limit; a simulated venue fills market orders against the
crossed/locked pre-open book (fake profits), so no order that adds risk passes on a crossed, locked or stale
book or outside the continuous session.

States (the worst condition wins; only `reset_day` or `resume` lifts HALTED):
    ACTIVE    orders up to max_position contracts and max_notional_usd.
    REDUCING  only orders that bring the position closer to flat (latency budget breached repeatedly, feature
              drift flagged, a feed gap): the strategy may exit but not add.
    HALTED    daily loss or drawdown limit hit, or the kill switch: the position is flattened and nothing else
              passes.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from phoenix_assets.lib.instrument import MNQ

__all__ = ["OrderDecision", "RiskConfig", "RiskEngine", "TradingState"]

NS_PER_S = 1_000_000_000


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


@dataclass(frozen=True)
class RiskConfig:
    """Limits of one MNQ strategy; dollars are account currency, times are wall-clock of the decision."""

    max_position: int = 2  # contracts, either side
    max_notional_usd: float = 150_000.0  # |position| x price x point_value after the order
    point_value: float = MNQ.point_value  # $ per index point; paper trading takes the model env's
    max_daily_loss_usd: float = 500.0  # realised + unrealised since the trade date began -> HALTED
    max_drawdown_usd: float = 1_000.0  # from the equity peak -> HALTED
    max_orders_per_second: int = 5  # order-rate throttle (flattening orders are exempt)
    max_data_age_s: float = 5.0  # the book is stale when its last update is older -> no new risk
    max_feed_gap_s: float = 30.0  # in-session silence this long -> REDUCING
    latency_budget_ms: float = 250.0  # record received -> order sent
    max_latency_breaches: int = 3  # consecutive breaches -> REDUCING

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be > 0 (got {value})"
            for name, value in vars(self).items()
            if not (isinstance(value, int | float) and value > 0)
        ]
        if problems:
            raise ValueError("RiskConfig: " + "; ".join(problems))


@dataclass(frozen=True)
class OrderDecision:
    """The engine's answer to one order: the quantity that may be sent (signed contracts) and why not more."""

    accepted: bool
    quantity: int
    reason: str = ""


class RiskEngine:
    """Stateful checks fed by the live loop (module doc); never raises on bad market data, it refuses risk."""

    def __init__(self, config: RiskConfig | None = None, equity_usd: float = 0.0) -> None:
        self.config = config or RiskConfig()
        self.state = TradingState.ACTIVE
        self.reason = ""
        self.events: list[tuple[int, TradingState, str]] = []  # (ts_ns, new state, reason): the audit trail
        self._orders: deque[int] = deque()
        self._latency_breaches = 0
        self._book_ts = -1
        self._book_ok = False
        self._book_problem = "no book yet"
        self._mid = math.nan
        self._day_start_equity = equity_usd
        self._peak = equity_usd

    # --- inputs ---------------------------------------------------------------------------------------

    def on_book(self, ts_ns: int, best_bid: float, best_ask: float, in_session: bool) -> None:
        """A book update: crossed/locked or out-of-session books refuse new risk until a sound one arrives."""
        if self._book_ts >= 0 and in_session and ts_ns - self._book_ts > self.config.max_feed_gap_s * NS_PER_S:
            self._to(TradingState.REDUCING, ts_ns, f"feed gap of {(ts_ns - self._book_ts) / NS_PER_S:.1f} s")
        self._book_ts = ts_ns
        finite = math.isfinite(best_bid) and math.isfinite(best_ask)
        if not finite:
            self._book_ok, self._book_problem = False, "book side missing"
        elif best_bid >= best_ask:
            self._book_ok, self._book_problem = False, f"crossed/locked book (bid {best_bid} >= ask {best_ask})"
        elif not in_session:
            self._book_ok, self._book_problem = False, "outside the continuous session"
        else:
            self._book_ok, self._book_problem = True, ""
            self._mid = (best_bid + best_ask) / 2.0

    def on_books(self, ts_ns: np.ndarray, best_bid: np.ndarray, best_ask: np.ndarray, in_session: np.ndarray) -> None:
        """Many book updates at once (time order): the feed-gap rule over all of them, then the newest book's
        state, as if `on_book` had seen each (the live loop's vectorised path)."""
        ts = np.asarray(ts_ns, dtype=np.int64)
        if not len(ts):
            return
        prev = np.concatenate([[self._book_ts if self._book_ts >= 0 else ts[0]], ts[:-1]])
        gaps = np.where(np.asarray(in_session, dtype=bool), ts - prev, 0)
        over = np.flatnonzero(gaps > self.config.max_feed_gap_s * NS_PER_S)
        if len(over):  # the first gap decides, as book by book (a later one cannot worsen REDUCING)
            k = int(over[0])
            self._to(TradingState.REDUCING, int(ts[k]), f"feed gap of {gaps[k] / NS_PER_S:.1f} s")
        self._book_ts = int(ts[-1])  # the gaps are done: the newest book only sets the book state
        self.on_book(int(ts[-1]), float(best_bid[-1]), float(best_ask[-1]), bool(in_session[-1]))

    def on_equity(self, ts_ns: int, equity_usd: float) -> None:
        """Account equity (realised + unrealised): daily loss and drawdown limits halt trading."""
        self._peak = max(self._peak, equity_usd)
        daily = equity_usd - self._day_start_equity
        if daily <= -self.config.max_daily_loss_usd:
            self._to(TradingState.HALTED, ts_ns, f"daily loss ${-daily:,.2f} >= ${self.config.max_daily_loss_usd:,.2f}")
        elif self._peak - equity_usd >= self.config.max_drawdown_usd:
            drawdown = self._peak - equity_usd
            self._to(TradingState.HALTED, ts_ns, f"drawdown ${drawdown:,.2f} >= ${self.config.max_drawdown_usd:,.2f}")

    def on_latency(self, ts_ns: int, latency_ms: float) -> None:
        """Record -> order latency of one decision; repeated breaches of the budget allow only exits."""
        if latency_ms <= self.config.latency_budget_ms:
            self._latency_breaches = 0
            return
        self._latency_breaches += 1
        if self._latency_breaches >= self.config.max_latency_breaches:
            self._to(
                TradingState.REDUCING,
                ts_ns,
                f"{self._latency_breaches} decisions over the {self.config.latency_budget_ms:.0f} ms latency budget",
            )

    def on_drift(self, ts_ns: int, what: str) -> None:
        """A drift monitor flagged the live features against the training distribution: exits only."""
        self._to(TradingState.REDUCING, ts_ns, f"feature drift: {what}")

    def reset_day(self, ts_ns: int, equity_usd: float) -> None:
        """A new trade date: the daily loss counts from here; a daily-loss halt ends (a drawdown one does not)."""
        self._day_start_equity = equity_usd
        if self.state is TradingState.HALTED and self.reason.startswith("daily loss"):
            self._to(TradingState.ACTIVE, ts_ns, "new trade date", force=True)

    def restore(self, state: TradingState | str, reason: str) -> None:
        """Take on a state journaled earlier (a restart, a new day's session, a resumed crash): no new event,
        the journal already holds it. A kill switch or drawdown halt so stays until a person lifts it."""
        self.state, self.reason = TradingState(state), reason if TradingState(state) is not TradingState.ACTIVE else ""

    def resume(self, ts_ns: int, who: str) -> None:
        """A person lifts REDUCING/HALTED (recorded with who did it)."""
        self._latency_breaches = 0
        self._to(TradingState.ACTIVE, ts_ns, f"resumed by {who}", force=True)

    # --- orders ---------------------------------------------------------------------------------------

    def check_order(self, ts_ns: int, position: int, target: int) -> OrderDecision:
        """May the strategy move from `position` to `target` contracts now? Returns what may be sent."""
        quantity = target - position
        if quantity == 0:
            return OrderDecision(True, 0)
        reduces = abs(target) < abs(position) and target * position >= 0  # closer to flat, same side or flat
        if self.state is TradingState.HALTED and target != 0:
            return self._reject(f"HALTED: {self.reason}")
        if self.state is TradingState.REDUCING and not reduces:
            return self._reject(f"REDUCING ({self.reason}): only orders towards flat")
        if not reduces:
            if not self._book_ok:
                return self._reject(f"no new risk: {self._book_problem}")
            age = (ts_ns - self._book_ts) / NS_PER_S
            if age > self.config.max_data_age_s:
                return self._reject(f"no new risk: stale book ({age:.1f} s old)")
            if abs(target) > self.config.max_position:
                return self._reject(f"target {target} exceeds max_position {self.config.max_position}")
            notional = abs(target) * self._mid * self.config.point_value
            if notional > self.config.max_notional_usd:
                return self._reject(f"notional ${notional:,.0f} exceeds ${self.config.max_notional_usd:,.0f}")
            window_start = ts_ns - NS_PER_S
            while self._orders and self._orders[0] <= window_start:
                self._orders.popleft()
            if len(self._orders) >= self.config.max_orders_per_second:
                return self._reject(f"order rate: {len(self._orders)} orders in the last second")
        self._orders.append(ts_ns)  # flattening orders count towards the rate but are never throttled
        return OrderDecision(True, quantity)

    def kill_switch(self, ts_ns: int, position: int, who: str) -> OrderDecision:
        """Halt and flatten, whatever the state, book or order rate: the order that always passes."""
        self._to(TradingState.HALTED, ts_ns, f"kill switch by {who}", force=True)  # recorded even when halted
        return OrderDecision(True, -position, "kill switch: flatten")

    # --- internals ------------------------------------------------------------------------------------

    def _reject(self, reason: str) -> OrderDecision:
        return OrderDecision(False, 0, reason)

    def _to(self, state: TradingState, ts_ns: int, reason: str, force: bool = False) -> None:
        severity = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}
        if not force and severity[state] <= severity[self.state]:
            return  # the worst condition wins; a milder one never lifts a stricter state
        self.state, self.reason = state, reason
        self.events.append((ts_ns, state, reason))
