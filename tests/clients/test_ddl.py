"""DDL through ADBC: tables created in SQL are in the catalog and survive a restart."""

import json

import adbc_driver_manager
import pyarrow.parquet as pq
import pytest

from conftest import Server, connect, tarn


def test_create_external_table_over_adbc_survives_restart(lake, tmp_path):
    root = str(lake["root"])
    expected = sum(pq.read_metadata(p).num_rows for p in lake["good"]["events"])
    serve = ("--allow-location", root, "serve")

    server = Server(tmp_path, command=serve)
    try:
        with connect(server.uri) as conn, conn.cursor() as cur:
            cur.execute("CREATE DATABASE analytics")
            cur.execute(
                f"CREATE EXTERNAL TABLE analytics.events STORED AS PARQUET "
                f"PARTITIONED BY (year, month, day, hour) LOCATION '{root}/events/'"
            )
            (message,) = cur.fetchone()
            assert "created table analytics.events" in message
            assert "corrupt.parquet" in message, "problems are reported"
            cur.execute("SELECT count(*) FROM analytics.events")
            assert cur.fetchone() == (expected,)
            with pytest.raises(adbc_driver_manager.ProgrammingError, match="not under a location"):
                cur.execute("CREATE EXTERNAL TABLE analytics.secrets STORED AS PARQUET LOCATION '/etc/'")
    finally:
        server.stop()

    server = Server(tmp_path, command=serve)
    try:
        with connect(server.uri) as conn, conn.cursor() as cur:
            cur.execute("SHOW DATABASES")
            assert sorted(r[0] for r in cur.fetchall()) == ["analytics", "default"]
            cur.execute("SELECT count(*) FROM analytics.events WHERE day = 2")
            day2 = sum(pq.read_metadata(p).num_rows for p in lake["good"]["events"] if "day=02" in str(p))
            assert cur.fetchone() == (day2,)
            cur.execute("SHOW PARTITIONS analytics.events")
            assert len(cur.fetchall()) == 8
    finally:
        server.stop()

    # A default database through an ADBC call header (JDBC: a `database=` URL property).
    server = Server(tmp_path, command=serve)
    try:
        with connect(
            server.uri, db_kwargs={"adbc.flight.sql.rpc.call_header.database": "analytics"}
        ) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM events")
            assert cur.fetchone() == (expected,)
    finally:
        server.stop()


