"""``sentinel`` — command-line entry point. Each subcommand parses arguments and calls the library."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import edge._halt_imports  # noqa: F401  (before any subcommand module imports httpx: the box never runs its CLI)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_DIR = REPO / "firmware_configs"


class CliError(Exception):
    """Something the user can fix; printed as one line, exit status 2."""


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # pymodbus logs every failed connect; the edge reports device state changes itself
    logging.getLogger("pymodbus").setLevel(logging.DEBUG if verbose > 1 else logging.CRITICAL)


def _load_configs(paths: Sequence[str] | None) -> list:
    from protocols.config import load_config

    if not paths:
        paths = [str(p) for p in sorted(DEFAULT_CONFIG_DIR.glob("*.toml"))]
        if not paths:
            raise CliError(f"no firmware configs in {DEFAULT_CONFIG_DIR}; pass --config FILE")
    return [load_config(p) for p in paths]


# -- hub ------------------------------------------------------------------------------------------

def cmd_hub_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from hub.app import create_app
    from hub.server import listening_socket, uvicorn_config
    from hub.settings import Settings
    from hub.storage import parse_database_url

    agents = {"on": True, "off": False}.get(args.agents or "")
    settings = Settings.from_env(database_url=args.database, agents_in_process=agents,  # ValueError: exit 2
                                 read_database_url=args.read_database_url, freeze_gc=True)
    kind, _ = parse_database_url(settings.database_url)  # a bad URL fails here, before the server starts
    if args.workers < 1:
        raise CliError(f"--workers: a number of processes, 1 or more, not {args.workers}")
    if args.workers > 1 and kind == "sqlite":
        raise CliError(f"--workers {args.workers} needs PostgreSQL: SQLite takes one writer at a time, so worker "
                       f"processes would queue on its lock (and fail requests after its 5 s busy timeout) instead "
                       f"of ingesting more; serve one worker on SQLite, or use SENTINEL_DATABASE_URL=postgresql://...")
    if args.workers > 1:  # migrations and the admin key once, here, before the workers race on them
        from hub.app import prepare_database
        from hub.storage.migrations import MigrationError

        try:
            prepare_database(settings)
        except MigrationError as exc:
            raise CliError(str(exc)) from None
    elif not settings.auto_migrate:  # a schema that needs migrating fails here too, naming the command
        from hub.storage import open_storage
        from hub.storage.migrations import MigrationError

        try:
            open_storage(settings.database_url, migrate=False).close()
        except MigrationError as exc:
            raise CliError(str(exc)) from None
    cert = args.tls_cert or os.environ.get("SENTINEL_TLS_CERT") or None
    key = args.tls_key or os.environ.get("SENTINEL_TLS_KEY") or None
    if bool(cert) != bool(key):
        raise CliError("--tls-cert and --tls-key go together (or $SENTINEL_TLS_CERT and $SENTINEL_TLS_KEY)")
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if path and not Path(path).is_file():
            raise CliError(f"{flag} {path}: no such file")
    scheme = "https" if cert else "http"
    app = create_app(settings)  # bad settings fail here, once, before any worker starts
    workers = f" with {args.workers} worker processes" if args.workers > 1 else ""
    here = "in this process" if args.workers == 1 else "in the workers, one at a time (leader lock)"
    where = (here if settings.agents_in_process else
             "not here: run `sentinel hub agents` on the same database") if settings.agents is not None else "off"
    print(f"hub: serving on {scheme}://{args.host}:{args.port}{workers} (database {settings.database_url}; "
          f"agents {where}); API docs at /docs", flush=True)
    try:  # the hub's own socket: a WebSocket client that stops reading gets no backlog (hub/server.py)
        sock = listening_socket(args.host, args.port)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    if args.workers > 1:
        return _serve_workers(args, settings, sock, cert, key)
    server = uvicorn.Server(uvicorn_config(app, args.host, args.port, ssl_certfile=cert, ssl_keyfile=key))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C (uvicorn re-raises the signal once it has shut down), as uvicorn.run
        pass
    if not server.started:
        return 3  # start-up failed (logged), as uvicorn.run exits
    return 0


def _serve_workers(args: argparse.Namespace, settings, sock, cert: str | None, key: str | None) -> int:  # noqa: ANN001
    """``--workers N``: uvicorn's supervisor and N worker processes on one socket, each building the hub
    from the environment (``hub.app:app_from_env``); the command line's choices reach them through it."""
    from uvicorn.supervisors import Multiprocess

    from hub.app import WORKER_LOG_LEVEL
    from hub.server import uvicorn_config

    os.environ["SENTINEL_DATABASE_URL"] = settings.database_url
    if settings.read_database_url is not None:
        os.environ["SENTINEL_READ_DATABASE_URL"] = settings.read_database_url
    os.environ["SENTINEL_AGENTS"] = "on" if settings.agents_in_process else "off"
    os.environ[WORKER_LOG_LEVEL] = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    config = uvicorn_config("hub.app:app_from_env", args.host, args.port, ssl_certfile=cert, ssl_keyfile=key,
                            factory=True, workers=args.workers)
    supervisor = Multiprocess(config, sockets=[sock])
    supervisor.run()  # until SIGINT or SIGTERM; a worker that dies is replaced
    return 3 if any(p.exitcode == 3 for p in supervisor.processes) else 0  # a worker could not start


