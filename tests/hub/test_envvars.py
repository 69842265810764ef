"""hub.envvars.env_number: every numeric hub setting is parsed, bounded and reported the same way."""

from __future__ import annotations

import pytest

from hub.envvars import env_number
from hub.settings import Settings


def test_unset_or_blank_is_none() -> None:
    assert env_number("X", {}) is None
    assert env_number("X", {"X": "  "}) is None


@pytest.mark.parametrize(("text", "kwargs", "value"), [
    ("2.5", {}, 2.5), (" 7 ", {"whole": True}, 7), ("0", {"at_least": 0}, 0.0), ("1e3", {"above": 0}, 1000.0),
])
def test_accepts(text: str, kwargs: dict, value: float) -> None:
    got = env_number("X", {"X": text}, **kwargs)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(("text", "kwargs", "message"), [
    ("soon", {}, "X: not a number: 'soon'"),
    ("2.5", {"whole": True}, "X: not a whole number: '2.5'"),
    ("nan", {}, "X: not a finite number: 'nan'"),
    ("inf", {"above": 0}, "X: not a finite number: 'inf'"),
    ("0", {"above": 0}, "X: must be a number > 0, not 0"),
    ("-1", {"at_least": 0}, "X: must be a number >= 0, not -1"),
    ("0", {"whole": True, "at_least": 1}, "X: must be a whole number >= 1, not 0"),
])
def test_refuses_naming_the_variable(text: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        env_number("X", {"X": text}, **kwargs)
    assert str(err.value) == message


@pytest.mark.parametrize(("var", "text", "message"), [
    ("SENTINEL_WS_HEARTBEAT_S", "-3", "SENTINEL_WS_HEARTBEAT_S: must be a number > 0, not -3"),
    ("SENTINEL_AGENT_INTERVAL_S", "0", "SENTINEL_AGENT_INTERVAL_S: must be a number > 0, not 0"),
    ("SENTINEL_AGENT_BUDGET_S", "-5", "SENTINEL_AGENT_BUDGET_S: must be a number > 0, not -5"),
    ("SENTINEL_SESSION_TTL_S", "forever", "SENTINEL_SESSION_TTL_S: not a number: 'forever'"),
    ("SENTINEL_WEBHOOK_MAX_ATTEMPTS", "3.5", "SENTINEL_WEBHOOK_MAX_ATTEMPTS: not a whole number: '3.5'"),
    ("SENTINEL_LIVENESS_CHECK_S", "nan", "SENTINEL_LIVENESS_CHECK_S: not a finite number: 'nan'"),
])
def test_hub_settings_fail_at_start_naming_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, text: str,
                                                        message: str) -> None:
    monkeypatch.setenv(var, text)
    with pytest.raises(ValueError) as err:
        Settings.from_env()
    assert message in str(err.value)


def test_the_agents_budget_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().agents.budget_s == 30.0
    monkeypatch.setenv("SENTINEL_AGENT_BUDGET_S", "120")
    assert Settings.from_env().agents.budget_s == 120.0


def test_an_ingest_rate_of_zero_still_means_no_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_INGEST_RATE", "0")
    monkeypatch.setenv("SENTINEL_WS_HEARTBEAT_S", "2.5")
    s = Settings.from_env()
    assert s.ingest_rate_per_s == 0.0 and s.stream.heartbeat_s == 2.5
