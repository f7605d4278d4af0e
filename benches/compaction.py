"""Query speed on a Firehose-style table of many small files, before and after `OPTIMIZE`,
against the same rows freshly written as one file per partition, in the same run.

The lake: `small/hour=HH/` holds `--files` small Parquet files spread over 10 hours (as a
buffering writer leaves them every minute); `fresh/hour=HH/` holds the same rows in one file
per hour, written by pyarrow. Both are crawled into one catalog; one release server (result
cache off) answers each query `--runs` times on each table (after a warm-up run), then runs
`OPTIMIZE small` and answers them again. Reported: medians, their spread (the machine's
noise: slowest run over fastest), and the share of the fresh table's speed compaction
recovers (fresh ms / compacted ms; the goal is at least 0.9).

Run with `.venv/bin/python benches/compaction.py [--files 10000] [--runs 5] [--tarn
target/release/tarn]`; writes `benches/results/compaction.md`.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
HOURS = 10

QUERIES = {
    "count and sum": "SELECT count(*), sum(v) FROM {t}",
    "one hour, grouped": "SELECT kind, count(*), avg(v) FROM {t} WHERE hour = 3 GROUP BY kind",
    "every hour, grouped": "SELECT hour, kind, max(v) FROM {t} GROUP BY hour, kind",
    "point lookup": "SELECT * FROM {t} WHERE id = 1234567",
}


def rows(first: int, n: int) -> pa.Table:
    ids = pa.array(range(first, first + n), pa.int64())
    return pa.table({
        "id": ids,
        "kind": pa.array([f"k{i % 13}" for i in range(first, first + n)]),
        "v": pa.array([(i * 7919) % 100_000 for i in range(first, first + n)], pa.int64()),
    })


def write_lake(root: Path, files: int, rows_per_file: int):
    per_hour = files // HOURS
    for hour in range(HOURS):
        small = root / "small" / f"hour={hour}"
        fresh = root / "fresh" / f"hour={hour}"
        small.mkdir(parents=True)
        fresh.mkdir(parents=True)
        parts = []
        for i in range(per_hour):
            t = rows((hour * per_hour + i) * rows_per_file, rows_per_file)
            pq.write_table(t, small / f"firehose-{i:05d}.parquet")
            parts.append(t)
        pq.write_table(pa.concat_tables(parts), fresh / "part-0.parquet")


def timed(cur, sql: str, runs: int) -> list[float]:
    cur.execute(sql)
    cur.fetchall()  # warm-up
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        cur.execute(sql)
        cur.fetchall()
        out.append((time.perf_counter() - t) * 1000)
    return out


def answer(cur, sql: str) -> list[tuple]:
    cur.execute(sql)
    return sorted(map(tuple, cur.fetchall()))


def spread(times: list[float]) -> str:
    return f"{(max(times) / min(times) - 1) * 100:.0f}%"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rows-per-file", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tarn", default=str(ROOT / "target" / "release" / "tarn"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tarn-compaction-"))
    lake, data = work / "lake", work / "data"
    started = time.perf_counter()
    write_lake(lake, args.files, args.rows_per_file)
    print(f"wrote {args.files} small files in {time.perf_counter() - started:.0f} s", flush=True)
    crawl = subprocess.run([args.tarn, "--data-dir", str(data), "crawl", str(lake)],
                           capture_output=True, text=True)
    if crawl.returncode != 0:
        sys.exit(crawl.stderr)
    server = subprocess.Popen(
        [args.tarn, "--data-dir", str(data), "serve", "--listen", "127.0.0.1:0",
         "--result-cache-mb", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    uri = None
    for line in server.stdout:
        if "listening on grpc://" in line:
            uri = "grpc://" + line.split("grpc://")[1].split()[0]
            break
    if uri is None:
        sys.exit("tarn serve did not start")
    try:
        with flightsql.connect(uri) as conn, conn.cursor() as cur:
            before = {name: timed(cur, q.format(t="small"), args.runs)
                      for name, q in QUERIES.items()}
            fresh = {name: timed(cur, q.format(t="fresh"), args.runs)
                     for name, q in QUERIES.items()}
            answers = {name: answer(cur, q.format(t="small")) for name, q in QUERIES.items()}
            t = time.perf_counter()
            cur.execute("OPTIMIZE small")
            message = cur.fetchall()[0][0]
            optimize_s = time.perf_counter() - t
            print(message, flush=True)
            after = {name: timed(cur, q.format(t="small"), args.runs)
                     for name, q in QUERIES.items()}
            for name, q in QUERIES.items():
                if answer(cur, q.format(t="small")) != answers[name]:
                    sys.exit(f"{name}: the answer changed after OPTIMIZE")
    finally:
        server.terminate()
        server.wait(timeout=30)

    lines = [
        "# Compaction: many small files, OPTIMIZE, and a freshly written table", "",
        f"Generated by `benches/compaction.py` on {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores; one server ({Path(args.tarn).parent.name} build), result cache off, "
        f"{args.runs} runs a "
        f"query after a warm-up. Table `small`: {args.files:,} files of {args.rows_per_file} "
        f"rows over {HOURS} hour partitions; `fresh`: the same rows, one file per hour "
        f"(pyarrow). `OPTIMIZE small` took {optimize_s:.1f} s: {message}. Answers were the "
        "same before and after.", "",
        "| query | small files ms | spread | after OPTIMIZE ms | spread | fresh ms | spread "
        "| speed-up | fresh speed recovered |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    recovered = []
    for name in QUERIES:
        b, a, f = (statistics.median(x[name]) for x in (before, after, fresh))
        recovered.append(f / a)
        lines.append(
            f"| {name} | {b:.1f} | {spread(before[name])} | {a:.1f} | {spread(after[name])} "
            f"| {f:.1f} | {spread(fresh[name])} | {b / a:.1f}× | {f / a:.2f} |")
    geo = statistics.geometric_mean(recovered)
    lines += ["", f"Geometric mean of the fresh speed recovered: {geo:.2f} (goal ≥ 0.9). "
              "Speed-up: small files ms / after OPTIMIZE ms. Spread: slowest run over the "
              "fastest, the machine's noise for that figure.", ""]
    out = ROOT / "benches" / "results" / "compaction.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
