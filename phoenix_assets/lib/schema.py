"""The names of Phoenix's data, in one place: the `raw_mbp10` schema, the `ofi_bars_1m` columns, and the lake's
table and artifact names. A leaf module (pyarrow only), so `feature_specs` can validate against it cheaply.

The `raw_mbp10` table schema: Databento's MBP-10 record, lossless, in Delta-compatible types.

Prices stay exact as int64 fixed-point (1 unit = 1e-9, `PRICE_SCALE`); Databento's undefined price
(i64::MAX) becomes null. Timestamps stay int64 nanoseconds since the UNIX epoch (UTC): Delta's
timestamp type is microseconds and would drop the nanoseconds. Delta has no unsigned integers, so
each unsigned DBN field is widened to the next signed type that holds every value.
"""

from __future__ import annotations

import pyarrow as pa

PRICE_SCALE = 1_000_000_000
UNDEF_PRICE = 2**63 - 1
N_LEVELS = 10
RTYPE_MBP10 = 10
RECORD_LENGTH_WORDS = 92  # DBN `length` field: 368 bytes / 4

F_LAST = 0x80  # last record of an event: the book is consistent only here
F_TOB = 0x40
F_SNAPSHOT = 0x20  # book re-statement, not order flow
F_MBP = 0x10
F_BAD_TS_RECV = 0x08
F_MAYBE_BAD_BOOK = 0x04

LEVEL_FIELDS = ("bid_px", "ask_px", "bid_sz", "ask_sz", "bid_ct", "ask_ct")


def level_columns(field: str) -> list[str]:
    """`bid_px` -> ['bid_px_00', ..., 'bid_px_09']."""
    return [f"{field}_{i:02d}" for i in range(N_LEVELS)]


PRICE_COLUMNS = ["price", *level_columns("bid_px"), *level_columns("ask_px")]

_HEADER: list[tuple[str, pa.DataType]] = [
    ("ts_recv", pa.int64()),
    ("ts_event", pa.int64()),
    ("rtype", pa.int16()),
    ("publisher_id", pa.int32()),
    ("instrument_id", pa.int64()),
    ("action", pa.string()),
    ("side", pa.string()),
    ("depth", pa.int16()),
    ("price", pa.int64()),
    ("size", pa.int64()),
    ("flags", pa.int16()),
    ("ts_in_delta", pa.int32()),
    ("sequence", pa.int64()),
]
_LEVELS: list[tuple[str, pa.DataType]] = [(name, pa.int64()) for field in LEVEL_FIELDS for name in level_columns(field)]
# Phoenix additions: `record_index` is the record's position in the trade date's stream (files in time
# order, records in file order). Delta does not keep row order, and records of one event can share
# ts_recv and sequence, so readers sort by it to recover the exact feed order (F_LAST last in its event).
_TAIL: list[tuple[str, pa.DataType]] = [
    ("record_index", pa.int64()),
    ("symbol", pa.string()),
    ("trade_date", pa.date32()),
]

RAW_MBP10_SCHEMA = pa.schema(
    [pa.field(n, t, nullable=(n in PRICE_COLUMNS or n == "symbol")) for n, t in _HEADER + _LEVELS + _TAIL]
)
RAW_COLUMNS: list[str] = RAW_MBP10_SCHEMA.names
RECORD_COLUMNS: list[str] = [n for n, _ in _HEADER + _LEVELS]  # the DBN record's own fields, no Phoenix additions

BAR_COLUMNS: list[str] = [
    "ts",
    "trade_date",
    "instrument_id",
    "symbol",
    "in_session",
    "open",
    "high",
    "low",
    "close",
    "ohlc_from_mid",
    "volume",
    "buy_volume",
    "sell_volume",
    "trade_count",
    "vwap_num",
    "vwap_den",
    "vwap",
    *[f"ofi_l{m}" for m in range(1, N_LEVELS + 1)],
    *[f"ofi_l{m}_norm" for m in range(1, N_LEVELS + 1)],
    "mid_open",
    "mid_high",
    "mid_low",
    "mid_close",
    "microprice_close",
    "microprice_stoikov_close",
    "microprice_dev_ticks_close",
    "microprice_dev_ticks_mean",
    "spread_ticks_close",
    "spread_ticks_mean",
    "imbalance_close",
    "depth_bid_l1",
    "depth_ask_l1",
    "depth_bid_total",
    "depth_ask_total",
    "depth_total",
    "liquidity_consumption",
    "n_records",
    "n_events",
    "n_snapshots",
    "n_crossed_events",
    "valid_s",
    "crossed_share",
    "book_valid_close",
]
"""Columns of `ofi_bars_1m`, in order (`microprice_stoikov_close` only with a Stoikov table)."""

# Delta tables under the lake root, one name each (`Lake.scan(name)`)
RAW_TABLE = "raw_mbp10"
RAW_ORDER = "record_index"  # sort by this to read a partition in feed order
SECONDS_TABLE = "book_snapshots_1s"
BARS_TABLE = "ofi_bars_1m"
DECISION_BOOK_COLUMNS = ("mid_close", "spread_ticks_close")  # ofi_bars_1m: the end-of-minute book a decision meets
REGIMES_TABLE = "hmm_regimes"
FEATURES_TABLE = "features_1m"
TRADES_TABLE = "backtest_trades"
EQUITY_TABLE = "backtest_equity"
METRICS_TABLE = "evaluation_metrics"
PAPER_ORDERS_TABLE = "paper_orders"
PAPER_FILLS_TABLE = "paper_fills"
PAPER_BARS_TABLE = "paper_bars"
PAPER_RISK_EVENTS_TABLE = "paper_risk_events"
PAPER_REPORT_TABLE = "paper_daily_report"
PAPER_TRACK_RECORD_TABLE = "paper_track_record"
HPO_TEST_LOOKS_TABLE = "hpo_test_looks"  # append-only: every scoring of an HPO study's test window
RESEARCH_PROTOCOLS_TABLE = "research_protocols"  # one row per pre-registered protocol hash, written before training
RESEARCH_DAILY_PNL_TABLE = "research_daily_pnl"  # $ PnL per protocol x arm x seed x fold x strategy x trade date

# Versioned artifact folders under the lake root (`<dir>/<version>/...` and a `latest.json` pointer)
HMM_MODEL_DIR = "artifacts/hmm_regime_model"
SAC_MODEL_DIR = "artifacts/mamba_sac_model"
HPO_DIR = "artifacts/hpo_study"
