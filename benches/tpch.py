"""TPC-H benchmark: the 22 queries through Tarn's Flight SQL server (ADBC client), DataFusion
in-process with default settings (`cargo bench --bench tarn -- tpch`), and DuckDB, on the same
Parquet files, in the same run. Tarn's engine also runs in-process on the same catalog
(`cargo bench --bench tarn -- tpch tarn:…`): the same plans without the server, so the ratio of
the two is what Flight SQL adds.

Run with `scripts/bench-tpch [--scale 1 --scale 10] [--runs 5] [--query N …]`: it builds
the release binaries and the Python clients, generates the data with `tpchgen-cli` (kept
between runs), crawls it into a fresh Tarn catalog, and writes
`benches/results/tpch-sf<N>.md` and `.png`. Each query runs once cold and `--runs` times
warm; medians and p95 are of the warm runs. Tarn's result cache is off: every run executes.

The answers are checked: Tarn's full result through Flight SQL against DuckDB's on the same
files (tests/fuzz/compare.py's comparison, as tests/clients/test_tpch_oracle.py does in CI),
and the in-process engines' row counts and first rows (all they report) against the others.
Any difference fails the run (exit status 1, the results files left as they were).
"""

import argparse
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.fuzz.compare import Comparison, describe_difference  # noqa: E402
from tests.fuzz.engines import Outcome  # noqa: E402

QUERIES = ROOT / "benches" / "tpch"
RESULTS = ROOT / "benches" / "results"
TABLES = ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]


def query_text(q: int, scale: float) -> str:
    text = (QUERIES / f"q{q:02d}.sql").read_text()
    return text.replace("{FRACTION}", f"{0.0001 / scale}").strip().rstrip(";")


def order_spec(sql: str, columns: list[str]) -> list[tuple[int, bool, bool]]:
    """The query's top-level ORDER BY as compare.py's (output column, descending, nulls
    first) triples, `columns` being the result's names. Every key must name an output
    column, as each TPC-H query's does; NULLs go first when descending unless the query
    says (DataFusion's default; the keys of TPC-H's orderings hold no NULLs)."""
    text = sql.lower()
    top = [m for m in re.finditer(r"\border\s+by\b", text)
           if text.count("(", 0, m.start()) == text.count(")", 0, m.start())]
    if not top:
        return []
    clause = re.split(r"\blimit\b", text[top[-1].end():])[0]
    names = [c.lower() for c in columns]
    spec = []
    for key in clause.split(","):
        words = key.split()
        name = words[0].split(".")[-1]
        if name not in names:
            raise ValueError(f"ORDER BY key {key.strip()!r} is not an output column of {names}")
        desc = "desc" in words
        nulls_first = words[words.index("nulls") + 1] == "first" if "nulls" in words else desc
        spec.append((names.index(name), desc, nulls_first))
    return spec


def difference(q: int, sql: str, got: Outcome, expected: Outcome) -> Optional[str]:
    """None when `got` (Tarn's answer to query `q`) agrees with `expected` (DuckDB's):
    the same rows as multisets, each in the order of the query's ORDER BY, numbers within
    compare.py's tolerances. Else what differs, with the first rows that do."""
    if expected.error is not None:
        return f"Q{q}: DuckDB failed: {expected.error}"
    spec = order_spec(sql, expected.columns)
    if Comparison(ordered=False, spec=spec).agree(got, expected):
        return None
    return f"Q{q} differs from DuckDB:\n" + describe_difference(
        got, expected, spec, labels=("tarn", "duckdb"))


