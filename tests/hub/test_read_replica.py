"""History reads from a streaming replica (``SENTINEL_READ_DATABASE_URL``, hub/storage/read_replica.py),
against a real primary and its hot standby (``pg_basebackup -R -X stream``), on both layouts.

Which server answered is read from the servers themselves: both log every statement
(``log_statement = 'all'``), and a history read's SELECT shows up in the log of the one that ran it.
A replica that is behind is made so for real: its replay is paused (``pg_wal_replay_pause()``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import psycopg
import pytest
from litestar.testing import TestClient

from hub.app import create_app
from hub.settings import Settings
from hub.storage.postgres import PostgresStorage
from protocols.reading import Reading
from protocols.wire import ReadingRun, SyncBatch
from sentinel_cli.pgserver import PostgresServer
from tests.conftest import timescaledb_settings_or_skip
from tests.support.hub_auth import ADMIN_KEY, edge_headers, role_headers

EDGE, SUB, DEV = "edge-rr-1", "NAIROBI-S1", "FEEDER-F12"
# the statements of the history reads (query_readings, the extent, latest, summaries, exports: readings;
# the rollups: table rollups or the continuous aggregates rollups_1m/1h/1d); the primary's rollup folding
# and refreshes (rollup_dirty, rollup_todo_v6, CALL refresh_continuous_aggregate) say neither
READ_MARKS = ("FROM readings", "FROM rollups")
LOG_ALL = {"log_statement": "'all'"}


@dataclass
class Pair:
    primary: PostgresServer
    standby: PostgresServer
    layout: str


@pytest.fixture(scope="module", params=[pytest.param("postgres-plain", marks=pytest.mark.postgres),
                                        pytest.param("postgres-timescaledb", marks=pytest.mark.postgres)])
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """A primary and its streaming standby, one pair per layout for the whole module."""
    settings = dict(LOG_ALL)
    if request.param == "postgres-timescaledb":
        settings.update(timescaledb_settings_or_skip())
    with PostgresServer(tmp_path_factory.mktemp("rr"), settings, replication=True) as primary, \
            primary.standby() as standby:
        yield Pair(primary, standby, request.param)


def replica_url(pair: Pair, url: str) -> str:
    return pair.standby.url(url.rsplit("/", 1)[1])


def replayed(pair: Pair, timeout_s: float = 10.0) -> None:
    """Wait until the standby has replayed everything the primary has flushed."""
    with psycopg.connect(pair.primary.url(), autocommit=True) as p, \
            psycopg.connect(pair.standby.url(), autocommit=True) as s:
        target = p.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()[0]
        deadline = time.monotonic() + timeout_s
        while not s.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()[0]:
            assert time.monotonic() < deadline, "the standby did not catch up"
            time.sleep(0.005)


def replay(pair: Pair, on: bool) -> None:
    with psycopg.connect(pair.standby.url(), autocommit=True) as s:
        s.execute("SELECT pg_wal_replay_resume()" if on else "SELECT pg_wal_replay_pause()")


class Logs:
    """What each server logged from here on."""

    def __init__(self, pair: Pair) -> None:
        self.files = {"primary": pair.primary.logfile, "replica": pair.standby.logfile}
        self.at = {k: f.stat().st_size for k, f in self.files.items()}

    def since(self, which: str) -> str:
        with self.files[which].open(errors="replace") as f:
            f.seek(self.at[which])
            return f.read()

    def answered_by(self) -> str:
        """Which server ran history reads since: ``replica`` or ``primary`` (never both, never none)."""
        ran = {k for k in self.files if any(mark in self.since(k) for mark in READ_MARKS)}
        assert len(ran) == 1, f"history reads ran on {sorted(ran) or 'no server'}"
        return ran.pop()


def answered_by(pair: Pair, read: Callable[[], Any]) -> tuple[Any, str]:
    logs = Logs(pair)
    result = read()
    return result, logs.answered_by()


def readings(start: datetime, n: int, metric: str = "voltage_l1", step_s: int = 10) -> list[Reading]:
    return [Reading(ts=start + timedelta(seconds=step_s * i), substation=SUB, device_id=DEV, metric=metric,
                    value=11.0 + (i % 7) / 100, unit="kV") for i in range(n)]


class Syncs:
    """An edge's syncs into a storage, in sequence."""

    def __init__(self, storage: PostgresStorage) -> None:
        self.storage, self.seq = storage, 1

    def __call__(self, items: list[Reading]) -> None:
        batch = SyncBatch(edge_id=EDGE, substation=SUB, sent_at=datetime.now(UTC),
                          readings=ReadingRun(first_seq=self.seq, items=items))
        ack = self.storage.apply_sync(batch, lambda events: [])
        assert ack.readings_acked_through == self.seq + len(items) - 1
        self.seq += len(items)


