"""LLM narration of findings: the template, an OpenAI-compatible endpoint (a real local server), the
CrewAI crew against the same server when crewai is installed, the fallbacks, and the settings."""

from __future__ import annotations

import importlib.util
import json
import logging
import socket
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.findings import Finding
from agents.narration import (
    INSTALL_HINT,
    CrewAINarrator,
    NarrationConfigError,
    Narrative,
    Narrator,
    OpenAICompatibleNarrator,
    TemplateNarrator,
    crewai_available,
    narrator_from_env,
)
from agents.narration import crew as crew_module
from tests.support.openai_server import OpenAIServer

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 2, 1, 10, 7, tzinfo=UTC)
ANSWER = ("The CRITICAL finding first: transformer TR-04 is at 82% health. The voltage sag on FEEDER-F12 "
          "(210 kV) is a separate WARNING; the facts do not establish a common cause.")


def grid() -> Finding:
    return Finding(
        agent="grid_monitor", type="voltage_sag", severity="WARNING", timestamp=NOW,
        start=NOW - timedelta(minutes=5), device_id="FEEDER-F12", substation="NAIROBI-S1", metric="voltage",
        value=210.0, threshold=209.0, nominal=220.0, confidence=0.8,
        description="Voltage sag on FEEDER-F12 voltage (210 kV, -4.5% from nominal 220 kV; limit 209 kV)",
        recommendation="Transfer load to adjacent feeder FEEDER-F13 (38 MW headroom).",
        facts={"unit": "kV", "nominal": 220.0, "deviation_pct": -4.5, "ieee1159_events_total": 2,
               "transfer_candidates": [{"feeder": "FEEDER-F13", "headroom": 38.0}]},
    )


def anomaly() -> Finding:
    return Finding(
        agent="anomaly_detector", type="anomaly_multivariate", severity="WARNING", timestamp=NOW,
        device_id="TR-07", substation="MOMBASA-S1", metric="anomaly_score", value=0.94, threshold=0.8,
        description="Transformer TR-07 showing unexpected temperature spike. Temperature: 65°C (+12% from baseline)",
        recommendation="Thermal inspection of TR-07.",
        facts={"score": 0.94, "temperature_c": 65.0, "baseline_c": 58.0},
    )


def demand() -> Finding:
    return Finding(
        agent="demand_forecaster", type="capacity_risk", severity="WARNING", timestamp=NOW,
        device_id="NAIROBI-S1", substation="NAIROBI-S1", metric="load", value=905.0, threshold=920.0,
        description=("Peak demand expected at 2026-02-02 18:00 UTC: 905 MW (80% interval 880-930 MW). "
                     "Current capacity: 920 MW. Margin: 15 MW (1.6%)."),
        recommendation="Plan for Mon 17:00-19:00 UTC: transfer load to neighbouring feeders or call demand response.",
        facts={"method": "onnx", "peak": 905.0, "capacity": 920.0, "margin_pct": 1.6, "exceed_probability": 0.31},
    )


def maintenance() -> Finding:
    return Finding(
        agent="maintenance_predictor", type="transformer_thermal", severity="CRITICAL", timestamp=NOW,
        device_id="TR-04", substation="NAIROBI-S1", metric="health", value=82.0, threshold=85.0,
        description=("Transformer TR-04 at 82% health. Temperature trend: +3.0°C/day for 7 days. "
                     "RECOMMEND: Emergency maintenance in next 12 hours. "
                     "Maintenance window: 22:00-06:00 UTC today (low load period)."),
        recommendation="Emergency maintenance in next 12 hours",
        facts={"health": 82.0, "failure_probability": {"24h": 0.2, "48h": 0.41, "168h": 0.7}},
    )


def cyber() -> Finding:
    return Finding(
        agent="cyber_sentinel", type="brute_force", severity="EMERGENCY", timestamp=NOW,
        start=NOW - timedelta(minutes=9), device_id="RTU-MOM01", substation="MOMBASA-S1", metric="failed_logins",
        value=4.0, threshold=4.0,
        description=("Failed login attempt on RTU-MOM01 from IP 192.168.1.57 (4 failures in 10 minutes). "
                     "Potential brute force attack."),
        recommendation="Block IP address, reset RTU password, review access logs.",
        facts={"source": "192.168.1.57", "failures": 4, "evidence_count": 4,
               "evidence_sha256": "3fa1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80",
               "actions": ["block_source", "reset_credentials", "review_access_logs"]},
    )


