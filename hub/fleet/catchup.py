"""Whether an edge is catching up after an outage, as the hub sees it (``GET /fleet``'s ``catch_up``,
the dashboard's edge list, ``sentinel_hub_edge_backlog_readings``).

After an outage an edge sends its newest readings first, beside the backlog's oldest (``protocols.wire``,
"Live first"). The hub then holds, per edge, its mark (every reading through it is held) and a live
range ``live_lo .. live_hi`` past it. Between the two lies the backlog still to come: sequence numbers
``mark + 1 .. live_lo - 1``, at most that many readings (some may turn out dropped at the edge: the
edge then declares them lost). When the mark reaches the range, the hub holds no range and the edge
is *in step*: one stream again.

The time of the oldest reading still missing is not the hub's to know (it has not got it); the edge
reports its oldest unsent reading with a sync now and then (``EdgeHealth.oldest_pending``, made
before that batch was sent). So the oldest missing reading is that one or a later one: the backlog
sent since moved it on. It is left out (None) when the edge's latest report shows nothing pending:
that report came before the outage.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from hub.storage.base import EdgeState
from protocols.wire import EdgeHealth

__all__ = ["CATCHING_UP", "IN_STEP", "EdgeCatchUp", "catch_up", "live_backlog"]

IN_STEP = "in_step"
CATCHING_UP = "catching_up"


class EdgeCatchUp(msgspec.Struct, frozen=True, kw_only=True):
    """One edge's catch-up after an outage, as the hub holds it."""

    state: Literal["in_step", "catching_up"]  # catching_up: the hub holds a live range past its mark
    readings_acked_through: int  # the hub's mark: every reading of the edge through it is held
    live_lo: int | None = None  # the live range held past the mark (None: in step)
    live_hi: int | None = None
    backlog: int = 0  # sequence numbers between the mark and live_lo still to come (readings at most)
    oldest_missing: datetime | None = None  # the oldest reading still missing is this one or a later one
    reported_at: datetime | None = None  # when the edge reported oldest_missing


def live_backlog(edge: EdgeState) -> int:
    """Sequence numbers between the hub's mark and the edge's live range still to come (0: in step)."""
    return max(0, edge.live_lo - 1 - edge.readings_acked_through) if edge.live_lo else 0


def catch_up(edge: EdgeState, report: tuple[datetime, EdgeHealth] | None = None) -> EdgeCatchUp:
    """The edge's catch-up from its sync state and its latest health report (received at, report)."""
    if not edge.live_lo:
        return EdgeCatchUp(state=IN_STEP, readings_acked_through=edge.readings_acked_through)
    oldest = reported = None
    if report is not None and report[1].readings_pending and report[1].oldest_pending is not None:
        reported, oldest = report[0], report[1].oldest_pending
    return EdgeCatchUp(state=CATCHING_UP, readings_acked_through=edge.readings_acked_through, live_lo=edge.live_lo,
                       live_hi=edge.live_hi, backlog=live_backlog(edge), oldest_missing=oldest, reported_at=reported)
