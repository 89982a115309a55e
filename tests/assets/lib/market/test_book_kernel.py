"""The 1-second book / OFI kernel: hand-computed CKS cases, a slow obvious reference on real MBP-10
files, chunk-size invariance, and the raw-table and pickled-state paths.

`reference_buckets` below is the naive reference (plain Python over record objects, dicts and
lists; sessions from zoneinfo, time weighting by interval overlap): it shares no code with the
kernel. `benchmarks/bench_microstructure.py` imports it to time the naive path.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import databento as db
import numpy as np
import pyarrow as pa
import pytest

from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.io.dbn_reader import inspect_dbn, iter_mbp10_arrays, mbp10_batch
from phoenix_assets.lib.market.book_kernel import (
    SECOND_COLUMNS,
    BookArrays,
    BookOfiState,
    arrays_from_dbn,
    arrays_from_raw,
    book_ofi_1s,
)
from phoenix_assets.lib.synthetic.market import SyntheticMarketConfig, write_day
from tests.conftest import SHARED_DATA

ESH4 = SHARED_DATA / "glbx-mdp3-esh4-20231225.mbp-10.derived-from-mbo.dbn.zst"  # crossed pre-open, open
ESM4 = SHARED_DATA / "glbx-mdp3-esm4-20240508T000000-000002.mbp-10.derived-from-mbo.dbn.zst"  # snapshot
ESH1 = SHARED_DATA / "glbx-mdp3-esh1-20201228.mbp-10.fixture.dbn.zst"

NS = 1_000_000_000
UNDEF = 2**63 - 1
SCALE = 1_000_000_000
LAST, SNAPSHOT = 0x80, 0x20
CT = ZoneInfo("America/Chicago")
LEVELS = 10


# --- the naive reference -------------------------------------------------------------------------------


@dataclass
class Rec:
    """One MBP-10 record as plain Python values."""

    ts_recv: int
    instrument_id: int
    action: str
    side: str
    flags: int
    price: int
    size: int
    bid_px: list[int]
    ask_px: list[int]
    bid_sz: list[int]
    ask_sz: list[int]


def records_from_file(path: Path) -> list[Rec]:
    """Decode record by record through databento's Python objects (independent of the array path)."""
    out = []
    for r in db.DBNStore.from_file(path):
        lv = r.levels
        out.append(
            Rec(
                ts_recv=int(r.ts_recv),
                instrument_id=int(r.instrument_id),
                action=str(r.action),
                side=str(r.side),
                flags=int(r.flags),
                price=int(r.price),
                size=int(r.size),
                bid_px=[int(x.bid_px) for x in lv],
                ask_px=[int(x.ask_px) for x in lv],
                bid_sz=[int(x.bid_sz) for x in lv],
                ask_sz=[int(x.ask_sz) for x in lv],
            )
        )
    return out


