"""One incident not RESOLVED per condition, on both backends: the upsert folds a new finding into the
open incident, and the database itself refuses a second open one (the unique partial index
``incidents_open_key``, the same on SQLite as on PostgreSQL). SQLite databases made before the
index held duplicates: opening one resolves the older duplicates, with a history entry each, and
logs it."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hub.storage.base import NewIncident, Storage
from hub.storage.sqlite import SQLiteStorage

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def finding(ts: datetime, severity: str = "WARNING", key: str = "") -> NewIncident:
    return NewIncident(timestamp=ts, type="voltage_sag", device_id="tx-1", severity=severity, description="d",
                       agent="grid_monitor", substation="NAIROBI-S1", metric="voltage_l1", value=201.5,
                       condition_key=key)


def _insert_open_duplicate(storage: Storage, key: str) -> None:
    """A second OPEN incident for ``key``, written straight into the table (not through the upsert)."""
    ts: object = T0.timestamp() if storage.backend == "sqlite" else T0
    with storage.transaction() as tx:
        tx.execute("INSERT INTO incidents (ts, type, device_id, severity, description, status, agent, substation,"
                   " metric, value, created_at, updated_at, condition_key) VALUES (?,?,?,?,?,'OPEN',?,?,?,?,?,?,?)",
                   (ts, "voltage_sag", "tx-1", "WARNING", "d", "grid_monitor", "NAIROBI-S1", "voltage_l1", 200.0,
                    ts, ts, key))


def test_a_second_open_incident_for_a_condition_is_impossible(storage: Storage) -> None:
    (first,) = storage.add_incidents([finding(T0)])
    (again,) = storage.add_incidents([finding(T0 + timedelta(minutes=5), severity="CRITICAL")])
    assert (again.id, again.occurrences, again.severity) == (first.id, 2, "CRITICAL")  # folded into the open one
    both = storage.add_incidents([finding(T0 + timedelta(minutes=6)), finding(T0 + timedelta(minutes=7))])
    assert [(i.id, i.occurrences) for i in both] == [(first.id, 4)]
    assert len(storage.list_incidents(status="OPEN")) == 1

    with pytest.raises(Exception) as refused:  # the database refuses, whatever writes to it
        _insert_open_duplicate(storage, first.condition_key)
    assert "unique" in str(refused.value).lower()
    assert [i.id for i in storage.list_incidents()] == [first.id]  # the refused transaction left nothing

    # a RESOLVED incident is history: the condition coming back opens a new one, which is again the only open one
    storage.set_incident_status(first.id, "RESOLVED", "user:alice")
    (reopened,) = storage.add_incidents([finding(T0 + timedelta(hours=1))])
    assert reopened.id != first.id and reopened.occurrences == 1
    with pytest.raises(Exception):
        _insert_open_duplicate(storage, first.condition_key)
    # incidents made before condition keys ('' ) are outside the rule, as on PostgreSQL
    _insert_open_duplicate(storage, "")
    _insert_open_duplicate(storage, "")
    assert len(storage.list_incidents(status="OPEN")) == 3


def _old_sqlite_database(path: Path) -> None:
    """A database as hubs before the unique index left it: the plain index, and three open incidents
    of one condition (plus one of another, and a resolved one of the first)."""
    SQLiteStorage(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE schema_migrations")  # made before migrations were versioned
    db.execute("DROP INDEX incidents_open_key")
    db.execute("CREATE INDEX incidents_open_key ON incidents (condition_key) WHERE status <> 'RESOLVED'")
    row = ("voltage_sag", "tx-1", "WARNING", "d", "grid_monitor", "NAIROBI-S1", "voltage_l1", 200.0)
    for number, status, key in ((1, "RESOLVED", "a"), (2, "OPEN", "a"), (3, "ACKNOWLEDGED", "a"), (4, "OPEN", "b"),
                                (5, "IN_PROGRESS", "a")):
        ts = (T0 + timedelta(minutes=number)).timestamp()
        db.execute("INSERT INTO incidents (number, ts, type, device_id, severity, description, status, agent,"
                   " substation, metric, value, created_at, updated_at, condition_key) VALUES"
                   " (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (number, ts, *row[:4], status, *row[4:], ts, ts, key))
    db.commit()
    db.close()


def test_opening_an_old_sqlite_database_resolves_its_duplicate_open_incidents(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "hub.db"
    _old_sqlite_database(path)
    with caplog.at_level(logging.WARNING, logger="hub.storage.sqlite"):
        store = SQLiteStorage(path)
    try:
        statuses = {i.id[-1]: i.status for i in store.list_incidents(limit=10)}
        # the newest of condition "a" (5) stays as it was; the older open ones (2, 3) are resolved
        assert statuses == {"1": "RESOLVED", "2": "RESOLVED", "3": "RESOLVED", "4": "OPEN", "5": "IN_PROGRESS"}
        history = store.get_incident("INC-2026-000002").history
        assert [(h.status, h.actor) for h in history] == [("RESOLVED", "hub")]
        assert history[0].note.startswith("duplicate of INC-2026-000005 (the same condition, 'a', open twice)")
        (warning,) = [r for r in caplog.records if "duplicate open incidents" in r.getMessage()]
        assert "resolved 2 duplicate" in warning.getMessage()
        assert "INC-2026-000002 (duplicate of INC-2026-000005), INC-2026-000003 (duplicate of INC-2026-000005)" in \
            warning.getMessage()
        # a new finding of "a" updates the one left open
        (inc,) = store.add_incidents([finding(T0 + timedelta(hours=1), key="a")])
        assert (inc.id, inc.occurrences) == ("INC-2026-000005", 2)
        with pytest.raises(sqlite3.IntegrityError):
            _insert_open_duplicate(store, "a")
    finally:
        store.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hub.storage.sqlite"):
        SQLiteStorage(path).close()  # migrated once: opening it again changes and logs nothing
    assert not [r for r in caplog.records if "duplicate" in r.getMessage()]
