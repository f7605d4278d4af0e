"""Distributed execution's overhead: the 22 TPC-H queries on one `tarn serve`, and on a
coordinator (`tarn serve --workers …`) with `--workers` worker processes, on the same
machine and the same files, taking turns query by query (benches/tpch.py's `run_all`).

On one machine the two setups share the same cores, so the ratio measures what spreading a
plan costs (serialising stages, shuffling batches over loopback gRPC, the coordinator's
extra planning), not what more machines would give. The README's scaling model uses what
this run records of each query's stages and of the bytes its scans read and its network
boundaries carried (EXPLAIN ANALYZE, after the timed runs). The answers of both are checked against DuckDB's.

Run with `scripts/bench-distributed [--scale 10] [--runs 3] [--query N …]`; writes
`benches/results/distributed-sf<N>.md`.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benches"))
import tpch  # noqa: E402
from dashboard import Server  # noqa: E402

RESULTS = ROOT / "benches" / "results"


class Setup:
    """A Tarn server (alone, or the coordinator of workers) queried over one ADBC cursor."""

    def __init__(self, binary: str, data_dir: Path, scale: float, *flags: str):
        import adbc_driver_flightsql.dbapi as flightsql
        self.scale = scale
        self.server = Server(binary, data_dir, "--result-cache-mb", "0",
                             "--rollup-memory-mb", "0", *flags)
        self.conn = flightsql.connect(self.server.uri)
        self.cursor = self.conn.cursor()

    def run(self, q: int) -> dict:
        sql = tpch.query_text(q, self.scale)
        t = time.perf_counter()
        self.cursor.execute(sql)
        table = self.cursor.fetch_arrow_table()
        ms = (time.perf_counter() - t) * 1000
        return {"ms": [ms], "rows": table.num_rows, "first": tpch.first_row(table),
                "answer": table}

    def explain(self, q: int) -> str:
        self.cursor.execute("EXPLAIN " + tpch.query_text(q, self.scale))
        return "\n".join(str(r[1]) for r in self.cursor.fetchall())

    def analyze(self, q: int) -> str:
        self.cursor.execute("EXPLAIN ANALYZE " + tpch.query_text(q, self.scale))
        return "\n".join(str(r[1]) for r in self.cursor.fetchall())

    def close(self) -> int:
        try:
            self.cursor.close()
            self.conn.close()
            return tpch.peak_rss_kb(self.server.proc.pid)
        finally:
            self.server.stop()


def stages(plan: str) -> list[int]:
    """The task count of each stage of a distributed plan's EXPLAIN (empty: local)."""
    return [int(t) for t in re.findall(r"Stage \d+ ── tasks=(\d+)", plan)]


# DataFusion prints counts with K/M/B (thousand, million, billion) and
# datafusion-distributed prints bytes with KB/MB/GB (binary).
COUNT = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
SIZE = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}


def metric(line: str, name: str, units: dict) -> float:
    """The value of metric `name` on one line of EXPLAIN ANALYZE (0 when absent)."""
    found = re.search(rf"\b{name}=([\d.]+)(?: ([KMGT]?B|[KMBT])\b)?", line)
    if not found:
        return 0.0
    return float(found.group(1)) * units[found.group(2) or ""]


def volumes(analyzed: str) -> dict:
    """What a distributed run moved, from its EXPLAIN ANALYZE: the Parquet bytes the scans
    read, and the bytes each network boundary carried from the stage below it (a shuffle
    between workers, a broadcast, or the gather to the coordinator)."""
    # A scan split over tasks reports its tasks' sum on its `DistributedLeafExec` line.
    scanned = sum(metric(line, "bytes_scanned", COUNT) for line in analyzed.splitlines())
    crossings = [(kind, metric(line, "bytes_transferred", SIZE))
                 for line in analyzed.splitlines()
                 for kind in re.findall(r"Network(Shuffle|Coalesce|Broadcast)Exec", line)]
    return {"scanned": scanned, "crossings": crossings}


def report(scale, queries, results, plans, moved, workers, runs, differences) -> str:
    single, cluster = results["single"], results["cluster"]
    lines = [
        f"# Distributed overhead, TPC-H SF{scale:g}", "",
        f"One `tarn serve` against a coordinator with {workers} `tarn worker` processes, all on "
        f"this machine ({os.cpu_count()} cores shared by every process), the same catalog and "
        f"files, result cache off; {runs} warm runs a query after a cold one, the two setups "
        "taking turns query by query. Ratio: coordinator + workers / one server (medians). "
        "Stages: the distributed plan's stages and their tasks (`-`: planned on the "
        "coordinator).", "",
        "| query | one server ms | spread | cluster ms | spread | ratio | stages (tasks) |",
        "|---|---|---|---|---|---|---|",
    ]
    ratios, sums = [], [0.0, 0.0]
    for q in queries:
        a, b = (statistics.median(r[q]["ms"][1:]) for r in (single, cluster))
        spread = [max(r[q]["ms"][1:]) / min(r[q]["ms"][1:]) - 1 for r in (single, cluster)]
        tasks = stages(plans[q])
        shown = " ".join(str(t) for t in tasks) if tasks else "-"
        ratios.append(b / a)
        sums[0] += a
        sums[1] += b
        lines.append(f"| Q{q} | {a:.0f} | {spread[0]:.0%} | {b:.0f} | {spread[1]:.0%} | "
                     f"{b / a:.2f} | {shown} |")
    lines += [
        f"| sum | {sums[0]:.0f} | | {sums[1]:.0f} | | {sums[1] / sums[0]:.2f} | |", "",
        f"Geometric mean of the ratios: {tpch.geomean(ratios):.2f}. Distributed plans: "
        f"{sum(1 for q in queries if stages(plans[q]))} of {len(queries)}. Spread: the "
        "slowest warm run over the fastest, the machine's noise for that query.",
    ]
    lines += volume_table(queries, moved)
    if differences:
        lines += ["", "Answers that differ from DuckDB's: "
                  + ", ".join(f"Q{q}" for q in sorted(differences))]
    return "\n".join(lines) + "\n"


