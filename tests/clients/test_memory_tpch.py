"""The memory limit under real load: four ADBC clients run TPC-H Q18, Q21, Q9 and Q18 again
at SF1, all at once, on a server whose memory pool is far below what they take together
unbounded (about 300 MiB of reservations, measured through `system.queries`). Each must get
DuckDB's answer (spilling where it has to) or a clear resource error naming the limit; the
server stays up, every query's own peak stays within the pool, the process's resident
memory stays within the limit plus the overhead stated below, and no spill file is left
once it stops.

What the pool does not count (DataFusion reserves for operators' state, not for the
Parquet column chunks being decoded, batches in flight between threads, or the allocator's
retained pages) is the stated overhead: peaks of 440–530 MiB for these four queries under
a 128 MiB pool in a debug build (480 MiB with no limit at all; 660 MiB under 160 MiB,
where every query spilled and answered); the bound allows 640 MiB over the pool."""

import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from conftest import Server, connect, tarn

ROOT = Path(__file__).resolve().parents[2]
LIMIT_MIB = 128
OVERHEAD_MIB = 640
QUERIES = (18, 21, 9, 18)
TABLES = ("customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier")


@pytest.fixture(scope="module")
def tpch(tmp_path_factory):
    """TPC-H SF1 as Parquet (tpchgen-cli), crawled into a catalog of its own."""
    work = tmp_path_factory.mktemp("tpch")
    data = work / "sf1"
    tpchgen = Path(sys.executable).parent / "tpchgen-cli"
    subprocess.run([str(tpchgen), "parquet", "-s", "1", "--parts", "2", "--output-dir", str(data)],
                   check=True, capture_output=True)
    catalog = work / "tarn"
    crawled = tarn(catalog, "crawl", str(data))
    assert crawled.returncode == 0, crawled.stderr
    return {"data": data, "catalog": catalog}


def query(n: int) -> str:
    return (ROOT / "benches" / "tpch" / f"q{n:02d}.sql").read_text()


def normalise(rows):
    return [tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows]


def duckdb_answers(data: Path) -> dict:
    db = duckdb.connect()
    for t in TABLES:
        db.sql(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{data}/{t}/*.parquet')")
    return {n: normalise(db.sql(query(n)).fetchall()) for n in set(QUERIES)}


def kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_four_heavy_queries_share_a_small_pool_and_the_server_stays_within_it(tpch):
    expected = duckdb_answers(tpch["data"])
    spill = tpch["catalog"] / "spill"
    s = Server(tpch["catalog"], command=(
        "serve", "--memory-limit", f"{LIMIT_MIB}MiB", "--spill-dir", str(spill),
        "--result-cache-mb", "0", "--max-concurrent-queries", "4",
    ))
    try:
        outcomes = {}

        def run(i: int, n: int):
            try:
                with connect(s.uri) as conn, conn.cursor() as cur:
                    cur.execute(query(n))
                    outcomes[i] = ("answer", normalise(cur.fetchall()))
            except Exception as e:  # noqa: BLE001 - the error's text is what is checked
                outcomes[i] = ("error", str(e))

        clients = [threading.Thread(target=run, args=(i, n)) for i, n in enumerate(QUERIES)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(timeout=900)
        assert not any(c.is_alive() for c in clients), "a query never ended"

        for i, n in enumerate(QUERIES):
            kind, value = outcomes[i]
            if kind == "answer":
                assert value == expected[n], f"Q{n} differs from DuckDB"
            else:
                assert "--memory-limit" in value and f"{LIMIT_MIB}.0 MiB" in value, f"Q{n}: {value}"

        with connect(s.uri) as conn, conn.cursor() as cur:
            # The server is up and answers.
            cur.execute("SELECT count(*) FROM region")
            assert cur.fetchone() == (5,)
            cur.execute(
                "SELECT state, peak_memory_bytes, spilled_bytes FROM system.queries "
                "WHERE query LIKE '-- TPC-H%' AND state <> 'running'"
            )
            recorded = cur.fetchall()
        assert sorted(state for state, _, _ in recorded) == sorted(
            "finished" if kind == "answer" else "resource_exhausted" for kind, _ in outcomes.values()
        )
        # What the pool counts for each query stays within it (a few infallible
        # reservations may pass it by little).
        for state, peak, _ in recorded:
            assert 0 < peak <= LIMIT_MIB * 1.25 * 2**20, (state, peak)
        # Where a query held its ground, it spilled to do so.
        if any(kind == "answer" for kind, _ in outcomes.values()):
            assert any(spilled > 0 for _, _, spilled in recorded), recorded

        peak_kib = kib(s.proc.pid, "VmHWM")
        assert peak_kib <= (LIMIT_MIB + OVERHEAD_MIB) * 1024, f"peak RSS {peak_kib // 1024} MiB"
        print(f"peak RSS {peak_kib // 1024} MiB under a {LIMIT_MIB} MiB pool; outcomes: "
              + ", ".join(f"Q{n} {outcomes[i][0]}" for i, n in enumerate(QUERIES)))
    finally:
        s.stop()
    assert s.proc.returncode == 0, "".join(s.log)[-2000:]
    # No spill file outlives the server (a failed query's tasks may still be closing theirs
    # for a moment after its client has the error).
    assert [p for p in spill.rglob("*") if p.is_file()] == []
