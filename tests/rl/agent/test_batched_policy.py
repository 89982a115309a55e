"""The backtest's batched Mamba pass (phoenix_rl.agent.batched_policy) acts as SB3's `predict` does, bar for bar."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.monitor import Monitor

from feature_specs import load_feature_set
from phoenix_rl.agent.batched_policy import CHUNK, batched_policy
from phoenix_rl.config import EnvConfig, TrainConfig
from phoenix_rl.env.trading_env import MnqTradingEnv
from phoenix_rl.evaluation.backtest import run_backtest
from phoenix_rl.testing import synthetic_features
from phoenix_rl.train.trainer import sac_kwargs

COLUMNS = load_feature_set("phase2_ofi").columns
# 2 layers: the last layer's last-step-only path is exercised; more bars than a chunk: chunks are stitched
FEATURES = synthetic_features(COLUMNS, n_sessions=3, bars_per_session=CHUNK // 2 + 40, seed=5).with_columns(
    pl.col("warm").alias("warm_phase2_ofi")
)
CFG = TrainConfig(d_model=16, d_state=8, n_layers=2, net_arch=[32, 32], env=EnvConfig(lookback=12, deadband=0.02))
ENV = CFG.env_config(tuple(COLUMNS), "warm_phase2_ofi").replace(episode_mode="whole", max_steps=None)


def _model(**overrides: object) -> SAC:
    kwargs = sac_kwargs(CFG) | {"seed": 3} | overrides
    return SAC(env=Monitor(MnqTradingEnv(FEATURES, ENV)), **kwargs)


def test_windows_are_the_observations_windows() -> None:
    env = MnqTradingEnv(FEATURES, ENV)
    windows = env.observation_windows()
    assert windows.shape == (env.n_bars, ENV.lookback, len(COLUMNS) + 1)
    obs, _ = env.reset(seed=0)
    for k in range(60):
        assert env.bar == k and np.array_equal(windows[env.bar], obs["window"])
        obs, *_ = env.step(np.array([np.sin(k)], dtype=np.float32))


def test_actions_equal_predict_on_every_bar_and_the_backtests_are_identical() -> None:
    model = _model()
    env = MnqTradingEnv(FEATURES, ENV)
    act = batched_policy(model, env)
    assert act is not None
    obs, _ = env.reset(seed=0)
    done, diffs, k = False, [], 0
    while not done:  # an arbitrary action path: every agent state the head may meet
        fast, slow = act(obs), model.predict(obs, deterministic=True)[0]
        assert fast.shape == slow.shape == (1,)
        diffs.append(abs(float(fast[0]) - float(slow[0])))
        obs, _, terminated, truncated, _ = env.step(np.array([np.cos(0.7 * k)], dtype=np.float32))
        done, k = terminated or truncated, k + 1
    assert k == env.n_bars - 1 > CHUNK and max(diffs) <= 1e-6  # float32 rounding of batched matmuls only
    batched = run_backtest(model, FEATURES, ENV)
    one_by_one = run_backtest(lambda o: model.predict(o, deterministic=True)[0], FEATURES, ENV)
    assert batched.metrics["n_trades"] > 5
    assert batched.equity.equals(one_by_one.equity) and batched.trades.equals(one_by_one.trades)


def test_the_window_features_of_a_bar_ignore_later_bars() -> None:
    model = _model()
    extractor = model.policy.actor.features_extractor
    env = MnqTradingEnv(FEATURES, ENV)
    later = FEATURES.with_columns(
        pl.when(pl.int_range(pl.len()) > 300).then(-pl.col(c)).otherwise(pl.col(c)) for c in COLUMNS
    )

    def features(frame: pl.DataFrame) -> np.ndarray:
        windows = MnqTradingEnv(frame, ENV).observation_windows()[:400]
        with torch.no_grad():
            return extractor.window_features(torch.as_tensor(np.ascontiguousarray(windows))).numpy()

    assert env.n_bars > 301
    before, after = features(FEATURES), features(later)
    np.testing.assert_array_equal(before[:301], after[:301])  # bar 300's window ends at bar 300
    assert not np.allclose(before[301:], after[301:])  # the perturbation reaches the later bars


@pytest.mark.parametrize(
    "overrides",
    [
        {"policy": "MultiInputPolicy", "policy_kwargs": {"net_arch": [32, 32]}},  # SB3's own extractor
        {"use_sde": True},
    ],
    ids=["combined-extractor", "gsde"],
)
def test_other_models_keep_predict(overrides: dict[str, object]) -> None:
    model = _model(**overrides)
    assert batched_policy(model, MnqTradingEnv(FEATURES, ENV)) is None
    assert run_backtest(model, FEATURES.head(200), ENV).equity.height == 200