def all_findings() -> list[Finding]:
    return [grid(), anomaly(), demand(), maintenance(), cyber()]


# -- template -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "expected"), [
    (grid, "⚠️ WARNING: Voltage sag on FEEDER-F12 voltage (210 kV, -4.5% from nominal 220 kV; limit 209 kV). "
           "RECOMMEND: Transfer load to adjacent feeder FEEDER-F13 (38 MW headroom)."),
    (anomaly, "🚨 ANOMALY DETECTED (WARNING): Transformer TR-07 showing unexpected temperature spike. "
              "Temperature: 65°C (+12% from baseline). RECOMMEND: Thermal inspection of TR-07."),
    (demand, "📊 DEMAND FORECAST (WARNING): Peak demand expected at 2026-02-02 18:00 UTC: 905 MW"),
    (maintenance, "⚡ MAINTENANCE ALERT (CRITICAL): Transformer TR-04 at 82% health."),
    (cyber, "🛡️ SECURITY ALERT (EMERGENCY): Failed login attempt on RTU-MOM01 from IP 192.168.1.57 "
            "(4 failures in 10 minutes). Potential brute force attack. RECOMMEND: Block IP address, "
            "reset RTU password, review access logs."),
])
def test_the_template_speaks_for_each_agent_in_the_seeds_voice(make, expected: str) -> None:
    finding = make()
    narrative = TemplateNarrator().narrate([finding])
    assert narrative.source == "template" and narrative.model == "" and narrative.fallback_reason == ""
    assert expected in narrative.text
    assert narrative.text.startswith(f"1 finding from 1 agent at {finding.substation}; worst: {finding.severity}")
    # the recommendation is there once, even when the description already carries it
    assert narrative.text.count(finding.recommendation.rstrip(".")) == 1


def test_the_template_groups_by_agent_worst_first_with_the_facts_behind_each_finding() -> None:
    text = TemplateNarrator().narrate(all_findings()).text
    headers = [line.split(" (")[0] for line in text.splitlines() if " Agent (" in line]
    # worst first; equal severities in the seed's order (grid, anomaly, demand)
    assert headers == ["Cyber Sentinel Agent", "Maintenance Predictor Agent", "Grid Monitor Agent",
                       "Anomaly Detector Agent", "Demand Forecaster Agent"]
    assert text.splitlines()[0] == ("5 findings from 5 agents at MOMBASA-S1, NAIROBI-S1; worst: EMERGENCY brute force "
                                    "on RTU-MOM01 (MOMBASA-S1).")
    assert "NAIROBI-S1: findings from the maintenance predictor, the grid monitor and the demand forecaster" in text
    assert "observed 2026-02-01 09:58-10:07 UTC · evidence: 4 log entries, chain sha256 3fa1b2c4d5e6…" in text
    assert "observed 2026-02-01 10:02-10:07 UTC · confidence 80% · IEEE 1159 events: 2" in text
    assert "forecast method: onnx" in text


def test_the_template_of_a_real_cyber_sentinel_finding() -> None:
    from agents.cyber_sentinel import analyse
    from protocols.otlog import OtLogEvent

    t0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    events = [OtLogEvent(ts=t0 + timedelta(minutes=2 * i), kind="auth", substation="MOMBASA", device_id="RTU-MOM01",
                         result="failure", source="192.168.1.57", user="admin", action="login", method="password")
              for i in range(4)]
    [finding] = analyse(events)
    text = TemplateNarrator().narrate([finding]).text
    assert ("🛡️ SECURITY ALERT (WARNING): Failed login attempt on RTU-MOM01 from IP 192.168.1.57 (4 failures in "
            "10 minutes). Potential brute force attack. RECOMMEND: Block IP address, reset RTU password, review "
            "access logs.") in text
    assert (f"observed 2026-03-02 10:00-10:06 UTC · evidence: 4 log entries, chain sha256 "
            f"{finding.facts['evidence_sha256'][:12]}…") in text


