"""Fault injection: a simulated substation, an edge and a hub on PostgreSQL as real processes,
faults injected between and into them, and every reading accounted for from the edge's buffer
to the hub (``sentinel sim faults``; the short form is tests/faults/). See docs/reliability.md."""

from sentinel_cli.faults.injectors import FAULTS, inject, run_schedule, small_filesystem
from sentinel_cli.faults.proxy import ChaosProxy
from sentinel_cli.faults.rig import FaultRecord, Ledger, Rig

__all__ = ["FAULTS", "ChaosProxy", "FaultRecord", "Ledger", "Rig", "inject", "run_schedule", "small_filesystem"]
