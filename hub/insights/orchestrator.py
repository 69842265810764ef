"""The orchestrator: runs the five agents concurrently, on new data and on a schedule.

Each agent (:data:`hub.insights.agent_inputs.RUNNERS`) runs in a worker thread with a time budget. One agent
failing, or running past its budget, never holds up the others: it is reported (``status()``,
``GET /agents``, one ERROR log line when it starts failing and one INFO when it recovers) and
retried on the next cycle, which comes sooner after a failure (capped, doubling backoff). An agent
still running past its budget is not started again until it returns (a thread cannot be killed;
its late result is dropped). Each run's outcome (``ok``, ``failed``, ``timed_out``, or ``busy``: not
started, the previous run still going) and duration go to the ``on_run`` hook (the hub's metrics).

Findings become incidents through :meth:`Storage.add_incidents` (one per ongoing condition);
forecasts, maintenance predictions and grid status become documents. With a narrator
(:mod:`agents.narration`), each new or escalated incident gets an explanation. With
``share_status``, each cycle's statuses are stored too (documents of kind :data:`STATUS_KIND`), so a
hub that does not run the agents itself can say how they run elsewhere (:mod:`hub.insights.elsewhere`).

Several processes on one database (hub replicas, ``sentinel hub agents``) run the cycles once: only
the holder of the agents' leader lock runs them; the others stand by, try the lock every
``min_gap_s`` and take over when its holder goes. With a shard (``AgentSettings.shard``,
:mod:`hub.insights.shards`) the orchestrator runs the agents of that shard only, for its substations,
under that shard's own leader lock, and stores its statuses under keys naming the shard.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from agents.findings import Finding
from hub.incidents.service import incident_from_finding
from hub.insights.agent_inputs import RUNNERS, AgentOutput, AgentSettings
from hub.insights.shards import Shard, splitting
from hub.storage.base import Document, Incident, Storage

__all__ = ["STATUS_KIND", "AgentStatus", "Orchestrator", "OrchestratorSettings", "process_name", "status_key"]

log = logging.getLogger(__name__)

Runner = Callable[[Storage, AgentSettings, datetime], AgentOutput]
RunHook = Callable[[str, str, float | None], object]  # (agent, outcome, seconds; None: not started)
# agent -> the agent whose product of the same cycle it reads (the maintenance window is the
# lowest forecast load): it starts when that one is done; the others run side by side
AFTER = {"maintenance_predictor": "demand_forecaster"}
STATUS_KIND = "agent_status"  # documents: each agent's status after a cycle (key: the agent's name)


def process_name() -> str:
    """This process as the agents' statuses name it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def status_key(agent: str, shard: Shard | None = None) -> str:
    """The key of an agent's stored status: its name, and ``#shard I/N`` for a shard's."""
    shard = splitting(shard)
    return agent if shard is None else f"{agent}#shard {shard.label}"


@dataclass(frozen=True)
class OrchestratorSettings:
    interval_s: float = 60.0  # scheduled cycle
    min_gap_s: float = 5.0  # new data starts a cycle at most this often
    budget_s: float = 30.0  # per agent and cycle
    max_retry_s: float = 60.0  # a failed agent is retried after min_gap_s, doubling up to this
    agents: AgentSettings = field(default_factory=AgentSettings)


class AgentStatus(msgspec.Struct, kw_only=True):
    name: str
    # idle | running | ok | failed | timed_out | standby (another process runs the agents) | unknown (they
    # run in another process, which has not reported lately: hub.insights.elsewhere)
    state: str = "idle"
    runs: int = 0
    failures: int = 0  # in a row
    last_run: datetime | None = None
    last_ok: datetime | None = None
    last_error: str = ""
    elapsed_ms: float | None = None
    findings: int = 0
    incidents: list[str] = msgspec.field(default_factory=list)  # touched by the last run
    summary: dict[str, Any] = msgspec.field(default_factory=dict)
    process: str = ""  # where the agents run: host:pid of the hub or `sentinel hub agents` process


