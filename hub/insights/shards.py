"""The agents' work split by substation across processes: ``sentinel hub agents --shard I/N``.

A substation belongs to shard ``md5(substation id)[:4] mod N`` (``hub.storage.base.shard_of``): the
same in every process, on every machine and Python version (not Python's salted ``hash()``), and
in the databases, which filter a shard's history reads in the query. A process of shard I runs each
per-substation agent for the substations of shard I only, so N processes split the fleet and
each incident, forecast and maintenance result comes from exactly one of them.

What is per substation, and what is not:

- ``grid_monitor``, ``demand_forecaster`` and ``maintenance_predictor`` judge a substation, a
  feeder or a transformer from its own readings: every shard runs them over its own substations.
  The grid monitor's load-transfer advice may name an adjacent feeder in another shard's
  substation; the shard reads that substation's window too, for the feeder's present load, and
  reports nothing of it.
- ``anomaly_detector``: every shard finds its own substations' baseline deviations and score
  episodes (the costly part: an hour of every point); shards past 0 store their episodes, and
  shard 0 correlates its own with every other shard's latest, so a grid-wide event seen in several
  shards is one incident, raised by shard 0 (a shard's episodes reach it within a cycle or two).
- ``cyber_sentinel`` counts a master's commands across substations: it stays whole and runs in
  shard 0 only, over every substation.

Each (agents, shard) pair has its own leader lock (``agents.shard-I-of-N``): two processes of the
same shard run each cycle once (one stands by), processes of different shards run side by side.
Every agents process on one database must use the same N; ``GET /agents`` names the counts when
they differ (``hub.insights.elsewhere``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from hub.storage.base import ShardSpec, shard_of

__all__ = ["SHARDED_AGENTS", "Shard", "shard_of", "splitting"]

# the agents every shard runs, over its own substations (the anomaly detector's episodes are then
# correlated across shards by shard 0); the others run whole, in shard 0
SHARDED_AGENTS = frozenset({"grid_monitor", "anomaly_detector", "demand_forecaster", "maintenance_predictor"})
_FORM = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def splitting(shard: Shard | None) -> Shard | None:
    """``shard`` if it splits the fleet; None for no shard and for 1/1 (every substation is this process's)."""
    return shard if shard is not None and shard.split else None


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"a shard count of 1 or more, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count}: the shard must be 0 to {self.count - 1}")

    @classmethod
    def parse(cls, text: str, what: str = "--shard") -> Shard:
        """``I/N`` (shard I of N, 0 <= I < N); ValueError naming ``what`` and what is wrong."""
        m = _FORM.fullmatch(text)
        if m is None:
            raise ValueError(f"{what}: I/N (this process's shard I of N shards, 0 <= I < N, e.g. 0/2), "
                             f"not {text!r}")
        index, count = int(m.group(1)), int(m.group(2))
        if count < 1:
            raise ValueError(f"{what}: {text.strip()}: the number of shards N must be 1 or more")
        if index >= count:
            raise ValueError(f"{what}: {text.strip()}: the shard I must be 0 to {count - 1} "
                             f"when there are {count} shards")
        return cls(index, count)

    @property
    def split(self) -> bool:
        """Whether the fleet is split at all (1/1 is the whole fleet, as without a shard)."""
        return self.count > 1

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def lock_name(self) -> str:
        """The leader lock of this shard's cycles (unsplit: the agents' one lock, as before)."""
        return f"agents.shard-{self.index}-of-{self.count}" if self.split else "agents"

    @property
    def spec(self) -> ShardSpec | None:
        """What the storage's reads take to keep to this shard's substations; None: all of them."""
        return (self.index, self.count) if self.split else None

    def holds(self, substation: str) -> bool:
        return not self.split or shard_of(substation, self.count) == self.index

    def select(self, substations: Iterable[str]) -> list[str]:
        """Those of ``substations`` in this shard, sorted, once each."""
        return sorted({s for s in substations if self.holds(s)})

    def runs(self, agent: str) -> bool:
        """Whether this shard runs ``agent``: a per-substation one, or any in shard 0."""
        return self.index == 0 or agent in SHARDED_AGENTS
