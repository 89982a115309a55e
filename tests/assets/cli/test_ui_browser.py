"""End to end through the Dagster UI, in Debian's Chromium driven by Playwright.

The quick demo's data (`--quick`: synthetic MNQ 2024-03-13..15 through every asset up to `evaluation_metrics`)
is built into a temporary DAGSTER_HOME and lake; `dagster dev` serves it on 127.0.0.1; the browser then checks
what a user sees: the asset graph in its groups, every asset's description and partitions in the
catalog, the sensors and the schedule; it launches ONE partition of `book_snapshots_1s` from the asset
page's launch dialog and waits for the queued run (the daemon started by `dagster dev` dequeues it) to
succeed, then a backfill of a range of its partitions from the same dialog until the daemon has run it,
and opens `evaluation_metrics` to find the equity-curve PNG and the metrics table.

Screenshots (01_asset_graph.png ... 09_metrics.png, failure.png when a step fails) go to
`$PHOENIX_SCREENSHOTS` when set, else to the test's tmp_path/screenshots. Runs ~1.5-4 minutes on 2 cores
(the demo is most of it). Skipped where no Chromium or no Playwright is installed; `.ci/run` installs
Chromium, so CI runs it. Skip it locally with `-m "not browser"`.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import dagster as dg
import pytest

from phoenix_assets.defs.ops.dagster_internals import BulkActionStatus
from tests.ui_support import CHROMIUM_ARGS, DagsterDev, chromium_path, phoenix_env, prepare_dagster_home, run_demo, tail

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
Page = sync_api.Page
Locator = sync_api.Locator
expect = sync_api.expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(chromium_path() is None, reason="no Chromium (/usr/bin/chromium); .ci/run installs it"),
]

GROUPS = {
    "ingest": ["raw_mbp10"],
    "microstructure": ["book_snapshots_1s", "ofi_bars_1m"],
    "features": ["hmm_regime_model", "hmm_regimes", "features_1m"],
    "model": ["mamba_sac_model"],
    "evaluation": ["backtests", "evaluation_metrics"],
    "research": ["walk_forward", "ablation_report", "hpo_study"],
    "paper": ["paper_daily_report", "paper_track_record"],
}
AUTOMATIONS = [
    "landing_sensor",
    "phoenix_automation",
    "record_run_failure",
    "retrain_sensor",
    "run_worker_sweep",
    "databento_daily",
]
LAUNCH_ASSET, LAUNCH_PARTITION = "book_snapshots_1s", "2024-03-14"
BACKFILL_PARTITIONS = ["2024-03-13", "2024-03-14", "2024-03-15"]  # a range, launched as an asset backfill
UI_TIMEOUT_MS = 60_000  # one page or dialog on 2 busy cores
RUN_TIMEOUT_MS = 240_000  # queued -> daemon -> run worker (imports torch) -> success
BACKFILL_DONE = {
    BulkActionStatus.COMPLETED,
    BulkActionStatus.COMPLETED_SUCCESS,
    BulkActionStatus.COMPLETED_FAILED,
    BulkActionStatus.FAILED,
    BulkActionStatus.CANCELED,
}


def test_dagster_ui_graph_launch_one_partition_and_evaluation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shots = Path(os.environ.get("PHOENIX_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    home = tmp_path / "dagster_home"
    prepare_dagster_home(home)
    env = phoenix_env(home, tmp_path / "lake", tmp_path / "landing")
    run_demo(env, tmp_path / "demo.log")

    monkeypatch.setenv("DAGSTER_HOME", str(home))  # for the instance read below: dagster.yaml's storage reads it
    with DagsterDev(env, tmp_path / "dagster_dev.log") as dev, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        expect.set_options(timeout=UI_TIMEOUT_MS)
        try:
            check_asset_graph(page, dev.url, shots)
            check_catalog(page, dev.url, shots)
            check_sensors(page, dev.url, shots)
            run_id = launch_one_partition(page, dev.url, shots)
            backfill_id = launch_backfill(page, dev.url, shots, home)
            check_evaluation(page, dev.url, shots)
        except Exception:
            page.screenshot(path=shots / "failure.png", full_page=True)
            print(f"dagster dev log ({dev.log}):\n{tail(dev.log, 80)}")
            raise
        finally:
            browser.close()
    assert dev.leftovers == [], f"processes of dagster dev survived its shutdown: {dev.leftovers}"

    # What the UI launched is what the instance recorded: that run, that partition, succeeded; the backfill ran
    # one successful run per partition of the range.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags.get("dagster/partition") == LAUNCH_PARTITION
        assert run.asset_selection == {dg.AssetKey(LAUNCH_ASSET)}
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert sorted(r.tags["dagster/partition"] for r in runs) == BACKFILL_PARTITIONS
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [(r.run_id, r.status) for r in runs]
    assert sorted(p.name for p in shots.glob("*.png")) == [
        "01_asset_graph.png",
        "02_catalog.png",
        "03_automation.png",
        "04_launch_dialog.png",
        "05_run_success.png",
        "06_backfill_dialog.png",
        "07_backfill_done.png",
        "08_equity_curves.png",
        "09_metrics.png",
    ]


def check_asset_graph(page: Page, url: str, shots: Path) -> None:
    """Global asset lineage, groups expanded (graph settings -> Expand all groups): groups and assets visible."""
    page.goto(f"{url}/asset-groups")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    for group in GROUPS:  # the sidebar lists the groups, the graph draws them collapsed
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    page.get_by_role("button", name="settings", exact=True).click()  # the graph's gear, bottom right
    page.get_by_role("menuitem", name="Expand all groups").click()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="panel_show_right", exact=True).click()  # hide the asset tree: room for the graph
    for assets in GROUPS.values():
        for asset in assets:
            expect(page.get_by_text(asset, exact=True).first).to_be_visible()
    page.wait_for_timeout(1_000)  # let the graph finish its zoom-to-fit animation
    page.screenshot(path=shots / "01_asset_graph.png")


def check_catalog(page: Page, url: str, shots: Path) -> None:
    """The catalog: one row per asset with its group, the start of its description, and partitions where
    it is partitioned (the descriptions come from the definitions themselves)."""
    from phoenix_assets.definitions import defs

    specs = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}
    assert {a for assets in GROUPS.values() for a in assets} <= set(specs)
    page.goto(f"{url}/assets")
    # The catalog is a virtualized div table without ARIA rows: a row is the VirtualizedTable row holding
    # the asset's link.
    rows = page.locator("[class*='VirtualizedTable_row']")
    for group, assets in GROUPS.items():
        for asset in assets:
            spec = specs[asset]
            assert spec.group_name == group and spec.description, asset
            row = rows.filter(has=page.locator(f"a[href='/assets/{asset}']"))
            expect(row).to_contain_text(spec.description[:40])
            expect(row).to_contain_text(group)
            if spec.partitions_def is not None:
                expect(row).to_contain_text(re.compile(r"[\d,]+ partitions"))
    page.screenshot(path=shots / "02_catalog.png")


def check_sensors(page: Page, url: str, shots: Path) -> None:
    page.goto(f"{url}/automation")
    for sensor in AUTOMATIONS:
        expect(page.get_by_text(sensor, exact=True)).to_be_visible()
    expect(page.get_by_text("Automation condition sensor")).to_be_visible()
    page.screenshot(path=shots / "03_automation.png")


def open_materialize_dialog(page: Page, url: str) -> Locator:
    """The asset page's Materialize… dialog, its date range widened to All time."""
    page.goto(f"{url}/assets/{LAUNCH_ASSET}")
    page.get_by_role("button", name="Materialize…").click()
    # (the range menu below is a dialog-role popover too: name the launch dialog by its title)
    dialog = page.get_by_role("dialog").filter(has_text=f"Launch runs to materialize {LAUNCH_ASSET}")
    expect(dialog).to_be_visible()
    # The dialog offers only the last 90 days by default (the demo's dates are older on any current clock):
    # its range menu -> All time. The range button appears once the partition status has loaded.
    date_range = dialog.get_by_role("button", name=re.compile(r"Last \d+ days|All time|This month|Last month"))
    expect(date_range).to_be_visible()
    if "All time" not in date_range.inner_text():
        date_range.click()
        page.get_by_role("menuitem", name="All time").click()
    expect(date_range).to_contain_text("All time")
    return dialog


