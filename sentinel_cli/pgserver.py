"""A throwaway PostgreSQL server for tests and benchmarks: initdb + pg_ctl in a temporary directory.

    with PostgresServer(tmp_dir) as server:
        url = server.create_database()   # postgresql://sentinel@127.0.0.1:PORT/db_1, new and empty

The server listens on 127.0.0.1 (a free port) and on a unix socket in the data directory, trusts
every local connection, and trades durability for speed (fsync off): it is for tests only. It is
stopped and its directory removed on exit.

A streaming replica (hub read replicas, tests/hub/test_read_replica.py):

    with PostgresServer(tmp_dir, replication=True) as primary, primary.standby() as standby:
        ...  # standby: pg_basebackup -R -X stream of the primary, a hot standby on a port of its own

``replication=True`` makes a server that can feed standbys (``wal_level = replica``, WAL senders, some
WAL kept for a standby that was stopped a while); initdb's ``--auth=trust`` already lets local
replication connections in. The standby takes its settings from the primary's (TimescaleDB's too).

initdb refuses to run as root, so as root the server runs as the ``postgres`` system user (or
``nobody``) via ``runuser``/``setpriv``. When no PostgreSQL binaries are installed, entering the
context skips the calling test outside CI and fails loudly under CI (``CI`` set), where a skipped
storage suite would hide a missing install step.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

__all__ = ["PostgresNotFound", "PostgresServer", "TIMESCALEDB_SETTINGS", "find_bindir"]

SUPERUSER = "sentinel"

# Durability off, small footprint: a test server that starts in about a second.
_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "'1GB'",
    "max_connections": "40",
    "shared_buffers": "'128MB'",
    "log_min_messages": "warning",
    "TimeZone": "'UTC'",
}

# replication=True: a primary standbys can stream from (and query, hot_standby)
_PRIMARY_SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": "8",
    "wal_keep_size": "'256MB'",  # a standby stopped for a while catches up from here (no slot to drop)
    "hot_standby": "on",
}
# TimescaleDB preloaded (the hub then makes its hypertable layout)
TIMESCALEDB_SETTINGS = {"shared_preload_libraries": "'timescaledb'", "timescaledb.telemetry_level": "off",
                        "max_worker_processes": "16", "timescaledb.max_background_workers": "4"}

_REQUIRED = ("initdb", "pg_ctl", "postgres")


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries (initdb, pg_ctl, postgres) were found on this machine."""


def _has_binaries(bindir: str | Path) -> bool:
    return all(os.access(Path(bindir) / name, os.X_OK) for name in _REQUIRED)


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)


