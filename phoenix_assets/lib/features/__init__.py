"""Point-in-time features: causal z-scores, HMM regimes by forward filtering, feature drift."""
