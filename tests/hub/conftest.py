"""Hub fixtures: every storage test runs on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.storage import open_storage
from hub.storage.base import Storage
from hub.storage.sqlite import SQLiteStorage


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A hub database URL: SQLite in a temp dir, or a fresh database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """An empty hub storage: SQLite in a temp dir, or a fresh database on the session's PostgreSQL."""
    if request.param == "sqlite":
        store: Storage = SQLiteStorage(tmp_path / "hub.db")
    else:
        store = open_storage(request.getfixturevalue("postgres_url"))
    try:
        yield store
    finally:
        store.close()
