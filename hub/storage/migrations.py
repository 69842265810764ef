"""Versioned schema migrations of the hub's database, on SQLite and PostgreSQL alike.

A database records the migrations applied to it in ``schema_migrations`` (version, name, when).
Opening the hub's storage brings a database up to :data:`LATEST`:

- a new database gets the base schema, then every migration in order;
- a database made before migrations were versioned (hub 0.1.0 and earlier: it has ``readings`` but no
  ``schema_migrations``) is at version 0: the base schema's missing tables are created, then every
  migration runs (migration 1 is the in-place upgrades those releases applied at start);
- a database at an older version gets the migrations after its own, in order;
- a database at a newer version than this hub knows is refused (:class:`SchemaTooNew`): an older
  hub must not write to a schema it does not understand.

``migrate=False`` (``SENTINEL_AUTO_MIGRATE=0`` for ``sentinel hub serve``) refuses to start on a
database with migrations pending (:class:`MigrationsPending`), for operators who upgrade the schema
as a step of its own (``sentinel hub migrate``), e.g. before rolling several hub replicas.

Each engine implements every version (``hub.storage.sqlite.MIGRATION_STEPS``,
``hub.storage.postgres.MIGRATION_STEPS``); a test checks both cover :data:`MIGRATIONS`. A migration
and its record commit together (PostgreSQL: the whole chain in one transaction, under the schema
lock, so several hubs starting at once apply it once).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["LATEST", "MIGRATIONS", "Migration", "MigrationError", "MigrationStatus", "MigrationsPending",
           "SchemaTooNew", "pending_after"]


class Migration(NamedTuple):
    version: int
    name: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "in-place upgrades of hub 0.1.0 and earlier: anomaly score columns on readings, arrival "
                 "numbers on events, incident correlation columns and one open incident per condition, OT-log "
                 "and buffer marks on edge_sync"),
    Migration(2, "rollups: min, max, sum, count and last of valid readings per series and 1-minute, 1-hour and "
                 "1-day bucket, kept with every insert; filled from the readings held"),
    Migration(3, "edge_health: each edge's latest health report (software, model, backlog, drops, devices), "
                 "sent with its syncs"),
    Migration(4, "TimescaleDB layout: the rollups become continuous aggregates (1 minute from the readings, 1 hour "
                 "from 1 minute, 1 day from 1 hour) with refresh and compression policies; nothing elsewhere"),
    Migration(5, "live ranges: live_lo and live_hi on edge_sync, the newest readings an edge sent ahead of its "
                 "backlog after an outage (0: none)"),
    Migration(6, "rollup marks carry their earliest reading (since): a fold recomputes an hour's minutes from "
                 "there on and the hour from its minutes, not the whole hour from its readings"),
    Migration(7, "device_newest (PostgreSQL): each device's newest reading for the liveness check, kept by the "
                 "hub as it stores readings, not read off the readings table; filled from the last day's readings"),
)
LATEST = MIGRATIONS[-1].version

SCHEMA_TABLE_SQLITE = ("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                       " applied_at REAL NOT NULL)")
SCHEMA_TABLE_POSTGRES = ("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                         " applied_at timestamptz NOT NULL DEFAULT now())")


class MigrationError(RuntimeError):
    """The database's schema cannot be used by this hub as it is."""


class SchemaTooNew(MigrationError):
    pass


class MigrationsPending(MigrationError):
    pass


class MigrationStatus(NamedTuple):
    """Where a database stands: its version (None: no hub schema yet), what was applied and when
    (version, name, ISO time), and what is pending."""

    version: int | None
    applied: list[tuple[int, str, str]]
    pending: list[Migration]


def pending_after(version: int | None, where: str, *, migrate: bool = True) -> list[Migration]:
    """The migrations to apply to a database at ``version`` (None: a new one, 0: made before
    versioning); raises when it is newer than this hub, or has some pending and ``migrate`` is off."""
    if version is not None and version > LATEST:
        raise SchemaTooNew(f"the database at {where} has schema version {version}, newer than this hub knows "
                           f"({LATEST}): it was upgraded by a newer hub; run that release (or newer)")
    todo = [m for m in MIGRATIONS if version is None or m.version > version]
    if todo and version is not None and not migrate:
        raise MigrationsPending(f"the database at {where} is at schema version {version}; this hub needs {LATEST} "
                                f"({len(todo)} migration{'s' if len(todo) != 1 else ''} pending): run `sentinel hub "
                                "migrate --database URL`, or start with SENTINEL_AUTO_MIGRATE=1")
    return todo
