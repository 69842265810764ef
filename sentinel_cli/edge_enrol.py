"""``sentinel edge enrol``: a new box exchanges the one-time enrolment token an admin made at the hub
(``sentinel hub edges enrolment``, or ``POST /edges/enrolments``) for its own credential, once, and
keeps it in the environment file the service reads (``EnvironmentFile=`` of the systemd unit),
readable by its owner only. The token never appears in the config file."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]

DEFAULT_ENV_FILE = "/etc/sentinel/edge.env"


def _write_env(path: Path, var: str, value: str) -> None:
    """Set ``var=value`` in the env file (other lines kept), written whole to a 0600 file, then renamed."""
    lines = [ln for ln in (path.read_text().splitlines() if path.exists() else [])
             if not ln.strip().startswith(f"{var}=")]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join([*lines, f"{var}={value}"]) + "\n")
    os.replace(tmp, path)


async def _exchange(hub: Any, token: str, edge_id: str) -> dict:
    import httpx

    from edge.hubclient import hub_client

    async with hub_client(hub, token="-") as client:
        client.headers.pop("authorization", None)  # the enrolment token goes in the body, nothing else
        try:
            r = await client.post("/edges/enrol", json={"token": token, "edge_id": edge_id})
        except httpx.HTTPError as exc:
            raise RuntimeError(f"cannot reach the hub at {hub.url}: {exc or type(exc).__name__}") from None
    if r.status_code != 201:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text[:200]
        raise RuntimeError(f"the hub at {hub.url} refused the enrolment ({r.status_code}): {detail}")
    return r.json()


def cmd_enrol(args: argparse.Namespace) -> int:
    import msgspec

    from protocols.config import load_config

    config = load_config(args.config)
    hub = config.hub if not args.hub_url else msgspec.structs.replace(config.hub, url=args.hub_url)
    token = sys.stdin.readline().strip() if args.token_stdin else (args.token or "").strip()
    if not token:
        print("sentinel: error: no enrolment token: --token TOKEN or --token-stdin", file=sys.stderr)
        return 2
    env_file = Path(args.env_file)
    var = config.hub.token_env
    if env_file.exists() and any(ln.startswith(f"{var}=") and ln.split("=", 1)[1].strip()
                                 for ln in env_file.read_text().splitlines()) and not args.force:
        print(f"sentinel: error: {env_file} already holds {var}: this box is enrolled (--force to enrol it again "
              "and replace the credential)", file=sys.stderr)
        return 2
    try:
        got = asyncio.run(_exchange(hub, token, config.identity.edge_id))
    except RuntimeError as exc:
        print(f"sentinel: error: {exc}", file=sys.stderr)
        return 1
    try:
        _write_env(env_file, var, got["token"])
    except OSError as exc:
        print(f"sentinel: error: enrolled as {got['edge_id']} (credential {got['credential_id']}), but {env_file} "
              f"cannot be written: {exc.strerror or exc}; ask the admin to revoke {got['credential_id']} and "
              "enrol again with --env-file pointing somewhere writable", file=sys.stderr)
        return 1
    print(f"enrolled {got['edge_id']} at {hub.url} (credential {got['credential_id']}"
          + (f", substation {got['substation']}" if got["substation"] else "") + f"); {var} is in {env_file} "
          "(mode 0600): start the service, or `sentinel edge run` with that file's variables set")
    return 0


def add_parser(edge: Any) -> None:
    """Add ``enrol`` under ``sentinel edge``."""
    s = edge.add_parser("enrol", help="exchange a one-time enrolment token for this box's own credential",
                        description="Send the enrolment token an admin made at the hub (sentinel hub edges "
                                    "enrolment) once, with this box's edge id from its config, and keep the "
                                    "credential the hub answers in the service's environment file.")
    s.add_argument("--config", required=True, help="the box's firmware config (edge id, hub URL, TLS)")
    s.add_argument("--token", default=None, help="the enrolment token (or --token-stdin, kept out of shell history)")
    s.add_argument("--token-stdin", action="store_true", help="read the token from standard input")
    s.add_argument("--hub-url", default=None, help="the hub's URL (default: the config's [hub] url)")
    s.add_argument("--env-file", default=DEFAULT_ENV_FILE,
                   help=f"where the credential goes, as VAR=value (default {DEFAULT_ENV_FILE}, the unit's EnvironmentFile)")
    s.add_argument("--force", action="store_true", help="enrol again, replacing the credential in --env-file")
    s.set_defaults(func=cmd_enrol)
