"""Athena-style asynchronous executions over plain HTTP (urllib): start a query, poll its
state, page through its stored results (checked against DuckDB), cancel one, read results
after a restart, and the errors a caller must tell apart."""

import datetime as dt
import io
import json
import urllib.error
import urllib.request
from decimal import Decimal

import duckdb
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest

from conftest import PASSWORDS, Server, connect, hash_password, tarn
from test_http_api import ENDLESS_SUM
from test_limits import hold_a_place
from test_operations import http_base

ROWS = 2_345


def call(base: str, path: str, method: str = "GET", body: dict | None = None,
         accept: str = "application/json", token: str | None = None):
    """One HTTP request; (status, headers, body)."""
    request = urllib.request.Request(
        base + path, data=None if body is None else json.dumps(body).encode(), method=method,
        headers={"Content-Type": "application/json", "Accept": accept},
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def start(base: str, body: dict, token: str | None = None) -> str:
    status, _, answer = call(base, "/v1/queries", "POST", body, token=token)
    assert status == 202, answer
    started = json.loads(answer)
    assert started["state"] == "QUEUED"
    return started["query_id"]


def state(base: str, query_id: str, wait: str = "", token: str | None = None) -> dict:
    path = f"/v1/queries/{query_id}" + (f"?wait={wait}" if wait else "")
    status, _, answer = call(base, path, token=token)
    assert status == 200, answer
    return json.loads(answer)


def ended(base: str, query_id: str, token: str | None = None) -> dict:
    """The execution once it has ended (long polls, as a function would)."""
    for _ in range(10):
        shown = state(base, query_id, wait="30s", token=token)
        if shown["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return shown
    raise AssertionError(f"query {query_id} did not end: {shown}")


def pages(base: str, query_id: str, page_size: int, token: str | None = None) -> list:
    """Every page's JSON, following next_page_token."""
    out, token_param = [], ""
    while True:
        status, _, answer = call(
            base, f"/v1/queries/{query_id}/results?page_size={page_size}{token_param}", token=token)
        assert status == 200, answer
        page = json.loads(answer)
        out.append(page)
        if page["next_page_token"] is None:
            return out
        token_param = f"&page_token={page['next_page_token']}"


def error_of(response):
    status, headers, body = response
    assert headers.get("Content-Type") == "application/json", body
    return status, json.loads(body)["error"]


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """A table with 64-bit integers, decimals, instants with a zone and nulls, crawled."""
    root = tmp_path_factory.mktemp("async")
    folder = root / "lake" / "orders"
    folder.mkdir(parents=True)
    n = ROWS
    table = pa.table({
        "id": pa.array(range(n), pa.int64()),
        "amount": pa.array([None if i % 97 == 0 else Decimal(i * 37 % 100_003) / 100
                            for i in range(n)], pa.decimal128(12, 2)),
        "placed_at": pa.array([dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=i)
                        for i in range(n)], pa.timestamp("us", tz="UTC")),
        "name": pa.array([None if i % 13 == 0 else f"n{i % 50}" for i in range(n)]),
    })
    pq.write_table(table, folder / "part-0.parquet", row_group_size=500)
    data = root / "tarn"
    crawled = tarn(data, "crawl", str(root / "lake"))
    assert crawled.returncode == 0, crawled.stderr
    return {"data": data, "file": folder / "part-0.parquet"}


def serve(data, *extra, env: dict | None = None) -> Server:
    return Server(data, command=("serve", "--http-listen", "127.0.0.1:0", "--result-cache-mb", "0",
                                 *extra), env=env)


QUERY = "SELECT id, amount, placed_at, name FROM orders WHERE id % 3 <> 1 ORDER BY id"


def oracle(lake) -> pa.Table:
    db = duckdb.connect()
    db.sql(f"CREATE VIEW orders AS SELECT * FROM read_parquet('{lake['file']}')")
    result = db.sql(QUERY).arrow()
    return result.read_all() if hasattr(result, "read_all") else result


def as_json(table: pa.Table) -> list:
    """Rows as the JSON API writes them: 64-bit integers and decimals as exact strings."""
    rows = []
    for row in table.to_pylist():
        rows.append({
            "id": str(row["id"]),
            "amount": None if row["amount"] is None else str(row["amount"]),
            "placed_at": row["placed_at"],
            "name": row["name"],
        })
    return rows


def test_start_poll_and_page_through_results_that_match_duckdb(lake):
    s = serve(lake["data"])
    try:
        base = http_base(s)
        query_id = start(base, {"sql": QUERY})
        shown = ended(base, query_id)
        expected = oracle(lake)
        assert shown["state"] == "SUCCEEDED", shown
        assert shown["result"]["row_count"] == expected.num_rows
        # Statistics come from the query history.
        stats = shown["statistics"]
        assert stats["rows"] == expected.num_rows and stats["bytes_scanned"] > 0, stats
        assert shown["sql"] == QUERY and shown["completed_at"] >= shown["submitted_at"]

        got = pages(base, query_id, page_size=600)
        assert [p["row_count"] for p in got] == [600, 600, 363]
        rows = [r for p in got for r in p["rows"]]
        for r in rows:
            r["placed_at"] = dt.datetime.fromisoformat(r["placed_at"]).astimezone(dt.timezone.utc)
        assert rows == as_json(expected)
        assert got[0]["columns"][1]["type"] == "Decimal128(12, 2)"

        # Arrow IPC pages keep the exact types; the next token is a header.
        status, headers, body = call(base, f"/v1/queries/{query_id}/results?page_size=1000",
                                     accept="application/vnd.apache.arrow.stream")
        assert status == 200
        first = pa.ipc.open_stream(io.BytesIO(body)).read_all()
        status, headers2, body2 = call(
            base, f"/v1/queries/{query_id}/results?page_size=1000"
                  f"&page_token={headers['Tarn-Next-Page-Token']}",
            accept="application/vnd.apache.arrow.stream")
        second = pa.ipc.open_stream(io.BytesIO(body2)).read_all()
        assert first.num_rows == 1000 and headers2["Tarn-Next-Page-Token"] is None
        combined = pa.concat_tables([first, second])
        assert combined.to_pylist() == expected.to_pylist()
        assert combined.schema.field("amount").type == pa.decimal128(12, 2)
        assert combined.schema.field("placed_at").type == pa.timestamp("us", tz="UTC")
        # The stored result is a Parquet file in the warehouse, where the state says.
        location = shown["result"]["location"]
        assert location.startswith("file://") and location.endswith("/result.parquet")
        stored = pq.read_table(location.removeprefix("file://"))
        assert stored.to_pylist() == expected.to_pylist()

        # An empty result keeps its columns.
        empty = start(base, {"sql": "SELECT id, name FROM orders WHERE id < 0"})
        shown = ended(base, empty)
        assert shown["state"] == "SUCCEEDED", shown
        (page,) = pages(base, empty, page_size=10)
        assert page["rows"] == [] and [c["name"] for c in page["columns"]] == ["id", "name"]
    finally:
        s.stop()


def test_cancel_a_running_query_and_its_results_are_refused(lake):
    s = serve(lake["data"])
    try:
        base = http_base(s)
        query_id = start(base, {"sql": ENDLESS_SUM})
        assert state(base, query_id)["state"] == "RUNNING"
        status, _, answer = call(base, f"/v1/queries/{query_id}", "DELETE")
        assert status == 200 and json.loads(answer)["state"] == "CANCELLED", answer
        assert state(base, query_id)["state"] == "CANCELLED"
        status, error = error_of(call(base, f"/v1/queries/{query_id}/results"))
        assert status == 409 and "CANCELLED" in error["message"]
        # Cancelling it again leaves it as it is.
        status, _, answer = call(base, f"/v1/queries/{query_id}", "DELETE")
        assert status == 200 and json.loads(answer)["state"] == "CANCELLED"
        # The history says it was cancelled, and the server goes on.
        with connect(s.uri) as c, c.cursor() as q:
            q.execute(f"SELECT state FROM system.queries WHERE query_id = '{query_id}'")
            assert q.fetchall() == [("cancelled",)]
            q.execute("SELECT count(*) FROM orders")
            assert q.fetchall() == [(ROWS,)]
    finally:
        s.stop()


def test_results_are_pageable_after_a_restart_and_removed_after_retention(lake, tmp_path):
    s = serve(lake["data"])
    try:
        base = http_base(s)
        done = start(base, {"sql": QUERY})
        assert ended(base, done)["state"] == "SUCCEEDED"
        before = pages(base, done, page_size=1000)
        unfinished = start(base, {"sql": ENDLESS_SUM})
    finally:
        s.stop()
    s = serve(lake["data"])
    try:
        base = http_base(s)
        assert state(base, done)["state"] == "SUCCEEDED"
        assert pages(base, done, page_size=1000) == before
        # A query the server was running when it stopped has failed, and says why.
        shown = state(base, unfinished)
        assert shown["state"] == "FAILED" and shown["error"]["code"] == "SERVER_STOPPED", shown
    finally:
        s.stop()

    # With no retention, a result is gone as soon as it is made, and the next start
    # removes its files.
    s = serve(lake["data"], "--http-result-retention", "0s")
    try:
        base = http_base(s)
        gone = start(base, {"sql": "SELECT 1 AS one"})
        status, error = error_of(call(base, f"/v1/queries/{gone}?wait=10s"))
        assert status == 404 and "kept for 0s" in error["message"]
    finally:
        s.stop()
    s = serve(lake["data"], "--http-result-retention", "0s", env={"TARN_LOG": "info"})
    try:
        results = lake["data"] / "warehouse" / "_query_results"
        s.wait_for_log(r"removed expired query results")
        # Each execution keeps the retention it started with.
        assert not (results / gone).exists() and (results / done / "result.parquet").exists()
    finally:
        s.stop()


def test_errors_say_what_to_fix(lake):
    s = serve(lake["data"], "--max-concurrent-queries", "1", "--max-queued-queries", "0")
    try:
        base = http_base(s)
        # Planning errors are answered at once.
        status, error = error_of(call(base, "/v1/queries", "POST", {"sql": "SELEC 1"}))
        assert (status, error["code"]) == (400, "SQL_ERROR")
        status, error = error_of(call(base, "/v1/queries", "POST",
                                      {"sql": "SELECT * FROM no_such_table"}))
        assert status in (400, 404) and "no_such_table" in error["message"]
        status, error = error_of(call(base, "/v1/queries", "POST",
                                      {"sql": "SELECT 1", "max_rows": 5}))
        assert status == 400 and "page_size" in error["message"]
        status, error = error_of(call(base, "/v1/queries/3b4e0a63-1c5a-4a55-9d0c-4c1d2b7a9f00"))
        assert (status, error["code"]) == (404, "NOT_FOUND")
        status, error = error_of(call(base, "/v1/queries/../../etc"))
        assert status in (400, 404)

        query_id = start(base, {"sql": "SELECT id FROM orders"})
        assert ended(base, query_id)["state"] == "SUCCEEDED"
        for bad in ("page_size=0", "page_size=99999999", "page_token=abc",
                    f"page_token={ROWS + 1}"):
            status, error = error_of(call(base, f"/v1/queries/{query_id}/results?{bad}"))
            assert status == 400, (bad, error)
        status, error = error_of(call(base, f"/v1/queries/{query_id}?wait=5m"))
        assert status == 400 and "wait" in error["message"]

        # A time limit from the request's settings: the execution fails with TIMEOUT.
        timed = start(base, {"sql": ENDLESS_SUM, "settings": {"query_timeout": "1s"}})
        shown = ended(base, timed)
        assert shown["state"] == "FAILED" and shown["error"]["code"] == "TIMEOUT", shown
        status, error = error_of(call(base, f"/v1/queries/{timed}/results"))
        assert status == 409 and "timeout" in error["message"]

        # Too many queries: the only place is held by a Flight SQL client.
        conn, cur, reader = hold_a_place(s.uri, "SELECT o.id, g.value FROM orders o "
                                         "CROSS JOIN generate_series(1, 1000000000) g")
        try:
            status, error = error_of(call(base, "/v1/queries", "POST",
                                          {"sql": "SELECT count(*) FROM orders"}))
            assert (status, error["code"]) == (429, "TOO_MANY_QUERIES"), error
        finally:
            reader.close()
            cur.close()
            conn.close()
    finally:
        s.stop()


USERS = {**PASSWORDS, "carol": "singer"}


def test_an_execution_is_visible_only_to_its_user_and_admins(lake, tmp_path):
    config = tmp_path / "tarn.toml"
    config.write_text("\n".join(
        f'[[users]]\nname = "{name}"\npassword_hash = "{hash_password(USERS[name])}"\n'
        f'role = "{role}"\n'
        for name, role in (("alice", "admin"), ("bob", "reader"), ("carol", "reader"))))
    s = serve(lake["data"], "--config", str(config))
    try:
        base = http_base(s)

        def as_user(name, path, method="GET", body=None):
            import base64
            request = urllib.request.Request(
                base + path, method=method,
                data=None if body is None else json.dumps(body).encode(),
                headers={"Authorization": "Basic " + base64.b64encode(
                    f"{name}:{USERS[name]}".encode()).decode()})
            try:
                with urllib.request.urlopen(request, timeout=60) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        status, started = as_user("bob", "/v1/queries", "POST", {"sql": "SELECT count(*) AS n FROM orders"})
        assert status == 202, started
        query_id = started["query_id"]
        status, shown = as_user("bob", f"/v1/queries/{query_id}?wait=30s")
        assert status == 200 and shown["state"] == "SUCCEEDED" and shown["user"] == "bob"
        assert as_user("carol", f"/v1/queries/{query_id}")[0] == 404
        assert as_user("carol", f"/v1/queries/{query_id}/results")[0] == 404
        assert as_user("carol", f"/v1/queries/{query_id}", "DELETE")[0] == 404
        status, page = as_user("alice", f"/v1/queries/{query_id}/results")
        assert status == 200 and page["rows"] == [{"n": str(ROWS)}]
        # DDL needs an admin: refused at once.
        status, error = as_user("bob", "/v1/queries", "POST", {"sql": "CREATE DATABASE nope"})
        assert status == 403 and "admin" in error["error"]["message"], error
        # Without credentials, nothing.
        status, error = error_of(call(base, f"/v1/queries/{query_id}"))
        assert status == 401 and error["code"] == "UNAUTHENTICATED"
    finally:
        s.stop()


def test_the_openapi_document_describes_every_route(lake):
    s = serve(lake["data"])
    try:
        base = http_base(s)
        status, headers, body = call(base, "/v1/openapi.json")
        assert status == 200 and headers.get("Content-Type") == "application/json"
        doc = json.loads(body)
        assert doc["openapi"].startswith("3.")
        assert {"bearer", "basic"} <= set(doc["components"]["securitySchemes"])
        expected = {("/v1/query", "post"), ("/v1/queries", "post"), ("/v1/queries/{id}", "get"),
                    ("/v1/queries/{id}", "delete"), ("/v1/queries/{id}/results", "get"),
                    ("/v1/databases", "get"), ("/v1/tables/{db}", "get"),
                    ("/v1/tables/{db}/{table}", "get"), ("/v1/openapi.json", "get"),
                    ("/v1/crawlers", "get"), ("/v1/session", "get"), ("/v1/session", "post"),
                    ("/v1/streams/{db}/{table}/records", "post"),
                    ("/metrics", "get"), ("/healthz", "get"), ("/readyz", "get")}
        documented = {(path, method) for path, methods in doc["paths"].items() for method in methods}
        assert documented == expected
        # Every documented route is served: none answers the API's "no such route".
        for path, method in sorted(documented):
            concrete = (path.replace("{id}", "3b4e0a63-1c5a-4a55-9d0c-4c1d2b7a9f00")
                        .replace("{db}", "default").replace("{table}", "orders"))
            body = {"sql": "SELECT 1"} if method == "post" else None
            status, _, answer = call(base, concrete, method.upper(), body)
            assert b"the HTTP API has no" not in answer, (path, method, status, answer)
        # A route it does not list answers a JSON error that points to the document.
        status, error = error_of(call(base, "/v1/nothing"))
        assert status == 404 and "/v1/openapi.json" in error["message"]
        # The schemas the executions answer with are in it.
        schemas = doc["components"]["schemas"]
        assert {"ExecutionView", "QueryRequest", "QueryResult", "ErrorBody"} <= set(schemas)
        assert "SUCCEEDED" in schemas["ExecutionState"]["enum"]
    finally:
        s.stop()
