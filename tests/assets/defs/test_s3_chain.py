"""The whole chain on an S3 lake (`PHOENIX_LAKE_URI=s3://...`) against a real moto S3 server on 127.0.0.1,
through Dagster, and concurrent writers to one Delta table on that S3."""

import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import polars as pl
import pyarrow as pa
import pytest

from phoenix_assets.definitions import defs, resources
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.io.lake import Lake, s3_storage_options

BUCKET = "phoenix-lake"
DAYS = [dt.date(2024, 3, 13), dt.date(2024, 3, 14), dt.date(2024, 3, 15)]
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
RECORDS_PER_DAY = 40_000  # the generator's own default; enough for every blocking check
TINY_TRAINING = {
    "total_timesteps": 256,
    "learning_starts": 64,
    "batch_size": 32,
    "buffer_size": 1_000,
    "d_model": 8,
    "d_state": 4,
    "n_layers": 1,
    "net_arch": [16, 16],
    "env": {"lookback": 8, "max_steps": 60},
    "log_every": 64,
    "torch_threads": 1,
    "train_start": "2024-03-13",
    "train_end": "2024-03-13",
    "val_start": "2024-03-14",
    "val_end": "2024-03-14",
    "test_start": "2024-03-15",
    "test_end": "2024-03-15",
}
TABLES = {
    "raw_mbp10": "trade_date",
    "book_snapshots_1s": "trade_date",
    "ofi_bars_1m": "trade_date",
    "hmm_regimes": "month",
    "features_1m": "month",
    "backtest_trades": "model_version",
    "backtest_equity": "model_version",
    "evaluation_metrics": "model_version",
}


