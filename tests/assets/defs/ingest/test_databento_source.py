"""The Databento historical source: key handling and the cost guard.

The real API cannot be reached here (no network), so these tests substitute the client object
(`DatabentoResource.client`) with one that answers `metadata.get_cost` and writes a real DBN file
for `timeseries.get_range`; everything after the download runs for real.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dagster as dg
import pytest
import requests
from databento.common.error import BentoClientError

from phoenix_assets.defs.ingest.assets import raw_mbp10
from phoenix_assets.defs.resources import DatabentoError, DatabentoResource, _is_transient
from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.io.lake import Lake
from tests.assets.defs.ingest.test_raw_asset import resources
from tests.assets.lib.ingest.test_raw_ingest import ESH4_DAY
from tests.conftest import ESH4_MBP10

SECRET_KEY = "db-phoenixSecretTestKey0123456789"


@pytest.fixture(autouse=True)
def databento_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABENTO_API_KEY", SECRET_KEY)


class RecordingClient:
    """Stands in for databento.Historical: records the requests, serves a real DBN file."""

    def __init__(self, cost: float, source: Path) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.metadata = SimpleNamespace(get_cost=self._cost)
        self.timeseries = SimpleNamespace(get_range=self._get_range)
        self._value, self._source = cost, source

    def _cost(self, **request: Any) -> float:
        self.requests.append(("get_cost", request))
        return self._value

    def _get_range(self, path: str, **request: Any) -> None:
        self.requests.append(("get_range", request))
        shutil.copy(self._source, path)


class OfflineDatabento(DatabentoResource):
    cost: float = 1.0

    def client(self) -> Any:
        self._key()  # the key rules apply exactly as with the real client
        client = RecordingClient(self.cost, ESH4_MBP10)
        OfflineDatabento.last_client = client  # type: ignore[attr-defined]
        return client


def test_no_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DATABENTO_API_KEY", raising=False)
    with pytest.raises(DatabentoError, match="No Databento API key: set DATABENTO_API_KEY"):
        DatabentoResource().download_day(ESH4_DAY, tmp_path)


def test_cost_above_the_limit_is_refused_before_downloading(tmp_path: Path) -> None:
    source = OfflineDatabento(cost=12.5, max_cost_usd=5.0)
    with pytest.raises(
        DatabentoError, match=r"partition 2023-12-26: Databento estimates \$12.50 .* max_cost_usd=\$5.00"
    ):
        source.download_day(ESH4_DAY, tmp_path)
    calls = [name for name, _ in OfflineDatabento.last_client.requests]  # type: ignore[attr-defined]
    assert calls == ["get_cost"]
    assert list(tmp_path.iterdir()) == []


def test_request_is_the_trade_date_window_of_the_continuous_symbol(tmp_path: Path) -> None:
    source = OfflineDatabento(cost=0.4)
    path = source.download_day(ESH4_DAY, tmp_path)
    assert path.exists() and path.parent == tmp_path
    (_, cost_req), (_, get_req) = OfflineDatabento.last_client.requests  # type: ignore[attr-defined]
    assert cost_req == get_req
    assert get_req["dataset"] == "GLBX.MDP3" and get_req["symbols"] == ["MNQ.v.0"]
    assert get_req["stype_in"] == "continuous" and get_req["schema"] == "mbp-10"
    assert (get_req["start"], get_req["end"]) == cal.trade_date_window(ESH4_DAY)


def materialize_from_databento(instance: dg.DagsterInstance, lake: Lake, landing: Path) -> dg.ExecuteInProcessResult:
    """raw_mbp10 for ESH4_DAY with source=databento, served by the offline client."""
    res = resources(lake, landing)
    res["databento"] = OfflineDatabento(cost=0.4)
    return dg.materialize(
        [raw_mbp10],
        partition_key=ESH4_DAY.isoformat(),
        resources=res,
        instance=instance,
        run_config={"ops": {"raw_mbp10": {"config": {"source": "databento"}}}},
    )


def test_asset_downloads_then_ingests(tmp_path: Path, lake: Lake, landing: Path) -> None:
    with dg.instance_for_test() as instance:
        result = materialize_from_databento(instance, lake, landing)
    assert result.success
    assert result.get_asset_materialization_events()[0].materialization.metadata["dagster/row_count"].value == 43_717
    assert dt.date(2023, 12, 26) == ESH4_DAY


class FlakyClient(RecordingClient):
    def _get_range(self, path: str, **request: Any) -> None:
        from databento.common.error import BentoServerError

        raise BentoServerError(http_status=503, message="service unavailable")


def test_server_errors_are_transient_and_retried(tmp_path: Path, lake: Lake, landing: Path) -> None:
    class FlakyDatabento(DatabentoResource):
        def client(self) -> Any:
            return FlakyClient(0.1, ESH4_MBP10)

    with pytest.raises(DatabentoError, match="Databento download failed") as err:
        FlakyDatabento().download_day(ESH4_DAY, tmp_path)
    assert err.value.transient
    assert not list(tmp_path.glob("*.part"))
    res = resources(lake, landing)
    res["databento"] = FlakyDatabento()
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [raw_mbp10],
            partition_key=ESH4_DAY.isoformat(),
            resources=res,
            instance=instance,
            run_config={"ops": {"raw_mbp10": {"config": {"source": "databento", "retry_base_seconds": 0.01}}}},
            raise_on_error=False,
        )
    assert not result.success
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 3, "a transient Databento error is retried 3 times"


class _DroppingGateway(socketserver.BaseRequestHandler):
    """A real TCP server on 127.0.0.1 that accepts each HTTP request and closes the connection unanswered."""

    def handle(self) -> None:
        self.request.recv(65536)


@pytest.fixture
def dropping_gateway() -> Iterator[str]:
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _DroppingGateway) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{server.server_address[1]}"
        server.shutdown()


def test_dropped_connections_of_the_real_client_are_transient(dropping_gateway: str, tmp_path: Path) -> None:
    """requests' ConnectionError from the real databento.Historical is retried (issue 13 item 7)."""
    source = DatabentoResource(gateway=dropping_gateway)
    with pytest.raises(DatabentoError, match="partition 2023-12-26: Databento cost query failed") as err:
        source.download_day(ESH4_DAY, tmp_path)
    assert isinstance(err.value.__cause__, requests.ConnectionError)
    assert err.value.transient
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (requests.ReadTimeout("read timed out"), True),
        (requests.ConnectionError("reset"), True),
        (BentoClientError(http_status=429, message="rate limited"), True),
        (BentoClientError(http_status=400, message="bad symbol"), False),
        (ValueError("bad"), False),
    ],
)
def test_transient_classification(exc: Exception, transient: bool) -> None:
    assert _is_transient(exc) is transient


def test_api_key_never_reaches_dagster_home_or_the_lake(
    instance: dg.DagsterInstance, tmp_path: Path, lake: Lake, landing: Path
) -> None:
    """The key lives only in the environment: no config field can hold it (issue 13 item 8)."""
    assert "api_key" not in DatabentoResource.model_fields
    assert materialize_from_databento(instance, lake, landing).success
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and SECRET_KEY.encode() in p.read_bytes()]
    assert leaked == []
