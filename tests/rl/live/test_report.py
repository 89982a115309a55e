"""Paper-trading daily report and go-live gate: hand-built journal tables with hand-computed numbers, the same
numbers from a slow obvious reference, the Dagster assets on a real Delta lake, and the gate's verdicts."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from phoenix_assets.defs.paper.assets import paper_daily_report, paper_track_record
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib.io.lake import Lake, MissingUpstreamError
from phoenix_assets.lib.schema import PAPER_REPORT_TABLE, PAPER_TRACK_RECORD_TABLE
from phoenix_rl.evaluation.metrics import sortino_ratio
from phoenix_rl.live import report as pr
from phoenix_rl.live.journal import CATASTROPHE_REASONS, OrderJournal, client_order_id

NAN = math.nan
D1, D2, D3 = dt.date(2024, 3, 13), dt.date(2024, 3, 14), dt.date(2024, 3, 15)


def _ts(day: dt.date, minute: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(14, 30), tzinfo=dt.UTC) + dt.timedelta(minutes=minute)  # 09:30 CT


def _bars(strategy: str, day: dt.date, capital: float, position: list, equity: list, **cols: list) -> list[dict]:
    n = len(position)
    defaults = {
        "risk_state": ["ACTIVE"] * n,
        "risk_reason": [""] * n,
        "latency_decision_ms": [10.0 + 3 * k for k in range(n)],
        "latency_order_ms": [NAN] * n,
    }
    rows = []
    for k in range(n):
        values = {c: (cols.get(c) or defaults[c])[k] for c in defaults}
        rows.append(
            {
                "session_id": f"s-{day}",
                "strategy": strategy,
                "bar_ts": _ts(day, k),
                "trade_date": day,
                "instrument_id": 42005347,
                "close": 18_000.0 + k,
                "action": 0.0,
                "target": position[k],
                "position": position[k],
                "capital_usd": capital,
                "pnl_usd": equity[k],
                "drawdown_usd": 0.0,
                "order_reason": "",
                **values,
            }
        )
    return rows


def _order(journal: OrderJournal, strategy: str, day: dt.date, minute: int, qty: int, fills: list[float]) -> None:
    """An order at a bar, filled in len(fills) parts with these commissions."""
    oid = client_order_id(strategy, _ts(day, minute))
    journal.record_order(
        {
            "client_order_id": oid,
            "strategy": strategy,
            "bar_ts": _ts(day, minute),
            "instrument_id": 42005347,
            "quantity": qty,
            "reason": "policy",
            "created_ts": _ts(day, minute),
        }
    )
    for i, fee in enumerate(fills):
        journal.record_fill(
            {
                "trade_id": f"{oid}/{i}",
                "client_order_id": oid,
                "instrument_id": 42005347,
                "quantity": qty // len(fills),
                "price": 18_000.0,
                "commission_usd": fee,
                "ts": _ts(day, minute + 1),
            }
        )


def _event(strategy: str, day: dt.date, minute: int, state: str, reason: str) -> dict:
    ts = _ts(day, minute)
    return {
        "session_id": f"s-{day}",
        "strategy": strategy,
        "ts": ts,
        "trade_date": day,
        "state": state,
        "reason": reason,
    }


def build_journal(lake: Lake) -> None:
    """Two strategies, three trade dates (`ofi` skips D2): a flip, positions carried over night, a catastrophe
    (HALTED on daily loss), a HALTED that is no catastrophe, an unfilled order, latencies with NaN."""
    j = OrderJournal(lake)
    bars = [
        # D1 agent: long at t1, flip to short at t3 (exit bar of the long), still short at the close
        *_bars(
            "agent",
            D1,
            10_000.0,
            [0, 1, 1, -1, -1, -1],
            [0.0, -1.0, 9.0, 4.0, 2.0, 1.0],
            latency_order_ms=[NAN, 15.0, NAN, 25.0, NAN, NAN],
        ),
        # D2 agent: the carried short exits at t1, long t2, flattened at t3 by a daily-loss HALT
        *_bars(
            "agent",
            D2,
            10_000.0,
            [-1, 0, 1, 0],
            [3.0, 2.0, 1.5, 1.0],
            risk_state=["ACTIVE", "REDUCING", "REDUCING", "HALTED"],
            risk_reason=["", "latency budget", "latency budget", "daily loss $600.00 >= $500.00"],
            latency_order_ms=[NAN, 40.0, 20.0, 30.0],
        ),
        *_bars("agent", D3, 10_000.0, [0, 0], [1.0, 1.0]),
        *_bars("ofi", D1, 20_000.0, [1, 1, 0], [-0.5, 4.5, 6.0], latency_order_ms=[5.0, NAN, 7.0]),
        *_bars(
            "ofi",
            D3,
            20_000.0,
            [0, -2],
            [6.0, 5.0],
            risk_state=["ACTIVE", "HALTED"],
            risk_reason=["", "venue disconnected"],
        ),
    ]
    assert j.record_bars(bars) == len(bars)
    j.record_risk_events(
        [
            _event("agent", D2, 1, "REDUCING", "latency budget breached 3 times"),
            _event("agent", D2, 3, "HALTED", "daily loss $600.00 >= $500.00"),
            _event("ofi", D1, 2, "REDUCING", "feed gap 31s"),
            _event("ofi", D3, 1, "HALTED", "venue disconnected"),
        ]
    )
    _order(j, "agent", D1, 1, 1, [0.5])
    _order(j, "agent", D1, 3, -2, [1.0])
    for minute, qty in ((1, 1), (2, 1), (3, -1)):
        _order(j, "agent", D2, minute, qty, [0.25])
    _order(j, "ofi", D1, 0, 1, [0.5])
    _order(j, "ofi", D1, 2, -1, [])  # never filled
    _order(j, "ofi", D3, 1, -2, [0.5, 0.5])  # two partial fills


# Hand-computed (module doc of paper_report for the definitions):
# D1 agent: dE = 0, -1, 10, -5, -2, -1. Long trip owns t1 (entry from flat), t2, t3 (flip: its exit bar) = 4 (win);
#   short trip owns t4, t5 (open at the close, marked) = -3. Peak 0,0,9,9,9,9 -> drawdown 8 at t5.
# D2 agent: opening equity 1, carried short. dE = 2, -1, -0.5, -0.5. Carried short owns t0, t1 = 1 (win);
#   long owns t2 (entry), t3 (exit) = -1. Peak 3 -> drawdown 2.
# D1 ofi: dE = -0.5, 5, 1.5, one long trip = 6 (win). Peak 0, 4.5, 6 -> drawdown 0.5 at t0.
# D3 ofi: opening 6 (D1's close: D2 has no ofi bars), dE = 0, -1: short trip -1 (open at the close).
EXPECTED = {
    ("agent", D1): dict(
        pnl_open_usd=0.0,
        pnl_usd=1.0,
        daily_return=1e-4,
        n_bars=6,
        n_orders=2,
        n_fills=2,
        fees_usd=1.5,
        n_round_trips=2,
        n_wins=1,
        round_trip_pnl_usd=1.0,
        max_drawdown_usd=8.0,
        pnl_high_usd=9.0,
        pnl_low_usd=-1.0,
        latency_decision_p50_ms=17.5,
        latency_decision_p99_ms=24.85,
        latency_order_p50_ms=20.0,
        latency_order_p99_ms=24.9,
        n_risk_events=0,
        worst_risk_state="ACTIVE",
        catastrophe=False,
        catastrophe_reason="",
    ),
    ("agent", D2): dict(
        pnl_open_usd=1.0,
        pnl_usd=0.0,
        daily_return=0.0,
        n_bars=4,
        n_orders=3,
        n_fills=3,
        fees_usd=0.75,
        n_round_trips=2,
        n_wins=1,
        round_trip_pnl_usd=0.0,
        max_drawdown_usd=2.0,
        pnl_high_usd=3.0,
        pnl_low_usd=1.0,
        latency_order_p50_ms=30.0,
        n_risk_events=2,
        worst_risk_state="HALTED",
        catastrophe=True,
        catastrophe_reason="daily loss $600.00 >= $500.00",
    ),
    ("agent", D3): dict(
        pnl_usd=0.0, n_bars=2, n_orders=0, n_fills=0, fees_usd=0.0, n_round_trips=0, n_wins=0, max_drawdown_usd=0.0
    ),
    ("ofi", D1): dict(
        pnl_open_usd=0.0,
        pnl_usd=6.0,
        daily_return=3e-4,
        n_orders=2,
        n_fills=1,
        fees_usd=0.5,
        n_round_trips=1,
        n_wins=1,
        max_drawdown_usd=0.5,
        latency_order_p50_ms=6.0,
        n_risk_events=1,
        worst_risk_state="REDUCING",
        catastrophe=False,
    ),
    ("ofi", D3): dict(
        pnl_open_usd=6.0,
        pnl_usd=-1.0,
        n_orders=1,
        n_fills=2,
        fees_usd=1.0,
        n_round_trips=1,
        n_wins=0,
        round_trip_pnl_usd=-1.0,
        max_drawdown_usd=1.0,
        n_risk_events=1,
        worst_risk_state="HALTED",
        catastrophe=False,  # HALTED, but not for a catastrophe reason
        catastrophe_reason="",
    ),
}


def slow_report(lake: Lake, day: dt.date) -> dict[str, dict]:
    """The obvious way: every table read whole, a Python loop over each strategy's bars in time order."""
    bars = sorted(lake.scan("paper_bars").collect().to_dicts(), key=lambda r: (r["strategy"], r["bar_ts"]))
    orders = lake.scan("paper_orders").collect().to_dicts() if lake.exists("paper_orders") else []
    fills = lake.scan("paper_fills").collect().to_dicts() if lake.exists("paper_fills") else []
    events = lake.scan("paper_risk_events").collect().to_dicts() if lake.exists("paper_risk_events") else []
    severity = {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}
    start = dt.datetime.combine(day - dt.timedelta(days=1), dt.time(21, 0), tzinfo=dt.UTC)  # 16:00 CDT
    out = {}
    for strategy in sorted({b["strategy"] for b in bars if b["trade_date"] == day}):
        mine = [b for b in bars if b["strategy"] == strategy]
        before = [b for b in mine if b["trade_date"] < day]
        today = [b for b in mine if b["trade_date"] == day]
        eq_prev = before[-1]["pnl_usd"] if before else 0.0
        pos_prev = before[-1]["position"] if before else 0
        opening = eq_prev
        trips: list[float] = []
        open_trip: float | None = None  # pnl of the trip owning the bars so far (None: none owns any bar yet)
        peak, drawdown = opening, 0.0
        for b in today:
            change = b["pnl_usd"] - eq_prev
            pos = b["position"]
            if pos_prev != 0:  # the bar belongs to the position held through it
                open_trip = (open_trip or 0.0) + change
                if pos == 0 or (pos > 0) != (pos_prev > 0):  # exit bar (a flip's new trip owns bars from the next)
                    trips.append(open_trip)
                    open_trip = None
            elif pos != 0:  # entry from flat: the fee belongs to the trip it opens
                open_trip = change
            eq_prev, pos_prev = b["pnl_usd"], pos
            peak = max(peak, b["pnl_usd"])
            drawdown = max(drawdown, peak - b["pnl_usd"])
        if open_trip is not None:
            trips.append(open_trip)
        my_orders = [
            o for o in orders if o["strategy"] == strategy and start <= o["bar_ts"] < start + dt.timedelta(days=1)
        ]
        ids = {o["client_order_id"] for o in my_orders}
        my_fills = [f for f in fills if f["client_order_id"] in ids]
        my_events = [e for e in events if e["strategy"] == strategy and e["trade_date"] == day]
        states = [(b["bar_ts"], b["risk_state"], b["risk_reason"]) for b in today]
        states += [(e["ts"], e["state"], e["reason"]) for e in my_events]
        bad = sorted(
            (ts, reason)
            for ts, state, reason in states
            if state == "HALTED" and any(reason.startswith(p) for p in CATASTROPHE_REASONS)
        )
        dec = [b["latency_decision_ms"] for b in today]
        order_lat = [b["latency_order_ms"] for b in today if not math.isnan(b["latency_order_ms"])]
        out[strategy] = {
            "pnl_open_usd": opening,
            "pnl_usd": today[-1]["pnl_usd"] - opening,
            "daily_return": (today[-1]["pnl_usd"] - opening) / today[-1]["capital_usd"],
            "n_bars": len(today),
            "n_orders": len(my_orders),
            "n_fills": len(my_fills),
            "fees_usd": sum(f["commission_usd"] for f in my_fills),
            "n_round_trips": len(trips),
            "n_wins": sum(p > 0 for p in trips),
            "round_trip_pnl_usd": sum(trips),
            "max_drawdown_usd": drawdown,
            "pnl_high_usd": max([opening] + [b["pnl_usd"] for b in today]),
            "pnl_low_usd": min(b["pnl_usd"] for b in today),
            "latency_decision_p50_ms": float(np.percentile(dec, 50)),
            "latency_decision_p99_ms": float(np.percentile(dec, 99)),
            "latency_order_p50_ms": float(np.percentile(order_lat, 50)) if order_lat else None,
            "latency_order_p99_ms": float(np.percentile(order_lat, 99)) if order_lat else None,
            "n_risk_events": len(my_events),
            "worst_risk_state": max((s for _, s, _ in states), key=severity.__getitem__),
            "catastrophe": bool(bad),
            "catastrophe_reason": bad[0][1] if bad else "",
        }
    return out


