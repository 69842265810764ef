"""What a running edge imports: only what its config uses (docs/edge-footprint.md).

A box that scores with its detectors alone, without ``[metrics]`` or ``[ot_logs]``, runs without
the Prometheus client, the MQTT client, cryptography and onnxruntime, and without httpx's command
line (click, rich, pygments), which httpx imports whenever they are installed. Each module costs
the box resident memory for as long as it runs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]

UNUSED = ("prometheus_client", "paho", "cryptography", "onnxruntime", "click", "rich", "pygments")

RUN = textwrap.dedent("""
    import asyncio, sys
    from edge.daemon import EdgeDaemon
    from protocols.config import parse_config

    async def main() -> None:
        daemon = EdgeDaemon(parse_config(sys.stdin.read()), buffer_path=sys.argv[1])
        task = asyncio.create_task(daemon.run())
        while not daemon.stats.devices["meter"].failures:  # it polled (a device that does not answer)
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    print(" ".join(sorted(m for m in sys.modules)))
""")


def _config(extra: str = "") -> str:
    return textwrap.dedent(f"""
        [identity]
        edge_id = "edge-lean"
        substation = "LEAN"
        [hub]
        url = "http://127.0.0.1:{free_port()}"
        {extra}
        [[devices]]
        id = "meter"
        protocol = "modbus_tcp"
        host = "127.0.0.1"
        port = {free_port()}
        unit_id = 1
        poll_interval_s = 0.2
        timeout_s = 0.1
        points = [{{ metric = "voltage_l1", unit = "kV", address = 100, data_type = "float32" }}]
    """)


def _modules(config: str, tmp_path: Path) -> set[str]:
    out = subprocess.run([sys.executable, "-c", RUN, str(tmp_path / "buffer.db")], input=config, cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(out.stdout.split())


def test_an_edge_scoring_with_its_detectors_imports_nothing_it_does_not_use(tmp_path: Path) -> None:
    modules = _modules(_config(), tmp_path)
    assert "edge.daemon" in modules and "httpx" in modules and "numpy" in modules
    assert sorted(m for m in modules if m.split(".")[0] in UNUSED) == []
    assert not {"edge.metrics", "edge.otlogs", "edge.models", "models.registry", "models.signing"} & modules


def test_an_edge_with_metrics_imports_the_prometheus_client(tmp_path: Path) -> None:
    modules = _modules(_config('[metrics]\nlisten = "127.0.0.1:0"'), tmp_path)
    assert "prometheus_client" in modules and "edge.metrics" in modules
    assert not {"cryptography", "onnxruntime", "click", "rich"} & {m.split(".")[0] for m in modules}


def test_the_command_line_halts_httpx_cli_before_its_subcommands_import_httpx() -> None:
    """``sentinel edge run`` builds the whole parser first, whose modules import httpx: httpx's own
    command line (click, rich, pygments: about 6 MB on the box) must be halted before they do."""
    code = ("import sys; from sentinel_cli.main import build_parser; build_parser(); "
            "print(' '.join(sorted(m for m in ('httpx', 'click', 'rich', 'pygments') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    assert "httpx" in out  # the parser's modules did import httpx: the check below means something
    assert not {"click", "rich", "pygments"} & set(out), out


def test_sentinel_edge_run_builds_only_the_edge_commands_parser() -> None:
    """The other commands' modules (exporters, the fault rig, the model tools) stay out of a running
    edge: what a command imports stays resident for as long as it runs."""
    code = textwrap.dedent("""
        import sys
        from sentinel_cli.main import build_parser, command_of
        argv = ["-v", "edge", "run", "--config", "box.toml"]
        args = build_parser(command_of(argv)).parse_args(argv)
        assert (args.command, args.edge_command, args.config, args.verbose) == ("edge", "run", "box.toml", 1), args
        print(" ".join(sorted(sys.modules)))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    modules = set(out.stdout.split())
    assert "sentinel_cli.edge_init" in modules  # the edge command's own actions are there
    other = {"export", "export.readings", "sentinel_cli.faults", "sentinel_cli.faults_cmd", "sentinel_cli.models_cmd",
             "sentinel_cli.export_cmd", "sentinel_cli.pgserver", "sentinel_cli.hub_admin", "csv"}
    assert sorted(other & modules) == []


def test_every_command_and_action_parses_whichever_command_is_named() -> None:
    """Building one command's parser changes nothing a user sees: the top-level help lists every
    command, each command's help its actions, and a typo is told the commands there are."""
    from sentinel_cli.main import COMMANDS, build_parser, command_of

    full = build_parser()
    subs = full._subparsers._group_actions[0].choices  # noqa: SLF001 (argparse keeps its tree here)
    assert sorted(subs) == sorted(COMMANDS)
    for name, parser in subs.items():
        actions = parser._subparsers._group_actions[0].choices if parser._subparsers else {}  # noqa: SLF001
        alone = build_parser(command_of([name]))._subparsers._group_actions[0].choices[name]  # noqa: SLF001
        alone_actions = alone._subparsers._group_actions[0].choices if alone._subparsers else {}  # noqa: SLF001
        assert sorted(alone_actions) == sorted(actions), name
    help_text = subprocess.run([sys.executable, "-m", "sentinel_cli.main", "--help"], cwd=REPO, capture_output=True,
                               text=True, timeout=120)
    assert help_text.returncode == 0 and all(c in help_text.stdout for c in COMMANDS), help_text.stdout
    typo = subprocess.run([sys.executable, "-m", "sentinel_cli.main", "egde", "run"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert typo.returncode == 2 and "invalid choice: 'egde'" in typo.stderr and "models" in typo.stderr, typo.stderr
    models = subprocess.run([sys.executable, "-m", "sentinel_cli.main", "models", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert models.returncode == 0 and "score" in models.stdout, models.stdout
    assert command_of(["-v", "--help"]) is None and command_of(["-vv", "hub", "serve"]) == "hub"
