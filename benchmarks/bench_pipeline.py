"""Benchmark: the asset path raw_mbp10 (Delta) -> book_snapshots_1s -> ofi_bars_1m, as the assets run it.

Per size (fresh process each): ingest a synthetic day into a temp lake, then time reading the raw
partition back in feed order through the kernel (`microstructure.seconds_of_day`) and the 1m bars.
Prints records/s per stage and for raw->bars end to end, and peak RSS.

    python benchmarks/bench_pipeline.py [--full]
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

DAY = dt.date(2024, 3, 13)


def _one(records: int) -> dict[str, float]:
    from phoenix_assets.lib.ingest.raw_ingest import ingest_partition
    from phoenix_assets.lib.io.dbn_reader import inspect_dbn
    from phoenix_assets.lib.io.lake import Lake
    from phoenix_assets.lib.market.bars import ofi_bars_1m
    from phoenix_assets.lib.market.microstructure import seconds_of_day
    from phoenix_assets.lib.synthetic.market import SyntheticMarketConfig, write_day

    with tempfile.TemporaryDirectory() as tmp:
        path = write_day(DAY, Path(tmp) / "landing", SyntheticMarketConfig(records_per_day=records))
        lake = Lake(str(Path(tmp) / "lake"))
        stats, _ = ingest_partition(lake, [inspect_dbn(path)], DAY, 65_536)
        seconds_of_day(lake, DAY)  # compile / warm caches once, untimed
        t0 = time.perf_counter()
        seconds, _ = seconds_of_day(lake, DAY)
        t1 = time.perf_counter()
        bars = ofi_bars_1m(seconds)
        t2 = time.perf_counter()
        return {
            "records": stats.rows,
            "seconds_rows": seconds.height,
            "bars": bars.height,
            "kernel_path_s": t1 - t0,
            "bars_s": t2 - t1,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="also run the 10M-record day")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_one(args.child)))
        return
    print(f"{'records':>11} {'raw->1s rec/s':>14} {'1s->1m s':>9} {'raw->1m rec/s':>14} {'peak RSS MB':>12}")
    for size in [1_000_000, 10_000_000] if args.full else [1_000_000]:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(size)], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        total = r["kernel_path_s"] + r["bars_s"]
        print(
            f"{r['records']:>11,} {r['records'] / r['kernel_path_s']:>14,.0f} {r['bars_s']:>9.2f} "
            f"{r['records'] / total:>14,.0f} {r['peak_rss_mb']:>12,.0f}"
        )


if __name__ == "__main__":
    main()
