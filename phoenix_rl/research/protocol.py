"""Pre-registration of a research protocol: its whole config hashed before any training starts.

Why: a protocol whose windows, arms, seeds or statistics were changed after its results were seen is a new
protocol. The hash is sha256 over canonical JSON (sorted keys, no whitespace, dates and other objects as
their str), so key order does not change it and any field does. The research assets record it first in
`research_protocols` and then tag every row of `research_daily_pnl` with it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["canonical_json", "protocol_hash"]


def canonical_json(config: Any) -> str:
    """One spelling of a config: sorted keys, compact separators, non-JSON values (dates, paths) as str."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str, allow_nan=False)


def protocol_hash(config: Any) -> str:
    """sha256 hex digest of `canonical_json(config)`."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()
