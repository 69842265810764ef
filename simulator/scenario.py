"""Scenario files: which anomalies to inject where and when, validated before anything runs.

A scenario is a JSON file checked against ``simulator/schemas/scenario.schema.json`` (draft 2020-12)
and then converted into frozen msgspec structs. Every error names the file and the JSON path::

    scenarios/bad.json: anomalies[1].drop_probability: is required for type 'dropout'

Sizes: ``magnitude`` is absolute, in the metric's unit; ``magnitude_pct`` and ``amplitude_pct``
(the seed's name, oscillations only) are FRACTIONS of the point's nominal: 0.11 means 11 %.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal

import jsonschema
import msgspec
from jsonschema.exceptions import ValidationError, best_match

from protocols.config import FirmwareConfig, LocatedError
from protocols.mqtt.config import MqttDevice
from protocols.reading import sensor_type as sensor_type_of
from simulator.mqtt_publisher import CorruptionKind
from simulator.plant import DeviceInfo, Plant, PointInfo

__all__ = [
    "SCHEMA_PATH",
    "Anomaly",
    "AnomalyType",
    "Fault",
    "FaultType",
    "Scenario",
    "ScenarioError",
    "check_scenario",
    "load_scenario",
    "parse_scenario",
    "resolve_faults",
    "resolve_targets",
]

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "scenario.schema.json"

AnomalyType = Literal["drift", "step", "spike", "oscillation", "dropout"]


class ScenarioError(LocatedError):
    """A scenario that cannot be used. ``str()`` is one line: file, JSON path, what is wrong."""


class Anomaly(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One anomaly, active on [start_time, start_time + duration_seconds) in scenario seconds."""

    type: AnomalyType
    sensor_type: str
    device_id: str
    start_time: float
    duration_seconds: float
    substation: str | None = None
    metric: str | None = None
    magnitude: float | None = None  # absolute, in the metric's unit
    magnitude_pct: float | None = None  # FRACTION of nominal (0.05 = 5 %)
    amplitude_pct: float | None = None  # the seed's magnitude_pct for oscillations
    frequency_hz: float | None = None
    drop_probability: float | None = None

    @property
    def end_time(self) -> float:
        return self.start_time + self.duration_seconds

    @property
    def fraction_of_nominal(self) -> float | None:
        """The size as a fraction of nominal, if it was given that way."""
        return self.magnitude_pct if self.magnitude_pct is not None else self.amplitude_pct


FaultType = Literal["device_stop", "server_restart", "corrupt_payload"]


