"""``sentinel hub users|keys|edges|audit``: credentials and the audit log, straight on the hub's
database (run on the hub's machine, as the service's user). A secret is printed once, on its own
line last, so a script can take it with ``| tail -n1``; nothing but its hash is kept.

Every change is recorded in the audit log as ``cli:<login>`` from ``local``."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

__all__ = ["add_parsers"]


def _auth(args: argparse.Namespace) -> Any:
    from hub.auth.store import AuthStore
    from hub.settings import DEFAULT_DATABASE_URL
    from hub.storage import open_storage

    url = args.database or os.environ.get("SENTINEL_DATABASE_URL") or DEFAULT_DATABASE_URL
    return AuthStore(open_storage(url))


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


def _run(args: argparse.Namespace, action: Any) -> int:
    from hub.auth.store import AuthError

    store = _auth(args)
    try:
        return action(store)
    except AuthError as exc:
        print(f"sentinel: error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.storage.close()


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=False)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _when(dt: Any) -> str:
    return dt.strftime("%Y-%m-%d %H:%M") if dt else "-"


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise ValueError("no terminal to ask for the password; pipe it with --password-stdin")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the passwords differ")
    return first


# -- users ----------------------------------------------------------------------------------------

def cmd_users_add(args: argparse.Namespace) -> int:
    password = _password(args)

    def act(store: Any) -> int:
        user = store.add_user(args.name, args.role, password)
        store.audit(_actor(), "local", "user.set", user.name, role=user.role)
        print(f"user {user.name}: role {user.role}")
        return 0
    return _run(args, act)


def cmd_users_list(args: argparse.Namespace) -> int:
    def act(store: Any) -> int:
        users = store.users()
        print(_table([[u.name, u.role, _when(u.created_at), "disabled" if u.disabled else "active"] for u in users],
                     ["NAME", "ROLE", "CREATED", "STATE"]) if users else "no users")
        return 0
    return _run(args, act)


def cmd_users_disable(args: argparse.Namespace) -> int:
    def act(store: Any) -> int:
        store.disable_user(args.name)
        store.audit(_actor(), "local", "user.disable", args.name)
        print(f"user {args.name}: disabled, sessions ended")
        return 0
    return _run(args, act)


# -- keys -----------------------------------------------------------------------------------------

def cmd_keys_create(args: argparse.Namespace) -> int:
    def act(store: Any) -> int:
        issued = store.create_key(args.name, args.role, created_by=_actor(),
                                  expires_in_s=args.expires_days * 86400 if args.expires_days else None)
        store.audit(_actor(), "local", "key.create", issued.id, name=issued.principal, role=issued.role)
        until = f", expires {_when(issued.expires_at)} UTC" if issued.expires_at else ""
        print(f"key {issued.id} for {issued.principal} (role {issued.role}{until}); "
              "the secret is shown once, send it as Authorization: Bearer <secret>:", file=sys.stderr)
        print(issued.secret)
        return 0
    return _run(args, act)


def cmd_keys_list(args: argparse.Namespace) -> int:
    def act(store: Any) -> int:
        keys = store.credentials("key", include_revoked=args.all)
        print(_table([[k.id, k.principal, k.role, _when(k.created_at), _when(k.expires_at),
                       "revoked" if k.revoked_at else "live"] for k in keys],
                     ["ID", "NAME", "ROLE", "CREATED", "EXPIRES", "STATE"]) if keys else "no API keys")
        return 0
    return _run(args, act)


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    def act(store: Any) -> int:
        info = store.revoke(args.id)
        store.audit(_actor(), "local", "credential.revoke", args.id, kind=info.kind, owner=info.principal)
        print(f"{info.kind} credential {info.id} ({info.principal}): revoked")
        return 0
    return _run(args, act)


# -- edges ----------------------------------------------------------------------------------------

def cmd_edges_add(args: argparse.Namespace) -> int:
    def act(store: Any) -> int:
        issued = store.add_edge(args.edge_id, args.substation or "", created_by=_actor())
        store.audit(_actor(), "local", "edge.add", args.edge_id, credential=issued.id, substation=issued.substation)
        bound = f" bound to substation {issued.substation}" if issued.substation else ""
        print(f"edge {args.edge_id}: credential {issued.id}{bound}. Put the secret below in the box's "
              "environment (SENTINEL_EDGE_TOKEN, or the variable its config's hub.token_env names); it is shown "
              "once:", file=sys.stderr)
        print(issued.secret)
        return 0
    return _run(args, act)


def cmd_edges_list(args: argparse.Namespace) -> int:
    def act(store: Any) -> int:
        creds = store.credentials("edge", include_revoked=args.all)
        state = {e.edge_id: e for e in store.storage.edge_states()}
        rows = []
        for c in creds:
            e = state.get(c.principal)
            rows.append([c.principal, c.substation or "(any)", c.id, _when(c.created_at),
                         "revoked" if c.revoked_at else "live", _when(e.last_sync) if e else "never",
                         str(e.readings_acked_through) if e else "0"])
        print(_table(rows, ["EDGE", "SUBSTATION", "CREDENTIAL", "CREATED", "STATE", "LAST SYNC", "READINGS"])
              if rows else "no edges registered; add one with `sentinel hub edges add EDGE_ID`")
        return 0
    return _run(args, act)


def cmd_edges_revoke(args: argparse.Namespace) -> int:
    def act(store: Any) -> int:
        if args.credential:
            info = store.revoke(args.credential)
            if info.principal != args.edge_id:
                print(f"sentinel: warning: credential {info.id} belonged to edge {info.principal}", file=sys.stderr)
            n = 1
        else:
            n = store.revoke_edge(args.edge_id)
        store.audit(_actor(), "local", "edge.revoke", args.edge_id, credentials=n, credential=args.credential)
        print(f"edge {args.edge_id}: {n} credential{'s' if n != 1 else ''} revoked")
        return 0
    return _run(args, act)


# -- audit ----------------------------------------------------------------------------------------

def cmd_edges_enrolment(args: argparse.Namespace) -> int:
    def act(store: Any) -> int:
        issued = store.create_enrolment(args.edge_id, args.substation, expires_in_s=args.expires_hours * 3600,
                                        created_by=_actor())
        store.audit(_actor(), "local", "edge.enrolment", args.edge_id or "*", enrolment=issued.id,
                    substation=args.substation)
        print(f"enrolment {issued.id} for {args.edge_id or 'any edge id'}"
              + (f" in {args.substation}" if args.substation else "")
              + f", valid until {issued.expires_at:%Y-%m-%d %H:%M} UTC, once; on the box: sentinel edge enrol "
              "--config FILE --token-stdin", file=sys.stderr)
        print(issued.token)
        return 0
    return _run(args, act)


def cmd_audit(args: argparse.Namespace) -> int:
    def act(store: Any) -> int:
        if args.verify:
            v = store.verify_audit()
            if v.ok:
                print(f"audit log intact: {v.entries} entries, hash chain verified")
                return 0
            print(f"audit log ALTERED: the hash chain breaks at entry {v.first_bad_seq} of {v.entries}")
            return 1
        for e in reversed(store.audit_entries(action=args.action, principal=args.principal, limit=args.limit)):
            detail = " ".join(f"{k}={v}" for k, v in e.detail.items() if v not in (None, ""))
            print(f"{e.seq:>6}  {e.ts:%Y-%m-%d %H:%M:%S}  {e.principal:<28} {e.source:<22} {e.action:<18} "
                  f"{e.target} {detail}".rstrip())
        return 0
    return _run(args, act)


def add_parsers(hub: Any) -> None:
    """Add ``users``, ``keys``, ``edges`` and ``audit`` under ``sentinel hub``."""

    def db(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--database", default=None,
                       help="the hub's database URL (default $SENTINEL_DATABASE_URL or sqlite:///var/hub.db)")
        return p

    users = hub.add_parser("users", help="operators who log in: add, list, disable").add_subparsers(
        dest="users_command", required=True, metavar="ACTION")
    s = db(users.add_parser("add", help="create a user or set its role and password (ends its sessions)"))
    s.add_argument("name")
    s.add_argument("--role", required=True, choices=["viewer", "operator", "admin"])
    s.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    s.set_defaults(func=cmd_users_add)
    s = db(users.add_parser("list", help="users and roles"))
    s.set_defaults(func=cmd_users_list)
    s = db(users.add_parser("disable", help="disable a user and end its sessions"))
    s.add_argument("name")
    s.set_defaults(func=cmd_users_disable)

    keys = hub.add_parser("keys", help="API keys for scripts and integrations").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION")
    s = db(keys.add_parser("create", help="create an API key; prints its secret once"))
    s.add_argument("name", help="who or what uses it, e.g. grafana or scada-gw")
    s.add_argument("--role", required=True, choices=["viewer", "operator", "admin"])
    s.add_argument("--expires-days", type=float, default=None, help="expire after this many days (default: never)")
    s.set_defaults(func=cmd_keys_create)
    s = db(keys.add_parser("list", help="live API keys (never their secrets)"))
    s.add_argument("--all", action="store_true", help="include revoked and expired keys")
    s.set_defaults(func=cmd_keys_list)
    s = db(keys.add_parser("revoke", help="revoke a key (or any credential) by its id"))
    s.add_argument("id")
    s.set_defaults(func=cmd_keys_revoke)

    edges = hub.add_parser("edges", help="edge boxes allowed to sync: add, list, revoke").add_subparsers(
        dest="edges_command", required=True, metavar="ACTION")
    s = db(edges.add_parser("add", help="register an edge (or give it another credential, to rotate); "
                                        "prints the credential once"))
    s.add_argument("edge_id")
    s.add_argument("--substation", default=None, help="bind the credential to this substation too")
    s.set_defaults(func=cmd_edges_add)
    s = db(edges.add_parser("enrolment", help="a one-time enrolment token for a new box (`sentinel edge enrol` "
                                              "exchanges it for the box's credential); printed once, last"))
    s.add_argument("--edge-id", default="", help="the box it is for (default: any; the box names itself)")
    s.add_argument("--substation", default="", help="bind the box's credential to this substation")
    s.add_argument("--expires-hours", type=float, default=24.0, help="unused, it expires after this (default 24)")
    s.set_defaults(func=cmd_edges_enrolment)
    s = db(edges.add_parser("list", help="registered edges, their credentials and last sync"))
    s.add_argument("--all", action="store_true", help="include revoked credentials")
    s.set_defaults(func=cmd_edges_list)
    s = db(edges.add_parser("revoke", help="revoke an edge's credentials (all, or one with --credential)"))
    s.add_argument("edge_id")
    s.add_argument("--credential", default=None, help="revoke only this credential id (after a rotation)")
    s.set_defaults(func=cmd_edges_revoke)

    s = db(hub.add_parser("audit", help="the audit log, oldest first; --verify checks its hash chain"))
    s.add_argument("--verify", action="store_true", help="recompute the hash chain; exit 1 if it was altered")
    s.add_argument("--action", default=None, help="only actions starting with this (e.g. edge.)")
    s.add_argument("--principal", default=None, help="only this principal (e.g. user:alice)")
    s.add_argument("--limit", type=int, default=100, help="the newest N entries (default 100)")
    s.set_defaults(func=cmd_audit)