def segment_of(ts: int) -> tuple[int, bool, dt.date]:
    """(segment start ns, continuous trading?, trade date) from the Chicago wall clock."""
    local = dt.datetime.fromtimestamp(ts // NS, CT)
    day = local.date()
    if local.hour >= 17:
        start, kind = dt.datetime.combine(day, dt.time(17), CT), True
    elif local.hour == 16:
        start, kind = dt.datetime.combine(day, dt.time(16), CT), False
    else:
        start, kind = dt.datetime.combine(day - dt.timedelta(days=1), dt.time(17), CT), True
    return int(start.timestamp()) * NS, kind, start.date() + dt.timedelta(days=1)


def book_of(r: Rec) -> dict:
    """{'bid': [(px | None, size)], 'ask': [...]}: undefined levels are (None, 0)."""
    return {
        "bid": [(None, 0) if p == UNDEF else (p, q) for p, q in zip(r.bid_px, r.bid_sz, strict=True)],
        "ask": [(None, 0) if p == UNDEF else (p, q) for p, q in zip(r.ask_px, r.ask_sz, strict=True)],
    }


def status_of(book: dict) -> str:
    b, a = book["bid"][0][0], book["ask"][0][0]
    if b is None or a is None:
        return "one_sided"
    return "valid" if b < a else "crossed"


def level_ofi(prev: dict, new: dict, m: int) -> int:
    """CKS e_n at level m, empty levels spelled out case by case."""
    e = 0
    (pb, pbq), (nb, nbq) = prev["bid"][m], new["bid"][m]
    if pb is None and nb is not None:
        e += nbq
    elif pb is not None and nb is None:
        e -= pbq
    elif pb is not None and nb is not None:
        if nb >= pb:
            e += nbq
        if nb <= pb:
            e -= pbq
    (pa_, paq), (na, naq) = prev["ask"][m], new["ask"][m]
    if pa_ is None and na is not None:
        e -= naq
    elif pa_ is not None and na is None:
        e += paq
    elif pa_ is not None and na is not None:
        if na <= pa_:
            e -= naq
        if na >= pa_:
            e += paq
    return e


def mid_of(book: dict) -> float:
    return (book["bid"][0][0] + book["ask"][0][0]) / 2 / SCALE


def micro_of(book: dict) -> float:
    (b, qb), (a, qa) = book["bid"][0], book["ask"][0]
    return (b / SCALE * qa + a / SCALE * qb) / (qb + qa)


def _new_acc() -> dict:
    return {
        "n_records": 0,
        "n_events": 0,
        "n_snapshots": 0,
        "n_crossed_events": 0,
        "trade_count": 0,
        "volume": 0,
        "buy_volume": 0,
        "sell_volume": 0,
        "ofi": [0] * LEVELS,
        "trades": [],
    }


def reference_buckets(records: list[Rec], width_ns: int = NS) -> dict[tuple[int, int], dict]:
    """The naive reference: every bucket of every run, keyed by (bucket start, instrument_id).

    Runs restart on an instrument change or a new session segment. A state lives from its ts_recv to
    the next state's, the run's last state to the end of the run's last second. Buckets run from the
    run's first record to its last (quiet ones included).
    """
    runs: list[dict] = []
    run: dict | None = None
    prev: dict | None = None
    pending = False
    last_ts = 0
    for r in records:
        t = r.ts_recv
        if run is not None and r.instrument_id == run["iid"] and t < last_ts:
            t = last_ts
        seg, in_session, trade_date = segment_of(t)
        if run is None or r.instrument_id != run["iid"] or seg != run["seg"]:
            run = {
                "iid": r.instrument_id,
                "seg": seg,
                "in_session": in_session,
                "trade_date": trade_date,
                "times": [],
                "books": [],
                "acc": {},
                "first": t,
            }
            runs.append(run)
            prev, pending = None, False
        last_ts = t
        run["last"] = t
        acc = run["acc"].setdefault(t - t % width_ns, _new_acc())
        acc["n_records"] += 1
        if r.flags & SNAPSHOT or r.action == "R":
            pending = True
        if r.action == "T":
            acc["trade_count"] += 1
            acc["volume"] += r.size
            if r.side == "B":
                acc["buy_volume"] += r.size
            elif r.side == "A":
                acc["sell_volume"] += r.size
            if r.price != UNDEF:
                acc["trades"].append((r.price / SCALE, r.size))
        if r.flags & LAST:
            new = book_of(r)
            if prev is not None and not pending and status_of(prev) != "crossed" and status_of(new) != "crossed":
                for m in range(LEVELS):
                    acc["ofi"][m] += level_ofi(prev, new, m)
            acc["n_events"] += 1
            acc["n_snapshots"] += int(pending)
            acc["n_crossed_events"] += int(status_of(new) == "crossed")
            run["times"].append(t)
            run["books"].append(new)
            prev, pending = new, False
    out: dict[tuple[int, int], dict] = {}
    for run in runs:
        end = run["last"] - run["last"] % NS + NS  # the last state lives to the end of the last second
        times, books = run["times"], run["books"]
        lives = [(times[k], times[k + 1] if k + 1 < len(times) else end, books[k]) for k in range(len(times))]
        b = run["first"] - run["first"] % width_ns
        while b <= run["last"]:
            out[(b, run["iid"])] = _bucket_row(run, b, width_ns, times, books, lives)
            b += width_ns
    return out


def _bucket_row(run: dict, b: int, width: int, times: list, books: list, lives: list) -> dict:
    acc = run["acc"].get(b, _new_acc())
    row = {k: v for k, v in acc.items() if k not in ("ofi", "trades")}
    row["ofi"] = list(acc["ofi"])
    row["trade_date"] = run["trade_date"]
    row["in_session"] = run["in_session"]
    prices = [p for p, _ in acc["trades"]]
    row["trade_open"] = prices[0] if prices else math.nan
    row["trade_high"] = max(prices) if prices else math.nan
    row["trade_low"] = min(prices) if prices else math.nan
    row["trade_close"] = prices[-1] if prices else math.nan
    row["notional"] = sum(p * q for p, q in acc["trades"])
    k_end = bisect.bisect_left(times, b + width) - 1  # last state received before the bucket's end
    k_open = bisect.bisect_left(times, b) - 1  # state carried into the bucket
    end_book = books[k_end] if k_end >= 0 else None
    row["book"] = end_book
    row["status"] = status_of(end_book) if end_book is not None else "none"
    mids = []
    if k_open >= 0 and status_of(books[k_open]) == "valid":
        mids.append(mid_of(books[k_open]))
    mids += [mid_of(books[k]) for k in range(k_open + 1, k_end + 1) if status_of(books[k]) == "valid"]
    row["mid_open"] = mids[0] if mids else math.nan
    row["mid_high"] = max(mids) if mids else math.nan
    row["mid_low"] = min(mids) if mids else math.nan
    valid_end = row["status"] == "valid"
    row["mid_close"] = mid_of(end_book) if valid_end else math.nan
    row["microprice_close"] = micro_of(end_book) if valid_end else math.nan
    tw = {"book_s": 0.0, "valid_s": 0.0, "crossed_s": 0.0, "tw_spread": 0.0, "tw_microprice_dev": 0.0}
    tw.update({"tw_bid_sz_l1": 0.0, "tw_ask_sz_l1": 0.0})
    for start, stop, book in lives[max(k_open, 0) : k_end + 1]:
        lo, hi = max(start, b), min(stop, b + width)
        if hi <= lo:
            continue
        d = (hi - lo) / NS
        st = status_of(book)
        tw["book_s"] += d
        if st == "crossed":
            tw["crossed_s"] += d
        elif st == "valid":
            tw["valid_s"] += d
            tw["tw_spread"] += d * (book["ask"][0][0] - book["bid"][0][0]) / SCALE
            tw["tw_microprice_dev"] += d * (micro_of(book) - mid_of(book))
            tw["tw_bid_sz_l1"] += d * book["bid"][0][1]
            tw["tw_ask_sz_l1"] += d * book["ask"][0][1]
    row.update(tw)
    return row


# --- comparing kernel output with the reference ------------------------------------------------------

INT_FIELDS = [
    "n_records",
    "n_events",
    "n_snapshots",
    "n_crossed_events",
    "trade_count",
    "volume",
    "buy_volume",
    "sell_volume",
]
FLOAT_FIELDS = [
    "trade_open",
    "trade_high",
    "trade_low",
    "trade_close",
    "notional",
    "mid_open",
    "mid_high",
    "mid_low",
    "mid_close",
    "microprice_close",
    "book_s",
    "valid_s",
    "crossed_s",
    "tw_spread",
    "tw_microprice_dev",
    "tw_bid_sz_l1",
    "tw_ask_sz_l1",
]


def reference_columns(keys: list[tuple[int, int]], ref: dict[tuple[int, int], dict]) -> dict[str, np.ndarray]:
    """The reference rows in the kernel's row order, as kernel-named columns."""
    rows = [ref[k] for k in keys]
    cols: dict[str, np.ndarray] = {}
    for name in INT_FIELDS:
        cols[name] = np.array([r[name] for r in rows], dtype=np.int64)
    for m in range(LEVELS):
        cols[f"ofi_l{m + 1}"] = np.array([r["ofi"][m] for r in rows], dtype=np.int64)
        for side in ("bid", "ask"):
            levels = [r["book"][side][m] if r["book"] else (None, 0) for r in rows]
            cols[f"{side}_sz_{m:02d}"] = np.array([q for _, q in levels], dtype=np.int64)
            cols[f"{side}_px_{m:02d}"] = np.array([math.nan if p is None else p / SCALE for p, _ in levels])
    for name in FLOAT_FIELDS:
        cols[name] = np.array([r[name] for r in rows], dtype=np.float64)
    cols["trade_date"] = np.array([r["trade_date"] for r in rows], dtype="datetime64[D]")
    cols["in_session"] = np.array([r["in_session"] for r in rows])
    cols["book_valid"] = np.array([r["status"] == "valid" for r in rows])
    cols["crossed"] = np.array([r["status"] == "crossed" for r in rows])
    return cols


def assert_matches_reference(out: dict[str, np.ndarray], ref: dict[tuple[int, int], dict]) -> None:
    keys = list(zip(out["ts"].tolist(), out["instrument_id"].tolist(), strict=True))
    assert len(keys) == len(set(keys)) == len(ref) and set(keys) == set(ref)
    expected = reference_columns(keys, ref)
    for name, want in expected.items():
        got = out[name]
        if want.dtype.kind == "f" and not name.startswith(("bid_px", "ask_px")):
            bad = ~np.isclose(got, want, rtol=1e-12, atol=1e-9, equal_nan=True)
        else:
            bad = ~((got == want) | (np.isnan(got) & np.isnan(want)) if want.dtype.kind == "f" else (got == want))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            when = dt.datetime.fromtimestamp(keys[i][0] / NS, dt.UTC)
            raise AssertionError(
                f"{name} differs at {bad.sum()} rows; first at {when} instrument {keys[i][1]}: "
                f"kernel {got[i]!r}, reference {want[i]!r}"
            )


def load(path: Path) -> np.ndarray:
    return db.DBNStore.from_file(path).to_ndarray()


def run_chunks(recs: np.ndarray, chunk: int) -> dict[str, np.ndarray]:
    return book_ofi_1s(arrays_from_dbn(recs[i : i + chunk]) for i in range(0, len(recs), chunk))


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b) == list(SECOND_COLUMNS)
    for k in a:
        assert a[k].dtype == b[k].dtype == SECOND_COLUMNS[k], k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def esh4() -> np.ndarray:
    return load(ESH4)