def _assert_row(row: dict, expected: dict, where: str) -> None:
    for key, value in expected.items():
        if isinstance(value, float) and row[key] is not None:
            assert row[key] == pytest.approx(value, abs=1e-9), f"{where} {key}"
        else:
            assert row[key] == value, f"{where} {key}"


def _report(lake: Lake, day: dt.date) -> dict[str, dict]:
    return {r["strategy"]: r for r in pr.daily_report(pr.read_paper_day(lake, day)).to_dicts()}


@pytest.fixture
def journal_lake(lake: Lake) -> Lake:
    build_journal(lake)
    return lake


def test_daily_report_matches_hand_computed_numbers(journal_lake: Lake) -> None:
    for day in (D1, D2, D3):
        report = _report(journal_lake, day)
        assert sorted(report) == sorted({s for s, d in EXPECTED if d == day})
        for strategy, row in report.items():
            _assert_row(row, EXPECTED[(strategy, day)], f"{strategy} {day}")
    # the days' pnl add up to the strategies' last equity; the trips' pnl to the day's where no flat bar moved
    totals = {
        s: sum(_report(journal_lake, d).get(s, {"pnl_usd": 0.0})["pnl_usd"] for d in (D1, D2, D3))
        for s in ("agent", "ofi")
    }
    assert totals == pytest.approx({"agent": 1.0, "ofi": 5.0})


