"""The Postgres wire protocol (`tarn serve --pg-listen`) through real Postgres clients:
psycopg (extended protocol, text and binary results, typed and untyped parameters,
prepared statements), psql (simple protocol, its catalog commands `\\dn`, `\\dt`, `\\d`),
SQLAlchemy's Postgres dialect (reflection). Answers are checked against DuckDB over the
same Parquet file; errors by their SQLSTATE; users, roles, TLS, cancel and the statement
time limit as a user meets them."""

import csv
import datetime as dt
import io
import os
import re
import subprocess
import threading
import time
from decimal import Decimal

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bi_queries import QUERIES as BI_QUERIES
from conftest import PASSWORDS, Server, credentials, tarn, tarn_bin

ENDLESS_SUM = "SELECT sum(value) FROM generate_series(1, 100000000000)"


def pg_address(server: Server) -> tuple[str, int]:
    for line in server.output:
        m = re.search(r"Postgres listening on postgres://([\d.]+):(\d+)/tarn", line)
        if m:
            return m.group(1), int(m.group(2))
    raise AssertionError(f"no Postgres line in {server.output}")


def dsn(server: Server, user: str = "tester", **extra) -> str:
    host, port = pg_address(server)
    parts = {"host": host, "port": port, "dbname": "tarn", "user": user, **extra}
    return " ".join(f"{k}='{v}'" if " " in str(v) else f"{k}={v}" for k, v in parts.items())


@pytest.fixture(scope="module")
def typed(tmp_path_factory):
    """A table of the types a client must get exactly (64-bit integers, decimals up to 38
    digits, instants with a zone, dates, unicode and hostile text, NULLs), crawled into a
    catalog of its own, served over Postgres."""
    root = tmp_path_factory.mktemp("pgtyped")
    lake = root / "lake" / "readings"
    lake.mkdir(parents=True)
    table = pa.table({
        "id": pa.array([1, 2, 3, 4], pa.int32()),
        "small": pa.array([-32768, 7, None, 32767], pa.int16()),
        "big": pa.array([2**62 + 1, -(2**53) - 3, None, -(2**63)], pa.int64()),
        "amount": pa.array([Decimal("12.3400"), Decimal("-0.0001"), None,
                            Decimal("9999999999999999.9999")], pa.decimal128(20, 4)),
        "wide": pa.array([Decimal("12345678901234567890123456789012345.678"), Decimal("0.000"),
                          Decimal("-99999999999999999999999999999999999.999"), None],
                         pa.decimal128(38, 3)),
        "seen_at": pa.array([dt.datetime(2024, 1, 5, 13, 0, 1, 250000, tzinfo=dt.timezone.utc),
                             dt.datetime(2024, 2, 29, 23, 59, 59, tzinfo=dt.timezone.utc), None,
                             dt.datetime(1999, 12, 31, 0, 0, 0, tzinfo=dt.timezone.utc)],
                            pa.timestamp("us", tz="UTC")),
        "local_at": pa.array([dt.datetime(2024, 1, 5, 13, 0, 1), None,
                              dt.datetime(1970, 1, 1), dt.datetime(2038, 1, 19, 3, 14, 8)],
                             pa.timestamp("us")),
        "day": pa.array([dt.date(2024, 1, 5), None, dt.date(2024, 3, 1), dt.date(2000, 1, 1)]),
        "name": pa.array(["a", None, "Grüße, \"quoted\"\n'x'", ""]),
        "ratio": pa.array([0.5, None, -1.25, 3.0], pa.float64()),
        "ok": pa.array([True, False, None, True]),
    })
    pq.write_table(table, lake / "part-0.parquet")
    catalog = root / "tarn"
    crawled = tarn(catalog, "crawl", str(root / "lake"), "--database", "lab")
    assert crawled.returncode == 0, crawled.stderr
    s = Server(catalog, command=(
        "serve", "--pg-listen", "127.0.0.1:0", "--result-cache-mb", "0",
    ))
    yield {"server": s, "file": lake / "part-0.parquet", "catalog": catalog}
    s.stop()
    assert s.proc.returncode == 0, "".join(s.log)[-2000:]


QUERY = ("SELECT id, small, big, amount, wide, seen_at, local_at, day, name, ratio, ok "
         "FROM lab.readings ORDER BY id")


