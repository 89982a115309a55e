"""Train SB3 SAC with the Mamba extractor on `features_1m` rows (CleanRL-style: one config, explicit seeding).

    python -m phoenix_rl.train.trainer --config cfg.json --features features.parquet --out runs/x

Reads like CleanRL's `sac_continuous_action.py`: a single `TrainConfig` dataclass (phoenix_rl/config.py:
every number that matters, the env's settings nested under `env`), an explicit seeding block, every metric
logged. Windows are trade dates, inclusive; the model only sees the train window; validation metrics (a
deterministic backtest on the val window, with the same env config) are reported; the test window is
recorded in the config but never touched here.

Outputs in out_dir: model.zip (SB3), config.json (TrainConfig, EnvConfig, feature columns, the frame's
`feature_spec_hash` when present, the feature set's content hash and the `training_health` record),
metrics.jsonl (one line per log). Metrics go to `on_metrics(step, dict)` too (the Dagster Pipes bridge plugs in
there).

A run that took no gradient step, recorded a non-finite loss or ended with a non-finite parameter is refused
(`training_health_problems`, issue 29): config.json and metrics.jsonl record it, model.zip is not written and
`train` raises `UnhealthyTrainingError`. `mamba_sac_model` applies the same function to the recorded
`training_health` before it publishes anything.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import datetime as dt
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.monitor import Monitor

from feature_specs import load_feature_set
from phoenix_rl.agent.extractor import MambaFeaturesExtractor
from phoenix_rl.agent.policy import PhoenixSacPolicy
from phoenix_rl.config import TrainConfig
from phoenix_rl.env.trading_env import MnqTradingEnv
from phoenix_rl.evaluation.backtest import run_backtest
from phoenix_rl.train.health import training_health_problems

__all__ = [
    "CHECKPOINT_GLOB",
    "LossWatch",
    "MetricsCallback",
    "TrainConfig",
    "TrainResult",
    "UnhealthyTrainingError",
    "main",
    "resume_from_checkpoint",
    "retain_freed_memory",
    "sac_kwargs",
    "select_window",
    "train",
    "training_health",
    "training_health_problems",
    "tune_process",
]

MetricsSink = Callable[[int, dict[str, float]], None]
CHECKPOINT_GLOB = "rl_model_*_steps.zip"  # what SB3's CheckpointCallback (default name prefix) saves
# What SB3's SAC.train records after each update (the mean over its gradient steps); ent_coef_loss only when auto.
LOSS_KEYS = ("train/actor_loss", "train/critic_loss", "train/ent_coef_loss", "train/ent_coef")
MAX_NAMED_PARAMETERS = 10  # non-finite parameters named in the health record; the count is always complete


class UnhealthyTrainingError(ValueError):
    """A run that must not be published: `training_health_problems` found something (module doc). A ValueError,
    like the SB3 error a policy with NaN parameters raises mid-training, so an HPO study counts the trial as failed
    and goes on (phoenix_rl.research.hpo.study catches ValueError per trial)."""


@dataclass(frozen=True)
class TrainResult:
    model_path: Path
    config_path: Path
    metrics_path: Path
    timesteps: int
    elapsed_s: float
    steps_per_s: float
    last_metrics: dict[str, float]
    val_metrics: dict[str, float | None] | None


def select_window(features: pl.DataFrame, start: str | None, end: str | None) -> pl.DataFrame:
    """Rows with start <= trade_date <= end (ISO dates, None = open)."""
    f = features
    if start is not None:
        f = f.filter(pl.col("trade_date") >= dt.date.fromisoformat(start))
    if end is not None:
        f = f.filter(pl.col("trade_date") <= dt.date.fromisoformat(end))
    return f.sort("ts")


class MetricsCallback(BaseCallback):
    """Every `log_every` steps: episode reward/length (Monitor), SB3's latest train/* values (losses,
    entropy coefficient) and steps/s, to metrics.jsonl and to the user's sink."""

    def __init__(self, log_every: int, path: Path, sink: MetricsSink | None = None) -> None:
        super().__init__()
        self.log_every, self.path, self.sink = log_every, path, sink
        self.episode_rewards: list[float] = []
        self.episode_lengths: list[int] = []
        self.last: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self._t_last, self._n_last = self._t0, 0

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            ep = info.get("episode")
            if ep is not None:
                self.episode_rewards.append(float(ep["r"]))
                self.episode_lengths.append(int(ep["l"]))
        if self.num_timesteps % self.log_every == 0:
            self.emit()
        return True

    def emit(self) -> dict[str, float]:
        now = time.perf_counter()
        m: dict[str, float] = {
            "timesteps": float(self.num_timesteps),
            "steps_per_s": (self.num_timesteps - self._n_last) / max(now - self._t_last, 1e-9),
            "elapsed_s": now - self._t0,
            "episodes": float(len(self.episode_rewards)),
        }
        if self.episode_rewards:
            recent = self.episode_rewards[-10:]
            m["episode_reward_mean10"] = float(np.mean(recent))
            m["episode_reward_last"] = self.episode_rewards[-1]
            m["episode_length_last"] = float(self.episode_lengths[-1])
        for k, v in self.model.logger.name_to_value.items():
            if k.startswith("train/") and isinstance(v, int | float):
                m[k] = float(v)
        self._t_last, self._n_last = now, self.num_timesteps
        self.last = m
        with self.path.open("a") as fh:
            fh.write(json.dumps({"step": self.num_timesteps, **m}) + "\n")
        if self.sink is not None:
            self.sink(self.num_timesteps, m)
        return m


