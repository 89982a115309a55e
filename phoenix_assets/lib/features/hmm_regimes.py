"""Market regimes: a Gaussian HMM fit on a training window, applied by causal forward filtering.

Fit (`fit_regime_model`): hmmlearn `GaussianHMM` on the spec's inputs (`HmmConfig.inputs`, raw 1m
features, by default the 1m log return and a 15-minute realised volatility), standardised with the
training window's mean and std (hmmlearn's `min_covar` floor assumes unit-scale data), one sequence per
session (`lengths`) so no transition bridges the halt, `n_starts` random starts (seeds seed..seed+n-1),
the best training log-likelihood kept. States are relabelled by the mean of `order_by` ascending, so
state 0 is the calmest and labels mean the same after every refit.

Inference (`filter_regimes`): the forward recursion (Rabiner 1989, "A tutorial on hidden Markov models",
Proc. IEEE 77(2), eqs. 19-20), normalised each step:
    alpha_0 ∝ pi ⊙ b(x_0),     alpha_t ∝ (alpha_t-1 A) ⊙ b(x_t),     b_k(x) = N(x; mu_k, Sigma_k)
restarted at pi at every session start and instrument change. alpha_t = P(state_t | x_<=t): it uses
bar t's close and nothing later (Viterbi / `predict` / `predict_proba` smooth with the future and must
never feed features). A bar with a missing input gets b = 1 (prediction step only).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
from numba import njit

from feature_specs.spec import FeatureSpecError, HmmConfig
from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.features.compute import SESSION, raw_signals, session_bars
from phoenix_assets.lib.features.kernel import FeatureKernel

__all__ = [
    "RegimeFilter",
    "RegimeModel",
    "filter_regimes",
    "fit_regime_model",
    "forward_filter",
    "hmm_inputs",
    "log_emission",
    "model_summary",
    "regime_frame",
]

FORMAT_VERSION = 1


@dataclass(frozen=True)
class RegimeModel:
    """A fitted, ordered HMM: everything needed to filter, plus provenance for the artifact store.
    means / covars are in standardised input units ((x - input_mean) / input_std); covars are full
    matrices (n_states, n_inputs, n_inputs) whatever the fitted covariance type."""

    input_names: tuple[str, ...]
    input_mean: np.ndarray
    input_std: np.ndarray
    startprob: np.ndarray
    transmat: np.ndarray
    means: np.ndarray
    covars: np.ndarray
    state_order: tuple[int, ...]  # fitted state index of ordered state k
    covariance_type: str
    order_by: str
    train_start: dt.date
    train_end: dt.date
    n_train: int
    log_likelihood: float
    converged: bool
    n_iter: int
    seed: int
    spec_hash: str = ""

    @property
    def n_states(self) -> int:
        return int(self.startprob.shape[0])

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, np.ndarray):
                d[k] = v.tolist()
            elif isinstance(v, dt.date):
                d[k] = v.isoformat()
            elif isinstance(v, tuple):
                d[k] = list(v)
        d["format_version"] = FORMAT_VERSION
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_bytes(self) -> bytes:
        return self.to_json().encode()

    @classmethod
    def from_dict(cls, d: dict) -> RegimeModel:
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"RegimeModel: format_version {d.get('format_version')!r}, expected {FORMAT_VERSION}")
        arrays = ("input_mean", "input_std", "startprob", "transmat", "means", "covars")
        kw = {k: v for k, v in d.items() if k != "format_version"}
        for k in arrays:
            kw[k] = np.asarray(kw[k], dtype=np.float64)
        kw["input_names"] = tuple(kw["input_names"])
        kw["state_order"] = tuple(int(s) for s in kw["state_order"])
        kw["train_start"] = dt.date.fromisoformat(kw["train_start"])
        kw["train_end"] = dt.date.fromisoformat(kw["train_end"])
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str | bytes) -> RegimeModel:
        return cls.from_dict(json.loads(text))

    from_bytes = from_json


# --- inputs -------------------------------------------------------------------------------------------


def hmm_inputs(bars: pl.DataFrame, cfg: HmmConfig) -> pl.DataFrame:
    """ts, trade_date, instrument_id and the HMM input columns, session bars in (instrument_id, ts) order."""
    return raw_signals(bars, cfg.inputs).with_columns(pl.col(n).fill_nan(None) for n in cfg.input_names)


# --- fit ----------------------------------------------------------------------------------------------


def fit_regime_model(
    bars: pl.DataFrame,
    cfg: HmmConfig,
    train_start: dt.date,
    train_end: dt.date,
    *,
    n_starts: int | None = None,
    seed: int | None = None,
    spec_hash: str = "",
) -> RegimeModel:
    """Fit on bars with train_start <= trade_date <= train_end only (rows with a missing input dropped)."""
    from hmmlearn.hmm import GaussianHMM  # heavy import, only when fitting

    n_starts = cfg.n_starts if n_starts is None else n_starts
    seed = cfg.seed if seed is None else seed
    names = list(cfg.input_names)
    x = hmm_inputs(bars, cfg).filter(pl.col("trade_date").is_between(train_start, train_end)).drop_nulls(names)
    if x.height < 10 * cfg.n_states:
        raise ValueError(
            f"fit_regime_model: only {x.height} bars with inputs in the training window {train_start}..{train_end}"
        )
    lengths = x.group_by(SESSION, maintain_order=True).len()["len"].to_numpy()
    raw = x.select(names).to_numpy()
    mean, std = raw.mean(axis=0), raw.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    z = (raw - mean) / std
    best: GaussianHMM | None = None
    best_ll = -math.inf
    for k in range(n_starts):
        model = GaussianHMM(
            n_components=cfg.n_states,
            covariance_type=cfg.covariance_type,
            n_iter=cfg.n_iter,
            tol=cfg.tol,
            min_covar=cfg.min_covar,
            random_state=seed + k,
        )
        model.fit(z, lengths)
        ll = float(model.score(z, lengths))
        if math.isfinite(ll) and ll > best_ll:
            best, best_ll = model, ll
    if best is None:
        raise RuntimeError("fit_regime_model: no start produced a finite log-likelihood")
    key = names.index(cfg.order_by)
    order = np.argsort(best.means_[:, key], kind="stable")
    return RegimeModel(
        input_names=tuple(names),
        input_mean=mean,
        input_std=std,
        startprob=best.startprob_[order].copy(),
        transmat=best.transmat_[np.ix_(order, order)].copy(),
        means=best.means_[order].copy(),
        covars=np.asarray(best.covars_)[order].copy(),  # hmmlearn returns full matrices for every type
        state_order=tuple(int(s) for s in order),
        covariance_type=cfg.covariance_type,
        order_by=cfg.order_by,
        train_start=train_start,
        train_end=train_end,
        n_train=int(x.height),
        log_likelihood=best_ll,
        converged=bool(best.monitor_.converged),
        n_iter=int(best.monitor_.iter),
        seed=seed,
        spec_hash=spec_hash,
    )


# --- filter -------------------------------------------------------------------------------------------


def log_emission(model: RegimeModel, raw: np.ndarray) -> np.ndarray:
    """log N(z_t; mu_k, Sigma_k) for standardised inputs z; 0 (no information) for rows with a NaN."""
    z = (np.asarray(raw, dtype=np.float64) - model.input_mean) / model.input_std
    missing = np.isnan(z).any(axis=1)
    z = np.where(missing[:, None], 0.0, z)
    n, d = z.shape
    out = np.empty((n, model.n_states))
    for k in range(model.n_states):
        chol = np.linalg.cholesky(model.covars[k])
        sol = np.linalg.solve(chol, (z - model.means[k]).T)
        log_det = 2.0 * np.log(np.diag(chol)).sum()
        out[:, k] = -0.5 * ((sol * sol).sum(axis=0) + log_det + d * math.log(2.0 * math.pi))
    out[missing] = 0.0
    return out


@njit(cache=True)
def _forward(
    log_b: np.ndarray,
    reset: np.ndarray,
    startprob: np.ndarray,
    transmat: np.ndarray,
    previous: np.ndarray,
    out: np.ndarray,
) -> None:
    n, k = log_b.shape
    alpha = previous.copy()
    for t in range(n):
        prior = startprob.copy() if reset[t] or np.isnan(alpha[0]) else alpha @ transmat
        shift = log_b[t].max()
        total = 0.0
        for j in range(k):
            alpha[j] = prior[j] * math.exp(log_b[t, j] - shift)
            total += alpha[j]
        if total > 0.0 and math.isfinite(total):
            for j in range(k):
                alpha[j] /= total
        else:  # every state infinitely unlikely (an outlier beyond float range): keep the prediction
            s = prior.sum()
            for j in range(k):
                alpha[j] = prior[j] / s
        out[t] = alpha


def forward_filter(
    log_b: np.ndarray,
    reset: np.ndarray,
    startprob: np.ndarray,
    transmat: np.ndarray,
    previous: np.ndarray | None = None,
) -> np.ndarray:
    """Filtered P(state_t | x_<=t) rows; the recursion restarts at `startprob` where `reset` is true, and
    continues from `previous` (the filtered row before the first, e.g. the last bar of the previous call)."""
    log_b = np.ascontiguousarray(log_b, dtype=np.float64)
    out = np.empty_like(log_b)
    _forward(
        log_b,
        np.ascontiguousarray(reset, dtype=np.bool_),
        np.ascontiguousarray(startprob, dtype=np.float64),
        np.ascontiguousarray(transmat, dtype=np.float64),
        np.full(len(startprob), np.nan) if previous is None else np.ascontiguousarray(previous, dtype=np.float64),
        out,
    )
    return out


class RegimeFilter:
    """Forward filtering of session bars fed in (instrument_id, ts) order, in one call or many: the HMM inputs'
    kernel state and the last filtered row carry over, so the live path (one closed bar at a time) gets the
    batch's probabilities bit for bit."""

    def __init__(self, model: RegimeModel, cfg: HmmConfig) -> None:
        if tuple(cfg.input_names) != model.input_names:
            raise FeatureSpecError(f"HMM model inputs {model.input_names} differ from the spec's {cfg.input_names}")
        self.model = model
        self._inputs = FeatureKernel(cfg.inputs)
        self._alpha = np.full(model.n_states, np.nan)
        self._session = (-1, -(2**31))  # no bar yet

    def run(self, rows: pl.DataFrame) -> np.ndarray:
        """Filtered probabilities (one row per bar of `rows`: session bars with ts, trade_date, instrument_id
        and the inputs' columns)."""
        raw, _ = self._inputs.run(rows)
        inst = rows["instrument_id"].to_numpy().astype(np.int64)
        date = cal.day_numbers(rows["trade_date"])
        prev_inst, prev_date = np.r_[self._session[0], inst[:-1]], np.r_[self._session[1], date[:-1]]
        reset = (inst != prev_inst) | (date != prev_date)  # a session start or an instrument change
        m = self.model
        probs = forward_filter(log_emission(m, raw), reset, m.startprob, m.transmat, previous=self._alpha)
        if rows.height:
            self._alpha, self._session = probs[-1].copy(), (int(inst[-1]), int(date[-1]))
        return probs


