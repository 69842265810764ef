"""The narrator contract: findings in, a :class:`Narrative` out. Never raises for an LLM failure."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from agents.findings import Finding

__all__ = ["SOURCES", "Narrative", "Narrator", "Source", "log"]

Source = Literal["template", "openai", "crewai-watsonx", "crewai-openai"]
SOURCES: tuple[str, ...] = ("template", "openai", "crewai-watsonx", "crewai-openai")

log = logging.getLogger("agents.narration")


class Narrative(msgspec.Struct, frozen=True, kw_only=True):
    """The natural-language explanation and root-cause narrative of a set of findings.

    ``source`` says who wrote ``text``: the template, or the LLM path that answered. When an LLM
    was asked but failed, ``source`` is ``"template"`` and ``fallback_reason`` says what went wrong
    (it is empty when the LLM answered, or when no LLM was asked). ``model`` is the model that
    wrote the text ("" for the template)."""

    text: str
    source: Source
    model: str = ""
    fallback_reason: str = ""
    elapsed_ms: float = 0.0


@runtime_checkable
class Narrator(Protocol):
    """Writes the explanation of findings. Synchronous (the hub calls it in a worker thread); an
    LLM-backed narrator returns the template narrative, with ``fallback_reason``, when the LLM fails."""

    def narrate(self, findings: Sequence[Finding], context: dict[str, Any] | None = None) -> Narrative: ...