def oracle(typed, sql: str = QUERY, params=()) -> list[tuple]:
    db = duckdb.connect()
    db.sql("CREATE SCHEMA lab")
    db.sql(f"CREATE VIEW lab.readings AS SELECT * FROM read_parquet('{typed['file']}')")
    db.execute("SET TimeZone = 'UTC'")
    table = db.sql(sql, params=list(params) or None).to_arrow_table()
    return [tuple(row.values()) for row in table.to_pylist()]


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_every_type_matches_duckdb_in_text_and_binary(typed, binary):
    with psycopg.connect(dsn(typed["server"])) as conn:
        cur = conn.cursor(binary=binary)
        cur.execute(QUERY)
        rows = cur.fetchall()
        types = [conn.adapters.types.get(d.type_code).name for d in cur.description]
    assert types == ["int4", "int2", "int8", "numeric", "numeric", "timestamptz", "timestamp",
                     "date", "text", "float8", "bool"]
    assert rows == oracle(typed)
    # Exactly, beyond what a 64-bit float or a 28-digit decimal holds.
    assert rows[0][4] == Decimal("12345678901234567890123456789012345.678")
    assert rows[3][2] == -(2**63)


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_intervals_and_lists_match_duckdb_in_text_and_binary(typed, binary):
    tarn_sql = ("SELECT id, INTERVAL '1 day 2 hours 3 seconds' AS span, make_array(id, big) AS pair, "
                "make_array(name) AS names FROM lab.readings ORDER BY id")
    duck_sql = ("SELECT id, INTERVAL '1 day 2 hours 3 seconds', [id, big], [name] "
                "FROM lab.readings ORDER BY id")
    with psycopg.connect(dsn(typed["server"])) as conn:
        cur = conn.cursor(binary=binary)
        cur.execute(tarn_sql)
        rows = [tuple(r) for r in cur.fetchall()]
        types = [conn.adapters.types.get(d.type_code).name for d in cur.description]
    # (psycopg names an array type by its element: the values below are lists.)
    assert types == ["int4", "interval", "int8", "text"]
    # DuckDB's intervals arrive through Arrow as (months, days, nanoseconds).
    expected = [(i, dt.timedelta(days=span.days, microseconds=span.nanoseconds // 1000), pair, names)
                for i, span, pair, names in oracle(typed, duck_sql)]
    assert all(span.months == 0 for _, span, _, _ in oracle(typed, duck_sql))
    assert rows == expected


def test_parameters_typed_untyped_and_prepared(typed):
    sql = ("SELECT id, name, amount FROM lab.readings "
           "WHERE big > %s OR amount = %s OR name = %s ORDER BY id")
    expected = oracle(typed, sql.replace("%s", "?"), (0, Decimal("-0.0001"), ""))
    with psycopg.connect(dsn(typed["server"])) as conn:
        for prepare in (False, True):
            for _ in range(2):
                rows = conn.execute(sql, (0, Decimal("-0.0001"), ""), prepare=prepare).fetchall()
                assert rows == expected
        # A parameter the client sends untyped (text), typed by the statement.
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM lab.readings WHERE day >= %s::date", ("2024-01-01",))
        assert cur.fetchone()[0] == oracle(
            typed, "SELECT count(*) FROM lab.readings WHERE day >= DATE '2024-01-01'")[0][0]


def test_empty_results_keep_their_columns(typed):
    with psycopg.connect(dsn(typed["server"])) as conn:
        for binary in (False, True):
            cur = conn.cursor(binary=binary)
            cur.execute("SELECT id, amount, seen_at FROM lab.readings WHERE id < 0")
            assert cur.fetchall() == []
            assert [d.name for d in cur.description] == ["id", "amount", "seen_at"]


def test_session_settings_clients_send(typed):
    with psycopg.connect(dsn(typed["server"]), autocommit=True) as conn:
        # Unqualified names need a database: search_path chooses it.
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT count(*) FROM readings")
        conn.execute("SET search_path TO lab")
        assert conn.execute("SHOW search_path").fetchone() == ("lab",)
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (4,)
        conn.execute("SET application_name = 'dashboards'")
        conn.execute("SET extra_float_digits = 3")
        assert conn.execute("SHOW application_name").fetchone() == ("dashboards",)
        conn.execute("SET TIME ZONE 'Europe/Paris'")
        assert conn.execute("SHOW TimeZone").fetchone() == ("Europe/Paris",)
        # The instant stays the same; its zone is the session's.
        seen = conn.execute("SELECT seen_at FROM readings WHERE id = 1").fetchone()[0]
        assert seen == dt.datetime(2024, 1, 5, 13, 0, 1, 250000, tzinfo=dt.timezone.utc)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="no_such_setting"):
            conn.execute("SET no_such_setting = 1")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="search_path"):
            conn.execute("SET search_path TO nowhere")
        # Tarn's own statements answer with rows through the extended protocol too.
        assert ("lab",) in conn.execute("SHOW DATABASES").fetchall()
        tables = conn.execute("SHOW TABLES").fetchall()
        assert any(row[1:3] == ("lab", "readings") for row in tables), tables
        conn.execute("RESET ALL")
        assert conn.execute("SHOW application_name").fetchone() == ("",)
    # A database of Tarn's as the connection's database is the default for names.
    with psycopg.connect(dsn(typed["server"]).replace("dbname=tarn", "dbname=lab")) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (4,)
    with pytest.raises(psycopg.OperationalError, match="does not exist.*lab"):
        psycopg.connect(dsn(typed["server"]).replace("dbname=tarn", "dbname=nowhere"))


