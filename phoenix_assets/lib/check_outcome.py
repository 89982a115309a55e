"""The result of one data-quality check, shared by every stage's checks (the assets turn it into an
`AssetCheckResult`): a leaf module, so checks of any stage can return it without importing another stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CheckOutcome"]


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)
