"""Distributed execution's overhead: the 22 TPC-H queries on one `tarn serve`, and on a
coordinator (`tarn serve --workers …`) with `--workers` worker processes, on the same
machine and the same files, taking turns query by query (benches/tpch.py's `run_all`).

On one machine the two setups share the same cores, so the ratio measures what spreading a
plan costs (serialising stages, shuffling batches over loopback gRPC, the coordinator's
extra planning), not what more machines would give; the README's scaling model uses the
per-stage task counts this run records. The answers of both are checked against DuckDB's.

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


def report(scale, queries, results, plans, workers, runs, differences) -> str:
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
    if differences:
        lines += ["", "Answers that differ from DuckDB's: "
                  + ", ".join(f"Q{q}" for q in sorted(differences))]
    return "\n".join(lines) + "\n"


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
    finally:
        for setup in setups.values():
            setup.close()
        for w in workers:
            w.stop()
    differences = {}
    for key in ("single", "cluster"):
        for q, d in tpch.check_answers(data, args.scale, queries, results[key]).items():
            differences[q] = f"{key}: {d}"
    text = report(args.scale, queries, results, plans, args.workers, args.runs, differences)
    print(text)
    if differences:
        sys.exit("answers differ from DuckDB's:\n" + "\n".join(differences.values()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"distributed-sf{args.scale:g}.md"
    path.write_text(text)
    print(f"written {path}")


if __name__ == "__main__":
    main()
