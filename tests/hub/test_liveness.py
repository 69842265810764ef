"""Liveness against a real hub on 127.0.0.1 (uvicorn, SQLite and PostgreSQL): an edge that stops
syncing raises ``edge_offline`` and turns its substation UNKNOWN, and syncing again resolves it; a
device its edge reports down raises ``device_offline``, resolved when its readings return; a
substation fed only by telemetry goes stale by its newest reading's time; a substation never heard
from is UNKNOWN; what the hub heard survives a restart.

The edge here is the test, speaking the sync contract over HTTP with its own credential (and the
edge's own ``LimitMonitor`` making the device-down and device-up events). Thresholds are small:
an edge silent for 2 x 0.5 s is offline."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.limits import LimitMonitor
from hub.fleet import LivenessSettings, settings_from_env
from hub.insights.orchestrator import OrchestratorSettings
from hub.settings import Settings
from hub.storage.base import Storage
from protocols.config import Limits
from protocols.gridcode import PointSpec
from protocols.reading import Reading
from protocols.wire import Event, EventRun, ReadingRun, SyncBatch, encode
from tests.support.hub_auth import ADMIN, ADMIN_KEY, edge_headers
from tests.support.live_hub import LiveHub

FAST = LivenessSettings(sync_interval_s=0.5, offline_multiple=2.0, check_interval_s=0.1)  # offline after 1 s


def _settings(tmp_path: Path, liveness: LivenessSettings = FAST) -> Settings:
    # the agents run only when asked (POST /agents/run): the grid monitor's verdict is the test's to time
    return Settings(admin_key=ADMIN_KEY, model_registry=str(tmp_path / "models"), liveness=liveness,
                    agents=OrchestratorSettings(interval_s=3600, min_gap_s=3600))


@pytest.fixture
def hub(storage: Storage, tmp_path: Path) -> Iterator[httpx.Client]:
    with LiveHub(storage, _settings(tmp_path)) as live, httpx.Client(base_url=live.url, headers=ADMIN,
                                                                     timeout=10) as client:
        yield client


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.05)


class Edge:
    """An edge box as the hub sees it: numbered readings and events over ``POST /edge/sync``."""

    def __init__(self, hub: httpx.Client, edge_id: str, substation: str) -> None:
        self.hub, self.edge_id, self.substation = hub, edge_id, substation
        self.headers = {**edge_headers(hub, edge_id, substation), "content-type": "application/json"}
        self.readings = self.events = 0
        self.synced_at = 0.0  # monotonic, the last sync's answer

    def reading(self, device_id: str = "FEEDER-F12", metric: str = "voltage_l1", value: float = 11.0,
                unit: str = "kV", ts: datetime | None = None) -> Reading:
        return Reading(ts=ts or datetime.now(UTC), substation=self.substation, device_id=device_id, metric=metric,
                       value=value, unit=unit)

    def sync(self, readings: list[Reading] | None = None, events: list[Event] | None = None) -> None:
        readings = [self.reading()] if readings is None else readings
        batch = SyncBatch(edge_id=self.edge_id, substation=self.substation, sent_at=datetime.now(UTC),
                          readings=ReadingRun(first_seq=self.readings + 1, items=readings) if readings else None,
                          events=EventRun(first_seq=self.events + 1, items=events) if events else None)
        r = self.hub.post("/edge/sync", content=encode(batch), headers=self.headers)
        assert r.status_code == 200, r.text
        self.synced_at = time.monotonic()
        self.readings += len(readings)
        self.events += len(events or ())

    def run(self, seconds: float, every_s: float = 0.1, **kw: Any) -> None:
        """Sync every ``every_s`` for ``seconds``, as a live edge does."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.sync(**kw)
            time.sleep(every_s)


def grid(hub: httpx.Client, substation: str) -> dict[str, Any]:
    r = hub.get("/grid-status")
    assert r.status_code == 200, r.text
    return r.json()["substations"].get(substation, {})


def incidents(hub: httpx.Client, kind: str, status: str | None = None) -> list[dict[str, Any]]:
    r = hub.get("/incidents", params={"status": status} if status else {})
    assert r.status_code == 200, r.text
    return [i for i in r.json()["incidents"] if i["type"] == kind]


def judge(hub: httpx.Client) -> None:
    """Run the grid monitor now, as the orchestrator would on its next cycle."""
    r = hub.post("/agents/run", params={"agent": "grid_monitor"})
    assert r.status_code == 200 and r.json()["agents"][0]["state"] == "ok", r.text


