"""Hub settings: grouped, read from the environment, passed explicitly to ``create_app``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from hub.mqtt_ingest import MqttIngestSettings, settings_from_env
from hub.orchestrator import OrchestratorSettings
from hub.site import load_site_config
from protocols.config import Limits

DEFAULT_DATABASE_URL = "sqlite:///var/hub.db"
DEFAULT_MODEL_REGISTRY = "var/models"


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    # Bearer tokens edges must present on /edge/sync. Empty: sync is open (fine on a closed network
    # or a demo; the hub logs a warning at start).
    edge_tokens: frozenset[str] = field(default_factory=frozenset)
    # Substation recorded for readings that arrive without one (POST /sensors/process, MQTT).
    default_substation: str = "UNASSIGNED"
    limits: Limits = field(default_factory=Limits)
    # Subscribe to a utility's MQTT broker (SENTINEL_MQTT_URL); None: no MQTT ingest.
    mqtt: MqttIngestSettings | None = None
    # The signed model registry the hub serves to edges (GET /models...) and trains into
    # (SENTINEL_MODEL_REGISTRY). Signing uses $SENTINEL_MODEL_SIGNING_KEY, read when training.
    model_registry: str = DEFAULT_MODEL_REGISTRY
    # The five agents: run by the orchestrator on new data and every interval_s (None: not run;
    # the API still serves what is stored). SENTINEL_AGENT_INTERVAL_S, SENTINEL_SITE_CONFIG.
    agents: OrchestratorSettings | None = field(default_factory=OrchestratorSettings)
    # LLM narration of incidents (agents.narration.narrator_from_env: SENTINEL_LLM=openai|crewai);
    # None: template text only, no narrative stored.
    narrator: object | None = None

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """``SENTINEL_DATABASE_URL``, ``SENTINEL_EDGE_TOKENS`` (comma-separated),
        ``SENTINEL_DEFAULT_SUBSTATION``, ``SENTINEL_MODEL_REGISTRY``, ``SENTINEL_MQTT_URL`` / ``_TOPICS`` / ``_PASSWORD`` (see
        :func:`hub.mqtt_ingest.settings_from_env`); keyword overrides win (e.g. from CLI flags)."""
        env: dict[str, object] = {}
        if url := os.environ.get("SENTINEL_DATABASE_URL"):
            env["database_url"] = url
        if tokens := os.environ.get("SENTINEL_EDGE_TOKENS"):
            env["edge_tokens"] = frozenset(t.strip() for t in tokens.split(",") if t.strip())
        if sub := os.environ.get("SENTINEL_DEFAULT_SUBSTATION"):
            env["default_substation"] = sub
        if registry := os.environ.get("SENTINEL_MODEL_REGISTRY"):
            env["model_registry"] = registry
        agents = OrchestratorSettings()
        if interval := os.environ.get("SENTINEL_AGENT_INTERVAL_S"):
            try:
                agents = replace(agents, interval_s=float(interval))
            except ValueError:
                raise ValueError(f"SENTINEL_AGENT_INTERVAL_S: not a number of seconds: {interval!r}") from None
        if os.environ.get("SENTINEL_SITE_CONFIG", "").strip():  # raises ConfigError naming file and key
            agents = replace(agents, agents=replace(agents.agents, site=load_site_config()))
        env["agents"] = agents
        if os.environ.get("SENTINEL_LLM", "").strip().lower() not in ("", "none"):
            from agents.narration import narrator_from_env

            env["narrator"] = narrator_from_env()  # raises naming the variable that is missing or wrong
        env.update({k: v for k, v in overrides.items() if v is not None})
        if "mqtt" not in env:  # raises ValueError naming the variable when it is unusable
            env["mqtt"] = settings_from_env(default_substation=env.get("default_substation", cls.default_substation),
                                            limits=env.get("limits", Limits()))
        return cls(**env)  # type: ignore[arg-type]

