"""Dagster config generated from the dataclass that defines the settings, so a field or default is typed once.

Training (`MambaSacConfig`, defs/model/config.py), the HPO study (defs/research/hpo.py), the go-live gate
(`PaperGateConfig`, defs/paper/assets.py) and the synthetic landing job (`SyntheticMarketRunConfig`,
defs/ingest/synthetic.py) each take their launchpad fields from `phoenix_rl` / `lib` dataclasses this way.
"""

import dataclasses
import typing
from typing import Any

import dagster as dg
import pydantic
from pydantic import Field

__all__ = ["config_from_dataclass"]


def config_from_dataclass(
    name: str,
    source: type,
    doc: str,
    exclude: tuple[str, ...] = (),
    nested: dict[str, type[dg.Config]] | None = None,
    *,
    only: tuple[str, ...] | None = None,
    defaults: object | None = None,
) -> type[dg.Config]:
    """A `dg.Config` subclass with one field per field of the dataclass `source` (same name, type, default or
    default factory, `metadata["doc"]` as description), minus `exclude`, or just the fields in `only`; fields
    named in `nested` take that config class instead (its defaults, through its own default factory).
    `defaults`, an instance of `source`, supplies the defaults instead of the dataclass's own."""
    nested = nested or {}
    names = {f.name for f in dataclasses.fields(source)}
    unknown = sorted({*exclude, *nested, *(only or ())} - names)
    if unknown:
        raise ValueError(f"config_from_dataclass({name}): {source.__name__} has no field(s) {unknown}")
    if defaults is not None and not isinstance(defaults, source):
        raise TypeError(f"config_from_dataclass({name}): defaults must be a {source.__name__}")
    hints = typing.get_type_hints(source)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(source):
        if f.name in exclude or (only is not None and f.name not in only):
            continue
        desc = f.metadata.get("doc")
        if f.name in nested:
            fields[f.name] = (nested[f.name], Field(default_factory=nested[f.name], description=desc))
        elif defaults is not None:
            fields[f.name] = (hints[f.name], Field(default=getattr(defaults, f.name), description=desc))
        elif f.default_factory is not dataclasses.MISSING:
            fields[f.name] = (hints[f.name], Field(default_factory=f.default_factory, description=desc))
        else:
            fields[f.name] = (hints[f.name], Field(default=f.default, description=desc))
    return pydantic.create_model(name, __base__=dg.Config, __doc__=doc, __module__=__name__, **fields)