def _shard_arg(text: str):  # noqa: ANN202  (argparse type: its error names the flag, exit 2)
    from hub.insights.shards import Shard

    try:
        return Shard.parse(text, "")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(": ")) from None


def cmd_hub_agents(args: argparse.Namespace) -> int:
    from hub.insights.elsewhere import run_agents_process
    from hub.settings import Settings
    from hub.storage import parse_database_url
    from hub.storage.migrations import MigrationError

    settings = Settings.from_env(database_url=args.database)
    parse_database_url(settings.database_url)
    if settings.agents is None:
        raise CliError("the agents are turned off in these settings")
    if args.shard is not None:  # the flag wins over $SENTINEL_AGENT_SHARD
        agents = settings.agents
        settings = dataclasses.replace(settings, agents=dataclasses.replace(
            agents, agents=dataclasses.replace(agents.agents, shard=args.shard)))
    from hub.insights.shards import splitting

    shard = splitting(settings.agents.agents.shard)
    part = "" if shard is None else (
        f", shard {shard.label}: the substations whose crc32 mod {shard.count} is {shard.index}")

    def ready() -> None:
        print(f"agents: running against {settings.database_url}{part} (one process holds the agents' leader lock "
              f"and runs them, on new data and every {settings.agents.interval_s:g} s; others stand by)", flush=True)

    try:
        asyncio.run(run_agents_process(settings, on_ready=ready))
    except MigrationError as exc:
        raise CliError(str(exc)) from None
    return 0


# -- edge -----------------------------------------------------------------------------------------

def cmd_edge_run(args: argparse.Namespace) -> int:
    import msgspec

    from edge.daemon import EdgeDaemon
    from edge.remote_config import RestartRequested, StartGuard
    from protocols.config import load_config

    restart = None
    # a config from the hub on probation that fails here is put aside at the next start (edge/remote_config.py)
    with StartGuard(args.config):
        config = load_config(args.config)
        if args.hub_url:
            config = msgspec.structs.replace(config, hub=msgspec.structs.replace(config.hub, url=args.hub_url))
        async def run() -> None:
            daemon = EdgeDaemon(config, buffer_path=args.buffer,  # its Modbus clients need the running loop
                                config_path=args.config)  # and it takes new configs from the hub
            ident = config.identity
            print(f"edge {ident.edge_id} ({ident.substation}): polling {len(config.devices)} devices, "
                  f"buffer {daemon.buffer.path}, hub {config.hub.url}", flush=True)
            await daemon.run()

        try:
            asyncio.run(run())
        except KeyboardInterrupt:
            pass
        except BaseExceptionGroup as group:
            restart, rest = group.split(RestartRequested)
            if restart is None or rest is not None:
                raise
    if restart is not None:
        # a config from the hub was applied (or rolled back): the daemon has stopped and flushed; start again
        print(f"edge: {restart.exceptions[0].message}; restarting", flush=True)
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, "-m", "sentinel_cli.main", *sys.argv[1:]])
    return 0


