"""Benchmark: `raw_mbp10` end to end (decode -> Arrow -> Parquet, every raw check before the commit, one
Delta commit) on synthetic days of 10M and 30M records, against the decode ceiling.

Each measurement runs in a fresh child process, so its peak RSS (`os.wait4`'s rusage of that child) is
its own: imports, great-expectations included, count, as they do in the Dagster step. Per size:

- decode ceiling: `DBNStore.to_ndarray(count=chunk)` over the day's .dbn.zst (and over the same records
  as uncompressed DBN), nothing else;
- raw_mbp10 + checks: `ingest_partition(before_commit=gate, on_batch=gate.observe)`, the asset's path;
  every check's verdict is printed, and all must pass. great-expectations runs in a worker process of the
  child (`raw_quality.ExpectationSummary`): its CPU seconds are added to the child's, its peak RSS given apart.

The table gives wall seconds, records/s, CPU seconds (the process, and each of the three stages' threads),
peak RSS, the Parquet files' size, and the ratios
ingest/decode ceiling and RSS(largest)/RSS(smallest). Days are written once (same config as issue 26:
ofi_strength 0.5, 300 s half-life, 2024-03-14) and cached under `--cache`. Run it with the cores free:
on a shared machine the wall times measure the neighbours too (the CPU seconds less so).

    python benchmarks/bench_ingest.py                          # 10M and 30M, writes results/bench_ingest_cpu.txt
    python benchmarks/bench_ingest.py --sizes 1000000 --no-write
    python benchmarks/bench_ingest.py --code /tmp/phoenix_before   # the same children on another checkout
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAY = dt.date(2024, 3, 14)
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "bench_ingest_cpu.txt"


def day_file(cache: Path, records: int) -> Path:
    """The cached synthetic day of `records` records (written on first use)."""
    from phoenix_assets.lib.synthetic.market import SyntheticMarketConfig, day_file_name, write_day

    folder = cache / f"day_{records}"
    path = folder / day_file_name(DAY)
    if not path.exists():
        cfg = SyntheticMarketConfig(records_per_day=records, ofi_strength=0.5, flow_halflife_s=300.0)
        write_day(DAY, folder, cfg)
    return path


def plain_dbn(path: Path) -> Path:
    """The same day as uncompressed DBN (cached beside it), for the uncompressed decode ceiling."""
    import zstandard

    out = path.with_name(path.name.removesuffix(".zst"))
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        with path.open("rb") as src, tmp.open("wb") as dst:
            zstandard.ZstdDecompressor().copy_stream(src, dst)
        tmp.replace(out)
    return out


def _decode(path: Path, chunk: int) -> dict[str, float]:
    import databento as db

    t0, c0 = time.perf_counter(), time.process_time()
    n = sum(len(c) for c in db.DBNStore.from_file(path).to_ndarray(count=chunk))
    return {"records": n, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


def _ingest(path: Path, chunk: int) -> dict[str, object]:
    from phoenix_assets.defs.ingest.checks import raw_gate
    from phoenix_assets.defs.resources import QualityThresholds
    from phoenix_assets.lib.ingest import raw_quality
    from phoenix_assets.lib.ingest.raw_ingest import ingest_partition
    from phoenix_assets.lib.io.dbn_reader import inspect_dbn
    from phoenix_assets.lib.io.lake import Lake

    info = inspect_dbn(path)
    outcomes: dict = {}
    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)  # the great-expectations worker, once reaped
        t0, c0 = time.perf_counter(), time.process_time()
        gate = raw_gate(DAY, QualityThresholds(), outcomes)  # as the asset does (starts the great-expectations worker)
        try:
            kwargs = {"on_batch": gate.observe} if hasattr(gate, "observe") else {}  # older checkouts: no hook
            stats, _ = ingest_partition(Lake(tmp), [info], DAY, chunk, before_commit=gate, **kwargs)
        finally:
            if hasattr(gate, "close"):
                gate.close()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        stop_worker = getattr(raw_quality, "stop_worker", None)  # older checkouts: no worker
        if stop_worker is not None:
            stop_worker()  # reaped, so that RUSAGE_CHILDREN holds its CPU seconds and peak RSS
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        worker_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        parquet_mb = sum(f.stat().st_size for f in Path(tmp).rglob("*.parquet")) / 1e6
    return {
        "records": stats.rows,
        "wall_s": wall,
        "cpu_s": cpu + worker_cpu,
        "worker_cpu_s": worker_cpu,
        "worker_rss_mb": after.ru_maxrss / 1024 if worker_cpu else 0.0,  # older checkouts: no worker
        "stage_cpu_s": dict(getattr(stats, "thread_cpu", {})),  # older checkouts: not measured
        "parquet_mb": parquet_mb,
        "rss_after_imports_mb": rss_imports,
        "checks": {name: [o.passed, o.description] for name, o in outcomes.items()},
    }


def _stages(cpu: dict[str, float]) -> str:
    """`decode/checks/write` CPU seconds, or n/a (a checkout that does not measure them)."""
    if not cpu:
        return "n/a"
    return "/".join(f"{cpu[k]:.1f}" if k in cpu else "-" for k in ("decode", "checks", "write"))


def _worker(ing: dict) -> str:
    """The great-expectations worker process's CPU seconds / peak RSS MB, or n/a (a checkout without one)."""
    if not ing.get("worker_cpu_s"):
        return "n/a"
    return f"{ing['worker_cpu_s']:.1f}/{ing['worker_rss_mb']:,.0f}"


