"""OPTIMIZE over Flight SQL (ADBC): a Firehose-style partition of 1,000 small files becomes
one file, answers equal DuckDB's over the original files before and after (through a
materialized view too), a query running across the swap finishes, a crawl does not bring
the old files back, and bad requests get clear errors."""

from pathlib import Path

import adbc_driver_manager
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import Server, connect, tarn

ROWS_PER_FILE = 200

ANSWERS = [
    "SELECT hour, kind, count(*) AS n, sum(v) AS s, min(id) AS lo, max(id) AS hi "
    "FROM events GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT count(*) AS n, sum(id) AS s FROM events WHERE v < 100",
]
# Answered by the materialized view below.
ROLLUP = "SELECT kind, sum(v) AS s, count(*) AS n FROM events GROUP BY 1 ORDER BY 1"


def write_firehose(root: Path, files_per_hour: dict) -> list[str]:
    """`events/year=2024/month=01/day=05/hour=HH/`, each hour's folder holding that many
    small files, as a Firehose-style writer leaves them."""
    written = []
    for hour, count in files_per_hour.items():
        folder = root / "events" / "year=2024" / "month=01" / "day=05" / f"hour={hour:02d}"
        folder.mkdir(parents=True)
        for i in range(count):
            first = (hour * 10_000 + i) * ROWS_PER_FILE
            ids = range(first, first + ROWS_PER_FILE)
            table = pa.table({
                "id": pa.array(ids, pa.int64()),
                "kind": pa.array([f"k{n % 7}" for n in ids]),
                "v": pa.array([n % 1000 for n in ids], pa.int32()),
                "payload": pa.array([f"{n:0100d}" for n in ids]),
            })
            path = folder / f"firehose-{i:05d}.parquet"
            pq.write_table(table, path)
            written.append(str(path))
    return written


def oracle(files: list[str], sql: str) -> list[tuple]:
    db = duckdb.connect()
    listed = ", ".join(f"'{f}'" for f in files)
    db.sql(f"CREATE VIEW events AS SELECT * FROM read_parquet([{listed}], hive_partitioning = true)")
    return [tuple(r) for r in db.sql(sql).fetchall()]


def rows(cur, sql: str) -> list[tuple]:
    cur.execute(sql)
    return [tuple(r) for r in cur.fetchall()]


def files_per_hour(cur) -> dict:
    cur.execute("SHOW PARTITIONS events")
    return {
        int(p["partition"].rsplit("hour=", 1)[1]): p["files"]
        for p in cur.fetch_arrow_table().to_pylist()
    }


def test_optimize_compacts_a_firehose_partition_and_keeps_every_answer(tmp_path):
    root = tmp_path / "lake"
    originals = write_firehose(root, {13: 1000, 14: 3, 15: 1})
    expected = [oracle(originals, sql) for sql in ANSWERS]
    expected_rollup = oracle(originals, ROLLUP)
    data_dir = tmp_path / "data"
    crawl = tarn(data_dir, "crawl", str(root))
    assert crawl.returncode == 0, crawl.stderr
    server = Server(data_dir, env={"TARN_LOG": "info"})
    try:
        with connect(server.uri) as a, connect(server.uri) as b, \
                a.cursor() as reader, b.cursor() as cur:
            assert [rows(cur, sql) for sql in ANSWERS] == expected
            assert files_per_hour(cur) == {13: 1000, 14: 3, 15: 1}
            cur.execute(
                "CREATE MATERIALIZED VIEW by_kind AS SELECT hour, kind, sum(v) AS s, "
                "count(*) AS n FROM events GROUP BY 1, 2"
            )
            cur.fetchall()

            # A query that has started reading the old files when the swap commits.
            reader.execute("SELECT id, v, payload FROM events")
            stream = reader.fetch_record_batch()
            first = stream.read_next_batch()

            cur.execute("OPTIMIZE events")
            message = cur.fetchall()[0][0]
            assert "1003 files" in message and "2 partitions" in message, message
            assert "rewritten into 2 files" in message, message
            assert "1 partition was already compact" in message, message

            table = pa.concat_tables([pa.Table.from_batches([first]), stream.read_all()])
            assert first.num_rows < table.num_rows
            assert (table.num_rows, pc.sum(table.column("id")).as_py()) == oracle(
                originals, "SELECT count(*), sum(id) FROM events"
            )[0]

            assert files_per_hour(cur) == {13: 1, 14: 1, 15: 1}
            assert [rows(cur, sql) for sql in ANSWERS] == expected
            assert rows(cur, ROLLUP) == expected_rollup

            # Incremental: nothing is left to rewrite.
            cur.execute("OPTIMIZE events")
            assert "already compact" in cur.fetchall()[0][0]

            # The replaced files are still on disk for queries planned before the swap; a
            # crawl of the table leaves them out.
            assert all(Path(f).exists() for f in originals)
            cur.execute("MSCK REPAIR TABLE events")
            cur.fetchall()
            assert files_per_hour(cur) == {13: 1, 14: 1, 15: 1}
            assert [rows(cur, sql) for sql in ANSWERS] == expected
    finally:
        server.stop()

    # A crawl from the command line (a new process) leaves them out too.
    crawl = tarn(data_dir, "crawl", str(root))
    assert crawl.returncode == 0, crawl.stderr
    server = Server(data_dir, env={"TARN_LOG": "info"})
    try:
        with connect(server.uri) as conn, conn.cursor() as cur:
            assert files_per_hour(cur) == {13: 1, 14: 1, 15: 1}
            assert [rows(cur, sql) for sql in ANSWERS] == expected
    finally:
        server.stop()


