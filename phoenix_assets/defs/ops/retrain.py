"""Retraining: `retrain_sensor` decides when `features_1m` holds enough news to retrain `mamba_sac_model`.

What it watches: materializations of `features_1m` (one per month partition; with `FOLLOW_MONTH_OF_DAYS`
the current month is re-materialized as each of its trade dates lands), read from the instance's event
log after a cursor (the last storage id handled). A materialization is only handled once its run has
finished, so the month's `drift_vs_training` result, written by the same step, is final.

When it retrains (the model's coverage = the latest end date of the latest model's train/val/test
windows, read from its `config.json` artifact beside the lake):

- **no model yet**: the first materialized month trains one (at least 3 trade dates of features needed);
- **a new month**: a month newer than the month of the model's coverage was materialized. With daily
  landing this is the first trade date of a month, so models are retrained monthly (walk-forward);
- **drift**: `drift_vs_training` failed for a month holding trade dates the model has not seen, and at
  least `DRIFT_MIN_NEW_TRADE_DATES` such dates exist: an early retrain, at most weekly under persistent
  drift. Retraining on data the model already covers would change nothing, so drift alone never does.

Otherwise the tick skips and its reason says which rule did not fire and why.

The windows (trade dates present in `features_1m`, up to the newest handled month; inclusive ISO dates):

- **test** = the last `HELD_OUT_TRADE_DATES` (5, a trading week) trade dates, **validation** = the 5
  before them, **train** = everything before validation within `TRAIN_LOOKBACK_MONTHS` (12) calendar
  months (rolling, not expanding: microstructure regimes change; a year spans most of them). With little
  data each held-out window shrinks to a fifth of the dates (at least one), so three trade dates give
  1/1/1. Windows are disjoint and in time order, so neither validation nor test leaks into training;
  the backtests of `model_job` then evaluate on exactly the newest, unseen week.

How it launches: one `model_job` run (model + evaluation groups: the backtests and metrics follow the new
model) tagged `phoenix/training=true`, which `dagster.yaml`'s `tag_concurrency_limits` hold to one at a
time. The sensor also waits while any run with that tag is queued or in progress (without advancing its
cursor, so the events are reconsidered when it finishes). The run key is the newest month plus the last
trade date of the training data: a repeated tick (a lost cursor, a re-materialization of the same data)
requests nothing new, while new trade dates give a new key. Dagster never re-launches a run key, even
after a failed run: a failed training is retried by `run_retries` (dagster.yaml) or by the next
materialization that brings new trade dates.

Default status RUNNING: it only matters under `dagster dev` / the daemon (`./phoenix demo` runs jobs
in-process). Its first tick reads the existing history, but decides from the lake's state: it launches
at most one training, and only when there is no model or the features hold data the model has not seen.
"""

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl

from phoenix_assets.defs.model.assets import TRAINING_TAGS
from phoenix_assets.defs.ops.dagster_internals import AssetCheckExecutionRecordStatus, PartitionKeyFilter
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib.io.artifacts import latest_sac_model
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import FEATURES_TABLE

FEATURES_KEY = dg.AssetKey(FEATURES_TABLE)
DRIFT_CHECK = dg.AssetCheckKey(FEATURES_KEY, "drift_vs_training")
TRAIN_LOOKBACK_MONTHS = 12
HELD_OUT_TRADE_DATES = 5
MIN_TRADE_DATES = 3
DRIFT_MIN_NEW_TRADE_DATES = 5
EVENTS_PER_TICK = 1_000
CURSOR_VERSION = 1
TRAINING_BUSY = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


# ---------------------------------------------------------------------------------------------------
# Pure decision functions (no Dagster)
# ---------------------------------------------------------------------------------------------------


