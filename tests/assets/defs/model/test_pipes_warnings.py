"""`quiet_dagster_pipes_warnings` (defs/model/assets.py, around mamba_sac_model's Pipes session) silences exactly
the two warnings Dagster's own Pipes code raises, and nothing else; and Dagster still raises them (when it stops,
the filter can go)."""

import re
import sys
import warnings

import dagster as dg

from phoenix_assets.defs.model.assets import PIPES_WARNINGS, quiet_dagster_pipes_warnings

CHILD = (
    "from dagster_pipes import open_dagster_pipes\n"
    "with open_dagster_pipes() as pipes:\n"
    "    pipes.report_asset_materialization(metadata={'ok': 1})\n"
)
OWN = "a warning of Phoenix's own"


def _pipes_asset(quiet: bool) -> dg.AssetsDefinition:
    @dg.asset(name=f"pipes_{'quiet' if quiet else 'loud'}")
    def pipes_asset(context: dg.AssetExecutionContext, client: dg.PipesSubprocessClient) -> dg.MaterializeResult:
        with quiet_dagster_pipes_warnings() if quiet else warnings.catch_warnings():
            warnings.warn(OWN, DeprecationWarning, stacklevel=1)  # must still show
            return client.run(command=[sys.executable, "-c", CHILD], context=context).get_materialize_result()

    return pipes_asset


def _warnings_of_a_pipes_run(quiet: bool) -> list[tuple[type[Warning], str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = dg.materialize([_pipes_asset(quiet)], resources={"client": dg.PipesSubprocessClient()})
    assert result.success
    return [(w.category, str(w.message)) for w in caught]


def _matches(category: type[Warning], message: str, pattern: tuple[type[Warning], str]) -> bool:
    return issubclass(category, pattern[0]) and re.match(pattern[1], message, re.IGNORECASE) is not None


def test_quiet_dagster_pipes_warnings_silences_exactly_those_two() -> None:
    loud = _warnings_of_a_pipes_run(quiet=False)
    for pattern in PIPES_WARNINGS:  # Dagster still raises it (if not, drop it from PIPES_WARNINGS)
        assert any(_matches(*w, pattern) for w in loud), (pattern, loud)
    quiet = _warnings_of_a_pipes_run(quiet=True)
    assert not [w for w in quiet if any(_matches(*w, p) for p in PIPES_WARNINGS)], quiet
    assert (DeprecationWarning, OWN) in quiet  # only those two are silenced
