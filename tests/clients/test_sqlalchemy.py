"""`flightsql-dbapi` (DB-API 2 and its SQLAlchemy dialect) against Tarn: plaintext on
loopback, and with a password over TLS."""

import pytest
import sqlalchemy
from flightsql import FlightSQLClient, connect as dbapi_connect

from conftest import PASSWORDS
from test_duckdb_oracle import duck  # noqa: F401 - the DuckDB oracle fixture


def host_port(uri: str) -> tuple[str, int]:
    host, port = uri.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


def test_dbapi_query_and_reflection(server, duck):  # noqa: F811
    host, port = host_port(server.uri)
    client = FlightSQLClient(host=host, port=port, insecure=True)
    cur = dbapi_connect(client).cursor()
    sql = "SELECT u.country, count(*) AS n FROM events e JOIN users u USING (user_id) GROUP BY u.country ORDER BY u.country"
    cur.execute(sql)
    ours = [tuple(r) for r in cur.fetchall()]
    # DuckDB over the same files is the oracle.
    assert ours == duck.execute(sql).fetchall()
    assert len(ours) > 1

    engine = sqlalchemy.create_engine(f"datafusion://{host}:{port}?insecure=true")
    with engine.connect() as c:
        rows = c.execute(sqlalchemy.text("SELECT name FROM users WHERE user_id = 7")).fetchall()
        assert rows == [("learner-007",)]
    inspector = sqlalchemy.inspect(engine)
    assert "default" in inspector.get_schema_names()
    assert {"events", "users"} <= set(inspector.get_table_names(schema="default"))
    columns = [c["name"] for c in inspector.get_columns("users", schema="default")]
    assert columns == ["user_id", "name", "country", "plan"]


def test_sqlalchemy_with_password_over_tls(secured):
    host, port = host_port(secured["server"].uri)
    client = FlightSQLClient(
        host=host, port=port, user="bob", password=PASSWORDS["bob"],
        tls_root_certs=secured["ca"].encode(),
    )
    cur = dbapi_connect(client).cursor()
    cur.execute("SELECT count(*) AS n FROM users")
    assert [tuple(r) for r in cur.fetchall()] == [(50,)]

    # The URL form cannot carry a CA file; verification is left to the client's own store.
    url = f"datafusion://bob:{PASSWORDS['bob']}@{host}:{port}?disable_server_verification=true"
    with sqlalchemy.create_engine(url).connect() as c:
        assert c.execute(sqlalchemy.text("SELECT count(*) FROM users")).fetchall() == [(50,)]
        with pytest.raises(Exception, match="user 'bob' has role reader, and CREATE DATABASE needs role admin"):
            c.execute(sqlalchemy.text("CREATE DATABASE nope"))

    wrong = f"datafusion://bob:nope@{host}:{port}?disable_server_verification=true"
    with pytest.raises(Exception, match="(?i)wrong user name or password|unauthenticated"):
        with sqlalchemy.create_engine(wrong).connect() as c:
            c.execute(sqlalchemy.text("SELECT 1")).fetchall()
