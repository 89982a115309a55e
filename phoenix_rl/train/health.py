"""The one judgement of whether a trained model may be published (issue 29): at least one gradient step, every
loss SB3 recorded finite, every parameter finite. Pure (no torch): the trainer applies it before saving
model.zip, and `mamba_sac_model` applies it to the record stored in config.json before anything is written
beside the lake, without loading torch in the Dagster step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["training_health_problems"]


def training_health_problems(health: Mapping[str, Any] | None) -> list[str]:
    """Why a trained model must not be published; empty when it may be. The one judgement of a run's health:
    `train` raises on it before saving model.zip, and `mamba_sac_model` checks the record stored in config.json
    (its blocking `trained_model_is_finite` check) before anything is written beside the lake."""
    if not health:
        return ["the run records no training_health (trained by code older than the check): re-train"]
    problems = []
    if (health.get("gradient_steps") or 0) < 1:
        problems.append(
            f"no gradient step was taken in {health.get('timesteps', '?')} timesteps "
            "(learning_starts must be < total_timesteps)"
        )
    problems += [
        f"{key} was non-finite (first at timestep {step})"
        for key, step in sorted((health.get("non_finite_losses") or {}).items())
    ]
    count = health.get("non_finite_parameter_count") or 0
    if count:
        named = list(health.get("non_finite_parameters") or [])
        more = ", ..." if count > len(named) else ""
        problems.append(f"{count} parameter tensor(s) hold NaN or inf: {', '.join(named)}{more}")
    return problems
