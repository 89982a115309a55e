"""CUDA path check, for a machine with an NVIDIA GPU and `mamba_ssm` (the `gpu` extra): never run by CI.

1. Agreement: `mamba_ssm.Mamba` (selective-scan CUDA kernel) loaded with the state_dict of Phoenix's
   pure-PyTorch `MambaBlock`, same input: max |difference| of outputs, input gradients and parameter
   gradients, relative to the output scale (fp32, TF32 off).
2. Speed of one block, forward + backward, both paths on the GPU (and the pure path on the CPU).
3. SAC + Mamba training steps/s on the GPU (`phoenix_rl.train.trainer.train`, what `mamba_sac_model` runs) with
   the fused kernel and with the pure-PyTorch scan, on synthetic features with a planted signal.

    python benchmarks/gpu_check.py [--train-steps 3000] [--out gpu_check.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from phoenix_rl.agent import mamba


def agreement(batch: int = 8, length: int = 64, d_model: int = 32, d_state: int = 16, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    pure = mamba.MambaBlock(d_model, d_state).cuda()
    fused = mamba.make_mamba_block(d_model, d_state, use_cuda_kernel=True).cuda()
    fused.load_state_dict(pure.state_dict(), strict=True)
    x = torch.randn(batch, length, d_model, device="cuda")
    x_pure, x_fused = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y_pure, y_fused = pure(x_pure), fused(x_fused)
    weights = torch.randn_like(y_pure)
    (y_pure * weights).sum().backward()
    (y_fused * weights).sum().backward()
    fused_grads = dict(fused.named_parameters())
    param_diff = {
        name: (p.grad - fused_grads[name].grad).abs().max().item() / p.grad.abs().max().clamp_min(1e-12).item()
        for name, p in pure.named_parameters()
    }
    return {
        "fused_class": f"{type(fused).__module__}.{type(fused).__name__}",
        "shape": [batch, length, d_model, d_state],
        "output_max_abs_diff": (y_pure - y_fused).abs().max().item(),
        "output_max_abs": y_pure.abs().max().item(),
        "input_grad_max_abs_diff": (x_pure.grad - x_fused.grad).abs().max().item(),  # type: ignore[operator]
        "input_grad_max_abs": x_pure.grad.abs().max().item(),  # type: ignore[union-attr]
        "param_grad_max_rel_diff": max(param_diff.values()),
        "param_grad_worst": max(param_diff, key=param_diff.__getitem__),
    }


def block_ms(module: torch.nn.Module, device: str, shape: tuple[int, int, int], reps: int = 20) -> float:
    x = torch.randn(*shape, device=device, requires_grad=True)
    for _ in range(3):
        module(x).sum().backward()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        module(x).sum().backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e3


def block_speed(batch: int = 256, length: int = 64, d_model: int = 64, d_state: int = 16) -> dict:
    shape = (batch, length, d_model)
    return {
        "shape": [batch, length, d_model, d_state],
        "fused_cuda_ms": block_ms(mamba.make_mamba_block(d_model, d_state, use_cuda_kernel=True).cuda(), "cuda", shape),
        "pure_cuda_ms": block_ms(mamba.MambaBlock(d_model, d_state).cuda(), "cuda", shape),
        "pure_cpu_ms": block_ms(mamba.MambaBlock(d_model, d_state), "cpu", shape, reps=3),
    }


def training_speed(steps: int, fused: bool) -> dict:
    """SAC + Mamba on the GPU; `fused=False` hides mamba_ssm so every layer uses the pure-PyTorch scan."""
    from feature_specs import load_feature_set
    from phoenix_rl.config import EnvConfig
    from phoenix_rl.testing import synthetic_features
    from phoenix_rl.train.trainer import TrainConfig, train

    available = mamba.cuda_mamba_available
    mamba.cuda_mamba_available = (lambda: True) if fused else (lambda: False)  # type: ignore[assignment]
    try:
        cols = load_feature_set("phase2_ofi").columns
        features = synthetic_features(cols, n_sessions=4, bars_per_session=240, signal_strength=6.0, seed=1)
        cfg = TrainConfig(
            feature_set="phase2_ofi",
            train_end="2024-03-15",
            total_timesteps=steps,
            learning_starts=min(500, steps // 4),
            batch_size=128,
            env=EnvConfig(lookback=16),
            d_model=16,
            d_state=8,
            n_layers=1,
            log_every=max(steps // 3, 1),
        )
        with tempfile.TemporaryDirectory() as out:
            result = train(cfg, features, Path(out))
        return {"fused": fused, "steps": steps, "steps_per_s": result.steps_per_s}
    finally:
        mamba.cuda_mamba_available = available  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=3_000)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    report: dict = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0),
        "cuda_mamba_available": mamba.cuda_mamba_available(),
    }
    paths = (True, False) if report["cuda_mamba_available"] else (False,)  # without mamba_ssm: the pure path only
    if report["cuda_mamba_available"]:
        report["agreement"] = agreement()
        report["agreement_long"] = agreement(batch=4, length=512, d_model=64, d_state=16, seed=1)
        print(json.dumps(report, indent=2), flush=True)
        report["block_speed"] = block_speed()
        print(json.dumps(report["block_speed"]), flush=True)
    report["training"] = [training_speed(args.train_steps, fused) for fused in paths]
    print(json.dumps(report["training"]), flush=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
