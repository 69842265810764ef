"""``sentinel export comtrade``: the readings around an incident, or of devices in a window, as a
COMTRADE record (IEEE C37.111-2013), from a hub over HTTP (``GET /export/comtrade``, with the key
in ``$SENTINEL_API_KEY``) or straight from a hub's database. Writes ``NAME.cfg``, ``NAME.dat`` and
``NAME.hdr`` into a directory, or a ``.zip`` of them, or one ``.cff``.
"""

from __future__ import annotations

import argparse
import io
import os
import zipfile
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["add_parser"]

API_KEY_ENV = "SENTINEL_API_KEY"
FORMATS = ("ascii", "binary", "binary32")  # export.comtrade.FORMATS, without importing it to build the parser
_FLAGS = {"incident": "--incident", "margin_s": "--margin", "substation": "--substation", "device_id": "--device",
          "start": "--start", "end": "--end", "format": "--format", "align_ms": "--align-ms"}
_KINDS = (".cfg", ".dat", ".hdr")


def add_parser(actions: Any) -> None:
    """Add ``comtrade`` under ``sentinel export``."""
    p = actions.add_parser(
        "comtrade", help="readings around an incident, or of devices in a window, as a COMTRADE record",
        description="Write the readings around an incident (--incident), or of a substation's devices in a window "
                    "(--substation, --device, --start, --end), as a COMTRADE record (IEEE C37.111-2013): NAME.cfg, "
                    "NAME.dat and NAME.hdr in --output DIR, or --output FILE.zip, or one --output FILE.cff. From a "
                    f"hub (--hub-url, a viewer's API key in ${API_KEY_ENV}) or its database (--database).")
    what = p.add_argument_group("what to export: --incident, or --substation, --device, --start and --end")
    what.add_argument("--incident", metavar="ID", help="an incident (INC-2026-000042): its device, around its findings")
    what.add_argument("--margin", type=float, default=300.0, metavar="S",
                      help="with --incident: seconds before its first finding and after its last (default 300)")
    what.add_argument("--substation", metavar="S", help="the substation of the devices")
    what.add_argument("--device", action="append", metavar="D",
                      help="a device (repeatable); with --incident, devices added to the incident's")
    what.add_argument("--start", metavar="ISO", help="the window's start, with a zone (2026-03-01T10:00:00Z)")
    what.add_argument("--end", metavar="ISO", help="the window's end (excluded), with a zone")
    how = p.add_argument_group("the record")
    how.add_argument("--format", choices=FORMATS, default="binary",
                     help="the .dat: ascii, binary (16-bit, the default) or binary32")
    how.add_argument("--align-ms", type=float, default=0.0, metavar="MS",
                     help="readings of different channels within MS of a sample's first share that sample "
                          "(default 0: each reading at its own instant)")
    how.add_argument("--output", "-o", required=True, metavar="DIR|FILE.zip|FILE.cff",
                     help="a directory (made if need be) for NAME.cfg, NAME.dat, NAME.hdr; or a .zip; or a .cff")
    src = p.add_argument_group("where from (one of)").add_mutually_exclusive_group(required=True)
    src.add_argument("--hub-url", metavar="URL", help=f"a hub (http(s)://host:port); the key in ${API_KEY_ENV}")
    src.add_argument("--database", metavar="URL", help="a hub's database (sqlite:///hub.db, postgresql://...)")
    p.add_argument("--ca-file", metavar="PEM", help="with an https --hub-url: the CA certificate(s) to trust")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start, end = _time("--start", args.start), _time("--end", args.end)
    if args.hub_url:
        files = _from_hub(args, start, end)
    else:
        files = _from_database(args, start, end)
    print(_save(files, args.format, Path(args.output)))
    return 0


def _time(flag: str, text: str | None) -> datetime | None:
    from protocols.validation import parse_zoned_time  # numpy: not on the parser's path

    return None if text is None else parse_zoned_time(text, flag)


