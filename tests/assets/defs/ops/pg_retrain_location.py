"""A code location for tests/assets/defs/ops/test_postgres_instance.py: Phoenix's real `retrain_sensor` with stand-ins
for what it watches and what it launches, so the daemon can drive it on PostgreSQL in seconds, without training.

- `features_1m`: writes the month's trade dates (up to `last_day`, default the month's end) into the lake's
  features_1m table and reports its checks, like the real asset (as tests/assets/defs/ops/test_retrain_sensor.py's);
- `mamba_sac_model`: takes exactly the windows the sensor puts in its run config, sleeps a moment, and reports
  them as metadata; in the `training` pool and tagged `phoenix/training` like the real one;
- `model_job` (the sensor's target, tagged like the real one) and `features_job`.

Load it with `-m tests.assets.defs.ops.pg_retrain_location` from the repo root; PHOENIX_LAKE_URI names the lake.
"""

import datetime as dt
import time

import dagster as dg
import polars as pl

from phoenix_assets.defs.checks import check_results, check_specs
from phoenix_assets.defs.features.assets import FEATURE_CHECKS
from phoenix_assets.defs.model.assets import TRAINING_POOL, TRAINING_TAGS
from phoenix_assets.defs.ops.retrain import retrain_sensor
from phoenix_assets.defs.partitions import month_partitions
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.check_outcome import CheckOutcome


class MonthConfig(dg.Config):
    last_day: str | None = None  # ISO date; None: the month's last day
    hold_s: float = 0.0  # seconds the step stays in progress after writing (so that two runs overlap)


@dg.asset(
    name="features_1m",
    partitions_def=month_partitions,
    check_specs=check_specs("features_1m", FEATURE_CHECKS, month_partitions),
)
def features_month(context: dg.AssetExecutionContext, config: MonthConfig, lake: LakeResource) -> dg.MaterializeResult:
    first = dt.date.fromisoformat(context.partition_key)
    next_month = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    last = dt.date.fromisoformat(config.last_day) if config.last_day else next_month - dt.timedelta(days=1)
    days = cal.trade_dates_between(first, last)
    frame = pl.DataFrame({"trade_date": days, "close": [1.0] * len(days)}).with_columns(month=pl.lit(first))
    table = frame.to_arrow()
    lake.lake().replace_partition("features_1m", table.schema, table.to_batches(), "month", first)
    time.sleep(config.hold_s)
    outcomes = {name: CheckOutcome(True, name) for name in FEATURE_CHECKS}
    return dg.MaterializeResult(
        metadata={"trade_dates": len(days)},
        check_results=check_results("features_1m", FEATURE_CHECKS, outcomes),
    )


class WindowsConfig(dg.Config):
    train_start: str
    train_end: str
    val_start: str
    val_end: str
    test_start: str
    test_end: str


@dg.asset(name="mamba_sac_model", op_tags=TRAINING_TAGS, pool=TRAINING_POOL)
def model_stand_in(config: WindowsConfig) -> dg.MaterializeResult:
    time.sleep(1)
    return dg.MaterializeResult(metadata=config.model_dump())


defs = dg.Definitions(
    assets=[features_month, model_stand_in],
    jobs=[
        dg.define_asset_job("features_job", selection=[features_month]),
        dg.define_asset_job("model_job", selection=[model_stand_in], tags=TRAINING_TAGS),
    ],
    sensors=[retrain_sensor],
    resources={"lake": LakeResource()},
)
