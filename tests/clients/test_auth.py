"""Authentication, roles and TLS, through the real clients: ADBC (Basic credentials, API
tokens) and raw pyarrow.flight (basic-token handshake), against `tarn serve` with a config
file of users and tokens and a TLS certificate from a throwaway CA."""

import subprocess

import adbc_driver_flightsql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import PASSWORDS, Server, connect, credentials, flight_sql_command, tarn_bin

def tls_kwargs(secured, **extra):
    return {adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value: secured["ca"], **extra}


def login(secured, user):
    return connect(
        secured["server"].uri,
        db_kwargs=tls_kwargs(secured, username=user, password=PASSWORDS[user]),
    )


def test_server_announces_tls(secured):
    assert secured["server"].uri.startswith("grpc+tls://")


def test_no_or_wrong_credentials_are_refused(secured):
    with pytest.raises(adbc_driver_manager.Error, match="(?i)unauthenticated|credentials"):
        with connect(secured["server"].uri, db_kwargs=tls_kwargs(secured)) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    with pytest.raises(adbc_driver_manager.Error, match="wrong user name or password"):
        with connect(
            secured["server"].uri,
            db_kwargs=tls_kwargs(secured, username="alice", password="rabbit"),
        ) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")


def test_admin_queries_runs_ddl_and_ingests(secured):
    with login(secured, "alice") as conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM users WHERE user_id = ?", parameters=(7,))
        assert cur.fetchall() == [("learner-007",)]
        cur.execute("CREATE DATABASE IF NOT EXISTS secured_db")
        assert cur.adbc_ingest("t", pa.table({"x": [1, 2]}), mode="replace", db_schema_name="secured_db") == 2
        cur.execute("SELECT sum(x) FROM secured_db.t")
        assert cur.fetchall() == [(3,)]
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        assert any(s["db_schema_name"] == "secured_db" for o in objects for s in o["catalog_db_schemas"])


def test_reader_may_query_but_not_change_anything(secured):
    with login(secured, "bob") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM users")
        assert cur.fetchall() == [(50,)]
        with pytest.raises(adbc_driver_manager.Error, match="user 'bob' has role reader, and CREATE DATABASE needs role admin"):
            cur.execute("CREATE DATABASE not_allowed")
        with pytest.raises(adbc_driver_manager.Error, match="has role reader, and ingest needs role admin"):
            cur.adbc_ingest("t2", pa.table({"x": [1]}), mode="create")
        cur.execute("SHOW DATABASES")
        assert ("not_allowed",) not in cur.fetchall()
        # Every other mutating path: SQL INSERT, a prepared INSERT with parameters, and
        # materialized-view DDL; none of them changes anything.
        for sql, params, kind in [
            ("INSERT INTO users SELECT * FROM users LIMIT 1", None, "INSERT INTO"),
            ("INSERT INTO users (user_id) VALUES (?)", (999,), "INSERT INTO"),
            ("CREATE MATERIALIZED VIEW per_user AS SELECT user_id, count(*) AS n FROM events "
             "GROUP BY user_id", None, "CREATE MATERIALIZED VIEW"),
            ("REFRESH MATERIALIZED VIEW per_user", None, "REFRESH MATERIALIZED VIEW"),
            ("DROP MATERIALIZED VIEW per_user", None, "DROP MATERIALIZED VIEW"),
        ]:
            with pytest.raises(adbc_driver_manager.Error,
                               match=f"user 'bob' has role reader, and {kind} needs role admin"):
                cur.execute(sql, parameters=params)
        cur.execute("SELECT count(*) FROM users")
        assert cur.fetchall() == [(50,)]
        cur.execute("SHOW MATERIALIZED VIEWS")
        assert not [r for r in cur.fetchall() if "per_user" in str(r)]


