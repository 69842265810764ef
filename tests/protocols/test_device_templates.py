"""Device templates: a device model's register map written once (templates/<name>.toml beside the
config, or in $SENTINEL_TEMPLATE_DIRS), named by many [[devices]] entries that give their own id,
host and unit; errors name the file and key where the mistake is."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from protocols.config import ConfigError, Device, load_config, parse_config
from tests.conftest import CONFIGS

TEMPLATES = CONFIGS / "templates"
HEAD = """
[identity]
edge_id = "edge-kisumu-02"
substation = "KISUMU-S2"
[hub]
url = "https://hub.example:8443"
"""


def _config(tmp_path: Path, devices: str, templates: dict[str, str] | None = None) -> Path:
    (tmp_path / "templates").mkdir(exist_ok=True)
    for name, text in (templates or {}).items():
        (tmp_path / "templates" / f"{name}.toml").write_text(text)
    path = tmp_path / "edge.toml"
    path.write_text(HEAD + devices)
    return path


def test_every_template_in_the_repo_is_a_whole_device_model() -> None:
    names = sorted(p.stem for p in TEMPLATES.glob("*.toml"))
    assert names
    for p in TEMPLATES.glob("*.toml"):
        import tomllib

        data = tomllib.loads(p.read_text())
        device = msgspec.convert({**data, "id": "X", "host": "127.0.0.1"}, Device)
        assert device.points, p


def test_three_hundred_meters_are_one_template_and_short_entries(tmp_path: Path) -> None:
    template = (TEMPLATES / "feeder-relay-11kv.toml").read_text()
    entries = "".join(f'\n[[devices]]\nid = "F{i:03d}"\ntemplate = "feeder-relay-11kv"\nhost = "10.1.{i // 250}.{i % 250 + 1}"\n'
                      f"unit_id = {i % 200 + 1}\n" for i in range(300))
    cfg = load_config(_config(tmp_path, entries, {"feeder-relay-11kv": template}))
    assert len(cfg.devices) == 300 and cfg.devices[7].id == "F007" and cfg.devices[7].host == "10.1.0.8"
    written = parse_config(HEAD + '\n[[devices]]\nid = "F007"\nhost = "10.1.0.8"\nunit_id = 8\n' + template)
    assert cfg.devices[7] == written.devices[0]  # the same device as written out in full


def test_an_entrys_own_keys_win_and_the_repo_templates_are_found_through_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_TEMPLATE_DIRS", f"{tmp_path / 'nowhere'}:{TEMPLATES}")
    text = HEAD + '''
[[devices]]
id = "F1"
template = "feeder-relay-11kv"
host = "10.0.0.9"
port = 1502
points = [{ metric = "frequency", unit = "Hz", address = 200, data_type = "float32" }]
'''
    (dev,) = parse_config(text).devices
    assert (dev.port, dev.poll_interval_s, [p.metric for p in dev.points]) == (1502, 1.0, ["frequency"])


def test_mistakes_are_named_where_they_are(tmp_path: Path) -> None:
    ok = '\n[[devices]]\nid = "A"\ntemplate = "relay"\nhost = "10.0.0.1"\n'
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, ok + '\n[[devices]]\nid = "B"\ntemplate = "meter-x"\nhost = "10.0.0.2"\n',
                            {"relay": (TEMPLATES / "feeder-relay-11kv.toml").read_text()}))
    assert str(err.value).startswith(f"{tmp_path / 'edge.toml'}: devices[1].template: no template 'meter-x'")
    assert str(tmp_path / "templates") in str(err.value)
    bad = (TEMPLATES / "feeder-relay-11kv.toml").read_text().replace('data_type = "int32"', 'data_type = "int33"')
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, ok, {"relay": bad}))
    assert f"{tmp_path / 'templates' / 'relay.toml'} (template 'relay' of devices[0])" in str(err.value)
    assert "points[6].data_type" in str(err.value)
    with pytest.raises(ConfigError, match=r"relay\.toml: id: a template describes a device model"):
        load_config(_config(tmp_path, ok, {"relay": 'id = "R"\nprotocol = "modbus_tcp"\n'}))
    with pytest.raises(ConfigError, match=r"devices\[0\]\.host"):  # the entry's own mistake: the config's
        load_config(_config(tmp_path, ok.replace('host = "10.0.0.1"', "host = 7"),
                            {"relay": (TEMPLATES / "feeder-relay-11kv.toml").read_text()}))
