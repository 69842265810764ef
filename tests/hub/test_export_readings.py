"""``GET /export/readings`` on a live hub (uvicorn on 127.0.0.1), SQLite and PostgreSQL: what a viewer
downloads reads back, with pyarrow, to the readings stored: same values, timestamps and channels."""

from __future__ import annotations

import contextlib
import io
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from export.readings import ROW_GROUP_ROWS, flag_names
from hub.exports.readings import CHUNK_ROWS, MAX_EXPORTS
from hub.settings import Settings
from hub.storage import open_storage
from protocols.reading import Reading
from tests.support.export_data import T0, dataset, order_key, reference_buckets
from tests.support.hub_auth import ADMIN_KEY, role_headers
from tests.support.live_hub import LiveHub

START, END = T0 - timedelta(hours=1), T0 + timedelta(days=30)
WHOLE = {"start": START.isoformat(), "end": END.isoformat()}
TEXT = pa.dictionary(pa.int32(), pa.string())


def _hub(database_url: str, tmp_path: Path, rows: list[Reading]) -> Iterator[tuple[LiveHub, httpx.Client]]:
    settings = Settings(database_url=database_url, admin_key=ADMIN_KEY, model_registry=str(tmp_path / "models"),
                        agents=None)
    storage = open_storage(database_url)
    try:
        assert storage.insert_readings(rows, "http") == len(rows)
        with LiveHub(storage, settings) as hub, httpx.Client(base_url=hub.url, timeout=60) as client:
            client.headers.update(role_headers(client, "viewer"))
            yield hub, client
    finally:
        storage.close()


@pytest.fixture
def hub(database_url: str, tmp_path: Path) -> Iterator[tuple[LiveHub, httpx.Client]]:
    """A live hub holding :func:`dataset`, and a client with a viewer's key."""
    yield from _hub(database_url, tmp_path, dataset())


def read_back(body: bytes, fmt: str, *, bucketed: bool) -> list[dict[str, Any]]:
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(body)).to_pylist()
    time = "bucket_start" if bucketed else "ts"
    types = {time: pa.timestamp("us", tz="UTC"), "substation": pa.string(), "device_id": pa.string(),
             "metric": pa.string(), "unit": pa.string(), "flags": pa.string()}
    return pcsv.read_csv(io.BytesIO(body), convert_options=pcsv.ConvertOptions(column_types=types)).to_pylist()


def as_rows(readings: list[Reading]) -> list[dict[str, Any]]:
    return [{"ts": r.ts, "substation": r.substation, "device_id": r.device_id, "metric": r.metric, "value": r.value,
             "unit": r.unit, "quality": r.quality, "flags": flag_names(r.flags)} for r in readings]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_raw_export_reads_back_as_the_readings_stored(hub: tuple[LiveHub, httpx.Client], fmt: str) -> None:
    _, client = hub
    answer = client.get("/export/readings", params={**WHOLE, "format": fmt})
    assert answer.status_code == 200, answer.text
    want = sorted((r for r in dataset() if START <= r.ts < END), key=order_key)
    got = read_back(answer.content, fmt, bucketed=False)
    assert got == as_rows(want)
    assert {"stale|substituted", "comm_lost", "invalid", ""} <= {row["flags"] for row in got}
    assert answer.headers["content-disposition"] == \
        f'attachment; filename="readings_20260301T220000Z_20260331T230000Z_raw.{fmt}"'
    assert answer.headers["content-type"].startswith("text/csv" if fmt == "csv" else "application/vnd.apache.parquet")
    assert answer.headers.get("transfer-encoding") == "chunked"  # streamed, not sized up front
    if fmt == "parquet":
        schema = pq.read_schema(io.BytesIO(answer.content))
        assert schema.field("ts").type == pa.timestamp("us", tz="UTC")
        assert [schema.field(c).type for c in ("substation", "device_id", "metric", "unit", "flags")] == [TEXT] * 5
        assert schema.field("value").type == schema.field("quality").type == pa.float64()


@pytest.mark.parametrize(("fmt", "bucket", "bucket_s"), [("csv", "1m", 60), ("parquet", "1h", 3600),
                                                         ("csv", "1d", 86_400)])
def test_a_bucketed_export_reads_back_as_the_buckets_of_the_readings(hub: tuple[LiveHub, httpx.Client], fmt: str,
                                                                     bucket: str, bucket_s: int) -> None:
    _, client = hub
    start = T0 + timedelta(minutes=10, seconds=30)
    answer = client.get("/export/readings", params={"start": start.isoformat(), "end": END.isoformat(),
                                                    "bucket": bucket, "format": fmt})
    assert answer.status_code == 200, answer.text
    got = read_back(answer.content, fmt, bucketed=True)
    want = [b._asdict() for b in reference_buckets(dataset(), start, END, bucket_s)]
    assert got == want and got


def test_an_export_keeps_to_the_substations_devices_and_metrics_asked(hub: tuple[LiveHub, httpx.Client]) -> None:
    _, client = hub
    asked = {"substation": ["arusha-s1", "elsewhere"], "device_id": ["FEEDER-F12", 'feeder "F2", north'],
             "metric": ["voltage_l1"]}
    answer = client.get("/export/readings", params={**WHOLE, **asked, "format": "parquet"})
    got = read_back(answer.content, "parquet", bucketed=False)
    want = sorted((r for r in dataset() if r.substation in asked["substation"] and r.device_id in asked["device_id"]
                   and r.metric in asked["metric"]), key=order_key)
    assert got == as_rows(want)
    assert {row["device_id"] for row in got} == {"FEEDER-F12", 'feeder "F2", north'}