@pytest.fixture(scope="module")
def esh4_out(esh4: np.ndarray) -> dict[str, np.ndarray]:
    return book_ofi_1s([arrays_from_dbn(esh4)])


# --- hand-computed cases -------------------------------------------------------------------------------

T0 = cal.session_open_ns(dt.date(2024, 3, 12)) + 3600 * NS  # 18:00 CT, continuous trading


def px(points: float) -> int:
    return round(points * SCALE)


def book(bids: list[tuple[float, int]], asks: list[tuple[float, int]]) -> tuple[list, list]:
    return bids, asks


BASE = book([(100.0, 5)], [(100.5, 4)])


def rec(
    t: int,
    levels: tuple[list, list],
    *,
    action: str = "A",
    side: str = "B",
    flags: int = LAST,
    price: float | None = None,
    size: int = 0,
    iid: int = 1,
) -> dict:
    return {
        "ts": t,
        "iid": iid,
        "action": action,
        "side": side,
        "flags": flags,
        "price": px(price) if price is not None else UNDEF,
        "size": size,
        "levels": levels,
    }


def arrays(recs: list[dict]) -> BookArrays:
    n = len(recs)
    lv = {k: np.zeros((n, LEVELS), dtype=np.int64) for k in ("bid_px", "ask_px", "bid_sz", "ask_sz")}
    lv["bid_px"][:] = UNDEF
    lv["ask_px"][:] = UNDEF
    for i, r in enumerate(recs):
        bids, asks = r["levels"]
        for m, (p, q) in enumerate(bids):
            lv["bid_px"][i, m], lv["bid_sz"][i, m] = px(p), q
        for m, (p, q) in enumerate(asks):
            lv["ask_px"][i, m], lv["ask_sz"][i, m] = px(p), q
    return BookArrays(
        ts_recv=np.array([r["ts"] for r in recs], dtype=np.int64),
        instrument_id=np.array([r["iid"] for r in recs], dtype=np.int64),
        action=np.array([ord(r["action"]) for r in recs], dtype=np.uint8),
        side=np.array([ord(r["side"]) for r in recs], dtype=np.uint8),
        flags=np.array([r["flags"] for r in recs], dtype=np.uint8),
        price=np.array([r["price"] for r in recs], dtype=np.int64),
        size=np.array([r["size"] for r in recs], dtype=np.int64),
        **lv,
    )


