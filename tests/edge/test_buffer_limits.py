"""The buffer's limits and policy ([buffer] max_rows, max_bytes, max_age_s, policy): what goes
when it is full, what is kept, that every drop is counted by reason, and that after a long hub
outage every reading kept arrives at the hub once."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from edge.buffer import Buffer
from edge.status import format_status, read_status
from edge.sync import HubFault, SyncLoop
from hub.settings import Settings
from hub.storage.sqlite import SQLiteStorage
from protocols.config import BufferSettings, load_config
from protocols.wire import Event
from tests.conftest import CONFIGS, free_port
from tests.support.hub_auth import provision_edge
from tests.support.live_hub import LiveHub

T0 = 1_800_000_000.0
SUB, EDGE = "NAIROBI-S1", "edge-nairobi-01"
DEVICES = ("FEEDER-F12", "TX-1")


def rows(n: int, start: int, *, anomalous: set[int] = frozenset()) -> tuple[list[tuple], list, tuple[list, list]]:
    """``n`` readings a second apart from second ``start``, alternating two devices, no events, and
    their scores (the seconds in ``anomalous`` score 0.95, the rest 0.1): ``Buffer.append``'s arguments."""
    out, scores, types = [], [], []
    for i in range(start, start + n):
        out.append((T0 + i, DEVICES[i % 2], "voltage_l1", 11.0 + (i % 97) / 1000, "kV", 1.0, 0))
        scores.append(0.95 if i in anomalous else 0.1)
        types.append("spike" if i in anomalous else "none")
    return out, [], (scores, types)


def event(second: int) -> Event:
    return Event(ts=datetime.fromtimestamp(T0 + second, UTC), substation=SUB, device_id="FEEDER-F12",
                 metric="voltage_l1", type="voltage_sag", state="raised", severity="WARNING", value=10.3,
                 threshold=10.45, nominal=11.0, unit="kV", description=f"sag at {second}")


def seconds_held(buf: Buffer) -> list[int]:
    with contextlib.closing(sqlite3.connect(buf.path)) as db:
        return [round(ts - T0) for (ts,) in db.execute("SELECT ts FROM readings ORDER BY seq")]


def test_the_settings_refuse_a_size_limit_that_cannot_hold_anything() -> None:
    with pytest.raises(ValueError, match="max_bytes 4096 is less than 1 MB"):
        BufferSettings(max_bytes=4096)
    with pytest.raises(msgspec.ValidationError, match="policy"):
        msgspec.convert({"policy": "drop_everything"}, BufferSettings)


def test_drop_oldest_keeps_the_readings_around_anomalies_and_events(tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "b.db", SUB, max_rows=2_000, keep_window_s=10)
    try:
        data, _, scores = rows(1_000, 0, anomalous={100})
        buf.append(data, [event(300)], scores)
        for start in range(1_000, 6_000, 1_000):
            buf.append(*rows(1_000, start))
        held = seconds_held(buf)
        assert len(held) == 2_000
        # the anomaly's device within 10 s of it (the other device's readings are not "around" it),
        # and everything within 10 s of the event, were kept; everything else that old went
        kept = [s for s in held if s < 4_000]
        assert kept == [s for s in range(90, 111) if s % 2 == 0] + list(range(290, 311))
        st = buf.stats()
        assert st.dropped == 6_000 - 2_000 and st.dropped_by["rows"] == st.dropped and st.dropped_kept == 0
        assert st.events_pending == 1
    finally:
        buf.close()


def test_when_only_kept_readings_are_left_they_go_too_oldest_first_and_are_counted(tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "b.db", SUB, max_rows=1_000, keep_window_s=10)
    try:
        everything = set(range(3_000))
        for start in range(0, 3_000, 500):
            buf.append(*rows(500, start, anomalous=everything))
        assert seconds_held(buf) == list(range(2_000, 3_000))
        st = buf.stats()
        assert (st.dropped, st.dropped_by["rows"], st.dropped_kept) == (2_000, 2_000, 2_000)
    finally:
        buf.close()


def test_the_size_limit_holds_and_drops_down_to_ninety_percent(tmp_path: Path) -> None:
    limit = 1_500_000
    buf = Buffer(tmp_path / "b.db", SUB, max_bytes=limit)
    try:
        appended = 0
        for start in range(0, 60_000, 2_000):
            buf.append(*rows(2_000, start))
            appended += 2_000
            assert buf.stats().used_bytes <= limit  # checked after every write
        st = buf.stats()
        assert st.dropped_by["bytes"] > 0 and st.dropped == st.dropped_by["bytes"]
        assert st.readings_pending + st.dropped == appended
        buf.enforce_limits()
        assert buf.stats().used_bytes <= limit
        assert seconds_held(buf) == list(range(appended - st.readings_pending, appended))  # the newest
    finally:
        buf.close()


def test_readings_older_than_max_age_go_whatever_the_policy(tmp_path: Path) -> None:
    for policy in ("drop_oldest", "drop_newest"):
        buf = Buffer(tmp_path / f"{policy}.db", SUB, max_age_s=3_600, policy=policy)
        try:
            data, _, scores = rows(7_200, 0, anomalous={10})
            buf.append(data, (), scores)
            buf.enforce_limits(now=T0 + 7_200)
            assert seconds_held(buf)[0] == 3_600
            st = buf.stats()
            assert st.dropped_by["age"] == st.dropped == 3_600
        finally:
            buf.close()


