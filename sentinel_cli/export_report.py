"""``sentinel export report INCIDENT_ID [--format pdf|html] [--output FILE]``: an incident's report.

From a hub over HTTP (``--hub-url URL``, the key a viewer's API key in ``$SENTINEL_API_KEY``): the
hub renders it (``GET /incidents/{id}/report``). Or straight from a hub's database (``--database
URL``, default ``$SENTINEL_DATABASE_URL``), rendered here by the same code
(``hub.exports.report.load_report`` and ``export.report``). The file is written whole or not at all.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["add_parser", "cmd_report"]

API_KEY_ENV = "SENTINEL_API_KEY"


class ReportError(Exception):
    """What went wrong getting the report, in one line."""


def _from_hub(args: argparse.Namespace) -> bytes:
    import httpx

    url = f"{args.hub_url.rstrip('/')}/incidents/{quote(args.incident_id, safe='')}/report"
    key = os.environ.get(API_KEY_ENV, "")
    verify: Any = True
    if args.ca_file:
        try:
            verify = ssl.create_default_context(cafile=args.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ReportError(f"--ca-file {args.ca_file}: {exc}") from exc
    try:
        r = httpx.get(url, params={"format": args.format, "margin_s": args.margin},
                      headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=args.timeout, verify=verify)
    except httpx.HTTPError as exc:
        raise ReportError(f"cannot get the report from {args.hub_url}: {exc}") from exc
    if r.status_code == 200:
        return r.content
    try:
        detail = r.json().get("detail", "")
    except ValueError:
        detail = r.text[:200]
    if r.status_code == 401:
        hint = f"set ${API_KEY_ENV} to a viewer's API key" if not key else f"${API_KEY_ENV} is not a key the hub knows"
        raise ReportError(f"the hub refused the request (401: {detail}); {hint}")
    raise ReportError(f"the hub answered {r.status_code}: {detail}")


def _from_database(args: argparse.Namespace, url: str) -> bytes:
    from hub.exports.report import load_report, render
    from hub.storage import open_storage, parse_database_url
    from hub.storage.base import IncidentError

    kind, target = parse_database_url(url)
    if kind == "sqlite" and target != ":memory:" and not Path(target).is_file():
        raise ReportError(f"no hub database at {target}")  # opening it would make an empty one
    storage = open_storage(url)
    try:
        report = load_report(storage, args.incident_id, args.margin)
    except IncidentError as exc:
        raise ReportError(str(exc)) from exc
    finally:
        storage.close()
    return render(report, args.format)


def _write(path: str, body: bytes) -> None:
    if path == "-":
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(body)
    partial.replace(target)


def cmd_report(args: argparse.Namespace) -> int:
    from hub.exports.report import MAX_MARGIN_S

    if not 0 <= args.margin <= MAX_MARGIN_S:
        print(f"sentinel: error: export report: --margin must be from 0 to {MAX_MARGIN_S} seconds, not {args.margin}",
              file=sys.stderr)
        return 2
    database = args.database or (None if args.hub_url else os.environ.get("SENTINEL_DATABASE_URL"))
    if not args.hub_url and not database:
        print("sentinel: error: export report: give --hub-url URL (with $SENTINEL_API_KEY) or --database URL",
              file=sys.stderr)
        return 2
    output = args.output or f"{args.incident_id}.{args.format}"
    try:
        body = _from_hub(args) if args.hub_url else _from_database(args, database)
        _write(output, body)
    except ReportError as exc:
        print(f"sentinel: error: {exc}", file=sys.stderr)
        return 2
    print(f"report of {args.incident_id} ({args.format.upper()}, {len(body)} bytes) written to "
          f"{'stdout' if output == '-' else output}", file=sys.stderr if output == "-" else sys.stdout)
    return 0


def add_parser(actions: Any) -> None:
    """Add ``report`` under ``sentinel export``."""
    s = actions.add_parser(
        "report", help="an incident's report (PDF or HTML): timeline, readings, facts, evidence",
        description="Write an incident's report: from a hub over HTTP (--hub-url, with a viewer's API key in "
                    f"${API_KEY_ENV}), which renders it, or straight from a hub's database (--database, default "
                    "$SENTINEL_DATABASE_URL), rendered here by the same code. The file is written whole or not at all.")
    s.add_argument("incident_id", metavar="INCIDENT_ID", help="e.g. INC-2026-000042")
    s.add_argument("--format", choices=["pdf", "html"], default="pdf", help="pdf (default) or html")
    s.add_argument("--output", "-o", metavar="FILE", default=None,
                   help="where to write it (default INCIDENT_ID.pdf or .html in the current directory; - for stdout)")
    source = s.add_mutually_exclusive_group()
    source.add_argument("--hub-url", metavar="URL", default=None,
                        help=f"ask this hub, e.g. https://hub.example:8000 (key: ${API_KEY_ENV}, a viewer's or above)")
    source.add_argument("--database", metavar="URL", default=None,
                        help="read the hub's database directly (default $SENTINEL_DATABASE_URL)")
    s.add_argument("--margin", type=int, default=1800, metavar="SECONDS",
                   help="readings charted before the condition was first seen and after it was last seen "
                        "(default 1800)")
    s.add_argument("--ca-file", metavar="FILE", default=None,
                   help="with an https:// hub: trust these certificates (PEM) instead of the system's")
    s.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the hub (default 120)")
    s.set_defaults(func=cmd_report)
