"""Streaming ingest, as a writer and a dashboard use it: records streamed through Flight
(`DoPut` with a path descriptor) and HTTP (`POST /v1/streams/{db}/{table}/records`) are
acknowledged once durable, returned by the next query (through a materialized view too),
delivered into the table's Hive partitions as Parquet, replayed after a restart and after
kill -9 exactly once. DuckDB over the same rows is the oracle."""

import json
import random
import threading
import urllib.request
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

from conftest import Server, connect, tarn
from test_operations import http_base

SCHEMA = pa.schema([("id", pa.int64()), ("kind", pa.string()), ("v", pa.int32()),
                    ("hour", pa.int64())])

QUERIES = [
    "SELECT hour, kind, count(*) AS n, sum(v) AS s, min(id) AS lo, max(id) AS hi "
    "FROM events GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT count(*) AS n, count(DISTINCT id) AS d, sum(id) AS s FROM events",
]
# Answered by the materialized view below when nothing is buffered.
ROLLUP = "SELECT kind, sum(v) AS s, count(*) AS n FROM events GROUP BY 1 ORDER BY 1"


def records(first: int, count: int, hours=(13, 14)) -> pa.RecordBatch:
    ids = list(range(first, first + count))
    return pa.record_batch([
        pa.array(ids, pa.int64()),
        pa.array([f"k{i % 5}" for i in ids]),
        pa.array([i % 1000 for i in ids], pa.int32()),
        pa.array([hours[i % len(hours)] for i in ids], pa.int64()),
    ], schema=SCHEMA)


def make_lake(root: Path) -> Path:
    """`events/hour=13/` with one file, as a Firehose-style writer left it."""
    folder = root / "events" / "hour=13"
    folder.mkdir(parents=True)
    batch = records(0, 100, hours=(13,))
    pq.write_table(pa.Table.from_batches([batch]).drop_columns(["hour"]), folder / "part-0.parquet")
    return root


def oracle(batches: list, sql: str) -> list[tuple]:
    db = duckdb.connect()
    db.register("events", pa.Table.from_batches(batches, schema=SCHEMA))
    return [tuple(r) for r in db.sql(sql).fetchall()]


def rows(cur, sql: str) -> list[tuple]:
    cur.execute(sql)
    return [tuple(r) for r in cur.fetchall()]


class Writer:
    """A Flight stream into `db.table`: each batch written, then its acknowledgement read."""

    def __init__(self, uri: str, path=("default", "events"), schema=SCHEMA):
        self.client = flight.FlightClient(uri)
        self.writer, self.reader = self.client.do_put(
            flight.FlightDescriptor.for_path(*path), schema)

    def put(self, batch: pa.RecordBatch) -> dict:
        self.writer.write_batch(batch)
        ack = self.reader.read()
        if ack is None:
            # The call ended: closing raises its error.
            self.writer.close()
            raise flight.FlightError("the stream ended without an acknowledgement")
        return json.loads(ack.to_pybytes())

    def close(self):
        self.writer.done_writing()
        self.writer.close()
        self.client.close()


def serve(data_dir: Path, *flags: str) -> Server:
    return Server(data_dir, command=("serve", "--http-listen", "127.0.0.1:0",
                                     "--result-cache-mb", "64", *flags),
                  env={"TARN_LOG": "info"})


def post(url: str, body: bytes, content_type="application/x-ndjson") -> tuple[int, dict, dict]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read())


