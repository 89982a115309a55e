"""One way to declare and report asset checks: a table of `name -> (description, blocking)`.

Checks are evaluated inside the asset that writes the partition (the data are at hand) and are
partitioned like their asset, so a blocking failure gates exactly that partition's downstream.
Non-blocking checks report with WARN severity.
"""

import warnings

import dagster as dg

from phoenix_assets.lib.check_outcome import CheckOutcome

CheckTable = dict[str, tuple[str, bool]]


def check_specs(
    asset: str, checks: CheckTable, partitions_def: dg.PartitionsDefinition | None
) -> list[dg.AssetCheckSpec]:
    # Partitioned checks are "preview" in dagster 1.13; we rely on them deliberately, so the warning
    # (printed once per check at import) is silenced here only, not for the rest of dagster.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*partitions_def on an AssetCheckSpec")
        return [
            dg.AssetCheckSpec(
                name, asset=asset, description=description, blocking=blocking, partitions_def=partitions_def
            )
            for name, (description, blocking) in checks.items()
        ]


def check_results(asset: str, checks: CheckTable, outcomes: dict[str, CheckOutcome]) -> list[dg.AssetCheckResult]:
    assert outcomes.keys() == checks.keys(), f"{asset}: outcomes {sorted(outcomes)} != checks {sorted(checks)}"
    return [
        dg.AssetCheckResult(
            asset_key=asset,
            check_name=name,
            passed=o.passed,
            severity=dg.AssetCheckSeverity.ERROR if checks[name][1] else dg.AssetCheckSeverity.WARN,
            description=o.description,
            metadata=o.metadata,
        )
        for name, o in outcomes.items()
    ]
