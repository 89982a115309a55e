"""Where a study lives: an RDB shared by machines ($PHOENIX_OPTUNA_STORAGE) or a journal file in a local lake."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import optuna

STORAGE_ENV = "PHOENIX_OPTUNA_STORAGE"


STUDY_DIR = "optuna"


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _with_driver(url: str) -> str:
    """postgresql://... without a driver -> postgresql+psycopg2://... (SQLAlchemy 2.1 defaults to psycopg 3;
    Phoenix depends on psycopg2-binary). Any other URL as given."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


def storage_url(url: str | None = None) -> str | None:
    """`url`, else $PHOENIX_OPTUNA_STORAGE (read now, not at import), else None (a journal file)."""
    return url or os.environ.get(STORAGE_ENV) or None


def optuna_storage(
    study_name: str, lake_root: str | None = None, url: str | None = None
) -> tuple[optuna.storages.BaseStorage, str]:
    """(storage, label with any password redacted). `url`, else $PHOENIX_OPTUNA_STORAGE (read now, not at
    import), else the journal file <lake_root>/optuna/<study_name>.log (a local lake only)."""
    url = storage_url(url)
    if url:
        # heartbeat: a trial whose worker died is marked FAIL when a worker next starts optimising
        with warnings.catch_warnings():  # heartbeat_interval is "experimental" in Optuna 5.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                _with_driver(url), engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=60, grace_period=180
            )
        return storage, _redact(url)
    return journal_storage(study_name, lake_root)


def journal_storage(study_name: str, lake_root: str | None) -> tuple[optuna.storages.BaseStorage, str]:
    """The journal file <lake_root>/optuna/<study_name>.log (processes of one machine share it)."""
    if lake_root is None or "://" in lake_root:
        raise ValueError(
            f"hpo: no Optuna storage for study {study_name!r}: set {STORAGE_ENV} (e.g. postgresql://user@host/db), "
            f"or use a local lake (the journal file lives at <lake>/{STUDY_DIR}/<study>.log; lake: {lake_root!r})"
        )
    path = Path(lake_root) / STUDY_DIR / f"{study_name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path))), f"journal:{path}"
