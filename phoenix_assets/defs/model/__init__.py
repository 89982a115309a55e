"""Model and evaluation stage: mamba_sac_model -> backtests -> evaluation_metrics."""
