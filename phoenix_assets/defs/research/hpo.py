"""`hpo_study`: an Optuna search over SAC + Mamba settings on `features_1m` (phoenix_rl/research/hpo/ does the work).

Thin: load the feature rows of the configured windows, run (or resume) the study, retrain the best trial and
score it once on the test window, then report the selection statistics (deflated Sharpe ratio, PBO) and
Optuna's plots. Trials run in this step process; more workers can join the same study from other processes
or machines with `python -m phoenix_rl.research.hpo --study NAME ...` (docs/research-protocol.md, "HPO study").
"""

import datetime as dt
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import deltalake
import polars as pl
import pyarrow as pa
from pydantic import Field

from phoenix_assets.defs.config import config_from_dataclass
from phoenix_assets.defs.features.assets import features_1m
from phoenix_assets.defs.model.assets import (
    TRAINING_POOL,
    TRAINING_TAGS,
    _feature_columns,
    refuse_regimes_fitted_on_judged_data,
)
from phoenix_assets.defs.model.config import EnvSettings
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib.io.artifacts import trading_rows
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import HPO_DIR, HPO_TEST_LOOKS_TABLE
from phoenix_rl.config import TrainConfig
from phoenix_rl.evaluation.metrics import format_metric
from phoenix_rl.research.search_space import SearchSpace
from phoenix_rl.windows import EvaluationWindows

HpoBaseSettings = config_from_dataclass(
    "HpoBaseSettings",
    TrainConfig,
    "The base TrainConfig every trial starts from (phoenix_rl.config.TrainConfig; a trial replaces the sampled "
    "values). The train, val and test windows must be set, ordered and disjoint.",
    nested={"env": EnvSettings},
)
HpoSearchSpace = config_from_dataclass(
    "HpoSearchSpace",
    SearchSpace,
    "phoenix_rl.research.search_space.SearchSpace: lists are categorical choices, [low, high] pairs are ranges "
    "(an equal pair or a one-element list fixes the value)",
)


class HpoStudyConfig(dg.Config):
    study_name: str = Field(default="mamba_sac_hpo", description="Optuna study; an existing one is resumed")
    n_trials: int = Field(default=20, description="Finished (complete or pruned) trials the study should hold")
    timeout_s: float | None = Field(default=None, description="Seconds this run may search; None: no limit")
    eval_every: int = Field(
        default=1_000, description="Environment steps between validation backtests (pruning); 0: only at the end"
    )
    pruner: Literal["median", "none"] = Field(default="median", description="Optuna pruner of the study")
    seed: int = Field(default=1, description="Seed of the TPE sampler (each trial trains with base.seed)")
    pbo_splits: int = Field(default=16, description="CSCV splits of the PBO (capped at the validation days)")
    workers: int = Field(
        default=1,
        description=(
            "Trial processes at once on this machine, one torch thread each (2 on 2 cores: ~2x the trials per "
            "hour); with more than one the trial sequence depends on their timing, so a seeded study repeats "
            "exactly only with 1"
        ),
    )
    ray_address: str | None = Field(
        default=None,
        description=(
            "Ray cluster for the trial workers (host:port, ray://host:10001, 'auto'): `workers` tasks, one GPU each "
            "where the cluster has GPUs, sharing the study through $PHOENIX_OPTUNA_STORAGE (required on more than "
            "one node); empty -> $RAY_ADDRESS -> local processes"
        ),
    )
    base: HpoBaseSettings = Field(default_factory=HpoBaseSettings)  # type: ignore[valid-type]
    search_space: HpoSearchSpace = Field(default_factory=HpoSearchSpace)  # type: ignore[valid-type]


def _table(rows: dict[str, Any]) -> str:
    md = ["| | |", "|---|---|"]
    md += [f"| {k} | {format_metric(v) if isinstance(v, float) or v is None else v} |" for k, v in rows.items()]
    return "\n".join(md)