def test_optimize_where_selects_partitions_and_bad_requests_get_clear_errors(tmp_path):
    root = tmp_path / "lake"
    originals = write_firehose(root, {13: 5, 14: 4})
    notes = root / "notes"
    notes.mkdir()
    (notes / "a.csv").write_text("id,note\n1,hello\n2,world\n")
    (notes / "b.csv").write_text("id,note\n3,again\n")
    expected = [oracle(originals, sql) for sql in ANSWERS]
    data_dir = tmp_path / "data"
    crawl = tarn(data_dir, "crawl", str(root))
    assert crawl.returncode == 0, crawl.stderr
    server = Server(data_dir, env={"TARN_LOG": "info"})
    try:
        with connect(server.uri) as conn, conn.cursor() as cur:
            cur.execute("OPTIMIZE events WHERE hour = 14")
            assert "4 files" in cur.fetchall()[0][0]
            assert files_per_hour(cur) == {13: 5, 14: 1}
            # Athena's form.
            cur.execute("OPTIMIZE TABLE events REWRITE DATA USING BIN_PACK WHERE hour > 13")
            assert "already compact" in cur.fetchall()[0][0]
            assert files_per_hour(cur) == {13: 5, 14: 1}
            assert [rows(cur, sql) for sql in ANSWERS] == expected

            with pytest.raises(adbc_driver_manager.ProgrammingError,
                               match=r"only the partition columns \(year, month, day, hour\)"):
                cur.execute("OPTIMIZE events WHERE kind = 'k1'")
            with pytest.raises(adbc_driver_manager.Error, match="stored as csv"):
                cur.execute("OPTIMIZE notes")
            with pytest.raises(adbc_driver_manager.Error, match="nosuch"):
                cur.execute("OPTIMIZE nosuch")
            with pytest.raises(adbc_driver_manager.ProgrammingError, match="BIN_PACK"):
                cur.execute("OPTIMIZE events REWRITE DATA USING SORT")
            # Nothing was changed by the failed statements.
            assert files_per_hour(cur) == {13: 5, 14: 1}
            assert [rows(cur, sql) for sql in ANSWERS] == expected
    finally:
        server.stop()


def test_a_server_compacts_crowded_partitions_on_its_own(tmp_path):
    """`--auto-optimize-min-files`: partitions with that many small files are compacted at
    the scheduler's checks, whether a crawl found them or small ingests made them."""
    root = tmp_path / "lake"
    originals = write_firehose(root, {13: 12, 14: 3})
    expected = [oracle(originals, sql) for sql in ANSWERS]
    data_dir = tmp_path / "data"
    crawl = tarn(data_dir, "crawl", str(root))
    assert crawl.returncode == 0, crawl.stderr
    server = Server(
        data_dir,
        command=("serve", "--auto-optimize-min-files", "10", "--schedule-check-secs", "1"),
        env={"TARN_LOG": "info"},
    )
    try:
        server.wait_for_log(r"optimized table=default\.events")
        with connect(server.uri) as conn, conn.cursor() as cur:
            # Only the crowded hour was rewritten.
            assert files_per_hour(cur) == {13: 1, 14: 3}
            assert [rows(cur, sql) for sql in ANSWERS] == expected

            # Ten small appends: ten files in one partition, then one.
            batches = [pa.table({"n": pa.array(range(i * 10, i * 10 + 10), pa.int64())})
                       for i in range(10)]
            for batch in batches:
                cur.adbc_ingest("appends", batch, mode="create_append")
            server.wait_for_log(r"optimized table=default\.appends")
            assert rows(cur, "SELECT files FROM system.tables WHERE table_name = 'appends'") \
                == [(1,)]
            assert rows(cur, "SELECT count(*), sum(n) FROM appends") == [(100, sum(range(100)))]
    finally:
        server.stop()
