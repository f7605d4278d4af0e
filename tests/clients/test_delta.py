"""Delta Lake tables written by the Python `deltalake` package: crawled from their logs,
queried at the catalogued version, time travel by version and timestamp, re-crawls, DDL,
and S3 (moto). DuckDB is the oracle: it reads the Parquet files that the writer's log
lists as active at each version."""

import json
from pathlib import Path
from datetime import datetime, timezone

import adbc_driver_manager
import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import Server, connect, moto_s3, tarn

QUERY = (
    "SELECT country, count(*) AS n, round(sum(amount), 4) AS total, min(id) AS first "
    "FROM {table} GROUP BY country ORDER BY country"
)


def rows(start: int, count: int, countries=("de", "fr", "us", "jp")) -> pa.Table:
    ids = list(range(start, start + count))
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "country": [countries[i % len(countries)] for i in ids],
        "amount": [round((i * 37 % 1000) / 10, 1) for i in ids],
    })


def duckdb_answer(path: str, version: int) -> list:
    """The query over the files active at `version`, read by DuckDB."""
    files = DeltaTable(path, version=version).file_uris()
    rel = duckdb.sql(
        f"SELECT * FROM read_parquet({files!r}, hive_partitioning = true, union_by_name = true)"
    )
    return [tuple(r) for r in duckdb.sql(QUERY.format(table="rel")).fetchall()]


def delta_partitions(path: str, version: int) -> list:
    """`SHOW PARTITIONS` of the table at `version`, from the writer's log and DuckDB."""
    files = DeltaTable(path, version=version).file_uris()
    per_file = duckdb.sql(
        f"SELECT 'country=' || country AS p, filename FROM read_parquet({files!r}, "
        "hive_partitioning = true, filename = true)"
    )
    return [tuple(r) for r in duckdb.sql(
        "SELECT p, count(DISTINCT filename), count(*) FROM per_file GROUP BY p ORDER BY p"
    ).fetchall()]


def tarn_answer(cur, table: str) -> list:
    cur.execute(QUERY.format(table=table))
    return [tuple(r) for r in cur.fetchall()]


@pytest.fixture()
def delta_lake(tmp_path):
    """`sales`: create, append, delete, overwrite, append (versions 0-4), partitioned by
    country; `plain`: an unpartitioned Delta table; `loose`: plain Parquet files."""
    root = tmp_path / "lake"
    sales = str(root / "sales")
    write_deltalake(sales, rows(0, 400), partition_by=["country"])
    write_deltalake(sales, rows(400, 300), mode="append", partition_by=["country"])
    DeltaTable(sales).delete("amount > 50")
    write_deltalake(sales, rows(1000, 250), mode="overwrite", partition_by=["country"])
    write_deltalake(sales, rows(2000, 100, ("br", "de")), mode="append", partition_by=["country"])
    write_deltalake(str(root / "plain"), rows(0, 50))
    (root / "loose").mkdir()
    import pyarrow.parquet as pq

    pq.write_table(rows(0, 10), root / "loose" / "part-0.parquet")
    return {"root": root, "sales": sales}