T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)


class Stores(NamedTuple):
    store: PostgresStorage  # the standby as its read replica
    reference: PostgresStorage  # no read replica
    url: str  # the database's, on the primary


@pytest.fixture
def stores(pair: Pair) -> Iterator[Stores]:
    """A fresh database: a storage with the standby as its read replica, and one without (the reference)."""
    url = pair.primary.create_database()
    reference = PostgresStorage(url)
    if pair.layout == "postgres-timescaledb" and reference.backend != "timescaledb":
        reference.close()
        pytest.fail(f"the TimescaleDB server gave the {reference.backend!r} layout")
    replayed(pair)  # the database exists on the standby before its pool connects
    store = PostgresStorage(url, read_url=replica_url(pair, url), read_wait_s=0.2, read_retry_s=0.3)
    try:
        yield Stores(store, reference, url)
    finally:
        store.close()
        reference.close()


def history_reads(store: PostgresStorage) -> dict[str, Callable[[], Any]]:
    """Every read that goes to the replica, over the data of ``stores``' tests."""
    lo, hi = T0 - timedelta(minutes=7), T0 + timedelta(hours=3)
    return {
        "query_readings": lambda: store.query_readings(DEV, "voltage_l1", lo, hi),
        "series_extent": lambda: store.series_extent(DEV, "voltage_l1", SUB),
        "latest_readings": lambda: store.latest_readings(),
        "substation_summaries": lambda: store.substation_summaries(),
        "readings_between": lambda: store.readings_between(lo, hi),
        "series_buckets_rollups": lambda: store.series_buckets(lo, hi, 60, DEV, "voltage_l1", SUB),
        "series_buckets_hours": lambda: store.series_buckets(lo, hi, 3600, DEV, "voltage_l1"),
        "series_buckets_raw": lambda: store.series_buckets(lo, hi, 7, DEV, "voltage_l1"),
        "hourly_means": lambda: store.hourly_means(["voltage_l1"], lo, hi),
        "iter_readings": lambda: [r for chunk in store.iter_readings(lo, hi, chunk_rows=100) for r in chunk],
        "iter_buckets": lambda: [b for chunk in store.iter_buckets(lo, hi, 300, chunk_rows=10) for b in chunk],
        "iter_window_rows": lambda: sorted(r for chunk in store.iter_window_rows(lo, hi, chunk_rows=100) for r in chunk),
    }


# -- served by the replica ----------------------------------------------------------------------------


def test_history_reads_are_answered_by_the_replica(pair: Pair, stores: Stores
                                                   ) -> None:
    store, reference, _ = stores
    Syncs(store)(readings(T0, 600))  # 100 minutes every 10 s
    replayed(pair)
    expected = {name: read() for name, read in history_reads(reference).items()}
    assert expected["query_readings"] and expected["series_buckets_rollups"] and expected["iter_buckets"]
    for name, read in history_reads(store).items():
        result, where = answered_by(pair, read)
        assert where == "replica", name
        assert result == expected[name], name
    assert store.read_counts() is not None and store.read_counts()["primary"] == 0
    assert store.read_counts()["replica"] >= len(expected)
    # the rest stays on the primary
    _, where = answered_by(pair, lambda: store.reading_counts())
    assert where == "primary"


