"""Feature sets as data (YAML), validated and versioned by content hash: see `feature_specs.spec`."""

from feature_specs.spec import (
    TRANSFORMS,
    FeatureCatalog,
    FeatureDef,
    FeatureSet,
    FeatureSpecError,
    HmmConfig,
    Normalisation,
    load_catalog,
    load_feature_set,
    parse_catalog,
)

__all__ = [
    "TRANSFORMS",
    "FeatureCatalog",
    "FeatureDef",
    "FeatureSet",
    "FeatureSpecError",
    "HmmConfig",
    "Normalisation",
    "load_catalog",
    "load_feature_set",
    "parse_catalog",
]
