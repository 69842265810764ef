from __future__ import annotations

import jsonschema
import msgspec
import pytest

from protocols.reading import QualityFlag
from protocols.telemetry import SensorBatch, TelemetryReading, schema

SEED = {"device_id": "FEEDER-F12", "sensor_type": "voltage", "value": 218.5,
        "timestamp": "2026-03-01T10:15:23Z", "quality": 0.98}


def test_schema_is_valid_and_accepts_the_seed_reading() -> None:
    s = schema()
    jsonschema.Draft202012Validator.check_schema(s)
    jsonschema.validate(SEED, s)
    r = msgspec.convert(SEED, TelemetryReading, strict=False)
    reading = r.to_reading("UNASSIGNED")
    assert (reading.metric, reading.value, reading.quality, reading.substation) == ("voltage", 218.5, 0.98, "UNASSIGNED")
    assert reading.ts.utcoffset().total_seconds() == 0


@pytest.mark.parametrize(
    "bad",
    [
        {k: v for k, v in SEED.items() if k != "device_id"},
        {**SEED, "value": "218"},
        {**SEED, "quality": 1.5},
        {**SEED, "timestamp": "yesterday"},
        {**SEED, "colour": "red"},
        {**SEED, "quality_flags": ["sparkly"]},
    ],
)
def test_schema_and_decoder_refuse_the_same_bad_readings(bad: dict) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema(), format_checker=jsonschema.FormatChecker())
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode({"sensor_readings": [bad]}), type=SensorBatch)


def test_optional_fields_map_onto_the_reading() -> None:
    r = msgspec.convert({**SEED, "metric": "voltage_l1", "unit": "kV", "substation": "NAIROBI-S1",
                         "quality_flags": ["stale", "substituted"]}, TelemetryReading, strict=False)
    reading = r.to_reading("X")
    assert reading.metric == "voltage_l1" and reading.unit == "kV" and reading.substation == "NAIROBI-S1"
    assert reading.flags == QualityFlag.STALE | QualityFlag.SUBSTITUTED
