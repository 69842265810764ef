"""The hub's site facts: what the agents need to know that no reading tells them.

A TOML file named by ``SENTINEL_SITE_CONFIG`` (sample: ``hub/site.sample.toml``), loaded by the
one config loader (:func:`protocols.config.load_toml`): unknown keys and bad values are errors
naming the file and the key path.

- ``[feeders.<device>]``: rating (A or MW) and the adjacent feeders a load can be transferred to
  (the grid monitor's recommendations, the overload check);
- ``[demand]``: capacity per feeder or substation in MW, holidays, the local UTC offset (the demand
  forecaster);
- ``[cyber]``: the cyber sentinel's thresholds and, per substation, operating hours, allowed
  networks and master stations, and setpoint limits (:class:`agents.cyber_sentinel.CyberConfig`).
"""

from __future__ import annotations

import os
from datetime import date
from typing import Annotated, Literal

import msgspec

from agents.cyber_sentinel import CyberConfig
from protocols.config import load_toml

__all__ = ["DemandSite", "FeederSite", "SiteConfig", "load_site_config"]


class FeederSite(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rating: Annotated[float, msgspec.Meta(gt=0)]
    unit: Literal["A", "MW"] = "A"
    adjacent: tuple[str, ...] = ()  # feeders its load can be transferred to


class DemandSite(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    capacity_mw: dict[str, Annotated[float, msgspec.Meta(gt=0)]] = {}  # feeder or substation -> MW
    holidays: tuple[date, ...] = ()
    utc_offset_h: Annotated[float, msgspec.Meta(ge=-12, le=14)] = 0.0


class SiteConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    feeders: dict[str, FeederSite] = {}
    demand: DemandSite = DemandSite()
    cyber: CyberConfig = CyberConfig()

    def __post_init__(self) -> None:
        for name, feeder in self.feeders.items():
            unknown = [a for a in feeder.adjacent if a not in self.feeders]
            if unknown:
                raise ValueError(f"feeders.{name}.adjacent: {', '.join(unknown)} has no [feeders.<name>] of its own "
                                 "(its rating is needed to know its headroom)")

    def adjacency(self) -> dict[str, list[str]]:
        return {name: list(f.adjacent) for name, f in self.feeders.items() if f.adjacent}


def load_site_config(path: str | os.PathLike[str] | None = None) -> SiteConfig:
    """The site config at ``path`` (default ``$SENTINEL_SITE_CONFIG``); the defaults without one."""
    path = path or os.environ.get("SENTINEL_SITE_CONFIG", "").strip() or None
    return SiteConfig() if path is None else load_toml(path, SiteConfig)
