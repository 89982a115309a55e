"""Benchmark: `./phoenix paper --dbn` replaying one synthetic MNQ day of 200k, 10M and 30M records (issue 26's
"paper-trading replay of one such day"): wall time, records/s and the process's peak RSS, flat or not in the
record count.

Each replay runs `python -m phoenix_assets.cli.paper` in a fresh process on a copy of a lake that holds a trained
`mamba_sac_model` whose test window contains 2024-03-14 (the demo's: run `./phoenix demo` first, or pass
`--lake`), so every replay starts from the same journal. The days are `bench_ingest`'s (same generator
settings, the same cache). Peak RSS is the child's `ru_maxrss` (imports, torch and the model included);
`day s` is the replay loop's own time as the CLI prints it (records in, bars, features, policy, risk, Delta
journal, Nautilus venue), `wall s` the whole process (imports, lake reads, the report). Run it with the cores
free: on a shared machine the wall times measure the neighbours too.

    python benchmarks/bench_paper_replay.py                          # 200k, 10M, 30M; writes results/
    python benchmarks/bench_paper_replay.py --sizes 200000 --no-write
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_ingest import DAY, day_file  # noqa: E402
from table import print_table  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "bench_paper_replay_cpu.txt"
LIMIT_MB = 1536


def replay(lake: Path, path: Path, records: int, work: Path) -> dict:
    """One `./phoenix paper --dbn` replay of `path` in a fresh process on a copy of `lake`."""
    copy = work / f"lake_{records}"
    shutil.copytree(lake, copy)
    cmd = [sys.executable, "-m", "phoenix_assets.cli.paper", "--dbn", str(path), "--start", str(DAY), "--end"]
    cmd += [str(DAY), "--strategy", f"bench{records}", "--lake", str(copy)]
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    shutil.rmtree(copy)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"bench_paper_replay: the replay of {path} failed:\n{out}")
    day = re.search(rf"{DAY}: (\d+) fills, PnL since start \$([-+\d,.]+), risk (\w+), (\d+) s", out)
    latency = re.search(r"record->order ([\d.]+)/([\d.]+) ms", out)
    if day is None or latency is None:
        raise SystemExit(f"bench_paper_replay: no day line in the replay's output:\n{out}")
    return {
        "records": records,
        "wall_s": wall,
        "day_s": float(day.group(4)),
        "fills": int(day.group(1)),
        "pnl": day.group(2),
        "order_ms": f"{latency.group(1)} / {latency.group(2)}",
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 10_000_000, 30_000_000])
    parser.add_argument("--lake", type=Path, default=REPO / "lake", help="a lake with a trained model (the demo's)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/phoenix_bench"), help="where the days are kept")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write results/")
    args = parser.parse_args()
    if not (args.lake / "artifacts" / "mamba_sac_model" / "latest.json").exists():
        raise SystemExit(f"bench_paper_replay: no trained model under {args.lake}: run ./phoenix demo first")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="phoenix_paper_bench_") as tmp:
        runs = [replay(args.lake, day_file(args.cache, n), n, Path(tmp)) for n in args.sizes]
    rows = [
        [
            f"{r['records']:,}",
            f"{r['wall_s']:.1f}",
            f"{r['day_s']:.0f}",
            f"{r['records'] / r['day_s']:,.0f}",
            f"{r['cpu_s']:.1f}",
            str(r["fills"]),
            r["order_ms"],
            f"{r['rss_mb']:,.0f}",
            "ok" if r["rss_mb"] <= LIMIT_MB else "OVER",
        ]
        for r in runs
    ]
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"bench_paper_replay: ./phoenix paper --dbn, one day ({DAY}), {now}, load average {load:.1f} at start"]
    header = ["records", "wall s", "day s", "records/s (day)", "CPU s", "fills", "rec->order p50/p99 ms"]
    header += ["peak RSS MB", "<= 1.5 GB"]
    if len(runs) > 1:
        small, big = runs[0], runs[-1]
        lines.append(
            f"{big['records']:,} vs {small['records']:,} records: peak RSS x{big['rss_mb'] / small['rss_mb']:.2f}, "
            f"day time x{big['day_s'] / small['day_s']:.2f}"
        )
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_table(header, rows)
    text = "\n".join([lines[0], "", buf.getvalue().rstrip(), "", *lines[1:]]) + "\n"
    print(text)
    if not args.no_write:
        old = RESULTS.read_text() if RESULTS.exists() else ""
        RESULTS.write_text(text + ("\n== earlier runs ==\n" + old if old else ""))


if __name__ == "__main__":
    main()