def test_the_template_of_no_findings_says_so() -> None:
    narrative = TemplateNarrator().narrate([])
    assert narrative.text == "No findings: every check passed, nothing to report."


def test_every_narrator_is_a_narrator() -> None:
    assert isinstance(TemplateNarrator(), Narrator)
    assert isinstance(OpenAICompatibleNarrator("http://127.0.0.1:9/v1", "m"), Narrator)


# -- OpenAI-compatible endpoint ---------------------------------------------------------------------


def test_the_llm_answers_with_the_facts_as_json_and_the_agents_roles() -> None:
    findings = [grid(), maintenance()]
    with OpenAIServer(reply=ANSWER) as server:
        narrator = OpenAICompatibleNarrator(server.base_url, "granite-3-8b-instruct", api_key="s3cret", timeout_s=10)
        narrative = narrator.narrate(findings, context={"incident_id": 17})
        [request] = server.requests
    assert narrative == Narrative(text=ANSWER, source="openai", model="granite-3-8b-instruct",
                                  elapsed_ms=narrative.elapsed_ms)
    assert narrative.elapsed_ms > 0
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer s3cret"
    assert request.json["model"] == "granite-3-8b-instruct"
    assert [m["role"] for m in request.json["messages"]] == ["system", "user"]
    system = request.message("system")
    assert "Real-time Grid Operations Specialist" in system
    assert "Equipment Health & Predictive Maintenance Specialist" in system
    assert "SCADA Security" not in system  # only the agents that reported
    user = request.message("user")
    assert "explain, do not invent figures. Use only the facts given" in user
    payload = json.loads(user.split("Findings (JSON):\n", 1)[1])
    assert [f["device_id"] for f in payload["findings"]] == ["TR-04", "FEEDER-F12"]  # worst first
    assert payload["findings"][1]["facts"] == grid().facts
    assert payload["findings"][0]["facts"] == maintenance().facts
    assert payload["context"] == {"incident_id": 17}


def test_no_findings_means_no_call() -> None:
    with OpenAIServer(reply=ANSWER) as server:
        narrative = OpenAICompatibleNarrator(server.base_url, "m").narrate([])
        assert server.requests == []
    assert narrative.source == "template" and narrative.fallback_reason == ""


def _assert_fell_back(narrative: Narrative, findings: list[Finding], caplog: pytest.LogCaptureFixture,
                      reason: str) -> None:
    assert narrative.source == "template" and narrative.model == ""
    assert narrative.text == TemplateNarrator().narrate(findings).text
    assert reason in narrative.fallback_reason, narrative.fallback_reason
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "agents.narration"]
    assert len(warnings) == 1 and narrative.fallback_reason in warnings[0].getMessage()


def test_a_timeout_falls_back_to_the_template(caplog: pytest.LogCaptureFixture) -> None:
    findings = [cyber()]
    with OpenAIServer(reply=ANSWER, behaviour="sleep", delay_s=30) as server:
        narrative = OpenAICompatibleNarrator(server.base_url, "m", timeout_s=0.5).narrate(findings)
        base_url = server.base_url
    _assert_fell_back(narrative, findings, caplog, f"LLM timed out after 0.5 s at {base_url}")
    assert narrative.fallback_reason == f"LLM timed out after 0.5 s at {base_url}"
    assert 400 < narrative.elapsed_ms < 5000


def test_an_http_500_falls_back_to_the_template(caplog: pytest.LogCaptureFixture) -> None:
    findings = [grid(), cyber()]
    with OpenAIServer(behaviour="error", status=500) as server:
        narrative = OpenAICompatibleNarrator(server.base_url, "m", timeout_s=5).narrate(findings)
        base_url = server.base_url
    _assert_fell_back(narrative, findings, caplog,
                      f"LLM at {base_url} answered HTTP 500: the test server was told to fail")


def test_a_malformed_answer_falls_back_to_the_template(caplog: pytest.LogCaptureFixture) -> None:
    findings = [demand()]
    with OpenAIServer(behaviour="malformed") as server:
        narrative = OpenAICompatibleNarrator(server.base_url, "m", timeout_s=5).narrate(findings)
        base_url = server.base_url
    _assert_fell_back(narrative, findings, caplog, f"LLM at {base_url} answered malformed JSON")