def test_streamed_records_are_visible_at_once_then_delivered_and_replayed(tmp_path):
    root = make_lake(tmp_path / "lake")
    data_dir = tmp_path / "data"
    crawled = tarn(data_dir, "crawl", str(root))
    assert crawled.returncode == 0, crawled.stderr
    seen = [pa.Table.from_batches([records(0, 100, hours=(13,))]).to_batches()[0]]

    # Nothing is delivered while this server runs: the records live in the log and buffer.
    server = serve(data_dir, "--stream-buffer-seconds", "3600", "--stream-buffer-mb", "512")
    try:
        with connect(server.uri) as conn, conn.cursor() as cur:
            cur.execute("CREATE MATERIALIZED VIEW by_kind AS "
                        "SELECT kind, sum(v) AS s, count(*) AS n FROM events GROUP BY 1")
            assert rows(cur, ROLLUP) == oracle(seen, ROLLUP)
            writer = Writer(server.uri)
            last = 0
            for first in (1_000, 2_000, 3_000):
                batch = records(first, 500, hours=(13, 14, 15))
                ack = writer.put(batch)
                assert ack["rows"] == 500 and ack["lsn"] > last, ack
                last = ack["lsn"]
                seen.append(batch)
                # The next query sees the acknowledged records, through the view too (the
                # result cache must not answer from before them).
                for sql in QUERIES + [ROLLUP]:
                    assert rows(cur, sql) == oracle(seen, sql), sql
            writer.close()

            # HTTP: NDJSON, a partial failure reported per record.
            base = http_base(server)
            good = [{"id": 9_000 + i, "kind": "http", "v": i, "hour": 16} for i in range(3)]
            lines = [json.dumps(good[0]), json.dumps({"id": "not a number", "hour": 16}),
                     json.dumps(good[1]), json.dumps({"id": 1, "hour": 16, "colour": "red"}),
                     json.dumps(good[2])]
            status, _, answer = post(f"{base}/v1/streams/default/events/records",
                                     "\n".join(lines).encode())
            assert status == 200, answer
            assert answer["failed"] == 2, answer
            results = answer["records"]
            assert [("lsn" in r) for r in results] == [True, False, True, False, True], results
            assert "colour" in results[3]["error"]["message"], results[3]
            seen.append(pa.RecordBatch.from_pylist(good, schema=SCHEMA))
            for sql in QUERIES:
                assert rows(cur, sql) == oracle(seen, sql), sql

            # HTTP: an Arrow IPC stream, taken batch by batch.
            ipc = records(9_100, 7, hours=(17,))
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, SCHEMA) as w:
                w.write_batch(ipc)
            status, _, answer = post(f"{base}/v1/streams/default/events/records",
                                     sink.getvalue().to_pybytes(),
                                     "application/vnd.apache.arrow.stream")
            assert status == 200 and [b["rows"] for b in answer["batches"]] == [7], answer
            seen.append(ipc)
            for sql in QUERIES:
                assert rows(cur, sql) == oracle(seen, sql), sql

            status, _, answer = post(f"{base}/v1/streams/default/nosuch/records", b"{}")
            assert status == 404 and "default.nosuch" in answer["error"]["message"], answer
            with pytest.raises(pa.ArrowException, match="not in table default.events"):
                w = Writer(server.uri, schema=pa.schema([("id", pa.int64()), ("colour", pa.string())]))
                w.put(pa.record_batch([pa.array([1]), pa.array(["red"])], names=["id", "colour"]))
        # Nothing was delivered yet: the lake holds the crawled file only.
        assert sorted(p.name for p in (root / "events").rglob("*.parquet")) == ["part-0.parquet"]
    finally:
        server.stop()
    assert server.proc.returncode == 0, "".join(server.log)[-3000:]

    # A restart replays the log; a short buffer age delivers it into hour partitions.
    server = serve(data_dir, "--stream-buffer-seconds", "0.2")
    try:
        server.wait_for_log(r"stream delivered")
        with connect(server.uri) as conn, conn.cursor() as cur:
            for sql in QUERIES + [ROLLUP]:
                assert rows(cur, sql) == oracle(seen, sql), sql
            cur.execute("SHOW PARTITIONS events")
            partitions = {p["partition"] for p in cur.fetch_arrow_table().to_pylist()}
            assert {"hour=13", "hour=14", "hour=15", "hour=16", "hour=17"} <= partitions, partitions
        delivered = [p for p in (root / "events").rglob("*.parquet") if p.name != "part-0.parquet"]
        assert {p.parent.name for p in delivered} == {"hour=13", "hour=14", "hour=15", "hour=16",
                                                      "hour=17"}
        got = pa.concat_tables([pq.read_table(p).drop_columns(["hour"]) if "hour" in
                                pq.read_schema(p).names else pq.read_table(p) for p in delivered])
        assert got.num_rows == 1_510
    finally:
        server.stop()
    assert server.proc.returncode == 0, "".join(server.log)[-3000:]

    # Delivered records are not replayed again.
    server = serve(data_dir)
    try:
        with connect(server.uri) as conn, conn.cursor() as cur:
            for sql in QUERIES:
                assert rows(cur, sql) == oracle(seen, sql), sql
    finally:
        server.stop()