def _from_database(args: argparse.Namespace, start: datetime | None, end: datetime | None) -> dict[str, bytes]:
    from hub.exports.comtrade import ComtradeQuery, ExportError, build_export
    from hub.storage import open_storage, parse_database_url

    kind, target = parse_database_url(args.database)
    if kind == "sqlite" and not Path(target).is_file():  # opening it would make an empty database
        raise ValueError(f"--database: no database file at {target}")
    query = ComtradeQuery(incident=args.incident, margin_s=args.margin, substation=args.substation,
                          device_ids=tuple(args.device or ()), start=start, end=end, fmt=args.format,
                          align_s=args.align_ms / 1000)
    storage = open_storage(args.database)
    try:
        return build_export(storage, query).files()
    except ExportError as exc:
        raise ValueError(f"{_FLAGS.get(exc.field, exc.field)}: {exc.message}") from None
    finally:
        storage.close()


def _from_hub(args: argparse.Namespace, start: datetime | None, end: datetime | None) -> dict[str, bytes]:
    import httpx

    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise ValueError(f"--hub-url needs a viewer's API key in ${API_KEY_ENV} "
                         "(an admin makes one: sentinel hub keys create NAME --role viewer)")
    params: list[tuple[str, str]] = [("format", args.format), ("align_ms", f"{args.align_ms:g}")]
    if args.incident:
        params += [("incident", args.incident), ("margin_s", f"{args.margin:g}")]
    for name, value in (("substation", args.substation), ("start", start and start.isoformat()),
                        ("end", end and end.isoformat())):
        if value:
            params.append((name, value))
    params += [("device_id", d) for d in args.device or ()]
    url = args.hub_url.rstrip("/") + "/export/comtrade"
    try:
        r = httpx.get(url, params=params, headers={"Authorization": f"Bearer {key}"}, timeout=300,
                      verify=args.ca_file or True, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise ValueError(f"cannot reach the hub at {args.hub_url}: {exc}") from None
    if r.status_code != 200:
        raise ValueError(f"the hub answered {r.status_code}: {_why(r)}")
    try:
        with zipfile.ZipFile(io.BytesIO(r.content)) as z:
            # names as the hub gave them, but never a path: a file lands only where --output says
            return {PurePosixPath(n).name: z.read(n) for n in z.namelist() if n.endswith(_KINDS)}
    except zipfile.BadZipFile:
        raise ValueError(f"the hub's answer is not a zip archive ({r.headers.get('content-type', '?')})") from None


def _why(r: Any) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:200] or r.reason_phrase
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict) and errors[0].get("key"):
        key = errors[0]["key"]
        return f"{_FLAGS.get(key, key)}: {errors[0].get('message', '')}"
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)


def _save(files: dict[str, bytes], fmt: str, output: Path) -> str:
    from export.comtrade import cff_bytes

    by_kind = {Path(n).suffix: (n, data) for n, data in files.items()}
    if ".cfg" not in by_kind or ".dat" not in by_kind:
        raise ValueError(f"the record lacks its .cfg or .dat (got {', '.join(sorted(files)) or 'nothing'})")
    name = Path(by_kind[".cfg"][0]).stem
    if output.suffix.lower() == ".zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for n, data in files.items():
                z.writestr(n, data)
        output.write_bytes(buf.getvalue())
        return f"wrote {output} ({', '.join(sorted(files))})"
    if output.suffix.lower() == ".cff":
        hdr = by_kind.get(".hdr", ("", b""))[1]
        output.write_bytes(cff_bytes(by_kind[".cfg"][1], by_kind[".dat"][1], fmt, hdr=hdr))
        return f"wrote {output} (record {name})"
    output.mkdir(parents=True, exist_ok=True)
    for n, data in files.items():
        (output / n).write_bytes(data)
    return f"wrote {', '.join(sorted(files))} to {output}"
