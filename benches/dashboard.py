"""Dashboard benchmark: twelve typical dashboard queries over a year of hourly event
partitions, through Tarn's Flight SQL server (ADBC) with and without materialized views, and
DuckDB over the same files, in the same run; plus each query repeated against a server with
the result cache on.

Run with `scripts/bench-dashboard [--rows N] [--iterations N]` (it builds the release binary
and the Python clients). Reports p50/p99 per query and ratios, the time to create the rollups,
and the time of an incremental refresh after one new hourly partition lands.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
TYPES = np.array(["view", "click", "add_to_cart", "checkout", "purchase", "share"])
COUNTRIES = np.array(["US", "DE", "FR", "GB", "JP", "BR", "IN", "CA", "ES", "IT",
                      "NL", "SE", "PL", "MX", "AU", "KR", "TR", "AR", "ZA", "NG"])
DEVICES = np.array(["ios", "android", "web", "tv"])
START = datetime(2025, 1, 1, tzinfo=timezone.utc)
HOURS = 365 * 24

ROLLUPS = [
    "CREATE MATERIALIZED VIEW events_hourly AS SELECT date_trunc('hour', ts) AS hour, "
    "event_type, country, count(*) AS n, sum(amount) AS amount, min(amount) AS min_amount, "
    "max(amount) AS max_amount FROM events GROUP BY 1, 2, 3",
    "CREATE MATERIALIZED VIEW events_daily AS SELECT date_trunc('day', ts) AS day_start, "
    "event_type, device, count(*) AS n, sum(amount) AS amount FROM events GROUP BY 1, 2, 3",
    # Distinct users as mergeable sketches: one per day.
    "CREATE MATERIALIZED VIEW users_daily AS SELECT date_trunc('day', ts) AS day_start, "
    "approx_distinct(user_id) AS users FROM events GROUP BY 1",
]

# (name, SQL). Ranges are aligned to hours or days, as dashboards' time pickers are.
QUERIES = [
    ("events per hour, last 7 days",
     "SELECT date_trunc('hour', ts) AS h, count(*) AS n FROM events "
     "WHERE ts >= TIMESTAMP '2025-12-25 00:00:00' GROUP BY 1 ORDER BY 1"),
    ("events per day, whole year",
     "SELECT date_trunc('day', ts) AS d, count(*) AS n FROM events GROUP BY 1 ORDER BY 1"),
    ("top 10 countries, March",
     "SELECT country, count(*) AS n FROM events WHERE ts >= TIMESTAMP '2025-03-01 00:00:00' "
     "AND ts < TIMESTAMP '2025-04-01 00:00:00' GROUP BY country ORDER BY n DESC LIMIT 10"),
    ("revenue by event type, last 30 days",
     "SELECT event_type, sum(amount) AS revenue FROM events "
     "WHERE ts >= TIMESTAMP '2025-12-02 00:00:00' GROUP BY 1 ORDER BY revenue DESC"),
    ("events per week by device",
     "SELECT date_trunc('week', ts) AS w, device, count(*) AS n FROM events "
     "GROUP BY 1, 2 ORDER BY 1, 2"),
    ("funnel per month",
     "SELECT date_trunc('month', ts) AS m, event_type, count(*) AS n FROM events "
     "WHERE event_type IN ('view', 'add_to_cart', 'checkout', 'purchase') "
     "GROUP BY 1, 2 ORDER BY 1, 2"),
    ("min/max order per day, one country",
     "SELECT date_trunc('day', ts) AS d, min(amount), max(amount) FROM events "
     "WHERE country = 'DE' AND event_type = 'purchase' GROUP BY 1 ORDER BY 1"),
    ("revenue per month and country",
     "SELECT date_trunc('month', ts) AS m, country, sum(amount) AS revenue FROM events "
     "GROUP BY 1, 2 ORDER BY 1, 2"),
    ("one day's hourly purchases",
     "SELECT date_trunc('hour', ts) AS h, count(*), sum(amount) FROM events "
     "WHERE ts >= TIMESTAMP '2025-07-04 00:00:00' AND ts < TIMESTAMP '2025-07-05 00:00:00' "
     "AND event_type = 'purchase' GROUP BY 1 ORDER BY 1"),
    ("distinct users per day, last 7 days (approx_distinct)",
     "SELECT date_trunc('day', ts) AS d, approx_distinct(user_id) AS users FROM events "
     "WHERE ts >= TIMESTAMP '2025-12-25 00:00:00' GROUP BY 1 ORDER BY 1"),
    ("distinct users per week, whole year (approx_distinct)",
     "SELECT date_trunc('week', ts) AS w, approx_distinct(user_id) AS users FROM events "
     "GROUP BY 1 ORDER BY 1"),
    ("distinct users per day, last 7 days (exact count DISTINCT)",
     "SELECT date_trunc('day', ts) AS d, count(DISTINCT user_id) AS users FROM events "
     "WHERE ts >= TIMESTAMP '2025-12-25 00:00:00' GROUP BY 1 ORDER BY 1"),
]


def duckdb_sql(sql: str) -> str:
    """DuckDB spells approx_distinct approx_count_distinct."""
    return sql.replace("approx_distinct(", "approx_count_distinct(")


def write_hour(lake: Path, hour: int, rows: int, rng) -> None:
    t0 = START + timedelta(hours=hour)
    base_us = int(t0.timestamp() * 1_000_000)
    ts = np.sort(base_us + rng.integers(0, 3_600_000_000, rows))
    kinds = TYPES[rng.choice(len(TYPES), rows, p=[0.4, 0.25, 0.15, 0.1, 0.07, 0.03])]
    amount = np.where(kinds == "purchase", rng.integers(100, 50_000, rows), 0)
    table = pa.table({
        "ts": pa.array(ts, pa.timestamp("us")),
        "user_id": pa.array(rng.integers(1, 200_000, rows), pa.int64()),
        "event_type": pa.array(kinds),
        "country": pa.array(COUNTRIES[rng.integers(0, len(COUNTRIES), rows)]),
        "device": pa.array(DEVICES[rng.integers(0, len(DEVICES), rows)]),
        "amount": pa.array(amount, pa.int64()),
    })
    folder = lake / "events" / (
        f"year={t0.year}/month={t0.month:02d}/day={t0.day:02d}/hour={t0.hour:02d}")
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "part-0.parquet", compression="zstd")


def write_lake(lake: Path, rows: int) -> None:
    marker = lake / f".complete-{rows}"
    if marker.exists():
        print(f"using the lake at {lake}")
        return
    print(f"writing {rows:,} rows in {HOURS} hourly partitions to {lake} ...", flush=True)
    rng = np.random.default_rng(42)
    per_hour = rows // HOURS
    started = time.time()
    for h in range(HOURS):
        write_hour(lake, h, per_hour, rng)
    marker.write_text("")
    print(f"  written in {time.time() - started:.0f} s")


class Server:
    """`tarn serve` (or, with `command="worker"`, `tarn worker`) on 127.0.0.1:0; its
    address comes from its ready line."""

    def __init__(self, binary: str, data_dir: Path, *extra: str, command: str = "serve"):
        if command == "serve":
            extra = ("--schedule-check-secs", "3600", *extra)
        self.proc = subprocess.Popen(
            [binary, "--data-dir", str(data_dir), command, "--listen", "127.0.0.1:0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        found = {}
        ready = threading.Event()

        def read():
            for line in self.proc.stdout:
                m = re.search(r"listening on ((?:grpc|http)://\S+)", line)
                if m:
                    found["uri"] = m.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        ready.wait(60)
        if "uri" not in found:
            raise RuntimeError(f"tarn {command} did not start")
        self.uri = found["uri"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def timed(run, iterations: int):
    run()  # warm-up (and the cold run)
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    p50 = statistics.median(times)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return p50, p99


def flight_runner(conn, sql):
    # One cursor for every run, as a dashboard keeps its statement: creating an ADBC cursor
    # costs the Python client about 2 ms, which is not the server's time.
    cur = conn.cursor()

    def run():
        cur.execute(sql)
        cur.fetch_arrow_table()
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--tarn", default=str(ROOT / "target" / "release" / "tarn"))
    args = parser.parse_args()
    work = Path(args.work_dir or os.path.join(tempfile.gettempdir(), "tarn-dashboard-bench"))
    lake = work / "lake"
    write_lake(lake, args.rows)
    data_dir = work / f"data-{args.rows}"
    if data_dir.exists():
        subprocess.run(["rm", "-rf", str(data_dir)], check=True)

    def tarn(*a):
        t = time.perf_counter()
        out = subprocess.run([args.tarn, "--data-dir", str(data_dir), *a],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"tarn {' '.join(a)} failed: {out.stderr}")
        return time.perf_counter() - t, out.stdout

    secs, _ = tarn("crawl", str(lake / "events"), "--table", "events")
    print(f"crawled {HOURS} partitions in {secs:.2f} s")
    creation = []
    for ddl in ROLLUPS:
        secs, out = tarn("sql", ddl)
        name = ddl.split()[3]
        creation.append((name, secs))
        print(f"created {name} in {secs:.1f} s")

    # Timings are of answering, not of remembering: the result cache is off, except on a
    # third server that measures a dashboard's repeated query.
    with_rollups = Server(args.tarn, data_dir, "--result-cache-mb", "0")
    without = Server(args.tarn, data_dir, "--no-rollup-rewrite", "--result-cache-mb", "0")
    cached = Server(args.tarn, data_dir)
    duck = duckdb.connect()
    duck.sql(f"CREATE VIEW events AS SELECT * FROM read_parquet('{lake}/events/**/*.parquet', "
             "hive_partitioning = true)")
    results = []
    try:
        fast = flightsql.connect(with_rollups.uri)
        slow = flightsql.connect(without.uri)
        repeat = flightsql.connect(cached.uri)
        for name, sql in QUERIES:
            # Same answer both ways, or the speed does not count.
            a = fast.cursor()
            a.execute(sql)
            got = a.fetch_arrow_table()
            b = slow.cursor()
            b.execute(sql)
            want = b.fetch_arrow_table()
            # Compared as sets of rows: ties under ORDER BY may come in any order.
            key = lambda t: sorted(map(str, t.to_pylist()))
            if key(got) != key(want):
                sys.exit(f"{name}: answers differ with and without rollups")
            a.execute("EXPLAIN " + sql)
            plan = a.fetch_arrow_table().to_pylist()
            used = [r["plan"] for r in plan if r["plan_type"] == "rollups"]
            rollup = next((u.split()[1] for u in used if u.startswith("used ")), "-")
            r = timed(flight_runner(fast, sql), args.iterations)
            b_ = timed(flight_runner(slow, sql), max(3, args.iterations // 4))
            d = timed(lambda: duck.sql(duckdb_sql(sql)).fetchall(),
                      max(3, args.iterations // 4))
            c = timed(flight_runner(repeat, sql), args.iterations)
            a.close()
            b.close()
            results.append((name, rollup, r, b_, d, c))
            print(f"  {name}: {r[0]:.1f} ms with rollups ({rollup}), {b_[0]:.1f} ms without, "
                  f"{d[0]:.1f} ms DuckDB, {c[0]:.2f} ms repeated (result cache)", flush=True)
        # The floor: the client's and the protocol's cost of any query.
        floor = timed(flight_runner(fast, "SELECT 1"), args.iterations)
        cur = repeat.cursor()
        cur.execute("SHOW RESULT CACHE")
        cache_stats = cur.fetch_arrow_table().to_pylist()[0]
        cur.close()

        # Incremental refresh after one new hourly partition lands.
        rng = np.random.default_rng(7)
        write_hour(lake, HOURS, args.rows // HOURS, rng)
        # The crawl refreshes every rollup before it returns.
        crawl_secs, _ = tarn("crawl", str(lake / "events"), "--table", "events")
        _, shown = tarn("sql", "SELECT 1", "--format", "csv")
        _, shown = tarn("sql", "SHOW MATERIALIZED VIEWS", "--format", "csv")
        shown = "\n".join(",".join(line.split(",")[:7]) for line in shown.splitlines())
        fast.close()
        slow.close()
        repeat.close()
    finally:
        with_rollups.stop()
        without.stop()
        cached.stop()
        # Leave the lake as it was for the next run.
        extra = START + timedelta(hours=HOURS)
        subprocess.run(["rm", "-rf", str(lake / "events" / f"year={extra.year}")])

    print()
    print(f"Dashboard queries over {args.rows:,} events in {HOURS} hourly partitions "
          f"({args.iterations} runs each with rollups; p50 / p99 ms)")
    print()
    print("| query | rollup used | Tarn + rollups | Tarn, no rollups | DuckDB | "
          "speed-up vs no rollups | vs DuckDB | repeated, result cache |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, rollup, r, b, d, c in results:
        print(f"| {name} | {rollup} | {r[0]:.1f} / {r[1]:.1f} | {b[0]:.1f} / {b[1]:.1f} | "
              f"{d[0]:.1f} / {d[1]:.1f} | {b[0] / r[0]:.0f}x | {d[0] / r[0]:.1f}x | "
              f"{c[0]:.2f} / {c[1]:.2f} |")
    print()
    print(f"- `SELECT 1` through the same client and server (the floor of every row): "
          f"{floor[0]:.2f} / {floor[1]:.2f} ms")
    print(f"- result cache after the run: {cache_stats['hits']} hits, "
          f"{cache_stats['misses']} misses, {cache_stats['entries']} entries, "
          f"{cache_stats['bytes']:,} bytes")
    print()
    for name, secs in creation:
        print(f"- CREATE MATERIALIZED VIEW {name}: {secs:.1f} s (whole year)")
    print(f"- one new hourly partition: `tarn crawl` including the incremental refresh of "
          f"every rollup: {crawl_secs:.2f} s (whole command, process start included)")
    print("- SHOW MATERIALIZED VIEWS after it:")
    print("  " + shown.strip().replace("\n", "\n  "))


if __name__ == "__main__":
    main()
