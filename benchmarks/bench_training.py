"""Benchmark SAC training throughput and decision latency: SB3's default extractor vs the Mamba extractor.

Every row builds SAC from `phoenix_rl.train.trainer.sac_kwargs(TrainConfig)` on the same synthetic `phase2_ofi`
features, so the SAC settings (batch, learning rate, train_freq, net_arch, ...) are the config's and equal
within a pair; only the extractor (and the config named in the row) differs. The anchor is SB3's default
extractor for a Dict observation (`CombinedExtractor`: the window flattened).

    default     TrainConfig defaults: L=32, d_model 32, d_state 16, 2 layers, batch 64, train_freq 1
    evidence    benchmarks/evidence_run.py: L=16, d_model 16, d_state 8, 1 layer, batch 128, train_freq 4
    before      the extractor as it was before issue 12 (Blelloch scan for every window, the last layer over
                the whole window): the naive reference the ratios are taken against

Each figure is env steps per second of `SAC.learn` after `learning_starts` (every env step is also a gradient
step at train_freq 1), measured for --seconds (a callback stops `learn`). The rows of a ratio are measured
back to back in one process, twice, alternating (A B A B), and the ratio is the median of the two pairs, so
background load on a shared machine hits both sides alike. Parallel: the same child process alone, then two
of them at once (1 torch thread each, a file barrier so both measure at the same time). Latency: `SAC.predict`
on one observation (the live path), 1 torch thread, p50/p99 over --latency-calls calls.

    python benchmarks/bench_training.py                 # ~5 min on 2 cores
    python benchmarks/bench_training.py --seconds 20    # longer, steadier measurements
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from table import print_table  # noqa: E402

LEARNING_STARTS = 200  # random-action steps before the first gradient step (not timed)
EVIDENCE = {"batch_size": 128, "train_freq": 4, "d_model": 16, "d_state": 8, "n_layers": 1, "gamma": 0.95}
EVIDENCE_ENV = {"lookback": 16, "reward_scale": 0.1}
TARGETS = {"mamba_vs_anchor": 0.5, "parallel_vs_solo": 0.8, "latency_p99_ms": 5.0}


def _features() -> Any:
    from feature_specs import load_feature_set
    from phoenix_rl.testing import synthetic_features

    return synthetic_features(load_feature_set("phase2_ofi").columns, n_sessions=5, bars_per_session=390)


def _config(name: str) -> Any:
    from phoenix_rl.config import EnvConfig, TrainConfig

    if name == "evidence":
        return TrainConfig(learning_starts=LEARNING_STARTS, env=EnvConfig(**EVIDENCE_ENV), **EVIDENCE)
    return TrainConfig(learning_starts=LEARNING_STARTS)


def _make_model(features: Any, config: str, extractor: str, share: bool = False) -> Any:
    """SAC on an `MnqTradingEnv` over `features`; extractor 'anchor' (SB3 default), 'mamba' or 'before'."""
    from stable_baselines3 import SAC

    from feature_specs import load_feature_set
    from phoenix_rl.agent.extractor import MambaFeaturesExtractor
    from phoenix_rl.env.trading_env import MnqTradingEnv
    from phoenix_rl.train.trainer import sac_kwargs, silent_logger

    cfg = _config(config)
    env = MnqTradingEnv(features, cfg.env_config(tuple(load_feature_set("phase2_ofi").columns), "warm"))
    kwargs = sac_kwargs(cfg)
    policy_kwargs = dict(kwargs.pop("policy_kwargs"))
    if extractor == "anchor":
        policy_kwargs.pop("features_extractor_class")
        policy_kwargs.pop("features_extractor_kwargs")
    elif extractor == "before":
        policy_kwargs["features_extractor_class"] = _before_extractor_class(MambaFeaturesExtractor)
    policy_kwargs["share_features_extractor"] = share
    model = SAC(env=env, policy_kwargs=policy_kwargs, **kwargs)
    model.set_logger(silent_logger())  # no tempdir/SB3-<time> folder per learn()
    return model


def _before_extractor_class(base: type) -> type:
    """The extractor as before issue 12: every layer over the whole window, Blelloch scan at any length."""
    import phoenix_rl.agent.mamba as mamba

    class BeforeExtractor(base):  # type: ignore[misc, valid-type]
        def forward(self, observations: dict[str, Any]) -> Any:
            import torch

            saved, mamba.FUSED_CPU_KERNEL = mamba.FUSED_CPU_KERNEL, False
            try:
                h = self.embed(observations["window"])
                for layer in self.layers:
                    h = layer(h)
                return torch.cat([self.norm_f(h[:, -1]), observations["agent"]], dim=1)
            finally:
                mamba.FUSED_CPU_KERNEL = saved

    return BeforeExtractor


def _steps_per_s(model: Any, seconds: float) -> float:
    """Env steps/s of `learn` over `seconds`, after `learning_starts` (warm-up: learning_starts + 20 steps)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Stop(BaseCallback):
        def _on_training_start(self) -> None:
            self.t0, self.n0 = time.perf_counter(), self.num_timesteps

        def _on_step(self) -> bool:
            return time.perf_counter() - self.t0 < seconds

    if model.num_timesteps < model.learning_starts:
        model.learn(model.learning_starts + 20 - model.num_timesteps, reset_num_timesteps=False)
    stop = Stop()
    model.learn(10_000_000, callback=stop, reset_num_timesteps=False)
    return (model.num_timesteps - stop.n0) / (time.perf_counter() - stop.t0)


