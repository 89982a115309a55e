"""The raw-table scans of the microstructure stage (`symbols_of_day` and the two checks against raw_mbp10):
right answers, and memory that does not grow with the day (issue 26: on polars' in-memory engine a 10M-record
day cost +1.07 GB in `symbols_of_day` alone, ~3 GB at 30M; the scans name the streaming engine)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.market import microstructure as ms
from phoenix_assets.lib.schema import F_LAST, RAW_TABLE

DAY = dt.date(2024, 3, 15)
REPO = Path(__file__).resolve().parents[4]


def write_raw_like(lake: Lake, rows: int, other_day_rows: int = 1_000) -> None:
    """A raw_mbp10-shaped table with the columns these scans read: a roll in the middle of DAY (two
    instruments), every 3rd record F_LAST, every 7th a trade of size 2, and another trade date beside it."""
    idx = np.arange(rows)
    day = pl.DataFrame(
        {
            "instrument_id": np.where(idx < rows // 2, 42005347, 42140878).astype(np.int64),
            "symbol": np.where(idx < rows // 2, "MNQH4", "MNQM4"),
            "flags": np.where(idx % 3 == 2, F_LAST, 0).astype(np.int16),
            "action": np.where(idx % 7 == 0, "T", "A"),
            "size": np.where(idx % 7 == 0, 2, 1).astype(np.int64),
        }
    ).with_columns(trade_date=pl.lit(DAY))
    other = day.head(other_day_rows).with_columns(trade_date=pl.lit(DAY - dt.timedelta(days=1)), symbol=pl.lit("X"))
    pl.concat([day, other]).write_delta(lake.table_uri(RAW_TABLE), delta_write_options={"partition_by": ["trade_date"]})


def test_scans_by_hand(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    write_raw_like(lake, 70)  # records 0..69: 35 per contract, F_LAST on 23 of them, trades at 0, 7, ..., 63
    symbols = ms.symbols_of_day(lake, DAY).sort("instrument_id")
    assert symbols.rows() == [(42005347, "MNQH4"), (42140878, "MNQM4")]
    bars = pl.DataFrame({"volume": [20]})  # 10 trades of size 2
    assert ms.check_volume_matches_raw(bars, lake, DAY).metadata == {"bar_volume": 20, "raw_volume": 20}
    assert not ms.check_volume_matches_raw(bars.with_columns(pl.col("volume") + 1), lake, DAY).passed
    seconds = pl.DataFrame({"n_events": [20, 3]})
    assert ms.check_events_match_raw(seconds, lake, DAY).metadata == {"events": 23, "raw_f_last": 23}


# The peak is the kernel's VmHWM of this process: ru_maxrss would start at the parent's peak (it survives
# fork and exec), so after the test process built 8M rows the child's growth would read 0.
_CHILD = """
import datetime as dt, json, sys
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.market import microstructure as ms
import polars as pl
def hwm_mb():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
lake, day = Lake(sys.argv[1]), dt.date.fromisoformat(sys.argv[2])
pl.DataFrame({"a": [1]}).lazy().collect(engine="streaming")  # the engines' own start-up is not the scan's
before = hwm_mb()
pairs = ms.symbols_of_day(lake, day).height
events = ms.check_events_match_raw(pl.DataFrame({"n_events": [0]}), lake, day).metadata["raw_f_last"]
after = hwm_mb()
print(json.dumps({"pairs": pairs, "events": events, "grew_mb": after - before}))
"""


@pytest.mark.slow
def test_scans_of_a_big_day_stay_small(tmp_path: Path) -> None:
    """8M raw rows: loading `instrument_id` and `symbol` whole costs +820 MB (the same query on the in-memory
    engine, measured); streamed, the scans took +215 MB. Run in a fresh process so the peak is theirs."""
    lake = Lake(str(tmp_path / "lake"))
    rows = 8_000_000
    write_raw_like(lake, rows)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, lake.root, DAY.isoformat()],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["pairs"] == 2 and result["events"] == rows // 3
    assert result["grew_mb"] < 450, result
