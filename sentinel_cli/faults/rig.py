"""A substation, an edge and a hub as separate processes, wired through faulty links, and a ledger
that accounts for every reading from the edge's buffer to the hub's database.

    rig = Rig(workdir, pg)               # pg: a PostgresServer this rig may restart
    await rig.start()                    # simulator, hub (PostgreSQL), edge: real processes
    ... inject faults (sentinel_cli.faults.injectors) ...
    ledger = await rig.finish()          # heal, stop the edge, drain, count
    assert ledger.problems() == []

Counting. Before the edge first runs, the rig adds an audit table and a trigger to the edge's
buffer file: every reading row the edge commits is copied, in the same transaction, with its
sequence number, device, metric, timestamp and value. The edge deletes rows once the hub acks them;
the audit copy stays. At the end the ledger compares that record with the hub's ``readings`` rows
from this edge (same sequence numbers, same content, each once) and with what is still pending or
was dropped by a counted reason. A reading the edge never committed has no sequence number: only
the edge's counters (``dropped_unwritable``) can speak for it. Each audit row carries a 1 KB pad
so the buffer file grows steadily: on a full disk the edge's next write fails at once, not minutes
later when SQLite's free pages run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from sentinel_cli.faults.proxy import ChaosProxy
from sentinel_cli.pgserver import PostgresServer

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "firmware_configs" / "nairobi-s1.toml"
SCENARIO = REPO / "scenarios" / "medium_risk_voltage_fluctuation.json"
EDGE_ID = "edge-nairobi-01"
SUBSTATION = "NAIROBI-S1"
AUDIT_PAD_BYTES = 1024

_AUDIT = f"""
CREATE TABLE IF NOT EXISTS fault_audit (seq INTEGER PRIMARY KEY, ts REAL, device_id TEXT, metric TEXT,
                                        value REAL, pad BLOB);
CREATE TRIGGER IF NOT EXISTS fault_audit_readings AFTER INSERT ON readings BEGIN
    INSERT INTO fault_audit VALUES (new.seq, new.ts, new.device_id, new.metric, new.value,
                                    zeroblob({AUDIT_PAD_BYTES}));
END;
"""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Proc:
    """One of the rig's processes (``python -m sentinel_cli.main ...``), its output appended to a log
    file across restarts. An exit the rig did not cause is recorded as a crash."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.log_path = name, argv, log_path
        self.env = {**os.environ, **(env or {})}
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.crashes: list[str] = []  # exits the rig did not cause: code and the log's tail

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {datetime.now(UTC).isoformat()} start {self.name}\n".encode())
            # SIGINT back to its default in the child: a rig started in the background (nohup, `&`)
            # inherits SIGINT ignored, and Python then never turns Ctrl-C into a clean stop
            self.popen = subprocess.Popen([sys.executable, "-m", "sentinel_cli.main", *self.argv], cwd=REPO,
                                          env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True,
                                          preexec_fn=_default_sigint)
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check(self) -> bool:
        """False (and a crash recorded) when the process has exited by itself."""
        if self.popen is None or self.popen.poll() is None:
            return True
        self.crashes.append(f"{self.name} exited with {self.popen.returncode}: {self.tail(1500)}")
        self.popen = None
        return False

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()
            self.kills += 1
        self.popen = None

    async def interrupt(self, timeout_s: float = 30.0) -> float:
        """SIGINT (Ctrl-C, systemd's KillSignal for the edge), then wait (in a thread: the rig's
        proxies go on serving meanwhile); returns the seconds it took. Killed, and a crash
        recorded, past ``timeout_s``."""
        if self.popen is None:
            return 0.0
        started = time.monotonic()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(self.popen.wait, timeout_s)
            except subprocess.TimeoutExpired:
                self.crashes.append(f"{self.name} did not stop within {timeout_s:g} s of SIGINT")
                self.popen.kill()
                self.popen.wait()
        self.popen = None
        return time.monotonic() - started

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@dataclass
class Ledger:
    """Every reading the edge committed, and where it is now."""

    produced: int = 0  # reading rows the edge committed (sequence numbers made)
    at_hub: int = 0  # rows at the hub from this edge
    at_hub_distinct: int = 0
    duplicates: int = 0  # rows at the hub more than once (must be 0)
    pending: int = 0  # still in the edge's buffer
    dropped_buffer_full: int = 0  # the edge's counter: oldest unsent dropped past [buffer] max_rows
    dropped_unwritable: int = 0  # the edge's counter: never committed, the buffer could not be written
    missing: int = 0  # committed, not at the hub, not pending, not dropped by a counted reason (must be 0)
    foreign: int = 0  # at the hub under this edge's name, never committed by it (must be 0)
    altered: int = 0  # at the hub with other content than the edge committed (must be 0)
    digest_edge: str = ""  # sha256 of (seq, device, metric, ts_us, value) of the delivered rows, both sides
    digest_hub: str = ""
    events_produced: int = 0
    events_at_hub: int = 0
    events_duplicates: int = 0
    events_pending: int = 0
    events_missing: int = 0
    events_dropped_unwritable: int = 0

    def problems(self) -> list[str]:
        out = []
        if self.duplicates:
            out.append(f"{self.duplicates} readings arrived at the hub more than once")
        if self.missing:
            out.append(f"{self.missing} readings the edge stored are neither at the hub, nor pending, nor counted "
                       "as dropped")
        if self.foreign:
            out.append(f"{self.foreign} readings at the hub were never stored by the edge")
        if self.altered or self.digest_edge != self.digest_hub:
            out.append(f"{self.altered} readings arrived altered (digests {self.digest_edge[:12]} / "
                       f"{self.digest_hub[:12]})")
        if self.events_duplicates:
            out.append(f"{self.events_duplicates} events arrived more than once")
        if self.events_missing:
            out.append(f"{self.events_missing} events the edge stored are neither at the hub nor pending")
        return out

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _us(t: datetime) -> int:
    return (t - _EPOCH) // _US


