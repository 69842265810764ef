"""``sentinel hub migrate``: bring the hub's database schema up to date, or show where it stands.

The hub applies pending migrations itself at start unless ``SENTINEL_AUTO_MIGRATE=0``; this command
is for operators who upgrade the schema as a step of its own (before starting several replicas of a
new release, say). It is safe to run again, and while hubs run on PostgreSQL (a schema lock).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["add_parser"]


def cmd_migrate(args: argparse.Namespace) -> int:
    from hub.settings import DEFAULT_DATABASE_URL
    from hub.storage import open_storage, parse_database_url
    from hub.storage.migrations import LATEST, MigrationError

    url = args.database or os.environ.get("SENTINEL_DATABASE_URL") or DEFAULT_DATABASE_URL
    try:
        kind, target = parse_database_url(url)
        missing = kind == "sqlite" and target != ":memory:" and not os.path.isfile(target)
        if args.status:
            if missing:
                raise MigrationError(f"--database {url}: no such file")
            status = _read_only_status(url)
            _print_status(status, url)
            return 1 if status.pending and status.version is not None else 0
        before = None if missing else _read_only_status(url).version
        storage = open_storage(url)
    except (MigrationError, ValueError, OSError) as exc:
        print(f"sentinel: error: {exc}", file=sys.stderr)
        return 2
    try:
        status = storage.migration_status()
    finally:
        storage.close()
    now = [a for a in status.applied if before is None or a[0] > before]
    if not now:
        print(f"{url}: schema up to date at version {status.version}; nothing to apply")
        return 0
    made = "created the hub's schema and applied" if before is None else f"upgraded from version {before}:"
    print(f"{url}: {made} {len(now)} migration{'s' if len(now) != 1 else ''}, now at version {status.version} "
          f"(this hub's latest: {LATEST})")
    for version, name, when in now:
        print(f"  {version:>3}  {when[:19]}  {name}")
    return 0


def _read_only_status(url: str) -> Any:
    """The status of a database without creating or changing anything in it."""
    from hub.storage import parse_database_url
    from hub.storage.migrations import MIGRATIONS, MigrationStatus, pending_after

    kind, target = parse_database_url(url)
    if kind == "sqlite":
        import sqlite3
        from datetime import UTC, datetime

        try:
            db = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
        except sqlite3.OperationalError as exc:
            raise OSError(f"cannot read {target}: {exc}") from None
        try:
            names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "schema_migrations" in names:
                applied = [(v, n, datetime.fromtimestamp(at, UTC).isoformat())
                           for v, n, at in db.execute("SELECT version, name, applied_at FROM schema_migrations"
                                                      " ORDER BY version")]
                version = max((a[0] for a in applied), default=0)
            else:
                applied, version = [], (0 if "readings" in names else None)
        finally:
            db.close()
    else:
        import psycopg

        try:
            conn = psycopg.connect(target, options="-c TimeZone=UTC -c default_transaction_read_only=on",
                                   connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise OSError(f"cannot connect to PostgreSQL: {str(exc).strip().splitlines()[0]}") from None
        with conn:
            if conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is not None:
                applied = [(v, n, at.isoformat()) for v, n, at in
                           conn.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")]
                version = max((a[0] for a in applied), default=0)
            else:
                applied = []
                version = 0 if conn.execute("SELECT to_regclass('readings')").fetchone()[0] is not None else None
    pending = pending_after(version, url) if version is not None else list(MIGRATIONS)
    return MigrationStatus(version, applied, pending)


def _print_status(status: Any, url: str) -> None:
    from hub.storage.migrations import LATEST

    if status.version is None:
        print(f"{url}: no hub schema yet; the hub creates it at start (or run `sentinel hub migrate`)")
    else:
        print(f"{url}: schema at version {status.version} (this hub's latest: {LATEST})"
              + (" (made before migrations were versioned)" if status.version == 0 else ""))
    for version, name, when in status.applied:
        print(f"  applied  {version:>3}  {when[:19]}  {name}")
    for m in status.pending:
        print(f"  pending  {m.version:>3}  {m.name}")
    if status.pending and status.version is not None:
        print("run `sentinel hub migrate` to apply the pending migrations")


def add_parser(hub: Any) -> None:
    """Add ``migrate`` under ``sentinel hub``."""
    s = hub.add_parser("migrate", help="bring the database schema up to date (or --status: show where it stands)",
                       description="Apply the database's pending schema migrations, in order, each recorded in "
                                   "schema_migrations. The hub also does this at start unless "
                                   "SENTINEL_AUTO_MIGRATE=0.")
    s.add_argument("--database", default=None,
                   help="the hub's database URL (default $SENTINEL_DATABASE_URL or sqlite:///var/hub.db)")
    s.add_argument("--status", action="store_true",
                   help="show the applied and pending migrations without changing anything (exit 1 if any pending)")
    s.set_defaults(func=cmd_migrate)
