"""Automation: what starts runs without a person clicking.

- `landing_sensor` (default STOPPED): watches the landing folder, recognises new or changed MBP-10
  files of the landing resource's dataset by their DBN metadata and requests `raw_mbp10` for exactly
  the trade dates each file touches. Stopped by default because its first tick treats every file
  already in the folder as new (a folder holding years of files becomes years of runs): start it in
  the UI or with `dagster sensor start landing_sensor` once the folder holds what you mean to ingest.
- `phoenix_automation` (default RUNNING): declarative automation. `book_snapshots_1s` and
  `ofi_bars_1m` follow their parent trade date by trade date (`FOLLOW_PARENT_PARTITION`, defs/partitions.py);
  `hmm_regimes` and `features_1m` follow `ofi_bars_1m` month by month (`FOLLOW_MONTH_OF_DAYS`).
  `hmm_regime_model` has no condition: its training window is an explicit choice, never refit
  automatically. Starting the sensor requests nothing by itself (the first evaluation only records
  the state); no cron recomputes anything. The asset checks are partitioned like their assets, so a
  blocking failure gates exactly its own trade date.
- `record_run_failure` (default RUNNING): every failed run becomes one JSON line in
  `<DAGSTER_HOME>/phoenix_failures.jsonl` and, when `$PHOENIX_FAILURE_LOG_GROUP` names a CloudWatch
  log group (read when the failure is handled, never at import), one CloudWatch log event.

Backfilling a range of months from the CLI. Every partitioned asset computes ONE partition per run
(the bodies read `context.partition_key` / `partition_time_window`), so no asset has a backfill
policy: Dagster's default, one run per partition, is the right one (`multi_run(1)` would say the
same and print a BetaWarning on every import; `single_run()` would be wrong). Hence
`dagster asset materialize --partition-range`, which requires `BackfillPolicy.single_run()`, refuses
them. Materialize month by month instead (in the CLI process, no daemon needed)::

    export DAGSTER_HOME=$PWD/.dagster_home   # an existing folder with dagster.yaml
    for month in 2024-03-01 2024-04-01; do
      dagster asset materialize -m phoenix_assets.definitions --select hmm_regimes,features_1m --partition "$month"
    done

or queue a backfill of the monthly job for the daemon (`./phoenix dev` or `dagster-daemon run`) to
execute, one run per month::

    dagster job backfill -m phoenix_assets.definitions -j features_job --from 2024-03-01 --to 2024-04-01 --noprompt

(or, in the UI, materialize the assets over a partition range: an asset backfill, one run per month).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.util
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import dagster as dg

from phoenix_assets.defs.partitions import trade_date_partitions
from phoenix_assets.defs.resources import LandingResource
from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.io.dbn_reader import DbnFileError, DbnFileInfo, iter_mbp10_arrays, scan_dbn_files

phoenix_automation = dg.AutomationConditionSensorDefinition(
    "phoenix_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates the assets' automation conditions: daily assets follow raw_mbp10, monthly ones ofi_bars_1m",
)

# ---------------------------------------------------------------------------------------------------
# Landing sensor
# ---------------------------------------------------------------------------------------------------

CURSOR_VERSION = 1


def file_digest(path: Path) -> str:
    """Content fingerprint of a landed file (BLAKE2b-128 of its bytes)."""
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def received_span(info: DbnFileInfo, now_ns: int) -> tuple[int, int] | None:
    """[start, end) in ns of what a file can hold; None when it holds no record.

    The start is the first record's `ts_recv` (one record decoded), the end the metadata's end.
    Databento files are requested by UTC day, so their metadata starts at 00:00 UTC = 18:00 CT of
    the previous trade date, while their records may start later: the first record keeps the
    sensor from requesting a trade date the file declares but holds nothing of (the ESH4 fixture
    declares 2023-12-25 00:00 UTC but starts at 16:00 CT, trade date 2023-12-26). The end is not
    trimmed (finding the last record means decompressing the whole file); a trade date the file's
    declared end overlaps is requested, and raw_mbp10 reports it if it holds no record there.
    Raises DbnFileError naming the file when the first record does not decode.
    """
    records = iter_mbp10_arrays(info, chunk_records=1)
    try:
        first = next(records, None)
    finally:
        records.close()
    if first is None or len(first) == 0:
        return None
    start = max(info.start_ns, int(first["ts_recv"][0]))
    end = info.end_ns if info.end_ns is not None else max(now_ns, start + 1)
    return start, end


def affected_trade_dates(span: tuple[int, int]) -> tuple[list[str], list[str]]:
    """Partition keys of the trade dates (Mon-Fri) a span overlaps, and those outside the partitions."""
    keys = [d.isoformat() for d in cal.trade_dates_overlapping(*span)]
    inside = [k for k in keys if trade_date_partitions.has_partition_key(k)]
    return inside, [k for k in keys if k not in inside]


def _load_cursor(cursor: str | None) -> dict[str, dict[str, Any]]:
    if not cursor:
        return {}
    data = json.loads(cursor)
    return dict(data.get("files", {})) if data.get("v") == CURSOR_VERSION else {}


def _run_key(partition: str, changed: list[dict[str, Any]]) -> str:
    """Same files in the same state -> same key, so a re-evaluation never launches a second run."""
    state = "|".join(sorted(f"{c['digest']}:{c['mtime_ns']}" for c in changed))
    return f"{partition}:{hashlib.blake2b(state.encode(), digest_size=8).hexdigest()}"


@dg.sensor(
    name="landing_sensor",
    target="raw_mbp10",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "New or changed MBP-10 files in the landing folder (recognised by DBN metadata) -> one raw_mbp10 run "
        "per affected trade date. Cursor: path -> size, mtime, content digest."
    ),
)
def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingResource) -> dg.SensorResult:
    folder = landing.folder()
    seen = _load_cursor(context.cursor)
    infos, unreadable = scan_dbn_files(folder)
    now_ns = time.time_ns()
    kept: dict[str, dict[str, Any]] = {}
    changes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for info in infos:
        if info.schema != "mbp-10" or info.dataset != landing.dataset:
            continue  # other schemas/datasets are not raw_mbp10's
        path = str(info.path)
        stat = info.path.stat()
        state = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        previous = seen.get(path)
        if previous and all(previous.get(k) == v for k, v in state.items()):
            kept[path] = previous
            continue
        state["digest"] = file_digest(info.path)
        if previous and previous.get("digest") == state["digest"]:
            kept[path] = state  # touched or copied again with the same bytes: nothing new
            continue
        try:
            span = received_span(info, now_ns)
        except DbnFileError as exc:
            unreadable.append((info.path, str(exc)))
            continue  # not marked seen: a fixed file is picked up on a later tick
        kept[path] = state
        if span is None:
            context.log.info(f"landing: {path} holds no MBP-10 record; nothing to ingest")
            continue
        keys, outside = affected_trade_dates(span)
        if outside:
            context.log.warning(f"landing: {path} covers trade dates outside the partitions: {outside}; ignored")
        context.log.info(f"landing: {path} is new or changed; trade dates {keys}")
        for key in keys:
            changes[key].append({"path": path, **state})
    for path, reason in unreadable:
        if path.name.endswith((".dbn", ".dbn.zst")) or str(path) in seen:
            context.log.warning(f"landing: skipped unreadable file {path}: {reason}")
    cursor = json.dumps({"v": CURSOR_VERSION, "files": kept}, sort_keys=True)
    requests = [
        dg.RunRequest(
            partition_key=key,
            run_key=_run_key(key, changed),
            tags={"phoenix/source": "landing", "phoenix/trigger": "landing_sensor"},
        )
        for key, changed in sorted(changes.items())
    ]
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor)
    bad = [f"{p}: {r}" for p, r in unreadable if p.name.endswith((".dbn", ".dbn.zst"))]
    reason = "no new or changed MBP-10 file in " + str(folder)
    if bad:
        reason += "; skipped unreadable file(s): " + "; ".join(bad)
    return dg.SensorResult(skip_reason=reason, cursor=cursor)


# ---------------------------------------------------------------------------------------------------
# Run failures
# ---------------------------------------------------------------------------------------------------

FAILURE_LOG = "phoenix_failures.jsonl"
CLOUDWATCH_GROUP_ENV = "PHOENIX_FAILURE_LOG_GROUP"
CLOUDWATCH_STREAM_ENV = "PHOENIX_FAILURE_LOG_STREAM"


def _error_text(error: Any) -> str:
    """A serialized error and its causes, one message each (Dagster wraps the user's exception)."""
    parts = []
    while error is not None:
        parts.append(error.message.strip())
        error = error.cause
    return " <- ".join(parts)


def failure_record(context: dg.RunFailureSensorContext) -> dict[str, Any]:
    run = context.dagster_run
    steps = {}
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        steps[event.step_key or "?"] = _error_text(data.error) if data and data.error else event.message
    return {
        "at": dt.datetime.now(dt.UTC).isoformat(),
        "job_name": run.job_name,
        "run_id": run.run_id,
        "partition": run.tags.get("dagster/partition"),
        "partition_range_start": run.tags.get("dagster/asset_partition_range_start"),
        "partition_range_end": run.tags.get("dagster/asset_partition_range_end"),
        "error": context.failure_event.message,
        "step_errors": steps,
    }


def send_to_cloudwatch(record: dict[str, Any], group: str, stream: str) -> None:
    """One CloudWatch log event (boto3 from dagster-aws; AWS credentials/region from the usual chain)."""
    import boto3

    client = boto3.client("logs")
    with contextlib.suppress(client.exceptions.ResourceAlreadyExistsException):
        client.create_log_stream(logGroupName=group, logStreamName=stream)
    client.put_log_events(
        logGroupName=group,
        logStreamName=stream,
        logEvents=[{"timestamp": int(time.time() * 1000), "message": json.dumps(record, sort_keys=True)}],
    )


@dg.run_failure_sensor(
    name="record_run_failure",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"Appends each failed run (job, run id, partition, error) to <DAGSTER_HOME>/{FAILURE_LOG}",
)
def record_run_failure(context: dg.RunFailureSensorContext) -> None:
    record = failure_record(context)
    path = Path(context.instance.root_directory) / FAILURE_LOG
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    context.log.info(f"run {record['run_id']} ({record['job_name']}) failed; recorded in {path}")
    group = os.environ.get(CLOUDWATCH_GROUP_ENV)
    if group and importlib.util.find_spec("dagster_aws") is not None:
        try:
            send_to_cloudwatch(record, group, os.environ.get(CLOUDWATCH_STREAM_ENV) or "phoenix-run-failures")
        except Exception as exc:  # never lose the local record because CloudWatch is unreachable
            context.log.warning(f"could not send the failure of run {record['run_id']} to CloudWatch {group}: {exc}")


sensors = [landing_sensor, phoenix_automation, record_run_failure]