def test_api_token_as_bearer_header(secured):
    header = {adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {secured['token']}"}
    with connect(secured["server"].uri, db_kwargs=tls_kwargs(secured, **header)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM events")
        assert cur.fetchone()[0] > 0
        with pytest.raises(adbc_driver_manager.Error, match="'dashboard-job' has role reader"):
            cur.execute("DROP TABLE users")


def test_raw_pyarrow_flight_with_basic_auth_over_tls(secured):
    client = flight.FlightClient(secured["server"].uri, tls_root_certs=secured["ca"].encode())
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token("alice", "rabbit")
    header = client.authenticate_basic_token("alice", PASSWORDS["alice"])
    assert header[0] == b"authorization" and header[1].startswith(b"Bearer tarn1.")
    options = flight.FlightCallOptions(headers=[header])
    descriptor = flight.FlightDescriptor.for_command(
        flight_sql_command("CommandStatementQuery", "SELECT count(*) AS n FROM users")
    )
    info = client.get_flight_info(descriptor, options)
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    assert table.to_pydict() == {"n": [50]}
    # Without the token the same ticket is refused.
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.do_get(info.endpoints[0].ticket).read_all()


def test_plaintext_client_cannot_talk_to_a_tls_server(secured):
    plain = secured["server"].uri.replace("grpc+tls://", "grpc://")
    # The TLS server never answers a plaintext HTTP/2 preface: the client sees the
    # connection close (gRPC UNAVAILABLE), not a query result or an auth error.
    with pytest.raises(adbc_driver_manager.OperationalError, match=r"(?s)connection error.*Unavailable"):
        with connect(plain, db_kwargs={"username": "alice", "password": PASSWORDS["alice"]}) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")


def test_tampered_ticket_is_refused(server):
    client = flight.FlightClient(server.uri)
    info = client.get_flight_info(flight.FlightDescriptor.for_command(
        flight_sql_command("CommandStatementQuery", "SELECT 1 AS one")
    ))
    raw = info.endpoints[0].ticket.ticket
    # The ticket wraps the signed handle in a protobuf Any; flip a byte of the SQL.
    tampered = raw.replace(b"SELECT 1", b"SELECT 2")
    assert tampered != raw
    with pytest.raises(pa.ArrowInvalid, match="not issued by this server"):
        client.do_get(flight.Ticket(tampered)).read_all()


def test_nodes_sharing_a_secret_file_accept_each_others_tokens_and_tickets(lake, tmp_path):
    """Two servers behind a load balancer share --secret-file: a token one issued and a
    ticket one handed out work on the other. A node with another secret refuses both."""
    made = credentials(tmp_path)
    shared, other = tmp_path / "shared.key", tmp_path / "other.key"

    def node(secret):
        return Server(lake["data_dir"], command=(
            "serve", "--config", str(made["config"]), "--secret-file", str(secret)))

    first, second, stranger = node(shared), node(shared), node(other)
    try:
        client = flight.FlightClient(first.uri)
        header = client.authenticate_basic_token("alice", PASSWORDS["alice"])
        options = flight.FlightCallOptions(headers=[header])
        info = client.get_flight_info(flight.FlightDescriptor.for_command(
            flight_sql_command("CommandStatementQuery", "SELECT count(*) AS n FROM users")), options)
        expected = client.do_get(info.endpoints[0].ticket, options).read_all().to_pydict()
        assert expected == {"n": [50]}

        # The token and the ticket from the first node, spent on the second.
        elsewhere = flight.FlightClient(second.uri)
        assert elsewhere.do_get(info.endpoints[0].ticket, options).read_all().to_pydict() == expected
        again = elsewhere.get_flight_info(flight.FlightDescriptor.for_command(
            flight_sql_command("CommandStatementQuery", "SELECT count(*) AS n FROM users")), options)
        assert elsewhere.do_get(again.endpoints[0].ticket, options).read_all().to_pydict() == expected

        # A node with its own secret accepts neither.
        strange = flight.FlightClient(stranger.uri)
        with pytest.raises(flight.FlightUnauthenticatedError):
            strange.do_get(info.endpoints[0].ticket, options).read_all()
        own = strange.authenticate_basic_token("alice", PASSWORDS["alice"])
        with pytest.raises(pa.ArrowInvalid, match="not issued by this server"):
            strange.do_get(info.endpoints[0].ticket,
                           flight.FlightCallOptions(headers=[own])).read_all()
    finally:
        for server in (first, second, stranger):
            server.stop()


def test_serving_beyond_loopback_without_auth_is_refused(tmp_path):
    out = subprocess.run(
        [tarn_bin(), "--data-dir", str(tmp_path), "serve", "--listen", "0.0.0.0:0"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0
    assert "without authentication" in out.stderr
