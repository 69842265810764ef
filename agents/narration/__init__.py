"""Optional LLM narration of findings: the explanation and root-cause narrative an operator reads.

Every finding, figure and recommendation is computed without an LLM (the five agents); a narrator
only writes the text around them. Three narrators share one protocol, :class:`Narrator`
(``narrate(findings, context=None) -> Narrative``, synchronous; the hub calls it in a worker thread):

- :class:`TemplateNarrator`: the default, and every LLM narrator's fallback. The findings'
  descriptions, facts and recommendations, grouped by agent, worst first, in the seed's voice.
- :class:`OpenAICompatibleNarrator`: one chat completion from any OpenAI-compatible endpoint.
- :class:`CrewAINarrator`: a CrewAI crew of the seed's agents and a coordinator, on IBM watsonx
  Granite or an OpenAI-compatible endpoint (the ``llm`` extra: ``pip install
  'smartgrid-sentinel[llm]'``). crewai is imported only when a crew first runs.

An LLM narrator never raises for an LLM failure (timeout, HTTP error, malformed answer): it logs one
WARNING and returns the template narrative, ``fallback_reason`` saying what went wrong.
:func:`narrator_from_env` picks the narrator from SENTINEL_LLM and friends (:mod:`.settings`).

Importing this package imports neither crewai nor anything that opens a connection.
"""

from __future__ import annotations

from agents.narration.base import SOURCES, Narrative, Narrator, Source
from agents.narration.crew import INSTALL_HINT, CrewAINarrator, LLMExtraMissing, crewai_available
from agents.narration.openai_compatible import LLMFailure, OpenAICompatibleNarrator
from agents.narration.profiles import COORDINATOR, PROFILES, AgentProfile, profile_of
from agents.narration.prompt import findings_payload, system_prompt, user_message
from agents.narration.settings import DEFAULT_TIMEOUT_S, DEFAULT_WATSONX_MODEL, NarrationConfigError, narrator_from_env
from agents.narration.template import TemplateNarrator, template_text

__all__ = [
    "COORDINATOR",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_WATSONX_MODEL",
    "INSTALL_HINT",
    "PROFILES",
    "SOURCES",
    "AgentProfile",
    "CrewAINarrator",
    "LLMExtraMissing",
    "LLMFailure",
    "NarrationConfigError",
    "Narrative",
    "Narrator",
    "OpenAICompatibleNarrator",
    "Source",
    "TemplateNarrator",
    "crewai_available",
    "findings_payload",
    "narrator_from_env",
    "profile_of",
    "system_prompt",
    "template_text",
    "user_message",
]
