"""``sentinel models``: score a CSV, train and publish models, list and export them, make signing keys,
evaluate the load forecaster on the long-horizon protocol.

Each subcommand parses its arguments and calls the library (``models.tabular``, ``models.train``,
``models.export``, ``models.registry``, ``models.signing``, ``models.forecast``). Scoring imports no scikit-learn, so it
runs on an edge-only install; training needs the ``hub`` extra.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from sentinel_cli.progress import Progress

__all__ = ["add_parser"]

_KINDS = ("isolation_forest", "lof", "mahalanobis", "risk_classifier")


def _fail(message: str) -> int:
    print(f"sentinel: error: {message}", file=sys.stderr)
    return 2


def _domain_errors() -> tuple[type[BaseException], ...]:
    from models.export import ParityError
    from models.registry import RegistryError
    from models.runtime import ModelLoadError
    from models.signing import ModelVerificationError

    return ModelVerificationError, RegistryError, ModelLoadError, ParityError, ValueError, OSError


def _edge_errors() -> tuple[type[BaseException], ...]:
    from models.registry import RegistryError
    from models.runtime import ModelLoadError
    from models.signing import ModelVerificationError

    return ModelVerificationError, RegistryError, ModelLoadError, ValueError, OSError


def _public_key(path: str | None) -> Any:
    from models.signing import load_public_key

    return load_public_key(path)


def _load_model(args: argparse.Namespace) -> Any:
    """The model --model names: a name in --registry, or a directory holding the three files."""
    from models.registry import MANIFEST_FILE, ONNX_FILE, SIGNATURE_FILE, Registry
    from models.runtime import load_model
    from models.signing import ModelFiles, verify_model

    key = _public_key(args.public_key)
    if args.registry:
        return Registry(args.registry, key).load(args.model, args.version)
    d = Path(args.model)
    if not (d / MANIFEST_FILE).is_file():
        raise ValueError(f"{d}: not a model directory ({MANIFEST_FILE} missing); to name a model, pass --registry DIR")
    files = ModelFiles((d / ONNX_FILE).read_bytes(), (d / MANIFEST_FILE).read_bytes(),
                       bytes.fromhex((d / SIGNATURE_FILE).read_text().strip()))
    return load_model(verify_model(files, key, where=str(d)), files.onnx)


def _detector_config(args: argparse.Namespace) -> Any:
    """The ``DetectorConfig`` that ``models score``'s --detectors, --combine, --no-calibration, --warmup and
    --tail-shape name."""
    from models.detectors import DetectorConfig

    detectors = tuple(d.strip() for d in args.detectors.split(",") if d.strip()) if args.detectors else None
    kw: dict[str, Any] = {"combine": args.combine, "calibrate": not args.no_calibration}
    if detectors is not None:
        kw["detectors"] = detectors
    if args.warmup is not None:
        kw["quiet_warmup"] = args.warmup
    if args.tail_shape is not None:
        if not 0.0 <= args.tail_shape <= 1.0:
            raise ValueError(f"--tail-shape {args.tail_shape:g}: expected 0 to 1 (0: the exponential tail)")
        kw["tail_shape"] = args.tail_shape
    return DetectorConfig(**kw)


def cmd_score(args: argparse.Namespace) -> int:
    from models.tabular import score_csv

    try:
        model = _load_model(args) if args.model else None
        columns = [c.strip() for c in args.columns.split(",")] if args.columns else None
        with Progress("scoring", unit="rows", enabled=not args.no_progress) as progress:
            config = _detector_config(args)
            summary = score_csv(args.input, args.output, model=model, columns=columns, threshold=args.threshold,
                                progress=progress, config=config, strict_times=args.strict)
    except _edge_errors() as exc:
        return _fail(str(exc))
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(summary.by_type.items())) or "none"
    where = "stdout" if args.output in (None, "-") else args.output
    print(f"scored {summary.rows} rows ({summary.samples - summary.rows} missing samples in gaps, "
          f"period {summary.period_s:g} s) with {summary.model or 'the detectors only'}: "
          f"{summary.alarms} rows at or above {args.threshold:g} ({kinds}); written to {where}",
          file=sys.stderr if where == "stdout" else sys.stdout)
    _print_timestamps(summary.timestamps, file=sys.stderr if where == "stdout" else sys.stdout)
    return 0


def _print_timestamps(report: Any, *, file: Any = None, limit: int = 5) -> None:
    """``read_csv``'s timestamp report: a summary line, then the first rows of each kind."""
    if report is None or (report.clean and not len(report.gaps)):
        return
    print(report.summary(), file=file)
    for line in report.details(limit):
        print(f"  {line}", file=file)


