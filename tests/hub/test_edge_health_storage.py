"""Each edge's latest health report, stored with its sync in the same transaction, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hub.storage.base import Storage
from protocols.reading import Reading
from protocols.wire import DeviceState, EdgeHealth, ReadingRun, SyncBatch

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _batch(first: int, n: int, health: EdgeHealth | None, edge: str = "edge-a") -> SyncBatch:
    items = [Reading(ts=T0 + timedelta(seconds=first + i), substation="S1", device_id="F1", metric="voltage_l1",
                     value=11.0, unit="kV") for i in range(n)]
    return SyncBatch(edge_id=edge, substation="S1", sent_at=T0, readings=ReadingRun(first_seq=first, items=items),
                     health=health)


def test_the_latest_report_per_edge_is_kept(storage: Storage) -> None:
    first = EdgeHealth(software="1.0", readings_pending=900, oldest_pending=T0, devices=[DeviceState(device_id="F1", up=True)])
    storage.apply_sync(_batch(1, 3, first), lambda events: [])
    storage.apply_sync(_batch(4, 2, None), lambda events: [])  # a sync without a report keeps the last one
    (at, kept), = storage.edge_health().values()
    assert kept == first and abs((datetime.now(UTC) - at).total_seconds()) < 60
    later = EdgeHealth(software="1.1", model="iso@2", readings_pending=0,
                       devices=[DeviceState(device_id="F1", up=False, error="timeout")])
    storage.apply_sync(_batch(6, 1, later), lambda events: [])
    storage.apply_sync(_batch(1, 1, first, edge="edge-b"), lambda events: [])
    reports = {k: v[1] for k, v in storage.edge_health().items()}
    assert reports == {"edge-a": later, "edge-b": first}
    assert [s.readings_acked_through for s in sorted(storage.edge_states(), key=lambda s: s.edge_id)] == [6, 1]
