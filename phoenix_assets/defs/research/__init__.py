"""Research stage: hpo_study (Optuna search of SAC + Mamba, judged on validation, scored once on test)."""