def test_a_silent_edge_raises_edge_offline_and_its_substation_is_unknown_until_it_syncs_again(
        hub: httpx.Client) -> None:
    edge = Edge(hub, "NRB-EDGE-01", "NAIROBI-S1")
    edge.run(0.6)
    judge(hub)
    live = grid(hub, "NAIROBI-S1")
    assert (live["status"], live["stale"], live["last_status"], live["devices"]) == (
        "OK", False, "OK", {"FEEDER-F12": "OK"})
    assert datetime.fromisoformat(live["last_seen"]) > datetime.now(UTC) - timedelta(seconds=5)

    # the edge dies
    (inc,) = wait_for("an edge_offline incident", lambda: incidents(hub, "edge_offline", "OPEN"))
    raised_after = time.monotonic() - edge.synced_at
    assert 1.0 <= raised_after < 4.0, raised_after  # offline after 2 x 0.5 s, checked every 0.1 s
    assert (inc["device_id"], inc["substation"], inc["agent"], inc["severity"]) == (
        "NRB-EDGE-01", "NAIROBI-S1", "liveness", "WARNING")
    assert inc["facts"]["offline_after_s"] == pytest.approx(1.0)  # it synced faster than the 0.5 s floor
    assert "has not synced for" in inc["description"] and "sentinel edge status" in inc["recommendation"]
    dead = grid(hub, "NAIROBI-S1")
    assert (dead["status"], dead["stale"], dead["last_status"]) == ("UNKNOWN", True, "OK")  # never OK
    assert dead["devices"] == {"FEEDER-F12": "UNKNOWN"} and "NRB-EDGE-01 silent for" in dead["reason"]
    assert dead["last_seen"] == live["last_seen"] or dead["last_seen"] > live["last_seen"]
    fleet = hub.get("/fleet").json()
    (e,) = fleet["edges"]
    assert (e["edge_id"], e["online"], e["registered"]) == ("NRB-EDGE-01", False, True)
    assert fleet["substations"]["NAIROBI-S1"]["stale"] is True
    time.sleep(0.5)
    assert len(incidents(hub, "edge_offline")) == 1  # one incident for one silence, however long

    edge.run(0.3)  # back
    wait_for("the edge_offline incident resolved", lambda: incidents(hub, "edge_offline", "RESOLVED"))
    assert not incidents(hub, "edge_offline", "OPEN")
    last = hub.get(f"/incidents/{inc['id']}").json()["history"][-1]
    assert (last["status"], last["actor"]) == ("RESOLVED", "liveness") and "synced again" in last["note"]
    back = grid(hub, "NAIROBI-S1")
    assert (back["status"], back["stale"], back["reason"]) == ("OK", False, "")
    assert back["last_seen"] > dead["last_seen"]


def test_a_device_its_edge_reports_down_is_offline_until_its_readings_return(hub: httpx.Client) -> None:
    edge = Edge(hub, "NRB-EDGE-01", "NAIROBI-S1")
    monitor = LimitMonitor("NAIROBI-S1", "TR-04", [PointSpec("oil_temperature", "degC", None)], Limits())
    oil = lambda: edge.reading("TR-04", "oil_temperature", 65.0, "degC")  # noqa: E731
    edge.run(0.3, readings=[edge.reading(), oil()])
    judge(hub)
    assert grid(hub, "NAIROBI-S1")["devices"] == {"FEEDER-F12": "OK", "TR-04": "OK"}

    down = monitor.offline(time.time(), "connection refused", online=False)  # what edge/daemon.py sends
    edge.sync(events=[down])
    (inc,) = incidents(hub, "device_offline", "OPEN")
    assert (inc["device_id"], inc["substation"], inc["severity"]) == ("TR-04", "NAIROBI-S1", "WARNING")
    edge.run(1.5)  # the edge lives on, the feeder answers, the transformer does not
    assert incidents(hub, "device_offline", "OPEN") and not incidents(hub, "edge_offline")
    status = grid(hub, "NAIROBI-S1")
    assert (status["status"], status["stale"], status["devices"]["TR-04"], status["devices"]["FEEDER-F12"]) == (
        "WARNING", False, "UNKNOWN", "OK")  # OK, but for a device it cannot see
    assert "TR-04" in status["reason"]

    time.sleep(0.01)
    up = monitor.offline(time.time(), "", online=True)
    edge.sync(readings=[edge.reading(), oil()], events=[up])  # the poll that answered, with its readings
    wait_for("device_offline resolved", lambda: incidents(hub, "device_offline", "RESOLVED"))
    history = hub.get(f"/incidents/{inc['id']}").json()["history"]
    assert [h["status"] for h in history] == ["OPEN", "RESOLVED"]
    assert history[-1]["actor"] == "liveness" and "readings from TR-04 again" in history[-1]["note"]
    status = grid(hub, "NAIROBI-S1")
    assert (status["status"], status["devices"]["TR-04"], status["reason"]) == ("OK", "OK", "")


