"""Materialized views over Flight SQL (ADBC): created and refreshed in SQL, used by
dashboard queries without changing them, refreshed when rows are ingested, and always giving
DuckDB's answer over the same files."""

import datetime as dt

import duckdb
import pyarrow as pa

from conftest import Server, connect, tarn
from lake import write_lake

DAILY = (
    "SELECT date_trunc('day', ts) AS d, kind, count(*) AS n, sum(score) AS total, "
    "max(score) AS best FROM events GROUP BY 1, 2 ORDER BY 1, 2"
)
DAILY_DUCKDB = (
    "SELECT date_trunc('day', ts) AS d, kind, count(*) AS n, sum(score) AS total, "
    "max(score) AS best FROM events GROUP BY 1, 2 ORDER BY 1, 2"
)


def oracle(files):
    db = duckdb.connect()
    listed = ", ".join(f"'{f}'" for f in files)
    db.sql(f"CREATE VIEW events AS SELECT * FROM read_parquet([{listed}], union_by_name = true)")
    return [tuple(r) for r in db.sql(DAILY_DUCKDB).fetchall()]


def cache_counters(cur):
    cur.execute("SHOW RESULT CACHE")
    return cur.fetch_arrow_table().to_pylist()[0]


def explain(cur, sql):
    cur.execute("EXPLAIN " + sql)
    return [r["plan"] for r in cur.fetch_arrow_table().to_pylist() if r["plan_type"] == "rollups"]


def test_materialized_view_answers_dashboards_and_follows_ingest(tmp_path):
    root = tmp_path / "lake"
    good = write_lake(root)
    data_dir = tmp_path / "data"
    crawl = tarn(data_dir, "crawl", str(root))
    assert crawl.returncode == 0, crawl.stderr
    server = Server(data_dir)
    try:
        with connect(server.uri) as conn, conn.cursor() as cur:
            cur.execute(
                "CREATE MATERIALIZED VIEW events_hourly AS SELECT date_trunc('hour', ts) AS h, "
                "kind, count(*) AS n, sum(score) AS total, max(score) AS best "
                "FROM events GROUP BY 1, 2"
            )
            assert "created materialized view default.events_hourly" in cur.fetchall()[0][0]
            cur.execute("SHOW MATERIALIZED VIEWS")
            shown = cur.fetch_arrow_table().to_pylist()
            # Kept per day (the base's partitions but the finest): two days.
            assert [(v["name"], v["partitions"], v["stale_partitions"]) for v in shown] == [
                ("default.events_hourly", 2, 0)
            ]

            cur.execute(DAILY)
            ours = [tuple(r) for r in cur.fetchall()]
            assert ours == oracle(good["events"])

            # The dashboard repeats its query: answered from the result cache.
            before = cache_counters(cur)
            cur.execute(DAILY)
            assert [tuple(r) for r in cur.fetchall()] == ours
            after = cache_counters(cur)
            assert (after["hits"], after["misses"]) == (before["hits"] + 1, before["misses"])

            # BI tools find the view through GetTables, as a view with its columns.
            objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
            tables = {
                t["table_name"]: t
                for c in objects for d in c["catalog_db_schemas"] for t in d["db_schema_tables"]
            }
            assert tables["events_hourly"]["table_type"] == "VIEW"
            assert [c["column_name"] for c in tables["events_hourly"]["table_columns"]] == [
                "h", "kind", "n", "total", "best"
            ]
            assert tables["events"]["table_type"] == "TABLE"
            assert not any(name.startswith("__rollup_") for name in tables)
            cur.execute("SELECT sum(n) FROM events_hourly")
            assert cur.fetchall() == [(sum(r[2] for r in ours),)]
            assert any(n.startswith("used default.events_hourly") for n in explain(cur, DAILY))
            why_not = explain(cur, "SELECT user_id, count(*) FROM events GROUP BY 1")
            assert why_not == [
                "not used default.events_hourly: GROUP BY user_id is not one of its dimensions"
            ]

            # New rows land through bulk ingest: the view catches up before the ingest returns.
            new = pa.table({
                "ts": pa.array([dt.datetime(2026, 3, 3, 5, 10), dt.datetime(2026, 3, 1, 0, 30)],
                               pa.timestamp("us")),
                "user_id": pa.array([7, 8], pa.int64()),
                "kind": ["view", "hint"],
                "score": pa.array([2.5, 10.0], pa.float64()),
                "device": ["web", None],
                "year": [2026, 2026], "month": [3, 3], "day": [3, 1], "hour": [5, 0],
            })
            assert cur.adbc_ingest("events", new, mode="append") == 2
            cur.execute("SHOW MATERIALIZED VIEWS")
            shown = cur.fetch_arrow_table().to_pylist()
            assert (shown[0]["partitions"], shown[0]["stale_partitions"]) == (3, 0)
            cur.execute(DAILY)
            ours = [tuple(r) for r in cur.fetchall()]
            written = [
                p for p in (root / "events").rglob("part-*.parquet")
                if p not in good["events"] and "_temporary" not in p.parts
            ]
            assert len(written) == 2
            assert ours == oracle(good["events"] + written)
            # The cached answer from before the ingest was not used (the table changed).
            assert cache_counters(cur)["hits"] == after["hits"]

            cur.execute("DROP MATERIALIZED VIEW events_hourly")
            cur.fetchall()
            assert explain(cur, DAILY) == []
    finally:
        server.stop()