def _parse_rows(text: str | None) -> slice | None:
    if not text:
        return None
    start, sep, stop = text.partition(":")
    if not sep:
        raise ValueError(f"--rows {text!r}: expected START:STOP, e.g. 0:8640")
    return slice(int(start) if start else None, int(stop) if stop else None)


def cmd_train(args: argparse.Namespace) -> int:
    from models.export import export_model
    from models.registry import Registry
    from models.signing import load_private_key
    from models.train import train_from_csv

    if (args.csv is None) == (args.from_database is None):
        return _fail("models train: give one of --csv FILE or --from-database URL")
    if args.from_database is not None and not (args.metric and args.device):
        return _fail("models train --from-database: name the model's inputs (--metric M ...) and the devices "
                     "to learn from (--device D ...)")
    try:
        key = load_private_key(args.signing_key)
        if args.from_database is not None:
            with Progress(f"training {args.name}", enabled=not args.no_progress) as progress:
                progress(0, detail=f"reading {args.from_database} and fitting {args.kind}")
                manifest = _train_from_database(args, key)
        else:
            columns = [c.strip() for c in args.columns.split(",")] if args.columns else None
            # three steps of very different lengths: the bar says which one runs
            with Progress(f"training {args.name}", total=3, unit="steps", enabled=not args.no_progress) as progress:
                progress(0, detail=f"fitting {args.kind} on {Path(args.csv).name}")
                trained = train_from_csv(args.csv, kind=args.kind, name=args.name, columns=columns,
                                         label_column=args.label_column, window=args.window,
                                         rows=_parse_rows(args.rows), strict_times=args.strict)
                for note in trained.notes:  # timestamps sorted or averaged, inputs left out
                    print(note, file=sys.stderr)
                progress(1, detail="exporting to ONNX, checking parity")
                exported = export_model(trained)
                progress(2, detail=f"signing, publishing to {args.registry}")
                manifest = Registry(args.registry).publish(exported, key)
                progress(3)
    except _domain_errors() as exc:
        return _fail(str(exc))
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in sorted(manifest.metrics.items()))
    print(f"published {manifest.label} ({manifest.kind}, {manifest.feature_spec.n_features} features, "
          f"{manifest.onnx_bytes:,} bytes ONNX) to {args.registry}; trained on {manifest.training.rows} windows "
          f"{manifest.training.start} .. {manifest.training.end}; {metrics}")
    return 0


def _train_from_database(args: argparse.Namespace, key: Any) -> Any:
    """Train from the hub's stored readings (``hub.modelship.training.train_from_database``)."""
    from datetime import datetime

    from hub.storage import open_storage
    from hub.modelship.training import train_from_database
    from models.registry import Registry

    def when(text: str | None) -> datetime | None:
        if text is None:
            return None
        t = datetime.fromisoformat(text)
        if t.tzinfo is None:
            raise ValueError(f"{text!r}: give a time zone, e.g. {text}Z or {text}+03:00")
        return t

    storage = open_storage(args.from_database)
    try:
        outcome = train_from_database(storage, Registry(args.registry), key, name=args.name, metrics=args.metric,
                                      devices=args.device, kind=args.kind, start=when(args.start),
                                      end=when(args.end), window=args.window)
    finally:
        storage.close()
    print(f"read {outcome.readings:,} readings from {args.from_database}", file=sys.stderr)
    return outcome.manifest


