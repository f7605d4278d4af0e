"""The HTTP query API against Flight SQL, same server, same run: `SELECT 1` round trips
(HTTP/1.1 with a kept-alive connection, as a function reusing its client; ADBC over Flight
SQL with one cursor) and a 1,000,000-row result of TPC-H's lineitem (six columns: integers,
decimals, a date, a string) as JSON, as an Arrow IPC stream, and through Flight SQL.

Run with `scripts/bench-http [--runs N]` (release binary, TPC-H SF1 from tpchgen-cli);
writes `benches/results/http.md`. The machine's noise is each figure's spread over its runs.
"""

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.ipc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benches"))
from tpch import generate  # noqa: E402

ROWS = 1_000_000
BIG = (f"SELECT l_orderkey, l_partkey, l_quantity, l_extendedprice, l_shipdate, l_comment "
       f"FROM lineitem LIMIT {ROWS}")


class Server:
    def __init__(self, binary: str, data_dir: Path):
        self.proc = subprocess.Popen(
            [binary, "--data-dir", str(data_dir), "serve", "--listen", "127.0.0.1:0",
             "--http-listen", "127.0.0.1:0", "--pg-listen", "127.0.0.1:0",
             "--result-cache-mb", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.http = self.grpc = self.postgres = None
        for line in self.proc.stdout:
            if "operations listening on" in line:
                self.http = line.split()[-1]
            if "Postgres listening on" in line:
                self.postgres = line.split()[-1]
            if "listening on grpc://" in line:
                self.grpc = "grpc://" + line.split("grpc://")[1].split()[0]
                break
        if not (self.http and self.grpc):
            sys.exit("tarn serve did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Http:
    def __init__(self, base: str):
        url = urlparse(base)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=600)

    def query(self, sql: str, accept: str) -> bytes:
        body = json.dumps({"sql": sql, "max_rows": ROWS})
        self.conn.request("POST", "/v1/query", body=body,
                          headers={"Content-Type": "application/json", "Accept": accept})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            sys.exit(f"HTTP {response.status}: {data[:500]!r}")
        return data


def timed(run, n: int) -> list:
    run()  # warm-up
    out = []
    for _ in range(n):
        t = time.perf_counter()
        run()
        out.append((time.perf_counter() - t) * 1000)
    return out


def start(doc: str, results: str, catalog_name: str):
    """The benchmark's arguments, and a release server over TPC-H SF1 (generated once
    under --work-dir, crawled into a catalog of its own)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--tarn", default=str(ROOT / "target" / "release" / "tarn"))
    parser.add_argument("--work-dir", default="/tmp/tarn-tpch")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--select1", type=int, default=2000)
    parser.add_argument("--tpchgen", default=str(Path(sys.executable).parent / "tpchgen-cli"))
    parser.add_argument("--out", default=str(ROOT / "benches" / "results" / results))
    args = parser.parse_args()
    data = generate(1.0, Path(args.work_dir), args.tpchgen)
    catalog = Path(args.work_dir) / catalog_name
    subprocess.run(["rm", "-rf", str(catalog)], check=True)
    subprocess.run([args.tarn, "--data-dir", str(catalog), "crawl", str(data)], check=True,
                   capture_output=True)
    return args, Server(args.tarn, catalog)


def main() -> int:
    args, server = start(__doc__, "http.md", "tarn-http")
    try:
        web = Http(server.http)
        conn = flightsql.connect(server.grpc)
        cur = conn.cursor()

        def flight(sql):
            cur.execute(sql)
            return cur.fetch_arrow_table()

        one = {
            "HTTP JSON": [statistics.median(timed(lambda: web.query("SELECT 1", "application/json"),
                                                  args.select1))],
            "Flight SQL (ADBC)": [statistics.median(timed(lambda: flight("SELECT 1"), args.select1))],
        }
        # Each row: the median of a block; blocks repeat for the spread.
        for _ in range(args.runs - 1):
            one["HTTP JSON"].append(statistics.median(
                timed(lambda: web.query("SELECT 1", "application/json"), args.select1 // 4)))
            one["Flight SQL (ADBC)"].append(statistics.median(
                timed(lambda: flight("SELECT 1"), args.select1 // 4)))

        checks = {
            "HTTP JSON": lambda: len(json.loads(web.query(BIG, "application/json"))["rows"]),
            "HTTP Arrow IPC": lambda: pyarrow.ipc.open_stream(
                web.query(BIG, "application/vnd.apache.arrow.stream")).read_all().num_rows,
            "Flight SQL (ADBC)": lambda: flight(BIG).num_rows,
        }
        for name, check in checks.items():
            if check() != ROWS:
                sys.exit(f"{name} did not return {ROWS} rows")
        big = {name: timed(check, args.runs) for name, check in checks.items()}
        cur.close()
        conn.close()
    finally:
        server.stop()

    write_report(
        args.out, "# The HTTP query API against Flight SQL", "scripts/bench-http",
        "Python clients (http.client with a kept-alive connection; ADBC with one cursor)",
        one, big,
        "JSON's time includes the client's parsing (Python's `json`); Arrow IPC's and Flight "
        "SQL's include building the pyarrow table.")
    return 0


def write_report(out: str, title: str, script: str, clients: str, one: dict, big: dict,
                 footnote: str) -> None:
    """The results file: each client's median `SELECT 1` round trip and big-result time,
    as a ratio to Flight SQL's in the same run, with the spread over the runs (the noise)."""
    flight_one = statistics.median(one["Flight SQL (ADBC)"])
    flight_big = statistics.median(big["Flight SQL (ADBC)"])

    def spread(values):
        return f"{min(values):.2f}–{max(values):.2f}"

    lines = [
        title,
        "",
        f"Generated by `{script}` on {time.strftime('%Y-%m-%d')}, "
        f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores; one "
        f"release server, result cache off; {clients}.",
        "",
        "| workload | client | median | ratio to Flight SQL | spread (noise) |",
        "|---|---|---|---|---|",
    ]
    for name, values in one.items():
        m = statistics.median(values)
        lines.append(f"| `SELECT 1` round trip (ms) | {name} | {m:.3f} | {m / flight_one:.2f} | "
                     f"{spread(values)} |")
    for name, values in big.items():
        m = statistics.median(values)
        lines.append(f"| {ROWS:,} lineitem rows, 6 columns (ms) | {name} | {m:.0f} | "
                     f"{m / flight_big:.2f} | {spread(values)} |")
    lines += ["", footnote]
    Path(out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
