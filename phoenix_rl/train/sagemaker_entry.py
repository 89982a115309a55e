"""SageMaker training-container entry point: `phoenix_rl.train.pipes_entry`'s training under SageMaker's conventions.

    python -m phoenix_rl.train.sagemaker_entry [--checkpoint-every N] [--pipes-interval S]

Set as `AlgorithmSpecification.ContainerEntrypoint` by the `mamba_sac_model` asset's `launch="sagemaker"` mode
(phoenix_assets/defs/model/sagemaker.py). SageMaker's container layout, rooted at $PHOENIX_SM_ROOT (default
/opt/ml, so tests can point it at a temporary folder):

- channels `features` (one parquet file) and `config` (TrainConfig JSON): $SM_CHANNEL_FEATURES / $SM_CHANNEL_CONFIG
  when set, else <root>/input/data/<channel>/
- model dir ($SM_MODEL_DIR, else <root>/model): model.zip, config.json, metrics.jsonl; SageMaker tars it into
  <S3OutputPath>/<job>/output/model.tar.gz when the container exits 0
- <root>/checkpoints (CheckpointConfig.LocalPath, synced to S3 by SageMaker): SB3 checkpoints every N steps;
  after a spot interruption SageMaker restores them and training resumes from the newest
- <root>/output/failure: the reason on failure (SageMaker shows it as the job's FailureReason)

Dagster Pipes over S3: the context is read with `PipesS3ContextLoader`, messages (log lines, the
materialization) are written in chunks with `PipesS3MessageWriter`; boto3 honours AWS_ENDPOINT_URL/AWS_REGION.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["CHANNELS", "main", "sm_root"]

CHANNELS = {"features": ".parquet", "config": ".json"}  # channel name -> the one file it holds


def sm_root() -> Path:
    return Path(os.environ.get("PHOENIX_SM_ROOT") or "/opt/ml")


def _channel_file(name: str) -> Path:
    folder = Path(os.environ.get(f"SM_CHANNEL_{name.upper()}") or sm_root() / "input" / "data" / name)
    found = sorted(folder.glob(f"*{CHANNELS[name]}"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"sagemaker_entry: channel {name!r} at {folder} holds {len(found)} *{CHANNELS[name]} files, expected 1: "
            "check the training job's InputDataConfig"
        )
    return found[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m phoenix_rl.train.sagemaker_entry", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--checkpoint-every", type=int, default=1000, help="SB3 checkpoint every N steps (0: none)")
    parser.add_argument("--pipes-interval", type=float, default=10.0, help="seconds between Pipes message uploads")
    args = parser.parse_args(argv)
    import boto3
    from dagster_pipes import PipesS3ContextLoader, PipesS3MessageWriter, open_dagster_pipes

    from phoenix_rl.train.pipes_entry import train_and_report
    from phoenix_rl.train.trainer import CHECKPOINT_GLOB

    root = sm_root()
    model_dir = Path(os.environ.get("SM_MODEL_DIR") or root / "model")
    checkpoints = root / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    s3 = boto3.client("s3")
    try:
        with open_dagster_pipes(
            context_loader=PipesS3ContextLoader(s3),
            message_writer=PipesS3MessageWriter(s3, interval=args.pipes_interval),
        ) as pipes:
            found = list(checkpoints.glob(CHECKPOINT_GLOB))
            if found:
                pipes.log.info(f"resuming from the newest of {len(found)} checkpoints in {checkpoints} (restarted job)")
            train_and_report(
                pipes,
                _channel_file("config"),
                _channel_file("features"),
                model_dir,
                checkpoint_dir=checkpoints,
                checkpoint_every=args.checkpoint_every,
            )
    except Exception as exc:
        (root / "output").mkdir(parents=True, exist_ok=True)
        (root / "output" / "failure").write_text(f"{type(exc).__name__}: {exc}"[:1024])
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
