"""Hub fixtures: every storage test runs on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.storage import open_storage
from hub.storage.base import Storage
from hub.storage.sqlite import SQLiteStorage


# Every storage test runs on SQLite and on PostgreSQL in both of the hub's layouts: plain (native
# partitions, BRIN) and TimescaleDB (hypertable, compression), the latter skipped, saying why,
# where the extension is not installed.
BACKENDS = ["sqlite", pytest.param("postgres-plain", marks=pytest.mark.postgres),
            pytest.param("postgres-timescaledb", marks=pytest.mark.postgres)]
_URL_FIXTURE = {"postgres-plain": "postgres_url", "postgres-timescaledb": "timescale_url"}


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A hub database URL: SQLite in a temp dir, or a fresh database on a session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    return request.getfixturevalue(_URL_FIXTURE[request.param])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A hub database URL on SQLite or plain PostgreSQL, for tests of processes sharing one database
    rather than of the storage layouts."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """An empty hub storage: SQLite in a temp dir, or a fresh database on a session's PostgreSQL."""
    if request.param == "sqlite":
        store: Storage = SQLiteStorage(tmp_path / "hub.db")
    else:
        store = open_storage(request.getfixturevalue(_URL_FIXTURE[request.param]))
        if request.param == "postgres-timescaledb" and store.backend != "timescaledb":  # not plain in disguise
            store.close()
            pytest.fail(f"the TimescaleDB server gave the {store.backend!r} layout")
    try:
        yield store
    finally:
        store.close()