def test_daily_report_matches_the_slow_reference(journal_lake: Lake) -> None:
    for day in (D1, D2, D3):
        fast, slow = _report(journal_lake, day), slow_report(journal_lake, day)
        assert fast.keys() == slow.keys()
        for strategy in slow:
            _assert_row(fast[strategy], slow[strategy], f"{strategy} {day}")


def test_round_trips_match_the_slow_reference_on_random_days(lake: Lake) -> None:
    """Random positions (flips, scaling in, carried over night, flat days) and equity walks on five days."""
    rng = np.random.default_rng(7)
    j = OrderJournal(lake)
    days = [dt.date(2024, 3, 11) + dt.timedelta(days=k) for k in range(5)]
    equity = {"a": 0.0, "b": 0.0}
    for day in days:
        rows = []
        for strategy in equity:
            n = int(rng.integers(1, 60))
            position = rng.choice([-2, -1, 0, 0, 0, 1, 2], size=n).tolist()
            steps = rng.normal(0.0, 3.0, size=n).round(2)
            curve = (equity[strategy] + np.cumsum(steps)).tolist()
            equity[strategy] = curve[-1]
            lat = rng.exponential(20.0, size=n)
            rows += _bars(
                strategy,
                day,
                10_000.0,
                position,
                curve,
                latency_decision_ms=lat.tolist(),
                latency_order_ms=np.where(rng.random(n) < 0.5, NAN, lat + 5).tolist(),
            )
        j.record_bars(rows)
    for day in days:
        fast, slow = _report(lake, day), slow_report(lake, day)
        for strategy in slow:
            _assert_row(fast[strategy], slow[strategy], f"{strategy} {day}")
            assert fast[strategy]["round_trip_pnl_usd"] == pytest.approx(
                fast[strategy]["pnl_usd"] - _flat_moves(lake, day, strategy)
            )


