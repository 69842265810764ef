"""``sentinel export readings|comtrade|report``: each a thin layer over a writer in ``export/``."""

from __future__ import annotations

from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    from sentinel_cli import export_comtrade, export_readings, export_report

    export = sub.add_parser("export", help="get data out: readings (CSV, Parquet), COMTRADE, incident reports")
    actions = export.add_subparsers(dest="export_command", required=True, metavar="WHAT")
    for module in (export_readings, export_comtrade, export_report):
        module.add_parser(actions)
