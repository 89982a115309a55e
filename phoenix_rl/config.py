"""The one definition of every training setting and its default: `EnvConfig` (the environment) and `TrainConfig`
(the run: data windows, SAC, the Mamba extractor, logging) which holds an `env: EnvConfig`.

Everything else derives from these two: `phoenix_rl.train.trainer` reads a `TrainConfig` (JSON via `to_dict` /
`from_dict`), the Pipes and SageMaker entry points read the same JSON, and the Dagster config of
`mamba_sac_model` is generated from these dataclasses' fields (phoenix_assets/defs/model/config.py), so a field
or a default changed here changes there. Pure dataclasses: no torch, gymnasium or dagster import, so loading
the Dagster definitions stays cheap. A field's `metadata["doc"]` becomes its description in the Dagster UI.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from phoenix_assets.lib.instrument import MNQ
from phoenix_rl.windows import window_problems

__all__ = ["DATA_BOUND_ENV_FIELDS", "ActionMode", "EnvConfig", "EpisodeMode", "RewardConfig", "TrainConfig"]

ActionMode = Literal["continuous", "deadband"]
EpisodeMode = Literal["random", "whole"]
DifferentialReward = Literal["none", "sharpe", "sortino"]
FillAt = Literal["touch", "open"]
WINDOWS = ("train", "val", "test")


def _doc(default: Any, text: str) -> Any:
    """A dataclass field with a description (shown by Dagster's launchpad)."""
    return field(default=default, metadata={"doc": text})


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the reward-shaping terms (phoenix_rl/env/rewards.py's module doc); every default leaves the plain
    pnl reward unchanged."""

    win_bonus: float = 0.0
    loss_penalty: float = 0.0
    hold_penalty: float = 0.0
    hold_bars: int = 0
    differential: Literal["sharpe", "sortino"] | None = None
    eta: float = 0.01

    def __post_init__(self) -> None:
        for name in ("win_bonus", "loss_penalty", "hold_penalty"):
            if getattr(self, name) < 0:
                raise ValueError(f"RewardConfig.{name} must be >= 0 (it is a magnitude), got {getattr(self, name)}")
        if self.hold_bars < 0:
            raise ValueError(f"RewardConfig.hold_bars must be >= 0, got {self.hold_bars}")
        if self.differential not in (None, "sharpe", "sortino"):
            raise ValueError(f"RewardConfig.differential must be None, 'sharpe' or 'sortino': {self.differential!r}")
        if not 0 < self.eta <= 1:
            raise ValueError(f"RewardConfig.eta (EMA rate of the differential ratios) must be in (0, 1]: {self.eta}")


@dataclass(frozen=True)
class EnvConfig:
    """Everything that shapes `MnqTradingEnv` (phoenix_rl/env/trading_env.py's module doc explains each rule)."""

    feature_columns: tuple[str, ...] = _doc((), "Observed feature columns; `train` sets them from the feature set")
    lookback: int = _doc(32, "Bars in the observation window (L)")
    max_contracts: int = 1
    point_value: float = _doc(MNQ.point_value, "$ per index point (MNQ)")
    tick_size: float = _doc(MNQ.tick_size, "Index points per tick")
    commission_per_side_usd: float = _doc(
        MNQ.commission_per_side_usd, "$ per contract per side, incl. exchange/clearing/NFA fees"
    )
    slippage_ticks_per_side: float = _doc(
        1.0, "Ticks paid per contract per side beyond crossing the spread (phoenix_rl.env.fills, backtest and paper)"
    )
    fill_latency_ms: float = _doc(
        0.0,
        "Decision -> order at the venue (ms): paper fills at the first book at or after decision + latency "
        "(Nautilus LatencyModel); the bar backtest has only the decision book (phoenix_rl.env.fills)",
    )
    fill_at: FillAt = field(
        default="touch",
        metadata={
            "doc": "'touch': cross the spread of the decision book (bars' mid_close +- spread_ticks_close / 2 where "
            "the frame carries them, else the next open); 'open': the next bar's open (before issue 24)"
        },
    )
    reward_scale: float = _doc(0.01, "reward = reward_scale * $ (0.01: rewards in units of $100)")
    turnover_penalty_usd: float = _doc(0.0, "Shaping: extra $ per contract traded (reward only, not equity)")
    drawdown_penalty: float = _doc(0.0, "Shaping: x increase of the episode's $ drawdown (reward only)")
    # phoenix_rl.env.rewards (weights in reward units; all 0 / "none" = the plain reward)
    win_bonus: float = _doc(0.0, "Shaping: added when a round trip closes with net pnl > 0")
    loss_penalty: float = _doc(0.0, "Shaping: subtracted when a round trip closes with net pnl < 0")
    hold_penalty: float = _doc(0.0, "Shaping (hold discipline): subtracted per bar a position is held beyond hold_bars")
    hold_bars: int = _doc(0, "Bars a position may be held before hold_penalty applies")
    differential_reward: DifferentialReward = field(
        default="none",
        metadata={"doc": "'none', or 'sharpe' / 'sortino': the Moody & Saffell differential ratio of the bar reward"},
    )
    differential_eta: float = _doc(0.01, "EMA rate of the differential Sharpe/Sortino reward")
    action_mode: ActionMode = field(
        default="deadband", metadata={"doc": "'deadband' (whole contracts) or 'continuous' (fractional)"}
    )
    deadband: float = _doc(0.3, "|action| below which the target position is flat (deadband mode)")
    episode_mode: EpisodeMode = field(
        default="random", metadata={"doc": "'random' start and max_steps long, or 'whole' data from bar 0"}
    )
    max_steps: int | None = _doc(390, "Steps per episode (random mode); None: to the end of the data")
    max_gap_minutes: float = _doc(
        5.0, "An unscheduled gap between bars longer than this is a data hole: the next decision is forced flat"
    )
    warm_column: str | None = _doc("warm", "Column flagging complete feature rows; `train` picks it from the data")
    trade_only_warm: bool = _doc(True, "Decisions at non-warm bars are forced flat")
    obs_clip: float = 10.0
    upnl_scale_points: float = 10.0
    time_scale_bars: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_columns", tuple(self.feature_columns))
        problems = []
        if self.lookback < 1:
            problems.append(f"lookback must be >= 1 (got {self.lookback})")
        if self.max_contracts < 1:
            problems.append(f"max_contracts must be >= 1 (got {self.max_contracts})")
        if self.action_mode not in ("continuous", "deadband"):
            problems.append(f"action_mode must be 'continuous' or 'deadband' (got {self.action_mode!r})")
        if not 0.0 <= self.deadband < 1.0:
            problems.append(f"deadband must lie in [0, 1) (got {self.deadband})")
        if self.episode_mode not in ("random", "whole"):
            problems.append(f"episode_mode must be 'random' or 'whole' (got {self.episode_mode!r})")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps must be >= 1 or None (got {self.max_steps})")
        if min(self.commission_per_side_usd, self.slippage_ticks_per_side, self.fill_latency_ms) < 0:
            problems.append("costs and fill_latency_ms must be >= 0")
        if self.fill_at not in ("touch", "open"):
            problems.append(f"fill_at must be 'touch' or 'open' (got {self.fill_at!r})")
        try:
            self.reward_config()
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            raise ValueError("EnvConfig: " + "; ".join(problems))

    @property
    def cost_per_contract_side(self) -> float:
        """$ paid per contract per side: commission + slippage_ticks * tick_size * point_value."""
        return self.commission_per_side_usd + self.slippage_ticks_per_side * self.tick_size * self.point_value

    def reward_config(self) -> RewardConfig:
        """The shaping terms as `phoenix_rl.env.rewards` takes them."""
        return RewardConfig(
            win_bonus=self.win_bonus,
            loss_penalty=self.loss_penalty,
            hold_penalty=self.hold_penalty,
            hold_bars=self.hold_bars,
            differential=None if self.differential_reward == "none" else self.differential_reward,
            eta=self.differential_eta,
        )

    def replace(self, **changes: Any) -> EnvConfig:
        return dataclasses.replace(self, **changes)


# Set by `train` from the feature set and the data, never by the user: not in the Dagster config, and a
# TrainConfig whose env sets them to anything but EnvConfig's defaults is refused.
DATA_BOUND_ENV_FIELDS = ("feature_columns", "warm_column")


@dataclass
class TrainConfig:
    """Everything a run depends on; JSON round-trips through `to_dict` / `from_dict` (`to_json` / `from_json`)."""

    feature_set: str = _doc("phase2_ofi", "Feature set of feature_specs/ the agent observes")
    train_start: str | None = _doc(None, "Train window start (ISO trade date, inclusive); None: open")
    train_end: str | None = _doc(None, "Train window end (ISO trade date, inclusive); None: open")
    val_start: str | None = _doc(None, "Validation window start; val None..None: no validation backtest")
    val_end: str | None = None
    test_start: str | None = _doc(None, "Test window start: recorded for the backtests, never used in training")
    test_end: str | None = None
    embargo_days: int = _doc(0, "Trade dates that must lie strictly between train and val, and val and test")
    total_timesteps: int = _doc(5_000, "SAC environment steps")
    seed: int = 1
    torch_threads: int | None = _doc(
        1, "torch.set_num_threads; None: torch's default (all cores: parallel trainings oversubscribe them)"
    )
    torch_deterministic: bool = True
    # SAC (Haarnoja et al. 2018), SB3 argument names
    learning_rate: float = 3e-4
    buffer_size: int = 50_000
    batch_size: int = 64
    learning_starts: int = 1_000
    gamma: float = 0.99
    tau: float = 0.005
    train_freq: int = _doc(1, "Environment steps between gradient updates")
    gradient_steps: int = _doc(1, "Gradient steps per update")
    ent_coef: str = _doc("auto", "SB3 ent_coef: 'auto', 'auto_<initial value>' or a fixed coefficient like '0.05'")
    net_arch: list[int] = field(default_factory=lambda: [64, 64], metadata={"doc": "Actor and critic MLP layers"})
    share_features_extractor: bool = _doc(
        False,
        "One Mamba extractor for actor and critics (SB3): ~1.5-2x the steps/s, but only the actor's loss trains it",
    )
    # Mamba extractor (phoenix_rl.agent.extractor)
    d_model: int = 32
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    n_layers: int = 2
    # the environment (lookback, costs, reward, actions, episodes)
    env: EnvConfig = field(default_factory=EnvConfig, metadata={"doc": "MnqTradingEnv settings"})
    # evaluation / logging
    capital: float = _doc(10_000.0, "$ capital of the validation backtest and the metrics")
    log_every: int = _doc(500, "Environment steps between metrics lines")

    def __post_init__(self) -> None:
        if isinstance(self.env, dict):
            self.env = _env_from_dict(self.env)
        self.ent_coef = str(self.ent_coef)
        problems = self._setting_problems()
        defaults = EnvConfig()
        problems += [
            f"env.{name} is set by train from the feature set and the data: leave it out "
            f"(got {getattr(self.env, name)!r})"
            for name in DATA_BOUND_ENV_FIELDS
            if getattr(self.env, name) != getattr(defaults, name)
        ]
        spans = [
            (w, (dt.date.fromisoformat(s), dt.date.fromisoformat(e))) for w, (s, e) in self.windows().items() if s and e
        ]
        problems += window_problems(spans, self.embargo_days)
        if problems:
            raise ValueError("TrainConfig: " + "; ".join(problems))

    def _setting_problems(self) -> list[str]:
        """The run settings that cannot train a usable model (issue 29): no steps, an empty batch, no gradient step
        (SB3 trains only once `num_timesteps > learning_starts`), non-finite or out-of-range rates, empty layers.
        Each message names the field and its value."""
        problems = [
            f"{name} must be an int >= 1 (got {getattr(self, name)!r})"
            for name in _AT_LEAST_ONE
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1
        ]
        if not _is_int(self.buffer_size) or (_is_int(self.batch_size) and self.buffer_size < self.batch_size):
            problems.append(f"buffer_size must be an int >= batch_size {self.batch_size!r} (got {self.buffer_size!r})")
        if not _is_int(self.learning_starts) or self.learning_starts < 0:
            problems.append(f"learning_starts must be an int >= 0 (got {self.learning_starts!r})")
        elif _is_int(self.total_timesteps) and self.learning_starts >= self.total_timesteps:
            problems.append(
                f"learning_starts must be < total_timesteps, or no gradient step is ever taken "
                f"(got learning_starts {self.learning_starts!r}, total_timesteps {self.total_timesteps!r})"
            )
        if self.torch_threads is not None and (not _is_int(self.torch_threads) or self.torch_threads < 1):
            problems.append(f"torch_threads must be None or an int >= 1 (got {self.torch_threads!r})")
        problems += [
            f"{name} must be a finite number in {interval} (got {getattr(self, name)!r})"
            for name, (interval, inside) in _IN_RANGE.items()
            if not _is_number(getattr(self, name)) or not inside(getattr(self, name))
        ]
        if not isinstance(self.net_arch, list | tuple) or not self.net_arch:
            problems.append(f"net_arch must be a non-empty list of layer widths >= 1 (got {self.net_arch!r})")
        elif not all(_is_int(w) and w >= 1 for w in self.net_arch):
            problems.append(f"net_arch layer widths must be ints >= 1 (got {list(self.net_arch)!r})")
        if not isinstance(self.feature_set, str) or not self.feature_set:
            problems.append(f"feature_set must name a feature set of feature_specs/ (got {self.feature_set!r})")
        problems += _ent_coef_problems(self.ent_coef)
        return problems

    @property
    def sb3_ent_coef(self) -> str | float:
        """`ent_coef` as SB3 takes it: the 'auto...' string or a float."""
        return self.ent_coef if self.ent_coef.startswith("auto") else float(self.ent_coef)

    def windows(self) -> dict[str, tuple[str | None, str | None]]:
        return {w: (getattr(self, f"{w}_start"), getattr(self, f"{w}_end")) for w in WINDOWS}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the env nested under "env" (feature_columns as a list)."""
        d = dataclasses.asdict(self)
        d["env"]["feature_columns"] = list(d["env"]["feature_columns"])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        _refuse_unknown("TrainConfig", d, cls)
        return cls(**d)

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def env_config(self, feature_columns: tuple[str, ...], warm_column: str | None) -> EnvConfig:
        """The env of this run on a frame: `env` with the data-bound fields filled in."""
        return self.env.replace(feature_columns=feature_columns, warm_column=warm_column)


# TrainConfig's int settings that must be >= 1, and its float settings with their valid interval (as the message
# states it) and the test of it; NaN fails every comparison, so `inside` is False for it.
_AT_LEAST_ONE = (
    "total_timesteps",
    "batch_size",
    "train_freq",
    "gradient_steps",
    "d_model",
    "d_state",
    "d_conv",
    "expand",
    "n_layers",
    "log_every",
)
_IN_RANGE: dict[str, tuple[str, Callable[[float], bool]]] = {
    "learning_rate": ("(0, inf)", lambda v: 0 < v < math.inf),
    "gamma": ("(0, 1]", lambda v: 0 < v <= 1),
    "tau": ("(0, 1]", lambda v: 0 < v <= 1),
    "capital": ("(0, inf)", lambda v: 0 < v < math.inf),
}


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # numpy ints too


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _ent_coef_problems(ent_coef: str) -> list[str]:
    """SB3's ent_coef: 'auto', 'auto_<initial value > 0>' or a fixed coefficient >= 0, all finite."""
    if ent_coef == "auto":
        return []
    auto = ent_coef.startswith("auto_")
    try:
        value = float(ent_coef.removeprefix("auto_"))
    except ValueError:
        value = math.nan
    if math.isfinite(value) and (value > 0 if auto else value >= 0):
        return []
    return [
        "ent_coef must be 'auto', 'auto_<initial value > 0>' or a fixed coefficient >= 0, all finite "
        f"(got {ent_coef!r})"
    ]


def _refuse_unknown(name: str, d: dict[str, Any], cls: type) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{name}: unknown keys {unknown}; known keys: {sorted(known)}")


def _env_from_dict(d: dict[str, Any]) -> EnvConfig:
    _refuse_unknown("TrainConfig.env", d, EnvConfig)
    return EnvConfig(**d)