def test_an_answer_without_a_message_falls_back_to_the_template(caplog: pytest.LogCaptureFixture) -> None:
    with OpenAIServer(reply="") as server:
        narrative = OpenAICompatibleNarrator(server.base_url, "m", timeout_s=5).narrate([anomaly()])
    _assert_fell_back(narrative, [anomaly()], caplog, "answered an empty message")


def test_nobody_listening_falls_back_to_the_template(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    narrative = OpenAICompatibleNarrator(f"http://127.0.0.1:{port}/v1", "m", timeout_s=5).narrate([grid()])
    _assert_fell_back(narrative, [grid()], caplog, f"LLM request to http://127.0.0.1:{port}/v1 failed: ConnectError")


def test_the_models_route_answers() -> None:
    import httpx

    with OpenAIServer(model="granite") as server:
        models = httpx.get(f"{server.base_url}/models", timeout=5).json()
    assert [m["id"] for m in models["data"]] == ["granite"]


# -- settings -------------------------------------------------------------------------------------


def test_the_template_is_the_default() -> None:
    assert isinstance(narrator_from_env({}), TemplateNarrator)
    assert isinstance(narrator_from_env({"SENTINEL_LLM": "none"}), TemplateNarrator)
    assert isinstance(narrator_from_env({"SENTINEL_LLM": " "}), TemplateNarrator)


def test_openai_settings() -> None:
    narrator = narrator_from_env({"SENTINEL_LLM": "openai", "SENTINEL_LLM_BASE_URL": "http://127.0.0.1:8000/v1/",
                                  "SENTINEL_LLM_MODEL": "granite", "SENTINEL_LLM_API_KEY": "s3cret-key",
                                  "SENTINEL_LLM_TIMEOUT_S": "7.5"})
    assert isinstance(narrator, OpenAICompatibleNarrator)
    assert (narrator.base_url, narrator.model, narrator.timeout_s) == ("http://127.0.0.1:8000/v1", "granite", 7.5)
    assert "s3cret-key" not in repr(narrator)


@pytest.mark.parametrize(("env", "variable"), [
    ({"SENTINEL_LLM": "claude"}, "SENTINEL_LLM: expected one of none, openai, crewai"),
    ({"SENTINEL_LLM": "openai", "SENTINEL_LLM_MODEL": "m"}, "SENTINEL_LLM_BASE_URL is not set"),
    ({"SENTINEL_LLM": "openai", "SENTINEL_LLM_BASE_URL": "http://127.0.0.1:1/v1"}, "SENTINEL_LLM_MODEL is not set"),
    ({"SENTINEL_LLM": "openai", "SENTINEL_LLM_BASE_URL": "127.0.0.1:1", "SENTINEL_LLM_MODEL": "m"},
     "SENTINEL_LLM_BASE_URL: expected an http(s) URL"),
    ({"SENTINEL_LLM": "openai", "SENTINEL_LLM_BASE_URL": "http://127.0.0.1:1/v1", "SENTINEL_LLM_MODEL": "m",
      "SENTINEL_LLM_TIMEOUT_S": "soon"}, "SENTINEL_LLM_TIMEOUT_S: expected a positive number of seconds"),
    ({"SENTINEL_LLM": "openai", "SENTINEL_LLM_BASE_URL": "http://127.0.0.1:1/v1", "SENTINEL_LLM_MODEL": "m",
      "SENTINEL_LLM_TIMEOUT_S": "0"}, "SENTINEL_LLM_TIMEOUT_S: expected a positive number of seconds"),
    ({"SENTINEL_LLM": "crewai", "SENTINEL_LLM_PROVIDER": "bedrock"}, "SENTINEL_LLM_PROVIDER: expected one of"),
    ({"SENTINEL_LLM": "crewai"}, "WATSONX_URL is not set"),
    ({"SENTINEL_LLM": "crewai", "WATSONX_URL": "https://us-south.ml.cloud.ibm.com"}, "WATSONX_APIKEY is not set"),
    ({"SENTINEL_LLM": "crewai", "WATSONX_URL": "https://us-south.ml.cloud.ibm.com", "WATSONX_APIKEY": "k"},
     "WATSONX_PROJECT_ID is not set"),
    ({"SENTINEL_LLM": "crewai", "SENTINEL_LLM_PROVIDER": "openai", "SENTINEL_LLM_MODEL": "m"},
     "SENTINEL_LLM_BASE_URL is not set"),
    ({"SENTINEL_LLM": "crewai", "SENTINEL_LLM_PROVIDER": "openai", "SENTINEL_LLM_BASE_URL": "http://127.0.0.1:1/v1"},
     "SENTINEL_LLM_MODEL is not set"),
])
def test_a_missing_or_bad_setting_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(NarrationConfigError, match="^" + variable.replace("(", r"\(").replace(")", r"\)")):
        narrator_from_env(env)


def test_crewai_without_the_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crew_module, "crewai_available", lambda: False)  # as on a hub without the llm extra
    env = {"SENTINEL_LLM": "crewai", "SENTINEL_LLM_PROVIDER": "openai", "SENTINEL_LLM_BASE_URL": "http://127.0.0.1:1/v1",
           "SENTINEL_LLM_MODEL": "granite"}
    with pytest.raises(NarrationConfigError, match="crewai, which is not installed") as err:
        narrator_from_env(env)
    assert INSTALL_HINT in str(err.value) and "pip install 'smartgrid-sentinel[llm]'" in str(err.value)


