"""HMM regimes: causal forward filter (against a slow recursion, no look-ahead, resets), fitting on a
training window with ordered states, and the model artifact round trip."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math

import numpy as np
import polars as pl
import pytest
from test_features import CATALOG, CUT, DAYS, regimes_for, scramble_future, synthetic_bars

from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.features.hmm_regimes import (
    RegimeModel,
    filter_regimes,
    fit_regime_model,
    forward_filter,
    hmm_inputs,
    log_emission,
    model_summary,
)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    return synthetic_bars(tmp_path_factory.mktemp("planted"), 0.8)


@pytest.fixture(scope="module")
def planted_model(planted: pl.DataFrame) -> RegimeModel:
    return regimes_for(planted)[0]


def slow_forward(log_b: np.ndarray, reset: np.ndarray, pi: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Rabiner (1989) eqs. 19-20, one row at a time in plain Python, normalised each step."""
    out, alpha = [], None
    for t in range(log_b.shape[0]):
        b = [math.exp(v) for v in log_b[t]]
        if alpha is None or reset[t]:
            prior = list(pi)
        else:
            prior = [sum(alpha[i] * a[i][j] for i in range(len(pi))) for j in range(len(pi))]
        unnorm = [prior[j] * b[j] for j in range(len(pi))]
        alpha = [u / sum(unnorm) for u in unnorm]
        out.append(alpha)
    return np.array(out)


def test_forward_filter_matches_slow_recursion() -> None:
    rng = np.random.default_rng(11)
    log_b = rng.normal(-2.0, 1.5, size=(300, 3))
    reset = rng.random(300) < 0.03
    pi = np.array([0.5, 0.3, 0.2])
    a = rng.dirichlet(np.ones(3) * 3, size=3)
    np.testing.assert_allclose(forward_filter(log_b, reset, pi, a), slow_forward(log_b, reset, pi, a), rtol=1e-12)


def test_emission_density_is_gaussian() -> None:
    model = RegimeModel(
        ("a", "b"), np.array([1.0, 2.0]), np.array([2.0, 4.0]), np.array([0.5, 0.5]), np.eye(2),
        np.array([[0.0, 0.0], [1.0, -1.0]]), np.array([np.eye(2), np.diag([4.0, 0.25])]), (0, 1), "diag", "b",
        dt.date(2024, 1, 1), dt.date(2024, 1, 1), 0, 0.0, True, 0, 0,
    )  # fmt: skip
    raw = np.array([[3.0, 6.0], [np.nan, 1.0]])  # standardised: (1, 1); a missing input
    z = np.array([1.0, 1.0])
    expect0 = -0.5 * (z @ z) - math.log(2 * math.pi)
    expect1 = -0.5 * ((1 - 1) ** 2 / 4 + (1 + 1) ** 2 / 0.25) - 0.5 * math.log(4 * 0.25) - math.log(2 * math.pi)
    lb = log_emission(model, raw)
    assert lb[0] == pytest.approx([expect0, expect1])
    assert lb[1].tolist() == [0.0, 0.0]  # no information: prediction only


def two_regime_bars(seed: int = 5) -> tuple[pl.DataFrame, np.ndarray]:
    """Two sessions, each calm (log-return sd 1e-4) for 690 minutes then wild (5e-4) for 690."""
    rng = np.random.default_rng(seed)
    frames, truth = [], []
    for day in (dt.date(2024, 3, 12), dt.date(2024, 3, 13)):
        sd = np.r_[np.full(690, 1e-4), np.full(690, 5e-4)]
        close = 17_000.0 * np.exp(np.cumsum(rng.normal(0, sd)))
        start = cal.session_open_ns(day)
        frames.append(
            pl.DataFrame(
                {
                    "ts": start + np.arange(1380) * cal.NS_PER_MINUTE,
                    "trade_date": [day] * 1380,
                    "instrument_id": [7] * 1380,
                    "open": np.r_[17_000.0, close[:-1]],
                    "close": close,
                }
            ).with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC")))
        )
        truth.append(sd > 1e-4)
    return pl.concat(frames), np.concatenate(truth)


