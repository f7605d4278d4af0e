"""The synchronous HTTP query API (`POST /v1/query`) through plain HTTP (urllib, as a
function without a Flight SQL driver would call it): each format checked against DuckDB on
the same files (64-bit integers, decimals, timestamps with a zone, dates, nulls, empty
results), parameters, the row limit, and the errors a caller must tell apart: bad SQL, an
unknown table, a bad token, too many queries and a timeout."""

import csv
import http.client
import datetime as dt
import io
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest

from conftest import PASSWORDS, Server, connect, hash_password, tarn
from test_limits import hold_a_place
from test_operations import http_base

ROOT = Path(__file__).resolve().parents[2]
ENDLESS_SUM = "SELECT sum(value) FROM generate_series(1, 100000000000)"


def call(base: str, path: str, body: dict | None = None, accept: str = "application/json",
         token: str | None = None):
    """One HTTP request (a POST when there is a body); (status, content type, body)."""
    request = urllib.request.Request(
        base + path, data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json", "Accept": accept},
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def post(base: str, body: dict, accept: str = "application/json", token: str | None = None):
    return call(base, "/v1/query", body, accept, token)


def get(base: str, path: str, token: str | None = None):
    return call(base, path, token=token)


@pytest.fixture(scope="module")
def typed(tmp_path_factory):
    """A table of the types a caller must get exactly, crawled into a catalog of its own."""
    root = tmp_path_factory.mktemp("typed")
    lake = root / "lake" / "readings"
    lake.mkdir(parents=True)
    table = pa.table({
        "id": pa.array([1, 2, 3, 4], pa.int32()),
        "big": pa.array([2**62 + 1, -(2**53) - 3, None, 7], pa.int64()),
        "amount": pa.array([Decimal("12.3400"), Decimal("-0.0001"), None,
                            Decimal("9999999999999999.9999")], pa.decimal128(20, 4)),
        "seen_at": pa.array([dt.datetime(2024, 1, 5, 13, 0, 1, 250000, tzinfo=dt.timezone.utc),
                        dt.datetime(2024, 2, 29, 23, 59, 59, tzinfo=dt.timezone.utc), None,
                        dt.datetime(1999, 12, 31, 0, 0, 0, tzinfo=dt.timezone.utc)],
                       pa.timestamp("us", tz="UTC")),
        "day": pa.array([dt.date(2024, 1, 5), None, dt.date(2024, 3, 1), dt.date(2000, 1, 1)]),
        "name": pa.array(["a", None, "<script>alert(1)</script>", "d,\"e\"\nf"]),
        "ratio": pa.array([0.5, None, -1.25, 3.0], pa.float64()),
        "ok": pa.array([True, False, None, True]),
    })
    pq.write_table(table, lake / "part-0.parquet")
    catalog = root / "tarn"
    crawled = tarn(catalog, "crawl", str(root / "lake"))
    assert crawled.returncode == 0, crawled.stderr
    s = Server(catalog, command=(
        "serve", "--http-listen", "127.0.0.1:0", "--result-cache-mb", "0",
        "--max-concurrent-queries", "1", "--max-queued-queries", "0",
    ))
    yield {"server": s, "base": http_base(s), "file": lake / "part-0.parquet"}
    s.stop()
    assert s.proc.returncode == 0, "".join(s.log)[-2000:]


QUERY = "SELECT id, big, amount, seen_at, day, name, ratio, ok FROM readings ORDER BY id"


def oracle(typed, sql: str = QUERY) -> pa.Table:
    db = duckdb.connect()
    db.sql(f"CREATE VIEW readings AS SELECT * FROM read_parquet('{typed['file']}')")
    result = db.sql(sql).arrow()
    return result.read_all() if hasattr(result, "read_all") else result


def expected_json_rows(table: pa.Table) -> list:
    """DuckDB's rows as the JSON API promises them: 64-bit integers and decimals as exact
    strings, instants and dates as ISO 8601, the rest as JSON's own values."""
    out = []
    for row in table.to_pylist():
        converted = {}
        for k, v in row.items():
            if v is None:
                converted[k] = None
            elif k in ("big", "amount"):
                converted[k] = str(v)
            elif isinstance(v, (dt.datetime, dt.date)):
                converted[k] = v
            else:
                converted[k] = v
        out.append(converted)
    return out


def parse_json_row(row: dict) -> dict:
    out = dict(row)
    if out.get("seen_at") is not None:
        out["seen_at"] = dt.datetime.fromisoformat(out["seen_at"]).astimezone(dt.timezone.utc)
    if out.get("day") is not None:
        out["day"] = dt.date.fromisoformat(out["day"])
    return out


def test_json_matches_duckdb_exactly(typed):
    status, content_type, body = post(typed["base"], {"sql": QUERY})
    assert status == 200 and content_type == "application/json", body
    answer = json.loads(body)
    assert [c["name"] for c in answer["columns"]] == ["id", "big", "amount", "seen_at", "day", "name", "ratio", "ok"]
    types = {c["name"]: c["type"] for c in answer["columns"]}
    assert types["big"] == "Int64" and types["amount"] == "Decimal128(20, 4)"
    assert types["seen_at"].startswith("Timestamp(") and "UTC" in types["seen_at"]
    assert answer["row_count"] == 4 and answer["truncated"] is False and answer["query_id"]
    assert [parse_json_row(r) for r in answer["rows"]] == expected_json_rows(oracle(typed))


def test_ndjson_csv_and_arrow_match_duckdb(typed):
    expected = oracle(typed)
    status, content_type, body = post(typed["base"], {"sql": QUERY}, "application/x-ndjson")
    assert status == 200 and content_type == "application/x-ndjson"
    rows = [parse_json_row(json.loads(line)) for line in body.decode().splitlines()]
    assert rows == expected_json_rows(expected)

    status, content_type, body = post(typed["base"], {"sql": QUERY}, "text/csv")
    assert status == 200 and content_type.startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(body.decode())))
    assert list(parsed[0].keys()) == expected.column_names
    for got, want in zip(parsed, expected.to_pylist(), strict=True):
        assert int(got["id"]) == want["id"]
        assert got["big"] == ("" if want["big"] is None else str(want["big"]))
        assert got["amount"] == ("" if want["amount"] is None else str(want["amount"]))
        assert got["name"] == (want["name"] or "")

    status, content_type, body = post(typed["base"], {"sql": QUERY}, "application/vnd.apache.arrow.stream")
    assert status == 200 and content_type == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(body).read_all()
    assert table.schema.field("big").type == pa.int64()
    assert table.schema.field("amount").type == pa.decimal128(20, 4)
    assert table.to_pylist() == expected.to_pylist()


