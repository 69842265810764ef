"""What the cyber sentinel checks against: thresholds, per-substation policy, setpoint limits.

Frozen msgspec structs that forbid unknown keys, so a TOML table converts straight into them
(``msgspec.convert(tomllib.loads(text)["cyber"], CyberConfig)``) and a bad value is an error naming
its key path, e.g. ``sites.MOMBASA.networks[1]: not a network: '10.0.0.1/8' ...``. Every check is
made when the struct is built, before any log is read.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

__all__ = ["DAYS", "CyberConfig", "SetpointLimit", "SitePolicy"]

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[str, ...] = Day.__args__  # type: ignore[attr-defined]

Positive = Annotated[float, msgspec.Meta(gt=0)]
_HOURS = re.compile(r"^(?P<h1>[01]\d|2[0-3]):(?P<m1>[0-5]\d)-(?P<h2>[01]\d|2[0-4]):(?P<m2>[0-5]\d)$")


class SitePolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The security policy of one substation. An empty ``networks`` or ``masters`` is not checked.

    ``hours`` are local operating hours, ``"07:00-19:00"``, in ``timezone`` (IANA name), on
    ``days``; a start after the end wraps past midnight (``"22:00-06:00"``). Control commands
    outside them are flagged.
    """

    timezone: str = "UTC"
    hours: str = "00:00-24:00"
    days: tuple[Day, ...] = DAYS  # type: ignore[assignment]
    networks: tuple[str, ...] = ()  # CIDRs commands may come from, e.g. "10.20.0.0/16"
    masters: tuple[str, ...] = ()  # master station ids (or source addresses) allowed to send commands

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: unknown time zone {self.timezone!r} (an IANA name, e.g. Africa/Nairobi)") from None
        m = _HOURS.match(self.hours)
        if m is None or (m["h2"] == "24" and m["m2"] != "00"):
            raise ValueError(f"hours: expected 'HH:MM-HH:MM' (e.g. '07:00-19:00'), got {self.hours!r}")
        if self.window()[0] == self.window()[1]:
            raise ValueError(f"hours: an empty window {self.hours!r}; use '00:00-24:00' for all day")
        if not self.days:
            raise ValueError("days: at least one day")
        for i, cidr in enumerate(self.networks):
            try:
                ipaddress.ip_network(cidr)
            except ValueError as exc:
                raise ValueError(f"networks[{i}]: not a network: {cidr!r} ({exc})") from None

    def window(self) -> tuple[int, int]:
        """The operating hours as (start, end) minutes of the local day; end may be 1440."""
        m = _HOURS.match(self.hours)
        assert m is not None
        return int(m["h1"]) * 60 + int(m["m1"]), int(m["h2"]) * 60 + int(m["m2"])

    def always_open(self) -> bool:
        return self.window() == (0, 1440) and set(self.days) == set(DAYS)


class SetpointLimit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The allowed range of setpoints written to ``point`` (of ``device_id``; "" for any device)."""

    point: Annotated[str, msgspec.Meta(min_length=1)]
    device_id: str = ""
    min: float | None = None
    max: float | None = None
    unit: str = ""

    def __post_init__(self) -> None:
        if self.min is None and self.max is None:
            raise ValueError("min: give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min: {self.min} is above max {self.max}")


class CyberConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Thresholds of the detections; windows in seconds and inclusive (4 failures exactly 600 s
    apart are "within 10 minutes").

    ``usual_rates_per_h`` gives a master's usual command rate (commands per hour); a master not in
    it is measured on the logs handed to :func:`analyse` (its commands over the time they span,
    at least an hour). ``sites`` maps substations to their policy, ``default_site`` is the policy of
    the others (all checks off by default). A config change is ticketed when its ``detail`` matches
    ``ticket_pattern`` (case-insensitive).
    """

    brute_force_failures: Annotated[int, msgspec.Meta(ge=2)] = 4
    brute_force_window_s: Positive = 600.0
    breaker_opens: Annotated[int, msgspec.Meta(ge=2)] = 3
    breaker_window_s: Positive = 60.0
    rate_window_s: Positive = 60.0
    rate_factor: Annotated[float, msgspec.Meta(ge=1)] = 10.0
    rate_min_commands: Annotated[int, msgspec.Meta(ge=2)] = 20
    usual_rates_per_h: dict[str, Positive] = {}
    sites: dict[str, SitePolicy] = {}
    default_site: SitePolicy = SitePolicy()
    setpoints: tuple[SetpointLimit, ...] = ()
    ticket_pattern: str = r"\b(?:CHG|CR|RFC|TICKET|WO)[-#: ]?\d+\b"
    evidence_limit: Annotated[int, msgspec.Meta(ge=4)] = 50  # entries kept per finding: head and tail

    def __post_init__(self) -> None:
        try:
            re.compile(self.ticket_pattern)
        except re.error as exc:
            raise ValueError(f"ticket_pattern: not a regular expression: {exc}") from None
        seen: set[tuple[str, str]] = set()
        for i, limit in enumerate(self.setpoints):
            key = (limit.device_id, limit.point)
            if key in seen:
                raise ValueError(f"setpoints[{i}]: a second limit for point {limit.point!r}"
                                 + (f" of {limit.device_id}" if limit.device_id else ""))
            seen.add(key)

    def site(self, substation: str) -> SitePolicy:
        return self.sites.get(substation, self.default_site)
