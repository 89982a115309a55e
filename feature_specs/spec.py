"""Feature sets as data: load, validate and hash `features.yaml` + `sets.yaml`.

`features.yaml` declares every feature once (transform, inputs, params, optional normalisation,
timeframe, tags, a one-line meaning) and the HMM regime model's configuration; `sets.yaml` names lists
of features (explicitly, or `extends` another set with `add` / `exclude` / `exclude_tags`). A set that
combines existing transforms needs no code change; a new transform needs an entry in `TRANSFORMS`
here (its parameter schema) and its implementation in `phoenix_assets.lib.features.compute`.

Every table or model built from a set stores `FeatureSet.content_hash`: sha256 of a canonical JSON
dump (sorted keys, no whitespace) of the set's fully resolved definition (defaults filled in, HMM
configuration and its input features included) plus `TRANSFORM_VERSION`. Reordering YAML keys or
comments does not change it; changing any param, input, normalisation or member does.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from phoenix_assets.lib.schema import BAR_COLUMNS

__all__ = [
    "RESAMPLE_AGG",
    "TRANSFORMS",
    "TRANSFORM_VERSION",
    "FeatureCatalog",
    "FeatureDef",
    "FeatureSet",
    "FeatureSpecError",
    "HmmConfig",
    "Normalisation",
    "load_catalog",
    "load_documents",
    "load_feature_set",
    "parse_catalog",
]

SPEC_DIR = Path(__file__).resolve().parent
TRANSFORM_VERSION = 1  # bump when a transform's implementation changes meaning: changes every hash
_REQUIRED = object()


class FeatureSpecError(ValueError):
    """A feature spec is invalid; the message names the file and the feature or set at fault."""


@dataclass(frozen=True)
class ParamSpec:
    kind: type
    default: Any = _REQUIRED
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None


@dataclass(frozen=True)
class TransformSchema:
    """What a transform accepts: exact number of inputs (None = 0), params, allowed timeframes."""

    n_inputs: int
    params: Mapping[str, ParamSpec]
    resampleable: bool = True  # can run on coarser bars (timeframe > 1m)
    meaning: str = ""


_WINDOW = {"window_minutes": ParamSpec(int, minimum=1)}
TRANSFORMS: dict[str, TransformSchema] = {
    "column": TransformSchema(1, {}, meaning="the input bar column as float"),
    "range_pct": TransformSchema(3, {}, meaning="(high - low) / close; inputs high, low, close"),
    "session_vwap_dist": TransformSchema(
        3, {}, meaning="(close - vwap) / vwap, vwap = cum vwap_num / cum vwap_den since the session start"
    ),
    "session_time": TransformSchema(
        0,
        {"component": ParamSpec(str, choices=("sin", "cos")), "period_minutes": ParamSpec(int, 1380, minimum=1)},
        resampleable=False,
        meaning="sin/cos(2 pi m / period), m = minutes from 17:00 CT to the bar start",
    ),
    "rolling_sum": TransformSchema(1, _WINDOW, meaning="sum over the session's bars in (t - window, t]"),
    "rolling_mean": TransformSchema(1, _WINDOW, meaning="mean over the session's bars in (t - window, t]"),
    "net_gross_ratio": TransformSchema(
        1, _WINDOW, meaning="sum(x) / sum(|x|) over the session's bars in (t - window, t]; 0 when all zero"
    ),
    "atr": TransformSchema(3, _WINDOW, meaning="mean true range over (t - window, t]; inputs high, low, close"),
    "log_return": TransformSchema(2, {}, meaning="ln(close / previous close in session); first bar ln(close/open)"),
    "rolling_rms_log_return": TransformSchema(
        2, _WINDOW, meaning="sqrt(mean of log_return^2) over (t - window, t]; inputs open, close"
    ),
    "hmm_regime": TransformSchema(
        0,
        {"encoding": ParamSpec(str, choices=("label", "one_hot")), "prefix": ParamSpec(str, "hmm_regime")},
        resampleable=False,
        meaning="forward-filtered HMM regime: argmax label or one-hot of it",
    ),
}

# How 1-minute bar columns aggregate into coarser bars (timeframe > 1m). Part of the data contract
# for multi-timeframe features: an input of a resampled feature must be listed here.
RESAMPLE_AGG: dict[str, str] = {
    "open": "first",
    "high": "max",
    "low": "min",
    "close": "last",
    "mid_close": "last",
    "volume": "sum",
    "buy_volume": "sum",
    "sell_volume": "sum",
    "vwap_num": "sum",
    "vwap_den": "sum",
    **{f"ofi_l{m}": "sum" for m in range(1, 11)},
    "liquidity_consumption": "sum",
    "microprice_dev_ticks_close": "last",
    "microprice_dev_ticks_mean": "mean",
    "spread_ticks_close": "last",
    "spread_ticks_mean": "mean",
    "n_events": "sum",
}
_TIMEFRAMES = {"1m": 1, "5m": 5, "15m": 15, "30m": 30, "60m": 60}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Normalisation:
    """Trailing z-score: z_t = clip((x_t - mean) / std, +-clip), mean and std (ddof 1) over the last
    `window` bars of the feature's timeframe ending at t inclusive, non-null values only; null until
    `min_periods` values; 0 where std == 0. `span_sessions`: the window may reach into earlier sessions
    of the same instrument (never across an instrument change)."""

    kind: str
    window: int
    min_periods: int
    clip: float
    span_sessions: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "window": self.window,
            "min_periods": self.min_periods,
            "clip": self.clip,
            "span_sessions": self.span_sessions,
        }


@dataclass(frozen=True)
class FeatureDef:
    """One declared feature; `outputs` are the columns it produces (one, or n_states for one-hot)."""

    name: str
    transform: str
    inputs: tuple[str, ...]
    params: Mapping[str, Any]
    normalise: Normalisation | None
    timeframe: str
    tags: tuple[str, ...]
    meaning: str
    outputs: tuple[str, ...]

    @property
    def timeframe_minutes(self) -> int:
        return _TIMEFRAMES[self.timeframe]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "transform": self.transform,
            "inputs": list(self.inputs),
            "params": dict(sorted(self.params.items())),
            "normalise": self.normalise.as_dict() if self.normalise else None,
            "timeframe": self.timeframe,
            "outputs": list(self.outputs),
        }


@dataclass(frozen=True)
class HmmConfig:
    """GaussianHMM settings; `inputs` are catalog features (raw values, standardised on the training
    window); states are ordered by the mean of `order_by` ascending (state 0 = calmest)."""

    n_states: int
    covariance_type: str
    n_starts: int
    n_iter: int
    tol: float
    min_covar: float
    seed: int
    inputs: tuple[FeatureDef, ...]
    order_by: str

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.inputs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_states": self.n_states,
            "covariance_type": self.covariance_type,
            "n_starts": self.n_starts,
            "n_iter": self.n_iter,
            "tol": self.tol,
            "min_covar": self.min_covar,
            "seed": self.seed,
            "inputs": [f.as_dict() for f in self.inputs],
            "order_by": self.order_by,
        }


def _canonical_hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class FeatureSet:
    """A named, ordered list of features; `columns` are their output columns in order."""

    name: str
    description: str
    features: tuple[FeatureDef, ...]
    hmm: HmmConfig | None

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c for f in self.features for c in f.outputs)

    @property
    def needs_regimes(self) -> bool:
        return any(f.transform == "hmm_regime" for f in self.features)

    def canonical(self) -> dict[str, Any]:
        """What the hash covers."""
        return {
            "transform_version": TRANSFORM_VERSION,
            "set": self.name,
            "features": [f.as_dict() for f in self.features],
            "hmm": self.hmm.as_dict() if self.hmm and self.needs_regimes else None,
        }

    @property
    def content_hash(self) -> str:
        return _canonical_hash(self.canonical())


@dataclass(frozen=True)
class FeatureCatalog:
    """Every declared feature, the HMM configuration and every set; `source` names the files."""

    features: Mapping[str, FeatureDef]
    sets: Mapping[str, FeatureSet]
    hmm: HmmConfig
    source: str = field(default="")

    def feature_set(self, name: str) -> FeatureSet:
        if name not in self.sets:
            raise FeatureSpecError(f"{self.source}: no feature set {name!r}; known sets: {sorted(self.sets)}")
        return self.sets[name]

    def all_features(self) -> FeatureSet:
        """Pseudo-set `all`: every feature used by some set, in first-use order (what `compute_features`
        builds for a whole-catalog table)."""
        seen: dict[str, FeatureDef] = {}
        for s in self.sets.values():
            for f in s.features:
                seen.setdefault(f.name, f)
        return FeatureSet("all", "every feature of every set", tuple(seen.values()), self.hmm)

    @property
    def content_hash(self) -> str:
        return _canonical_hash(
            {
                "transform_version": TRANSFORM_VERSION,
                "features": {k: f.as_dict() for k, f in self.features.items()},
                "hmm": self.hmm.as_dict(),
                "sets": {k: [f.name for f in s.features] for k, s in self.sets.items()},
            }
        )


# --- parsing and validation ---------------------------------------------------------------------------


def _param(where: str, key: str, value: Any, ps: ParamSpec) -> Any:
    if ps.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, ps.kind):
        raise FeatureSpecError(f"{where}: param {key!r} must be {ps.kind.__name__}, got {value!r}")
    if ps.choices is not None and value not in ps.choices:
        raise FeatureSpecError(f"{where}: param {key!r} must be one of {list(ps.choices)}, got {value!r}")
    if ps.minimum is not None and value < ps.minimum:
        raise FeatureSpecError(f"{where}: param {key!r} must be >= {ps.minimum}, got {value!r}")
    return value


def _normalisation(where: str, raw: Any, defaults: Mapping[str, Any]) -> Normalisation | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise FeatureSpecError(f"{where}: normalise must be a mapping, got {raw!r}")
    merged = {**defaults, **raw}
    unknown = set(merged) - {"kind", "window", "min_periods", "clip", "span_sessions"}
    if unknown:
        raise FeatureSpecError(f"{where}: unknown normalise keys {sorted(unknown)}")
    if merged.get("kind", "zscore") != "zscore":
        raise FeatureSpecError(f"{where}: unknown normalisation kind {merged.get('kind')!r} (known: zscore)")
    window = merged.get("window")
    min_periods = merged.get("min_periods")
    clip = merged.get("clip")
    span = merged.get("span_sessions", True)
    if not isinstance(window, int) or isinstance(window, bool) or window < 2:
        raise FeatureSpecError(f"{where}: normalise.window must be an int >= 2, got {window!r}")
    if not isinstance(min_periods, int) or isinstance(min_periods, bool) or not 2 <= min_periods <= window:
        raise FeatureSpecError(f"{where}: normalise.min_periods must be an int in [2, window], got {min_periods!r}")
    if not isinstance(clip, int | float) or isinstance(clip, bool) or not (clip > 0 and math.isfinite(clip)):
        raise FeatureSpecError(f"{where}: normalise.clip must be a positive number, got {clip!r}")
    if not isinstance(span, bool):
        raise FeatureSpecError(f"{where}: normalise.span_sessions must be true/false, got {span!r}")
    return Normalisation("zscore", window, min_periods, float(clip), span)


def _feature(name: str, raw: Any, source: str, defaults: Mapping[str, Any], n_states: int) -> FeatureDef:
    where = f"{source}: feature {name!r}"
    if not _NAME.match(name):
        raise FeatureSpecError(f"{where}: names are lower_snake_case")
    if not isinstance(raw, Mapping):
        raise FeatureSpecError(f"{where}: must be a mapping")
    unknown = set(raw) - {"transform", "inputs", "params", "normalise", "timeframe", "tags", "meaning"}
    if unknown:
        raise FeatureSpecError(f"{where}: unknown keys {sorted(unknown)}")
    transform = raw.get("transform")
    if transform not in TRANSFORMS:
        raise FeatureSpecError(f"{where}: unknown transform {transform!r}; known: {sorted(TRANSFORMS)}")
    schema = TRANSFORMS[transform]
    inputs = tuple(raw.get("inputs") or ())
    if len(inputs) != schema.n_inputs:
        raise FeatureSpecError(f"{where}: transform {transform!r} takes {schema.n_inputs} inputs, got {list(inputs)}")
    timeframe = raw.get("timeframe", "1m")
    if timeframe not in _TIMEFRAMES:
        raise FeatureSpecError(f"{where}: unknown timeframe {timeframe!r}; known: {list(_TIMEFRAMES)}")
    if timeframe != "1m" and not schema.resampleable:
        raise FeatureSpecError(f"{where}: transform {transform!r} only runs on 1m bars")
    known = RESAMPLE_AGG if timeframe != "1m" else BAR_COLUMNS
    for col in inputs:
        if col not in known:
            what = "a resampleable bar column (RESAMPLE_AGG)" if timeframe != "1m" else "an ofi_bars_1m column"
            raise FeatureSpecError(f"{where}: input {col!r} is not {what}")
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, Mapping):
        raise FeatureSpecError(f"{where}: params must be a mapping")
    extra = set(params_raw) - set(schema.params)
    if extra:
        raise FeatureSpecError(f"{where}: unknown params {sorted(extra)} for transform {transform!r}")
    params: dict[str, Any] = {}
    for key, ps in schema.params.items():
        if key in params_raw:
            params[key] = _param(where, key, params_raw[key], ps)
        elif ps.default is _REQUIRED:
            raise FeatureSpecError(f"{where}: transform {transform!r} needs param {key!r}")
        else:
            params[key] = ps.default
    if "window_minutes" in params and params["window_minutes"] % _TIMEFRAMES[timeframe]:
        raise FeatureSpecError(f"{where}: window_minutes must be a multiple of the timeframe {timeframe}")
    meaning = raw.get("meaning")
    if not isinstance(meaning, str) or not meaning.strip():
        raise FeatureSpecError(f"{where}: needs a one-line `meaning`")
    tags = tuple(raw.get("tags") or ())
    if transform == "hmm_regime" and params["encoding"] == "one_hot":
        outputs = tuple(f"{params['prefix']}_{k}" for k in range(n_states))
    elif transform == "hmm_regime":
        outputs = (params["prefix"],)
    else:
        outputs = (name,)
    norm = _normalisation(where, raw.get("normalise"), defaults.get(timeframe, defaults.get("1m", {})))
    if norm is not None and transform in ("hmm_regime", "session_time"):
        raise FeatureSpecError(f"{where}: transform {transform!r} cannot be normalised")
    return FeatureDef(name, transform, inputs, params, norm, timeframe, tags, meaning.strip(), outputs)


def _hmm(raw: Any, features: Mapping[str, FeatureDef], source: str) -> HmmConfig:
    where = f"{source}: hmm"
    if not isinstance(raw, Mapping):
        raise FeatureSpecError(f"{where}: missing or not a mapping")
    try:
        inputs = tuple(features[n] for n in raw["inputs"])
    except KeyError as e:
        raise FeatureSpecError(f"{where}: input {e} is not a declared feature (or `inputs` is missing)") from None
    for f in inputs:
        if f.normalise is not None or f.timeframe != "1m" or f.transform == "hmm_regime":
            raise FeatureSpecError(f"{where}: input {f.name!r} must be a raw 1m feature (no normalise)")
    cfg = HmmConfig(
        n_states=int(raw.get("n_states", 3)),
        covariance_type=str(raw.get("covariance_type", "diag")),
        n_starts=int(raw.get("n_starts", 5)),
        n_iter=int(raw.get("n_iter", 200)),
        tol=float(raw.get("tol", 1e-4)),
        min_covar=float(raw.get("min_covar", 1e-3)),
        seed=int(raw.get("seed", 0)),
        inputs=inputs,
        order_by=str(raw.get("order_by", "")),
    )
    if cfg.n_states < 2 or cfg.n_starts < 1 or cfg.n_iter < 1:
        raise FeatureSpecError(f"{where}: need n_states >= 2, n_starts >= 1, n_iter >= 1")
    if cfg.covariance_type not in ("diag", "full", "spherical"):
        raise FeatureSpecError(f"{where}: covariance_type must be diag, full or spherical")
    if cfg.order_by not in cfg.input_names:
        raise FeatureSpecError(f"{where}: order_by {cfg.order_by!r} must be one of its inputs {cfg.input_names}")
    return cfg


def _set_members(name: str, raw_sets: Mapping[str, Any], source: str, stack: tuple[str, ...]) -> list[str]:
    where = f"{source}: set {name!r}"
    if name in stack:
        raise FeatureSpecError(f"{where}: `extends` cycle {' -> '.join((*stack, name))}")
    raw = raw_sets.get(name)
    if not isinstance(raw, Mapping):
        raise FeatureSpecError(f"{where}: not declared (or not a mapping)")
    unknown = set(raw) - {"description", "features", "extends", "add", "exclude", "exclude_tags"}
    if unknown:
        raise FeatureSpecError(f"{where}: unknown keys {sorted(unknown)}")
    if ("features" in raw) == ("extends" in raw):
        raise FeatureSpecError(f"{where}: give exactly one of `features` or `extends`")
    if "features" in raw:
        return list(raw["features"])
    base = _set_members(raw["extends"], raw_sets, source, (*stack, name))
    return base + [f for f in raw.get("add") or [] if f not in base]


def parse_catalog(
    features_doc: Mapping[str, Any], sets_doc: Mapping[str, Any], source: str = "<dict>"
) -> FeatureCatalog:
    """Validate parsed YAML documents into a catalog; raises `FeatureSpecError` naming the culprit."""
    defaults = (features_doc.get("defaults") or {}).get("normalise") or {}
    raw_hmm = features_doc.get("hmm") or {}
    n_states = int(raw_hmm.get("n_states", 3)) if isinstance(raw_hmm, Mapping) else 3
    raw_features = features_doc.get("features")
    if not isinstance(raw_features, Mapping) or not raw_features:
        raise FeatureSpecError(f"{source}: `features` must be a non-empty mapping")
    features = {name: _feature(name, raw, source, defaults, n_states) for name, raw in raw_features.items()}
    outputs: dict[str, str] = {}
    for f in features.values():
        for col in f.outputs:
            if col in outputs:
                raise FeatureSpecError(f"{source}: feature {f.name!r} output {col!r} clashes with {outputs[col]!r}")
            outputs[col] = f.name
    hmm = _hmm(raw_hmm, features, source)
    raw_sets = sets_doc.get("sets")
    if not isinstance(raw_sets, Mapping) or not raw_sets:
        raise FeatureSpecError(f"{source}: `sets` must be a non-empty mapping")
    sets: dict[str, FeatureSet] = {}
    for set_name, raw in raw_sets.items():
        members = _set_members(set_name, raw_sets, source, ())
        for member in [*members, *(raw.get("exclude") or [])]:
            if member not in features:
                raise FeatureSpecError(f"{source}: set {set_name!r} names unknown feature {member!r}")
        drop = set(raw.get("exclude") or [])
        drop_tags = set(raw.get("exclude_tags") or [])
        chosen = [features[m] for m in members if m not in drop and not drop_tags & set(features[m].tags)]
        if len({f.name for f in chosen}) != len(chosen):
            raise FeatureSpecError(f"{source}: set {set_name!r} lists a feature twice")
        sets[set_name] = FeatureSet(set_name, str(raw.get("description", "")), tuple(chosen), hmm)
    return FeatureCatalog(features, sets, hmm, source)


def load_documents(directory: str | Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parsed `features.yaml` and `sets.yaml` of `directory` (default: this package), unvalidated."""
    d = Path(directory) if directory is not None else SPEC_DIR
    docs = []
    for fname in ("features.yaml", "sets.yaml"):
        path = d / fname
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise FeatureSpecError(f"{path}: cannot read feature spec: {e}") from e
        if not isinstance(doc, dict):
            raise FeatureSpecError(f"{path}: expected a mapping at the top level")
        docs.append(doc)
    return docs[0], docs[1]


def load_catalog(directory: str | Path | None = None) -> FeatureCatalog:
    """Read and validate `features.yaml` and `sets.yaml` from `directory` (default: this package)."""
    features_doc, sets_doc = load_documents(directory)
    return parse_catalog(features_doc, sets_doc, source=str(Path(directory) if directory else SPEC_DIR))


def load_feature_set(name: str, directory: str | Path | None = None) -> FeatureSet:
    """One validated set by name (see `load_catalog`)."""
    return load_catalog(directory).feature_set(name)
