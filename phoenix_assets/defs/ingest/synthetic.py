"""The embedded default source: a job that writes synthetic MNQ MBP-10 DBN files into the landing folder.

Real DBN files (not a shortcut past the reader), so `raw_mbp10` ingests them exactly as it ingests
Databento downloads. See `phoenix_assets.lib.synthetic.market` for the market model and its planted edge.
"""

import datetime as dt

import dagster as dg
from pydantic import Field

from phoenix_assets.defs.partitions import trade_date_partitions
from phoenix_assets.defs.resources import LandingResource
from phoenix_assets.lib.synthetic.market import SyntheticMarketConfig, write_day

_DEFAULT = SyntheticMarketConfig()


class SyntheticMarketRunConfig(dg.Config):
    """Launchpad mirror of `SyntheticMarketConfig` (the generator's own dataclass). Its defaults are the embedded
    default market of `./phoenix demo`: busier than the generator's and with a minutes-long planted edge that
    pays a round trip's costs, so an agent has something real to learn (`ofi_strength=0` is the control)."""

    seed: int = _DEFAULT.seed
    records_per_day: int = Field(
        default=200_000, description="Approximate records per trade date (enough that no in-session minute is empty)"
    )
    ofi_strength: float = Field(default=0.5, description="Planted OFI -> future mid link; 0 = none")
    flow_halflife_s: float = Field(
        default=300.0,
        description="Half-life of the order flow that drives the planted link: minutes-long, so a 1-minute bar's "
        "OFI predicts the next minutes' drift by more than a round trip costs (a tradeable edge)",
    )
    roll_date: str | None = Field(
        default=_DEFAULT.roll_date.isoformat() if _DEFAULT.roll_date else None,
        description="Trade dates from this one on trade the next contract (new instrument_id)",
    )

    def market(self) -> SyntheticMarketConfig:
        return SyntheticMarketConfig(
            seed=self.seed,
            records_per_day=self.records_per_day,
            ofi_strength=self.ofi_strength,
            flow_halflife_s=self.flow_halflife_s,
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
