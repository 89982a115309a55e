"""The lake on S3 (`PHOENIX_LAKE_URI=s3://bucket/prefix`) against a real moto S3 server on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib.ingest import raw_quality as q
from phoenix_assets.lib.schema import RAW_ORDER, RAW_TABLE
from tests.assets.lib.ingest.test_raw_ingest import ESH4_DAY, ingest
from tests.conftest import ESH4_MBP10, land


def test_raw_partition_round_trips_through_s3(s3_env: str, landing: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHOENIX_LAKE_URI", "s3://phoenix-lake/research")
    lake = LakeResource().lake()
    assert lake.table_uri(RAW_TABLE) == "s3://phoenix-lake/research/raw_mbp10"
    land(landing, ESH4_MBP10)
    stats, version = ingest(lake, landing, ESH4_DAY)
    _, version2 = ingest(lake, landing, ESH4_DAY)  # idempotent on S3 too
    assert (version, version2) == (0, 1)
    stored = lake.read_partition(RAW_TABLE, ESH4_DAY, order_by=RAW_ORDER)
    assert stored.height == stats.rows == 43_717
    assert stored["record_index"].to_list() == list(range(43_717))
    keys = boto3.client("s3", endpoint_url=s3_env).list_objects_v2(Bucket="phoenix-lake", Prefix="research/raw_mbp10/")
    names = [o["Key"] for o in keys["Contents"]]
    assert any("_delta_log/00000000000000000001.json" in n for n in names)
    assert any("trade_date=2023-12-26/" in n for n in names)
    # staging lists are deleted once committed (pyarrow leaves a folder marker behind)
    assert not [n for n in names if "_phoenix_staging/" in n and not n.endswith("/")]
    for outcome in (
        q.check_schema(q.RawPartition.stored(lake, ESH4_DAY)),
        q.check_no_duplicates(q.RawPartition.stored(lake, ESH4_DAY)),
        q.check_prices_on_grid(q.RawPartition.stored(lake, ESH4_DAY), 0.25),
        q.check_expectations(q.RawPartition.stored(lake, ESH4_DAY)),
    ):
        assert outcome.passed, outcome.description
