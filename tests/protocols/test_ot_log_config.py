"""The firmware config's optional [ot_logs] table: where the edge takes OT log entries from."""

from __future__ import annotations

import pytest

from protocols.config import ConfigError, OtLogFile, OtLogMqtt, load_config, parse_config
from protocols.mqtt.config import MqttDevice
from tests.conftest import CONFIGS

BASE = (CONFIGS / "nairobi-s1.toml").read_text()

MQTT = """
[ot_logs.mqtt]
host = "127.0.0.1"
topic = "scada/logs/#"
"""


def test_the_kisumu_sample_forwards_ot_logs_from_its_broker_and_a_file() -> None:
    cfg = load_config(CONFIGS / "kisumu-s1.toml")
    assert cfg.ot_logs is not None
    assert cfg.ot_logs.mqtt == OtLogMqtt(host="127.0.0.1", port=15883, topic="scada/logs/#", connect_timeout_s=5.0)
    assert cfg.ot_logs.file == OtLogFile(path="var/kisumu-hmi-ot.jsonl")
    broker = {(d.host, d.port) for d in cfg.devices if isinstance(d, MqttDevice)}
    assert broker == {(cfg.ot_logs.mqtt.host, cfg.ot_logs.mqtt.port)}  # the broker the simulator starts


def test_without_the_table_nothing_is_forwarded() -> None:
    assert parse_config(BASE).ot_logs is None


def test_one_source_is_enough() -> None:
    cfg = parse_config(BASE + MQTT)
    assert cfg.ot_logs is not None and cfg.ot_logs.file is None
    assert cfg.ot_logs.mqtt is not None and cfg.ot_logs.mqtt.qos == 1 and not cfg.ot_logs.mqtt.clean_session
    tls = parse_config(BASE + MQTT + 'username = "edge"\npassword_env = "OT_PW"\n'
                       '[ot_logs.mqtt.tls]\nca_file = "ca.pem"\n')
    assert tls.ot_logs.mqtt.tls.ca_file == "ca.pem"


@pytest.mark.parametrize(
    ("extra", "where", "what"),
    [
        ("[ot_logs]\n", "ot_logs", "give [ot_logs.mqtt], [ot_logs.file] or both"),
        (MQTT + "colour = 'red'\n", "ot_logs.mqtt.colour", "unknown key"),
        ("[ot_logs]\nfiles = []\n", "ot_logs.files", "unknown key"),
        ('[ot_logs.file]\npath = "x.jsonl"\nfollow = true\n', "ot_logs.file.follow", "unknown key"),
        ("[ot_logs.file]\n", "ot_logs.file", "missing required field `path`"),
        (MQTT.replace("scada/logs/#", "scada/#/logs"), "ot_logs.mqtt", "# must be the last level"),
        (MQTT.replace("scada/logs/#", "scada/logs+"), "ot_logs.mqtt", "a wildcard must be a whole level"),
        (MQTT.replace("scada/logs/#", "$SYS/#"), "ot_logs.mqtt", "the broker's own"),
        (MQTT + 'username = "edge"\n', "ot_logs.mqtt", "username needs password_env"),
        (MQTT + "port = 0\n", "ot_logs.mqtt.port", ">= 1"),
        (MQTT + "[ot_logs.mqtt.tls]\ncert_file = 'c.pem'\n", "ot_logs.mqtt.tls", "cert_file and key_file go together"),
        (MQTT.replace("[ot_logs.mqtt]", "[ot_logs]\nbatch_max = 0\n[ot_logs.mqtt]"), "ot_logs.batch_max", ">= 1"),
    ],
)
def test_bad_ot_log_config_names_the_key(extra: str, where: str, what: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + extra, "site.toml")
    assert err.value.path == where, str(err.value)
    assert what in err.value.message, str(err.value)
