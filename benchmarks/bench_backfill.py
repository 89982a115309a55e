"""Benchmark a new user's backfill: N synthetic days of R MBP-10 records through Dagster, step by step.

On a fresh temporary DAGSTER_HOME (the repo's dagster.yaml: SQLite, a queue of 2 runs; plus
deploy/postgres/dagster.yaml when PHOENIX_DAGSTER_PG_URL is set) and a fresh lake, per size:

    1. land N trade dates of the demo's market at R records a day (DEMO_MARKET with records_per_day=R),
       cached under /tmp/phoenix_bench/backfill_demo_v2_r<R>/ (one .dbn.zst per date, reused if present)
    2. `dagster job backfill -j daily_job` over the dates, executed by a real `dagster-daemon`:
       raw_mbp10 -> book_snapshots_1s -> ofi_bars_1m per trade date, two runs at once
    3. `dagster asset materialize --select hmm_regime_model` (fit on the first <= 5 dates)
    4. `dagster job backfill -j features_job` over the months: hmm_regimes and features_1m per month

While it runs, every process under the daemon and the CLI is polled every 0.2 s for its kernel
high-water mark (VmHWM in /proc/<pid>/status, so a spike between polls is still seen unless the
process exits within 0.2 s of it). Each step's time (STEP_START -> STEP_SUCCESS) and process id
come from the runs' event logs, so a step's peak RSS is that of its own process (the multiprocess
executor runs each step in a process of its own). Every asset check must have passed and no log may
say "database is locked". Prints one table per size and instance, the targets, and writes
benchmarks/results/bench_backfill_cpu.txt (--out to change).

    python benchmarks/bench_backfill.py                                   # 20 days x 10M records
    python benchmarks/bench_backfill.py --days 3 --records 2000000        # smaller
    python benchmarks/bench_backfill.py --size 3x10000000 --size 1x30000000  # 10M -> 30M flatness
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: the repo's packages
sys.path.insert(0, str(REPO / "benchmarks"))  # table.py

from table import print_table  # noqa: E402

from phoenix_assets.lib import calendar as cal  # noqa: E402

VENV_BIN = Path(sys.executable).parent
CACHE = Path("/tmp/phoenix_bench")
FIRST_DATE = dt.date(2024, 2, 1)  # 20 trade dates from here fill February 2024 (one monthly partition)
HMM_TRAIN_DAYS = 5
POLL_S = 0.2
BACKFILL_TIMEOUT_S = 4 * 3600
RSS_LIMIT_MB = 1536  # every step <= 1.5 GB
MONTH_LIMIT_S = 15 * 60  # a 20-day month <= 15 min on 2 cores
MONTH_DAYS = 20
DAILY_STEPS = ("raw_mbp10", "book_snapshots_1s", "ofi_bars_1m")
MONTHLY_STEPS = ("hmm_regimes", "features_1m")
LOCKED = "database is locked"


@dataclasses.dataclass(frozen=True)
class Size:
    days: int
    records: int

    @property
    def label(self) -> str:
        return f"{self.days} x {self.records / 1e6:g}M"


def parse_size(text: str) -> Size:
    days, _, records = text.lower().partition("x")
    try:
        size = Size(int(days), int(float(records)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size {text!r}: expected DAYSxRECORDS, e.g. 3x10000000") from None
    if size.days < 1 or size.records < 1_000:
        raise argparse.ArgumentTypeError(f"--size {text!r}: need >= 1 day and >= 1000 records a day")
    return size


# --- data ---------------------------------------------------------------------------------------------


def trade_dates(days: int) -> list[dt.date]:
    """The first `days` CME trade dates from FIRST_DATE (Monday-Friday)."""
    return cal.trade_dates_between(FIRST_DATE, FIRST_DATE + dt.timedelta(days=2 * days + 7))[:days]


def land_days(dates: list[dt.date], records: int) -> tuple[Path, float]:
    """The cached landing folder holding these dates at `records` a day (writes the missing ones); seconds spent.

    v2 in the name: days written after the issue-26 volatility rule (a day above 200k records keeps the
    200k day's number of price moves), so a cache of older, wilder days is never reused.
    """
    from phoenix_assets.lib.synthetic.market import DEMO_MARKET, day_file_name, write_day

    folder = CACHE / f"backfill_demo_v2_r{records}"
    cfg = dataclasses.replace(DEMO_MARKET, records_per_day=records)
    t0 = time.perf_counter()
    for day in dates:
        if not (folder / day_file_name(day)).exists():
            print(f"  writing {day} ({records:,} records) into {folder}", flush=True)
            write_day(day, folder, cfg)
    return folder, time.perf_counter() - t0


# --- processes ----------------------------------------------------------------------------------------


class PeakRss:
    """Polls the kernel's RSS high-water mark of every descendant of the watched roots (a thread)."""

    def __init__(self) -> None:
        self.peak_mb: dict[int, float] = {}
        self.cpu_s: dict[int, float] = {}  # user + system seconds, last seen (contention-proof, unlike wall time)
        self.cmdline: dict[int, str] = {}
        self.roots: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _hwm_mb(pid: int) -> float | None:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            procs: list[psutil.Process] = []
            for root in list(self.roots):
                with contextlib.suppress(psutil.Error):
                    top = psutil.Process(root)
                    procs += [top, *top.children(recursive=True)]
            for proc in procs:
                hwm = self._hwm_mb(proc.pid)
                if hwm is None:
                    continue
                if proc.pid not in self.cmdline:
                    with contextlib.suppress(psutil.Error):
                        self.cmdline[proc.pid] = " ".join(proc.cmdline())[:160]
                self.peak_mb[proc.pid] = max(hwm, self.peak_mb.get(proc.pid, 0.0))
                with contextlib.suppress(psutil.Error):
                    cpu = proc.cpu_times()
                    self.cpu_s[proc.pid] = max(cpu.user + cpu.system, self.cpu_s.get(proc.pid, 0.0))
            self._stop.wait(POLL_S)


def start_group(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`cmd` from the repo root in its own session (so it and all it starts can be signalled together)."""
    with log.open("ab") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT to the group, then SIGTERM, then SIGKILL, each after a grace period."""
    for sig, wait_s in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 0)  # the leader is gone; anything left in its group?
                continue
            return


def cli(env: dict[str, str], log: Path, rss: PeakRss, *args: str) -> str:
    """A `dagster` command (watched by `rss`); its output is appended to `log` and returned."""
    with log.open("ab") as out:
        out.write(f"\n$ dagster {' '.join(args)}\n".encode())
    proc = subprocess.Popen(
        [str(VENV_BIN / "dagster"), *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    rss.roots.add(proc.pid)
    stdout, _ = proc.communicate()
    text = stdout.decode(errors="replace")
    with log.open("a") as out:
        out.write(text)
    if proc.returncode != 0:
        raise RuntimeError(f"dagster {' '.join(args)} failed (rc {proc.returncode}); see {log}:\n{text[-3000:]}")
    return text


@contextlib.contextmanager
def daemon(env: dict[str, str], log: Path, rss: PeakRss) -> Iterator[None]:
    """`dagster-daemon run -w workspace.yaml` (its code server and run workers are its descendants)."""
    cmd = ["env", "--default-signal=INT,TERM", str(VENV_BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"]
    proc = start_group(cmd, env, log)
    rss.roots.add(proc.pid)
    try:
        yield
    finally:
        stop_group(proc)


# --- the instance -------------------------------------------------------------------------------------


def prepare_home(home: Path, instance: str) -> None:
    home.mkdir(parents=True)
    source = REPO / "deploy" / "postgres" / "dagster.yaml" if instance == "postgres" else REPO / "dagster.yaml"
    shutil.copy(source, home / "dagster.yaml")


def wait_for_backfill(home: Path, backfill_id: str, log: Path) -> list[object]:
    """Poll the instance until the backfill is done and every run of it has finished; its runs."""
    import dagster as dg

    from phoenix_assets.defs.ops.dagster_internals import BulkActionStatus

    done = {BulkActionStatus.COMPLETED, BulkActionStatus.COMPLETED_SUCCESS}
    failed = {BulkActionStatus.FAILED, BulkActionStatus.COMPLETED_FAILED, BulkActionStatus.CANCELED}
    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    with dg.DagsterInstance.from_config(str(home)) as instance:
        while time.monotonic() < deadline:
            backfill = instance.get_backfill(backfill_id)
            if backfill is None or backfill.status in failed:
                raise RuntimeError(f"backfill {backfill_id}: {backfill and backfill.status}; see {log}")
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
            if backfill.status in done and runs and all(r.is_finished for r in runs):
                return list(runs)
            time.sleep(1.0)
    raise RuntimeError(f"backfill {backfill_id} not done after {BACKFILL_TIMEOUT_S} s; see {log}")


def backfill(env: dict[str, str], home: Path, log: Path, rss: PeakRss, job: str, first: str, last: str) -> list:
    import dagster as dg

    out = cli(env, log, rss, "job", "backfill", "-w", "workspace.yaml", "-j", job, "--from", first, "--to", last,
              "--noprompt")  # fmt: skip
    if "Launched backfill job" not in out:
        raise RuntimeError(f"dagster job backfill -j {job}: no backfill launched:\n{out[-2000:]}")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        backfill_id = instance.get_backfills(limit=1)[0].backfill_id
    runs = wait_for_backfill(home, backfill_id, log)
    ok = dg.DagsterRunStatus.SUCCESS
    failed = [f"{r.run_id} ({r.tags.get('dagster/partition')})" for r in runs if r.status != ok]
    if failed:
        raise RuntimeError(f"{job} backfill {backfill_id}: runs failed: {', '.join(failed)}; their errors are in {log}")
    return runs


@dataclasses.dataclass
class StepRecord:
    asset: str
    partition: str
    seconds: float
    pid: int | None
    records: int  # raw records the step covers (its day, or its month's days)
    peak_mb: float = float("nan")
    process_cpu_s: float = float("nan")  # CPU of the step's whole process (its imports included)


def step_records(home: Path, run_ids: list[str], raw_rows: dict[str, int]) -> tuple[list[StepRecord], list[str]]:
    """Per step of these runs: time from its own events, its process id; and every failure seen (failed
    steps or runs, failed asset checks, a locked database)."""
    import dagster as dg

    steps: list[StepRecord] = []
    problems: list[str] = []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for run_id in run_ids:
            run = instance.get_run_by_id(run_id)
            assert run is not None
            partition = run.tags.get("dagster/partition", "-")
            if run.status != dg.DagsterRunStatus.SUCCESS:
                problems.append(f"run {run_id} ({run.job_name} {partition}) {run.status.value}")
            start: dict[str, tuple[float, int | None]] = {}
            for entry in instance.all_logs(run_id):
                if LOCKED in (entry.user_message or "") or LOCKED in json.dumps(str(entry.dagster_event)):
                    problems.append(f"run {run_id}: {LOCKED}")
                event = entry.dagster_event
                if event is None:
                    continue
                kind = event.event_type_value
                if kind == "ASSET_MATERIALIZATION" and event.asset_key.to_user_string() == "raw_mbp10":
                    rows = event.event_specific_data.materialization.metadata.get("dagster/row_count")
                    if rows is not None:
                        raw_rows[partition] = int(rows.value)
                elif kind == "ASSET_CHECK_EVALUATION":
                    check = event.event_specific_data
                    if not check.passed:
                        problems.append(f"check {check.asset_key.to_user_string()}.{check.check_name} {partition}")
                elif kind == "STEP_START":
                    start[entry.step_key] = (entry.timestamp, event.pid)
                elif kind == "STEP_FAILURE":
                    problems.append(f"step {entry.step_key} {partition} failed")
                elif kind == "STEP_SUCCESS" and entry.step_key in start:
                    t0, pid = start[entry.step_key]
                    steps.append(StepRecord(entry.step_key, partition, entry.timestamp - t0, pid, 0))
    return steps, problems


# --- one size on one instance -------------------------------------------------------------------------


def run_size(size: Size, instance: str, keep: bool) -> dict:
    dates = trade_dates(size.days)
    landing, land_s = land_days(dates, size.records)
    tmp = Path(tempfile.mkdtemp(prefix="phoenix_backfill_", dir=CACHE))
    home, lake, log = tmp / "dagster_home", tmp / "lake", tmp / "dagster.log"
    prepare_home(home, instance)
    os.environ["DAGSTER_HOME"] = str(home)  # dagster.yaml reads it; this process opens the instance too
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PHOENIX_LAKE_URI": str(lake),
        "PHOENIX_LANDING_DIR": str(landing),
        "PYTHONUNBUFFERED": "1",
    }
    first, last = dates[0].isoformat(), dates[-1].isoformat()
    months = sorted({d.replace(day=1) for d in dates})
    train = dates[:HMM_TRAIN_DAYS]
    hmm_config = {"ops": {"hmm_regime_model": {"config": {"train_start": train[0].isoformat(),
                                                            "train_end": train[-1].isoformat()}}}}  # fmt: skip
    print(f"{size.label} on {instance}: {first}..{last}, home {home}", flush=True)
    load_before = os.getloadavg()[1]
    raw_rows: dict[str, int] = {}
    with PeakRss() as rss:
        for sensor in ("phoenix_automation", "retrain_sensor"):  # only the backfill acts
            cli(env, log, rss, "sensor", "stop", "-w", "workspace.yaml", sensor)
        with daemon(env, log, rss):
            t0 = time.perf_counter()
            daily_runs = backfill(env, home, log, rss, "daily_job", first, last)
            t_daily = time.perf_counter()
            cli(env, log, rss, "asset", "materialize", "-m", "phoenix_assets.definitions",
                "--select", "hmm_regime_model", "--config-json", json.dumps(hmm_config))  # fmt: skip
            t_hmm = time.perf_counter()
            monthly_runs = backfill(env, home, log, rss, "features_job", months[0].isoformat(), months[-1].isoformat())
            t_features = time.perf_counter()
    run_ids = [r.run_id for r in daily_runs + monthly_runs]
    steps, problems = step_records(home, run_ids, raw_rows)
    if LOCKED in log.read_text(errors="replace"):
        problems.append(f"{LOCKED} in {log}")
    by_month: dict[str, int] = {}
    for day, rows in raw_rows.items():
        key = dt.date.fromisoformat(day).replace(day=1).isoformat()
        by_month[key] = by_month.get(key, 0) + rows
    for step in steps:
        step.records = (raw_rows if step.asset in DAILY_STEPS else by_month).get(step.partition, 0)
        if step.pid is not None:
            step.peak_mb = rss.peak_mb.get(step.pid, float("nan"))
            step.process_cpu_s = rss.cpu_s.get(step.pid, float("nan"))
    result = {
        "size": dataclasses.asdict(size),
        "instance": instance,
        "dates": [first, last],
        "landing_s": land_s,
        "daily_backfill_s": t_daily - t0,
        "hmm_fit_s": t_hmm - t_daily,
        "features_backfill_s": t_features - t_hmm,
        "total_s": t_features - t0,
        "raw_records": sum(raw_rows.values()),
        "steps": [dataclasses.asdict(s) for s in steps],
        "max_process_mb": max(rss.peak_mb.values(), default=0.0),
        "load_avg_5min": [load_before, os.getloadavg()[1]],
        "tree_cpu_s": sum(rss.cpu_s.values()),  # daemon, code server, run workers, steps, CLI commands
        "problems": problems,
        "log": str(log),
    }
    if not keep and not problems:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


# --- report -------------------------------------------------------------------------------------------


def summarise(result: dict) -> tuple[list[list[str]], dict[str, dict[str, float]]]:
    """One row per asset: steps, total and mean time, records/s (sum of records / sum of step time), peak RSS."""
    rows, per_asset = [], {}
    for asset in (*DAILY_STEPS, *MONTHLY_STEPS):
        steps = [s for s in result["steps"] if s["asset"] == asset]
        if not steps:
            continue
        total = sum(s["seconds"] for s in steps)
        records = sum(s["records"] for s in steps)
        peak = max(s["peak_mb"] for s in steps)
        cpu = sum(s["process_cpu_s"] for s in steps)
        per_asset[asset] = {
            "seconds": total,
            "records_per_s": records / total if total else 0.0,
            "peak_mb": peak,
            "cpu_s_per_m": cpu / records * 1e6 if records else float("nan"),
        }
        rows.append([
            asset, str(len(steps)), f"{total:,.1f}", f"{total / len(steps):,.1f}", f"{cpu / len(steps):,.1f}",
            f"{records / total:,.0f}" if total else "-", f"{peak:,.0f}", "ok" if peak <= RSS_LIMIT_MB else "OVER",
        ])  # fmt: skip
    return rows, per_asset


def report(results: list[dict], out: Path) -> None:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        print(f"bench_backfill  {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC  {platform.node()}  "
              f"{os.cpu_count()} cores (shared: other engineers' jobs ran at the same time)")  # fmt: skip
        print("step time = STEP_START -> STEP_SUCCESS of the step's own events; peak RSS = VmHWM of the step's own "
              "process (polled every 0.2 s); records/s = raw records covered / step seconds")  # fmt: skip
        summaries = {}
        for r in results:
            size = Size(**r["size"])
            print(f"\n== {size.label} records/day on {r['instance']} ({r['dates'][0]}..{r['dates'][1]}, "
                  f"{r['raw_records']:,} raw records) ==")  # fmt: skip
            rows, per_asset = summarise(r)
            summaries[(size, r["instance"])] = per_asset
            header = ["step", "runs", "total s", "s/partition", "process CPU s/partition", "records/s", "peak RSS MB"]
            print_table([*header, "<= 1.5 GB"], rows)
            print(
                f"5-min load average {r['load_avg_5min'][0]:.1f} before, {r['load_avg_5min'][1]:.1f} after "
                f"(2 cores: wall times above 2 mean other jobs took the CPU; process CPU includes imports)"
            )
            month = r["total_s"] / size.days * MONTH_DAYS
            print(f"wall: daily backfill {r['daily_backfill_s']:,.0f} s, hmm fit {r['hmm_fit_s']:,.0f} s, "
                  f"features backfill {r['features_backfill_s']:,.0f} s, total {r['total_s']:,.0f} s "
                  f"(landing {r['landing_s']:,.0f} s, not counted)")  # fmt: skip
            label = "measured" if size.days >= MONTH_DAYS else f"EXTRAPOLATED from {size.days} days, linear in days"
            verdict = "meets" if month <= MONTH_LIMIT_S else "MISSES"
            print(f"a {MONTH_DAYS}-day month: {month / 60:,.1f} min ({label}); target <= 15 min on 2 cores: {verdict}")
            # On a shared machine wall time measures the other jobs too; CPU seconds / 2 cores is what the same
            # work takes on 2 free cores if the two runs at once keep both busy (a lower bound on the wall time).
            step_cpu = sum(s["process_cpu_s"] for s in r["steps"])
            cpu_month = step_cpu / 2 / size.days * MONTH_DAYS
            verdict = "meets" if cpu_month <= MONTH_LIMIT_S else "MISSES"
            tree = f", all processes {r['tree_cpu_s']:,.0f} CPU s" if "tree_cpu_s" in r else ""
            print(
                f"CPU: step processes {step_cpu:,.0f} CPU s{tree}; a {MONTH_DAYS}-day month on 2 free cores from "
                f"the steps' CPU: {cpu_month / 60:,.1f} min (EXTRAPOLATED, lower bound): {verdict}"
            )
            print(
                f"largest process of any kind (daemon, code server, run workers, steps): {r['max_process_mb']:,.0f} MB"
            )
            fine = "every run succeeded, every asset check passed, no 'database is locked'"
            print("checks and runs: " + (fine if not r["problems"] else "PROBLEMS: " + "; ".join(r["problems"][:20])))
        sizes = sorted({k[0] for k in summaries}, key=lambda s: s.records)
        if len(sizes) > 1:
            lo, hi = sizes[0], sizes[-1]
            print(f"\n== flatness {lo.records / 1e6:g}M -> {hi.records / 1e6:g}M records/day "
                  f"(target: peak RSS and records/s flat) ==")  # fmt: skip
            rows = []
            for (size, inst), per in summaries.items():
                if size != hi:
                    continue
                base = summaries.get((lo, inst), {})
                for asset, now in per.items():
                    if asset in base:
                        b = base[asset]
                        rows.append([inst, asset, f"{b['peak_mb']:,.0f} -> {now['peak_mb']:,.0f}",
                                     f"{now['peak_mb'] / b['peak_mb']:.2f}",
                                     f"{b['records_per_s']:,.0f} -> {now['records_per_s']:,.0f}",
                                     f"{now['records_per_s'] / b['records_per_s']:.2f}",
                                     f"{b['cpu_s_per_m']:,.2f} -> {now['cpu_s_per_m']:,.2f}"])  # fmt: skip
            print_table(["instance", "step", "peak RSS MB", "ratio", "records/s (wall)", "ratio",
                         "process CPU s per 1M records"], rows)  # fmt: skip
            print("(CPU per record falls with size where the process's fixed start-up, ~5 CPU s, dominates)")
    text = buffer.getvalue()
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    print(f"written: {out} and {out.with_suffix('.json')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=MONTH_DAYS, help="trade dates (default 20)")
    parser.add_argument("--records", type=int, default=10_000_000, help="records per day (default 10M)")
    parser.add_argument("--size", type=parse_size, action="append", help="DAYSxRECORDS, repeatable (overrides both)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_backfill_cpu.txt")
    parser.add_argument("--keep", action="store_true", help="keep the temporary Dagster home and lake")
    parser.add_argument("--report-only", type=Path, help="print the tables of a saved .json again (no run)")
    args = parser.parse_args()
    if args.report_only:
        report(json.loads(args.report_only.read_text()), args.out)
        return
    sizes = args.size or [Size(args.days, args.records)]
    instances = ["sqlite", "postgres"] if os.environ.get("PHOENIX_DAGSTER_PG_URL") else ["sqlite"]
    CACHE.mkdir(parents=True, exist_ok=True)
    results = []
    for size in sizes:
        for inst in instances:
            results.append(run_size(size, inst, args.keep))
            report(results, args.out)  # after every size, so a long run's finished sizes are kept


if __name__ == "__main__":
    main()
