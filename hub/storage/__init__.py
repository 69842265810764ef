"""Hub storage: one interface (:class:`Storage`), SQLite and PostgreSQL implementations."""

from __future__ import annotations

from hub.storage.base import EdgeState, Incident, NewIncident, Storage

__all__ = ["EdgeState", "Incident", "NewIncident", "Storage", "open_storage", "parse_database_url"]


def parse_database_url(url: str) -> tuple[str, str]:
    """``sqlite:///relative.db`` / ``sqlite:////abs/path.db`` / ``postgresql://...`` -> (kind, target)."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not path:
            raise ValueError(f"database URL {url!r} names no file (sqlite:///relative.db or sqlite:////abs.db)")
        return "sqlite", path
    if url == "sqlite://" or url == "sqlite:///:memory:":
        return "sqlite", ":memory:"
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        return "postgresql", url.replace("postgresql+psycopg://", "postgresql://", 1)
    raise ValueError(
        f"unsupported database URL {url!r}: use sqlite:///relative.db, sqlite:////absolute/path.db "
        "or postgresql://user@host:port/db"
    )


def open_storage(url: str, *, migrate: bool = True) -> Storage:
    """The storage at ``url``, its schema brought up to date (``hub.storage.migrations``); with
    ``migrate`` off, MigrationsPending when the database needs migrations first."""
    kind, target = parse_database_url(url)
    if kind == "sqlite":
        from hub.storage.sqlite import SQLiteStorage

        return SQLiteStorage(target, migrate=migrate)
    from hub.storage.postgres import PostgresStorage

    return PostgresStorage(target, migrate=migrate)
