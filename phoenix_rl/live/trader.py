"""Paper trading: MBP-10 records in arrival order -> the batch path's bars and features -> the policy at each
bar close -> Phoenix's risk engine -> the order journal -> a NautilusTrader venue -> fills, equity, the track
record in Delta.

Timeline of one bar (the env's, `phoenix_rl.env.trading_env`): minute m closes when the first record of minute m+1
arrives (`LiveBars`); at that moment the feature row of bar m is computed (`LiveFeatures`, bit for bit the
batch `features_1m`), the policy sees the same observation the env would build (`observation_rows`,
`agent_state`, the same forced-flat rules with the newest bar not being the data's end), the target passes
`RiskEngine.check_order` against the book at that record, is journaled (Delta merge keyed on the client order
id) and only then submitted; the venue fills it at the next tradeable book, never at bar m's close.

Latency is wall-clock from the bar-closing record's arrival in `on_records` to the decision (policy output)
and to the order being handed to the venue (journal commit included): the two legs of record -> decision ->
order. A replay runs faster than real time; the latencies are the loop's own, not the replay's clock.

PnL (since the strategy started, `pnl_usd`) is marked at each bar close from the venue's fills: (cash + position x
close) x point value - fees (the fill model's fees + slippage).

Resuming a crashed session (`journaled`): the day is replayed from its first record, so bars and features are
rebuilt exactly, but up to the point the journal speaks for (`JournaledDay.until_ns`) nothing is decided
again: each bar sends the order journaled for it (or none), the kill switch's order goes out at its journaled
moment, and the journaled risk events set the state as the replay passes them. Orders and fills come first,
bars second: the bar rows are re-derived from the replayed orders and the ones stored are kept. At that point
the position plus the orders in flight must equal the journaled orders' sum, and the risk state becomes the
strategy's latest (`resume_state`: a person may have lifted a halt since); then the policy decides again.

Failure: an exception in the loop (the journal, the policy, the venue) or in the caller's source (`fail_safe`)
halts and flattens at the last book seen before it propagates; the kill switch's halt is journaled before its
order is sent, so a crash right after it cannot lift it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.features.quality import check_drift
from phoenix_assets.lib.market.book_kernel import BookArrays
from phoenix_assets.lib.market.live_bars import NS_PER_MINUTE, LiveBars, LiveFeatures
from phoenix_assets.lib.schema import F_LAST, PRICE_SCALE, UNDEF_PRICE
from phoenix_rl.config import EnvConfig
from phoenix_rl.env.trading_env import agent_state, forced_flat, observation_rows, target_contracts
from phoenix_rl.live.journal import JournaledDay, OrderJournal, client_order_id
from phoenix_rl.live.nautilus.venue import PaperVenue, VenueFill
from phoenix_rl.live.risk import OrderDecision, RiskEngine

__all__ = ["PaperTrader"]

Policy = Callable[[dict[str, np.ndarray]], Any]


def _session_minute(ts: str) -> pl.Expr:
    """Minutes since the 17:00 America/Chicago open (0..1379 in continuous trading)."""
    ct = pl.col(ts).dt.convert_time_zone("America/Chicago")
    return ((ct.dt.hour().cast(pl.Int32) * 60 + ct.dt.minute() - 17 * 60) % 1440).alias("_session_minute")


def _utc(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC)


class PaperTrader:
    """One strategy's live loop (module doc). Feed `on_records` in arrival order, then `close()`."""

    def __init__(
        self,
        *,
        policy: Policy,
        env_config: EnvConfig,
        bars: LiveBars,
        features: LiveFeatures,
        venue: PaperVenue,
        risk: RiskEngine,
        journal: OrderJournal,
        strategy: str,
        session_id: str,
        capital_usd: float,
        pnl_start_usd: float = 0.0,
        peak_start_usd: float = 0.0,
        flush_every_bars: int = 60,
        drift_reference: pl.DataFrame | None = None,
        drift_every_bars: int = 60,
        drift_psi_limit: float = 0.25,
        journaled: JournaledDay | None = None,
        resume_state: tuple[str, str] | None = None,
        warmup_rows: pl.DataFrame | None = None,
    ) -> None:
        """`warmup_rows`: the feature rows (features_1m) of the bars before the stream's first, e.g. the previous
        trade date's tail: the first observations see them, as the backtest's `history` does (issue 24 item 12),
        instead of zeros."""
        if risk.config.point_value != env_config.point_value:
            raise ValueError(
                f"PaperTrader: the risk engine's point_value {risk.config.point_value} differs from the env's "
                f"{env_config.point_value}: build its RiskConfig with point_value=env_config.point_value"
            )
        self.policy, self.cfg = policy, env_config
        self.bars, self.features, self.venue, self.risk, self.journal = bars, features, venue, risk, journal
        self.strategy, self.session_id, self.capital = strategy, session_id, capital_usd
        self.flush_every = flush_every_bars
        self.positions: dict[int, int] = {}  # filled contracts per instrument (a roll changes the instrument)
        self._closes: dict[int, float] = {}  # each instrument's newest bar close: its position is marked there
        self._entry = math.nan
        self._held = 0
        self._cash_points = 0.0  # -sum(quantity x price) of fills
        self._fees = 0.0
        self._equity_start = pnl_start_usd  # a later day's trader carries the strategy's PnL so far
        self._peak = peak_start_usd
        self._tail = pl.DataFrame()  # the last lookback + 1 feature rows: enough for the window and the gap rule
        self._warmup = None if warmup_rows is None or warmup_rows.is_empty() else warmup_rows.sort("ts")
        self._trade_date: dt.date | None = None
        self._instrument = 0  # of the newest bar: orders are for it
        self._last_ts = 0  # ts_recv of the newest record (the kill switch's and resume's time)
        self._last_close = math.nan  # the newest bar close (the masked pre-open has none)
        self._last_book: BookArrays | None = None  # the newest tradeable record: the end of stream fills there
        self._bar_rows: list[dict] = []
        self._events_seen = len(risk.events)  # an engine of earlier days (one per strategy): theirs are journaled
        self.fills: list[VenueFill] = []
        # drift: the day's observed feature rows against the model's training rows (PSI, features_1m's check)
        self._drift_columns = [*env_config.feature_columns, "warm"]
        self._drift_reference = (
            None if drift_reference is None else drift_reference.select(*self._drift_columns, _session_minute("ts"))
        )
        self._drift_every, self._drift_limit = drift_every_bars, drift_psi_limit
        self._today: list[pl.DataFrame] = []
        self._in_flight = 0  # contracts sent and not filled yet (a kill switch between send and fill)
        self._in_flight_instrument = 0  # the contract `_in_flight` counts (the traded one)
        self.resent = 0  # journaled before a restart: sent to the simulated venue again, not journaled twice
        # a resumed crash: what the journal decided (module doc); None once the replay has caught up
        self._journaled = journaled if journaled is not None and not journaled.empty else None
        self._resume_state = resume_state
        if self._journaled is not None:
            orders = self._journaled.orders
            decided = orders.filter(pl.col("client_order_id").str.ends_with(":decision"))
            self._journaled_decisions = dict(zip(decided["client_order_id"], decided["quantity"], strict=True))
            other = orders.filter(~pl.col("client_order_id").str.ends_with(":decision"))
            # the journal keeps microseconds: a moment "after record T" is after every record of T's microsecond
            self._journaled_other = [
                (cal.epoch_ns(t) + 999, coid, int(q), r)
                for t, coid, q, r in other.select("bar_ts", "client_order_id", "quantity", "reason").iter_rows()
            ]
            self._journaled_events = [
                (cal.epoch_ns(t) + 999, st, r)
                for t, st, r in self._journaled.events.select("ts", "state", "reason").iter_rows()
            ]
            self._until_ns = self._journaled.until_ns()
        self._failed = False

    # --- the stream -------------------------------------------------------------------------------------

    def on_records(self, arrays: BookArrays) -> None:
        """Records in arrival order, any chunk size: each minute's first record closes the bars before it."""
        n = len(arrays.ts_recv)
        if n == 0:
            return
        try:
            ts = arrays.ts_recv.astype(np.int64)
            cuts = {0, n, *(np.flatnonzero(np.diff(ts // NS_PER_MINUTE)) + 1).tolist()}
            if self._journaled is not None:  # a journaled kill order goes out right after its moment's record
                cuts |= {int(np.searchsorted(ts, t, side="right")) for t, *_ in self._journaled_other}
            for start, stop in itertools.pairwise(sorted(c for c in cuts if 0 <= c <= n)):
                if stop > start:
                    self._on_minute_piece(arrays.slice(start, stop))
        except Exception as exc:
            self.fail_safe(exc)
            raise

    def fail_safe(self, error: BaseException) -> None:
        """Something failed mid-session (this loop, the journal, the caller's feed): HALTED and flat at the last
        book seen, journaling what still can be journaled (what could not is noted on `error`). The caller
        re-raises: the process never just dies holding a position."""
        if self._failed:
            return
        self._failed = True
        ts, reason = self._last_ts, f"{type(error).__name__}: {error}".splitlines()[0][:200]
        quantity = self.risk.kill_switch(ts, self.position + self._in_flight, f"fail-safe ({reason})").quantity
        try:
            self._journal_events()
        except Exception as exc:
            error.add_note(f"fail-safe: the halt could not be journaled ({exc})")
        if quantity:
            coid = client_order_id(self.strategy, _utc(ts), "failsafe")
            try:
                self._journal_order(coid, _utc(ts), quantity, "fail-safe: flatten")
            except Exception as exc:
                error.add_note(f"fail-safe: the flattening order {coid} could not be journaled ({exc})")
            self._in_flight += quantity
            self.venue.submit(self._instrument, quantity, coid)
        if self._last_book is not None:
            self._on_fills(self.venue.on_records(self._book_after_latency()), error=error)
        if self.position:
            error.add_note(f"fail-safe: {self.position} contracts could not be flattened (no book to fill at)")

    def close(self) -> None:
        """End of the stream: the open bar closes, the position is flattened at the last book (its prices, the
        venue's latency after it: `_book_after_latency`), all is flushed."""
        if self._failed:
            return
        received = time.perf_counter_ns()
        bars = self.bars.close()
        if bars.height:
            self._on_bars(bars, received, self._last_ts, final=True)
        if self._last_book is not None:  # the last decision's order fills at the last book seen
            self._on_fills(self.venue.on_records(self._book_after_latency()))
        self._caught_up()  # a journal that spoke for the whole day: the checks still run
        self.flush()

    def _book_after_latency(self) -> BookArrays:
        """The last book seen, stamped `venue.latency_ns` later: the end of the stream has no later book, and an
        order sent at the last one reaches the venue only then (the fill model's latency). Fed once more, it
        fills every order still in flight at the last prices, at decision + latency, so a day always ends
        flat with its fills journaled; with latency 0 it is the last book again."""
        book = self._last_book
        assert book is not None
        later = book.ts_recv.dtype.type(max(int(self.venue.latency_ns), 0))  # the array's own type: int64 + uint64
        return book._replace(ts_recv=book.ts_recv + later)  # would be float64 in numpy

    @property
    def position(self) -> int:
        """Contracts held in the instrument now traded (the newest bar's); other contracts' are in `positions`."""
        return self.positions.get(self._instrument, 0)

    @property
    def instrument(self) -> int:
        """The instrument now traded (the newest bar's); 0 before the first bar."""
        return self._instrument

    @property
    def in_flight(self) -> int:
        """Contracts sent and not filled yet."""
        return self._in_flight

    def orders_sent(self, contracts: int) -> None:
        """An execution layer (the TradingNode runner) sent `contracts` on the strategy's behalf (e.g. a kill
        switch's closing orders): they count as in flight until they fill."""
        self._in_flight += contracts

    def orders_void(self, contracts: int) -> None:
        """`contracts` in flight will never fill (rejected, cancelled, dropped before sending)."""
        self._in_flight -= contracts

    def journal_risk_events(self) -> None:
        """Journal the risk engine's state changes now (one commit), e.g. a fault recorded by the node runner."""
        self._journal_events()

    @property
    def pnl_usd(self) -> float:
        """The strategy's PnL since it started, marked at the last bar close (flat at the end of a day: realised)."""
        return self._equity(self._last_close)

    @property
    def peak_usd(self) -> float:
        return self._peak

    def kill_switch(self, who: str) -> None:
        """Halt and flatten now, whatever the state, book or order rate (the order goes out at the next book).
        The halt is journaled before the order: a crash right after cannot lift it."""
        ts = self._last_ts
        decision = self.risk.kill_switch(ts, self.position + self._in_flight, who)  # an unfilled order too
        self._journal_events()
        if decision.quantity:
            self._send(ts, _utc(ts), decision.quantity, "kill", decision.reason)

    def resume(self, who: str) -> None:
        """A person lifts REDUCING/HALTED (recorded with who did it)."""
        self.risk.resume(self._last_ts, who)

    def flush(self, compact: bool = True) -> None:
        """Write the buffered bars and the new risk events to the journal (one Delta commit each), then compact
        the journal (its merges read every file: latency would grow with every order sent)."""
        self.journal.record_bars(self._bar_rows)
        self._bar_rows = []
        self._journal_events()
        if compact:
            self.journal.compact()

    def _journal_events(self) -> None:
        """The risk engine's state changes not journaled yet (one commit)."""
        events = self.risk.events[self._events_seen :]
        self.journal.record_risk_events(
            [
                {
                    "session_id": self.session_id,
                    "strategy": self.strategy,
                    "ts": _utc(ts),
                    "trade_date": self._trade_date or _utc(ts).date(),
                    "state": str(state),
                    "reason": reason,
                }
                for ts, state, reason in events
            ]
        )
        self._events_seen += len(events)

    # --- one minute -------------------------------------------------------------------------------------

    def _on_minute_piece(self, piece: BookArrays) -> None:
        received = time.perf_counter_ns()
        head, rest = piece.slice(0, 1), piece.slice(1, len(piece.ts_recv))
        now = int(piece.ts_recv[0])
        if self._journaled is not None:
            self._replay_journal(before_ns=now)
        self._books(head)
        bars = self.bars.on_records(head)  # a new minute's first record closes the minutes before it
        if bars.height:
            self._on_bars(bars, received, now, final=False)
        self._on_fills(self.venue.on_records(piece))  # orders just sent fill at the first tradeable book
        if len(rest.ts_recv):
            self.bars.on_records(rest)
            self._books(rest)
        self._last_ts = int(piece.ts_recv[-1])
        last = np.flatnonzero((piece.flags & F_LAST) != 0)
        if len(last):
            self._last_book = piece.slice(int(last[-1]), int(last[-1]) + 1)

    def _books(self, arrays: BookArrays) -> None:
        """Tell the risk engine about the tradeable books (vectorised: gaps, then the newest book's state)."""
        last = np.flatnonzero((arrays.flags & F_LAST) != 0)
        if not len(last):
            return
        ts = arrays.ts_recv[last].astype(np.int64)
        bid, ask = arrays.bid_px[last, 0], arrays.ask_px[last, 0]
        bid = np.where(bid == UNDEF_PRICE, np.nan, bid / PRICE_SCALE)
        ask = np.where(ask == UNDEF_PRICE, np.nan, ask / PRICE_SCALE)
        day = cal.trade_date_of(int(ts[0]))
        in_session = cal.in_continuous_session(ts, day) if day else np.zeros(len(ts), dtype=bool)
        self.risk.on_books(ts, bid, ask, in_session)

    def _on_bars(self, bars: pl.DataFrame, received: int, now: int, *, final: bool) -> None:
        rows = self.features.on_bars(bars)
        for bar in bars.iter_rows(named=True):  # one bar per minute; several only after a silent minute
            self._on_bar(bar, rows, received, now, final)
        if len(self._bar_rows) >= self.flush_every:
            self.flush()

    def _on_bar(self, bar: dict, rows: pl.DataFrame, received: int, now: int, final: bool) -> None:
        bar_ts: dt.datetime = bar["ts"]
        trade_date: dt.date = bar["trade_date"]
        if self._instrument and int(bar["instrument_id"]) != self._instrument:
            self._roll(now, bar_ts, int(bar["instrument_id"]))
        self._instrument = int(bar["instrument_id"])
        self._in_flight_instrument = self._in_flight_instrument or self._instrument
        if bar["close"] is not None and math.isfinite(bar["close"]):  # the masked (crossed) pre-open has none
            self._last_close = float(bar["close"])
            self._closes[self._instrument] = self._last_close
        close = self._last_close
        if self._trade_date != trade_date:  # the first bar too: the risk engine may come from an earlier day
            self.risk.reset_day(now, self._equity(close))
            self._trade_date = trade_date
            self._today = []
        equity = self._equity(close)
        self._peak = max(self._peak, equity)
        self.risk.on_equity(now, equity)
        row = rows if rows.height == 1 and rows["ts"][0] == bar_ts else rows.filter(pl.col("ts") == bar_ts)
        action, target, reason = math.nan, 0, ""
        if row.height:
            if not self._tail.height and self._warmup is not None:  # the bars before the stream (docstring)
                before = self._warmup.filter(pl.col("ts") < row["ts"][0]).tail(self.cfg.lookback)
                self._tail = before.select([c for c in row.columns if c in before.columns])
            if not self._tail.height:
                self._tail = row
            elif self._tail.schema == row.schema:  # every bar after the first: a plain append, no query engine
                self._tail = pl.concat([self._tail, row]).tail(self.cfg.lookback + 1)
            else:  # the warm-up's rows (stored, maybe other dtypes or columns) in the stream's schema
                joined = pl.concat([self._tail, row], how="diagonal_relaxed").select(row.columns)
                self._tail = joined.cast(dict(row.schema)).tail(self.cfg.lookback + 1)
            obs_rows, warm = observation_rows(self._tail, self.cfg)
            flat = bool(forced_flat(self._tail, warm, self.cfg, data_ends=final)[0][-1])
            window = np.zeros((self.cfg.lookback, obs_rows.shape[1]), dtype=np.float32)
            window[-len(obs_rows[-self.cfg.lookback :]) :] = obs_rows[-self.cfg.lookback :]
            obs = {"window": window, "agent": agent_state(self.position, self._entry, close, self._held, self.cfg)}
            action = float(np.asarray(self.policy(obs), dtype=np.float64).reshape(-1)[0])
            target = 0 if flat else int(target_contracts(action, self.cfg))
        # outside the continuous session (no feature row) the target is flat: the env never holds over a halt
        decided = time.perf_counter_ns()
        holding = self.position + self._in_flight
        if self._journaled is not None and cal.epoch_ns(bar_ts) + NS_PER_MINUTE > self._until_ns:
            self._caught_up()  # a bar the crashed session never decided: the policy's again
        if self._journaled is not None:  # decided before the crash: the journal's order, not a new decision
            decision = OrderDecision(True, self._journaled_decisions.get(client_order_id(self.strategy, bar_ts), 0))
        else:
            decision = self.risk.check_order(now, holding, target)
        sent_ms = math.nan
        if decision.quantity:
            self._send(now, bar_ts, decision.quantity, "decision", "policy")
            sent_ms = (time.perf_counter_ns() - received) / 1e6
            if self._journaled is None:
                self.risk.on_latency(now, sent_ms)
        if not decision.accepted:
            reason = decision.reason
        expected = holding + decision.quantity
        self._held = 0 if expected == 0 else (self._held + 1 if expected * holding > 0 else 1)
        self._bar_rows.append(
            {
                "session_id": self.session_id,
                "strategy": self.strategy,
                "bar_ts": bar_ts,
                "trade_date": trade_date,
                "instrument_id": int(bar["instrument_id"]),
                "close": close,
                "action": action,
                "target": target,
                "position": expected,
                "capital_usd": self.capital,
                "pnl_usd": equity,
                "drawdown_usd": self._peak - equity,
                "risk_state": str(self.risk.state),
                "risk_reason": self.risk.reason if self.risk.state != "ACTIVE" else "",
                "order_reason": reason,
                "latency_decision_ms": (decided - received) / 1e6,
                "latency_order_ms": sent_ms,
            }
        )
        if row.height:  # after the order is out: PSI over the day so far is not on the decision's path
            self._watch_drift(row, now)

    def _watch_drift(self, row: pl.DataFrame, now: int) -> None:
        """Every `drift_every_bars` bars: PSI of today's features against the training rows; a drifted
        feature allows only exits (`RiskEngine.on_drift`) from the next bar's decision on."""
        if self._drift_reference is None:
            return
        self._today.append(row.select(*self._drift_columns, _session_minute("ts")))
        if len(self._today) % self._drift_every:
            return
        today = pl.concat(self._today)
        lo, hi = today["_session_minute"].min(), today["_session_minute"].max()
        # the same minutes of the session in the training rows: intraday seasonality (the quiet open, the
        # busy cash session) is not drift
        reference = self._drift_reference.filter(pl.col("_session_minute").is_between(lo, hi))
        outcome = check_drift(today.drop("_session_minute"), reference.drop("_session_minute"), self._drift_limit)
        if not outcome.passed:
            psi = outcome.metadata["psi"]
            worst = ", ".join(f"{c} PSI {psi[c]:.2f}" for c in outcome.metadata["drifted"][:3])
            self.risk.on_drift(now, f"{worst} (> {self._drift_limit} vs training)")

    # --- orders and fills -------------------------------------------------------------------------------

    def _roll(self, now: int, bar_ts: dt.datetime, new: int) -> None:
        """The feed moved to another contract. The roll calendar's forced flat (`forced_flat`, the session close
        of the roll eve) leaves nothing in the old one; whatever is left (a data hole over that close, a feed
        rolling off the calendar) gets a flattening order for the old contract, journaled with its reason
        (Nautilus fills it against that contract's book: its next one where the feed still carries it, else
        its last one, a stale price the journal's reason flags), and the new contract starts
        from its own position: positions are counted per instrument."""
        old = self._instrument
        left = self.positions.get(old, 0) + (self._in_flight if self._in_flight_instrument == old else 0)
        self._in_flight_instrument = new
        self._in_flight = 0
        if left:
            reason = f"roll: flatten contract {old} before trading {new}"
            self._send(now, bar_ts, -left, "roll", reason, instrument=old)
            self._in_flight = 0  # in flight on the old contract: the new one's count starts at 0
        self._entry, self._held = math.nan, 0

    def _send(
        self, now: int, bar_ts: dt.datetime, quantity: int, purpose: str, reason: str, instrument: int | None = None
    ) -> None:
        iid = self._instrument if instrument is None else instrument
        coid = client_order_id(self.strategy, bar_ts, purpose)
        new = self._journal_order(coid, bar_ts, quantity, reason, iid)
        self.resent += not new  # a replay after a crash: the simulated venue needs the order again
        self._in_flight += int(quantity)  # before the send: a kill switch landing in between counts it
        self.venue.submit(iid, int(quantity), coid)

    def _journal_order(
        self, coid: str, bar_ts: dt.datetime, quantity: int, reason: str, instrument: int | None = None
    ) -> bool:
        return self.journal.record_order(
            {
                "client_order_id": coid,
                "strategy": self.strategy,
                "bar_ts": bar_ts,
                "instrument_id": self._instrument if instrument is None else instrument,
                "quantity": int(quantity),
                "reason": reason,
                "created_ts": dt.datetime.now(dt.UTC),
            }
        )

    # --- resuming a crashed session -----------------------------------------------------------------------

    def _replay_journal(self, before_ns: int) -> None:
        """The journaled risk events and kill/fail-safe orders of moments before this record, in data time."""
        while self._journaled_events and self._journaled_events[0][0] < before_ns:
            _, state, reason = self._journaled_events.pop(0)
            self.risk.restore(state, reason)
        while self._journaled_other and self._journaled_other[0][0] < before_ns:
            _, coid, quantity, _ = self._journaled_other.pop(0)
            self.resent += 1
            self._in_flight += quantity
            self.venue.submit(self._instrument, quantity, coid)

    def _caught_up(self) -> None:
        """The replay reached the end of what the journal decided: check that the position the replay rebuilt
        is the journal's, take on the strategy's latest risk state, and decide with the policy from here."""
        if self._journaled is None:
            return
        self._replay_journal(before_ns=self._until_ns + 1)
        journaled = int(self._journaled.orders["quantity"].sum())
        if self.position + self._in_flight != journaled:
            raise RuntimeError(
                f"resume of {self.strategy!r} on {self._trade_date}: the replayed position "
                f"{self.position} (+{self._in_flight} in flight) is not the journaled orders' {journaled}"
            )
        if self._resume_state is not None:
            self.risk.restore(*self._resume_state)
        self._journaled = None

    def on_fills(self, fills: list[VenueFill]) -> None:
        """Fills a venue reported between record slices (the live node's step while it reacts to faults)."""
        self._on_fills(fills)

    def _on_fills(self, fills: list[VenueFill], error: BaseException | None = None) -> None:
        """Fills change the position first, then are journaled; in the fail-safe (`error`) a fill that cannot be
        journaled is noted on the error instead."""
        for f in fills:
            held = self.positions.get(f.instrument_id, 0)
            if f.instrument_id == self._instrument:  # the entry the policy sees: the traded contract's
                if held == 0 or (held > 0) != (f.quantity > 0):
                    self._entry = f.price if abs(f.quantity) > abs(held) else self._entry
                elif held + f.quantity != 0:
                    self._entry = (self._entry * abs(held) + f.price * abs(f.quantity)) / abs(held + f.quantity)
                self._entry = math.nan if held + f.quantity == 0 else self._entry
            self.positions[f.instrument_id] = held + f.quantity
            if f.instrument_id == self._in_flight_instrument:
                self._in_flight -= f.quantity
            self._cash_points -= f.quantity * f.price
            self._fees += f.commission_usd
            self.fills.append(f)
            row = {
                "trade_id": f"{f.client_order_id}:{f.trade_id}",  # stable across a replayed restart
                "client_order_id": f.client_order_id,
                "instrument_id": f.instrument_id,
                "quantity": f.quantity,
                "price": f.price,
                "commission_usd": f.commission_usd,
                "ts": _utc(f.ts_ns),
            }
            if error is None:
                self.journal.record_fill(row)
                continue
            try:
                self.journal.record_fill(row)
            except Exception as exc:
                error.add_note(f"fail-safe: fill {row['trade_id']} ({f.quantity:+d} @ {f.price}) not journaled: {exc}")

    def _equity(self, close: float) -> float:
        """PnL since the start: each instrument's position marked at its own newest close (`close` for the
        traded one), never one contract's position at another's price."""
        marked = sum(
            q * (close if iid == self._instrument else self._closes.get(iid, math.nan))
            for iid, q in self.positions.items()
            if q
        )
        return self._equity_start + (self._cash_points + marked) * self.cfg.point_value - self._fees
