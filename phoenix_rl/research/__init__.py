"""The research protocol: walk-forward folds and ablations, selection-bias statistics, hyper-parameter search."""
