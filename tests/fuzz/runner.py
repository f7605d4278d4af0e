"""One fuzzing run: write and crawl the lake, start the engines, generate and compare
queries, shrink and attribute the differences, write the reports.

A difference found once is usually found again and again (a bug in a common shape), and
shrinking costs a hundred runs of three engines. So each difference is first attributed
as found (cheap), and only the first `shrink_per_key` differences with the same *key*
(query class, who disagrees with whom, the errors' kinds, the rules blamed) are shrunk;
the rest are counted against the finding they repeat.
"""

from __future__ import annotations

import collections
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .compare import ENGINES, describe, error_kind, multiset_equal, normalise
from .engines import Engines, Outcome
from .gen import CLASSES, Generated, Generator
from .lake import SCHEMA, column_values, duckdb_views, write_lake
from .shrink import Attribution, attribute, comparison_for, shrink
from .sqltree import Bin, Col, Distinct, InSub, Join, Lit, Query, Scalar, Select, render, walk


# Errors that mean "DataFusion does not plan this", not "DataFusion got it wrong": a query
# that fails so on both Tarn servers is counted as unsupported, not as a difference. The
# generator avoids these shapes; the list is a safety net, and short on purpose.
UNSUPPORTED = (
    "This feature is not implemented",
    "null_aware anti join only supports single column join key",
)


@dataclass
class Finding:
    seed: int
    index: int
    cls: str
    sql: str
    duck_sql: str
    signature: tuple
    outcomes: dict[str, Outcome]
    attribution: Attribution
    key: tuple
    query: Optional[Query] = None
    shrunk: Optional[Query] = None
    shrunk_sql: Optional[str] = None
    shrunk_duck_sql: Optional[str] = None
    shrunk_outcomes: Optional[dict[str, Outcome]] = None
    shrink_note: str = ""
    known: list[str] = field(default_factory=list)
    reproduce: str = ""
    repeats: list[tuple[int, int]] = field(default_factory=list)  # (seed, index) found again

    @property
    def name(self) -> str:
        return f"seed{self.seed}-q{self.index:04d}"


@dataclass
class Summary:
    queries: int = 0
    skipped: int = 0
    skipped_kinds: collections.Counter = field(default_factory=collections.Counter)
    differences: int = 0
    findings: list[Finding] = field(default_factory=list)
    classes: collections.Counter = field(default_factory=collections.Counter)
    features: collections.Counter = field(default_factory=collections.Counter)
    empty: int = 0
    unsupported: int = 0
    seconds: float = 0.0
    engine_seconds: collections.Counter = field(default_factory=collections.Counter)
    shrink_seconds: float = 0.0

    @property
    def skip_rate(self) -> float:
        return self.skipped / self.queries if self.queries else 0.0


def _has(q: Query, pred) -> bool:
    return any(pred(n) for n in walk(q))


def _not_in_under_or(q):
    return _has(q, lambda n: isinstance(n, Bin) and n.op == "OR" and any(
        isinstance(x, InSub) and x.negated for x in walk(n)))


# The known issues of the brief, recognised in a shrunk query and its outcomes, so that a
# report says which one a finding is (or that it is new).
KNOWN: list[tuple[str, Callable[[Finding], bool]]] = [
    ("K1 eager aggregation loses the ORDER BY (tarn.aggregate_before_joins)",
     lambda f: "aggregate_before_joins" in f.attribution.rules
     and _has(f.shrunk, lambda n: isinstance(n, Select) and bool(n.group_by))),
    ("K2 NOT IN (…) under OR with NULLs: wrong rows",
     lambda f: _not_in_under_or(f.shrunk) and _kinds(f) == ("rows",) * 3),
    ("K3 ON a IS NOT DISTINCT FROM b plus WHERE equality: NULL = NULL matched",
     lambda f: _has(f.shrunk, lambda n: isinstance(n, Join) and any(
         isinstance(c, Distinct) and c.negated for c in n.on))
     and _has(f.shrunk, lambda n: isinstance(n, Select) and any(
         _has(c, _column_equality) for c in n.where)) and not _order_only(f)),
    ("K4 outer join with an ON constant, ORDER BY … NULLS LAST: NULLs sorted first",
     lambda f: _has(f.shrunk, lambda n: isinstance(n, Join) and n.kind != "INNER" and any(
         isinstance(c, Bin) and c.op == "=" and isinstance(c.right, Lit) for c in n.on))
     and bool(f.shrunk.order_by) and (_order_only(f) or f.shrunk.limit is not None)),
    ("K5 a IS [NOT] DISTINCT FROM b AND c: parsed as a IS DISTINCT FROM (b AND c)",
     lambda f: _has(f.shrunk, lambda n: isinstance(n, Distinct) and n.bare)
     and any("logical boolean operation" in k or "Parser" in k for k in _kinds(f))
     or _bare_distinct_operand(f.shrunk)),
    ("K6 guarded arithmetic (x <> 0 AND 8 % x = 0): divide by zero",
     lambda f: any("Divide by zero" in k for k in _kinds(f))),
    ("O1 DuckDB fails where Tarn answers (a guarded expression it evaluated, or an "
     "internal error): DuckDB's, not Tarn's",
     lambda f: f.attribution.kind == "oracle"),
    ("K7 correlated scalar subquery over an empty group",
     lambda f: _has(f.shrunk, lambda n: isinstance(n, Scalar))),
]


