"""The simulator's MQTT devices, seen through a real Mosquitto and the edge: readings, anomalies,
corrupt payloads in the dead-letter table, a stopped device, a broker restart."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec
import pytest

from edge.buffer import Buffer
from edge.check import check_devices
from edge.daemon import EdgeDaemon
from protocols.config import FirmwareConfig, load_config
from protocols.mqtt.config import MqttDevice
from simulator import mqtt_broker
from simulator.mqtt_broker import MosquittoNotFound, find_mosquitto
from simulator.mqtt_publisher import CORRUPTIONS
from simulator.runner import Simulation, SimulationError
from simulator.scenario import SCHEMA_PATH, Scenario, ScenarioError, load_scenario
from tests.conftest import CONFIGS, SCENARIOS, free_port
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import on_free_ports
from tests.support.procs import sentinel_process

pytestmark = pytest.mark.timeout(60)

needs_socat = pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed (apt-get install socat)")


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    try:
        find_mosquitto()
    except MosquittoNotFound as exc:
        if os.environ.get("CI", "").lower() in ("", "0", "false", "no"):
            pytest.skip(f"Mosquitto not installed: {exc}")
        raise


def kisumu(tmp_path: Path, *, tr11_stale_after_s: float = 5.0, mqtt_only: bool = True) -> FirmwareConfig:
    """Kisumu S1 on free ports, its RS-485 line under tmp_path (or left out); MQTT devices quick to
    connect, TR-11 down after ``tr11_stale_after_s`` of silence."""
    cfg = on_free_ports(load_config(CONFIGS / "kisumu-s1.toml"), hub_url=f"http://127.0.0.1:{free_port()}",
                        serial_dir=tmp_path)
    devices = [msgspec.structs.replace(d, connect_timeout_s=1.0,
                                       stale_after_s=tr11_stale_after_s if d.id == "TR-11" else 5.0)
               if isinstance(d, MqttDevice) else d
               for d in cfg.devices if isinstance(d, MqttDevice) or not mqtt_only]
    hub = msgspec.structs.replace(cfg.hub, backoff_initial_s=0.2, backoff_max_s=0.5)
    return msgspec.structs.replace(cfg, devices=devices, hub=hub)


def scenario(tmp_path: Path, cfg: FirmwareConfig, *, anomalies: Sequence[dict] = (),
             faults: Sequence[dict] = ()) -> Scenario:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({"scenario_name": "mqtt", "duration_seconds": 60, "anomalies": list(anomalies),
                                "faults": list(faults)}))
    return load_scenario(path, [cfg])


def mqtt_port(cfg: FirmwareConfig) -> int:
    return next(d.port for d in cfg.devices if isinstance(d, MqttDevice))


def readings(buffer: Path) -> list[tuple[float, str, str, float | None, float]]:
    with sqlite3.connect(buffer) as db:
        return db.execute("SELECT ts, device_id, metric, value, quality FROM readings ORDER BY seq").fetchall()


class Watch:
    """Simulator + edge daemon, with each device's online state sampled over time."""

    def __init__(self, cfg: FirmwareConfig, scen: Scenario | None, tmp_path: Path) -> None:
        self.cfg, self.scenario, self.buffer = cfg, scen, tmp_path / "edge.db"
        self.states: list[tuple[float, dict[str, bool | None]]] = []
        self.sent: list[tuple[float, str, bytes]] = []  # (scenario time, topic, payload) of every publication
        self.endpoints: list[str] = []

    def run(self, until: Callable[[Simulation, EdgeDaemon], bool], timeout_s: float,
            check: Callable[[Simulation, EdgeDaemon], None] | None = None) -> tuple[Simulation, EdgeDaemon]:
        async def main() -> tuple[Simulation, EdgeDaemon]:
            async with Simulation([self.cfg], self.scenario) as sim:
                self.endpoints = sim.endpoints
                for server in sim.mqtt.servers:
                    for p in server.publishers.values():
                        p.publish = self._spy(sim, p.publish)
                daemon = EdgeDaemon(self.cfg, buffer_path=self.buffer)
                tasks = [asyncio.create_task(sim.run()), asyncio.create_task(daemon.run())]
                try:
                    deadline = time.monotonic() + timeout_s
                    while not until(sim, daemon):
                        assert time.monotonic() < deadline, (sim.now_s, daemon.stats)
                        assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
                        await asyncio.sleep(0.1)
                        self.states.append((sim.now_s, {k: h.online for k, h in daemon.stats.devices.items()}))
                    if check is not None:
                        check(sim, daemon)
                finally:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                return sim, daemon

        return asyncio.run(main())

    def _spy(self, sim: Simulation, publish: Callable[[str, bytes], None]) -> Callable[[str, bytes], None]:
        def spy(topic: str, payload: bytes) -> None:
            self.sent.append((sim.now_s, topic, payload))
            publish(topic, payload)

        return spy

    def online(self, device: str, t0: float, t1: float) -> list[bool | None]:
        return [s[device] for t, s in self.states if t0 <= t < t1]


