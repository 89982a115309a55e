"""`PhoenixSacPolicy` trains exactly as SB3's `MultiInputPolicy` (every parameter bit for bit after the same
seeded run) while its critic's extractor skips the actor loss's backward pass and the target's graph."""

from __future__ import annotations

import polars as pl
import pytest
import torch as th
from stable_baselines3 import SAC

from feature_specs import load_feature_set
from phoenix_rl.agent.policy import ExtractorDetachedCritic, PhoenixSacPolicy
from phoenix_rl.env.trading_env import MnqTradingEnv
from phoenix_rl.testing import synthetic_features
from phoenix_rl.train.trainer import TrainConfig, sac_kwargs, silent_logger

RUN = {
    "feature_set": "phase2_ofi",
    "train_end": "2024-03-13",
    "total_timesteps": 160,
    "learning_starts": 40,
    "batch_size": 16,
    "buffer_size": 1_000,
    "d_model": 8,
    "d_state": 4,
    "n_layers": 2,
    "net_arch": [16, 16],
    "env": {"lookback": 8, "max_steps": 60},
}


@pytest.fixture(scope="module")
def features() -> pl.DataFrame:
    return synthetic_features(load_feature_set("phase2_ofi").columns, n_sessions=2, bars_per_session=120)


def _trained(features: pl.DataFrame, policy: object, share: bool = False) -> SAC:
    cfg = TrainConfig.from_dict({**RUN, "share_features_extractor": share})
    env = MnqTradingEnv(features, cfg.env_config(tuple(load_feature_set("phase2_ofi").columns), "warm"))
    model = SAC(env=env, **(sac_kwargs(cfg) | {"policy": policy}))
    model.set_logger(silent_logger())
    model.learn(cfg.total_timesteps)
    return model


@pytest.mark.parametrize("share", [False, True])
def test_training_is_bit_for_bit_sb3s(features: pl.DataFrame, share: bool) -> None:
    ours = _trained(features, PhoenixSacPolicy, share)
    sb3 = _trained(features, "MultiInputPolicy", share)
    assert isinstance(ours.critic, ExtractorDetachedCritic) and isinstance(ours.critic_target, ExtractorDetachedCritic)
    assert ours.policy.make_critic().__class__ is ExtractorDetachedCritic
    theirs = dict(sb3.policy.state_dict())
    assert ours._n_updates == sb3._n_updates > 100
    for name, value in ours.policy.state_dict().items():
        assert th.equal(value, theirs[name]), name  # actor, critic and target critic, extractors included


def test_the_actor_loss_leaves_the_critic_extractor_without_gradient(features: pl.DataFrame) -> None:
    model = _trained(features, PhoenixSacPolicy)
    obs, _ = model.env.envs[0].reset(seed=0)  # type: ignore[attr-defined]
    batch = {k: th.as_tensor(v)[None].repeat(4, *([1] * v.ndim)) for k, v in obs.items()}
    actions_pi, _ = model.actor.action_log_prob(batch)
    model.critic.zero_grad(set_to_none=True)
    th.cat(model.critic(batch, actions_pi), dim=1).min(dim=1).values.mean().backward()
    extractor = [p.grad for p in model.critic.features_extractor.parameters()]
    assert all(g is None for g in extractor)  # SB3's critic would fill these (and throw them away)
    assert any(p.grad is not None for p in model.actor.parameters())  # the actor still learns through Q
    replay = th.zeros_like(actions_pi).detach()
    model.critic.zero_grad(set_to_none=True)
    th.cat(model.critic(batch, replay), dim=1).mean().backward()  # the critic's own loss trains the extractor
    assert all(p.grad is not None for p in model.critic.features_extractor.parameters())