def test_filter_finds_calm_and_wild_regimes() -> None:
    bars, wild = two_regime_bars()
    cfg = dataclasses.replace(CATALOG.hmm, n_states=2)
    model = fit_regime_model(bars, cfg, dt.date(2024, 3, 12), dt.date(2024, 3, 12), n_starts=3)
    assert model.converged and model.train_end == dt.date(2024, 3, 12)
    regimes = filter_regimes(model, bars, cfg)
    label = regimes["hmm_regime"].to_numpy()
    assert (label == wild).mean() > 0.9  # state 1 = higher realised vol, by the ordering
    day2 = regimes["trade_date"].to_numpy() == np.datetime64("2024-03-13")
    assert (label[day2] == wild[day2]).mean() > 0.9  # out of sample


def test_states_are_ordered_by_volatility(planted: pl.DataFrame) -> None:
    cfg = CATALOG.hmm
    vol = cfg.input_names.index(cfg.order_by)
    for seed in (1, 2):
        model = fit_regime_model(planted, cfg, DAYS[0], DAYS[0], n_starts=2, seed=seed)
        assert np.all(np.diff(model.means[:, vol]) > 0)
        assert sorted(model.state_order) == [0, 1, 2]
        np.testing.assert_allclose(model.transmat.sum(axis=1), 1.0)


def test_fit_uses_only_the_training_window(planted: pl.DataFrame) -> None:
    a = fit_regime_model(planted, CATALOG.hmm, DAYS[0], DAYS[0], n_starts=1)
    b = fit_regime_model(planted.filter(pl.col("trade_date") == DAYS[0]), CATALOG.hmm, DAYS[0], DAYS[0], n_starts=1)
    assert a.to_json() == b.to_json()
    assert a.n_train == 1380
    with pytest.raises(ValueError, match="training window"):
        fit_regime_model(planted, CATALOG.hmm, dt.date(2020, 1, 1), dt.date(2020, 1, 2))


def test_filter_has_no_lookahead(planted: pl.DataFrame, planted_model: RegimeModel) -> None:
    base = filter_regimes(planted_model, planted, CATALOG.hmm)
    for other in (scramble_future(planted, CUT), planted.filter(pl.col("ts") <= CUT)):
        past = filter_regimes(planted_model, other, CATALOG.hmm).filter(pl.col("ts") <= CUT)
        assert past.equals(base.filter(pl.col("ts") <= CUT))
    assert not filter_regimes(planted_model, scramble_future(planted, CUT), CATALOG.hmm).equals(base)


def test_filter_restarts_every_session(planted: pl.DataFrame, planted_model: RegimeModel) -> None:
    """Each session's probabilities equal that session filtered alone (reset to startprob at 17:00 CT)."""
    base = filter_regimes(planted_model, planted, CATALOG.hmm)
    for day in (DAYS[0], dt.date(2024, 3, 12), DAYS[1]):
        alone = filter_regimes(planted_model, planted.filter(pl.col("trade_date") == day), CATALOG.hmm)
        assert alone.equals(base.filter(pl.col("trade_date") == day))
    probs = base.select(pl.col("^p_regime_.*$")).to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert (base["hmm_regime"].to_numpy() == probs.argmax(axis=1)).all()
    first = hmm_inputs(planted, CATALOG.hmm).group_by("trade_date", maintain_order=True).head(1).sort("ts")
    lb = log_emission(planted_model, first.select(list(planted_model.input_names)).to_numpy())
    expect = planted_model.startprob * np.exp(lb - lb.max(axis=1, keepdims=True))
    got = base.join(first.select("ts"), on="ts").sort("ts").select(pl.col("^p_regime_.*$")).to_numpy()
    np.testing.assert_allclose(got, expect / expect.sum(axis=1, keepdims=True), rtol=1e-12)


def test_model_round_trip_and_summary(planted: pl.DataFrame, planted_model: RegimeModel) -> None:
    blob = planted_model.to_bytes()
    again = RegimeModel.from_bytes(blob)
    assert again.to_bytes() == blob
    assert filter_regimes(again, planted, CATALOG.hmm).equals(filter_regimes(planted_model, planted, CATALOG.hmm))
    d = json.loads(blob)
    assert {"means", "covars", "transmat", "startprob", "state_order", "train_start", "log_likelihood"} <= set(d)
    assert {"converged", "n_iter", "seed", "input_mean", "input_std", "format_version"} <= set(d)
    summary = model_summary(planted_model, filter_regimes(planted_model, planted, CATALOG.hmm))
    assert summary["train_start"] == summary["train_end"] == DAYS[0].isoformat()
    assert sum(summary["occupancy"].values()) == pytest.approx(1.0)
    assert len(summary["transmat"]) == 3 and set(summary["state_means"]) == {"state_0", "state_1", "state_2"}
    json.dumps(summary)  # metadata-ready
