"""Fixtures of the PostgreSQL instance tests: a fresh database per test (tests/assets/defs/ops/pg_support.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from tests.assets.defs.ops.pg_support import server_url


@pytest.fixture
def dagster_pg_url() -> Iterator[str]:
    """A new, empty database on the test server, dropped afterwards; its SQLAlchemy URL with psycopg2 named (a
    bare postgresql:// means psycopg 3 to SQLAlchemy 2.1, which is not installed)."""
    import psycopg2

    server = make_url(server_url()).set(drivername="postgresql")
    name = f"phoenix_dagster_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(server.render_as_string(hide_password=False))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield server.set(drivername="postgresql+psycopg2", database=name).render_as_string(hide_password=False)
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()
