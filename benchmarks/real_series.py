"""Real files and series (../shared/data): how many are read whole, how many models train and export.

Each figure beside the same run of another checkout of the code (``--baseline TREE``, e.g. the
commit before, unpacked with ``git archive HEAD models protocols | tar -x -C /tmp/old``):

- ``read``: every file of ../shared/data through ``models.tabular.read_csv``: read whole or refused.
- ``all-columns``: each SKAB file (and ETTh1) with all its numeric columns, no labels (what
  ``sentinel models train --csv FILE`` does): trained, and exported with ONNX parity.
- ``per-channel``: each channel of each file alone (SKAB 8 sensors x 35 files, ETTh1's 7).

SKAB files are handed to the code as comma-separated copies in a temporary directory (the code
before could not read ``;``), so both trees see the same rows.

    OMP_NUM_THREADS=1 python benchmarks/real_series.py [--baseline /tmp/old] [--rtol 0] [--only read]

Single-threaded BLAS: ``MinCovDet`` otherwise spends minutes in thread contention on a shared box.
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SENSORS = ["Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature", "Thermocouple",
           "Voltage", "Volume Flow RateRMS"]
ETT = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]

# run inside a child process with the tree's models/ first on sys.path
_CHILD = r'''
import glob, json, sys, warnings
warnings.filterwarnings("ignore")
tree, mode, skab, rtol = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
sys.path.insert(0, tree)
from models.tabular import read_csv
out = {}
if mode == "read":
    files = (sorted(glob.glob(DATA + "/load/*.csv")) + sorted(glob.glob(DATA + "/skab/*/*.csv"))
             + [DATA + "/ett/ETTh1.csv"])
    whole, refused = 0, []
    for f in files:
        lines = sum(1 for line in open(f) if line.strip()) - 1
        try:
            whole += read_csv(f).rows == lines
        except Exception as exc:
            refused.append(f"{f.rsplit('/', 2)[-2]}/{f.rsplit('/', 1)[-1]}: {str(exc)[:100]}")
    out = {"files": len(files), "read_whole": whole, "refused": refused[:6]}
else:
    from models.export import export_model
    from models.train import train_from_csv
    files = sorted(glob.glob(skab + "/*/*.csv")) + [DATA + "/ett/ETTh1.csv"]
    jobs = []
    for f in files:
        if mode == "all-columns":
            jobs.append((f, None))
        else:
            jobs.extend((f, [c]) for c in (ETT if f.endswith("ETTh1.csv") else SENSORS))
    for kind in ("mahalanobis", "isolation_forest"):
        trained = exported = 0
        fails = []
        for f, cols in jobs:
            try:
                tm = train_from_csv(f, kind=kind, name="m", columns=cols)
            except Exception as exc:
                fails.append(f"train {f.rsplit('/', 1)[-1]} {cols}: {str(exc)[:90]}")
                continue
            trained += 1
            try:
                export_model(tm, **({} if rtol == "default" else {"rtol": float(rtol)}))
                exported += 1
            except Exception as exc:
                fails.append(f"export {f.rsplit('/', 1)[-1]} {cols}: {str(exc)[:90]}")
        out[kind] = {"series": len(jobs), "trained": trained, "parity": exported, "failures": fails[:5]}
print(json.dumps(out))
'''


def _run(tree: str, mode: str, skab: str, rtol: str) -> dict:
    code = f"DATA = {str(DATA)!r}\nSENSORS = {SENSORS!r}\nETT = {ETT!r}\n" + _CHILD
    done = subprocess.run([sys.executable, "-c", code, tree, mode, skab, rtol], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default=None, help="another checkout's root to measure beside this one")
    parser.add_argument("--rtol", default="default", help="relative parity tolerance (default: export's own)")
    parser.add_argument("--only", choices=("read", "all-columns", "per-channel"), action="append", default=None)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"no {DATA}: nothing to measure")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for f in glob.glob(str(DATA / "skab" / "*" / "*.csv")):
            dest = Path(tmp) / Path(f).parent.name / Path(f).name
            dest.parent.mkdir(exist_ok=True)
            dest.write_text(Path(f).read_text().replace(";", ","))
        trees = {"now": str(REPO), **({"baseline": args.baseline} if args.baseline else {})}
        for mode in args.only or ["read", "all-columns", "per-channel"]:
            for label, tree in trees.items():
                print(f"{mode} [{label}]: {json.dumps(_run(tree, mode, tmp, args.rtol))}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
