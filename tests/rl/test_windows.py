"""Evaluation windows (issue 11 hole A): ordered, embargoed, validated at config time, verified on artifacts."""

from __future__ import annotations

import datetime as dt

import pytest

from phoenix_assets.defs.model.assets import point_in_time_outcome
from phoenix_rl.config import TrainConfig
from phoenix_rl.windows import EvaluationWindows, trade_dates_strictly_between

D = dt.date.fromisoformat


def ew(train: str, val: str, test: str, embargo: int = 0) -> EvaluationWindows:
    """Windows from 'start..end' strings."""
    spans = [tuple(D(d) for d in w.split("..")) for w in (train, val, test)]
    return EvaluationWindows(spans[0], spans[1], spans[2], embargo)  # type: ignore[arg-type]


def test_trade_dates_between_by_hand() -> None:
    assert trade_dates_strictly_between(D("2024-03-13"), D("2024-03-14")) == 0  # adjacent
    assert trade_dates_strictly_between(D("2024-03-15"), D("2024-03-18")) == 0  # Fri -> Mon: the weekend
    assert trade_dates_strictly_between(D("2024-03-14"), D("2024-03-18")) == 1  # Friday between
    assert trade_dates_strictly_between(D("2024-03-18"), D("2024-03-14")) == 0


def test_sound_windows_pass_and_leaky_ones_are_named() -> None:
    ok = ew("2024-03-04..2024-03-08", "2024-03-12..2024-03-13", "2024-03-15..2024-03-21", 1)
    assert ok.validate() is ok and ok.as_dict()["embargo_days"] == 1
    same = ew("2024-03-13..2024-03-14", "2024-03-15..2024-03-15", "2024-03-15..2024-03-15")
    with pytest.raises(ValueError, match="test starts 2024-03-15, not after val ends 2024-03-15"):
        same.validate()  # the old demo default: val = test
    tight = ew("2024-03-04..2024-03-11", "2024-03-12..2024-03-13", "2024-03-15..2024-03-21", 1)
    with pytest.raises(ValueError, match=r"only 0 trade date\(s\) between train \(ends 2024-03-11\) and val"):
        tight.validate()


def test_fitted_objects_must_end_before_validation() -> None:
    w = ew("2024-03-13..2024-03-13", "2024-03-14..2024-03-14", "2024-03-15..2024-03-15")
    assert w.fitted_problems({"hmm_regime_model": ("2024-03-13", "2024-03-13"), "none": None}) == []
    (problem,) = w.fitted_problems({"hmm_regime_model": ("2024-03-13", "2024-03-15")})  # the old demo's HMM fit
    assert problem == "hmm_regime_model was fitted on data up to 2024-03-15, not before validation starts 2024-03-14"


def test_train_config_refuses_overlapping_windows_at_config_time() -> None:
    with pytest.raises(ValueError, match="TrainConfig: test starts 2024-03-15, not after val ends 2024-03-15"):
        TrainConfig(train_start="2024-03-13", train_end="2024-03-14", val_start="2024-03-15", val_end="2024-03-15",
                    test_start="2024-03-15", test_end="2024-03-15")  # fmt: skip
    with pytest.raises(ValueError, match="val starts 2024-03-14, not after train ends 2024-03-14"):
        TrainConfig(train_end="2024-03-14", train_start="2024-03-01", val_start="2024-03-14", val_end="2024-03-15")
    TrainConfig(train_start="2024-03-13", train_end="2024-03-13", val_start="2024-03-14", val_end="2024-03-14")


def test_the_artifact_check_verifies_recorded_windows() -> None:
    saved = {
        "evaluation_windows": {"train": ["2024-03-13", "2024-03-13"], "val": ["2024-03-14", "2024-03-14"],
                               "test": ["2024-03-15", "2024-03-15"], "embargo_days": 0},
        "fitted_windows": {"mamba_sac_model": ["2024-03-13", "2024-03-13"],
                           "hmm_regime_model": ["2024-03-13", "2024-03-13"]},
    }  # fmt: skip
    assert point_in_time_outcome(saved).passed
    leaky = saved | {"fitted_windows": {"hmm_regime_model": ["2024-03-13", "2024-03-15"]}}
    outcome = point_in_time_outcome(leaky)
    assert (
        not outcome.passed and "hmm_regime_model was fitted on data up to 2024-03-15" in outcome.metadata["problems"][0]
    )
    assert not point_in_time_outcome({}).passed  # nothing recorded: cannot be verified