def launch_from_dialog(page: Page, url: str, shot: Path, partitions: str, count: str, button: str, toast: str) -> str:
    """Materialize… -> type `partitions` -> the dialog counts `count` -> `button`; returns the toast's id group."""
    dialog = open_materialize_dialog(page, url)
    partition_box = dialog.get_by_role("textbox")
    partition_box.fill(partitions)
    partition_box.press("Enter")
    expect(dialog).to_contain_text(count)
    launch = dialog.get_by_role("button", name=button)
    expect(launch).to_be_enabled()
    page.screenshot(path=shot)
    launch.click()
    message = page.get_by_text(re.compile(toast)).first
    expect(message).to_be_visible()
    return re.search(toast, message.inner_text()).group(1)  # type: ignore[union-attr]


def launch_backfill(page: Page, url: str, shots: Path, home: Path) -> str:
    """Materialize… -> a partition range -> Launch backfill -> the daemon runs it; returns the backfill id.

    Waits on the instance (the backfill's own status), then shows the backfill's page."""
    partitions = f"[{BACKFILL_PARTITIONS[0]}...{BACKFILL_PARTITIONS[-1]}]"
    count = f"{len(BACKFILL_PARTITIONS)} partitions"
    shot, toast = shots / "06_backfill_dialog.png", r"Created backfill ([a-z]{8})"
    backfill_id = launch_from_dialog(page, url, shot, partitions, count, "Launch backfill", toast)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        deadline = time.monotonic() + RUN_TIMEOUT_MS / 1000
        while (backfill := instance.get_backfill(backfill_id)) is None or backfill.status not in BACKFILL_DONE:
            assert time.monotonic() < deadline, f"backfill {backfill_id} not done: {backfill and backfill.status}"
            time.sleep(2)
    assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, backfill.status
    page.goto(f"{url}/runs/b/{backfill_id}")
    expect(page.get_by_text(backfill_id).first).to_be_visible()
    expect(page.get_by_text("Succeeded", exact=True).first).to_be_visible()  # the backfill's status
    expect(page.get_by_text("100% completed").first).to_be_visible()  # the asset's progress bar
    page.screenshot(path=shots / "07_backfill_done.png")
    return backfill_id


