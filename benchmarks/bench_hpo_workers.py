"""Benchmark `hpo_study`'s trials per hour with its trials in 1 and in 2 worker processes.

`phoenix_rl.research.hpo.run_study_workers` on a journal-file study over synthetic `phase2_ofi` features
(train January, validate February, test March; --bars 1-minute bars a day). Each trial trains the training config of
benchmarks/protocol_run.py for --timesteps env steps with the extractor, batch and train_freq fixed to it (so
trials cost about the same) and the rest of the default search space sampled, then backtests validation once
(no pruning). The reference is one worker (trials one after another, in this process); the second row runs a
new study of the same size on two spawned workers. Their trial sequences differ (constant-liar TPE), so the
figure compared is trials per hour.

    python benchmarks/bench_hpo_workers.py        # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protocol_run import TRAINING  # noqa: E402
from table import print_table  # noqa: E402


def main() -> None:
    import polars as pl
    import torch

    from feature_specs import load_feature_set
    from phoenix_rl.config import TrainConfig
    from phoenix_rl.research import hpo
    from phoenix_rl.research.search_space import SearchSpace
    from phoenix_rl.testing import synthetic_features

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=2_000, help="env steps per trial")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--bars", type=int, default=60, help="1-minute bars per trade date")
    args = parser.parse_args()
    os.environ.pop(hpo.STORAGE_ENV, None)  # a journal file in a temp lake

    frame = synthetic_features(
        load_feature_set("phase2_ofi").columns, n_sessions=70, bars_per_session=args.bars,
        first_trade_date=dt.date(2024, 1, 2), seed=3,
    ).with_columns(pl.col("warm").alias("warm_phase2_ofi"))  # fmt: skip
    windows = {
        "train_start": "2024-01-02", "train_end": "2024-01-31", "val_start": "2024-02-01",
        "val_end": "2024-02-29", "test_start": "2024-03-01", "test_end": "2024-03-29",
    }  # fmt: skip
    base = TrainConfig.from_dict(TRAINING | windows | {"total_timesteps": args.timesteps})
    fixed = {"batch_size": [64], "train_freq": [2], "net_arch": ["small"], "n_layers": [1], "d_model": [16]}
    space = SearchSpace.from_dict(fixed | {"d_state": [8], "lookback": [16]})
    settings = hpo.StudySettings(base=base, space=space, eval_every=0, pruner="none", seed=1)
    rows = [("workers", "wall s", "finished trials", "trials per hour", "ratio")]
    per_hour = {}
    with tempfile.TemporaryDirectory() as lake:
        for workers in (1, 2):
            t0 = time.perf_counter()
            study = hpo.run_study_workers(
                settings, frame, f"bench_w{workers}", lake, args.trials, workers=workers, log=print
            )
            wall = time.perf_counter() - t0
            n = len(study.get_trials(states=hpo.FINISHED))
            per_hour[workers] = n / wall * 3600
            ratio = "1.00 x (reference)" if workers == 1 else f"{per_hour[2] / per_hour[1]:.2f} x"
            rows.append((str(workers), f"{wall:.1f}", str(n), f"{per_hour[workers]:.0f}", ratio))
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {frame.height} bars, trials of {args.timesteps} steps")
    print_table(rows[0], rows[1:])


if __name__ == "__main__":
    main()
