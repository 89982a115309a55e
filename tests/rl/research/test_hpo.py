"""hpo_study: the search space, storage selection, validation-only objective, parallel workers on one study (a
journal file always; PostgreSQL when $PHOENIX_OPTUNA_STORAGE is set, required when PHOENIX_REQUIRE_POSTGRES=1),
resuming after a killed worker, DSR/PBO, and the Dagster asset on the features_lake_root fixture."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import numpy as np
import optuna
import polars as pl
import pytest
from optuna.trial import TrialState

from feature_specs import load_feature_set
from phoenix_assets.defs.research.hpo import hpo_study
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib.io.lake import Lake
from phoenix_rl.config import RewardConfig, TrainConfig
from phoenix_rl.research import hpo
from phoenix_rl.research.hpo import objective as hpo_objective
from phoenix_rl.research.hpo import storage as hpo_storage
from phoenix_rl.research.hpo.study import main as hpo_main
from phoenix_rl.research.search_space import NET_ARCHS, SearchSpace, sample_params, trial_config
from phoenix_rl.research.statistics import deflated_sharpe_ratio, pbo_cscv, sharpe_columns, total_columns
from phoenix_rl.testing import synthetic_features
from tests.conftest import REPO

optuna.logging.set_verbosity(optuna.logging.WARNING)

# 12 sessions of 40 bars: train 4 trade dates, validation 6 (enough days for a DSR and a 6-split PBO), test 2
WINDOWS = {
    "train_start": "2024-03-04",
    "train_end": "2024-03-07",
    "val_start": "2024-03-08",
    "val_end": "2024-03-13",
    "test_start": "2024-03-14",
    "test_end": "2024-03-15",
}
TINY_BASE = {
    "total_timesteps": 48,
    "learning_starts": 16,
    "buffer_size": 512,  # >= the search space's largest batch_size (TrainConfig refuses a smaller buffer)
    "log_every": 16,
    "torch_threads": 1,
    "env": {"max_steps": 30},
    **WINDOWS,
}
# a space of tiny models (seconds per trial); continuous actions, so an untrained policy is not flat
TINY_SPACE = {
    "learning_rate": [1e-4, 1e-2],
    "gamma": [0.9, 0.99],
    "tau": [0.005, 0.02],
    "batch_size": [16],
    "train_freq": [1, 8],
    "net_arch": ["small"],
    "n_layers": [1],
    "d_model": [8],
    "d_state": [4],
    "lookback": [8],
    "action_mode": ["continuous"],
}


def _settings(**changes: object) -> hpo.StudySettings:
    kwargs: dict[str, object] = {
        "base": TrainConfig.from_dict(json.loads(json.dumps(TINY_BASE))),
        "space": SearchSpace.from_dict(TINY_SPACE),
        "eval_every": 16,
        "seed": 7,
    }
    return hpo.StudySettings(**{**kwargs, **changes})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def features() -> pl.DataFrame:
    cols = load_feature_set("phase2_ofi").columns
    frame = synthetic_features(cols, n_sessions=12, bars_per_session=40, first_trade_date=dt.date(2024, 3, 4))
    return frame.with_columns(pl.col("warm").alias("warm_phase2_ofi"))


def _journal(tmp_path: Path, name: str) -> optuna.storages.BaseStorage:
    storage, label = hpo.journal_storage(name, lake_root=str(tmp_path))
    assert label == f"journal:{tmp_path / 'optuna' / f'{name}.log'}"
    return storage


def _postgres_url() -> str:
    url = os.environ.get(hpo.STORAGE_ENV, "")
    if not url.startswith("postgresql"):
        if os.environ.get("PHOENIX_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PHOENIX_REQUIRE_POSTGRES=1 but {hpo.STORAGE_ENV} is not a postgresql:// URL ({url!r})")
        pytest.skip(f"{hpo.STORAGE_ENV} is not set to a PostgreSQL URL (.ci/run starts one)")
    return url


# --- the search space and the settings (no training) ---------------------------------------------------------


def test_sample_params_cover_the_space_and_build_a_train_config() -> None:
    space = SearchSpace()
    base = TrainConfig.from_dict(TINY_BASE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        p = sample_params(trial, space)
        assert 1e-5 <= p["train"]["learning_rate"] <= 1e-2
        assert p["train"]["gamma"] in space.gamma and p["train"]["tau"] in space.tau
        assert p["train"]["gradient_steps"] == p["train"]["train_freq"] in space.train_freq
        assert p["train"]["net_arch"] in NET_ARCHS.values()
        assert p["env"]["action_mode"] in ("deadband", "continuous")
        RewardConfig(**p["reward"])  # valid shaping weights
        cfg = trial_config(base, p)
        assert cfg.learning_rate == p["train"]["learning_rate"] and cfg.env.lookback == p["env"]["lookback"]
        assert cfg.env.turnover_penalty_usd == p["env"]["turnover_penalty_usd"]
        assert cfg.env.reward_config() == RewardConfig(**p["reward"])  # the shaping weights act in the env
        assert cfg.windows() == base.windows() and cfg.total_timesteps == base.total_timesteps
        study.tell(trial, 0.0)
    assert {t.params["action_mode"] for t in study.trials} == {"deadband", "continuous"}
    with pytest.raises(ValueError, match="net_arch choices"):
        SearchSpace(net_arch=["huge"])
    with pytest.raises(ValueError, match="unknown keys"):
        SearchSpace.from_dict({"gama": [0.9]})


def test_settings_refuse_overlapping_or_missing_windows() -> None:
    with pytest.raises(ValueError, match="TrainConfig: test starts 2024-03-13, not after val ends"):
        _settings(base=TrainConfig.from_dict({**TINY_BASE, "test_start": "2024-03-13"}))
    with pytest.raises(ValueError, match="must be set"):
        _settings(base=TrainConfig.from_dict({**TINY_BASE, "val_end": None}))
    s = _settings()
    assert hpo.StudySettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_storage_selection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hpo.STORAGE_ENV, raising=False)
    assert hpo.optuna_storage("s1", lake_root=str(tmp_path))[1] == f"journal:{tmp_path / 'optuna' / 's1.log'}"
    with pytest.raises(ValueError, match=hpo.STORAGE_ENV):
        hpo.optuna_storage("s1", lake_root="s3://bucket/lake")
    db = tmp_path / "o.db"
    monkeypatch.setenv(hpo.STORAGE_ENV, f"sqlite:///{db}")
    storage, label = hpo.optuna_storage("s1", lake_root=str(tmp_path))
    assert isinstance(storage, optuna.storages.RDBStorage) and label == f"sqlite:///{db}"
    assert (
        hpo_storage._redact("postgresql://phoenix:s3cret@db:5432/optuna") == "postgresql://phoenix:***@db:5432/optuna"
    )
    assert (
        hpo_storage._with_driver("postgresql://p:s@db/o") == "postgresql+psycopg2://p:s@db/o"
    )  # the driver we install
    assert hpo_storage._with_driver("postgresql+psycopg://db/o") == "postgresql+psycopg://db/o"


def test_statistics_count_pruned_trials() -> None:
    """DSR over ALL finished trials (pruned ones with their last validation returns), PBO over days x trials."""
    rng = np.random.default_rng(3)
    days = [f"2024-04-{d:02d}" for d in range(1, 25)]
    returns = rng.normal(0.0005, 0.01, size=(len(days), 6))
    study = optuna.create_study(direction="maximize")
    states = [TrialState.COMPLETE] * 3 + [TrialState.PRUNED] * 2 + [TrialState.FAIL]
    for k, state in enumerate(states):
        r = returns[:, k].tolist()
        attrs = {"val_daily_returns": r, "val_trade_dates": days} if state != TrialState.FAIL else {}
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=float(returns[:, k].sum()) if state == TrialState.COMPLETE else None,  # fixed capital
                params={"x": float(k)},
                distributions={"x": optuna.distributions.FloatDistribution(0, 10)},
                user_attrs=attrs,
                intermediate_values={10: 0.0} if state == TrialState.PRUNED else {},
            )
        )
    stats = hpo.study_statistics(study, n_splits=8)
    assert (stats["n_complete"], stats["n_pruned"], stats["n_failed"], stats["n_trials_in_statistics"]) == (3, 2, 1, 5)
    best = study.best_trial.number
    # issue 24 item 12: the failed trial counts in N (6 tried), its missing returns in no Sharpe ratio
    expected = deflated_sharpe_ratio(returns[:, best], sharpe_columns(returns[:, :5]), 6)
    assert stats["dsr_n_trials"] == 6 and stats["dsr"] == pytest.approx(expected["dsr"]) and 0 <= stats["dsr"] <= 1
    assert stats["dsr"] < deflated_sharpe_ratio(returns[:, best], sharpe_columns(returns[:, :5]), 5)["dsr"]
    # issue 24 item 5: PBO ranks the study's candidates (complete trials) by the study's metric (total return)
    assert stats["pbo"] == pytest.approx(pbo_cscv(returns[:, :3], n_splits=8, metric=total_columns)["pbo"])
    assert stats["pbo_detail"]["n_splits"] == 8 and stats["pbo_detail"]["n_candidates"] == 3
    assert stats["pbo_detail"]["n_combinations"] == 70


# --- studies (tiny trainings) ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_study_resumes_reports_dsr_pbo_and_scores_test_once(
    tmp_path: Path, features: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = _journal(tmp_path, "resume")
    settings = _settings()
    study = hpo.run_study(settings, features, "resume", storage, n_trials=2)
    assert hpo.finished_trials(study) == 2
    # a second run (after an interruption, or asking for more) continues the same study
    study = hpo.run_study(settings, features, "resume", storage, n_trials=4)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert hpo.run_study(settings, features, "resume", storage, n_trials=4).trials == study.trials  # nothing left
    with pytest.raises(ValueError, match="other settings"):
        hpo.run_study(dataclasses.replace(settings, seed=8), features, "resume", storage, n_trials=5)

    for t in study.trials:  # every finished trial carries its validation days (pruned ones: their last evaluation)
        assert t.user_attrs["val_trade_dates"] == [f"2024-03-{d:02d}" for d in range(8, 14)]
        assert len(t.user_attrs["val_daily_returns"]) == 6
        RewardConfig(**t.user_attrs["reward"])
    stats = hpo.study_statistics(study)
    assert stats["n_trials_in_statistics"] == stats["n_complete"] + stats["n_pruned"] == 4
    assert 0.0 <= stats["dsr"] <= 1.0, stats
    assert stats["dsr_detail"]["n_trials"] == 4 and stats["dsr_detail"]["kurtosis"] > 0
    assert 0.0 <= stats["pbo"] <= 1.0, stats
    assert (stats["pbo_detail"]["n_splits"], stats["pbo_detail"]["n_combinations"]) == (6, 20)
    assert stats["pbo_detail"]["n_candidates"] == stats["n_complete"]  # the study's candidates: complete trials

    plots = hpo.study_plots(study)
    assert plots["optimization_history"].startswith(b"\x89PNG")

    out = tmp_path / "best"
    record = hpo.score_best_on_test(study, settings, features, out_dir=out)
    assert record["trial"] == study.best_trial.number
    assert record["test_trade_dates"] == ["2024-03-14", "2024-03-15"]
    # $ per contract on the fixed capital: the days add up to the total return
    assert sum(record["test_daily_pnl_usd"]) / 10_000.0 == pytest.approx(record["test_metrics"]["total_return"])
    assert sum(record["test_daily_cost_usd"]) == pytest.approx(record["test_metrics"]["total_cost"])
    assert math.isfinite(record["test_metrics"]["total_return"]) and (out / "model.zip").exists()
    assert record["val_value_retrained"] == pytest.approx(study.best_value, abs=1e-9)  # the retrain reproduces it

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the test window was scored again")

    monkeypatch.setattr(hpo_objective, "train", no_training)
    assert hpo.score_best_on_test(optuna.load_study(study_name="resume", storage=storage), settings, features) == (
        json.loads(json.dumps(record))
    )


@pytest.mark.slow
def test_objective_uses_validation_only(tmp_path: Path, features: pl.DataFrame) -> None:
    """Scrambling the test window's prices and features changes the test score, never the search."""
    test_days = pl.col("trade_date") >= dt.date.fromisoformat(WINDOWS["test_start"])
    cols = [c for c in load_feature_set("phase2_ofi").columns]
    perturbed = features.with_columns(
        *[pl.when(test_days).then(-pl.col(c) * 3.0).otherwise(pl.col(c)).alias(c) for c in cols],
        *[pl.when(test_days).then(pl.col(c).reverse()).otherwise(pl.col(c)).alias(c) for c in ("open", "close")],
    )
    assert not perturbed.equals(features)
    runs = []
    for name, frame in (("clean", features), ("perturbed", perturbed)):
        storage = _journal(tmp_path / name, name)
        study = hpo.run_study(_settings(), frame, name, storage, n_trials=3)
        runs.append((study, hpo.score_best_on_test(study, _settings(), frame)))
    (a, test_a), (b, test_b) = runs
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.value for t in a.trials] == [t.value for t in b.trials]
    assert a.best_trial.number == b.best_trial.number and a.best_params == b.best_params
    assert test_a["test_daily_returns"] != test_b["test_daily_returns"]  # the test rows were used, for the test only