def volume_table(queries, moved) -> list[str]:
    """Per query, what the distributed run read and moved, in MiB (from one more run of
    each query under EXPLAIN ANALYZE, after the timed ones)."""
    mib = 2**20
    lines = [
        "", "## Data volumes", "",
        "From one `EXPLAIN ANALYZE` run of each query on the cluster after the timed runs. "
        "Scanned: Parquet bytes the scans read. Exchanged: bytes shuffled or broadcast "
        "between stages on the workers. Gathered: bytes sent to the coordinator. Largest "
        "exchange: the biggest single boundary. MiB.", "",
        "| query | scanned | exchanged | gathered | largest exchange | exchanged / scanned |",
        "|---|---|---|---|---|---|",
    ]
    totals = [0.0, 0.0, 0.0]
    for q in queries:
        v = moved[q]
        exchanged = [b for kind, b in v["crossings"] if kind != "Coalesce"]
        gathered = sum(b for kind, b in v["crossings"] if kind == "Coalesce")
        row = [v["scanned"], sum(exchanged), gathered]
        totals = [t + r for t, r in zip(totals, row)]
        share = f"{row[1] / row[0]:.1%}" if row[0] else "-"
        largest = max(exchanged, default=0.0)
        lines.append(f"| Q{q} | {row[0] / mib:.1f} | {row[1] / mib:.1f} | {row[2] / mib:.2f} | "
                     f"{largest / mib:.1f} | {share} |")
    share = f"{totals[1] / totals[0]:.1%}" if totals[0] else "-"
    lines.append(f"| sum | {totals[0] / mib:.1f} | {totals[1] / mib:.1f} | "
                 f"{totals[2] / mib:.2f} | | {share} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--query", type=int, action="append")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "tarn-tpch"))
    parser.add_argument("--tarn", default=str(ROOT / "target" / "release" / "tarn"))
    parser.add_argument("--tpchgen", default=str(Path(sys.executable).parent / "tpchgen-cli"))
    args = parser.parse_args()
    queries = args.query or list(range(1, 23))
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    data = tpch.generate(args.scale, work, args.tpchgen)
    data_dir = work / f"distributed-sf{args.scale:g}"
    subprocess.run(["rm", "-rf", str(data_dir)], check=True)
    crawl = subprocess.run([args.tarn, "--data-dir", str(data_dir), "crawl", str(data)],
                           capture_output=True, text=True)
    if crawl.returncode != 0:
        sys.exit(f"tarn crawl failed: {crawl.stderr}")
    # Both setups live at once and get the same memory in all: the one server 30% of the
    # machine's, the coordinator and each worker an equal part of another 30%.
    share = f"{30 // (args.workers + 1)}%"
    workers = [Server(args.tarn, work / f"worker-{i}", "--memory-limit", share, command="worker")
               for i in range(args.workers)]
    addresses = ",".join(w.uri.removeprefix("http://") for w in workers)
    setups = {}
    try:
        setups["single"] = Setup(args.tarn, data_dir, args.scale, "--memory-limit", "30%")
        setups["cluster"] = Setup(args.tarn, data_dir, args.scale, "--memory-limit", share,
                                  "--workers", addresses, "--distribute-min-bytes", "0")
        plans = {q: setups["cluster"].explain(q) for q in queries}
        tpch.LABELS.update({"single": "one server", "cluster": "coordinator + workers"})
        results = tpch.run_all(setups, queries, args.runs)
        moved = {q: volumes(setups["cluster"].analyze(q)) for q in queries}
    finally:
        for setup in setups.values():
            setup.close()
        for w in workers:
            w.stop()
    differences = {}
    for key in ("single", "cluster"):
        for q, d in tpch.check_answers(data, args.scale, queries, results[key]).items():
            differences[q] = f"{key}: {d}"
    text = report(args.scale, queries, results, plans, moved, args.workers, args.runs,
                  differences)
    print(text)
    if differences:
        sys.exit("answers differ from DuckDB's:\n" + "\n".join(differences.values()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"distributed-sf{args.scale:g}.md"
    path.write_text(text)
    print(f"written {path}")


if __name__ == "__main__":
    main()
