"""Which narrator to use, from environment variables (secrets come from the environment, never files).

==========================  ===================================================================
SENTINEL_LLM                ``""`` or ``none`` (default): the template, no LLM. ``openai``: an
                            OpenAI-compatible endpoint. ``crewai``: a CrewAI crew (``llm`` extra).
SENTINEL_LLM_TIMEOUT_S      seconds an LLM narration may take before the template is used (20)
SENTINEL_LLM_BASE_URL       openai, and crewai with the openai provider: the endpoint's base URL,
                            e.g. ``http://127.0.0.1:8000/v1`` (required)
SENTINEL_LLM_MODEL          the model (required for openai; crewai on watsonx defaults to
                            ``watsonx/ibm/granite-3-8b-instruct``)
SENTINEL_LLM_API_KEY        bearer token for the endpoint (optional)
SENTINEL_LLM_PROVIDER       crewai only: ``watsonx`` (default) or ``openai``
WATSONX_URL                 crewai on watsonx: e.g. ``https://us-south.ml.cloud.ibm.com`` (required)
WATSONX_APIKEY              crewai on watsonx: the IBM Cloud API key (required; the seed's
                            spelling WATSONX_API_KEY is accepted too)
WATSONX_PROJECT_ID          crewai on watsonx: the watsonx.ai project (required)
==========================  ===================================================================

A missing or bad setting is a :class:`NarrationConfigError` naming the variable, raised when the
narrator is built (at start-up), not when it first narrates.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from agents.narration.base import Narrator
from agents.narration.crew import CrewAINarrator, LLMExtraMissing
from agents.narration.openai_compatible import OpenAICompatibleNarrator, check_base_url
from agents.narration.template import TemplateNarrator

__all__ = ["DEFAULT_TIMEOUT_S", "DEFAULT_WATSONX_MODEL", "NarrationConfigError", "narrator_from_env"]

DEFAULT_TIMEOUT_S = 20.0
DEFAULT_WATSONX_MODEL = "watsonx/ibm/granite-3-8b-instruct"
CHOICES = ("none", "openai", "crewai")
PROVIDERS = ("watsonx", "openai")


class NarrationConfigError(ValueError):
    """A narration setting is missing or wrong; the message names the environment variable."""


def narrator_from_env(env: Mapping[str, str] = os.environ) -> Narrator:
    """The narrator the environment asks for (see the module); the template narrator by default."""
    kind = _get(env, "SENTINEL_LLM").lower() or "none"
    if kind not in CHOICES:
        raise NarrationConfigError(f"SENTINEL_LLM: expected one of {', '.join(CHOICES)} (or empty), got {kind!r}")
    if kind == "none":
        return TemplateNarrator()
    timeout_s = _timeout(env)
    if kind == "openai":
        return OpenAICompatibleNarrator(_url(env, "SENTINEL_LLM_BASE_URL"),
                                        _required(env, "SENTINEL_LLM_MODEL", "the chat model to ask"),
                                        api_key=_get(env, "SENTINEL_LLM_API_KEY") or None, timeout_s=timeout_s)
    provider = _get(env, "SENTINEL_LLM_PROVIDER").lower() or "watsonx"
    if provider not in PROVIDERS:
        raise NarrationConfigError(f"SENTINEL_LLM_PROVIDER: expected one of {', '.join(PROVIDERS)}, got {provider!r}")
    if provider == "watsonx":
        url = _url(env, "WATSONX_URL")
        api_key = _get(env, "WATSONX_APIKEY") or _get(env, "WATSONX_API_KEY")
        if not api_key:
            raise NarrationConfigError("WATSONX_APIKEY is not set: SENTINEL_LLM=crewai on watsonx needs the IBM "
                                       "Cloud API key")
        project = _required(env, "WATSONX_PROJECT_ID", "the watsonx.ai project id")
        model = _get(env, "SENTINEL_LLM_MODEL") or DEFAULT_WATSONX_MODEL
        try:
            return CrewAINarrator("watsonx", model, base_url=url, api_key=api_key, project_id=project,
                                  timeout_s=timeout_s)
        except LLMExtraMissing as exc:
            raise NarrationConfigError(f"SENTINEL_LLM=crewai: {exc}") from exc
    url = _url(env, "SENTINEL_LLM_BASE_URL")
    model = _required(env, "SENTINEL_LLM_MODEL", "the chat model to ask")
    try:
        return CrewAINarrator("openai", model, base_url=url, api_key=_get(env, "SENTINEL_LLM_API_KEY") or None,
                              timeout_s=timeout_s)
    except LLMExtraMissing as exc:
        raise NarrationConfigError(f"SENTINEL_LLM=crewai: {exc}") from exc


def _get(env: Mapping[str, str], name: str) -> str:
    return (env.get(name) or "").strip()


def _required(env: Mapping[str, str], name: str, what: str) -> str:
    value = _get(env, name)
    if not value:
        raise NarrationConfigError(f"{name} is not set: SENTINEL_LLM={_get(env, 'SENTINEL_LLM')} needs {what}")
    return value


def _url(env: Mapping[str, str], name: str) -> str:
    value = _required(env, name, "the endpoint's base URL, e.g. http://127.0.0.1:8000/v1")
    try:
        return check_base_url(value)
    except ValueError:
        raise NarrationConfigError(f"{name}: expected an http(s) URL such as http://127.0.0.1:8000/v1, "
                                   f"got {value!r}") from None


def _timeout(env: Mapping[str, str]) -> float:
    raw = _get(env, "SENTINEL_LLM_TIMEOUT_S")
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise NarrationConfigError(f"SENTINEL_LLM_TIMEOUT_S: expected a positive number of seconds, got {raw!r}")
    return value
