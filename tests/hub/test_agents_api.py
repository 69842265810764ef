"""The agents through the hub's API, on SQLite and PostgreSQL: the seed's three example alerts
reproduced from data posted the way a utility would post it, the incident lifecycle, the
orchestrator's isolation of a failing agent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from litestar.testing import TestClient

from hub.insights.agent_inputs import RUNNERS, AgentOutput
from hub.app import create_app
from hub.insights.orchestrator import Orchestrator, OrchestratorSettings
from hub.settings import Settings
from tests.support.hub_auth import ADMIN_KEY, as_admin, role_headers
from hub.storage import open_storage

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)  # a Sunday midnight


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    # scheduled cycles far apart: the tests run the agents with POST /agents/run?at=...
    settings = Settings(database_url=database_url, default_substation="NAIROBI-S1", admin_key=ADMIN_KEY,
                        agents=OrchestratorSettings(interval_s=3600, min_gap_s=3600))
    with TestClient(create_app(settings)) as c:
        yield as_admin(c)


def reading(device: str, metric: str, value: float, ts: datetime, unit: str, **kw) -> dict:
    return {"device_id": device, "sensor_type": metric, "metric": metric, "value": value,
            "timestamp": ts.isoformat().replace("+00:00", "Z"), "unit": unit, **kw}


def post(client: TestClient, readings: list[dict]) -> dict:
    r = client.post("/sensors/process", json={"sensor_readings": readings})
    assert r.status_code == 200, r.text
    return r.json()


def run_agents(client: TestClient, at: datetime, *agents: str) -> dict[str, dict]:
    params = [("at", at.isoformat())] + [("agent", a) for a in agents]
    r = client.post("/agents/run", params=params)
    assert r.status_code == 200, r.text
    return {a["name"]: a for a in r.json()["agents"]}


def test_seed_voltage_sag_on_feeder_f12_with_its_deviation_and_the_phase_imbalance(client: TestClient) -> None:
    at = T0 + timedelta(hours=10)
    rows = []
    for i in range(60):  # a minute of 1 s samples: 220 kV bus sagging to 205 kV, currents 350 / 315 / 280 A
        ts = at - timedelta(seconds=60 - i)
        rows += [reading("FEEDER-F12", f"voltage_l{p}", 205.0, ts, "kV", nominal=220.0) for p in (1, 2, 3)]
        rows += [reading("FEEDER-F12", f"current_l{p}", a, ts, "A") for p, a in ((1, 350.0), (2, 315.0), (3, 280.0))]
    got = post(client, rows)
    assert got["incidents_detected"] >= 1

    status = run_agents(client, at, "grid_monitor")["grid_monitor"]
    assert status["state"] == "ok", status

    incidents = {i["type"]: i for i in client.get("/incidents").json()["incidents"]}
    sag = incidents["voltage_sag"]
    assert (sag["device_id"], sag["severity"], sag["agent"], sag["status"]) == (
        "FEEDER-F12", "WARNING", "grid_monitor", "OPEN")  # -6.8 %: beyond +-5 %, within +-10 %
    assert "205 kV" in sag["description"] and "-6.8%" in sag["description"]
    # the HTTP check and the agent saw one condition: one incident, updated, not one per reading
    assert sum(i["type"] == "voltage_sag" for i in client.get("/incidents").json()["incidents"]) == 1
    unbalance = incidents["current_unbalance"]
    assert "L1=350A vs L3=280A" in unbalance["description"]
    assert unbalance["value"] == pytest.approx(100 * 35 / 315)
    assert unbalance["facts"]["phases"] == {"L1": 350.0, "L2": 315.0, "L3": 280.0}
    assert "Rebalance" in unbalance["recommendation"]
    full = client.get(f"/incidents/{sag['id']}").json()
    assert full["occurrences"] >= 2 and full["history"][0]["status"] == "OPEN"
    nairobi = client.get("/grid-status").json()["substations"]["NAIROBI-S1"]
    assert nairobi["last_status"] in ("WARNING", "CRITICAL")  # the grid monitor's verdict on that minute
    assert (nairobi["status"], nairobi["stale"]) == ("UNKNOWN", True)  # of March: no current data (hub.fleet)


def test_seed_transformer_oil_climbing_3_degc_a_day_gets_a_falling_health_and_a_window(client: TestClient) -> None:
    rows = []
    for h in range(8 * 24):  # eight days, hourly: oil +3 degC/day over a daily swing; a feeder's load curve
        ts = T0 + timedelta(hours=h)
        hour = ts.hour
        swing = 4.0 if 8 <= hour < 22 else -4.0
        rows.append(reading("TR-04", "oil_temperature", 60.0 + 3.0 * h / 24 + swing, ts, "degC"))
        rows.append(reading("TR-04", "ambient_temperature", 22.0 + (5.0 if 10 <= hour < 18 else 0.0), ts, "degC"))
        rows.append(reading("TR-04", "load_current", 450.0 if 8 <= hour < 22 else 250.0, ts, "A"))
        rows.append(reading("FEEDER-F12", "active_power", 6.0 if 8 <= hour < 22 else 2.5, ts, "MW"))
    post(client, rows)

    day3 = run_agents(client, T0 + timedelta(days=3), "demand_forecaster", "maintenance_predictor")
    assert day3["maintenance_predictor"]["state"] == "ok", day3
    early = client.get("/maintenance").json()["predictions"]
    run_agents(client, T0 + timedelta(days=8), "demand_forecaster", "maintenance_predictor")
    (late,) = client.get("/maintenance").json()["predictions"]
    (early,) = early
    assert late["device_id"] == "TR-04" and 0 <= late["health"] < early["health"]
    assert late["failure_probability"]["168h"] >= late["failure_probability"]["24h"]
    window = late["maintenance_window"]
    assert window is not None
    start = datetime.fromisoformat(window["start"])
    assert start.hour >= 22 or start.hour < 6  # the low-load night
    forecasts = client.get("/forecast/next-24h").json()["forecasts"]
    assert [f["device_id"] for f in forecasts] == ["FEEDER-F12"]
    assert len(forecasts[0]["points"]) == 24 and forecasts[0]["peak_value"] > 5.0


def test_seed_four_failed_logins_on_rtu_mom01_give_a_security_alert(client: TestClient) -> None:
    logs = [{"ts": (T0 + timedelta(minutes=2 * i)).isoformat(), "kind": "auth", "action": "login",
             "substation": "MOMBASA-S1", "device_id": "RTU-MOM01", "result": "failure", "source": "192.168.1.57",
             "user": "admin"} for i in range(4)]
    bad = {"ts": "yesterday", "kind": "auth"}
    r = client.post("/ot-logs", json={"events": [*logs, bad]})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 4
    (rejected,) = r.json()["rejected"]
    assert rejected["index"] == 4 and "events[4]" in rejected["detail"]

    run_agents(client, T0 + timedelta(minutes=10), "cyber_sentinel")
    (alert,) = [i for i in client.get("/incidents").json()["incidents"] if i["agent"] == "cyber_sentinel"]
    assert alert["type"] == "brute_force" and alert["device_id"] == "RTU-MOM01"
    assert alert["severity"] == "WARNING"
    assert "4 failures in 10 minutes" in alert["description"]
    assert "Block IP address" in alert["recommendation"] or "block" in alert["recommendation"].lower()
    full = client.get(f"/incidents/{alert['id']}").json()
    assert len(full["facts"]["evidence"]) == 4

    nothing = client.post("/ot-logs", json=[bad])
    assert nothing.status_code == 400 and "no usable OT log entry" in nothing.json()["detail"]


def test_incident_lifecycle_through_the_api(client: TestClient) -> None:
    post(client, [reading("FEEDER-F12", "voltage_l1", 9.5, T0, "kV", nominal=11.0)])
    (inc,) = client.get("/incidents").json()["incidents"]
    url = f"/incidents/{inc['id']}/status"
    operator = role_headers(client, "operator")
    # an "actor" in the body (older clients) is ignored: the history records who is authenticated
    r = client.post(url, json={"status": "ACKNOWLEDGED", "actor": "mallory", "note": "on it"}, headers=operator)
    assert r.status_code == 200
    assert client.post(url, json={"status": "RESOLVED"}).json()["status"] == "RESOLVED"  # as the admin key
    back = client.post(url, json={"status": "IN_PROGRESS"}, headers=operator)
    assert back.status_code == 409 and "only forward" in back.json()["detail"]
    assert client.post(url, json={"status": "DONE"}).status_code == 400
    assert client.post("/incidents/INC-2026-009999/status", json={"status": "RESOLVED"}).status_code == 404
    history = client.get(f"/incidents/{inc['id']}").json()["history"]
    assert [(h["status"], h["actor"], h["note"]) for h in history] == [
        ("OPEN", "grid_monitor", "raised"), ("ACKNOWLEDGED", "key:test-operator", "on it"),
        ("RESOLVED", "key:bootstrap-admin", "")]
    assert client.get("/incidents", params={"status": "RESOLVED"}).json()["incidents"][0]["id"] == inc["id"]


def test_agents_run_rejects_unknown_agents_and_naive_times(client: TestClient) -> None:
    r = client.post("/agents/run", params={"agent": "oracle"})
    assert r.status_code == 400 and "agent: Invalid enum value 'oracle'" in r.json()["detail"]
    r = client.post("/agents/run", params={"at": "2026-03-01T00:00:00"})
    assert r.status_code == 400 and "time zone" in r.json()["detail"]
    assert {a["name"] for a in client.get("/agents").json()["agents"]} == set(RUNNERS)


def test_one_failing_agent_never_blocks_the_others(tmp_path: Path) -> None:
    calls: list[str] = []

    def broken(storage, settings, now):  # noqa: ANN001, ANN202
        calls.append("broken")
        raise RuntimeError("baseline table missing")

    def slow(storage, settings, now):  # noqa: ANN001, ANN202
        import time
        time.sleep(1.0)
        return AgentOutput()

    def fine(storage, settings, now):  # noqa: ANN001, ANN202
        calls.append("fine")
        return AgentOutput(summary={"ok": True})

    async def main() -> list:
        storage = open_storage(f"sqlite:///{tmp_path / 'h.db'}")
        try:
            orch = Orchestrator(storage, OrchestratorSettings(budget_s=0.3),
                                runners={"broken": broken, "slow": slow, "fine": fine})
            first = {s.name: s for s in await orch.run_once()}
            second = {s.name: s for s in await orch.run_once()}  # the slow one is still running: not started again
            await orch.aclose()  # waits for the slow one, so the storage is not closed under it
            assert all(f.done() for f in orch._busy.values())
            return [first, second]
        finally:
            storage.close()

    first, second = asyncio.run(main())
    assert first["fine"].state == "ok" and first["fine"].summary == {"ok": True}
    assert first["broken"].state == "failed" and "baseline table missing" in first["broken"].last_error
    assert first["slow"].state == "timed_out" and "budget" in first["slow"].last_error
    assert second["broken"].failures == 2 and second["fine"].failures == 0
    assert second["slow"].runs == 1 and "still running" in second["slow"].last_error
    assert calls.count("fine") == 2 and calls.count("broken") == 2  # retried


def test_an_llm_narrates_new_incidents_and_a_dead_llm_falls_back_to_the_template(tmp_path: Path) -> None:
    """The hub's narration path against a local OpenAI-compatible server (nothing leaves 127.0.0.1)."""
    from agents.narration import OpenAICompatibleNarrator
    from tests.support.openai_server import OpenAIServer

    logs = [{"ts": (T0 + timedelta(minutes=i)).isoformat(), "kind": "auth", "action": "login",
             "substation": "MOMBASA-S1", "device_id": "RTU-MOM01", "result": "failure", "source": "192.168.1.57"}
            for i in range(4)]
    answer = "Four failed logins on RTU-MOM01 from 192.168.1.57 within four minutes point to password guessing."
    with OpenAIServer(reply=answer) as server:
        narrator = OpenAICompatibleNarrator(server.base_url, "test-granite", timeout_s=5)
        settings = Settings(database_url=f"sqlite:///{tmp_path / 'h.db'}", narrator=narrator, admin_key=ADMIN_KEY,
                            agents=OrchestratorSettings(interval_s=3600, min_gap_s=3600))
        with TestClient(create_app(settings)) as client:
            as_admin(client)
            assert client.post("/ot-logs", json=logs).json()["accepted"] == 4
            run_agents(client, T0 + timedelta(minutes=5), "cyber_sentinel")
            (alert,) = client.get("/incidents").json()["incidents"]
            assert alert["narrative"] == answer
            (request,) = server.completions()
            assert "RTU-MOM01" in request.message("user") and "192.168.1.57" in request.message("user")

            server.behaviour = "error"  # the LLM goes down: the next new incident gets the template's text
            more = [{**e, "device_id": "RTU-MOM02"} for e in logs]
            client.post("/ot-logs", json=more)
            run_agents(client, T0 + timedelta(minutes=5), "cyber_sentinel")
            second = next(i for i in client.get("/incidents").json()["incidents"] if i["device_id"] == "RTU-MOM02")
            assert second["narrative"] and "RTU-MOM02" in second["narrative"] and second["narrative"] != answer


