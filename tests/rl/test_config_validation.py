"""TrainConfig refuses settings that cannot train a usable model (issue 29: `total_timesteps: -5` or `0` and
`batch_size: 0` used to train, or not, and be published as the latest model). Each message names the field and
its value."""

from __future__ import annotations

import math
from typing import Any

import pytest

from phoenix_rl.config import TrainConfig
from tests.conftest import TINY_MODEL_CONFIG

BAD: list[tuple[dict[str, Any], str]] = [
    ({"total_timesteps": -5}, "total_timesteps must be an int >= 1 (got -5)"),
    ({"total_timesteps": 0}, "total_timesteps must be an int >= 1 (got 0)"),
    ({"batch_size": 0}, "batch_size must be an int >= 1 (got 0)"),
    ({"batch_size": -1}, "batch_size must be an int >= 1 (got -1)"),
    ({"buffer_size": 8}, "buffer_size must be an int >= batch_size 16 (got 8)"),
    ({"learning_starts": -1}, "learning_starts must be an int >= 0 (got -1)"),
    ({"learning_starts": 64}, "learning_starts must be < total_timesteps, or no gradient step is ever taken "),
    ({"learning_starts": 100}, "(got learning_starts 100, total_timesteps 64)"),
    ({"learning_rate": 0.0}, "learning_rate must be a finite number in (0, inf) (got 0.0)"),
    ({"learning_rate": -3e-4}, "learning_rate must be a finite number in (0, inf) (got -0.0003)"),
    ({"learning_rate": math.nan}, "learning_rate must be a finite number in (0, inf) (got nan)"),
    ({"learning_rate": math.inf}, "learning_rate must be a finite number in (0, inf) (got inf)"),
    ({"gamma": 0.0}, "gamma must be a finite number in (0, 1] (got 0.0)"),
    ({"gamma": 1.5}, "gamma must be a finite number in (0, 1] (got 1.5)"),
    ({"gamma": math.nan}, "gamma must be a finite number in (0, 1] (got nan)"),
    ({"tau": 0.0}, "tau must be a finite number in (0, 1] (got 0.0)"),
    ({"tau": 2.0}, "tau must be a finite number in (0, 1] (got 2.0)"),
    ({"train_freq": 0}, "train_freq must be an int >= 1 (got 0)"),
    ({"gradient_steps": 0}, "gradient_steps must be an int >= 1 (got 0)"),
    ({"gradient_steps": -1}, "gradient_steps must be an int >= 1 (got -1)"),
    ({"d_model": 0}, "d_model must be an int >= 1 (got 0)"),
    ({"d_state": 0}, "d_state must be an int >= 1 (got 0)"),
    ({"d_conv": 0}, "d_conv must be an int >= 1 (got 0)"),
    ({"expand": 0}, "expand must be an int >= 1 (got 0)"),
    ({"n_layers": 0}, "n_layers must be an int >= 1 (got 0)"),
    ({"log_every": 0}, "log_every must be an int >= 1 (got 0)"),
    ({"capital": 0.0}, "capital must be a finite number in (0, inf) (got 0.0)"),
    ({"capital": -10_000.0}, "capital must be a finite number in (0, inf) (got -10000.0)"),
    ({"capital": math.inf}, "capital must be a finite number in (0, inf) (got inf)"),
    ({"torch_threads": 0}, "torch_threads must be None or an int >= 1 (got 0)"),
    ({"net_arch": []}, "net_arch must be a non-empty list of layer widths >= 1 (got [])"),
    ({"net_arch": [16, 0]}, "net_arch layer widths must be ints >= 1 (got [16, 0])"),
    ({"net_arch": [16, -4]}, "net_arch layer widths must be ints >= 1 (got [16, -4])"),
    ({"ent_coef": "-0.1"}, "ent_coef must be 'auto', 'auto_<initial value > 0>' or a fixed coefficient >= 0"),
    ({"ent_coef": "auto_0"}, "(got 'auto_0')"),
    ({"ent_coef": "nan"}, "(got 'nan')"),
    ({"ent_coef": "autox"}, "(got 'autox')"),
    ({"feature_set": ""}, "feature_set must name a feature set of feature_specs/ (got '')"),
]


@pytest.mark.parametrize(("change", "message"), BAD, ids=[f"{k}={v}" for change, _ in BAD for k, v in change.items()])
def test_an_absurd_setting_is_refused_naming_field_and_value(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=r"^TrainConfig: ") as raised:
        TrainConfig.from_dict({**TINY_MODEL_CONFIG, **change})
    assert message in str(raised.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValueError) as raised:
        TrainConfig(total_timesteps=0, batch_size=0, gamma=2.0)
    text = str(raised.value)
    assert "total_timesteps must be" in text and "batch_size must be" in text and "gamma must be" in text
    assert "learning_starts must be < total_timesteps" in text  # the default 1000 is >= 0 too


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"learning_starts": 63},  # one gradient step: SB3 trains once num_timesteps > learning_starts
        {"learning_starts": 0},
        {"batch_size": 500},  # == buffer_size
        {"gamma": 1.0, "tau": 1.0},
        {"torch_threads": None},
        {"ent_coef": "auto_0.1"},
        {"ent_coef": "0"},
        {"ent_coef": "0.05"},
        {"net_arch": [4]},
    ],
)
def test_the_edges_of_the_valid_ranges_are_accepted(change: dict[str, Any]) -> None:
    TrainConfig.from_dict({**TINY_MODEL_CONFIG, **change})


def test_the_defaults_validate() -> None:
    cfg = TrainConfig()
    assert cfg.learning_starts < cfg.total_timesteps and cfg.batch_size <= cfg.buffer_size
