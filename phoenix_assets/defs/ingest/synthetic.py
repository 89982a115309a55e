"""The embedded default source: a job that writes synthetic MNQ MBP-10 DBN files into the landing folder.

Real DBN files (not a shortcut past the reader), so `raw_mbp10` ingests them exactly as it ingests
Databento downloads. See `phoenix_assets.lib.synthetic.market` for the market model and its planted edge.
"""

import datetime as dt

import dagster as dg
from pydantic import Field

from phoenix_assets.defs.config import config_from_dataclass
from phoenix_assets.defs.partitions import trade_date_partitions
from phoenix_assets.defs.resources import LandingResource
from phoenix_assets.lib.synthetic.market import DEMO_MARKET, SyntheticMarketConfig, write_day

_MarketSettings = config_from_dataclass(
    "MarketSettings",
    SyntheticMarketConfig,
    "phoenix_assets.lib.synthetic.market.SyntheticMarketConfig, defaults of DEMO_MARKET",
    only=("seed", "records_per_day", "ofi_strength", "flow_halflife_s"),
    defaults=DEMO_MARKET,
)


class SyntheticMarketRunConfig(_MarketSettings):  # type: ignore[misc,valid-type]
    """Launchpad mirror of `SyntheticMarketConfig` (the generator's own dataclass: fields and descriptions). Its
    defaults are `DEMO_MARKET`, the embedded default market of `./phoenix demo` (`ofi_strength=0` is the
    control); the generator's other fields keep their defaults."""

    roll_date: str | None = Field(  # an ISO date: Dagster config has no date type
        default=DEMO_MARKET.roll_date.isoformat() if DEMO_MARKET.roll_date else None,
        description=SyntheticMarketConfig.__dataclass_fields__["roll_date"].metadata["doc"],
    )

    def market(self) -> SyntheticMarketConfig:
        return SyntheticMarketConfig(
            **self.model_dump(exclude={"roll_date"}),
            roll_date=dt.date.fromisoformat(self.roll_date) if self.roll_date else None,
        )


@dg.op(description="Write one trade date of synthetic MNQ MBP-10 records as a .dbn.zst file into the landing folder")
def write_synthetic_day(
    context: dg.OpExecutionContext, config: SyntheticMarketRunConfig, landing: LandingResource
) -> str:
    trade_date = dt.date.fromisoformat(context.partition_key)
    path = write_day(trade_date, landing.folder(), config.market())
    context.log.info(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return str(path)


@dg.job(
    partitions_def=trade_date_partitions,
    description="Land synthetic MBP-10 data for one trade date (the embedded default; no credentials needed)",
    tags={"phoenix/source": "synthetic"},
)
def synthetic_landing_job() -> None:
    write_synthetic_day()
