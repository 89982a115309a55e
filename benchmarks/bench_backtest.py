"""Benchmark `run_backtest` of a Mamba SAC model: the batched sequence pass (phoenix_rl.agent.batched_policy) against
`predict` on every bar (the reference, as before issue 12), at the default and the evidence configs.

The model is untrained (its weights do not change the cost) and acts on synthetic `phase2_ofi` bars: --sessions
trade dates of --bars 1-minute bars (default 5 x 1,380 = a week of Globex minutes). Each row is the median of
--repeats backtests after one warm-up (numba's kernel compiled); 1 torch thread. The check column compares the
two backtests' equity curves.

    python benchmarks/bench_backtest.py            # ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_training import EVIDENCE, EVIDENCE_ENV  # noqa: E402
from table import print_table  # noqa: E402


def _timed(policy: Any, frame: Any, env_cfg: Any, repeats: int) -> tuple[float, Any]:
    """(median seconds of `repeats` backtests after a warm-up, the last result)."""
    from phoenix_rl.evaluation.backtest import run_backtest

    result = run_backtest(policy, frame, env_cfg)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = run_backtest(policy, frame, env_cfg)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    import polars as pl
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.monitor import Monitor

    from feature_specs import load_feature_set
    from phoenix_rl.config import EnvConfig, TrainConfig
    from phoenix_rl.env.trading_env import MnqTradingEnv
    from phoenix_rl.testing import synthetic_features
    from phoenix_rl.train.trainer import sac_kwargs, tune_process

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--bars", type=int, default=1_380)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    tune_process(1)
    columns = load_feature_set("phase2_ofi").columns
    frame = synthetic_features(columns, n_sessions=args.sessions, bars_per_session=args.bars).with_columns(
        pl.col("warm").alias("warm_phase2_ofi")
    )
    configs = {
        "default": TrainConfig(),
        "evidence": TrainConfig(env=EnvConfig(**EVIDENCE_ENV), **EVIDENCE),
    }
    rows = [("config", "predict per bar (reference)", "batched (batched_policy)", "ratio", "check")]
    for name, cfg in configs.items():
        env_cfg = cfg.env_config(tuple(columns), "warm_phase2_ofi")
        model = SAC(env=Monitor(MnqTradingEnv(frame, env_cfg)), **sac_kwargs(cfg))
        s_fast, fast = _timed(model, frame, env_cfg, args.repeats)
        s_slow, slow = _timed(lambda o, m=model: m.predict(o, deterministic=True)[0], frame, env_cfg, args.repeats)
        same = fast.equity.equals(slow.equity)
        rows.append(
            (
                name,
                f"{s_slow:.2f} s ({s_slow / frame.height * 1e6:.0f} us/bar)",
                f"{s_fast:.2f} s ({s_fast / frame.height * 1e6:.0f} us/bar)",
                f"{s_slow / s_fast:.1f} x faster",
                f"equity identical: {'yes' if same else 'NO'} ({fast.metrics['n_trades']:.0f} trades)",
            )
        )
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {frame.height} bars, median of {args.repeats}")
    print_table(rows[0], rows[1:])


if __name__ == "__main__":
    main()
