"""The agents in a process of their own (``sentinel hub agents``), apart from the hubs that serve.

An agent cycle takes CPU (and the GIL) for hundreds of milliseconds; in the process that ingests it
adds that to ingest and API latency. So a deployment can run N hub processes that only serve
(``sentinel hub serve --agents off``) and one or two agents processes on the same database (the
agents' leader lock lets one run them; the other stands by). What joins them is the database:

- **New data wakes the agents** within about a second, not only on their interval. On PostgreSQL
  a serving hub sends ``NOTIFY sentinel_new_data`` after it stores data (at most every
  ``NOTIFY_GAP_S``; :class:`AgentsElsewhere`) and the agents process listens. On SQLite the agents
  process polls a change marker every ``POLL_S``: the newest rowid of readings, events and OT logs
  (three index look-ups).
- **Their products reach the serving hubs** as they reach any replica: incidents and documents are
  in the database; the API reads them there and the WebSocket broadcaster reads the state every
  ``poll_s`` while a client is connected (:mod:`hub.stream.broadcaster`).
- **Their status** is stored after each cycle (documents of kind ``agent_status``: the orchestrator's
  ``share_status``); ``GET /agents`` on a hub that does not run them answers with it, and says
  ``unknown`` when no agents process has reported lately.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from litestar.exceptions import HTTPException

from hub.insights.agent_inputs import RUNNERS
from hub.insights.orchestrator import STATUS_KIND, AgentStatus, Orchestrator, OrchestratorSettings
from hub.storage import Storage, open_storage, parse_database_url

__all__ = ["CHANNEL", "AgentsElsewhere", "make_orchestrator", "run_agents_process", "watch_for_data"]

log = logging.getLogger(__name__)

CHANNEL = "sentinel_new_data"  # PostgreSQL LISTEN/NOTIFY channel: a serving hub stored new data
NOTIFY_GAP_S = 0.2  # a serving hub notifies at most this often (a burst of syncs is one notification)
POLL_S = 0.5  # SQLite: the agents process reads the change marker this often
STATUS_REFRESH_S = 1.0  # a serving hub re-reads the agents' stored statuses this often
_SQLITE_MARKER = ("SELECT (SELECT max(rowid) FROM readings), (SELECT max(rowid) FROM events),"
                  " (SELECT max(rowid) FROM ot_logs)")


def make_orchestrator(storage: Storage, settings: Any, *, on_run: Any = None) -> Orchestrator:
    """The orchestrator of the hub's settings (:class:`hub.settings.Settings`: its ``agents``, model
    registry and narrator), sharing its statuses through the database. ``settings.agents`` is set."""
    agents: OrchestratorSettings = settings.agents
    agents = dataclasses.replace(agents, agents=dataclasses.replace(
        agents.agents, model_registry=agents.agents.model_registry or settings.model_registry))
    return Orchestrator(storage, agents, narrator=settings.narrator, on_run=on_run, share_status=True)


# -- a serving hub without the agents ----------------------------------------------------------------

class AgentsElsewhere:
    """What a hub that serves without the agents keeps as ``app.state.orchestrator``: ingest's
    ``notify()`` tells the agents process (PostgreSQL: NOTIFY), ``status()`` is what that process
    stored, and a cycle on demand (``POST /agents/run``) is refused with a 503 naming where the
    agents run. ``await run()`` until cancelled."""

    def __init__(self, storage: Storage, database_url: str, settings: OrchestratorSettings) -> None:
        self.storage = storage
        self.settings = settings
        self.runners = dict(RUNNERS)
        self.loop = asyncio.get_running_loop()  # ingest calls notify() through it from worker threads
        kind, target = parse_database_url(database_url)
        self._notify_url = target if kind == "postgresql" else None  # SQLite: the agents process polls
        self._wake = asyncio.Event()
        self._statuses: list[AgentStatus] = self._unreported("none has reported to this database yet")
        self._conn: Any = None
        self._notify_failing = False
        self._split_warned: frozenset[int] = frozenset()  # the disagreeing shard counts last warned of

    def notify(self) -> None:
        """New data was stored (on the loop's thread)."""
        if self._notify_url is not None:
            self._wake.set()

    def status(self) -> list[AgentStatus]:
        return [msgspec.structs.replace(s) for s in self._statuses]

    async def run_once(self, now: datetime | None = None, only: set[str] | None = None) -> list[AgentStatus]:
        raise HTTPException(status_code=503, detail="the agents do not run in this hub process (it serves with "
                                                    "--agents off): they run in `sentinel hub agents` on its "
                                                    "database, on new data and on their interval")

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._refresh_statuses(), name="hub.agents-status")]
        if self._notify_url is not None:
            tasks.append(asyncio.create_task(self._send_notifications(), name="hub.agents-notify"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            conn, self._conn = self._conn, None
            if conn is not None:
                await asyncio.to_thread(conn.close)

    async def aclose(self) -> None:
        """Nothing runs here: the agents process holds its own resources."""

    def _unreported(self, why: str) -> list[AgentStatus]:
        return [AgentStatus(name=n, state="unknown", last_error=f"the agents run in their own process "
                                                                f"(`sentinel hub agents`); {why}") for n in self.runners]

    async def _refresh_statuses(self) -> None:
        failing = False
        while True:
            try:
                docs = await asyncio.to_thread(self.storage.latest_documents, STATUS_KIND)
                failing = False
            except Exception as exc:  # noqa: BLE001  the database is down: say so once, keep the last
                if not failing:
                    log.warning("reading the agents' statuses failed: %s (retrying)", exc)
                failing = True
            else:
                self._statuses = self._judge(docs)
            await asyncio.sleep(STATUS_REFRESH_S)

    def _judge(self, docs: list[Any]) -> list[AgentStatus]:
        """The stored statuses; ``unknown`` when their process has not reported for two intervals
        and a budget (the leader reports after every cycle, at least every ``interval_s``)."""
        if not docs:
            return self._unreported("none has reported to this database yet")
        s = self.settings
        cutoff = datetime.now(UTC) - timedelta(seconds=2 * s.interval_s + s.budget_s + 5)
        by_name: dict[str, list[Any]] = {}
        for d in docs:  # an agent's status, or one per shard (key ``name#shard I/N``) when the fleet is split
            by_name.setdefault(d.key.split("#", 1)[0], []).append(d)
        newest = max(d.timestamp for d in docs)
        late = newest < cutoff
        out = []
        for name in self.runners:
            mine = by_name.get(name)
            if not mine:
                out.append(AgentStatus(name=name, state="unknown", last_error="not reported yet"))
                continue
            fresh = [d for d in mine if d.timestamp >= cutoff] or mine  # a shard's process stopped: left out
            st = _merged([msgspec.json.decode(msgspec.json.encode(d.body), type=AgentStatus) for d in fresh])
            if late:
                st = msgspec.structs.replace(st, state="unknown", last_error=(
                    f"the agents process {st.process} has not reported since {newest.isoformat()}; "
                    f"is `sentinel hub agents` running?"))
            out.append(st)
        # processes reporting now that split the fleet differently (one --shard 0/2, another 0/3 or
        # none) each run their share as if alone: some substations twice, or all of them again
        counts = frozenset(_shard_count(d.key) for d in docs if d.timestamp >= cutoff)
        if len(counts) > 1:
            note = (f"the agents processes on this database split the fleet differently ("
                    f"{', '.join('unsplit' if n == 1 else f'{n} shards' for n in sorted(counts))}): every "
                    f"`sentinel hub agents` must use the same N in --shard I/N, or some substations are "
                    f"judged twice")
            if counts != self._split_warned:
                log.warning("%s", note)
            out = [msgspec.structs.replace(st, last_error=f"{note}; {st.last_error}" if st.last_error else note)
                   for st in out]
        self._split_warned = counts if len(counts) > 1 else frozenset()
        return out

    async def _send_notifications(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.to_thread(self._notify_now)
            await asyncio.sleep(NOTIFY_GAP_S)

    def _notify_now(self) -> None:
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._notify_url, autocommit=True, connect_timeout=5,
                                             application_name="sentinel-hub-notify")
            self._conn.execute(f"NOTIFY {CHANNEL}")
        except psycopg.Error as exc:  # the agents still run on their interval
            if not self._notify_failing:  # once, not on every sync while the database is away
                log.warning("could not notify the agents process of new data: %s (retrying with the next data)", exc)
                self._notify_failing = True
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        else:
            if self._notify_failing:
                log.info("notifying the agents process of new data works again")
                self._notify_failing = False


def _shard_count(key: str) -> int:
    """N of a stored status's key ``name#shard I/N`` (1: a process that does not split the fleet)."""
    _, _, shard = key.partition("#shard ")
    try:
        return int(shard.split("/", 1)[1]) if shard else 1
    except (IndexError, ValueError):
        return 1


_STATE_RANK = {"failed": 5, "timed_out": 4, "running": 3, "unknown": 2, "standby": 1}  # worst first


def _merged(statuses: list[AgentStatus]) -> AgentStatus:
    """One agent's status from its shards' (one each): the worst state, with its error; runs,
    findings and incidents added up; the summary per process; the processes named."""
    if len(statuses) == 1:
        return statuses[0]
    statuses = sorted(statuses, key=lambda st: st.process)
    worst = max(statuses, key=lambda st: _STATE_RANK.get(st.state, 0))
    oks = [st.last_ok for st in statuses if st.last_ok is not None]
    runs = [st.last_run for st in statuses if st.last_run is not None]
    times = [st.elapsed_ms for st in statuses if st.elapsed_ms is not None]
    return msgspec.structs.replace(
        worst, runs=sum(st.runs for st in statuses), failures=max(st.failures for st in statuses),
        last_run=max(runs) if runs else None, last_ok=min(oks) if len(oks) == len(statuses) else None,
        elapsed_ms=max(times) if times else None, findings=sum(st.findings for st in statuses),
        incidents=[i for st in statuses for i in st.incidents], summary={st.process: st.summary for st in statuses},
        process=", ".join(st.process for st in statuses))


# -- the agents process ----------------------------------------------------------------------------

async def watch_for_data(database_url: str, on_data: Callable[[], object]) -> None:
    """Call ``on_data`` (on the loop) when a hub stored new data, until cancelled: PostgreSQL
    LISTEN, SQLite a change marker polled every ``POLL_S``."""
    kind, target = parse_database_url(database_url)
    if kind == "postgresql":
        await _listen(target, on_data)
    elif target != ":memory:":
        await _poll_sqlite(target, on_data)


async def _listen(url: str, on_data: Callable[[], object]) -> None:
    import psycopg

    failing = False
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=5,
                                                             application_name="sentinel-agents-listen") as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                if failing:
                    log.info("listening for new data again")
                    failing = False
                on_data()  # whatever came while nobody listened
                while True:
                    async for _ in conn.notifies(timeout=30.0):
                        on_data()
                    await conn.execute("SELECT 1")  # a quiet half-hour is fine; a dead connection is not
        except psycopg.Error as exc:
            if not failing:
                log.warning("listening for new data failed: %s (the agents still run on their interval; "
                            "retrying)", exc)
                failing = True
            await asyncio.sleep(2.0)


async def _poll_sqlite(path: str, on_data: Callable[[], object]) -> None:
    db = sqlite3.connect(path, check_same_thread=False, timeout=5.0)
    try:
        last, failing = None, False
        while True:
            try:
                marker = await asyncio.to_thread(lambda: db.execute(_SQLITE_MARKER).fetchone())
            except sqlite3.Error as exc:
                if not failing:
                    log.warning("reading the database's change marker failed: %s (retrying)", exc)
                    failing = True
            else:
                failing = False
                if last is not None and marker != last:
                    on_data()
                last = marker
            await asyncio.sleep(POLL_S)
    finally:
        db.close()


async def run_agents_process(settings: Any, *, on_ready: Callable[[], object] | None = None) -> None:
    """``sentinel hub agents``: the orchestrator (the five agents) on ``settings.database_url``,
    under the agents' leader lock, woken by new data; until SIGINT or SIGTERM."""
    # the agents' windows and history read from the read replica too, once it has caught up
    storage = await asyncio.to_thread(open_storage, settings.database_url, migrate=settings.auto_migrate,
                                      read_url=settings.read_database_url, read_wait_s=settings.read_replica_wait_s)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    orch = make_orchestrator(storage, settings)
    tasks = [asyncio.create_task(orch.run(), name="agents.orchestrator"),
             asyncio.create_task(watch_for_data(settings.database_url, orch.notify), name="agents.watch")]
    stopped = asyncio.create_task(stop.wait(), name="agents.stop")
    orch.notify()  # a first cycle now: data may have come while no agents process ran
    try:
        if on_ready is not None:
            on_ready()
        done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopped:
                task.result()  # a task that ended on its own raised: say what
    finally:
        tasks.append(stopped)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await orch.aclose()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await asyncio.to_thread(storage.close)