def test_tarn_settings_and_use_over_postgres(typed):
    with psycopg.connect(dsn(typed["server"]), autocommit=True) as conn:
        conn.execute("USE lab")
        assert conn.execute("SHOW search_path").fetchone() == ("lab",)
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (4,)
        conn.execute("SET tarn.reorder_joins = off")
        assert conn.execute("SHOW tarn.reorder_joins").fetchone()[1:3] == ("false", "true")
        conn.execute("SET SESSION time_zone = 'Asia/Tokyo'")
        assert conn.execute("SHOW TimeZone").fetchone() == ("Asia/Tokyo",)
        assert conn.execute("SELECT arrow_typeof(now())").fetchone() == ('Timestamp(ns, "Asia/Tokyo")',)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="it is the server's"):
            conn.execute("SET datafusion.runtime.memory_limit = '1T'")
        conn.execute("RESET tarn.reorder_joins")
        assert conn.execute("SHOW tarn.reorder_joins").fetchone()[1] == "true"
        conn.execute("SET tarn.reorder_joins = false")
        conn.execute("RESET ALL")
        assert conn.execute("SHOW tarn.reorder_joins").fetchone()[1] == "true"


def test_transactions_are_accepted_and_errors_have_their_codes(typed):
    with psycopg.connect(dsn(typed["server"])) as conn:  # psycopg opens a transaction
        assert conn.execute("SELECT count(*) FROM lab.readings").fetchone() == (4,)
        conn.commit()
        with pytest.raises(psycopg.errors.UndefinedTable, match="lab.nope"):
            conn.execute("SELECT * FROM lab.nope")
        conn.rollback()
        with pytest.raises(psycopg.errors.SyntaxError):
            conn.execute("SELEC 1")
        conn.rollback()
        with pytest.raises(psycopg.errors.SyntaxError, match="no_column"):
            conn.execute("SELECT no_column FROM lab.readings")
        conn.rollback()
        # The connection is still good after errors.
        assert conn.execute("SELECT 1 + 1").fetchone() == (2,)


