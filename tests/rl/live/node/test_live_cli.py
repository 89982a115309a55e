"""`./phoenix live` end to end on a small lake (the paper CLI's module lake: synthetic days, a trained tiny model):
a replayed day on the Sandbox node journals the same orders and fills as `./phoenix paper` on that day; the IB
venue refuses what it cannot do before touching anything, naming the setting."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from phoenix_assets.cli import live, paper
from phoenix_assets.lib.io.lake import Lake
from phoenix_rl.live.risk import RiskConfig
from tests.assets.cli.test_paper_cli import DAYS, FAST, FollowOfi, base_lake, short_feed  # noqa: F401

DAY = DAYS[3]


def test_ib_without_its_settings_or_with_a_replay_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IB_ACCOUNT_ID", "PHOENIX_IB_CONTRACT_MONTH", "PHOENIX_LIVE_VENUE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit, match="IB_ACCOUNT_ID is not set"):
        live.main(["--venue", "ib", "--live"])
    monkeypatch.setenv("IB_ACCOUNT_ID", "DU1234567")
    monkeypatch.setenv("PHOENIX_IB_CONTRACT_MONTH", "202403")
    monkeypatch.setenv("IB_PASSWORD", "hunter2-secret")
    with pytest.raises(SystemExit, match="takes --live data only"):
        live.main(["--venue", "ib", "--start", "2024-03-14"])


@pytest.fixture
def rule(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Both CLIs trade the FollowOfi rule under the thin feed's limits on the short feed."""
    for cli in (paper, live):
        load = cli.load_latest_model
        monkeypatch.setattr(
            cli, "load_latest_model", lambda lake, load=load: (lambda v, m, s: (v, FollowOfi(m), s))(*load(lake))
        )
        monkeypatch.setattr(
            cli,
            "risk_config",
            lambda env_cfg, budget: RiskConfig(
                max_position=1, max_data_age_s=120.0, max_feed_gap_s=900.0, latency_budget_ms=6e4
            ),
        )
    feed = short_feed()
    monkeypatch.setattr(paper, "raw_records", feed)
    monkeypatch.setattr(live, "raw_records", feed)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGUSR1)}
    yield
    for s, h in handlers.items():
        signal.signal(s, h)


@pytest.mark.slow
def test_a_replayed_day_on_the_node_journals_the_paper_runs_orders_and_fills(
    base_lake: Path,  # noqa: F811
    tmp_path: Path,
    rule: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    root = tmp_path / "lake"
    shutil.copytree(base_lake / "lake", root)
    day = ["--start", str(DAY), "--end", str(DAY)]
    assert paper.main(["--lake", str(root), *day, "--strategy", "viapaper", *FAST]) == 0
    assert live.main(["--lake", str(root), *day, "--strategy", "vianode"]) == 0
    out = capsys.readouterr().out
    assert "venue='sandbox'" in out and f"{DAY}: " in out and "faults none" in out
    lake = Lake(str(root))

    def journal(strategy: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        orders = lake.scan("paper_orders").filter(pl.col("strategy") == strategy).collect()
        fills = lake.scan("paper_fills").join(orders.lazy().select("client_order_id"), on="client_order_id").collect()
        key = pl.col("client_order_id").str.replace(f"^{strategy}:", "")
        return (
            orders.select(key, "quantity").sort("client_order_id"),
            fills.select(key, "quantity", "price", "commission_usd").sort("client_order_id", "price", "quantity"),
        )

    (po, pf), (no, nf) = journal("viapaper"), journal("vianode")
    assert no.height > 5 and no.equals(po)
    assert nf.equals(pf)
    assert nf["quantity"].sum() == 0  # the day ends flat
    assert not list((root / "_wal").glob("*.wal")) or all(p.stat().st_size == 0 for p in (root / "_wal").glob("*.wal"))
