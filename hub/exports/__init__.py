"""Getting data out of the hub: readings as CSV or Parquet, COMTRADE records, incident reports.

Each module holds its routes (role-protected, streaming) over the writers in ``export/``."""

from __future__ import annotations

from hub.exports import comtrade, readings, report

__all__ = ["ROUTES"]

ROUTES = [*readings.ROUTES, *comtrade.ROUTES, *report.ROUTES]
