"""The detections over OT log events. Pure computation: events in, findings out.

Timestamps are integer microseconds, sorted once; each detection groups the events it looks at
(per source and target, per substation, per master) and counts within a sliding window with
``np.searchsorted`` over the group's sorted times, so the work grows as n log n, not n^2.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Hashable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from agents.cyber_sentinel.config import DAYS, CyberConfig, SetpointLimit, SitePolicy
from agents.cyber_sentinel.evidence import chain, entry
from agents.findings import Finding, severity_rank
from protocols.otlog import OtLogEvent

AGENT = "cyber_sentinel"
US = 1_000_000  # microseconds per second
_DEVICE_KINDS = {"RTU", "PLC", "IED", "HMI", "GW", "FRTU", "DCU"}


def analyse(events: Sequence[OtLogEvent], config: CyberConfig = CyberConfig(),
            now: datetime | None = None) -> list[Finding]:
    """All findings in ``events`` (any order), sorted by time, one per ongoing condition.

    ``now`` (time-zone aware; default: the latest event) marks which conditions are still
    ``facts["active"]`` (latest evidence within the detection's window) and ends the period over
    which a master's usual command rate is measured.
    """
    if not events:
        return []
    if now is not None and now.utcoffset() is None:
        raise ValueError("now: a time-zone aware datetime is needed (e.g. datetime.now(UTC))")
    return _Analysis(events, config, now).run()


def _union(start: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """Which positions lie in any window ``[start[i], i]`` with ``hit[i]``."""
    n = len(start)
    diff = np.zeros(n + 1, dtype=np.int64)
    ends = np.flatnonzero(hit)
    np.add.at(diff, start[ends], 1)
    np.add.at(diff, ends + 1, -1)
    return np.cumsum(diff[:n]) > 0


def _window_starts(t: np.ndarray, window_us: int) -> np.ndarray:
    """For each sorted time, the first position within ``window_us`` before it (inclusive)."""
    return np.searchsorted(t, t - window_us, side="left")


def _duration(seconds: float) -> str:
    s = int(seconds) if float(seconds).is_integer() else seconds
    if isinstance(s, int) and s % 3600 == 0:
        return f"{s // 3600} hour{'s' if s != 3600 else ''}"
    if isinstance(s, int) and s % 60 == 0 and s > 60:
        return f"{s // 60} minutes"
    return f"{s} seconds"


def _device_kind(device_id: str) -> str:
    """``RTU`` for ``RTU-MOM01``; ``device`` when the id does not say."""
    m = re.match(r"[A-Za-z]+", device_id)
    return m[0].upper() if m and m[0].upper() in _DEVICE_KINDS else "device"


def _listing(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    a = ipaddress.ip_address(text)
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


class _Analysis:
    def __init__(self, events: Sequence[OtLogEvent], config: CyberConfig, now: datetime | None) -> None:
        n = len(events)
        t = np.fromiter((e.ts.timestamp() for e in events), dtype=np.float64, count=n)
        t_us = np.rint(t * US).astype(np.int64)
        order = np.argsort(t_us, kind="stable")
        self.ev: list[OtLogEvent] = [events[i] for i in order.tolist()]
        self.t = t_us[order]
        self.config = config
        self.now = now.astimezone(UTC) if now is not None else self.ev[-1].ts
        self.now_us = round(self.now.timestamp() * US)
        ev = self.ev
        self.command = np.fromiter((e.kind == "command" for e in ev), dtype=bool, count=n)
        self.cmd_idx = np.flatnonzero(self.command)
        self.unknown, self.disallowed = self._policy()
        self.findings: list[Finding] = []

    def run(self) -> list[Finding]:
        self.brute_force()
        self.breaker_sequence()
        self.command_rate()
        self.off_hours()
        self.per_event("disallowed_network", self.disallowed)
        self.per_event("unknown_master", self.unknown)
        self.setpoints()
        self.config_without_ticket()
        return sorted(self.findings, key=lambda f: (f.timestamp, f.key))

    # -- shared ---------------------------------------------------------------------------------

    def origin(self, e: OtLogEvent) -> str:
        """Who sent a command: its master station, else its source address."""
        return e.master or e.source or "unidentified"

    def _policy(self) -> tuple[np.ndarray, np.ndarray]:
        """Per event: a command from a master not allowed / from a network not allowed."""
        n = len(self.ev)
        unknown = np.zeros(n, dtype=bool)
        disallowed = np.zeros(n, dtype=bool)
        nets: dict[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {}
        seen: dict[tuple[str, str | None, str | None], tuple[bool, bool]] = {}
        for i in self.cmd_idx.tolist():
            e = self.ev[i]
            key = (e.substation, e.master, e.source)
            flags = seen.get(key)
            if flags is None:
                site = self.config.site(e.substation)
                is_unknown = bool(site.masters) and e.master not in site.masters and e.source not in site.masters
                is_out = False
                if site.networks and e.source is not None:
                    allowed = nets.get(e.substation)
                    if allowed is None:
                        allowed = nets[e.substation] = [ipaddress.ip_network(c) for c in site.networks]
                    address = _address(e.source)
                    is_out = not any(address in net for net in allowed)
                flags = seen[key] = (is_unknown, is_out)
            unknown[i], disallowed[i] = flags
        return unknown, disallowed

    def groups(self, idx: np.ndarray, key: Any) -> dict[Hashable, np.ndarray]:
        """``idx`` (positions in time order) split by ``key(event)``; each group stays in time order."""
        codes: dict[Hashable, int] = {}
        ev = self.ev
        code = np.fromiter((codes.setdefault(key(ev[i]), len(codes)) for i in idx.tolist()),
                           dtype=np.int64, count=len(idx))
        if not len(idx):
            return {}
        order = np.argsort(code, kind="stable")
        bounds = np.flatnonzero(np.diff(code[order])) + 1
        names = list(codes)
        return {names[int(code[part[0]])]: idx[part] for part in np.split(order, bounds)}

    def add(self, *, type: str, severity: str, idx: Sequence[int], key: str, device_id: str, substation: str,
            description: str, recommendation: str, actions: list[str], window_s: float,
            facts: dict[str, Any], metric: str = "", value: float | None = None,
            threshold: float | None = None) -> None:
        """One finding over the events at ``idx`` (positions in time order): they are its evidence."""
        idx = sorted(int(i) for i in idx)
        ev = self.ev
        entries = [entry(ev[i]) for i in idx]
        omitted = 0
        limit = self.config.evidence_limit
        if len(entries) > limit:
            head = limit // 2
            omitted = len(entries) - limit
            entries = entries[:head] + entries[len(entries) - (limit - head):]
        links = chain(entries)
        last = ev[idx[-1]].ts
        self.findings.append(Finding(
            agent=AGENT, type=type, severity=severity, timestamp=last, start=ev[idx[0]].ts,
            device_id=device_id, substation=substation, description=description, metric=metric,
            value=value, threshold=threshold, recommendation=recommendation, key=key,
            facts={**facts, "actions": actions, "active": self.now - last <= timedelta(seconds=window_s),
                   "evidence_count": len(idx), "evidence_omitted": omitted, "evidence": entries,
                   "evidence_chain": links, "evidence_sha256": links[-1]},
        ))

    def devices(self, idx: Sequence[int]) -> list[str]:
        return sorted({self.ev[i].device_id for i in idx})

    def sources(self, idx: Sequence[int]) -> list[str]:
        return sorted({self.ev[i].source for i in idx if self.ev[i].source})

    # -- brute force ----------------------------------------------------------------------------

    def brute_force(self) -> None:
        """N failed logins within the window per (source, target): WARNING; a successful login from
        the same source to the same target after the N-th failure and within the window of the
        last failure: CRITICAL (possible compromise)."""
        c = self.config
        ev, t = self.ev, self.t
        n = len(ev)
        login = [e.kind == "auth" and e.action == "login" for e in ev]
        failed = np.fromiter((x and e.result == "failure" for x, e in zip(login, ev)), dtype=bool, count=n)
        succeeded = np.fromiter((x and e.result == "success" for x, e in zip(login, ev)), dtype=bool, count=n)
        key = lambda e: (e.source or "", e.device_id)  # noqa: E731
        window = round(c.brute_force_window_s * US)
        successes = self.groups(np.flatnonzero(succeeded), key)
        for (source, device), idx in self.groups(np.flatnonzero(failed), key).items():
            if len(idx) < c.brute_force_failures:
                continue
            tg = t[idx]
            start = _window_starts(tg, window)
            count = np.arange(len(idx)) - start + 1
            hit = count >= c.brute_force_failures
            if not hit.any():
                continue
            member = _union(start, hit)
            flagged, ft = idx[member], tg[member]
            first_hit = tg[np.argmax(hit)]
            evidence = flagged.tolist()
            success = None
            s_idx = successes.get((source, device))
            if s_idx is not None:
                st = t[s_idx]
                p = np.searchsorted(ft, st, side="right") - 1
                ok = (st >= first_hit) & (p >= 0) & (st - ft[np.maximum(p, 0)] <= window)
                if ok.any():
                    success = int(s_idx[np.argmax(ok)])
                    evidence.append(success)
            worst = int(count.max())
            e0 = ev[int(flagged[0])]
            kind = _device_kind(device)
            where = f"from IP {source}" if source else "from the local console"
            description = (f"Failed login attempt on {device} {where} ({worst} failures in "
                           f"{_duration(c.brute_force_window_s)}). Potential brute force attack.")
            block = "Block IP address" if source else "Check physical access to the device"
            facts: dict[str, Any] = {"source": source or None, "failures": len(flagged), "max_failures_in_window": worst,
                                     "window_s": c.brute_force_window_s,
                                     "users_tried": sorted({ev[i].user for i in flagged.tolist() if ev[i].user})}
            if success is None:
                severity = "WARNING"
                recommendation = f"{block}, reset {kind} password, review access logs."
                actions = ["block_source", "reset_credentials", "review_access_logs"]
            else:
                s = ev[success]
                user = s.user or "unknown"
                severity = "CRITICAL"
                description += (f" A successful login followed at {s.ts:%Y-%m-%d %H:%M:%S} UTC (user {user}):"
                                " possible compromise.")
                recommendation = (f"Isolate {device}, {block[0].lower() + block[1:]}, reset {kind} password and the "
                                  f"credentials of user {user}, escalate to the SOC, review access logs.")
                actions = ["isolate_device", "block_source", "reset_credentials", "escalate_soc", "review_access_logs"]
                facts |= {"compromised_user": s.user, "success_ts": s.ts.isoformat(), "session_id": s.session_id}
            self.add(type="brute_force", severity=severity, idx=evidence,
                     key=f"cyber:brute_force:{source or 'local'}:{device}", device_id=device,
                     substation=e0.substation, description=description, recommendation=recommendation,
                     actions=actions, window_s=c.brute_force_window_s, facts=facts, metric="failed_logins",
                     value=float(worst), threshold=float(c.brute_force_failures))

    # -- breakers opened in sequence ------------------------------------------------------------

    def breaker_sequence(self) -> None:
        """K breaker_open commands on K distinct breakers (device, point) within the window in one
        substation: CRITICAL; EMERGENCY when any came from an unknown master or a disallowed network."""
        c = self.config
        ev, t = self.ev, self.t
        opens = self.cmd_idx[np.fromiter((ev[i].command == "breaker_open" for i in self.cmd_idx.tolist()),
                                         dtype=bool, count=len(self.cmd_idx))]
        window = round(c.breaker_window_s * US)
        k = c.breaker_opens
        for substation, idx in self.groups(opens, lambda e: e.substation).items():
            if len(idx) < k:
                continue
            tg = t[idx]
            start = _window_starts(tg, window)
            candidate = (np.arange(len(idx)) - start + 1) >= k
            if not candidate.any():
                continue
            # distinct breakers in each candidate window: per breaker, is it opened within the window?
            names: dict[tuple[str, str], int] = {}
            breaker = np.fromiter((names.setdefault((ev[i].device_id, ev[i].point or ""), len(names))
                                   for i in idx.tolist()), dtype=np.int64, count=len(idx))
            q = tg[candidate]
            distinct = np.zeros(len(q), dtype=np.int64)
            for b in range(len(names)):
                tb = tg[breaker == b]
                j = np.searchsorted(tb, q, side="right") - 1
                distinct += (j >= 0) & (tb[np.maximum(j, 0)] >= q - window)
            hit = np.zeros(len(idx), dtype=bool)
            hit[np.flatnonzero(candidate)] = distinct >= k
            if not hit.any():
                continue
            flagged = idx[_union(start, hit)].tolist()
            bad_master = [self.origin(ev[i]) for i in flagged if self.unknown[i]]
            bad_net = [ev[i].source or "" for i in flagged if self.disallowed[i]]
            breakers = sorted({f"{ev[i].device_id}/{ev[i].point}" for i in flagged})
            masters = sorted({self.origin(ev[i]) for i in flagged})
            worst = int(distinct.max())
            description = (f"{len(breakers)} breakers opened in quick succession in {substation} "
                           f"({worst} distinct breakers within {_duration(c.breaker_window_s)}): "
                           f"{_listing(breakers)}; commands from {_listing(masters)}.")
            if bad_master or bad_net:
                severity = "EMERGENCY"
                why = []
                if bad_master:
                    why.append(f"unknown master {_listing(sorted(set(bad_master)))}")
                if bad_net:
                    why.append(f"disallowed network {_listing(sorted(set(bad_net)))}")
                description += f" Sent from {' and from '.join(why)}: likely attack on the grid."
                recommendation = (f"Isolate the devices of {substation} from {_listing(sorted(set(bad_master + bad_net)))} "
                                  "now, block source addresses, escalate to the SOC, restore breakers under local "
                                  "control, review access logs.")
                actions = ["isolate_device", "block_source", "escalate_soc", "review_access_logs"]
            else:
                severity = "CRITICAL"
                recommendation = ("Confirm the operations with the control room; if not planned, isolate the "
                                  "master station, escalate to the SOC, review access logs.")
                actions = ["isolate_device", "escalate_soc", "review_access_logs"]
            devices = self.devices(flagged)
            self.add(type="breaker_sequence", severity=severity, idx=flagged, key=f"cyber:breaker_sequence:{substation}",
                     device_id=devices[0] if len(devices) == 1 else substation, substation=substation,
                     description=description, recommendation=recommendation, actions=actions,
                     window_s=c.breaker_window_s, metric="breakers_opened", value=float(worst),
                     threshold=float(k),
                     facts={"breakers": breakers, "masters": masters, "opens": len(flagged),
                            "max_distinct_in_window": worst, "window_s": c.breaker_window_s,
                            "unknown_masters": sorted(set(bad_master)), "disallowed_sources": sorted(set(bad_net))})

    # -- command rate ---------------------------------------------------------------------------

    def command_rate(self) -> None:
        """A master's control commands within the rate window reach ``rate_factor`` times its usual
        rate (and at least ``rate_min_commands``): WARNING; CRITICAL from an unknown master or a
        disallowed network."""
        c = self.config
        ev, t = self.ev, self.t
        window = round(c.rate_window_s * US)
        span_h = max((self.now_us - int(t[0])) / (3600 * US), 1.0)
        for origin, idx in self.groups(self.cmd_idx, self.origin).items():
            if len(idx) < c.rate_min_commands:
                continue
            usual = c.usual_rates_per_h.get(origin)
            measured = usual is None
            if usual is None:
                usual = len(idx) / span_h
            limit = max(float(c.rate_min_commands), c.rate_factor * usual * c.rate_window_s / 3600)
            tg = t[idx]
            start = _window_starts(tg, window)
            count = np.arange(len(idx)) - start + 1
            hit = count >= limit
            if not hit.any():
                continue
            flagged = idx[_union(start, hit)].tolist()
            worst = int(count.max())
            bad = any(self.unknown[i] or self.disallowed[i] for i in flagged)
            substations = sorted({ev[i].substation for i in flagged})
            devices = self.devices(flagged)
            description = (f"{worst} control commands within {_duration(c.rate_window_s)} from {origin}, "
                           f"against a usual {usual:.3g} per hour ({'measured' if measured else 'configured'}); "
                           f"to {_listing(devices)}.")
            if bad:
                description += " The sender is not allowed (unknown master or disallowed network)."
            self.add(type="command_rate", severity="CRITICAL" if bad else "WARNING", idx=flagged,
                     key=f"cyber:command_rate:{origin}", device_id=devices[0] if len(devices) == 1 else origin,
                     substation=substations[0] if len(substations) == 1 else "",
                     description=description,
                     recommendation=("Verify the commands with the operator of the master station; if not "
                                     "expected, isolate the master station, escalate to the SOC, review access logs."),
                     actions=["isolate_device", "escalate_soc", "review_access_logs"], window_s=c.rate_window_s,
                     metric="commands_per_window", value=float(worst), threshold=limit,
                     facts={"origin": origin, "usual_per_h": usual, "usual_measured": measured,
                            "max_in_window": worst, "window_s": c.rate_window_s, "commands": len(flagged),
                            "devices": devices, "substations": substations})

    # -- operating hours ------------------------------------------------------------------------

    def off_hours(self) -> None:
        """Control commands outside the substation's operating hours (local time): WARNING."""
        ev, t = self.ev, self.t
        outside = np.zeros(len(ev), dtype=bool)
        for substation, idx in self.groups(self.cmd_idx, lambda e: e.substation).items():
            site = self.config.site(substation)
            if site.always_open():
                continue
            outside[idx] = ~_in_hours(t[idx], site)
        for (substation, origin), idx in self.groups(np.flatnonzero(outside), lambda e: (e.substation, self.origin(e))).items():
            site = self.config.site(substation)
            devices = self.devices(idx)
            first = ev[int(idx[0])].ts.astimezone(ZoneInfo(site.timezone))
            self.add(type="off_hours_command", severity="WARNING", idx=idx,
                     key=f"cyber:off_hours_command:{substation}:{origin}",
                     device_id=devices[0] if len(devices) == 1 else substation, substation=substation,
                     description=(f"{len(idx)} control command{'s' if len(idx) > 1 else ''} to {_listing(devices)} "
                                  f"from {origin} outside operating hours ({site.hours} {site.timezone}, "
                                  f"{_days(site.days)}), first at {first:%a %H:%M} local time."),
                     recommendation=("Confirm with the control room that the work was authorised; if not, block "
                                     "the source address, escalate to the SOC, review access logs."),
                     actions=["block_source", "escalate_soc", "review_access_logs"], window_s=3600,
                     metric="commands", value=float(len(idx)),
                     facts={"origin": origin, "hours": site.hours, "timezone": site.timezone,
                            "days": list(site.days), "commands": len(idx)})

    # -- unknown masters, disallowed networks ---------------------------------------------------

    def per_event(self, type: str, mask: np.ndarray) -> None:
        """Commands from a master not in the allow-list, or from a network not allowed: CRITICAL."""
        ev = self.ev
        who = self.origin if type == "unknown_master" else (lambda e: e.source or "")
        for (substation, origin), idx in self.groups(np.flatnonzero(mask), lambda e: (e.substation, who(e))).items():
            site = self.config.site(substation)
            devices = self.devices(idx)
            sources = self.sources(idx)
            n = len(idx)
            what = f"{n} control command{'s' if n > 1 else ''} to {_listing(devices)} in {substation}"
            if type == "unknown_master":
                description = f"{what} from master {origin}, which is not in the allow-list ({_listing(list(site.masters))})."
                facts = {"master": origin, "allowed_masters": list(site.masters)}
            else:
                description = (f"{what} from {_listing(sources)}, outside the allowed networks "
                               f"({_listing(list(site.networks))}).")
                facts = {"source": origin, "allowed_networks": list(site.networks)}
            block = f"Block source address {_listing(sources)}, isolate" if sources else "Isolate"
            self.add(type=type, severity="CRITICAL", idx=idx, key=f"cyber:{type}:{substation}:{origin}",
                     device_id=devices[0] if len(devices) == 1 else substation, substation=substation,
                     description=description,
                     recommendation=f"{block} {_listing(devices)} from it, escalate to the SOC, review access logs.",
                     actions=["block_source", "isolate_device", "escalate_soc", "review_access_logs"],
                     window_s=3600, metric="commands", value=float(n),
                     facts={**facts, "sources": sources, "devices": devices, "commands": n,
                            "command_kinds": sorted({ev[i].command or "" for i in idx.tolist()})})

    # -- setpoints ------------------------------------------------------------------------------

    def setpoints(self) -> None:
        """setpoint_write outside the point's allowed range: WARNING when the device refused every
        one, CRITICAL when it accepted one."""
        if not self.config.setpoints:
            return
        limits: dict[tuple[str, str], SetpointLimit] = {(s.device_id, s.point): s for s in self.config.setpoints}
        ev = self.ev
        out: list[int] = []
        for i in self.cmd_idx.tolist():
            e = ev[i]
            if e.command != "setpoint_write" or e.value is None:
                continue
            lim = limits.get((e.device_id, e.point or "")) or limits.get(("", e.point or ""))
            if lim is not None and ((lim.min is not None and e.value < lim.min) or (lim.max is not None and e.value > lim.max)):
                out.append(i)
        key = lambda e: (e.substation, e.device_id, e.point or "")  # noqa: E731
        for (substation, device, point), idx in self.groups(np.array(out, dtype=np.int64), key).items():
            lim = limits.get((device, point)) or limits[("", point)]
            values = [ev[i].value for i in idx.tolist()]
            excess = [(lim.min - v) if lim.min is not None and v < lim.min else (v - lim.max) for v in values]  # type: ignore[operator]
            worst = values[int(np.argmax(excess))]
            assert worst is not None
            bound = lim.min if lim.min is not None and worst < lim.min else lim.max
            accepted = any(ev[i].result == "success" for i in idx.tolist())
            unit = lim.unit or ev[int(idx[0])].unit or ""
            rng = f"{'-inf' if lim.min is None else f'{lim.min:g}'}..{'inf' if lim.max is None else f'{lim.max:g}'}"
            description = (f"Setpoint {worst:g}{' ' + unit if unit else ''} written to {device} {point}, outside "
                           f"its allowed range {rng}{' ' + unit if unit else ''} ({len(idx)} out-of-spec "
                           f"write{'s' if len(idx) > 1 else ''}; {'accepted by the device' if accepted else 'refused by the device'}).")
            origins = sorted({self.origin(ev[i]) for i in idx.tolist()})
            recommendation = (f"Restore the setpoint of {device} {point} within range, verify with {_listing(origins)} "
                              "who wrote it, review access logs" + (", escalate to the SOC." if accepted else "."))
            self.add(type="setpoint_out_of_spec", severity="CRITICAL" if accepted else "WARNING", idx=idx,
                     key=f"cyber:setpoint_out_of_spec:{substation}:{device}:{point}", device_id=device,
                     substation=substation, description=description, recommendation=recommendation,
                     actions=["review_access_logs"] + (["escalate_soc"] if accepted else []), window_s=3600,
                     metric=point, value=worst, threshold=bound,
                     facts={"point": point, "min": lim.min, "max": lim.max, "unit": unit, "values": values,
                            "accepted": accepted, "origins": origins})

    # -- configuration changes ------------------------------------------------------------------

    def config_without_ticket(self) -> None:
        """Configuration changes whose detail names no change ticket: WARNING when one was applied,
        INFO when all failed."""
        ticket = re.compile(self.config.ticket_pattern, re.IGNORECASE)
        ev = self.ev
        idx = np.array([i for i, e in enumerate(ev) if e.kind == "config_change" and not ticket.search(e.detail or "")],
                       dtype=np.int64)
        for (substation, device), group in self.groups(idx, lambda e: (e.substation, e.device_id)).items():
            g = group.tolist()
            applied = any(ev[i].result == "success" for i in g)
            params = sorted({ev[i].parameter or "" for i in g})
            users = sorted({ev[i].user for i in g if ev[i].user})
            n = len(g)
            self.add(type="config_without_ticket", severity="WARNING" if applied else "INFO", idx=g,
                     key=f"cyber:config_without_ticket:{substation}:{device}", device_id=device, substation=substation,
                     description=(f"{n} configuration change{'s' if n > 1 else ''} on {device} without a change "
                                  f"ticket ({_listing(params)}; by {_listing(users) or 'unknown user'}"
                                  f"{'' if applied else '; all failed'})."),
                     recommendation=("Check the change against the change-management records; if unauthorised, "
                                     "restore the previous configuration, reset the credentials used, review access logs."),
                     actions=["review_access_logs"] + (["reset_credentials"] if applied else []), window_s=3600,
                     metric="config_changes", value=float(n),
                     facts={"parameters": params, "users": users, "applied": applied, "changes": n})


def _in_hours(t_us: np.ndarray, site: SitePolicy) -> np.ndarray:
    """Whether each UTC time (µs) falls within the site's operating hours, in its local time.

    The zone's offset is looked up once per distinct minute (offsets change on whole minutes), so
    daylight-saving changes are exact.
    """
    zone = ZoneInfo(site.timezone)
    seconds = t_us // US
    minute, inverse = np.unique(seconds // 60, return_inverse=True)
    offsets = np.array([datetime.fromtimestamp(int(m) * 60, zone).utcoffset().total_seconds()  # type: ignore[union-attr]
                        for m in minute.tolist()], dtype=np.int64)
    local = seconds + offsets[inverse.reshape(-1)]
    weekday = (local // 86400 + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    minute_of_day = (local % 86400) // 60
    lo, hi = site.window()
    in_window = ((minute_of_day >= lo) & (minute_of_day < hi)) if lo < hi else ((minute_of_day >= lo) | (minute_of_day < hi))
    day_ok = np.isin(weekday, [DAYS.index(d) for d in site.days])
    return in_window & day_ok


def _days(days: Sequence[str]) -> str:
    if set(days) == set(DAYS):
        return "every day"
    ordered = [d for d in DAYS if d in days]
    return ", ".join(d.capitalize() for d in ordered)


def worst_severity(findings: Sequence[Finding]) -> str | None:
    """The highest severity among ``findings`` (None for none)."""
    return max((f.severity for f in findings), key=severity_rank, default=None)