def regime_frame(rows: pl.DataFrame, probs: np.ndarray) -> pl.DataFrame:
    """ts, trade_date, instrument_id, p_regime_0..K-1 and hmm_regime (argmax) of `rows`, sorted by
    (ts, instrument_id)."""
    label = probs.argmax(axis=1).astype(np.int8) if probs.size else np.zeros(0, dtype=np.int8)
    return (
        rows.select("ts", "trade_date", "instrument_id")
        .with_columns(
            *[pl.Series(f"p_regime_{k}", probs[:, k]) for k in range(probs.shape[1])],
            pl.Series("hmm_regime", label),
        )
        .sort("ts", "instrument_id")
    )


def filter_regimes(model: RegimeModel, bars: pl.DataFrame, cfg: HmmConfig) -> pl.DataFrame:
    """Per session bar: ts, trade_date, instrument_id, p_regime_0..K-1 (filtered) and hmm_regime (argmax),
    sorted by (ts, instrument_id)."""
    rows = session_bars(bars)
    return regime_frame(rows, RegimeFilter(model, cfg).run(rows))


def model_summary(model: RegimeModel, regimes: pl.DataFrame | None = None) -> dict:
    """Metadata for the asset: training window, fit quality, transition matrix, state means in input
    units, and (with `regimes`) each regime's occupancy share."""
    means = model.means * model.input_std + model.input_mean
    out: dict = {
        "train_start": model.train_start.isoformat(),
        "train_end": model.train_end.isoformat(),
        "n_train": model.n_train,
        "log_likelihood": model.log_likelihood,
        "log_likelihood_per_bar": model.log_likelihood / max(model.n_train, 1),
        "converged": model.converged,
        "n_iter": model.n_iter,
        "seed": model.seed,
        "inputs": list(model.input_names),
        "transmat": np.round(model.transmat, 6).tolist(),
        "state_means": {
            f"state_{k}": dict(zip(model.input_names, map(float, means[k]), strict=True)) for k in range(model.n_states)
        },
    }
    if regimes is not None and regimes.height:
        counts = regimes["hmm_regime"].value_counts()
        share = dict(zip(counts["hmm_regime"].to_list(), (counts["count"] / regimes.height).to_list(), strict=True))
        out["occupancy"] = {f"state_{k}": float(share.get(k, 0.0)) for k in range(model.n_states)}
    return out
