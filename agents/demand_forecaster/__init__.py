"""Demand forecaster agent: the next 24-48 hours of a feeder's or substation's load, and the risk of
running out of capacity. A pure computation over the history the hub hands it (no storage, no HTTP).

``forecast(history, config, now)`` aggregates the load to hours and forecasts it, with at least three
weeks of history, with the day-ahead ridge forecaster (:mod:`agents.demand_forecaster.dayahead`,
numpy, fitted on the history each call; :mod:`agents.demand_forecaster.evaluate` scores it on real
load files) or an ONNX linear model handed in (:mod:`models.forecast_runtime`, trained by
:func:`train_model`), or, with less history, a weekly or daily profile. Either way each hour has a point forecast and an 80 % interval, and the
result carries the peak, the margin to capacity, the probability of exceeding it and, when a
threshold is crossed, a ``capacity_risk`` finding.
"""

from agents.demand_forecaster.forecaster import (
    AGENT,
    ForecastConfig,
    ForecastPoint,
    InsufficientHistory,
    LoadForecast,
    LoadHistory,
    forecast,
    train_model,
)
from agents.findings import Finding

__all__ = [
    "AGENT", "Finding", "ForecastConfig", "ForecastPoint", "InsufficientHistory", "LoadForecast", "LoadHistory",
    "forecast", "train_model",
]
