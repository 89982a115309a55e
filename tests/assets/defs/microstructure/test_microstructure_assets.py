"""`book_snapshots_1s` and `ofi_bars_1m` through Dagster on the real fixture, and their checks on bad data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from phoenix_assets.defs.ingest.assets import raw_mbp10
from phoenix_assets.defs.microstructure.assets import book_snapshots_1s, ofi_bars_1m
from phoenix_assets.lib.io.lake import Lake, MissingUpstreamError
from phoenix_assets.lib.market import microstructure as ms
from phoenix_assets.lib.schema import BARS_TABLE, SECONDS_TABLE
from tests.assets.defs.ingest.test_raw_asset import resources
from tests.assets.lib.ingest.test_raw_ingest import ESH4_DAY
from tests.conftest import ESH4_MBP10, land


@pytest.fixture
def chain(instance: dg.DagsterInstance, lake: Lake, landing: Path) -> dg.ExecuteInProcessResult:
    land(landing, ESH4_MBP10)
    return dg.materialize(
        [raw_mbp10, book_snapshots_1s, ofi_bars_1m],
        partition_key=ESH4_DAY.isoformat(),
        instance=instance,
        resources=resources(lake, landing),
    )


def test_real_day_through_the_chain(chain: dg.ExecuteInProcessResult, lake: Lake) -> None:
    assert chain.success
    failed = [(c.asset_key.to_user_string(), c.check_name) for c in chain.get_asset_check_evaluations() if not c.passed]
    assert failed == []
    seconds = lake.read_partition(SECONDS_TABLE, ESH4_DAY)
    bars = lake.read_partition(BARS_TABLE, ESH4_DAY)
    assert bars.height >= 60 and set(bars["symbol"]) == {"ESH4"}
    # the 1m table sums the 1s table exactly, and the volume is every trade record of the raw day
    assert bars["ofi_l1"].sum() == seconds["ofi_l1"].sum()
    raw_volume = lake.scan("raw_mbp10").filter(pl.col("action") == "T").select(pl.col("size").sum()).collect().item()
    assert bars["volume"].sum() == raw_volume
    # the crossed pre-open (22:39:55-23:00 UTC) is flagged and out of session
    pre = bars.filter(~pl.col("in_session"))
    assert pre["crossed_share"].max() > 0 and bars.filter(pl.col("in_session"))["crossed_share"].max() < 0.01
    meta = {m.asset_key.to_user_string(): m.materialization.metadata for m in chain.get_asset_materialization_events()}
    assert 0 < meta["ofi_bars_1m"]["ofi_contemporaneous_r2"].value <= 1


def test_rematerialising_the_chain_is_idempotent(chain: dg.ExecuteInProcessResult, lake: Lake, landing: Path) -> None:
    before = lake.read_partition(BARS_TABLE, ESH4_DAY).sort("ts")
    with dg.instance_for_test() as other:
        again = dg.materialize(
            [book_snapshots_1s, ofi_bars_1m], partition_key=ESH4_DAY.isoformat(), instance=other,
            resources=resources(lake, landing),
        )  # fmt: skip
    assert again.success
    assert lake.read_partition(BARS_TABLE, ESH4_DAY).sort("ts").equals(before)
    assert lake.table(BARS_TABLE).version() == 1


def test_bar_checks_fail_on_bad_bars(chain: dg.ExecuteInProcessResult, lake: Lake) -> None:
    bars = lake.read_partition(BARS_TABLE, ESH4_DAY).sort("ts")
    seconds = lake.read_partition(SECONDS_TABLE, ESH4_DAY)
    assert ms.check_bars_contiguous(bars).passed
    session = bars.filter(pl.col("in_session"))
    holed = bars.filter(pl.col("ts") != session["ts"][10])
    assert ms.check_bars_contiguous(holed).metadata["missing_minutes"] == 1
    nan = bars.with_columns(
        pl.when(pl.col("ts") == session["ts"][5])
        .then(None)
        .otherwise(pl.col("microprice_close"))
        .alias("microprice_close")
    )
    assert not ms.check_no_nan_with_book(nan).passed
    narrow = bars.with_columns(
        pl.when(pl.col("ts") == session["ts"][7])
        .then(0.0)
        .otherwise(pl.col("spread_ticks_close"))
        .alias("spread_ticks_close")
    )
    assert not ms.check_spread_at_least_one_tick(narrow).passed
    assert ms.check_ofi_sums_match(bars, seconds).passed
    assert not ms.check_ofi_sums_match(bars.with_columns(pl.col("ofi_l3") + 1), seconds).passed
    assert ms.check_volume_matches_raw(bars, lake, ESH4_DAY).passed
    assert not ms.check_volume_matches_raw(bars.with_columns(pl.col("volume") * 2), lake, ESH4_DAY).passed
    assert ms.check_events_match_raw(seconds, lake, ESH4_DAY).passed
    assert not ms.check_events_match_raw(seconds.head(100), lake, ESH4_DAY).passed


def test_bar_check_severities() -> None:
    specs = {s.name: s for s in ofi_bars_1m.check_specs}
    assert not specs["bars_contiguous"].blocking
    assert all(
        specs[n].blocking
        for n in ("no_nan_with_book", "spread_at_least_one_tick", "ofi_sums_match_1s", "volume_matches_raw")
    )
    assert dt.date(2023, 12, 26) == ESH4_DAY


def test_missing_upstream_partition_fails_naming_what_to_materialize(
    chain: dg.ExecuteInProcessResult, instance: dg.DagsterInstance, lake: Lake, landing: Path
) -> None:
    """A trade date with no raw partition must not produce 0 rows that pass every check (issue 13 item 3)."""
    other_day = (ESH4_DAY + dt.timedelta(days=1)).isoformat()
    with pytest.raises(MissingUpstreamError, match=f"book_snapshots_1s {other_day}: upstream raw_mbp10 .*materialize"):
        dg.materialize(
            [book_snapshots_1s], partition_key=other_day, instance=instance, resources=resources(lake, landing)
        )
    with pytest.raises(MissingUpstreamError, match=f"ofi_bars_1m {other_day}: upstream book_snapshots_1s"):
        dg.materialize([ofi_bars_1m], partition_key=other_day, instance=instance, resources=resources(lake, landing))
    assert lake.read_partition(SECONDS_TABLE, ESH4_DAY + dt.timedelta(days=1)).height == 0


def test_ofi_bars_without_the_seconds_table_names_it(instance: dg.DagsterInstance, lake: Lake, landing: Path) -> None:
    with pytest.raises(MissingUpstreamError, match="upstream book_snapshots_1s has no partition"):
        dg.materialize(
            [ofi_bars_1m], partition_key=ESH4_DAY.isoformat(), instance=instance, resources=resources(lake, landing)
        )
    assert not lake.exists(BARS_TABLE)
