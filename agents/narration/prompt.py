"""What an LLM is told: a system prompt in the roles of the agents that reported, and the findings'
facts as JSON with the rules (explain, do not invent figures, only use the facts given).

Shared by the OpenAI-compatible narrator and the CrewAI crew, so both are held to the same rules.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec

from agents.findings import Finding
from agents.narration.profiles import COORDINATOR, AgentProfile, profile_of
from agents.narration.template import group_by_agent

__all__ = ["RULES", "findings_payload", "findings_json", "system_prompt", "user_message"]

RULES = (
    "Rules: explain, do not invent figures. Use only the facts given in the JSON: every number, device, "
    "time and threshold you write must appear there. Do not guess causes the facts do not support; when "
    "they do not establish a root cause, say so. Keep device and substation names exactly as given. "
    "Keep the recommended actions of the findings. Plain text, no Markdown tables, at most 250 words."
)


def system_prompt(findings: Sequence[Finding]) -> str:
    """The coordinator's instructions plus the role, goal and backstory of each agent that reported."""
    agents = [agent for agent, _ in group_by_agent(findings)]
    roles = "\n".join(_role(profile_of(a)) for a in agents) or "(no agent reported a finding)"
    return (
        f"You are the {COORDINATOR.name} of SmartGrid Sentinel, a substation monitoring system. "
        f"{COORDINATOR.goal} {COORDINATOR.backstory}\n\n"
        "The findings below were computed by these specialist agents; you speak for them:\n"
        f"{roles}\n\n{RULES}"
    )


def user_message(findings: Sequence[Finding], context: dict[str, Any] | None = None) -> str:
    """The findings as JSON (worst agent first) and what to write."""
    return (
        "Explain these findings to the control-room operator: first what happened (the most severe "
        "first), then the root-cause narrative that relates the findings to each other where the facts "
        "support it, then the recommended actions in order of urgency.\n"
        f"{RULES}\n\nFindings (JSON):\n{findings_json(findings, context)}"
    )


def findings_payload(findings: Sequence[Finding], context: dict[str, Any] | None = None) -> dict[str, Any]:
    """The findings (all their fields, ``facts`` as they are), grouped by agent, and the context."""
    payload: dict[str, Any] = {
        "findings": [msgspec.to_builtins(f) for _, group in group_by_agent(findings) for f in group],
    }
    if context:
        payload["context"] = msgspec.to_builtins(context)
    return payload


def findings_json(findings: Sequence[Finding], context: dict[str, Any] | None = None) -> str:
    return json.dumps(findings_payload(findings, context), ensure_ascii=False, indent=1)


def _role(p: AgentProfile) -> str:
    return f"- {p.name} ({p.agent}), {p.role}. Goal: {p.goal} {p.backstory}"
