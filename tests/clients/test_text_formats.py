"""CSV and newline-delimited JSON lakes (the raw form Firehose lands): formats from names
or contents, gzip and zstd, header detection, schema evolution, mixed formats reported,
and incremental re-crawls. DuckDB reads the same files as the oracle."""

import gzip
import json
import random

import duckdb
import pyarrow as pa
import pytest

from conftest import Server, connect, tarn


def write_text(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    elif name.endswith(".zst"):
        with pa.CompressedOutputStream(str(path), "zstd") as f:
            f.write(text.encode())
    else:
        path.write_text(text)


def orders_csv(rng, start: int, n: int, header=True, sep=",") -> str:
    lines = [sep.join(["order_id", "customer", "amount", "placed"])] if header else []
    for i in range(start, start + n):
        lines.append(sep.join([
            str(i), rng.choice(["ann", "bob", "cy", "dee"]), f"{rng.randint(100, 99999) / 100:.2f}",
            f"2024-01-{1 + i % 28:02d} {i % 24:02d}:15:00",
        ]))
    return "\n".join(lines) + "\n"


def clicks_json(rng, start: int, n: int, with_ref=False) -> str:
    rows = []
    for i in range(start, start + n):
        row = {"user_id": rng.randint(1, 50), "page": rng.choice(["/", "/cart", "/buy"]),
               "ms": rng.randint(1, 5000)}
        if with_ref:
            row["ref"] = rng.choice(["ads", "mail"])
        rows.append(json.dumps(row))
    return "\n".join(rows) + "\n"


@pytest.fixture()
def text_lake(tmp_path):
    rng = random.Random(7)
    root = tmp_path / "lake"
    # CSV with a header: plain, gzip and zstd, in day partitions.
    write_text(root / "orders/day=2024-01-01/part-0.csv", orders_csv(rng, 0, 300))
    write_text(root / "orders/day=2024-01-02/part-0.csv.gz", orders_csv(rng, 300, 300))
    write_text(root / "orders/day=2024-01-03/part-0.csv.zst", orders_csv(rng, 600, 300))
    # TSV without a header.
    write_text(root / "legacy/a.tsv", orders_csv(rng, 0, 50, header=False, sep="\t"))
    # Firehose: NDJSON without an extension, then gzip; the later files add a column.
    write_text(root / "clicks/2024/01/05/13/clicks-1-2024-01-05-13-00-00-abc", clicks_json(rng, 0, 200))
    write_text(root / "clicks/2024/01/05/14/clicks-1-2024-01-05-14-00-00-def.gz",
               clicks_json(rng, 200, 200, with_ref=True))
    # One table, two formats.
    write_text(root / "mixed/a.csv", "x,y\n1,2\n3,4\n")
    write_text(root / "mixed/b.csv", "x,y\n5,6\n")
    write_text(root / "mixed/c.json", '{"x": 7, "y": 8}\n')
    # Named CSV but binary.
    (root / "broken").mkdir()
    (root / "broken/ok.csv").write_text("a,b\n1,2\n")
    (root / "broken/garbage.csv").write_bytes(bytes(range(256)) * 4)
    return root


def duck(sql: str) -> list:
    return [tuple(r) for r in duckdb.sql(sql).fetchall()]


def rows(cur, sql: str) -> list:
    cur.execute(sql)
    return [tuple(r) for r in cur.fetchall()]


def test_csv_and_json_lakes_match_duckdb(text_lake, tmp_path):
    root = text_lake
    data = tmp_path / "data"
    crawl = tarn(data, "crawl", str(root), "--json")
    assert crawl.returncode == 0, crawl.stderr
    summary = json.loads(crawl.stdout)
    assert sorted(summary["tables_created"]) == [
        "default.broken", "default.clicks", "default.legacy", "default.mixed", "default.orders"]
    assert summary["footers_read"] == 0
    assert summary["samples_read"] == 11, "every CSV and JSON file is sampled"
    problems = {p["path"].rsplit("/", 1)[-1]: p["message"] for p in summary["problems"]}
    assert set(problems) == {"c.json", "garbage.csv"}, problems
    assert "a JSON file in default.mixed, whose files are CSV" in problems["c.json"]

    orders = f"read_csv('{root}/orders/*/*', hive_partitioning = true, union_by_name = true)"
    clicks_files = sorted(str(p) for p in (root / "clicks").rglob("clicks-*"))
    clicks = f"read_json({clicks_files!r}, format = 'newline_delimited', union_by_name = true)"
    server = Server(data, command=("--allow-location", str(root), "serve"))
    try:
        with connect(server.uri) as conn, conn.cursor() as cur:
            cur.execute("DESCRIBE orders")
            types = {r[0]: r[1] for r in cur.fetchall()}
            assert types == {"order_id": "Int64", "customer": "Utf8", "amount": "Float64",
                             "placed": "Timestamp(s)", "day": "Date32"}, types

            q = ("SELECT customer, count(*), round(sum(amount), 2), min(placed), max(order_id) "
                 "FROM {t} GROUP BY customer ORDER BY customer")
            assert rows(cur, q.format(t="orders")) == duck(q.format(t=orders))
            q = "SELECT count(*) FROM {t} WHERE day = DATE '2024-01-02' AND amount > 500"
            assert rows(cur, q.format(t="orders")) == duck(q.format(t=orders))

            q = "SELECT page, count(*), sum(ms), count(ref) FROM {t} GROUP BY page ORDER BY page"
            assert rows(cur, q.format(t="clicks")) == duck(q.format(t=clicks))
            cur.execute("SELECT DISTINCT partition_3 FROM clicks ORDER BY 1")
            assert [r[0] for r in cur.fetchall()] == [13, 14]

            legacy = f"read_csv('{root}/legacy/a.tsv', header = false, sep = '\\t')"
            assert rows(cur, "SELECT count(*), sum(column_1), max(column_2) FROM legacy") == duck(
                f"SELECT count(*), sum(column0), max(column1) FROM {legacy}")
            assert rows(cur, "SELECT x, y FROM mixed ORDER BY x") == [(1, 2), (3, 4), (5, 6)]

            # DDL: the format is checked against the files; declared columns win.
            cur.execute(f"CREATE EXTERNAL TABLE o2 (order_id BIGINT, customer VARCHAR, amount DOUBLE, "
                        f"placed VARCHAR) STORED AS CSV LOCATION '{root}/orders/'")
            assert "created table default.o2: 3 files, 3 partitions" in cur.fetchone()[0]
            assert rows(cur, "SELECT arrow_typeof(placed), count(*) FROM o2 GROUP BY 1") == [("Utf8", 900)]
            with pytest.raises(Exception, match="holds CSV files, not JSON; nothing was created"):
                cur.execute(f"CREATE EXTERNAL TABLE o3 STORED AS JSON LOCATION '{root}/orders/'")
            cur.execute("SHOW TABLES")
            assert "o3" not in [r[2] for r in cur.fetchall()]

            # A new file: only it is sampled; an unchanged lake reads nothing.
            write_text(root / "orders/day=2024-01-04/part-0.csv.gz",
                       orders_csv(random.Random(9), 900, 100))
            again = json.loads(tarn(data, "crawl", str(root), "--json").stdout)
            # The new file, and the two files left out before (they are retried).
            assert again["samples_read"] == 3
            assert again["tables_updated"] == ["default.orders"]
            q = "SELECT count(*), round(sum(amount), 2), count(DISTINCT day) FROM {t}"
            assert rows(cur, q.format(t="orders")) == duck(q.format(t=orders))
            unchanged = json.loads(tarn(data, "crawl", str(root), "--exclude", "broken/garbage.csv",
                                        "--exclude", "mixed/c.json", "--json").stdout)
            assert unchanged["samples_read"] == 0 and unchanged["footers_read"] == 0
    finally:
        server.stop()


def test_sample_size_decides_what_a_column_is(tmp_path):
    """Types are inferred from the first N records: a float after them would not fit an
    integer column, so `--sample-rows` is the knob."""
    lake = tmp_path / "lake"
    write_text(lake / "m/a.csv", "k,v\n" + "".join(f"{i},{i}\n" for i in range(50)) + "50,0.5\n")
    small = tarn(tmp_path / "d1", "crawl", str(lake), "--sample-rows", "10", "--json")
    assert small.returncode == 0, small.stderr
    out = tarn(tmp_path / "d1", "sql", "SELECT sum(v) FROM m")
    assert out.returncode != 0
    assert "'0.5' as type 'Int64'" in out.stderr and "--sample-rows" in out.stderr, out.stderr
    tarn(tmp_path / "d2", "crawl", str(lake), "--json")
    out = tarn(tmp_path / "d2", "sql", "SELECT sum(v) FROM m", "--format", "csv")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[1] == str(sum(range(50)) + 0.5)


def test_csv_columns_in_another_order_are_left_out(tmp_path):
    """CSV columns are read by position: a file whose header orders (or skips) the table's
    columns differently is reported and left out, instead of putting values under the wrong
    names. A file that appends a column is fine."""
    lake = tmp_path / "lake"
    write_text(lake / "t/a.csv", "x,y,z\n1,2,3\n")
    write_text(lake / "t/b.csv", "x,y,z,w\n4,5,6,7\n")
    write_text(lake / "t/c.csv", "x,z,y\n8,9,10\n")
    write_text(lake / "t/d.csv", "x,z\n11,12\n")
    # A file left out does not shape the table: u's columns are a's, then d's.
    write_text(lake / "u/a.csv", "x\n1\n")
    write_text(lake / "u/c.csv", "z,x\n5,6\n")
    write_text(lake / "u/d.csv", "x,y,z\n2,3,4\n")
    # A partition column in the header would shift the columns after it.
    write_text(lake / "p/dt=1/a.csv", "a,b\n1,2\n")
    write_text(lake / "p/dt=2/b.csv", "a,dt,b\n3,2,4\n")
    data = tmp_path / "data"
    crawl = tarn(data, "crawl", str(lake), "--json")
    assert crawl.returncode == 0, crawl.stderr
    summary = json.loads(crawl.stdout)
    problems = {p["path"].split("/lake/")[1]: p["message"] for p in summary["problems"]}
    assert set(problems) == {"t/c.csv", "t/d.csv", "u/c.csv", "p/dt=2/b.csv"}, problems
    assert "header has the partition column dt" in problems["p/dt=2/b.csv"]
    assert "names the columns (x, z, y) in another order than default.t (x, y, z)" in problems["t/c.csv"]
    assert "(x, z) in another order than default.t (x, y)" in problems["t/d.csv"]
    assert summary["files_added"] == 5

    out = tarn(data, "sql", "SELECT x, y, z, w FROM t ORDER BY x", "--format", "csv")
    assert out.returncode == 0, out.stderr
    got = [tuple(None if v == "" else int(v) for v in line.split(","))
           for line in out.stdout.split()[1:]]
    files = [str(lake / "t/a.csv"), str(lake / "t/b.csv")]
    assert got == duck(f"SELECT x, y, z, w FROM read_csv({files!r}, union_by_name = true) ORDER BY x")

    out = tarn(data, "sql", "SELECT x, y, z FROM u ORDER BY x", "--format", "csv")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["x,y,z", "1,,", "2,3,4"]
    out = tarn(data, "sql", "SELECT a, b, dt FROM p", "--format", "csv")
    assert out.stdout.split() == ["a,b,dt", "1,2,1"], out.stdout


def test_csv_column_order_follows_the_files(tmp_path):
    """The column order new CSV files must follow comes from the files: the most common
    header of a new table (not its alphabetically first file), and the files a table keeps
    (not columns of files that are gone), so a table whose files were all rewritten in a
    new order takes them instead of staying empty."""
    lake = tmp_path / "lake"
    write_text(lake / "t/a.csv", "b,a\n1,2\n")
    write_text(lake / "t/b.csv", "a,b\n3,4\n")
    write_text(lake / "t/c.csv", "a,b\n5,6\n")
    data = tmp_path / "data"
    crawl = tarn(data, "crawl", str(lake), "--json")
    assert crawl.returncode == 0, crawl.stderr
    summary = json.loads(crawl.stdout)
    assert [p["path"].split("/lake/")[1] for p in summary["problems"]] == ["t/a.csv"], summary
    out = tarn(data, "sql", "SELECT a, b FROM t ORDER BY a", "--format", "csv")
    assert out.stdout.split() == ["a,b", "3,4", "5,6"], out.stdout

    # Every file rewritten with the columns swapped: the table follows them.
    for name in ["a", "b", "c"]:
        (lake / f"t/{name}.csv").unlink()
    write_text(lake / "t/d.csv", "b,a\n7,8\n")
    # Keeping the old columns over files in the new order would swap the values: under
    # `--schema-change log` the change is reported and nothing is committed.
    crawl = tarn(data, "crawl", str(lake), "--json", "--schema-change", "log")
    assert crawl.returncode == 0, crawl.stderr
    problems = [p["message"] for p in json.loads(crawl.stdout)["problems"]]
    assert len(problems) == 1 and "columns reordered (a, b -> b, a)" in problems[0], problems
    crawl = tarn(data, "crawl", str(lake), "--json")
    assert crawl.returncode == 0, crawl.stderr
    assert json.loads(crawl.stdout)["problems"] == [], crawl.stdout
    out = tarn(data, "sql", "SELECT a, b FROM t", "--format", "csv")
    assert out.stdout.split() == ["a,b", "8,7"], out.stdout
