"""Processes doing Phoenix's work die with their parent (phoenix_assets/lib/process_lifetime.py), and a run whose
worker died is marked FAILED (phoenix_assets/defs/ops/run_health.py). Real processes, real signals, no mocks."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import psutil
import pytest

from phoenix_assets.definitions import defs
from phoenix_assets.defs.ops.dagster_internals import MULTIPROCESS_STEP_TARGET
from phoenix_assets.defs.ops.run_health import fail_runs_with_dead_workers, run_worker_sweep
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.process_lifetime import (
    ORPHAN_EXIT_CODE,
    PARENT_PID_ENV,
    die_with_dagster_step_parent,
    pid_alive,
)
from tests.conftest import TINY_MODEL_CONFIG
from tests.ui_support import REPO, VENV_BIN, phoenix_env, prepare_dagster_home, start_in_own_group, stop_group, tail

DAY = "2024-03-13"
GONE_WITHIN_S = 5.0
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

# a child that arms its death signal (pid of its parent from PARENT_PID_ENV), says so, then sleeps; its parent
# prints the child's pid and sleeps too, until the test kills it
CHILD = textwrap.dedent(
    """
    import time
    from phoenix_assets.lib.process_lifetime import die_with_parent_from_env
    assert die_with_parent_from_env()
    print("armed", flush=True)
    time.sleep(120)
    """
)
PARENT = textwrap.dedent(
    f"""
    import os, subprocess, sys, time
    env = {{**os.environ, {PARENT_PID_ENV!r}: str(os.getpid())}}
    child = subprocess.Popen([sys.executable, "-c", {CHILD!r}], env=env)
    print(child.pid, flush=True)
    time.sleep(120)
    """
)


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    """The pids still alive after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in pids if pid_alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def test_a_child_that_set_the_death_signal_dies_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    child_pid = None
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "armed"  # the child's line: prctl done, parent checked
        assert pid_alive(child_pid)
        parent.kill()
        parent.wait(timeout=10)
        assert not _wait_gone([child_pid], GONE_WITHIN_S), f"child {child_pid} outlived its killed parent"
    finally:
        parent.kill()
        parent.wait(timeout=10)
        if child_pid is not None and pid_alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)


def test_a_child_whose_parent_died_before_it_set_the_death_signal_exits_at_once() -> None:
    # The recorded parent pid is not the child's parent: exactly what the child sees when the parent died
    # between fork and prctl (it was re-parented). Without the check it would live on, unsignalled.
    code = "from phoenix_assets.lib.process_lifetime import die_with_parent_from_env as d; d(); print('lived on')"
    env = {**os.environ, "PYTHONPATH": str(REPO), PARENT_PID_ENV: "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == ORPHAN_EXIT_CODE, done
    assert "lived on" not in done.stdout


def test_the_training_entry_point_exits_at_once_when_its_launcher_is_already_gone() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), PARENT_PID_ENV: "1"}
    args = ["--config", "missing.json", "--features", "missing.parquet", "--out", "nowhere"]  # never read
    cmd = [sys.executable, "-m", "phoenix_rl.train.pipes_entry", *args]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == ORPHAN_EXIT_CODE, done


def test_pid_alive_counts_a_zombie_as_dead() -> None:
    assert pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while pid_alive(child.pid) and time.monotonic() < deadline:  # exited but not reaped yet: a zombie
            time.sleep(0.05)
        assert not pid_alive(child.pid)
        assert psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE  # still in the process table
    finally:
        child.wait(timeout=10)
    assert not pid_alive(child.pid)


def test_the_step_hook_does_nothing_outside_a_dagster_step_process() -> None:
    # pytest is nobody's multiprocessing child: no death signal on it (nor on dagster dev, daemon, code servers)
    assert die_with_dagster_step_parent(MULTIPROCESS_STEP_TARGET) is False
    # a plain `python -c` child (like a code server or `dagster api` subprocess) is no step process either
    code = (
        "from phoenix_assets.defs.ops.dagster_internals import MULTIPROCESS_STEP_TARGET as t\n"
        "from phoenix_assets.lib.process_lifetime import die_with_dagster_step_parent as d\n"
        "print(d(t))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "False", out


def _probe_step_hook(conn: multiprocessing.connection.Connection) -> None:
    """A multiprocessing child's target: is it Dagster's step process (no), is it the given target (yes)?"""
    conn.send((die_with_dagster_step_parent(MULTIPROCESS_STEP_TARGET), die_with_dagster_step_parent(_probe_step_hook)))
    conn.close()


def test_the_step_hook_arms_in_a_child_whose_target_is_the_given_function_only() -> None:
    # what a step process sees, with this module's function as the "executor's" target: the hook compares the
    # child's multiprocessing target with the function it is given, not with a name
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_probe_step_hook, args=(send,))
    child.start()
    try:
        assert receive.poll(30), "the child never answered"
        assert receive.recv() == (False, True)
    finally:
        child.join(timeout=30)
    assert child.exitcode == 0


def _step_children(cli: psutil.Process) -> list[psutil.Process]:
    """The multiprocess executor's step processes (spawn children), not multiprocessing's resource tracker."""
    return [p for p in cli.children() if "spawn_main" in " ".join(p.cmdline())]


def _training_processes(cli: psutil.Process) -> list[psutil.Process]:
    return [p for p in cli.children(recursive=True) if "phoenix_rl.train.pipes_entry" in " ".join(p.cmdline())]