class LossWatch(BaseCallback):
    """Every loss SB3 records, not just the ones MetricsCallback logs every `log_every` steps: the first timestep
    at which each loss of LOSS_KEYS was non-finite. SAC.train records its losses after the rollout whose
    `_on_step` came before, so `look` runs once more after `learn` (train does it)."""

    def __init__(self) -> None:
        super().__init__()
        self.non_finite: dict[str, int] = {}

    def _on_step(self) -> bool:
        self.look()
        return True

    def look(self) -> None:
        recorded = self.model.logger.name_to_value
        for key in LOSS_KEYS:
            value = recorded.get(key)
            if isinstance(value, int | float) and not math.isfinite(value):
                self.non_finite.setdefault(key, self.num_timesteps)


def training_health(model: SAC, watch: LossWatch) -> dict[str, Any]:
    """What `training_health_problems` judges, JSON-ready (train stores it in config.json): the gradient steps
    SB3 took (`_n_updates`, checkpoints included), the losses that went non-finite and at which timestep, and the
    policy's non-finite parameters (actor, critics, target critics) and SAC's entropy coefficient."""
    tensors = dict(model.policy.named_parameters())
    if getattr(model, "log_ent_coef", None) is not None:
        tensors["log_ent_coef"] = model.log_ent_coef
    bad = [name for name, t in tensors.items() if not bool(torch.isfinite(t).all())]
    return {
        "gradient_steps": int(model._n_updates),
        "timesteps": int(model.num_timesteps),
        "non_finite_losses": dict(watch.non_finite),
        "non_finite_parameter_count": len(bad),
        "non_finite_parameters": bad[:MAX_NAMED_PARAMETERS],
        "parameters_checked": len(tensors),
    }


def silent_logger() -> Logger:
    """An SB3 logger that keeps the recorded values (`name_to_value`, read by MetricsCallback) and writes nowhere:
    SB3's default, set up at every `learn()` without one, makes an empty tempdir/SB3-<time> folder each time."""
    return Logger(folder=None, output_formats=[])


