"""Ingest stage: synthetic or Databento DBN files in the landing folder -> `raw_mbp10` Delta table."""

import datetime as dt
from typing import Literal

import dagster as dg
from pydantic import Field

from phoenix_assets.defs.ingest.checks import RAW_CHECK_SPECS, RawDataRejected, raw_check_results, raw_gate
from phoenix_assets.defs.partitions import trade_date_partitions
from phoenix_assets.defs.resources import (
    DatabentoError,
    DatabentoResource,
    LakeResource,
    LandingResource,
    QualityThresholds,
)
from phoenix_assets.lib.check_outcome import CheckOutcome
from phoenix_assets.lib.ingest.raw_ingest import ingest_partition, reject_unreadable, select_files
from phoenix_assets.lib.io.dbn_reader import scan_dbn_files
from phoenix_assets.lib.schema import RAW_MBP10_SCHEMA, RAW_TABLE


class RawMbp10Config(dg.Config):
    source: Literal["landing", "databento"] = Field(
        default="landing",
        description="landing: DBN files already in the landing folder; databento: download first",
    )
    chunk_records: int = Field(default=65_536, description="Records decoded per chunk (bounds memory)")
    retry_base_seconds: float = Field(
        default=15.0,
        description="First back-off after a transient Databento error (doubles per retry, 3 retries)",
    )
    strict_landing: bool = Field(
        default=True,
        description="Fail on DBN files of another schema/dataset overlapping the day (else skip them)",
    )


def _iso(ns: int | None) -> str:
    return "n/a" if ns is None else dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).isoformat()


def _table_schema() -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in RAW_MBP10_SCHEMA])


@dg.asset(
    partitions_def=trade_date_partitions,
    group_name="ingest",
    kinds={"deltalake", "python"},
    check_specs=RAW_CHECK_SPECS,
    metadata={"dagster/column_schema": _table_schema(), "table": RAW_TABLE},
    description=(
        "Every Databento MBP-10 record of one CME trade date (16:00 CT D-1 to 16:00 CT D), lossless: prices "
        "int64 fixed-point 1e-9 with undefined -> null, timestamps int64 ns UTC. Partitioned by trade_date; "
        "re-materializing replaces the partition in one Delta transaction. Blocking checks run on the staged "
        "files before the commit: data that fails them is never committed (the previous version stays current)."
    ),
)
def raw_mbp10(
    context: dg.AssetExecutionContext,
    config: RawMbp10Config,
    lake: LakeResource,
    landing: LandingResource,
    databento: DatabentoResource,
    quality: QualityThresholds,
) -> dg.MaterializeResult:
    trade_date = dt.date.fromisoformat(context.partition_key)
    folder = landing.folder()
    if config.source == "databento":
        try:
            path = databento.download_day(trade_date, folder)
        except DatabentoError as exc:
            if exc.transient:  # retry with exponential back-off; data errors are not retried
                raise dg.RetryRequested(
                    max_retries=3, seconds_to_wait=config.retry_base_seconds * 2**context.retry_number
                ) from exc
            raise
        context.log.info(f"downloaded {path}")
    infos, unreadable = scan_dbn_files(folder)
    if config.strict_landing:
        reject_unreadable(unreadable, trade_date)
    for _, reason in unreadable:
        context.log.warning(f"landing: not a DBN file, ignored: {reason}")
    files, notes = select_files(infos, trade_date, landing.dataset, config.strict_landing)
    for note in notes:
        context.log.warning(note)
    context.log.info(f"partition {trade_date}: ingesting {[str(f.path) for f in files]}")
    the_lake = lake.lake()
    outcomes: dict[str, CheckOutcome] = {}
    gate = raw_gate(trade_date, quality, outcomes)
    try:
        stats, version = ingest_partition(
            the_lake, files, trade_date, config.chunk_records, before_commit=gate, on_batch=gate.observe
        )
    except RawDataRejected as exc:
        verdicts = {f"check {n}": f"{'passed' if o.passed else 'FAILED'}: {o.description}" for n, o in outcomes.items()}
        raise dg.Failure(description=str(exc), metadata=verdicts) from exc
    finally:
        gate.close()
    rate = stats.rows / stats.seconds if stats.seconds else 0.0
    context.log.info(f"partition {trade_date}: {stats.rows} records in {stats.seconds:.2f}s ({rate:,.0f}/s)")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": stats.rows,
            "first_ts_recv": _iso(stats.first_ts_recv),
            "last_ts_recv": _iso(stats.last_ts_recv),
            "instruments": sorted(stats.instruments),
            "symbols": sorted(stats.symbols),
            "bytes_read": stats.bytes_read,
            "records_per_second": round(rate),
            "files": dg.MetadataValue.json(stats.rows_per_file),
            "delta_version": version,
            "table_uri": dg.MetadataValue.path(the_lake.table_uri(RAW_TABLE)),
        },
        check_results=raw_check_results(outcomes),
    )
