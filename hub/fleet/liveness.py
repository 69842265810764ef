"""Liveness: when the hub last heard from each edge and each device, and what silence means.

- An **edge** is heard from when it syncs (``storage.edge_states()``: ``last_sync``, the hub's
  clock). It is *offline* when it has been silent for longer than ``offline_after`` =
  ``offline_multiple`` x its sync interval. The hub does not know an edge's configured interval:
  it learns it from the edge's syncs (the median gap between the syncs it saw), and never assumes
  less than ``sync_interval_s`` (default 30 s: ``offline_after`` is at least 3 x 30 = 90 s). An
  offline edge raises an ``edge_offline`` incident (WARNING; CRITICAL once silent for
  ``critical_multiple`` x ``offline_after``), resolved by actor ``liveness`` when it syncs again.
  An edge whose credentials are all revoked is retired: never offline, its incident resolved.
- A **device** is heard from when a reading of it that measured something arrives (not flagged
  INVALID or COMM_LOST; by the reading's own timestamp). The edge reports a device that stops
  answering with a ``device_offline`` event, which sync turns into an incident; liveness resolves it
  (actor ``liveness``) once readings of the device newer than that event arrive.
- A **substation** fed by registered edges is *stale* when none of them is online (or none ever
  synced); one fed only by telemetry (``POST /sensors/process``, MQTT) when its newest reading is
  older than ``telemetry_stale_s``. ``/grid-status`` shows a stale substation as ``UNKNOWN``.

The newest reading time of each device is kept in a small table of this module
(``fleet_last_seen``), so a restarted hub still knows when it last heard from a silent device.
Silence is measured from the hub's start at the earliest when raising incidents: a hub that was
down heard from no one, and edges resend within their backoff once it is back.

:meth:`Liveness.check` (blocking: storage) runs every ``check_interval_s`` in a worker thread
(:meth:`Liveness.run`); the views (:meth:`Liveness.edges`, :meth:`Liveness.substations`) read the
edges' sync times fresh and the devices' reading times from the last check.
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from hub.envvars import env_number
from hub.storage.base import SEVERITY_ORDER, EdgeState, Incident, IncidentError, NewIncident, Storage, parse_incident_id
from protocols.validation import DEFAULT_MAX_FUTURE_SKEW_S

__all__ = ["ACTIVE_STATUSES", "AGENT", "DEVICE_OFFLINE", "EDGE_OFFLINE", "DeviceLiveness", "EdgeLiveness", "Liveness",
           "LivenessSettings", "SubstationLiveness", "active_incidents", "settings_from_env"]

log = logging.getLogger(__name__)

AGENT = "liveness"  # the incidents' agent, and the actor of their automatic resolution
EDGE_OFFLINE = "edge_offline"
DEVICE_OFFLINE = "device_offline"  # raised by the edge's event (hub.ingest), resolved here
ACTIVE_STATUSES = ("OPEN", "ACKNOWLEDGED", "IN_PROGRESS")  # not resolved yet
LEARNT_SYNCS = 9  # gaps between syncs kept per edge; its interval is their median, once there are 3
_ACTIVE_LISTED = 10_000
_UPSERT_ROWS = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_TABLE = """CREATE TABLE IF NOT EXISTS fleet_last_seen (
    substation TEXT NOT NULL,
    device_id TEXT NOT NULL,
    last_reading DOUBLE PRECISION NOT NULL,  -- the newest reading's timestamp, seconds since the epoch (UTC)
    PRIMARY KEY (substation, device_id)
)"""
_UPSERT = ("INSERT INTO fleet_last_seen (substation, device_id, last_reading) VALUES {values}"
           " ON CONFLICT (substation, device_id) DO UPDATE SET last_reading = excluded.last_reading"
           " WHERE excluded.last_reading > fleet_last_seen.last_reading")

ENV = {  # variable -> LivenessSettings field
    "SENTINEL_EDGE_SYNC_INTERVAL_S": "sync_interval_s",
    "SENTINEL_OFFLINE_MULTIPLE": "offline_multiple",
    "SENTINEL_LIVENESS_CHECK_S": "check_interval_s",
    "SENTINEL_TELEMETRY_STALE_S": "telemetry_stale_s",
}


@dataclass(frozen=True)
class LivenessSettings:
    # the sync interval assumed for an edge until the hub has learnt its own, and the least it
    # assumes even then (SENTINEL_EDGE_SYNC_INTERVAL_S)
    sync_interval_s: float = 30.0
    # an edge silent for this many sync intervals is offline (SENTINEL_OFFLINE_MULTIPLE)
    offline_multiple: float = 3.0
    check_interval_s: float = 10.0  # SENTINEL_LIVENESS_CHECK_S
    # a substation without an edge is stale after this long without a reading (SENTINEL_TELEMETRY_STALE_S);
    # None: offline_multiple x sync_interval_s, as an edge
    telemetry_stale_s: float | None = None
    critical_multiple: float = 10.0  # edge_offline turns CRITICAL after this many offline_after of silence
    window_s: float = 300.0  # each check reads the readings of the last window_s (by their timestamps)
    # between whole-window reads (at least every full_read_s), a read goes back only overlap_s before
    # the last one: at 10,000 readings/s the whole window took 100-300 ms of the database a read, and
    # the views read it every second (docs/scaling.md)
    overlap_s: float = 10.0
    full_read_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("sync_interval_s", "offline_multiple", "check_interval_s", "critical_multiple", "window_s",
                     "overlap_s", "full_read_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"liveness: {name} must be > 0, not {value}")
        if self.telemetry_stale_s is not None and not self.telemetry_stale_s > 0:
            raise ValueError(f"liveness: telemetry_stale_s must be > 0, not {self.telemetry_stale_s}")

    @property
    def offline_floor_s(self) -> float:
        """The shortest silence after which an edge is offline."""
        return self.offline_multiple * self.sync_interval_s

    @property
    def telemetry_after_s(self) -> float:
        return self.telemetry_stale_s if self.telemetry_stale_s is not None else self.offline_floor_s


def settings_from_env(environ: Mapping[str, str] | None = None) -> LivenessSettings:
    """:class:`LivenessSettings` from ``SENTINEL_EDGE_SYNC_INTERVAL_S``, ``SENTINEL_OFFLINE_MULTIPLE``,
    ``SENTINEL_LIVENESS_CHECK_S``, ``SENTINEL_TELEMETRY_STALE_S``; a ValueError naming the variable
    that is unusable."""
    values: dict[str, float] = {}
    for var, name in ENV.items():
        if (value := env_number(var, environ, above=0)) is not None:
            values[name] = value
    return LivenessSettings(**values)


class EdgeLiveness(msgspec.Struct, frozen=True, kw_only=True):
    """An edge: when it last synced, the interval the hub learnt from its syncs, whether it is online."""

    edge_id: str
    substation: str  # the substation it syncs for (or its credential is bound to; "" if neither)
    registered: bool  # it holds a live credential; a retired edge (all revoked) is never offline
    last_sync: datetime | None  # None: registered, never synced
    silent_s: float | None  # seconds since last_sync
    sync_interval_s: float | None  # learnt from its syncs; None: not yet (the default is assumed)
    offline_after_s: float
    online: bool


class DeviceLiveness(msgspec.Struct, frozen=True, kw_only=True):
    substation: str
    device_id: str
    last_reading: datetime  # the timestamp of its newest reading that measured something
    silent_s: float


class SubstationLiveness(msgspec.Struct, frozen=True, kw_only=True):
    """Whether the hub hears from a substation now."""

    substation: str
    last_seen: datetime | None  # its edges' newest sync, or (no edge) its newest reading; None: never
    stale: bool
    reason: str = ""  # why it is stale
    edges: list[str] = msgspec.field(default_factory=list)  # the registered edges that feed it


def active_incidents(storage: Storage) -> list[Incident]:
    """Every incident not resolved yet, newest first, each once.

    One query a status: an incident acknowledged between two of them is in both. Statuses only move
    forward and are read in that order, so the copy read last is the current one (it was listed
    twice, and the dashboard drew its row twice)."""
    by_id = {i.id: i for s in ACTIVE_STATUSES for i in storage.list_incidents(status=s, limit=_ACTIVE_LISTED)}
    out = list(by_id.values())
    out.sort(key=lambda i: parse_incident_id(i.id), reverse=True)
    return out


def _edge_key(substation: str, edge_id: str) -> str:
    return f"{AGENT}:{EDGE_OFFLINE}:{substation}:{edge_id}"


class Liveness:
    """The hub's knowledge of who it hears from. ``registered_edges`` returns the (edge_id,
    substation) of every live edge credential (``AuthStore.credentials("edge")``); ``on_change`` is
    called (from the checking thread) when a check raised or resolved an incident or a
    substation turned stale or fresh."""

    def __init__(self, storage: Storage, settings: LivenessSettings | None = None, *,
                 registered_edges: Callable[[], Iterable[tuple[str, str]]] | None = None,
                 on_change: Callable[[], object] | None = None, started: datetime | None = None) -> None:
        self.storage = storage
        self.settings = settings or LivenessSettings()
        self.registered_edges = registered_edges or (lambda: ())
        self.on_change = on_change
        self.started = started or datetime.now(UTC)
        self.last_check: datetime | None = None
        self._lock = threading.Lock()  # the views read what check() writes, from other threads
        self._seen: dict[tuple[str, str], datetime] = {}  # (substation, device) -> newest reading
        self._loaded = False  # the first check has run (the table read, the credentials known)
        self._syncs: dict[str, datetime] = {}  # edge -> the last_sync seen at the last check
        self._gaps: dict[str, deque[float]] = {}
        self._registered: dict[str, str] = {}  # edge -> its credential's substation
        self._raised: dict[str, datetime | None] = {}  # condition -> the last_sync its silence was raised at
        self._stale: dict[str, bool] = {}
        self._failing = False
        self._merging = threading.Lock()  # one read of the readings at a time
        self._merged_at = 0.0  # monotonic: the last read
        self._read_to: datetime | None = None  # the `now` of the last read (reading timestamps)
        self._full_at = -math.inf  # monotonic: the last read of the whole window

    # -- thresholds -------------------------------------------------------------------------------

    def sync_interval(self, edge_id: str) -> float | None:
        """The edge's sync interval as learnt from its syncs (None: fewer than three seen)."""
        with self._lock:
            gaps = list(self._gaps.get(edge_id, ()))
        return statistics.median(gaps) if len(gaps) >= 3 else None

    def offline_after(self, edge_id: str) -> float:
        s = self.settings
        return s.offline_multiple * max(s.sync_interval_s, self.sync_interval(edge_id) or 0.0)

    # -- views (blocking: they read the edges' sync times) ----------------------------------------

    def edges(self, now: datetime | None = None, states: Sequence[EdgeState] | None = None) -> list[EdgeLiveness]:
        """Every edge that synced or holds a live credential, by id."""
        now = now or datetime.now(UTC)
        states = self.storage.edge_states() if states is None else states
        with self._lock:
            registered = dict(self._registered)
        out: dict[str, EdgeLiveness] = {}
        for e in states:
            after = self.offline_after(e.edge_id)
            silent = max(0.0, (now - e.last_sync).total_seconds()) if e.last_sync is not None else None
            live = e.edge_id in registered or not self._loaded  # before the first check: no retired edge yet
            out[e.edge_id] = EdgeLiveness(edge_id=e.edge_id, substation=e.substation, registered=live,
                                          last_sync=e.last_sync, silent_s=silent,
                                          sync_interval_s=self.sync_interval(e.edge_id), offline_after_s=after,
                                          online=silent is not None and silent <= after)
        for edge_id, substation in registered.items():
            if edge_id not in out:
                out[edge_id] = EdgeLiveness(edge_id=edge_id, substation=substation, registered=True, last_sync=None,
                                            silent_s=None, sync_interval_s=None,
                                            offline_after_s=self.offline_after(edge_id), online=False)
        return [out[k] for k in sorted(out)]

    def refresh(self, now: datetime | None = None, max_age_s: float = 1.0, *, wait: bool = False) -> None:
        """Read the readings that came since the last read, if that is more than ``max_age_s`` ago
        (the views do, so a substation first heard a moment ago is not shown as silent until the
        next check). Skipped before the first check, and while another thread reads them unless
        ``wait``."""
        if not self._loaded or time.monotonic() - self._merged_at < max_age_s:
            return
        if self._merging.acquire(blocking=wait):
            try:
                self._merge_readings(now or datetime.now(UTC))
            finally:
                self._merging.release()

    def devices(self, now: datetime | None = None) -> list[DeviceLiveness]:
        """Every device heard from, with its newest reading's time."""
        now = now or datetime.now(UTC)
        self.refresh(now)
        with self._lock:
            seen = sorted(self._seen.items())
        return [DeviceLiveness(substation=sub, device_id=dev, last_reading=ts,
                               silent_s=max(0.0, (now - ts).total_seconds())) for (sub, dev), ts in seen]

    def substations(self, now: datetime | None = None,
                    edges: Sequence[EdgeLiveness] | None = None) -> dict[str, SubstationLiveness]:
        """Every substation the hub knows of (from its edges, their credentials and the readings
        seen): when it last heard from it and whether it is stale, by name."""
        now = now or datetime.now(UTC)
        self.refresh(now)
        edges = self.edges(now) if edges is None else edges
        fed: dict[str, list[EdgeLiveness]] = {}
        for e in edges:
            if e.registered and e.substation:
                fed.setdefault(e.substation, []).append(e)
        newest: dict[str, datetime] = {}
        with self._lock:
            for (sub, _), ts in self._seen.items():
                if ts > newest.get(sub, _EPOCH):
                    newest[sub] = ts
        after = self.settings.telemetry_after_s
        out = {}
        for sub in sorted(set(fed) | set(newest)):
            if sub in fed:
                mine = fed[sub]
                last = max((e.last_sync for e in mine if e.last_sync is not None), default=None)
                stale = not any(e.online for e in mine)
                reason = "; ".join(_silence(e) for e in mine if not e.online) if stale else ""
                out[sub] = SubstationLiveness(substation=sub, last_seen=last, stale=stale, reason=reason,
                                              edges=[e.edge_id for e in mine])
            else:
                last = newest[sub]
                silent = (now - last).total_seconds()
                stale = silent > after
                reason = f"no reading for {silent:.0f} s (stale after {after:g} s)" if stale else ""
                out[sub] = SubstationLiveness(substation=sub, last_seen=last, stale=stale, reason=reason)
        return out

    # -- the check --------------------------------------------------------------------------------

    def check(self, now: datetime | None = None) -> tuple[list[Incident], list[Incident]]:
        """Read what the hub heard since the last check, raise and resolve incidents; returns
        (incidents raised or escalated, incidents resolved). Blocking."""
        now = now or datetime.now(UTC)
        if not self._loaded:
            self._load()
        with self._merging:
            self._merge_readings(now)
        states = self.storage.edge_states()
        registered = {edge_id: sub for edge_id, sub in self.registered_edges()}
        with self._lock:
            self._learn(states)
            self._registered = registered
            self._loaded = True
        edges = self.edges(now, states)
        active = [i for i in active_incidents(self.storage) if i.type in (EDGE_OFFLINE, DEVICE_OFFLINE)]
        raised = self._raise_offline_edges(edges, active, now)
        resolved = self._resolve(edges, active)
        stale = {sub: s.stale for sub, s in self.substations(now, edges).items()}
        changed = bool(raised or resolved) or stale != self._stale
        for sub, is_stale in stale.items():
            if self._stale.get(sub, False) != is_stale and sub in self._stale:  # on change, not at start
                log.log(logging.WARNING if is_stale else logging.INFO, "substation %s is %s", sub,
                        "stale: the hub no longer hears from it" if is_stale else "heard from again")
        self._stale = stale
        self.last_check = now
        if changed and self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # telling the stream must never stop the check
                log.exception("liveness: the on_change hook failed")
        return raised, resolved

    async def run(self) -> None:
        """Check every ``check_interval_s`` until cancelled. A failed check is logged once (and its
        recovery once) and tried again at the next interval."""
        while True:
            try:
                await asyncio.to_thread(self.check)
            except Exception as exc:
                if not self._failing:
                    log.error("liveness check failed: %s (retrying every %g s)", exc, self.settings.check_interval_s,
                              exc_info=exc)
                    self._failing = True
            else:
                if self._failing:
                    log.info("liveness check works again")
                    self._failing = False
            await asyncio.sleep(self.settings.check_interval_s)

    # -- parts of the check -----------------------------------------------------------------------

    def _load(self) -> None:
        with self.storage.transaction() as tx:
            tx.execute(_TABLE)
            rows = tx.execute("SELECT substation, device_id, last_reading FROM fleet_last_seen").fetchall()
        with self._lock:
            for sub, dev, ts in rows:
                when = datetime.fromtimestamp(float(ts), UTC)
                if when > self._seen.get((sub, dev), _EPOCH):
                    self._seen[(sub, dev)] = when

    def _merge_readings(self, now: datetime) -> None:
        """The newest reading of each device over the last ``window_s`` (and up to the future skew
        the ingest accepts), merged into what is known and kept.

        The whole window is read at the first read and at least every ``full_read_s``; a read between
        goes back ``overlap_s`` before the last read's time. A device's newest reading that arrives
        more than ``overlap_s`` after its own timestamp (a clock that lags) is therefore seen up to
        ``full_read_s`` late; every other is seen as before."""
        s = self.settings
        self._merged_at = mono = time.monotonic()
        start = now - timedelta(seconds=s.window_s)
        full = self._read_to is None or now < self._read_to or mono - self._full_at >= s.full_read_s
        if not full:
            start = max(start, self._read_to - timedelta(seconds=s.overlap_s))
        rows = self.storage.latest_reading_times(start, now + timedelta(seconds=DEFAULT_MAX_FUTURE_SKEW_S))
        if full:
            self._full_at = mono
        self._read_to = now
        changed: list[tuple[str, str, float]] = []
        with self._lock:
            for sub, dev, ts in rows:
                if ts > self._seen.get((sub, dev), _EPOCH):
                    self._seen[(sub, dev)] = ts
                    changed.append((sub, dev, ts.timestamp()))
        for i in range(0, len(changed), _UPSERT_ROWS):
            part = changed[i:i + _UPSERT_ROWS]
            with self.storage.transaction() as tx:
                tx.execute(_UPSERT.format(values=",".join(["(?,?,?)"] * len(part))), [v for row in part for v in row])

    def _learn(self, states: Sequence[EdgeState]) -> None:
        """Each edge's sync interval, from the gaps between the syncs seen (under the lock)."""
        for e in states:
            if e.last_sync is None:
                continue
            before = self._syncs.get(e.edge_id)
            if before is not None and e.last_sync > before:
                self._gaps.setdefault(e.edge_id, deque(maxlen=LEARNT_SYNCS)).append(
                    (e.last_sync - before).total_seconds())
            self._syncs[e.edge_id] = e.last_sync

    def _raise_offline_edges(self, edges: Sequence[EdgeLiveness], active: Sequence[Incident],
                             now: datetime) -> list[Incident]:
        open_by_key = {i.condition_key: i for i in active if i.type == EDGE_OFFLINE}
        new = []
        for e in edges:
            if not e.registered or e.last_sync is None:
                continue  # retired, or never synced (not deployed yet): nothing has stopped
            silent = (now - max(e.last_sync, self.started)).total_seconds()
            if silent <= e.offline_after_s:
                continue
            key = _edge_key(e.substation, e.edge_id)
            critical = silent >= self.settings.critical_multiple * e.offline_after_s
            severity = "CRITICAL" if critical else "WARNING"
            current = open_by_key.get(key)
            if current is None and self._raised.get(key) == e.last_sync:
                continue  # this silence was raised already, and resolved by someone: not again
            if current is not None and SEVERITY_ORDER.get(current.severity, 0) >= SEVERITY_ORDER[severity]:
                continue
            learnt = e.sync_interval_s
            new.append(NewIncident(
                timestamp=now, type=EDGE_OFFLINE, device_id=e.edge_id, severity=severity, agent=AGENT,
                substation=e.substation, condition_key=key, value=round(silent, 1),
                description=f"Edge {e.edge_id} ({e.substation}) has not synced for {silent:.0f} s (offline after "
                            f"{_secs(e.offline_after_s)}): the hub hears nothing from {e.substation}",
                recommendation="Check the edge box's power and network link to the hub, and run `sentinel edge "
                               "status` on it. Its buffer keeps the readings it takes meanwhile and sends them "
                               "when it reaches the hub again.",
                facts={"last_sync": e.last_sync.isoformat(), "silent_s": round(silent, 1),
                       "offline_after_s": e.offline_after_s, "sync_interval_s": learnt,
                       "sync_interval_source": "learnt from its syncs" if learnt else "assumed (not learnt yet)"},
            ))
            self._raised[key] = e.last_sync
            log.warning("edge %s (%s) offline: no sync for %.1f s (offline after %g s)", e.edge_id, e.substation,
                        silent, e.offline_after_s)
        return self.storage.add_incidents(new) if new else []

    def _resolve(self, edges: Sequence[EdgeLiveness], active: Sequence[Incident]) -> list[Incident]:
        by_id = {e.edge_id: e for e in edges}
        with self._lock:
            seen = dict(self._seen)
        out = []
        for inc in active:
            note = ""
            if inc.type == EDGE_OFFLINE and inc.agent == AGENT:
                e = by_id.get(inc.device_id)
                if e is None or not e.registered:
                    note = f"edge {inc.device_id} is retired: it holds no live credential"
                elif e.online and e.last_sync is not None:
                    note = f"edge {inc.device_id} synced again at {e.last_sync.isoformat()}"
            elif inc.type == DEVICE_OFFLINE:
                ts = seen.get((inc.substation, inc.device_id))
                down = inc.last_seen or inc.timestamp
                if ts is not None and ts > down:
                    note = f"readings from {inc.device_id} again since {ts.isoformat()}"
            if not note:
                continue
            try:
                out.append(self.storage.set_incident_status(inc.id, "RESOLVED", AGENT, note))
            except IncidentError:  # resolved by someone meanwhile
                continue
            log.info("%s %s resolved: %s", inc.type, inc.id, note)
        return out


def _silence(e: EdgeLiveness) -> str:
    if e.last_sync is None:
        return f"edge {e.edge_id} has never synced"
    return f"edge {e.edge_id} silent for {e.silent_s:.0f} s (offline after {_secs(e.offline_after_s)})"


def _secs(seconds: float) -> str:
    """A duration as an operator reads it: ``4.1 s``, ``90 s``, ``15 min``."""
    if seconds >= 600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
