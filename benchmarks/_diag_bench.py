import asyncio, sys, tempfile, time
from pathlib import Path
import numpy as np
sys.argv=[sys.argv[0]]
from bench_edge_pipeline import *  # noqa
from bench_edge_pipeline import config_text, UNITS, POINTS, BATCH
from edge.buffer import Buffer
from edge.daemon import EdgeDaemon
from edge.scoring import EdgeScoring
from protocols.config import parse_config
from protocols.modbus.codec import encode_values

async def main(polls=400):
    tmp=Path(tempfile.mkdtemp())
    cfg = parse_config(config_text())
    daemon = EdgeDaemon(cfg, buffer_path=tmp / "unused.db")
    rng = np.random.default_rng(0)
    values = 11.0 * (1 + 0.002 * rng.standard_normal((polls, POINTS)))
    regs = [encode_values(v, "float32")[0].ravel() for v in values]
    scoring = EdgeScoring("BENCH", cfg.scoring)
    buffer = Buffer(tmp / "pipeline.db", "BENCH")
    t0 = 1_800_000_000.0
    T={k:0.0 for k in "decode check rows score append".split()}
    pc=time.perf_counter
    n=0
    for start in range(0, polls, BATCH):
        rows, events = [], []
        for p in range(start, min(polls, start + BATCH)):
            ts = t0 + p
            for d in daemon.devices:
                a=pc(); v, f = d.source.codec.decode([regs[p]]); b=pc()
                events += d.monitor.check(ts, v); c=pc()
                rows += daemon._rows(d, ts, v, f); e=pc()
                T['decode']+=b-a; T['check']+=c-b; T['rows']+=e-c
        a=pc(); scores, more = scoring.score(rows); b=pc()
        buffer.append(rows, events + more, scores); c=pc()
        T['score']+=b-a; T['append']+=c-b; n+=len(rows)
    for k,v in T.items(): print(f"{k:8s} {1e6*v/n:6.2f} us/reading")
    print("total", 1e6*sum(T.values())/n)
    if len(sys.argv)>1: pass
asyncio.run(main())
