"""Benchmark the synthetic market writer: speed, file size and peak memory for 1M (and 10M) records.

Each size runs in a fresh child process, so its peak RSS (`ru_maxrss`) is its own and includes the
imports and the numba kernels loaded from cache (a warm-up day compiles them first if needed). The
record count is read back from the file with databento, which also proves the file decodes, and so
are the continuous session's mid range and 1-minute realized volatility (points): they stay at a real
MNQ day's level whatever the record count (issue 26; before, a 2M-record day had ~7x the 200k day's).

    python benchmarks/bench_synthetic.py            # 1M records
    python benchmarks/bench_synthetic.py --full     # 1M and 10M records
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRADE_DATE = dt.date(2024, 3, 5)  # a day whose activity factor is close to 1


def _rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def session_range_and_rv(chunks: object) -> tuple[float, float]:
    """High - low of the F_LAST mid after the 17:00 CT open, and sqrt(sum of squared 1-minute mid changes)."""
    import numpy as np

    from phoenix_assets.lib import calendar as cal
    from phoenix_assets.lib.schema import F_LAST

    open_ns = cal.session_open_ns(TRADE_DATE)
    last_mid = np.full(24 * 60, np.nan)
    low, high = np.inf, -np.inf
    for chunk in chunks:
        ts = chunk["ts_event"].astype(np.int64)
        book = chunk[((chunk["flags"] & F_LAST) != 0) & (ts >= open_ns)]
        if len(book):
            mid = (book["bid_px_00"].astype(np.int64) + book["ask_px_00"].astype(np.int64)) / 2e9
            low, high = min(low, mid.min()), max(high, mid.max())
            last_mid[(book["ts_event"].astype(np.int64) - open_ns) // cal.NS_PER_MINUTE] = mid
    minute = last_mid[~np.isnan(last_mid)]
    return float(high - low), float(np.sqrt(np.sum(np.diff(minute) ** 2)))


def run_one(records_per_day: int) -> dict[str, float]:
    """Write one day of ~records_per_day records into a temp dir; runs inside the child process."""
    import databento as db

    from phoenix_assets.lib.synthetic.market import SyntheticMarketConfig, write_day

    with tempfile.TemporaryDirectory() as tmp:
        write_day(TRADE_DATE, Path(tmp) / "warmup", SyntheticMarketConfig(records_per_day=1_000))
        rss_before = _rss_mb()
        t0 = time.perf_counter()
        path = write_day(TRADE_DATE, Path(tmp), SyntheticMarketConfig(records_per_day=records_per_day))
        seconds = time.perf_counter() - t0
        rss_peak = _rss_mb()
        size_mb = path.stat().st_size / 1e6
        records = sum(len(c) for c in db.DBNStore.from_file(path).to_ndarray(count=1_000_000))
        day_range, rv = session_range_and_rv(db.DBNStore.from_file(path).to_ndarray(count=1_000_000))
    return {
        "target": records_per_day,
        "records": records,
        "seconds": seconds,
        "records_per_s": records / seconds,
        "file_mb": size_mb,
        "raw_mb": records * 368 / 1e6,
        "rss_before_mb": rss_before,
        "rss_peak_mb": rss_peak,
        "range_points": day_range,
        "rv_points": rv,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also run the 10M-record day")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child)))
        return
    sizes = [200_000, 1_000_000, 10_000_000] if args.full else [200_000, 1_000_000]
    rows = []
    for n in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n)], check=True, capture_output=True, text=True
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    header = (
        f"{'target':>11} {'records':>11} {'seconds':>8} {'records/s':>11} {'file MB':>8} "
        f"{'raw MB':>8} {'RSS before MB':>14} {'peak RSS MB':>12} {'range pts':>10} {'1m RV pts':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['target']:>11,} {r['records']:>11,} {r['seconds']:>8.2f} {r['records_per_s']:>11,.0f} "
            f"{r['file_mb']:>8.1f} {r['raw_mb']:>8.1f} {r['rss_before_mb']:>14.0f} {r['rss_peak_mb']:>12.0f} "
            f"{r['range_points']:>10.1f} {r['rv_points']:>10.1f}"
        )


if __name__ == "__main__":
    main()
