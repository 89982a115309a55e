"""Walk-forward folds and the fold loop: refit per fold, validation-only selection, stitched OOS returns."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from feature_specs import load_feature_set
from phoenix_rl.config import EnvConfig, TrainConfig
from phoenix_rl.evaluation.backtest import BacktestResult
from phoenix_rl.evaluation.metrics import compute_metrics
from phoenix_rl.research.walk_forward import (
    Fold,
    FoldResult,
    WalkForwardResult,
    daily_pnl_frame,
    monthly_folds,
    run_walk_forward,
    run_walk_forwards,
    stitch_fixed_capital,
)
from phoenix_rl.testing import synthetic_features

D = dt.date.fromisoformat
BUSINESS_DAYS = [d for d in pl.date_range(D("2024-01-01"), D("2024-04-30"), eager=True) if d.weekday() < 5]


def test_monthly_folds_by_hand() -> None:
    folds = monthly_folds(BUSINESS_DAYS, train_months=1, n_folds=2)
    w0, w1 = folds[0].windows, folds[1].windows
    assert (w0.train, w0.val, w0.test) == (
        (D("2024-01-01"), D("2024-01-31")), (D("2024-02-01"), D("2024-02-29")), (D("2024-03-01"), D("2024-03-29"))
    )  # fmt: skip
    assert (w1.train[0], w1.val[0], w1.test) == (D("2024-02-01"), D("2024-03-01"), (D("2024-04-01"), D("2024-04-30")))
    embargoed = monthly_folds(BUSINESS_DAYS, train_months=1, n_folds=2, embargo_days=1)[0].windows
    assert embargoed.val[0] == D("2024-02-02") and embargoed.test[0] == D("2024-03-04")  # 03-01 is a Friday
    expanding = monthly_folds(BUSINESS_DAYS, train_months=1, n_folds=2, expanding=True)
    assert expanding[1].windows.train == (D("2024-01-01"), D("2024-02-29"))
    with pytest.raises(ValueError, match=r"walk-forward needs 5 months of data .* the data hold 4"):
        monthly_folds(BUSINESS_DAYS, train_months=2, n_folds=2)


TINY = TrainConfig(
    total_timesteps=64, learning_starts=32, batch_size=16, buffer_size=500, d_model=8, d_state=4, n_layers=1,
    net_arch=[16, 16], env=EnvConfig(lookback=8, max_steps=40), log_every=32, torch_threads=1,
)  # fmt: skip


def _market(days: list[dt.date], flip_after: dt.date | None = None) -> pl.DataFrame:
    cols = load_feature_set("phase2_ofi").columns
    parts = [
        synthetic_features(cols, n_sessions=1, bars_per_session=16, first_trade_date=d, seed=i)
        for i, d in enumerate(days)
    ]
    frame = pl.concat(parts).with_columns(pl.col("warm").alias("warm_phase2_ofi"))
    if flip_after is not None:  # perturb the future: prices after the date move the other way
        later = pl.col("trade_date") > flip_after
        frame = frame.with_columns(
            pl.when(later).then(2 * 17_500.0 - pl.col(c)).otherwise(pl.col(c)).alias(c) for c in ("open", "close")
        )
    return frame


@pytest.mark.slow
def test_walk_forward_selects_on_validation_and_stitches_the_test_months(tmp_path: Path) -> None:
    days = BUSINESS_DAYS
    folds = monthly_folds(days, train_months=1, n_folds=2)
    seen: list[Fold] = []

    def features_for(fold: Fold) -> pl.DataFrame:  # the refit hook: called once per fold, before training
        seen.append(fold)
        return _market(days)

    result = run_walk_forward(features_for, folds, TINY, seeds=[1, 2], out_dir=tmp_path, log=lambda _: None)
    assert seen == folds
    for f in result.folds:
        assert f.chosen_seed == max(f.val_scores, key=lambda s: (f.val_scores[s], -s))
        assert set(f.test) >= {"agent", "tuned_ofi_rule", "flat"}
        assert f.tuned_rule["tuned_on"] == (str(f.fold.windows.train[0]), str(f.fold.windows.train[1]))
    stitched = result.stitched["agent"]
    test_days = [d for d in days if D("2024-03-01") <= d]
    assert stitched["trade_date"].to_list() == test_days  # two test months, out of sample, in order
    overall = result.overall_metrics()
    assert overall["flat"]["total_return"] == 0.0 and overall["agent"]["n_days"] == len(test_days)
    assert overall["agent"]["sortino"] is None or overall["agent"]["n_days"] >= 20
    assert result.fold_table().height == 2 * len(result.folds[0].test)
    # perturb the test months only: the validation scores, hence the chosen seeds, cannot change
    again = run_walk_forward(
        lambda f: _market(days, flip_after=f.windows.val[1]), folds, TINY, seeds=[1, 2], out_dir=tmp_path / "b",
        log=lambda _: None,
    )  # fmt: skip
    assert [f.val_scores for f in again.folds] == [f.val_scores for f in result.folds]
    assert [f.chosen_seed for f in again.folds] == [f.chosen_seed for f in result.folds]


@pytest.mark.slow
def test_one_seed_skips_validation_and_the_rule_is_tuned_once_per_fold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import phoenix_rl.research.walk_forward as wf

    days = BUSINESS_DAYS
    folds = monthly_folds(days, train_months=1, n_folds=2)
    tuned: list[tuple[str, str]] = []
    original = wf.tune_ofi_rule

    def counting_tune(train_rows: pl.DataFrame, *args: object, **kwargs: object) -> object:
        tuned.append((str(train_rows["trade_date"].min()), str(train_rows["trade_date"].max())))
        return original(train_rows, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(wf, "tune_ofi_rule", counting_tune)
    cache: wf.RuleCache = {}
    runs = [
        run_walk_forward(
            lambda f: _market(days), folds, TINY, [s], tmp_path / f"s{s}", log=lambda _: None, rule_cache=cache
        )
        for s in (1, 2)
    ]
    assert all(f.val_scores == {} for r in runs for f in r.folds)  # nothing to choose: no validation backtest
    assert tuned == [(str(f.windows.train[0]), str(f.windows.train[1])) for f in folds]  # once per fold, not per seed
    assert runs[0].stitched["tuned_ofi_rule"].equals(runs[1].stitched["tuned_ofi_rule"])


@pytest.mark.slow
def test_two_worker_processes_give_the_results_of_one(tmp_path: Path) -> None:
    days = BUSINESS_DAYS
    folds = monthly_folds(days, train_months=1, n_folds=2)
    continuous = replace(TINY, env=replace(TINY.env, action_mode="continuous"))
    runs = {"selects": (TINY, [1, 2]), "continuous/s3": (continuous, [3])}  # with and without validation

    def walk(workers: int) -> dict[str, WalkForwardResult]:
        return run_walk_forwards(
            lambda f: _market(days), folds, runs, tmp_path / str(workers), workers=workers, log=lambda _: None
        )

    inline, pooled = walk(1), walk(2)
    assert (tmp_path / "2" / "continuous" / "s3" / "fold1" / "seed3" / "model.zip").exists()
    for name in runs:
        a, b = inline[name], pooled[name]
        assert [f.val_scores for f in a.folds] == [f.val_scores for f in b.folds]
        assert [f.chosen_seed for f in a.folds] == [f.chosen_seed for f in b.folds]
        assert a.fold_table().equals(b.fold_table())
        for fa, fb in zip(a.folds, b.folds, strict=True):
            for strategy in fa.test:
                assert fa.test[strategy].equity.equals(fb.test[strategy].equity), (name, strategy)
        assert all(a.stitched[s].equals(b.stitched[s]) for s in a.stitched)
    assert len(inline["selects"].folds[0].val_scores) == 2 and inline["continuous/s3"].folds[0].val_scores == {}


def test_a_failing_training_in_a_worker_names_its_run_fold_and_seed(tmp_path: Path) -> None:
    folds = monthly_folds(BUSINESS_DAYS, train_months=1, n_folds=2)
    no_features = _market(BUSINESS_DAYS[:3]).drop(load_feature_set("phase2_ofi").columns[0])
    with pytest.raises(ValueError, match="lacks columns") as failed:
        run_walk_forwards(lambda f: no_features, folds, {"arm": (TINY, [1])}, tmp_path, workers=2, log=lambda _: None)
    assert "in walk-forward training arm fold 0 seed 1" in (failed.value.__notes__ or [])


def test_workers_below_one_are_refused_before_any_work(tmp_path: Path) -> None:
    folds = monthly_folds(BUSINESS_DAYS, train_months=1, n_folds=2)

    def no_features(fold: Fold) -> pl.DataFrame:
        raise AssertionError("features built before the arguments were checked")

    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        run_walk_forward(no_features, folds, TINY, [1], tmp_path, workers=0, log=lambda _: None)


# --- fixed-capital accounting across fold resets (issue 24 items 1 and 7) --------------------------------------------


def _constant_window(first: dt.date, n_days: int, dollars_a_day: float, capital: float) -> BacktestResult:
    """A test window that restarts at `capital` and earns `dollars_a_day` each trade date, 2 bars a day; the
    first bar of each day dips $200 below the previous close (intraday only: every close is a new high)."""
    rows = []
    e = capital
    for k in range(n_days):
        d = first + dt.timedelta(days=k)
        ts = dt.datetime(d.year, d.month, d.day, 15, tzinfo=dt.UTC)
        rows.append({"ts": ts, "trade_date": d, "equity": e - 200.0})
        e += dollars_a_day
        rows.append({"ts": ts + dt.timedelta(minutes=1), "trade_date": d, "equity": e})
    eq = pl.DataFrame(rows).with_columns(
        pl.col("ts").cast(pl.Datetime("ns", "UTC")), position=1.0, cost=0.5, traded=0.0
    )
    trades = pl.DataFrame({"exit_ts": [rows[-1]["ts"]], "pnl": [dollars_a_day * n_days]}).with_columns(
        pl.col("exit_ts").cast(pl.Datetime("ns", "UTC"))
    )
    return BacktestResult("agent", eq, trades, compute_metrics(eq, trades, capital))


def test_fixed_capital_totals_across_three_fold_resets_by_hand() -> None:
    capital, x, n = 10_000.0, 730.0, 21  # $730 a day, three test months of 21 days, each restarting at $10k
    firsts = [D("2024-03-01"), D("2024-04-01"), D("2024-05-01")]
    windows = [_constant_window(f, n, x, capital) for f in firsts]
    folds = [
        FoldResult(Fold(k, None), {}, 1, {"agent": w}, {})  # type: ignore[arg-type]
        for k, w in enumerate(windows)
    ]
    stitched = {"agent": pl.concat([daily_pnl_frame(w, capital) for w in windows])}
    result = WalkForwardResult(folds, capital, stitched)
    m = result.overall_metrics()["agent"]
    assert m["total_return"] == pytest.approx(3 * n * x / capital)  # 4.599: +460 %, by hand
    compounded = (1 + n * x / capital) ** 3 - 1  # what multiplying the folds' growth gave: 12.95, +1295 %
    assert m["total_return"] != pytest.approx(compounded)
    assert m["total_pnl_usd"] == pytest.approx(3 * n * x)
    # the slow, obvious reference: add up every test day's dollars
    total = 0.0
    for w in windows:
        prev = capital
        for e in w.equity.group_by("trade_date", maintain_order=True).agg(pl.col("equity").last())["equity"]:
            total += e - prev
            prev = e
    assert total / capital == pytest.approx(m["total_return"])
    assert stitched["agent"]["pnl_usd"].to_list() == pytest.approx([x] * 3 * n)
    assert stitched["agent"]["cost_usd"].to_list() == pytest.approx([1.0] * 3 * n)
    # drawdown per bar: each day's first bar dips $200 below the last high; end-of-day equity would show 0 %
    assert m["max_drawdown_usd"] == pytest.approx(200.0)  # every day's first bar: $200 below the last close (peak)
    first_dip = 200.0 / capital * 100
    assert m["max_drawdown_pct"] == pytest.approx(first_dip)  # the largest % fall: the first bar, peak = capital
    eod = result.folds[0].test["agent"].equity.group_by("trade_date").agg(pl.col("equity").last())["equity"]
    assert (eod.to_numpy() >= capital).all()  # an end-of-day curve only rises: it showed 0 % drawdown
    frame = stitch_fixed_capital(windows, capital)
    assert frame.height == 3 * 2 * n and frame["equity"][-1] == pytest.approx(capital + 3 * n * x)
    assert frame["ts"].is_sorted()