def _flat_moves(lake: Lake, day: dt.date, strategy: str) -> float:
    """Equity changes on bars owned by no trip (flat before and after): random walks move there too."""
    changes = pr.bar_changes(pr.read_paper_day(lake, day).bars, pr.read_paper_day(lake, day).prior)
    return float(changes.filter((pl.col("strategy") == strategy) & pl.col("trip").is_null())["pnl_change"].sum())


def _materialize_day(root: str, day: dt.date) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [paper_daily_report],
            partition_key=day.isoformat(),
            resources={"lake": LakeResource(uri=root)},
            instance=instance,
            raise_on_error=False,
        )


def test_asset_writes_the_partition_idempotently(journal_lake: Lake) -> None:
    root = journal_lake.root
    for day in (D1, D2, D3):
        assert _materialize_day(root, day).success
    first = journal_lake.scan(PAPER_REPORT_TABLE).collect().sort("trade_date", "strategy")
    result = _materialize_day(root, D2)  # again: the partition is replaced, not appended
    assert result.success
    again = journal_lake.scan(PAPER_REPORT_TABLE).collect().sort("trade_date", "strategy")
    assert again.equals(first)
    assert first.height == len(EXPECTED)
    for row in first.to_dicts():
        _assert_row(row, EXPECTED[(row["strategy"], row["trade_date"])], f"{row['strategy']} {row['trade_date']}")

    meta = result.asset_materializations_for_node("paper_daily_report")[0].metadata
    assert meta["dagster/row_count"].value == 1
    assert "### agent" in meta["report"].value and "| catastrophe | True |" in meta["report"].value
    assert meta["first_bar"].value.startswith("2024-03-14 14:30")
    assert meta["catastrophes"].value == ["agent: daily loss $600.00 >= $500.00"]
    checks = {c.check_name: c for c in _materialize_day(root, D1).get_asset_check_evaluations()}
    assert not checks["orders_filled"].passed  # ofi's second D1 order has no fill: a warning
    assert checks["orders_filled"].severity == dg.AssetCheckSeverity.WARN