def test_empty_results_keep_their_columns(typed):
    sql = "SELECT id, amount FROM readings WHERE id > 100"
    answer = json.loads(post(typed["base"], {"sql": sql})[2])
    assert [c["name"] for c in answer["columns"]] == ["id", "amount"]
    assert answer["rows"] == [] and answer["row_count"] == 0
    assert post(typed["base"], {"sql": sql}, "text/csv")[2].decode().strip() == "id,amount"
    table = pa.ipc.open_stream(post(typed["base"], {"sql": sql}, "application/vnd.apache.arrow.stream")[2]).read_all()
    assert table.num_rows == 0 and table.column_names == ["id", "amount"]


def test_parameters_and_the_row_limit(typed):
    answer = json.loads(post(typed["base"], {
        "sql": "SELECT id, name FROM readings WHERE id >= ? AND name IS NOT NULL ORDER BY id",
        "parameters": [2],
    })[2])
    assert answer["rows"] == [{"id": 3, "name": "<script>alert(1)</script>"}, {"id": 4, "name": "d,\"e\"\nf"}]
    limited = json.loads(post(typed["base"], {"sql": QUERY, "max_rows": 3})[2])
    assert limited["row_count"] == 3 and limited["truncated"] is True
    assert [r["id"] for r in limited["rows"]] == [1, 2, 3]
    status, _, body = post(typed["base"], {"sql": QUERY, "max_rows": 10**9})
    assert status == 400 and "--http-max-rows" in json.loads(body)["error"]["message"]
    # HTTP callers are listed among the server's sessions, by their address.
    answer = json.loads(post(typed["base"], {
        "sql": "SELECT client_address, calls FROM system.sessions WHERE front_door = 'http'"})[2])
    assert answer["rows"] and all(r["client_address"].startswith("127.0.0.1:") for r in answer["rows"])


