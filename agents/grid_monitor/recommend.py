"""Recommendations: a load transfer to the adjacent feeder with the most headroom, or template text.

For a voltage sag, an overloaded feeder or a feeder with unbalanced phase currents, the remedy an
operator reaches for first is to move load to a neighbouring feeder through a normally-open tie.
:func:`best_transfer` picks the adjacent feeder with the most headroom (rating minus present load,
in A or MW as the ratings are given); everything else gets clear template text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec

from agents.grid_monitor.schema import FeederRating

__all__ = ["TEMPLATES", "TRANSFER_TYPES", "Headroom", "best_transfer", "headrooms", "neighbours", "recommendation",
           "transfer_text"]

# Finding types for which a load transfer is the first recommendation.
TRANSFER_TYPES = frozenset({"voltage_sag", "current_unbalance", "feeder_overload"})

TEMPLATES = {
    "voltage_sag": ("Check {device} for a fault or a large motor start at the time of the sag; review protection "
                    "and recloser operations and the ride-through of sensitive loads."),
    "sustained_undervoltage": ("Sustained undervoltage: check the on-load tap changer at {substation} (position, AVR "
                               "set-point, whether it is at its end stop) and raise the voltage; check for overload "
                               "upstream."),
    "voltage_swell": ("Check capacitor-bank switching and the tap-changer position at {substation}; a swell on the "
                      "healthy phases can follow a single-phase-to-earth fault."),
    "sustained_overvoltage": ("Sustained overvoltage: check the on-load tap changer at {substation} (position, AVR "
                              "set-point) and switch out capacitor banks."),
    "voltage_interruption": ("Supply lost on {device}: check breaker and recloser status and protection operations; "
                             "dispatch a crew if supply is not restored."),
    "under_frequency": ("System frequency low: inform the system operator and check that under-frequency load "
                        "shedding is armed."),
    "over_frequency": "System frequency high: inform the system operator; check generation dispatch.",
    "voltage_unbalance": ("Check for an open phase, a blown fuse or uneven single-phase loading upstream of {device}; "
                          "check capacitor banks phase by phase."),
    "current_unbalance": ("Rebalance single-phase loads across the phases of {device}; check for an open conductor "
                          "or a blown fuse."),
    "feeder_overload": ("Reduce the load on {device}: transfer load to an adjacent feeder or shed non-critical load; "
                        "check conductor and transformer temperatures."),
    "low_power_factor": ("Check the capacitor banks and reactive compensation on {device} (switched in, fuses "
                         "healthy); review large inductive loads."),
    "high_thd_voltage": ("Identify harmonic sources on {device} (drives, rectifiers, inverters); check harmonic "
                         "filters and capacitor banks for resonance; consider transformer derating."),
}


class Headroom(msgspec.Struct, frozen=True, kw_only=True):
    """A feeder's spare capacity: ``rating - load``, in ``unit`` (A per phase, or MW)."""

    device_id: str
    unit: str
    rating: float
    load: float
    headroom: float


def neighbours(adjacency: Mapping[str, Sequence[str]]) -> dict[str, set[str]]:
    """Adjacency read as undirected: a tie between two feeders works both ways."""
    out: dict[str, set[str]] = {}
    for a, bs in adjacency.items():
        for b in bs:
            if a != b:
                out.setdefault(a, set()).add(b)
                out.setdefault(b, set()).add(a)
    return out


def headrooms(feeders: Iterable[FeederRating], measured_load: Mapping[str, float]) -> dict[str, Headroom]:
    """Headroom per feeder: its given load, else ``measured_load[device_id]``; unknown load: left out."""
    out = {}
    for f in feeders:
        load = f.load if f.load is not None else measured_load.get(f.device_id)
        if load is None:
            continue
        out[f.device_id] = Headroom(device_id=f.device_id, unit=f.unit, rating=f.rating, load=float(load),
                                    headroom=f.rating - float(load))
    return out


def best_transfer(device_id: str, rooms: Mapping[str, Headroom], adjacent: Mapping[str, set[str]],
                  unit: str | None = None) -> tuple[Headroom | None, list[Headroom]]:
    """(the adjacent feeder with the most headroom, if it has any; all candidates, best first).

    Headrooms in A and in MW do not compare: candidates in ``unit`` (the source feeder's rating
    unit, if known) come first; ties go to the feeder id that sorts first.
    """
    candidates = [rooms[d] for d in adjacent.get(device_id, ()) if d in rooms]
    candidates.sort(key=lambda h: (unit is not None and h.unit != unit, -h.headroom, h.device_id))
    best = candidates[0] if candidates and candidates[0].headroom > 0 else None
    return best, candidates


def transfer_text(target: Headroom) -> str:
    u = target.unit
    return (f"Recommend load transfer to adjacent feeder {target.device_id} (headroom {target.headroom:.4g} {u}: "
            f"load {target.load:.4g} {u} of {target.rating:.4g} {u} rating).")


def recommendation(kind: str, device_id: str, substation: str, transfer: Headroom | None = None) -> str:
    """The recommendation for a finding of type (or template name) ``kind``.

    A load transfer leads for the :data:`TRANSFER_TYPES` when ``transfer`` names a feeder with
    headroom; a sustained under/overvoltage keeps its tap-changer text first.
    """
    template = TEMPLATES.get(kind, "Investigate {device} at {substation}.").format(device=device_id,
                                                                                  substation=substation)
    if transfer is None:
        return template
    if kind.startswith("sustained_"):
        return f"{template} {transfer_text(transfer)}"
    return transfer_text(transfer)
