"""On real transformer data (ETTh1, when ../shared/data is present): the detectors find the data's own
frozen days and raise few other alarms. Skipped without the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.detectors import ANOMALY_TYPES, DetectorBank
from models.evaluation import alarm_onsets, frozen_stretches
from models.tabular import read_csv

ETTH1 = Path(__file__).resolve().parents[3] / "shared" / "data" / "ett" / "ETTh1.csv"

pytestmark = pytest.mark.skipif(not ETTH1.is_file(), reason=f"{ETTH1} not present")


def test_oil_temperature_alarms_are_the_frozen_days_and_few_others() -> None:
    ot = read_csv(ETTH1, columns=["OT"]).columns["OT"]
    out = DetectorBank(1).update(ot[None])
    onsets = alarm_onsets(out.score[0])
    onsets = onsets[onsets >= 500]
    days = [(s, n) for s, n in frozen_stretches(ot) if n >= 24]
    assert len(days) == 14  # whole days on which every column repeats one value
    for start, length in days:
        hits = onsets[(onsets >= start) & (onsets < start + length)]
        assert len(hits) and ANOMALY_TYPES[out.type[0, hits[0]]] == "frozen", f"frozen day at row {start}"
    inside = np.zeros(len(ot), dtype=bool)
    for start, length in frozen_stretches(ot):
        inside[start:start + length] = True
    others = onsets[~inside[onsets]]
    assert len(others) <= 10, f"{len(others)} alarms outside frozen stretches: {others}"