def _worker(study: str, storage_args: list[str], work: Path, n_trials: int, worker: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "phoenix_rl.research.hpo",
        "--study",
        study,
        "--features",
        str(work / "features.parquet"),
    ]
    cmd += ["--settings", str(work / "settings.json"), "--n-trials", str(n_trials), "--worker", str(worker)]
    log = (work / f"worker{worker}.log").open("w")
    return subprocess.Popen([*cmd, *storage_args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _prepare(work: Path, features: pl.DataFrame) -> None:
    work.mkdir(parents=True, exist_ok=True)
    features.write_parquet(work / "features.parquet")
    (work / "settings.json").write_text(json.dumps(_settings().to_dict()))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["journal", "postgresql"])
def test_two_workers_share_one_study(
    backend: str, tmp_path: Path, features: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"parallel_{uuid.uuid4().hex[:8]}"
    if backend == "postgresql":
        url = _postgres_url()
        storage_args, storage = ["--storage", url], hpo.optuna_storage(name, url=url)[0]
    else:
        monkeypatch.delenv(hpo.STORAGE_ENV, raising=False)
        storage_args, storage = ["--lake", str(tmp_path)], _journal(tmp_path, name)
    _prepare(tmp_path, features)
    procs = [_worker(name, storage_args, tmp_path, 4, k) for k in (0, 1)]
    for k, p in enumerate(procs):
        assert p.wait(timeout=300) == 0, (tmp_path / f"worker{k}.log").read_text()[-3000:]
    study = optuna.load_study(study_name=name, storage=storage)
    finished = study.get_trials(states=hpo.FINISHED)
    assert 4 <= len(finished) <= 5  # a worker stops once the study holds 4 (one may finish a last trial)
    workers = {t.user_attrs["worker"].rsplit("/", 1)[1] for t in study.trials}
    assert workers == {"0", "1"}, [t.user_attrs["worker"] for t in study.trials]  # both workers' trials
    assert len({t.number for t in study.trials}) == len(study.trials)
    summary = json.loads((tmp_path / "worker1.log").read_text().strip().splitlines()[-1])
    assert summary["storage"].startswith("postgresql" if backend == "postgresql" else "journal:")


@pytest.mark.slow
def test_run_study_workers_runs_the_trials_in_spawned_processes(
    tmp_path: Path, features: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(hpo.STORAGE_ENV, raising=False)
    name = f"pool_{uuid.uuid4().hex[:8]}"
    study = hpo.run_study_workers(_settings(), features, name, str(tmp_path), n_trials=3, workers=2)
    finished = study.get_trials(states=hpo.FINISHED)
    assert 3 <= len(finished) <= 4  # each worker stops once the study holds 3 (one may finish a last trial)
    assert not study.get_trials(states=(TrialState.FAIL,))
    ran_in = {tuple(t.user_attrs["worker"].split("/")[1:]) for t in study.trials}  # host/pid/worker index
    assert {pid for pid, _ in ran_in}.isdisjoint({str(os.getpid())})  # not in this process
    assert {k for _, k in ran_in} <= {"0", "1"}
    assert hpo.load_settings(name, _journal(tmp_path, name)) == _settings()  # created once, by the caller


@pytest.mark.slow
def test_killed_worker_study_resumes(tmp_path: Path, features: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hpo.STORAGE_ENV, raising=False)
    name = "killed"
    storage = _journal(tmp_path, name)
    _prepare(tmp_path, features)
    proc = _worker(name, ["--lake", str(tmp_path)], tmp_path, 3, 0)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if hpo.finished_trials(optuna.load_study(study_name=name, storage=storage)) >= 1:
                break
        except KeyError:  # the worker has not created the study yet
            pass
        time.sleep(0.1)
    assert proc.poll() is None, (tmp_path / "worker0.log").read_text()[-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = optuna.load_study(study_name=name, storage=storage).trials
    assert 1 <= hpo.finished_trials(optuna.load_study(study_name=name, storage=storage)) < 3
    study = hpo.run_study(hpo.load_settings(name, storage), features, name, storage, n_trials=3)
    assert hpo.finished_trials(study) == 3
    assert [t.number for t in study.trials] == list(range(len(study.trials)))
    assert len(study.trials) > len(before)  # numbering continued after the killed worker's trials
    # the killed worker's trial in flight stays RUNNING on a journal (no heartbeat) and is reported as such
    assert hpo.study_statistics(study)["n_running"] == sum(t.state == TrialState.RUNNING for t in before)


@pytest.mark.slow
def test_pruned_trials_keep_their_last_validation_returns(tmp_path: Path, features: pl.DataFrame) -> None:
    """A pruned trial stops at its evaluation and keeps that evaluation's returns (it enters DSR and PBO)."""
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=10.0))
    study.optimize(hpo.make_objective(_settings(), features), n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    for t in study.trials:
        assert t.user_attrs["val_step"] == 16 and list(t.intermediate_values) == [16]
        assert len(t.user_attrs["val_daily_returns"]) == 6
    stats = hpo.study_statistics(study)
    assert (stats["n_pruned"], stats["n_trials_in_statistics"], stats["dsr"]) == (2, 2, None)
    assert stats["dsr_note"] == "no complete trial"


# --- the Dagster asset ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_hpo_study_asset_materializes(features_lake_root: str) -> None:
    name = f"asset_{uuid.uuid4().hex[:8]}"
    base = {
        **{k: v for k, v in TINY_BASE.items() if k not in WINDOWS},
        "train_start": "2024-03-13",
        "train_end": "2024-03-13",
        "val_start": "2024-03-14",
        "val_end": "2024-03-14",
        "test_start": "2024-03-15",
        "test_end": "2024-03-15",
    }
    run_config = {"study_name": name, "n_trials": 2, "eval_every": 16, "base": base, "search_space": TINY_SPACE}
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [hpo_study],
            resources={"lake": LakeResource(uri=features_lake_root)},
            run_config=dg.RunConfig(ops={"hpo_study": {"config": run_config}}),
            instance=instance,
        )
    assert result.success
    meta = result.asset_materializations_for_node("hpo_study")[0].metadata
    assert meta["n_complete"].value + meta["n_pruned"].value == 2 and meta["n_failed"].value == 0
    assert set(meta["best_params"].value) >= {"learning_rate", "gamma", "tau", "train_freq", "reward_win_bonus"}
    assert math.isfinite(meta["validation_objective"].value)
    assert math.isfinite(meta["test_metrics"].value["total_return"])
    assert meta["test_scored_trial"].value == meta["best_trial"].value
    # one validation day: DSR and PBO are undefined and say why instead of printing a number
    assert meta["dsr"].value == "n/a" and "returns" in meta["dsr_note"].value
    assert meta["pbo"].value == "n/a" and meta["pbo_note"].value
    assert "data:image/png;base64" in meta["optuna_plots"].value
    assert "deflated Sharpe ratio" in meta["summary"].value
    url = os.environ.get(hpo.STORAGE_ENV)
    label = meta["storage"].value
    assert (
        label == hpo_storage._redact(url) if url else (label.startswith("journal:") and label.endswith(f"/{name}.log"))
    )
    assert Path(meta["best_model"].value).exists()
    # issue 24 item 6: every scoring of the test window is in an append-only ledger; the same selection
    # materialized again reuses the stored score and adds no look
    assert meta["test_window_looks"].value == 1
    with dg.instance_for_test() as instance:
        again = dg.materialize(
            [hpo_study],
            resources={"lake": LakeResource(uri=features_lake_root)},
            run_config=dg.RunConfig(ops={"hpo_study": {"config": run_config}}),
            instance=instance,
        )
    assert again.asset_materializations_for_node("hpo_study")[0].metadata["test_window_looks"].value == 1
    looks = Lake(features_lake_root).scan("hpo_test_looks").filter(pl.col("study_name") == name).collect()
    assert looks.height == 1 and looks["trial"][0] == meta["best_trial"].value and len(looks["config_hash"][0]) == 64

    # one more worker joins the asset's study: settings from the study, features from the lake
    assert hpo_main(["--study", name, "--lake", features_lake_root, "--n-trials", "3", "--worker", "1"]) == 0
    storage = hpo.optuna_storage(name, lake_root=features_lake_root)[0]
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert [t.number for t in trials] == [0, 1, 2] and trials[2].user_attrs["worker"].endswith("/1")


def test_hpo_study_refuses_regimes_fitted_into_validation_before_its_first_trial(
    features_lake_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24 item 4: `mamba_sac_model` refused an HMM fitted into validation, `hpo_study` did not, so every
    trial could train and be selected on regimes fitted on validation or test data. Now the same refusal, with
    the same message, before any trial."""
    root = tmp_path / "lake"
    shutil.copytree(features_lake_root, root)
    lake = Lake(str(root))
    lake.write_artifact(
        "artifacts/hmm_regime_model/v9.json", b'{"train_start": "2024-03-13", "train_end": "2024-03-15"}'
    )
    lake.publish_latest("artifacts/hmm_regime_model", "artifacts/hmm_regime_model/v9.json", "v9")

    def no_trial(*args: object, **kwargs: object) -> None:
        raise AssertionError("a trial ran")

    monkeypatch.setattr(hpo, "run_study_workers", no_trial)
    base = {
        **{k: v for k, v in TINY_BASE.items() if k not in WINDOWS},
        **{f"{w}_{edge}": day for w, day in (("train", "2024-03-13"), ("val", "2024-03-14"), ("test", "2024-03-15"))
           for edge in ("start", "end")},
    }  # fmt: skip
    run_config = {"study_name": "leak", "n_trials": 2, "base": base, "search_space": TINY_SPACE}
    with dg.instance_for_test() as instance, pytest.raises(ValueError) as refused:
        dg.materialize(
            [hpo_study],
            resources={"lake": LakeResource(uri=str(root))},
            run_config=dg.RunConfig(ops={"hpo_study": {"config": run_config}}),
            instance=instance,
        )
    assert str(refused.value).startswith(
        "hpo_study: hmm_regime_model was fitted on data up to 2024-03-15, not before validation starts 2024-03-14 "
        "(train 2024-03-13..2024-03-13, val 2024-03-14..2024-03-14, test 2024-03-15..2024-03-15, embargo 0): "
        "re-fit hmm_regime_model on a window ending before validation"
    )
