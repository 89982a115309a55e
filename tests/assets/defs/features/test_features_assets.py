"""`hmm_regimes` and `features_1m` through Dagster on the real fixture day: a month without `ofi_bars_1m` rows is
refused by both, alike, before anything is written (issue 29)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from phoenix_assets.defs.features.assets import features_1m, hmm_regime_model, hmm_regimes
from phoenix_assets.defs.ingest.assets import raw_mbp10
from phoenix_assets.defs.microstructure.assets import book_snapshots_1s, ofi_bars_1m
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import BARS_TABLE, FEATURES_TABLE, REGIMES_TABLE
from tests.assets.defs.ingest.test_raw_asset import resources
from tests.assets.lib.ingest.test_raw_ingest import ESH4_DAY
from tests.conftest import ESH4_MBP10, land

DECEMBER = "2023-12-01"  # the month of ESH4_DAY


@pytest.fixture(scope="module")
def december(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, Path]:
    """A lake with ofi_bars_1m for the real day 2023-12-26, an HMM fit on that day and hmm_regimes for December."""
    root = tmp_path_factory.mktemp("features_assets")
    (root / "lake").mkdir()
    landing = root / "landing"
    landing.mkdir()
    lake = Lake(str(root / "lake"))
    land(landing, ESH4_MBP10)
    day, res = ESH4_DAY.isoformat(), resources(lake, landing)
    fit = {"ops": {"hmm_regime_model": {"config": {"train_start": day, "train_end": day}}}}
    with dg.instance_for_test() as instance:
        chain = [
            dg.materialize(
                [raw_mbp10, book_snapshots_1s, ofi_bars_1m], partition_key=day, instance=instance, resources=res
            ),
            dg.materialize([hmm_regime_model], instance=instance, resources=res, run_config=fit),
            dg.materialize([hmm_regimes], partition_key=DECEMBER, instance=instance, resources=res),
        ]
    assert all(result.success for result in chain)
    return lake, landing


def _refusal(result: dg.ExecuteInProcessResult) -> str:
    """The message of the one step's failure (the asset's own exception, not Dagster's wrapper)."""
    [failure] = result.get_step_failure_events()
    error = failure.step_failure_data.error
    assert error is not None
    while error.cause is not None:
        error = error.cause
    assert error.cls_name == "MissingUpstreamError", error.to_string()
    return error.message.strip()


@pytest.mark.parametrize(
    "month",
    [
        "2024-01-01",  # empty, though its warm-up (late December) has bars
        "2023-11-01",  # empty, and nothing before it
    ],
)
def test_a_month_without_bars_is_refused_alike_by_hmm_regimes_and_features_1m(
    december: tuple[Lake, Path], month: str
) -> None:
    lake, landing = december
    regimes_version = lake.table(REGIMES_TABLE).version()
    refusals = {}
    for asset in (hmm_regimes, features_1m):
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                [asset], partition_key=month, instance=instance, resources=resources(lake, landing),
                raise_on_error=False,
            )  # fmt: skip
        assert not result.success
        refusals[asset.key.to_user_string()] = _refusal(result)
    assert refusals["hmm_regimes"] == refusals["features_1m"], refusals
    assert f"{BARS_TABLE} has no rows" in refusals["hmm_regimes"] and month[:7] in refusals["hmm_regimes"]
    assert lake.table(REGIMES_TABLE).version() == regimes_version  # nothing committed
    assert not lake.exists(FEATURES_TABLE)
