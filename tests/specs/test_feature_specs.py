"""Feature specs as data: shipped sets, content hash, and validation errors that name the culprit."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from feature_specs import FeatureSpecError, load_catalog, load_feature_set, parse_catalog
from feature_specs.spec import TRANSFORMS, load_documents

SETS = {"phase1_baseline": 6, "phase2_ofi": 13, "phase2_no_ofi": 8, "phase3_mtf": 19}


@pytest.fixture(scope="module")
def docs() -> tuple[dict[str, Any], dict[str, Any]]:
    return load_documents()


def parse(features_doc: dict[str, Any], sets_doc: dict[str, Any]):
    return parse_catalog(features_doc, sets_doc, source="test")


def test_shipped_sets_load_with_expected_columns() -> None:
    catalog = load_catalog()
    assert set(catalog.sets) == set(SETS)
    for name, n_columns in SETS.items():
        assert len(catalog.feature_set(name).columns) == n_columns, name
    phase1 = catalog.feature_set("phase1_baseline").columns
    assert phase1 == ("volume_zscore", "high_low_pct", "session_vwap_dist", "hmm_regime", "time_sin", "time_cos")
    phase2 = catalog.feature_set("phase2_ofi").columns
    assert {"hmm_regime_0", "hmm_regime_1", "hmm_regime_2", "ofi_1min_zscore", "atr_zscore"} <= set(phase2)
    no_ofi = catalog.feature_set("phase2_no_ofi")
    assert not any("ofi" in c or "microprice" in c for c in no_ofi.columns)
    assert set(no_ofi.columns) < set(phase2)
    mtf = catalog.feature_set("phase3_mtf").columns
    assert mtf[: len(phase2)] == phase2 and all(c.endswith("15m_zscore") for c in mtf[len(phase2) :])
    for f in catalog.features.values():
        assert f.meaning and f.transform in TRANSFORMS


def test_hash_is_stable_and_tracks_params(docs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    base = load_catalog()
    again = parse(*copy.deepcopy(docs))
    for name in SETS:
        h = base.feature_set(name).content_hash
        assert len(h) == 64 and h == again.feature_set(name).content_hash
    assert len({base.feature_set(n).content_hash for n in SETS}) == len(SETS)

    features_doc, sets_doc = copy.deepcopy(docs)
    features_doc["features"]["ofi_3min_cumulative_zscore"]["params"]["window_minutes"] = 4
    changed = parse(features_doc, sets_doc)
    assert changed.feature_set("phase2_ofi").content_hash != base.feature_set("phase2_ofi").content_hash
    assert changed.feature_set("phase1_baseline").content_hash == base.feature_set("phase1_baseline").content_hash

    features_doc, sets_doc = copy.deepcopy(docs)
    features_doc["defaults"]["normalise"]["1m"]["clip"] = 4.0  # a default reaches every z-scored feature
    assert (
        parse(features_doc, sets_doc).feature_set("phase1_baseline").content_hash
        != base.feature_set("phase1_baseline").content_hash
    )

    features_doc, sets_doc = copy.deepcopy(docs)
    features_doc["hmm"]["n_starts"] = 9  # the HMM config belongs to every set with a regime feature
    assert (
        parse(features_doc, sets_doc).feature_set("phase2_ofi").content_hash
        != base.feature_set("phase2_ofi").content_hash
    )


def test_hash_ignores_yaml_key_order_and_comments(tmp_path: Path, docs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    features_doc, sets_doc = docs
    reordered = {k: features_doc[k] for k in reversed(list(features_doc))}
    reordered["features"] = {k: dict(reversed(list(v.items()))) for k, v in reversed(features_doc["features"].items())}
    (tmp_path / "features.yaml").write_text("# a comment\n" + yaml.safe_dump(reordered, sort_keys=False))
    (tmp_path / "sets.yaml").write_text(yaml.safe_dump(sets_doc))
    assert load_feature_set("phase3_mtf", tmp_path).content_hash == load_feature_set("phase3_mtf").content_hash


def test_new_set_from_existing_features_needs_no_code(docs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    features_doc, sets_doc = copy.deepcopy(docs)
    sets_doc["sets"]["ofi_only"] = {"features": ["ofi_1min_zscore", "ofi_15m_zscore", "time_sin"]}
    sets_doc["sets"]["phase1_no_time"] = {"extends": "phase1_baseline", "exclude": ["time_sin", "time_cos"]}
    catalog = parse(features_doc, sets_doc)
    assert catalog.feature_set("ofi_only").columns == ("ofi_1min_zscore", "ofi_15m_zscore", "time_sin")
    assert len(catalog.feature_set("phase1_no_time").columns) == 4


def _broken(docs: tuple[dict[str, Any], dict[str, Any]], feature: str, **change: Any):
    features_doc, sets_doc = copy.deepcopy(docs)
    features_doc["features"][feature].update(change)
    return features_doc, sets_doc


@pytest.mark.parametrize(
    ("feature", "change", "words"),
    [
        ("ofi_1min_zscore", {"transform": "fourier_magic"}, "unknown transform"),
        ("ofi_1min_zscore", {"inputs": ["ofi_l11"]}, "'ofi_l11'"),
        ("ofi_15m_zscore", {"inputs": ["imbalance_close"]}, "resampleable"),
        ("high_low_pct", {"inputs": ["high", "low"]}, "takes 3 inputs"),
        ("ofi_3min_cumulative_zscore", {"params": {"window_minutes": 0}}, "window_minutes"),
        ("ofi_3min_cumulative_zscore", {"params": {}}, "needs param 'window_minutes'"),
        ("ofi_3min_cumulative_zscore", {"params": {"window_minutes": 3, "span": 2}}, "unknown params"),
        ("time_sin", {"params": {"component": "tan"}}, "component"),
        ("volume_zscore", {"normalise": {"window": 10, "min_periods": 20}}, "min_periods"),
        ("volume_zscore", {"normalise": {"clip": -1}}, "clip"),
        ("volume_zscore", {"normalise": {"kind": "minmax"}}, "normalisation kind"),
        ("spread_zscore", {"timeframe": "7m"}, "timeframe"),
        ("time_cos", {"timeframe": "15m"}, "only runs on 1m"),
        ("atr_15m_zscore", {"params": {"window_minutes": 50}}, "multiple of the timeframe"),
        ("spread_zscore", {"meaning": ""}, "meaning"),
    ],
)
def test_invalid_feature_is_named(
    docs: tuple[dict[str, Any], dict[str, Any]], feature: str, change: dict[str, Any], words: str
) -> None:
    with pytest.raises(FeatureSpecError, match=f"feature '{feature}'") as info:
        parse(*_broken(docs, feature, **change))
    assert words in str(info.value)


def test_unknown_feature_in_set_is_named(docs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    features_doc, sets_doc = copy.deepcopy(docs)
    sets_doc["sets"]["phase1_baseline"]["features"].append("moon_phase")
    with pytest.raises(FeatureSpecError, match="set 'phase1_baseline' names unknown feature 'moon_phase'"):
        parse(features_doc, sets_doc)
    features_doc, sets_doc = copy.deepcopy(docs)
    sets_doc["sets"]["loop"] = {"extends": "loop"}
    with pytest.raises(FeatureSpecError, match="cycle"):
        parse(features_doc, sets_doc)
    with pytest.raises(FeatureSpecError, match="no feature set 'phase9'"):
        load_catalog().feature_set("phase9")


def test_hmm_config_is_validated(docs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    features_doc, sets_doc = copy.deepcopy(docs)
    features_doc["hmm"]["inputs"] = ["hmm_log_return", "no_such_input"]
    with pytest.raises(FeatureSpecError, match="no_such_input"):
        parse(features_doc, sets_doc)
    features_doc, sets_doc = copy.deepcopy(docs)
    features_doc["hmm"]["order_by"] = "volume_zscore"
    with pytest.raises(FeatureSpecError, match="order_by"):
        parse(features_doc, sets_doc)


def test_unreadable_spec_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "features.yaml").write_text("features: [unclosed\n")
    (tmp_path / "sets.yaml").write_text("sets: {}\n")
    with pytest.raises(FeatureSpecError, match=r"features\.yaml"):
        load_catalog(tmp_path)