@dg.asset(
    group_name="research",
    kinds={"optuna", "pytorch"},
    deps=[features_1m],
    op_tags=TRAINING_TAGS,
    pool=TRAINING_POOL,
    description=(
        "Optuna study (multivariate TPE + median pruner) over SAC, Mamba, lookback, action mode and reward shaping: "
        "trains on the TRAIN window, judged on the VALIDATION window only (total return after costs); the best "
        "trial retrained and scored once on the TEST window; deflated Sharpe ratio and PBO (CSCV) over all "
        "finished trials; Optuna plots. Storage: $PHOENIX_OPTUNA_STORAGE, else <lake>/optuna/<study>.log."
    ),
)
def hpo_study(context: dg.AssetExecutionContext, config: HpoStudyConfig, lake: LakeResource) -> dg.MaterializeResult:
    from phoenix_rl.evaluation.plots import markdown_image
    from phoenix_rl.research import hpo  # torch, SB3, optuna: imported when the asset runs, not at load

    the_lake = lake.lake()
    base = TrainConfig.from_dict(config.base.model_dump())
    settings = hpo.StudySettings(
        base=base,
        space=SearchSpace.from_dict(config.search_space.model_dump()),
        eval_every=config.eval_every,
        pruner=config.pruner,
        seed=config.seed,
    )
    windows = base.windows()
    first, last = windows["train"][0], windows["test"][1]
    assert first is not None and last is not None  # StudySettings checked the windows
    evaluation = EvaluationWindows.from_mapping(windows, base.embargo_days)  # type: ignore[arg-type]
    refuse_regimes_fitted_on_judged_data(the_lake, evaluation, "hpo_study")  # before the first trial
    features = trading_rows(the_lake, first, last, _feature_columns(the_lake, base.feature_set))
    _, storage_label = hpo.optuna_storage(config.study_name, lake_root=the_lake.root)
    context.log.info(f"study {config.study_name} on {storage_label}: {features.height} feature rows {first}..{last}")
    study = hpo.run_study_workers(
        settings,
        features,
        config.study_name,
        the_lake.root,
        config.n_trials,
        config.timeout_s,
        workers=config.workers,
        log=context.log.info,
        ray_address=config.ray_address,
    )
    stats = hpo.study_statistics(study, n_splits=config.pbo_splits)
    if stats["n_complete"] == 0:
        raise RuntimeError(
            f"hpo_study: study {config.study_name!r} has no complete trial ({stats['n_pruned']} pruned, "
            f"{stats['n_failed']} failed): see this step's logs for the failures, widen the search space or raise "
            "n_trials"
        )
    with tempfile.TemporaryDirectory(prefix="phoenix-hpo-best-") as tmp:
        test = hpo.score_best_on_test(study, settings, features, out_dir=tmp, log=context.log.info)
        model_uri = None
        if (Path(tmp) / "model.zip").exists():  # retrained now (not a stored earlier result)
            folder = f"{HPO_DIR}/{config.study_name}/trial_{test['trial']}"
            model_uri = the_lake.write_artifact(f"{folder}/model.zip", (Path(tmp) / "model.zip").read_bytes())
            the_lake.write_artifact(f"{folder}/config.json", (Path(tmp) / "config.json").read_bytes())
            _log_test_look(the_lake, config.study_name, test, context.run.run_id)
    looks = _test_looks(the_lake, config.study_name)
    best = study.best_trial
    plots = hpo.study_plots(study)
    summary = {
        "objective": hpo.OBJECTIVE,
        "best trial": best.number,
        "validation objective (search)": float(best.value),
        "validation objective (retrained)": test["val_value_retrained"],
        "test total return (scored once)": test["test_metrics"]["total_return"],
        "test $ PnL / costs per contract": (
            f"{sum(test.get('test_daily_pnl_usd', [])):+,.2f} / {sum(test.get('test_daily_cost_usd', [])):,.2f}"
            if "test_daily_pnl_usd" in test
            else "n/a (scored before daily $ were recorded)"
        ),
        "test window looks (this study, ever)": looks,
        "deflated Sharpe ratio": stats["dsr"] if stats["dsr"] is not None else stats["dsr_note"],
        "PBO (CSCV)": stats["pbo"] if stats["pbo"] is not None else stats["pbo_note"],
        "trials complete / pruned / failed / running": (
            f"{stats['n_complete']} / {stats['n_pruned']} / {stats['n_failed']} / {stats['n_running']}"
        ),
    }
    figures = [f"### {name.replace('_', ' ')}\n\n{markdown_image(png, name)}" for name, png in plots.items()]
    metadata: dict[str, Any] = {
        "study_name": config.study_name,
        "storage": storage_label,
        "objective": hpo.OBJECTIVE,
        "best_trial": best.number,
        "best_params": dg.MetadataValue.json(best.params),
        "best_reward_shaping": dg.MetadataValue.json(best.user_attrs.get("reward", {})),
        "validation_objective": float(best.value),
        "test_metrics": dg.MetadataValue.json(json.loads(json.dumps(test["test_metrics"]))),
        "test_scored_trial": test["trial"],
        "test_daily_pnl_usd": dg.MetadataValue.json(
            dict(zip(test["test_trade_dates"], test.get("test_daily_pnl_usd", []), strict=False))
        ),
        "test_window_looks": dg.MetadataValue.int(looks),
        "dsr": stats["dsr"] if stats["dsr"] is not None else "n/a",
        "dsr_note": stats["dsr_note"],
        "pbo": stats["pbo"] if stats["pbo"] is not None else "n/a",
        "pbo_note": stats["pbo_note"],
        "n_trials": stats["n_trials"],
        "n_complete": stats["n_complete"],
        "n_pruned": stats["n_pruned"],
        "n_failed": stats["n_failed"],
        "n_running": stats["n_running"],
        "n_trials_in_statistics": stats["n_trials_in_statistics"],
        "windows": dg.MetadataValue.json({k: list(v) for k, v in windows.items()}),
        "summary": dg.MetadataValue.md(_table(summary)),
        "optuna_plots": dg.MetadataValue.md("\n\n".join(figures) or "no plot (no complete trial)"),
    }
    if model_uri is not None:
        metadata["best_model"] = dg.MetadataValue.path(model_uri)
    return dg.MaterializeResult(metadata=metadata)