def _keys(endpoint: str, prefix: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _checked(result: dg.ExecuteInProcessResult, what: str, evaluations: list[dg.AssetCheckEvaluation]) -> None:
    assert result.success, f"{what} failed on the S3 lake"
    evaluations.extend(result.get_asset_check_evaluations())


@pytest.mark.slow
def test_whole_chain_on_s3(
    s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance
) -> None:
    monkeypatch.setenv("PHOENIX_LAKE_URI", f"s3://{BUCKET}/chain")
    monkeypatch.setenv("PHOENIX_LANDING_DIR", str(tmp_path / "landing"))
    checks: list[dg.AssetCheckEvaluation] = []
    landing_config = {**QUIET, "ops": {"write_synthetic_day": {"config": {"records_per_day": RECORDS_PER_DAY}}}}
    for day in DAYS:
        key = day.isoformat()
        landed = defs.resolve_job_def("synthetic_landing_job").execute_in_process(
            partition_key=key, instance=instance, run_config=landing_config
        )
        assert landed.success
        _checked(
            defs.resolve_job_def("daily_job").execute_in_process(
                partition_key=key, instance=instance, run_config=QUIET
            ),
            f"daily_job {key}",
            checks,
        )
    assets = list(defs.assets or [])
    hmm = dg.materialize(
        assets,
        selection=["hmm_regime_model"],
        instance=instance,
        resources=resources(),
        run_config={
            **QUIET,
            "ops": {"hmm_regime_model": {"config": {"train_start": "2024-03-13", "train_end": "2024-03-13"}}},
        },
    )
    _checked(hmm, "hmm_regime_model", checks)
    features = defs.resolve_job_def("features_job").execute_in_process(
        partition_key="2024-03-01", instance=instance, run_config=QUIET
    )
    _checked(features, "features_job 2024-03", checks)
    model = dg.materialize(
        assets,
        selection=["mamba_sac_model", "backtests", "evaluation_metrics"],
        instance=instance,
        resources=resources(),
        run_config={**QUIET, "ops": {"mamba_sac_model": {"config": TINY_TRAINING}}},
        tags={"phoenix/training": "true"},
    )
    _checked(model, "model chain", checks)

    # every blocking check of every stage passed (warnings may fail: synthetic data is not a real market)
    blocking = [c for c in checks if c.severity == dg.AssetCheckSeverity.ERROR]
    assert blocking and all(c.passed for c in blocking), [c.check_name for c in blocking if not c.passed]
    assert {c.asset_key.to_user_string() for c in blocking} >= {"raw_mbp10", "ofi_bars_1m", "features_1m"}

    # every Delta table lives under the prefix, with a commit log and the partitions it was given
    lake = LakeResource().lake()
    keys = _keys(s3_env, "chain/")
    version = json.loads(lake.read_artifact("artifacts/mamba_sac_model/latest.json"))["version"]
    expected = {
        "trade_date": {d.isoformat() for d in DAYS},
        "month": {"2024-03-01"},
        "model_version": {version},
    }
    for table, column in TABLES.items():
        assert f"chain/{table}/_delta_log/00000000000000000000.json" in keys, table
        for value in expected[column]:
            assert any(k.startswith(f"chain/{table}/{column}={value}/") and k.endswith(".parquet") for k in keys)
        frame = lake.scan(table).collect()
        assert frame.height > 0, table
        assert {str(v) for v in frame[column].unique()} == expected[column], table
    bars = lake.scan("ofi_bars_1m").collect()
    assert sorted(bars["trade_date"].unique()) == DAYS
    features_frame = lake.scan("features_1m").collect()
    assert features_frame["trade_date"].n_unique() == 3 and features_frame["feature_spec_hash"].n_unique() == 1
    metrics = lake.scan("evaluation_metrics").collect()
    assert set(metrics["window"]) == {"val", "test"} and "agent" in set(metrics["strategy"])

    # every artifact: the HMM model (versioned JSON + latest.json), the SAC model (zip, config, metrics + latest.json)
    hmm_pointer = json.loads(lake.read_artifact("artifacts/hmm_regime_model/latest.json"))
    assert f"chain/{hmm_pointer['path']}" in keys
    assert json.loads(lake.read_artifact(hmm_pointer["path"]))["train_start"] == "2024-03-13"
    pointer = json.loads(lake.read_artifact("artifacts/mamba_sac_model/latest.json"))
    for name in ("model.zip", "config.json", "metrics.jsonl"):
        assert f"chain/{pointer['path']}/{name}" in keys
    assert lake.read_artifact(f"{pointer['path']}/model.zip")[:2] == b"PK"
    saved = json.loads(lake.read_artifact(f"{pointer['path']}/config.json"))
    assert saved["data_windows"]["train"] == ["2024-03-13", "2024-03-13"]
    assert lake.read_artifact(f"{pointer['path']}/metrics.jsonl").strip()
    meta = model.asset_materializations_for_node("mamba_sac_model")[0].metadata
    assert meta["artifact"].value == f"s3://{BUCKET}/chain/{pointer['path']}/model.zip"


# --- concurrent writers ------------------------------------------------------------------------------

SCHEMA = pa.schema([("trade_date", pa.string()), ("writer", pa.int64()), ("row", pa.int64())])


def _rows(day: str, writer: int, n: int = 3) -> list[pa.RecordBatch]:
    return pa.table(
        {"trade_date": [day] * n, "writer": [writer] * n, "row": list(range(n))}, schema=SCHEMA
    ).to_batches()


def _lockstep(monkeypatch: pytest.MonkeyPatch, writers: int) -> None:
    """Each writer thread waits, after reading the table's state for its commit, until all have read it:
    every writer builds its commit on the same version, so all but one lose the race for the next one."""
    barrier, local = threading.Barrier(writers), threading.local()
    table, exists = Lake.table, Lake.exists

    def wait_once() -> None:
        if not getattr(local, "waited", False):
            local.waited = True
            barrier.wait(timeout=60)

    def table_then_wait(self: Lake, name: str) -> Any:
        handle = table(self, name)
        wait_once()
        return handle

    def exists_then_wait(self: Lake, name: str) -> bool:
        found = exists(self, name)
        if not found:
            wait_once()
        return found

    monkeypatch.setattr(Lake, "table", table_then_wait)
    monkeypatch.setattr(Lake, "exists", exists_then_wait)


def _race(lake: Lake, table: str, days: list[str]) -> dict[int, int]:
    """Writer i replaces partition days[i] with its rows, all at once; returns writer -> committed version."""
    versions: dict[int, int] = {}
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            versions[writer] = lake.replace_partition(
                table, SCHEMA, _rows(days[writer], writer), "trade_date", days[writer]
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(days))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return versions


def _partition(lake: Lake, table: str, day: str) -> pl.DataFrame:
    return lake.scan(table).filter(pl.col("trade_date") == day).collect().sort("writer", "row")


@pytest.mark.slow
def test_concurrent_writers_on_s3_lose_nothing(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = Lake(f"s3://{BUCKET}/concurrent")
    assert (lake.options() or {})["conditional_put"] == "etag"

    # two writers create the table at once: one creates version 0, the other commits version 1 on top
    with monkeypatch.context() as m:
        _lockstep(m, 2)
        created = _race(lake, "t", ["2024-03-13", "2024-03-14"])
    assert sorted(created.values()) == [0, 1]
    for writer, day in enumerate(["2024-03-13", "2024-03-14"]):
        assert _partition(lake, "t", day)["writer"].to_list() == [writer] * 3

    # two writers on the same version, other partitions: both commit, nothing of either is lost
    with monkeypatch.context() as m:
        _lockstep(m, 2)
        other = _race(lake, "t", ["2024-03-15", "2024-03-18"])
    assert sorted(other.values()) == [2, 3]
    assert lake.scan("t").collect().height == 12

    # two writers replace the same partition at once (a new one: delta-rs alone would see two blind appends and
    # keep both; an existing one: it would fail the second writer): the later commit holds it whole, never a mix
    for day, versions in (("2024-03-19", [4, 5]), ("2024-03-13", [6, 7])):
        with monkeypatch.context() as m:
            _lockstep(m, 2)
            same = _race(lake, "t", [day, day])
        assert sorted(same.values()) == versions
        last = max(same, key=lambda w: same[w])
        assert _partition(lake, "t", day)["writer"].to_list() == [last] * 3
    assert lake.scan("t").collect().height == 15

    # free-running: three writers, four partitions each
    days = [d.isoformat() for d in cal.trade_dates_between(dt.date(2024, 4, 1), dt.date(2024, 4, 16))]
    results: list[int] = []

    def writer(k: int) -> None:
        for day in days[k::3]:
            results.append(lake.replace_partition("t", SCHEMA, _rows(day, k), "trade_date", day))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(8, 8 + len(days)))  # one version per commit, none shared
    stored = lake.scan("t").collect()
    assert stored.height == 3 * (5 + len(days))
    assert stored.group_by("trade_date").agg(pl.col("writer").n_unique())["writer"].max() == 1
    assert lake.table("t").version() == 7 + len(days)


def test_s3_storage_options_are_safe_by_default() -> None:
    assert s3_storage_options({}, {}) == {"conditional_put": "etag"}
    assert s3_storage_options({"AWS_REGION": "eu-west-1"}, {}) == {"AWS_REGION": "eu-west-1", "conditional_put": "etag"}
    assert s3_storage_options({"aws_conditional_put": "etag"}, {}) == {"aws_conditional_put": "etag"}
    assert s3_storage_options({}, {"AWS_CONDITIONAL_PUT": "etag"}) == {}  # object_store reads the environment
    assert s3_storage_options({"AWS_S3_ALLOW_UNSAFE_RENAME": "false"}, {})["conditional_put"] == "etag"
    with pytest.raises(ValueError, match="AWS_S3_ALLOW_UNSAFE_RENAME=true is refused"):
        s3_storage_options({"AWS_S3_ALLOW_UNSAFE_RENAME": "true"}, {})
    with pytest.raises(ValueError, match=r"\$AWS_S3_ALLOW_UNSAFE_RENAME=1 is refused"):
        s3_storage_options({}, {"AWS_S3_ALLOW_UNSAFE_RENAME": "1"})
    with pytest.raises(ValueError, match="no DynamoDB locking provider"):
        s3_storage_options({}, {"AWS_S3_LOCKING_PROVIDER": "dynamodb"})
    with pytest.raises(ValueError, match="conditional_put=disabled"):
        s3_storage_options({"conditional_put": "disabled"}, {})
    assert Lake("/tmp/lake").options() is None  # local lakes are untouched
    assert LakeResource(uri="s3://b/p", storage_options={"AWS_REGION": "x"}).lake().options() == {
        "AWS_REGION": "x",
        "conditional_put": "etag",
    }