def month_start(day: dt.date, months_back: int = 0) -> dt.date:
    """First day of the month `months_back` calendar months before `day`'s month."""
    index = day.year * 12 + day.month - 1 - months_back
    return dt.date(index // 12, index % 12 + 1, 1)


def retrain_windows(trade_dates: Sequence[dt.date]) -> dict[str, str]:
    """MambaSacConfig windows (inclusive ISO trade dates) for the trade dates of features_1m; see module doc."""
    dates = sorted(set(trade_dates))
    if dates:
        first_allowed = month_start(dates[-1], TRAIN_LOOKBACK_MONTHS - 1)
        dates = [d for d in dates if d >= first_allowed]
    if len(dates) < MIN_TRADE_DATES:
        raise ValueError(f"{len(dates)} trade date(s) of {FEATURES_TABLE}; training needs at least {MIN_TRADE_DATES}")
    held = min(HELD_OUT_TRADE_DATES, max(1, len(dates) // 5))
    train, val, test = dates[: -2 * held], dates[-2 * held : -held], dates[-held:]
    return {
        "train_start": train[0].isoformat(),
        "train_end": train[-1].isoformat(),
        "val_start": val[0].isoformat(),
        "val_end": val[-1].isoformat(),
        "test_start": test[0].isoformat(),
        "test_end": test[-1].isoformat(),
    }


@dataclass(frozen=True)
class ModelCoverage:
    """The latest model and the last trade date any of its windows used."""

    version: str
    through: dt.date


def coverage_from_config(version: str, saved: dict[str, Any]) -> ModelCoverage:
    """From a model's stored config.json: `data_windows`, else the train_config's `<window>_end` keys."""
    windows = saved.get("data_windows") or {}
    ends = [w[1] for w in windows.values()]
    if not ends:
        tc = saved.get("train_config", {})
        ends = [tc[k] for k in ("train_end", "val_end", "test_end") if tc.get(k)]
    if not ends:
        raise ValueError(f"config.json of mamba_sac_model {version} holds no data window: re-train the model")
    return ModelCoverage(version, max(dt.date.fromisoformat(str(e)) for e in ends))


@dataclass(frozen=True)
class Decision:
    reason: str | None  # "no_model" | "new_month" | "drift"; None: skip
    message: str


def decide(
    months: Sequence[dt.date],
    drift_failed: Sequence[dt.date],
    trade_dates: Sequence[dt.date],
    model: ModelCoverage | None,
) -> Decision:
    """Whether handled materializations of `months` (those in `drift_failed` failed the drift check) call
    for a retrain, given the trade dates of features_1m up to the newest of them and the latest model."""
    newest = max(months)
    if len(trade_dates) < MIN_TRADE_DATES:
        return Decision(
            None,
            f"{FEATURES_TABLE} holds {len(trade_dates)} trade date(s) up to {newest:%Y-%m}; "
            f"training needs at least {MIN_TRADE_DATES}",
        )
    if model is None:
        return Decision("no_model", f"no mamba_sac_model yet; {FEATURES_TABLE} {newest:%Y-%m} materialized")
    unseen = [d for d in trade_dates if d > model.through]
    model_month = month_start(model.through)
    if newest > model_month:
        return Decision(
            "new_month",
            f"{FEATURES_TABLE} {newest:%Y-%m} is newer than model {model.version} (data through {model.through})",
        )
    drifting = sorted(m for m in drift_failed if m >= model_month)
    if drifting and len(unseen) >= DRIFT_MIN_NEW_TRADE_DATES:
        return Decision(
            "drift",
            f"drift_vs_training failed for {', '.join(f'{m:%Y-%m}' for m in drifting)} and {len(unseen)} trade "
            f"dates are newer than model {model.version} (data through {model.through})",
        )
    why = f"model {model.version} covers {newest:%Y-%m} (data through {model.through}); "
    if drifting:
        why += (
            f"drift_vs_training failed for {', '.join(f'{m:%Y-%m}' for m in drifting)} but only {len(unseen)} "
            f"trade date(s) are newer than the model (an early retrain needs {DRIFT_MIN_NEW_TRADE_DATES})"
        )
    elif drift_failed:
        why += "drift_vs_training failed only for months the model already covers"
    else:
        why += "drift_vs_training passed or was not evaluated"
    return Decision(None, why)


# ---------------------------------------------------------------------------------------------------
# Reading the instance and the lake
# ---------------------------------------------------------------------------------------------------


def latest_model_coverage(lake: Lake) -> ModelCoverage | None:
    """Coverage of the model `latest.json` points to; None when no model was trained."""
    try:
        version, folder = latest_sac_model(lake)
    except FileNotFoundError:
        return None
    path = f"{folder}/config.json"
    try:
        saved = json.loads(lake.read_artifact(path))
    except Exception as exc:
        raise RuntimeError(
            f"retrain_sensor: cannot read {lake.root}/{path} of model {version} ({exc}); "
            "re-train mamba_sac_model or fix latest.json"
        ) from exc
    return coverage_from_config(version, saved)


def feature_trade_dates(lake: Lake, newest_month: dt.date) -> list[dt.date]:
    """Trade dates in features_1m from the training lookback up to the end of `newest_month`."""
    if not lake.exists(FEATURES_TABLE):
        return []
    first = month_start(newest_month, TRAIN_LOOKBACK_MONTHS - 1)
    frame = (
        lake.scan(FEATURES_TABLE)
        .filter(pl.col("month").is_between(first, newest_month))
        .select("trade_date")
        .unique()
        .collect()
    )
    return sorted(frame["trade_date"].to_list())


def _drift_failed(instance: dg.DagsterInstance, month_key: str) -> bool:
    """The latest evaluation of drift_vs_training on a month partition failed."""
    history = instance.event_log_storage.get_asset_check_execution_history(
        DRIFT_CHECK, limit=1, partition_filter=PartitionKeyFilter(key=month_key)
    )
    return bool(history) and history[0].status == AssetCheckExecutionRecordStatus.FAILED


def _load_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    data = json.loads(cursor)
    return int(data["after"]) if data.get("v") == CURSOR_VERSION else None


def _dump_cursor(storage_id: int | None) -> str | None:
    return None if storage_id is None else json.dumps({"v": CURSOR_VERSION, "after": storage_id})


@dg.sensor(
    job_name="model_job",
    name="retrain_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "features_1m month materialized -> retrain mamba_sac_model (model_job: training + backtests + evaluation) "
        "when there is no model, the month is newer than the model's data, or its drift_vs_training check failed "
        "on a week of unseen data. One training at a time (run tag phoenix/training)."
    ),
)
def retrain_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
    instance = context.instance
    after = _load_cursor(context.cursor)
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=FEATURES_KEY, after_storage_id=after), limit=EVENTS_PER_TICK, ascending=True
    ).records
    if not records:
        return dg.SensorResult(
            skip_reason=f"no new {FEATURES_TABLE} materialization", cursor=_dump_cursor(after) or context.cursor
        )
    busy = instance.get_runs(filters=dg.RunsFilter(tags=TRAINING_TAGS, statuses=TRAINING_BUSY), limit=1)
    if busy:
        run = busy[0]
        return dg.SensorResult(
            skip_reason=f"training run {run.run_id} ({run.job_name}) is {run.status.value}: "
            f"{len(records)} {FEATURES_TABLE} materialization(s) wait until it finishes",
            cursor=context.cursor,
        )
    handled: list[dg.EventLogRecord] = []
    finished: dict[str, bool] = {}
    for record in records:
        run_id = record.event_log_entry.run_id
        if run_id and run_id not in finished:
            run = instance.get_run_by_id(run_id)
            finished[run_id] = run is None or run.is_finished
        if run_id and not finished[run_id]:
            break  # its checks may still be running: handled on a later tick
        handled.append(record)
    if not handled:
        return dg.SensorResult(
            skip_reason=f"{FEATURES_TABLE} is being materialized by run {records[0].event_log_entry.run_id}",
            cursor=context.cursor,
        )
    cursor = _dump_cursor(handled[-1].storage_id)
    keys = sorted({r.partition_key for r in handled if r.partition_key})
    if not keys:
        return dg.SensorResult(skip_reason=f"{FEATURES_TABLE} materialization(s) without a month", cursor=cursor)
    months = [dt.date.fromisoformat(k) for k in keys]
    drift_failed = [dt.date.fromisoformat(k) for k in keys if _drift_failed(instance, k)]
    the_lake = lake.lake()
    dates = feature_trade_dates(the_lake, max(months))
    decision = decide(months, drift_failed, dates, latest_model_coverage(the_lake))
    if decision.reason is None:
        return dg.SensorResult(skip_reason=decision.message, cursor=cursor)
    windows = retrain_windows(dates)
    newest = max(months)
    context.log.info(f"retraining ({decision.reason}): {decision.message}; windows {windows}")
    request = dg.RunRequest(
        run_key=f"retrain:{newest:%Y-%m}:through:{windows['test_end']}",
        run_config=dg.RunConfig(ops={"mamba_sac_model": {"config": windows}}),
        tags={
            **TRAINING_TAGS,
            "phoenix/trigger": "retrain_sensor",
            "phoenix/retrain_reason": decision.reason,
            "phoenix/features_month": newest.isoformat(),
        },
    )
    return dg.SensorResult(run_requests=[request], cursor=cursor)
