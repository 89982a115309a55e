"""Shared fixtures: real Databento files vendored in tests/data (see its SOURCES.md), temp lakes and Dagster homes."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import dagster as dg
import polars as pl
import pytest

from feature_specs import load_feature_set
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.market.microstructure import to_delta_arrow
from phoenix_rl.testing import synthetic_features

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO / "tests" / "data"  # vendored from ../shared/data so a fresh clone is self-contained
ESH4_MBP10 = SHARED_DATA / "glbx-mdp3-esh4-20231225.mbp-10.derived-from-mbo.dbn.zst"  # trade date 2023-12-26
ESM4_MBP10 = SHARED_DATA / "glbx-mdp3-esm4-20240508T000000-000002.mbp-10.derived-from-mbo.dbn.zst"  # 2024-05-08
ESH1_MBP10 = SHARED_DATA / "glbx-mdp3-esh1-20201228.mbp-10.fixture.dbn.zst"  # trade date 2020-12-28
ESH1_TRADES = SHARED_DATA / "glbx-mdp3-esh1-20201228.trades.fixture.dbn.zst"
# mamba_sac_model config for a seconds-long training run on the features_lake_root data (2024-03-13..15)
TINY_MODEL_CONFIG = {
    "total_timesteps": 64,
    "learning_starts": 32,
    "batch_size": 16,
    "buffer_size": 500,
    "d_model": 8,
    "d_state": 4,
    "n_layers": 1,
    "net_arch": [16, 16],
    "env": {"lookback": 8, "max_steps": 40},
    "log_every": 16,
    "torch_threads": 1,
    "train_start": "2024-03-13",
    "train_end": "2024-03-13",
    "val_start": "2024-03-14",
    "val_end": "2024-03-14",
    "test_start": "2024-03-15",
    "test_end": "2024-03-15",
}
MBP10_FIXTURES = sorted(p for p in SHARED_DATA.glob("*.dbn*") if ".mbp-10." in p.name)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    root = tmp_path / "lake"
    root.mkdir()
    return Lake(str(root))


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


def land(folder: Path, *files: Path) -> None:
    for f in files:
        shutil.copy(f, folder / f.name)


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """A real Dagster instance in a temporary DAGSTER_HOME."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
    }.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="phoenix-lake")
    return s3_endpoint


@pytest.fixture(scope="module")
def features_lake_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A lake whose features_1m holds the phase2_ofi columns for trade dates 2024-03-13..15 (one month)."""
    root = str(tmp_path_factory.mktemp("lake"))
    cols = load_feature_set("phase2_ofi").columns
    frame = synthetic_features(cols, n_sessions=3, bars_per_session=80, first_trade_date=dt.date(2024, 3, 13))
    frame = frame.with_columns(
        pl.col("warm").alias("warm_phase2_ofi"),
        feature_spec_hash=pl.lit("testhash0123"),
        month=pl.lit(dt.date(2024, 3, 1)),
    )
    table = to_delta_arrow(frame)
    Lake(root).replace_partition("features_1m", table.schema, table.to_batches(), "month", dt.date(2024, 3, 1))
    return root