def _materialize_then_kill_9(
    instance: dg.DagsterInstance,
    env: dict[str, str],
    log: Path,
    args: list[str],
    ready: Callable[[str], bool],
    processes: Callable[[psutil.Process], list[psutil.Process]],
) -> tuple[dg.DagsterRun, list[str]]:
    """`dagster asset materialize ARGS`; once `ready(run_id)`, kill -9 the CLI and assert that every process
    `processes(cli)` listed then is gone within GONE_WITHIN_S; returns the run and those processes' command lines."""
    before = {r.run_id for r in instance.get_runs()}
    cmd = [str(VENV_BIN / "dagster"), "asset", "materialize", "-m", "phoenix_assets.definitions", *args]
    cli = start_in_own_group(cmd, env, log)
    watched: list[psutil.Process] = []
    cmdlines: list[str] = []
    run = None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and cli.poll() is None and not watched:
            runs = [r for r in instance.get_runs(limit=5) if r.run_id not in before]
            run = runs[0] if runs else None
            if run is not None and ready(run.run_id):
                watched = processes(psutil.Process(cli.pid))
                cmdlines = [" ".join(p.cmdline()) for p in watched]
            else:
                time.sleep(0.1)
        assert run is not None and watched, f"the run never got to the point to kill it:\n{tail(log, 40)}"
        assert cli.poll() is None, f"the run ended before it could be killed:\n{tail(log, 40)}"
        assert fail_runs_with_dead_workers(instance) == []  # a live run is left alone

        os.kill(cli.pid, signal.SIGKILL)
        cli.wait(timeout=10)
        survivors = _wait_gone([p.pid for p in watched], GONE_WITHIN_S)
        assert not survivors, (
            f"{[c[:120] for p, c in zip(watched, cmdlines, strict=True) if p.pid in survivors]} outlived the CLI"
        )
    finally:
        stop_group(cli)  # whatever is left of the group, should the test fail
        for p in watched:
            if pid_alive(p.pid):
                p.kill()
    return run, cmdlines


def _assert_marked_failed_by_the_sweep(instance: dg.DagsterInstance, run_id: str) -> None:
    stuck = instance.get_run_by_id(run_id)
    assert stuck is not None and stuck.status == dg.DagsterRunStatus.STARTED  # nobody reported an end
    result = run_worker_sweep(dg.build_sensor_context(instance=instance))  # what the daemon does each minute
    assert isinstance(result, dg.SkipReason) and run_id in (result.skip_message or ""), result
    failed = instance.get_run_by_id(run_id)
    assert failed is not None and failed.status == dg.DagsterRunStatus.FAILURE
    failure = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    assert "Run worker process (pid" in (failure[0].event_log_entry.dagster_event.message or "")
    assert fail_runs_with_dead_workers(instance) == []  # once


def _instance_env(tmp_path: Path, lake_root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    prepare_dagster_home(home)  # the repo's dagster.yaml
    env = phoenix_env(home, lake_root, tmp_path / "landing")
    for key in ("DAGSTER_HOME", "PHOENIX_LAKE_URI", "PHOENIX_LANDING_DIR"):
        monkeypatch.setenv(key, env[key])
    return env


@pytest.mark.slow
def test_kill_9_of_dagster_asset_materialize_kills_its_step_and_the_run_is_marked_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _instance_env(tmp_path, tmp_path / "lake", monkeypatch)
    lake = Lake(str(tmp_path / "lake"))
    with dg.DagsterInstance.get() as instance:
        landed = defs.resolve_job_def("synthetic_landing_job").execute_in_process(
            partition_key=DAY, instance=instance, run_config=QUIET
        )
        assert landed.success

        def computing(run_id: str) -> bool:
            # STEP_START is logged after the step process imported the definitions (and armed its death signal)
            return bool(instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records)

        args = ["--select", "raw_mbp10", "--partition", DAY]
        run, killed = _materialize_then_kill_9(instance, env, tmp_path / "raw.log", args, computing, _step_children)
        assert len(killed) == 1, killed
        assert not lake.exists("raw_mbp10"), "the killed run's step committed a Delta version"
        _assert_marked_failed_by_the_sweep(instance, run.run_id)


@pytest.mark.slow
def test_kill_9_during_training_kills_the_step_and_its_pipes_training_process(
    tmp_path: Path, features_lake_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _instance_env(tmp_path, Path(features_lake_root), monkeypatch)
    config = {"ops": {"mamba_sac_model": {"config": {**TINY_MODEL_CONFIG, "total_timesteps": 1_000_000}}}}
    with dg.DagsterInstance.get() as instance:

        def training(run_id: str) -> bool:
            # logged through Pipes by the training process once it armed its death signal
            return any("training SAC+Mamba on" in (e.user_message or "") for e in instance.all_logs(run_id))

        def step_and_training(cli: psutil.Process) -> list[psutil.Process]:
            return _step_children(cli) + _training_processes(cli)

        args = ["--select", "mamba_sac_model", "--config-json", json.dumps(config)]
        run, killed = _materialize_then_kill_9(instance, env, tmp_path / "train.log", args, training, step_and_training)
        assert len(killed) == 2 and "phoenix_rl.train.pipes_entry" in killed[1], killed  # the step, then the training
        assert not (Path(features_lake_root) / "artifacts").exists(), "the killed training published a model"
        _assert_marked_failed_by_the_sweep(instance, run.run_id)