def cmd_edge_check(args: argparse.Namespace) -> int:
    from edge.check import check_devices, format_table
    from protocols.config import load_config

    config = load_config(args.config)
    checks = asyncio.run(check_devices(config, wait_s=args.wait))
    print(format_table(checks))
    return 0 if all(c.ok for c in checks) else 1


def cmd_edge_status(args: argparse.Namespace) -> int:
    import json

    from edge.status import format_status, read_status
    from protocols.config import load_config

    if args.dead_letters < 0:
        raise CliError(f"--dead-letters: a number of messages, not {args.dead_letters}")
    status = read_status(load_config(args.config), args.buffer, dead_letters=args.dead_letters)
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


# -- simulator ------------------------------------------------------------------------------------

def cmd_sim_run(args: argparse.Namespace) -> int:
    from simulator.runner import serve

    if args.score:
        return _sim_score(args)
    if args.report:
        raise CliError("--report goes with --score")
    try:
        asyncio.run(serve(args.config or [str(p) for p in sorted(DEFAULT_CONFIG_DIR.glob("*.toml"))],
                          args.scenario, duration_s=args.duration, speed=args.speed))
    except KeyboardInterrupt:
        pass
    return 0


def _sim_score(args: argparse.Namespace) -> int:
    import msgspec

    from sentinel_cli.sim_score import run_scored
    from simulator.scenario import load_scenario
    from simulator.scoring import format_scoreboard

    paths = args.config or [str(DEFAULT_CONFIG_DIR / name) for name in DEMO_CONFIGS]
    configs = _load_configs(paths)
    scenario = load_scenario(args.scenario, configs)
    try:
        board = asyncio.run(run_scored(configs, scenario, speed=args.speed, duration_s=args.duration,
                                       seed=args.seed, grace_s=args.grace))
    except KeyboardInterrupt:
        print("\nsim: stopped before the end; no scoreboard", file=sys.stderr)
        return 130
    print(format_scoreboard(board))
    if args.report:
        Path(args.report).write_bytes(msgspec.json.format(msgspec.json.encode(board)) + b"\n")
        print(f"sim: scoreboard written to {args.report}")
    return 0


# -- demo -----------------------------------------------------------------------------------------

DEMO_CONFIGS = ("nairobi-s1.toml", "mombasa-s1.toml")  # pure Python: no broker or serial line to install


def cmd_demo(args: argparse.Namespace) -> int:
    from sentinel_cli.demo import run_demo

    if not args.history_days >= 0:
        print(f"sentinel demo: --history-days must be 0 or more, not {args.history_days:g}", file=sys.stderr)
        return 2
    configs = _load_configs(args.config or [str(DEFAULT_CONFIG_DIR / name) for name in DEMO_CONFIGS])
    try:
        asyncio.run(run_demo(configs, scenario=args.scenario, port=args.port, duration_s=args.duration,
                             database_url=args.database, speed=args.speed,
                             history_days=args.history_days))
    except KeyboardInterrupt:
        print("\ndemo: stopped", flush=True)
    return 0


def _simulation_error() -> type[Exception]:
    try:
        from simulator.runner import SimulationError
    except ImportError:  # an edge-only install has no simulator dependencies
        return CliError
    return SimulationError


COMMANDS = ("hub", "edge", "sim", "models", "export", "demo")


