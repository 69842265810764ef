"""Narration by a CrewAI crew (the ``llm`` extra): one specialist agent per agent that reported, each
explaining its own findings, and a coordinator whose task, fed the specialists' answers, writes the
explanation and root-cause narrative. Roles, goals and backstories are the seed's (:mod:`.profiles`).

The crew runs on IBM watsonx Granite (``provider="watsonx"``, model e.g.
``watsonx/ibm/granite-3-8b-instruct``, credentials from WATSONX_URL / WATSONX_APIKEY /
WATSONX_PROJECT_ID) or on any OpenAI-compatible endpoint (``provider="openai"``). crewai is imported
only when a crew first runs, never at module import; before that import, crewai's telemetry and
tracing and LiteLLM's download of its model price list are turned off unless the operator set those
variables, so nothing but the LLM calls reaches the network. (crewai still writes to disk: a key
under ~/.local/share/crewai/ at import, and each crew's task outputs, findings included, to
~/.local/share/smartgrid-sentinel/latest_kickoff_task_outputs.db; CREWAI_STORAGE_DIR names that
folder.)

The crew runs in a daemon thread with a deadline of ``timeout_s``; past it, or on any error of the
crew, the narrator logs one WARNING and returns the template narrative with ``fallback_reason``. A
crew that missed its deadline is abandoned, not killed: its LLM calls carry the same timeout, so it
ends soon after, and its answer is dropped.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal

from agents.findings import Finding
from agents.narration.base import Narrative, log
from agents.narration.openai_compatible import check_base_url
from agents.narration.profiles import COORDINATOR, AgentProfile, profile_of
from agents.narration.prompt import RULES, findings_json
from agents.narration.template import group_by_agent, template_text

__all__ = ["INSTALL_HINT", "QUIET", "CrewAINarrator", "LLMExtraMissing", "crewai_available", "quiet_environment"]

Provider = Literal["watsonx", "openai"]
INSTALL_HINT = "pip install 'smartgrid-sentinel[llm]'"

# Set (unless the operator already set them) before crewai is imported.
QUIET = {
    "CREWAI_DISABLE_TELEMETRY": "true",  # crewai's anonymous telemetry (OpenTelemetry to telemetry.crewai.com)
    "OTEL_SDK_DISABLED": "true",  # the OpenTelemetry SDK as a whole, in this process
    "CREWAI_TRACING_ENABLED": "false",  # crewai's execution traces to app.crewai.com, and its first-run prompt
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # LiteLLM (watsonx route) fetches its price list at import otherwise
    # crewai keeps every task's output (here: the findings) in a SQLite file under
    # ~/.local/share/<this name>/; without it, <name> is the current directory's name
    "CREWAI_STORAGE_DIR": "smartgrid-sentinel",
}


class LLMExtraMissing(ImportError):
    """crewai (or, for watsonx, LiteLLM) is not installed; the message says what to install."""


def crewai_available() -> bool:
    """True when crewai can be imported (looked up without importing it)."""
    return importlib.util.find_spec("crewai") is not None


def quiet_environment(environ: Any = None) -> None:
    """Turn off crewai's telemetry and tracing and LiteLLM's price-list download, and name crewai's
    storage folder, unless the operator set these already (:data:`QUIET`)."""
    environ = os.environ if environ is None else environ
    for name, value in QUIET.items():
        environ.setdefault(name, value)


class CrewAINarrator:
    """Narrates findings with a CrewAI crew on watsonx Granite or an OpenAI-compatible endpoint.

    watsonx: ``base_url`` is WATSONX_URL (e.g. ``https://us-south.ml.cloud.ibm.com``), ``api_key``
    WATSONX_APIKEY, ``project_id`` WATSONX_PROJECT_ID; ``model`` gets a ``watsonx/`` prefix if it
    has none. openai: ``base_url`` is the endpoint's (e.g. ``http://127.0.0.1:8000/v1``), ``api_key``
    optional. Raises :class:`LLMExtraMissing` at construction when crewai is not installed."""

    def __init__(self, provider: Provider, model: str, *, base_url: str, api_key: str | None = None,
                 project_id: str | None = None, timeout_s: float = 20.0) -> None:
        if provider not in ("watsonx", "openai"):
            raise ValueError(f"provider: expected watsonx or openai, got {provider!r}")
        if not model.strip():
            raise ValueError("model: expected the name of a chat model, got an empty string")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s: expected a positive number of seconds, got {timeout_s!r}")
        if provider == "watsonx" and not (api_key and project_id):
            raise ValueError("watsonx needs an API key (WATSONX_APIKEY) and a project id (WATSONX_PROJECT_ID)")
        if not crewai_available():
            raise LLMExtraMissing(f"CrewAI narration needs crewai, which is not installed: {INSTALL_HINT}")
        if provider == "watsonx" and importlib.util.find_spec("litellm") is None:
            raise LLMExtraMissing("CrewAI reaches watsonx through LiteLLM, which is not installed: "
                                  "pip install 'crewai[litellm]'")
        self.provider: Provider = provider
        self.source = f"crewai-{provider}"
        model = model.strip()
        if provider == "watsonx":
            self.model = model if model.startswith("watsonx/") else f"watsonx/{model}"
        else:
            self.model = model if model.startswith("openai/") else f"openai/{model}"
        self.base_url = check_base_url(base_url)
        self.timeout_s = float(timeout_s)
        self._api_key = api_key or None
        self._project_id = project_id or None

    def __repr__(self) -> str:  # never the key
        return (f"CrewAINarrator(provider={self.provider!r}, model={self.model!r}, base_url={self.base_url!r}, "
                f"timeout_s={self.timeout_s:g})")

    def narrate(self, findings: Sequence[Finding], context: dict[str, Any] | None = None) -> Narrative:
        t0 = time.perf_counter()
        if not findings:  # nothing to explain: no crew
            return Narrative(text=template_text(findings), source="template", elapsed_ms=_ms(t0))
        findings = list(findings)
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["text"] = self.kickoff(findings, context)
            except BaseException as exc:  # noqa: BLE001 - reported as the fallback reason
                box["error"] = exc

        worker = threading.Thread(target=run, name="agents.narration.crew", daemon=True)
        worker.start()
        worker.join(self.timeout_s)
        reason = ""
        if worker.is_alive():
            reason = f"CrewAI crew timed out after {self.timeout_s:g} s at {self.base_url}"
        elif "error" in box:
            exc = box["error"]
            reason = f"CrewAI crew failed at {self.base_url}: {type(exc).__name__}: {_clip(str(exc))}"
        elif not isinstance(box.get("text"), str) or not box["text"].strip():
            reason = f"CrewAI crew at {self.base_url} answered an empty narrative"
        if reason:
            log.warning("LLM narration failed, using the template: %s", reason)
            return Narrative(text=template_text(findings), source="template", fallback_reason=reason,
                             elapsed_ms=_ms(t0))
        return Narrative(text=box["text"].strip(), source=self.source,  # type: ignore[arg-type]
                         model=self.model, elapsed_ms=_ms(t0))

    def kickoff(self, findings: Sequence[Finding], context: dict[str, Any] | None = None) -> str:
        """Build the crew and run it, in this thread, without a deadline: the coordinator's answer."""
        crewai = _import_crewai()
        llm = self._llm(crewai)
        groups = group_by_agent(findings)
        agents, tasks = [], []
        for agent, group in groups:
            specialist = _agent(crewai, profile_of(agent), llm)
            agents.append(specialist)
            tasks.append(crewai.Task(
                description=(f"Explain these findings of the {profile_of(agent).name} to the control-room "
                             f"operator: what was measured against which limit, since when, and the "
                             f"recommended action.\n{RULES}\n\nFindings (JSON):\n{findings_json(group)}"),
                expected_output="A short plain-text explanation of each finding, most severe first.",
                agent=specialist,
            ))
        coordinator = _agent(crewai, COORDINATOR, llm)
        agents.append(coordinator)
        tasks.append(crewai.Task(
            description=("Using the specialists' explanations, write for the control-room operator: what "
                         "happened (most severe first), the root-cause narrative relating the findings to "
                         "each other where the facts support it, and the recommended actions in order of "
                         f"urgency.\n{RULES}\n\nAll findings (JSON):\n{findings_json(findings, context)}"),
            expected_output="The explanation and root-cause narrative, plain text, at most 250 words.",
            agent=coordinator, context=list(tasks),
        ))
        crew = crewai.Crew(agents=agents, tasks=tasks, process=crewai.Process.sequential, verbose=False,
                           tracing=False)
        output = crew.kickoff()  # no inputs: the JSON's braces are not template placeholders
        return str(getattr(output, "raw", output) or "")

    def _llm(self, crewai: Any) -> Any:
        if self.provider == "watsonx":
            return crewai.LLM(model=self.model, base_url=self.base_url, api_key=self._api_key,
                              project_id=self._project_id, timeout=self.timeout_s, temperature=0.2,
                              max_retries=0)
        # the OpenAI SDK wants a key; local servers take any
        return crewai.LLM(model=self.model, base_url=self.base_url, api_key=self._api_key or "none",
                          timeout=self.timeout_s, temperature=0.2, max_retries=0)


def _import_crewai() -> Any:
    quiet_environment()
    try:
        return importlib.import_module("crewai")
    except ImportError as exc:
        raise LLMExtraMissing(f"CrewAI narration needs crewai ({exc}): {INSTALL_HINT}") from exc


def _agent(crewai: Any, p: AgentProfile, llm: Any) -> Any:
    return crewai.Agent(role=p.role, goal=p.goal, backstory=p.backstory, llm=llm, allow_delegation=False,
                        max_iter=2, max_retry_limit=0, verbose=False)


def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)

