"""Grid-code limit monitoring at the edge: turns a device's polled values into events.

State is kept per device and quantity (``voltage`` covers voltage_l1..l3): one event when the
quantity leaves its band (``raised``, with the worst phase), another if it escalates from WARNING
to CRITICAL or crosses to the other side, and ``cleared`` once every phase is back inside the band
narrowed by a hysteresis margin, so noise at a limit does not chatter.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from protocols import gridcode
from protocols.config import Limits
from protocols.gridcode import PointSpec
from protocols.reading import sensor_type
from protocols.wire import Event

HYSTERESIS = 0.1  # fraction of the band's half-width a value must come back inside to clear


class LimitMonitor:
    def __init__(self, substation: str, device_id: str, specs: Sequence[PointSpec], limits: Limits) -> None:
        self.substation, self.device_id = substation, device_id
        self.specs = list(specs)
        self.table = gridcode.build_table(self.specs, limits)
        names = [sensor_type(s.metric) for s in self.specs]
        self.groups = sorted(set(names))
        self.group_of = np.array([self.groups.index(n) for n in names], dtype=np.int64)
        self._members = [np.flatnonzero(self.group_of == g) for g in range(len(self.groups))]
        # per group: (direction, severity) currently raised; (0, 0) when normal
        self.state: list[tuple[int, int]] = [(0, 0)] * len(self.groups)
        self._raised_groups: set[int] = set()  # groups whose state is not (0, 0)
        nominal = np.array([s.nominal or np.nan for s in self.specs])
        with np.errstate(invalid="ignore"):  # -inf + inf where a point has no bands
            mid = (self.table.low_warn + self.table.high_warn) / 2
        self._center = np.where(np.isfinite(nominal), nominal, np.where(np.isfinite(mid), mid, 0.0))

    def check(self, ts: float, values: np.ndarray) -> list[Event]:
        direction, severity = gridcode.evaluate(self.table, values)
        # only groups with a value outside its band now, or raised before, can make an event: in
        # the usual poll (everything inside, nothing raised) that is none, and no more work is done
        visit = self._raised_groups.union(self.group_of[severity != 0].tolist()) if severity.any() \
            else self._raised_groups
        if not visit:
            return []
        still = None
        events: list[Event] = []
        for g in sorted(visit):
            members = self._members[g]
            worst_sev = int(severity[members].max())
            prev_dir, prev_sev = self.state[g]
            if worst_sev == 0:
                if still is None:
                    _, still = gridcode.evaluate(self.table, values, margin=HYSTERESIS)
                if prev_sev and not still[members].any():
                    events.append(self._event(ts, members, values, "cleared", prev_dir, prev_sev))
                    self._set_state(g, 0, 0)
                continue
            # the worst point: highest severity, then largest relative deviation
            dev = np.abs(values[members] - self._center[members]) / np.maximum(np.abs(self._center[members]), 1e-9)
            order = np.lexsort((-dev, -severity[members]))
            row = int(members[order[0]])
            d = int(direction[row])
            if d != prev_dir and prev_sev:
                events.append(self._event(ts, members, values, "cleared", prev_dir, prev_sev))
                prev_sev = 0
            if d != prev_dir or worst_sev > prev_sev:
                events.append(self._raised(ts, row, values[row], d, worst_sev))
                self._set_state(g, d, worst_sev)
        return events

    def _set_state(self, group: int, direction: int, severity: int) -> None:
        self.state[group] = (direction, severity)
        if severity:
            self._raised_groups.add(group)
        else:
            self._raised_groups.discard(group)

    def _raised(self, ts: float, row: int, value: float, direction: int, severity: int) -> Event:
        spec = self.specs[row]
        kind = int(self.table.kind[row])
        etype = gridcode.EVENT_TYPES[kind][0 if direction < 0 else 1]
        limit = gridcode.threshold(self.table, row, direction, severity)
        return Event(
            ts=datetime.fromtimestamp(ts, UTC), substation=self.substation, device_id=self.device_id,
            metric=spec.metric, type=etype, state="raised", severity=gridcode.SEVERITY_NAMES[severity],
            value=float(value), threshold=limit, nominal=spec.nominal, unit=spec.unit,
            description=gridcode.describe(self.device_id, spec.metric, etype, float(value), spec.unit,
                                          spec.nominal, limit),
        )

    def _event(self, ts: float, members: np.ndarray, values: np.ndarray, state: str, direction: int,
               severity: int) -> Event:
        row = int(members[0])
        spec = self.specs[row]
        etype = gridcode.EVENT_TYPES[int(self.table.kind[row])][0 if direction < 0 else 1]
        name = sensor_type(spec.metric)
        return Event(
            ts=datetime.fromtimestamp(ts, UTC), substation=self.substation, device_id=self.device_id,
            metric=name, type=etype, state="cleared", severity="INFO",
            value=float(values[row]) if np.isfinite(values[row]) else None, nominal=spec.nominal, unit=spec.unit,
            description=f"{etype.replace('_', ' ').capitalize()} on {self.device_id} {name} cleared",
        )

    def offline(self, ts: float, reason: str, online: bool) -> Event:
        """An event for a device that stopped (or resumed) answering."""
        return Event(
            ts=datetime.fromtimestamp(ts, UTC), substation=self.substation, device_id=self.device_id,
            metric="", type="device_offline", state="cleared" if online else "raised",
            severity="INFO" if online else "WARNING",
            description=(f"{self.device_id} answers again" if online else f"{self.device_id} stopped answering: {reason}"),
        )
