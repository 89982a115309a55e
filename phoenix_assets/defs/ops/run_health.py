"""`run_worker_sweep`: runs whose worker process died are marked FAILED instead of staying STARTED forever.

Dagster's run monitoring (`run_monitoring:` in dagster.yaml) times out runs stuck STARTING or CANCELING,
but it can only tell that a STARTED run's worker died through the run launcher's
`check_run_worker_health`, which the `DefaultRunLauncher` of a local instance does not implement; and a
run started by `dagster asset materialize` was never launched by any launcher at all. Killing that CLI
with SIGKILL left the run STARTED forever. (A run the daemon launched is failed by its code server, which
watches the run workers it started, unless the code server is gone too: OOM, reboot.)

Every run records the pid of its worker process in its RUN_START event. This sensor (running by default,
every minute, in the daemon) marks a STARTED run FAILED when that pid no longer exists on this machine.
That is only meaningful while run workers and the code server evaluating the sensor share one machine: the
embedded SQLite instance, and a PostgreSQL instance (deploy/postgres) with the default run launcher, as
`./phoenix dev` and the three-process shape run it. A run launcher that can check its workers' health
(Docker, ECS, Kubernetes: deploy/) starts them in other containers, where a pid means nothing here; Dagster's
run monitoring watches those workers, so the sweep stands aside. A recycled pid keeps the run STARTED (the
safe direction: a live run is never failed); `dagster/max_runtime_seconds` on a run bounds that case too.
"""

from __future__ import annotations

import dagster as dg

from phoenix_assets.defs.ops.dagster_internals import JobFailureData, RunFailureReason
from phoenix_assets.lib.process_lifetime import pid_alive

__all__ = ["fail_runs_with_dead_workers", "run_worker_sweep"]


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the process that started the run (its latest RUN_START event), None before it started."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START, limit=1, ascending=False)
    if not records.records:
        return None
    event = records.records[0].event_log_entry.dagster_event
    return event.pid if event is not None else None


def fail_runs_with_dead_workers(instance: dg.DagsterInstance) -> list[str]:
    """Mark every STARTED run whose worker process is gone FAILED; returns their run ids."""
    failed = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        run = record.dagster_run
        pid = _worker_pid(instance, run.run_id)
        if pid is None or pid_alive(pid):
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status != dg.DagsterRunStatus.STARTED:  # finished meanwhile
            continue
        instance.report_run_failed(
            current,
            f"Run worker process (pid {pid}) is gone while the run was STARTED: it was killed (kill -9, OOM) "
            "before it could report an outcome. Its step processes died with it; nothing after the last "
            "logged event was committed. Re-run the run's partitions.",
            # as the code server reports a dead run worker: daemon-launched runs are then retried per
            # dagster.yaml's run_retries; a CLI run has no code-location origin and is not
            JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION),
        )
        failed.append(run.run_id)
    return failed


@dg.sensor(
    name="run_worker_sweep",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks STARTED runs whose worker process died (e.g. kill -9 of `dagster asset materialize`) FAILED",
)
def run_worker_sweep(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    launcher = context.instance.run_launcher
    if launcher.supports_check_run_worker_health:
        return dg.SkipReason(
            f"{type(launcher).__name__} starts run workers elsewhere and checks their health itself (run_monitoring)"
        )
    failed = fail_runs_with_dead_workers(context.instance)
    if failed:
        context.log.warning(f"marked {len(failed)} run(s) with a dead worker FAILED: {', '.join(failed)}")
        return dg.SkipReason(f"marked FAILED (worker process gone): {', '.join(failed)}")
    return dg.SkipReason("every STARTED run has a live worker process")
