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

    python benchmarks/bench_live_node.py                    # 2M records, ~5 min on 2 cores
    python benchmarks/bench_live_node.py --records 200000   # a quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from table import print_table  # noqa: E402

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


def replay(records: int, journal_kind: str, tmp: Path, chunk: int) -> dict:
    import databento
    import numpy as np

    from feature_specs import load_catalog
    from phoenix_assets.lib.features.hmm_regimes import fit_regime_model
    from phoenix_assets.lib.io.lake import Lake
    from phoenix_assets.lib.market.bars import ofi_bars_1m, seconds_frame
    from phoenix_assets.lib.market.book_kernel import arrays_from_dbn, book_ofi_1s
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

    def load(day: dt.date):
        path = tmp / "landing" / f"{day}.dbn.zst"
        if not path.exists():
            path = write_day(day, tmp / "landing", market)
        return arrays_from_dbn(np.concatenate(list(databento.DBNStore.from_file(path).to_ndarray(count=1 << 20))))

    previous, live = load(PREVIOUS), load(LIVE)
    bars = ofi_bars_1m(seconds_frame(book_ofi_1s(iter([previous]))), symbol="MNQ.v.0")
    catalog = load_catalog()
    model = fit_regime_model(bars, catalog.hmm, PREVIOUS, PREVIOUS)
    cfg = EnvConfig(feature_columns=tuple(catalog.sets["phase2_ofi"].columns), lookback=4, trade_only_warm=False)
    fill = FillConfig.from_env(cfg)
    lake = Lake(str(tmp / f"lake-{journal_kind}"))
    journal = WalJournal(lake, "bench") if journal_kind == "wal" else OrderJournal(lake)
    settings = LiveSettings()
    node, strategy = build_node(settings, strategy="bench", capital_usd=10_000.0, fill=fill, log_level="ERROR")
    venue = NodeVenue(node, strategy, latency_ns=fill.latency_ns)
    venue.start(np.unique(live.instrument_id).tolist())
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
    n = len(live.ts_recv)
    session.on_records(live.slice(0, 2_000))
    began = time.perf_counter()
    for start in range(2_000, n, chunk):
        session.on_records(live.slice(start, min(start + chunk, n)))
    session.close()
    wall = time.perf_counter() - began
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
        ["journal", "bars", "orders", "rec->decision", "rec->order", "node send", "queue->node done", "records/s"],
        [
            [
                r["journal"],
                f"{r['bars']}",
                f"{r['orders']}",
                "{:.2f} / {:.2f} ms".format(*r["decision"]),
                "{:.2f} / {:.2f} ms".format(*r["order"]),
                "{:.2f} / {:.2f} ms".format(*r["node"]),
                "{:.2f} / {:.2f} ms".format(*r["handoff"]),
                f"{r['records_per_s']:,.0f} ({r['wall_s']:.0f} s)",
            ]
            for r in results
        ],
    )


if __name__ == "__main__":
    main()
