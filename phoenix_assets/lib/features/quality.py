"""Checks of a `features_1m` partition: finiteness where warm, z-score bounds, drift against training."""

from __future__ import annotations

import numpy as np
import polars as pl

from phoenix_assets.lib.check_outcome import CheckOutcome

KEYS = {"ts", "trade_date", "instrument_id", "open", "close", "month", "feature_spec_hash"}


def feature_columns(frame: pl.DataFrame) -> list[str]:
    return [c for c, t in frame.schema.items() if c not in KEYS and not c.startswith("warm") and t.is_numeric()]


def check_warm_rows_finite(frame: pl.DataFrame) -> CheckOutcome:
    """Rows flagged `warm` have every feature defined and finite."""
    warm = frame.filter(pl.col("warm"))
    bad = {}
    for c in feature_columns(frame):
        col = warm[c].cast(pl.Float64)
        n = int(col.is_null().sum() + (~col.fill_null(0.0).is_finite()).sum())
        if n:
            bad[c] = n
    return CheckOutcome(
        not bad and warm.height > 0,
        f"{warm.height} warm rows, {sum(bad.values())} NaN/inf/null values",
        {"warm_rows": warm.height, "bad_values": bad or {"none": 0}},
    )


def check_zscores_bounded(frame: pl.DataFrame, clip: float) -> CheckOutcome:
    cols = [c for c in feature_columns(frame) if "zscore" in c]
    worst = {c: float(frame[c].abs().max() or 0.0) for c in cols}
    over = {c: v for c, v in worst.items() if v > clip + 1e-9}
    return CheckOutcome(not over, f"max |z| {max(worst.values(), default=0):.3f} (bound {clip})", {"max_abs": worst})


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index on the reference's quantile bins (0.1 watch, 0.25 drift)."""
    reference, current = reference[np.isfinite(reference)], current[np.isfinite(current)]
    if reference.size < bins or current.size < bins:
        return float("nan")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(edges, reference), minlength=edges.size + 1) / reference.size
    cur = np.bincount(np.searchsorted(edges, current), minlength=edges.size + 1) / current.size
    ref, cur = np.clip(ref, 1e-4, None), np.clip(cur, 1e-4, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def check_drift(frame: pl.DataFrame, reference: pl.DataFrame, limit: float = 0.25) -> CheckOutcome:
    """PSI of every feature (warm rows) of this month against the training window."""
    cur, ref = frame.filter(pl.col("warm")), reference.filter(pl.col("warm"))
    values = {
        c: psi(ref[c].cast(pl.Float64).to_numpy(), cur[c].cast(pl.Float64).to_numpy()) for c in feature_columns(frame)
    }
    finite = {c: round(v, 4) for c, v in values.items() if np.isfinite(v)}
    drifted = sorted(c for c, v in finite.items() if v > limit)
    return CheckOutcome(
        not drifted,
        f"{len(drifted)} features with PSI > {limit} against the training window",
        {"psi": finite, "drifted": drifted or ["none"], "reference_rows": ref.height, "limit": limit},
    )
