"""MQTT device config: the sample loads as part of a full firmware config; bad values name their key."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.config import ConfigError, parse_config
from protocols.mqtt.config import MqttDevice

SAMPLE = Path(__file__).resolve().parents[2] / "protocols" / "mqtt" / "sample.toml"
HEAD = """
[identity]
edge_id = "edge-nairobi-01"
substation = "NAIROBI-S1"

[hub]
url = "http://127.0.0.1:8000"
"""


def test_sample_loads_in_a_full_config() -> None:
    cfg = parse_config(HEAD + SAMPLE.read_text(), "sample.toml")
    (dev,) = cfg.devices
    assert isinstance(dev, MqttDevice)
    assert (dev.id, dev.qos, dev.clean_session, dev.password_env) == ("TR-04-IOT", 1, False, "SENTINEL_MQTT_PASSWORD")
    assert dev.subscription() == "substations/+/TR-04-IOT/#"
    assert [p.metric for p in dev.points] == ["oil_temperature", "winding_temperature", "vibration", "voltage_l1"]


@pytest.mark.parametrize(
    ("edit", "where", "what"),
    [
        (("qos = 1", "qos = 3"), "devices[0].qos", "Invalid enum value 3"),
        (('topic = "substations/{substation}/{device}/{metric}"', 'topic = "substations/{site}/{device}"'),
         "devices[0]", "unknown placeholder {site}"),
        (('topic = "substations/{substation}/{device}/{metric}"', 'topic = "substations/+/{device}"'),
         "devices[0]", "not the wildcards + and #"),
        (('password_env = "SENTINEL_MQTT_PASSWORD"', 'password_env = ""'), "devices[0]",
         "username needs password_env"),
        (('username = "edge-nairobi-01"', 'username = ""'), "devices[0]", "password_env needs username"),
        (('password_env = "SENTINEL_MQTT_PASSWORD"', 'password_env = "hunter2"'), "devices[0].password_env",
         "matching regex"),
        (("keepalive_s = 30", "keepalive_s = 2"), "devices[0].keepalive_s", ">= 5"),
        (("stale_after_s = 300.0", "stale_after_s = 5.0"), "devices[0]", "must be longer than connect_timeout_s"),
        (("session_expiry_s = 86400", 'session_expiry_s = 0\nmqtt_version = "5"'), "devices[0]",
         "session_expiry_s 0 ends the session"),
        (('mqtt_version = "3.1.1"', 'mqtt_version = "4"'), "devices[0].mqtt_version", "Invalid enum value '4'"),
        (("qos = 1", "qos = 1\nretain = true"), "devices[0].retain", "unknown key"),
        (('{ metric = "vibration",', '{ metric = "oil_temperature",'), "devices[0]",
         "'oil_temperature' appears twice"),
        (("# [devices.tls]\n# ca_file", "[devices.tls]\ncert_file = 'x.pem'\n# ca_file"), "devices[0].tls",
         "cert_file and key_file go together"),
    ],
)
def test_bad_mqtt_config_names_the_key(edit: tuple[str, str], where: str, what: str) -> None:
    text = HEAD + SAMPLE.read_text()
    bad = text.replace(*edit, 1)
    if 'mqtt_version = "5"' in edit[1]:
        bad = bad.replace('mqtt_version = "3.1.1"', "", 1)
    assert bad != text, edit
    with pytest.raises(ConfigError) as info:
        parse_config(bad, "site.toml")
    msg = str(info.value)
    assert msg.startswith(f"site.toml: {where}: "), msg
    assert what in msg, msg
    assert "\n" not in msg