def run(recs: list[dict]) -> dict[str, np.ndarray]:
    return book_ofi_1s([arrays(recs)])


def at(out: dict[str, np.ndarray], t: int, iid: int = 1) -> int:
    """Row index of the second containing t."""
    hits = np.flatnonzero((out["ts"] == t - t % NS) & (out["instrument_id"] == iid))
    assert hits.size == 1
    return int(hits[0])


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        pytest.param(book([(100.25, 3)], [(100.5, 4)]), 3, id="bid_up:+qb_n"),
        pytest.param(book([(100.0, 8)], [(100.5, 4)]), 3, id="bid_same:+qb_n-qb_n-1"),
        pytest.param(book([(99.75, 7)], [(100.5, 4)]), -5, id="bid_down:-qb_n-1"),
        pytest.param(book([(100.0, 5)], [(100.75, 6)]), 4, id="ask_up:+qa_n-1"),
        pytest.param(book([(100.0, 5)], [(100.5, 9)]), -5, id="ask_same:-qa_n+qa_n-1"),
        pytest.param(book([(100.0, 5)], [(100.25, 2)]), -2, id="ask_down:-qa_n"),
        pytest.param(book([(100.25, 3)], [(100.25 + 0.25, 1)]), 3 - 1 + 4, id="bid_up_ask_same"),
    ],
)
def test_cks_cases(new: tuple[list, list], expected: int) -> None:
    out = run([rec(T0, BASE), rec(T0 + NS, new)])
    assert out["ofi_l1"].tolist() == [0, expected]  # the first state has no reference
    assert out["n_events"].tolist() == [1, 1]
    for m in range(2, 11):
        assert (out[f"ofi_l{m}"] == 0).all()


