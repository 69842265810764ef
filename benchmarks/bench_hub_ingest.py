"""Hub ingest on PostgreSQL: how many readings per second the hub stores, beside a raw binary COPY.

Starts its own throwaway PostgreSQL server (sentinel_cli/pgserver.py: fsync off, so these are CPU
figures, not disk ones), builds ``--rows`` synthetic readings from one edge, cuts them into sync
batches of ``--batch`` (the edge's default batch_max_readings) and measures, best of ``--repeat``,
each run in a fresh database:

- ``hub_ingest_decode``: msgspec decoding and validation of the JSON sync batches, as the hub
  does (protocols.wire.decode_batch); baseline: untyped ``msgspec.json.decode`` of the same bytes.
- ``hub_ingest_apply_sync``: PostgresStorage.apply_sync of the decoded batches (one transaction
  each: lock the edge, partitions, binary COPY, marks).
- ``hub_ingest_decode_apply_sync``: both, as POST /edge/sync does them.
- ``hub_ingest_insert_readings``: PostgresStorage.insert_readings of the same readings, same batches.
- ``hub_ingest_raw_copy_per_batch``: the baseline's COPY cut into one transaction per batch, no hub
  code at all: what batching costs by itself (client and server stop overlapping at each commit).

The ingest baseline is one binary COPY of the same rows, prebuilt as tuples in memory, into a
plain (unpartitioned) table with the same columns and the same two indexes.

    .venv/bin/python benchmarks/bench_hub_ingest.py [--rows 200000] [--batch 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta

import msgspec
from _common import Figure, best_of, machine, print_json_lines, rate, use_repo_root

use_repo_root()

import psycopg  # noqa: E402

from hub.storage.postgres import PostgresStorage  # noqa: E402
from protocols.reading import Reading  # noqa: E402
from protocols.wire import ReadingRun, SyncBatch, decode_batch, encode  # noqa: E402
from sentinel_cli.pgserver import PostgresServer  # noqa: E402

EDGE = "edge-bench-1"
SUBSTATION = "bench-s1"
START = datetime(2026, 3, 1, 23, 50, tzinfo=UTC)  # the run crosses midnight: two daily partitions
METRICS = (("voltage_l1", "V", 230.0), ("voltage_l2", "V", 230.0), ("frequency", "Hz", 50.0),
           ("oil_temperature", "degC", 65.0))

RAW_TABLE = """
CREATE TABLE readings_raw (
    ts timestamptz NOT NULL, substation text NOT NULL, device_id text NOT NULL, metric text NOT NULL,
    value double precision, unit text NOT NULL, quality double precision NOT NULL, flags integer NOT NULL,
    source text NOT NULL, seq bigint
);
CREATE INDEX ON readings_raw USING brin (ts);
CREATE INDEX ON readings_raw (device_id, metric, ts);
"""
RAW_COPY = ("COPY readings_raw (ts, substation, device_id, metric, value, unit, quality, flags, source, seq)"
            " FROM STDIN (FORMAT BINARY)")
RAW_TYPES = ["timestamptz", "text", "text", "text", "float8", "text", "float8", "int4", "text", "int8"]


def synthetic_readings(n: int, devices: int = 50, seed: int = 7) -> list[Reading]:
    """``n`` readings: ``devices`` feeders x 4 metrics sampled every second; 1 % without a value."""
    rng = random.Random(seed)
    per_tick = devices * len(METRICS)
    out = []
    for i in range(n):
        tick, k = divmod(i, per_tick)
        device, m = divmod(k, len(METRICS))
        metric, unit, nominal = METRICS[m]
        missing = rng.random() < 0.01
        out.append(Reading(
            ts=START + timedelta(seconds=tick), substation=SUBSTATION, device_id=f"feeder-{device:03d}",
            metric=metric, value=None if missing else nominal * (1 + rng.gauss(0, 0.01)), unit=unit,
            quality=0.0 if missing else 1.0, flags=16 if missing else 0,
        ))
    return out


def sync_batches(readings: list[Reading], size: int) -> list[bytes]:
    return [
        encode(SyncBatch(edge_id=EDGE, substation=SUBSTATION, sent_at=START,
                         readings=ReadingRun(first_seq=i + 1, items=readings[i:i + size])))
        for i in range(0, len(readings), size)
    ]


def no_incidents(events: object) -> list:
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="readings to ingest (default 200,000)")
    parser.add_argument("--batch", type=int, default=5_000, help="readings per sync batch (default 5,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best counts (default 3)")
    args = parser.parse_args(argv)
    n = args.rows

    readings = synthetic_readings(n)
    payloads = sync_batches(readings, args.batch)
    decoded = [decode_batch(p) for p in payloads]
    raw_rows = [(r.ts, r.substation, r.device_id, r.metric, r.value, r.unit, r.quality, r.flags, EDGE, i + 1)
                for i, r in enumerate(readings)]
    chunks = [readings[i:i + args.batch] for i in range(0, n, args.batch)]
    mib = sum(map(len, payloads)) / 2**20
    print(f"# hub ingest: {n:,} readings in {len(payloads)} sync batches of {args.batch:,} ({mib:.1f} MiB of JSON),"
          f" best of {args.repeat}; {machine()}", flush=True)

    figures: list[Figure] = []

    def record(figure: Figure) -> None:
        figures.append(figure)
        print(figure.human(), flush=True)

    # -- decoding: no server needed ----------------------------------------------------------------
    untyped = best_of(lambda _: [msgspec.json.decode(p) for p in payloads], args.repeat)
    typed = best_of(lambda _: [decode_batch(p) for p in payloads], args.repeat)
    record(Figure("hub_ingest_decode", rate(n, typed), "rows/s", rate(n, untyped)))

    with tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp, PostgresServer(tmp) as server:
        print(f"# PostgreSQL {server.bindir} on {server.host}:{server.port}", flush=True)

        def fresh_storage() -> PostgresStorage:
            return PostgresStorage(server.create_database())

        # -- the raw baseline: one binary COPY of prebuilt rows ------------------------------------
        def raw_setup() -> psycopg.Connection:
            conn = psycopg.connect(server.create_database())
            conn.execute(RAW_TABLE)
            conn.commit()
            return conn

        def raw_copy(conn: psycopg.Connection) -> None:
            with conn.cursor() as cur, cur.copy(RAW_COPY) as copy:
                copy.set_types(RAW_TYPES)
                for row in raw_rows:
                    copy.write_row(row)
            conn.commit()

        def raw_copy_batched(conn: psycopg.Connection) -> None:
            for i in range(0, n, args.batch):
                with conn.cursor() as cur, cur.copy(RAW_COPY) as copy:
                    copy.set_types(RAW_TYPES)
                    for row in raw_rows[i:i + args.batch]:
                        copy.write_row(row)
                conn.commit()

        copy_s = best_of(raw_copy, args.repeat, setup=raw_setup, teardown=lambda c: c.close())
        baseline = rate(n, copy_s)
        print(f"{'raw binary COPY (baseline)':<34} {baseline:>14,.0f} rows/s", flush=True)
        # What cutting the same COPY into one transaction per sync batch costs by itself.
        batched_s = best_of(raw_copy_batched, args.repeat, setup=raw_setup, teardown=lambda c: c.close())
        record(Figure("hub_ingest_raw_copy_per_batch", rate(n, batched_s), "rows/s", baseline))

        # -- the hub's paths -------------------------------------------------------------------------
        def apply_decoded(store: PostgresStorage) -> None:
            for batch in decoded:
                store.apply_sync(batch, no_incidents)

        def decode_and_apply(store: PostgresStorage) -> None:
            for payload in payloads:
                store.apply_sync(decode_batch(payload), no_incidents)

        def insert(store: PostgresStorage) -> None:
            for chunk in chunks:
                store.insert_readings(chunk, "http")

        def check(store: PostgresStorage) -> None:
            counts = store.reading_counts()
            if counts != {SUBSTATION: n}:
                raise SystemExit(f"stored {counts}, expected {{{SUBSTATION!r}: {n}}}")
            store.close()

        apply_s = best_of(apply_decoded, args.repeat, setup=fresh_storage, teardown=check)
        record(Figure("hub_ingest_apply_sync", rate(n, apply_s), "rows/s", baseline))
        both_s = best_of(decode_and_apply, args.repeat, setup=fresh_storage, teardown=check)
        record(Figure("hub_ingest_decode_apply_sync", rate(n, both_s), "rows/s", baseline))
        insert_s = best_of(insert, args.repeat, setup=fresh_storage, teardown=check)
        record(Figure("hub_ingest_insert_readings", rate(n, insert_s), "rows/s", baseline))

    print_json_lines(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
