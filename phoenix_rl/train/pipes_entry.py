"""Training as a Dagster Pipes subprocess: `phoenix_rl.train.trainer` plus a live bridge to the orchestrator.

    python -m phoenix_rl.train.pipes_entry --config cfg.json --features features.parquet --out dir

Launched by the `mamba_sac_model` asset through `dagster.PipesSubprocessClient`. Uses only the lightweight
`dagster-pipes` package (no dagster core import), so the same entry point runs wherever the training runs.
Every metrics line of `train` becomes a Pipes log line; at the end one asset materialization is reported
with the learning-curve summary (Markdown table + small PNG), steps/s and the final/validation metrics.
Outside a Dagster run (no Pipes context in the environment) it still trains and prints to stdout.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
from pathlib import Path
from typing import Any

import polars as pl
from dagster_pipes import PipesContext, open_dagster_pipes

__all__ = ["ERROR_FILE", "learning_curve_markdown", "main", "train_and_report"]

ERROR_FILE = "error.txt"  # in --out when training raised: "<ExceptionType>: <message>"

CURVE_COLUMNS = (
    "timesteps",
    "episode_reward_mean10",
    "train/actor_loss",
    "train/critic_loss",
    "train/ent_coef",
    "steps_per_s",
)


def _fmt(v: float | None) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.4g}"


def _curve_png(curve: list[dict[str, float]]) -> bytes | None:
    """Episode reward (mean of last 10) and critic loss against timesteps; None when nothing to plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pts = [(m["timesteps"], m.get("episode_reward_mean10"), m.get("train/critic_loss")) for m in curve]
    if not pts:
        return None
    fig = Figure(figsize=(7, 3.2), dpi=80)
    FigureCanvasAgg(fig)
    ax_r, ax_l = fig.subplots(1, 2)
    for ax, k, label in ((ax_r, 1, "episode reward (mean 10)"), (ax_l, 2, "critic loss")):
        xs = [p[0] for p in pts if p[k] is not None]
        ax.plot(xs, [p[k] for p in pts if p[k] is not None], marker="o", linewidth=1.2)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("timesteps", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def learning_curve_markdown(curve: list[dict[str, float]], max_rows: int = 20) -> str:
    """The logged training metrics as a Markdown table (thinned to `max_rows`), with a small PNG above it."""
    md = ["### Learning curve", ""]
    png = _curve_png(curve)
    if png is not None:
        md += [f"![learning curve](data:image/png;base64,{base64.b64encode(png).decode('ascii')})", ""]
    stride = max(1, math.ceil(len(curve) / max_rows))
    rows = curve[::stride] if curve[-1:] == curve[::stride][-1:] else [*curve[::stride], curve[-1]]
    md.append("| " + " | ".join(CURVE_COLUMNS) + " |")
    md.append("|---" * len(CURVE_COLUMNS) + "|")
    md += ["| " + " | ".join(_fmt(m.get(c)) for c in CURVE_COLUMNS) + " |" for m in rows]
    return "\n".join(md)


def _json_safe(d: dict[str, float | None] | None) -> dict[str, float | None] | None:
    return None if d is None else {k: (v if v is not None and math.isfinite(v) else None) for k, v in d.items()}


def train_and_report(
    pipes: PipesContext,
    config_path: str | Path,
    features_path: str | Path,
    out: str | Path,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
) -> None:
    """`phoenix_rl.train.trainer.train` with its metrics as Pipes log lines and one materialization at the end; on an
    exception the reason is left in `out`/ERROR_FILE for the launcher to quote, then re-raised."""
    from phoenix_rl.train.trainer import TrainConfig, train  # torch/SB3: only here, so importing ERROR_FILE stays cheap

    cfg = TrainConfig.from_json(config_path)
    features = pl.read_parquet(features_path)
    pipes.log.info(
        f"training SAC+Mamba on {features.height} feature rows, feature set {cfg.feature_set}, "
        f"train {cfg.train_start}..{cfg.train_end}, {cfg.total_timesteps} timesteps, seed {cfg.seed}"
    )
    curve: list[dict[str, float]] = []

    def sink(step: int, m: dict[str, float]) -> None:
        if not any(k.startswith("val/") for k in m):
            curve.append(dict(m))
        pipes.log.info(json.dumps({"step": step, **m}))

    try:
        result = train(
            cfg, features, out, on_metrics=sink, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every
        )
    except Exception as exc:  # leave the reason where the launcher can quote it, then fail as usual
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / ERROR_FILE).write_text(f"{type(exc).__name__}: {exc}")
        raise
    metadata: dict[str, Any] = {
        "steps_per_s": {"raw_value": float(result.steps_per_s), "type": "float"},
        "train_elapsed_s": {"raw_value": float(result.elapsed_s), "type": "float"},
        "timesteps": {"raw_value": int(result.timesteps), "type": "int"},
        "learning_curve": {"raw_value": learning_curve_markdown(curve), "type": "md"},
        "final_train_metrics": {"raw_value": _json_safe(result.last_metrics), "type": "json"},
        "val_metrics": {"raw_value": _json_safe(result.val_metrics) or {}, "type": "json"},
    }
    pipes.report_asset_materialization(metadata=metadata)
    pipes.log.info(f"training done: {result.steps_per_s:.2f} steps/s, model at {Path(result.model_path)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phoenix_rl.train.pipes_entry", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="TrainConfig as JSON")
    parser.add_argument("--features", required=True, help="features_1m rows as one parquet file")
    parser.add_argument("--out", required=True, help="output folder (model.zip, config.json, metrics.jsonl)")
    args = parser.parse_args(argv)
    from phoenix_assets.lib.process_lifetime import die_with_parent_from_env

    die_with_parent_from_env()  # launched by mamba_sac_model: SIGKILLed if the step process dies
    with open_dagster_pipes() as pipes:
        train_and_report(pipes, args.config, args.features, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
