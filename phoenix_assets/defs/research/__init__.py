"""Research stage: walk_forward and ablation_report (monthly folds, refit per fold), hpo_study (Optuna search of
SAC + Mamba, judged on validation, scored once on test)."""
