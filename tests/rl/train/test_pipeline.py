"""End to end on realistic rows: synthetic DBN days -> book kernel -> 1m bars -> HMM -> compute_features ->
MnqTradingEnv checks, baselines and a short SAC run with the Mamba extractor."""

from __future__ import annotations

import datetime as dt
import math
import warnings
from pathlib import Path

import databento
import polars as pl
import pytest
from gymnasium.utils.env_checker import check_env

from feature_specs import load_catalog, load_feature_set
from phoenix_assets.lib.features.compute import compute_features
from phoenix_assets.lib.features.hmm_regimes import filter_regimes, fit_regime_model
from phoenix_assets.lib.market.bars import ofi_bars_1m, seconds_frame
from phoenix_assets.lib.market.book_kernel import arrays_from_dbn, book_ofi_1s
from phoenix_assets.lib.synthetic.market import SyntheticMarketConfig, write_day
from phoenix_rl.env.trading_env import EnvConfig, MnqTradingEnv
from phoenix_rl.evaluation.baselines import run_baselines
from phoenix_rl.train.trainer import TrainConfig, train

pytestmark = pytest.mark.slow
DAYS = [dt.date(2024, 3, 12), dt.date(2024, 3, 13), dt.date(2024, 3, 14)]


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    folder = tmp_path_factory.mktemp("dbn")
    cfg = SyntheticMarketConfig(records_per_day=30_000, ofi_strength=0.8)
    parts = []
    for day in DAYS:
        store = databento.DBNStore.from_file(write_day(day, folder, cfg))
        seconds = book_ofi_1s(arrays_from_dbn(chunk) for chunk in store.to_ndarray(count=1 << 16))
        parts.append(ofi_bars_1m(seconds_frame(seconds), symbol=cfg.continuous_symbol))
    bars = pl.concat(parts)
    catalog = load_catalog()
    model = fit_regime_model(bars, catalog.hmm, DAYS[0], DAYS[0], n_starts=1)
    fset = load_feature_set("phase2_ofi")
    return compute_features(bars, fset, filter_regimes(model, bars, catalog.hmm))


def test_env_and_baselines_on_pipeline_features(features: pl.DataFrame) -> None:
    cols = load_feature_set("phase2_ofi").columns
    conf = EnvConfig(cols, lookback=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check_env(MnqTradingEnv(features, conf))
    env = MnqTradingEnv(features, conf)
    assert not env.after_hole.any()  # the pipeline's sessions have no unscheduled holes
    results = run_baselines(features, conf)
    held = results["buy_and_hold"].equity
    last_bars = held.group_by("trade_date").agg(pl.col("position").sort_by("ts").last())
    assert (last_bars["position"] == 0).all()  # flat through each session's last bar before the halt
    assert results["flat"].metrics["total_cost"] == 0.0
    for r in results.values():
        assert all(v is None or math.isfinite(v) for v in r.metrics.values())
        assert r.trades["pnl"].sum() == pytest.approx(r.equity["equity"][-1] - 10_000.0)


def test_short_training_run_on_pipeline_features(features: pl.DataFrame, tmp_path: Path) -> None:
    cfg = TrainConfig(
        train_end="2024-03-13",
        val_start="2024-03-14",
        val_end="2024-03-14",
        total_timesteps=300,
        learning_starts=100,
        batch_size=32,
        buffer_size=2_000,
        env=EnvConfig(lookback=16),
        d_model=16,
        d_state=8,
        n_layers=1,
        log_every=100,
    )
    result = train(cfg, features, tmp_path)
    assert result.model_path.exists() and result.val_metrics is not None