def test_session_settings_in_the_request(typed):
    answer = json.loads(post(typed["base"], {
        "sql": "SELECT arrow_typeof(now()) AS t, CAST(seen_at AS TIMESTAMP WITH TIME ZONE) AS s "
               "FROM readings WHERE id = 1",
        "settings": {"time_zone": "Asia/Tokyo", "tarn.reorder_joins": False, "target_partitions": 1},
    })[2])
    assert answer["rows"][0]["t"] == 'Timestamp(ns, "Asia/Tokyo")', answer
    # The same instant, given in the request's zone (13:00:01.25 UTC is 22:00:01.25 in Tokyo).
    shown = dt.datetime.fromisoformat(answer["rows"][0]["s"])
    assert shown.utcoffset() == dt.timedelta(hours=9)
    assert shown == dt.datetime(2024, 1, 5, 13, 0, 1, 250000, tzinfo=dt.timezone.utc)
    # A request has no session to keep: the next one is in the server's zone.
    plain = json.loads(post(typed["base"], {"sql": "SHOW time_zone"})[2])
    assert plain["rows"][0]["value"] == "UTC"
    status, _, body = post(typed["base"], {"sql": "SET TIME ZONE 'Asia/Tokyo'"})
    assert status == 400 and '"settings"' in json.loads(body)["error"]["message"]
    status, _, body = post(typed["base"], {"sql": "SELECT 1", "settings": {"datafusion.runtime.memory_limit": "1T"}})
    message = json.loads(body)["error"]["message"]
    assert status == 400 and "not a setting a session may change" in message and "server's" in message


def test_the_catalog_over_http(typed):
    status, _, body = get(typed["base"], "/v1/databases")
    assert status == 200 and json.loads(body)["databases"] == [{"name": "default", "tables": 1}]
    tables = json.loads(get(typed["base"], "/v1/tables/default")[2])["tables"]
    size = typed["file"].stat().st_size
    assert [(t["name"], t["format"], t["files"], t["rows"], t["bytes"]) for t in tables] == [
        ("readings", "parquet", 1, 4, size)]
    described = json.loads(get(typed["base"], "/v1/tables/default/readings")[2])
    assert [(c["name"], c["type"]) for c in described["columns"]][:3] == [
        ("id", "Int32"), ("big", "Int64"), ("amount", "Decimal128(20, 4)")]
    assert described["schema_history"][0]["version"] == 1
    status, error = error_of(get(typed["base"], "/v1/tables/default/nope"))
    assert status == 404 and "default.nope" in error["message"]
    status, error = error_of(get(typed["base"], "/v1/tables/nowhere"))
    assert status == 404 and "nowhere" in error["message"]


def error_of(response):
    status, content_type, body = response
    assert content_type == "application/json", body
    return status, json.loads(body)["error"]


def test_errors_have_their_status_and_say_what_to_fix(typed):
    status, error = error_of(post(typed["base"], {"sql": "SELEC 1"}))
    assert (status, error["code"]) == (400, "SQL_ERROR") and "SELEC" in error["message"]
    status, error = error_of(post(typed["base"], {"sql": "SELECT * FROM no_such_table"}))
    assert status in (400, 404) and "no_such_table" in error["message"]
    status, error = error_of(post(typed["base"], {"query": "SELECT 1"}))
    assert status == 400 and "sql" in error["message"]
    status, error = error_of(post(typed["base"], {"sql": "SELECT 1"}, accept="image/png"))
    assert status == 400 and "application/json" in error["message"]

    # Too many queries: the only place is held by a Flight SQL client.
    conn, cur, reader = hold_a_place(typed["server"].uri, "SELECT r.id, g.value FROM readings r "
                                     "CROSS JOIN generate_series(1, 1000000000) g")
    try:
        status, error = error_of(post(typed["base"], {"sql": "SELECT count(*) FROM readings"}))
        assert (status, error["code"]) == (429, "TOO_MANY_QUERIES"), error
    finally:
        reader.close()
        cur.close()
        conn.close()
    # The history has the HTTP statements, under their front door.
    with connect(typed["server"].uri) as c, c.cursor() as q:
        q.execute("SELECT state FROM system.queries WHERE front_door = 'http' "
                  "AND query = 'SELECT count(*) FROM readings'")
        assert ("refused",) in q.fetchall()


def test_a_query_past_the_time_limit_is_a_timeout(tmp_path):
    s = Server(tmp_path, command=("serve", "--http-listen", "127.0.0.1:0", "--query-timeout", "1s"))
    try:
        status, error = error_of(post(http_base(s), {"sql": ENDLESS_SUM}))
        assert (status, error["code"]) == (504, "TIMEOUT") and "query-timeout" in error["message"]
    finally:
        s.stop()