def child(mode: str, path: Path, chunk: int, code: Path | None) -> tuple[dict, float]:
    """Run one measurement in a fresh process; (its JSON result, its peak RSS in MB)."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, str(path), "--chunk", str(chunk)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=code or REPO)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"bench_ingest: child {mode} {path} failed with exit code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000_000, 30_000_000])
    parser.add_argument("--chunk", type=int, default=65_536, help="records per decoded chunk (the asset's default)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/phoenix_bench"), help="where the days are kept")
    parser.add_argument("--code", type=Path, help="run the children on this checkout (e.g. `git archive` of HEAD)")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.relative_to(REPO)}")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, path = args.child[0], Path(args.child[1])
        result = _decode(path, args.chunk) if mode == "decode" else _ingest(path, args.chunk)
        print(json.dumps(result))
        return

    lines = [
        f"bench_ingest: raw_mbp10 + every blocking check before the commit, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} "
        f"UTC, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start, chunk {args.chunk:,} records"
        + (f", code from {args.code}" if args.code else ""),
        "",
        f"{'records':>11} {'file MB':>8} {'decode zst/s':>13} {'decode dbn/s':>13} {'ingest s':>9} {'ingest/s':>10} "
        f"{'CPU s':>7} {'decode/checks/write CPU s':>26} {'of ceiling':>10} {'peak RSS MB':>12} {'imports MB':>11} "
        f"{'Parquet MB':>11} {'GE worker CPU s/RSS MB':>23}",
    ]
    print("\n".join(lines), flush=True)
    rows = []
    for size in args.sizes:
        path = day_file(args.cache, size)
        zst, _ = child("decode", path, args.chunk, None)
        dbn, _ = child("decode", plain_dbn(path), args.chunk, None)
        ing, rss = child("ingest", path, args.chunk, args.code)
        failed = [f"{name}: {desc}" for name, (passed, desc) in ing["checks"].items() if not passed]
        rate, ceiling = ing["records"] / ing["wall_s"], zst["records"] / zst["wall_s"]
        rows.append((size, rate, rss))
        line = (
            f"{ing['records']:>11,} {path.stat().st_size / 1e6:>8.0f} {ceiling:>13,.0f} "
            f"{dbn['records'] / dbn['wall_s']:>13,.0f} {ing['wall_s']:>9.1f} {rate:>10,.0f} {ing['cpu_s']:>7.1f} "
            f"{_stages(ing.get('stage_cpu_s', {})):>26} {rate / ceiling:>10.2f} {rss:>12,.0f} "
            f"{ing['rss_after_imports_mb']:>11,.0f} {ing.get('parquet_mb', 0.0):>11.1f} "
            f"{_worker(ing):>23}"
        )
        print(line, flush=True)
        lines.append(line)
        if failed:
            lines.append(f"    checks FAILED: {'; '.join(failed)}")
            print(lines[-1], flush=True)
    table_end = len(lines)
    if len(rows) > 1:
        (small, r0, m0), (big, r1, m1) = rows[0], rows[-1]
        lines += [
            "",
            f"{big:,} vs {small:,} records: peak RSS x{m1 / m0:.2f}, records/s x{r1 / r0:.2f}",
        ]
    checks = ", ".join(ing["checks"]) if args.sizes else ""
    lines += [
        "",
        f"checks run before the commit (all passed unless listed above): {checks}",
        "decode zst/s, dbn/s: DBNStore.to_ndarray(count=chunk) alone (the ceiling); ingest/s: wall clock of the",
        "whole ingest + checks + commit; CPU s: the whole process and its great-expectations worker process;",
        "decode/checks/write CPU s: each stage's thread (time.thread_time; write = the caller's thread while the",
        "day streams); peak RSS: the child's ru_maxrss (imports included; the worker, alive at the same time, is",
        "given apart: the sum bounds the two); Parquet MB: the staged files.",
    ]
    print("\n".join(lines[table_end:]))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("\n".join(lines) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
