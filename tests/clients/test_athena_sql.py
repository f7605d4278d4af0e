"""Athena users' SQL through ADBC: views stored in the catalog, and Presto's functions,
with DuckDB over the same files as the oracle."""

import datetime as dt
import json

import adbc_driver_flightsql
import adbc_driver_manager
import pyarrow as pa
import pytest

from conftest import Server, connect, tarn
from test_duckdb_oracle import duck, normalise  # noqa: F401  (the DuckDB fixture)


@pytest.fixture()
def crawled(lake, tmp_path):
    """A data directory of its own with the test lake crawled into it."""
    data_dir = tmp_path / "data"
    crawl = tarn(data_dir, "crawl", str(lake["root"]))
    assert crawl.returncode == 0, crawl.stderr
    return data_dir


def rows(cur, sql):
    cur.execute(sql)
    return cur.fetchall()


def test_views_are_saved_listed_and_survive_a_restart(crawled, duck):
    view = (
        "SELECT user_id, kind, score, ts, day FROM events "
        "WHERE kind IN ('answer', 'submit') AND score >= 10"
    )
    dashboard = (
        "SELECT v.day, u.country, count(*) AS n, sum(v.score) AS total "
        "FROM {v} v JOIN users u ON u.user_id = v.user_id GROUP BY 1, 2"
    )
    duck.execute(f"CREATE OR REPLACE VIEW engaged AS {view}")
    expected = normalise(duck.execute(dashboard.format(v="engaged")).fetchall())
    assert expected, "the oracle's dashboard has rows"

    server = Server(crawled)
    try:
        with connect(server.uri) as conn, conn.cursor() as cur:
            cur.execute("CREATE DATABASE dash")
            (message,) = rows(cur, f"CREATE VIEW dash.engaged AS {view}")[0]
            assert message == "created view dash.engaged"
            assert normalise(rows(cur, dashboard.format(v="dash.engaged"))) == expected

            # Flight SQL metadata lists it as a view, with its columns.
            objects = conn.adbc_get_objects(depth="columns", catalog_filter="tarn").read_all().to_pylist()
            found = [
                t
                for c in objects
                for s in c["catalog_db_schemas"]
                if s["db_schema_name"] == "dash"
                for t in s["db_schema_tables"]
            ]
            assert [(t["table_name"], t["table_type"]) for t in found] == [("engaged", "VIEW")]
            assert [c["column_name"] for c in found[0]["table_columns"]] == [
                "user_id", "kind", "score", "ts", "day",
            ]
            assert rows(
                cur,
                "SELECT table_type FROM information_schema.tables "
                "WHERE table_schema = 'dash' AND table_name = 'engaged'",
            ) == [("VIEW",)]
            (statement,) = rows(cur, "SHOW CREATE VIEW dash.engaged")[0]
            assert statement.endswith(f"CREATE VIEW dash.engaged AS {view}")
            assert "tables named without a database are in default" in statement

            with pytest.raises(adbc_driver_manager.Error, match="would read itself"):
                cur.execute("CREATE OR REPLACE VIEW dash.engaged AS SELECT * FROM dash.engaged")
    finally:
        server.stop()

    # The admin API (the CLI's `tables`) lists the view beside the tables.
    listed = tarn(crawled, "tables")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if "engaged" in line)
    assert "dash" in line and "view" in line

    # A restart keeps it; once dropped, it is not found.
    server = Server(crawled)
    try:
        with connect(server.uri) as conn, conn.cursor() as cur:
            assert normalise(rows(cur, dashboard.format(v="dash.engaged"))) == expected
            cur.execute("DROP VIEW dash.engaged")
            with pytest.raises(adbc_driver_manager.Error, match="'dash.engaged' not found"):
                cur.execute("SELECT * FROM dash.engaged")
    finally:
        server.stop()


