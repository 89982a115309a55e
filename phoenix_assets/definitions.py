"""The one Dagster `Definitions` object of Phoenix (loaded by `dagster dev` via workspace.yaml)."""

from __future__ import annotations

import dagster as dg

from phoenix_assets.defs.features.assets import features_1m, hmm_regime_model, hmm_regimes
from phoenix_assets.defs.ingest.assets import raw_mbp10
from phoenix_assets.defs.ingest.synthetic import synthetic_landing_job
from phoenix_assets.defs.microstructure.assets import book_snapshots_1s, ofi_bars_1m
from phoenix_assets.defs.model.assets import TRAINING_TAGS, backtests, evaluation_metrics, mamba_sac_model
from phoenix_assets.defs.model.sagemaker import SageMakerResource
from phoenix_assets.defs.ops.automation import landing_sensor, phoenix_automation, record_run_failure
from phoenix_assets.defs.ops.dagster_internals import MULTIPROCESS_STEP_TARGET
from phoenix_assets.defs.ops.retrain import retrain_sensor
from phoenix_assets.defs.ops.run_health import run_worker_sweep
from phoenix_assets.defs.ops.schedules import databento_daily, paper_daily
from phoenix_assets.defs.paper.assets import paper_daily_report, paper_track_record
from phoenix_assets.defs.research.hpo import hpo_study
from phoenix_assets.defs.research.walk_forward import ablation_report, walk_forward
from phoenix_assets.defs.resources import DatabentoResource, LakeResource, LandingResource, QualityThresholds
from phoenix_assets.lib.process_lifetime import die_with_dagster_step_parent

# A step process of the multiprocess executor imports this module before running its step: from here on it
# is SIGKILLed when its run process dies (kill -9 of `dagster asset materialize`), instead of committing
# orphaned. A no-op in every other process that loads the definitions (lib/process_lifetime.py says why).
# A step process is recognised by the function Dagster runs in it (imported in defs/ops/dagster_internals.py).
die_with_dagster_step_parent(MULTIPROCESS_STEP_TARGET)


def resources() -> dict[str, dg.ConfigurableResource | dg.PipesSubprocessClient]:
    """Default resources: every value resolves from the environment at run time, else repo defaults."""
    return {
        "lake": LakeResource(),
        "landing": LandingResource(),
        "databento": DatabentoResource(),
        "quality": QualityThresholds(),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
        "sagemaker": SageMakerResource(),  # used only by mamba_sac_model with launch="sagemaker"
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

model_job = dg.define_asset_job(
    "model_job",
    selection=dg.AssetSelection.groups("model", "evaluation"),
    tags=TRAINING_TAGS,  # run tag: dagster.yaml's tag_concurrency_limits hold training to one run at a time
    description="Train mamba_sac_model (Pipes subprocess), backtest it against baselines, evaluate (with checks)",
)

paper_report_job = dg.define_asset_job(
    "paper_report_job",
    selection=dg.AssetSelection.assets("paper_daily_report"),
    description="One trade date of paper trading: the daily report (PnL, round trips, latency, risk events)",
)

hpo_job = dg.define_asset_job(
    "hpo_job",
    selection=dg.AssetSelection.groups("research"),
    tags=TRAINING_TAGS,  # one training run at a time, like model_job
    description="Optuna study over SAC + Mamba settings: search on validation, best trial scored once on test",
)

defs = dg.Definitions(
    assets=[
        raw_mbp10,
        book_snapshots_1s,
        ofi_bars_1m,
        hmm_regime_model,
        hmm_regimes,
        features_1m,
        mamba_sac_model,
        backtests,
        evaluation_metrics,
        walk_forward,
        ablation_report,
        hpo_study,
        paper_daily_report,
        paper_track_record,
    ],
    jobs=[synthetic_landing_job, daily_job, features_job, model_job, hpo_job, paper_report_job],
    schedules=[databento_daily, paper_daily],
    sensors=[landing_sensor, phoenix_automation, record_run_failure, retrain_sensor, run_worker_sweep],
    resources=resources(),
)