def test_a_sync_is_seen_at_once_the_read_waiting_for_the_replica(
        pair: Pair, stores: Stores) -> None:
    """Replay paused: the sync is on the primary only. The read waits (up to read_wait_s) for the
    replica, whose replay resumes meanwhile, and is answered there with the sync's readings."""
    store, _, url = stores
    patient = PostgresStorage(url, read_url=replica_url(pair, url), read_wait_s=5.0)
    try:
        replay(pair, False)
        try:
            Syncs(store)(readings(T0, 30))
        finally:
            threading.Timer(0.3, replay, (pair, True)).start()
        started = time.monotonic()
        held, where = answered_by(pair, lambda: patient.query_readings(DEV, "voltage_l1", T0, T0 + timedelta(hours=1)))
        assert (len(held), where) == (30, "replica")
        assert 0.2 < time.monotonic() - started < 5.0  # it waited for the replay, and no longer
    finally:
        replay(pair, True)
        patient.close()


def test_a_replica_that_lags_sends_reads_to_the_primary_until_it_catches_up(
        pair: Pair, stores: Stores, caplog: pytest.LogCaptureFixture) -> None:
    """Replay paused: a client that has just synced reads its readings (from the primary), and so does
    a bucketed question whose rollups were folded (plain) or refreshed (TimescaleDB) on the primary
    just before; one warning for the lot. Replay resumed: the replica answers again."""
    store, reference, _ = stores
    sync = Syncs(store)
    sync(readings(T0, 360))
    replayed(pair)
    assert answered_by(pair, history_reads(store)["series_buckets_rollups"])[1] == "replica"
    replay(pair, False)
    try:
        with caplog.at_level(logging.INFO, logger="hub.storage.read_replica"):
            sync(readings(T0 + timedelta(hours=1), 360))  # an hour more: new rollups to fold
            for name, read in history_reads(store).items():
                result, where = answered_by(pair, read)
                assert (name, where) == (name, "primary")
                assert result == history_reads(reference)[name](), name
            lagging = [r for r in caplog.records if "behind the primary" in r.getMessage()]
            assert len(lagging) == 1 and lagging[0].levelno == logging.WARNING
    finally:
        replay(pair, True)
    replayed(pair)
    with caplog.at_level(logging.INFO, logger="hub.storage.read_replica"):
        held, where = answered_by(pair, history_reads(store)["query_readings"])
    assert (len(held), where) == (720, "replica")
    assert any("caught up" in r.getMessage() for r in caplog.records)
    counts = store.read_counts()
    assert counts is not None and counts["primary"] >= len(history_reads(store))


def test_a_stopped_replica_sends_reads_to_the_primary_then_serves_again(
        pair: Pair, stores: Stores, caplog: pytest.LogCaptureFixture) -> None:
    store, *_ = stores
    Syncs(store)(readings(T0, 60))
    replayed(pair)
    read = history_reads(store)["query_readings"]
    assert answered_by(pair, read) == (read(), "replica")
    pair.standby.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="hub.storage.read_replica"):
            for _ in range(3):  # the first finds it gone, the next ones do not try it again yet
                held, where = answered_by(pair, read)
                assert (len(held), where) == (60, "primary")
        down = [r for r in caplog.records if "cannot be used" in r.getMessage()]
        assert len(down) == 1, [r.getMessage() for r in caplog.records]
    finally:
        pair.standby.start()
    replayed(pair)
    time.sleep(0.3)  # read_retry_s
    held, where = answered_by(pair, read)
    assert (len(held), where) == (60, "replica")