def test_drop_newest_keeps_the_backlog_whole_stores_events_and_resumes_when_the_hub_takes_some(
        tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "b.db", SUB, max_rows=1_000, policy="drop_newest")
    try:
        buf.append(*rows(1_500, 0))  # over the limit: nothing of the backlog goes
        assert buf.full and seconds_held(buf) == list(range(1_500))
        buf.append(*rows(200, 1_500))
        buf.append([], [event(1_800)])
        st = buf.stats()
        assert (st.readings_pending, st.events_pending, st.dropped_by["new"], st.dropped) == (1_500, 1, 200, 200)
        buf.ack(700, None)  # the hub took 700: room for new readings again
        assert not buf.full
        buf.append(*rows(10, 1_900))
        assert seconds_held(buf)[-10:] == list(range(1_900, 1_910))
        text = format_status(read_status(load_config(CONFIGS / "nairobi-s1.toml"), buf.path))
        assert "policy drop_oldest" in text  # the config's policy (this buffer was made by hand)
        assert "dropped 200 new, not stored" in text
    finally:
        buf.close()


def test_a_long_outage_fills_the_buffer_to_its_limit_and_every_kept_reading_arrives_once(tmp_path: Path) -> None:
    """Three simulated days of two points at 1 Hz, with anomalies and events, into a buffer capped at
    40,000 readings while the hub is down (sync attempts fail, nothing crashes); then the hub comes
    back and the edge drains: every reading the buffer kept is at the hub once, the dropped ones
    are the gaps the hub counted, the anomalies' and events' neighbourhoods all arrive."""
    cfg = load_config(CONFIGS / "nairobi-s1.toml")
    hub_cfg = msgspec.structs.replace(cfg.hub, url=f"http://127.0.0.1:{free_port()}",  # nobody there: the outage sync_interval_s=0.2, timeout_s=2.0,
                                      backoff_initial_s=0.05, backoff_max_s=0.2)
    cfg = msgspec.structs.replace(cfg, hub=hub_cfg)
    storage = SQLiteStorage(tmp_path / "hub.db")
    token = provision_edge(storage, EDGE)
    buf = Buffer(tmp_path / "edge.db", SUB, max_rows=40_000, keep_window_s=30)
    anomalous = set(range(5_000, 260_000, 20_011))
    events = list(range(7_000, 260_000, 50_003))
    made = 0

    async def outage() -> int:
        sync = SyncLoop(cfg, buf, token=token)
        faults = 0
        try:
            nonlocal made
            for start in range(0, 259_200, 4_320):
                data, _, scores = rows(4_320, start, anomalous=anomalous)
                buf.append(data, [event(s) for s in events if start <= s < start + 4_320], scores)
                made += len(data)
                if start % 43_200 == 0:
                    with pytest.raises(HubFault):
                        await sync.sync_once()
                    faults += 1
        finally:
            await sync.aclose()
        return faults

    async def drain(url: str) -> None:
        sync = SyncLoop(msgspec.structs.replace(cfg, hub=msgspec.structs.replace(cfg.hub, url=url)), buf, token=token)
        try:
            for _ in range(500):
                if await sync.sync_once() is None:
                    return
            raise AssertionError("still pending after 500 syncs")
        finally:
            await sync.aclose()

    try:
        assert asyncio.run(outage()) == 6
        st = buf.stats()
        assert st.readings_pending <= 40_000 and st.readings_pending + st.dropped == made == 259_200
        assert st.dropped_by["rows"] == st.dropped and st.dropped_kept == 0
        kept = seconds_held(buf)
        for s in anomalous:  # the anomalous readings and their device's neighbours within 30 s
            assert [k for k in kept if abs(k - s) <= 30 and k % 2 == s % 2] == list(range(s - 30, s + 31, 2)), s
        for s in events:
            assert [k for k in kept if abs(k - s) <= 30] == list(range(s - 30, s + 31)), s
        with LiveHub(storage, Settings(database_url=f"sqlite:///{tmp_path / 'hub.db'}", agents=None,
                                       model_registry=str(tmp_path / "models"))) as hub:
            asyncio.run(drain(hub.url))
        (state,) = storage.edge_states()
        assert state.readings_acked_through == made and state.gaps == st.dropped
        with contextlib.closing(sqlite3.connect(tmp_path / "hub.db")) as db:
            count, distinct = db.execute("SELECT count(*), count(DISTINCT seq) FROM readings WHERE source = ?",
                                         (EDGE,)).fetchone()
            at_hub = sorted(round(ts - T0) for (ts,) in db.execute("SELECT ts FROM readings WHERE source = ?",
                                                                     (EDGE,)))
            (n_events,) = db.execute("SELECT count(*) FROM events WHERE edge_id = ?", (EDGE,)).fetchone()
        assert count == distinct == len(kept) and at_hub == sorted(kept)
        assert n_events == len(events)
        assert buf.stats().readings_pending == 0
    finally:
        buf.close()
        storage.close()