def test_psql_catalog_commands_and_scripts(typed):
    env = {**os.environ, "PGCONNECT_TIMEOUT": "20"}

    def psql(*args):
        out = subprocess.run(["psql", "-X", "-A", "-t", dsn(typed["server"]), *args],
                             capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert "lab|postgres" in psql("-c", r"\dn").splitlines()
    assert "lab|readings|table" in psql("-c", r"\dt lab.*")
    described = psql("-c", r"\d lab.readings")
    columns = {line.split("|")[0]: line.split("|")[1] for line in described.splitlines() if "|" in line}
    assert columns["id"] == "integer" and columns["big"] == "bigint"
    # Decimals keep their precision and scale (pg_attribute's type modifiers).
    assert columns["wide"] == "numeric(38,3)" and columns["amount"] == "numeric(20,4)"
    assert columns["seen_at"] == "timestamp with time zone"
    # A script of several statements over the simple protocol, one result each.
    out = psql("-c", "SELECT count(*) FROM lab.readings; SELECT max(big) FROM lab.readings")
    assert out.split() == [str(v[0]) for v in (oracle(typed, "SELECT count(*) FROM lab.readings")[0],
                                                oracle(typed, "SELECT max(big) FROM lab.readings")[0])]
    assert "PostgreSQL 16" in psql("-c", "SELECT version()") and "Tarn" in psql("-c", "SELECT version()")


COPY_QUERY = "SELECT id, big, amount, wide, name FROM lab.readings ORDER BY id"


def copy_oracle(typed):
    """DuckDB's rows as the text Postgres' COPY writes for them (NULL stays None)."""
    return [tuple(None if v is None else str(v) for v in row) for row in oracle(typed, COPY_QUERY)]


def test_copy_to_stdout_through_psql_and_psycopg(typed, tmp_path):
    # psql's \copy … to a file, in CSV with a header (quotes, a newline and unicode in
    # names; NULL written as the NULL string asked for).
    out = tmp_path / "rows.csv"
    done = subprocess.run(
        ["psql", "-X", dsn(typed["server"]), "-c",
         f"\\copy ({COPY_QUERY}) to '{out}' with (format csv, header true, null 'NULL')"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # The row count psql reports is the rows', not the header's.
    assert done.stdout.strip() == f"COPY {len(copy_oracle(typed))}"
    with open(out, newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["id", "big", "amount", "wide", "name"]
    assert [tuple(None if v == "NULL" else v for v in r) for r in rows] == copy_oracle(typed)

    # psycopg's copy API, Postgres' text format (tabs, \N for NULL, escapes).
    with psycopg.connect(dsn(typed["server"]), autocommit=True) as conn:
        with conn.cursor().copy(f"COPY ({COPY_QUERY}) TO STDOUT") as copy:
            assert [tuple(r) for r in copy.rows()] == copy_oracle(typed)
        # A table's columns, CSV read as a CSV reader would (psycopg parses only text rows).
        with conn.cursor().copy("COPY lab.readings (id, name) TO STDOUT (FORMAT csv)") as copy:
            text = b"".join(bytes(chunk) for chunk in copy).decode()
        in_file_order = sorted(copy_oracle(typed), key=lambda r: int(r[0]))
        assert sorted(csv.reader(io.StringIO(text, newline="")), key=lambda r: int(r[0])) == [
            [r[0], r[4] or ""] for r in in_file_order]
        # COPY … FROM is refused with what is served, and the session goes on.
        with pytest.raises(psycopg.Error, match="TO STDOUT"):
            with conn.cursor().copy("COPY lab.readings FROM STDIN") as copy:
                copy.write_row((1,))
        assert conn.execute("SELECT count(*) FROM lab.readings").fetchone() == (4,)


def test_sqlalchemy_reflection_and_queries(typed):
    import sqlalchemy as sa

    host, port = pg_address(typed["server"])
    engine = sa.create_engine(f"postgresql+psycopg2://tester@{host}:{port}/tarn")
    inspector = sa.inspect(engine)
    assert "lab" in inspector.get_schema_names()
    assert inspector.get_table_names(schema="lab") == ["readings"]
    columns = {c["name"]: c["type"] for c in inspector.get_columns("readings", schema="lab")}
    assert isinstance(columns["big"], sa.BigInteger) and isinstance(columns["wide"], sa.Numeric)
    assert (columns["wide"].precision, columns["wide"].scale) == (38, 3)
    # Full reflection of a Table: columns in file order with their types, and no keys,
    # indexes or comments (Tarn's tables have none).
    table = sa.Table("readings", sa.MetaData(), schema="lab", autoload_with=engine)
    assert [c.name for c in table.columns] == pq.read_schema(typed["file"]).names
    assert isinstance(table.c.seen_at.type, sa.DateTime) and table.c.seen_at.type.timezone
    assert list(table.primary_key.columns) == [] and table.foreign_keys == set()
    assert table.indexes == set() and table.comment is None
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT id, wide FROM lab.readings WHERE id <= :n ORDER BY id"),
                         {"n": 2}).fetchall()
    assert [tuple(r) for r in rows] == oracle(typed, "SELECT id, wide FROM lab.readings WHERE id <= 2 ORDER BY id")
    engine.dispose()


def test_statement_timeout_and_cancel(typed):
    with psycopg.connect(dsn(typed["server"]), autocommit=True) as conn:
        conn.execute("SET statement_timeout = '300ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute(ENDLESS_SUM)
        conn.execute("SET statement_timeout = 0")
        assert conn.execute("SELECT 2").fetchone() == (2,)

    conn = psycopg.connect(dsn(typed["server"]), autocommit=True)
    outcome = {}

    def run():
        try:
            conn.execute(ENDLESS_SUM)
            outcome["result"] = "finished"
        except psycopg.Error as e:
            outcome["error"] = e

    worker = threading.Thread(target=run)
    worker.start()
    # Cancel once the server reports the statement running (a cancel before it starts
    # would cancel nothing).
    with psycopg.connect(dsn(typed["server"]), autocommit=True) as watcher:
        deadline = time.monotonic() + 60
        while not watcher.execute(
                "SELECT count(*) FROM system.queries WHERE state = 'running' AND query = %s",
                (ENDLESS_SUM,)).fetchone()[0]:
            assert time.monotonic() < deadline, "the statement never showed as running"
        conn.cancel_safe()
    worker.join(60)
    assert not worker.is_alive()
    assert isinstance(outcome.get("error"), psycopg.errors.QueryCanceled), outcome
    assert conn.execute("SELECT 3").fetchone() == (3,)
    conn.close()


def test_a_full_server_refuses_with_53000_and_serves_again(typed):
    """With one query running and no queue, another query over a table is refused at once
    with SQLSTATE 53000 (insufficient resources); once the first is cancelled, the next one
    runs."""
    busy = Server(typed["catalog"], command=(
        "serve", "--pg-listen", "127.0.0.1:0", "--result-cache-mb", "0",
        "--max-concurrent-queries", "1", "--max-queued-queries", "0"))
    long_running = ("SELECT sum(a.id * g.value) FROM lab.readings a, "
                    "generate_series(1, 100000000000) g")
    conn = psycopg.connect(dsn(busy), autocommit=True)
    outcome = {}

    def run():
        # The other connection's short queries may hold the place at first: retry until
        # this one has it.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                conn.execute(long_running)
                return
            except psycopg.errors.InsufficientResources:
                continue
            except psycopg.Error as e:
                outcome["error"] = e
                return

    worker = threading.Thread(target=run)
    worker.start()
    try:
        with psycopg.connect(dsn(busy), autocommit=True) as other:
            deadline = time.monotonic() + 60
            while True:
                assert time.monotonic() < deadline, "the second query was never refused"
                try:
                    # Runs until the long query holds the only slot.
                    other.execute("SELECT count(*) FROM lab.readings").fetchone()
                except psycopg.errors.InsufficientResources as e:
                    assert e.sqlstate == "53000" and "too many queries" in str(e), e
                    break
            conn.cancel_safe()
            worker.join(60)
            assert isinstance(outcome.get("error"), psycopg.errors.QueryCanceled), outcome
            # The slot is free again: the same connection is served.
            deadline = time.monotonic() + 60
            while True:
                try:
                    assert other.execute("SELECT count(*) FROM lab.readings").fetchone() == (4,)
                    break
                except psycopg.errors.InsufficientResources:
                    assert time.monotonic() < deadline, "the slot was never freed"
    finally:
        conn.close()
        busy.stop()
    assert busy.proc.returncode == 0, "".join(busy.log)[-2000:]


def test_history_records_the_postgres_front_door(typed):
    marker = "SELECT count(*) AS pg_history_marker FROM lab.readings"
    with psycopg.connect(dsn(typed["server"], application_name="probe"), autocommit=True) as conn:
        conn.execute(marker).fetchall()
        rows = conn.execute(
            "SELECT front_door, user_name, state, rows_returned FROM system.queries WHERE query = %s",
            (marker,)).fetchall()
    assert rows == [("postgres", "anonymous", "finished", 1)]


@pytest.fixture(scope="module")
def secured_pg(typed, tmp_path_factory):
    """The typed catalog served with users, roles, an API token and TLS."""
    made = credentials(tmp_path_factory.mktemp("pgsecured"), token_name="grafana")
    s = Server(typed["catalog"], command=(
        "serve", "--pg-listen", "127.0.0.1:0", "--config", str(made["config"]),
        "--tls-cert", str(made["cert"]), "--tls-key", str(made["key"]),
    ))
    yield {"server": s, **made}
    s.stop()
    assert s.proc.returncode == 0


def test_users_roles_tokens_over_tls(secured_pg):
    s, ca = secured_pg["server"], secured_pg["ca"]
    tls = {"sslmode": "verify-full", "sslrootcert": str(ca)}
    with psycopg.connect(dsn(s, "alice", password=PASSWORDS["alice"], **tls)) as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT count(*) FROM lab.readings").fetchone() == (4,)
        assert conn.execute("SHOW is_superuser").fetchone() == ("on",)
        conn.commit()
        cur = conn.execute("CREATE DATABASE scratch")
        assert cur.statusmessage == "CREATE DATABASE"
        assert ("scratch",) in conn.execute("SHOW DATABASES").fetchall()
        conn.execute("DROP DATABASE scratch")
        assert ("scratch",) not in conn.execute("SHOW DATABASES").fetchall()
    with psycopg.connect(dsn(s, "bob", password=PASSWORDS["bob"], **tls), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM lab.readings").fetchone() == (4,)
        assert conn.execute("SHOW is_superuser").fetchone() == ("off",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="bob.*reader"):
            conn.execute("DROP TABLE lab.readings")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE DATABASE bobs")
        assert conn.execute("SELECT count(*) FROM lab.readings").fetchone() == (4,)
    # An API token as the password (how dashboards keep a secret that is not a password).
    with psycopg.connect(dsn(s, "grafana", password=secured_pg["token"], **tls)) as conn:
        assert conn.execute("SELECT max(id) FROM lab.readings").fetchone() == (4,)
        user = conn.execute(
            "SELECT DISTINCT user_name FROM system.queries WHERE front_door = 'postgres'").fetchall()
        assert user == [("grafana",)]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(dsn(s, "alice", password="wrong", **tls))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(dsn(s, "mallory", password=PASSWORDS["alice"], **tls))


def test_no_clear_text_passwords_off_loopback(secured_pg, typed, tmp_path):
    # Authentication on, a non-loopback address, no certificate: refused at start.
    refused = subprocess.run(
        [tarn_bin(), "--data-dir", str(typed["catalog"]), "serve", "--listen", "127.0.0.1:0",
         "--pg-listen", "0.0.0.0:0", "--config", str(secured_pg["config"])],
        capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    assert "clear text" in refused.stderr and "--tls-cert" in refused.stderr
    # Without authentication, only loopback (or --insecure-no-auth).
    refused = subprocess.run(
        [tarn_bin(), "--data-dir", str(typed["catalog"]), "serve", "--listen", "127.0.0.1:0",
         "--pg-listen", "0.0.0.0:0"],
        capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "without authentication" in refused.stderr


def test_asyncpg_strict_types(typed):
    import asyncio

    import asyncpg

    host, port = pg_address(typed["server"])

    async def run():
        conn = await asyncpg.connect(host=host, port=port, user="tester", database="tarn")
        try:
            rows = await conn.fetch(
                "SELECT id, big, wide, seen_at, day, name FROM lab.readings "
                "WHERE id >= $1 ORDER BY id", 2)
            text = await conn.fetchval("SELECT $1::text || '!'", "hé")
            return [tuple(r) for r in rows], text
        finally:
            await conn.close()

    rows, text = asyncio.run(run())
    assert rows == oracle(typed, "SELECT id, big, wide, seen_at, day, name FROM lab.readings "
                                 "WHERE id >= 2 ORDER BY id")
    assert text == "hé!"


def test_current_setting_answers_from_the_session(typed):
    with psycopg.connect(dsn(typed["server"]), autocommit=True) as conn:
        conn.execute("SET search_path TO lab")
        assert conn.execute("SELECT current_setting('search_path')").fetchone() == ("lab",)
        assert conn.execute("SELECT current_setting('server_version_num')").fetchone() == ("160006",)
        with pytest.raises(psycopg.Error, match="unrecognized configuration parameter"):
            conn.execute("SELECT current_setting('no_such')")


def test_rollback_after_a_write_says_it_was_committed(typed):
    with psycopg.connect(dsn(typed["server"])) as conn:  # psycopg sends BEGIN first
        conn.execute("CREATE DATABASE in_transaction")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="ROLLBACK cannot undo the 1"):
            conn.rollback()
        conn.rollback()
        assert ("in_transaction",) in conn.execute("SHOW DATABASES").fetchall()
        conn.commit()  # a transaction that only read: COMMIT and ROLLBACK both fine
        conn.execute("SELECT 1").fetchall()
        conn.rollback()
        conn.autocommit = True
        conn.execute("DROP DATABASE in_transaction")


def test_a_dropped_connection_stops_its_statement(typed):
    marker = ENDLESS_SUM + " -- dropped"
    client = subprocess.Popen(["psql", "-X", dsn(typed["server"]), "-c", marker],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with psycopg.connect(dsn(typed["server"]), autocommit=True) as watcher:
        def state():
            row = watcher.execute("SELECT state FROM system.queries WHERE query = %s",
                                  (marker,)).fetchone()
            return row[0] if row else None

        deadline = time.monotonic() + 60
        while state() != "running":
            assert time.monotonic() < deadline, "the statement never showed as running"
        client.kill()  # no cancel request: the socket just closes
        client.wait()
        while state() == "running":
            assert time.monotonic() < deadline + 60, "the statement kept running after its client left"
        assert state() == "cancelled"
        assert watcher.execute("SELECT count(*) FROM lab.readings").fetchone() == (4,)


def replay(server: Server, query: dict, **settings) -> list[list] | str:
    """One statement as the tool sends it: the simple protocol for text, the extended one
    with text parameters for `$n` statements; its rows as text, or the server's error."""
    with psycopg.connect(dsn(server, **settings), autocommit=True) as conn:
        if query["params"] is None:
            result = conn.pgconn.exec_(query["sql"].encode())
        else:
            result = conn.pgconn.exec_params(query["sql"].encode(),
                                             [str(p).encode() for p in query["params"]])
        error = result.error_message.decode()
        if error:
            return error
        return [[None if result.get_value(r, c) is None else result.get_value(r, c).decode()
                 for c in range(result.nfields)] for r in range(result.ntuples)]


@pytest.mark.parametrize("query", BI_QUERIES, ids=[q["name"] for q in BI_QUERIES])
def test_bi_tools_catalog_queries(typed, query):
    """Each statement Grafana, Metabase and pgjdbc send on connect and while browsing runs,
    and the ones that list things find the fixture's schema, table and columns with their
    Postgres types."""
    rows = replay(typed["server"], query, options="-c search_path=lab")
    assert not isinstance(rows, str), f"{query['name']} ({query['source']}): {rows}"
    flat = [cell for row in rows for cell in row]
    expected = {
        "grafana-version": lambda: rows == [["1600"]],
        "grafana-schemas": lambda: ["lab"] in rows and ["pg_catalog"] not in rows,
        "grafana-schema-api-schemas": lambda: ["lab"] in rows,
        "grafana-tables-search-path": lambda: ["readings"] in rows,
        "grafana-tables-of-schema": lambda: rows == [["readings"]],
        "grafana-schema-api-tables": lambda: rows == [["readings"]],
        "grafana-columns": lambda: ["seen_at", "timestamp with time zone"] in rows
        and ["wide", "numeric"] in rows and ["id", "integer"] in rows,
        "grafana-columns-qualified": lambda: ["local_at", "timestamp without time zone"] in rows,
        # Time-like and number columns, by Postgres type name (not the smallint).
        "grafana-legacy-time-columns": lambda: rows == [["big"], ["id"], ["local_at"], ["ratio"],
                                                        ["seen_at"]],
        "grafana-schema-api-columns": lambda: ["wide", "numeric", "numeric", "38", "3"] in rows
        and len(rows) == 11,
        "metabase-can-connect": lambda: rows == [["1"]],
        "metabase-timezone": lambda: rows == [["UTC"]],
        "metabase-tables": lambda: [r[:3] for r in rows] == [["lab", "readings", "TABLE"]],
        "metabase-columns": lambda: ["seen_at", "timestamptz"] in [r[:2] for r in rows]
        and len(rows) == 11,
        # Tarn's tables have no keys.
        "metabase-foreign-keys": lambda: rows == [],
        "pgjdbc-get-schemas": lambda: "lab" in flat,
        "pgjdbc-get-schemas-42.7.3": lambda: "lab" in flat,
        "pgjdbc-get-tables": lambda: [r[1:4] for r in rows] == [["lab", "readings", "TABLE"]],
    }.get(query["name"], lambda: True)
    assert expected(), rows
