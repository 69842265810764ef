"""``sentinel edge init``: make a new box's firmware config from device templates, then enrol it.

A technician gives what only they know: the box's edge id and substation, the hub's address, and
each device as ``ID=TEMPLATE@HOST[:PORT][/UNIT]`` (a device model's register map is a template:
``firmware_configs/templates/``). Asked on a terminal for what is missing, or all by flags for a
scripted install. The config is validated exactly as ``sentinel edge run`` will read it before it
is written; the templates it names are copied beside it; with an enrolment token the box then
exchanges it for its credential (``sentinel edge enrol``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "config_text", "parse_device"]

REPO_TEMPLATES = Path(__file__).resolve().parent.parent / "firmware_configs" / "templates"
_DEVICE = re.compile(r"^(?P<id>[A-Za-z0-9][A-Za-z0-9_.-]*)=(?P<template>[A-Za-z0-9][A-Za-z0-9_.-]*)"
                     r"@(?P<host>[A-Za-z0-9.:\[\]-]+?)(?::(?P<port>\d{1,5}))?(?:/(?P<unit>\d{1,3}))?$")


class InitError(ValueError):
    pass


def parse_device(text: str) -> dict[str, Any]:
    """``FEEDER-F12=feeder-relay-11kv@10.1.0.8:502/2`` -> the [[devices]] entry's keys."""
    m = _DEVICE.match(text.strip())
    if m is None:
        raise InitError(f"--device {text!r}: write ID=TEMPLATE@HOST[:PORT][/UNIT], e.g. "
                        "FEEDER-F12=feeder-relay-11kv@10.1.0.8:502/2")
    entry: dict[str, Any] = {"id": m["id"], "template": m["template"], "host": m["host"]}
    if m["port"]:
        entry["port"] = int(m["port"])
    if m["unit"]:
        entry["unit_id"] = int(m["unit"])
    return entry


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_text(edge_id: str, substation: str, hub_url: str, devices: list[dict[str, Any]], *,
                buffer_path: str, ca_file: str = "") -> str:
    lines = ["# Made by `sentinel edge init`; every key is documented in README.md (Firmware configs).",
             "[identity]", f"edge_id = {_toml_value(edge_id)}", f"substation = {_toml_value(substation)}", "",
             "[hub]", f"url = {_toml_value(hub_url)}"]
    if ca_file:
        lines.append(f"ca_file = {_toml_value(ca_file)}")
    lines += ["", "[buffer]", f"path = {_toml_value(buffer_path)}"]
    for d in devices:
        lines += ["", "[[devices]]", *(f"{k} = {_toml_value(v)}" for k, v in d.items())]
    return "\n".join(lines) + "\n"


def _ask(value: str | None, prompt: str, flag: str, interactive: bool) -> str:
    if value:
        return value
    if not interactive:
        raise InitError(f"{flag} is missing (no terminal to ask on: give it as a flag)")
    answer = input(f"{prompt}: ").strip()
    if not answer:
        raise InitError(f"{flag}: nothing given")
    return answer


