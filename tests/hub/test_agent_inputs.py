"""What the hub hands the agents: the maintenance predictor's load forecast per substation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hub.insights.agent_inputs import substation_load_forecasts
from hub.storage.base import Document

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def _forecast(key: str, values: list[float], start: datetime = T0) -> Document:
    points = [[(start + timedelta(hours=i)).isoformat(), v, v * 0.9, v * 1.1] for i, v in enumerate(values)]
    return Document(kind="forecast", key=key, timestamp=T0, body={"points": points})


def test_two_feeders_of_one_substation_are_summed_not_one_chosen() -> None:
    # F1 peaks in the morning, F2 in the evening: the transformer carries both
    f1 = _forecast("NAIROBI-S1/F1", [5.0, 9.0, 5.0, 1.0])
    f2 = _forecast("NAIROBI-S1/F2", [1.0, 1.0, 5.0, 9.0])
    other = _forecast("MOMBASA-S1/F7", [3.0, 3.0, 3.0, 3.0])
    for docs in ([f1, f2, other], [f2, f1, other]):  # whatever order storage gives them in
        out = substation_load_forecasts(docs)
        assert out["NAIROBI-S1"].values == [6.0, 10.0, 10.0, 10.0]
        assert out["MOMBASA-S1"].values == [3.0, 3.0, 3.0, 3.0]
        assert out["NAIROBI-S1"].timestamps[0] == T0


def test_only_the_hours_every_feeder_forecasts_are_summed() -> None:
    f1 = _forecast("S/F1", [1.0, 2.0, 3.0])
    f2 = _forecast("S/F2", [10.0, 20.0, 30.0], start=T0 + timedelta(hours=1))
    out = substation_load_forecasts([f1, f2, Document(kind="forecast", key="S/F3", timestamp=T0, body={})])
    assert out["S"].timestamps == [T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
    assert out["S"].values == [12.0, 23.0]
    assert substation_load_forecasts([]) == {}
