"""OK / WARNING / CRITICAL per device and per substation, rolled up from findings."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from agents.findings import Finding, severity_rank

__all__ = ["rollup", "status_of"]

_STATUS_BY_RANK = ("OK", "WARNING", "CRITICAL", "CRITICAL")  # INFO, WARNING, CRITICAL, EMERGENCY
_RANK_OF_STATUS = {"OK": 0, "WARNING": 1, "CRITICAL": 2}


def status_of(findings: Iterable[Finding]) -> str:
    """The worst status the findings give: none or only INFO is OK; EMERGENCY counts as CRITICAL."""
    worst = max((severity_rank(f.severity) for f in findings), default=0)
    return _STATUS_BY_RANK[worst]


def rollup(findings: Sequence[Finding], devices: Iterable[tuple[str, str]] = ()
           ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(status per substation, status per substation and device).

    ``devices`` are the (substation, device_id) pairs that were looked at: each gets a status, OK
    when no finding names it. A substation's status is its worst device's.
    """
    by_device: dict[str, dict[str, str]] = {}
    for substation, device_id in devices:
        by_device.setdefault(substation, {}).setdefault(device_id, "OK")
    for f in findings:
        per_sub = by_device.setdefault(f.substation, {})
        status = status_of((f,))
        if _RANK_OF_STATUS[status] > _RANK_OF_STATUS[per_sub.get(f.device_id, "OK")]:
            per_sub[f.device_id] = status
        else:
            per_sub.setdefault(f.device_id, "OK")
    by_substation = {
        sub: max(statuses.values(), key=_RANK_OF_STATUS.__getitem__, default="OK")
        for sub, statuses in by_device.items()
    }
    return by_substation, by_device