def test_missing_paper_bars_names_the_date_and_table(journal_lake: Lake, tmp_path: Path) -> None:
    with pytest.raises(MissingUpstreamError, match=r"paper_daily_report 2024-03-18: paper_bars has no rows"):
        pr.read_paper_day(journal_lake, dt.date(2024, 3, 18), needed_by="paper_daily_report")
    result = _materialize_day(str(tmp_path / "empty"), D1)  # no journal at all
    assert not result.success
    message = str(next(e for e in result.all_events if e.is_step_failure).step_failure_data.error)
    assert "2024-03-13" in message and "paper_bars" in message


# --- go-live gate -------------------------------------------------------------------------------------


def test_a_report_table_of_the_old_equity_names_is_read_and_rewritten_under_the_pnl_names(
    journal_lake: Lake,
) -> None:
    """Issue 28: paper_daily_report's equity_*_usd columns always held PnL since the start; they are pnl_*_usd
    now. A table written under the old names reads under the new ones (`scan_report`, what paper_track_record
    reads), and the next paper_daily_report rewrites it once: the old days keep their values, none is null."""
    renamed = {new: old for old, new in pr.RENAMED_REPORT_COLUMNS.items()}
    for day in (D1, D2):  # the report as an older Phoenix wrote it
        table = pr.report_arrow(pr.daily_report(pr.read_paper_day(journal_lake, day)))
        table = table.rename_columns([renamed.get(c, c) for c in table.column_names])
        journal_lake.replace_partition(PAPER_REPORT_TABLE, table.schema, table.to_batches(), "trade_date", day)
    assert "equity_open_usd" in journal_lake.scan(PAPER_REPORT_TABLE).collect_schema().names()
    old = pr.scan_report(journal_lake).collect()
    assert set(pr.RENAMED_REPORT_COLUMNS.values()) <= set(old.columns)
    assert not set(pr.RENAMED_REPORT_COLUMNS) & set(old.columns)

    assert _materialize_day(journal_lake.root, D3).success
    stored = journal_lake.scan(PAPER_REPORT_TABLE).collect().sort("trade_date", "strategy")
    assert stored.columns == pr.REPORT_SCHEMA.names  # rewritten: the new names only
    assert stored.select(pr.RENAMED_REPORT_COLUMNS.values()).null_count().sum_horizontal().item() == 0
    for row in stored.to_dicts():
        _assert_row(row, EXPECTED[(row["strategy"], row["trade_date"])], f"{row['strategy']} {row['trade_date']}")
    assert not pr.migrate_report_table(journal_lake)  # once only


