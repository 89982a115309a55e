"""The live monitoring page (issue 14): its state from hand-built paper_bars / paper_risk_events / paper_orders /
paper_fills tables (numbers computed by hand below), the server as `./phoenix monitor` starts it, and the page in
headless Chromium updating itself as the paper loop appends bars (skipped where /usr/bin/chromium is missing)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from phoenix_assets.lib.io.lake import Lake
from phoenix_rl.live.journal import OrderJournal, client_order_id
from phoenix_rl.live.monitor_state import NO_SESSION, monitor_state, pnl_series
from tests.ui_support import CHROMIUM_ARGS, REPO, chromium_path, start_in_own_group, stop_group, tail

T0 = dt.datetime(2024, 3, 13, 14, 30, tzinfo=dt.UTC)
DAY1, DAY2 = dt.date(2024, 3, 13), dt.date(2024, 3, 14)
NAN = math.nan

# agent: 3 bars on DAY1, 4 on DAY2 (the second session). Peak PnL 50 -> drawdown = 50 - PnL after bar 1.
EQUITY = [0.0, 50.0, 30.0, 40.0, -20.0, 10.0, 25.0]
DRAWDOWN = [0.0, 0.0, 20.0, 10.0, 70.0, 40.0, 25.0]
DECISION_MS = [100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 50.0]
ORDER_MS = [NAN, 1.5, NAN, 2.5, 3.5, NAN, 10.0]  # NaN: no order sent on that bar
POSITION = [0, 1, 1, 2, 2, -1, -1]


def _bar(k: int, **over: object) -> dict:
    day2 = k >= 3
    row = {
        "session_id": "s2" if day2 else "s1", "strategy": "agent", "bar_ts": T0 + dt.timedelta(days=day2, minutes=k),
        "trade_date": DAY2 if day2 else DAY1, "instrument_id": 42005347, "close": 18000.0 + k, "action": 0.25,
        "target": POSITION[k], "position": POSITION[k], "capital_usd": 10_000.0, "pnl_usd": EQUITY[k],
        "drawdown_usd": DRAWDOWN[k], "risk_state": "ACTIVE", "risk_reason": "", "order_reason": "",
        "latency_decision_ms": DECISION_MS[k], "latency_order_ms": ORDER_MS[k],
    }  # fmt: skip
    return row | over


def _event(minute: int, state: str, reason: str, strategy: str = "agent") -> dict:
    ts = T0 + dt.timedelta(days=1, minutes=minute)
    return {"session_id": "s2", "strategy": strategy, "ts": ts, "trade_date": DAY2, "state": state, "reason": reason}


REDUCING_REASON = "latency budget breached 3 times in a row"


def _journal(lake: Lake) -> OrderJournal:
    """The hand-built track record: agent (7 bars, 2 sessions, 3 orders, 2 fills) and tuned_rule (1 older bar)."""
    journal = OrderJournal(lake)
    bars = [_bar(k) for k in range(6)]
    bars.append(_bar(6, risk_state="REDUCING", risk_reason=REDUCING_REASON, order_reason="reduce only"))
    journal.record_bars(bars)
    journal.record_bars([_bar(0, strategy="tuned_rule", pnl_usd=-3.0)])
    journal.record_risk_events(
        [
            _event(4, "REDUCING", "feed gap of 31.0 s"),
            _event(5, "ACTIVE", "resumed by test"),
            _event(6, "REDUCING", REDUCING_REASON),
            _event(6, "HALTED", "kill switch by test", strategy="tuned_rule"),
        ]
    )
    for k, strategy in ((1, "agent"), (4, "agent"), (5, "agent"), (0, "tuned_rule")):
        bar_ts = _bar(k)["bar_ts"]
        oid = client_order_id(strategy, bar_ts)
        order = {"client_order_id": oid, "strategy": strategy, "bar_ts": bar_ts, "instrument_id": 42005347,
                 "quantity": 1, "reason": "policy", "created_ts": bar_ts}  # fmt: skip
        journal.record_order(order)
        if k in (0, 1, 4):  # the agent's bar-5 order is still unfilled
            fill = {"trade_id": f"T{k}{strategy}", "client_order_id": oid, "instrument_id": 42005347, "quantity": 1,
                    "price": 18000.0 + k, "commission_usd": 0.62, "ts": bar_ts + dt.timedelta(seconds=61)}  # fmt: skip
            journal.record_fill(fill)
    return journal


def test_empty_lake_is_no_session_yet_not_a_crash(tmp_path: Path) -> None:
    state = monitor_state(Lake(str(tmp_path)))
    assert state["status"] == "no_session" and state["message"] == NO_SESSION
    assert "no paper session yet" in state["message"] and state["strategies"] == []
    json.dumps(state, allow_nan=False)


def test_state_of_the_latest_strategy_by_hand(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    _journal(lake)
    state = monitor_state(lake, latency_bars=5, risk_events=2)
    json.dumps(state, allow_nan=False)  # what /api/state sends: no NaN anywhere
    assert state["status"] == "ok" and state["message"] == ""
    assert state["strategy"] == "agent" and state["strategies"] == ["agent", "tuned_rule"]  # agent has the latest bar
    assert state["session_id"] == "s2" and state["sessions"] == 2 and state["bars"] == 7
    assert state["last_bar_ts"] == "2024-03-14T14:36:00Z" and state["trade_date"] == "2024-03-14"
    assert (state["position"], state["target"], state["close"]) == (-1, -1, 18006.0)
    assert state["pnl_usd"] == 25.0 and state["return_pct"] == pytest.approx(0.25)
    assert state["pnl_today_usd"] == 25.0 - 30.0  # minus the PnL at DAY1's last bar
    assert state["drawdown_usd"] == 25.0 and state["drawdown_pct"] == pytest.approx(0.25)
    assert state["max_drawdown_usd"] == 70.0 and state["max_drawdown_pct"] == pytest.approx(0.7)
    assert (state["risk_state"], state["risk_reason"], state["order_reason"]) == (
        "REDUCING",
        REDUCING_REASON,
        "reduce only",
    )
    # last 5 bars. decision: 2 3 4 5 50 -> p50 4; p99 at rank 0.99*4 = 3.96: 5 + 0.96*(50-5) = 48.2.
    # order: NaN 2.5 3.5 NaN 10 -> 2.5 3.5 10: p50 3.5; p99 at rank 0.99*2 = 1.98: 3.5 + 0.98*(10-3.5) = 9.87.
    lat = state["latency"]
    assert (lat["window_bars"], lat["bars"]) == (5, 5)
    assert lat["decision_ms"] == {"p50": 4.0, "p99": pytest.approx(48.2), "n": 5}
    assert lat["order_ms"] == {"p50": 3.5, "p99": pytest.approx(9.87), "n": 3}
    assert state["orders"] == {"total": 3, "today": 2, "unfilled": 1}  # tuned_rule's order not counted
    assert state["fills"] == {"total": 2, "today": 1}
    assert [(e["ts"], e["state"], e["reason"]) for e in state["risk_events"]] == [
        ("2024-03-14T14:36:00Z", "REDUCING", REDUCING_REASON),
        ("2024-03-14T14:35:00Z", "ACTIVE", "resumed by test"),
    ]  # newest first, the agent's only
    series = state["pnl_series"]
    assert series["pnl_usd"] == EQUITY and (series["bars"], series["points"]) == (7, 7)
    assert series["ts_ms"] == [int(_bar(k)["bar_ts"].timestamp() * 1000) for k in range(7)]


def test_state_of_a_chosen_strategy_and_an_unknown_one(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    journal = OrderJournal(lake)
    journal.record_bars([_bar(0, strategy="tuned_rule", pnl_usd=-3.0, drawdown_usd=3.0, latency_order_ms=NAN)])
    state = monitor_state(lake)  # bars only: no risk events, orders or fills tables yet
    assert (state["strategy"], state["pnl_usd"], state["pnl_today_usd"]) == ("tuned_rule", -3.0, -3.0)
    assert state["latency"]["order_ms"] == {"p50": None, "p99": None, "n": 0}  # no order ever sent
    assert state["orders"] == {"total": 0, "today": 0, "unfilled": 0} and state["risk_events"] == []
    _journal(lake)
    rule = monitor_state(lake, "tuned_rule")
    assert (rule["strategy"], rule["bars"], rule["orders"], rule["fills"]) == (
        "tuned_rule",
        1,
        {"total": 1, "today": 1, "unfilled": 0},
        {"total": 1, "today": 1},
    )
    assert [e["state"] for e in rule["risk_events"]] == ["HALTED"]
    unknown = monitor_state(lake, "nope")
    assert unknown["status"] == "unknown_strategy" and "agent, tuned_rule" in unknown["message"]


def test_pnl_series_keeps_each_buckets_extremes() -> None:
    n = 2000
    bars = pl.DataFrame(
        {
            "bar_ts": [T0 + dt.timedelta(minutes=k) for k in range(n)],
            "pnl_usd": [math.sin(k / 50) * 100 + (-500.0 if k == 1234 else 0.0) for k in range(n)],
        }
    )
    series = pnl_series(bars, max_points=50)
    assert series["bars"] == n and series["points"] == len(series["ts_ms"]) <= 50
    assert series["ts_ms"] == sorted(set(series["ts_ms"]))  # time order, no duplicates
    kept = dict(zip(series["ts_ms"], series["pnl_usd"], strict=True))
    ts_ms = [int(t.timestamp() * 1000) for t in bars["bar_ts"]]
    for k in (0, n - 1, 1234, int(bars["pnl_usd"].arg_max())):  # ends, the dip, the peak survive
        assert kept[ts_ms[k]] == bars["pnl_usd"][k]
    # slow reference: 24 buckets of ceil(2000/24) = 84 bars, each contributing its lowest and highest bar
    size = math.ceil(n / 24)
    expected = {0, n - 1}
    for start in range(0, n, size):
        chunk = bars["pnl_usd"][start : start + size].to_list()
        expected |= {start + chunk.index(min(chunk)), start + chunk.index(max(chunk))}
    assert sorted(kept) == [ts_ms[k] for k in sorted(expected)]


def test_the_state_and_the_page_import_no_dagster() -> None:
    """Only resolving the lake (LakeResource, when the monitor starts) imports dagster."""
    code = "import sys, phoenix_rl.live.monitor_state, phoenix_assets.cli.monitor; print('dagster' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


# --- the server, as `./phoenix monitor` runs it ---------------------------------------------------------------


@contextlib.contextmanager
def _monitor(
    args: list[str], env: dict[str, str], log: Path, timeout_s: float = 90
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m phoenix_assets.cli.monitor --port 0 ...` in its own process group; yields (URL it printed,
    process)."""
    proc = start_in_own_group([sys.executable, "-m", "phoenix_assets.cli.monitor", "--port", "0", *args], env, log)
    try:
        deadline = time.monotonic() + timeout_s  # imports dagster (LakeResource): seconds on busy cores
        while not (found := re.search(r"phoenix monitor: (http://\S+)", log.read_text())):
            assert proc.poll() is None, f"monitor exited with {proc.returncode}:\n{tail(log)}"
            assert time.monotonic() < deadline, f"monitor printed no URL in {timeout_s:.0f} s:\n{tail(log)}"
            time.sleep(0.2)
        yield found.group(1), proc
    finally:
        if proc.poll() is None:
            stop_group(proc)


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.slow
def test_server_serves_the_page_and_the_state_and_stops_on_sigterm(tmp_path: Path) -> None:
    lake_dir = tmp_path / "lake"
    _journal(Lake(str(lake_dir)))
    env = _env(PHOENIX_LAKE_URI=str(lake_dir))  # no --lake: found like every Phoenix process finds it
    with _monitor([], env, tmp_path / "monitor.log") as (url, proc):
        status, body = _get(f"{url}/api/state")
        state = json.loads(body)
        assert status == 200 and state.pop("served_at").endswith("Z")
        assert state == json.loads(json.dumps(monitor_state(Lake(str(lake_dir)))))
        assert json.loads(_get(f"{url}/api/state?strategy=tuned_rule")[1])["strategy"] == "tuned_rule"
        status, page = _get(f"{url}/")
        assert status == 200 and 'data-testid="pnl-chart"' in page and "fetch(stateUrl" in page
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # self-contained: nothing from a CDN
        assert _get(f"{url}/nope")[0] == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert "phoenix monitor: stopped" in (tmp_path / "monitor.log").read_text()