def test_trade_records_add_no_flow() -> None:
    """A T record's size is not OFI; the fill shows up in the next book state (ask 4 -> 1: +3)."""
    after = book([(100.0, 5)], [(100.5, 1)])
    out = run(
        [
            rec(T0, BASE),
            rec(T0 + NS, BASE, action="T", side="B", flags=0, price=100.5, size=3),
            rec(T0 + NS + 10, after, action="C", side="A", price=100.5, size=3),
            rec(T0 + 2 * NS, after, action="T", side="A", flags=LAST, price=100.0, size=2),  # book unchanged
        ]
    )
    assert out["ofi_l1"].tolist() == [0, 3, 0]
    assert out["trade_count"].tolist() == [0, 1, 1]
    assert out["buy_volume"].tolist() == [0, 3, 0]
    assert out["sell_volume"].tolist() == [0, 0, 2]
    assert out["volume"].tolist() == [0, 3, 2]
    assert out["n_events"].tolist() == [1, 1, 1]
    assert out["n_records"].tolist() == [1, 2, 1]
    np.testing.assert_array_equal(out["trade_open"], [np.nan, 100.5, 100.0])
    np.testing.assert_array_equal(out["notional"], [0.0, 301.5, 200.0])


def test_trade_ohlc_and_side_n() -> None:
    out = run(
        [
            rec(T0, BASE),
            rec(T0 + 1, BASE, action="T", side="N", flags=0, price=100.25, size=7),
            rec(T0 + 2, BASE, action="T", side="B", flags=0, price=100.75, size=1),
            rec(T0 + 3, BASE, action="T", side="A", flags=0, price=99.75, size=2),
            rec(T0 + 4, BASE, action="T", side="B", flags=0, price=100.5, size=1),
        ]
    )
    assert (out["trade_open"][0], out["trade_high"][0], out["trade_low"][0], out["trade_close"][0]) == (
        100.25,
        100.75,
        99.75,
        100.5,
    )
    assert (out["volume"][0], out["buy_volume"][0], out["sell_volume"][0], out["trade_count"][0]) == (11, 2, 2, 4)


def test_snapshot_restates_without_flow() -> None:
    snap = book([(101.0, 10)], [(101.5, 10)])
    out = run(
        [
            rec(T0, BASE),
            rec(T0 + NS, snap, side="N", flags=LAST | SNAPSHOT),
            rec(T0 + 2 * NS, book([(101.0, 12)], [(101.5, 10)])),  # +2 against the snapshot, not BASE
            # a snapshot flag on an intermediate record also makes the event's state a re-statement
            rec(T0 + 3 * NS, book([(90.0, 1)], [(95.0, 1)]), flags=SNAPSHOT),
            rec(T0 + 3 * NS + 1, book([(102.0, 3)], [(102.5, 3)])),
            rec(T0 + 4 * NS, book([(102.0, 3)], [(102.5, 1)])),  # ask same price 3 -> 1: +2
        ]
    )
    assert out["ofi_l1"].tolist() == [0, 0, 2, 0, 2]
    assert out["n_snapshots"].tolist() == [0, 1, 0, 1, 0]


def test_clear_action_restates() -> None:
    out = run([rec(T0, BASE), rec(T0 + NS, book([], []), action="R", side="N"), rec(T0 + 2 * NS, BASE)])
    assert out["ofi_l1"].tolist() == [0, 0, 5 - 4]  # empty -> BASE: bid appears +5, ask appears -4
    assert out["book_valid"].tolist() == [True, False, True]