def _row_key(seq: int, device: str, metric: str, ts_us: int, value: float | None) -> bytes:
    return f"{seq}|{device}|{metric}|{ts_us}|{value!r}\n".encode()


@dataclass
class FaultRecord:
    kind: str
    detail: str
    started: float  # wall clock (time.time())
    healed: float
    recovered_s: float | None = None  # heal -> the edge polls again and the hub holds newer data (None: not seen)


@dataclass
class Rig:
    """``buffer_dir``: where the edge keeps its buffer (a small file system of its own for the
    disk-full fault). ``hold_rows``: the edge's ``[buffer] hold_rows``."""

    workdir: Path
    pg: PostgresServer
    buffer_dir: Path | None = None
    hold_rows: int = 50_000
    sync_interval_s: float = 0.5
    hub_timeout_s: float = 3.0
    seed: int = 0
    records: list[FaultRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.buffer_path = (self.buffer_dir or self.workdir) / "edge.db"
        self.database_url = ""
        self.token = ""
        self.sim_port = free_port()
        self.hub_port = free_port()
        self.link = ChaosProxy(self.hub_port, seed=self.seed)  # edge -> hub
        self.device_link = ChaosProxy(self.sim_port, seed=self.seed + 1)  # edge -> the substation's devices
        self.sim: Proc
        self.hub: Proc
        self.edge: Proc

    # -- set-up ------------------------------------------------------------------------------------

    async def start(self) -> None:
        from edge.buffer import Buffer
        from hub.auth.store import AuthStore
        from hub.storage import open_storage

        self.database_url = await asyncio.to_thread(self.pg.create_database)
        storage = await asyncio.to_thread(open_storage, self.database_url)  # makes the schema, as the hub would
        try:
            self.token = AuthStore(storage).add_edge(EDGE_ID, SUBSTATION, created_by="faults").secret
        finally:
            storage.close()
        await self.link.start()
        await self.device_link.start()
        base = CONFIG.read_text()
        sim_cfg = self.workdir / "sim.toml"
        sim_cfg.write_text(re.sub(r"(?m)^port = \d+", f"port = {self.sim_port}", base))
        edge_cfg = self.workdir / "edge.toml"
        text = re.sub(r"(?m)^port = \d+", f"port = {self.device_link.port}", base)
        text = re.sub(r'(?m)^url = ".*"', f'url = "http://127.0.0.1:{self.link.port}"\n'
                                         f"timeout_s = {self.hub_timeout_s}", text)
        text = re.sub(r"(?m)^sync_interval_s = .*", f"sync_interval_s = {self.sync_interval_s}", text)
        text = re.sub(r'(?m)^path = ".*"', f'path = "{self.buffer_path}"\nhold_rows = {self.hold_rows}', text)
        edge_cfg.write_text(text)
        Buffer(self.buffer_path, SUBSTATION).close()  # the edge's buffer file, made now to carry the audit
        with contextlib.closing(sqlite3.connect(self.buffer_path)) as db:
            db.executescript(_AUDIT)
        logs = self.workdir
        self.sim = Proc("simulator", ["sim", "run", str(SCENARIO), "--config", str(sim_cfg)], logs / "sim.log")
        self.hub = Proc("hub", ["-v", "hub", "serve", "--port", str(self.hub_port), "--database", self.database_url],
                        logs / "hub.log")
        self.edge = Proc("edge", ["-v", "edge", "run", "--config", str(edge_cfg)], logs / "edge.log",
                         env={"SENTINEL_EDGE_TOKEN": self.token})
        await self.start_sim()
        await self.start_hub()
        self.edge.start()

    async def start_sim(self, timeout_s: float = 30.0) -> None:
        self.sim.start()
        await _until(lambda: _port_open(self.sim_port), timeout_s, "the simulator's Modbus endpoint", self.sim)

    async def start_hub(self, timeout_s: float = 60.0) -> None:
        self.hub.start()

        async def up() -> bool:
            try:
                async with httpx.AsyncClient(timeout=1.0) as c:
                    return (await c.get(f"http://127.0.0.1:{self.hub_port}/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        await _until(up, timeout_s, "the hub's /healthz", self.hub)

    def crashes(self) -> list[str]:
        return [c for p in (self.sim, self.hub, self.edge) for c in p.crashes]

    def watch(self) -> None:
        """Record (and restart, as systemd would) a process that exited by itself."""
        for proc in (self.edge,):
            if not proc.check():
                proc.start()

    # -- what the rig sees -------------------------------------------------------------------------

    def _buffer_db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.buffer_path}?mode=ro", uri=True, timeout=10)

    def edge_latest(self) -> tuple[int, float]:
        """The edge's newest committed reading: (seq, ts); (0, 0) before any."""
        with contextlib.closing(self._buffer_db()) as db:
            row = db.execute("SELECT seq, ts FROM fault_audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), float(row[1])) if row else (0, 0.0)

    def hub_latest(self) -> int:
        """The highest sequence number the hub holds from this edge (0: none)."""
        import psycopg

        with psycopg.connect(self.database_url, connect_timeout=5) as conn:
            (seq,) = conn.execute("SELECT coalesce(max(seq), 0) FROM readings WHERE source = %s",
                                  (EDGE_ID,)).fetchone()
        return int(seq)

    async def recovery(self, healed_at: float, timeout_s: float = 60.0) -> float | None:
        """Seconds from ``healed_at`` until the edge has stored a reading polled after it and the hub
        holds a reading the edge stored after it; None if not within ``timeout_s``."""
        seq_at_heal = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.watch()
            try:
                if seq_at_heal is None:
                    seq_at_heal = await asyncio.to_thread(self._seq_before, healed_at)
                seq, ts = await asyncio.to_thread(self.edge_latest)
                if ts > healed_at and await asyncio.to_thread(self.hub_latest) > seq_at_heal:
                    return time.time() - healed_at
            except Exception:  # noqa: BLE001 - the database is restarting, the file is busy: ask again
                pass
            await asyncio.sleep(0.2)
        return None

    def _seq_before(self, t: float) -> int:
        with contextlib.closing(self._buffer_db()) as db:
            (seq,) = db.execute("SELECT coalesce(max(seq), 0) FROM fault_audit WHERE ts <= ?", (t,)).fetchone()
        return int(seq)

    # -- the end -----------------------------------------------------------------------------------

    async def finish(self, settle_s: float = 60.0) -> tuple[Ledger, float]:
        """Heal every link, let the edge catch up, stop it (SIGINT; returns the seconds the stop
        took), send what its last flush left with the edge's own sync code, then count. The
        simulator and the hub keep running (``close`` stops them)."""
        self.link.set_mode("pass")
        self.device_link.set_mode("pass")
        self.watch()
        if not self.hub.running:
            await self.start_hub()
        if not self.sim.running:
            await self.start_sim()
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:  # the backlog drains while the edge keeps polling
            self.watch()
            if await asyncio.to_thread(self._pending) < 50:
                break
            await asyncio.sleep(0.5)
        stop_s = await self.edge.interrupt()
        await self.drain()
        return await asyncio.to_thread(self.ledger), stop_s

    def _pending(self) -> int:
        with contextlib.closing(self._buffer_db()) as db:
            return int(db.execute("SELECT count(*) FROM readings").fetchone()[0])

    async def drain(self) -> None:
        """Send everything still buffered, with the edge's own sync loop (the edge is stopped)."""
        from edge.buffer import Buffer
        from edge.sync import SyncLoop
        from protocols.config import load_config

        cfg = load_config(self.workdir / "edge.toml")
        buf = Buffer(self.buffer_path, SUBSTATION)
        sync = SyncLoop(cfg, buf, token=self.token)
        try:
            for _ in range(1000):
                if not await sync.sync_once():
                    break
        finally:
            await sync.aclose()
            buf.close()

    def ledger(self) -> Ledger:
        import psycopg

        led = Ledger()
        with contextlib.closing(self._buffer_db()) as db:
            seqs = dict(db.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
            led.produced = int(seqs.get("readings", 0))
            led.events_produced = int(seqs.get("events", 0))
            audit = {r[0]: r[1:] for r in db.execute("SELECT seq, device_id, metric, ts, value FROM fault_audit")}
            pending = {r[0] for r in db.execute("SELECT seq FROM readings")}
            led.events_pending = int(db.execute("SELECT count(*) FROM events").fetchone()[0])
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        led.pending = len(pending)
        led.dropped_buffer_full = int(meta.get("dropped", 0) or 0)
        led.dropped_unwritable = int(meta.get("dropped_unwritable", 0) or 0)
        led.events_dropped_unwritable = int(meta.get("events_dropped_unwritable", 0) or 0)
        with psycopg.connect(self.database_url, connect_timeout=10) as conn:
            hub_rows = conn.execute("SELECT seq, device_id, metric, ts, value FROM readings WHERE source = %s",
                                    (EDGE_ID,)).fetchall()
            led.events_at_hub, distinct_events = conn.execute(
                "SELECT count(*), count(DISTINCT seq) FROM events WHERE edge_id = %s", (EDGE_ID,)).fetchone()
        led.at_hub = len(hub_rows)
        hub = {}
        for seq, device, metric, ts, value in hub_rows:
            hub[seq] = (device, metric, _us(ts), value)
        led.at_hub_distinct = len(hub)
        led.duplicates = led.at_hub - led.at_hub_distinct
        led.foreign = len(hub.keys() - audit.keys())
        gone = audit.keys() - hub.keys() - pending
        led.missing = max(0, len(gone) - led.dropped_buffer_full)
        edge_digest, hub_digest = hashlib.sha256(), hashlib.sha256()
        for seq in sorted(hub.keys() & audit.keys()):
            device, metric, ts, value = audit[seq]
            mine = (device, metric, _us(datetime.fromtimestamp(ts, UTC)), value)
            if mine != hub[seq]:
                led.altered += 1
            edge_digest.update(_row_key(seq, *mine))
            hub_digest.update(_row_key(seq, *hub[seq]))
        led.digest_edge, led.digest_hub = edge_digest.hexdigest(), hub_digest.hexdigest()
        led.events_duplicates = led.events_at_hub - distinct_events
        led.events_missing = max(0, led.events_produced - distinct_events - led.events_pending)
        return led

    async def close(self) -> None:
        for proc in (self.edge, self.hub, self.sim):
            with contextlib.suppress(AttributeError):
                if proc.running:
                    await proc.interrupt(15)
        await self.link.stop()
        await self.device_link.stop()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def _until(check, timeout_s: float, what: str, proc: Proc) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ok = check()
        if asyncio.iscoroutine(ok):
            ok = await ok
        if ok:
            return
        if not proc.check():
            raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{proc.tail()}")
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{what} not up within {timeout_s:g} s:\n{proc.tail()}")