def test_a_replica_url_that_is_no_standby_is_left_out(pair: Pair, stores: Stores,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A second URL that names a primary (another database of this one: not in recovery, as a
    promoted standby would be) answers nothing: the reads go to the primary, with one warning."""
    _, reference, url = stores
    Syncs(reference)(readings(T0, 12))
    elsewhere = pair.primary.create_database()
    store = PostgresStorage(url, read_url=elsewhere, read_retry_s=0.0)
    try:
        with caplog.at_level(logging.WARNING, logger="hub.storage.read_replica"):
            for _ in range(3):
                assert len(store.query_readings(DEV, "voltage_l1", T0, T0 + timedelta(hours=1))) == 12
        assert store.read_counts() == {"replica": 0, "primary": 3}
        assert [r.getMessage() for r in caplog.records if "not a standby" in r.getMessage()] != []
        assert len(caplog.records) == 1
    finally:
        store.close()


# -- the hub ----------------------------------------------------------------------------------------


def test_the_hub_reads_history_from_its_replica(pair: Pair, tmp_path: Path) -> None:
    """SENTINEL_READ_DATABASE_URL through create_app: an edge syncs, the readings API answers at once
    (from the replica when it has caught up), and /metrics counts who answered."""
    url = pair.primary.create_database()
    replayed(pair)
    settings = Settings(database_url=url, read_database_url=replica_url(pair, url), admin_key=ADMIN_KEY, agents=None)
    with TestClient(create_app(settings)) as client:
        batch = SyncBatch(edge_id=EDGE, substation=SUB, sent_at=datetime.now(UTC),
                          readings=ReadingRun(first_seq=1, items=readings(T0, 90)))
        r = client.post("/edge/sync", content=msgspec.json.encode(batch), headers=edge_headers(client, EDGE, SUB))
        assert r.status_code == 200, r.text
        viewer = role_headers(client, "viewer")
        r = client.get("/readings", params={"device_id": DEV, "metric": "voltage_l1", "start": T0.isoformat(),
                                            "end": (T0 + timedelta(hours=1)).isoformat(), "bucket": "raw"},
                       headers=viewer)
        assert r.status_code == 200, r.text
        assert len(r.json()["points"]) == 90
        metrics = client.get("/metrics", headers=viewer).text
    served = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
              if line.startswith("sentinel_hub_history_reads_total")}
    assert served['sentinel_hub_history_reads_total{pool="replica"}'] + \
        served['sentinel_hub_history_reads_total{pool="primary"}'] >= 1
    assert served['sentinel_hub_history_reads_total{pool="replica"}'] >= 1


# -- settings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("database_url", "read_url", "message"), [
    ("sqlite:///var/hub.db", "postgresql://hub@replica/hub", "the hub's database is sqlite"),
    ("postgresql://hub@primary/hub", "mysql://hub@replica/hub", "not a PostgreSQL URL (it starts mysql://)"),
    ("postgresql://hub@primary/hub", "postgresql://hub@primary/hub", "the same URL as the hub's database"),
])
def test_a_read_replica_url_that_cannot_work_is_refused_at_start(database_url: str, read_url: str,
                                                                 message: str, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    with pytest.raises(ValueError, match="SENTINEL_READ_DATABASE_URL") as err:
        Settings(database_url=database_url, read_database_url=read_url)
    assert message in str(err.value)
    monkeypatch.setenv("SENTINEL_DATABASE_URL", database_url)
    monkeypatch.setenv("SENTINEL_READ_DATABASE_URL", read_url)
    with pytest.raises(ValueError, match="SENTINEL_READ_DATABASE_URL"):
        Settings.from_env()


def test_hub_serve_refuses_a_read_replica_beside_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from sentinel_cli.main import main

    monkeypatch.delenv("SENTINEL_READ_DATABASE_URL", raising=False)
    code = main(["hub", "serve", "--database", f"sqlite:///{tmp_path / 'hub.db'}",
                 "--read-database-url", "postgresql://hub@replica/hub"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sentinel: error: SENTINEL_READ_DATABASE_URL (--read-database-url): a read replica is a "
                          "streaming standby of a PostgreSQL primary, but the hub's database is sqlite")
    assert not (tmp_path / "hub.db").exists()  # refused before anything opened it


def test_the_replica_wait_is_a_number_of_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_READ_REPLICA_WAIT_S", "-1")
    with pytest.raises(ValueError, match="SENTINEL_READ_REPLICA_WAIT_S: must be a number >= 0, not -1"):
        Settings.from_env()
    monkeypatch.setenv("SENTINEL_READ_REPLICA_WAIT_S", "0.05")
    assert Settings.from_env().read_replica_wait_s == 0.05
