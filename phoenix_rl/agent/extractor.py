"""`MambaFeaturesExtractor`: SB3 features extractor for `MnqTradingEnv`'s Dict observation.

window (batch, L, n_features + 1) -> Linear embedding to d_model -> n_layers pre-norm residual Mamba layers
(`phoenix_rl.agent.mamba.MambaLayer`) -> final RMSNorm -> hidden state of the LAST time step (the causal
model has read the whole window by then; the last layer computes only that step, `MambaLayer(last_only=True)`)
-> concatenated with the agent state (position, unrealised PnL,
time in position) -> features_dim = d_model + 3. The agent state bypasses the sequence model on purpose:
it is exact, current and low-dimensional, so the policy/critic heads see it unmixed.

Use through SB3's extension point (STYLE.md):
    SAC("MultiInputPolicy", env, policy_kwargs=dict(features_extractor_class=MambaFeaturesExtractor,
        features_extractor_kwargs=dict(d_model=32, d_state=16, n_layers=2)))
SAC builds one extractor for the actor and one for the critics (plus the target critic's copy) unless
`share_features_extractor=True`.
"""

from __future__ import annotations

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from phoenix_rl.agent.mamba import MambaLayer, RMSNorm

__all__ = ["MambaFeaturesExtractor"]


class MambaFeaturesExtractor(BaseFeaturesExtractor):
    """Mamba over the observation window + the raw agent state (module doc)."""

    def __init__(
        self,
        observation_space: spaces.Dict,
        d_model: int = 32,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        n_layers: int = 2,
        use_cuda_kernel: bool | None = None,
    ) -> None:
        window, agent = observation_space["window"], observation_space["agent"]
        if not isinstance(window, spaces.Box) or len(window.shape) != 2 or not isinstance(agent, spaces.Box):
            raise ValueError("MambaFeaturesExtractor needs Dict(window=Box(L, F), agent=Box(k)) (MnqTradingEnv)")
        n_agent = int(agent.shape[0])
        super().__init__(observation_space, features_dim=d_model + n_agent)
        self.embed = nn.Linear(int(window.shape[1]), d_model)
        self.layers = nn.ModuleList(
            MambaLayer(d_model, d_state, d_conv, expand, use_cuda_kernel=use_cuda_kernel) for _ in range(n_layers)
        )
        self.norm_f = RMSNorm(d_model)

    def window_features(self, window: torch.Tensor) -> torch.Tensor:
        """(batch, L, n_features + 1) -> (batch, d_model): the sequence half of the features. It does not read
        the agent state, so a backtest computes it for every bar at once (phoenix_rl.agent.batched_policy)."""
        h = self.embed(window)
        for i, layer in enumerate(self.layers):
            # only the last step leaves the extractor: the last layer computes that step alone
            h = layer(h, last_only=i == len(self.layers) - 1)
        return self.norm_f(h[:, -1])

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([self.window_features(observations["window"]), observations["agent"]], dim=1)
