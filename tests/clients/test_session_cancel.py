"""Session options (SetSessionOptions / GetSessionOptions / CloseSession, as ADBC and JDBC
send them) and query cancellation (CancelFlightInfo) through the real clients."""

import json

import adbc_driver_flightsql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import _varint, connect, flight_sql_command

COOKIES = {adbc_driver_flightsql.DatabaseOptions.WITH_COOKIE_MIDDLEWARE.value: "true"}


def test_current_schema_is_a_session_option(server):
    with connect(server.uri, db_kwargs=COOKIES) as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS session_db")
        with conn.cursor() as ingest:
            ingest.adbc_ingest("only_here", pa.table({"x": [1, 2, 3]}), mode="replace", db_schema_name="session_db")
        with pytest.raises(adbc_driver_manager.Error, match="not found"):
            cur.execute("SELECT count(*) FROM only_here")
        conn.adbc_connection.set_options(**{"adbc.connection.db_schema": "session_db"})
        assert conn.adbc_current_db_schema == "session_db"
        cur.execute("SELECT count(*) FROM only_here")
        assert cur.fetchall() == [(3,)]
        options = json.loads(conn.adbc_connection.get_option("adbc.flight.sql.session.options"))
        assert options == {"schema": "session_db"}
        # A database that does not exist is refused, and the session keeps its schema.
        with pytest.raises(adbc_driver_manager.ProgrammingError,
                           match=r"INVALID_ARGUMENT.*'schema' \(invalid value\)"):
            conn.adbc_connection.set_options(**{"adbc.connection.db_schema": "no_such_db"})
        cur.execute("SELECT count(*) FROM only_here")
        assert cur.fetchall() == [(3,)]
    # Another connection starts without the session's schema.
    with connect(server.uri, db_kwargs=COOKIES) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="not found"):
            cur.execute("SELECT count(*) FROM only_here")


def test_session_actions_are_listed(server):
    client = flight.FlightClient(server.uri)
    kinds = {a.type for a in client.list_actions()}
    assert {"CancelFlightInfo", "SetSessionOptions", "GetSessionOptions", "CloseSession"} <= kinds


def test_cancel_flight_info_stops_a_running_query(server):
    client = flight.FlightClient(server.uri)
    # Large enough that it is still streaming when the cancel arrives.
    sql = "SELECT v, v * 2 AS w FROM generate_series(1, 2000000000) AS t(v)"
    info = client.get_flight_info(flight.FlightDescriptor.for_command(
        flight_sql_command("CommandStatementQuery", sql)
    ))
    reader = client.do_get(info.endpoints[0].ticket)
    first = reader.read_chunk()
    assert first.data.num_rows > 0

    body = info.serialize()
    request = b"\x0a" + _varint(len(body)) + body  # CancelFlightInfoRequest { info }
    other = flight.FlightClient(server.uri)
    results = list(other.do_action(flight.Action("CancelFlightInfo", request)))
    assert results[0].body.to_pybytes() == b"\x08\x01"  # status: CANCELLED

    with pytest.raises(flight.FlightCancelledError, match="cancelled"):
        while True:
            reader.read_chunk()
    # The same ticket is not run again, and the server is fine.
    with pytest.raises(flight.FlightCancelledError):
        client.do_get(info.endpoints[0].ticket).read_all()
    with connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchall() == [(1,)]


def test_adbc_cancel_interrupts_a_fetch(server):
    with connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT v FROM generate_series(1, 2000000000) AS t(v)")
        reader = cur.fetch_record_batch()
        assert reader.read_next_batch().num_rows > 0
        # Cancelled between two reads (no timer): the driver cancels the DoGet call, the
        # server drops the query's stream, and the next reads end with the cancellation.
        cur.adbc_cancel()
        with pytest.raises((adbc_driver_manager.Error, OSError), match="(?i)cancel"):
            for _ in reader:
                pass
    with connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT 2")
        assert cur.fetchall() == [(2,)]


class _Headers(flight.ClientMiddlewareFactory):
    """Keeps the headers of every response."""

    def __init__(self):
        self.seen = []

    def start_call(self, info):
        factory = self

        class Middleware(flight.ClientMiddleware):
            def received_headers(self, headers):
                factory.seen.append(dict(headers))

        return Middleware()


def test_a_set_run_as_an_update_answers_with_the_session_cookie(server):
    headers = _Headers()
    client = flight.FlightClient(server.uri, middleware=[headers])
    update = flight.FlightDescriptor.for_command(
        flight_sql_command("CommandStatementUpdate", "SET TIME ZONE 'Asia/Tokyo'"))
    writer, reader = client.do_put(update, pa.schema([]))
    writer.done_writing()
    reader.read()
    writer.close()
    cookies = [c for h in headers.seen for c in h.get("set-cookie", [])]
    assert len(cookies) == 1 and cookies[0].startswith("arrow_flight_session_id="), headers.seen
    # Sent back, the cookie carries the session's zone to the next statement.
    options = flight.FlightCallOptions(headers=[(b"cookie", cookies[0].split(";")[0].encode())])
    info = client.get_flight_info(flight.FlightDescriptor.for_command(
        flight_sql_command("CommandStatementQuery", "SHOW time_zone")), options)
    shown = client.do_get(info.endpoints[0].ticket, options).read_all()
    assert shown.column("value").to_pylist() == ["Asia/Tokyo"]
    # Without it, a statement runs in the server's zone.
    info = client.get_flight_info(flight.FlightDescriptor.for_command(
        flight_sql_command("CommandStatementQuery", "SHOW time_zone")))
    assert client.do_get(info.endpoints[0].ticket).read_all().column("value").to_pylist() == ["UTC"]
