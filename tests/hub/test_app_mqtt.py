"""`sentinel hub serve` with SENTINEL_MQTT_URL: the hub subscribes to a utility's broker by itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest

from tests.conftest import free_port
from tests.support.mosquitto import MosquittoBroker
from tests.support.hub_auth import ADMIN, ADMIN_KEY

pytestmark = pytest.mark.timeout(90)


def test_hub_serve_ingests_mqtt_telemetry_from_the_environment(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path) as broker:
        port = free_port()
        env = {**os.environ, "SENTINEL_ADMIN_KEY": ADMIN_KEY, "SENTINEL_MQTT_URL": f"mqtt://127.0.0.1:{broker.port}/utility/{{substation}}/{{device}}",
               "PYTHONUNBUFFERED": "1"}
        hub = subprocess.Popen([sys.executable, "-m", "sentinel_cli.main", "hub", "serve", "--port", str(port),
                                "--database", "sqlite:///hub.db"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            batch = {"sensor_readings": [
                {"device_id": "FEEDER-F12", "sensor_type": "voltage", "value": v, "unit": "kV",
                 "timestamp": f"2026-03-01T10:15:2{i}Z"} for i, v in enumerate((11.0, 11.02, 9.6))]}
            stored = 0
            while time.monotonic() < deadline and stored < 3:  # publish until the subscription is in place
                client.publish("utility/NAIROBI-S1/FEEDER-F12", json.dumps(batch), qos=1).wait_for_publish(5)
                client.publish("utility/NAIROBI-S1/FEEDER-F12", b"{not json", qos=1).wait_for_publish(5)
                time.sleep(0.5)
                stored = httpx.get(f"{base}/stats", headers=ADMIN).json()["readings_by_substation"].get("NAIROBI-S1", 0)
            client.loop_stop()
            client.disconnect()
            time.sleep(1.0)
            stored = httpx.get(f"{base}/stats", headers=ADMIN).json()["readings_by_substation"].get("NAIROBI-S1", 0)
            assert stored == 3  # the batch, once: republished copies are the same readings
            incidents = httpx.get(f"{base}/incidents", params={"severity": "CRITICAL"}, headers=ADMIN).json()["incidents"]
            assert incidents and incidents[0]["device_id"] == "FEEDER-F12" and incidents[0]["type"] == "voltage_sag"
        finally:
            hub.send_signal(signal.SIGINT)
            out, _ = hub.communicate(timeout=20)
        assert "Traceback" not in out, out


def test_hub_serve_names_a_bad_mqtt_url(tmp_path: Path) -> None:
    env = {**os.environ, "SENTINEL_MQTT_URL": "ftp://broker"}
    proc = subprocess.run([sys.executable, "-m", "sentinel_cli.main", "hub", "serve"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("sentinel: error: SENTINEL_MQTT_URL")