def command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names (its first word after the top-level flags), or None when it names
    none of ``COMMANDS`` (no command, ``--help``, a typo: the whole parser is built to say so)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
        if arg in ("-h", "--help"):
            return None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``command``, only that command's actions are complete.

    Each command's module is imported only when its parser is built, and what a command imports stays
    in the process for as long as it runs: ``sentinel edge run`` on a box would otherwise carry the
    exporters', the fault rig's and the model tools' modules (numpy's file formats, the email
    package through http.client, bz2, lzma, csv ...: docs/edge-footprint.md)."""
    def wanted(name: str) -> bool:
        return command is None or command == name

    p = argparse.ArgumentParser(prog="sentinel", description="SmartGrid Sentinel: substation edge, hub and simulator.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    hub = sub.add_parser("hub", help="the hub service").add_subparsers(dest="hub_command", required=True, metavar="ACTION")
    s = hub.add_parser("serve", help="serve the hub's HTTP API")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument("--database", default=None,
                   help="sqlite:///relative.db, sqlite:////absolute/path.db or postgresql://user@host:port/db "
                        "(default $SENTINEL_DATABASE_URL or sqlite:///var/hub.db)")
    s.add_argument("--read-database-url", metavar="URL", default=None,
                   help="postgresql://... of a streaming standby of the database: history reads go there once "
                        "it has caught up, else to the database (default $SENTINEL_READ_DATABASE_URL; "
                        "see docs/scaling.md)")
    s.add_argument("--tls-cert", metavar="FILE", default=None,
                   help="serve HTTPS with this certificate (PEM, the hub's first, then intermediates; "
                        "default $SENTINEL_TLS_CERT); see docs/tls.md")
    s.add_argument("--tls-key", metavar="FILE", default=None,
                   help="the certificate's private key (PEM; default $SENTINEL_TLS_KEY)")
    s.add_argument("--agents", choices=("on", "off"), default=None,
                   help="run the five agents in this process (on; default $SENTINEL_AGENTS or on) or not (off: "
                        "they run in `sentinel hub agents` on the same database, and never slow ingest)")
    s.add_argument("--workers", type=int, default=1, metavar="N",
                   help="serve on N worker processes sharing the port (default 1; more than 1 needs PostgreSQL); "
                        "see docs/scaling.md")
    s.set_defaults(func=cmd_hub_serve)
    s = hub.add_parser("agents", help="run only the five agents, against the hub's database",
                       description="The orchestrator on its own: the five agents on new data (PostgreSQL: "
                                   "LISTEN; SQLite: a change marker polled every 0.5 s) and every "
                                   "$SENTINEL_AGENT_INTERVAL_S, under the agents' leader lock (start two: one runs, "
                                   "the other takes over when it goes). Pair it with `sentinel hub serve --agents "
                                   "off`. Same environment as `hub serve`. See docs/scaling.md.")
    s.add_argument("--database", default=None,
                   help="the hub's database URL (default $SENTINEL_DATABASE_URL or sqlite:///var/hub.db)")
    s.add_argument("--shard", type=_shard_arg, default=None, metavar="I/N",
                   help="run the agents for shard I of N only: the substations whose hash (md5) mod N is I "
                        "(shard 0 also correlates every shard's anomaly episodes and runs the cyber sentinel, "
                        "which looks across substations); "
                        "start one process per shard, two for standby (default $SENTINEL_AGENT_SHARD or all "
                        "substations); see docs/scaling.md")
    s.set_defaults(func=cmd_hub_agents)
    if wanted("hub"):
        from sentinel_cli.hub_admin import add_parsers as add_hub_admin_parsers
        from sentinel_cli.hub_migrate import add_parser as add_hub_migrate_parser

        add_hub_admin_parsers(hub)
        add_hub_migrate_parser(hub)

    edge = sub.add_parser("edge", help="the substation edge daemon").add_subparsers(dest="edge_command", required=True, metavar="ACTION")
    s = edge.add_parser("run", help="poll devices, check limits, buffer and sync to the hub")
    s.add_argument("--config", required=True, help="firmware config (TOML), e.g. firmware_configs/nairobi-s1.toml")
    s.add_argument("--hub-url", default=None, help="override the config's hub URL")
    s.add_argument("--buffer", default=None, help="override the config's buffer path")
    s.set_defaults(func=cmd_edge_run)
    s = edge.add_parser("check", help="read every configured point once and report (exit 1 if any failed)")
    s.add_argument("--config", required=True, help="firmware config (TOML)")
    s.add_argument("--wait", type=float, default=5.0,
                   help="seconds to wait for pushed sources (MQTT, OPC-UA); points that got nothing by then fail")
    s.set_defaults(func=cmd_edge_check)
    if wanted("edge"):
        from sentinel_cli.edge_cert import add_parser as add_edge_cert_parser
        from sentinel_cli.edge_enrol import add_parser as add_edge_enrol_parser
        from sentinel_cli.edge_init import add_parser as add_edge_init_parser

        add_edge_init_parser(edge)
        add_edge_enrol_parser(edge)
        add_edge_cert_parser(edge)
    s = edge.add_parser("status", help="device health, buffer depth, oldest unsent reading, last sync")
    s.add_argument("--config", required=True, help="firmware config (TOML)")
    s.add_argument("--buffer", default=None, help="override the config's buffer path")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("--dead-letters", type=int, nargs="?", const=20, default=0, metavar="N",
                   help="also list the newest N messages the edge rejected, with why (default N: 20)")
    s.set_defaults(func=cmd_edge_status)

    sim = sub.add_parser("sim", help="simulated substations").add_subparsers(dest="sim_command", required=True, metavar="ACTION")
    s = sim.add_parser("run", help="serve the simulated substations of the firmware configs and play a scenario")
    s.add_argument("scenario", help="scenario JSON, e.g. scenarios/medium_risk_voltage_fluctuation.json")
    s.add_argument("--config", action="append", help="firmware config to serve (repeatable; default: all in firmware_configs/)")
    s.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: run until Ctrl-C)")
    s.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall-clock second (default 1)")
    s.add_argument("--seed", type=int, default=0, help="random seed of the physics' noise and the dropouts (default 0)")
    s.add_argument("--score", action="store_true",
                   help="run the scenario through edges and a hub (on SQLite, a free port) and print a scoreboard "
                        "per injected anomaly: detected, delay, false alarms per hour (default configs: "
                        + " and ".join(DEMO_CONFIGS) + ")")
    s.add_argument("--grace", type=float, default=60.0,
                   help="with --score: scenario seconds after an anomaly's end in which an alarm still counts (default 60)")
    s.add_argument("--report", default=None, help="with --score: also write the scoreboard as JSON to this file")
    s.set_defaults(func=cmd_sim_run)
    if wanted("sim"):
        from sentinel_cli.faults_cmd import add_parser as add_faults_parser

        add_faults_parser(sim)
    if wanted("models"):
        from sentinel_cli.models_cmd import add_parser as add_models_parser

        add_models_parser(sub)
    if wanted("export"):
        from sentinel_cli.export_cmd import add_parser as add_export_parser

        add_export_parser(sub)

    s = sub.add_parser("demo", help="hub + two simulated substations + their edges, running a scenario",
                       description="Prints the dashboard URL, a login (user admin, a password made for this "
                                   "run) and an admin API key; at the end (--duration or Ctrl-C) a summary of "
                                   "what happened: incidents by agent, forecasts, transformer health, grid "
                                   "status. See docs/demo.md.")
    s.add_argument("--port", type=int, default=8000, help="hub port (default 8000)")
    s.add_argument("--duration", type=float, default=None, help="exit 0 after this many seconds (default: until Ctrl-C)")
    s.add_argument("--scenario", default=str(REPO / "scenarios" / "medium_risk_voltage_fluctuation.json"),
                   help="scenario JSON (default: the seed's medium-risk voltage fluctuation)")
    s.add_argument("--config", action="append",
                   help="firmware config (repeatable; default: firmware_configs/nairobi-s1.toml and mombasa-s1.toml)")
    s.add_argument("--database", default=None, help="hub database URL (default: a fresh SQLite file in a temp dir)")
    s.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall-clock second (default 1)")
    s.add_argument("--history-days", type=float, default=28.0,
                   help="days of simulated history stored before the edges start, so forecasts and maintenance "
                        "predictions have data (default 28; 0: none)")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("OTEL_SDK_DISABLED", "true")
    if argv is None:
        argv = sys.argv[1:]
    args = build_parser(command_of(argv)).parse_args(argv)
    _setup_logging(args.verbose)
    from protocols.config import ConfigError

    try:
        return args.func(args)
    except (CliError, ConfigError, ValueError, OSError, _simulation_error()) as exc:
        print(f"sentinel: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
