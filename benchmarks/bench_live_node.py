"""Record-to-order latency and replay throughput of `./phoenix live`'s path on a NautilusTrader `TradingNode`
(Sandbox venue): a synthetic MNQ day of --records MBP-10 records replayed through `PaperTrader` (LiveBars,
LiveFeatures, a rule policy that flips often, NodeRiskEngine) into `NodeVenue`, with the write-ahead journal
(`phoenix_rl.live.node.wal`: fsync'd log on the decision path, Delta commits behind it) and, for comparison,
the plain Delta journal (a commit per order on the decision path).

Latencies are the loop's wall clock, per decision (from paper_bars): record -> decision (policy output) and
record -> order (journal write included, handed to the venue queue); `handoff` is the venue queue -> the node's
engines done with the order (risk engine, exec engine, Sandbox match, fill events back: record -> filled order
on the node is order + handoff). Throughput: records / wall seconds of the whole replay (books into the node
included), after the model-free warm-up of the first 2,000 records.

CPU per decision: process CPU time (all threads: polars' pool, the journal's commit thread) and the loop
thread's own CPU time of the decision's pieces (the closing record's `LiveBars.on_records`, `LiveFeatures.on_bars`
and `PaperTrader._on_bar`: policy, risk, journal write, hand-off), timed by wrapping those methods here. On a
shared machine they say what a decision costs where the wall clock says what it waited.

The live day is streamed from its DBN file in chunks of 2^20 records (a 10M-record day never sits in memory as
one array): `--records 10000000` is the issue's throughput replay. The synthetic day itself is generated in
memory first (~4 GB at 10M records); run it on an idle machine.

    python benchmarks/bench_live_node.py                      # 2M records
    python benchmarks/bench_live_node.py --records 200000     # a quick look
    python benchmarks/bench_live_node.py --records 10000000   # the issue's 10M-record throughput replay
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from table import print_table  # noqa: E402

if TYPE_CHECKING:
    from phoenix_rl.live.trader import PaperTrader

PREVIOUS, LIVE = dt.date(2024, 3, 12), dt.date(2024, 3, 13)


def follow_ofi(obs: dict) -> float:
    return 1.0 if obs["window"][-1, 0] > 0 else -1.0


def journal_writes(tmp: Path, n: int = 300) -> dict[str, tuple[float, float]]:
    """p50/p99 ms of one `record_order` (the journal's share of record -> order): Delta commit vs the log."""
    import numpy as np

    from phoenix_assets.lib.io.lake import Lake
    from phoenix_rl.live.journal import OrderJournal
    from phoenix_rl.live.node.wal import WalJournal

    out = {}
    for kind in ("delta", "wal"):
        lake = Lake(str(tmp / f"journal-{kind}"))
        journal = WalJournal(lake, "bench") if kind == "wal" else OrderJournal(lake)
        t0 = dt.datetime(2024, 3, 13, tzinfo=dt.UTC)
        times = []
        for i in range(n):
            row = {
                "client_order_id": f"bench:{i}:decision",
                "strategy": "bench",
                "bar_ts": t0 + dt.timedelta(minutes=i),
                "instrument_id": 1,
                "quantity": 1 if i % 2 else -1,
                "reason": "policy",
                "created_ts": t0,
            }
            began = time.perf_counter_ns()
            journal.record_order(row)
            times.append((time.perf_counter_ns() - began) / 1e6)
            if i % 60 == 59:
                journal.compact()  # the trader compacts with every flush
        if isinstance(journal, WalJournal):
            journal.close()
        out[kind] = (float(np.percentile(times, 50)), float(np.percentile(times, 99)))
    return out


def _chain(head: object, rest: Iterator) -> Iterator:
    yield head
    yield from rest


class _DecisionCpu:
    """CPU time of each decision's pieces, by wrapping the trader's bound methods (the trader is not changed):
    the record call that closes the bar (`bars`), `LiveFeatures.on_bars` (`features`), and `_on_bar` (`decide`:
    policy, risk, journal write, hand-off) for every bar it returned; `thread` is the loop thread's own time."""

    PIECES = ("bars", "features", "decide")

    def __init__(self, trader: PaperTrader) -> None:
        self.process_ms: list[float] = []
        self.thread_ms: list[float] = []
        self.pieces_ms: dict[str, list[float]] = {k: [] for k in self.PIECES}
        self._pending: dict[str, tuple[int, int]] = {}  # this minute's closing call and features, charged to its bar
        trader.bars.on_records = self._wrap(trader.bars.on_records, "bars")
        trader.features.on_bars = self._wrap(trader.features.on_bars, "features")
        trader._on_bar = self._wrap(trader._on_bar, "decide")

    def _wrap(self, fn: Callable, piece: str) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            p0, t0 = time.process_time_ns(), time.thread_time_ns()
            out = fn(*args, **kwargs)
            spent = (time.process_time_ns() - p0, time.thread_time_ns() - t0)
            if piece == "bars":
                if out.height:  # a closing call; the others are the minute's remaining records
                    self._pending = {"bars": spent}
            elif piece == "features":
                self._pending["features"] = spent
            else:  # the minute's first bar carries the closing call's and the features' time
                self._pending["decide"] = spent
                self.process_ms.append(sum(p for p, _ in self._pending.values()) / 1e6)
                self.thread_ms.append(sum(t for _, t in self._pending.values()) / 1e6)
                for k in self.PIECES:
                    self.pieces_ms[k].append(self._pending.get(k, (0, 0))[1] / 1e6)
                self._pending = {}
            return out

        return timed


def replay(records: int, journal_kind: str, tmp: Path, chunk: int) -> dict:
    import databento
    import numpy as np

    from feature_specs import load_catalog
    from phoenix_assets.lib.features.hmm_regimes import fit_regime_model
    from phoenix_assets.lib.io.lake import Lake
    from phoenix_assets.lib.market.bars import ofi_bars_1m, seconds_frame
    from phoenix_assets.lib.market.book_kernel import BookArrays, arrays_from_dbn, book_ofi_1s
    from phoenix_assets.lib.market.live_bars import LiveBars, LiveFeatures
    from phoenix_assets.lib.synthetic.market import SyntheticMarketConfig, write_day
    from phoenix_rl.config import EnvConfig
    from phoenix_rl.env.fills import FillConfig
    from phoenix_rl.live.journal import OrderJournal
    from phoenix_rl.live.node.config import LiveSettings
    from phoenix_rl.live.node.runner import LiveSession, NodeVenue, build_node
    from phoenix_rl.live.node.strategy import NodeRiskEngine
    from phoenix_rl.live.node.wal import WalJournal
    from phoenix_rl.live.risk import RiskConfig
    from phoenix_rl.live.trader import PaperTrader

    market = SyntheticMarketConfig(records_per_day=records)

    def load(day: dt.date) -> Iterator[BookArrays]:
        """The day's records in chunks of 2^20 (a 10M-record day is ~4 GB as one array)."""
        path = tmp / "landing" / f"{day}.dbn.zst"
        if not path.exists():
            path = write_day(day, tmp / "landing", market)
        for chunk in databento.DBNStore.from_file(path).to_ndarray(count=1 << 20):
            yield arrays_from_dbn(chunk)

    live = load(LIVE)
    first = next(live)
    bars = ofi_bars_1m(seconds_frame(book_ofi_1s(load(PREVIOUS))), symbol="MNQ.v.0")
    catalog = load_catalog()
    model = fit_regime_model(bars, catalog.hmm, PREVIOUS, PREVIOUS)
    cfg = EnvConfig(feature_columns=tuple(catalog.sets["phase2_ofi"].columns), lookback=4, trade_only_warm=False)
    fill = FillConfig.from_env(cfg)
    lake = Lake(str(tmp / f"lake-{journal_kind}"))
    journal = WalJournal(lake, "bench") if journal_kind == "wal" else OrderJournal(lake)
    settings = LiveSettings()
    node, strategy = build_node(settings, strategy="bench", capital_usd=10_000.0, fill=fill, log_level="ERROR")
    venue = NodeVenue(node, strategy, latency_ns=fill.latency_ns)
    venue.start(np.unique(first.instrument_id).tolist())  # one contract: the bench's days have no roll
    risk = NodeRiskEngine(RiskConfig(max_position=1, max_data_age_s=120.0, max_feed_gap_s=900.0, latency_budget_ms=6e4))
    trader = PaperTrader(
        policy=follow_ofi,
        env_config=cfg,
        bars=LiveBars(symbol="MNQ.v.0"),
        features=LiveFeatures(bars, catalog, model),
        venue=venue,  # type: ignore[arg-type]
        risk=risk,
        journal=journal,
        strategy="bench",
        session_id="bench",
        capital_usd=10_000.0,
    )
    session = LiveSession(trader, venue, settings, journal)
    cpu = _DecisionCpu(trader)
    os.sync()  # the generated days' writeback (270 MB at 10M) would compete with the journal's syncs: live has none
    session.on_records(first.slice(0, 2_000))
    n, began, load_before = 2_000, time.perf_counter(), os.getloadavg()
    for part in _chain(first.slice(2_000, len(first.ts_recv)), live):
        for start in range(0, len(part.ts_recv), chunk):
            session.on_records(part.slice(start, min(start + chunk, len(part.ts_recv))))
        n += len(part.ts_recv)
    session.close()
    wall = time.perf_counter() - began
    load_after = os.getloadavg()
    venue.close()
    if isinstance(journal, WalJournal):
        journal.close()
    paper = lake.scan("paper_bars").collect()
    orders = lake.scan("paper_orders").collect().height
    dec = paper["latency_decision_ms"].drop_nans().drop_nulls().to_numpy()
    order = paper["latency_order_ms"].drop_nans().drop_nulls().to_numpy()
    hand = np.asarray(venue.handoff_ms)
    sent = np.asarray(venue.node_ms)
    pct = lambda v, q: float(np.percentile(v, q)) if len(v) else float("nan")  # noqa: E731
    return {
        "journal": journal_kind,
        "records": n,
        "bars": paper.height,
        "orders": orders,
        "decision": (pct(dec, 50), pct(dec, 99)),
        "order": (pct(order, 50), pct(order, 99)),
        "handoff": (pct(hand, 50), pct(hand, 99)),
        "node": (pct(sent, 50), pct(sent, 99)),
        "records_per_s": (n - 2_000) / wall,
        "wall_s": wall,
        "cpu_process": (pct(cpu.process_ms, 50), pct(cpu.process_ms, 99)),
        "cpu_thread": (pct(cpu.thread_ms, 50), pct(cpu.thread_ms, 99)),
        "load": (load_before, load_after),
        "pieces": {k: (pct(v, 50), pct(v, 99)) for k, v in cpu.pieces_ms.items()},
        "faults": len(session.faults),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--journals", nargs="+", default=["wal"], choices=["wal", "delta"])
    parser.add_argument("--chunk", type=int, default=65_536, help="records per on_records call (replay: 65,536)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        writes = journal_writes(Path(d))
        results = [replay(args.records, kind, Path(d), args.chunk) for kind in args.journals]
    print("journal write per order (300 orders, compaction every 60): p50 / p99")
    print_table(["journal", "record_order"], [[k, "{:.2f} / {:.2f} ms".format(*v)] for k, v in writes.items()])
    print()
    print(f"{args.records:,} MBP-10 records (synthetic MNQ day {LIVE}), TradingNode + Sandbox, rule policy, p50 / p99")
    print_table(
        [
            "journal",
            "bars",
            "orders",
            "rec->decision",
            "rec->order",
            "CPU/decision (process)",
            "CPU/decision (thread)",
            "node send",
            "queue->node done",
            "records/s",
            "load avg (1 min) before/after",
        ],
        [
            [
                r["journal"],
                f"{r['bars']}",
                f"{r['orders']}",
                "{:.2f} / {:.2f} ms".format(*r["decision"]),
                "{:.2f} / {:.2f} ms".format(*r["order"]),
                "{:.2f} / {:.2f} ms".format(*r["cpu_process"]),
                "{:.2f} / {:.2f} ms".format(*r["cpu_thread"]),
                "{:.2f} / {:.2f} ms".format(*r["node"]),
                "{:.2f} / {:.2f} ms".format(*r["handoff"]),
                f"{r['records_per_s']:,.0f} ({r['wall_s']:.0f} s)",
                "{:.1f} / {:.1f}".format(r["load"][0][0], r["load"][1][0]),
            ]
            for r in results
        ],
    )
    _print_pieces(results)


def _print_pieces(results: list[dict]) -> None:
    print()
    print("loop-thread CPU per decision by piece, p50 / p99 (bars: LiveBars' closing call; decide: _on_bar)")
    print_table(
        ["journal", *_DecisionCpu.PIECES],
        [[r["journal"], *("{:.2f} / {:.2f} ms".format(*r["pieces"][k]) for k in _DecisionCpu.PIECES)] for r in results],
    )


if __name__ == "__main__":
    main()