class Fault(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Something that happens to a device or its server over [start, start + duration): it stops
    answering (``device_stop``), its server restarts (``server_restart``), or, for an MQTT device,
    it sends corrupt payloads (``corrupt_payload``: ``count`` a second, of ``kind`` or every kind
    in turn)."""

    type: FaultType
    device_id: str
    start_time: float
    duration_seconds: float
    substation: str | None = None
    count: float | None = None  # corrupt_payload: payloads per scenario second (default 1)
    kind: CorruptionKind | None = None  # corrupt_payload: one kind (default: every kind in turn)

    @property
    def end_time(self) -> float:
        return self.start_time + self.duration_seconds


class Scenario(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    scenario_name: str
    duration_seconds: float
    anomalies: list[Anomaly]
    description: str = ""
    faults: list[Fault] = []
    source: str = ""  # where it was loaded from; set by the loader, not part of the file


@cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _json_path(parts: Sequence[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(error: ValidationError, data: Any) -> tuple[str, str]:
    """(JSON path, message) for one schema error, worded for people who write scenarios."""
    parts = list(error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        parent = _at(data, parts)
        kind = parent.get("type") if isinstance(parent, dict) else None
        why = f" for type {kind!r}" if kind and parts else ""
        return _json_path([*parts, missing]), f"is required{why}"
    if error.validator == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - known)
        return _json_path([*parts, extra[0]] if extra else parts), "unknown key"
    if error.schema is False:  # a key forbidden for this type; jsonschema leaves its name off the path
        parent = _at(data, parts)
        keys = [k for k, v in parent.items() if v is error.instance] if isinstance(parent, dict) else []
        kind = parent.get("type") if isinstance(parent, dict) else None
        return _json_path(parts + keys[:1]), f"not allowed for type {kind!r}"
    if error.validator == "oneOf" and isinstance(error.schema, dict) and "x-message" in error.schema:
        return _json_path(parts), error.schema["x-message"]
    return _json_path(parts), error.message


def _at(data: Any, parts: Sequence[str | int]) -> Any:
    for part in parts:
        data = data[part]
    return data


def parse_scenario(text: str | bytes, source: str = "<scenario>") -> Scenario:
    """Parse and validate a scenario from JSON text. Raises :class:`ScenarioError`."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioError(source, "", f"not valid JSON: {exc}") from exc
    errors = list(_validator().iter_errors(data))
    if errors:
        path, message = _describe(best_match(errors), data)
        raise ScenarioError(source, path, message)
    try:
        scenario = msgspec.convert(data, Scenario)
    except msgspec.ValidationError as exc:  # the schema should have caught it: report it the same way
        raise ScenarioError(source, "", str(exc)) from exc
    for i, anomaly in enumerate(scenario.anomalies):
        if anomaly.end_time > scenario.duration_seconds:
            raise ScenarioError(
                source, f"anomalies[{i}].duration_seconds",
                f"the anomaly ends at {anomaly.end_time:g} s, after the scenario's duration_seconds "
                f"{scenario.duration_seconds:g}",
            )
        if anomaly.metric is not None and sensor_type_of(anomaly.metric) != anomaly.sensor_type:
            raise ScenarioError(
                source, f"anomalies[{i}].metric",
                f"{anomaly.metric!r} is a {sensor_type_of(anomaly.metric)!r} point, not {anomaly.sensor_type!r}",
            )
    for i, fault in enumerate(scenario.faults):
        if fault.end_time > scenario.duration_seconds:
            raise ScenarioError(
                source, f"faults[{i}].duration_seconds",
                f"the fault ends at {fault.end_time:g} s, after the scenario's duration_seconds "
                f"{scenario.duration_seconds:g}",
            )
    return msgspec.structs.replace(scenario, source=source)


def load_scenario(path: str | os.PathLike[str], configs: Sequence[FirmwareConfig] | None = None) -> Scenario:
    """Load and validate a scenario file; with ``configs``, also check that its devices and points exist."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as exc:
        raise ScenarioError(str(p), "", f"cannot read: {exc.strerror}") from exc
    scenario = parse_scenario(text, str(p))
    if configs is not None:
        check_scenario(scenario, Plant(configs))
    return scenario


def resolve_targets(scenario: Scenario, plant: Plant) -> list[list[PointInfo]]:
    """The points each anomaly hits, in anomaly order. Raises :class:`ScenarioError` if one hits nothing."""
    source = scenario.source or scenario.scenario_name
    targets: list[list[PointInfo]] = []
    for i, a in enumerate(scenario.anomalies):
        devices = plant.find_devices(a.device_id, a.substation)
        if not devices:
            known = ", ".join(sorted({d.id for d in plant.devices}))
            where = f" in substation {a.substation!r}" if a.substation else ""
            raise ScenarioError(source, f"anomalies[{i}].device_id", f"no device {a.device_id!r}{where} in the configs (known: {known})")
        points = [
            p for d in devices for p in plant.points_of(d)
            if p.sensor_type == a.sensor_type and (a.metric is None or p.metric == a.metric)
        ]
        if not points:
            have = sorted({p.sensor_type if a.metric is None else p.metric for d in devices for p in plant.points_of(d)})
            field, wanted = ("metric", a.metric) if a.metric else ("sensor_type", a.sensor_type)
            raise ScenarioError(source, f"anomalies[{i}].{field}", f"{a.device_id} has no {wanted!r} point (it has: {', '.join(have)})")
        if a.fraction_of_nominal is not None:
            bare = [p.metric for p in points if p.nominal is None]
            if bare:
                field = "magnitude_pct" if a.magnitude_pct is not None else "amplitude_pct"
                raise ScenarioError(
                    source, f"anomalies[{i}].{field}",
                    f"{a.device_id} {', '.join(bare)} has no nominal in its config; give an absolute magnitude",
                )
        targets.append(points)
    return targets


def check_scenario(scenario: Scenario, plant: Plant) -> None:
    """Raise :class:`ScenarioError` unless every anomaly hits at least one point of the plant and
    every fault names a device of it."""
    resolve_targets(scenario, plant)
    resolve_faults(scenario, plant)


def resolve_faults(scenario: Scenario, plant: Plant) -> list[list[DeviceInfo]]:
    """The devices each fault hits, in fault order."""
    source = scenario.source or scenario.scenario_name
    out = []
    for i, f in enumerate(scenario.faults):
        devices = plant.find_devices(f.device_id, f.substation)
        if not devices:
            known = ", ".join(sorted({d.id for d in plant.devices}))
            raise ScenarioError(source, f"faults[{i}].device_id",
                                f"no device {f.device_id!r} in the configs (known: {known})")
        if f.type == "corrupt_payload":
            other = next((d for d in devices if not isinstance(d.device, MqttDevice)), None)
            if other is not None:
                raise ScenarioError(source, f"faults[{i}].device_id",
                                    f"corrupt_payload needs an MQTT device; {other.substation} {other.id} is "
                                    f"{type(other.device).__struct_config__.tag}")
        out.append(devices)
    return out