def _telemetry(hub: httpx.Client, substation: str, ts: datetime, device: str = "MSA-F01") -> None:
    reading = {"device_id": device, "sensor_type": "voltage", "metric": "voltage_l1", "value": 11.0, "unit": "kV",
               "nominal": 11.0, "substation": substation, "timestamp": ts.isoformat().replace("+00:00", "Z")}
    r = hub.post("/sensors/process", json={"sensor_readings": [reading]})
    assert r.status_code == 200, r.text


def test_a_substation_fed_by_telemetry_goes_stale_by_its_newest_readings_time(hub: httpx.Client) -> None:
    _telemetry(hub, "MOMBASA-S1", datetime.now(UTC))
    fresh = wait_for("MOMBASA-S1 heard from", lambda: grid(hub, "MOMBASA-S1"))
    assert fresh["stale"] is False, fresh
    if fresh["last_status"] is None:  # live, but the grid monitor has not run on it yet: not OK either
        assert fresh["status"] == "UNKNOWN" and "not judged yet" in fresh["reason"]
    else:
        assert fresh["status"] == fresh["last_status"] == "OK"
    stale = wait_for("MOMBASA-S1 stale", lambda: (g := grid(hub, "MOMBASA-S1"))["stale"] and g)
    assert stale["status"] == "UNKNOWN" and "no reading for" in stale["reason"]
    assert stale["last_seen"] == fresh["last_seen"]
    _telemetry(hub, "MOMBASA-S1", datetime.now(UTC) - timedelta(minutes=10))  # history posted now is not news
    time.sleep(0.5)
    assert grid(hub, "MOMBASA-S1")["stale"] is True
    _telemetry(hub, "MOMBASA-S1", datetime.now(UTC))
    wait_for("MOMBASA-S1 fresh again", lambda: grid(hub, "MOMBASA-S1")["stale"] is False)
    assert not incidents(hub, "edge_offline")  # no edge there: stale, not offline


def test_a_registered_edge_that_never_synced_leaves_its_substation_unknown_and_raises_nothing(
        hub: httpx.Client) -> None:
    edge_headers(hub, "KSM-EDGE-01", "KISUMU-S1")  # registered, not deployed yet
    status = wait_for("KISUMU-S1 listed", lambda: grid(hub, "KISUMU-S1"))
    assert (status["status"], status["stale"], status["last_seen"]) == ("UNKNOWN", True, None)
    assert "KSM-EDGE-01 has never synced" in status["reason"]
    time.sleep(1.5)
    assert not incidents(hub, "edge_offline")  # nothing has stopped


def test_the_hub_learns_each_edges_sync_interval(storage: Storage, tmp_path: Path) -> None:
    slow_floor = LivenessSettings(sync_interval_s=0.1, offline_multiple=3.0, check_interval_s=0.05)  # floor 0.3 s
    with LiveHub(storage, _settings(tmp_path, slow_floor)) as live, \
            httpx.Client(base_url=live.url, headers=ADMIN, timeout=10) as hub:
        edge = Edge(hub, "NRB-EDGE-01", "NAIROBI-S1")
        # syncs every 0.5 s: silent for longer than the 0.3 s floor between two syncs, so offline
        # until the hub has seen three gaps (a hub should be told of edges slower than its default)
        edge.run(2.5, every_s=0.5)
        (e,) = hub.get("/fleet").json()["edges"]
        assert e["sync_interval_s"] == pytest.approx(0.5, abs=0.15)
        assert e["offline_after_s"] == pytest.approx(3 * e["sync_interval_s"])
        learning = len(incidents(hub, "edge_offline"))
        edge.run(2.5, every_s=0.5)
        assert len(incidents(hub, "edge_offline")) == learning  # learnt: a slow edge is not an offline one
        assert not incidents(hub, "edge_offline", "OPEN")


def test_what_the_hub_heard_survives_a_restart_and_a_restart_is_no_outage(storage: Storage, tmp_path: Path) -> None:
    with LiveHub(storage, _settings(tmp_path)) as live, httpx.Client(base_url=live.url, headers=ADMIN) as hub:
        _telemetry(hub, "MOMBASA-S1", datetime.now(UTC))
        edge = Edge(hub, "NRB-EDGE-01", "NAIROBI-S1")
        edge.run(0.3)
        seen = wait_for("MOMBASA-S1 heard", lambda: hub.get("/fleet").json()["devices"])
    time.sleep(1.5)  # the hub is down for longer than the edge's offline_after
    with LiveHub(storage, _settings(tmp_path)) as live, httpx.Client(base_url=live.url, headers=ADMIN) as hub:
        started = time.monotonic()
        fleet = wait_for("the first check", lambda: (f := hub.get("/fleet").json())["checked_at"] and f)
        assert [d for d in fleet["devices"] if d["substation"] == "MOMBASA-S1"] == [
            {**d, "silent_s": pytest.approx(d["silent_s"], abs=60)} for d in seen if d["substation"] == "MOMBASA-S1"]
        assert grid(hub, "MOMBASA-S1")["last_seen"] is not None
        if time.monotonic() - started < 0.8:  # silence counts from the hub's start: none raised yet
            assert not incidents(hub, "edge_offline")
        (inc,) = wait_for("edge_offline once the edge stays silent", lambda: incidents(hub, "edge_offline", "OPEN"))
        assert inc["device_id"] == "NRB-EDGE-01"


