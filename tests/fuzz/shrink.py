"""Shrinking a difference to a small query, and blaming the rule (or engine) for it.

A generated query that shows a difference is usually five tables, three subqueries and a
dozen conditions, of which one or two matter. The shrinker works on the query's tree:
it tries edits that make the query smaller (drop a CTE, a join, a condition, a select
item, a grouping key, ORDER BY or LIMIT; replace `a AND b` by `a`, a CASE by one of its
values, an outer join by an inner one, a set operation by one of its arms), repairs
what an edit left dangling (conditions and items that name a table no longer joined),
and keeps an edit when all three engines still disagree *in the same way*: the same
engines agree with each other, and each one that failed fails with the same kind of
error. Edits that would make the result nondeterministic (LIMIT without a total
ORDER BY) are refused, so a shrunk query shows the difference on every run.

Attribution then asks which rule is to blame:
- rules-on and rules-off disagree: each server with exactly one rule off (started the
  first time it is needed) runs the shrunk query; the rules whose switching-off makes
  Tarn agree with rules-off (or DuckDB) are reported. If no single rule does, servers
  with every rule off but one tell which rule alone brings the difference back.
- rules-on and rules-off agree but DuckDB differs: an engine divergence (DataFusion, or a
  part of Tarn that no switch turns off, such as its table scans or its semi-join rules).
- either Tarn server answers differently when the query runs again: nondeterministic
  (an engine's when the rules-off server wavers too), whatever the rules.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

from .compare import Comparison
from .engines import Engines, Outcome
from .sqltree import (BOOL, Agg, Bin, Case, Cast, Col, Derived, Distinct, Exists, Func, InList,
                      InSub, Join, Lit, Node, Not, Query, Scalar, Select, SetOp, Win,
                      is_total_order, order_spec, render)


class Invalid(Exception):
    """An edit left a query that cannot be repaired."""


def comparison_for(q: Query) -> Comparison:
    return Comparison(q.limit is not None and is_total_order(q), order_spec(q))


def run(engines: Engines, q: Query) -> dict[str, Outcome]:
    return engines.run(render(q, "tarn"), render(q, "duckdb"))


# ------------------------------------------------------------------ edits

Path = tuple  # ((field, index or None), ...)


def paths(node: Node, path: Path = ()) -> Iterator[tuple[Path, Node]]:
    yield path, node
    for name, i, child in node.children():
        yield from paths(child, path + ((name, i),))


def resolve(root: Node, path: Path) -> Node:
    node = root
    for name, i in path:
        node = getattr(node, name) if i is None else getattr(node, name)[i]
    return node


def replace(root: Node, path: Path, new: Node) -> Node:
    if not path:
        return new
    parent = resolve(root, path[:-1])
    name, i = path[-1]
    if i is None:
        setattr(parent, name, new)
    else:
        getattr(parent, name)[i] = new
    return root


Edit = Callable[[Node], Optional[Node]]  # mutates the node, or returns its replacement


def _drop(field_name: str, i: int) -> Edit:
    def edit(n):
        del getattr(n, field_name)[i]
    return edit


def _set(field_name: str, value) -> Edit:
    def edit(n):
        setattr(n, field_name, value)
    return edit


def _to(fn: Callable[[Node], Node]) -> Edit:
    return lambda n: fn(n)


def edits(node: Node) -> Iterator[tuple[int, Edit]]:
    """(weight, edit) pairs for one node; heavier edits remove more and go first."""
    if isinstance(node, (Select, SetOp)):
        for i in range(len(node.ctes)):
            yield 100, _drop("ctes", i)
    if isinstance(node, SetOp):
        yield 90, _to(lambda n: _arm(n, n.left))
        yield 90, _to(lambda n: _arm(n, n.right))
        if len(node.left.items) > 1:
            for i in range(len(node.left.items)):
                yield 60, _drop_column(i)
    if isinstance(node, Select):
        for i in reversed(range(len(node.joins))):
            yield 80, _drop("joins", i)
        if len(node.where) > 1:
            yield 75, _set("where", [])
        for i in range(len(node.where)):
            yield 70, _drop("where", i)
        for i in range(len(node.having)):
            yield 65, _drop("having", i)
        if len(node.items) > 1:
            for i in range(len(node.items)):
                yield 60, _drop("items", i)
        for i in range(len(node.group_by)):
            yield 55, _drop_group(i)
        if node.distinct:
            yield 40, _set("distinct", False)
    if isinstance(node, (Select, SetOp)):
        if node.limit is not None:
            yield 50, _set("limit", None)
        if node.order_by:
            yield 45, _set("order_by", [])
            for i in range(len(node.order_by)):
                yield 44, _drop("order_by", i)
    if isinstance(node, Join):
        if node.kind != "INNER":
            yield 50, _set("kind", "INNER")
        # Not the first condition, the join's key: without it a join can grow a
        # thousandfold, and a query that runs for a minute is no help.
        for i in range(1, len(node.on)):
            yield 60, _drop("on", i)
    # A guard (`x <> 0 AND 8 % x = 0`) stays whole: without its left side, the error on
    # x = 0 is the query's to raise, not a difference.
    if isinstance(node, Bin) and node.op in ("AND", "OR") and not node.guard:
        yield 58, _to(lambda n: n.left)
        yield 58, _to(lambda n: n.right)
    if isinstance(node, Not):
        yield 30, _to(lambda n: n.arg)
    if isinstance(node, Distinct):
        # The plain comparison, where NULLs are not the point.
        yield 20, _to(lambda n: Bin("=" if n.negated else "<>", n.left, n.right, BOOL))
    if isinstance(node, Case) and not node.guard:
        yield 30, _to(lambda n: n.whens[0].value)
        if node.else_ is not None:
            yield 30, _to(lambda n: n.else_)
    if isinstance(node, Cast):
        yield 20, _to(lambda n: n.arg)
    if isinstance(node, Func) and node.name == "coalesce":
        yield 20, _to(lambda n: n.args[0])
    if isinstance(node, Scalar):
        yield 25, _to(lambda n: Lit(None, n.t))
    if isinstance(node, (InSub, Exists)):
        yield 25, _to(lambda n: Lit(True, BOOL))
    if isinstance(node, InList) and len(node.items) > 1:
        for i in range(len(node.items)):
            yield 20, _drop("items", i)
    if isinstance(node, Agg):
        if node.filter is not None:
            yield 30, _set("filter", None)
        if node.distinct:
            yield 15, _set("distinct", False)
    if isinstance(node, Win):
        for i in range(len(node.partition)):
            yield 20, _drop("partition", i)
        if node.frame:
            yield 15, _set("frame", None)


def _arm(op: SetOp, arm: Select) -> Select:
    arm.ctes = op.ctes
    return arm


def _drop_column(i: int) -> Edit:
    """Drops output column `i` from both arms of a set operation."""
    def edit(n: SetOp):
        for arm in (n.left, n.right):
            del arm.items[i]
        n.order_by = [o for o in n.order_by if any(o.item is it for it in n.left.items)]
    return edit


def _drop_group(i: int) -> Edit:
    """Drops a grouping key and the select items that are that key."""
    def edit(n: Select):
        key = n.group_by.pop(i)
        n.items = [it for it in n.items if it.expr is not key]
        n.order_by = [o for o in n.order_by if o.item in n.items]
    return edit


# ------------------------------------------------------------------ repair

def _aliases_used(e: Node) -> set[str]:
    """Aliases `e` names outside the subqueries it holds (those are repaired alone)."""
    out = set()
    if isinstance(e, Col):
        out.add(e.alias)
    for _, _, c in e.children():
        if not isinstance(c, (Select, SetOp)):
            out |= _aliases_used(c)
    return out


def _source_alias(s: Node) -> str:
    return s.alias


def repair(q: Query, outer: frozenset = frozenset()) -> Query:
    """Drops what names a table the query no longer has; raises Invalid where the query
    cannot stand (no items, LIMIT without a total order, mismatched UNION arms)."""
    for cte in q.ctes:
        repair(cte.query)
    if isinstance(q, SetOp):
        repair(q.left, outer)
        repair(q.right, outer)
        if len(q.left.items) != len(q.right.items):
            raise Invalid("union arms differ")
        q.order_by = [o for o in q.order_by if any(o.item is it for it in q.left.items)]
    else:
        visible = set(outer) | {_source_alias(q.source)}
        if isinstance(q.source, Derived):
            repair(q.source.query)
        for j in q.joins:
            visible.add(_source_alias(j.source))
            if isinstance(j.source, Derived):
                repair(j.source.query)
            j.on = [c for c in j.on if _aliases_used(c) <= visible]
            if not j.on:
                raise Invalid("a join lost its conditions")
        def keep(e):
            return _aliases_used(e) <= visible
        q.where = [c for c in q.where if keep(c)]
        q.group_by = [g for g in q.group_by if keep(g)]
        q.having = [c for c in q.having if keep(c)]
        q.items = [it for it in q.items if keep(it.expr)]
        if not q.items:
            raise Invalid("no items")
        for it in q.items:
            for n in _walk_expr(it.expr):
                if isinstance(n, Win):
                    n.order = [k for k in n.order if keep(k.expr)]
                    n.partition = [p for p in n.partition if keep(p)]
        q.order_by = [o for o in q.order_by if any(o.item is it for it in q.items)]
        for part in (q.where, q.having, [it.expr for it in q.items], [c for j in q.joins for c in j.on]):
            for e in part:
                for sub in _subqueries(e):
                    repair(sub, frozenset(visible))
    if q.limit is not None and not is_total_order(q):
        raise Invalid("LIMIT without a total order")
    return q


def _walk_expr(e: Node) -> Iterator[Node]:
    yield e
    for _, _, c in e.children():
        if not isinstance(c, (Select, SetOp)):
            yield from _walk_expr(c)


def _subqueries(e: Node) -> Iterator[Query]:
    for n in _walk_expr(e):
        for _, _, c in n.children():
            if isinstance(c, (Select, SetOp)):
                yield c


def candidates(q: Query) -> Iterator[Query]:
    """Smaller queries than `q`, the largest cuts first."""
    found = []
    for path, node in paths(q):
        for weight, edit in edits(node):
            found.append((-weight, len(path), path, edit))
    found.sort(key=lambda x: (x[0], x[1]))
    for _, _, path, edit in found:
        new = copy.deepcopy(q)
        target = resolve(new, path)
        replacement = edit(target)
        if replacement is not None:
            new = replace(new, path, replacement)
        if not isinstance(new, (Select, SetOp)):
            continue
        try:
            yield repair(new)
        except Invalid:
            continue


@dataclass
class Shrunk:
    query: Query
    outcomes: dict[str, Outcome]
    steps: int  # candidates run
    accepted: int  # edits kept
    seconds: float


def shrink(engines: Engines, q: Query, signature: tuple, outcomes: dict[str, Outcome],
           max_runs: int = 150, max_seconds: float = 90.0) -> Shrunk:
    """The smallest query reachable by accepted edits within the budget."""
    start = time.monotonic()
    best, best_out = q, outcomes
    seen = {render(q)}
    runs = accepted = 0
    progress = True
    while progress and runs < max_runs and time.monotonic() - start < max_seconds:
        progress = False
        for cand in candidates(best):
            sql = render(cand)
            if sql in seen:
                continue
            seen.add(sql)
            if runs >= max_runs or time.monotonic() - start >= max_seconds:
                break
            runs += 1
            out = run(engines, cand)
            if comparison_for(cand).signature(out) == signature:
                best, best_out = cand, out
                accepted += 1
                progress = True
                break
    return Shrunk(best, best_out, runs, accepted, time.monotonic() - start)


# ------------------------------------------------------------------ attribution

@dataclass
class Attribution:
    kind: str  # "rule", "rules", "engine", "oracle", "nondeterministic", "unknown"
    rules: list[str] = field(default_factory=list)
    detail: str = ""
    engine_too: bool = False  # rules-off also differs from DuckDB

    @property
    def label(self) -> str:
        if self.kind == "engine":
            return "engine (DataFusion)" + (" where rules are off" if self.engine_too else "")
        if self.kind == "oracle":
            return "oracle (DuckDB fails)"
        if self.kind == "nondeterministic":
            return "nondeterministic " + ("engine (DataFusion)" if self.engine_too else "Tarn rules")
        if self.rules:
            return ("tarn." + " / tarn.".join(self.rules)) + (" + engine" if self.engine_too else "")
        return self.kind


def attribute(engines: Engines, q: Query, outcomes: dict[str, Outcome]) -> Attribution:
    return attribute_sql(engines, render(q, "tarn"), comparison_for(q), outcomes)


def attribute_sql(engines: Engines, sql: str, cmp: Comparison,
                  outcomes: dict[str, Outcome]) -> Attribution:
    """The blame for a difference between `outcomes` (of `sql` on the three engines)."""
    on, off, duck = outcomes["tarn-on"], outcomes["tarn-off"], outcomes["duckdb"]
    # A server that answers differently when asked again makes every comparison below a
    # coin toss: say so instead of blaming whichever rule the toss picks.
    again = {"tarn-on": engines.pool.submit(engines.on.run, sql),
             "tarn-off": engines.pool.submit(engines.off.run, sql)}
    unstable = [name for name, first in (("tarn-on", on), ("tarn-off", off))
                if not cmp.agree(again[name].result(), first)]
    if unstable:
        return Attribution(
            "nondeterministic", [], " and ".join(unstable) + " answered differently when "
            "the query ran again" + ("" if "tarn-off" in unstable else " (only with the "
                                     "rules on)"), engine_too="tarn-off" in unstable)
    if cmp.agree(on, off):
        if duck.error is not None and on.error is None:
            # SQL leaves the order of evaluation open: DuckDB may evaluate a guarded
            # `8 % x` on a row where the guard fails, as DataFusion may. And DuckDB has
            # internal errors of its own.
            return Attribution("oracle", detail="DuckDB fails where Tarn, with and without "
                               "its rules, answers alike: not Tarn's difference")
        return Attribution("engine", detail="Tarn with every rule off agrees with Tarn "
                           "with its defaults; DuckDB differs")
    if cmp.agree(on, duck):
        # Rules-off alone is wrong: an engine divergence that some rule happens to avoid.
        masking = [r for r in engines.rules
                   if cmp.agree(engines.with_off(frozenset(engines.rules) - {r}).run(sql), on)]
        return Attribution("engine", masking, "only Tarn with every rule off differs (from "
                           "Tarn with its defaults and DuckDB): an engine divergence"
                           + (", avoided by " + " or ".join(f"tarn.{r}" for r in masking)
                              if masking else ""), engine_too=True)
    engine_too = not cmp.agree(off, duck)
    # Which rule's absence makes Tarn answer as it does with every rule off?
    fixes = [r for r in engines.rules
             if cmp.agree(engines.with_off(frozenset([r])).run(sql), off)]
    if fixes:
        return Attribution("rule" if len(fixes) == 1 else "rules", fixes,
                           "switching off " + (" or ".join(f"tarn.{r}" for r in fixes))
                           + " alone removes the difference", engine_too)
    # No one rule's absence helps: which rule, alone on, brings the difference back?
    alone = [r for r in engines.rules
             if cmp.agree(engines.with_off(frozenset(engines.rules) - {r}).run(sql), on)]
    if alone:
        return Attribution("rules", alone, "no single rule's switching-off removes the "
                           "difference; with every other rule off, "
                           + " or ".join(f"tarn.{r}" for r in alone) + " alone brings it back",
                           engine_too)
    return Attribution("unknown", [], "a combination of rules (or the rollup rewrite): no "
                       "single rule switched off or on alone explains it", engine_too)
