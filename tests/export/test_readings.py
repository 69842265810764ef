"""The readings writers (CSV, Parquet) read back by pyarrow to what they were given, a chunk at a time;
and ``sentinel export readings`` run as a user runs it, against a live hub and straight on its database."""

from __future__ import annotations

import functools
import io
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from export.readings import (BUCKET_COLUMNS, READING_COLUMNS, buckets_csv, buckets_parquet, flag_names, readings_csv,
                             readings_parquet, writer)
from hub.settings import Settings
from hub.storage import open_storage
from protocols.reading import QualityFlag, Reading
from tests.conftest import free_port
from tests.support.export_data import T0, dataset, order_key, reference_buckets
from tests.support.hub_auth import ADMIN_KEY, role_headers
from tests.support.live_hub import LiveHub

TEXT = pa.dictionary(pa.int32(), pa.string())


def read_csv(body: bytes, time_column: str = "ts") -> list[dict[str, Any]]:
    types = {time_column: pa.timestamp("us", tz="UTC"), "substation": pa.string(), "device_id": pa.string(),
             "metric": pa.string(), "unit": pa.string(), "flags": pa.string()}
    return pcsv.read_csv(io.BytesIO(body), convert_options=pcsv.ConvertOptions(column_types=types)).to_pylist()


def as_rows(readings: list[Reading]) -> list[dict[str, Any]]:
    return [{"ts": r.ts, "substation": r.substation, "device_id": r.device_id, "metric": r.metric, "value": r.value,
             "unit": r.unit, "quality": r.quality, "flags": flag_names(r.flags)} for r in readings]


def awkward() -> list[list[Reading]]:
    """Three chunks (and an empty one): microseconds, no value, flags, a time given in UTC+3, text
    CSV must quote, and text beyond ASCII."""
    plus3 = timezone(timedelta(hours=3))
    rows = [
        Reading(ts=T0, substation="NAIROBI-S1", device_id="FEEDER-F12", metric="voltage_l1", value=11.125, unit="kV"),
        Reading(ts=T0 + timedelta(microseconds=1), substation="NAIROBI-S1", device_id='feeder "2", north',
                metric="current_l1", value=None, unit="A", quality=0.0, flags=int(QualityFlag.COMM_LOST)),
        Reading(ts=datetime(2026, 3, 2, 2, 0, 0, 500_000, tzinfo=plus3), substation="Łódź-S2", device_id="TR-01",
                metric="oil_temperature", value=-0.1, unit="°C", quality=0.75,
                flags=int(QualityFlag.STALE | QualityFlag.CLOCK_UNSYNC)),
        Reading(ts=T0 + timedelta(days=1), substation="NAIROBI-S1", device_id="FEEDER-F12", metric="voltage_l1",
                value=1e-300, unit="kV", quality=1.0, flags=0),
    ]
    return [rows[:2], [], rows[2:3], rows[3:]]


# -- the writers --------------------------------------------------------------------------------------


def test_csv_reads_back_to_the_readings() -> None:
    chunks = awkward()
    body = b"".join(readings_csv(chunks))
    assert body.startswith(b"ts,substation,device_id,metric,value,unit,quality,flags\n2026-03-01T23:00:00Z,")
    assert b"2026-03-01T23:00:00.500000Z,\xc5\x81\xc3\xb3d\xc5\xba-S2" in body  # 02:00:00.5 at UTC+3, as UTC
    assert read_csv(body) == as_rows([r for c in chunks for r in c])
    assert read_csv(b"".join(readings_csv([]))) == []


def test_parquet_reads_back_to_the_readings_with_typed_columns() -> None:
    chunks = awkward()
    body = b"".join(readings_parquet(chunks))
    table = pq.read_table(io.BytesIO(body))
    assert table.to_pylist() == as_rows([r for c in chunks for r in c])
    assert table.schema.names == list(READING_COLUMNS)
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert {table.schema.field(c).type for c in ("substation", "device_id", "metric", "unit", "flags")} == {TEXT}
    assert table.schema.field("value").type == pa.float64() and table.schema.field("value").nullable
    assert pq.read_metadata(io.BytesIO(body)).num_row_groups == 1  # 4 rows: one row group of three chunks
    assert pq.read_table(io.BytesIO(b"".join(readings_parquet([])))).num_rows == 0


def test_parquet_row_groups_are_whole_chunks_of_at_least_the_rows_asked() -> None:
    chunks = [c for c in awkward() if c]  # 2, 1 and 1 rows
    body = b"".join(readings_parquet(chunks, row_group_rows=2))
    meta = pq.read_metadata(io.BytesIO(body))
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [2, 2]
    assert pq.read_table(io.BytesIO(body)).to_pylist() == as_rows([r for c in chunks for r in c])