@pytest.mark.parametrize(("var", "value", "message"), [
    ("SENTINEL_OFFLINE_MULTIPLE", "three", "SENTINEL_OFFLINE_MULTIPLE: not a number: 'three'"),
    ("SENTINEL_EDGE_SYNC_INTERVAL_S", "0", "SENTINEL_EDGE_SYNC_INTERVAL_S: must be a number > 0, not 0"),
    ("SENTINEL_TELEMETRY_STALE_S", "-5", "SENTINEL_TELEMETRY_STALE_S: must be a number > 0, not -5"),
])
def test_bad_liveness_settings_name_the_variable(var: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings_from_env({var: value})
    good = settings_from_env({"SENTINEL_EDGE_SYNC_INTERVAL_S": "60", "SENTINEL_OFFLINE_MULTIPLE": "4"})
    assert (good.offline_floor_s, good.telemetry_after_s) == (240.0, 240.0)
    assert settings_from_env({}).offline_floor_s == 90.0  # 3 x 30 s


def test_between_whole_window_reads_a_read_goes_back_only_the_overlap(storage: Storage) -> None:
    """At 10,000 readings/s a read of the whole window (300 s) took 100-300 ms of the database, and
    the views read every second. Between whole-window reads (every ``full_read_s``) a read goes back
    ``overlap_s`` before the last one: a device's newest reading is seen at once if it arrives within
    ``overlap_s`` of its timestamp, and at the next whole-window read if later (a lagging clock)."""
    from hub.fleet import Liveness

    liveness = Liveness(storage, LivenessSettings(overlap_s=10.0, full_read_s=3.0, check_interval_s=3600.0))
    now = datetime.now(UTC)
    liveness.check(now)  # the first read: the whole window (nothing yet)

    def reading(device: str, ts: datetime) -> Reading:
        return Reading(ts=ts, substation="S1", device_id=device, metric="voltage_l1", value=11.0, unit="kV")

    def seen(at: datetime) -> dict[str, datetime]:
        liveness.refresh(at, max_age_s=0.0, wait=True)
        return {d.device_id: d.last_reading for d in liveness.devices(at)}

    storage.insert_readings([reading("PROMPT", now - timedelta(seconds=2)),
                             reading("LAGGING", now - timedelta(seconds=60))], "http")
    assert seen(now + timedelta(seconds=1)) == {"PROMPT": now - timedelta(seconds=2)}  # read back 10 s, not 300
    time.sleep(3.1)  # full_read_s passes: the next read is of the whole window
    assert seen(now + timedelta(seconds=2)) == {"PROMPT": now - timedelta(seconds=2),
                                                "LAGGING": now - timedelta(seconds=60)}
    # a `now` earlier than the last read's (a clock stepped back): the whole window again
    storage.insert_readings([reading("BACKDATED", now - timedelta(seconds=100))], "http")
    assert "BACKDATED" in seen(now)


def test_an_incident_acknowledged_while_the_active_ones_are_read_is_listed_once(tmp_path) -> None:  # noqa: ANN001
    """The active incidents are read a status at a time; one acknowledged between the reads of OPEN
    and ACKNOWLEDGED is in both. It is listed once, as it is now (the dashboard drew it twice)."""
    from hub.fleet.liveness import active_incidents
    from hub.storage.base import NewIncident
    from hub.storage.sqlite import SQLiteStorage

    storage = SQLiteStorage(tmp_path / "hub.db")
    try:
        (inc,) = storage.add_incidents([NewIncident(
            timestamp=datetime.now(UTC), type="voltage_sag", device_id="F1", severity="WARNING", description="sag",
            agent="grid_monitor", substation="S1", metric="voltage_l1", value=190.0)])
        read = storage.list_incidents

        def list_then_acknowledge(**kw):  # noqa: ANN003, ANN202  (an operator acts between two reads)
            got = read(**kw)
            if kw.get("status") == "OPEN":
                storage.set_incident_status(inc.id, "ACKNOWLEDGED", "user:oona")
            return got

        storage.list_incidents = list_then_acknowledge  # type: ignore[method-assign]
        active = active_incidents(storage)
        assert [(i.id, i.status) for i in active] == [(inc.id, "ACKNOWLEDGED")]
    finally:
        storage.close()