def _bare_distinct_operand(q: Query) -> bool:
    """An unparenthesised IS [NOT] DISTINCT FROM on the left of AND / OR (a WHERE's or
    ON's list of conditions is an AND too)."""
    def left_of_and(n):
        if isinstance(n, Bin) and n.op in ("AND", "OR"):
            return isinstance(n.left, Distinct) and n.left.bare
        if isinstance(n, Select):
            return any(isinstance(c, Distinct) and c.bare for c in n.where[:-1])
        if isinstance(n, Join):
            return any(isinstance(c, Distinct) and c.bare for c in n.on[:-1])
        return False
    return _has(q, left_of_and)


def _column_equality(n) -> bool:
    return (isinstance(n, Bin) and n.op == "=" and isinstance(n.left, Col)
            and isinstance(n.right, Col) and n.left.alias != n.right.alias)


def _order_only(f: Finding) -> bool:
    """Every engine returned the same rows, in a different order."""
    outs = f.shrunk_outcomes or f.outcomes
    if any(o.error is not None for o in outs.values()):
        return False
    rows = [normalise(o.rows) for o in outs.values()]
    return all(multiset_equal(rows[0], r) for r in rows[1:])


def _kinds(f: Finding) -> tuple:
    return f.signature[1]


class Fuzzer:
    """Owns the lake, the catalog and the engines for one or more seeds' runs."""

    def __init__(self, binary: str, workdir: Path, out_dir: Optional[Path] = None,
                 shrink: bool = True, shrink_per_key: int = 2, max_shrink_runs: int = 150,
                 max_shrink_seconds: float = 90.0, shrink_budget: Optional[float] = None,
                 extra_config: tuple[str, ...] = (), log: Callable[[str], None] = print):
        self.binary, self.out_dir, self.log = binary, out_dir, log
        self.extra_config = extra_config
        self.forced_cls: Optional[str] = None
        self.shrink, self.shrink_per_key = shrink, max(1, shrink_per_key)
        self.max_shrink_runs, self.max_shrink_seconds = max_shrink_runs, max_shrink_seconds
        self.shrink_budget = shrink_budget  # seconds of shrinking per run, then none
        lake, data = workdir / "lake", workdir / "data"
        write_lake(lake)
        crawl = subprocess.run([binary, "--data-dir", str(data), "crawl", str(lake), "--json"],
                               capture_output=True, text=True, timeout=300)
        if crawl.returncode != 0:
            raise RuntimeError(f"crawl failed: {crawl.stderr}")
        report = json.loads(crawl.stdout)
        if report["problems"]:
            raise RuntimeError(f"crawl reported problems: {report['problems']}")
        expected = sorted(f"default.{t}" for t in SCHEMA)
        if sorted(report["tables_created"]) != expected:
            raise RuntimeError(f"crawl made {report['tables_created']}, expected {expected}")
        views = duckdb_views(lake)
        self.engines = Engines(binary, data, views, extra_config=extra_config)
        con = self.engines.duck.con
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in SCHEMA}
        self.generator = Generator(column_values(con), counts)
        self.by_key: dict[tuple, list[Finding]] = collections.defaultdict(list)

    def close(self):
        self.engines.close()

    def run(self, seeds: list[int], queries: int, only: Optional[list[int]] = None,
            cls: Optional[str] = None, show: bool = False) -> Summary:
        summary = Summary()
        self.forced_cls = cls
        start = time.monotonic()
        for seed in seeds:
            for index in (only if only is not None else range(queries)):
                self.one(summary, self.generator.generate(seed, index, cls), show)
                if summary.queries % 100 == 0:
                    self.log(f"  {summary.queries} queries, {summary.differences} differences, "
                             f"{len(summary.findings)} findings, {summary.skipped} skipped, "
                             f"{time.monotonic() - start:.0f} s")
        summary.seconds = time.monotonic() - start
        if self.out_dir is not None:
            self.write(summary)
        return summary

    def one(self, summary: Summary, g: Generated, show: bool):
        summary.queries += 1
        summary.classes[g.cls] += 1
        summary.features.update(g.features)
        sql, duck_sql = render(g.query, "tarn"), render(g.query, "duckdb")
        if show:
            self.log(f"[{g.seed}:{g.index} {g.cls}] {sql}")
        outcomes = self.engines.run(sql, duck_sql)
        for name, o in outcomes.items():
            summary.engine_seconds[name] += o.seconds
        if all(o.error is not None for o in outcomes.values()):
            summary.skipped += 1
            summary.skipped_kinds[error_kind(outcomes["duckdb"].error)] += 1
            return
        on, off = outcomes["tarn-on"].error or "", outcomes["tarn-off"].error or ""
        if any(u in on and u in off for u in UNSUPPORTED):
            summary.unsupported += 1
            return
        if outcomes["duckdb"].ok and not outcomes["duckdb"].rows:
            summary.empty += 1
        cmp = comparison_for(g.query)
        signature = cmp.signature(outcomes)
        if len(signature[0]) == 1:
            return
        summary.differences += 1
        self.record(summary, g, sql, duck_sql, signature, outcomes)

    def record(self, summary: Summary, g: Generated, sql: str, duck_sql: str,
               signature: tuple, outcomes: dict[str, Outcome]):
        """Attributes a difference and, unless it repeats one already shrunk, shrinks
        it, attributes the shrunk query and reports it."""
        attribution = attribute(self.engines, g.query, outcomes)
        # Errors name their kind; wrong rows are told apart by the query's class too.
        rows_only = all(k == "rows" for k in signature[1])
        key = (g.cls if rows_only else "", signature, attribution.label)
        seen = self.by_key[key]
        if len(seen) >= self.shrink_per_key:
            seen[0].repeats.append((g.seed, g.index))
            return
        finding = Finding(g.seed, g.index, g.cls, sql, duck_sql, signature, outcomes,
                          attribution, key, g.query)
        finding.reproduce = (f"scripts/fuzz --seed {g.seed} --only {g.index}"
                             + (f" --class {g.cls}" if self.forced_cls else "")
                             + (f" --tarn-config {','.join(self.extra_config)}"
                                if self.extra_config else ""))
        started = time.monotonic()
        budget_left = self.shrink_budget is None or summary.shrink_seconds < self.shrink_budget
        if self.shrink and budget_left:
            s = shrink(self.engines, g.query, signature, outcomes, self.max_shrink_runs,
                       self.max_shrink_seconds)
            finding.shrunk, finding.shrunk_outcomes = s.query, s.outcomes
            finding.shrink_note = f"{s.accepted} edits kept of {s.steps} tried in {s.seconds:.1f} s"
            finding.attribution = attribute(self.engines, s.query, s.outcomes)
        else:
            finding.shrunk, finding.shrunk_outcomes = g.query, outcomes
            finding.shrink_note = ("not shrunk (--no-shrink)" if not self.shrink
                                   else "not shrunk (the run's shrinking budget was spent)")
        finding.shrunk_sql = render(finding.shrunk, "tarn")
        finding.shrunk_duck_sql = render(finding.shrunk, "duckdb")
        finding.known = [name for name, test in KNOWN if _safe(test, finding)]
        if len(finding.known) > 1:
            finding.known = [k for k in finding.known if not k.startswith("K7")]
        summary.shrink_seconds += time.monotonic() - started
        seen.append(finding)
        summary.findings.append(finding)
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / f"{finding.name}.md").write_text(format_finding(finding))
        self.log(f"  difference {finding.name} [{g.cls}] → {finding.attribution.label}: "
                 f"{finding.shrunk_sql}")

    # ------------------------------------------------------------ reports

    def write(self, summary: Summary):
        out = self.out_dir
        out.mkdir(parents=True, exist_ok=True)
        for f in summary.findings:
            (out / f"{f.name}.md").write_text(format_finding(f))
        (out / "summary.md").write_text(format_summary(summary))
        (out / "summary.json").write_text(json.dumps(summary_json(summary), indent=2))