def find_bindir() -> Path:
    """The directory holding initdb, pg_ctl and postgres; newest version first.

    Looked up in order: ``$SENTINEL_PG_BINDIR``, ``pg_config --bindir``, Debian's
    ``/usr/lib/postgresql/*/bin``, RHEL's ``/usr/pgsql-*/bin``, Homebrew, then ``$PATH``.
    """
    candidates: list[str] = []
    if env := os.environ.get("SENTINEL_PG_BINDIR"):
        candidates.append(env)
    if pg_config := shutil.which("pg_config"):
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/opt/homebrew/opt/postgresql@*/bin",
                    "/usr/local/opt/postgresql@*/bin"):
        candidates.extend(sorted(glob.glob(pattern), key=_version_key, reverse=True))
    candidates.append("/usr/local/pgsql/bin")
    if initdb := shutil.which("initdb"):
        candidates.append(str(Path(initdb).resolve().parent))
    for candidate in candidates:
        if candidate and _has_binaries(candidate):
            return Path(candidate)
    raise PostgresNotFound(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found; looked in: "
        + ", ".join(dict.fromkeys(c for c in candidates if c))
        + ". Install them (Debian: apt-get install postgresql) or set SENTINEL_PG_BINDIR."
    )


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _traversable_by_others(path: Path) -> bool:
    """Whether every directory above ``path`` lets an unrelated user through (o+x)."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in path.resolve().parents)


class PostgresServer:
    """A PostgreSQL server of its own in ``base_dir``, started on entry and removed on exit."""

    def __init__(self, base_dir: str | Path, settings: dict[str, str] | None = None, *,
                 replication: bool = False) -> None:
        self.base_dir = Path(base_dir)
        self.settings = {**_SETTINGS, **(_PRIMARY_SETTINGS if replication else {}), **(settings or {})}
        self.replication = replication
        self.primary: PostgresServer | None = None  # set on a standby (see standby()): the server it streams from
        self.host = "127.0.0.1"
        self.port = 0
        self.user = SUPERUSER
        self.bindir: Path | None = None
        self.root: Path | None = None  # made here (mkdtemp): data/, the socket and the log; removed on exit
        self._run_as: pwd.struct_passwd | None = None
        self._counter = itertools.count(1)
        self._running = False

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> PostgresServer:
        try:
            self.bindir = find_bindir()
        except PostgresNotFound as exc:
            if not _under_ci() and "pytest" in sys.modules:
                import pytest

                pytest.skip(f"PostgreSQL not installed: {exc}")
            raise
        try:
            self._prepare_dir()
            if self.primary is None:
                self._initdb()
            else:
                self._basebackup()
            self._start()
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._cleanup()

    @property
    def datadir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        assert self.root is not None
        return self.root / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A new, empty database on this server; its URL."""
        import psycopg
        from psycopg import sql

        name = f"db_{next(self._counter)}"
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def standby(self, base_dir: str | Path | None = None) -> PostgresServer:
        """A streaming standby of this running server (made with ``replication=True``), to be entered:
        ``pg_basebackup -R -X stream`` into a directory of its own (under ``base_dir``, default this
        server's), started as a hot standby on a free port, stopped and removed on exit."""
        if not self._running:
            raise RuntimeError("a standby is made from a running server: enter the primary first")
        if not self.replication:
            raise RuntimeError("this server cannot feed a standby: make it with PostgresServer(..., replication=True)")
        standby = PostgresServer(self.base_dir if base_dir is None else base_dir, replication=True)
        standby.settings = dict(self.settings)
        standby.primary = self
        return standby

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: clients disconnected, a clean shutdown; ``immediate``: as a crash
        would); :meth:`start` starts it again on the same port. Its directory stays until exit."""
        if mode not in ("immediate", "fast", "smart"):
            raise ValueError(f"mode must be immediate, fast or smart, not {mode!r}")
        if self._running:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", timeout=60)
            self._running = False

    def start(self) -> None:
        """Start a server :meth:`stop` stopped, on the same port (its clients reconnect to the same URL)."""
        if not self._running:
            self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60",
                      "-o", f"-p {self.port}", "start", timeout=90)
            self._running = True

    # -- steps -----------------------------------------------------------------------------------

    def _prepare_dir(self) -> None:
        if os.geteuid() == 0:
            self._run_as = _unprivileged_user()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        parent: Path | None = self.base_dir
        if self._run_as is not None and not _traversable_by_others(self.base_dir / "x"):
            parent = None  # e.g. pytest's /tmp/pytest-of-root is 0700: the server's user could not get in
        elif len(str(self.base_dir)) > 60:
            parent = None  # unix socket paths are limited to ~107 bytes
        self.root = Path(tempfile.mkdtemp(prefix="sentinel-pg-", dir=parent))
        if self._run_as is not None:
            os.chown(self.root, self._run_as.pw_uid, self._run_as.pw_gid)

    def _command(self, *args: str) -> list[str]:
        assert self.bindir is not None
        argv = [str(self.bindir / args[0]), *args[1:]]
        if self._run_as is None:
            return argv
        if shutil.which("runuser"):
            return ["runuser", "-u", self._run_as.pw_name, "--", *argv]
        return ["setpriv", f"--reuid={self._run_as.pw_uid}", f"--regid={self._run_as.pw_gid}", "--init-groups",
                "--", *argv]

    def _run(self, *args: str, timeout: float = 60) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        proc = subprocess.run(self._command(*args), cwd=self.root, env=env, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            log = ""
            if self.root is not None and self.logfile.exists():
                log = "\n--- server log ---\n" + self.logfile.read_text(errors="replace")[-4000:]
            raise RuntimeError(
                f"{' '.join(args[:2])} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}{log}"
            )

    def _initdb(self) -> None:
        self._run("initdb", "-D", str(self.datadir), "-U", self.user, "--auth=trust", "--encoding=UTF8",
                  "--locale=C", "--no-sync", "--no-instructions")
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write("\n# sentinel test server\n")
            for key, value in self.settings.items():
                conf.write(f"{key} = {value}\n")
            conf.write(f"unix_socket_directories = '{self.root}'\n")

    def _basebackup(self) -> None:
        """This server's data directory as a copy of its primary's, streaming from it (``-R``:
        standby.signal and primary_conninfo written), its own socket directory."""
        source = self.primary
        assert source is not None
        self._run("pg_basebackup", "-D", str(self.datadir), "-h", source.host, "-p", str(source.port), "-U",
                  source.user, "-R", "-X", "stream", "-c", "fast", "--no-sync", timeout=120)
        with (self.datadir / "postgresql.conf").open("a") as conf:  # the primary's settings, copied, then these
            conf.write(f"\n# sentinel test standby of port {source.port}\nunix_socket_directories = '{self.root}'\n")

    def _start(self) -> None:
        # PostgreSQL cannot bind port 0, so pick a free one and retry if someone takes it first.
        last: Exception | None = None
        for _ in range(5):
            self.port = _free_port()
            try:
                self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60",
                          "-o", f"-p {self.port}", "start", timeout=90)
            except RuntimeError as exc:
                last = exc
                if "could not bind" in str(exc) or "Address already in use" in str(exc):
                    continue
                raise
            self._running = True
            return
        raise RuntimeError(f"PostgreSQL did not start after 5 ports: {last}")

    def restart(self, mode: str = "immediate", down_s: float = 0.0) -> None:
        """Stop the server (``immediate``: as a crash would, no shutdown checkpoint; ``fast``: clients
        disconnected, a clean shutdown), stay down ``down_s`` seconds, and start it again on the same
        port (its clients reconnect to the same URL)."""
        import time

        if mode not in ("immediate", "fast", "smart"):
            raise ValueError(f"mode must be immediate, fast or smart, not {mode!r}")
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", timeout=60)
        self._running = False
        time.sleep(down_s)
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60",
                  "-o", f"-p {self.port}", "start", timeout=90)
        self._running = True

    def _cleanup(self) -> None:
        if self._running:
            try:
                self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop", timeout=60)
            finally:
                self._running = False
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither the 'postgres' nor the 'nobody' user exists to run initdb")
