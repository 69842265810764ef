"""Words for findings: what a metric measures, what a device is, what to do about it, and numbers.

Template text only, built from the facts; the figures themselves are in each finding's ``facts``.
"""

from __future__ import annotations

from protocols.reading import sensor_type

__all__ = ["MODEL_NAMES", "QUALITY_QUANTITIES", "device_kind", "format_pct", "format_value", "quantity",
           "recommendation"]

# metric -> what an operator calls it (default: the sensor type with spaces)
_QUANTITIES = {
    "oil_temperature": "temperature",
    "top_oil_temperature": "temperature",
    "oil_moisture": "oil quality",
    "oil_moisture_ppm": "oil quality",
    "oil_dielectric_strength": "oil quality",
    "oil_acidity": "oil quality",
    "oil_quality": "oil quality",
    "dissolved_gas": "oil quality",
    "tdcg_ppm": "oil quality",
    "h2_ppm": "oil quality",
}
QUALITY_QUANTITIES = frozenset({"oil quality"})
"""Quantities whose anomaly reads as a condition getting worse ("Oil quality also degrading.")."""

_KINDS = (("TR", "transformer"), ("TX", "transformer"), ("FEEDER", "feeder"), ("FDR", "feeder"), ("BUS", "busbar"),
          ("CB", "breaker"), ("BRK", "breaker"), ("CAP", "capacitor bank"), ("GEN", "generator"))

MODEL_NAMES = {"isolation_forest": "Isolation Forest", "lof": "LOF", "mahalanobis": "Mahalanobis",
               "risk_classifier": "Risk classifier"}

_THERMAL = "Recommend thermal inspection."
_RECOMMENDATIONS = {
    "temperature": "Recommend inspection of {device}: check the load, cooling and the sensor.",
    "winding temperature": _THERMAL,
    "oil quality": "Recommend an oil sample from {device} for dissolved-gas, moisture and dielectric analysis.",
    "frequency": ("Inform the system operator; check that under-frequency load shedding is armed and review "
                  "generation dispatch."),
    "voltage": "Check the tap changer, capacitor-bank switching and protection operations at {substation}.",
    "current": "Check {device} for a fault, a large load change or a metering fault.",
    "load current": "Check {device} for a fault, a large load change or a metering fault.",
    "active power": "Check {device} for a fault, a large load change or a metering fault.",
    "power factor": "Check the capacitor banks and reactive compensation on {device}.",
    "vibration": "Recommend a vibration inspection of {device} (core and winding clamping, fans, pumps).",
}
_DATA_QUALITY = {
    "dropout": "Check the sensor and its communication link: {device} {metric} is missing readings.",
    "frozen": "Check the sensor and the gateway: {device} {metric} repeats one value (stuck sensor or stale cache).",
}


def quantity(metric: str) -> str:
    """``oil_temperature`` -> ``temperature``, ``voltage_l1`` -> ``voltage``, ``oil_moisture`` -> ``oil quality``."""
    return _QUANTITIES.get(metric) or sensor_type(metric).replace("_", " ")


def device_kind(device_id: str, given: str = "") -> str:
    """The kind of equipment, capitalised: the given one, else from the id's prefix (``TR-07``)."""
    if given:
        return given[:1].upper() + given[1:]
    head = device_id.upper().split("-")[0].rstrip("0123456789")
    for prefix, kind in _KINDS:
        if head == prefix:
            return kind.capitalize()
    return "Device"


def recommendation(metric: str, anomaly_type: str, kind: str, device: str, substation: str) -> str:
    """What to do: a data-quality check for dropouts and frozen values, else by quantity; a
    temperature anomaly on a transformer calls for a thermal inspection."""
    if anomaly_type in _DATA_QUALITY:
        return _DATA_QUALITY[anomaly_type].format(device=device, metric=metric)
    q = quantity(metric)
    if kind.lower() == "transformer" and q.endswith("temperature"):
        return _THERMAL
    template = _RECOMMENDATIONS.get(q, "Inspect {device} {metric} and compare it with the neighbouring sensors.")
    return template.format(device=device, substation=substation, metric=metric)


def format_value(value: float, unit: str) -> str:
    """``65°C``, ``49.62 Hz``, ``0.93``: four significant figures, degrees stuck to the number."""
    number = f"{value:.4g}"
    if not unit:
        return number
    if unit in {"°C", "C", "degC"}:
        return f"{number}°C"
    return f"{number} {unit}"


def format_pct(pct: float) -> str:
    """``+12%``, ``-0.8%``: whole percent from 10 % up, one decimal below."""
    return f"{pct:+.0f}%" if abs(pct) >= 10 else f"{pct:+.1f}%"
