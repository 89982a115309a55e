"""Benchmark: DBN decode and `raw_mbp10` ingestion (decode -> Arrow -> one Delta commit) on synthetic days.

Prints a table: records, seconds, records/s for plain decode (to_ndarray chunks) and for the whole
ingestion, the ingestion with every raw check run on the staged files before the commit (the asset's
path), and the peak RSS of the ingestion (each size runs in a fresh process so peaks don't mix).

    python benchmarks/bench_ingest.py            # 1M records
    python benchmarks/bench_ingest.py --full     # 1M and 10M records
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


def _one(records: int, chunk: int) -> dict[str, float]:
    from phoenix_assets.defs.ingest.checks import raw_gate
    from phoenix_assets.defs.resources import QualityThresholds
    from phoenix_assets.lib.ingest.raw_ingest import ingest_partition
    from phoenix_assets.lib.io.dbn_reader import inspect_dbn, iter_mbp10_arrays
    from phoenix_assets.lib.io.lake import Lake
    from phoenix_assets.lib.synthetic.market import SyntheticMarketConfig, write_day

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = write_day(DAY, Path(tmp) / "landing", SyntheticMarketConfig(records_per_day=records))
        gen_s = time.perf_counter() - t0
        rss_after_gen = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        info = inspect_dbn(path)
        t0 = time.perf_counter()
        n = sum(len(c) for c in iter_mbp10_arrays(info, chunk))
        decode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        stats, _ = ingest_partition(Lake(str(Path(tmp) / "lake")), [info], DAY, chunk)
        ingest_s = time.perf_counter() - t0
        t0 = time.perf_counter()  # the asset's path: every raw check on the staged files, then the commit
        gate = raw_gate(DAY, QualityThresholds(), {})
        ingest_partition(Lake(str(Path(tmp) / "lake")), [info], DAY, chunk, before_commit=gate)
        gated_s = time.perf_counter() - t0
        return {
            "records": n,
            "file_mb": path.stat().st_size / 1e6,
            "generate_s": gen_s,
            "decode_s": decode_s,
            "ingest_s": ingest_s,
            "gated_s": gated_s,
            "rows": stats.rows,
            "rss_after_generate_mb": rss_after_gen,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="also run the 10M-record day")
    parser.add_argument("--chunk", type=int, default=65_536)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_one(args.child, args.chunk)))
        return
    sizes = [1_000_000, 10_000_000] if args.full else [1_000_000]
    print(
        f"{'records':>11} {'file MB':>8} {'decode rec/s':>13} {'ingest rec/s':>13} {'ingest s':>9} "
        f"{'+checks s':>10} {'peak RSS MB':>12}"
    )
    for size in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(size), "--chunk", str(args.chunk)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{r['records']:>11,} {r['file_mb']:>8.1f} {r['records'] / r['decode_s']:>13,.0f} "
            f"{r['records'] / r['ingest_s']:>13,.0f} {r['ingest_s']:>9.1f} "
            f"{r['gated_s']:>10.1f} {r['peak_rss_mb']:>12,.0f}"
        )


if __name__ == "__main__":
    main()