def test_quiet_environment_keeps_what_the_operator_set() -> None:
    env = {"OTEL_SDK_DISABLED": "false"}
    crew_module.quiet_environment(env)
    assert env == {"OTEL_SDK_DISABLED": "false", "CREWAI_DISABLE_TELEMETRY": "true", "CREWAI_TRACING_ENABLED": "false",
                   "LITELLM_LOCAL_MODEL_COST_MAP": "True", "CREWAI_STORAGE_DIR": "smartgrid-sentinel"}


def test_importing_narration_imports_no_crewai_and_opens_no_connection() -> None:
    script = textwrap.dedent("""
        import json, os, socket, sys
        seen = []
        real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo
        def connect(self, address):
            seen.append(repr(address))
            return real_connect(self, address)
        def getaddrinfo(host, *args, **kwargs):
            seen.append(repr(host))
            return real_getaddrinfo(host, *args, **kwargs)
        socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
        import agents.narration
        from agents.narration import narrator_from_env
        narrator_from_env({})
        print(json.dumps({"heavy": sorted(m for m in ("crewai", "litellm", "openai", "ibm_watsonx_ai")
                                          if m in sys.modules),
                          "connections": seen, "env": sorted(k for k in ("CREWAI_DISABLE_TELEMETRY",
                          "CREWAI_TRACING_ENABLED", "LITELLM_LOCAL_MODEL_COST_MAP", "CREWAI_STORAGE_DIR") if k in os.environ)}))
    """)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=60, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"heavy": [], "connections": [], "env": []}


# -- CrewAI (the llm extra) -----------------------------------------------------------------------


# crewai's own code uses fields it has deprecated
crewai_warnings = pytest.mark.filterwarnings("ignore::DeprecationWarning:crewai")


@pytest.fixture
def crewai_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """crewai importable; the files it writes (a key, task outputs) in tmp_path, not the home
    directory; the variables the narrator sets before importing it restored after the test."""
    monkeypatch.setenv("HOME", str(tmp_path))  # crewai writes under ~/.config and ~/.local/share
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / ".local" / "share"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    for name in crew_module.QUIET:
        monkeypatch.setenv(name, "unset-by-test")
        monkeypatch.delenv(name)
    pytest.importorskip("crewai")


