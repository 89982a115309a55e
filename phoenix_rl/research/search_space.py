"""The search space of `phoenix_rl.research.hpo` as data, and how a sampled point becomes a `TrainConfig`.

Pure (dataclasses; no torch, SB3 or optuna import), so the Dagster definitions can build `hpo_study`'s config
from `SearchSpace` cheaply. Ranges follow rl-baselines3-zoo's SAC sampler (`rl_zoo3/hyperparams_opt.py`,
`sample_sac_params`): gamma, tau, batch size and train_freq as categorical lists with gradient_steps =
train_freq, net_arch "small" [64, 64] / "medium" [256, 256]; the learning rate log-uniform in [1e-5, 1e-2]
(the zoo's upper end, 1, is far outside what SAC + Mamba trains with). Batch sizes stop at 512 and train_freq
at 64 for CPU training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from phoenix_rl.config import RewardConfig, TrainConfig

if TYPE_CHECKING:
    import optuna

__all__ = ["NET_ARCHS", "SearchSpace", "sample_params", "trial_config"]

NET_ARCHS = {"small": [64, 64], "medium": [256, 256]}  # rl-baselines3-zoo's names


@dataclass(frozen=True)
class SearchSpace:
    """What a trial samples. Lists are categorical choices; (low, high) pairs are uniform ranges, log-uniform for
    the learning rate. A one-element list or an equal pair fixes a value (tests, or a narrowed search)."""

    learning_rate: list[float] = field(default_factory=lambda: [1e-5, 1e-2])
    gamma: list[float] = field(default_factory=lambda: [0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999])
    tau: list[float] = field(default_factory=lambda: [0.001, 0.005, 0.01, 0.02, 0.05, 0.08])
    batch_size: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    train_freq: list[int] = field(default_factory=lambda: [1, 4, 8, 16, 32, 64])  # gradient_steps = train_freq
    net_arch: list[str] = field(default_factory=lambda: ["small", "medium"])
    n_layers: list[int] = field(default_factory=lambda: [1, 2, 3])
    d_model: list[int] = field(default_factory=lambda: [16, 32, 64])
    d_state: list[int] = field(default_factory=lambda: [8, 16])
    lookback: list[int] = field(default_factory=lambda: [16, 32, 64])
    action_mode: list[str] = field(default_factory=lambda: ["deadband", "continuous"])
    deadband: list[float] = field(default_factory=lambda: [0.1, 0.5])  # sampled always, acts in deadband mode
    turnover_penalty_usd: list[float] = field(default_factory=lambda: [0.0, 2.0])
    drawdown_penalty: list[float] = field(default_factory=lambda: [0.0, 0.5])
    reward_win_bonus: list[float] = field(default_factory=lambda: [0.0, 0.05])
    reward_loss_penalty: list[float] = field(default_factory=lambda: [0.0, 0.05])
    reward_hold_penalty: list[float] = field(default_factory=lambda: [0.0, 0.005])
    reward_hold_bars: list[int] = field(default_factory=lambda: [0, 120])
    reward_differential: list[str] = field(default_factory=lambda: ["none", "sharpe", "sortino"])

    RANGES = (
        "learning_rate",
        "deadband",
        "turnover_penalty_usd",
        "drawdown_penalty",
        "reward_win_bonus",
        "reward_loss_penalty",
        "reward_hold_penalty",
        "reward_hold_bars",
    )

    def __post_init__(self) -> None:
        problems = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, list | tuple) or not value:
                problems.append(f"{f.name} must be a non-empty list (got {value!r})")
            elif f.name in self.RANGES and (len(value) != 2 or value[0] > value[1]):
                problems.append(f"{f.name} is a range: [low, high] with low <= high (got {value!r})")
            else:
                object.__setattr__(self, f.name, list(value))
        if isinstance(self.learning_rate, list) and self.learning_rate and self.learning_rate[0] <= 0:
            problems.append(f"learning_rate is sampled log-uniformly: its low end must be > 0 ({self.learning_rate})")
        unknown = set(self.net_arch) - set(NET_ARCHS)
        if unknown:
            problems.append(f"net_arch choices {sorted(unknown)} unknown; known: {sorted(NET_ARCHS)}")
        if problems:
            raise ValueError("SearchSpace: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchSpace:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"SearchSpace: unknown keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)


def sample_params(trial: optuna.Trial, space: SearchSpace) -> dict[str, dict[str, Any]]:
    """One point of the search space: {"train": TrainConfig fields, "env": EnvConfig fields, "reward":
    RewardConfig fields}. Every parameter is sampled in every trial (no conditional parameters), which keeps
    the space static for the multivariate TPE."""
    s = space

    def flt(name: str, log: bool = False) -> float:
        low, high = getattr(s, name)
        return trial.suggest_float(name, float(low), float(high), log=log)

    def cat(name: str) -> Any:
        return trial.suggest_categorical(name, getattr(s, name))

    train_freq = int(cat("train_freq"))
    differential = cat("reward_differential")
    return {
        "train": {
            "learning_rate": flt("learning_rate", log=True),
            "gamma": float(cat("gamma")),
            "tau": float(cat("tau")),
            "batch_size": int(cat("batch_size")),
            "train_freq": train_freq,
            "gradient_steps": train_freq,
            "net_arch": list(NET_ARCHS[cat("net_arch")]),
            "n_layers": int(cat("n_layers")),
            "d_model": int(cat("d_model")),
            "d_state": int(cat("d_state")),
        },
        "env": {
            "lookback": int(cat("lookback")),
            "action_mode": cat("action_mode"),
            "deadband": flt("deadband"),
            "turnover_penalty_usd": flt("turnover_penalty_usd"),
            "drawdown_penalty": flt("drawdown_penalty"),
        },
        "reward": dataclasses.asdict(
            RewardConfig(
                win_bonus=flt("reward_win_bonus"),
                loss_penalty=flt("reward_loss_penalty"),
                hold_penalty=flt("reward_hold_penalty"),
                hold_bars=trial.suggest_int("reward_hold_bars", *(int(v) for v in s.reward_hold_bars)),
                differential=None if differential == "none" else differential,
            )
        ),
    }


def trial_config(base: TrainConfig, params: dict[str, dict[str, Any]]) -> TrainConfig:
    """The base config with a trial's train, env and reward-shaping values in it (the shaping weights are
    EnvConfig fields: win_bonus, loss_penalty, hold_penalty, hold_bars, differential_reward, differential_eta)."""
    d = base.to_dict()
    d.update(params["train"])
    d["env"].update(params["env"])
    reward = params.get("reward") or {}
    d["env"].update({k: reward[k] for k in ("win_bonus", "loss_penalty", "hold_penalty", "hold_bars") if k in reward})
    if "differential" in reward:
        d["env"]["differential_reward"] = reward["differential"] or "none"
    if "eta" in reward:
        d["env"]["differential_eta"] = reward["eta"]
    return TrainConfig.from_dict(d)
