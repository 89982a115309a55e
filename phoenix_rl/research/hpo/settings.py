"""What defines a study besides its name, stored in the study so every worker runs the same search."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import optuna

from phoenix_rl.config import TrainConfig
from phoenix_rl.research.search_space import SearchSpace

SETTINGS_ATTR = "settings"


@dataclass(frozen=True)
class StudySettings:
    """What defines a study besides its name; stored in the study so every worker runs the same search."""

    base: TrainConfig
    space: SearchSpace = field(default_factory=SearchSpace)
    eval_every: int = 1_000  # environment steps between validation backtests; 0: only at the end
    pruner: str = "median"  # "median" or "none"
    seed: int = 1  # TPE seed (offset per worker and per resumption); every trial trains with base.seed

    def __post_init__(self) -> None:
        problems = []
        windows = self.base.windows()
        unset = [f"{w}_{e}" for w, (s, t) in windows.items() for e, v in (("start", s), ("end", t)) if v is None]
        if unset:  # their order and embargo are checked by TrainConfig itself (phoenix_rl.windows)
            problems.append(f"the windows {unset} must be set (ISO trade dates, inclusive)")
        if self.eval_every < 0:
            problems.append(f"eval_every must be >= 0 (got {self.eval_every})")
        if self.pruner not in ("median", "none"):
            problems.append(f"pruner must be 'median' or 'none' (got {self.pruner!r})")
        if problems:
            raise ValueError("StudySettings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base.to_dict(),
            "space": self.space.to_dict(),
            "eval_every": self.eval_every,
            "pruner": self.pruner,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudySettings:
        return cls(
            base=TrainConfig.from_dict(d["base"]),
            space=SearchSpace.from_dict(d["space"]),
            eval_every=int(d["eval_every"]),
            pruner=str(d["pruner"]),
            seed=int(d["seed"]),
        )

    def sampler(self, worker: int = 0, trials_before: int = 0) -> optuna.samplers.BaseSampler:
        """Multivariate TPE seeded per worker and per resumption (a resumed study must not redraw the random
        start-up points it already tried), deterministic for a given worker and study state."""
        seed = self.seed + 1000 * worker + 1_000_003 * trials_before
        return optuna.samplers.TPESampler(multivariate=True, seed=seed, constant_liar=True, n_startup_trials=5)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        if self.pruner == "none":
            return optuna.pruners.NopPruner()
        # as rl-baselines3-zoo: no pruning before a third of the training (early returns are mostly noise)
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=self.base.total_timesteps // 3)


def check_settings(study: optuna.Study, settings: StudySettings) -> None:
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, settings.to_dict())
        return
    mine = json.loads(json.dumps(settings.to_dict()))
    if stored != mine:
        diff = sorted(k for k in mine if stored.get(k) != mine[k])
        raise ValueError(
            f"hpo: study {study.study_name!r} was created with other settings ({diff} differ): its trials would "
            "not be comparable; use a new study name, or join it without settings (python -m phoenix_rl.research.hpo)"
        )


def load_settings(study_name: str, storage: optuna.storages.BaseStorage) -> StudySettings:
    """The settings a study was created with (a worker joining it)."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        raise ValueError(f"hpo: study {study_name!r} has no stored settings; start it with --config")
    return StudySettings.from_dict(stored)
