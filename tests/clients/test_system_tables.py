"""Tarn's `system` database through the real ADBC driver: the query history with what each
statement cost (scanned, pruned, returned, memory), DDL and admin calls recorded beside
queries, the catalog as tables (`system.tables`, `system.partitions`, `system.crawls`,
`system.materialized_views`), the connections seen (`system.sessions`), a session's own
time limit, and JSON logs whose lines carry the statement's id."""

import json
import time

import adbc_driver_flightsql
import adbc_driver_manager
import pyarrow.parquet as pq
import pytest

from conftest import Server, connect, tarn
from test_limits import ENDLESS, events_rows

COOKIES = {adbc_driver_flightsql.DatabaseOptions.WITH_COOKIE_MIDDLEWARE.value: "true"}


@pytest.fixture(scope="module")
def logged(lake, tmp_path_factory):
    """A server of its own catalog of the lake, logging JSON at info, that may crawl the
    lake (admin API)."""
    data_dir = tmp_path_factory.mktemp("system")
    crawled = tarn(data_dir, "crawl", str(lake["root"]))
    assert crawled.returncode == 0, crawled.stderr
    s = Server(data_dir, command=(
        "--allow-location", str(lake["root"]), "--log", "tarn=info", "--log-format", "json",
        "serve", "--result-cache-mb", "64",
    ))
    yield s
    s.stop()
    assert s.proc.returncode == 0, "".join(s.log)[-2000:]


def row_of(cur, sql: str) -> dict:
    """The newest `system.queries` row of statement `sql`, by column name."""
    quoted = sql.replace("'", "''")
    cur.execute(f"SELECT * FROM system.queries WHERE query = '{quoted}' ORDER BY submitted_at DESC LIMIT 1")
    table = cur.fetch_arrow_table()
    assert table.num_rows == 1, f"{sql}: {table}"
    return {name: table.column(name)[0].as_py() for name in table.column_names}


def day_files(lake, day: str) -> list:
    return [p for p in lake["good"]["events"] if f"day={day}" in str(p)]


def test_history_says_what_each_query_scanned_pruned_and_returned(logged, lake):
    marker = f"stats-{time.monotonic_ns()}"
    sql = f"SELECT kind, count(*) AS n, '{marker}' AS m FROM events WHERE day = 1 GROUP BY kind"
    with connect(logged.uri) as conn, conn.cursor() as cur:
        cur.execute(sql)
        rows = cur.fetchall()
        assert sum(r[1] for r in rows) == sum(pq.read_metadata(p).num_rows for p in day_files(lake, "01"))
        stats = row_of(cur, sql)
        assert stats["state"] == "finished" and stats["front_door"] == "flight"
        assert stats["rows_returned"] == len(rows) and stats["bytes_returned"] > 0
        # Day 1's four hours read, day 2's four left out; two files an hour.
        assert (stats["partitions_scanned"], stats["partitions_pruned"]) == (4, 4), stats
        assert stats["files_scanned"] == len(day_files(lake, "01")), stats
        on_disk = sum(p.stat().st_size for p in day_files(lake, "01"))
        assert 0 < stats["bytes_scanned"] <= on_disk, stats
        assert stats["peak_memory_bytes"] > 0 and stats["spilled_bytes"] == 0, stats
        assert stats["result_cache_hit"] is False and stats["materialized_view"] is None

        # Again: the result cache answers, nothing is scanned.
        cur.execute(sql)
        assert sorted(cur.fetchall()) == sorted(rows)
        again = row_of(cur, sql)
        assert again["result_cache_hit"] is True and again["files_scanned"] == 0, again
        assert again["query_id"] != stats["query_id"]


def test_ddl_and_admin_calls_are_recorded_beside_queries(logged, lake, tmp_path):
    database = f"hist_{time.monotonic_ns()}"
    create = f"CREATE DATABASE {database}"
    drop = f"DROP TABLE {database}.missing"
    with connect(logged.uri) as conn, conn.cursor() as cur:
        cur.execute(create)
        cur.fetchall()
        with pytest.raises(adbc_driver_manager.Error, match="missing"):
            cur.execute(drop)
            cur.fetchall()
    # A crawl through the admin API (the CLI's remote mode).
    crawled = tarn(tmp_path, "crawl", str(lake["root"]), "--database", database, "--server", logged.uri)
    assert crawled.returncode == 0, crawled.stderr
    with connect(logged.uri) as conn, conn.cursor() as cur:
        created = row_of(cur, create)
        assert (created["state"], created["front_door"], created["error"]) == ("finished", "flight", None)
        dropped = row_of(cur, drop)
        assert dropped["state"] == "failed" and "missing" in dropped["error"], dropped
        crawl = row_of(cur, f"CRAWL '{lake['root']}' INTO {database}")
        assert (crawl["state"], crawl["front_door"]) == ("finished", "admin"), crawl
        assert crawl["execution_ms"] >= 0


