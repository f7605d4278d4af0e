"""DDL through ADBC: tables created in SQL are in the catalog and survive a restart."""

import adbc_driver_manager
import pyarrow.parquet as pq
import pytest

from conftest import Server, connect


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