def journal_days(
    lake: Lake, n: int, strategy: str = "agent", first: dt.date = dt.date(2024, 4, 1), **bad: str
) -> list[dt.date]:
    """n trade dates of a steady strategy: per day three winning trips (+30, +25, +20) and one loser (-15), so
    +60 a day on $10,000; `bad` days (index -> kind) break one criterion."""
    days = [d for d in (first + dt.timedelta(days=k) for k in range(3 * n)) if d.weekday() < 5][:n]
    j = OrderJournal(lake)
    equity, events = 0.0, []
    for k, day in enumerate(days):
        position = [1, 1, 0, -1, 0, 1, 0, -1, -1, 0]
        moves = [0, 30, 0, 0, 25, 0, 20, 0, -15, 0]
        risk = ["ACTIVE"] * 10
        reasons = [""] * 10
        kind = bad.get(f"day{k}")
        if kind == "loss_day":  # a -600 day: drawdown 600 = 6% of capital
            moves = [0, -300, 0, 0, -150, 0, -150, 0, 0, 0]
        if kind == "losers":  # all four trips lose a little
            moves = [0, -1, 0, 0, -1, 0, -1, 0, -1, 0]
        if kind == "halt":
            risk[-1], reasons[-1] = "HALTED", "kill switch by ops"
            events.append(_event(strategy, day, 9, "HALTED", "kill switch by ops"))
        if k % 3 == 2:  # some down days, so Sortino is a ratio, not the cap
            moves = [m - 70 if i == 8 else m for i, m in enumerate(moves)]
        curve = (equity + np.cumsum(moves)).tolist()
        equity = curve[-1]
        j.record_bars(_bars(strategy, day, 10_000.0, position, curve, risk_state=risk, risk_reason=reasons))
    if events:
        j.record_risk_events(events)
    return days


def _record(lake: Lake, days: list[dt.date], **config: object) -> dg.ExecuteInProcessResult:
    """The days' reports (what paper_daily_report writes, without a run per day), then paper_track_record."""
    for day in days:
        table = pr.report_arrow(pr.daily_report(pr.read_paper_day(lake, day)))
        lake.replace_partition(PAPER_REPORT_TABLE, table.schema, table.to_batches(), "trade_date", day)
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [paper_track_record],
            resources={"lake": LakeResource(uri=lake.root)},
            run_config=dg.RunConfig(ops={"paper_track_record": {"config": config}}),
            instance=instance,
            raise_on_error=False,
        )


