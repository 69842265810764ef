"""Hub settings: grouped, read from the environment, passed explicitly to ``create_app``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import datetime

from hub.envvars import env_number
from hub.fleet.liveness import LivenessSettings
from hub.fleet.liveness import settings_from_env as liveness_settings_from_env
from hub.ingest.mqtt import MqttIngestSettings, settings_from_env
from hub.insights.orchestrator import OrchestratorSettings
from hub.site import load_site_config
from hub.storage import check_read_database_url
from hub.stream.broadcaster import StreamSettings, stream_settings_from_env
from hub.webhooks.dispatcher import WebhookSettings, webhook_settings_from_env
from hub.limits import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_JSON_DEPTH
from protocols.config import Limits
from protocols.validation import DEFAULT_MAX_FUTURE_SKEW_S, DEFAULT_TIMESTAMP_FLOOR, parse_zoned_time

DEFAULT_DATABASE_URL = "sqlite:///var/hub.db"
DEFAULT_MODEL_REGISTRY = "var/models"


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    # A streaming standby of the PostgreSQL database for the history reads (SENTINEL_READ_DATABASE_URL),
    # used when it has replayed what the primary holds, waiting up to read_replica_wait_s
    # (SENTINEL_READ_REPLICA_WAIT_S), else the primary (hub.storage.read_replica). None: all on the primary.
    read_database_url: str | None = None
    read_replica_wait_s: float = 0.2
    # Apply the database's pending schema migrations at start (hub.storage.migrations). Off
    # (SENTINEL_AUTO_MIGRATE=0): refuse to start until `sentinel hub migrate` has applied them.
    auto_migrate: bool = True
    # An admin API key made from the environment (SENTINEL_ADMIN_KEY), stored hashed like any other:
    # how the first admin gets in. None: only keys and users already in the database.
    admin_key: str | None = field(default=None, repr=False)
    session_ttl_s: float = 8 * 3600.0  # a login's session token lives this long (a shift)
    # Ingest (POST /edge/sync, /sensors/process, /ot-logs) per principal: requests per second and
    # burst (SENTINEL_INGEST_RATE, SENTINEL_INGEST_BURST); rate 0: no limit.
    ingest_rate_per_s: float = 50.0
    ingest_burst: float = 200.0
    login_max_failures: int = 5  # failed logins per user name and per address in login_window_s
    login_window_s: float = 300.0
    # Substation recorded for readings that arrive without one (POST /sensors/process, MQTT).
    default_substation: str = "UNASSIGNED"
    limits: Limits = field(default_factory=Limits)
    # Readings no instrument can give (protocols.validation): a timestamp more than max_future_skew_s
    # after the hub's clock, or before timestamp_floor, is refused (HTTP, MQTT) or stored flagged
    # invalid (edge sync). SENTINEL_MAX_FUTURE_SKEW_S, SENTINEL_TIMESTAMP_FLOOR (ISO 8601 with a zone).
    max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S
    timestamp_floor: datetime = DEFAULT_TIMESTAMP_FLOOR
    # Request bodies (hub.limits): larger is a 413, JSON nested deeper a 400, before any decoder
    # runs. SENTINEL_MAX_BODY_BYTES, SENTINEL_MAX_JSON_DEPTH.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    # Subscribe to a utility's MQTT broker (SENTINEL_MQTT_URL); None: no MQTT ingest.
    mqtt: MqttIngestSettings | None = None
    # The signed model registry the hub serves to edges (GET /models...) and trains into
    # (SENTINEL_MODEL_REGISTRY). Signing uses $SENTINEL_MODEL_SIGNING_KEY, read when training.
    model_registry: str = DEFAULT_MODEL_REGISTRY
    # The five agents: run by the orchestrator on new data and every interval_s (None: not run;
    # the API still serves what is stored). SENTINEL_AGENT_INTERVAL_S, _BUDGET_S, SENTINEL_SITE_CONFIG.
    agents: OrchestratorSettings | None = field(default_factory=OrchestratorSettings)
    # Run the agents in this hub process (SENTINEL_AGENTS=on, the default), or not (off: they run in
    # `sentinel hub agents` on the same database, hub.insights.elsewhere, and ingest never waits on them).
    agents_in_process: bool = True
    # LLM narration of incidents (agents.narration.narrator_from_env: SENTINEL_LLM=openai|crewai);
    # None: template text only, no narrative stored.
    narrator: object | None = None
    # Webhooks (hub.webhooks): how the dispatcher polls, times out and backs off (SENTINEL_WEBHOOK_TIMEOUT_S,
    # _BACKOFF_S, _BACKOFF_CAP_S, _MAX_ATTEMPTS). None: no dispatcher runs (webhooks can still be managed).
    webhooks: WebhookSettings | None = field(default_factory=WebhookSettings)
    # Liveness (hub.fleet): when an edge is offline, a substation stale (SENTINEL_EDGE_SYNC_INTERVAL_S,
    # SENTINEL_OFFLINE_MULTIPLE, SENTINEL_LIVENESS_CHECK_S, SENTINEL_TELEMETRY_STALE_S).
    liveness: LivenessSettings = field(default_factory=LivenessSettings)
    # WS /ws/grid-status (hub.stream): heartbeats (SENTINEL_WS_HEARTBEAT_S), reads, slow clients.
    stream: StreamSettings = field(default_factory=StreamSettings)
    # Freeze what start-up made out of the garbage collector's sight (gc.freeze), so a full collection
    # walks only what came since: set by the processes that serve (`sentinel hub serve` and its workers),
    # not by a hub built in a process that makes many (tests), whose objects it would keep forever.
    freeze_gc: bool = False

    def __post_init__(self) -> None:
        if self.read_database_url is not None:  # ValueError naming the setting and what is wrong
            check_read_database_url(self.database_url, self.read_database_url)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """``SENTINEL_DATABASE_URL``, ``SENTINEL_READ_DATABASE_URL`` / ``_REPLICA_WAIT_S``,
        ``SENTINEL_ADMIN_KEY``, ``SENTINEL_INGEST_RATE`` / ``_BURST``,
        ``SENTINEL_SESSION_TTL_S``,
        ``SENTINEL_DEFAULT_SUBSTATION``, ``SENTINEL_MODEL_REGISTRY``, ``SENTINEL_MQTT_URL`` / ``_TOPICS`` / ``_PASSWORD`` (see
        :func:`hub.ingest.mqtt.settings_from_env`); keyword overrides win (e.g. from CLI flags)."""
        env: dict[str, object] = {}
        if url := os.environ.get("SENTINEL_DATABASE_URL"):
            env["database_url"] = url
        if url := os.environ.get("SENTINEL_READ_DATABASE_URL", "").strip():
            env["read_database_url"] = url
        if (wait := env_number("SENTINEL_READ_REPLICA_WAIT_S", at_least=0)) is not None:
            env["read_replica_wait_s"] = wait
        if (auto := os.environ.get("SENTINEL_AUTO_MIGRATE", "").strip().lower()):
            if auto not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(f"SENTINEL_AUTO_MIGRATE: not 1 or 0: {auto!r}")
            env["auto_migrate"] = auto in ("1", "true", "yes", "on")
        if os.environ.get("SENTINEL_EDGE_TOKENS"):
            raise ValueError("SENTINEL_EDGE_TOKENS is no longer read: each edge has its own credential now. "
                             "Register edges with `sentinel hub edges add EDGE_ID` and unset the variable")
        if key := os.environ.get("SENTINEL_ADMIN_KEY", "").strip():
            env["admin_key"] = key
        # a rate of 0 turns the ingest limit off; a session must live for some time
        for var, name, bound in (("SENTINEL_INGEST_RATE", "ingest_rate_per_s", {"at_least": 0}),
                                 ("SENTINEL_INGEST_BURST", "ingest_burst", {"at_least": 0}),
                                 ("SENTINEL_SESSION_TTL_S", "session_ttl_s", {"above": 0})):
            if (number := env_number(var, **bound)) is not None:
                env[name] = number
        env.update(_input_limits_from_env())
        if sub := os.environ.get("SENTINEL_DEFAULT_SUBSTATION"):
            env["default_substation"] = sub
        if registry := os.environ.get("SENTINEL_MODEL_REGISTRY"):
            env["model_registry"] = registry
        agents = OrchestratorSettings()
        if (interval := env_number("SENTINEL_AGENT_INTERVAL_S", above=0)) is not None:
            agents = replace(agents, interval_s=interval)
        if (budget := env_number("SENTINEL_AGENT_BUDGET_S", above=0)) is not None:  # a cycle past it is discarded
            agents = replace(agents, budget_s=budget)
        if (incremental := os.environ.get("SENTINEL_AGENT_INCREMENTAL", "").strip().lower()):
            if incremental not in ("on", "off"):
                raise ValueError(f"SENTINEL_AGENT_INCREMENTAL: on (the agents keep their 1 Hz windows between "
                                 f"cycles and read what is new) or off (they read them whole), not {incremental!r}")
            agents = replace(agents, agents=replace(agents.agents, incremental_windows=incremental == "on"))
        if (shard := os.environ.get("SENTINEL_AGENT_SHARD", "").strip()):  # I/N: this process's substations
            from hub.insights.shards import Shard

            agents = replace(agents, agents=replace(agents.agents, shard=Shard.parse(shard, "SENTINEL_AGENT_SHARD")))
        if os.environ.get("SENTINEL_SITE_CONFIG", "").strip():  # raises ConfigError naming file and key
            agents = replace(agents, agents=replace(agents.agents, site=load_site_config()))
        env["agents"] = agents
        if (where := os.environ.get("SENTINEL_AGENTS", "").strip().lower()):
            if where not in ("on", "off"):
                raise ValueError(f"SENTINEL_AGENTS: on (the agents run in the hub process) or off (they run in "
                                 f"`sentinel hub agents`), not {where!r}")
            env["agents_in_process"] = where == "on"
        env["webhooks"] = webhook_settings_from_env()  # raises naming the variable that is unusable
        env["liveness"] = liveness_settings_from_env()  # so do these
        env["stream"] = stream_settings_from_env()
        if os.environ.get("SENTINEL_LLM", "").strip().lower() not in ("", "none"):
            from agents.narration import narrator_from_env

            env["narrator"] = narrator_from_env()  # raises naming the variable that is missing or wrong
        env.update({k: v for k, v in overrides.items() if v is not None})
        if "mqtt" not in env:  # raises ValueError naming the variable when it is unusable
            env["mqtt"] = settings_from_env(default_substation=env.get("default_substation", cls.default_substation),
                                            limits=env.get("limits", Limits()),
                                            max_future_skew_s=env.get("max_future_skew_s", DEFAULT_MAX_FUTURE_SKEW_S),
                                            timestamp_floor=env.get("timestamp_floor", DEFAULT_TIMESTAMP_FLOOR))
        return cls(**env)  # type: ignore[arg-type]


def _input_limits_from_env() -> dict[str, object]:
    """``SENTINEL_MAX_FUTURE_SKEW_S``, ``SENTINEL_TIMESTAMP_FLOOR``, ``SENTINEL_MAX_BODY_BYTES``,
    ``SENTINEL_MAX_JSON_DEPTH``; ValueError naming the variable when one is unusable."""
    out: dict[str, object] = {}
    if (skew := env_number("SENTINEL_MAX_FUTURE_SKEW_S", at_least=0)) is not None:
        out["max_future_skew_s"] = skew
    if value := os.environ.get("SENTINEL_TIMESTAMP_FLOOR", "").strip():
        out["timestamp_floor"] = parse_zoned_time(value, "SENTINEL_TIMESTAMP_FLOOR")
    for var, name in (("SENTINEL_MAX_BODY_BYTES", "max_body_bytes"), ("SENTINEL_MAX_JSON_DEPTH", "max_json_depth")):
        if (count := env_number(var, whole=True, at_least=1)) is not None:
            out[name] = count
    return out

