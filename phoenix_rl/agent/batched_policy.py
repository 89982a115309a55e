"""`batched_policy`: the deterministic actions of an SB3 SAC model with the Mamba extractor over a backtest's
bars, the extractor's sequence pass computed for every bar at once instead of once per `predict`.

A backtest's observation windows do not depend on the agent's actions: only the agent state does, and it
bypasses the sequence model (`MambaFeaturesExtractor.window_features`). So the Mamba pass (~2 ms a bar through
`predict` at the default config) runs before the loop in batches of `CHUNK` bars, and each step runs only the
actor's head: [window features, agent state] -> `latent_pi` -> `mu` -> tanh (the squashed Gaussian's mode) ->
`unscale_action`, the modules and order of SB3's `predict(deterministic=True)`. Batching changes only how the
matmuls block their sums: actions equal `predict`'s to float32 rounding (tests/rl/agent/test_batched_policy.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from phoenix_rl.agent.extractor import MambaFeaturesExtractor
from phoenix_rl.env.trading_env import MnqTradingEnv

__all__ = ["CHUNK", "batched_policy"]

CHUNK = 512  # bars per batched extractor pass: ~1 MB of float32 windows at the default config


def batched_policy(model: Any, env: MnqTradingEnv) -> Callable[[dict[str, np.ndarray]], np.ndarray] | None:
    """The fast deterministic policy of `model` on `env`'s bars, or None where it does not apply (not a SAC
    policy with the Mamba extractor on its actor, or gSDE): the caller then uses `predict`."""
    from stable_baselines3.sac.policies import SACPolicy

    policy = getattr(model, "policy", None)
    if not isinstance(policy, SACPolicy):
        return None
    actor = policy.actor
    extractor = actor.features_extractor
    if actor.use_sde or not isinstance(extractor, MambaFeaturesExtractor):
        return None
    policy.set_training_mode(False)
    windows = env.observation_windows()
    with torch.no_grad():
        sequence = torch.cat(
            [
                extractor.window_features(
                    torch.as_tensor(np.ascontiguousarray(windows[i : i + CHUNK]), device=policy.device)
                )
                for i in range(0, len(windows), CHUNK)
            ]
        )
    shape = policy.action_space.shape or (1,)

    def act(obs: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            agent = torch.as_tensor(obs["agent"], device=policy.device).float()[None]
            features = torch.cat([sequence[env.bar][None], agent], dim=1)
            action = torch.tanh(actor.mu(actor.latent_pi(features)))
        return policy.unscale_action(action.cpu().numpy().reshape((-1, *shape)))[0]

    return act
