"""Benchmark a walk-forward's wall time with its trainings on 1 and on 2 worker processes.

`phoenix_rl.research.walk_forward.run_walk_forward` on synthetic `phase2_ofi` features (4 months of business days,
--bars 1-minute bars a day): 2 monthly folds (1 train, 1 validation, 1 test month), 3 seeds each, the training
config of benchmarks/protocol_run.py (the evidence config made to learn in 4,000 env steps). The reference is
one worker (every training in this process, one after another, as before issue 12); the row under it runs the
same walk with `workers=2` (spawned processes, 1 torch thread each) and must give identical results (checked:
chosen seeds, validation scores, the fold table).

    python benchmarks/bench_walk_forward.py                    # ~6 min on 2 cores
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
    from phoenix_rl.research.walk_forward import monthly_folds, run_walk_forward
    from phoenix_rl.testing import synthetic_features

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=TRAINING["total_timesteps"], help="per training")
    parser.add_argument("--bars", type=int, default=60, help="1-minute bars per trade date")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per fold")
    args = parser.parse_args()

    columns = load_feature_set("phase2_ofi").columns
    frame = synthetic_features(
        columns, n_sessions=110, bars_per_session=args.bars, first_trade_date=dt.date(2024, 1, 2), seed=3
    ).with_columns(pl.col("warm").alias("warm_phase2_ofi"))
    frame = frame.filter(pl.col("trade_date") < dt.date(2024, 5, 1))
    folds = monthly_folds(frame["trade_date"].unique().to_list(), train_months=1, n_folds=2)
    base = TrainConfig.from_dict(TRAINING | {"total_timesteps": args.timesteps})
    seeds = list(range(1, args.seeds + 1))
    walls, results = {}, {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            results[workers] = run_walk_forward(
                lambda f: frame, folds, base, seeds, tmp, workers=workers, log=lambda m: print("  " + m, flush=True)
            )
            walls[workers] = time.perf_counter() - t0
    one, two = results[1], results[2]
    same = (
        [f.chosen_seed for f in one.folds] == [f.chosen_seed for f in two.folds]
        and [f.val_scores for f in one.folds] == [f.val_scores for f in two.folds]
        and one.fold_table().equals(two.fold_table())
    )
    trainings = len(folds) * len(seeds)
    train_s = sum(v for f in one.folds for k, v in f.seconds.items() if k.startswith("train_seed"))
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, {frame.height} bars, {trainings} trainings of "
        f"{args.timesteps} steps (protocol config), {len(folds)} folds x {len(seeds)} seeds"
    )
    rows = [
        ("workers", "wall s", "ratio", "note"),
        ("1 (reference: one after another)", f"{walls[1]:.1f}", "1.00 x", f"trainings {train_s:.0f} s in all"),
        ("2 (spawned processes, 1 thread each)", f"{walls[2]:.1f}", f"{walls[1] / walls[2]:.2f} x faster",
         f"identical results: {'yes' if same else 'NO'}"),
    ]  # fmt: skip
    print_table(rows[0], rows[1:])
    if not same:
        raise SystemExit("the two walks differ")


if __name__ == "__main__":
    main()
