"""Versioned schema migrations (hub.storage.migrations): a database made by an earlier release is
upgraded with its data intact and then works as a new one; a newer schema is refused; with
automatic migration off, a database that needs it is left untouched and the hub says what to run.

The earlier release's databases are dumps in tests/hub/legacy/, made by the hub as released at
f7adf07 (before edge scoring, incident correlation, OT logs) with tests/hub/legacy/make_legacy_db.py.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hub.storage import open_storage
from hub.storage.base import NewIncident, Storage
from hub.storage.migrations import LATEST, MIGRATIONS, MigrationsPending, SchemaTooNew
from protocols.reading import Reading
from protocols.wire import ReadingRun, SyncBatch

LEGACY = Path(__file__).resolve().parent / "legacy"
T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
LAYOUTS = ["sqlite", pytest.param("postgres-plain", marks=pytest.mark.postgres),
           pytest.param("postgres-timescaledb", marks=pytest.mark.postgres)]
_SERVER = {"postgres-plain": "postgres_server", "postgres-timescaledb": "timescale_server"}


def _legacy_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database as the earlier release left it; its URL."""
    if request.param == "sqlite":
        path = tmp_path / "legacy.db"
        db = sqlite3.connect(path)
        db.executescript((LEGACY / "hub-f7adf07.sqlite.sql").read_text())
        db.close()
        return f"sqlite:///{path}"
    server = request.getfixturevalue(_SERVER[request.param])
    url = server.create_database()
    subprocess.run([str(server.bindir / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f",
                    str(LEGACY / "hub-f7adf07.postgres.sql")], check=True, capture_output=True, timeout=60)
    return url


@pytest.fixture(params=LAYOUTS)
def legacy_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _legacy_database(request, tmp_path)


def _tables(url: str) -> set[str]:
    if url.startswith("sqlite"):
        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            db.close()
    import psycopg

    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_every_migration_is_numbered_in_order_and_both_engines_implement_it() -> None:
    from hub.storage.postgres import MIGRATION_STEPS as PG
    from hub.storage.sqlite import MIGRATION_STEPS as LITE

    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1))
    assert set(LITE) == set(PG) == {m.version for m in MIGRATIONS}


def test_a_database_of_the_earlier_release_is_upgraded_with_its_data_and_then_works(legacy_url: str) -> None:
    assert "schema_migrations" not in _tables(legacy_url) and "ot_logs" not in _tables(legacy_url)
    storage: Storage = open_storage(legacy_url)
    try:
        status = storage.migration_status()
        assert status.version == LATEST and not status.pending
        assert [a[:2] for a in status.applied] == [(m.version, m.name) for m in MIGRATIONS]
        # what the earlier hub held is all there
        assert storage.reading_counts() == {"SUB-A": 12, "SUB-B": 1}
        readings = storage.query_readings("TX-1", "oil_temperature", T0, T0 + timedelta(hours=1))
        assert [r.value for r in readings] == pytest.approx([61.0 + i / 10 for i in range(6)])
        assert all(r.anomaly_score is None for r in readings)  # a column the upgrade added: empty, not made up
        incidents = storage.list_incidents(limit=10)
        assert sorted((i.id, i.device_id, i.severity, i.status) for i in incidents) == [
            ("INC-2026-000001", "TX-1", "WARNING", "OPEN"), ("INC-2026-000002", "FEEDER-7", "CRITICAL", "OPEN")]
        (edge,) = storage.edge_states()
        assert (edge.edge_id, edge.readings_acked_through, edge.events_acked_through) == ("edge-a", 12, 1)
        assert [e.type for e in storage.list_events()] == ["voltage_swell"]
        assert [d.reason for d in storage.dead_letters()] == ["not JSON: unexpected character"]
        # and it works as a database made today: the edge's sequence continues, findings correlate
        more = [Reading(ts=T0 + timedelta(minutes=10), substation="SUB-A", device_id="TX-1", metric="oil_temperature",
                        value=63.5, unit="°C", anomaly_score=0.2, anomaly_type="none")]
        ack = storage.apply_sync(SyncBatch(edge_id="edge-a", substation="SUB-A", sent_at=T0 + timedelta(minutes=11),
                                           readings=ReadingRun(first_seq=13, items=more)), lambda events: [])
        assert (ack.readings_acked_through, ack.readings_stored, ack.gaps) == (13, 1, 0)
        finding = NewIncident(timestamp=T0 + timedelta(hours=1), type="thermal_overload", device_id="TX-1",
                              severity="WARNING", description="hot", agent="maintenance_predictor",
                              substation="SUB-A", metric="oil_temperature", value=63.5, condition_key="tx-1/thermal")
        (first,) = storage.add_incidents([finding])
        (again,) = storage.add_incidents([finding])
        assert first.id == again.id == "INC-2026-000003" and again.occurrences == 2
        assert {"ot_logs", "documents", "incident_history", "schema_migrations"} <= _tables(legacy_url)
        # the rollups: a table the hub keeps, or TimescaleDB's continuous aggregates in its place
        assert ("rollups" in _tables(legacy_url)) == (storage.backend != "timescaledb")
        # the rollups were filled from the readings the earlier release held (and the one added since)
        day = (T0.replace(hour=0), T0.replace(hour=0) + timedelta(days=1))
        for width in (60, 3600, 86_400):
            rolled = storage.series_buckets(*day, width, "TX-1", "oil_temperature")
            raw = [b for chunk in storage.iter_buckets(*day, width, devices=["TX-1"], metrics=["oil_temperature"])
                   for b in chunk]
            assert rolled == raw and sum(b.count for b in rolled) == 7
    finally:
        storage.close()
    reopened = open_storage(legacy_url)  # nothing left to apply, nothing applied twice
    try:
        assert reopened.migration_status().applied == status.applied
    finally:
        reopened.close()


