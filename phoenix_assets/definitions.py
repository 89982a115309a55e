"""The one Dagster `Definitions` object of Phoenix (loaded by `dagster dev` via workspace.yaml)."""

from __future__ import annotations

import dagster as dg

from phoenix_assets.defs.automation import landing_sensor, phoenix_automation, record_run_failure
from phoenix_assets.defs.features.assets import features_1m, hmm_regime_model, hmm_regimes
from phoenix_assets.defs.ingest.assets import raw_mbp10
from phoenix_assets.defs.ingest.synthetic import synthetic_landing_job
from phoenix_assets.defs.microstructure.assets import book_snapshots_1s, ofi_bars_1m
from phoenix_assets.defs.resources import DatabentoResource, LakeResource, LandingResource, QualityThresholds


def resources() -> dict[str, dg.ConfigurableResource]:
    """Default resources: every value resolves from the environment at run time, else repo defaults."""
    return {
        "lake": LakeResource(),
        "landing": LandingResource(),
        "databento": DatabentoResource(),
        "quality": QualityThresholds(),
    }


daily_job = dg.define_asset_job(
    "daily_job",
    selection=dg.AssetSelection.groups("ingest", "microstructure"),
    description="One trade date: landed DBN files -> raw_mbp10 -> book_snapshots_1s -> ofi_bars_1m (with checks)",
)

features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.assets("hmm_regimes", "features_1m"),
    description="One month: HMM regimes (forward-filtered) and the point-in-time feature table",
)

defs = dg.Definitions(
    assets=[raw_mbp10, book_snapshots_1s, ofi_bars_1m, hmm_regime_model, hmm_regimes, features_1m],
    jobs=[synthetic_landing_job, daily_job, features_job],
    sensors=[landing_sensor, phoenix_automation, record_run_failure],
    resources=resources(),
)
