"""phoenix_assets/defs/ops/dagster_internals.py is the one place Phoenix touches private Dagster names: each one
still exists with the shape Phoenix uses (a Dagster upgrade that moves, renames or reshapes one fails here), and
no other module imports `dagster._...`."""

import ast
import enum
import inspect
import sys
from pathlib import Path

import dagster as dg

from phoenix_assets.defs.ops import dagster_internals as internals
from phoenix_assets.defs.ops.dagster_internals import (
    MULTIPROCESS_STEP_TARGET,
    AssetCheckExecutionRecordStatus,
    BulkActionStatus,
    InstanceRef,
    JobFailureData,
    PartitionKeyFilter,
    RunFailureReason,
)
from tests.conftest import REPO

SCANNED = ("phoenix_assets", "phoenix_rl", "tests", "benchmarks", "feature_specs")  # plus the repo root's *.py
INTERNALS = REPO / "phoenix_assets" / "defs" / "ops" / "dagster_internals.py"


def _parameters(func: object) -> list[str]:
    return list(inspect.signature(func).parameters)  # type: ignore[arg-type]


def _members(enum_class: type[enum.Enum], *names: str) -> None:
    assert issubclass(enum_class, enum.Enum), enum_class
    missing = [n for n in names if n not in enum_class.__members__]
    assert not missing, f"{enum_class.__qualname__} has no member(s) {missing}: {list(enum_class.__members__)}"


def test_run_health_names_mark_a_run_failed_as_a_dead_worker() -> None:
    # run_health: instance.report_run_failed(run, message, JobFailureData(error=None, failure_reason=...))
    _members(RunFailureReason, "UNEXPECTED_TERMINATION")
    assert {"error", "failure_reason"} <= set(_parameters(JobFailureData)), _parameters(JobFailureData)
    data = JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION)
    assert data.failure_reason == RunFailureReason.UNEXPECTED_TERMINATION
    assert _parameters(dg.DagsterInstance.report_run_failed)[:4] == [
        "self", "dagster_run", "message", "job_failure_data",
    ]  # fmt: skip


def test_retrain_names_read_the_latest_check_evaluation_of_one_partition() -> None:
    # retrain: instance.event_log_storage.get_asset_check_execution_history(key, limit=1, partition_filter=...)
    _members(AssetCheckExecutionRecordStatus, "FAILED")
    assert PartitionKeyFilter(key="2024-03-01").key == "2024-03-01"  # a record: its fields are its parameters
    with dg.instance_for_test() as instance:
        history = instance.event_log_storage.get_asset_check_execution_history
        assert {"check_key", "limit", "partition_filter"} <= set(_parameters(history)), _parameters(history)
        key = dg.AssetCheckKey(dg.AssetKey("features_1m"), "drift_vs_training")
        assert list(history(key, limit=1, partition_filter=PartitionKeyFilter(key="2024-03-01"))) == []


def test_instance_ref_is_what_the_demo_sends_its_workers() -> None:
    assert inspect.isclass(InstanceRef)
    with dg.instance_for_test() as instance:
        ref = instance.get_ref()
        assert isinstance(ref, InstanceRef)
        with dg.DagsterInstance.from_ref(ref) as again:
            assert again.root_directory == instance.root_directory


def test_backfill_status_members_the_tests_wait_for() -> None:
    _members(BulkActionStatus, "COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")


def test_multiprocess_step_target_is_the_function_dagster_runs_in_a_step_process() -> None:
    # lib/process_lifetime.py recognises a step process by its multiprocessing target being this very function
    target = MULTIPROCESS_STEP_TARGET
    assert inspect.isfunction(target)
    assert _parameters(target) == ["event_queue", "command"], _parameters(target)
    # ... which the child-process executor still starts its processes with (a name its code refers to)
    module = sys.modules[target.__module__]
    starters = [
        name
        for name, value in vars(module).items()
        if inspect.isfunction(value) and value is not target and target.__name__ in value.__code__.co_names
    ]
    assert starters, f"nothing in {module.__name__} refers to {target.__name__} any more: no step process runs it"


def _private_dagster_uses(path: Path) -> list[str]:
    """`import dagster._x`, `from dagster._x import y`, `from dagster import _y`, `dg._x` / `dagster._x`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("dagster._")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("dagster._"):
                found.append(node.module)
            elif node.module == "dagster":
                found += [f"dagster.{a.name}" for a in node.names if a.name.startswith("_")]
        elif (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in ("dg", "dagster")
        ):
            found.append(f"{node.value.id}.{node.attr}")
    return [f"{path.relative_to(REPO)}:{name}" for name in found]


def test_no_module_but_dagster_internals_uses_private_dagster_names() -> None:
    files = [p for d in SCANNED if (REPO / d).is_dir() for p in sorted((REPO / d).rglob("*.py"))]
    files += sorted(REPO.glob("*.py"))
    assert INTERNALS in files and len(files) > 50, len(files)
    uses = [use for path in files if path != INTERNALS for use in _private_dagster_uses(path)]
    assert not uses, f"import these from phoenix_assets.defs.ops.dagster_internals (or use a public API): {uses}"
    assert _private_dagster_uses(INTERNALS), "the scan finds nothing even where the private imports are"
    assert set(internals.__all__) <= set(vars(internals)), internals.__all__
