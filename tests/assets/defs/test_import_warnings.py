"""Loading the definitions prints no Dagster PreviewWarning (the demo's output is the report)."""

import subprocess
import sys

from tests.conftest import REPO


def test_definitions_import_prints_no_preview_warning() -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "default", "-c", "import phoenix_assets.cli.demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "PreviewWarning" not in proc.stderr, proc.stderr[-2000:]