def _outside_loopback(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every connection or name lookup this process makes to anything but 127.0.0.1, from now on."""
    seen: list[str] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self, address):  # type: ignore[no-untyped-def]
        if not (isinstance(address, tuple) and address[0] in ("127.0.0.1", "::1")):
            seen.append(repr(address))
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host not in ("127.0.0.1", "::1", "localhost"):
            seen.append(repr(host))
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return seen


@crewai_warnings
def test_the_crew_narrates_against_a_local_openai_compatible_server(crewai_env, monkeypatch: pytest.MonkeyPatch) -> None:
    findings = [grid(), cyber(), maintenance()]
    outside = _outside_loopback(monkeypatch)

    def reply(body: dict) -> str:
        system = next(m["content"] for m in body["messages"] if m["role"] == "system")
        return ANSWER if "Substation Incident Coordinator" in system else "Explained the findings."

    with OpenAIServer(reply=reply) as server:
        narrator = CrewAINarrator("openai", "granite-test", base_url=server.base_url, timeout_s=60)
        narrative = narrator.narrate(findings)
        calls = server.completions()
    assert narrative.fallback_reason == ""
    assert (narrative.source, narrative.model, narrative.text) == ("crewai-openai", "openai/granite-test", ANSWER)
    # one task per agent that reported, then the coordinator's
    assert len(calls) == 4
    systems = [c.message("system") for c in calls]
    assert "SCADA Security & Threat Monitoring Specialist" in systems[0]  # the worst first
    assert "Equipment Health & Predictive Maintenance Specialist" in systems[1]
    assert "Real-time Grid Operations Specialist" in systems[2]
    assert "Substation Incident Coordinator" in systems[3]
    coordinator_prompt = " ".join(m["content"] for m in calls[3].json["messages"] if isinstance(m["content"], str))
    assert '"evidence_sha256": "3fa1b2c4d5e6' in coordinator_prompt and "do not invent figures" in coordinator_prompt
    assert "Explained the findings." in coordinator_prompt  # the specialists' answers reach the coordinator
    assert outside == []  # no telemetry, no tracing, nothing but the local server


@crewai_warnings
def test_a_crew_that_times_out_falls_back_to_the_template(crewai_env, caplog: pytest.LogCaptureFixture) -> None:
    with OpenAIServer(behaviour="sleep", delay_s=30) as server:
        narrator = CrewAINarrator("openai", "granite-test", base_url=server.base_url, timeout_s=1)
        narrative = narrator.narrate([grid()])
        base_url = server.base_url
    _assert_fell_back(narrative, [grid()], caplog, f"CrewAI crew timed out after 1 s at {base_url}")


@crewai_warnings
def test_a_crew_whose_llm_fails_falls_back_to_the_template(crewai_env, caplog: pytest.LogCaptureFixture) -> None:
    with OpenAIServer(behaviour="error", status=500) as server:
        narrator = CrewAINarrator("openai", "granite-test", base_url=server.base_url, timeout_s=30)
        narrative = narrator.narrate([cyber()])
        base_url = server.base_url
    _assert_fell_back(narrative, [cyber()], caplog, f"CrewAI crew failed at {base_url}")


@crewai_warnings
def test_crewai_settings_build_the_crew_narrator(crewai_env) -> None:
    assert crewai_available()
    narrator = narrator_from_env({"SENTINEL_LLM": "crewai", "SENTINEL_LLM_PROVIDER": "openai",
                                  "SENTINEL_LLM_BASE_URL": "http://127.0.0.1:8000/v1", "SENTINEL_LLM_MODEL": "granite"})
    assert isinstance(narrator, CrewAINarrator) and narrator.source == "crewai-openai"
    assert narrator.model == "openai/granite"


@crewai_warnings
def test_crewai_on_watsonx_needs_litellm(crewai_env) -> None:
    env = {"SENTINEL_LLM": "crewai", "WATSONX_URL": "https://us-south.ml.cloud.ibm.com", "WATSONX_APIKEY": "k",
           "WATSONX_PROJECT_ID": "p"}
    if importlib.util.find_spec("litellm") is None:  # crewai 1.x routes watsonx models through LiteLLM
        with pytest.raises(NarrationConfigError, match=r"LiteLLM, which is not installed: pip install 'crewai\[litellm\]'"):
            narrator_from_env(env)
        return
    narrator = narrator_from_env(env)
    assert isinstance(narrator, CrewAINarrator) and narrator.source == "crewai-watsonx"
    assert narrator.model == "watsonx/ibm/granite-3-8b-instruct"
