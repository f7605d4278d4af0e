"""Bulk ingest through ADBC's `adbc_ingest` (Flight SQL CommandStatementIngest), in all four
modes, checked against what is on disk (pyarrow and DuckDB read the written files)."""

import datetime as dt
from pathlib import Path

import adbc_driver_manager
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import Server, connect


def rows(start: int, n: int) -> pa.Table:
    return pa.table({
        "id": pa.array(range(start, start + n), pa.int64()),
        "name": pa.array([f"user-{i}" for i in range(start, start + n)], pa.string()),
        "score": pa.array([i * 0.5 for i in range(start, start + n)], pa.float64()),
        "at": pa.array(
            [dt.datetime(2024, 1, 1) + dt.timedelta(minutes=i) for i in range(start, start + n)],
            pa.timestamp("us"),
        ),
    })


def parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet"))


@pytest.fixture()
def fresh(tmp_path):
    server = Server(tmp_path)
    yield server, tmp_path
    server.stop()
    assert server.proc.returncode == 0


def query(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def test_create_then_append_then_replace(fresh):
    server, data_dir = fresh
    table_dir = data_dir / "warehouse" / "default" / "scores"
    with connect(server.uri) as conn:
        with conn.cursor() as cur:
            assert cur.adbc_ingest("scores", rows(0, 1000), mode="create") == 1000
        got = query(conn, "SELECT * FROM scores ORDER BY id")
        assert got.to_pydict() == rows(0, 1000).to_pydict()
        # The rows are Parquet in the warehouse, readable by anyone.
        files = parquet_files(table_dir)
        assert len(files) == 1
        assert pq.read_table(files[0]).sort_by("id").to_pydict() == rows(0, 1000).to_pydict()

        with conn.cursor() as cur:
            with pytest.raises(adbc_driver_manager.Error, match="already exists"):
                cur.adbc_ingest("scores", rows(0, 10), mode="create")
            assert cur.adbc_ingest("scores", rows(1000, 500), mode="append") == 500
        (n, lo, hi) = query(conn, "SELECT count(*), min(id), max(id) FROM scores").to_pylist()[0].values()
        assert (n, lo, hi) == (1500, 0, 1499)
        assert len(parquet_files(table_dir)) == 2

        with conn.cursor() as cur:
            assert cur.adbc_ingest("scores", rows(5000, 7), mode="replace") == 7
        assert query(conn, "SELECT id FROM scores ORDER BY id").column("id").to_pylist() == list(range(5000, 5007))
        # Replaced files stay for queries planned before the swap and are deleted after a
        # grace period; meanwhile a re-crawl leaves them out.
        assert len(parquet_files(table_dir)) == 3
        with conn.cursor() as cur:
            cur.execute("MSCK REPAIR TABLE scores")
        assert query(conn, "SELECT count(*) AS n FROM scores").column("n").to_pylist() == [7]

        with conn.cursor() as cur:
            assert cur.adbc_ingest("fresh_table", rows(0, 3), mode="create_append") == 3
            assert cur.adbc_ingest("fresh_table", rows(3, 3), mode="create_append") == 3
        assert query(conn, "SELECT count(*) AS n FROM fresh_table").column("n").to_pylist() == [6]

    # Durable: a new server over the same data directory sees the ingested tables.
    server.stop()
    again = Server(data_dir)
    try:
        with connect(again.uri) as conn:
            assert query(conn, "SELECT count(*) AS n FROM scores").column("n").to_pylist() == [7]
            assert query(conn, "SELECT count(*) AS n FROM fresh_table").column("n").to_pylist() == [6]
    finally:
        again.stop()


def test_failed_ingest_leaves_nothing(fresh):
    server, data_dir = fresh
    table_dir = data_dir / "warehouse" / "default" / "t"
    with connect(server.uri) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="'default.t'|table 't'|'t' not found") as err:
            cur.adbc_ingest("t", rows(0, 5), mode="append")
        assert "NOT_FOUND" in str(err.value) or "not found" in str(err.value), err.value
        assert not parquet_files(data_dir / "warehouse")

        cur.adbc_ingest("t", rows(0, 5), mode="create")
        before = parquet_files(table_dir)
        bad = pa.table({"id": pa.array(["not", "a", "number"], pa.string())})
        with pytest.raises(adbc_driver_manager.Error, match="column 'id'"):
            cur.adbc_ingest("t", bad, mode="append")
        # The table and the folder are as before the failed append.
        assert parquet_files(table_dir) == before
        cur.execute("SELECT count(*) FROM t")
        assert cur.fetchone() == (5,)

        with pytest.raises(adbc_driver_manager.Error, match="database 'nowhere' does not exist"):
            cur.adbc_ingest("t", rows(0, 5), mode="create", db_schema_name="nowhere")