def test_the_catalog_as_system_tables(logged, lake):
    with connect(logged.uri) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT format, partition_columns, files, rows, bytes, partitions "
            "FROM system.tables WHERE database_name = 'default' AND table_name = 'events'"
        )
        fmt, partition_columns, files, rows, size, partitions = cur.fetchone()
        good = lake["good"]["events"]
        assert fmt == "parquet"
        assert [c.split()[0] for c in partition_columns.split(", ")] == ["year", "month", "day", "hour"]
        assert (files, rows) == (len(good), events_rows(lake))
        assert size == sum(p.stat().st_size for p in good)
        assert partitions == len({p.parent for p in good})

        cur.execute(
            "SELECT partition, files, rows FROM system.partitions "
            "WHERE database_name = 'default' AND table_name = 'events' ORDER BY partition"
        )
        listed = cur.fetchall()
        by_folder = {}
        for p in good:
            folder = "/".join(p.parent.parts[-4:])
            by_folder.setdefault(folder, []).append(pq.read_metadata(p).num_rows)
        assert [(part, files, rows) for part, files, rows in listed] == [
            (folder, len(counts), sum(counts)) for folder, counts in sorted(by_folder.items())
        ]

        cur.execute("SELECT status, location FROM system.crawls ORDER BY id")
        crawls = cur.fetchall()
        assert crawls and all(status for status, _ in crawls)
        assert any(str(lake["root"]) in location for _, location in crawls)

        cur.execute("SELECT name, stale_partitions, last_error FROM system.materialized_views")
        assert cur.fetch_arrow_table().column_names == ["name", "stale_partitions", "last_error"]

        cur.execute(
            "SELECT user_name, front_door, calls FROM system.sessions "
            "WHERE client_address LIKE '127.0.0.1:%'"
        )
        sessions = cur.fetchall()
        assert sessions and all(u == "anonymous" and d == "flight" and n >= 1 for u, d, n in sessions)


def test_a_session_may_lower_the_time_limit_but_not_raise_it(logged):
    with connect(logged.uri, db_kwargs=COOKIES) as conn, conn.cursor() as cur:
        conn.adbc_connection.set_options(**{"adbc.flight.sql.session.option.query_timeout": "1s"})
        with pytest.raises(adbc_driver_manager.Error, match="query_timeout") as err:
            cur.execute(ENDLESS)
            cur.fetchall()
        assert "DEADLINE_EXCEEDED" in str(err.value) or "deadline" in str(err.value).lower()
        cur.execute("SELECT state FROM system.queries WHERE query = ? ORDER BY submitted_at DESC LIMIT 1",
                    parameters=(ENDLESS,))
        assert cur.fetchall() == [("timeout",)]
        # Short statements still run in the session.
        cur.execute("SELECT count(*) FROM events")
        assert cur.fetchone()[0] > 0
        # Not a duration: refused, and the session keeps its limit.
        with pytest.raises(adbc_driver_manager.ProgrammingError,
                           match=r"INVALID_ARGUMENT.*'query_timeout' \(invalid value\)"):
            conn.adbc_connection.set_options(**{"adbc.flight.sql.session.option.query_timeout": "soon"})
        options = json.loads(conn.adbc_connection.get_option("adbc.flight.sql.session.options"))
        assert options.get("query_timeout") == "1s"


def test_json_log_lines_carry_the_statements_id(logged):
    marker = f"logged-{time.monotonic_ns()}"
    sql = f"SELECT count(*), '{marker}' FROM events"
    with connect(logged.uri) as conn, conn.cursor() as cur:
        cur.execute(sql)
        cur.fetchall()
        query_id = row_of(cur, sql)["query_id"]
    line = logged.wait_for_log(f'"query ended".*{query_id}')
    record = json.loads(line)
    assert record["fields"]["message"] == "query ended", record
    assert record["fields"]["outcome"] == "finished"
    assert record["span"]["query_id"] == query_id and record["span"]["user"] == "anonymous"
    # Every line is one JSON object.
    for text in list(logged.log):
        json.loads(text)