# Presto's functions over the lake, each beside DuckDB's spelling of the same question.
FUNCTIONS = [
    (
        "SELECT day_of_week(ts), week_of_year(ts), day_of_year(ts), count(*) FROM events GROUP BY 1, 2, 3",
        "SELECT isodow(ts), weekofyear(ts), dayofyear(ts), count(*) FROM events GROUP BY 1, 2, 3",
    ),
    (
        "SELECT date_diff('minute', TIMESTAMP '2026-03-01 00:00:00', ts) / 60 AS h, count(*) FROM events GROUP BY 1",
        "SELECT date_diff('minute', TIMESTAMP '2026-03-01 00:00:00', ts) // 60 AS h, count(*) FROM events GROUP BY 1",
    ),
    (
        "SELECT date_add('day', 3, ts), user_id FROM events WHERE user_id < 5 AND kind = 'hint'",
        "SELECT ts + INTERVAL 3 DAY, user_id FROM events WHERE user_id < 5 AND kind = 'hint'",
    ),
    (
        "SELECT kind, count_if(score > 50), max_by(hour, ts), min_by(day, ts) FROM events GROUP BY kind",
        "SELECT kind, count_if(score > 50), arg_max(hour, ts), arg_min(day, ts) FROM events GROUP BY kind",
    ),
    (
        "SELECT format_datetime(ts, 'yyyy-MM-dd HH:mm'), count(*) FROM events GROUP BY 1",
        "SELECT strftime(ts, '%Y-%m-%d %H:%M'), count(*) FROM events GROUP BY 1",
    ),
    (
        "SELECT json_extract_scalar(j, '$.who.kind'), json_array_length(json_extract(j, '$.tags')), count(*) "
        "FROM (SELECT '{\"who\": {\"kind\": \"' || kind || '\"}, \"tags\": [1, ' || CAST(user_id AS VARCHAR) || ']}' AS j "
        "FROM events) GROUP BY 1, 2",
        "SELECT json_extract_string(j, '$.who.kind'), json_array_length(json_extract(j, '$.tags')), count(*) "
        "FROM (SELECT '{\"who\": {\"kind\": \"' || kind || '\"}, \"tags\": [1, ' || CAST(user_id AS VARCHAR) || ']}' AS j "
        "FROM events) GROUP BY 1, 2",
    ),
    (
        "SELECT day, cardinality(histogram(user_id)), element_at(histogram(kind), 'answer') FROM events GROUP BY day",
        "SELECT day, count(DISTINCT user_id), NULLIF(count_if(kind = 'answer'), 0) FROM events GROUP BY day",
    ),
    (
        "SELECT user_id, try(CAST(kind AS INTEGER)), try(100 / (user_id % 3)) FROM events WHERE user_id < 40",
        "SELECT user_id, TRY_CAST(kind AS INTEGER), CASE WHEN user_id % 3 = 0 THEN NULL ELSE 100 // (user_id % 3) END "
        "FROM events WHERE user_id < 40",
    ),
    (
        "SELECT regexp_extract(name, '-(\\d+)$', 1), element_at(split(name, '-'), 1) FROM users",
        "SELECT regexp_extract(name, '-(\\d+)$', 1), string_split(name, '-')[1] FROM users",
    ),
]


@pytest.mark.parametrize("tarn_sql,duck_sql", FUNCTIONS, ids=[f"f{i}" for i in range(len(FUNCTIONS))])
def test_presto_functions_match_duckdb(conn, duck, tarn_sql, duck_sql):
    with conn.cursor() as cur:
        ours = normalise(rows(cur, tarn_sql))
    theirs = normalise(duck.execute(duck_sql).fetchall())
    assert ours, tarn_sql
    assert ours == theirs, json.dumps([tarn_sql, ours[:3], theirs[:3]], default=str)


def test_ctas_writes_partitioned_parquet_that_reads_back_exactly(crawled, duck, tmp_path):
    out = tmp_path / "marts"
    out.mkdir()
    query = (
        "SELECT user_id, kind, score, ts, CAST(day AS BIGINT) AS day, device "
        "FROM events WHERE score >= 20"
    )
    expected = normalise(duck.execute(query).fetchall())
    server = Server(crawled, command=("--allow-location", str(out), "serve"))
    try:
        with connect(server.uri) as conn, conn.cursor() as cur:
            cur.execute("CREATE DATABASE marts")
            (message,) = rows(
                cur,
                "CREATE TABLE marts.scored WITH (format = 'PARQUET', partitioned_by = ARRAY['day'], "
                f"external_location = '{out}/scored/', write_compression = 'ZSTD') AS {query}",
            )[0]
            assert message == f"created table marts.scored with {len(expected)} rows"
            columns = "user_id, kind, score, ts, day, device"
            assert normalise(rows(cur, f"SELECT {columns} FROM marts.scored")) == expected
            with pytest.raises(adbc_driver_manager.Error, match="is not empty"):
                cur.execute(
                    f"CREATE TABLE marts.again WITH (external_location = '{out}/scored/') AS {query}"
                )
    finally:
        server.stop()

    # The files are Hive-partitioned Parquet that another engine reads as the same rows.
    folders = sorted(p.name for p in (out / "scored").iterdir())
    assert folders == ["day=1", "day=2"], folders
    written = normalise(
        duck.execute(
            f"SELECT user_id, kind, score, ts, day, device FROM read_parquet('{out}/scored/*/*.parquet', "
            "hive_partitioning = true, hive_types = {'day': BIGINT})"
        ).fetchall()
    )
    assert written == expected

    # Crawling the folder again finds the table as it is: nothing changes.
    again = tarn(crawled, "crawl", str(out), "--database", "marts", "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["tables_unchanged"] == ["marts.scored"], summary
    assert summary["files_added"] == 0 and summary["files_removed"] == 0, summary


def test_unload_writes_partitioned_parquet_to_s3_and_registers_nothing(crawled, duck, tmp_path):
    import io

    import pyarrow.parquet as pq

    from conftest import moto_s3

    query = "SELECT user_id, kind, score, CAST(day AS BIGINT) AS day FROM events WHERE kind = 'hint'"
    expected = normalise(duck.execute(query).fetchall())
    with moto_s3("exports") as (env, client):
        server = Server(crawled, command=("--allow-location", "s3://exports/", "serve"), env=env)
        try:
            with connect(server.uri) as conn, conn.cursor() as cur:
                (message,) = rows(
                    cur,
                    f"UNLOAD ({query}) TO 's3://exports/hints/' "
                    "WITH (format = 'PARQUET', partitioned_by = ARRAY['day'])",
                )[0]
                assert message.startswith(f"unloaded {len(expected)} rows into 2 file(s)"), message
                with pytest.raises(adbc_driver_manager.Error, match="is not empty"):
                    cur.execute(f"UNLOAD ({query}) TO 's3://exports/hints/'")
                with pytest.raises(adbc_driver_manager.Error, match="not under a location"):
                    cur.execute(f"UNLOAD ({query}) TO 's3://elsewhere/hints/'")
                # Nothing was registered.
                tables = rows(cur, "SELECT table_name FROM information_schema.tables")
                assert not any("hint" in t for (t,) in tables)
        finally:
            server.stop()

        # The objects are Hive-partitioned Parquet holding the query's rows.
        keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="exports")["Contents"])
        assert [k.split("/")[1] for k in keys] == ["day=1", "day=2"], keys
        got = []
        for key in keys:
            day = int(key.split("/")[1].split("=")[1])
            body = client.get_object(Bucket="exports", Key=key)["Body"].read()
            for row in pq.read_table(io.BytesIO(body)).to_pylist():
                got.append((row["user_id"], row["kind"], row["score"], day))
        assert normalise(got) == expected


