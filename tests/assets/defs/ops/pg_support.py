"""Helpers of the tests that run Dagster on PostgreSQL: the test server, a DAGSTER_HOME holding
deploy/postgres/dagster.yaml, Dagster's processes in their own process groups, and what "nothing lost or locked"
means in a log and in the run records.

The server comes from $PHOENIX_TEST_PG_SERVER, the URL of a database on a PostgreSQL server where the test role may
create databases (`.ci/run` starts a throwaway cluster and sets it; conftest.py's `dagster_pg_url` makes a fresh
database per test). Without it the tests skip, unless PHOENIX_REQUIRE_POSTGRES=1 (CI), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import dagster as dg
import pytest

from tests.ui_support import REPO, VENV_BIN, start_in_own_group, stop_group, tail

SERVER_ENV = "PHOENIX_TEST_PG_SERVER"
PG_INSTANCE_YAML = REPO / "deploy" / "postgres" / "dagster.yaml"
# what SQLite reports under concurrent writers (dagster-io/dagster#2884), and what a lost connection looks like
LOCK_SYMPTOMS = ("database is locked", "OperationalError", "could not obtain lock", "deadlock detected")
T = TypeVar("T")


def server_url() -> str:
    url = os.environ.get(SERVER_ENV, "")
    if not url.startswith("postgresql"):
        if os.environ.get("PHOENIX_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PHOENIX_REQUIRE_POSTGRES=1 but {SERVER_ENV} is not a postgresql:// URL ({url!r})")
        pytest.skip(f"{SERVER_ENV} is not set to a PostgreSQL server URL (.ci/run starts one)")
    return url


def pg_dagster_home(home: Path) -> Path:
    """A DAGSTER_HOME holding a copy of deploy/postgres/dagster.yaml (what `./phoenix dev` links there when
    PHOENIX_DAGSTER_PG_URL is set)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PG_INSTANCE_YAML, home / "dagster.yaml")
    (home / ".nux").mkdir(exist_ok=True)
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    return home


def cli(env: dict[str, str], *args: str, timeout_s: float = 180) -> str:
    """`dagster <args>` from the repo root; fails the test with its output unless it exits 0."""
    proc = subprocess.run(
        [str(VENV_BIN / "dagster"), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    assert proc.returncode == 0, f"dagster {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@contextlib.contextmanager
def dagster_process(cmd: Sequence[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A Dagster command line (`dagster-daemon run ...`, `dagster api grpc ...`, `dagster-webserver ...`) in its
    own process group, run through `env --default-signal=INT,TERM` (a background shell's ignored SIGINT would be
    inherited otherwise); stopped with everything it started, and asserted to have left nothing behind."""
    proc = start_in_own_group(["env", "--default-signal=INT,TERM", *cmd], env, log)
    try:
        yield proc
    finally:
        leftovers = stop_group(proc)
        assert not leftovers, f"{cmd[0]} left processes behind that had to be killed: {leftovers}"


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, log: Path | None = None) -> T:
    """`probe()` every second until it returns something (not None) or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        time.sleep(1)
    raise AssertionError(f"{what}: not after {timeout_s:.0f} s" + (f"; {log}:\n{tail(log, 60)}" if log else ""))


def assert_no_lock_errors(*logs: Path) -> None:
    for log in logs:
        text = log.read_text(errors="replace") if log.exists() else ""
        found = [s for s in LOCK_SYMPTOMS if s in text]
        assert not found, f"{log} reports {found}:\n{tail(log, 60)}"


def assert_overlapped(records: Sequence[dg.RunRecord]) -> None:
    """The runs were in progress at the same time: each started before any of them ended."""
    assert all(r.start_time and r.end_time for r in records), [(r.start_time, r.end_time) for r in records]
    latest_start = max(r.start_time or 0.0 for r in records)
    earliest_end = min(r.end_time or 0.0 for r in records)
    spans = {r.dagster_run.run_id[:8]: (r.start_time, r.end_time) for r in records}
    assert latest_start < earliest_end, f"runs did not overlap (start, end): {spans}"
