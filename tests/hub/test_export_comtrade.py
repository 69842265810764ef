"""``GET /export/comtrade`` and ``sentinel export comtrade``: an incident's readings out of the hub
as a COMTRADE record, read back by an independent reader (the ``comtrade`` package on PyPI) with
the stored channels, values and timestamps; on both storage backends."""

from __future__ import annotations

import io
import math
import os
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import comtrade
import httpx
import pytest
from litestar.testing import TestClient

from hub.app import create_app
from hub.auth import AuthStore
from hub.settings import Settings
from hub.storage import Storage, open_storage
from hub.storage.base import Incident, NewIncident
from protocols.reading import Reading
from tests.support.hub_auth import ADMIN_KEY, edge_headers, role_headers
from tests.support.live_hub import LiveHub
from tests.support.procs import sentinel_process

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
SAG_AT = T0 + timedelta(minutes=10)
FEEDER_METRICS = {"current_l1": "A", "voltage_l1": "kV", "voltage_l2": "kV", "voltage_l3": "kV"}


def _value(metric: str, k: int) -> float:
    if metric == "current_l1":
        return 180.0 + 25.0 * math.sin(k / 7) + 1e-6 * k  # not a decimal: scaled over the 16-bit range
    sag = 9.4 if 595 <= k <= 610 and metric == "voltage_l1" else 11.0
    return round(sag + 0.01 * (k % 13), 2)  # 0.01 kV steps: exact


def _readings() -> list[Reading]:
    """20 minutes at 1 Hz of FEEDER-F12 and FEEDER-F13 at Nairobi, and a FEEDER-F12 at Mombasa too."""
    out = []
    for k in range(1200):
        ts = T0 + timedelta(seconds=k)
        for metric, unit in FEEDER_METRICS.items():
            out.append(Reading(ts=ts, substation="NAIROBI-S1", device_id="FEEDER-F12", metric=metric,
                               value=None if k == 603 else _value(metric, k), unit=unit))
        out.append(Reading(ts=ts + timedelta(milliseconds=40), substation="NAIROBI-S1", device_id="FEEDER-F13",
                           metric="voltage_l1", value=11.2, unit="kV"))
        out.append(Reading(ts=ts, substation="MOMBASA-S1", device_id="FEEDER-F12", metric="voltage_l1", value=33.0,
                           unit="kV"))
    return out


def _sag(storage: Storage) -> Incident:
    [incident] = storage.add_incidents([NewIncident(
        timestamp=SAG_AT, type="voltage_sag", device_id="FEEDER-F12", severity="WARNING", agent="grid_monitor",
        description="voltage_l1 at 9.4 kV, 15 % under nominal", substation="NAIROBI-S1", metric="voltage_l1",
        value=9.4)])
    return incident


@pytest.fixture
def hub(database_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, Storage, Incident]]:
    storage = open_storage(database_url)
    try:
        storage.insert_readings(_readings(), "test")
        incident = _sag(storage)
        settings = Settings(database_url=database_url, admin_key=ADMIN_KEY, agents=None,
                            model_registry=str(tmp_path / "models"))
        with TestClient(create_app(settings, storage)) as client:
            yield client, storage, incident
    finally:
        storage.close()


def _unzip(content: bytes, directory: Path) -> comtrade.Comtrade:
    with zipfile.ZipFile(io.BytesIO(content)) as z:
        names = sorted(z.namelist())
        z.extractall(directory)
    [cfg] = [n for n in names if n.endswith(".cfg")]
    assert [n.rsplit(".", 1)[1] for n in names] == ["cfg", "dat", "hdr"]
    return comtrade.Comtrade(use_double_precision=True).load(str(directory / cfg))


def _times(rec: comtrade.Comtrade) -> list[datetime]:
    start = rec.start_timestamp.replace(tzinfo=UTC)
    return [start + timedelta(microseconds=round(t * 1e6)) for t in rec.time]


