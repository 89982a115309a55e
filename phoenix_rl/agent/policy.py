"""`PhoenixSacPolicy`: SB3's `MultiInputPolicy` for SAC minus two pieces of wasted work in the critic's extractor.

SB3's `SAC.train` computes the actor loss through `critic(obs, actions_pi)` and back-propagates it through the
whole critic, its (Mamba) features extractor included; the gradients that land on the critic's parameters are
thrown away (`critic.optimizer.zero_grad()` runs before the critic's next step), and the actor's gradient does
not depend on them, because the critic's features do not depend on the action. Likewise SB3 builds an
autograd graph for the target critic's features inside `no_grad` (its `set_grad_enabled` re-enables it).
`ExtractorDetachedCritic` computes the extractor's features with a graph only where a loss uses it: the critic
loss (actions from the replay buffer, which carry no graph). Every parameter update is bit for bit SB3's
(tests/rl/agent/test_policy.py); the saving is the backward pass of the critic's extractor in the actor loss, about a
fifth of a gradient step with the Mamba extractor (benchmarks/bench_training.py).
"""

from __future__ import annotations

import torch as th
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.sac.policies import MultiInputPolicy

__all__ = ["ExtractorDetachedCritic", "PhoenixSacPolicy"]


class ExtractorDetachedCritic(ContinuousCritic):
    """`ContinuousCritic` whose features carry a graph only for the critic's own loss (module doc)."""

    def forward(self, obs: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, ...]:
        # critic loss: replay actions (no graph) -> learn the extractor; actor loss: actions_pi (graph) -> the
        # gradient reaches the actor through the actions only; target critic: grad disabled -> none at all
        learn = th.is_grad_enabled() and not self.share_features_extractor and not actions.requires_grad
        with th.set_grad_enabled(learn):
            features = self.extract_features(obs, self.features_extractor)
        qvalue_input = th.cat([features, actions], dim=1)
        return tuple(q_net(qvalue_input) for q_net in self.q_networks)


class PhoenixSacPolicy(MultiInputPolicy):
    """`MultiInputPolicy` (Dict observations) with `ExtractorDetachedCritic` as critic and target critic."""

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> ContinuousCritic:
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return ExtractorDetachedCritic(**critic_kwargs).to(self.device)