def buckets() -> list[list[tuple]]:
    return [[(T0, "NAIROBI-S1", "FEEDER-F12", "voltage_l1", 10.5, 11.5, 11.0, 11.25, 60),
             (T0, "Łódź-S2", "TR-01", "oil_temperature", -1.0, 2.0, 0.1, 2.0, 3)],
            [(T0 + timedelta(hours=1), "NAIROBI-S1", "FEEDER-F12", "voltage_l1", 11.0, 11.0, 11.0, 11.0, 1)]]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_buckets_read_back(fmt: str) -> None:
    body = b"".join(writer(fmt, bucketed=True)(buckets()))
    if fmt == "csv":
        assert body.startswith(b"bucket_start,substation,device_id,metric,min,max,avg,last,count\n")
        got = read_csv(body, "bucket_start")
    else:
        table = pq.read_table(io.BytesIO(body))
        assert table.schema.field("count").type == pa.int64() and table.schema.field("substation").type == TEXT
        got = table.to_pylist()
    assert got == [dict(zip(BUCKET_COLUMNS, b, strict=True)) for chunk in buckets() for b in chunk]


@pytest.mark.parametrize("write", [readings_csv, readings_parquet, buckets_csv, buckets_parquet])
def test_a_writer_hands_on_each_chunk_before_it_reads_the_next(write: Any) -> None:
    """Streaming: a chunk's bytes come out before the next chunk is asked for, so only one is held
    (Parquet: a row group's, here of one chunk each)."""
    pulled: list[int] = []
    source = buckets() if write in (buckets_csv, buckets_parquet) else [c for c in awkward() if c]
    if write in (readings_parquet, buckets_parquet):
        write = functools.partial(write, row_group_rows=1)

    def chunks() -> Iterator[list]:
        for i, chunk in enumerate(source):
            pulled.append(i)
            yield chunk

    out = write(chunks())
    sizes = []
    while True:
        before = len(pulled)
        piece = next(out, None)
        if piece is None:
            break
        sizes.append(len(piece))
        assert len(pulled) - before <= 1, "read two chunks for one piece"
    assert pulled == list(range(len(source))) and all(sizes)


# -- the command ----------------------------------------------------------------------------------------