def test_add_partition_with_a_location_of_its_own(tmp_path):
    """`ALTER TABLE … ADD PARTITION (…) LOCATION '…'`, as Athena takes it: the files of a
    folder of any name, inside or outside the table's folder, become that partition; later
    crawls list the folder with the table; DROP PARTITION forgets it for good."""
    import pyarrow as pa

    root = tmp_path / "lake"
    rows = {"2024-01-05": 3, "2024-01-06": 5, "2024-01-07": 7}

    def write(folder, day, n, name="part-0.parquet"):
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"n": list(range(n)), "day": [day] * n}), folder / name)

    write(root / "logs" / "dt=2024-01-05", "2024-01-05", 1)
    write(root / "logs" / "dt=2024-01-05", "2024-01-05", 2, name="part-1.parquet")
    write(root / "logs" / "2024" / "01" / "06", "2024-01-06", rows["2024-01-06"])
    write(root / "archive" / "jan07", "2024-01-07", rows["2024-01-07"])
    serve = ("--allow-location", str(root), "serve")

    def per_day(cur):
        cur.execute("SELECT CAST(dt AS VARCHAR), count(*), min(day), max(day) FROM logs "
                    "GROUP BY 1 ORDER BY 1")
        return cur.fetchall()

    server = Server(tmp_path, command=serve)
    try:
        with connect(server.uri) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE EXTERNAL TABLE logs STORED AS PARQUET LOCATION '{root}/logs/'")
            (message,) = cur.fetchone()
            assert "partition folders (partition_0/partition_1/partition_2) do not match" in message
            assert per_day(cur) == [("2024-01-05", 3, "2024-01-05", "2024-01-05")]

            cur.execute(
                f"ALTER TABLE logs ADD PARTITION (dt = '2024-01-06') LOCATION '{root}/logs/2024/01/06/' "
                f"PARTITION (dt = '2024-01-07') LOCATION '{root}/archive/jan07'"
            )
            cur.fetchall()
            assert per_day(cur) == [(d, n, d, d) for d, n in sorted(rows.items())]
            cur.execute("SELECT count(*) FROM logs WHERE dt = DATE '2024-01-07'")
            assert cur.fetchone() == (7,)
            cur.execute("SHOW PARTITIONS logs")
            assert sorted(tuple(r) for r in cur.fetchall()) == [
                (f"dt={d}", 2 if d == "2024-01-05" else 1, n) for d, n in sorted(rows.items())
            ]

            with pytest.raises(adbc_driver_manager.ProgrammingError, match="already has the partition"):
                cur.execute(f"ALTER TABLE logs ADD PARTITION (dt = '2024-01-07') LOCATION '{root}/other/'")
                cur.fetchall()
            with pytest.raises(adbc_driver_manager.ProgrammingError, match="overlaps"):
                cur.execute(f"ALTER TABLE logs ADD PARTITION (dt = '2024-01-08') LOCATION '{root}/archive/'")
                cur.fetchall()
            with pytest.raises(adbc_driver_manager.ProgrammingError, match="not under a location"):
                cur.execute("ALTER TABLE logs ADD PARTITION (dt = '2024-01-08') LOCATION '/etc/'")
                cur.fetchall()
            with pytest.raises(adbc_driver_manager.ProgrammingError, match="LOCATION"):
                cur.execute(f"ALTER TABLE logs DROP PARTITION (dt = '2024-01-05') LOCATION '{root}/x/'")
                cur.fetchall()
            cur.execute(f"ALTER TABLE logs ADD IF NOT EXISTS PARTITION (dt = '2024-01-07') "
                        f"LOCATION '{root}/other/'")
            cur.fetchall()
            assert per_day(cur) == [(d, n, d, d) for d, n in sorted(rows.items())]

            # New files in a pinned folder outside the table's are found by a re-crawl.
            write(root / "archive" / "jan07", "2024-01-07", 2, name="part-1.parquet")
            rows["2024-01-07"] += 2
            cur.execute("MSCK REPAIR TABLE logs")
            cur.fetchall()
            assert per_day(cur) == [(d, n, d, d) for d, n in sorted(rows.items())]

            # Another table's folder cannot become a partition of this one.
            write(root / "other" / "dt=2024-02-01", "2024-02-01", 1)
            cur.execute(f"CREATE EXTERNAL TABLE other STORED AS PARQUET LOCATION '{root}/other/'")
            cur.fetchall()
            with pytest.raises(adbc_driver_manager.ProgrammingError, match="another table's files"):
                cur.execute(f"ALTER TABLE logs ADD PARTITION (dt = '2024-02-01') "
                            f"LOCATION '{root}/other/dt=2024-02-01/'")
                cur.fetchall()
    finally:
        server.stop()

    # A crawl of the whole lake leaves the outside partition folder to its table: it does
    # not become a table of its own, and the table keeps its rows.
    crawl = tarn(tmp_path, "crawl", str(root), "--json")
    assert crawl.returncode == 0, crawl.stderr
    summary = json.loads(crawl.stdout)
    assert not any("jan07" in t or "archive" in t for t in summary["tables_created"]), summary

    server = Server(tmp_path, command=serve)
    try:
        with connect(server.uri) as conn, conn.cursor() as cur:
            assert per_day(cur) == [(d, n, d, d) for d, n in sorted(rows.items())]
            cur.execute("SHOW TABLES")
            assert not any("jan07" in str(r) or "archive" in str(r) for r in cur.fetchall())
            cur.execute("ALTER TABLE logs DROP PARTITION (dt = '2024-01-07')")
            cur.fetchall()
            cur.execute("MSCK REPAIR TABLE logs")
            cur.fetchall()
            del rows["2024-01-07"]
            assert per_day(cur) == [(d, n, d, d) for d, n in sorted(rows.items())]
    finally:
        server.stop()
