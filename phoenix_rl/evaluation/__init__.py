"""Judging a policy: the backtest engine, metrics, plots and the baselines, all under identical costs."""
