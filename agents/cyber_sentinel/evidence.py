"""The chain of evidence behind a finding: the log entries, in order, under a sha256 hash chain.

Each entry is the OT log event as JSON types (its fields as logged; ``ts`` in UTC). The chain
starts from 64 zeros; link ``i`` is ``sha256(link[i-1] + canonical JSON of entry i)`` in hex,
where the canonical JSON has sorted keys and no spaces. The last link is ``evidence_sha256``:
altering, dropping, adding or reordering any entry changes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from protocols.otlog import OtLogEvent

__all__ = ["GENESIS", "chain", "entry", "verify"]

GENESIS = "0" * 64
_ENCODE = msgspec.json.Encoder(order="sorted").encode


def entry(event: OtLogEvent) -> dict[str, Any]:
    """One log entry as evidence: its set fields, JSON types only."""
    return msgspec.to_builtins(event)


def chain(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """The hash chain over ``entries``: one hex link per entry (the last is the evidence hash)."""
    links = []
    link = GENESIS
    for e in entries:
        link = hashlib.sha256(link.encode() + _ENCODE(e)).hexdigest()
        links.append(link)
    return links


def verify(facts: Mapping[str, Any]) -> bool:
    """Whether a finding's ``facts["evidence"]`` still hash to its ``facts["evidence_sha256"]``."""
    links = chain(facts.get("evidence", []))
    return bool(links) and links[-1] == facts.get("evidence_sha256")
