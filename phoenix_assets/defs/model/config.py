"""`MambaSacConfig`, the Dagster config of `mamba_sac_model`, generated from `phoenix_rl.config`'s dataclasses.

Every field, type, default and description comes from `TrainConfig` / `EnvConfig` (the one definition); this
module only adds what is Dagster's own (`launch`). The run config mirrors the training JSON exactly: the
training keys at the top, the environment's under `env`:

    {"ops": {"mamba_sac_model": {"config": {"total_timesteps": 5000, "train_start": "2024-03-13", ...,
                                            "env": {"lookback": 16, "max_steps": 390}}}}}

and `MambaSacConfig.to_train_config()` is that same dict read by `TrainConfig.from_dict`. The env's data-bound
fields (`DATA_BOUND_ENV_FIELDS`: the feature columns and the warm column) are set by `train`, not configured.
"""

from typing import Literal

from pydantic import Field

from phoenix_assets.defs.config import config_from_dataclass
from phoenix_rl.config import DATA_BOUND_ENV_FIELDS, EnvConfig, TrainConfig

__all__ = ["EnvSettings", "MambaSacConfig"]


EnvSettings = config_from_dataclass(
    "EnvSettings",
    EnvConfig,
    "MnqTradingEnv settings (phoenix_rl.config.EnvConfig; the feature and warm columns come from the data).",
    exclude=DATA_BOUND_ENV_FIELDS,
)
_TrainSettings = config_from_dataclass(
    "TrainSettings", TrainConfig, "phoenix_rl.config.TrainConfig", nested={"env": EnvSettings}
)


class MambaSacConfig(_TrainSettings):  # type: ignore[misc,valid-type]
    """`phoenix_rl.config.TrainConfig` as Dagster config (same keys, defaults and env nesting) plus `launch`.
    The train, val and test windows (ISO trade dates, inclusive) must be set: they have no default."""

    launch: Literal["local", "sagemaker"] = Field(
        default="local",
        description=(
            "Where training runs: 'local' (a subprocess via Dagster Pipes) or 'sagemaker' (a managed-spot training "
            "job configured by the `sagemaker` resource, Pipes messages via S3)"
        ),
    )

    def to_train_config(self) -> TrainConfig:
        """The TrainConfig of this run (the JSON the training process reads is its `to_json()`)."""
        return TrainConfig.from_dict(self.model_dump(exclude={"launch"}))

    def windows(self) -> dict[str, tuple[str, str]]:
        """The train/val/test windows; a ValueError naming the unset ones (the asset needs all three)."""
        windows = self.to_train_config().windows()
        unset = [k for w in windows for k in (f"{w}_start", f"{w}_end") if getattr(self, k) is None]
        if unset:
            raise ValueError(
                f"mamba_sac_model: the run config lacks the windows {unset} (ISO trade dates, inclusive): set "
                "train_start/train_end, val_start/val_end and test_start/test_end, e.g. the demo's train "
                "2024-03-13, val 2024-03-14 and test 2024-03-15 (each window after the previous one)"
            )
        return {w: (str(s), str(e)) for w, (s, e) in windows.items()}