COOKIES = {adbc_driver_flightsql.DatabaseOptions.WITH_COOKIE_MIDDLEWARE.value: "true"}
INSTANT = "CAST(from_iso8601_timestamp('2024-01-05T13:00:00Z') AS TIMESTAMP WITH TIME ZONE)"


def show(cur, name):
    """(value, server's value) of a session setting."""
    cur.execute(f"SHOW {name}")
    (row,) = cur.fetchall()
    assert row[0] == name
    return row[1], row[2]


def test_set_time_zone_and_session_settings_through_adbc(server):
    with connect(server.uri, db_kwargs=COOKIES) as conn, conn.cursor() as cur:
        assert show(cur, "time_zone") == ("UTC", "UTC")
        cur.execute("SET TIME ZONE 'America/New_York'")
        cur.execute(f"SELECT now() AS n, {INSTANT} AS t")
        table = cur.fetch_arrow_table()
        assert table.schema.field("n").type == pa.timestamp("ns", tz="America/New_York")
        now, instant = table.column("n")[0].as_py(), table.column("t")[0].as_py()
        # The same instants, given in the session's zone.
        assert instant.utcoffset() == dt.timedelta(hours=-5) and instant.hour == 8
        assert instant == dt.datetime(2024, 1, 5, 13, tzinfo=dt.timezone.utc)
        assert abs(now - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=5)
        assert now.utcoffset() in (dt.timedelta(hours=-5), dt.timedelta(hours=-4))
        # Prepared statements (parameters bound) run in the session too.
        cur.execute("SELECT now() AS n WHERE ? = 1", parameters=(1,))
        assert cur.fetch_arrow_table().schema.field("n").type.tz == "America/New_York"
        # The session keeps its settings in its options (the signed cookie).
        options = json.loads(conn.adbc_connection.get_option("adbc.flight.sql.session.options"))
        assert options["time_zone"] == "America/New_York"
        cur.execute("SET SESSION tarn.avg_from_sums = false")
        assert show(cur, "tarn.avg_from_sums") == ("false", "true")
        cur.execute("SET target_partitions = 1")
        assert show(cur, "target_partitions")[0] == "1"
        with pytest.raises(adbc_driver_manager.Error, match=r"from 1 to \d+ \(the server's target_partitions\)"):
            cur.execute("SET target_partitions = 100000")
        with pytest.raises(adbc_driver_manager.Error, match="not a setting a session may change; it is the server's"):
            cur.execute("SET datafusion.runtime.memory_limit = '1T'")
        with pytest.raises(adbc_driver_manager.Error, match="'Mars/Olympus' is not a value for the setting time_zone"):
            cur.execute("SET TIME ZONE 'Mars/Olympus'")
        # A failed SET changed nothing.
        assert show(cur, "time_zone")[0] == "America/New_York"
        # Another session starts from the server's settings.
        with connect(server.uri, db_kwargs=COOKIES) as other, other.cursor() as other_cur:
            assert show(other_cur, "time_zone")[0] == "UTC"
            assert show(other_cur, "tarn.avg_from_sums")[0] == "true"
        cur.execute("RESET tarn.avg_from_sums")
        assert show(cur, "tarn.avg_from_sums")[0] == "true"
        cur.execute("RESET ALL")
        assert show(cur, "time_zone")[0] == "UTC"
        assert show(cur, "target_partitions")[0] == show(cur, "target_partitions")[1]