def test_callers_authenticate_as_over_flight_sql(tmp_path):
    made = tarn(tmp_path, "auth", "new-token")
    token = made.stdout.split("token:")[1].split()[0]
    sha_line = next(line for line in made.stdout.splitlines() if line.startswith("sha256"))
    config = tmp_path / "tarn.toml"
    config.write_text(
        f'[[users]]\nname = "bob"\npassword_hash = "{hash_password(PASSWORDS["bob"])}"\nrole = "reader"\n\n'
        f'[[tokens]]\nname = "lambda"\n{sha_line}\nrole = "reader"\n'
    )
    s = Server(tmp_path, command=("serve", "--config", str(config), "--http-listen", "127.0.0.1:0"))
    try:
        base = http_base(s)
        status, error = error_of(post(base, {"sql": "SELECT 1 AS one"}))
        assert status == 401 and error["code"] == "UNAUTHENTICATED"
        assert error_of(get(base, "/v1/databases"))[0] == 401
        assert get(base, "/v1/databases", token=token)[0] == 200
        status, error = error_of(post(base, {"sql": "SELECT 1 AS one"}, token="not-a-token"))
        assert status == 401
        status, _, body = post(base, {"sql": "SELECT 1 AS one"}, token=token)
        # A 64-bit integer is a string in JSON (exact in every parser).
        assert status == 200 and json.loads(body)["rows"] == [{"one": "1"}]
        # A reader cannot run DDL.
        status, error = error_of(post(base, {"sql": "CREATE DATABASE nope"}, token=token))
        assert status == 403 and "admin" in error["message"]
    finally:
        s.stop()


def test_the_readme_example_for_a_function_runs_as_written(typed):
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"<!-- http-example -->\s*```python\n(.*?)```", readme, re.S)
    assert example, "no marked Python example in the README"
    out = subprocess.run([sys.executable, "-c", example.group(1)], capture_output=True, text=True,
                         env={"TARN_URL": typed["base"], "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"tables": 1}


def test_tls_security_headers_and_cross_site_refusal(tmp_path):
    import ssl
    from conftest import credentials
    made = credentials(tmp_path)
    s = Server(tmp_path, command=(
        "serve", "--config", str(made["config"]), "--tls-cert", str(made["cert"]),
        "--tls-key", str(made["key"]), "--http-listen", "127.0.0.1:0"))
    try:
        base = http_base(s)
        assert base.startswith("https://"), base
        trusted = ssl.create_default_context(cafile=str(made["ca"]))

        def send(path, body=None, headers=None, context=trusted, url=None):
            request = urllib.request.Request(
                (url or base) + path, data=None if body is None else json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {made['token']}", **(headers or {})})
            try:
                with urllib.request.urlopen(request, timeout=60, context=context) as r:
                    return r.status, r.headers, r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.headers, e.read()

        status, headers, body = send("/v1/query", {"sql": "SELECT 41 + 1 AS answer"})
        assert status == 200 and json.loads(body)["rows"] == [{"answer": "42"}]
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Strict-Transport-Security"].startswith("max-age=")
        # Errors carry them too, and challenge for a bearer token only (no browser prompt).
        status, headers, _ = send("/v1/databases", headers={"Authorization": "Bearer nope"})
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert "Basic" not in headers["WWW-Authenticate"]
        assert headers["Content-Security-Policy"] == csp
        # A client that does not trust the certificate, or speaks plain HTTP, gets nothing.
        with pytest.raises(urllib.error.URLError):
            send("/healthz", context=ssl.create_default_context())
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            send("/healthz", url=base.replace("https://", "http://"))

        # A browser's cross-site request that would change something is refused…
        for cross in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            status, _, body = send("/v1/queries", {"sql": "SELECT 1"}, headers=cross)
            assert status == 403 and b"cross-site" in body, (cross, body)
        # …and the same origin's is not.
        status, _, body = send("/v1/query", {"sql": "SELECT 1 AS one"},
                               headers={"Origin": base, "Sec-Fetch-Site": "same-origin"})
        assert status == 200, body
        status, _, body = send("/v1/query", {"sql": "SELECT 1 AS one"}, headers={"Origin": base})
        assert status == 200, body
    finally:
        s.stop()