# --- the page in headless Chromium -----------------------------------------------------------------------------

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the dev extra is not installed: only the browser test is skipped
    sync_playwright = None
UPDATE_MS = 15_000  # the page polls every 2 s; slack for 2 busy cores
STATE_COLOURS = {"ACTIVE": "rgb(46, 160, 67)", "REDUCING": "rgb(210, 153, 34)", "HALTED": "rgb(248, 81, 73)"}


def _usd(x: float) -> str:
    return f"-${-x:,.2f}" if x < 0 else f"${x:,.2f}"


def _expect_page_shows(page: Any, state: dict) -> None:
    """Every number of `state` as the page formats it (money 2 decimals, latency 1 decimal)."""
    by_id = page.get_by_test_id
    expect(by_id("risk-state")).to_have_text(state["risk_state"], timeout=UPDATE_MS)
    expect(by_id("last-bar")).to_have_text(state["last_bar_ts"], timeout=UPDATE_MS)
    shown = {
        "strategy": state["strategy"],
        "session-id": state["session_id"],
        "pnl": _usd(state["pnl_usd"]),
        "pnl-today": _usd(state["pnl_today_usd"]),
        "drawdown": _usd(state["drawdown_usd"]),
        "drawdown-pct": f"{state['drawdown_pct']:.2f}% of capital",
        "max-drawdown": _usd(state["max_drawdown_usd"]),
        "position": str(state["position"]),
        "risk-reason": state["risk_reason"],
        "orders": str(state["orders"]["total"]),
        "fills": str(state["fills"]["total"]),
    }
    for leg in ("decision", "order"):
        for q in ("p50", "p99"):
            shown[f"latency-{leg}-{q}"] = f"{state['latency'][f'{leg}_ms'][q]:.1f} ms"
    for test_id, text in shown.items():
        expect(by_id(test_id)).to_have_text(text, timeout=UPDATE_MS)
    expect(by_id("risk-state")).to_have_css("background-color", STATE_COLOURS[state["risk_state"]])
    expect(by_id("pnl-line")).to_have_attribute("data-points", str(state["pnl_series"]["points"]))
    expect(by_id("risk-events").locator("tr")).to_have_count(len(state["risk_events"]))


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (dev extra)")
@pytest.mark.skipif(chromium_path() is None, reason="no Chromium (/usr/bin/chromium); .ci/run installs it")
def test_page_in_chromium_shows_the_state_and_follows_the_loop(tmp_path: Path) -> None:
    """Empty lake -> "no paper session yet"; DAY1's bars appear; DAY2's, ending HALTED, replace them, no reload."""
    lake = Lake(str(tmp_path / "lake"))
    journal = OrderJournal(lake)
    with (
        _monitor(["--lake", lake.root], _env(), tmp_path / "monitor.log") as (url, _),
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(url)
            expect(page.get_by_test_id("message")).to_contain_text("no paper session yet", timeout=UPDATE_MS)
            page.evaluate("window.__sameDocument = true")  # gone if the page reloaded

            journal.record_bars([_bar(k) for k in range(3)])
            journal.record_risk_events([_event(0, "ACTIVE", "started")])
            first = monitor_state(lake)
            assert first["risk_state"] == "ACTIVE" and first["pnl_usd"] == 30.0
            _expect_page_shows(page, first)
            expect(page.get_by_test_id("latency-window")).to_have_text("p50/p99 over the last 3 bars (window 500)")
            expect(page.get_by_test_id("message")).to_be_hidden()

            halted = f"drawdown ${DRAWDOWN[4]:,.2f} >= $60.00"
            journal.record_bars(
                [_bar(3), _bar(4, risk_state="HALTED", risk_reason=halted, position=0, order_reason="kill switch")]
            )
            journal.record_risk_events([_event(4, "HALTED", halted)])
            second = monitor_state(lake)
            assert (second["risk_state"], second["pnl_today_usd"], second["max_drawdown_usd"]) == ("HALTED", -50, 70)
            _expect_page_shows(page, second)
            expect(page.get_by_test_id("risk-events").locator("tr").first).to_contain_text(halted)
            assert page.evaluate("window.__sameDocument === true"), "the page reloaded instead of polling"
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"))
            raise
        finally:
            browser.close()
    assert "phoenix monitor: stopped" in (tmp_path / "monitor.log").read_text()  # stopped by SIGINT (stop_group)
