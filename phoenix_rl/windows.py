"""Evaluation windows: train < validation < test, separated by an embargo, checked before anything runs.

Every object fitted once (the HMM, the agent, hyperparameters, the tuned rule's thresholds) must end before
the validation window, and validation before test, so each judgement is out of sample. `embargo_days` trade
dates (Mon-Fri) must lie strictly between consecutive windows. Purging needs no extra days at trade-date
granularity: the env is forced flat before every 16:00 CT halt, so no reward of a training day depends on a
later day's prices. Rolling point-in-time estimators (trailing z-scores, the Stoikov microprice fit on the
previous days, the forward-filtered regime probabilities) are refreshed as time passes and never see their
own bar's future; they are not "fitted objects" here.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["EvaluationWindows", "trade_dates_strictly_between", "window_problems"]

Window = tuple[dt.date, dt.date]


def trade_dates_strictly_between(a: dt.date, b: dt.date) -> int:
    """Mon-Fri dates d with a < d < b (exchange holidays are not modelled); 0 when b <= a + 1 day."""
    if b <= a:
        return 0
    return int(np.busday_count(a + dt.timedelta(days=1), b))


def window_problems(spans: list[tuple[str, Window]], embargo_days: int) -> list[str]:
    """Problems of consecutive windows in time order: each must end before the next starts, embargo apart."""
    found = [] if embargo_days >= 0 else [f"embargo_days must be >= 0 (got {embargo_days})"]
    for name, (start, end) in spans:
        if end < start:
            found.append(f"{name} ends {end} before it starts {start}")
    for (a, (_, a_end)), (b, (b_start, _)) in itertools.pairwise(spans):
        gap = trade_dates_strictly_between(a_end, b_start)
        if b_start <= a_end:
            found.append(f"{b} starts {b_start}, not after {a} ends {a_end}")
        elif gap < embargo_days:
            found.append(
                f"only {gap} trade date(s) between {a} (ends {a_end}) and {b} (starts {b_start}); "
                f"the embargo is {embargo_days}"
            )
    return found


def _date(value: str | dt.date) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


@dataclass(frozen=True)
class EvaluationWindows:
    """Inclusive trade-date windows and the embargo between them."""

    train: Window
    val: Window
    test: Window
    embargo_days: int = 0

    @classmethod
    def from_mapping(cls, windows: Mapping[str, tuple[str, str]], embargo_days: int = 0) -> EvaluationWindows:
        """From {"train": (start, end), "val": ..., "test": ...} with ISO dates."""
        w = {k: (_date(s), _date(e)) for k, (s, e) in windows.items()}
        return cls(w["train"], w["val"], w["test"], embargo_days)

    def problems(self) -> list[str]:
        """Every way these windows let information leak (empty when they are sound)."""
        return window_problems([("train", self.train), ("val", self.val), ("test", self.test)], self.embargo_days)

    def validate(self) -> EvaluationWindows:
        found = self.problems()
        if found:
            raise ValueError(f"evaluation windows {self.describe()}: " + "; ".join(found))
        return self

    def fitted_problems(self, fitted: Mapping[str, tuple[str, str] | None]) -> list[str]:
        """Fitted-once objects (name -> fit window) must end, with the embargo, before validation starts."""
        found = []
        val_start = self.val[0]
        for name, window in fitted.items():
            if window is None:
                continue
            end = _date(window[1])
            if end >= val_start:
                found.append(f"{name} was fitted on data up to {end}, not before validation starts {val_start}")
            elif trade_dates_strictly_between(end, val_start) < self.embargo_days:
                found.append(
                    f"{name} was fitted up to {end}, inside the {self.embargo_days}-day embargo before {val_start}"
                )
        return found

    def describe(self) -> str:
        return (
            f"train {self.train[0]}..{self.train[1]}, val {self.val[0]}..{self.val[1]}, "
            f"test {self.test[0]}..{self.test[1]}, embargo {self.embargo_days}"
        )

    def train_fields(self) -> dict[str, object]:
        """The windows as TrainConfig's fields: train_start .. test_end (ISO) and embargo_days."""
        spans = {"train": self.train, "val": self.val, "test": self.test}
        fields: dict[str, object] = {
            f"{k}_{edge}": str(v[i]) for k, v in spans.items() for i, edge in enumerate(("start", "end"))
        }
        return fields | {"embargo_days": self.embargo_days}

    def as_dict(self) -> dict[str, object]:
        """For artifacts and metadata: ISO dates and the embargo."""
        spans = {"train": self.train, "val": self.val, "test": self.test}
        return {k: [s.isoformat(), e.isoformat()] for k, (s, e) in spans.items()} | {"embargo_days": self.embargo_days}
