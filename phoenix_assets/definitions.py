"""The one Dagster `Definitions` object of Phoenix (loaded by `dagster dev` via workspace.yaml)."""

from __future__ import annotations

import dagster as dg

from phoenix_assets.defs.ingest.assets import raw_mbp10
from phoenix_assets.defs.ingest.synthetic import synthetic_landing_job
from phoenix_assets.defs.resources import DatabentoResource, LakeResource, LandingResource, QualityThresholds


def resources() -> dict[str, dg.ConfigurableResource]:
    """Default resources: every value resolves from the environment at run time, else repo defaults."""
    return {
        "lake": LakeResource(),
        "landing": LandingResource(),
        "databento": DatabentoResource(),
        "quality": QualityThresholds(),
    }


ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("ingest"),
    description="Ingest landed DBN files into raw_mbp10 for a trade-date partition (with checks)",
)

defs = dg.Definitions(
    assets=[raw_mbp10],
    jobs=[synthetic_landing_job, ingest_job],
    resources=resources(),
)
