"""The readings API (``GET /readings``, ``/readings/latest``, ``/substations``) through HTTP, on SQLite
and on a throwaway PostgreSQL: answers held to a reference computed here, the refusals, who may ask,
and the same awkward data giving the same answers from both databases."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from hub.app import create_app
from hub.readings.service import AUTO_POINTS, LADDER_S, auto_bucket, bucket_count, bucket_name
from hub.settings import Settings
from hub.storage import open_storage
from hub.storage.base import NewIncident, Storage, epoch_us, from_epoch_us
from hub.storage.sqlite import SQLiteStorage
from protocols.reading import QualityFlag, Reading
from protocols.wire import ReadingRun, SyncBatch
from tests.support.hub_auth import ADMIN_KEY, edge_headers, role_headers

T0 = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)  # the data crosses two UTC midnights (PostgreSQL: three partitions)
HOURS = 50
END = T0 + timedelta(hours=HOURS)  # the last readings: one point from an edge and over HTTP at once
US = timedelta(microseconds=1)
FEEDER = ("NAIROBI-S1", "FEEDER-F12", "voltage_l1", "kV")  # quantised to 0.01 kV: sums that depend on their order
FREQ = ("NAIROBI-S1", "FEEDER-F12", "frequency", "Hz")  # a quantised constant sensor: 49.98 Hz, always
TR_N = ("NAIROBI-S1", "TR-01", "oil_temperature", "degC")
CURRENT = ("NAIROBI-S1", "FEEDER-F12", "current_l1", "A")  # every 2 s for 6 hours: 30 values a minute to add up
TR_M = ("MOMBASA-S1", "TR-01", "oil_temperature", "degC")  # the same device id in another substation
DUP_TS = T0 + timedelta(minutes=30, seconds=30)  # FEEDER's voltage there came over HTTP and from two edges
DOWN = range(30 * 120, 31 * 120)  # the feeder did not answer for an hour: readings without a value


def dataset() -> list[Reading]:
    """Four series every 30 s for 50 hours (sharing their timestamps: several devices at one instant),
    every 7th instant a microsecond before its minute (hour, day) ends and the rest on the boundary;
    readings without a value, flagged invalid (999) and stale; a constant sensor; and a dense one."""
    noise = random.Random(20260301)
    out = []
    for i in range(HOURS * 120):
        ts = T0 + i * timedelta(seconds=30)
        if i % 14 == 2:
            ts -= US
        v: float | None = round(11 + noise.gauss(0, 0.05), 2)
        flags, quality = 0, 1.0
        if i in DOWN or i % 50 == 3:
            v, flags, quality = None, int(QualityFlag.COMM_LOST), 0.0
        elif i % 61 == 5:
            v, flags, quality = 999.0, int(QualityFlag.INVALID), 0.0
        out.append(_reading(FEEDER, ts, v, quality=quality, flags=flags))
        out.append(_reading(FREQ, ts, 49.98))
        stale = i % 37 == 1
        out.append(_reading(TR_N, ts, round(60 + 5 * math.sin(i / 200) + noise.gauss(0, 0.2), 1),
                            quality=0.5 if stale else 1.0, flags=int(QualityFlag.STALE) if stale else 0))
        if i % 2 == 0:
            out.append(_reading(TR_M, ts, round(55 + noise.gauss(0, 0.3), 1)))
        if i < 6 * 120:
            out += [_reading(CURRENT, ts + timedelta(seconds=2 * k), round(350 + noise.gauss(0, 20), 1))
                    for k in range(15)]
    out.append(_reading(TR_M, END, 54.0))
    return out


def _reading(series: tuple[str, str, str, str], ts: datetime, value: float | None, **kw: Any) -> Reading:
    sub, dev, metric, unit = series
    return Reading(ts=ts, substation=sub, device_id=dev, metric=metric, value=value, unit=unit, **kw)


def load(storage: Storage) -> list[Reading]:
    """The dataset over HTTP-style inserts, then edges' syncs: FEEDER's voltage at DUP_TS from two
    edges (11.5 and 11.25: three readings at one instant), and TR-01 at Mombasa at END (54.5, beside
    the 54.0 held: the newest instant holds two)."""
    rows = dataset()
    assert storage.insert_readings(rows, "http") == len(rows)
    for edge, series, ts, value in (("EDGE-A", FEEDER, DUP_TS, 11.5), ("EDGE-B", FEEDER, DUP_TS, 11.25),
                                    ("EDGE-M", TR_M, END, 54.5)):
        r = _reading(series, ts, value)
        storage.apply_sync(SyncBatch(edge_id=edge, substation=r.substation, sent_at=ts,
                                     readings=ReadingRun(first_seq=1, items=[r])), lambda events: [])
        rows.append(r)
    return rows


def reference(rows: list[Reading], series: tuple[str, str, str, str], start: datetime, end: datetime,
              bucket_s: int) -> list[dict[str, Any]]:
    """What a bucketed answer must hold, computed here: per epoch-aligned bucket, of the readings in
    [start, end) with a value and not flagged invalid, min, max, last (newest; of one instant the
    largest), count, and the mean (to compare approximately: the database adds in its own order)."""
    groups: dict[int, list[Reading]] = defaultdict(list)
    for r in rows:
        if ((r.substation, r.device_id, r.metric, r.unit) == series and start <= r.ts < end and r.value is not None
                and not r.flags & QualityFlag.INVALID):
            groups[epoch_us(r.ts) // (bucket_s * 10**6)].append(r)
    return [{"ts": from_epoch_us(k * bucket_s * 10**6), "min": min(r.value for r in g), "max": max(r.value for r in g),
             "mean": math.fsum(r.value for r in g) / len(g), "last": max(g, key=lambda r: (r.ts, r.value)).value,
             "count": len(g)} for k, g in sorted(groups.items())]


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _app(storage: Storage) -> TestClient:
    return TestClient(create_app(Settings(admin_key=ADMIN_KEY, agents=None), storage=storage))


@pytest.fixture
def client(storage: Storage) -> Iterator[TestClient]:
    """A hub over ``storage`` (both backends), asked as a viewer."""
    with _app(storage) as c:
        c.headers.update(role_headers(c, "viewer"))
        yield c


def history(client: TestClient, series: tuple[str, str, str, str], *, named: bool = True,
            **params: Any) -> dict[str, Any]:
    sub, dev, metric, _ = series
    q = {"device_id": dev, "metric": metric, **({"substation": sub} if named else {}), **params}
    r = client.get("/readings", params=q)
    assert r.status_code == 200, r.text
    return r.json()


# -- history, bucketed --------------------------------------------------------------------------------


@pytest.mark.parametrize("bucket", ["1m", "1h", "1d"])
def test_buckets_hold_min_max_avg_last_count_of_the_valid_readings(client: TestClient, storage: Storage,
                                                                   bucket: str) -> None:
    rows = load(storage)
    bucket_s = {"1m": 60, "1h": 3600, "1d": 86_400}[bucket]
    start, end = T0 + timedelta(minutes=7, seconds=13.5), T0 + timedelta(hours=40) + US  # on no boundary
    for series in (FEEDER, FREQ, TR_N, CURRENT):
        body = history(client, series, start=iso(start), end=iso(end), bucket=bucket)
        assert body["query"] == {"device_id": series[1], "metric": series[2], "substation": series[0],
                                 "start": iso(start), "end": iso(end), "bucket": bucket, "limit": None}
        assert (body["bucket"], body["bucket_seconds"], body["substation"], body["unit"]) == (
            bucket, bucket_s, series[0], series[3])
        want = reference(rows, series, start, end, bucket_s)
        got = body["points"]
        assert [when(p["ts"]) for p in got] == [w["ts"] for w in want]
        assert [(p["min"], p["max"], p["last"], p["count"]) for p in got] == \
            [(w["min"], w["max"], w["last"], w["count"]) for w in want]
        for p, w in zip(got, want, strict=True):
            assert p["avg"] == pytest.approx(w["mean"], rel=1e-12) and p["min"] <= p["avg"] <= p["max"]
            assert set(p) == {"ts", "min", "max", "avg", "last", "count"}
        assert when(got[0]["ts"]) <= start < when(got[0]["ts"]) + timedelta(seconds=bucket_s)  # a partial first bucket
    freq = history(client, FREQ, start=iso(T0), end=iso(END), bucket=bucket)["points"]
    assert {(p["min"], p["avg"], p["max"], p["last"]) for p in freq} == {(49.98,) * 4}  # never 49.980000000000004


def test_a_bucket_takes_the_newest_reading_as_last_and_leaves_out_the_invalid_and_valueless(
        client: TestClient, storage: Storage) -> None:
    rows = load(storage)
    minutes = history(client, FEEDER, start=iso(T0), end=iso(T0 + timedelta(hours=32)), bucket="1m")["points"]
    (dup,) = [p for p in minutes if when(p["ts"]) == DUP_TS.replace(second=0)]
    assert dup["last"] == 11.5 and dup["count"] == 4  # three at DUP_TS (HTTP and two edges), one 30 s before
    assert all(p["max"] < 999 for p in minutes)
    hours = {when(p["ts"]) for p in history(client, FEEDER, start=iso(T0), end=iso(END), bucket="1h")["points"]}
    assert T0 + timedelta(hours=30) not in hours and T0 + timedelta(hours=29) in hours  # the hour without values
    invalid = sum(1 for r in rows if r.device_id == "FEEDER-F12" and r.metric == "voltage_l1" and r.flags)
    assert invalid > 120


def test_auto_picks_the_shortest_bucket_giving_at_most_2000_points(client: TestClient, storage: Storage) -> None:
    rows = load(storage)
    body = history(client, FEEDER, start=iso(T0), end=iso(END))
    assert (body["query"]["bucket"], body["bucket"], body["bucket_seconds"]) == ("auto", "2m", 120)  # 1m: 3000
    assert len(body["points"]) <= AUTO_POINTS
    a, z = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    hour = history(client, FEEDER, start=iso(a), end=iso(z), bucket="auto")
    assert hour["bucket"] == "2s" and len(hour["points"]) == len(reference(rows, FEEDER, a, z, 2)) > 100
    a, z = datetime(1900, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)  # 300 years: cut to the readings
    ages = history(client, FEEDER, start=iso(a), end=iso(z))
    assert ages["bucket"] == "55d" and len(ages["points"]) == len(reference(rows, FEEDER, a, z, 55 * 86_400))


@pytest.mark.parametrize("days", [1 / 86_400, 1 / 24, 0.7, 1, 2, 31, 366, 3653, 10**5, 2_900_000])
def test_auto_buckets_nest_and_stay_under_the_bound(days: float) -> None:
    start = datetime(2026, 3, 1, 10, 0, 0, 250_000, tzinfo=UTC) if days < 10**5 else datetime(2, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=days)
    b = auto_bucket(start, end)
    assert bucket_count(start, end, b) <= AUTO_POINTS
    shorter = [s for s in LADDER_S if s < b] + ([b - 86_400] if b > 86_400 else [])
    assert all(bucket_count(start, end, s) > AUTO_POINTS for s in shorter)  # the shortest that fits
    assert 86_400 % b == 0 or b % 86_400 == 0  # buckets nest in UTC days
    assert bucket_name(b) in {"1s", "2s", "5s", "10s", "15s", "30s", "1m", "2m", "5m", "10m", "15m", "30m", "1h",
                              "2h", "3h", "6h", "12h"} or bucket_name(b) == f"{b // 86_400}d"


# -- history, raw -----------------------------------------------------------------------------------


def test_raw_readings_come_as_stored_in_pages_that_never_split_an_instant(client: TestClient,
                                                                           storage: Storage) -> None:
    load(storage)
    start, end = T0 + timedelta(minutes=20), T0 + timedelta(minutes=40)
    whole = history(client, FEEDER, start=iso(start), end=iso(end), bucket="raw")
    assert (whole["bucket"], whole["bucket_seconds"], whole["truncated"], whole["next_start"]) == (
        "raw", None, False, None)
    assert whole["query"]["limit"] == 10_000
    points = whole["points"]
    assert len(points) == 40 + 2  # every 30 s, and the two edges' readings at DUP_TS
    assert all(set(p) == {"ts", "value", "quality", "flags"} for p in points)
    assert sorted(p["value"] for p in points if when(p["ts"]) == DUP_TS)[1:] == [11.25, 11.5]
    down = [p for p in points if p["value"] is None]
    assert down and all(p["flags"] == ["comm_lost"] and p["quality"] == 0.0 for p in down)
    assert [when(p["ts"]) for p in points] == sorted(when(p["ts"]) for p in points)
    pages, at = [], iso(start)
    while True:  # 11 at a time: the second page would end inside DUP_TS's three readings
        page = history(client, FEEDER, start=at, end=iso(end), bucket="raw", limit=11)
        assert len(page["points"]) <= 11
        pages.append(page["points"])
        if not page["truncated"]:
            break
        at = page["next_start"]
        assert when(at) > when(page["points"][-1]["ts"])
    got = [p for page in pages for p in page]
    assert sorted(got, key=_raw_key) == sorted(points, key=_raw_key)  # each reading once
    assert [len(page) for page in pages] == [11, 10, 11, 10]  # the second stopped short of DUP_TS


def _raw_key(p: dict[str, Any]) -> tuple:
    return (p["ts"], p["value"] is None, p["value"] or 0.0, p["quality"], p["flags"])


def test_by_default_the_last_24_hours(client: TestClient, storage: Storage) -> None:
    now = datetime.now(UTC)
    storage.insert_readings([_reading(FEEDER, now - timedelta(hours=h), 11.0 + h / 100) for h in (1, 2, 25)], "http")
    body = history(client, FEEDER, bucket="raw")
    assert [p["value"] for p in body["points"]] == [11.02, 11.01]
    start, end = when(body["query"]["start"]), when(body["query"]["end"])
    assert end - start == timedelta(hours=24) and abs(end - datetime.now(UTC)) < timedelta(minutes=1)
    body = history(client, FEEDER, end=iso(now - timedelta(hours=1, seconds=30)), bucket="raw")  # 24 h before end
    assert [p["value"] for p in body["points"]] == [11.25, 11.02]


# -- refusals ---------------------------------------------------------------------------------------


def test_refusals_name_the_parameter_and_what_is_wrong(client: TestClient, storage: Storage) -> None:
    load(storage)
    point = {"device_id": "FEEDER-F12", "metric": "voltage_l1"}

    def refused(status: int, key: str | None, says: str, **params: Any) -> None:
        r = client.get("/readings", params={**point, **params})
        assert r.status_code == status, r.text
        assert says in r.json()["detail"], r.text
        if key:
            assert r.json()["errors"][0]["key"] == key

    refused(400, "start", "is not before end", start=iso(T0 + timedelta(hours=2)), end=iso(T0 + timedelta(hours=1)))
    refused(400, "start", "is not before end", start=iso(T0), end=iso(T0))
    refused(400, "start", "is in the future, and end (not given) is now",
            start=iso(datetime.now(UTC) + timedelta(days=1)))
    refused(400, "bucket", "'5m' is not a bucket: ask raw, 1m, 1h, 1d or auto", bucket="5m")
    refused(400, "bucket", "raw readings are served over at most 7 days per question, and this range is 8 days",
            start=iso(T0), end=iso(T0 + timedelta(days=8)), bucket="raw")
    refused(400, "bucket", "1m buckets over 8 days are 11520 points, and an answer holds at most 10000",
            start=iso(T0), end=iso(T0 + timedelta(days=8)), bucket="1m")
    refused(400, "start", "has no time zone; add Z or an offset", start="2026-03-01T22:00:00")
    refused(400, "end", "is not an RFC 3339 date-time", end="yesterday")
    refused(400, "limit", "limit", bucket="raw", limit=0)
    refused(400, "limit", "limit", bucket="raw", limit=100_001)
    refused(400, "device_id", "device_id", device_id="")
    r = client.get("/readings", params={"metric": "voltage_l1"})
    assert r.status_code == 400 and "device_id" in r.json()["detail"]
    # TR-01's oil temperature is held at Nairobi and at Mombasa: which?
    refused(400, "substation", "has readings in this range from 2 substations (MOMBASA-S1, NAIROBI-S1): name one",
            device_id="TR-01", metric="oil_temperature", start=iso(T0), end=iso(END))
    refused(400, "substation", "from 2 substations", device_id="TR-01", metric="oil_temperature", start=iso(T0),
            end=iso(T0 + timedelta(hours=1)), bucket="raw")
    refused(404, None, "no reading of device 'FEEDER-F99', metric 'voltage_l1' is held", device_id="FEEDER-F99")
    refused(404, None, "no reading of device 'FEEDER-F12', metric 'voltage_l1' is held in substation 'MOMBASA-S1'",
            substation="MOMBASA-S1")
    # held, but not in the range: an empty answer, not an error
    empty = history(client, FEEDER, start=iso(T0 - timedelta(days=3)), end=iso(T0 - timedelta(days=2)))
    assert empty["points"] == [] and empty["unit"] == "kV"


# -- the latest reading of every point, the substations ------------------------------------------------


def test_latest_is_each_points_newest_reading_as_stored(client: TestClient, storage: Storage) -> None:
    rows = load(storage)
    storage.insert_readings([_reading(FEEDER, END, None, quality=0.0, flags=int(QualityFlag.COMM_LOST))], "http")
    latest = client.get("/readings/latest")
    assert latest.status_code == 200, latest.text
    got = {(r["substation"], r["device_id"], r["metric"]): r for r in latest.json()["readings"]}
    assert list(got) == sorted(got)
    assert set(got) == {s[:3] for s in (FEEDER, FREQ, TR_N, TR_M, CURRENT)}
    assert got[FEEDER[:3]] == {"substation": "NAIROBI-S1", "device_id": "FEEDER-F12", "metric": "voltage_l1",
                               "ts": iso(END), "value": None, "unit": "kV", "quality": 0.0, "flags": ["comm_lost"]}
    assert got[TR_M[:3]]["ts"] == iso(END) and got[TR_M[:3]]["value"] == 54.5  # of two at one instant, the larger
    newest_tr_n = max((r for r in rows if r.substation == "NAIROBI-S1" and r.device_id == "TR-01"), key=lambda r: r.ts)
    assert (when(got[TR_N[:3]]["ts"]), got[TR_N[:3]]["value"]) == (newest_tr_n.ts, newest_tr_n.value)
    only = client.get("/readings/latest", params={"substation": "MOMBASA-S1"}).json()["readings"]
    assert [(r["substation"], r["device_id"]) for r in only] == [("MOMBASA-S1", "TR-01")]
    assert client.get("/readings/latest", params={"substation": "NOWHERE"}).json() == {"readings": []}


def test_substations_overview(client: TestClient, storage: Storage) -> None:
    assert client.get("/substations").json() == {"substations": []}
    rows = load(storage)
    incidents = storage.add_incidents([
        NewIncident(timestamp=T0, type=t, device_id=d, severity=sev, description=t, agent="test", substation=sub)
        for t, d, sev, sub in (("voltage_sag", "FEEDER-F12", "CRITICAL", "NAIROBI-S1"),
                               ("overheating", "TR-01", "WARNING", "NAIROBI-S1"),
                               ("thermal_runaway", "TR-01", "EMERGENCY", "NAIROBI-S1"),
                               ("intrusion", "RTU-1", "CRITICAL", "ARUSHA-S1"))])
    storage.set_incident_status(incidents[2].id, "RESOLVED", "test")  # resolved: not open
    storage.set_incident_status(incidents[1].id, "ACKNOWLEDGED", "test")  # acknowledged: still open
    r = client.get("/substations")
    assert r.status_code == 200, r.text
    subs = {s["substation"]: s for s in r.json()["substations"]}
    assert list(subs) == ["ARUSHA-S1", "MOMBASA-S1", "NAIROBI-S1"]
    nairobi = subs["NAIROBI-S1"]
    held = [x for x in rows if x.substation == "NAIROBI-S1"]
    assert (nairobi["devices"], nairobi["points"], nairobi["readings"]) == (2, 4, len(held))
    assert (when(nairobi["first_reading"]), when(nairobi["last_reading"])) == (min(x.ts for x in held),
                                                                               max(x.ts for x in held))
    assert nairobi["open_incidents"] == {"INFO": 0, "WARNING": 1, "CRITICAL": 1, "EMERGENCY": 0}
    assert [e["edge_id"] for e in nairobi["edges"]] == ["EDGE-A", "EDGE-B"]
    assert when(nairobi["last_edge_contact"]) == max(when(e["last_sync"]) for e in nairobi["edges"])
    assert abs(when(nairobi["last_edge_contact"]) - datetime.now(UTC)) < timedelta(minutes=5)
    mombasa = subs["MOMBASA-S1"]
    assert (mombasa["devices"], mombasa["points"], mombasa["last_reading"]) == (1, 1, iso(END))
    assert [e["edge_id"] for e in mombasa["edges"]] == ["EDGE-M"]
    assert subs["ARUSHA-S1"] == {"substation": "ARUSHA-S1", "devices": 0, "points": 0, "readings": 0,
                                 "first_reading": None, "last_reading": None, "last_edge_contact": None, "edges": [],
                                 "open_incidents": {"INFO": 0, "WARNING": 0, "CRITICAL": 1, "EMERGENCY": 0}}


# -- who may ask ---------------------------------------------------------------------------------------


def test_viewers_may_ask_anonymous_callers_and_edges_may_not(storage: Storage) -> None:
    load(storage)
    with _app(storage) as c:
        viewer, edge = role_headers(c, "viewer"), edge_headers(c, "EDGE-A")
        for path, params in (("/readings", {"device_id": "FEEDER-F12", "metric": "voltage_l1", "start": iso(T0),
                                            "end": iso(END)}),
                             ("/readings/latest", {}), ("/substations", {})):
            assert c.get(path, params=params, headers=viewer).status_code == 200, path
            anonymous = c.get(path, params=params)
            assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer"), path
            assert c.get(path, params=params, headers=edge).status_code == 403, path


# -- the same answers from SQLite and PostgreSQL ----------------------------------------------------------


QUESTIONS = [
    *({"series": s, "bucket": b, "start": iso(a), "end": iso(z), **({} if s is FEEDER else {"named": True})}
      for s in (FEEDER, FREQ, TR_N, TR_M, CURRENT) for b in ("1m", "1h", "1d", "auto")  # FEEDER's substation: found
      for a, z in ((T0 - timedelta(hours=1), END + timedelta(hours=1)),
                   (T0 + timedelta(minutes=7, seconds=13.5), T0 + timedelta(hours=26) + US))),
    {"series": FEEDER, "bucket": "auto", "start": iso(T0 + timedelta(minutes=29)),
     "end": iso(T0 + timedelta(minutes=32))},
    {"series": FEEDER, "bucket": "auto", "start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"},
]


@pytest.mark.postgres
def test_sqlite_and_postgresql_give_the_same_answers(tmp_path: Path, postgres_url: str) -> None:
    """The same awkward readings in both (repeated instants across devices and within one point, bucket
    edges to the microsecond, readings without a value, invalid ones, a quantised constant sensor, a
    noisy one whose sums depend on the order they are added in): every answer identical, to the bit."""
    answers: list[list[Any]] = []
    lite, pg = SQLiteStorage(tmp_path / "hub.db"), open_storage(postgres_url)
    try:
        for storage in (lite, pg):
            load(storage)
            got: list[Any] = []
            with _app(storage) as c:
                c.headers.update(role_headers(c, "viewer"))
                for q in QUESTIONS:
                    q = dict(q)
                    sub, dev, metric, _ = q.pop("series")
                    named = q.pop("named", False)
                    r = c.get("/readings", params={"device_id": dev, "metric": metric, **q,
                                                   **({"substation": sub} if named else {})})
                    assert r.status_code == 200, (q, r.text)
                    got.append(r.json())
                raw = c.get("/readings", params={"device_id": "FEEDER-F12", "metric": "voltage_l1", "bucket": "raw",
                                                 "start": iso(T0), "end": iso(END + US), "limit": 100_000})
                assert raw.status_code == 200 and not raw.json()["truncated"] and len(raw.json()["points"]) > 6000
                # the readings of one instant come in either order
                got.append({**raw.json(), "points": sorted(raw.json()["points"], key=_raw_key)})
                got.append(c.get("/readings/latest").json())
                overview = c.get("/substations").json()
                for s in overview["substations"]:  # when the edges synced differs; the rest may not
                    s["last_edge_contact"] = bool(s["last_edge_contact"])
                    s["edges"] = [e["edge_id"] for e in s["edges"]]
                got.append(overview)
                for bucket in ("1m", "1h", "1d"):  # every series at once, as an export asks: PostgreSQL's plan
                    # then shuffles each bucket's rows, and only a sum in a fixed order gives SQLite's avg
                    csv = c.get("/export/readings", params={"start": iso(T0), "end": iso(END + US), "bucket": bucket})
                    assert csv.status_code == 200 and csv.text.count("\n") > 10, csv.text[:200]
                    got.append(csv.text)
            answers.append(got)
    finally:
        lite.close()
        pg.close()
    sqlite, postgresql = answers
    assert len(sqlite) == len(QUESTIONS) + 6
    buckets = sum(len(a["points"]) for a in sqlite[:len(QUESTIONS)])
    assert buckets > 20_000
    for i, (a, b) in enumerate(zip(sqlite, postgresql, strict=True)):
        if a != b and isinstance(a, dict) and "points" in a:  # the first point that differs, to the bit
            diff = next((x, y) for x, y in zip(a["points"], b["points"], strict=False) if x != y) \
                if len(a["points"]) == len(b["points"]) else (len(a["points"]), len(b["points"]))
            assert a == b, f"answer {i} differs first at {diff}"
        assert a == b, f"answer {i} differs: {QUESTIONS[i] if i < len(QUESTIONS) else 'raw/latest/substations/export'}"