def test_empty_first_state_starts_the_book_clock() -> None:
    """An all-empty first state is a book (one-sided), alive from its own ts_recv."""
    out = run([rec(T0 + NS // 2, book([], [])), rec(T0 + NS + NS // 2, BASE)])
    assert out["book_s"].tolist() == [0.5, 1.0]
    assert out["valid_s"].tolist() == [0.0, 0.5]
    assert out["ofi_l1"].tolist() == [0, 5 - 4]


def test_crossed_books_are_excluded() -> None:
    locked = book([(100.5, 3)], [(100.5, 2)])
    crossed = book([(100.75, 3)], [(100.5, 2)])
    out = run(
        [
            rec(T0, BASE),
            rec(T0 + NS, locked),  # into a locked book: no flow
            rec(T0 + 2 * NS, crossed),  # within crossed: no flow
            rec(T0 + 3 * NS, BASE),  # out of it: no flow
            rec(T0 + 4 * NS, book([(100.0, 9)], [(100.5, 4)])),  # +4
        ]
    )
    assert out["ofi_l1"].tolist() == [0, 0, 0, 0, 4]
    assert out["crossed"].tolist() == [False, True, True, False, False]
    assert out["book_valid"].tolist() == [True, False, False, True, True]
    assert out["n_crossed_events"].tolist() == [0, 1, 1, 0, 0]
    assert np.isnan(out["mid_close"][1]) and np.isnan(out["microprice_close"][2])
    assert out["crossed_s"].tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    assert out["crossed_share"].tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    assert out["valid_s"].tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]


def test_instrument_change_resets() -> None:
    other = book([(200.0, 7)], [(200.25, 7)])
    state = BookOfiState()
    out = book_ofi_1s(
        [
            arrays(
                [
                    rec(T0, BASE),
                    rec(T0 + NS // 2, other, iid=2),  # same second, new contract: no flow vs BASE
                    rec(T0 + NS, book([(200.0, 9)], [(200.25, 7)]), iid=2),  # +2 against iid 2's state
                ]
            )
        ],
        state,
    )
    assert out["instrument_id"].tolist() == [1, 2, 2]
    assert out["ts"].tolist() == [T0, T0, T0 + NS]
    assert out["ofi_l1"].tolist() == [0, 0, 2]
    assert out["bid_px_00"].tolist() == [100.0, 200.0, 200.0]
    assert out["valid_s"].tolist() == [1.0, 0.5, 1.0]  # iid 2 has a book only from mid-second
    assert state.diagnostics()["instrument_resets"] == 1


def test_intermediate_records_are_ignored() -> None:
    out = run(
        [
            rec(T0, BASE),
            rec(T0 + NS, book([(105.0, 99)], [(105.25, 99)]), flags=0),  # not F_LAST: never read
            rec(T0 + NS + 1, book([(100.0, 6)], [(100.5, 4)])),
        ]
    )
    assert out["ofi_l1"].tolist() == [0, 1]
    assert out["n_events"].tolist() == [1, 1] and out["n_records"].tolist() == [1, 2]
    assert out["mid_high"][1] == 100.25


def test_empty_levels() -> None:
    """An empty level is a bid at -inf / ask at +inf of size 0: appearing adds its size with the CKS
    sign, disappearing removes the old size, empty -> empty is 0; a one-sided book still has flow."""
    two = book([(100.0, 5), (99.75, 4)], [(100.5, 4), (100.75, 3)])
    out = run(
        [
            rec(T0, BASE),
            rec(T0 + NS, two),  # level 2 appears on both sides: +4 - 3
            rec(T0 + 2 * NS, BASE),  # and disappears: -4 + 3
            rec(T0 + 3 * NS, book([(100.0, 5)], [])),  # best ask disappears: +4, book one-sided
            rec(T0 + 4 * NS, book([(100.0, 5)], [(101.0, 2)])),  # ask appears: -2
        ]
    )
    assert out["ofi_l2"].tolist() == [0, 1, -1, 0, 0]
    assert out["ofi_l1"].tolist() == [0, 0, 0, 4, -2]
    for m in range(3, 11):
        assert (out[f"ofi_l{m}"] == 0).all()
    assert out["book_valid"].tolist() == [True, True, True, False, True]
    assert not out["crossed"][3] and np.isnan(out["ask_px_00"][3]) and out["ask_sz_00"][3] == 0
    assert np.isnan(out["ask_px_01"][0]) and out["bid_px_01"][1] == 99.75


def test_session_breaks_reset() -> None:
    """17:00 CT (trading resumes) and 16:00 CT (new trade date) restart the run: no flow across."""
    day = dt.date(2024, 3, 12)
    open_ns = cal.session_open_ns(day)
    _, close_ns = cal.trade_date_window(day)
    state = BookOfiState()
    out = book_ofi_1s(
        [
            arrays(
                [
                    rec(open_ns - NS // 2, BASE),  # 16:59:59.5 CT, pre-open of trade date 03-12
                    rec(open_ns + NS // 2, book([(100.0, 8)], [(100.5, 4)])),  # would be +3
                    rec(open_ns + NS + 1, book([(100.0, 9)], [(100.5, 4)])),  # +1
                    rec(close_ns - NS // 2, BASE),  # 15:59:59.5 CT on 03-12 (same run: -4 vs 9 @ 100)
                    rec(close_ns + NS // 4, book([(100.0, 6)], [(100.5, 4)])),  # 16:00 CT: trade date 03-13
                ]
            )
        ],
        state,
    )
    rows = {int(t): i for i, t in enumerate(out["ts"])}
    pre, first, second = rows[open_ns - NS], rows[open_ns], rows[open_ns + NS]
    last, halt = rows[close_ns - NS], rows[close_ns]
    assert out["ofi_l1"][[pre, first, second, last, halt]].tolist() == [0, 0, 1, 5 - 9, 0]
    assert out["in_session"][[pre, first, last, halt]].tolist() == [False, True, True, False]
    assert out["trade_date"][[pre, first, last, halt]].astype(str).tolist() == [
        "2024-03-12",
        "2024-03-12",
        "2024-03-12",
        "2024-03-13",
    ]
    assert out["valid_s"][first] == 0.5  # the book starts mid-second after the reset
    assert state.diagnostics()["session_resets"] == 2
    assert len(out["ts"]) == 1 + (close_ns - open_ns) // NS + 1  # dense grid inside the session run


def test_time_weighting_and_microprice() -> None:
    """States alive [0.25, 0.75) and [0.75, 1.0) of the second, then a quiet second carrying the last."""
    a = book([(100.0, 3)], [(100.5, 1)])  # micro = (100*1 + 100.5*3) / 4 = 100.375, mid 100.25
    b = book([(100.25, 1)], [(100.5, 1)])  # micro = mid = 100.375
    out = run([rec(T0 + NS // 4, a), rec(T0 + 3 * NS // 4, b), rec(T0 + NS + NS // 2, b, action="M")])
    assert out["book_s"].tolist() == [0.75, 1.0]
    assert out["valid_s"].tolist() == [0.75, 1.0]
    np.testing.assert_allclose(out["tw_spread"], [0.5 * 0.5 + 0.25 * 0.25, 0.25])
    np.testing.assert_allclose(out["tw_microprice_dev"], [0.5 * 0.125, 0.0])
    np.testing.assert_allclose(out["tw_bid_sz_l1"], [0.5 * 3 + 0.25 * 1, 1.0])
    np.testing.assert_allclose(out["tw_ask_sz_l1"], [0.5 * 1 + 0.25 * 1, 1.0])
    assert out["mid_open"].tolist() == [100.25, 100.375]
    assert out["mid_high"].tolist() == [100.375, 100.375]
    assert out["mid_low"].tolist() == [100.25, 100.375]
    assert out["mid_close"].tolist() == [100.375, 100.375]
    assert out["microprice_close"].tolist() == [100.375, 100.375]
    out = run([rec(T0, a)])
    assert out["microprice_close"][0] == 100.375 and out["mid_close"][0] == 100.25


def test_quiet_seconds_are_filled() -> None:
    out = run([rec(T0, BASE), rec(T0 + 5 * NS + 7, book([(100.0, 6)], [(100.5, 4)]))])
    assert out["ts"].tolist() == [T0 + k * NS for k in range(6)]
    assert out["n_records"].tolist() == [1, 0, 0, 0, 0, 1]
    assert out["ofi_l1"].tolist() == [0, 0, 0, 0, 0, 1]
    assert out["valid_s"].tolist() == [1.0] * 6
    assert out["mid_open"].tolist() == [100.25] * 6


def test_backwards_ts_recv_is_clamped() -> None:
    state = BookOfiState()
    out = book_ofi_1s([arrays([rec(T0 + NS, BASE), rec(T0 + 10, book([(100.0, 6)], [(100.5, 4)]))])], state)
    assert out["ts"].tolist() == [T0 + NS] and out["ofi_l1"].tolist() == [1]
    assert state.diagnostics()["ts_recv_clamped"] == 1


def test_records_far_out_of_order_extend_the_session_table() -> None:
    """Only a chunk's first and last ts_recv size the session table; the kernel asks for more."""
    early = T0 - 5 * 86_400 * NS  # five days earlier, another instrument (so not clamped)
    out = run([rec(T0, BASE), rec(early, BASE, iid=2), rec(T0 + 1, BASE)])
    assert out["ts"].tolist() == [T0, early, T0]
    assert out["instrument_id"].tolist() == [1, 2, 1]
    assert out["trade_date"].astype(str).tolist() == ["2024-03-12", "2024-03-07", "2024-03-12"]


def test_empty_chunk_and_flush_twice() -> None:
    state = BookOfiState()
    empty = state.process_chunk(arrays([rec(T0, BASE)]).slice(0, 0))
    assert list(empty) == list(SECOND_COLUMNS) and all(len(v) == 0 for v in empty.values())
    state.process_chunk(arrays([rec(T0, BASE)]))
    assert len(state.flush()["ts"]) == 1
    assert len(state.flush()["ts"]) == 0


# --- real data against the reference ------------------------------------------------------------------


def test_esh4_matches_reference(esh4_out: dict[str, np.ndarray]) -> None:
    """43,717 records: crossed pre-open 22:39-23:00 UTC, the 17:00 CT open, an hour of trading."""
    ref = reference_buckets(records_from_file(ESH4))
    assert_matches_reference(esh4_out, ref)
    assert esh4_out["crossed"].sum() > 0 and esh4_out["n_crossed_events"].sum() == 143
    assert esh4_out["in_session"].sum() == 3600 and (~esh4_out["in_session"]).sum() == 3600
    assert (esh4_out["trade_date"] == np.datetime64("2023-12-26")).all()
    assert esh4_out["n_records"].sum() == 43_717 and esh4_out["n_events"].sum() == 37_114
    assert esh4_out["trade_count"].sum() == 2_973
    assert np.abs(esh4_out["ofi_l1"]).sum() > 0


def test_esm4_snapshot_matches_reference() -> None:
    out = book_ofi_1s([arrays_from_dbn(load(ESM4))])
    ref = reference_buckets(records_from_file(ESM4))
    assert_matches_reference(out, ref)
    assert out["n_snapshots"].sum() == 1 and out["n_snapshots"][0] == 1
    assert out["in_session"].all() and (out["trade_date"] == np.datetime64("2024-05-08")).all()


def test_fixture_matches_reference() -> None:
    out = book_ofi_1s([arrays_from_dbn(load(ESH1))])
    assert_matches_reference(out, reference_buckets(records_from_file(ESH1)))
    assert out["n_events"].sum() == 4


def test_synthetic_day_matches_reference(tmp_path: Path) -> None:
    """The synthetic day has what the real files lack: undefined levels (pre-open levels 6-10), a
    snapshot record, a crossed pre-open, the 17:00 CT uncross and the reset there."""
    path = write_day(dt.date(2024, 3, 12), tmp_path, SyntheticMarketConfig(records_per_day=6_000))
    recs = load(path)
    out = book_ofi_1s([arrays_from_dbn(recs)])
    assert_matches_reference(out, reference_buckets(records_from_file(path)))
    assert_same(run_chunks(recs, 7), out)
    pre = ~out["in_session"]
    assert np.isnan(out["bid_px_09"][pre]).all() and (out["bid_sz_09"][pre] == 0).all()
    assert out["n_snapshots"][pre].sum() == 1 and out["crossed"][pre].any()
    assert (out["ofi_l10"][pre] == 0).all() and out["ofi_l10"][~pre].any()  # level 10 empty pre-open


@pytest.mark.parametrize("chunk", [7, 4096])
def test_chunk_size_invariance(esh4: np.ndarray, esh4_out: dict[str, np.ndarray], chunk: int) -> None:
    assert_same(run_chunks(esh4, chunk), esh4_out)


def test_record_by_record_equals_one_pass(esh4: np.ndarray) -> None:
    """Chunk size 1 (the live path) across the crossed pre-open and the 17:00 CT open."""
    ts = esh4["ts_recv"].astype(np.int64)
    open_ns = cal.session_open_ns(dt.date(2023, 12, 26))
    lo = int(np.searchsorted(ts, open_ns - 20 * NS))
    sub = esh4[lo : lo + 3000]
    assert_same(run_chunks(sub, 1), run_chunks(sub, len(sub)))


def test_reader_chunks_and_output_limit(esh4_out: dict[str, np.ndarray]) -> None:
    """`iter_mbp10_arrays` chunks, and an output buffer too small for a chunk (forces resumption)."""
    state = BookOfiState()
    state._row_limit = 3
    info = inspect_dbn(ESH4)
    assert_same(book_ofi_1s((arrays_from_dbn(c) for c in iter_mbp10_arrays(info, 10_000)), state), esh4_out)


def test_pickled_state_resumes(esh4: np.ndarray, esh4_out: dict[str, np.ndarray]) -> None:
    half = len(esh4) // 2
    state = BookOfiState()
    first = state.process_chunk(arrays_from_dbn(esh4[:half]))
    state = pickle.loads(pickle.dumps(state))
    rest = book_ofi_1s([arrays_from_dbn(esh4[half:])], state)
    assert_same({k: np.concatenate([first[k], rest[k]]) for k in first}, esh4_out)


def test_raw_table_path_equals_dbn_path(esh4: np.ndarray, esh4_out: dict[str, np.ndarray]) -> None:
    """Rows of `raw_mbp10` (undefined prices as null) give the same seconds as the DBN arrays."""
    import polars as pl

    batch = mbp10_batch(esh4, pa.array(["ESH4"] * len(esh4)), dt.date(2023, 12, 26))
    frame = pl.from_arrow(pa.Table.from_batches([batch]))
    assert isinstance(frame, pl.DataFrame)
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=1)  # as read back from Delta
    assert_same(book_ofi_1s([arrays_from_raw(shuffled)]), esh4_out)


def test_raw_path_keeps_undefined_levels() -> None:
    """Null prices in the table are empty levels again (the pre-open shape of the synthetic day)."""
    import polars as pl

    recs = [rec(T0, book([(100.0, 5)], [])), rec(T0 + NS, BASE)]
    a = arrays(recs)
    cols: dict[str, object] = {
        "ts_recv": a.ts_recv,
        "instrument_id": a.instrument_id,
        "action": ["A", "A"],
        "side": ["B", "B"],
        "flags": a.flags.astype(np.int16),
        "price": [None, None],
        "size": a.size,
    }
    for name in ("bid_px", "ask_px", "bid_sz", "ask_sz"):
        values = getattr(a, name)
        for m in range(LEVELS):
            col = values[:, m].tolist()
            cols[f"{name}_{m:02d}"] = [None if v == UNDEF else v for v in col] if name.endswith("px") else col
    frame = pl.DataFrame(cols, schema_overrides={"price": pl.Int64})
    assert_same(book_ofi_1s([arrays_from_raw(frame)]), run(recs))
