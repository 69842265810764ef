"""Shared fixtures. Every server a test needs is started here on 127.0.0.1 and a free port."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "firmware_configs"
SCENARIOS = REPO / "scenarios"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator["object"]:
    """A throwaway PostgreSQL server for the whole session (initdb + pg_ctl in a temp dir)."""
    from sentinel_cli.pgserver import PostgresServer

    with PostgresServer(tmp_path_factory.mktemp("pg")) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the session's server; its URL."""
    return postgres_server.create_database()


@pytest.fixture(scope="session")
def timescale_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator["object"]:
    """A throwaway PostgreSQL server with TimescaleDB preloaded (the hub then uses its hypertable
    layout). Skipped, saying why, where the extension is not installed: ``make test`` builds it
    from ../shared/timescaledb/ when that is there (scripts/timescaledb.sh)."""
    from sentinel_cli.pgserver import PostgresServer

    with PostgresServer(tmp_path_factory.mktemp("tsdb"), settings=timescaledb_settings_or_skip()) as server:
        yield server


def timescaledb_settings_or_skip() -> dict[str, str]:
    """The server settings that preload TimescaleDB (``sentinel_cli.pgserver.TIMESCALEDB_SETTINGS``);
    skips the calling test, saying why, where PostgreSQL or the extension is not installed."""
    from sentinel_cli.pgserver import TIMESCALEDB_SETTINGS, PostgresNotFound, find_bindir

    try:
        libdir = find_bindir().parent / "lib"
    except PostgresNotFound as exc:
        pytest.skip(f"PostgreSQL not installed: {exc}")
    if not any(libdir.glob("timescaledb*.so")):
        pytest.skip(f"TimescaleDB is not installed in {libdir} (scripts/timescaledb.sh builds it from "
                    "../shared/timescaledb/): the TimescaleDB layout is not tested")
    return dict(TIMESCALEDB_SETTINGS)


@pytest.fixture
def timescale_url(timescale_server) -> str:
    """A fresh, empty database on the TimescaleDB server; its URL."""
    return timescale_server.create_database()
