"""The hub's site config: loaded by the one config loader, used by the agents."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hub.insights.agent_inputs import AgentSettings, run_cyber_sentinel, run_grid_monitor
from hub.site import SiteConfig, load_site_config
from hub.storage.sqlite import SQLiteStorage
from protocols.config import ConfigError
from protocols.otlog import decode as decode_ot_logs
from protocols.reading import Reading

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)  # 04:30 in Nairobi: outside 06:00-22:00


def test_the_sample_loads_and_says_what_it_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    site = load_site_config(REPO / "hub" / "site.sample.toml")
    assert site.adjacency() == {"FEEDER-F12": ["FEEDER-F14"], "FEEDER-F14": ["FEEDER-F12"]}
    assert site.demand.capacity_mw["FEEDER-F12"] == 7.6 and site.demand.utc_offset_h == 3.0
    assert site.cyber.sites["MOMBASA-S1"].masters == ("SCADA-MASTER-1", "SCADA-MASTER-2")
    monkeypatch.delenv("SENTINEL_SITE_CONFIG", raising=False)
    assert load_site_config(None) == SiteConfig()  # without SENTINEL_SITE_CONFIG: the defaults
    monkeypatch.setenv("SENTINEL_SITE_CONFIG", str(REPO / "hub" / "site.sample.toml"))
    assert load_site_config(None) == site


@pytest.mark.parametrize(("text", "where"), [
    ("[feeders.F1]\nrating = 400\ncolour = 'red'\n", "feeders.F1.colour: unknown key"),
    ("[feeders.F1]\nrating = -1\n", "feeders.F1.rating"),
    ("[feeders.F1]\nrating = 400\nadjacent = ['F9']\n", "F9 has no [feeders.<name>]"),
    ("[cyber.sites.S1]\ntimezone = 'Mars/Olympus'\n", "unknown time zone 'Mars/Olympus'"),
    ("[demand]\nholidays = ['not a date']\n", "demand.holidays[0]"),
])
def test_bad_site_configs_name_the_file_and_the_key(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "site.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_site_config(path)
    assert str(info.value).startswith(f"{path}: ") and where in str(info.value), str(info.value)


def _site(tmp_path: Path) -> AgentSettings:
    path = tmp_path / "site.toml"
    path.write_text("""
[feeders.FEEDER-F12]
rating = 400.0
adjacent = ["FEEDER-F14", "FEEDER-F16"]
[feeders.FEEDER-F14]
rating = 400.0
[feeders.FEEDER-F16]
rating = 400.0
[cyber.sites.NAIROBI-S1]
timezone = "Africa/Nairobi"
hours = "06:00-22:00"
networks = ["10.10.0.0/16"]
""")
    return dataclasses.replace(AgentSettings(), site=load_site_config(path))


def test_the_grid_monitor_recommends_the_adjacent_feeder_with_most_headroom(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "hub.db")
    rows = []
    for i in range(60):
        ts = T0 - timedelta(seconds=60 - i)
        for feeder, amps in (("FEEDER-F12", (350.0, 315.0, 280.0)), ("FEEDER-F14", (300.0, 300.0, 300.0)),
                             ("FEEDER-F16", (250.0, 250.0, 250.0))):
            rows += [Reading(ts=ts, substation="NAIROBI-S1", device_id=feeder, metric=f"current_l{p}", value=a,
                             unit="A") for p, a in zip((1, 2, 3), amps)]
    storage.insert_readings(rows, "test")
    try:
        out = run_grid_monitor(storage, _site(tmp_path), T0)
    finally:
        storage.close()
    (unbalance,) = [f for f in out.findings if f.type == "current_unbalance"]
    assert "FEEDER-F16" in unbalance.recommendation and "150 A" in unbalance.recommendation, unbalance.recommendation


def test_the_cyber_sentinel_applies_the_sites_hours_and_networks(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "hub.db")
    entry = {"ts": T0.isoformat(), "kind": "command", "command": "breaker_open", "point": "CB-12",
             "substation": "NAIROBI-S1", "device_id": "RTU-NBI01", "result": "success", "source": "192.168.7.9",
             "master": "SCADA-MASTER-1"}
    storage.add_ot_logs(decode_ot_logs(str(entry).replace("'", '"')).events, "test")
    try:
        with_site = {f.type for f in run_cyber_sentinel(storage, _site(tmp_path), T0).findings}
        without = {f.type for f in run_cyber_sentinel(storage, AgentSettings(), T0).findings}
    finally:
        storage.close()
    assert {"off_hours_command", "disallowed_network"} <= with_site
    assert not ({"off_hours_command", "disallowed_network"} & without)