def test_backpressure_is_a_retryable_refusal(tmp_path):
    root = make_lake(tmp_path / "lake")
    data_dir = tmp_path / "data"
    assert tarn(data_dir, "crawl", str(root)).returncode == 0
    server = serve(data_dir, "--stream-buffer-seconds", "3600", "--stream-buffer-mb", "512",
                   "--stream-memory-mb", "1")
    try:
        writer = Writer(server.uri)
        taken = 0
        with pytest.raises(pa.ArrowException) as refused:
            for i in range(100):
                writer.put(records(10_000 * (i + 1), 20_000))
                taken += 1
        assert "stream buffers are full" in str(refused.value)
        assert "RESOURCE_EXHAUSTED" in str(refused.value), refused.value
        assert 0 < taken < 100
        base = http_base(server)
        status, headers, answer = post(f"{base}/v1/streams/default/events/records",
                                       json.dumps({"id": 1, "hour": 13}).encode())
        assert status == 429 and headers.get("retry-after") == "1", (status, answer)
        assert answer["error"]["code"] == "STREAM_BUFFERS_FULL"
        # What was acknowledged before the refusal is there, once.
        with connect(server.uri) as conn, conn.cursor() as cur:
            assert rows(cur, "SELECT count(*) FROM events") == [(100 + taken * 20_000,)]
    finally:
        server.stop()


@pytest.mark.parametrize("seed", [1, 2])
def test_acknowledged_records_survive_kill_9_exactly_once(seed, tmp_path):
    """Writers stream while the server is killed at random moments (appending, delivering);
    after each restart every acknowledged record is there exactly once."""
    rng = random.Random(seed)
    root = make_lake(tmp_path / "lake")
    data_dir = tmp_path / "data"
    assert tarn(data_dir, "crawl", str(root)).returncode == 0
    acked: list[tuple[int, int]] = []  # (first id, count) of acknowledged batches
    sent: list[tuple[int, int]] = []
    next_id = 1_000_000
    for round_ in range(4):
        server = serve(data_dir, "--stream-buffer-seconds", "0.3", "--stream-buffer-mb", "0.2")
        stop = threading.Event()

        def write(writer_no: int):
            nonlocal next_id
            try:
                writer = Writer(server.uri)
                while not stop.is_set():
                    with lock:
                        first = next_id
                        next_id += 1_000
                    count = rng.randint(1, 1_000)
                    sent.append((first, count))
                    writer.put(records(first, count, hours=(13, 14, 15, 16)))
                    acked.append((first, count))
            except Exception:  # the server was killed mid-call
                pass

        lock = threading.Lock()
        threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        server.wait_for_log(r"stream delivered")
        killed_after = rng.uniform(0.0, 1.5)
        threading.Event().wait(killed_after)
        server.proc.kill()
        server.proc.wait()
        stop.set()
        for t in threads:
            t.join()
    server = serve(data_dir, "--stream-buffer-seconds", "0.3")
    try:
        with connect(server.uri) as conn, conn.cursor() as cur:
            cur.execute("SELECT id FROM events WHERE id >= 1000000")
            present = cur.fetch_arrow_table().column("id").to_pylist()
        assert len(present) == len(set(present)), "a record was catalogued twice"
        present = set(present)
        expected = {i for first, count in acked for i in range(first, first + count)}
        assert expected <= present, f"{len(expected - present)} acknowledged records lost"
        possible = {i for first, count in sent for i in range(first, first + count)}
        assert present <= possible
        assert len(acked) > 20, "the writers barely wrote"
    finally:
        server.stop()
