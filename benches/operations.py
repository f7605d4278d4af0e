"""What running Tarn as a shared service costs a query: the query history (recording every
statement with its statistics, the per-query memory pool that measures its peak) and the
metrics, measured as the ratio of two servers over the same catalog in the same run, one
with the history on (the default) and one with it off (`--history-retention-days 0`),
taking turns query by query.

Workloads: the 22 TPC-H queries at SF1 (the sum of their times; goal: at most 2% more with
the history on) and `SELECT 1` round trips (median latency; goal: at most 0.1 ms more).
The metrics' counters, the admission check and the scan statistics run in both servers;
what differs is what the history adds.

The machine's noise is reported beside the ratios: the spread of the history-off server's
own runs (TPC-H: the relative spread of its per-run sums; `SELECT 1`: the spread between its
blocks' medians), so a difference within it is not a difference.

Run with `scripts/bench-operations [--runs N] [--select1 N]`: it builds the release binary and
the Python clients, and writes `benches/results/operations.md`.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benches"))
from dashboard import Server  # noqa: E402
from tpch import generate, query_text  # noqa: E402

QUERIES = range(1, 23)


class Client:
    def __init__(self, binary: str, data_dir: Path, label: str, *flags: str):
        self.label = label
        self.server = Server(binary, data_dir, "--result-cache-mb", "0", *flags)
        self.conn = flightsql.connect(self.server.uri)
        self.cursor = self.conn.cursor()

    def run(self, sql: str) -> float:
        t = time.perf_counter()
        self.cursor.execute(sql)
        self.cursor.fetch_arrow_table()
        return (time.perf_counter() - t) * 1000

    def close(self):
        self.cursor.close()
        self.conn.close()
        self.server.stop()


def spread(values) -> float:
    """Relative spread: (max - min) / median."""
    m = statistics.median(values)
    return (max(values) - min(values)) / m if m else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tarn", default=str(ROOT / "target" / "release" / "tarn"))
    parser.add_argument("--work-dir", default="/tmp/tarn-tpch")
    parser.add_argument("--runs", type=int, default=5, help="TPC-H runs per server")
    parser.add_argument("--select1", type=int, default=2000, help="SELECT 1 round trips per block")
    parser.add_argument("--blocks", type=int, default=10, help="SELECT 1 blocks per server")
    parser.add_argument("--tpchgen", default=str(Path(sys.executable).parent / "tpchgen-cli"))
    parser.add_argument("--out", default=str(ROOT / "benches" / "results" / "operations.md"))
    args = parser.parse_args()

    data = generate(1.0, Path(args.work_dir), args.tpchgen)
    catalog = Path(args.work_dir) / "tarn-operations"
    subprocess.run(["rm", "-rf", str(catalog)], check=True)
    crawl = subprocess.run([args.tarn, "--data-dir", str(catalog), "crawl", str(data)],
                           capture_output=True, text=True)
    if crawl.returncode != 0:
        sys.exit(f"tarn crawl failed: {crawl.stderr}")

    on = Client(args.tarn, catalog, "history on")
    off = Client(args.tarn, catalog, "history off", "--history-retention-days", "0")
    clients = (on, off)
    try:
        texts = {q: query_text(q, 1.0) for q in QUERIES}
        for c in clients:  # warm-up: files in the page cache, plans' first runs
            for q in QUERIES:
                c.run(texts[q])
        sums = {c.label: [] for c in clients}
        for run in range(args.runs):
            totals = {c.label: 0.0 for c in clients}
            for q in QUERIES:
                # Alternate which server goes first, so neither always follows the other.
                order = clients if (run + q) % 2 == 0 else clients[::-1]
                for c in order:
                    totals[c.label] += c.run(texts[q])
            for label, total in totals.items():
                sums[label].append(total)
            print(f"run {run + 1}: " + ", ".join(f"{k} {v / 1000:.2f} s" for k, v in totals.items()),
                  flush=True)

        blocks = {c.label: [] for c in clients}
        for block in range(args.blocks):
            for c in clients if block % 2 == 0 else clients[::-1]:
                times = sorted(c.run("SELECT 1") for _ in range(args.select1))
                blocks[c.label].append(statistics.median(times))
        print("SELECT 1 medians: " + ", ".join(
            f"{k} {statistics.median(v):.3f} ms" for k, v in blocks.items()), flush=True)
    finally:
        for c in clients:
            c.close()

    tpch_on, tpch_off = (statistics.median(sums[c.label]) for c in clients)
    one_on, one_off = (statistics.median(blocks[c.label]) for c in clients)
    lines = [
        "# What the query history and metrics cost",
        "",
        f"Generated by `scripts/bench-operations` on {time.strftime('%Y-%m-%d')}, "
        f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores; "
        "two release servers over one catalog, result cache off, taking turns query by query.",
        "",
        "| workload | history on | history off | on / off | goal | noise (off's own spread) |",
        "|---|---|---|---|---|---|",
        f"| TPC-H SF1, sum of 22 queries (median of {args.runs} runs) | {tpch_on / 1000:.3f} s | "
        f"{tpch_off / 1000:.3f} s | {tpch_on / tpch_off:.3f} | ≤ 1.02 | "
        f"{spread(sums[off.label]) * 100:.1f}% |",
        f"| `SELECT 1` round trip (median of {args.blocks} blocks of {args.select1}) | "
        f"{one_on:.3f} ms | {one_off:.3f} ms | {one_on - one_off:+.3f} ms | ≤ +0.1 ms | "
        f"{(max(blocks[off.label]) - min(blocks[off.label])):.3f} ms |",
        "",
        "Per-run TPC-H sums (s): " + "; ".join(
            f"{k}: " + ", ".join(f"{v / 1000:.2f}" for v in vals) for k, vals in sums.items()),
        "",
        "Both servers count metrics, admit queries and read their scans' statistics; the "
        "history-on server also records each statement (in the background), keeps the "
        "running ones for `system.queries`, and gives each query a memory pool of its own in "
        "front of the server's to measure its peak.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