def cmd_init(args: argparse.Namespace) -> int:
    from protocols.config import ConfigError, load_config

    interactive = sys.stdin.isatty() and not args.token_stdin
    out = Path(args.out)
    try:
        if out.exists() and not args.force:
            raise InitError(f"{out} exists: --force to replace it")
        edge_id = _ask(args.edge_id, "edge id (as the hub's operator registered it, e.g. edge-kisumu-02)",
                       "--edge-id", interactive)
        substation = _ask(args.substation, "substation (e.g. KISUMU-S2)", "--substation", interactive)
        hub_url = _ask(args.hub_url, "hub URL as this box reaches it (https://...)", "--hub-url", interactive)
        specs = list(args.device or [])
        while interactive and not specs:
            line = input("device ID=TEMPLATE@HOST[:PORT][/UNIT] (empty line: done): ").strip()
            if not line:
                break
            specs.append(line)
        if not specs:
            raise InitError("no device: give --device ID=TEMPLATE@HOST[:PORT][/UNIT] (one per device)")
        devices = [parse_device(s) for s in specs]
        templates = Path(args.templates) if args.templates else REPO_TEMPLATES
        out.parent.mkdir(parents=True, exist_ok=True)
        used = sorted({d["template"] for d in devices})
        for name in used:  # the config reads its templates from beside it: copy the ones it names
            src = templates / f"{name}.toml"
            if not src.is_file():
                known = ", ".join(sorted(p.stem for p in templates.glob("*.toml"))) or "none"
                raise InitError(f"no device template {name!r} in {templates} (there: {known})")
        text = config_text(edge_id, substation, hub_url, devices, buffer_path=args.buffer, ca_file=args.ca_file or "")
        tmp = out.with_name(f".{out.name}.new")
        (out.parent / "templates").mkdir(exist_ok=True)
        for name in used:
            shutil.copyfile(templates / f"{name}.toml", out.parent / "templates" / f"{name}.toml")
        tmp.write_text(text)
        try:
            load_config(tmp)  # exactly as `edge run` reads it: refuse to write a config it would refuse
        except ConfigError as exc:
            tmp.unlink()
            raise InitError(str(exc).replace(str(tmp), str(out))) from None
        tmp.replace(out)
    except InitError as exc:
        print(f"sentinel: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {len(devices)} device{'s' if len(devices) != 1 else ''} from "
          f"{', '.join(used)} (templates copied to {out.parent / 'templates'})")
    if not (args.token or args.token_stdin):
        print(f"next: check the devices (sentinel edge check --config {out}), then enrol "
              f"(sentinel edge enrol --config {out} --token-stdin)")
        return 0
    from sentinel_cli.edge_enrol import cmd_enrol

    return cmd_enrol(argparse.Namespace(config=str(out), token=args.token, token_stdin=args.token_stdin,
                                        hub_url=None, env_file=args.env_file, force=args.force))


def add_parser(edge: Any) -> None:
    """Add ``init`` under ``sentinel edge``."""
    from sentinel_cli.edge_enrol import DEFAULT_ENV_FILE

    s = edge.add_parser("init", help="make this box's config from device templates (asks what is missing), "
                                     "then enrol it with a one-time token",
                        description="Write a firmware config from the box's identity, the hub's URL and its "
                                    "devices given as ID=TEMPLATE@HOST[:PORT][/UNIT], validated as `edge run` "
                                    "reads it; with --token/--token-stdin, enrol it too.")
    s.add_argument("--out", default="/etc/sentinel/edge.toml", help="the config to write (default %(default)s)")
    s.add_argument("--edge-id", default=None)
    s.add_argument("--substation", default=None)
    s.add_argument("--hub-url", default=None, help="the hub's URL as this box reaches it")
    s.add_argument("--ca-file", default=None, help="PEM bundle to trust for the hub (docs/tls.md)")
    s.add_argument("--device", action="append", metavar="ID=TEMPLATE@HOST[:PORT][/UNIT]",
                   help="a device (repeat for each), e.g. FEEDER-F12=feeder-relay-11kv@10.1.0.8:502/2")
    s.add_argument("--templates", default=None, help=f"where the device templates are (default {REPO_TEMPLATES})")
    s.add_argument("--buffer", default="/var/lib/sentinel/buffer.db", help="the buffer file (default %(default)s)")
    s.add_argument("--token", default=None, help="a one-time enrolment token: enrol right after")
    s.add_argument("--token-stdin", action="store_true", help="read the enrolment token from standard input")
    s.add_argument("--env-file", default=DEFAULT_ENV_FILE, help="where enrolment writes the credential")
    s.add_argument("--force", action="store_true", help="replace an existing config (and credential)")
    s.set_defaults(func=cmd_init)