def test_a_new_database_is_at_the_latest_version(database_url: str) -> None:
    storage = open_storage(database_url)
    try:
        status = storage.migration_status()
        assert (status.version, status.pending, len(status.applied)) == (LATEST, [], len(MIGRATIONS))
    finally:
        storage.close()


def test_a_schema_newer_than_the_hub_is_refused_naming_both_versions(database_url: str) -> None:
    open_storage(database_url).close()
    if database_url.startswith("sqlite"):
        db = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        db.execute("INSERT INTO schema_migrations VALUES (?, 'from the future', 0)", (LATEST + 1,))
        db.commit()
        db.close()
    else:
        import psycopg

        with psycopg.connect(database_url) as conn:
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, 'from the future')", (LATEST + 1,))
    with pytest.raises(SchemaTooNew) as err:
        open_storage(database_url)
    assert f"schema version {LATEST + 1}, newer than this hub knows ({LATEST})" in str(err.value)


def test_with_automatic_migration_off_an_old_database_is_left_untouched(legacy_url: str) -> None:
    before = _tables(legacy_url)
    with pytest.raises(MigrationsPending) as err:
        open_storage(legacy_url, migrate=False)
    assert f"is at schema version 0; this hub needs {LATEST}" in str(err.value)
    assert "sentinel hub migrate" in str(err.value)
    assert _tables(legacy_url) == before


def _sentinel(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "sentinel_cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**{k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")},
                                            **env})


