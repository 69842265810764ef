"""Hub storage: one interface (:class:`Storage`), SQLite and PostgreSQL implementations."""

from __future__ import annotations

from hub.storage.base import EdgeState, Incident, NewIncident, Storage

__all__ = ["EdgeState", "Incident", "NewIncident", "Storage", "check_read_database_url", "open_storage",
           "parse_database_url"]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")


def parse_database_url(url: str) -> tuple[str, str]:
    """``sqlite:///relative.db`` / ``sqlite:////abs/path.db`` / ``postgresql://...`` -> (kind, target)."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not path:
            raise ValueError(f"database URL {url!r} names no file (sqlite:///relative.db or sqlite:////abs.db)")
        return "sqlite", path
    if url == "sqlite://" or url == "sqlite:///:memory:":
        return "sqlite", ":memory:"
    if url.startswith(_POSTGRES_SCHEMES):
        return "postgresql", url.replace("postgresql+psycopg://", "postgresql://", 1)
    raise ValueError(
        f"unsupported database URL {url!r}: use sqlite:///relative.db, sqlite:////absolute/path.db "
        "or postgresql://user@host:port/db"
    )


def check_read_database_url(database_url: str, read_url: str) -> str:
    """The read replica's URL (``SENTINEL_READ_DATABASE_URL``, ``--read-database-url``) as libpq takes
    it; ValueError saying what is wrong: it must be a ``postgresql://`` URL, other than the primary's,
    beside a PostgreSQL primary (a streaming standby of it: ``hub.storage.read_replica``)."""
    what = "SENTINEL_READ_DATABASE_URL (--read-database-url)"
    kind, primary = parse_database_url(database_url)
    if kind != "postgresql":
        raise ValueError(f"{what}: a read replica is a streaming standby of a PostgreSQL primary, but the hub's "
                         f"database is {kind} ({database_url}); unset it, or use a PostgreSQL database")
    if not read_url.startswith(_POSTGRES_SCHEMES):
        scheme = read_url.split("://", 1)[0] + "://" if "://" in read_url else repr(read_url[:20])
        raise ValueError(f"{what}: not a PostgreSQL URL (it starts {scheme}): use postgresql://user@host:port/db, "
                         "the address of a streaming standby of the hub's database")
    target = read_url.replace("postgresql+psycopg://", "postgresql://", 1)
    if target == primary:
        raise ValueError(f"{what}: the same URL as the hub's database: give the standby's address, or unset it")
    return target


def open_storage(url: str, *, migrate: bool = True, read_url: str | None = None,
                 read_wait_s: float = 0.2) -> Storage:
    """The storage at ``url``, its schema brought up to date (``hub.storage.migrations``); with
    ``migrate`` off, MigrationsPending when the database needs migrations first. ``read_url``: a
    streaming standby of a PostgreSQL ``url`` that answers the history reads when it has caught up
    (waiting up to ``read_wait_s``; :mod:`hub.storage.read_replica`)."""
    kind, target = parse_database_url(url)
    replica = None if read_url is None else check_read_database_url(url, read_url)
    if kind == "sqlite":
        from hub.storage.sqlite import SQLiteStorage

        return SQLiteStorage(target, migrate=migrate)
    from hub.storage.postgres import PostgresStorage

    return PostgresStorage(target, migrate=migrate, read_url=replica, read_wait_s=read_wait_s)