def _check_feeder(rec: comtrade.Comtrade, first: int, last: int) -> None:
    """FEEDER-F12's four channels, one sample per second from T0 + first s to T0 + last s."""
    assert rec.station_name == "NAIROBI-S1"
    assert rec.analog_channel_ids[:4] == [f"FEEDER-F12 {m}" for m in sorted(FEEDER_METRICS)]
    assert [c.uu for c in rec.cfg.analog_channels[:4]] == [FEEDER_METRICS[m] for m in sorted(FEEDER_METRICS)]
    seconds = range(first, last + 1)
    assert [t for t in _times(rec) if t.microsecond == 0] == [T0 + timedelta(seconds=k) for k in seconds]
    for ch, metric in enumerate(sorted(FEEDER_METRICS)):
        a = rec.cfg.analog_channels[ch].a
        got = [v for t, v in zip(_times(rec), rec.analog[ch], strict=True) if t.microsecond == 0]
        for k, v in zip(seconds, got, strict=True):
            if k == 603:
                assert math.isnan(v)
            else:
                assert abs(v - _value(metric, k)) <= a / 2 + 1e-9, (metric, k, v)


def test_an_incident_comes_out_as_a_comtrade_record(hub: tuple[TestClient, Storage, Incident], tmp_path: Path) -> None:
    client, _, incident = hub
    r = client.get("/export/comtrade", params={"incident": incident.id, "margin_s": 60, "format": "ascii"},
                   headers=role_headers(client, "viewer"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == f'attachment; filename="{incident.id}_NAIROBI-S1.zip"'
    rec = _unzip(r.content, tmp_path)
    assert rec.ft == "ASCII" and rec.rec_dev_id == "FEEDER-F12" and rec.analog_count == 4  # not Mombasa's
    assert rec.trigger_timestamp.replace(tzinfo=UTC) == SAG_AT
    _check_feeder(rec, 540, 660)
    assert rec.cfg.sample_rates == [[1.0, 121]]  # polled every second: a rate from the data
    assert incident.id in rec.hdr and "15 % under nominal" in rec.hdr


def test_a_window_of_several_devices(hub: tuple[TestClient, Storage, Incident], tmp_path: Path) -> None:
    client, _, _ = hub
    params = [("substation", "NAIROBI-S1"), ("device_id", "FEEDER-F12"), ("device_id", "FEEDER-F13"),
              ("start", "2026-03-01T10:09:50Z"), ("end", "2026-03-01T10:10:10Z"), ("format", "binary")]
    r = client.get("/export/comtrade", params=params, headers=role_headers(client, "viewer"))
    assert r.status_code == 200, r.text
    rec = _unzip(r.content, tmp_path)
    assert rec.ft == "BINARY" and rec.analog_channel_ids[4] == "FEEDER-F13 voltage_l1"
    assert rec.trigger_timestamp.replace(tzinfo=UTC) == T0 + timedelta(seconds=590)
    _check_feeder(rec, 590, 609)
    # F13 is polled 40 ms after F12: its own samples, where F12's channels are missing
    f13 = [(t, v) for t, v in zip(_times(rec), rec.analog[4], strict=True) if not math.isnan(v)]
    assert [t for t, _ in f13] == [T0 + timedelta(seconds=k, milliseconds=40) for k in range(590, 610)]
    assert {v for _, v in f13} == {11.2}
    # ... unless they are aligned
    params.append(("align_ms", "50"))
    rec = _unzip(client.get("/export/comtrade", params=params, headers=role_headers(client, "viewer")).content,
                 tmp_path / "aligned")
    assert len(rec.time) == 20 and not any(math.isnan(v) for v in rec.analog[4])


def test_refusals_name_the_field(hub: tuple[TestClient, Storage, Incident]) -> None:
    client, _, incident = hub
    viewer = role_headers(client, "viewer")

    def get(headers: dict[str, str] | None = None, **params: object) -> httpx.Response:
        return client.get("/export/comtrade", params=params, headers=viewer if headers is None else headers)

    assert get({}, incident=incident.id).status_code == 401
    assert get(edge_headers(client, "EDGE-A"), incident=incident.id).status_code == 403
    r = get(incident="INC-2026-999999")
    assert r.status_code == 404 and "no incident INC-2026-999999" in r.json()["detail"]
    window = {"substation": "NAIROBI-S1", "device_id": "FEEDER-F12"}
    r = get(**window, start="2026-03-01T10:00:00Z", end="2026-03-01T09:00:00Z")
    assert r.status_code == 400 and r.json()["errors"][0]["key"] == "end" and "not after start" in r.json()["detail"]
    r = get(**window, start="2026-03-01T10:00:00Z", end="2026-03-03T10:00:00Z")
    assert r.status_code == 400 and "at most 24 h" in r.json()["detail"]
    r = get(device_id="FEEDER-F12", start="2026-03-01T10:00:00Z", end="2026-03-01T11:00:00Z")
    assert r.status_code == 400 and r.json()["errors"][0]["key"] == "substation"
    r = get(incident=incident.id, start="2026-03-01T10:00:00Z")
    assert r.status_code == 400 and r.json()["errors"][0]["key"] == "start"
    r = get(**window, start="2026-03-01T10:00:00", end="2026-03-01T11:00:00Z")
    assert r.status_code == 400 and "no time zone" in r.json()["detail"]
    r = get(incident=incident.id, format="float64")
    assert r.status_code == 400 and r.json()["errors"][0]["key"] == "format"
    r = get(substation="NAIROBI-S1", device_id="TR-09", start="2026-03-01T10:00:00Z", end="2026-03-01T11:00:00Z")
    assert r.status_code == 404 and "no readings of TR-09 at NAIROBI-S1" in r.json()["detail"]


# -- the command ----------------------------------------------------------------------------------

def test_the_cli_writes_a_record_from_a_hub_and_from_its_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    settings = Settings(database_url=url, admin_key=ADMIN_KEY, agents=None, model_registry=str(tmp_path / "models"))
    storage = open_storage(url)
    try:
        storage.insert_readings(_readings(), "test")
        incident = _sag(storage)
        viewer = AuthStore(storage).create_key("engineer", "viewer", created_by="test").secret
        with LiveHub(storage, settings) as hub:
            env = {**os.environ, "SENTINEL_API_KEY": viewer}
            out = tmp_path / "sag.cff"
            with sentinel_process("export", "comtrade", "--incident", incident.id, "--margin", "30", "--format",
                                  "binary32", "--hub-url", hub.url, "--output", str(out), cwd=tmp_path,
                                  env=env) as proc:
                stdout, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 0, stderr
            assert f"wrote {out}" in stdout
            rec = comtrade.Comtrade(use_double_precision=True).load(str(out))
            assert rec.ft == "BINARY32"
            _check_feeder(rec, 570, 630)

            with sentinel_process("export", "comtrade", "--incident", "INC-2026-999999", "--hub-url", hub.url,
                                  "--output", str(tmp_path / "x"), cwd=tmp_path, env=env) as proc:
                _, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 2 and stderr.strip().splitlines() == [
                "sentinel: error: the hub answered 404: incident: no incident INC-2026-999999"]
            no_key = {k: v for k, v in os.environ.items() if k != "SENTINEL_API_KEY"}
            with sentinel_process("export", "comtrade", "--incident", incident.id, "--hub-url", hub.url,
                                  "--output", str(tmp_path / "x"), cwd=tmp_path, env=no_key) as proc:
                _, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 2 and "SENTINEL_API_KEY" in stderr and len(stderr.strip().splitlines()) == 1
    finally:
        storage.close()

    # straight from the database: a directory of .cfg, .dat and .hdr
    out = tmp_path / "records"
    with sentinel_process("export", "comtrade", "--substation", "NAIROBI-S1", "--device", "FEEDER-F12",
                          "--start", "2026-03-01T10:09:00Z", "--end", "2026-03-01T10:11:00Z", "--format", "ascii",
                          "--database", url, "--output", str(out), cwd=tmp_path) as proc:
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    [cfg] = out.glob("*.cfg")
    assert sorted(p.suffix for p in out.iterdir()) == [".cfg", ".dat", ".hdr"]
    _check_feeder(comtrade.Comtrade(use_double_precision=True).load(str(cfg)), 540, 659)
    with sentinel_process("export", "comtrade", "--substation", "NAIROBI-S1", "--device", "FEEDER-F12",
                          "--start", "2026-03-01T11:00:00Z", "--end", "2026-03-01T10:00:00Z", "--database", url,
                          "--output", str(out), cwd=tmp_path) as proc:
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and stderr.startswith("sentinel: error: --end: ") and "not after" in stderr
    with sentinel_process("export", "comtrade", "--incident", incident.id, "--database", f"{url}.typo",
                          "--output", str(out), cwd=tmp_path) as proc:
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "no database file at" in stderr and not Path(f"{tmp_path / 'hub.db'}.typo").exists()
