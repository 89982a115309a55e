"""The checks of `features_1m` pass on clean features and fail on crafted bad ones."""

from __future__ import annotations

import numpy as np
import polars as pl

from phoenix_assets.lib.features import quality as fq


def frame(n: int = 500, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "ts": np.arange(n),
            "trade_date": ["2024-03-14"] * n,
            "instrument_id": [1] * n,
            "close": 100 + rng.normal(size=n).cumsum(),
            "ofi_1min_zscore": np.clip(rng.normal(size=n), -5, 5),
            "time_sin": np.sin(np.arange(n) / 50),
            "warm": np.arange(n) >= 50,
        }
    )


def test_clean_features_pass() -> None:
    f = frame()
    assert fq.check_warm_rows_finite(f).passed
    assert fq.check_zscores_bounded(f, 5.0).passed
    assert fq.check_drift(f, frame(seed=1)).passed
    assert fq.feature_columns(f) == ["ofi_1min_zscore", "time_sin"]


def test_nan_or_inf_in_a_warm_row_fails_but_not_in_warm_up() -> None:
    f = frame()
    cold = f.with_columns(pl.when(pl.col("ts") == 3).then(None).otherwise(pl.col("time_sin")).alias("time_sin"))
    assert fq.check_warm_rows_finite(cold).passed
    for bad in (float("nan"), float("inf"), None):
        hot = f.with_columns(pl.when(pl.col("ts") == 300).then(bad).otherwise(pl.col("time_sin")).alias("time_sin"))
        outcome = fq.check_warm_rows_finite(hot)
        assert not outcome.passed and outcome.metadata["bad_values"] == {"time_sin": 1}


def test_zscore_out_of_bounds_fails() -> None:
    f = frame().with_columns(
        pl.when(pl.col("ts") == 9).then(7.5).otherwise(pl.col("ofi_1min_zscore")).alias("ofi_1min_zscore")
    )
    outcome = fq.check_zscores_bounded(f, 5.0)
    assert not outcome.passed and outcome.metadata["max_abs"]["ofi_1min_zscore"] == 7.5


def test_psi_hand_case_and_drift_detection() -> None:
    ref = np.repeat(np.arange(10.0), 100)  # 10 equal quantile bins
    assert fq.psi(ref, ref) == 0.0
    shifted = ref + 3  # 30% of the mass leaves bins 0-2 for bins beyond 9
    expected = 3 * (1e-4 - 0.1) * np.log(1e-4 / 0.1) + (0.4 - 0.1) * np.log(0.4 / 0.1)
    assert abs(fq.psi(ref, shifted) - expected) < 1e-9
    drifted = frame().with_columns(pl.col("ofi_1min_zscore") + 3)
    outcome = fq.check_drift(drifted, frame(seed=1))
    assert not outcome.passed and outcome.metadata["drifted"] == ["ofi_1min_zscore"]
