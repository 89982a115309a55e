"""Every private Dagster name Phoenix uses, imported once, here.

Phoenix uses Dagster's public API (`import dagster as dg`) wherever one does the job. What follows has no public
equivalent in Dagster 1.13; each import says who needs it and why nothing public does it. Nothing else in
phoenix_assets, phoenix_rl, tests or benchmarks imports `dagster._...`: tests/assets/defs/ops/
test_dagster_internals.py scans their sources for that, and checks that each name below still exists with the
shape Phoenix uses (enum members, parameters), so a Dagster upgrade that moves, renames or reshapes one fails
that test (and this module's import, loudly, when `phoenix_assets.definitions` loads), never silently.
"""

from __future__ import annotations

# tests (tests/assets/defs/ops/test_deploy_configs.py): deploy/'s dagster.yaml files checked against the instance
# schema without opening the instance (that connects to PostgreSQL, and its launcher to Docker or AWS), and the config
# of each class they name (run launcher, compute log manager) against that class's own schema without constructing it
# (EcsRunLauncher's constructor calls AWS). Dagster's public API checks either only by building the instance.
from dagster._config import resolve_to_config_type, validate_config

# defs/ops/retrain.py: the latest evaluation of an asset check on ONE partition (a month of features_1m).
# The public `DagsterInstance.get_latest_asset_check_evaluation_record(check_key)` takes no partition; only the
# event log storage's `get_asset_check_execution_history(check_key, limit, partition_filter=...)` does, and both
# its filter and its record status enum (AssetCheckExecutionRecordStatus, below) live in private modules.
from dagster._core.event_api import PartitionKeyFilter

# defs/ops/run_health.py: `DagsterInstance.report_run_failed(run, message, job_failure_data)` marks a run whose
# worker died FAILED the way Dagster's code server does, with failure_reason UNEXPECTED_TERMINATION (what
# dagster.yaml's run_retries acts on). Dagster exports neither the event data class nor the reason enum.
from dagster._core.events import JobFailureData, RunFailureReason

# tests (backfill from the CLI, the UI in a browser): the status of `DagsterInstance.get_backfill(id)` is this
# enum, which Dagster does not export.
from dagster._core.execution.backfill import BulkActionStatus

# definitions.py -> lib/process_lifetime.py: the function Dagster's multiprocess executor runs as the
# `multiprocessing.Process` target of every step process (in `execute_child_process_command`). A step process is
# recognised by that target: Dagster offers no public hook that runs at the start of a step process.
# lib/process_lifetime.py imports no dagster, so definitions.py passes it this object.
from dagster._core.executor.child_process_executor import (
    _execute_command_in_child_process as MULTIPROCESS_STEP_TARGET,
)

# cli/demo.py: the type of `DagsterInstance.get_ref()`, which the demo sends to its spawn ingest workers
# (`DagsterInstance.from_ref`); a type annotation only, but Dagster exports no public name for it.
from dagster._core.instance import InstanceRef
from dagster._core.instance.config import dagster_instance_config

# defs/ops/retrain.py: the status of an asset check execution record (FAILED: evaluated, did not pass).
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

__all__ = [
    "MULTIPROCESS_STEP_TARGET",
    "AssetCheckExecutionRecordStatus",
    "BulkActionStatus",
    "InstanceRef",
    "JobFailureData",
    "PartitionKeyFilter",
    "RunFailureReason",
    "dagster_instance_config",
    "resolve_to_config_type",
    "validate_config",
]