def test_delta_tables_match_duckdb_at_every_version(delta_lake, tmp_path):
    root, sales = delta_lake["root"], delta_lake["sales"]
    data = tmp_path / "data"
    crawl = tarn(data, "crawl", str(root), "--json")
    assert crawl.returncode == 0, crawl.stderr
    summary = json.loads(crawl.stdout)
    assert sorted(summary["tables_created"]) == ["default.loose", "default.plain", "default.sales"]
    assert summary["problems"] == []
    assert summary["footers_read"] == 1, "only the loose Parquet file's footer is read"

    history = DeltaTable(sales).history()
    committed = {h["version"]: h["timestamp"] for h in history}
    assert sorted(committed) == [0, 1, 2, 3, 4]

    server = Server(data, command=("--allow-location", str(root), "serve"))
    try:
        with connect(server.uri) as conn, conn.cursor() as cur:
            assert tarn_answer(cur, "sales") == duckdb_answer(sales, 4)
            for version in range(5):
                assert tarn_answer(cur, f"sales VERSION AS OF {version}") == duckdb_answer(sales, version), version
            # Trino's spelling, an alias, and a join of two versions of one table.
            cur.execute(
                "SELECT count(*) FROM sales AS now FOR VERSION AS OF 4 "
                "JOIN sales FOR VERSION AS OF 1 AS before ON now.id = before.id"
            )
            assert cur.fetchone() == (0,), "version 3 overwrote every row of version 1"

            # By timestamp: the newest version committed at or before the instant.
            # A commit's time is its commitInfo timestamp or its log file's modification
            # time (they differ by a few ms); an instant between one commit's later time and
            # the next one's earlier time names that commit whichever is used. Commits too
            # close to tell apart by time are skipped.
            log = Path(sales) / "_delta_log"
            times = {
                v: (min(ms, int((log / f"{v:020}.json").stat().st_mtime * 1000)),
                    max(ms, int((log / f"{v:020}.json").stat().st_mtime * 1000)))
                for v, ms in committed.items()
            }
            checked = 0
            for version in sorted(times):
                after = times[version][1]
                before = times[version + 1][0] if version + 1 in times else after + 1000
                if before - after < 2:
                    continue
                instant = datetime.fromtimestamp((after + before) // 2 / 1000, tz=timezone.utc)
                text = instant.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
                assert tarn_answer(cur, f"sales TIMESTAMP AS OF '{text}'") == duckdb_answer(sales, version), version
                checked += 1
            assert checked >= 2, times

            cur.execute("SHOW HISTORY sales")
            ops = [(r[0], r[3].split(" ")[0]) for r in cur.fetchall()]
            assert ops == [(4, "WRITE"), (3, "WRITE"), (2, "DELETE"), (1, "WRITE"), (0, "WRITE")]

            cur.execute("SHOW PARTITIONS sales")
            assert [tuple(r) for r in cur.fetchall()] == delta_partitions(sales, 4)
            with pytest.raises(adbc_driver_manager.Error, match="default.plain is not partitioned"):
                cur.execute("SHOW PARTITIONS plain")
                cur.fetchall()

            with pytest.raises(adbc_driver_manager.Error, match="has no version 9"):
                cur.execute("SELECT * FROM sales VERSION AS OF 9")
            with pytest.raises(adbc_driver_manager.Error, match="no version committed at or before"):
                cur.execute("SELECT * FROM sales TIMESTAMP AS OF '2001-01-01'")
            with pytest.raises(adbc_driver_manager.Error, match="Delta tables only"):
                cur.execute("SELECT * FROM loose VERSION AS OF 0")

            # A new commit is read once the table is crawled again; until then the
            # catalogued version answers (queries list nothing).
            write_deltalake(sales, rows(3000, 80), mode="append", partition_by=["country"])
            assert tarn_answer(cur, "sales") == duckdb_answer(sales, 4)
            cur.execute("SHOW PARTITIONS sales")
            assert [tuple(r) for r in cur.fetchall()] == delta_partitions(sales, 4)
            again = json.loads(tarn(data, "crawl", str(root), "--json").stdout)
            assert again["tables_updated"] == ["default.sales"]
            assert tarn_answer(cur, "sales") == duckdb_answer(sales, 5)
            cur.execute("SHOW PARTITIONS sales")
            assert [tuple(r) for r in cur.fetchall()] == delta_partitions(sales, 5)
            unchanged = json.loads(tarn(data, "crawl", str(root), "--json").stdout)
            assert unchanged["tables_updated"] == [] and unchanged["footers_read"] == 0

            # DDL: a Delta table by name, and a folder without a log refused.
            cur.execute(f"CREATE EXTERNAL TABLE again STORED AS DELTA LOCATION '{sales}/'")
            assert "created Delta table default.again at version 5" in cur.fetchone()[0]
            with pytest.raises(adbc_driver_manager.Error, match="holds no Delta table"):
                cur.execute(f"CREATE EXTERNAL TABLE nope STORED AS DELTA LOCATION '{root}/loose/'")
    finally:
        server.stop()

    # The catalogued versions survive a restart.
    server = Server(data, command=("--allow-location", str(root), "serve"))
    try:
        with connect(server.uri) as conn, conn.cursor() as cur:
            assert tarn_answer(cur, "again") == duckdb_answer(sales, 5)
            assert tarn_answer(cur, "again VERSION AS OF 2") == duckdb_answer(sales, 2)
            cur.execute("SELECT count(*), sum(id) FROM plain")
            assert cur.fetchone() == (50, sum(range(50)))
    finally:
        server.stop()


def test_delta_table_in_s3(tmp_path):
    """A Delta table written to S3 (moto) by deltalake, crawled and time-travelled."""
    with moto_s3("deltas") as (env, _):
        options = {**env, "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
        uri = "s3://deltas/warehouse/orders"
        write_deltalake(uri, rows(0, 120), partition_by=["country"], storage_options=options)
        write_deltalake(uri, rows(500, 60), mode="append", partition_by=["country"],
                        storage_options=options)

        crawl = tarn(tmp_path, "crawl", "s3://deltas/warehouse", "--json", env=env)
        assert crawl.returncode == 0, crawl.stderr
        assert json.loads(crawl.stdout)["tables_created"] == ["default.orders"]
        for sql, version in [("SELECT count(*), sum(id) FROM orders", 1),
                             ("SELECT count(*), sum(id) FROM orders VERSION AS OF 0", 0)]:
            out = tarn(tmp_path, "sql", sql, "--format", "csv", env=env)
            assert out.returncode == 0, out.stderr
            expected = DeltaTable(uri, version=version, storage_options=options).to_pyarrow_table()
            ids = expected.column("id").to_pylist()
            assert out.stdout.split()[1] == f"{len(ids)},{sum(ids)}"