def sentinel(*args: str, cwd: Path, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SENTINEL_API_KEY"}
    if key is not None:
        env["SENTINEL_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "sentinel_cli.main", "export", "readings", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[LiveHub, str, str]]:
    """A live hub on SQLite holding :func:`dataset`; its database URL and a viewer's key."""
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    settings = Settings(database_url=url, admin_key=ADMIN_KEY, model_registry=str(tmp_path / "models"), agents=None)
    storage = open_storage(url)
    try:
        storage.insert_readings(dataset(), "http")
        with LiveHub(storage, settings) as hub, httpx.Client(base_url=hub.url, timeout=30) as client:
            key = role_headers(client, "viewer")["Authorization"].removeprefix("Bearer ")
            yield hub, url, key
    finally:
        storage.close()


RANGE = ("--start", "2026-03-01T20:00:00-03:00", "--end", "2026-03-31T00:00:00Z")  # 23:00Z


def test_the_command_exports_through_a_hub_what_it_exports_from_the_database(
        live: tuple[LiveHub, str, str], tmp_path: Path) -> None:
    hub, database, key = live
    want = sorted((r for r in dataset() if r.ts >= T0), key=order_key)
    for fmt in ("parquet", "csv"):
        via_hub = sentinel(*RANGE, "--format", fmt, "--hub-url", hub.url, "-o", f"hub.{fmt}", cwd=tmp_path, key=key)
        assert via_hub.returncode == 0, via_hub.stderr
        assert via_hub.stderr.strip() == f"sentinel: wrote {len(want):,} rows " \
            f"({(tmp_path / f'hub.{fmt}').stat().st_size / 1e6:,.1f} MB) to hub.{fmt} in " \
            f"{via_hub.stderr.rsplit(' in ', 1)[1].strip()}"
        direct = sentinel(*RANGE, "--format", fmt, "--database", database, "-o", f"db.{fmt}", cwd=tmp_path)
        assert direct.returncode == 0, direct.stderr
        assert (tmp_path / f"hub.{fmt}").read_bytes() == (tmp_path / f"db.{fmt}").read_bytes()
    assert pq.read_table(tmp_path / "hub.parquet").to_pylist() == as_rows(want)
    assert read_csv((tmp_path / "hub.csv").read_bytes()) == as_rows(want)
    assert not list(tmp_path.glob("*.part"))


def test_the_command_exports_buckets_of_the_series_asked_to_stdout(live: tuple[LiveHub, str, str],
                                                                   tmp_path: Path) -> None:
    hub, _, key = live
    done = sentinel(*RANGE, "--bucket", "1h", "--device", "FEEDER-F12", "--metric", "voltage_l1", "--metric",
                    "current_l1", "--hub-url", hub.url, "-o", "-", cwd=tmp_path, key=key)
    assert done.returncode == 0, done.stderr
    want = [b._asdict() for b in reference_buckets(dataset(), T0, datetime(2026, 3, 31, tzinfo=UTC), 3600)
            if b.device_id == "FEEDER-F12"]
    assert read_csv(done.stdout.encode(), "bucket_start") == want and len(want) == 7  # 3 h x 2 metrics, and the gap's
    assert "to stdout" in done.stderr
    named = sentinel(*RANGE, "--bucket", "1d", "--format", "parquet", "--hub-url", hub.url, cwd=tmp_path, key=key)
    assert named.returncode == 0, named.stderr
    assert (tmp_path / "readings_20260301T230000Z_20260331T000000Z_1d.parquet").is_file()


def test_the_command_says_what_went_wrong_in_one_line(live: tuple[LiveHub, str, str], tmp_path: Path) -> None:
    hub, database, _ = live
    nobody = f"http://127.0.0.1:{free_port()}"
    cases = {
        "the hub at": sentinel(*RANGE, "--hub-url", hub.url, "-o", "x.csv", cwd=tmp_path, key="wrong-key"),
        "no API key": sentinel(*RANGE, "--hub-url", hub.url, "-o", "x.csv", cwd=tmp_path),
        "cannot export from the hub at": sentinel(*RANGE, "--hub-url", nobody, "-o", "x.csv", cwd=tmp_path, key="k"),
        "has no time zone": sentinel("--start", "2026-03-01T00:00:00", "--end", "2026-03-02T00:00:00Z",
                                     "--database", database, cwd=tmp_path),
        "is not after --start": sentinel("--start", "2026-03-02T00:00:00Z", "--end", "2026-03-01T00:00:00Z",
                                         "--database", database, cwd=tmp_path),
        "no such file": sentinel(*RANGE, "--database", "sqlite:///missing.db", cwd=tmp_path),
        "answered 400": sentinel("--start", "2024-01-01T00:00:00Z", "--end", "2026-01-01T00:00:00Z", "--hub-url",
                                 hub.url, "-o", "x.csv", cwd=tmp_path, key=live[2]),
    }
    for expected, done in cases.items():
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("sentinel: error: "), done.stderr
        assert expected in lines[0], lines[0]
    assert "401" in cases["the hub at"].stderr and "at most 366 days" in cases["answered 400"].stderr
    assert not list(tmp_path.glob("x.csv*")) and not (tmp_path / "missing.db").exists()


def test_on_a_terminal_the_command_draws_the_shared_progress_bar_and_clears_it(live: tuple[LiveHub, str, str],
                                                                               tmp_path: Path) -> None:
    """stderr a terminal: the bar (sentinel_cli.progress, as every command draws it) shows the range
    read in days, then is gone; the summary line stays; the file is the same as without a bar."""
    _, database, _ = live
    main, sub = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "sentinel_cli.main", "export", "readings", *RANGE, "--database",
                               database, "-o", "bar.csv"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=sub, timeout=120,
                              env={**os.environ, "COLUMNS": "120", "TERM": "xterm"})
        os.close(sub)
        sub = -1
        screen = b""
        while True:
            try:
                piece = os.read(main, 65536)
            except OSError:  # EIO: the child's end is closed and everything is read
                break
            if not piece:
                break
            screen += piece
    finally:
        if sub != -1:
            os.close(sub)
        os.close(main)
    text = screen.decode(errors="replace")
    assert done.returncode == 0, text
    assert "exporting" in text and "days" in text, text
    assert "\x1b[" in text  # drawn and cleared with control sequences
    assert "sentinel: wrote" in text.rsplit("exporting", 1)[1]  # the summary comes after the last frame
    plain = sentinel(*RANGE, "--database", database, "-o", "plain.csv", cwd=tmp_path)
    assert plain.returncode == 0 and "\x1b[" not in plain.stderr and "exporting" not in plain.stderr
    assert (tmp_path / "bar.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()