def duckdb_answers(data: Path, scale: float, queries) -> dict[int, Outcome]:
    """DuckDB's full answer to each query over `data`'s Parquet files, for the check."""
    import duckdb
    db = duckdb.connect()
    for t in TABLES:
        db.sql(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{data}/{t}/*.parquet')")
    answers = {}
    for q in queries:
        try:
            cur = db.execute(query_text(q, scale))
            answers[q] = Outcome(rows=cur.fetchall(), columns=[d[0] for d in cur.description])
        except duckdb.Error as e:
            answers[q] = Outcome(error=f"{type(e).__name__}: {e}")
    db.close()
    return answers


def arrow_outcome(table) -> Outcome:
    """An Arrow result as compare.py's outcome (rows of Python values)."""
    columns = [c.to_pylist() for c in table.columns]
    return Outcome(rows=list(zip(*columns)) if columns else [], columns=table.column_names)


def check_answers(data: Path, scale: float, queries, tarn: dict) -> dict[int, str]:
    """Each query's difference between Tarn's full answer (the last run's) and DuckDB's,
    by query; DuckDB runs each query once more here, untimed, after the timed runs."""
    print(f"SF{scale:g}: checking Tarn's answers against DuckDB's", flush=True)
    expected = duckdb_answers(data, scale, queries)
    found = {}
    for q in queries:
        d = difference(q, query_text(q, scale), arrow_outcome(tarn[q]["answer"]), expected[q])
        if d is not None:
            found[q] = d
    return found


def first_row(table) -> str:
    """The first row, values joined by `|`, numbers rounded (engines differ in digits)."""
    if table.num_rows == 0:
        return ""
    values = []
    for column in table.columns:
        v = column[0].as_py()
        values.append(normalise(v))
    return "|".join(values)


def normalise(v) -> str:
    if v is None:
        return "NULL"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if isinstance(v, bool):
        return str(v)
    return f"{f:.2f}"


def normalise_row(text: str) -> str:
    return "|".join(normalise(v) for v in text.split("|")) if text else ""


def peak_rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def generate(scale: float, work: Path, tpchgen: str) -> Path:
    data = work / f"sf{scale:g}"
    marker = data / ".complete"
    if marker.exists():
        print(f"using TPC-H SF{scale:g} at {data}")
        return data
    parts = max(2, int(scale * 2))
    print(f"generating TPC-H SF{scale:g} ({parts} files per table) in {data} ...", flush=True)
    started = time.time()
    subprocess.run([tpchgen, "parquet", "-s", f"{scale:g}", "--parts", str(parts),
                    "--output-dir", str(data), "--overwrite"], check=True)
    marker.write_text("")
    print(f"  generated in {time.time() - started:.0f} s")
    return data


class TarnServer:
    """Tarn's Flight SQL server, queried with the ADBC client over one connection and one
    cursor (as a BI tool keeps its statement: a new ADBC cursor costs the Python client
    about 2 ms, which is not the server's time)."""

    def __init__(self, args, data: Path, scale: float):
        sys.path.insert(0, str(ROOT / "benches"))
        from dashboard import Server
        import adbc_driver_flightsql.dbapi as flightsql

        data_dir = Path(args.work_dir) / f"tarn-sf{scale:g}"
        subprocess.run(["rm", "-rf", str(data_dir)], check=True)
        started = time.perf_counter()
        crawl = subprocess.run([args.tarn, "--data-dir", str(data_dir), "crawl", str(data)],
                               capture_output=True, text=True)
        if crawl.returncode != 0:
            sys.exit(f"tarn crawl failed: {crawl.stderr}")
        print(f"  tarn crawl: {time.perf_counter() - started:.2f} s")
        flags = [a for f in args.tarn_flag or [] for a in f.split()]
        self.data_dir = data_dir
        self.scale = scale
        self.server = Server(args.tarn, data_dir, "--result-cache-mb", "0",
                             "--rollup-memory-mb", "0", *flags)
        self.conn = flightsql.connect(self.server.uri)
        self.cursor = self.conn.cursor()

    def run(self, q: int) -> dict:
        sql = query_text(q, self.scale)
        t = time.perf_counter()
        self.cursor.execute(sql)
        table = self.cursor.fetch_arrow_table()
        ms = (time.perf_counter() - t) * 1000
        return {"ms": [ms], "rows": table.num_rows, "first": first_row(table), "answer": table}

    def close(self) -> int:
        try:
            self.cursor.close()
            self.conn.close()
            return peak_rss_kb(self.server.proc.pid)
        finally:
            self.server.stop()


class Worker:
    """An engine in its own process, given one query number per line on stdin and
    answering one JSON line per run of it; the last line after stdin closes is its peak
    memory. Every engine stays up for the whole run, so they can take turns run by run.
    A worker says when it is ready (its tables registered), and the next engine starts only
    then: no engine's setup runs during another's timed runs."""

    def __init__(self, command, label: str, cwd=None):
        self.label = label
        self.errors = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(command, cwd=cwd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.errors, text=True)
        if not self._line().get("ready"):
            sys.exit(f"{self.label} did not say it was ready")

    def _line(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.errors.seek(0)
                sys.exit(f"{self.label} run failed: {self.errors.read()[-2000:]}")
            if line.startswith("{"):
                return json.loads(line)

    def run(self, q: int) -> dict:
        self.proc.stdin.write(f"{q}\n")
        self.proc.stdin.flush()
        row = self._line()
        row["first"] = normalise_row(row["first"])
        return row

    def close(self) -> int:
        self.proc.stdin.close()
        peak = self._line()["peak_rss_kb"]
        if self.proc.wait() != 0:
            sys.exit(f"{self.label} run failed")
        return peak


def in_process(args, data: str, scale: float, label: str) -> Worker:
    """`cargo bench --bench tarn -- tpch` on `data` (a folder of tables, or `tarn:` and a Tarn data
    directory), taking its queries from stdin."""
    return Worker(["cargo", "bench", "--quiet", "--bench", "tarn", "--", "tpch", data, str(QUERIES),
                   f"{scale:g}", "0", "-"], label, cwd=ROOT)


def duckdb_worker(data: str, scale: float) -> None:
    """Runs in its own process, so its peak memory is DuckDB's alone."""
    import duckdb
    db = duckdb.connect()
    for t in TABLES:
        db.sql(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{data}/{t}/*.parquet')")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        q = int(line)
        sql = query_text(q, scale)
        t = time.perf_counter()
        table = db.sql(sql).to_arrow_table()
        ms = (time.perf_counter() - t) * 1000
        print(json.dumps({"query": q, "ms": [ms], "rows": table.num_rows,
                          "first": first_row(table)}), flush=True)
    print(json.dumps({"peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}),
          flush=True)


def duckdb(data: Path, scale: float) -> Worker:
    return Worker([sys.executable, __file__, "--duckdb-worker", str(data), "--scale",
                   f"{scale:g}"], "DuckDB")


LABELS = {"tarn": "Tarn", "local": "Tarn in-process", "df": "DataFusion", "duck": "DuckDB"}


def disk_stall_us():
    """Microseconds so far in which every runnable task waited on the disk (the kernel's
    pressure stall information, `/proc/pressure/io` "full"); None where there is none."""
    try:
        for line in Path("/proc/pressure/io").read_text().splitlines():
            if line.startswith("full"):
                return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def run_all(engines: dict, queries, runs: int) -> dict:
    """Every engine runs a query once before any engine runs it again (the cold run first,
    then the warm ones), and every engine finishes a query before the next starts; the
    engines' order turns by one each round. A stretch of seconds or minutes when the machine
    runs slower so falls on all engines alike instead of on the one whose turn it was. Each
    run records how long the machine stalled on the disk meanwhile, which marks the runs it
    slowed."""
    results = {key: {} for key in engines}
    order = list(engines)
    rounds = 0
    for q in queries:
        for _ in range(runs + 1):
            shift = rounds % len(order)
            rounds += 1
            for key in order[shift:] + order[:shift]:
                before = disk_stall_us()
                run = engines[key].run(q)
                after = disk_stall_us()
                total = results[key].setdefault(q, {"ms": [], "stall_ms": 0.0})
                total["ms"] += run["ms"]
                total["rows"], total["first"] = run["rows"], run["first"]
                if "answer" in run:
                    total["answer"] = run["answer"]
                if before is None or after is None:
                    total["stall_ms"] = None
                elif total["stall_ms"] is not None:
                    total["stall_ms"] += (after - before) / 1000
        print(f"  Q{q}: " + ", ".join(
            f"{LABELS[key]} {statistics.median(results[key][q]['ms'][1:]):.0f} ms"
            for key in order), flush=True)
    return results


def stats(ms):
    warm = sorted(ms[1:])
    p95 = warm[min(len(warm) - 1, math.ceil(len(warm) * 0.95) - 1)]
    return statistics.median(warm), p95, ms[0]


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def same_answers(q, engines: dict, differences: dict) -> bool:
    """Whether every engine's row count and first row agree on query `q`, and Tarn's full
    answer with DuckDB's (`differences` holds the full check's findings)."""
    return (q not in differences
            and len({res[q]["rows"] for res in engines.values()}) == 1
            and len({res[q]["first"] for res in engines.values()}) == 1)


def report(scale, queries, tarn, local, datafusion, duck, peaks, runs, differences) -> str:
    lines = [
        f"# TPC-H SF{scale:g}: Tarn (Flight SQL, ADBC) vs DataFusion in-process vs DuckDB",
        "",
        f"{os.cpu_count()} cores; one cold run and {runs} warm runs per query; "
        "times in ms (warm median / p95, cold); ratios of warm medians. The engines take "
        "turns run by run (every engine runs a query once before any runs it again, and "
        "finishes it before the next query starts). "
        "Tarn in-process is "
        "Tarn's engine on the same catalog without the server: Tarn / Tarn in-process is "
        "what Flight SQL adds.",
        "",
        "The last column is how long the machine stalled on the disk (every runnable task "
        "waiting on it, `/proc/pressure/io`) during Tarn's and DuckDB's runs of the query, "
        "cold run included: the files are in the page cache, so a stall of more than a few "
        "percent of a turn marks runs the machine slowed, not the engine.",
        "",
        "The answers column is `same` where Tarn's full answer (Flight SQL) matches "
        "DuckDB's and every engine's row count and first row agree.",
        "",
        "| query | Tarn | Tarn in-process | DataFusion | DuckDB | Tarn / DuckDB "
        "| Tarn / DataFusion | Tarn / Tarn in-process | answers | disk stall, ms (Tarn / DuckDB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    engines = {"tarn": tarn, "local": local, "df": datafusion, "duck": duck}
    sums = {key: 0.0 for key in engines}
    medians = {key: [] for key in engines}
    behind = []
    for q in queries:
        st = {key: stats(res[q]["ms"]) for key, res in engines.items()}
        for key, s in st.items():
            sums[key] += s[0]
            medians[key].append(s[0])
        same = same_answers(q, engines, differences)
        t, k = st["tarn"][0], st["duck"][0]
        if t > k:
            behind.append(f"Q{q}")
        cells = " | ".join(f"{s[0]:.0f} / {s[1]:.0f}, {s[2]:.0f}" for s in st.values())
        stalls = [engines[key][q].get("stall_ms") for key in ("tarn", "duck")]
        stall = " / ".join("?" if v is None else f"{v:.0f}" for v in stalls)
        lines.append(
            f"| Q{q} | {cells} | {t / k:.2f} | {t / st['df'][0]:.2f} | "
            f"{t / st['local'][0]:.2f} | {'same' if same else 'DIFFER'} | {stall} |")

    def totals(label, v):
        return (f"| **{label}** | {v['tarn']:.0f} | {v['local']:.0f} | {v['df']:.0f} | "
                f"{v['duck']:.0f} | {v['tarn'] / v['duck']:.2f} | {v['tarn'] / v['df']:.2f} | "
                f"{v['tarn'] / v['local']:.2f} | | |")
    lines.append(totals("sum", sums))
    lines.append(totals("geometric mean", {k: geomean(v) for k, v in medians.items()}))
    lines.append(
        f"| **peak memory (MB)** | {peaks['tarn'] / 1024:.0f} (server) | "
        f"{peaks['local'] / 1024:.0f} | {peaks['df'] / 1024:.0f} | {peaks['duck'] / 1024:.0f} "
        "| | | | | |")
    lines += ["", f"Behind DuckDB: {', '.join(behind) if behind else 'none'}.", ""]
    return "\n".join(lines)


def chart(scale, queries, tarn, datafusion, duck, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    width = 0.27
    xs = range(len(queries))
    fig, ax = plt.subplots(figsize=(14, 5))
    for i, (label, res) in enumerate((("Tarn (Flight SQL)", tarn),
                                      ("DataFusion in-process", datafusion),
                                      ("DuckDB", duck))):
        ax.bar([x + (i - 1) * width for x in xs],
               [stats(res[q]["ms"])[0] for q in queries], width, label=label)
    ax.set_xticks(list(xs), [f"Q{q}" for q in queries])
    ax.set_ylabel("warm median (ms, log)")
    ax.set_yscale("log")
    ax.set_title(f"TPC-H SF{scale:g}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def fail_on(differences: dict[int, str], differing: list[int], scale: float) -> None:
    """Ends the run with exit status 1 if any answer differs, listing what does."""
    if not differences and not differing:
        return
    for q in differing:
        if q not in differences:
            print(f"Q{q}: the engines' row counts or first rows differ (see the report)")
    for text in differences.values():
        print(text)
    sys.exit(f"SF{scale:g}: the engines' answers differ on "
             + ", ".join(f"Q{q}" for q in sorted(set(differences) | set(differing)))
             + "; no results written")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, action="append")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--query", type=int, action="append")
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "tarn-tpch"))
    parser.add_argument("--tarn", default=str(ROOT / "target" / "release" / "tarn"))
    parser.add_argument("--tpchgen", default=str(Path(sys.executable).parent / "tpchgen-cli"))
    parser.add_argument("--duckdb-worker", default=None)
    # For tuning: extra global flags of `tarn serve` (e.g. "--datafusion-config
    # execution.parquet.pushdown_filters=false"), and Tarn alone (no report written).
    parser.add_argument("--tarn-flag", action="append")
    parser.add_argument("--tarn-only", action="store_true")
    args = parser.parse_args()
    queries = args.query or list(range(1, 23))
    scales = args.scale or [1.0, 10.0]
    if args.duckdb_worker:
        duckdb_worker(args.duckdb_worker, scales[0])
        return
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for scale in scales:
        data = generate(scale, work, args.tpchgen)
        print(f"SF{scale:g}: starting the engines", flush=True)
        engines = {"tarn": TarnServer(args, data, scale)}
        if not args.tarn_only:
            tarn_dir = f"tarn:{Path(args.work_dir) / f'tarn-sf{scale:g}'}"
            engines["local"] = in_process(args, tarn_dir, scale, LABELS["local"])
            engines["df"] = in_process(args, str(data), scale, LABELS["df"])
            engines["duck"] = duckdb(data, scale)
        try:
            results = run_all(engines, queries, args.runs)
        finally:
            peaks = {key: engine.close() for key, engine in engines.items()}
        differences = check_answers(data, scale, queries, results["tarn"])
        if args.tarn_only:
            medians = [stats(results["tarn"][q]["ms"])[0] for q in queries]
            print(f"Tarn SF{scale:g}: sum {sum(medians):.0f} ms, geometric mean "
                  f"{geomean(medians):.0f} ms, peak {peaks['tarn'] / 1024:.0f} MB")
            fail_on(differences, [], scale)
            continue
        text = report(scale, queries, results["tarn"], results["local"], results["df"],
                      results["duck"], peaks, args.runs, differences)
        differing = [q for q in queries if not same_answers(q, results, differences)]
        if differences or differing:
            print()
            print(text)
            fail_on(differences, differing, scale)
        name = f"tpch-sf{scale:g}"
        (RESULTS / f"{name}.md").write_text(text)
        chart(scale, queries, results["tarn"], results["df"], results["duck"],
              RESULTS / f"{name}.png")
        print()
        print(text)
        print(f"written {RESULTS / name}.md and .png")

if __name__ == "__main__":
    main()