TEST_LOOK_SCHEMA = pa.schema(
    [
        ("study_name", pa.string()),
        ("trial", pa.int64()),
        ("looked_at", pa.timestamp("us", "UTC")),
        ("config_hash", pa.string()),  # sha256 of the scored trial's TrainConfig (JSON, sorted keys)
        ("test_total_return", pa.float64()),
        ("dagster_run_id", pa.string()),
    ]
)


def _log_test_look(lake: Lake, study_name: str, test: dict[str, Any], run_id: str) -> None:
    """Append one scoring of the test window to HPO_TEST_LOOKS_TABLE: a resumed or re-selected study scores it
    again, and a reviewer must see how often the held-out data was looked at (issue 24 item 6). Append only."""
    config_hash = hashlib.sha256(json.dumps(test["train_config"], sort_keys=True).encode()).hexdigest()
    row = {
        "study_name": study_name,
        "trial": int(test["trial"]),
        "looked_at": dt.datetime.now(dt.UTC),
        "config_hash": config_hash,
        "test_total_return": float(test["test_metrics"]["total_return"]),
        "dagster_run_id": run_id,
    }
    deltalake.write_deltalake(
        lake.table_uri(HPO_TEST_LOOKS_TABLE),
        pa.Table.from_pylist([row], schema=TEST_LOOK_SCHEMA),
        mode="append",
        storage_options=lake.options(),
    )


def _test_looks(lake: Lake, study_name: str) -> int:
    """How many times this study's test window was scored, from the ledger."""
    if not lake.exists(HPO_TEST_LOOKS_TABLE):
        return 0
    return lake.scan(HPO_TEST_LOOKS_TABLE).filter(pl.col("study_name") == study_name).select(pl.len()).collect().item()
