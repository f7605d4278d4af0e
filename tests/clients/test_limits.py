"""A shared server's limits through the real ADBC driver: admission (a place among running
queries, a bounded FIFO queue, refusal past it), the query timeout, a client that
disconnects giving back its place, and the memory limit (spilling, or a clear error that
stops one query only)."""

import threading

import adbc_driver_manager
import pyarrow.parquet as pq
import pytest

from conftest import Server, connect

# Streams far more rows than any test reads: the query stays running while its reader is
# open.
ENDLESS = "SELECT u.user_id, g.value FROM users u CROSS JOIN generate_series(1, 1000000000) g"


def events_rows(lake) -> int:
    return sum(pq.read_metadata(p).num_rows for p in lake["good"]["events"])


@pytest.fixture(scope="module")
def one_place(lake):
    s = Server(lake["data_dir"], command=(
        "serve", "--max-concurrent-queries", "1", "--max-queued-queries", "1",
        "--queue-timeout", "1h", "--result-cache-mb", "0", "--log", "tarn=info",
    ))
    yield s
    s.stop()
    assert s.proc.returncode == 0, "".join(s.log)[-2000:]


def hold_a_place(uri, sql=ENDLESS):
    """Starts `sql` (a query that never ends) and reads its first batch; returns what must
    stay open."""
    conn = connect(uri)
    cur = conn.cursor()
    cur.execute(sql)
    reader = cur.fetch_record_batch()
    assert reader.read_next_batch().num_rows > 0
    return conn, cur, reader


def test_queue_refusal_and_a_disconnect_giving_back_the_place(one_place, lake):
    conn, cur, reader = hold_a_place(one_place.uri)
    done = {}

    def queued():
        with connect(one_place.uri) as c, c.cursor() as q:
            q.execute("SELECT count(*) FROM events")
            done["rows"] = q.fetchall()

    waiting = threading.Thread(target=queued)
    waiting.start()
    one_place.wait_for_log(r"query waits for a place")
    # The queue (one) is full: the next query is refused at once, like Athena's
    # TooManyRequests.
    with connect(one_place.uri) as c, c.cursor() as q:
        with pytest.raises(adbc_driver_manager.Error, match="too many queries") as refused:
            q.execute("SELECT max(score) FROM events")
            q.fetchall()
        assert "RESOURCE_EXHAUSTED" in str(refused.value) or "resource exhausted" in str(refused.value)
        # Queries that read no table never wait.
        q.execute("SELECT 1")
        assert q.fetchall() == [(1,)]
    # The holder disconnects without reading to the end: its query stops and the queued
    # one runs.
    reader.close()
    cur.close()
    conn.close()
    waiting.join(timeout=120)
    assert not waiting.is_alive()
    assert done["rows"] == [(events_rows(lake),)]


def test_a_query_past_the_timeout_is_cancelled(lake):
    s = Server(lake["data_dir"], command=("serve", "--query-timeout", "1s"))
    try:
        with connect(s.uri) as c, c.cursor() as q:
            with pytest.raises(adbc_driver_manager.Error, match="--query-timeout") as err:
                q.execute("SELECT count(*) FROM events CROSS JOIN generate_series(1, 10000000000)")
                q.fetchall()
            assert "1 s" in str(err.value)
            # The server and the connection go on.
            q.execute("SELECT count(*) FROM events")
            assert q.fetchall() == [(events_rows(lake),)]
    finally:
        s.stop()
    assert s.proc.returncode == 0


def test_memory_limit_spills_or_stops_one_query_alone(lake, tmp_path):
    spill = tmp_path / "spill"
    s = Server(lake["data_dir"], command=(
        "serve", "--memory-limit", "8MiB", "--spill-dir", str(spill), "--result-cache-mb", "0",
    ))
    try:
        with connect(s.uri) as c, c.cursor() as q:
            # 400,000 groups do not fit in 8 MiB: the aggregation spills and answers.
            q.execute(
                "SELECT count(*), sum(n) FROM (SELECT value % 400000 AS k, count(*) AS n "
                "FROM generate_series(1, 1200000) GROUP BY 1)"
            )
            assert q.fetchall() == [(400000, 1200000)]
            # A join whose build side cannot fit fails alone with a clear error.
            with pytest.raises(adbc_driver_manager.Error, match="--memory-limit") as err:
                q.execute(
                    "SELECT count(*) FROM generate_series(1, 3000000) a "
                    "JOIN generate_series(1, 3000000) b ON a.value = b.value"
                )
                q.fetchall()
            assert "8.0 MiB" in str(err.value)
            q.execute("SELECT count(*) FROM events")
            assert q.fetchall() == [(events_rows(lake),)]
        # Spill files are gone once the queries ended.
        assert [p for p in spill.rglob("*") if p.is_file()] == []
    finally:
        s.stop()
    assert s.proc.returncode == 0