def seed_everything(seed: int, deterministic: bool) -> None:
    """The seeding block (CleanRL): python, numpy, torch; the env is seeded through SB3's `seed`."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = deterministic


def resume_from_checkpoint(model: SAC, env: Monitor, checkpoint_dir: Path) -> SAC:
    """The newest `rl_model_<steps>_steps.zip` of SB3's CheckpointCallback in `checkpoint_dir` (with its replay
    buffer when saved) loaded onto `env`; `model` unchanged when there is none."""
    found = sorted(checkpoint_dir.glob(CHECKPOINT_GLOB), key=lambda p: int(p.stem.split("_")[-2]))
    if not found:
        return model
    resumed = SAC.load(found[-1], env=env, device=model.device)
    buffer = checkpoint_dir / f"rl_model_replay_buffer_{resumed.num_timesteps}_steps.pkl"
    if buffer.exists():
        resumed.load_replay_buffer(buffer)
    return resumed


def retain_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks of up to 32 MiB in the heap instead of handing them back to the OS
    (`M_MMAP_THRESHOLD`, `M_TRIM_THRESHOLD`, mallopt(3)); False where the C library is not glibc.

    Every gradient step allocates and frees MiB-sized activations (at the default config the block's (batch, L,
    2 d_inner) projections are 1 MiB; the scan's stored states, 8 MiB, were before the kernel stopped storing
    them, and the Blelloch path's still are); with glibc's defaults each comes back as fresh mmap'd pages that
    are page-faulted in again (~10k page faults per SAC step at the default config, measured with the stored
    states; the scan's forward ran up to 2x faster without them in isolation, inside SAC the change was small).
    The cost: the process keeps its peak heap. Called by `tune_process`.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def tune_process(torch_threads: int | None) -> None:
    """The process-wide settings of a training process, made explicitly by `train` (never at import): torch's
    intra-op threads (None: torch's default, one per core, which oversubscribes the cores as soon as two
    trainings share them), denormal floats flushed to zero (decays multiplied along a window reach them; denormal
    arithmetic is slow, ~10% of the Mamba extractor's time; values below 1.2e-38 become 0) and
    `retain_freed_memory`."""
    if torch_threads:
        torch.set_num_threads(torch_threads)
    torch.set_flush_denormal(True)
    retain_freed_memory()


def sac_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """SB3 `SAC` keyword arguments (all but `env`) of a run: the one place `cfg` becomes SAC settings (the
    training and benchmarks/bench_training.py build SAC from it)."""
    return {
        "policy": PhoenixSacPolicy,  # SB3's MultiInputPolicy minus the critic extractor's wasted backward
        "learning_rate": cfg.learning_rate,
        "buffer_size": cfg.buffer_size,
        "batch_size": cfg.batch_size,
        "learning_starts": cfg.learning_starts,
        "gamma": cfg.gamma,
        "tau": cfg.tau,
        "train_freq": cfg.train_freq,
        "gradient_steps": cfg.gradient_steps,
        "ent_coef": cfg.sb3_ent_coef,
        "policy_kwargs": {
            "features_extractor_class": MambaFeaturesExtractor,
            "features_extractor_kwargs": {
                "d_model": cfg.d_model,
                "d_state": cfg.d_state,
                "d_conv": cfg.d_conv,
                "expand": cfg.expand,
                "n_layers": cfg.n_layers,
            },
            "net_arch": list(cfg.net_arch),
            "share_features_extractor": cfg.share_features_extractor,
        },
        "seed": cfg.seed,
        "device": "auto",
        "verbose": 0,
    }


def train(
    cfg: TrainConfig,
    features: pl.DataFrame,
    out_dir: str | Path,
    on_metrics: MetricsSink | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    callbacks: Sequence[BaseCallback] = (),
) -> TrainResult:
    """Train on the train window, save model + config, backtest the val window (module doc).

    With `checkpoint_dir`, training resumes from the newest checkpoint found there (a spot instance that was
    interrupted) and, when `checkpoint_every` > 0, saves model + replay buffer there every that many steps.
    `callbacks` are extra SB3 callbacks (phoenix_rl.research.hpo's validation/pruning callback); an exception raised
    in one (optuna.TrialPruned) ends the run without saving.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / "model.zip"
    model_path.unlink(missing_ok=True)  # a refused run leaves no model behind, not even an earlier one
    fset = load_feature_set(cfg.feature_set)
    columns = tuple(fset.columns)
    missing = [c for c in columns if c not in features.columns]
    if missing:
        raise ValueError(
            f"train: the features frame lacks columns {missing} of feature set {cfg.feature_set!r}; "
            "materialise features_1m with the current feature_specs"
        )
    warm_column = next((c for c in (f"warm_{cfg.feature_set}", "warm") if c in features.columns), None)
    env_cfg = cfg.env_config(columns, warm_column)
    train_rows = select_window(features, cfg.train_start, cfg.train_end)
    if train_rows.height < cfg.env.lookback + 2:
        raise ValueError(f"train: only {train_rows.height} rows in the train window {cfg.train_start}..{cfg.train_end}")

    # --- seeding -----------------------------------------------------------------------------------------
    seed_everything(cfg.seed, cfg.torch_deterministic)
    tune_process(cfg.torch_threads)

    env = Monitor(MnqTradingEnv(train_rows, env_cfg))
    model = SAC(env=env, **sac_kwargs(cfg))
    metrics_path = out / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    callback = MetricsCallback(cfg.log_every, metrics_path, on_metrics)
    watch = LossWatch()
    sb3_callbacks: list[BaseCallback] = [callback, watch, *callbacks]
    if checkpoint_dir is not None:
        model = resume_from_checkpoint(model, env, Path(checkpoint_dir))
        if checkpoint_every > 0:
            sb3_callbacks.append(CheckpointCallback(checkpoint_every, str(checkpoint_dir), save_replay_buffer=True))
    model.set_logger(silent_logger())  # the metrics go through MetricsCallback
    resumed_at = model.num_timesteps  # > 0 when a checkpoint was restored: only the rest runs here
    t0 = time.perf_counter()
    model.learn(
        total_timesteps=cfg.total_timesteps - resumed_at,
        callback=sb3_callbacks,
        reset_num_timesteps=resumed_at == 0,
    )
    elapsed = time.perf_counter() - t0
    last = callback.last if callback.last.get("timesteps") == float(model.num_timesteps) else callback.emit()
    watch.look()  # the last update's losses, recorded after the last _on_step
    health = training_health(model, watch)

    hashes = (
        features["feature_spec_hash"].unique().drop_nulls().to_list() if "feature_spec_hash" in features.columns else []
    )
    config_path = out / "config.json"
    config_path.write_text(
        json.dumps(
            {
                "train_config": cfg.to_dict(),
                "env_config": dataclasses.asdict(env_cfg),
                "feature_columns": list(columns),
                "feature_spec_hash": hashes[0] if len(hashes) == 1 else (hashes or None),
                "feature_set_content_hash": fset.content_hash,
                "train_rows": train_rows.height,
                "timesteps": cfg.total_timesteps,
                "elapsed_s": elapsed,
                "training_health": health,
            },
            indent=2,
            default=str,
        )
    )
    problems = training_health_problems(health)
    if problems:  # before model.zip exists: nothing publishable is left behind
        raise UnhealthyTrainingError(
            f"train: refusing to save the model of this run: {'; '.join(problems)}. Its config.json and "
            f"metrics.jsonl in {out} record it; check the SAC settings (batch_size, learning_rate, learning_starts)"
        )
    model.save(model_path)

    val_metrics = None
    if cfg.val_start is not None or cfg.val_end is not None:
        val_rows = select_window(features, cfg.val_start, cfg.val_end)
        if val_rows.height >= 2:
            val_metrics = run_backtest(model, val_rows, env_cfg, capital=cfg.capital).metrics
            if on_metrics is not None:
                on_metrics(cfg.total_timesteps, {f"val/{k}": v for k, v in val_metrics.items()})
    return TrainResult(
        model_path=model_path,
        config_path=config_path,
        metrics_path=metrics_path,
        timesteps=cfg.total_timesteps,
        elapsed_s=elapsed,
        steps_per_s=(model.num_timesteps - resumed_at) / max(elapsed, 1e-9),  # steps this process ran
        last_metrics=last,
        val_metrics=val_metrics,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phoenix_rl.train.trainer", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="TrainConfig as JSON")
    parser.add_argument("--features", required=True, help="features_1m rows as one parquet file")
    parser.add_argument("--out", required=True, help="output folder (model.zip, config.json, metrics.jsonl)")
    args = parser.parse_args(argv)
    cfg = TrainConfig.from_json(args.config)
    features = pl.read_parquet(args.features)

    def to_stdout(step: int, m: dict[str, float]) -> None:
        print(json.dumps({"step": step, **m}), flush=True)

    result = train(cfg, features, args.out, on_metrics=to_stdout)
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(result).items()}
    print(json.dumps({"result": summary}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