def launch_one_partition(page: Page, url: str, shots: Path) -> str:
    """Asset page -> Materialize… -> type the partition key -> Launch 1 run -> toast's View -> run page -> Success.

    Returns the run id (from the run page's URL)."""
    prefix = launch_from_dialog(
        page, url, shots / "04_launch_dialog.png", LAUNCH_PARTITION, "1 partition", "Launch 1 run",
        r"Launched run ([0-9a-f]{8})",
    )  # fmt: skip
    # The toast's View button may fade before it can be clicked on busy cores: go through the runs list.
    page.goto(f"{url}/runs")
    page.locator(f"a[href^='/runs/{prefix}']").first.click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run_id = page.url.split("/runs/")[1].split("?")[0].split("/")[0]
    expect(page.get_by_text(f"partition: {LAUNCH_PARTITION}")).to_be_visible()
    done = page.get_by_text("Success", exact=True).or_(page.get_by_text("Failure", exact=True))
    expect(done.first).to_be_visible(timeout=RUN_TIMEOUT_MS)  # the page polls the run; no reload needed
    page.wait_for_timeout(1_000)  # the event log catches up with the status tag
    page.screenshot(path=shots / "05_run_success.png")
    expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=1_000)
    return run_id


def check_evaluation(page: Page, url: str, shots: Path) -> None:
    """evaluation_metrics' metadata: `equity_curves` renders the base64 PNG, `metrics` the table."""
    page.goto(f"{url}/assets/evaluation_metrics")
    equity_row = page.get_by_role("row").filter(has=page.get_by_text("equity_curves", exact=True))
    equity_row.get_by_text("[Show Markdown]").click()
    png = "img[src^='data:image/png;base64,']"
    dialog = page.get_by_role("dialog").filter(has=page.locator(png))
    image = dialog.locator(png).first
    expect(image).to_be_visible()
    natural = image.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
    assert natural[0] and natural[1] > 200 and natural[2] > 200, f"equity curve PNG not decoded: {natural}"
    for text in ("agent", "flat", "buy_and_hold", "Sortino"):
        expect(dialog).to_contain_text(text)
    page.screenshot(path=shots / "08_equity_curves.png")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()

    metrics_row = page.get_by_role("row").filter(has=page.get_by_text("metrics", exact=True))
    metrics_row.get_by_text("[Show Markdown]").click()
    table = page.get_by_role("dialog").filter(has_text="max_drawdown_pct").get_by_role("table")
    for text in ("strategy", "sortino", "max_drawdown_pct", "agent", "flat", "ofi_threshold"):
        expect(table).to_contain_text(text)
    expect(table.get_by_role("row").filter(has_text="agent").first).to_be_visible()
    page.screenshot(path=shots / "09_metrics.png")
