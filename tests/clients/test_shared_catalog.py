"""Several front ends sharing one catalog in PostgreSQL (`--catalog postgres://…`): a real
PostgreSQL server started by the test, a crawl through one `tarn` process, two `tarn serve`
front ends with data directories of their own, queried through ADBC with DuckDB as the
oracle; both writing to one table at once lose no row, and both widening it at once keep
every new column; a change made through one is seen by the next query through the other."""

import threading

import duckdb
import pyarrow as pa
import pytest

from conftest import Server, connect, postgres_server, tarn


@pytest.fixture(scope="module")
def shared(lake, tmp_path_factory):
    with postgres_server() as database:
        url = database("lake")
        env = {"TARN_CATALOG": url, "TARN_LOG": "info"}
        crawl_dir = tmp_path_factory.mktemp("crawler")
        crawled = tarn(crawl_dir, "crawl", str(lake["root"]), env=env)
        assert crawled.returncode == 0, crawled.stderr
        warehouse = tmp_path_factory.mktemp("warehouse")
        fronts = [
            Server(tmp_path_factory.mktemp(f"front{i}"), env=env,
                   command=("--warehouse", str(warehouse), "serve"))
            for i in (1, 2)
        ]
        try:
            yield {"url": url, "fronts": fronts, "env": env, "warehouse": warehouse}
        finally:
            for f in fronts:
                f.stop()
        for f in fronts:
            assert f.proc.returncode == 0, "".join(f.log)[-2000:]


def query(server, sql):
    with connect(server.uri) as c, c.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def both_at_once(shared, writes: int, write) -> None:
    """Writer 1 through the first front end and writer 2 through the second, at once, each
    calling `write(cursor, writer, seq)` for seq 1..writes; fails with any writer's error."""
    errors = []

    def writer_loop(front, writer):
        try:
            with connect(front.uri) as c, c.cursor() as cur:
                for seq in range(1, writes + 1):
                    write(cur, writer, seq)
        except Exception as e:  # reported below, with the writer
            errors.append((writer, e))

    threads = [threading.Thread(target=writer_loop, args=(f, w))
               for w, f in enumerate(shared["fronts"], start=1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors


def test_both_front_ends_answer_from_the_crawl_another_process_made(shared, lake):
    files = ", ".join(f"'{p}'" for p in lake["good"]["events"])
    want = duckdb.sql(
        f"SELECT kind, count(*), sum(score) FROM read_parquet([{files}], union_by_name=true) "
        "GROUP BY kind ORDER BY kind").fetchall()
    for front in shared["fronts"]:
        got = query(front, "SELECT kind, count(*), sum(score) FROM events GROUP BY kind ORDER BY kind")
        assert [tuple(r) for r in got] == want


def test_two_front_ends_writing_one_table_at_once_lose_no_row(shared):
    a, b = shared["fronts"]
    query(a, "CREATE TABLE shared_writes AS SELECT 0 AS writer, 0 AS seq, 'seed' AS note")
    writes = 15
    both_at_once(shared, writes, lambda cur, writer, seq: cur.execute(
        f"INSERT INTO shared_writes VALUES ({writer}, {seq}, 'w{writer}-{seq}')"))
    for front in (a, b):
        got = query(front, "SELECT writer, count(*), sum(seq), count(DISTINCT seq) "
                           "FROM shared_writes GROUP BY writer ORDER BY writer")
        assert [tuple(r) for r in got] == [
            (0, 1, 0, 1),
            (1, writes, writes * (writes + 1) // 2, writes),
            (2, writes, writes * (writes + 1) // 2, writes),
        ]


def test_two_front_ends_widening_one_table_at_once_keep_every_column(shared):
    """Every append brings a column of its own (ADBC ingest widens the table), through both
    front ends at once: a writer that commits after another widened the table merges its
    column onto the new schema, so every column stays, with its row's value."""
    a, b = shared["fronts"]
    query(a, "CREATE TABLE widened AS SELECT 0 AS writer, 0 AS seq")
    writes = 10
    both_at_once(shared, writes, lambda cur, writer, seq: cur.adbc_ingest(
        "widened", pa.table({"writer": [writer], "seq": [seq],
                             f"c{writer}_{seq}": [writer * 1000 + seq]}), mode="append"))
    added = [(w, s) for w in (1, 2) for s in range(1, writes + 1)]
    sums = ", ".join(f"sum(c{w}_{s})" for w, s in added)
    for front in (a, b):
        got = query(front, f"SELECT count(*), {sums} FROM widened")
        assert list(got[0]) == [1 + len(added)] + [w * 1000 + s for w, s in added]


def test_a_change_through_one_front_end_is_seen_by_the_next_query_through_the_other(shared):
    a, b = shared["fronts"]
    query(a, "CREATE VIEW submits_by_user AS SELECT user_id, count(*) AS n FROM events "
             "WHERE kind = 'submit' GROUP BY user_id")
    got = query(b, "SELECT count(*) FROM submits_by_user")
    want = query(a, "SELECT count(DISTINCT user_id) FROM events WHERE kind = 'submit'")
    assert got == want and got[0][0] > 0
    query(b, "DROP VIEW submits_by_user")
    with pytest.raises(Exception, match="submits_by_user"):
        query(a, "SELECT count(*) FROM submits_by_user")


def test_a_catalog_url_that_cannot_be_reached_is_a_clear_error(tmp_path):
    bad = tarn(tmp_path, "tables", env={"TARN_CATALOG": "postgres://tarn:hunter2@127.0.0.1:1/none"})
    assert bad.returncode != 0
    assert "127.0.0.1:1" in bad.stderr and "catalog" in bad.stderr.lower(), bad.stderr
    assert "hunter2" not in bad.stderr
    other = tarn(tmp_path, "tables", env={"TARN_CATALOG": "mysql://tarn:secret@db/catalog"})
    assert other.returncode != 0
    assert "postgres://" in other.stderr and "secret" not in other.stderr, other.stderr
