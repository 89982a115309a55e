"""Fault injection into Phoenix's risk engine: every fault moves the state (or refuses the order) with its
reason, exits stay possible, and the kill switch flattens whatever else is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from phoenix_rl.live.risk import RiskConfig, RiskEngine, TradingState

S = 1_000_000_000
T0 = 1_710_000_000 * S


def _engine(**limits: float) -> RiskEngine:
    engine = RiskEngine(RiskConfig(**limits), equity_usd=10_000.0)  # type: ignore[arg-type]
    engine.on_book(T0, 18_000.00, 18_000.25, in_session=True)
    return engine


def test_a_sound_book_accepts_orders_up_to_the_position_limit() -> None:
    engine = _engine(max_position=2)
    assert engine.check_order(T0, 0, 2).quantity == 2
    refused = engine.check_order(T0, 2, 3)
    assert not refused.accepted and refused.reason == "target 3 exceeds max_position 2"
    assert engine.check_order(T0, 0, -2).accepted and engine.state is TradingState.ACTIVE


def test_notional_is_enforced_where_nautilus_margin_accounts_do_not() -> None:
    engine = _engine(max_notional_usd=50_000)  # 1 MNQ at 18,000.125 x $2 = $36,000.25
    assert engine.check_order(T0, 0, 1).accepted
    refused = engine.check_order(T0, 1, 2)
    assert not refused.accepted and "notional $72,000 exceeds $50,000" in refused.reason


@pytest.mark.parametrize(
    ("bid", "ask", "in_session", "problem"),
    [
        (18_000.25, 18_000.00, True, "crossed/locked book (bid 18000.25 >= ask 18000.0)"),  # the pre-open book
        (18_000.00, 18_000.00, True, "crossed/locked book"),
        (18_000.00, float("nan"), True, "book side missing"),
        (18_000.00, 18_000.25, False, "outside the continuous session"),
    ],
)
def test_no_new_risk_on_a_crossed_missing_or_out_of_session_book(
    bid: float, ask: float, in_session: bool, problem: str
) -> None:
    engine = _engine()
    assert engine.check_order(T0, 0, 1).accepted
    engine.on_book(T0 + S, bid, ask, in_session)
    refused = engine.check_order(T0 + S, 1, 2)
    assert not refused.accepted and refused.reason.startswith(f"no new risk: {problem}")
    assert engine.check_order(T0 + S, 1, 0).accepted  # exits stay possible
    engine.on_book(T0 + 2 * S, 18_000.00, 18_000.25, in_session=True)
    assert engine.check_order(T0 + 2 * S, 0, 1).accepted  # a sound book ends the refusal


def test_a_stale_book_refuses_new_risk() -> None:
    engine = _engine(max_data_age_s=5)
    assert engine.check_order(T0 + 5 * S, 0, 1).accepted
    refused = engine.check_order(T0 + 6 * S, 1, 2)
    assert not refused.accepted and refused.reason == "no new risk: stale book (6.0 s old)"


def test_the_order_rate_throttle_never_holds_back_a_flattening_order() -> None:
    engine = _engine(max_orders_per_second=3, max_position=10)
    assert all(engine.check_order(T0, k, k + 1).accepted for k in range(3))
    refused = engine.check_order(T0, 3, 4)
    assert not refused.accepted and refused.reason == "order rate: 3 orders in the last second"
    assert engine.check_order(T0, 3, 0).quantity == -3  # Nautilus's throttle would delay this one
    assert engine.check_order(T0 + S + 1, 0, 1).accepted  # the window moved on


def test_daily_loss_halts_until_the_next_trade_date_and_drawdown_until_a_person_resumes() -> None:
    engine = _engine(max_daily_loss_usd=500, max_drawdown_usd=800)
    engine.on_equity(T0, 10_300.0)
    engine.on_equity(T0 + S, 9_799.0)  # -201 on the day, 501 below the peak: within both limits
    assert engine.state is TradingState.ACTIVE
    engine.on_equity(T0 + 2 * S, 9_500.0)
    assert engine.state is TradingState.HALTED and engine.reason == "daily loss $500.00 >= $500.00"
    refused = engine.check_order(T0 + 2 * S, 1, 2)
    assert not refused.accepted and refused.reason == "HALTED: daily loss $500.00 >= $500.00"
    assert not engine.check_order(T0 + 2 * S, 1, -1).accepted  # a flip is not an exit
    assert engine.check_order(T0 + 2 * S, 1, 0).accepted
    engine.reset_day(T0 + 3 * S, 9_500.0)
    assert engine.state is TradingState.ACTIVE and engine.reason == "new trade date"
    engine.on_book(T0 + 3 * S, 18_000.00, 18_000.25, in_session=True)
    engine.on_equity(T0 + 4 * S, 9_490.0)  # 810 below the 10,300 peak
    assert engine.state is TradingState.HALTED and engine.reason.startswith("drawdown $810.00")
    engine.reset_day(T0 + 5 * S, 9_490.0)
    assert engine.state is TradingState.HALTED  # a new day does not lift a drawdown halt
    engine.resume(T0 + 6 * S, "risk officer")
    assert engine.state is TradingState.ACTIVE
    assert [e[1:] for e in engine.events] == [
        (TradingState.HALTED, "daily loss $500.00 >= $500.00"),
        (TradingState.ACTIVE, "new trade date"),
        (TradingState.HALTED, "drawdown $810.00 >= $800.00"),
        (TradingState.ACTIVE, "resumed by risk officer"),
    ]


def test_latency_breaches_feed_gaps_and_drift_allow_exits_only() -> None:
    engine = _engine(latency_budget_ms=100, max_latency_breaches=3, max_feed_gap_s=30)
    for ms in (150, 150, 90, 150, 150):  # a decision within budget resets the count
        engine.on_latency(T0, ms)
    assert engine.state is TradingState.ACTIVE
    engine.on_latency(T0, 150)
    assert engine.state is TradingState.REDUCING and engine.reason == "3 decisions over the 100 ms latency budget"
    assert not engine.check_order(T0, 2, 3).accepted and not engine.check_order(T0, 1, -1).accepted
    assert engine.check_order(T0, 2, 1).quantity == -1
    gap = _engine(max_feed_gap_s=30)
    gap.on_book(T0 + 31 * S, 18_000.00, 18_000.25, in_session=True)
    assert gap.state is TradingState.REDUCING and gap.reason == "feed gap of 31.0 s"
    quiet = _engine(max_feed_gap_s=30)
    quiet.on_book(T0 + 3_600 * S, 18_000.00, 18_000.25, in_session=False)  # the scheduled halt is no gap
    assert quiet.state is TradingState.ACTIVE
    drift = _engine()
    drift.on_drift(T0, "ofi_1min_zscore PSI 0.41")
    assert drift.state is TradingState.REDUCING and drift.reason == "feature drift: ofi_1min_zscore PSI 0.41"
    drift.on_equity(T0, 0.0)
    assert drift.state is TradingState.HALTED  # the worst condition wins
    drift.on_drift(T0, "again")
    assert drift.state is TradingState.HALTED  # and a milder one never lifts it


def test_the_kill_switch_flattens_whatever_else_is_wrong() -> None:
    engine = _engine(max_orders_per_second=1)
    assert engine.check_order(T0, 0, 1).accepted
    engine.on_book(T0, 18_000.25, 18_000.00, in_session=True)  # crossed, and the rate is used up
    engine.on_equity(T0, 0.0)  # HALTED already
    order = engine.kill_switch(T0, position=1, who="operator")
    assert order.accepted and order.quantity == -1 and order.reason == "kill switch: flatten"
    assert engine.state is TradingState.HALTED and engine.reason == "kill switch by operator"
    assert engine.events[-1][1:] == (TradingState.HALTED, "kill switch by operator")
    assert engine.kill_switch(T0, position=-2, who="operator").quantity == 2


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"max_position must be > 0 \(got 0\); max_data_age_s must be > 0"):
        RiskConfig(max_position=0, max_data_age_s=-1)


def test_on_books_equals_on_book_one_at_a_time() -> None:
    """The vectorised path the live loop uses gives the same states, reasons and orders as book by book."""
    rng = np.random.default_rng(5)
    ts = np.cumsum(rng.integers(1, 40, size=400)) * 1_000_000_000  # some gaps over max_feed_gap_s (30 s)
    bid = 18_000 + rng.integers(-4, 4, size=400) * 0.25
    ask = bid + rng.choice([0.25, 0.25, 0.0, -0.25], size=400)  # some locked / crossed books
    in_session = rng.random(400) > 0.1
    one, many = RiskEngine(), RiskEngine()
    for k in range(400):
        one.on_book(int(ts[k]), float(bid[k]), float(ask[k]), bool(in_session[k]))
    for chunk in np.array_split(np.arange(400), 7):
        many.on_books(ts[chunk], bid[chunk], ask[chunk], in_session[chunk])
    assert (one.state, one.reason) == (many.state, many.reason) and one.state is TradingState.REDUCING
    assert one.check_order(int(ts[-1]), 0, 1) == many.check_order(int(ts[-1]), 0, 1)
