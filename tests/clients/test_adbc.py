"""Tarn through the real ADBC Flight SQL driver (and pyarrow.flight for the raw protocol)."""

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import flight_sql_command


def test_crawl_summary_names_the_corrupt_file_and_skips_the_rest(lake):
    s = lake["summary"]
    assert sorted(s["tables_created"]) == ["default.events", "default.users"]
    assert s["files_added"] == len(lake["good"]["events"]) + len(lake["good"]["users"])
    assert [p["path"].rsplit("/", 1)[-1] for p in s["problems"]] == ["corrupt.parquet"]
    assert s["skipped"]["in_progress"] == 1
    assert s["skipped"]["empty"] == 1
    # 2 _SUCCESS, 16 .crc, 1 _temporary upload
    assert s["skipped"]["hidden"] == 19


def test_query(conn):
    cur = conn.cursor()
    cur.execute("SELECT kind, count(*) AS n FROM events GROUP BY kind ORDER BY kind")
    table = cur.fetch_arrow_table()
    assert table.schema.field("kind").type == pa.string()
    assert table.column("kind").to_pylist() == ["answer", "hint", "submit", "view"]
    assert all(n > 0 for n in table.column("n").to_pylist())


def test_prepared_statement_with_parameters(conn):
    cur = conn.cursor()
    cur.execute("SELECT name FROM users WHERE user_id = ?", parameters=(7,))
    assert cur.fetchall() == [("learner-007",)]
    cur.execute("SELECT count(*) FROM events WHERE day = ? AND kind = ?", parameters=(2, "submit"))
    (bound,) = cur.fetchone()
    cur.execute("SELECT count(*) FROM events WHERE day = 2 AND kind = 'submit'")
    (literal,) = cur.fetchone()
    assert bound == literal > 0


def test_get_objects_lists_every_table_without_filters(conn):
    objects = conn.adbc_get_objects().read_all().to_pylist()
    tables = {
        (o["catalog_name"], s["db_schema_name"], t["table_name"], t["table_type"])
        for o in objects
        for s in o["catalog_db_schemas"] or []
        for t in s["db_schema_tables"] or []
    }
    assert ("tarn", "default", "events", "TABLE") in tables
    assert ("tarn", "default", "users", "TABLE") in tables
    columns = conn.adbc_get_objects(depth="columns", table_name_filter="users").read_all()
    names = [
        c["column_name"]
        for o in columns.to_pylist()
        for s in o["catalog_db_schemas"] or []
        for t in s["db_schema_tables"] or []
        for c in t["table_columns"] or []
    ]
    assert names == ["user_id", "name", "country", "plan"]


def test_get_table_schema_is_the_merged_schema(conn):
    schema = conn.adbc_get_table_schema("events", db_schema_filter="default")
    assert schema.field("user_id").type == pa.int64()
    assert schema.field("score").type == pa.float64()
    assert schema.field("device").type == pa.string()
    assert schema.field("hour").type == pa.int64()
    assert schema.field("ts").type == pa.timestamp("us")


def test_empty_result_keeps_its_schema(conn):
    cur = conn.cursor()
    cur.execute("SELECT user_id, name FROM users WHERE user_id < 0")
    table = cur.fetch_arrow_table()
    assert table.num_rows == 0
    assert table.schema.names == ["user_id", "name"]


def test_errors_are_clear_and_the_server_lives_on(conn):
    cur = conn.cursor()
    with pytest.raises(adbc_driver_manager.ProgrammingError, match="'default.missing' not found"):
        cur.execute("SELECT * FROM missing")
    with pytest.raises(adbc_driver_manager.ProgrammingError, match="Line: 1, Column: 1"):
        cur.execute("SELEC 1")
    cur.execute("SELECT 1 AS one")
    assert cur.fetchall() == [(1,)]


def test_raw_pyarrow_flight_gets_the_advertised_schema(server):
    client = flight.FlightClient(server.uri)
    descriptor = flight.FlightDescriptor.for_command(
        flight_sql_command("CommandStatementQuery", "SELECT device, max(score) AS top FROM events GROUP BY device")
    )
    info = client.get_flight_info(descriptor)
    assert [f.type for f in info.schema] == [pa.string(), pa.float64()]
    table = client.do_get(info.endpoints[0].ticket).read_all()
    assert table.schema == info.schema
    assert sorted(table.column("device").to_pylist(), key=str) == sorted(
        ["web", "ios", "android", None], key=str
    )


def test_execute_schema_uses_get_schema_without_running(conn):
    cur = conn.cursor()
    schema = cur.adbc_execute_schema("SELECT user_id, name FROM users")
    assert schema.names == ["user_id", "name"]
    assert schema.field("name").type == pa.string()
    # DDL is described (as an update: no columns), not executed.
    schema = cur.adbc_execute_schema("CREATE DATABASE never_made")
    assert schema.names == []
    cur.execute("SHOW DATABASES")
    assert ("never_made",) not in cur.fetchall()


def test_partitioned_execution(conn):
    cur = conn.cursor()
    partitions, schema = cur.adbc_execute_partitions("SELECT count(*) AS n FROM users")
    assert schema.names == ["n"]
    assert len(partitions) == 1
    cur.adbc_read_partition(partitions[0])
    assert cur.fetchall() == [(50,)]


def test_get_info_names_the_server(conn):
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "Tarn"
    assert info["vendor_version"] and info["vendor_arrow_version"].startswith("59")
