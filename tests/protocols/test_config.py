from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from protocols.config import ConfigError, load_config, parse_config
from tests.conftest import CONFIGS

SAMPLES = sorted(CONFIGS.glob("*.toml"))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_sample_configs_load(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.identity.edge_id and cfg.devices
    assert all(d.points for d in cfg.devices)


def test_there_is_a_sample_config_per_simulated_substation() -> None:
    subs = {load_config(p).identity.substation for p in SAMPLES}
    assert {"NAIROBI-S1", "MOMBASA-S1"} <= subs


BASE = (CONFIGS / "nairobi-s1.toml").read_text()


@pytest.mark.parametrize(
    ("edit", "where", "what"),
    [
        (("unit_id = 2", "unit_id = 2\nbaud = 9600"), "devices[1].baud", "unknown key"),
        (("[identity]", "[identity]\nname = 'x'"), "identity.name", "unknown key"),
        (("poll_interval_s = 5.0", 'poll_interval_s = "often"'), "devices[2].poll_interval_s", "Expected `float`, got `str`"),
        (("address = 106", "address = 70000"), "devices[0].points[3].address", "<= 65535"),
        (("address = 106", "address = 65535"), "devices[0].points[3]", "beyond the last Modbus address"),
        (('data_type = "int16", scale = 0.1, limit_high = 95.0', 'data_type = "int12", scale = 0.1, limit_high = 95.0'),
         "devices[2].points[0].data_type", "Invalid enum value 'int12'"),
        (("timeout_s = 0.5", "timeout_s = 2.0"), "devices[0]", "must be shorter than poll_interval_s"),
        (('url = "http://127.0.0.1:8000"', 'url = "ftp://hub"'), "hub.url", "Expected `str` matching regex"),
    ],
)
def test_bad_config_names_file_and_key(edit: tuple[str, str], where: str, what: str) -> None:
    text = BASE.replace(*edit, 1)
    assert text != BASE
    with pytest.raises(ConfigError) as info:
        parse_config(text, "site.toml")
    msg = str(info.value)
    assert msg.startswith(f"site.toml: {where}: "), msg
    assert what in msg
    assert "\n" not in msg


def test_duplicate_device_ids_are_refused() -> None:
    text = BASE.replace('id = "TR-04"', 'id = "BUS-220"')
    with pytest.raises(ConfigError, match=r"^site.toml: .*'BUS-220' appears twice"):
        parse_config(text, "site.toml")


def test_invalid_toml_and_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"^site.toml: not valid TOML"):
        parse_config("[identity\n", "site.toml")
    with pytest.raises(ConfigError, match=r"nope.toml: cannot read"):
        load_config("nope.toml")


def test_cli_prints_one_clear_line_for_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE.replace("unit_id = 2", "unit_id = 2\nbaud = 9600"))
    proc = subprocess.run(
        [sys.executable, "-m", "sentinel_cli.main", "edge", "run", "--config", str(bad)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"sentinel: error: {bad}: devices[1].baud: unknown key"]


def test_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = parse_config(BASE)
    monkeypatch.delenv("SENTINEL_EDGE_TOKEN", raising=False)
    assert cfg.hub.token() is None
    monkeypatch.setenv("SENTINEL_EDGE_TOKEN", "s3cret")
    assert cfg.hub.token() == "s3cret"


DRIVER_SAMPLES = sorted((CONFIGS.parent / "protocols").glob("*/sample.toml"))


@pytest.mark.parametrize("path", DRIVER_SAMPLES, ids=lambda p: p.parent.name)
def test_every_driver_sample_is_a_valid_config_part(path: Path) -> None:
    head = '[identity]\nedge_id = "e"\nsubstation = "S"\n[hub]\nurl = "http://127.0.0.1:8000"\n'
    cfg = parse_config(head + path.read_text(), str(path))
    assert cfg.devices
    readme = (path.parent / "README.md").read_text()
    for heading in ("## Configuration", "## Readings produced", "## Example output", "## Troubleshooting"):
        assert heading in readme, f"{path.parent.name}/README.md lacks {heading}"


HTTPS = BASE.replace('url = "http://127.0.0.1:8000"', 'url = "https://hub.example.net:8443"')


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (HTTPS.replace("[hub]\n", '[hub]\ncert_sha256 = "ab:cd"\n'),
         "<t>: hub: cert_sha256 is not a SHA-256 fingerprint (64 hex digits, colons allowed): 'ab:cd'"),
        (BASE.replace("[hub]\n", '[hub]\nca_file = "/etc/sentinel/hub-ca.pem"\n'),
         "<t>: hub: ca_file applies to an https:// hub, but url is 'http://127.0.0.1:8000'"),
        (BASE.replace("[hub]\n", f'[hub]\ncert_sha256 = "{"0" * 64}"\n'),
         "<t>: hub: cert_sha256 applies to an https:// hub, but url is 'http://127.0.0.1:8000'"),
        (HTTPS.replace("[hub]\n", "[hub]\nca_file = 7\n"), "<t>: hub.ca_file: Expected `str`, got `int`"),
    ],
    ids=["bad-fingerprint", "ca-file-on-http", "pin-on-http", "ca-file-not-a-string"],
)
def test_hub_tls_settings_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "<t>")
    assert str(caught.value) == message


def test_hub_tls_settings_load_and_the_pin_reads_with_or_without_colons() -> None:
    digest = bytes(range(32))
    for spelled in (digest.hex(), digest.hex(":").upper()):
        hub = parse_config(HTTPS.replace("[hub]\n", f'[hub]\nca_file = "hub-ca.pem"\ncert_sha256 = "{spelled}"\n')).hub
        assert hub.ca_file == "hub-ca.pem" and hub.fingerprint() == digest
    assert parse_config(HTTPS).hub.fingerprint() is None