def test_ingest_into_a_named_database_and_schema_evolution(fresh):
    server, _ = fresh
    with connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE analytics")
        cur.adbc_ingest("events", rows(0, 4), mode="create", db_schema_name="analytics")
        # A new column and a widened type append cleanly (int32 fits the int64 column).
        extra = pa.table({
            "id": pa.array([10, 11], pa.int32()),
            "name": pa.array(["a", "b"]),
            "country": pa.array(["NL", "DE"]),
        })
        assert cur.adbc_ingest("events", extra, mode="append", db_schema_name="analytics") == 2
        cur.execute("SELECT id, country FROM analytics.events ORDER BY id")
        assert cur.fetchall() == [(0, None), (1, None), (2, None), (3, None), (10, "NL"), (11, "DE")]


def test_ingest_into_a_crawled_partitioned_table_keeps_its_layout(tmp_path):
    lake = tmp_path / "lake" / "clicks"
    for month in ("01", "02"):
        part = lake / "year=2024" / f"month={month}"
        part.mkdir(parents=True)
        pq.write_table(pa.table({"id": [1, 2], "page": ["a", "b"]}), part / "data.parquet")
    data_dir = tmp_path / "data"
    server = Server(data_dir, command=("--allow-location", str(tmp_path), "serve"))
    try:
        with connect(server.uri) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE EXTERNAL TABLE clicks STORED AS PARQUET LOCATION '{lake}/'")
            new = pa.table({
                "id": [3, 4, 5],
                "page": ["c", "d", "e"],
                "year": [2024, 2024, 2024],
                "month": [2, 3, 3],
            })
            assert cur.adbc_ingest("clicks", new, mode="append") == 3
            cur.execute("SELECT month, count(*) FROM clicks GROUP BY month ORDER BY month")
            ours = cur.fetchall()
            cur.execute("SHOW PARTITIONS clicks")
            partitions = cur.fetch_arrow_table()
        # Month 2 went into the existing `month=02` folder, month 3 into a new `month=03`.
        assert sorted(p.name for p in (lake / "year=2024").iterdir()) == ["month=01", "month=02", "month=03"]
        oracle = duckdb.sql(
            "SELECT CAST(month AS BIGINT) AS m, count(*) "
            f"FROM read_parquet('{lake}/**/*.parquet', hive_partitioning=true) GROUP BY m ORDER BY m"
        ).fetchall()
        assert ours == oracle == [(1, 2), (2, 3), (3, 2)]
        assert partitions.num_rows == 3

        with connect(server.uri) as conn, conn.cursor() as cur:
            with pytest.raises(adbc_driver_manager.Error, match="no column 'month'"):
                cur.adbc_ingest("clicks", pa.table({"id": [9], "page": ["z"], "year": [2024]}), mode="append")
    finally:
        server.stop()


def test_insert_statements_append_through_ingest(fresh):
    server, data_dir = fresh
    with connect(server.uri) as conn:
        with conn.cursor() as cur:
            cur.adbc_ingest("people", pa.table({"id": pa.array([1], pa.int64()), "name": ["ann"]}), mode="create")
        with conn.cursor() as cur:
            # The query path (ADBC's execute) answers DML with a count.
            cur.execute("INSERT INTO people VALUES (2, 'bob'), (3, 'cy')")
            assert cur.fetchall() == [(2,)]
            # Prepared with multi-row parameters (executemany): one ingest for all rows.
            cur.executemany("INSERT INTO people VALUES (?, ?)", [(4, "dee"), (5, "eve"), (6, "fay")])
            # A column list in another order, and a SELECT as the source.
            cur.execute("INSERT INTO people (name, id) SELECT upper(name), id + 100 FROM people WHERE id <= 2")
            assert cur.fetchall() == [(2,)]
            cur.execute("SELECT id, name FROM people ORDER BY id")
            assert cur.fetchall() == [
                (1, "ann"), (2, "bob"), (3, "cy"), (4, "dee"), (5, "eve"), (6, "fay"),
                (101, "ANN"), (102, "BOB"),
            ]
            files_before = parquet_files(data_dir / "warehouse")
            with pytest.raises(adbc_driver_manager.Error, match="column 'id'"):
                cur.execute("INSERT INTO people VALUES ('x', 'y')")
            with pytest.raises(adbc_driver_manager.Error, match="has no column 'age'"):
                cur.execute("INSERT INTO people (id, age) VALUES (7, 30)")
            with pytest.raises(adbc_driver_manager.Error, match="not found"):
                cur.execute("INSERT INTO nobody VALUES (1)")
            assert parquet_files(data_dir / "warehouse") == files_before
            cur.execute("SELECT count(*) FROM people")
            assert cur.fetchall() == [(8,)]
            # The partial INSERT is nothing: DuckDB over the files agrees.
            table_dir = data_dir / "warehouse" / "default" / "people"
            assert duckdb.sql(f"SELECT count(*) FROM '{table_dir}/*.parquet'").fetchall() == [(8,)]
