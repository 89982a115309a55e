"""Reading what the assets stored: the latest fitted HMM, the latest trained SAC model and `features_1m` rows.

One implementation for every reader (the assets, the paper trader, the research assets); the artifacts live as
versioned folders under the lake root with a `latest.json` pointer (`Lake.latest`). No dagster import.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from phoenix_assets.lib.features.hmm_regimes import RegimeModel
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import (
    BARS_TABLE,
    DECISION_BOOK_COLUMNS,
    FEATURES_TABLE,
    HMM_MODEL_DIR,
    SAC_MODEL_DIR,
)

__all__ = [
    "features_between",
    "latest_regime_model",
    "latest_sac_model",
    "load_latest_model",
    "regime_model_fit_window",
    "trading_rows",
    "with_decision_book",
]


def latest_regime_model(lake: Lake) -> RegimeModel:
    """The latest fitted HMM of `hmm_regime_model`."""
    _, path = lake.latest(HMM_MODEL_DIR, "hmm_regime_model")
    return RegimeModel.from_json(lake.read_artifact(path))


def regime_model_fit_window(lake: Lake) -> tuple[str, str] | None:
    """The training window of the HMM whose regimes features_1m holds (None: no HMM fitted in this lake)."""
    try:
        _, path = lake.latest(HMM_MODEL_DIR, "hmm_regime_model")
    except FileNotFoundError:
        return None
    fitted = json.loads(lake.read_artifact(path))
    return str(fitted["train_start"]), str(fitted["train_end"])


def latest_sac_model(lake: Lake) -> tuple[str, str]:
    """(version, artifact folder) of the latest trained model."""
    return lake.latest(SAC_MODEL_DIR, "mamba_sac_model")


def load_latest_model(lake: Lake) -> tuple[str, Any, dict[str, Any]]:
    """(version, SB3 SAC model, stored config) of the latest artifact."""
    from stable_baselines3 import SAC

    version, folder = latest_sac_model(lake)
    saved = json.loads(lake.read_artifact(f"{folder}/config.json"))
    with tempfile.TemporaryDirectory(prefix="phoenix-model-") as tmp:
        path = Path(tmp) / "model.zip"
        path.write_bytes(lake.read_artifact(f"{folder}/model.zip"))
        model = SAC.load(path, device="cpu")
    return version, model, saved


def features_between(lake: Lake, start: str, end: str, columns: list[str] | None = None) -> pl.DataFrame:
    """features_1m rows with start <= trade_date <= end, in time order."""
    if not lake.exists(FEATURES_TABLE):
        raise FileNotFoundError(f"no {FEATURES_TABLE} table under {lake.root}: materialize features_1m first")
    frame = lake.scan(FEATURES_TABLE).filter(
        pl.col("trade_date").is_between(dt.date.fromisoformat(start), dt.date.fromisoformat(end))
    )
    if columns is not None:
        frame = frame.select(columns)
    return frame.collect().sort("ts")


def with_decision_book(rows: pl.DataFrame, bars: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
    """`rows` with each bar's decision book from `ofi_bars_1m` (`DECISION_BOOK_COLUMNS`, joined on ts and
    instrument): the one fill model (phoenix_rl.env.fills) crosses that spread in training, HPO and backtests
    alike; without it the env falls back to the next bar's open."""
    if not rows.height or all(c in rows.columns for c in DECISION_BOOK_COLUMNS):
        return rows
    dates = rows["trade_date"]
    book = (
        bars.lazy()
        .filter(pl.col("trade_date").is_between(dates.min(), dates.max()))
        .select(
            pl.col("ts").cast(rows.schema["ts"]),
            pl.col("instrument_id").cast(rows.schema["instrument_id"]),
            *DECISION_BOOK_COLUMNS,
        )
        .collect()
    )
    return rows.join(book, on=["ts", "instrument_id"], how="left").sort("ts")


def trading_rows(lake: Lake, start: str, end: str, columns: list[str] | None = None) -> pl.DataFrame:
    """features_1m rows of [start, end] with their decision book (`with_decision_book`): what a training, a
    study or a backtest trades on. Without an ofi_bars_1m table the rows are features alone."""
    rows = features_between(lake, start, end, columns)
    return with_decision_book(rows, lake.scan(BARS_TABLE)) if lake.exists(BARS_TABLE) else rows
