"""Running Tarn as a shared service, as an operator sees it: the HTTP operations listener
(`/metrics` read with Prometheus' own parser, `/healthz`, `/readyz`) and a graceful
shutdown (unready first, running queries finish within the grace period, the rest are
cancelled)."""

import re
import signal
import threading
import time
import urllib.error
import urllib.request

import adbc_driver_manager
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import Server, connect
from test_limits import ENDLESS, events_rows, hold_a_place


def http_base(server) -> str:
    for line in server.output:
        m = re.search(r"operations listening on (https?://\S+)", line)
        if m:
            return m.group(1)
    raise AssertionError(f"no operations line in {server.output}")


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def samples(base: str) -> dict:
    status, text = get(base + "/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + "".join(f"[{k}={v}]" for k, v in sorted(s.labels.items()))
            out[key] = s.value
    return out


def started(lake, *flags) -> Server:
    return Server(lake["data_dir"], command=(
        "serve", "--http-listen", "127.0.0.1:0", "--result-cache-mb", "0", *flags,
    ))


def test_metrics_move_with_the_queries_and_health_endpoints_answer(lake):
    s = started(lake)
    try:
        base = http_base(s)
        assert get(base + "/healthz") == (200, "ok\n")
        assert get(base + "/readyz") == (200, "ready\n")
        before = samples(base)
        with connect(s.uri) as c, c.cursor() as q:
            for _ in range(3):
                q.execute("SELECT count(*) FROM events")
                assert q.fetchall() == [(events_rows(lake),)]
            q.execute("SELECT user_id FROM users")
            users = len(q.fetchall())
            with pytest.raises(adbc_driver_manager.Error):
                q.execute("SELECT CAST(kind AS INT) FROM events")
                q.fetchall()
        after = samples(base)
        finished = "tarn_queries_total[outcome=finished]"
        failed = "tarn_queries_total[outcome=failed]"
        assert after[finished] - before.get(finished, 0) == 4
        assert after[failed] - before.get(failed, 0) == 1
        assert after["tarn_rows_returned_total"] - before.get("tarn_rows_returned_total", 0) == 3 + users
        assert after["tarn_query_duration_seconds_count"] - before.get("tarn_query_duration_seconds_count", 0) == 5
        # The users query read its files (the counts come from the catalog's statistics).
        assert after["tarn_bytes_scanned_total"] > before.get("tarn_bytes_scanned_total", 0)
        assert after["tarn_files_scanned_total"] > before.get("tarn_files_scanned_total", 0)
        for family in ("crawl_duration_seconds", "rollup_refresh_duration_seconds",
                       "catalog_commit_duration_seconds"):
            assert f"tarn_{family}_count" in after, family
        assert after["tarn_queries_running"] == 0
        assert after["tarn_queries_queued"] == 0
        assert "tarn_memory_pool_reserved_bytes" in after
    finally:
        s.stop()
    assert s.proc.returncode == 0


def test_a_cancelled_query_gives_its_memory_back(lake):
    """A query holding memory (a hash aggregation over a billion rows) is cancelled
    (Flight SQL's CancelFlightInfo): the pool's reservation returns to zero and nothing is
    left running."""
    import pyarrow.flight as flight

    from conftest import _varint, flight_sql_command

    s = started(lake)
    try:
        base = http_base(s)
        client = flight.FlightClient(s.uri)
        sql = ("SELECT v % 1000003 AS k, count(*) AS n FROM generate_series(1, 4000000000) "
               "AS t(v) GROUP BY k ORDER BY n DESC")
        info = client.get_flight_info(flight.FlightDescriptor.for_command(
            flight_sql_command("CommandStatementQuery", sql)))
        outcome = {}

        def run():
            try:
                reader = client.do_get(info.endpoints[0].ticket)
                while True:
                    reader.read_chunk()
            except StopIteration:
                outcome["result"] = "finished"
            except flight.FlightError as e:
                outcome["error"] = e

        worker = threading.Thread(target=run)
        worker.start()
        reserved = "tarn_memory_pool_reserved_bytes"
        deadline = time.monotonic() + 60
        while samples(base)[reserved] < 1 << 20:
            assert time.monotonic() < deadline, "the aggregation never reserved memory"
        body = info.serialize()
        request = b"\x0a" + _varint(len(body)) + body  # CancelFlightInfoRequest { info }
        results = list(flight.FlightClient(s.uri).do_action(flight.Action("CancelFlightInfo", request)))
        assert results[0].body.to_pybytes() == b"\x08\x01"  # status: CANCELLED
        worker.join(60)
        assert not worker.is_alive()
        assert isinstance(outcome.get("error"), flight.FlightCancelledError), outcome
        deadline = time.monotonic() + 60
        while (now := samples(base))[reserved] != 0 or now["tarn_queries_running"] != 0:
            assert time.monotonic() < deadline, f"memory still reserved: {now[reserved]} bytes"
    finally:
        s.stop()
    assert s.proc.returncode == 0


def test_sigterm_turns_unready_first_and_lets_a_running_query_finish(lake):
    s = started(lake, "--shutdown-delay", "3s", "--shutdown-grace", "120s")
    base = http_base(s)
    conn, cur, reader = hold_a_place(s.uri)
    s.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    while get(base + "/readyz")[0] != 503:
        assert time.monotonic() < deadline, "readyz never turned unready"
    assert get(base + "/readyz") == (503, "draining\n")
    # The running query goes on while the server drains.
    assert reader.read_next_batch().num_rows > 0
    reader.close()
    cur.close()
    conn.close()
    assert s.proc.wait(timeout=120) == 0


def test_queries_still_running_after_the_grace_period_are_cancelled(lake):
    s = started(lake, "--shutdown-grace", "1s")
    conn, cur, reader = hold_a_place(s.uri)
    s.proc.send_signal(signal.SIGTERM)
    # The held query does not keep the server up past the grace period.
    assert s.proc.wait(timeout=60) == 0
    with pytest.raises(Exception):
        while True:
            reader.read_next_batch()
    for closing in (reader.close, cur.close, conn.close):
        try:
            closing()
        except Exception:
            pass


def test_system_queries_shows_readers_their_own_and_admins_everyone(secured, lake):
    from test_auth import login

    marker = f"history-{time.monotonic_ns()}"
    with login(secured, "bob") as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) AS n, '{marker}-bob' AS tag FROM events")
        assert cur.fetchall() == [(events_rows(lake), f"{marker}-bob")]
        with pytest.raises(adbc_driver_manager.Error, match="no_such_column"):
            cur.execute(f"SELECT no_such_column, '{marker}-bad' FROM events")
            cur.fetchall()
    with login(secured, "alice") as conn, conn.cursor() as cur:
        cur.execute(f"SELECT '{marker}-alice' AS tag")
        cur.fetchall()

    mine = (
        "SELECT user_name, state, rows_returned, error IS NULL FROM system.queries "
        f"WHERE query LIKE '%{marker}%' AND query NOT LIKE '%system.queries%' "
        "ORDER BY submitted_at"
    )
    with login(secured, "bob") as conn, conn.cursor() as cur:
        cur.execute(mine)
        assert cur.fetchall() == [("bob", "finished", 1, True), ("bob", "failed", 0, False)]
    with login(secured, "alice") as conn, conn.cursor() as cur:
        cur.execute(mine)
        assert cur.fetchall() == [
            ("bob", "finished", 1, True), ("bob", "failed", 0, False), ("alice", "finished", 1, True),
        ]