@pytest.mark.parametrize("legacy_url", ["sqlite"], indirect=True)
def test_the_migrate_command_shows_upgrades_and_the_server_waits_for_it(legacy_url: str, tmp_path: Path) -> None:
    status = _sentinel("hub", "migrate", "--database", legacy_url, "--status", cwd=tmp_path)
    assert status.returncode == 1, status.stderr
    assert "schema at version 0" in status.stdout and f"pending  {LATEST:>3}" in status.stdout
    assert "schema_migrations" not in _tables(legacy_url)  # --status changes nothing
    serve = _sentinel("hub", "serve", "--database", legacy_url, "--port", "0", cwd=tmp_path, SENTINEL_AUTO_MIGRATE="0")
    assert serve.returncode != 0 and "sentinel hub migrate" in serve.stderr, serve.stderr
    done = _sentinel("hub", "migrate", "--database", legacy_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"upgraded from version 0: {LATEST} migration" in done.stdout
    again = _sentinel("hub", "migrate", "--database", legacy_url, cwd=tmp_path)
    assert again.returncode == 0 and f"schema up to date at version {LATEST}; nothing to apply" in again.stdout
    status = _sentinel("hub", "migrate", "--database", legacy_url, "--status", cwd=tmp_path)
    assert status.returncode == 0 and f"applied  {LATEST:>3}" in status.stdout and "pending" not in status.stdout
    new = _sentinel("hub", "migrate", "--database", f"sqlite:///{tmp_path / 'new.db'}", cwd=tmp_path)
    assert new.returncode == 0 and "created the hub's schema" in new.stdout
    bad = _sentinel("hub", "migrate", "--database", f"sqlite:///{tmp_path / 'none.db'}", "--status", cwd=tmp_path)
    assert bad.returncode == 2 and "no such file" in bad.stderr


@pytest.mark.postgres
def test_a_timescaledb_database_of_the_previous_version_gets_continuous_aggregates(timescale_url: str) -> None:
    """Version 3 on TimescaleDB kept the hub's rollup table and its marks; migration 4 replaces them
    with continuous aggregates, which then answer for the readings held before and stored after."""
    import psycopg

    from hub.storage.postgres import MIGRATION_STEPS

    readings = [Reading(ts=T0 + timedelta(minutes=7 * i), substation="SUB-A", device_id="TX-1",
                        metric="oil_temperature", value=60.0 + i % 9, unit="°C") for i in range(600)]
    open_storage(timescale_url).close()
    with psycopg.connect(timescale_url) as conn:  # back to version 3, as the release before left it
        conn.execute("DROP MATERIALIZED VIEW rollups_1d, rollups_1h, rollups_1m CASCADE")
        conn.execute("DELETE FROM schema_migrations WHERE version >= 4")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO readings (ts, substation, device_id, metric, value, unit, quality, flags,"
                            " source) VALUES (%s, %s, %s, %s, %s, %s, 1, 0, 'http')",
                            [(r.ts, r.substation, r.device_id, r.metric, r.value, r.unit) for r in readings[:400]])
        MIGRATION_STEPS[2](conn)  # its rollup table, and every hour held marked
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (3,)
        assert conn.execute("SELECT to_regclass('rollups_1h'), to_regclass('rollups') IS NOT NULL").fetchone() == \
            (None, True)
    with open_storage(timescale_url) as storage:
        status = storage.migration_status()
        assert (status.version, status.pending, status.applied[3][:2]) == (LATEST, [], (4, MIGRATIONS[3].name))
        storage.insert_readings(readings[350:], "http")  # 50 again, 200 new
        span = (T0.replace(hour=0), T0.replace(hour=0) + timedelta(days=4))
        for width in (60, 3600, 86_400):
            rolled = storage.series_buckets(*span, width, "TX-1", "oil_temperature")
            raw = [b for chunk in storage.iter_buckets(*span, width, devices=["TX-1"], metrics=["oil_temperature"])
                   for b in chunk]
            assert [b[:6] + b[7:] for b in rolled] == [b[:6] + b[7:] for b in raw]  # all but avg: to the bit
            assert sum(b.count for b in rolled) == 600
            assert [b.avg for b in rolled] == pytest.approx([b.avg for b in raw], rel=1e-12)
    assert {"rollups", "rollup_dirty"}.isdisjoint(_tables(timescale_url))
    with psycopg.connect(timescale_url) as conn:
        assert [r[0] for r in conn.execute("SELECT view_name FROM timescaledb_information.continuous_aggregates"
                                           " ORDER BY view_name")] == ["rollups_1d", "rollups_1h", "rollups_1m"]


@pytest.mark.parametrize("database_url", ["sqlite", pytest.param("postgres-plain", marks=pytest.mark.postgres)],
                         indirect=True)
def test_rollup_marks_of_the_release_before_are_folded_whole_after_migration_6(database_url: str) -> None:
    """A database at version 5 holds marks without their earliest reading: after the upgrade they are
    recomputed whole (nothing is known of what they hold), and later marks have it."""
    hour = T0.replace(minute=0)
    readings = [Reading(ts=hour + timedelta(seconds=30 * i), substation="S1", device_id="TX-1",
                        metric="oil_temperature", value=60.0 + i % 7, unit="degC") for i in range(100)]
    with closing(open_storage(database_url)) as storage:
        storage.insert_readings(readings[:50], "http")
        assert storage.refresh_rollups() == 1
        storage.insert_readings(readings[50:], "http")  # marked, after the hour's newest folded
        with storage.transaction() as tx:  # as version 5 left it: no since, and a folded reading gone since
            tx.execute("DELETE FROM readings WHERE ts = ?", [readings[10].ts if storage.backend != "sqlite"
                                                              else readings[10].ts.timestamp()])
            tx.execute("ALTER TABLE rollup_dirty DROP COLUMN since")
            tx.execute("DELETE FROM schema_migrations WHERE version >= 6")
    with closing(open_storage(database_url)) as storage:
        assert storage.migration_status().version == LATEST
        (b,) = storage.series_buckets(hour, hour + timedelta(hours=1), 3600, "TX-1", "oil_temperature")
        assert b.count == 99  # recomputed whole: the reading removed is not counted
        storage.insert_readings([Reading(ts=hour + timedelta(minutes=55), substation="S1", device_id="TX-1",
                                         metric="oil_temperature", value=90.0, unit="degC")], "http")
        (b,) = storage.series_buckets(hour, hour + timedelta(hours=1), 3600, "TX-1", "oil_temperature")
        assert (b.count, b.max, b.last) == (100, 90.0, 90.0)