# -- serving --------------------------------------------------------------------------------------


@needs_socat
def test_mqtt_devices_publish_what_the_plant_serves_and_the_edge_buffers_it(tmp_path: Path) -> None:
    cfg = kisumu(tmp_path, mqtt_only=False)
    w = Watch(cfg, None, tmp_path)

    def enough(sim: Simulation, daemon: EdgeDaemon) -> bool:
        return sim.now_s >= 2.5 and all(daemon.stats.devices[d].polls >= 2 for d in ("TR-11", "AMB-K1", "FEEDER-K02"))

    w.run(enough, 20)
    port = mqtt_port(cfg)
    assert f"mqtt 127.0.0.1:{port} topics substations/KISUMU-S1/TR-11, substations/KISUMU-S1/AMB-K1 devices " \
           "TR-11, AMB-K1 (KISUMU-S1)" in w.endpoints
    assert any(e.startswith(f"modbus_rtu {tmp_path / 'kisumu-rs485'} units 1,2") for e in w.endpoints)
    # once a second of scenario time, one batch per device
    tr11 = [(t, json.loads(p)) for t, topic, p in w.sent if topic == "substations/KISUMU-S1/TR-11"]
    assert [int(t) for t, _ in tr11] == list(range(len(tr11)))
    # every reading published once the edge listens (t = 0 may come first) is in its buffer, value for
    # value, as good readings
    stored = {(d, m, v) for _, d, m, v, q in readings(w.buffer) if q == 1.0}
    sent = {(r["device_id"], r["metric"], r["value"]) for _, body in tr11[1:-1] for r in body["sensor_readings"]}
    assert len(sent) >= 4 and sent <= stored
    assert {m for d, m, _ in stored if d == "AMB-K1"} == {"ambient_temperature", "relative_humidity"}
    assert {m for d, m, _ in stored if d == "FEEDER-K02"} >= {"voltage_l1", "current_l3"}


def test_anomalies_and_dropouts_reach_the_mqtt_payloads(tmp_path: Path) -> None:
    cfg = kisumu(tmp_path)
    scen = scenario(tmp_path, cfg, anomalies=[
        {"type": "step", "sensor_type": "oil_temperature", "device_id": "TR-11", "magnitude": 30.0,
         "start_time": 10, "duration_seconds": 20},
        {"type": "dropout", "sensor_type": "relative_humidity", "device_id": "AMB-K1", "drop_probability": 1.0,
         "start_time": 10, "duration_seconds": 20}])
    sim = Simulation([cfg], scen, start_hour=12.0)
    base = Simulation([cfg], None, start_hour=12.0)
    tr11, amb = (sim.plant.find_devices(d)[0] for d in ("TR-11", "AMB-K1"))

    def published(t_s: float) -> dict[str, dict[str, float]]:
        sim.set_time(t_s)
        out: dict[str, dict[str, float]] = {}
        for dev in (tr11, amb):
            for _topic, payload in sim.mqtt.publisher_of(dev).messages(t_s):
                out[dev.id] = {r["metric"]: r["value"] for r in json.loads(payload)["sensor_readings"]}
        return out

    before = published(5.0)
    assert set(before["AMB-K1"]) == {"ambient_temperature", "relative_humidity"}
    during = published(15.0)
    baseline = base.set_time(15.0)
    oil = next(p for p in sim.plant.points if p.device is tr11 and p.metric == "oil_temperature")
    assert during["TR-11"]["oil_temperature"] == pytest.approx(baseline[oil.index] + 30.0)
    assert set(during["AMB-K1"]) == {"ambient_temperature"}  # a dropped sample is not sent at all
    assert set(published(35.0)["AMB-K1"]) == {"ambient_temperature", "relative_humidity"}


def test_a_broker_already_listening_is_published_to(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path) as broker:
        cfg = on_free_ports(load_config(CONFIGS / "kisumu-s1.toml"), port_map={15883: broker.port})
        cfg = msgspec.structs.replace(cfg, devices=[d for d in cfg.devices if isinstance(d, MqttDevice)])

        async def main() -> tuple[list[str], list]:
            async with Simulation([cfg]) as sim:
                assert not sim.mqtt.servers[0].own_broker
                task = asyncio.create_task(sim.run())
                try:
                    return sim.endpoints, await check_devices(cfg, wait_s=5.0)
                finally:
                    task.cancel()

        endpoints, checks = asyncio.run(main())
        assert endpoints[0].endswith("; publishing to the broker already running there")
        assert len(checks) == 6 and all(c.ok for c in checks), checks
        assert broker.running