def _safe(test, finding) -> bool:
    try:
        return bool(test(finding))
    except Exception:  # noqa: BLE001 - a recogniser must not stop the run
        return False


def _outcomes(outcomes: dict[str, Outcome], q: Optional[Query], limit: int = 20) -> str:
    cmp = comparison_for(q) if q is not None else None
    spec = cmp.spec if cmp is not None and not cmp.ordered else None
    return "\n".join(f"--- {name}: {describe(outcomes[name], limit, spec)}" for name in ENGINES)


def format_finding(f: Finding) -> str:
    lines = [
        f"# Difference {f.name} (class {f.cls})",
        "",
        f"Attribution: **{f.attribution.label}**. {f.attribution.detail}.",
        f"Known issue: {'; '.join(f.known) if f.known else 'none recognised (NEW?)'}",
        f"Who agrees: {' | '.join(', '.join(g) for g in f.signature[0])}; "
        f"outcomes: {', '.join(f'{n}={k}' for n, k in zip(ENGINES, f.signature[1]))}",
        f"Shrinking: {f.shrink_note}",
        f"Found again at: {', '.join(f'{s}:{i}' for s, i in f.repeats) or '-'}",
        f"Reproduce: {f.reproduce}",
        "",
        "## Shrunk query", "", "```sql", f.shrunk_sql or "", "```",
    ]
    if f.shrunk_duck_sql != f.shrunk_sql:
        lines += ["", "As DuckDB runs it:", "", "```sql", f.shrunk_duck_sql or "", "```"]
    lines += ["", "## Results of the shrunk query", "", "```",
              _outcomes(f.shrunk_outcomes or {}, f.shrunk), "```", "",
              "## Original query", "", "```sql", f.sql, "```", "",
              "## Results of the original query", "", "```", _outcomes(f.outcomes, f.query, 8),
              "```", ""]
    return "\n".join(lines)


