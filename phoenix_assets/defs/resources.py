"""Resources: where the lake and the landing folder are, and how to reach Databento.

Values left empty are resolved when a run starts (never at import): first from the environment
(`PHOENIX_LAKE_URI`, `PHOENIX_LANDING_DIR`, `DATABENTO_API_KEY`), then from a default inside the
repository, so the embedded default needs no configuration and no credentials. Any field can also
be set in code or from the Dagster launchpad.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.instrument import MNQ
from phoenix_assets.lib.io.lake import OBJECT_STORE_SCHEMES, Lake, normalize_lake_root

REPO_ROOT = Path(__file__).resolve().parents[2]


def _setting(value: str | None, env: str, default: str | None) -> str | None:
    if value:
        return value
    return os.environ.get(env) or default


class LakeResource(dg.ConfigurableResource):
    """The Delta lake root: a local folder or `s3://bucket/prefix` (tables at `<root>/<table>`)."""

    uri: str | None = Field(default=None, description="Lake root; empty -> $PHOENIX_LAKE_URI -> <repo>/lake")
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "deltalake/object_store options for tables and artifacts (e.g. AWS_ENDPOINT_URL, AWS_REGION); AWS_* env "
            "vars apply too. On S3, conditional_put=etag unless set; unsafe-rename/locking-provider options are refused"
        ),
    )

    def lake(self) -> Lake:
        source = "LakeResource.uri" if self.uri else "PHOENIX_LAKE_URI"
        raw = _setting(self.uri, "PHOENIX_LAKE_URI", str(REPO_ROOT / "lake"))
        assert raw is not None
        root = normalize_lake_root(raw, source)
        if not root.startswith(OBJECT_STORE_SCHEMES):
            Path(root).mkdir(parents=True, exist_ok=True)
        return Lake(root=root, storage_options=dict(self.storage_options))


class LandingResource(dg.ConfigurableResource):
    """The folder where DBN files land (recognised by their metadata, not their names)."""

    path: str | None = Field(
        default=None, description="Landing folder; empty -> $PHOENIX_LANDING_DIR -> <repo>/landing"
    )
    dataset: str = Field(default=MNQ.dataset, description="Only files of this Databento dataset are ingested")

    def folder(self) -> Path:
        folder = Path(_setting(self.path, "PHOENIX_LANDING_DIR", str(REPO_ROOT / "landing")) or ".")
        folder = folder.expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return folder


class DatabentoError(RuntimeError):
    """The Databento source cannot be used (no key, too expensive, request failed).

    `transient` marks failures worth retrying (server errors, timeouts, dropped connections).
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def _is_transient(exc: Exception) -> bool:
    """Server errors, rate limits, timeouts and dropped connections are retried; bad requests are not.

    requests' ConnectionError/Timeout do not derive from the builtin ConnectionError/TimeoutError,
    so they are named explicitly (a dropped connection to the gateway was not retried before).
    """
    import requests
    from databento.common.error import BentoClientError, BentoServerError

    if isinstance(exc, BentoClientError):
        return exc.http_status == 429
    return isinstance(
        exc,
        BentoServerError | ConnectionError | TimeoutError | requests.ConnectionError | requests.Timeout,
    )


class DatabentoResource(dg.ConfigurableResource):
    """Databento historical API as a second source of MBP-10 days, with a cost guard."""

    api_key_env: str = Field(
        default="DATABENTO_API_KEY",
        description="NAME of the environment variable holding the key; the key itself is never config, so it "
        "cannot end up in the run storage",
    )
    dataset: str = MNQ.dataset
    symbols: list[str] = Field(default_factory=lambda: [MNQ.continuous_symbol])
    stype_in: str = "continuous"
    max_cost_usd: float = Field(default=5.0, description="Refuse any single request estimated above this")
    gateway: str | None = Field(default=None, description="Historical gateway URL; empty -> Databento's default")

    def _key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if not key:
            raise DatabentoError(
                f"No Databento API key: set {self.api_key_env} (named by the resource's api_key_env) to download from "
                "Databento, or put DBN files in the landing folder and use source='landing'."
            )
        return key

    def client(self) -> Any:
        """A `databento.Historical` client (tests substitute their own by overriding this)."""
        import databento as db

        if self.gateway:
            return db.Historical(self._key(), gateway=self.gateway)
        return db.Historical(self._key())

    def live_client(self) -> Any:
        """A `databento.Live` client subscribed to MBP-10 of `symbols` (`./phoenix paper --live`)."""
        import databento as db

        client = db.Live(key=self._key())
        client.subscribe(dataset=self.dataset, schema="mbp-10", stype_in=self.stype_in, symbols=self.symbols)
        return client

    def download_day(self, trade_date: dt.date, dest_folder: Path) -> Path:
        """Download one trade date of MBP-10 into `dest_folder` after checking its cost."""
        start, end = cal.trade_date_window(trade_date)
        client = self.client()
        request: dict[str, Any] = {
            "dataset": self.dataset,
            "symbols": self.symbols,
            "schema": "mbp-10",
            "stype_in": self.stype_in,
            "start": start,
            "end": end,
        }
        try:
            cost = float(client.metadata.get_cost(**request))
        except Exception as exc:
            raise DatabentoError(
                f"partition {trade_date}: Databento cost query failed: {exc}", transient=_is_transient(exc)
            ) from exc
        if cost > self.max_cost_usd:
            raise DatabentoError(
                f"partition {trade_date}: Databento estimates ${cost:.2f} for {self.symbols} mbp-10, above the "
                f"limit max_cost_usd=${self.max_cost_usd:.2f}; raise the limit to download it."
            )
        dest_folder.mkdir(parents=True, exist_ok=True)
        name = f"{self.dataset.lower().replace('.', '-')}-{'_'.join(self.symbols)}-{trade_date:%Y%m%d}.mbp-10.dbn.zst"
        target = dest_folder / name
        partial = target.with_suffix(".part")
        try:
            client.timeseries.get_range(**request, path=str(partial))
        except Exception as exc:
            partial.unlink(missing_ok=True)
            raise DatabentoError(
                f"partition {trade_date}: Databento download failed: {exc}", transient=_is_transient(exc)
            ) from exc
        partial.replace(target)
        return target


class QualityThresholds(dg.ConfigurableResource):
    """Thresholds of the raw data-quality checks."""

    tick_size: float = Field(default=MNQ.tick_size, description="Price grid of the instrument (MNQ/NQ/ES: 0.25)")
    max_crossed_share: float = Field(default=0.001, description="Crossed/locked share of in-session book states")
    max_gap_minutes: float = Field(default=15.0, description="Longest allowed silence inside continuous trading")
