"""Helpers for the browser test (tests/assets/cli/test_ui_browser.py): a throwaway Dagster home with the demo's data,
`dagster dev` in its own process group, and Debian's Chromium for Playwright."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# Headless Chromium on a machine without internet: without the background-networking flags it keeps
# dialling Google services (component updates, sync, QUIC probes) into a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    """Debian's Chromium (what `.ci/run` installs); Playwright's own browser downloads are never used."""
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def phoenix_env(home: Path, lake: Path, landing: Path) -> dict[str, str]:
    """The environment `./phoenix` would give, pointed at temporary folders."""
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PHOENIX_LAKE_URI": str(lake),
        "PHOENIX_LANDING_DIR": str(landing),
        "PYTHONUNBUFFERED": "1",
    }


def prepare_dagster_home(home: Path) -> None:
    """A DAGSTER_HOME holding a copy of the repo's dagster.yaml (QueuedRunCoordinator, retention...).

    `.nux/nux.yaml` marks Dagster's "Join the Dagster community" dialog as seen: on localhost the UI
    opens it a second after the first page load, over whatever the test is about to click.
    """
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    (home / ".nux").mkdir(exist_ok=True)
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")


def start_in_own_group(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`cmd` from the repo root in a new session (its own process group, so all it starts can be signalled
    together), stdout and stderr to `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_group(proc: subprocess.Popen[bytes]) -> list[str]:
    """Stop a process started by `start_in_own_group` and everything it started: SIGINT to the group, then
    SIGTERM, then SIGKILL, each after a grace period; returns the command lines of descendants that had
    left the group (a setsid'd grandchild) and had to be killed."""
    pgid = proc.pid  # start_new_session: the group is led by the process itself
    try:
        started = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        started = []
    for sig, wait_s in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        if _group_gone(proc, wait_s):
            break
    leftovers = []
    alive = [p for p in started if _alive(p)]
    for p in alive:
        try:
            leftovers.append(" ".join(p.cmdline())[:200])
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    proc.wait(timeout=5)
    return leftovers


def _group_gone(proc: subprocess.Popen[bytes], wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        proc.poll()  # reap our own child, or its zombie would count as a member
        if not any(_alive(p) and _pgid(p) == proc.pid for p in psutil.process_iter()):
            return True
        time.sleep(0.25)
    return False


def run_demo(env: dict[str, str], log: Path, timeout_s: float = 600) -> None:
    """`./phoenix demo --quick` (synthetic 2024-03-13..15 -> raw -> microstructure -> features -> model ->
    evaluation; the full demo's learning run is tested in test_demo_and_instance) in a subprocess, so its Dagster
    instance and environment never leak into the test process.

    ~80 s on 2 idle cores; the timeout is generous because the SAC smoke run slows down a lot when the
    machine is shared. Its own session, so a timeout also ends the Pipes training process it started."""
    proc = start_in_own_group([sys.executable, "-m", "phoenix_assets.cli.demo", "--quick"], env, log)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"phoenix demo not done after {timeout_s:.0f} s; {log}:\n{tail(log)}") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # nothing of the demo outlives it
    if proc.returncode != 0:
        raise AssertionError(f"phoenix demo failed (rc {proc.returncode}); last lines of {log}:\n{tail(log)}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<unreadable: {exc}>"


LOCATIONS_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


class DagsterDev:
    """`dagster dev -h 127.0.0.1 -p <port> -w workspace.yaml` from the repo root, as a context manager.

    Started in a new session (its own process group) through `env --default-signal=INT,TERM`: a parent
    that ignores SIGINT (a background job of a non-interactive shell) would otherwise pass that on and
    `dagster dev` would survive Ctrl-C (../shared/ENVIRONMENT.md). Stopped with SIGINT to the group, then
    SIGTERM, then SIGKILL; every process it started (webserver, daemon, code server, run workers) is
    waited for, and `leftovers` names any that had to be killed.
    """

    def __init__(self, env: dict[str, str], log: Path, port: int | None = None) -> None:
        self.env = env
        self.log = log
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.leftovers: list[str] = []

    def __enter__(self) -> DagsterDev:
        cmd = ["env", "--default-signal=INT,TERM", str(VENV_BIN / "dagster"), "dev"]
        cmd += ["-h", "127.0.0.1", "-p", str(self.port), "-w", "workspace.yaml"]
        self.proc = start_in_own_group(cmd, self.env, self.log)
        try:
            self.wait_until_loaded()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def graphql(self, query: str) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def wait_until_loaded(self, timeout_s: float = 120) -> None:
        """Until the webserver answers and the `phoenix` code location has loaded (or failed: then say why)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        status = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"dagster dev exited with {self.proc.returncode}:\n{tail(self.log)}")
            try:
                entries = self.graphql(LOCATIONS_QUERY)["data"]["workspaceOrError"]["locationEntries"]
            except (OSError, urllib.error.URLError, KeyError, TypeError, ValueError) as exc:
                status = f"{type(exc).__name__}: {exc}"
            else:
                status = json.dumps(entries)
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    errors = [e for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
                    if errors:
                        raise AssertionError(f"code location failed to load: {errors}")
                    return
            time.sleep(1)
        raise AssertionError(f"dagster dev not ready after {timeout_s:.0f} s ({status}):\n{tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None:
            self.leftovers += stop_group(self.proc)
            self.proc = None


def _pgid(p: psutil.Process) -> int | None:
    try:
        return os.getpgid(p.pid)
    except OSError:
        return None


def _alive(p: psutil.Process) -> bool:
    """Running and not a zombie (a zombie whose parent is gone waits for init, it runs nothing)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def ingest_days_and_fit_hmm(days: list[str], records_per_day: int | None = None) -> None:
    """On the current instance (DAGSTER_HOME, lake and landing from the environment): land and ingest each trade
    date (`synthetic_landing_job`, `daily_job`; `records_per_day` for a smaller market), then fit the regime model
    on all of them, in this process: what a backfill of the monthly assets needs first."""
    import dagster as dg

    from phoenix_assets.cli.demo import QUIET
    from phoenix_assets.definitions import defs, resources

    market = (
        {"ops": {"write_synthetic_day": {"config": {"records_per_day": records_per_day}}}} if records_per_day else {}
    )
    with dg.DagsterInstance.get() as instance:
        for day in days:
            for job, config in (("synthetic_landing_job", market), ("daily_job", {})):
                result = defs.resolve_job_def(job).execute_in_process(
                    partition_key=day, instance=instance, run_config={**QUIET, **config}
                )
                assert result.success, (job, day)
        hmm = {"hmm_regime_model": {"config": {"train_start": days[0], "train_end": days[-1]}}}
        fitted = dg.materialize(
            list(defs.assets or []),
            selection=["hmm_regime_model"],
            instance=instance,
            resources=resources(),
            run_config={**QUIET, "ops": hmm},
        )
        assert fitted.success