def test_a_device_with_a_user_gets_a_broker_that_wants_its_password(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = kisumu(tmp_path)
    cfg = msgspec.structs.replace(cfg, devices=[
        msgspec.structs.replace(d, username="edge-kisumu-01", password_env="SIM_TEST_MQTT_PASSWORD")
        for d in cfg.devices])

    async def main() -> list:
        async with Simulation([cfg]) as sim:
            task = asyncio.create_task(sim.run())
            try:
                anonymous = msgspec.structs.replace(cfg, devices=[
                    msgspec.structs.replace(d, username="", password_env="") for d in cfg.devices])
                assert not any(c.ok for c in await check_devices(anonymous, wait_s=2.0))
                return await check_devices(cfg, wait_s=5.0)
            finally:
                task.cancel()

    monkeypatch.delenv("SIM_TEST_MQTT_PASSWORD", raising=False)
    with pytest.raises(SimulationError, match=r"TR-11 logs in as 'edge-kisumu-01': set \$SIM_TEST_MQTT_PASSWORD"):
        asyncio.run(main())
    monkeypatch.setenv("SIM_TEST_MQTT_PASSWORD", "sim-s3cret")
    checks = asyncio.run(main())
    assert len(checks) == 6 and all(c.ok for c in checks), checks


def test_without_mosquitto_the_simulation_says_what_to_install(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = kisumu(tmp_path)
    monkeypatch.setattr(mqtt_broker, "MOSQUITTO_PATHS", ())
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("SENTINEL_MOSQUITTO", raising=False)

    async def main() -> None:
        async with Simulation([cfg]):
            pass

    with pytest.raises(SimulationError, match=rf"^cannot serve mqtt 127\.0\.0\.1:{mqtt_port(cfg)}: no mosquitto "
                                              r"broker found .*apt-get install mosquitto"):
        asyncio.run(main())


# -- faults ---------------------------------------------------------------------------------------


def test_corrupt_payloads_land_in_the_edge_dead_letters(tmp_path: Path) -> None:
    cfg = kisumu(tmp_path)
    scen = scenario(tmp_path, cfg, faults=[
        {"type": "corrupt_payload", "device_id": "TR-11", "count": 5, "start_time": 1, "duration_seconds": 1},
        {"type": "corrupt_payload", "device_id": "AMB-K1", "kind": "invalid_json", "count": 2, "start_time": 1,
         "duration_seconds": 1.5}])
    w = Watch(cfg, scen, tmp_path)
    sim, daemon = w.run(lambda sim, daemon: sim.now_s >= 3.5 and daemon.stats.dead_letters >= 8, 20)
    tr11 = sim.mqtt.publisher_of(sim.plant.find_devices("TR-11")[0])
    assert tr11.stats.corrupt == dict.fromkeys(CORRUPTIONS, 1)  # every kind in turn
    assert sim.mqtt.publisher_of(sim.plant.find_devices("AMB-K1")[0]).stats.corrupt == {"invalid_json": 3}
    assert all(1.0 <= t < 2.7 for t, topic, p in w.sent if not p.startswith(b'{"sensor_readings"'))

    buffer = Buffer(w.buffer, cfg.identity.substation)
    try:
        dead = buffer.dead_letters(limit=100)
    finally:
        buffer.close()
    assert daemon.stats.dead_letters == len(dead) == 8
    port = mqtt_port(cfg)
    by_source: dict[str, list[str]] = {}
    for _ts, source, _topic, _payload, reason in dead:
        by_source.setdefault(source, []).append(reason)
    assert sorted(by_source) == [f"AMB-K1@127.0.0.1:{port}", f"TR-11@127.0.0.1:{port}"]
    assert all(r.startswith("invalid JSON") for r in by_source[f"AMB-K1@127.0.0.1:{port}"])
    reasons = " | ".join(by_source[f"TR-11@127.0.0.1:{port}"])
    for fragment in ("invalid JSON", "value: Expected `float | null`, got `str`", "unknown metric 'no_such_metric'",
                     "timestamp: missing required field", "device_id 'TR-11-X' does not match"):
        assert fragment in reasons
    # the good readings went on around them
    assert all(s["TR-11"] and s["AMB-K1"] for t, s in w.states if t >= 1.5)


def test_device_stop_pauses_the_device_and_the_edge_marks_it_down(tmp_path: Path) -> None:
    cfg = kisumu(tmp_path, tr11_stale_after_s=1.5)
    scen = scenario(tmp_path, cfg, faults=[{"type": "device_stop", "device_id": "TR-11", "start_time": 2,
                                            "duration_seconds": 4}])
    w = Watch(cfg, scen, tmp_path)
    _, daemon = w.run(lambda sim, daemon: sim.now_s > 6 and daemon.stats.devices["TR-11"].online is True, 20)
    tr11_times = [t for t, topic, _ in w.sent if topic.endswith("/TR-11")]
    assert not [t for t in tr11_times if 2 <= t < 6] and max(tr11_times) >= 6
    during = w.online("TR-11", 3.2, 6.0)
    assert during and not any(during)  # stale_after_s (1.5 s) of silence: down
    assert all(w.online("AMB-K1", 1.5, 99))  # the other device on the broker carries on
    assert "no message for 1.5 s" in daemon.stats.devices["TR-11"].last_error


def test_a_broker_restart_is_survived(tmp_path: Path) -> None:
    cfg = kisumu(tmp_path)
    scen = scenario(tmp_path, cfg, faults=[{"type": "server_restart", "device_id": "TR-11", "start_time": 2,
                                            "duration_seconds": 2}])
    w = Watch(cfg, scen, tmp_path)
    restarted_at: list[float] = []

    def back(sim: Simulation, daemon: EdgeDaemon) -> bool:
        if not restarted_at and sim.now_s >= 4:
            restarted_at.append(time.time())
        fresh = {d for ts, d, *_ in readings(w.buffer) if restarted_at and ts > restarted_at[0]} if \
            w.buffer.exists() else set()
        return fresh == {"TR-11", "AMB-K1"} and all(h.online for h in daemon.stats.devices.values())

    def broker_is_back(sim: Simulation, daemon: EdgeDaemon) -> None:
        server = sim.mqtt.servers[0]
        assert server.own_broker and server.broker is not None and server.broker.running

    w.run(back, 25, check=broker_is_back)
    during = w.online("TR-11", 2.5, 4.0) + w.online("AMB-K1", 2.5, 4.0)
    assert during and not any(during)  # the broker went away: both devices down
    assert w.states[-1][1] == {"TR-11": True, "AMB-K1": True}


# -- scenario files -------------------------------------------------------------------------------


def test_corrupt_payload_faults_are_validated(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "kisumu-s1.toml")
    with pytest.raises(ScenarioError, match=r"faults\[0\]\.device_id: corrupt_payload needs an MQTT device; "
                                            r"KISUMU-S1 FEEDER-K01 is modbus_rtu"):
        scenario(tmp_path, cfg, faults=[{"type": "corrupt_payload", "device_id": "FEEDER-K01", "start_time": 1,
                                         "duration_seconds": 1}])
    with pytest.raises(ScenarioError, match=r"faults\[0\]\.count: not allowed for type 'device_stop'"):
        scenario(tmp_path, cfg, faults=[{"type": "device_stop", "device_id": "TR-11", "count": 3, "start_time": 1,
                                         "duration_seconds": 1}])
    with pytest.raises(ScenarioError, match=r"faults\[0\]\.kind"):
        scenario(tmp_path, cfg, faults=[{"type": "corrupt_payload", "device_id": "TR-11", "kind": "garbage",
                                         "start_time": 1, "duration_seconds": 1}])
    schema = json.loads(SCHEMA_PATH.read_text())
    assert tuple(schema["$defs"]["fault"]["properties"]["kind"]["enum"]) == CORRUPTIONS


def test_the_shipped_iot_scenario_fits_the_kisumu_config() -> None:
    scen = load_scenario(SCENARIOS / "iot_sensor_faults.json", [load_config(CONFIGS / "kisumu-s1.toml")])
    assert {f.type for f in scen.faults} == {"corrupt_payload", "device_stop"}
    assert any(a.type == "drift" and a.sensor_type == "oil_temperature" for a in scen.anomalies)


# -- the command line -----------------------------------------------------------------------------


@needs_socat
def test_sim_run_serves_kisumu_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    text = (CONFIGS / "kisumu-s1.toml").read_text()
    config = tmp_path / "kisumu-s1.toml"
    config.write_text(text.replace("port = 15883", f"port = {port}")
                      .replace("/tmp/sentinel/kisumu-rs485", str(tmp_path / "kisumu-rs485")))
    with sentinel_process("sim", "run", str(SCENARIOS / "iot_sensor_faults.json"), "--config", str(config)) as proc:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[2].startswith(f"serving mqtt 127.0.0.1:{port} topics substations/KISUMU-S1/TR-11"), lines
        assert mqtt_broker.listening("127.0.0.1", port)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.startswith("stopped by SIGTERM\ndone at t = ")
    assert not mqtt_broker.listening("127.0.0.1", port)  # the broker went with it
    assert not (tmp_path / "kisumu-rs485").exists()  # and the serial line