def _gate(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (gate,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "go_live_gate"]
    return gate


def test_gate_passes_on_ten_good_days_and_stores_the_track_record(lake: Lake) -> None:
    days = journal_days(lake, 12)  # the gate judges the last 10
    result = _record(lake, days)
    assert result.success
    gate = _gate(result)
    assert gate.passed, gate.description
    assert gate.blocking and gate.severity == dg.AssetCheckSeverity.ERROR
    meta = {k: v.value for k, v in gate.metadata.items()}
    assert meta["trade_dates_value"] == 10 and meta["trade_dates_passed"]
    assert meta["no_catastrophe_value"] == 0 and meta["failed"] == ["none"]
    assert "| sortino |" in meta["criteria"] and "**NO**" not in meta["criteria"]

    record = lake.scan(PAPER_TRACK_RECORD_TABLE).collect().to_dicts()[0]
    window = lake.scan(PAPER_REPORT_TABLE).collect().sort("trade_date").tail(10)
    r = window["daily_return"].to_numpy()
    assert record["first_trade_date"] == days[2] and record["n_days"] == 10
    assert record["sortino"] == pytest.approx(sortino_ratio(r)) and record["sortino"] > 2
    assert record["sortino"] == pytest.approx(np.mean(r) / np.sqrt(np.mean(np.minimum(r, 0) ** 2)) * np.sqrt(252))
    assert record["win_rate"] == pytest.approx(0.75) and record["n_round_trips"] == 40
    # worst fall: a down day (day index 2 mod 3) loses 15 + 70 after its +75 peak
    assert record["max_drawdown_usd"] == pytest.approx(85.0)
    assert record["max_drawdown_pct"] == pytest.approx(0.85)
    assert meta["sortino_value"] == pytest.approx(record["sortino"])


def test_gate_fails_with_too_few_days(lake: Lake) -> None:
    gate = _gate(_record(lake, journal_days(lake, 3)))
    assert not gate.passed
    assert "only 3 trade dates of paper trading" in gate.description
    assert gate.metadata["failed"].value == ["trade_dates"]


def test_gate_fails_for_another_strategy_with_no_history(lake: Lake) -> None:
    gate = _gate(_record(lake, journal_days(lake, 10), strategy="nobody"))
    assert not gate.passed and "only 0 trade dates of paper trading" in gate.description


@pytest.mark.parametrize(
    ("bad", "criterion", "words"),
    [
        ({"day4": "halt"}, "no_catastrophe", "kill switch by ops"),
        # peak 195 on day 2 (a down day closes 85 below its peak), -600 on day 4, trough -440 on day 5
        ({"day4": "loss_day"}, "max_drawdown_pct", "max drawdown 6.35% of capital"),
        ({f"day{k}": "losers" for k in range(4)}, "win_rate", "win rate 0.45 of 40 round trips"),  # 18 of 40
    ],
)
def test_gate_fails_naming_the_failed_criterion(lake: Lake, bad: dict, criterion: str, words: str) -> None:
    gate = _gate(_record(lake, journal_days(lake, 10, **bad)))
    assert not gate.passed
    failed = gate.metadata["failed"].value
    assert criterion in failed and "trade_dates" not in failed, failed
    assert f"{criterion} (" in gate.description and words in gate.description
    assert gate.metadata[f"{criterion}_passed"].value is False


def test_gate_fails_on_a_low_sortino() -> None:
    """Pure: a record with a positive but lumpy return stream; every threshold is configurable."""
    r = np.array([0.002, -0.003, 0.002, -0.002, 0.0015, -0.001, 0.001, 0.0, 0.001, -0.001])
    record = {
        "n_days": 10,
        "sortino": sortino_ratio(r),
        "max_drawdown_pct": 0.5,
        "win_rate": 0.6,
        "n_round_trips": 20,
        "n_catastrophes": 0,
        "catastrophes": "",
    }
    verdict = {c.name: c.passed for c in pr.gate_criteria(record, pr.GateThresholds())}
    assert verdict == {
        "trade_dates": True,
        "sortino": False,
        "max_drawdown_pct": True,
        "win_rate": True,
        "no_catastrophe": True,
    }
    loose = pr.GateThresholds(min_sortino=-100.0)
    assert all(c.passed for c in pr.gate_criteria(record, loose))


def test_period_drawdown_spans_days() -> None:
    """A fall that starts on one day and ends on the next is measured from the earlier peak."""
    days = pl.DataFrame(
        {
            "trade_date": [D1, D2, D3],
            "pnl_open_usd": [0.0, 100.0, 40.0],
            "pnl_high_usd": [120.0, 100.0, 90.0],
            "pnl_low_usd": [-10.0, 30.0, 40.0],
            "max_drawdown_usd": [20.0, 70.0, 0.0],
        }
    )
    assert pr.period_drawdown_usd(days) == pytest.approx(90.0)  # peak 120 on D1, trough 30 on D2
