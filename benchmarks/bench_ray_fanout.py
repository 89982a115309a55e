"""The protocol's fan-out: `ablation_report` (benchmarks/protocol_run.py, reduced) on the local pool vs 1 vs 2 Ray
nodes, and a projection of the full protocol onto N GPU nodes.

Every run materializes the real `ablation_report` asset on the same lake (planted strength 0.5, protocol_run's
market and dates, 3 monthly folds) with the same config but its executor: the local pool (`workers=2`), a 1-node
Ray cluster (1 CPU) and a 2-node Ray cluster (1 CPU each), both started here on 127.0.0.1 with
`tests/rl/train/test_ray_cluster.local_ray_cluster` (`ray start --block` processes, ended after each run). All
of them share this machine's 2 cores: "2 nodes" is two raylets on one machine, not two machines. The per-seed
results of the Ray runs must equal the pool's (checked).

The projection divides the protocol's trainings (arms x seeds x folds) into rounds of N at once, one training
per GPU node (`num_gpus=1`), at a training's time = steps / (SAC steps/s) + the measured Ray overhead per task.
Steps/s: the H200 figure of benchmarks/results/gpu_check_h200.json (measured, but at gpu_check's small Mamba,
d_model 16) and the 1-core CPU figures of benchmarks/results/bench_training_cpu.txt (measured); the default
Mamba config was never measured on a GPU.

    python benchmarks/bench_ray_fanout.py [--timesteps 1000] [--seeds 1 2]   # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from protocol_run import ARMS, FIRST_DATE, FOLDS, LAST_DATE, TRAINING, build_bars_lake, run_ablation  # noqa: E402
from table import print_table  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
PROTOCOL = {"arms": 6, "seeds": 10, "folds": 3, "steps": 100_000}  # issue 27: 18M SAC steps
CPU_DEFAULT_STEPS_S = 11.7  # bench_training_cpu.txt: Mamba, default config, 1 thread (measured)
CPU_SMALL_STEPS_S = 133.5  # bench_training_cpu.txt: Mamba, evidence config (d_model 16), 1 thread (measured)


def _gpu_steps_s() -> float:
    check = json.loads((RESULTS / "gpu_check_h200.json").read_text())
    return max(t["steps_per_s"] for t in check["training"])  # fused selective-scan kernel


def _run(label: str, lake: str, config: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    report = run_ablation(lake, config)
    wall = time.perf_counter() - t0
    train_s = [r[k] for r in report["seconds"]["runs"] for k in r if k.startswith("train_seed")]
    test_s = [r["test"] for r in report["seconds"]["runs"]]
    print(f"{label}: {wall:.0f} s ({len(train_s)} trainings, mean {sum(train_s) / len(train_s):.1f} s)", flush=True)
    return {"label": label, "wall_s": wall, "train_s": train_s, "test_s": test_s, "per_seed": report["per_seed"]}


def projection(overhead_s: float) -> list[dict[str, Any]]:
    """Hours of the full protocol's trainings on N nodes, one training per node at a time."""
    n = PROTOCOL["arms"] * PROTOCOL["seeds"] * PROTOCOL["folds"]
    rates = {
        "H200, gpu_check config (measured 47.97 steps/s)": _gpu_steps_s(),
        "1 CPU core, default Mamba (measured 11.7 steps/s)": CPU_DEFAULT_STEPS_S,
        "1 CPU core, small Mamba (measured 133.5 steps/s)": CPU_SMALL_STEPS_S,
    }
    rows = []
    for name, rate in rates.items():
        per = PROTOCOL["steps"] / rate + overhead_s
        for nodes in (1, 10, 30, 60, 180):
            rows.append({"device": name, "nodes": nodes, "training_s": per, "hours": math.ceil(n / nodes) * per / 3600})
    return rows


def main() -> None:
    from tests.rl.train.test_ray_cluster import local_ray_cluster

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=1_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/protocol"))
    parser.add_argument("--results", type=Path, default=RESULTS / "ray_fanout_cpu")
    args = parser.parse_args()
    data = build_bars_lake(0.5, args.out / "s0.5", FIRST_DATE, LAST_DATE)
    training = TRAINING | {"total_timesteps": args.timesteps, "learning_starts": min(1_000, args.timesteps // 2)}
    config = FOLDS | {"seeds": args.seeds, "workers": 2, "arms": ARMS, "training": training}
    runs = [_run("local pool, 2 workers", data["lake"], config)]
    for nodes in (1, 2):
        with local_ray_cluster(nodes=nodes, cpus_per_node=1) as cluster:
            runs.append(_run(f"Ray, {nodes} node(s) x 1 CPU", data["lake"], config | {"ray_address": cluster.address}))
    for run in runs[1:]:
        assert run["per_seed"] == runs[0]["per_seed"], f"{run['label']}: results differ from the local pool's"
    base = runs[0]["wall_s"]
    print_table(
        ["executor (this machine, 2 cores)", "wall s", "vs local pool", "trainings", "mean training s"],
        [
            [r["label"], f"{r['wall_s']:.0f}", f"{r['wall_s'] / base:.2f}x", str(len(r["train_s"])),
             f"{sum(r['train_s']) / len(r['train_s']):.1f}"]
            for r in runs
        ],
    )  # fmt: skip
    # Ray's cost per task at equal cores (2 nodes x 1 CPU vs the pool's 2 workers), spread over its trainings
    overhead = max(0.0, (runs[2]["wall_s"] - base) / len(runs[2]["train_s"]) * 2)
    proj = projection(overhead)
    print(
        f"\nprojection: {PROTOCOL['arms']} arms x {PROTOCOL['seeds']} seeds x {PROTOCOL['folds']} folds = "
        f"{PROTOCOL['arms'] * PROTOCOL['seeds'] * PROTOCOL['folds']} trainings of {PROTOCOL['steps']:,} steps, one "
        f"per node at a time, + {overhead:.1f} s Ray overhead per task (measured here); trainings only"
    )
    print_table(
        ["steps/s source", "nodes", "one training", "protocol trainings"],
        [[p["device"], str(p["nodes"]), f"{p['training_s'] / 60:.0f} min", f"{p['hours']:.1f} h"] for p in proj],
    )
    record = {
        "config": config,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average": os.getloadavg()},
        "finished_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "runs": [{k: v for k, v in r.items() if k != "per_seed"} for r in runs],
        "ray_overhead_s_per_task": overhead,
        "projection": proj,
        "not_measured": [
            "the default Mamba config (d_model 64) on any GPU: only gpu_check's d_model-16 training was timed (H200)",
            "real multi-machine clusters: both Ray nodes here share one machine's 2 cores",
            "several trainings sharing one GPU (fractional num_gpus)",
        ],
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str))


if __name__ == "__main__":
    main()
