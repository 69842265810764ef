"""``GET /compliance/en50160`` through a real hub (SQLite and PostgreSQL storage, its auth): a feeder's
weekly voltage verdicts computed from stored readings, frequency at the readings' own resolution,
who may ask, and the refusals naming the bad parameter."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from litestar.testing import TestClient

from hub.app import create_app
from hub.settings import Settings
from hub.storage.base import Storage
from protocols.reading import Reading
from tests.support.hub_auth import ADMIN_KEY, role_headers

START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
STEP = timedelta(minutes=2)
SUB, FEEDER = "NAIROBI-S1", "FEEDER-F12"


def _z(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _readings() -> list[Reading]:
    """Three weeks of a feeder every 2 min: week 1 healthy (11 kV +-2 %), week 2 sagging to -12 % for
    12 hours (72 of its 10-min means outside +-10 %), week 3 two days of data only; frequency every 2
    min, 49.98-50.02 Hz."""
    rng = np.random.default_rng(11)
    out = []
    n = int(timedelta(days=21) / STEP)
    for i in range(n):
        ts = START + i * STEP
        day = i * STEP / timedelta(days=1)
        if 14 + 2 <= day:  # week 3: only its first two days
            continue
        v = 11.0 * (1 + 0.02 * np.sin(i / 50.0)) + rng.normal(0, 0.01)
        if 7 + 3 <= day < 7 + 3.5:
            v = 11.0 * 0.88
        out.append(Reading(ts=ts, substation=SUB, device_id=FEEDER, metric="voltage_l1", value=round(float(v), 3),
                           unit="kV"))
        out.append(Reading(ts=ts, substation=SUB, device_id=FEEDER, metric="frequency",
                           value=round(50.0 + float(rng.uniform(-0.02, 0.02)), 3), unit="Hz"))
    return out


@pytest.fixture
def bare(storage: Storage) -> Iterator[TestClient]:
    """A hub holding no readings: refusals need none."""
    with TestClient(create_app(Settings(admin_key=ADMIN_KEY, agents=None), storage=storage)) as c:
        yield c


@pytest.fixture
def hub(storage: Storage) -> Iterator[TestClient]:
    assert storage.insert_readings(_readings(), "http") > 0
    with TestClient(create_app(Settings(admin_key=ADMIN_KEY, agents=None), storage=storage)) as c:
        yield c


def _ask(c: TestClient, **params: str) -> object:
    return c.get("/compliance/en50160", params=params, headers=role_headers(c, "viewer"))


def test_weekly_verdicts_from_stored_readings(hub: TestClient) -> None:
    r = _ask(hub, device_id=FEEDER, start=_z(START), end=_z(START + timedelta(days=21)))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["substation"] == SUB
    (v,) = body["voltage"]
    assert (v["metric"], v["unit"], v["nominal"], v["nominal_source"]) == ("voltage_l1", "kV", 11.0, "inferred")
    w1, w2, w3 = v["weeks"]
    assert [w["verdict"] for w in (w1, w2, w3)] == ["compliant", "non_compliant", "insufficient_data"]
    assert w1["intervals_with_data"] == 1008 and w1["coverage"] == 1.0 and w1["fraction_within"] == 1.0
    assert w2["within_band"] == 1008 - 72 and w2["min"] == pytest.approx(9.68, abs=1e-6)
    assert w2["worst_deviation_pct"] == pytest.approx(-12.0, abs=1e-6)
    assert w3["intervals_with_data"] == 288 and w3["start"] == _z(START + timedelta(days=14))
    assert v["summary"] == "1 compliant, 1 non_compliant, 1 insufficient_data"
    f = body["frequency"]
    assert f["resolution_s"] == 120 and f["nominal_hz"] == 50.0  # 2-min readings: 2-min means, said so
    (year,) = f["years"]
    assert year["verdict"] == "insufficient_data" and year["fraction_within"] == 1.0 and year["outside_limits"] == 0
    assert any("120-s means" in n for n in body["notes"])
    assert body["unbalance"] is None


def test_given_nominal_changes_the_verdicts(hub: TestClient) -> None:
    """Held to 12 kV, the healthy week's 11 kV means are at -8 %: still within +-10 %; to 13 kV (-15 %
    and below), every week fails its outer limit."""
    r = _ask(hub, device_id=FEEDER, start=_z(START), end=_z(START + timedelta(days=7)), nominal="13")
    (w,) = r.json()["voltage"][0]["weeks"]
    assert r.json()["voltage"][0]["nominal_source"] == "given"
    assert w["verdict"] == "non_compliant" and w["outside_limits"] > 0


def test_who_may_ask_and_unknown_devices(bare: TestClient) -> None:
    anonymous = bare.get("/compliance/en50160", params={"device_id": FEEDER})
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
    missing = _ask(bare, device_id="FEEDER-NONE")
    assert missing.status_code == 404 and "FEEDER-NONE" in missing.json()["detail"]


@pytest.mark.parametrize(("params", "key", "words"), [
    ({"start": "2026-03-09T00:00:00Z", "end": "2026-03-02T00:00:00Z"}, "start", "is not before end"),
    ({"start": "2026-03-02T00:00:00"}, "start", "no time zone"),
    ({"end": "yesterday"}, "end", "not an RFC 3339"),
    ({"start": "2024-01-01T00:00:00Z", "end": "2026-03-02T00:00:00Z"}, "end", "at most 366 days"),
    ({"nominal": "-11"}, "nominal", ""),
    ({"nominal_frequency_hz": "0"}, "nominal_frequency_hz", ""),
    ({"min_coverage": "1.5"}, "min_coverage", ""),
])
def test_bad_parameters_are_named(bare: TestClient, params: dict[str, str], key: str, words: str) -> None:
    r = _ask(bare, device_id=FEEDER, **params)
    assert r.status_code == 400, r.text
    text = r.text
    assert key in text and words in text, text


def test_nominal_that_cannot_be_inferred_is_asked_for(storage: Storage) -> None:
    storage.insert_readings([Reading(ts=START + i * STEP, substation=SUB, device_id="ODD", metric="voltage",
                                     value=1.6, unit="kV") for i in range(100)], "http")
    with TestClient(create_app(Settings(admin_key=ADMIN_KEY, agents=None), storage=storage)) as c:
        r = _ask(c, device_id="ODD", start=_z(START), end=_z(START + timedelta(days=7)))
        assert r.status_code == 400 and "nominal" in r.json()["detail"], r.text
        ok = _ask(c, device_id="ODD", start=_z(START), end=_z(START + timedelta(days=7)), nominal="1.6")
        assert ok.status_code == 200 and ok.json()["voltage"][0]["weeks"][0]["verdict"] == "insufficient_data"


def test_a_voltage_incident_report_carries_its_weeks_en50160_section(storage: Storage) -> None:
    """``load_report`` (``GET /incidents/{id}/report``) of a sag on the feeder in week 2: the section
    holds that week's verdict per quantity, against the nominal in the incident's facts."""
    from export.report import render_html
    from hub.exports.report import load_report
    from hub.storage.base import NewIncident

    storage.insert_readings(_readings(), "http")
    sag_at = START + timedelta(days=10, hours=6)
    (inc,) = storage.add_incidents([NewIncident(
        timestamp=sag_at, type="voltage_sag", device_id=FEEDER, severity="WARNING", description="sag",
        agent="grid_monitor", substation=SUB, metric="voltage_l1", value=9.68, facts={"nominal": 11.0})])
    report = load_report(storage, inc.id)
    rows = {r.quantity: r for r in report.compliance}
    assert set(rows) == {"voltage_l1 (Un 11 kV)", "frequency (120-s means)"}
    v = rows["voltage_l1 (Un 11 kV)"]
    assert v.start == START + timedelta(days=7) and v.verdict == "non_compliant" and v.coverage == 1.0
    assert v.fraction_within == pytest.approx((1008 - 72) / 1008, abs=1e-6)
    assert rows["frequency (120-s means)"].verdict == "insufficient_data"  # a week is not a year
    page = render_html(report)
    assert "<h2>EN 50160</h2>" in page and "non compliant" in page
    (other,) = storage.add_incidents([NewIncident(
        timestamp=sag_at, type="transformer_ageing", device_id="TR-01", severity="WARNING", description="hot",
        agent="maintenance_predictor", substation=SUB, metric="oil_temperature")])
    assert load_report(storage, other.id).compliance == []


def test_a_device_in_two_substations_needs_substation(storage: Storage) -> None:
    rows = [Reading(ts=START + i * STEP, substation=sub, device_id=FEEDER, metric="voltage_l1", value=11.0, unit="kV")
            for sub in (SUB, "MOMBASA-S1") for i in range(50)]
    storage.insert_readings(rows, "http")
    with TestClient(create_app(Settings(admin_key=ADMIN_KEY, agents=None), storage=storage)) as c:
        span = {"start": _z(START), "end": _z(START + timedelta(days=7))}
        r = _ask(c, device_id=FEEDER, **span)
        assert r.status_code == 400 and r.json()["errors"][0]["key"] == "substation", r.text
        assert "MOMBASA-S1" in r.json()["detail"] and SUB in r.json()["detail"]
        one = _ask(c, device_id=FEEDER, substation="MOMBASA-S1", **span)
        assert one.status_code == 200 and one.json()["substation"] == "MOMBASA-S1"
        assert one.json()["voltage"][0]["weeks"][0]["intervals_with_data"] == 10