class Orchestrator:
    def __init__(self, storage: Storage, settings: OrchestratorSettings | None = None, *,
                 runners: Mapping[str, Runner] | None = None, narrator: Any = None,
                 on_run: RunHook | None = None, share_status: bool = False) -> None:
        self.storage = storage
        self.settings = settings or OrchestratorSettings()
        self.runners = dict(RUNNERS if runners is None else runners)
        self.narrator = narrator
        self.on_run = on_run
        self.share_status = share_status
        self.shard = splitting(self.settings.agents.shard)
        if self.shard is not None:  # shards past 0 run the per-substation agents only
            self.runners = {n: r for n, r in self.runners.items() if self.shard.runs(n)}
        me = process_name() if self.shard is None else f"{process_name()} shard {self.shard.label}"
        self._status = {name: AgentStatus(name=name, process=me) for name in self.runners}
        self._busy: dict[str, asyncio.Future[AgentOutput]] = {}
        # threads of its own: agents never queue the hub's (or an embedding edge's) worker threads
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.runners)), thread_name_prefix="hub-agent")
        self._wake = asyncio.Event()
        self.loop = asyncio.get_running_loop()  # notify() from worker threads goes through it
        self._cycle = asyncio.Lock()
        self._last_cycle = 0.0
        # several hub replicas on one database: only the holder of this lock runs the scheduled cycles
        # (with a shard: that shard's lock; processes of other shards run beside this one)
        make_lock = getattr(storage, "leader_lock", None)
        lock_name = "agents" if self.shard is None else self.shard.lock_name
        self._leader = make_lock(lock_name) if make_lock is not None else None
        self.leading: bool | None = None  # None: not asked yet

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Wait (at most ``timeout_s``) for agents still running, so the storage is not closed
        under them, then let the threads go, and the leader lock (another replica takes it)."""
        running = [f for f in self._busy.values() if not f.done()]
        if running:
            await asyncio.wait(running, timeout=timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._leader is not None:
            await asyncio.to_thread(self._leader.release)

    def status(self) -> list[AgentStatus]:
        return [msgspec.structs.replace(s) for s in self._status.values()]

    def notify(self) -> None:
        """New data arrived: run a cycle soon (at most every ``min_gap_s``). Call it on the loop's
        thread (``loop.call_soon_threadsafe(orchestrator.notify)`` from a worker)."""
        self._wake.set()

    async def run(self) -> None:
        """Cycles until cancelled: on new data, on the schedule, and sooner to retry a failed agent."""
        s = self.settings
        while True:
            wait = s.interval_s
            failing = [st.failures for st in self._status.values() if st.failures]
            if failing:
                wait = min(wait, min(s.max_retry_s, s.min_gap_s * 2 ** (min(failing) - 1)))
            if self.leading is False:  # standing by: try the lock often, to take over soon after its holder goes
                wait = min(wait, s.min_gap_s)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the inner result when a
            # cancel lands just as the wake event is set, so the task swallowed its cancellation and
            # cycled for ever (a hub that never stopped after new data arrived at shutdown)
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass
            gap = s.min_gap_s - (time.monotonic() - self._last_cycle)
            if gap > 0:
                await asyncio.sleep(gap)
            self._wake.clear()
            if not await self._lead():
                continue
            await self.run_once()

    async def _lead(self) -> bool:
        """Whether this hub runs the scheduled cycles: it holds the agents' leader lock (or there is none)."""
        if self._leader is None:
            return True
        leading = await asyncio.to_thread(self._leader.acquire)
        if leading != self.leading:
            if leading:
                log.info("this process runs the agents (it holds the agents' leader lock)")
            else:
                log.info("another process runs the agents: this one stands by and takes over if it goes")
                for st in self._status.values():
                    st.state = "standby"
            self.leading = leading
        return leading

    async def run_once(self, now: datetime | None = None, only: set[str] | None = None) -> list[AgentStatus]:
        """One cycle: every agent (or those in ``only``) concurrently, each within its budget."""
        async with self._cycle:
            self._last_cycle = time.monotonic()
            now = now or datetime.now(UTC)
            names = [n for n in self.runners if only is None or n in only]
            tasks: dict[str, asyncio.Task[None]] = {}
            async with asyncio.TaskGroup() as tg:
                for name in names:
                    tasks[name] = tg.create_task(self._run_agent(name, now, tasks.get(AFTER.get(name, ""))),
                                                 name=f"hub.agent.{name}")
            if self.share_status:
                await self._share([self._status[n] for n in names])
            return [msgspec.structs.replace(self._status[n]) for n in names]

    async def _share(self, statuses: list[AgentStatus]) -> None:
        """Store the statuses for hubs that do not run the agents (a failure is logged, not raised:
        the agents' products are stored already)."""
        now = datetime.now(UTC)
        docs = [Document(kind=STATUS_KIND, key=status_key(st.name, self.shard), timestamp=now,
                         body=msgspec.to_builtins(st)) for st in statuses]
        try:
            await self.loop.run_in_executor(self._pool, self.storage.put_documents, docs)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not store the agents' statuses: %s", exc)

    async def _run_agent(self, name: str, now: datetime, after: asyncio.Task[None] | None = None) -> None:
        if after is not None:  # uses that agent's product of this cycle (it never raises: see below)
            await asyncio.wait([after])
        st = self._status[name]
        busy = self._busy.get(name)
        if busy is not None and not busy.done():
            st.state, st.last_error = "timed_out", f"still running past its {self.settings.budget_s:g} s budget"
            self._report(name, "busy", None)
            return
        st.state, st.last_run, st.runs = "running", now, st.runs + 1
        started = time.perf_counter()
        fut = self._busy[name] = self.loop.run_in_executor(
            self._pool, self.runners[name], self.storage, self.settings.agents, now)
        try:
            async with asyncio.timeout(self.settings.budget_s):
                output = await asyncio.shield(fut)
            incidents = await self.loop.run_in_executor(self._pool, self._record, output)
        except TimeoutError:
            self._failed(st, f"ran past its {self.settings.budget_s:g} s budget", "timed_out")
            return
        except Exception as exc:  # an agent's bug must not stop the others: report it and retry
            self._failed(st, f"{type(exc).__name__}: {exc}", "failed", exc)
            return
        finally:
            st.elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
            if st.state != "running":  # failed or timed out (set above); an ok run is reported below
                self._report(name, st.state, st.elapsed_ms / 1000)
        if st.failures:
            log.info("agent %s recovered after %d failed runs", name, st.failures)
        st.state, st.failures, st.last_ok, st.last_error = "ok", 0, now, ""
        st.findings, st.incidents, st.summary = len(output.findings), [i.id for i in incidents], output.summary
        self._report(name, "ok", st.elapsed_ms / 1000)

    def _report(self, name: str, outcome: str, seconds: float | None) -> None:
        if self.on_run is not None:
            try:
                self.on_run(name, outcome, seconds)
            except Exception:  # counting must never stop the agents
                log.exception("the on_run hook failed for agent %s", name)

    def _failed(self, st: AgentStatus, reason: str, state: str, exc: BaseException | None = None) -> None:
        if st.failures == 0:  # log on change of state, not on every retry
            log.error("agent %s failed: %s (retrying)", st.name, reason, exc_info=exc)
        st.state, st.failures, st.last_error = state, st.failures + 1, reason

    def _record(self, output: AgentOutput) -> list[Incident]:
        """Store an agent's products (blocking: runs in a worker thread)."""
        if output.documents:
            self.storage.put_documents(output.documents)
        if not output.findings:
            return []
        before = {i.id: i for i in self.storage.list_incidents(status="OPEN", limit=10_000)}
        incidents = self.storage.add_incidents([incident_from_finding(f) for f in output.findings])
        if self.narrator is not None:
            self._narrate(output.findings, incidents, before)
        return incidents

    def _narrate(self, findings: list[Finding], incidents: list[Incident], before: dict[str, Incident]) -> None:
        by_key = {f.condition_key(): f for f in findings}
        for inc in incidents:
            old = before.get(inc.id)
            if old is not None and old.severity == inc.severity and old.narrative:
                continue  # nothing new to explain
            finding = by_key.get(inc.condition_key)
            if finding is None:
                continue
            narrative = self.narrator.narrate([finding])
            self.storage.set_incident_narrative(inc.id, narrative.text)