def test_dga_and_vibration_readings_reach_the_maintenance_predictor(client: TestClient) -> None:
    """A transformer with an arcing signature in its dissolved gases (Duval D1: much C2H2, little C2H4)."""
    rows = []
    gases = {"dga_h2": 300.0, "dga_ch4": 50.0, "dga_c2h6": 10.0, "dga_c2h4": 20.0, "dga_c2h2": 120.0,
             "dga_co": 300.0, "dga_co2": 2500.0}
    for h in range(48):
        ts = T0 + timedelta(hours=h)
        rows.append(reading("TR-07", "oil_temperature", 62.0, ts, "degC"))
        rows.append(reading("TR-07", "vibration", 2.0, ts, "mm/s"))
        if h % 6 == 0:
            rows += [reading("TR-07", metric, ppm, ts, "ppm") for metric, ppm in gases.items()]
    post(client, rows)
    run_agents(client, T0 + timedelta(hours=48), "maintenance_predictor")
    (p,) = client.get("/maintenance").json()["predictions"]
    assert p["device_id"] == "TR-07" and p["components"]["vibration"] == 0
    assert p["components"]["dga"] < -10 and p["health"] == pytest.approx(100 + sum(p["components"].values()))


@pytest.mark.parametrize("ticks", range(6))
def test_the_orchestrator_stops_when_cancelled_just_as_new_data_wakes_it(tmp_path: Path, ticks: int) -> None:
    """A cancel that lands while a notify() is being delivered must still stop the loop. With
    Python 3.11's asyncio.wait_for the cancel was swallowed and the hub never finished shutting down
    (a CI run hung in a TestClient teardown right after a sync)."""
    cycles: list[int] = []

    def fine(storage, settings, now):  # noqa: ANN001, ANN202
        cycles.append(1)
        return AgentOutput()

    async def main() -> bool:
        storage = open_storage(f"sqlite:///{tmp_path / 'h.db'}")
        try:
            orch = Orchestrator(storage, OrchestratorSettings(interval_s=3600, min_gap_s=0.0), runners={"fine": fine})
            task = asyncio.create_task(orch.run())
            await asyncio.sleep(0.05)  # waiting for data
            orch.notify()
            for _ in range(ticks):  # every point of the wake-up's delivery
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=5)
            await orch.aclose()
            return task in done and task.cancelled()
        finally:
            storage.close()

    assert asyncio.run(main()), "the orchestrator kept running after it was cancelled"