def format_summary(s: Summary) -> str:
    lines = [
        f"{s.queries} queries in {s.seconds:.0f} s "
        f"(engines: {', '.join(f'{k} {v:.0f} s' for k, v in s.engine_seconds.items())}; "
        f"shrinking {s.shrink_seconds:.0f} s)",
        f"skipped (every engine failed): {s.skipped} ({100 * s.skip_rate:.1f}%)"
        + (f": {dict(s.skipped_kinds)}" if s.skipped else ""),
        f"empty results: {s.empty}; unsupported by DataFusion: {s.unsupported}; "
        f"differences: {s.differences}; "
        f"findings: {len(s.findings)}",
        "classes: " + ", ".join(f"{c} {s.classes[c]}" for c in CLASSES),
    ]
    for f in s.findings:
        lines += ["", f"* {f.name} [{f.cls}] {f.attribution.label} "
                  f"({len(f.repeats)} repeats) — {'; '.join(f.known) or 'NEW?'}",
                  f"  {f.shrunk_sql}"]
    return "\n".join(lines) + "\n"


def summary_json(s: Summary) -> dict:
    return {
        "queries": s.queries, "seconds": round(s.seconds, 1), "skipped": s.skipped,
        "skip_rate": round(s.skip_rate, 4), "skipped_kinds": dict(s.skipped_kinds),
        "empty": s.empty, "unsupported": s.unsupported, "differences": s.differences,
        "engine_seconds": {k: round(v, 1) for k, v in s.engine_seconds.items()},
        "shrink_seconds": round(s.shrink_seconds, 1),
        "classes": dict(s.classes), "features": dict(s.features),
        "findings": [{
            "name": f.name, "seed": f.seed, "index": f.index, "class": f.cls,
            "attribution": f.attribution.label, "rules": f.attribution.rules,
            "detail": f.attribution.detail, "known": f.known,
            "groups": [list(g) for g in f.signature[0]], "kinds": list(f.signature[1]),
            "shrunk_sql": f.shrunk_sql, "sql": f.sql, "repeats": f.repeats,
        } for f in s.findings],
    }
