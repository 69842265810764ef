"""Make the hub database of an earlier release that ``test_migrations.py`` upgrades.

Run with that release's code first on the path (a git worktree of it), against a database URL:

    git worktree add /tmp/old f7adf07   # the hub as it was released before edge scoring
    PYTHONPATH=/tmp/old .venv/bin/python tests/hub/legacy/make_legacy_db.py sqlite:////tmp/legacy.db
    sqlite3 /tmp/legacy.db .dump > tests/hub/legacy/hub-f7adf07.sqlite.sql
    PYTHONPATH=/tmp/old .venv/bin/python tests/hub/legacy/make_legacy_db.py postgresql://...
    pg_dump --no-owner --no-privileges URL > tests/hub/legacy/hub-f7adf07.postgres.sql

It stores what a hub of that release held after some work: readings from an edge's sync and from
HTTP, events, incidents on two devices, a dead letter.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from hub.storage import open_storage
from hub.storage.base import NewIncident
from protocols.reading import Reading
from protocols.wire import Event, EventRun, ReadingRun, SyncBatch

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def main(url: str) -> None:
    storage = open_storage(url)
    readings = [Reading(ts=T0 + timedelta(seconds=10 * i), substation="SUB-A", device_id="TX-1", metric=metric,
                        value=value + i / 10, unit=unit)
                for i in range(6) for metric, value, unit in (("oil_temperature", 61.0, "°C"),
                                                             ("voltage_l1", 11.02, "kV"))]
    events = [Event(ts=T0 + timedelta(seconds=30), substation="SUB-A", device_id="TX-1", metric="voltage_l1",
                    type="voltage_swell", state="raised", severity="WARNING", value=11.9, threshold=11.55, unit="kV",
                    description="voltage_l1 11.9 kV above 11.55 kV")]
    storage.apply_sync(SyncBatch(edge_id="edge-a", substation="SUB-A", sent_at=T0 + timedelta(minutes=1),
                                 readings=ReadingRun(first_seq=1, items=readings),
                                 events=EventRun(first_seq=1, items=events)), lambda batch: [])
    storage.insert_readings([Reading(ts=T0 + timedelta(minutes=5), substation="SUB-B", device_id="FEEDER-7",
                                     metric="current_l1", value=182.5, unit="A")], "http")
    storage.add_incidents([
        NewIncident(timestamp=T0 + timedelta(seconds=30), type="overvoltage", device_id="TX-1", severity="WARNING",
                    description="Overvoltage on TX-1 voltage_l1: 11.9 kV", agent="grid_monitor", substation="SUB-A",
                    metric="voltage_l1", value=11.9),
        NewIncident(timestamp=T0 + timedelta(minutes=5), type="overcurrent", device_id="FEEDER-7",
                    severity="CRITICAL", description="Overcurrent on FEEDER-7", agent="grid_monitor",
                    substation="SUB-B", metric="current_l1", value=182.5),
    ])
    from protocols.mqtt.codec import DeadLetter
    storage.add_dead_letters([DeadLetter(ts=T0 + timedelta(minutes=6), source="mqtt", topic="grid/SUB-B/x",
                                         payload="{not json", reason="not JSON: unexpected character")])
    storage.close()


if __name__ == "__main__":
    main(sys.argv[1])
