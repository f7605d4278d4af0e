"""TPC-H against DuckDB: the 22 queries at SF 0.05 (two files a table but nation and
region, so the rules that need several files apply) on Tarn with every planner rule on,
with every rule off, and with each rule off alone, every full result compared with
DuckDB's over the same Parquet files.

The comparison is benches/tpch.py's agreement check (tests/fuzz/compare.py underneath):
the same rows as multisets, each engine's in the order of the query's ORDER BY, numbers
within the tolerances compare.py states. The rules are the fields of `TarnOptions`
(tests/fuzz/engines.py reads them), so a new rule is covered without editing this file."""

import concurrent.futures
import sys
import threading

import pytest

from conftest import ROOT, tarn_bin, tpch_lake

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benches"))
from tests.fuzz.engines import DuckEngine, TarnServer, tarn_rules  # noqa: E402
from tpch import TABLES, difference, query_text  # noqa: E402

SCALE = 0.05
QUERIES = range(1, 23)
RULES = tarn_rules()
# Every rule on; every rule off (and the rollup rewrite, as the fuzzer's `tarn-off`); each
# rule off alone.
CONFIGS = [frozenset(), frozenset(RULES)] + [frozenset([r]) for r in RULES]
# A server's ADBC connection silences a warning with `warnings.catch_warnings`, which is not
# thread-safe: servers start one at a time, and the warning is ignored here as well (pytest
# swaps the filters per test while a server starts in the background).
STARTING = threading.Lock()
pytestmark = pytest.mark.filterwarnings("ignore:Cannot disable autocommit")


def config_id(disabled: frozenset) -> str:
    if not disabled:
        return "all-rules-on"
    return "all-rules-off" if len(disabled) > 1 else f"{next(iter(disabled))}-off"


@pytest.fixture(scope="module")
def tpch(tmp_path_factory):
    """TPC-H SF 0.05 as Parquet (tpchgen-cli, `--parts 2`), crawled into a catalog of its
    own, and DuckDB's answers over the same files."""
    data, catalog = tpch_lake(tmp_path_factory.mktemp("tpch-oracle"), SCALE)
    duck = DuckEngine([f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{data}/{t}/*.parquet')"
                       for t in TABLES])
    try:
        expected = {q: duck.run(query_text(q, SCALE)) for q in QUERIES}
    finally:
        duck.close()
    failed = {q: o.error for q, o in expected.items() if not o.ok}
    assert not failed, f"DuckDB failed: {failed}"
    return {"catalog": catalog, "expected": expected}


def run_config(tpch: dict, disabled: frozenset) -> tuple[str, str, list[str]]:
    """The 22 queries on a server with the `disabled` rules off: its name, its flags and
    each query's difference from DuckDB."""
    with STARTING:
        server = TarnServer(tarn_bin(), tpch["catalog"], disabled, no_rollup=len(disabled) > 1)
    found = []
    try:
        for q in QUERIES:
            sql = query_text(q, SCALE)
            d = difference(q, sql, server.run(sql), tpch["expected"][q])
            if d is not None:
                found.append(d)
    finally:
        server.stop()
    return server.name, " ".join(server.command()[3:-3]), found  # the flags before `serve`


@pytest.fixture(scope="module")
def runs(request, tpch):
    """Every selected configuration's run, two servers at a time: on 2 cores about 60 s
    for all of them against 90 s one at a time (much of a debug build's query time is
    single-threaded planning)."""
    selected = [item.callspec.params["disabled"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")]
    pool = concurrent.futures.ThreadPoolExecutor(2)
    futures = {c: pool.submit(run_config, tpch, c) for c in dict.fromkeys(selected)}
    yield futures
    for f in futures.values():
        f.cancel()
    pool.shutdown()


@pytest.mark.parametrize("disabled", CONFIGS, ids=config_id)
def test_tpch_answers_match_duckdb(runs, disabled):
    name, settings, found = runs[disabled].result()
    if found:
        pytest.fail(f"{len(found)} of {len(QUERIES)} TPC-H queries differ from DuckDB on "
                    f"{name} ({settings}):\n\n" + "\n\n".join(found), pytrace=False)
