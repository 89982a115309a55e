"""Benchmark the 1-second book/OFI kernel and the 1-minute bars on synthetic MBP-10 days.

For each size a synthetic day is written first (not timed), then a fresh child process streams it in
1M-record chunks, so its peak RSS (`ru_maxrss`) is that of the streaming pass alone (imports and
numba kernels loaded from cache included; a warm-up compiles them first if needed). Figures:

    decode        plain DBN decode, `DBNStore.to_ndarray(count=...)` (zstd + records to NumPy)
    kernel        `BookOfiState.process_chunk` on ready `BookArrays` (the numba pass, one core), one
                  streaming pass: includes the first touch of the freshly allocated output memory
    warm          the same on the first 1M-record chunk again, best of 3 (allocator warm): compute only
    +adapter      `arrays_from_dbn` + `process_chunk` (`arrays_from_dbn` makes zero-copy views)
    end to end    decode + adapter + kernel + flush, then `seconds_frame` + `ofi_bars_1m`
    naive         the pure-Python reference of tests/assets/lib/market/test_book_kernel.py on the first
                  --naive-sample records (decoding them to Python objects is not timed)
    kernel/naive  kernel records/s (whole day) / naive records/s; the same-sample ratio is printed below

    python benchmarks/bench_microstructure.py            # 1M records
    python benchmarks/bench_microstructure.py --full     # 1M and 10M records
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
TRADE_DATE = dt.date(2024, 3, 5)
CHUNK = 1_000_000


def _rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reference_module() -> ModuleType:
    """The naive reference lives with its tests; load that file as a module."""
    spec = importlib.util.spec_from_file_location("test_book_kernel", REPO / "tests" / "test_book_kernel.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def stream(path: Path) -> dict[str, float]:
    """Time decode, kernel and bars over the whole file; runs inside the child process."""
    import databento as db
    import numpy as np

    from phoenix_assets.lib.market.bars import ofi_bars_1m, seconds_frame
    from phoenix_assets.lib.market.book_kernel import BookOfiState, arrays_from_dbn

    warm = next(iter(db.DBNStore.from_file(path).to_ndarray(count=5_000)))
    BookOfiState().process_chunk(arrays_from_dbn(warm))  # compile or load the numba cache

    t0 = time.perf_counter()
    records = sum(len(c) for c in db.DBNStore.from_file(path).to_ndarray(count=CHUNK))
    decode_s = time.perf_counter() - t0

    state = BookOfiState()
    parts = []
    kernel_s = adapter_s = 0.0
    first = None
    t_all = time.perf_counter()
    for chunk in db.DBNStore.from_file(path).to_ndarray(count=CHUNK):
        first = chunk if first is None else first
        t1 = time.perf_counter()
        arrays = arrays_from_dbn(chunk)
        t2 = time.perf_counter()
        parts.append(state.process_chunk(arrays))
        t3 = time.perf_counter()
        adapter_s += t2 - t1
        kernel_s += t3 - t2
    parts.append(state.flush())
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    t4 = time.perf_counter()
    bars = ofi_bars_1m(seconds_frame(columns))
    bars_s = time.perf_counter() - t4
    e2e_s = time.perf_counter() - t_all
    rss = _rss_mb()
    seconds_rows, n_bars = len(columns["ts"]), bars.height
    del parts, columns, bars
    warm_s = float("inf")
    assert first is not None
    for _ in range(3):
        arrays = arrays_from_dbn(first)
        t5 = time.perf_counter()
        BookOfiState().process_chunk(arrays)
        warm_s = min(warm_s, time.perf_counter() - t5)
    return {
        "records": records,
        "seconds_rows": seconds_rows,
        "bars": n_bars,
        "decode_s": decode_s,
        "kernel_s": kernel_s,
        "adapter_s": adapter_s,
        "bars_s": bars_s,
        "end_to_end_s": e2e_s,
        "rss_peak_mb": rss,
        "warm_records": len(first),
        "warm_s": warm_s,
    }


def naive(path: Path, sample: int) -> dict[str, float]:
    """Naive reference vs kernel on the first `sample` records (decode to objects not timed)."""
    import databento as db

    from phoenix_assets.lib.market.book_kernel import arrays_from_dbn, book_ofi_1s

    ref = _reference_module()
    recs = []
    for r in db.DBNStore.from_file(path):
        lv = r.levels
        recs.append(
            ref.Rec(
                int(r.ts_recv),
                int(r.instrument_id),
                str(r.action),
                str(r.side),
                int(r.flags),
                int(r.price),
                int(r.size),
                [int(x.bid_px) for x in lv],
                [int(x.ask_px) for x in lv],
                [int(x.bid_sz) for x in lv],
                [int(x.ask_sz) for x in lv],
            )
        )
        if len(recs) == sample:
            break
    t0 = time.perf_counter()
    ref.reference_buckets(recs)
    naive_s = time.perf_counter() - t0
    arr = next(iter(db.DBNStore.from_file(path).to_ndarray(count=sample)))
    kernel_s = float("inf")
    for _ in range(3):  # best of 3: the first pass also pays for fresh output memory
        t1 = time.perf_counter()
        book_ofi_1s([arrays_from_dbn(arr)])
        kernel_s = min(kernel_s, time.perf_counter() - t1)
    return {"sample": len(recs), "naive_s": naive_s, "kernel_sample_s": kernel_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also run the 10M-record day")
    parser.add_argument(
        "--naive-sample",
        type=int,
        default=1_000_000,
        help="records for the naive reference (default: the whole 1M day, the first 1M of the 10M day)",
    )
    parser.add_argument("--child", choices=["stream", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "stream":
        print(json.dumps(stream(args.path)))
        return
    if args.child == "naive":
        print(json.dumps(naive(args.path, args.naive_sample)))
        return

    from phoenix_assets.lib.synthetic.market import SyntheticMarketConfig, write_day

    def child(mode: str, path: Path) -> dict[str, float]:
        cmd = [sys.executable, __file__, "--child", mode, "--path", str(path)]
        cmd += ["--naive-sample", str(args.naive_sample)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    sizes = [1_000_000, 10_000_000] if args.full else [1_000_000]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = write_day(TRADE_DATE, Path(tmp) / str(n), SyntheticMarketConfig(records_per_day=n))
            row = child("stream", path)
            row.update(child("naive", path))
            rows.append(row)
            path.unlink()

    def rate(records: float, seconds: float) -> str:
        return f"{records / seconds / 1e6:>9.2f}M"

    header = (
        f"{'records':>11} {'decode/s':>10} {'kernel/s':>10} {'warm/s':>10} {'+adapter/s':>10} {'e2e/s':>10} "
        f"{'bars s':>7} {'naive/s':>10} {'kernel/naive':>12} {'1s rows':>8} {'bars':>6} {'peak RSS MB':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        n = r["records"]
        naive_rate = r["sample"] / r["naive_s"]
        kernel_rate = n / r["kernel_s"]
        print(
            f"{n:>11,} {rate(n, r['decode_s'])} {rate(n, r['kernel_s'])} {rate(r['warm_records'], r['warm_s'])} "
            f"{rate(n, r['kernel_s'] + r['adapter_s'])} {rate(n, r['end_to_end_s'])} {r['bars_s']:>7.2f} "
            f"{naive_rate / 1e6:>9.3f}M {kernel_rate / naive_rate:>11,.0f}x {r['seconds_rows']:>8,} "
            f"{r['bars']:>6,} {r['rss_peak_mb']:>11.0f}"
        )
    for r in rows:
        same = r["sample"] / r["kernel_sample_s"]
        print(
            f"{r['records']:,}-record day: naive on its first {r['sample']:,} records; the kernel on the same "
            f"records (adapter, flush, best of 3): {same / 1e6:.2f}M records/s = "
            f"{same / (r['sample'] / r['naive_s']):,.0f}x naive"
        )


if __name__ == "__main__":
    main()
