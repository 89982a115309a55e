"""Dagster definitions only: one folder per stage, thin assets that call lib/ and phoenix_rl."""
