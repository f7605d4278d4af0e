"""The `tarn` command line: demo, sql output formats, errors."""

import csv
import io
import json
import re
import socket
import urllib.request

from conftest import Server, connect, tarn


def test_demo_writes_crawls_queries_and_is_incremental(tmp_path):
    first = tarn(tmp_path, "demo", "--no-serve", "--events", "20000")
    assert first.returncode == 0, first.stderr
    assert "tables created:   default.events, default.scores, default.users" in first.stdout
    assert "problems: none" in first.stdout
    for title in ("date_trunc", "date_bin", "join", "window function"):
        assert title in first.stdout
    # The headline: a materialized view answers the dashboard question, with the same rows.
    assert "Materialized view events_hourly" in first.stdout
    assert "from the view" in first.stdout and "the same answer: true" in first.stdout
    assert "EXPLAIN: used default.events_hourly" in first.stdout, first.stdout
    second = tarn(tmp_path, "demo", "--no-serve", "--events", "20000")
    assert second.returncode == 0, second.stderr
    assert "tables unchanged: default.events, default.scores, default.users" in second.stdout
    assert "read 0 footers" in second.stdout

    out = tarn(tmp_path, "sql", "SELECT count(*) AS n FROM events", "--format", "json")
    assert json.loads(out.stdout) == {"n": 20000}


def test_demo_serves_flight_sql_and_the_console(tmp_path):
    server = Server(tmp_path, command=("demo", "--events", "5000", "--http-listen", "127.0.0.1:0"))
    try:
        assert any("adbc_driver_flightsql" in line for line in server.output)
        with connect(server.uri) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM events")
            assert cur.fetchone() == (5000,)
        # It prints the console's address, which serves the page and the API.
        console = next(re.search(r"Console:\s+(http://\S+)/", line).group(1)
                       for line in server.output if "Console:" in line)
        with urllib.request.urlopen(console + "/", timeout=30) as page:
            assert "<title>Tarn console</title>" in page.read().decode()
        request = urllib.request.Request(console + "/v1/query", data=json.dumps(
            {"sql": "SELECT count(*) AS n FROM events"}).encode())
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert json.load(answer)["rows"] == [{"n": "5000"}]
    finally:
        server.stop()
    assert server.proc.returncode == 0


def test_sql_formats_and_errors(lake):
    out = tarn(lake["data_dir"], "sql", "SELECT user_id, name FROM users ORDER BY user_id LIMIT 2",
               "--format", "csv")
    assert out.returncode == 0, out.stderr
    assert list(csv.reader(io.StringIO(out.stdout))) == [
        ["user_id", "name"], ["1", "learner-001"], ["2", "learner-002"],
    ]
    table = tarn(lake["data_dir"], "sql", "SELECT name FROM users WHERE user_id = 3")
    assert "learner-003" in table.stdout and "+--" in table.stdout

    bad = tarn(lake["data_dir"], "sql", "SELECT * FROM nowhere")
    assert bad.returncode == 1
    assert "table 'default.nowhere' not found" in bad.stderr

    bad = tarn(lake["data_dir"], "crawl", str(lake["root"] / "missing"))
    assert bad.returncode == 1
    assert "missing" in bad.stderr

    # A server that does not answer is unavailable, not a bad argument.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bad = tarn(lake["data_dir"], "tables", "--server", f"grpc://127.0.0.1:{port}")
    assert bad.returncode == 1
    assert f"unavailable: cannot reach Tarn at grpc://127.0.0.1:{port}" in bad.stderr, bad.stderr
