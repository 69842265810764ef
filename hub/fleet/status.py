"""The grid status the hub serves (``GET /grid-status``, the stream's ``grid_status``): the grid
monitor's verdict per substation and device, as long as the hub hears from the substation.

The grid monitor (an agent, run by the orchestrator) judges the readings it is handed: OK, WARNING
or CRITICAL. It cannot judge readings that never came: a substation whose edge died keeps its last
verdict for ever. So the verdict is shown only while the substation is live (:mod:`.liveness`):

- ``status``: the grid monitor's verdict, or ``UNKNOWN`` when the substation is stale (its edges
  offline, its telemetry silent), was never heard from, or has not been judged yet. A device its
  edge reports down is ``UNKNOWN`` in ``devices``, and makes an OK substation a WARNING.
- ``last_status``, ``as_of``: the grid monitor's last verdict and when it was made.
- ``stale``, ``last_seen``: whether the hub hears from it now, and when it last did.
- ``reason``: why the status is ``UNKNOWN`` (or which devices are down).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

import msgspec

from hub.fleet.liveness import DEVICE_OFFLINE, Liveness, active_incidents
from hub.storage.base import Incident, Storage

__all__ = ["UNKNOWN", "SubstationStatus", "grid_status"]

UNKNOWN = "UNKNOWN"
Status = Literal["OK", "WARNING", "CRITICAL", "UNKNOWN"]
Verdict = Literal["OK", "WARNING", "CRITICAL"]
_RANK = {"OK": 0, "WARNING": 1, "CRITICAL": 2}


class SubstationStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One substation of ``GET /grid-status``: the seed's ``status`` and ``devices``, and whether
    the hub hears from it."""

    status: Status
    stale: bool  # the hub does not hear from it now (or never did)
    last_seen: datetime | None  # its edges' newest sync, or (no edge) its newest reading
    devices: dict[str, Status] = msgspec.field(default_factory=dict)
    as_of: datetime | None = None  # when the grid monitor last judged it
    last_status: Verdict | None = None  # what the grid monitor said then (None: never judged)
    reason: str = ""


def grid_status(storage: Storage, liveness: Liveness, *, now: datetime | None = None,
                active: Sequence[Incident] | None = None) -> dict[str, SubstationStatus]:
    """Every substation the grid monitor judged or the hub heard from, by name. ``active``: the
    incidents not resolved yet, if the caller has them (else read). Blocking."""
    now = now or datetime.now(UTC)
    docs = {d.key: d for d in storage.latest_documents("grid_status")}
    live = liveness.substations(now)
    if set(docs) - set(live):  # judged, but not heard: maybe heard a moment ago, since the last read
        liveness.refresh(now, max_age_s=0.0, wait=True)
        live = liveness.substations(now)
    down: dict[str, list[str]] = {}
    for inc in active_incidents(storage) if active is None else active:
        if inc.type == DEVICE_OFFLINE and inc.device_id not in down.get(inc.substation, ()):
            down.setdefault(inc.substation, []).append(inc.device_id)
    out = {}
    for sub in sorted(set(docs) | set(live)):
        doc, lv = docs.get(sub), live.get(sub)
        verdict = doc.body.get("status") if doc is not None else None
        verdict = verdict if verdict in _RANK else None
        devices: dict[str, str] = dict(doc.body.get("devices") or {}) if doc is not None else {}
        if lv is None:  # judged on readings the hub has not heard recently (history, or from before it kept track)
            stale, last_seen, reason = True, None, "no recent readings: the grid monitor judged older data"
        else:
            stale, last_seen, reason = lv.stale, lv.last_seen, lv.reason
        offline = sorted(down.get(sub, ()))
        if stale:
            status = UNKNOWN
            devices = dict.fromkeys(devices, UNKNOWN)
        else:
            for dev in offline:
                devices[dev] = UNKNOWN
            if verdict is None:
                status, reason = UNKNOWN, "not judged yet: the grid monitor has not looked at its readings"
            else:
                status = verdict
                if offline:
                    status = verdict if _RANK[verdict] >= _RANK["WARNING"] else "WARNING"
                    reason = f"offline: {', '.join(offline)}"
        out[sub] = SubstationStatus(status=status, stale=stale, last_seen=last_seen, devices=devices,
                                    as_of=doc.timestamp if doc is not None else None, last_status=verdict,
                                    reason=reason)
    return out
