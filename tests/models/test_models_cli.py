"""``sentinel models``: score a CSV with irregular timestamps and gaps; keygen, train, list, export."""

from __future__ import annotations

import argparse
import csv
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from sentinel_cli.models_cmd import add_parser


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sentinel")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def _write_csv(path: Path, n: int, seed: int = 0) -> dict[str, int]:
    """Irregular 1 s sampling, a 10-minute gap, empty cells; a step, a spike and a frozen stretch."""
    rng = np.random.default_rng(seed)
    t = 1.77e9 + np.cumsum(rng.uniform(0.6, 1.4, n))
    t[n // 2:] += 600.0
    value = 230.0 + rng.normal(scale=0.5, size=n)
    current = 100.0 + rng.normal(scale=2.0, size=n)
    events = {"step": int(0.3 * n), "spike": int(0.7 * n), "gap": n // 2, "frozen": int(0.85 * n)}
    value[events["step"]:] += 5.0
    value[events["spike"]] += 8.0
    current[events["frozen"]:events["frozen"] + 200] = current[events["frozen"]]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "voltage_v", "current_a", "note"])
        for i in range(n):
            ts = datetime.fromtimestamp(t[i], timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            v = "" if i % 997 == 5 else f"{value[i]:.3f}"
            w.writerow([ts, v, f"{current[i]:.2f}", "ok"])
    return events


def _read_scored(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(path.open()))
    return rows[0], rows[1:]


def test_score_writes_input_columns_plus_score_and_type(tmp_path: Path) -> None:
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    events = _write_csv(src, 6000)
    assert _run("models", "score", str(src), "--output", str(out), "--no-progress") == 0
    header, rows = _read_scored(out)
    assert header == ["timestamp", "voltage_v", "current_a", "note", "anomaly_score", "anomaly_type"]
    assert len(rows) == 6000
    original = list(csv.reader(src.open()))[1:]
    assert all(r[:4] == o for r, o in zip(rows, original))  # input columns untouched
    score = np.array([float(r[4]) for r in rows])
    kind = np.array([r[5] for r in rows])
    assert ((score >= 0.5) == (kind != "none")).all()

    def first_alarm(start: int, within: int) -> str | None:
        hit = np.nonzero(score[start:start + within] >= 0.5)[0]
        return kind[start + hit[0]] if len(hit) else None

    assert first_alarm(events["step"], 15) in {"spike", "step"}
    assert "step" in set(kind[events["step"]:events["step"] + 30])
    assert first_alarm(events["spike"], 1) == "spike"
    assert first_alarm(events["gap"], 1) == "dropout"  # the first row after the gap
    assert first_alarm(events["frozen"], 20) == "frozen"
    quiet = np.ones(6000, dtype=bool)
    quiet[:300] = False  # warm-up
    for start in events.values():
        quiet[start:start + 300] = False
    assert np.mean(score[quiet] >= 0.5) < 0.002


def test_score_a_few_hundred_thousand_rows_in_seconds(tmp_path: Path) -> None:
    from models.tabular import score_csv

    n = 200_000
    rng = np.random.default_rng(1)
    src = tmp_path / "big.csv"
    t = 1.77e9 + np.cumsum(rng.uniform(0.5, 1.5, n))
    v = 50.0 + rng.normal(scale=0.01, size=n)
    src.write_text("ts,frequency_hz\n" + "\n".join(f"{a:.3f},{b:.4f}" for a, b in zip(t, v)) + "\n")
    calls = []
    start = time.perf_counter()
    summary = score_csv(src, tmp_path / "big.out.csv", progress=lambda done, total: calls.append((done, total)))
    elapsed = time.perf_counter() - start
    assert summary.rows == n and calls[-1] == (n, n) and len(calls) > 5
    assert elapsed < 15, f"{elapsed:.1f} s for {n} rows"


def test_score_strict_refuses_rows_out_of_order_with_the_row(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "bad.csv"
    src.write_text("timestamp,value\n2026-01-01T00:00:02,1\n2026-01-01T00:00:01,2\n")
    assert _run("models", "score", str(src), "--no-progress", "--strict") == 2  # without --strict: sorted, reported
    assert "row 3: timestamp '2026-01-01T00:00:01' is earlier than the row before" in capsys.readouterr().err


def test_keygen_train_list_export_and_score_with_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    keys, registry, shipped = tmp_path / "keys", tmp_path / "registry", tmp_path / "shipped"
    src = tmp_path / "history.csv"
    _write_csv(src, 3000)
    assert _run("models", "keygen", "--out", str(keys)) == 0
    assert (keys / "signing.pem").stat().st_mode & 0o777 == 0o600
    assert _run("models", "train", "--csv", str(src), "--registry", str(registry), "--name", "bus-v",
                "--columns", "voltage_v,current_a", "--rows", "0:1400", "--signing-key", str(keys / "signing.pem")) == 0
    assert "published bus-v v1 (isolation_forest" in capsys.readouterr().out
    public = str(keys / "public.pem")
    assert _run("models", "list", "--registry", str(registry), "--public-key", public) == 0
    listing = capsys.readouterr().out
    assert "bus-v" in listing and " ok " in listing
    assert _run("models", "export", "--registry", str(registry), "--name", "bus-v", "--out", str(shipped),
                "--public-key", public) == 0
    assert sorted(p.name for p in shipped.iterdir()) == ["manifest.json", "manifest.sig", "model.onnx"]
    out = tmp_path / "scored.csv"
    assert _run("models", "score", str(src), "--output", str(out), "--model", str(shipped), "--public-key", public,
                "--columns", "voltage_v,current_a", "--no-progress") == 0
    assert "with bus-v v1" in capsys.readouterr().out
    _, rows = _read_scored(out)
    assert len(rows) == 3000

    # a tampered model is refused, in one line naming the file
    onnx = shipped / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\x00")
    assert _run("models", "score", str(src), "--model", str(shipped), "--public-key", public, "--no-progress") == 2
    err = capsys.readouterr().err
    assert err.startswith("sentinel: error: ") and "model.onnx does not match its signed manifest" in err
    (registry / "bus-v" / "1" / "model.onnx").write_bytes(onnx.read_bytes())
    assert _run("models", "list", "--registry", str(registry), "--public-key", public) == 1
    assert "REFUSED" in capsys.readouterr().out


def test_every_models_command_has_help() -> None:
    parser = argparse.ArgumentParser(prog="sentinel")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    models = sub.choices["models"]
    actions = next(a for a in models._actions if isinstance(a, argparse._SubParsersAction))
    assert {"score", "train", "export", "list", "keygen", "forecast-eval", "skab-eval"} <= set(actions.choices)
    for name, p in actions.choices.items():
        assert next(a for a in actions._choices_actions if a.dest == name).help
        for a in p._actions:
            assert a.help, f"models {name} {a.option_strings or a.dest}: no help"
