"""Streaming ingest: sustained rows/s with fsync'd acknowledgements through Flight and HTTP,
against writing the same rows with pyarrow (Parquet files) and DuckDB (a durable database
file) in the same run, and the latency from acknowledgement to visible.

One release server (result cache off) streams into a Parquet table partitioned by hour.
Flight: `--writers` concurrent `DoPut` calls, each writing its share in batches of
`--batch-rows` and reading the acknowledgements as they come (the server keeps up to 16
batches of a call in flight). HTTP: NDJSON bodies of 10,000 records, and Arrow IPC bodies of
`--batch-rows`. Peers: pyarrow writes each batch as a Parquet file; DuckDB inserts each
batch into an on-disk table, one commit per batch (its write-ahead log is synced at each
commit). Each figure is the median of `--runs` runs, with its spread (slowest over fastest:
the machine's noise). Visibility: a one-record batch is acknowledged, then a query for it
is sent at once; the time from the acknowledgement to the answer (which must hold the
record) over `--probes` probes, p50 and p99.

Run with `.venv/bin/python benches/streaming.py [--rows 4000000] [--tarn
target/release/tarn]`; writes `benches/results/streaming.md`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = pa.schema([("id", pa.int64()), ("kind", pa.string()), ("v", pa.int64()),
                    ("ts", pa.timestamp("us")), ("hour", pa.int64())])


def template(n: int) -> pa.RecordBatch:
    ids = pa.array(range(n), pa.int64())
    return pa.record_batch([
        ids,
        pa.array([f"kind-{i % 13}" for i in range(n)]),
        pa.array([(i * 7919) % 100_000 for i in range(n)], pa.int64()),
        pa.array([1_704_067_200_000_000 + i * 1_000 for i in range(n)], pa.timestamp("us")),
        pa.array([i % 24 for i in range(n)], pa.int64()),
    ], schema=SCHEMA)


def shifted(base: pa.RecordBatch, first: int) -> pa.RecordBatch:
    return base.set_column(0, "id", pc.add(base.column(0), pa.scalar(first, pa.int64())))


def flight_run(uri: str, base: pa.RecordBatch, batches: int, writers: int, first: int) -> float:
    """Seconds to stream `batches` batches over `writers` calls, every one acknowledged."""
    def write(w: int, errors: list):
        client = flight.FlightClient(uri)
        writer, reader = client.do_put(flight.FlightDescriptor.for_path("default", "events"),
                                       SCHEMA)
        mine = range(w, batches, writers)
        acked = []

        def read_acks():
            for _ in mine:
                ack = reader.read()
                if ack is None:
                    break
                acked.append(json.loads(ack.to_pybytes()))

        reading = threading.Thread(target=read_acks)
        reading.start()
        for b in mine:
            writer.write_batch(shifted(base, first + b * base.num_rows))
        reading.join()
        writer.done_writing()
        writer.close()
        if len(acked) != len(mine):
            errors.append(f"writer {w}: {len(acked)} of {len(mine)} acknowledged")

    errors: list = []
    started = time.perf_counter()
    threads = [threading.Thread(target=write, args=(w, errors)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit("; ".join(errors))
    return time.perf_counter() - started


def post(url: str, body: bytes, content_type: str) -> dict:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": content_type})
    with urllib.request.urlopen(request) as r:
        answer = json.loads(r.read())
    if answer["failed"]:
        sys.exit(f"HTTP refused records: {str(answer)[:300]}")
    return answer


def ndjson(batch: pa.RecordBatch) -> bytes:
    rows = batch.to_pylist()
    return "\n".join(json.dumps({**r, "ts": r["ts"].isoformat()}) for r in rows).encode()


def arrow_ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, SCHEMA) as w:
        w.write_batch(batch)
    return sink.getvalue().to_pybytes()


def pyarrow_run(work: Path, base: pa.RecordBatch, batches: int, first: int) -> float:
    out = work / f"pyarrow-{first}"
    out.mkdir()
    started = time.perf_counter()
    for b in range(batches):
        pq.write_table(pa.Table.from_batches([shifted(base, first + b * base.num_rows)]),
                       out / f"part-{b}.parquet")
    return time.perf_counter() - started


def duckdb_run(work: Path, base: pa.RecordBatch, batches: int, first: int) -> float:
    db = duckdb.connect(str(work / f"duck-{first}.db"))
    db.execute("CREATE TABLE events (id BIGINT, kind VARCHAR, v BIGINT, ts TIMESTAMP, "
               "hour BIGINT)")
    started = time.perf_counter()
    for b in range(batches):
        chunk = shifted(base, first + b * base.num_rows)  # noqa: F841 (read by DuckDB)
        db.execute("INSERT INTO events SELECT * FROM chunk")
    db.close()
    return time.perf_counter() - started


def visibility(uri: str, probes: int) -> list[float]:
    client = flight.FlightClient(uri)
    writer, reader = client.do_put(flight.FlightDescriptor.for_path("default", "events"), SCHEMA)
    one = template(1)
    out = []
    with flightsql.connect(uri) as conn, conn.cursor() as cur:
        for p in range(probes):
            record_id = -1 - p
            writer.write_batch(shifted(one, record_id))
            reader.read()
            acked = time.perf_counter()
            cur.execute(f"SELECT count(*) FROM events WHERE id = {record_id}")
            (n,), = cur.fetchall()
            out.append((time.perf_counter() - acked) * 1000)
            if n != 1:
                sys.exit(f"record {record_id} acknowledged but not visible")
    writer.done_writing()
    writer.close()
    return out


def spread(times: list[float]) -> str:
    return f"{(max(times) / min(times) - 1) * 100:.0f}%"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--tarn", default=str(ROOT / "target" / "release" / "tarn"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tarn-streaming-"))
    lake, data = work / "lake", work / "data"
    base = template(args.batch_rows)
    batches = args.rows // args.batch_rows
    seed = lake / "events" / "hour=0"
    seed.mkdir(parents=True)
    pq.write_table(pa.Table.from_batches([template(10)]).drop_columns(["hour"]),
                   seed / "part-0.parquet")
    crawl = subprocess.run([args.tarn, "--data-dir", str(data), "crawl", str(lake)],
                           capture_output=True, text=True)
    if crawl.returncode != 0:
        sys.exit(crawl.stderr)
    server = subprocess.Popen(
        [args.tarn, "--data-dir", str(data), "serve", "--listen", "127.0.0.1:0",
         "--http-listen", "127.0.0.1:0", "--result-cache-mb", "0",
         "--stream-buffer-mb", "64", "--stream-buffer-seconds", "10",
         "--stream-memory-mb", "4096"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    uri = http = None
    for line in server.stdout:
        if "operations listening on http://" in line:
            http = "http://" + line.split("http://")[1].split()[0]
        if "listening on grpc://" in line:
            uri = "grpc://" + line.split("grpc://")[1].split()[0]
            break
    if uri is None or http is None:
        sys.exit("tarn serve did not start")
    mb = base.nbytes * batches / 1e6
    results: dict[str, list[float]] = {"Tarn, Flight": [], "Tarn, HTTP Arrow IPC": [],
                                       "Tarn, HTTP NDJSON": [], "pyarrow, Parquet files": [],
                                       "DuckDB, one commit per batch": []}
    http_rows = min(args.rows, 200_000)
    json_bodies = [ndjson(shifted(base, 0).slice(i, 10_000))
                   for i in range(0, min(http_rows, base.num_rows), 10_000)]
    ipc_body = arrow_ipc(base)
    try:
        first = 10_000_000
        for run in range(args.runs):
            results["Tarn, Flight"].append(
                flight_run(uri, base, batches, args.writers, first))
            first += args.rows
            started = time.perf_counter()
            for _ in range(batches):
                post(f"{http}/v1/streams/default/events/records", ipc_body,
                     "application/vnd.apache.arrow.stream")
            results["Tarn, HTTP Arrow IPC"].append(time.perf_counter() - started)
            started = time.perf_counter()
            sent = 0
            while sent < http_rows:
                for body in json_bodies:
                    post(f"{http}/v1/streams/default/events/records", body,
                         "application/x-ndjson")
                    sent += 10_000
            # Scaled to the same number of rows as the others.
            results["Tarn, HTTP NDJSON"].append(
                (time.perf_counter() - started) * args.rows / sent)
            results["pyarrow, Parquet files"].append(pyarrow_run(work, base, batches, first))
            results["DuckDB, one commit per batch"].append(duckdb_run(work, base, batches, first))
            print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in results.items()),
                  flush=True)
        latency = visibility(uri, args.probes)
    finally:
        server.terminate()
        server.wait(timeout=60)

    p50 = statistics.median(latency)
    p99 = sorted(latency)[int(len(latency) * 0.99) - 1]
    flight_rate = args.rows / statistics.median(results["Tarn, Flight"])
    lines = [
        "# Streaming ingest: rows/s with fsync'd acknowledgements, and time to visible", "",
        f"Generated by `benches/streaming.py` on {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores; one server ({Path(args.tarn).parent.name} build), result "
        f"cache off. {args.rows:,} rows ({mb:.0f} MB as Arrow) a run in batches of "
        f"{args.batch_rows:,} rows (id, kind, v, ts, hour; the table is partitioned by "
        f"hour, 24 partitions); {args.writers} Flight writers; HTTP NDJSON timed over "
        f"{http_rows:,} rows and scaled. Median of {args.runs} runs.", "",
        "| writer | rows/s | MB/s | seconds | spread | vs Tarn, Flight |",
        "|---|---|---|---|---|---|",
    ]
    for name, times in results.items():
        t = statistics.median(times)
        lines.append(f"| {name} | {args.rows / t:,.0f} | {mb / t:.0f} | {t:.2f} | "
                     f"{spread(times)} | {t / statistics.median(results['Tarn, Flight']):.2f}× |")
    lines += [
        "",
        f"Flight: {flight_rate:,.0f} rows/s (goal: ≥ 1,000,000). "
        f"Acknowledgement to visible (a query for the record, answered): p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms over {args.probes} probes (goal ≤ 100 ms).",
        "",
        "Tarn's figures include the fsync of its log before each acknowledgement; deliveries "
        "to Parquet run alongside (64 MB or 10 s buffers). pyarrow writes files without "
        "fsync or a catalog; DuckDB syncs its log at each commit. \"vs Tarn, Flight\": the "
        "writer's time over Tarn's through Flight (above 1: slower than Tarn).", "",
    ]
    out = ROOT / "benches" / "results" / "streaming.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
