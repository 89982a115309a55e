"""Features stage: hmm_regime_model -> hmm_regimes and features_1m (monthly), point in time."""
