"""Dagster's production shape, run here as separate processes on one PostgreSQL instance: the code location as a
gRPC server (`dagster api grpc`), `dagster-webserver` loading it from a workspace that names its host and port, and
`dagster-daemon`. A run submitted through the webserver's GraphQL API (the `dagster-graphql` client) is queued,
launched by the daemon through the code server and succeeds; then every process stops and leaves nothing behind.
deploy/README.md says which parts of deploy/ this covers (the instance and the processes; not Docker, ECS or K8s)."""

from __future__ import annotations

import datetime as dt
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import psutil
import pytest
import yaml
from dagster_graphql import DagsterGraphQLClient

from phoenix_assets.lib.synthetic.market import day_file_name
from tests.assets.defs.ops.pg_support import assert_no_lock_errors, dagster_process, pg_dagster_home, wait_for
from tests.ui_support import LOCATIONS_QUERY, VENV_BIN, free_port, phoenix_env

pytestmark = [
    pytest.mark.slow,
    # dagster-graphql 1.13's client still passes gql 4's deprecated execute(variable_values=...) arguments
    pytest.mark.filterwarnings("ignore:Using variable_values and operation_name:DeprecationWarning"),
]

TRADE_DATE = "2024-03-13"
START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 180


def _port_open(port: int) -> bool | None:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return None
    return True


def _location_loaded(url: str) -> bool | None:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": LOCATIONS_QUERY}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            entries = json.load(response)["data"]["workspaceOrError"]["locationEntries"]
    except (OSError, urllib.error.URLError, KeyError, TypeError, ValueError):
        return None
    if not entries or any(e["loadStatus"] != "LOADED" for e in entries):
        return None
    errors = [e for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
    assert not errors, f"code location failed to load in the webserver: {errors}"
    return True


def test_code_server_webserver_and_daemon_on_postgres_run_a_job_from_graphql(
    tmp_path: Path, dagster_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = pg_dagster_home(tmp_path / "dagster_home")
    landing = tmp_path / "landing"
    env = {**phoenix_env(home, tmp_path / "lake", landing), "PHOENIX_DAGSTER_PG_URL": dagster_pg_url}
    grpc_port, web_port = free_port(), free_port()
    workspace = tmp_path / "workspace.yaml"  # what deploy/docker/workspace.yaml says, with this machine's address
    workspace.write_text(
        yaml.safe_dump(
            {"load_from": [{"grpc_server": {"host": "127.0.0.1", "port": grpc_port, "location_name": "phoenix"}}]}
        )
    )
    logs = {name: tmp_path / f"{name}.log" for name in ("grpc", "webserver", "daemon")}
    grpc_cmd = [str(VENV_BIN / "dagster"), "api", "grpc", "-m", "phoenix_assets.definitions"]
    grpc_cmd += ["-h", "127.0.0.1", "-p", str(grpc_port)]
    web_cmd = [str(VENV_BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port), "-w", str(workspace)]
    daemon_cmd = [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(workspace)]
    pids: list[int] = []

    with dagster_process(grpc_cmd, env, logs["grpc"]) as grpc:
        pids.append(grpc.pid)
        wait_for("dagster api grpc listening", lambda: _port_open(grpc_port), START_TIMEOUT_S, logs["grpc"])
        with (
            dagster_process(web_cmd, env, logs["webserver"]) as web,
            dagster_process(daemon_cmd, env, logs["daemon"]) as daemon,
        ):
            pids += [web.pid, daemon.pid]
            url = f"http://127.0.0.1:{web_port}"
            wait_for(
                "the webserver loading the code location",
                lambda: _location_loaded(url),
                START_TIMEOUT_S,
                logs["webserver"],
            )
            client = DagsterGraphQLClient("127.0.0.1", port_number=web_port)
            run_id = client.submit_job_execution(
                "synthetic_landing_job",
                repository_location_name="phoenix",
                run_config={"ops": {"write_synthetic_day": {"config": {"records_per_day": 5_000}}}},
                tags={"dagster/partition": TRADE_DATE},
            )

            def finished() -> dg.DagsterRunStatus | None:
                status = client.get_run_status(run_id)
                return status if status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE) else None

            status = wait_for(f"run {run_id}", finished, RUN_TIMEOUT_S, logs["daemon"])
            assert status == dg.DagsterRunStatus.SUCCESS, f"run {run_id} {status}"
            children = {p.pid for pid in pids for p in psutil.Process(pid).children(recursive=True)}

    assert (landing / day_file_name(dt.date.fromisoformat(TRADE_DATE))).exists()
    monkeypatch.setenv("PHOENIX_DAGSTER_PG_URL", dagster_pg_url)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.from_config(str(home)) as instance:  # the run as PostgreSQL recorded it
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.is_success
        assert run.remote_job_origin is not None and run.remote_job_origin.location_name == "phoenix"
        assert run.tags["dagster/partition"] == TRADE_DATE
    gone = [pid for pid in [*pids, *children] if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert not gone, f"processes still running after the stop: {gone}"
    assert_no_lock_errors(*logs.values())
