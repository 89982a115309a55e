"""Dagster config generated from the defining dataclasses: the go-live gate and the synthetic landing job take
their fields, defaults and descriptions from `GateThresholds` and `SyntheticMarketConfig` (one definition)."""

from __future__ import annotations

import dataclasses

import pytest

from phoenix_assets.defs.config import config_from_dataclass
from phoenix_assets.defs.ingest.synthetic import SyntheticMarketRunConfig
from phoenix_assets.defs.paper.assets import PaperGateConfig
from phoenix_assets.lib.synthetic.market import DEMO_MARKET, SyntheticMarketConfig
from phoenix_rl.live.report import GateThresholds


def test_the_gate_config_is_gate_thresholds_field_by_field() -> None:
    fields = PaperGateConfig.model_fields
    assert list(fields) == [*(f.name for f in dataclasses.fields(GateThresholds)), "strategy"]
    for f in dataclasses.fields(GateThresholds):
        assert fields[f.name].default == f.default and fields[f.name].description == f.metadata["doc"], f.name
    assert PaperGateConfig().thresholds() == GateThresholds()
    custom = {"days": 5, "min_sortino": 1.5, "max_drawdown_pct": 3.0, "min_win_rate": 0.5}
    assert PaperGateConfig(strategy="b", **custom).thresholds() == GateThresholds(**custom)


def test_the_landing_job_defaults_to_the_demo_market() -> None:
    """`./phoenix demo` lands the job's default market: today's demo days (pinned), from DEMO_MARKET."""
    assert SyntheticMarketConfig(records_per_day=200_000, ofi_strength=0.5, flow_halflife_s=300.0) == DEMO_MARKET
    assert SyntheticMarketRunConfig().market() == DEMO_MARKET
    docs = {f.name: f.metadata.get("doc") for f in dataclasses.fields(SyntheticMarketConfig)}
    fields = SyntheticMarketRunConfig.model_fields
    assert set(fields) == {"seed", "records_per_day", "ofi_strength", "flow_halflife_s", "roll_date"}
    assert all(fields[name].description == docs[name] for name in fields)
    control = SyntheticMarketRunConfig(ofi_strength=0.0, roll_date=None, seed=3).market()
    assert control == dataclasses.replace(DEMO_MARKET, ofi_strength=0.0, roll_date=None, seed=3)


def test_an_unknown_field_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"GateThresholds has no field\(s\) \['max_days'\]"):
        config_from_dataclass("Bad", GateThresholds, "", only=("days", "max_days"))
