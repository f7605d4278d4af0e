"""The differential query generator (tests/fuzz) as a test: a fixed-seed run of a few
hundred random queries on DuckDB, on Tarn with every planner rule on and with every rule
off. Any difference fails the test (except one where DuckDB alone fails), listed shrunk
and attributed to a rule or to the engine, with a report per difference under
target/fuzz/pytest/.

TARN_FUZZ_QUERIES scales it (0 skips it), TARN_FUZZ_SEED picks the seed. `scripts/fuzz`
runs longer campaigns."""

import os
import sys

import pytest

from conftest import ROOT, tarn_bin

sys.path.insert(0, str(ROOT))
from tests.fuzz.gen import CLASSES  # noqa: E402
from tests.fuzz.runner import Fuzzer  # noqa: E402

QUERIES = int(os.environ.get("TARN_FUZZ_QUERIES", "300"))
SEED = int(os.environ.get("TARN_FUZZ_SEED", "1"))


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    if QUERIES <= 0:
        pytest.skip("asked: TARN_FUZZ_QUERIES=0")
    out = ROOT / "target" / "fuzz" / "pytest"
    # Shrinking is capped (15 s a difference, 30 s in all; later differences are listed
    # unshrunk) so that the test stays well under three minutes with a debug binary.
    fuzzer = Fuzzer(tarn_bin(), tmp_path_factory.mktemp("fuzz"), out, shrink_per_key=1,
                    max_shrink_runs=40, max_shrink_seconds=15, shrink_budget=30,
                    log=lambda m: None)
    try:
        yield fuzzer.run([SEED], QUERIES)
    finally:
        fuzzer.close()


def test_every_query_class_is_generated(summary):
    missing = [c for c in CLASSES if not summary.classes[c]]
    assert not missing, f"query classes never generated in {summary.queries} queries: {missing}"


def test_few_queries_fail_everywhere(summary):
    # A query every engine rejects (or DataFusion does not plan) tests nothing: a high
    # share means the generator writes SQL the engines do not take.
    wasted = summary.skipped + summary.unsupported
    assert wasted < 0.05 * summary.queries, (
        f"{summary.skipped} of {summary.queries} queries failed on every engine "
        f"({dict(summary.skipped_kinds)}), {summary.unsupported} are unsupported by DataFusion")


def test_tarn_agrees_with_duckdb(summary):
    # A difference where DuckDB alone fails (an `8 % x` it evaluated past its guard) is
    # reported, but is not Tarn's to fix.
    if all(f.attribution.kind == "oracle" for f in summary.findings):
        return
    lines = [f"{summary.differences} of {summary.queries} queries (seed {SEED}) differ; "
             f"{len(summary.findings)} kinds, shrunk (reports in target/fuzz/pytest/):"]
    for f in summary.findings:
        lines += [
            "",
            f"{f.name} [{f.cls}] → {f.attribution.label}"
            f" ({len(f.repeats)} more like it)",
            f"  {f.attribution.detail}",
            f"  known issue: {'; '.join(f.known) or 'none recognised'}",
            f"  {f.shrunk_sql}",
            f"  outcomes: " + ", ".join(f"{n}={k}" for n, k in
                                         zip(("tarn-on", "tarn-off", "duckdb"), f.signature[1])),
        ]
    pytest.fail("\n".join(lines), pytrace=False)