def test_who_may_export_and_what_is_refused(hub: tuple[LiveHub, httpx.Client]) -> None:
    live, client = hub
    anonymous = httpx.get(f"{live.url}/export/readings", params=WHOLE, timeout=30)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/export/readings", params=WHOLE, headers={"Authorization": "Bearer nope"}).status_code == 401
    refused = {
        "start": {"start": "2026-03-01T00:00:00", "end": "2026-03-02T00:00:00Z"},  # no zone
        "end": {"start": "2026-03-02T00:00:00Z", "end": "2026-03-02T00:00:00Z"},  # not after start
    }
    for key, params in refused.items():
        answer = client.get("/export/readings", params=params)
        assert answer.status_code == 400 and answer.json()["errors"][0]["key"] == key, answer.text
    too_long = client.get("/export/readings", params={"start": "2025-01-01T00:00:00Z", "end": "2026-01-03T00:00:00Z"})
    assert too_long.status_code == 400 and "at most 366 days" in too_long.json()["detail"]
    assert client.get("/export/readings", params={"start": "2025-01-01T00:00:00Z",
                                                  "end": "2026-01-02T00:00:00Z"}).status_code == 200  # 366 days
    for bad in ({"bucket": "2h"}, {"format": "xlsx"}):
        assert client.get("/export/readings", params={**WHOLE, **bad}).status_code == 400
    assert client.get("/export/readings", params={"start": WHOLE["start"]}).status_code == 400


def test_an_export_of_nothing_is_a_header_or_an_empty_parquet_file(hub: tuple[LiveHub, httpx.Client]) -> None:
    _, client = hub
    empty = {"start": "2020-01-01T00:00:00Z", "end": "2020-06-01T00:00:00+02:00"}
    assert client.get("/export/readings", params=empty).text == \
        "ts,substation,device_id,metric,value,unit,quality,flags\n"
    parquet = client.get("/export/readings", params={**empty, "bucket": "1h", "format": "parquet"}).content
    table = pq.read_table(io.BytesIO(parquet))
    assert table.num_rows == 0 and table.column_names[0] == "bucket_start"


def _minutes(n: int, points: int = 20) -> list[Reading]:
    """``n`` readings: ``points`` series, one a minute each."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return [Reading(ts=t0 + timedelta(minutes=i // points), substation="S1", device_id=f"D{i % points:02d}",
                    metric="voltage_l1", value=float(i), unit="kV") for i in range(n)]


def test_a_large_export_is_written_in_row_groups_of_whole_chunks(database_url: str, tmp_path: Path) -> None:
    """120,000 rows: read a chunk at a time, written a row group (of whole chunks) at a time."""
    for _, client in _hub(database_url, tmp_path, _minutes(120_000)):
        answer = client.get("/export/readings", params={"start": "2026-01-01T00:00:00Z",
                                                        "end": "2026-02-01T00:00:00Z", "format": "parquet"})
        meta = pq.read_metadata(io.BytesIO(answer.content))
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert sum(sizes) == 120_000 and len(sizes) == 120_000 // ROW_GROUP_ROWS + 1
        assert all(ROW_GROUP_ROWS <= n < ROW_GROUP_ROWS + CHUNK_ROWS for n in sizes[:-1])  # whole chunks
        column = pq.read_table(io.BytesIO(answer.content), columns=["value"]).column("value").to_pylist()
        assert column == sorted(column) == [float(i) for i in range(120_000)]


def test_exports_at_once_are_bounded_and_a_client_gone_frees_its_place(tmp_path: Path) -> None:
    """Exports whose clients stop reading hold their places; the next is refused (503, Retry-After);
    when those clients hang up, their places are free again."""
    for live, client in _hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path, _minutes(200_000)):
        params = {"start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z"}  # 11 MB of CSV each
        # a small, fixed receive buffer (not autotuned to 32 MB): the hub's writes fill it and wait
        slow = httpx.Client(base_url=live.url, headers=client.headers, timeout=60, transport=httpx.HTTPTransport(
            socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 65_536)]))
        with slow, contextlib.ExitStack() as stalled:
            bodies = []
            for _ in range(MAX_EXPORTS):
                answer = stalled.enter_context(slow.stream("GET", "/export/readings", params=params))
                assert answer.status_code == 200
                bodies.append(answer.iter_raw(65_536))  # kept: an iterator dropped hangs up
                next(bodies[-1])
            refused = client.get("/export/readings", params=params)
            assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0, refused.text
        deadline = time.monotonic() + 20  # the clients have hung up: their exports stop, their places are free
        while (status := client.get("/export/readings", params={**params, "bucket": "1d"}).status_code) == 503:
            assert time.monotonic() < deadline, "places not freed after the clients went away"
            time.sleep(0.1)
        assert status == 200
        assert [client.get("/export/readings", params={**params, "bucket": "1d"}).status_code
                for _ in range(MAX_EXPORTS + 1)] == [200] * (MAX_EXPORTS + 1)
def _storage_of(hub: LiveHub) -> Storage:
    return hub.storage