def _pair(features: Any, a: tuple, b: tuple, seconds: float, threads: int) -> tuple[float, float, float]:
    """steps/s of a and b (A B A B, same process, `threads` torch threads): means and the median pair ratio."""
    import torch

    torch.set_num_threads(threads)
    models = (_make_model(features, *a), _make_model(features, *b))
    ra, rb = [], []
    for _ in range(2):
        ra.append(_steps_per_s(models[0], seconds))
        rb.append(_steps_per_s(models[1], seconds))
    return statistics.mean(ra), statistics.mean(rb), statistics.median([y / x for x, y in zip(ra, rb, strict=True)])


def _latency_ms(features: Any, config: str, extractor: str, calls: int) -> tuple[float, float]:
    """p50, p99 of `SAC.predict(obs, deterministic=True)` on one observation, 1 torch thread."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    model = _make_model(features, config, extractor)
    obs, _ = model.env.envs[0].reset(seed=0)
    times = []
    for i in range(calls + 50):
        t0 = time.perf_counter()
        model.predict(obs, deterministic=True)
        if i >= 50:
            times.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def child(seconds: float, barrier: str | None, index: int) -> dict[str, float]:
    """One training process (Mamba, default config, 1 torch thread); with a barrier, waits for its peers."""
    import torch

    torch.set_num_threads(1)
    model = _make_model(_features(), "default", "mamba")
    model.learn(model.learning_starts + 20, reset_num_timesteps=False)
    if barrier:
        folder, n = barrier.rsplit(":", 1)
        Path(folder, f"ready{index}").touch()
        while len(list(Path(folder).glob("ready*"))) < int(n):
            time.sleep(0.01)
    return {"steps_per_s": _steps_per_s(model, seconds)}


def _run_children(n: int, seconds: float) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--child", str(i), "--seconds", str(seconds), "--barrier", f"{tmp}:{n}"],
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(n)
        ]
        outs = [p.communicate()[0] for p in procs]
    return [json.loads(o.strip().splitlines()[-1])["steps_per_s"] for o in outs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--latency-calls", type=int, default=1000)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--barrier", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from phoenix_rl.train.trainer import tune_process

    tune_process(1)  # as `train` does for its process (threads are set per measurement below)
    if args.child is not None:
        print(json.dumps(child(args.seconds, args.barrier, args.child)))
        return

    import torch

    features = _features()
    rows: list[tuple[str, str, str, str]] = []  # name, value, ratio, target

    def add(name: str, value: str, ratio: str = "", target: str = "") -> None:
        rows.append((name, value, ratio, target))
        print(f"  {name}: {value} {ratio}", file=sys.stderr, flush=True)

    t = args.seconds
    for threads in (1, 2):
        anchor, mamba, ratio = _pair(features, ("default", "anchor"), ("default", "mamba"), t, threads)
        add(f"anchor (SB3 default extractor), default config, {threads} thread(s)", f"{anchor:.1f} steps/s")
        ok = "met" if ratio >= TARGETS["mamba_vs_anchor"] else "NOT met"
        add(
            f"Mamba, default config, {threads} thread(s)",
            f"{mamba:.1f} steps/s",
            f"{ratio:.3f} x anchor",
            f">= 0.5: {ok}",
        )
    before, mamba, ratio = _pair(features, ("default", "before"), ("default", "mamba"), t, 1)
    add("Mamba before issue 12 (reference), default config, 1 thread", f"{before:.1f} steps/s")
    add("Mamba now vs before, default config, 1 thread", f"{mamba:.1f} steps/s", f"{ratio:.2f} x before")
    anchor, shared, ratio = _pair(features, ("default", "anchor"), ("default", "mamba", True), t, 1)
    add("Mamba, default config, share_features_extractor, 1 thread", f"{shared:.1f} steps/s", f"{ratio:.3f} x anchor")
    anchor, mamba, ratio = _pair(features, ("evidence", "anchor"), ("evidence", "mamba"), t, 1)
    add("anchor, evidence config, 1 thread", f"{anchor:.1f} steps/s")
    add("Mamba, evidence config, 1 thread", f"{mamba:.1f} steps/s", f"{ratio:.3f} x anchor")

    solo = _run_children(1, t)[0]
    both = _run_children(2, t)
    add("Mamba default, 1 training alone (1 thread, own process)", f"{solo:.1f} steps/s")
    worst = min(both) / solo
    ok = "met" if worst >= TARGETS["parallel_vs_solo"] else "NOT met"
    add(
        "Mamba default, 2 trainings in parallel (1 thread each)",
        " / ".join(f"{x:.1f}" for x in both) + " steps/s",
        f"{worst:.2f} x alone (slower one)",
        f">= 0.8: {ok}",
    )
    for config in ("default", "evidence"):
        for extractor in ("anchor", "mamba"):
            p50, p99 = _latency_ms(features, config, extractor, args.latency_calls)
            ok = "met" if p99 < TARGETS["latency_p99_ms"] else "NOT met"
            target = f"p99 < 5 ms: {ok}" if extractor == "mamba" else ""
            add(
                f"decision latency, {extractor}, {config} config (predict, batch 1)",
                f"p50 {p50:.2f} / p99 {p99:.2f} ms",
                "",
                target,
            )

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.seconds:.0f} s per measurement")
    print_table(("measurement", "value", "ratio", "target"), rows)


if __name__ == "__main__":
    main()
