"""The Postgres wire protocol against Flight SQL, same server, same run: `SELECT 1` round
trips (psycopg 3 on one connection, extended protocol; ADBC over Flight SQL with one
cursor) and a 1,000,000-row result of TPC-H's lineitem (six columns: integers, decimals,
a date, a string) through psycopg in text and in binary format, and through Flight SQL.

Run with `scripts/bench-postgres [--runs N]` (release binary, TPC-H SF1 from
tpchgen-cli); writes `benches/results/postgres.md`. The machine's noise is each figure's
spread over its runs.
"""

import statistics
import sys
from pathlib import Path
from urllib.parse import urlparse

import adbc_driver_flightsql.dbapi as flightsql
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benches"))
from http_api import BIG, ROWS, start, timed, write_report  # noqa: E402


def main() -> int:
    args, server = start(__doc__, "postgres.md", "tarn-postgres")
    try:
        url = urlparse(server.postgres)
        pg = psycopg.connect(host=url.hostname, port=url.port, dbname="tarn", user="bench",
                             autocommit=True)
        text_cur, binary_cur = pg.cursor(), pg.cursor(binary=True)
        conn = flightsql.connect(server.grpc)
        cur = conn.cursor()

        def flight(sql):
            cur.execute(sql)
            return cur.fetch_arrow_table()

        def postgres(cursor, sql):
            cursor.execute(sql)
            return cursor.fetchall()

        clients_one = {
            "Postgres (psycopg)": lambda: postgres(text_cur, "SELECT 1"),
            "Flight SQL (ADBC)": lambda: flight("SELECT 1"),
        }
        # Each figure: the median of a block; blocks take turns for the spread.
        one = {name: [] for name in clients_one}
        for block in range(args.runs):
            for name, run in clients_one.items():
                n = args.select1 if block == 0 else args.select1 // 4
                one[name].append(statistics.median(timed(run, n)))

        checks = {
            "Postgres text (psycopg)": lambda: len(postgres(text_cur, BIG)),
            "Postgres binary (psycopg)": lambda: len(postgres(binary_cur, BIG)),
            "Flight SQL (ADBC)": lambda: flight(BIG).num_rows,
        }
        for name, check in checks.items():
            if check() != ROWS:
                sys.exit(f"{name} did not return {ROWS} rows")
        big = {name: [] for name in checks}
        for _ in range(args.runs):
            for name, check in checks.items():
                big[name] += timed(check, 1)
        cur.close()
        conn.close()
        pg.close()
    finally:
        server.stop()

    write_report(
        args.out, "# The Postgres wire protocol against Flight SQL", "scripts/bench-postgres",
        "Python clients taking turns (psycopg 3 on one connection; ADBC with one cursor)",
        one, big,
        "psycopg's time includes building Python rows (tuples of ints, Decimals, dates, "
        "strings); Flight SQL's includes building the pyarrow table.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