def cmd_export(args: argparse.Namespace) -> int:
    from models.registry import Registry, write_model_files

    try:
        registry = Registry(args.registry, _public_key(args.public_key))
        manifest, files = registry.verify(args.name, args.version)
        write_model_files(args.out, files)
    except _edge_errors() as exc:
        return _fail(str(exc))
    print(f"exported {manifest.label} (verified, sha256 {manifest.sha256[:16]}...) to {args.out}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from models.registry import Registry

    try:
        key = None
        if args.public_key or os.environ.get("SENTINEL_MODEL_PUBLIC_KEY"):
            key = _public_key(args.public_key)
        entries = Registry(args.registry, key).entries()
    except _edge_errors() as exc:
        return _fail(str(exc))
    if not entries:
        print(f"no models in {args.registry}")
        return 0
    print(f"{'name':<24} {'version':>7}  {'kind':<16} {'created':<25} {'rows':>8}  {'signature':<10} latest")
    bad = 0
    for e in entries:
        m = e.manifest
        status = {True: "ok", False: "REFUSED", None: "unchecked"}[e.verified]
        bad += e.verified is False
        print(f"{e.name:<24} {e.version:>7}  {m.kind if m else '?':<16} {m.created_at if m else '?':<25} "
              f"{m.training.rows if m else 0:>8}  {status:<10} {'*' if e.latest else ''}")
        if e.problem:
            print(f"    {e.problem}")
    return 1 if bad else 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from models.signing import generate_keypair

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    private, public = out / "signing.pem", out / "public.pem"
    if private.exists() and not args.force:
        return _fail(f"{private} exists (pass --force to replace it)")
    private_pem, public_pem = generate_keypair()
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    public.write_bytes(public_pem)
    print(f"wrote {private} (keep it secret: the hub signs with it) and {public} (for edges to verify)")
    return 0


def _parse_horizons(text: str) -> list[int]:
    try:
        horizons = [int(h) for h in text.split(",") if h.strip()]
    except ValueError:
        raise ValueError(f"--horizon {text!r}: expected whole numbers of rows, e.g. 96 or 96,192,336,720") from None
    if not horizons or min(horizons) < 1:
        raise ValueError(f"--horizon {text!r}: expected positive whole numbers of rows")
    return horizons


def _parse_borders(text: str) -> tuple[int, int, int]:
    try:
        b0, b1, b2 = (int(b) for b in text.split(","))
    except ValueError:
        raise ValueError(f"--borders {text!r}: expected three row numbers TRAIN_END,VAL_END,TEST_END, "
                         f"e.g. 8640,11520,14400") from None
    if not 0 < b0 < b1 < b2:
        raise ValueError(f"--borders {text!r}: expected 0 < TRAIN_END < VAL_END < TEST_END")
    return b0, b1, b2


def cmd_forecast_eval(args: argparse.Namespace) -> int:
    from models.forecast import evaluate_long_horizon

    try:
        horizons = _parse_horizons(args.horizon)
        if args.input_length < 2:
            raise ValueError(f"--input-length {args.input_length}: need at least 2 rows")
        borders = _parse_borders(args.borders)
        results = []
        with Progress("forecast-eval", total=len(horizons), unit="horizons",
                      enabled=not args.no_progress) as progress:
            for k, h in enumerate(horizons):
                progress(k, detail=f"horizon {h}")
                results.append(evaluate_long_horizon(args.csv, args.target, args.input_length, h, borders=borders,
                                                     calendar=args.calendar, decomposition=args.decomposition))
            progress(len(horizons))
    except _domain_errors() as exc:
        return _fail(str(exc))
    first = results[0]
    rows = first["rows"]
    print(f"{Path(args.csv).name}, target {args.target}, input length {args.input_length}: rows train "
          f"[{rows['train'][0]}, {rows['train'][1]}), validation [{rows['val'][0]}, {rows['val'][1]}), test "
          f"[{rows['test'][0]}, {rows['test'][1]}); z-scored with the train rows' mean {first['train_mean']:.4g} "
          f"and std {first['train_std']:.4g}; MSE/MAE on that scale, test windows with stride 1")
    print(f"{'horizon':>7}  {'windows train/val/test':>22}  {'MSE':>7} {'MAE':>7}  {'repeat-last MSE':>15} "
          f"{'MAE':>7}  {'val MSE':>7}  {'80% cover':>9}  {'ridge alpha':>17}  {'fit s':>5}")
    for r in results:
        windows = "/".join(str(r["windows"][k]) for k in ("train", "val", "test"))
        alphas = f"{r['alpha_min']:.3g}..{r['alpha_max']:.3g}"
        print(f"{r['horizon']:>7}  {windows:>22}  {r['mse']:7.4f} "
              f"{r['mae']:7.4f}  {r['repeat_last_mse']:15.4f} {r['repeat_last_mae']:7.4f}  {r['val_mse']:7.4f}  "
              f"{r['interval_coverage']:9.1%}  {alphas:>17}  {r['fit_seconds']:5.1f}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``models`` and its subcommands on the ``sentinel`` command's subparsers."""
    models = subparsers.add_parser("models", help="anomaly models: score a CSV, train, export, list; "
                                                  "evaluate the forecaster").add_subparsers(
        dest="models_command", required=True, metavar="ACTION")

    s = models.add_parser("score", help="score a CSV of timestamp,value[,value...] causally, as a stream",
                          description="Write the input's columns plus anomaly_score (0..1) and anomaly_type "
                                      "(none below --threshold). Irregular timestamps are placed on a grid of "
                                      "the median interval; gaps score as dropouts.")
    s.add_argument("input", help="CSV with a header, a timestamp column and numeric value columns")
    s.add_argument("--output", "-o", default=None, help="output CSV (default: stdout)")
    s.add_argument("--columns", default=None, help="comma-separated value columns to score (default: all numeric)")
    s.add_argument("--model", default=None,
                   help="also score with this model: a name in --registry, or a directory of model.onnx, "
                        "manifest.json and manifest.sig")
    s.add_argument("--registry", default=None, help="model registry directory (with --model NAME)")
    s.add_argument("--version", type=int, default=None, help="model version (default: latest)")
    s.add_argument("--public-key", default=None,
                   help="ed25519 public key (PEM) that models must verify with (default: $SENTINEL_MODEL_PUBLIC_KEY)")
    s.add_argument("--threshold", type=float, default=0.5,
                   help="score at which a row is an alarm: rows below it score as type none (default 0.5)")
    s.add_argument("--detectors", default=None,
                   help="comma-separated detectors that score "
                        "(default all: step,drift,spike,oscillation,dropout,frozen)")
    s.add_argument("--combine", choices=("fisher", "max"), default="fisher",
                   help="how detector (and model) scores combine: fisher (agreement counts; default) or max")
    s.add_argument("--no-calibration", action="store_true",
                   help="score the raw statistics against their nominal thresholds (with --combine max "
                        "--warmup 0: the scoring before per-series calibration)")
    s.add_argument("--warmup", type=int, default=None, help="valid samples per series before any alarm (default 128)")
    s.add_argument("--tail-shape", type=float, default=None, metavar="XI",
                   help="tail shape (0 to 1) past the anchor of a series that has shown a heavy tail; 0: the "
                        "exponential (default 0.25; docs/detection.md)")
    s.add_argument("--strict", action="store_true",
                   help="refuse a file whose times step back or repeat (default: sort them, average repeats, report)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_score)

    from sentinel_cli.skab_eval_cmd import add_skab_eval
    add_skab_eval(models)

    s = models.add_parser("train", help="train a model on a CSV or the hub's database, export it to ONNX, "
                                       "sign and publish it",
                          description="Train, check ONNX parity against scikit-learn on held-out windows, sign "
                                      "with the hub's key and publish as the model's next version.")
    s.add_argument("--csv", default=None, help="training CSV (as `models score` reads)")
    s.add_argument("--from-database", metavar="URL", default=None,
                   help="train on the hub's stored readings instead (sqlite:///hub.db, postgresql://...)")
    s.add_argument("--metric", action="append", default=None,
                   help="with --from-database: a model input, e.g. voltage_l1 (repeat for several)")
    s.add_argument("--device", action="append", default=None,
                   help="with --from-database: a device whose readings to learn from (repeat for several)")
    s.add_argument("--start", default=None, help="with --from-database: readings from this ISO 8601 time")
    s.add_argument("--end", default=None, help="with --from-database: readings before this ISO 8601 time")
    s.add_argument("--registry", required=True, help="model registry directory")
    s.add_argument("--name", required=True, help="model name, e.g. tr-oil-if")
    s.add_argument("--kind", choices=_KINDS, default="isolation_forest", help="model kind (default isolation_forest)")
    s.add_argument("--columns", default=None, help="comma-separated value columns (default: all numeric)")
    s.add_argument("--label-column", default=None,
                   help="column labelling rows: normal (or 0) / an anomaly type (or 1); needed by risk_classifier")
    s.add_argument("--window", type=int, default=32, help="feature window in samples (default 32)")
    s.add_argument("--rows", default=None, help="train on rows START:STOP only (in time order), e.g. 0:8640")
    s.add_argument("--strict", action="store_true",
                   help="with --csv: refuse a file whose times step back or repeat (default: sort, average, report)")
    s.add_argument("--signing-key", default=None,
                   help="ed25519 private key (PEM) to sign with (default: the PEM text in $SENTINEL_MODEL_SIGNING_KEY)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_train)

    s = models.add_parser("export", help="verify a model version and copy its files out (to ship to an edge)")
    s.add_argument("--registry", required=True, help="model registry directory")
    s.add_argument("--name", required=True, help="model name")
    s.add_argument("--version", type=int, default=None, help="version (default: latest)")
    s.add_argument("--out", required=True, help="directory to write model.onnx, manifest.json, manifest.sig into")
    s.add_argument("--public-key", default=None, help="public key (PEM) (default: $SENTINEL_MODEL_PUBLIC_KEY)")
    s.set_defaults(func=cmd_export)

    s = models.add_parser("list", help="list the models and versions in a registry, and check their signatures")
    s.add_argument("--registry", required=True, help="model registry directory")
    s.add_argument("--public-key", default=None,
                   help="verify each version with this public key (default: $SENTINEL_MODEL_PUBLIC_KEY; none: unchecked)")
    s.set_defaults(func=cmd_list)

    s = models.add_parser("keygen", help="make an ed25519 key pair for signing models")
    s.add_argument("--out", required=True, help="directory for signing.pem (mode 0600) and public.pem")
    s.add_argument("--force", action="store_true", help="replace an existing key")
    s.set_defaults(func=cmd_keygen)

    s = models.add_parser("forecast-eval", help="evaluate the linear load forecaster on a CSV with the published "
                                               "long-horizon protocol (ETTh1), beside a repeat-last-value baseline",
                          description="Split the rows train [0, 8640), validation [8640-L, 11520), test "
                                      "[11520-L, 14400) (L = input length; other borders with --borders); "
                                      "z-score the target with the train rows' mean and std; fit the ridge forecaster on the train windows, pick "
                                      "its penalty per horizon step on the validation windows; print MSE and MAE "
                                      "on the z-scored scale over every test window (stride 1), and those of "
                                      "repeating the last input value. See docs/forecasting.md.")
    s.add_argument("--csv", required=True, help="CSV with a date/timestamp column and the target column (ETTh1.csv)")
    s.add_argument("--target", required=True, help="column to forecast, e.g. OT")
    s.add_argument("--input-length", type=int, default=336, help="input length L in rows (default 336)")
    s.add_argument("--horizon", required=True,
                   help="forecast horizon in rows; several comma-separated, e.g. 96,192,336,720")
    s.add_argument("--borders", default="8640,11520,14400", metavar="TRAIN_END,VAL_END,TEST_END",
                   help="row borders of the splits (default 8640,11520,14400: ETTh1's 12, 4 and 4 months)")
    s.add_argument("--calendar", action="store_true",
                   help="add hour-of-day and day-of-week features of the first forecast step (default: off)")
    s.add_argument("--decomposition", type=int, default=0, metavar="KERNEL",
                   help="DLinear-style moving-average trend/remainder split with this odd kernel (default 0: none)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_forecast_eval)

    from sentinel_cli.load_eval import add_load_eval

    add_load_eval(models)
