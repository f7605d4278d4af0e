"""kill -9 at random points of a crawl, a refresh, an ingest and DDL, with real processes.

After each kill the catalog must open and pass `tarn check` (SQLite's integrity and
foreign-key checks, Tarn's invariants, every catalogued file present with its size); every
change acknowledged before the kill must be there, and what was cut off must be wholly
there or wholly absent; running the work again must finish it, exactly (DuckDB or the
files themselves are the oracle).

Each seed picks the kill points. CI runs the seeds in TARN_CHAOS_SEEDS (default `1`);
`scripts/chaos --seeds N` runs seeds 1..N.
"""

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import Server, connect, tarn, tarn_bin

SEEDS = [int(s) for s in os.environ.get("TARN_CHAOS_SEEDS", "1").split(",") if s.strip()]
DAYS = 40


def start(data_dir: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [tarn_bin(), "--data-dir", str(data_dir), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )


def kill_after(proc: subprocess.Popen, seconds: float) -> bool:
    """SIGKILLs `proc` after `seconds` unless it ended first; returns whether it ended on its
    own (then it must have succeeded)."""
    try:
        out, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        return False
    assert proc.returncode == 0, err
    return True


def check(data_dir: Path, when: str):
    checked = tarn(data_dir, "check", "--json")
    assert checked.returncode == 0, f"{when}: {checked.stdout}{checked.stderr}"
    return json.loads(checked.stdout)


def sql(data_dir: Path, query: str, **env) -> list[dict]:
    done = tarn(data_dir, "sql", query, "--format", "json", env=env)
    assert done.returncode == 0, f"{query}: {done.stderr}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def timed(data_dir: Path, *args: str) -> float:
    """How long the command takes uncut: kill points are drawn from that span."""
    began = time.monotonic()
    done = tarn(data_dir, *args)
    assert done.returncode == 0, done.stderr
    return time.monotonic() - began


def write_day(root: Path, day: int, rows: int, name: str = "part-0.parquet"):
    path = root / "ev" / f"day={day}" / "hour=0" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    values = [day * 1000 + i for i in range(rows)]
    pq.write_table(pa.table({"v": pa.array(values, pa.int64())}), path)


def duck_totals(root: Path) -> tuple:
    return duckdb.sql(
        f"SELECT count(*), sum(v) FROM read_parquet('{root}/ev/**/*.parquet')"
    ).fetchall()[0]


def tarn_totals(data_dir: Path, **env) -> tuple:
    rows = sql(data_dir, "SELECT count(*) AS n, sum(v) AS s FROM chaos.ev", **env)
    return (rows[0]["n"], rows[0]["s"])


@pytest.mark.parametrize("seed", SEEDS)
def test_crawls_and_refreshes_killed_at_random_points(seed, tmp_path):
    """`tarn crawl` (which refreshes the views over what it changed) killed at a random
    point, first crawl and re-crawls: a table is catalogued whole or not at all, a view
    answers exactly as its base does, and the next crawl or refresh completes the work."""
    rng = random.Random(seed)
    root, data = tmp_path / "lake", tmp_path / "data"
    for day in range(1, DAYS + 1):
        write_day(root, day, 5)
    span = timed(tmp_path / "calibrate", "crawl", str(root), "--database", "chaos")

    # The first crawl, killed: the table is there whole, or not at all.
    finished = kill_after(start(data, "crawl", str(root), "--database", "chaos"), rng.uniform(0, span))
    check(data, "after a killed first crawl")
    tables = sql(data, "SHOW TABLES")
    catalogued = any(t.get("table_name") == "ev" and t.get("table_schema") == "chaos" for t in tables)
    assert catalogued or not finished, tables
    if catalogued:
        assert tarn_totals(data) == duck_totals(root)
    done = tarn(data, "crawl", str(root), "--database", "chaos")
    assert done.returncode == 0, done.stderr
    assert tarn_totals(data) == duck_totals(root)

    made = tarn(data, "sql", "CREATE MATERIALIZED VIEW chaos.daily AS "
                "SELECT day, count(*) AS n, sum(v) AS s FROM chaos.ev GROUP BY day")
    assert made.returncode == 0, made.stderr
    daily = "SELECT day, count(*) AS n, sum(v) AS s FROM chaos.ev GROUP BY day ORDER BY day"
    plans = {
        env: " ".join(r["plan"] for r in sql(data, f"EXPLAIN {daily}", **({"TARN_NO_ROLLUP_REWRITE": env} if env else {})))
        for env in ("", "1")
    }
    assert "used chaos.daily" in plans[""] and "used chaos.daily" not in plans["1"], plans

    for round_ in range(3):
        # A late file in every day (and a new day): the re-crawl's refresh recomputes
        # every partition of the view, and the kill may land in the crawl or the refresh.
        before = tarn_totals(data, TARN_NO_ROLLUP_REWRITE="1")
        for day in range(1, DAYS + 2 + round_):
            write_day(root, day, 6 + round_, name=f"late-{round_}.parquet")
        finished = kill_after(start(data, "crawl", str(root), "--database", "chaos"),
                              rng.uniform(0, span * 3))
        check(data, f"after re-crawl {round_} was killed")
        base = sql(data, daily, TARN_NO_ROLLUP_REWRITE="1")
        assert sql(data, daily) == base, f"round {round_}: the view must answer as its base does"
        after = tarn_totals(data, TARN_NO_ROLLUP_REWRITE="1")
        assert after in (before, duck_totals(root)), f"round {round_}: a crawl half-committed"
        if finished:
            assert after == duck_totals(root)

        # Running the work again finishes it: the crawl, then the view.
        assert tarn(data, "crawl", str(root), "--database", "chaos").returncode == 0
        assert tarn(data, "sql", "REFRESH MATERIALIZED VIEW chaos.daily").returncode == 0
        views = sql(data, "SHOW MATERIALIZED VIEWS")
        assert [v["stale_partitions"] for v in views] == [0], views
        assert tarn_totals(data) == duck_totals(root)
        assert sql(data, daily) == sql(data, daily, TARN_NO_ROLLUP_REWRITE="1")
    check(data, "at the end")


def rows(start_id: int, n: int) -> pa.Table:
    return pa.table({"id": pa.array(range(start_id, start_id + n), pa.int64()),
                     "day": pa.array([i % 7 for i in range(start_id, start_id + n)], pa.int64())})


class Acknowledged:
    """A client thread repeating `step(cursor, i)` against a server until the server dies;
    counts the steps the server acknowledged, notifying `changed` at each and at the end."""

    def __init__(self, uri: str, step, changed: threading.Condition):
        self.acked = 0
        self.error = None
        self.changed = changed

        def loop():
            conn = connect(uri)
            cur = conn.cursor()
            try:
                i = 0
                while True:
                    step(cur, i)
                    i += 1
                    with self.changed:
                        self.acked = i
                        self.changed.notify_all()
            except Exception as e:  # the server was killed: the call in flight failed
                with self.changed:
                    self.error = e
                    self.changed.notify_all()
            finally:
                # Closed in order, so nothing is left for the garbage collector to close
                # against a dead server; closing may fail for the same reason.
                for close in (cur.close, conn.close):
                    try:
                        close()
                    except Exception:
                        pass

        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()

    def join(self):
        self.thread.join(60)
        assert not self.thread.is_alive(), "the client noticed the server's death"


def kill_server_during(data: Path, step, events: int) -> int:
    """Runs `step` in a loop against a server that is SIGKILLed at the `events`th event after
    the first acknowledgement, an event being an acknowledgement or a line of the server's
    log (an ingest logs once it has committed, before it acknowledges): so the kill lands
    at a seeded point, between a commit and its acknowledgement or as a step begins, not at
    a time. Returns how many steps were acknowledged."""
    server = Server(data, command=("serve", "--result-cache-mb", "0"),
                    env={"TARN_LOG": "tarn=info"})
    client = Acknowledged(server.uri, step, server.logged)
    happened = lambda: client.acked + len(server.log)  # noqa: E731
    with server.logged:
        assert server.logged.wait_for(lambda: client.acked or client.error, 60), \
            "the first step is acknowledged"
        assert client.error is None, client.error
        target = happened() + events
        assert server.logged.wait_for(lambda: happened() >= target or client.error, 60), \
            f"{events} more events while the client works"
        server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    client.join()
    assert client.error is not None
    return client.acked


@pytest.mark.parametrize("seed", SEEDS)
def test_ingest_and_ddl_on_a_server_killed_at_random_points(seed, tmp_path):
    """A client ingests (ADBC `adbc_ingest`, 100 rows a call) and runs DDL in a loop while
    the server is SIGKILLed at a random moment: after a restart every acknowledged call is
    there and the call in flight is wholly there or wholly absent."""
    rng = random.Random(seed)
    data = tmp_path / "data"
    assert tarn(data, "sql", "CREATE DATABASE chaos").returncode == 0

    for round_ in range(2):
        def ingest(cur, i, first=round_ * 1_000_000):
            cur.adbc_ingest("t", rows(first + i * 100, 100), mode="create_append",
                            db_schema_name="chaos")

        before = sql(data, "SELECT count(*) AS n FROM chaos.t")[0]["n"] if round_ else 0
        acked = kill_server_during(data, ingest, rng.randint(1, 40))
        check(data, f"after an ingest round {round_} was killed")
        got = sql(data, "SELECT count(*) AS n, count(DISTINCT id) AS d, min(id) AS lo, max(id) AS hi "
                        "FROM chaos.t")[0]
        assert got["n"] == got["d"], "no row twice"
        # Acknowledged calls are all there; the one in flight wholly or not at all.
        assert got["n"] - before in (acked * 100, (acked + 1) * 100), (got, before, acked)

    def ddl(cur, i):
        cur.execute(f"CREATE DATABASE d{i}")
        cur.execute(f"CREATE EXTERNAL TABLE d{i}.t STORED AS PARQUET "
                    f"LOCATION '{data / 'warehouse' / 'chaos' / 't'}'")
        if i % 2:
            cur.execute(f"DROP TABLE d{i}.t")

    acked = kill_server_during(data, ddl, rng.randint(1, 40))
    check(data, "after DDL was killed")
    databases = {r["schema_name"] for r in sql(data, "SELECT schema_name FROM information_schema.schemata")}
    tables = {r["table_schema"] for r in sql(data, "SELECT table_schema FROM information_schema.tables "
                                                  "WHERE table_name = 't'")}
    for i in range(acked):
        assert f"d{i}" in databases
        assert (f"d{i}" in tables) == (i % 2 == 0), f"d{i}.t"
    # The step in flight made its database, its table or neither, but nothing half-made:
    # a table listed is one that answers.
    if f"d{acked}" in tables:
        assert sql(data, f"SELECT count(*) AS n FROM d{acked}.t")[0]["n"] > 0

    # The server starts again on the catalog and serves it.
    server = Server(data)
    try:
        with connect(server.uri) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM chaos.t")
            assert cur.fetchone()[0] == sql(data, "SELECT count(*) AS n FROM chaos.t")[0]["n"]
    finally:
        server.stop()
    assert server.proc.returncode == 0


def test_check_names_what_is_wrong(tmp_path):
    """`tarn check` fails, naming the table and file, when a catalogued file is gone or has
    changed, and passes again once the table is crawled anew."""
    root, data = tmp_path / "lake", tmp_path / "data"
    for day in (1, 2, 3):
        write_day(root, day, 5)
    assert tarn(data, "crawl", str(root), "--database", "chaos").returncode == 0
    report = check(data, "after a crawl")
    assert report["tables"] == 1 and report["files"] == 3 and report["problems"] == []

    gone = root / "ev" / "day=2" / "hour=0" / "part-0.parquet"
    gone.unlink()
    write_day(root, 3, 50)
    failed = tarn(data, "check")
    assert failed.returncode != 0
    assert "the catalog has 2 problem(s)" in failed.stderr
    assert f"chaos.ev: file '{str(gone).lstrip('/')}' is catalogued but missing" in failed.stdout
    assert "day=3/hour=0/part-0.parquet' is" in failed.stdout and "crawl the table again" in failed.stdout

    assert tarn(data, "crawl", str(root), "--database", "chaos").returncode == 0
    assert check(data, "after a re-crawl")["problems"] == []
