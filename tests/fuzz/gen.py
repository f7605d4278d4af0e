"""The seeded query generator: a small weighted grammar over the lake's tables.

Query `i` of seed `s` comes from `random.Random(f"{s}:{i}")`, so any one query can be
regenerated alone (`scripts/fuzz --seed s --only i`). A query is built from composable
pieces: a FROM clause of joined tables (joined along the lake's key domains, with outer
joins, extra ON conditions and `IS NOT DISTINCT FROM` keys), predicates (comparisons,
LIKE, IN lists, guarded arithmetic, IS [NOT] DISTINCT FROM, subqueries: IN / NOT IN /
EXISTS / NOT EXISTS / scalar, possibly correlated, possibly under OR), select items
(expressions, scalar subqueries, window functions), grouping with aggregates of every
type, set operations and CTEs. Each query has a *class* (the shape it is meant to
exercise: `eager`, `semi`, `window`, …), which biases the grammar's weights and forces the
class's construct in; `features` records what was actually generated.

Only SQL that means the same in DuckDB and Tarn (DataFusion) is generated:
- no integer `/` (DuckDB's is a double division), no multiplication of two decimals
  (DuckDB overflows DECIMAL(18) where DataFusion widens), no unguarded `%` by a column
  that holds zeros, no string casts of floats or dates, no functions one engine lacks;
- decimal literals are `CAST('1.25' AS DECIMAL(15,2))` (a bare `1.25` is a double in
  DataFusion and a decimal in DuckDB), floats are multiples of 1/4;
- every ORDER BY key says NULLS FIRST or NULLS LAST (the engines' defaults differ), every
  ORDER BY before a LIMIT sorts by all output columns (so the kept rows are determined),
  and every window function that depends on row order (row_number, lag, ROWS frames)
  ends its ORDER BY with the tables' unique columns;
- scalar subqueries aggregate without grouping, so they return exactly one row.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Optional

from .lake import (BIGINT, DATE, DEC15, DEC38, DOMAINS, DOUBLE, INT, SCHEMA, STR, TS,
                   UNIQUE)
from .sqltree import (BOOL, Agg, Between, Bin, Case, Cast, Col, Cte, Derived, Distinct,
                      Exists, Func, InList, InSub, IsNull, Item, Join, Like, Lit, Not,
                      OrderBy, Query, Scalar, Select, SetOp, SortKey, TableRef, When, Win,
                      family, walk)

NUMERIC = (INT, BIGINT, DEC15, DEC38, DOUBLE)
MAX_ROWS = 20_000  # estimated rows a FROM clause may build (keeps each query fast)

# Query classes and their weights. Each is a method `q_<class>` of `_Builder`.
CLASSES = {
    "join": 12, "outer": 10, "semi": 12, "scalar": 9, "group": 11, "eager": 8,
    "window": 8, "setop": 5, "cte": 7, "like": 5, "guard": 6, "topn": 7,
    "distinct_from": 7, "minmax_self": 4, "total_share": 3, "partition_agg": 5,
}

PREFIX = {"sales": "s", "customers": "c", "products": "p", "stores": "st", "returns": "r"}
STRINGS = ["north", "a%b", "x_y", "東京", "", "plain", "Paris", "abc", "corp", "tools"]
LIKE_PATTERNS = ["%a%b%", "%a%", "a%", "%b", "_", "__", "%", "", "%東京%", "a_b%", "%o%o%",
                 "%r%t%h%", "%_%", "x%y", "%x%y%"]


@dataclass
class Rel:
    """Something a FROM clause can name: a lake table or a CTE."""
    name: str
    columns: list[tuple[str, str]]  # (name, type class)
    domains: dict[str, str]  # column -> join domain
    unique: list[str]  # columns that together tell the rows apart
    rows: int
    values: dict[str, list] = field(default_factory=dict)  # column -> values in it
    base: bool = True

    def distinct(self, col: str) -> int:
        return max(1, len(self.values.get(col, ())) or self.rows)


@dataclass
class Bound:
    alias: str
    rel: Rel
    nullable: bool = False  # on the null-extended side of an outer join


class Scope:
    def __init__(self, parent: Optional["Scope"] = None):
        self.bound: list[Bound] = []
        self.parent = parent

    def find(self, alias: str) -> Optional[Bound]:
        """The table bound to `alias` here or in an enclosing query's scope."""
        for b in self.bound:
            if b.alias == alias:
                return b
        return self.parent.find(alias) if self.parent is not None else None


@dataclass
class Generated:
    seed: int
    index: int
    cls: str
    query: Query
    features: set[str]


def lake_rels(values: dict, counts: dict[str, int]) -> dict[str, Rel]:
    rels = {}
    for table, columns in SCHEMA.items():
        domains = {col: d for d, members in DOMAINS.items() for t, col in members if t == table}
        rels[table] = Rel(
            table, list(columns), domains, [UNIQUE[table]], counts[table],
            {c: values[(table, c)] for c, _ in columns})
    return rels


class Generator:
    """Makes query `index` of `seed`; `values` and `counts` describe the lake."""

    def __init__(self, values: dict, counts: dict[str, int]):
        self.rels = lake_rels(values, counts)

    def generate(self, seed: int, index: int, cls: Optional[str] = None) -> Generated:
        rng = random.Random(f"{seed}:{index}")
        b = _Builder(self, rng)
        picked = rng.choices(list(CLASSES), weights=list(CLASSES.values()))[0]
        cls = cls or picked
        q = getattr(b, "q_" + cls)()
        b.features.add("class:" + cls)
        b.features |= _structural_features(q)
        return Generated(seed, index, cls, q, b.features)


def _structural_features(q: Query) -> set[str]:
    out = set()
    for n in walk(q):
        if isinstance(n, Join):
            out.add(f"join:{n.kind.lower()}")
        elif isinstance(n, InSub):
            out.add("not_in" if n.negated else "in_subquery")
        elif isinstance(n, Exists):
            out.add("not_exists" if n.negated else "exists")
        elif isinstance(n, Scalar):
            out.add("scalar_subquery")
        elif isinstance(n, Win):
            out.add("window")
        elif isinstance(n, Agg):
            out.add("aggregate")
            if n.distinct:
                out.add("count_distinct")
            if n.filter is not None:
                out.add("agg_filter")
        elif isinstance(n, Like):
            out.add("like")
        elif isinstance(n, Distinct):
            out.add("distinct_from")
        elif isinstance(n, SetOp):
            out.add(n.op.lower().replace(" ", "_"))
        elif isinstance(n, Select):
            if n.having:
                out.add("having")
            if n.limit is not None:
                out.add("limit")
            if n.ctes:
                out.add("cte")
        elif isinstance(n, Bin) and n.op == "%":
            out.add("modulo")
    return out


def rename(node, mapping: dict[str, str]):
    """A copy of `node` with the table aliases in `mapping` renamed."""
    out = copy.deepcopy(node)
    for n in (x for top in (out if isinstance(out, list) else [out]) for x in walk(top)):
        if isinstance(n, Col) and n.alias in mapping:
            n.alias = mapping[n.alias]
        elif isinstance(n, (TableRef, Derived)) and n.alias in mapping:
            n.alias = mapping[n.alias]
    return out


def inline(q: Query):
    """Replaces `q`'s CTEs by derived tables (a copy of the CTE's query per reference)."""
    ctes = {c.name: c.query for c in q.ctes}
    q.ctes = []
    for n in walk(q):
        for name, i, child in list(n.children()):
            if isinstance(child, TableRef) and child.name in ctes:
                new = Derived(copy.deepcopy(ctes[child.name]), child.alias)
                if i is None:
                    setattr(n, name, new)
                else:
                    getattr(n, name)[i] = new


class _Builder:
    """Builds one query; the state (aliases, CTEs, features) of a single generation."""

    def __init__(self, gen: Generator, rng: random.Random):
        self.rng = rng
        self.rels = dict(gen.rels)
        self.features: set[str] = set()
        self.counter = 0
        self.ctes: list[Cte] = []

    # ------------------------------------------------------------ small helpers

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, options: dict):
        keys = list(options)
        return self.rng.choices(keys, weights=[options[k] for k in keys])[0]

    def alias(self, rel: Rel) -> str:
        self.counter += 1
        return f"{PREFIX.get(rel.name, 'a')}{self.counter}"

    def columns(self, scope: Scope, types=None, fam=None, domain=False,
                nonkey=False) -> list[Col]:
        out = []
        for b in scope.bound:
            for name, t in b.rel.columns:
                if types and t not in types:
                    continue
                if fam and family(t) != fam:
                    continue
                if domain and name not in b.rel.domains:
                    continue
                if nonkey and (name in b.rel.domains or name in b.rel.unique):
                    continue
                out.append(Col(b.alias, name, t))
        return out

    def col(self, scope: Scope, **kw) -> Optional[Col]:
        cols = self.columns(scope, **kw)
        return self.rng.choice(cols) if cols else None

    def values_of(self, scope: Scope, c: Col) -> list:
        """Values that occur in column `c` (none known for a CTE's aggregates)."""
        b = scope.find(c.alias)
        return b.rel.values.get(c.name, []) if b is not None else []

    def lit(self, t: str, pool: Optional[list] = None, null: float = 0.0) -> Lit:
        if self.chance(null):
            return Lit(None, t)
        if pool and self.chance(0.85):
            return Lit(self.rng.choice(pool), t)
        r = self.rng
        value = {
            INT: lambda: r.choice([0, 1, 2, 3, 4, 5, 8, 10, -1, -2]),
            BIGINT: lambda: r.choice([0, 1, 2, 5, 10, 100, 1200, 2000, 3000, -1]),
            DEC15: lambda: Decimal(r.randrange(-100000, 100000)) / 100,
            DEC38: lambda: Decimal(r.randrange(1, 5 * 10**9)) / 10**10,
            DOUBLE: lambda: r.randrange(-40, 400) / 4,
            STR: lambda: r.choice(STRINGS),
            DATE: lambda: dt.date(2024, 1, 1) + dt.timedelta(days=r.randrange(-3, 5)),
            TS: lambda: dt.datetime(2024, 1, 1) + dt.timedelta(minutes=r.randrange(-600, 6000)),
            BOOL: lambda: r.random() < 0.5,
        }[t]()
        return Lit(value, t)

    def lit_for(self, scope: Scope, c: Col, null: float = 0.0) -> Lit:
        return self.lit(c.t, self.values_of(scope, c), null)

    # ------------------------------------------------------------ FROM clauses

    def new_source(self, scope: Scope, rel: Rel) -> TableRef:
        a = self.alias(rel)
        scope.bound.append(Bound(a, rel))
        return TableRef(rel.name, a)

    def block(self, parent: Optional[Scope] = None, tables: tuple[int, int] = (1, 3),
              outer: float = 0.15, base: Optional[str] = None,
              rels: Optional[list[str]] = None) -> tuple[Select, Scope, int]:
        """A SELECT with a FROM clause of joined tables and no items yet."""
        scope = Scope(parent)
        names = rels or list(self.rels)
        if base is None:
            base = self.rng.choices(names, weights=[6 if n == "sales" else 2 for n in names])[0]
        rel = self.rels[base]
        q = Select(items=[], source=self.new_source(scope, rel))
        rows = rel.rows
        for _ in range(self.rng.randint(*tables) - 1):
            joined = self.join(scope, rows, outer, names)
            if joined is None:
                break
            join, rows = joined
            q.joins.append(join)
        return q, scope, rows

    def join(self, scope: Scope, rows: int, outer: float, names: list[str]):
        """A join of one more table to the scope's, along a key domain."""
        options = []
        for b in scope.bound:
            for col, d in b.rel.domains.items():
                for rel in (self.rels[n] for n in names):
                    for rcol, rd in rel.domains.items():
                        if rd != d:
                            continue
                        fanout = rel.rows / rel.distinct(rcol)
                        if rows * max(fanout, 1) <= MAX_ROWS:
                            options.append((b, col, rel, rcol, fanout))
        if not options:
            return None
        # Prefer joining a new table to joining one again.
        present = {b.rel.name for b in scope.bound}
        weights = [1 if rel.name in present else 4 for _, _, rel, _, _ in options]
        b, col, rel, rcol, fanout = self.rng.choices(options, weights=weights)[0]
        kind = "INNER"
        if self.chance(outer):
            kind = self.pick({"LEFT": 5, "RIGHT": 2, "FULL": 2})
        before = list(scope.bound)
        src = self.new_source(scope, rel)
        new = scope.bound[-1]
        left = Col(b.alias, col, dict(b.rel.columns)[col])
        right = Col(new.alias, rcol, dict(rel.columns)[rcol])
        if self.chance(0.12):
            on = [self.distinct(left, right, negated=True)]
            self.features.add("on_not_distinct")
        else:
            on = [Bin("=", left, right, BOOL)] if self.chance(0.5) else [Bin("=", right, left, BOOL)]
        if self.chance(0.3 if kind == "INNER" else 0.5):
            on.append(self.on_extra(scope, new, prefer_eq=kind != "INNER"))
        if kind in ("LEFT", "FULL"):
            new.nullable = True
        if kind in ("RIGHT", "FULL"):
            for x in before:
                x.nullable = True
        return Join(kind, src, on), int(rows * max(fanout, 1 if kind != "INNER" else 0.1))

    def on_extra(self, scope: Scope, new: Bound, prefer_eq: bool = False):
        """An extra ON condition on the joined table: `st.region = 'north'`, `x < 2`."""
        sub = Scope()
        sub.bound = [new]
        self.features.add("on_extra")
        c = self.col(sub, nonkey=self.chance(0.7)) or self.col(sub)
        if prefer_eq and self.chance(0.6):
            c = self.col(sub, types=(STR, INT, DATE)) or c
            return Bin("=", c, self.lit_for(scope, c), BOOL)
        if c.t == STR and self.chance(0.6):
            return Bin("=", c, self.lit_for(scope, c), BOOL)
        if self.chance(0.2):
            return IsNull(c, negated=True)
        op = self.rng.choice(["<", ">", "=", "<>", "<=", ">="])
        return Bin(op, c, self.lit_for(scope, c), BOOL)

    # ------------------------------------------------------------ predicates

    def pred(self, scope: Scope, depth: int = 0, sub: float = 0.08, weights=None) -> Bin:
        w = {"cmp": 10, "cmp_col": 4, "isnull": 3, "distinct": 3, "between": 2,
             "inlist": 3, "like": 3, "guard": 0.5, "or": 4 if depth < 2 else 0,
             "not": 1 if depth < 2 else 0, "case": 1,
             "sub": sub * 40 if depth < 2 else 0}
        if weights:
            w.update(weights)
        kind = self.pick(w)
        made = getattr(self, "p_" + kind)(scope, depth, sub)
        return made if made is not None else self.p_cmp(scope, depth)

    def p_cmp(self, scope, depth, sub=0.0):
        c = self.col(scope)
        op = self.rng.choice(["=", "<>", "<", "<=", ">", ">="])
        return Bin(op, c, self.lit_for(scope, c), BOOL)

    def p_cmp_col(self, scope, depth, sub=0.0):
        c = self.col(scope)
        others = [o for o in self.columns(scope, fam=family(c.t))
                  if (o.alias, o.name) != (c.alias, c.name)]
        if not others:
            return None
        o = self.rng.choice(others)
        return Bin(self.rng.choice(["=", "<>", "<", ">=", "="]), c, o, BOOL)

    def p_isnull(self, scope, depth, sub=0.0):
        return IsNull(self.col(scope), negated=self.chance(0.5))

    def p_distinct(self, scope, depth, sub=0.0):
        c = self.col(scope)
        others = [o for o in self.columns(scope, fam=family(c.t))
                  if (o.alias, o.name) != (c.alias, c.name)]
        other = self.rng.choice(others) if others and self.chance(0.5) else self.lit_for(scope, c, 0.2)
        return self.distinct(c, other, negated=self.chance(0.5))

    def distinct(self, left, right, negated: bool) -> Distinct:
        """`IS [NOT] DISTINCT FROM`, written without parentheses inside AND / OR only
        sometimes: DataFusion's parser reads `a IS DISTINCT FROM b AND c` as
        `a IS DISTINCT FROM (b AND c)`, a known bug that would otherwise fail most
        queries that hold one."""
        bare = self.chance(0.04)
        if bare:
            self.features.add("distinct_from_bare")
        return Distinct(left, right, negated=negated, bare=bare)

    def p_between(self, scope, depth, sub=0.0):
        c = self.col(scope, fam="num") or self.col(scope)
        a, b = self.lit_for(scope, c), self.lit_for(scope, c)
        if a.value is not None and b.value is not None and a.value > b.value and self.chance(0.8):
            a, b = b, a
        return Between(c, a, b, negated=self.chance(0.2))

    def p_inlist(self, scope, depth, sub=0.0):
        c = self.col(scope, types=(INT, BIGINT, STR, DATE)) or self.col(scope)
        items = [self.lit_for(scope, c) for _ in range(self.rng.randint(1, 4))]
        if self.chance(0.2):
            items.append(Lit(None, c.t))
        return InList(c, items, negated=self.chance(0.3))

    def p_like(self, scope, depth, sub=0.0):
        c = self.col(scope, types=(STR,))
        if c is None:
            return None
        self.features.add("like")
        pattern, escape = self.like_pattern(self.values_of(scope, c))
        ilike = self.chance(0.1) and all(ord(ch) < 128 for ch in pattern)
        return Like(c, pattern, negated=self.chance(0.3), escape=escape, ilike=ilike)

    def like_pattern(self, pool: list) -> tuple[str, Optional[str]]:
        r = self.rng
        words = [v for v in pool if v] or STRINGS
        v = r.choice(words).replace("\\", "")
        kind = self.pick({"fixed": 3, "contains": 3, "prefix": 2, "suffix": 1, "parts": 4,
                          "underscore": 2, "escaped": 2})
        if kind == "fixed":
            return r.choice(LIKE_PATTERNS), None
        if kind == "escaped":
            # A literal % or _, escaped. DataFusion takes no escape character but the
            # backslash (its default, written out for DuckDB, which has none).
            lit = r.choice(["%", "_", "%", "_", "\\"])
            self.features.add("like_escape")
            return r.choice(["%", ""]) + "\\" + lit + r.choice(["%", "", "_%"]), "\\"
        i = r.randrange(len(v))
        j = min(len(v), i + r.randint(1, 3))
        part = v[i:j].replace("%", "").replace("_", "").replace("\\", "") or "a"
        if kind == "contains":
            return f"%{part}%", None
        if kind == "prefix":
            return f"{v[:2].replace('%', '').replace('_', '')}%", None
        if kind == "suffix":
            return f"%{v[-2:].replace('%', '').replace('_', '')}", None
        if kind == "underscore":
            return "_" * r.randint(1, 2) + v[1:3].replace("%", "") + "%", None
        # Several parts in order, what Tarn's like_parts rule searches for.
        a = v[: max(1, len(v) // 2)].replace("%", "").replace("_", "")[:2] or "a"
        b = v[len(v) // 2:].replace("%", "").replace("_", "")[-2:] or "b"
        self.features.add("like_parts")
        return f"%{a}%{b}%", None

    def p_guard(self, scope, depth, sub=0.0):
        """Arithmetic that fails on some rows, guarded so no row that fails is kept: the
        guard must be honoured (`x <> 0 AND 8 % x = 0`)."""
        c = self.col(scope, types=(INT, BIGINT))
        if c is None:
            return None
        self.features.add("guard")
        n = Lit(self.rng.choice([8, 12, 7, -6, 24]), INT)
        mod = Bin("=", Bin("%", n, c, c.t), Lit(0, INT), BOOL)
        form = self.pick({"and": 3, "or": 2, "case": 2})
        if form == "and":
            # In a WHERE's list of conditions this renders as two of them, in this order.
            return Bin("AND", Bin("<>", c, Lit(0, INT), BOOL), mod, BOOL, guard=True)
        if form == "or":
            return Bin("OR", Bin("=", c, Lit(0, INT), BOOL), mod, BOOL, guard=True)
        case = Case([When(Bin("<>", c, Lit(0, INT), BOOL), Bin("%", n, c, c.t))], Lit(1, INT),
                    c.t, guard=True)
        return Bin("=", case, Lit(0, INT), BOOL)

    def p_or(self, scope, depth, sub=0.0):
        return Bin("OR", self.pred(scope, depth + 1, sub), self.pred(scope, depth + 1, sub), BOOL)

    def p_not(self, scope, depth, sub=0.0):
        return Not(self.pred(scope, depth + 1, sub))

    def p_case(self, scope, depth, sub=0.0):
        c = self.col(scope, fam="num") or self.col(scope)
        d = self.col(scope, fam=family(c.t))
        case = Case([When(self.pred(scope, depth + 1, sub=0), c)], d, c.t)
        return Bin(self.rng.choice(["=", "<", ">="]), case, self.lit_for(scope, c), BOOL)

    def p_sub(self, scope, depth, sub=0.0):
        if self.chance(0.6):
            return self.semi_pred(scope, depth)
        return self.scalar_pred(scope, depth)

    # ------------------------------------------------------------ subqueries

    def domain_pairs(self, scope: Scope, names=None):
        """(outer column, inner table, inner column) along a shared key domain."""
        out = []
        for c in self.columns(scope, domain=True):
            d = scope.find(c.alias).rel.domains[c.name]
            for rel in (self.rels[n] for n in (names or self.rels)):
                for rcol, rd in rel.domains.items():
                    if rd == d:
                        out.append((c, rel, rcol))
        return out

    def subquery(self, scope: Scope, rel: Rel, depth: int, tables=(1, 2)):
        q, sub, rows = self.block(scope, tables=tables, outer=0.1, base=rel.name,
                                  rels=[n for n in self.rels if self.rels[n].rows <= 2000])
        for _ in range(self.rng.choice([0, 1, 1, 2])):
            q.where.append(self.pred(sub, depth + 1, sub=0.1 if depth == 0 else 0))
        return q, sub

    def semi_pred(self, scope: Scope, depth: int, form: Optional[str] = None,
                  grouped: Optional[bool] = None):
        """`x [NOT] IN (SELECT …)` or `[NOT] EXISTS (SELECT … WHERE correlated)`."""
        pairs = self.domain_pairs(scope)
        if not pairs:
            return None
        outer_col, rel, rcol = self.rng.choice(pairs)
        q, sub = self.subquery(scope, rel, depth)
        inner = Col(sub.bound[0].alias, rcol, dict(rel.columns)[rcol])
        form = form or self.pick({"in": 4, "not_in": 4, "exists": 3, "not_exists": 3})
        negated = form.startswith("not")
        if form.endswith("in"):
            q.items = [Item(inner, "c0")]
            if grouped if grouped is not None else self.chance(0.25):
                # x IN (SELECT k FROM … GROUP BY k HAVING …)
                q.group_by = [inner]
                q.having = [self.having_pred(sub)]
                self.features.add("in_group_having")
            if not negated and self.chance(0.2):
                # Not for NOT IN: DataFusion's null-aware anti join takes one key only.
                self.correlate(scope, sub, q, skip=outer_col)
            made = InSub(outer_col, q, negated)
        else:
            q.items = [Item(Lit(1, INT), "c0")]
            q.where.insert(0, Bin("=", inner, outer_col, BOOL))
            if self.chance(0.3):
                self.correlate(scope, sub, q, skip=outer_col, inequality=True)
            made = Exists(q, negated)
        if depth == 0 and self.chance(0.3):
            # Under OR: a mark join rather than a semi or anti join.
            self.features.add("subquery_under_or")
            other = self.pred(scope, depth + 1, sub=0)
            return Bin("OR", made, other, BOOL) if self.chance(0.5) else Bin("OR", other, made, BOOL)
        return made

    def correlate(self, scope: Scope, sub: Scope, q: Select, skip=None, inequality=False):
        """An extra condition tying the subquery to the outer row."""
        inner_cols = self.columns(sub)
        self.rng.shuffle(inner_cols)
        for ic in inner_cols:
            outer = [o for o in self.columns(scope, fam=family(ic.t))
                     if skip is None or (o.alias, o.name) != (skip.alias, skip.name)]
            if outer:
                op = self.rng.choice(["<", ">=", "<>"]) if inequality else "="
                q.where.append(Bin(op, ic, self.rng.choice(outer), BOOL))
                self.features.add("correlated")
                return

    def scalar_sub(self, scope: Scope, depth: int, fam: Optional[str] = None,
                   correlated: float = 0.8) -> Optional[Scalar]:
        """`(SELECT agg(…) FROM … [WHERE inner.k = outer.k])`: one row, maybe NULL."""
        pairs = self.domain_pairs(scope)
        if not pairs:
            return None
        outer_col, rel, rcol = self.rng.choice(pairs)
        q, sub = self.subquery(scope, rel, depth, tables=(1, 1))
        if self.chance(correlated):
            q.where.insert(0, Bin("=", Col(sub.bound[0].alias, rcol, dict(rel.columns)[rcol]),
                                  outer_col, BOOL))
            self.features.add("correlated_scalar")
        agg = self.aggregate(sub, fam=fam, filter_p=0.05)
        if agg is None:
            return None
        q.items = [Item(agg, "c0")]
        return Scalar(q, agg.t)

    def scalar_pred(self, scope: Scope, depth: int):
        s = self.scalar_sub(scope, depth, fam="num" if self.chance(0.7) else None)
        if s is None:
            return None
        others = self.columns(scope, fam=family(s.t))
        op = self.rng.choice(["=", "<", ">", "<=", ">=", "<>"])
        if others and self.chance(0.8):
            return Bin(op, self.rng.choice(others), s, BOOL)
        if s.t in NUMERIC:
            return Bin(op, s, Lit(self.rng.choice([0, 1, 2, 5, 10]), INT), BOOL)
        return IsNull(s, negated=self.chance(0.5))

    # ------------------------------------------------------------ values

    def value(self, scope: Scope, depth: int = 0, sub: float = 0.0):
        kind = self.pick({"col": 14, "arith": 3, "case": 2, "coalesce": 2, "str": 2,
                          "time": 1, "cast": 1, "scalar": sub * 30 if depth == 0 else 0})
        made = getattr(self, "v_" + kind)(scope, depth)
        return made if made is not None else self.col(scope)

    def v_col(self, scope, depth):
        return self.col(scope)

    def v_arith(self, scope, depth):
        a = self.col(scope, fam="num")
        if a is None:
            return None
        if a.t == DEC38:
            op = self.rng.choice(["+", "-"])
            b = self.col(scope, types=(DEC38,)) if self.chance(0.5) else self.lit(DEC38)
        elif a.t == DEC15:
            # No decimal × decimal: DuckDB keeps DECIMAL(18) and overflows.
            op = self.rng.choice(["+", "-", "*"])
            pool = (INT, BIGINT) if op == "*" else (INT, BIGINT, DEC15)
            b = self.col(scope, types=pool) if self.chance(0.6) else None
            b = b or (self.lit(INT) if op == "*" else self.lit(DEC15))
        else:
            op = self.rng.choice(["+", "-", "*"])
            pool = (INT, BIGINT, DOUBLE) if a.t == DOUBLE else (INT, BIGINT, DOUBLE, DEC15)
            b = self.col(scope, types=pool) if self.chance(0.6) else self.lit(a.t)
        if b is None:
            return None
        t = (DOUBLE if DOUBLE in (a.t, b.t) else DEC38 if DEC38 in (a.t, b.t)
             else DEC15 if DEC15 in (a.t, b.t) else BIGINT)
        if self.chance(0.5):
            a, b = b, a
        return Bin(op, a, b, t)

    def v_case(self, scope, depth):
        """CASE WHEN <predicate> THEN x ELSE <x's type> END: both branches of one type, so
        the engines need not agree on a common one."""
        c = self.col(scope)
        same = [o for o in self.columns(scope, types=(c.t,)) if o.name != c.name]
        other = self.rng.choice(same) if same and self.chance(0.5) else self.lit_for(scope, c)
        whens = [When(self.pred(scope, depth + 1, sub=0), c)]
        return Case(whens, other if self.chance(0.8) else None, c.t)

    def v_coalesce(self, scope, depth):
        c = self.col(scope)
        return Func("coalesce", [c, self.lit(c.t, self.values_of(scope, c))], c.t)

    def v_str(self, scope, depth):
        c = self.col(scope, types=(STR,))
        if c is None:
            return None
        f = self.pick({"upper": 2, "lower": 2, "length": 2, "substr": 2, "concat": 2})
        if f == "length":
            return Func("length", [c], BIGINT)
        if f == "substr":
            return Func("substr", [c, Lit(self.rng.randint(1, 3), INT), Lit(self.rng.randint(1, 3), INT)], STR)
        if f == "concat":
            other = self.col(scope, types=(STR,)) if self.chance(0.5) else self.lit(STR)
            return Bin("||", c, other, STR)
        return Func(f, [c], STR)

    def v_time(self, scope, depth):
        c = self.col(scope, types=(TS,))
        if c is not None and self.chance(0.6):
            return Func("date_trunc", [Lit(self.rng.choice(["day", "hour", "month"]), STR), c], TS)
        c = self.col(scope, types=(DATE, TS))
        if c is None:
            return None
        return Func("date_part", [Lit(self.rng.choice(["year", "month", "day"]), STR), c], BIGINT)

    def v_cast(self, scope, depth):
        c = self.col(scope, types=(INT, BIGINT, DEC15))
        if c is None:
            return None
        if c.t == DEC15:
            return Cast(c, DOUBLE)
        return Cast(c, self.rng.choice([BIGINT, DOUBLE, STR]))

    def v_scalar(self, scope, depth):
        s = self.scalar_sub(scope, depth)
        if s is None:
            return None
        if s.t in NUMERIC and self.chance(0.3):
            return Func("coalesce", [s, Lit(0, INT)], s.t)
        return s

    # ------------------------------------------------------------ aggregates

    def aggregate(self, scope: Scope, fam=None, filter_p: float = 0.15) -> Optional[Agg]:
        f = self.pick({"count": 3, "count_col": 2, "count_distinct": 2, "sum": 5, "min": 3,
                       "max": 3, "avg": 3} if fam in (None, "num") else
                      {"min": 1, "max": 1})
        if f == "count":
            a = Agg("count", None, BIGINT)
        elif f in ("count_col", "count_distinct"):
            a = Agg("count", self.col(scope), BIGINT, distinct=f == "count_distinct")
        elif f in ("sum", "avg"):
            arg = self.col(scope, fam="num")
            if arg is None:
                return Agg("count", None, BIGINT)
            if self.chance(0.2):
                arg = self.v_arith(scope, 1) or arg
            t = DOUBLE if f == "avg" or arg.t == DOUBLE else (arg.t if arg.t in (DEC15, DEC38) else BIGINT)
            a = Agg(f, arg, t)
        else:
            arg = self.col(scope, fam=fam) if fam else self.col(scope)
            if arg is None:
                return None
            a = Agg(f, arg, arg.t, distinct=self.chance(0.1))
        if fam == "num" and family(a.t) != "num":
            return None
        if self.chance(filter_p):
            a.filter = self.pred(scope, 2, sub=0)
        return a

    def having_pred(self, scope: Scope):
        a = self.aggregate(scope, fam="num", filter_p=0.1) or Agg("count", None, BIGINT)
        if a.func == "count":
            return Bin(self.rng.choice([">", ">=", "=", "<"]), a, Lit(self.rng.choice([1, 2, 3]), INT), BOOL)
        return Bin(self.rng.choice([">", "<", ">=", "<>"]), a, Lit(self.rng.choice([0, 1, 10, 100]), INT), BOOL)

    # ------------------------------------------------------------ windows

    def tiebreak(self, scope: Scope) -> list[SortKey]:
        return [SortKey(Col(b.alias, u, dict(b.rel.columns)[u]), self.chance(0.3), self.chance(0.5))
                for b in scope.bound for u in b.rel.unique]

    def window(self, scope: Scope, grouped: Optional[Select] = None) -> Win:
        """A window function, over the rows of the FROM clause or, when `grouped` is
        given, over that aggregation's groups. Functions that depend on the order of
        rows the ORDER BY calls equal (row_number, lag, ROWS frames) get a tiebreak:
        the tables' unique columns, or the grouping keys."""
        r = self.rng
        if grouped is not None:
            pool = [i.expr for i in grouped.items if not isinstance(i.expr, Win)]
            tiebreak = [SortKey(g, self.chance(0.3), self.chance(0.5)) for g in grouped.group_by]
        else:
            pool = self.columns(scope, types=(INT, BIGINT, STR, DATE))
            tiebreak = self.tiebreak(scope)

        def some(n):
            return r.sample(pool, min(n, len(pool)))

        f = self.pick({"row_number": 3, "rank": 2, "dense_rank": 1, "sum": 3, "count": 2,
                       "min": 1, "max": 1, "lag": 1})
        partition = some(r.choice([0, 1, 1, 2]))
        order = [SortKey(e, self.chance(0.4), self.chance(0.5)) for e in some(r.choice([1, 1, 2]))]
        needs_total = f in ("row_number", "lag")
        frame, arg, t = None, None, BIGINT
        if f in ("sum", "min", "max"):
            numeric = [e for e in pool if family(e.t) == "num"] if grouped is not None else \
                self.columns(scope, fam="num")
            arg = r.choice(numeric) if numeric else Agg("count", None, BIGINT)
            t = arg.t if f != "sum" else (arg.t if arg.t in (DOUBLE, DEC15, DEC38) else BIGINT)
            if self.chance(0.3):
                frame = "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
                needs_total = True
            elif self.chance(0.3):
                order = []  # the whole partition
        elif f == "count":
            arg = None if grouped is not None or self.chance(0.5) else self.col(scope)
        elif f == "lag":
            arg = r.choice(pool) if grouped is not None else self.col(scope)
            t = arg.t
        if needs_total or (f in ("rank", "dense_rank") and not order):
            order += tiebreak
        return Win(f, arg, t, partition, order, frame)

    # ------------------------------------------------------------ SELECT lists

    def items(self, scope: Scope, n: int, sub: float = 0.0) -> list[Item]:
        return [Item(self.value(scope, sub=sub), f"c{i}") for i in range(n)]

    def group(self, q: Select, scope: Scope, keys: int, aggs: int, having: float = 0.3,
              expr_keys: float = 0.15):
        """Makes `q` an aggregation: grouping keys (mostly columns), aggregates, HAVING."""
        cols = self.columns(scope)
        self.rng.shuffle(cols)
        group = []
        for c in cols[:keys]:
            if self.chance(expr_keys):
                e = self.v_time(scope, 1) if c.t in (DATE, TS) else self.v_str(scope, 1) if c.t == STR else None
                group.append(e or c)
            else:
                group.append(c)
        q.group_by = group
        items = list(group) if self.chance(0.9) else group[:max(1, len(group) - 1)]
        for _ in range(aggs):
            a = self.aggregate(scope)
            if a is not None:
                items.append(a)
        if self.chance(0.25):
            items += self.sum_avg_count(scope)
        q.items = [Item(e, f"c{i}") for i, e in enumerate(items)]
        if self.chance(having):
            q.having.append(self.having_pred(scope))
            if self.chance(0.2) and group:
                q.having.append(self.pred_on(group, scope))

    def sum_avg_count(self, scope: Scope) -> list:
        """`sum(x), avg(x), count(x)` of one decimal (TPC-H Q1's shape): the average can
        share the sum and the count (what `avg_from_sums` does)."""
        x = self.col(scope, types=(DEC15, DEC38))
        if x is None:
            return []
        self.features.add("sum_avg_count")
        count = Agg("count", x, BIGINT) if self.chance(0.5) else Agg("count", None, BIGINT)
        return [Agg("sum", x, x.t), Agg("avg", x, DOUBLE), count]

    def pred_on(self, exprs: list, scope: Scope):
        e = self.rng.choice(exprs)
        if isinstance(e, Col):
            return Bin(self.rng.choice(["=", "<>", ">"]), e, self.lit_for(scope, e), BOOL)
        return IsNull(e, negated=True)

    def order(self, q: Query, total: bool, limit: Optional[int] = None, by_name: float = 0.5):
        """ORDER BY over the output columns: all of them (a total order on the values)
        when `total`, else a few; every key says where its NULLs go."""
        items = list(q.items)
        self.rng.shuffle(items)
        if not total:
            items = items[: self.rng.randint(1, len(items))]
        named = isinstance(q, SetOp) or getattr(q, "distinct", False)
        q.order_by = []
        for it in items:
            complex_ = any(isinstance(n, (Win, Scalar)) for n in walk(it.expr))
            q.order_by.append(OrderBy(it, self.chance(0.4), self.chance(0.5),
                                      named or complex_ or self.chance(by_name)))
        q.limit = limit

    def finish(self, q: Query, p_order: float = 0.3, p_limit: float = 0.15):
        if self.chance(p_limit):
            self.order(q, total=True, limit=self.rng.choice([1, 3, 5, 10, 20]))
        elif self.chance(p_order):
            self.order(q, total=False)
        if self.ctes:
            q.ctes = self.ctes
        return q

    def where(self, q: Select, scope: Scope, n: tuple[int, int], sub: float = 0.08, **w):
        for _ in range(self.rng.randint(*n)):
            q.where.append(self.pred(scope, sub=sub, weights=w or None))

    # ------------------------------------------------------------ query classes

    def q_join(self):
        q, scope, _ = self.block(tables=(3, 5), outer=0.15)
        self.where(q, scope, (0, 3))
        q.items = self.items(scope, self.rng.randint(2, 6), sub=0.05)
        if self.chance(0.1):
            q.distinct = True
        return self.finish(q)

    def q_outer(self):
        """Outer joins, often with a constant in ON (`LEFT JOIN stores st ON … AND
        st.region = 'north'`), sorted by the null-extended columns: the column is
        constant where the row matched and NULL where it did not."""
        q, scope, _ = self.block(tables=(2, 4), outer=0.85)
        self.where(q, scope, (0, 2), sub=0.05)
        items = [self.col(scope) for _ in range(self.rng.randint(1, 3))]
        nullable = [Col(b.alias, n, t) for b in scope.bound if b.nullable
                    for n, t in b.rel.columns]
        items += self.rng.sample(nullable, min(len(nullable), self.rng.randint(1, 3)))
        constant = [c.left for j in q.joins if j.kind != "INNER" for c in j.on
                    if isinstance(c, Bin) and c.op == "=" and isinstance(c.left, Col)
                    and isinstance(c.right, Lit)]
        first = None
        if constant and self.chance(0.8):
            first = Item(self.rng.choice(constant), "c0")
            self.features.add("order_by_outer_constant")
        q.items = ([first] if first else []) + [Item(e, f"c{i + bool(first)}") for i, e in enumerate(items)]
        if self.chance(0.3):
            q.items.append(Item(self.value(scope), f"c{len(q.items)}"))
        self.finish(q, p_order=0.6, p_limit=0.3)
        if first is not None:
            rest = [o for o in q.order_by if o.item is not first]
            if q.limit is None and self.chance(0.5):
                rest = []
            q.order_by = [OrderBy(first, self.chance(0.3), self.chance(0.5), self.chance(0.5))] + rest
            if q.limit is not None and len(q.order_by) < len(q.items):
                q.limit = None
        return q

    def q_semi(self):
        q, scope, _ = self.block(tables=(1, 3), outer=0.1)
        for _ in range(self.rng.choice([1, 1, 2])):
            p = self.semi_pred(scope, 0)
            if p is not None:
                q.where.append(p)
        self.where(q, scope, (0, 1), sub=0)
        if self.chance(0.3):
            self.group(q, scope, self.rng.randint(1, 2), self.rng.randint(1, 2), having=0.2)
        else:
            q.items = self.items(scope, self.rng.randint(1, 4))
        return self.finish(q)

    def q_scalar(self):
        q, scope, _ = self.block(tables=(1, 2), outer=0.1)
        if self.chance(0.6):
            p = self.scalar_pred(scope, 0)
            if p is not None:
                q.where.append(p)
        self.where(q, scope, (0, 1), sub=0)
        q.items = self.items(scope, self.rng.randint(1, 3))
        for _ in range(self.rng.choice([1, 1, 2])):
            s = self.v_scalar(scope, 0)
            if s is not None:
                q.items.append(Item(s, f"c{len(q.items)}"))
        return self.finish(q)

    def q_group(self):
        q, scope, _ = self.block(tables=(1, 4), outer=0.15)
        self.where(q, scope, (0, 2))
        self.group(q, scope, self.rng.randint(1, 3), self.rng.randint(1, 4), having=0.5)
        if self.chance(0.2):
            # x IN (SELECT k FROM … GROUP BY k HAVING …)
            p = self.semi_pred(scope, 1, form="in", grouped=True)
            if p is not None:
                q.where.append(p)
        return self.finish(q, p_order=0.4)

    def q_partition_agg(self):
        """One table grouped by columns whose files hold disjoint ranges (Hive partition
        columns, the facts' ids), what `one_phase_aggregates` aggregates in one phase;
        the NULL `region` partition must still form one group."""
        base = "sales" if self.chance(0.8) else "returns"
        q, scope, _ = self.block(tables=(1, 1), base=base)
        self.where(q, scope, (0, 2), sub=0.03)
        a = scope.bound[0].alias
        keys = {"sales": [("region", STR), ("day", DATE), ("sale_id", BIGINT)],
                "returns": [("yr", BIGINT), ("return_id", BIGINT)]}[base]
        group = [Col(a, n, t) for n, t in self.rng.sample(keys, self.rng.randint(1, 2))]
        q.group_by = group
        aggs = [x for x in (self.aggregate(scope) for _ in range(self.rng.randint(1, 3))) if x]
        if self.chance(0.4):
            aggs += self.sum_avg_count(scope)
        q.items = [Item(e, f"c{i}") for i, e in enumerate(group + aggs)]
        if self.chance(0.3):
            q.having.append(self.having_pred(scope))
        self.features.add("partition_agg")
        return self.finish(q, p_order=0.4, p_limit=0.2)

    def q_eager(self):
        """`SELECT f.k, d.attr, sum(f.v) FROM fact f JOIN dim d ON f.k = d.k GROUP BY …`
        with dimension keys that repeat: what `aggregate_before_joins` rewrites."""
        fact = self.rels["sales" if self.chance(0.85) else "returns"]
        scope = Scope()
        q = Select(items=[], source=self.new_source(scope, fact))
        f = scope.bound[0]
        dims = [("cust_id", "customers", "cust_id"), ("prod_id", "products", "prod_id"),
                ("store_id", "stores", "store_id")] if fact.name == "sales" else \
               [("sale_id", "sales", "sale_id")]
        self.rng.shuffle(dims)
        group, facts = [], []
        for fcol, dname, dcol in dims[: self.rng.choice([1, 1, 2])]:
            dim = self.rels[dname]
            src = self.new_source(scope, dim)
            d = scope.bound[-1]
            left = Col(f.alias, fcol, dict(fact.columns)[fcol])
            q.joins.append(Join("INNER", src, [Bin("=", left, Col(d.alias, dcol, dict(dim.columns)[dcol]), BOOL)]))
            if self.chance(0.7):
                group.append(left)
            attrs = [Col(d.alias, n, t) for n, t in dim.columns if n != dcol]
            group += self.rng.sample(attrs, self.rng.choice([1, 1, 2]))
        measures = [Col(f.alias, n, t) for n, t in fact.columns
                    if family(t) == "num" and n not in fact.domains and n not in fact.unique]
        for _ in range(self.rng.randint(1, 3)):
            fn = self.pick({"sum": 4, "min": 2, "max": 2, "count": 1, "avg": 1})
            if fn == "count":
                facts.append(Agg("count", None, BIGINT))
                continue
            m = self.rng.choice(measures)
            t = DOUBLE if fn == "avg" else m.t if fn != "sum" or m.t != INT else BIGINT
            facts.append(Agg(fn, m, t))
        if self.chance(0.25):
            sub = Scope()
            sub.bound = [f]
            q.where.append(self.pred(sub, 1, sub=0))
        q.group_by = group
        q.items = [Item(e, f"c{i}") for i, e in enumerate(group + facts)]
        self.features.add("eager_shape")
        if self.chance(0.7):
            # ORDER BY the grouping keys as written (a total order on the groups).
            q.order_by = [OrderBy(it, self.chance(0.2), self.chance(0.5), self.chance(0.3))
                          for it in q.items[: len(group)]]
            if self.chance(0.2):
                self.order(q, total=True, limit=self.rng.choice([5, 10]))
        return self.finish(q, p_order=0, p_limit=0)

    def q_window(self):
        q, scope, _ = self.block(tables=(1, 3), outer=0.15)
        self.where(q, scope, (0, 2), sub=0.03)
        if self.chance(0.3):
            self.group(q, scope, self.rng.randint(1, 2), self.rng.randint(1, 2), having=0.2)
            for _ in range(self.rng.randint(1, 2)):
                q.items.append(Item(self.window(scope, grouped=q), f"c{len(q.items)}"))
        else:
            q.items = self.items(scope, self.rng.randint(1, 3))
            for _ in range(self.rng.randint(1, 3)):
                q.items.append(Item(self.window(scope), f"c{len(q.items)}"))
        return self.finish(q, p_order=0.3, p_limit=0.2)

    def q_setop(self):
        left, lscope, _ = self.block(tables=(1, 2), outer=0.1)
        self.where(left, lscope, (0, 2), sub=0.05)
        left.items = self.items(lscope, self.rng.randint(1, 3))
        right, rscope, _ = self.block(tables=(1, 2), outer=0.1)
        self.where(right, rscope, (0, 2), sub=0.05)
        for i, it in enumerate(left.items):
            same = self.columns(rscope, types=(it.expr.t,))
            e = self.rng.choice(same) if same and self.chance(0.9) else self.lit(it.expr.t, null=0.3)
            right.items.append(Item(e, f"c{i}"))
        q = SetOp(self.rng.choice(["UNION", "UNION ALL"]), left, right)
        return self.finish(q, p_order=0.3, p_limit=0.3)

    def cte(self, base: Optional[str] = None) -> Rel:
        """An aggregating CTE: `aggN AS (SELECT k AS c0, …, agg AS cN FROM … GROUP BY k)`."""
        q, scope, _ = self.block(tables=(1, 2), outer=0.1, base=base)
        self.where(q, scope, (0, 1), sub=0)
        keys = self.columns(scope, domain=True)
        key = self.rng.choice(keys)
        group = [key]
        if self.chance(0.3):
            more = self.col(scope, types=(STR, DATE))
            if more is not None and more.name != key.name:
                group.append(more)
        aggs = [a for a in (self.aggregate(scope, fam="num", filter_p=0.1)
                            for _ in range(self.rng.randint(1, 3))) if a is not None]
        aggs = aggs or [Agg("count", None, BIGINT)]
        q.group_by = group
        # Not c0, c1, …: DataFusion finds `ORDER BY <expression of a.c0>` ambiguous with
        # the output column c0 (a name-resolution quirk, not a difference worth finding).
        q.items = [Item(e, f"m{i}") for i, e in enumerate(group + aggs)]
        if self.chance(0.2):
            q.having.append(self.having_pred(scope))
        name = f"agg{len(self.ctes) + 1}"
        self.ctes.append(Cte(name, q))
        source = scope.find(key.alias).rel
        domains = {"m0": source.domains[key.name]}
        rel = Rel(name, [(i.name, i.expr.t) for i in q.items], domains,
                  [i.name for i in q.items[: len(group)]], source.distinct(key.name),
                  {"m0": source.values.get(key.name, [])}, base=False)
        self.rels[name] = rel
        return rel

    def q_cte(self):
        """An aggregating CTE named twice: what `share_subplans` computes once."""
        rel = self.cte()
        self.features.add("cte_twice")
        form = self.pick({"self_join": 3, "join_and_sub": 3, "in_sub": 2})
        if form == "self_join":
            q, scope, _ = self.block(tables=(2, 3), outer=0.2, base=rel.name,
                                     rels=[rel.name] + [n for n in self.rels if self.rels[n].base])
            if not any(isinstance(j.source, TableRef) and j.source.name == rel.name for j in q.joins):
                a = self.alias(rel)
                first = scope.bound[0].alias
                scope.bound.append(Bound(a, rel))
                q.joins.insert(0, Join(self.rng.choice(["INNER", "INNER", "LEFT"]), TableRef(rel.name, a),
                                       [Bin("=", Col(first, "m0", dict(rel.columns)["m0"]),
                                            Col(a, "m0", dict(rel.columns)["m0"]), BOOL)]))
        else:
            q, scope, _ = self.block(tables=(1, 3), outer=0.15, base=rel.name,
                                     rels=[n for n in self.rels if self.rels[n].base] + [rel.name])
            sub = Scope(scope)
            inner = Select(items=[], source=self.new_source(sub, rel))
            col = self.rng.choice([c for c, t in rel.columns if family(t) == "num"])
            mine = Col(scope.bound[0].alias, col, dict(rel.columns)[col])
            if form == "join_and_sub":
                f = self.rng.choice(["max", "min", "avg", "sum"])
                inner.items = [Item(Agg(f, Col(sub.bound[0].alias, col, mine.t),
                                        DOUBLE if f == "avg" else mine.t), "c0")]
                q.where.append(Bin(self.rng.choice([">", "<", ">=", "="]), mine, Scalar(inner, mine.t), BOOL))
            else:
                inner.items = [Item(Col(sub.bound[0].alias, "m0", dict(rel.columns)["m0"]), "c0")]
                inner.where = [self.pred(sub, 2, sub=0)]
                q.where.append(InSub(Col(scope.bound[0].alias, "m0", dict(rel.columns)["m0"]), inner,
                                     self.chance(0.3)))
        self.where(q, scope, (0, 1), sub=0)
        if self.chance(0.3):
            self.group(q, scope, 1, self.rng.randint(1, 2), having=0.2)
        else:
            q.items = self.items(scope, self.rng.randint(2, 4))
        self.finish(q)
        if self.chance(0.25):
            # The same, with the CTE written out where it is named (derived tables).
            inline(q)
            self.features.add("derived_twice")
        return q

    def q_like(self):
        q, scope, _ = self.block(tables=(1, 2), outer=0.1)
        for _ in range(self.rng.randint(1, 3)):
            p = self.p_like(scope, 0) or self.pred(scope)
            q.where.append(p if self.chance(0.8) else Bin("OR", p, self.pred(scope, 1, sub=0), BOOL))
        q.items = self.items(scope, self.rng.randint(1, 3))
        if self.chance(0.3):
            c = self.col(scope, types=(STR,))
            if c is not None:
                pattern, escape = self.like_pattern(self.values_of(scope, c))
                q.items.append(Item(Case([When(Like(c, pattern, escape=escape), Lit(1, INT))],
                                         Lit(0, INT), INT), f"c{len(q.items)}"))
        return self.finish(q)

    def q_guard(self):
        q, scope, _ = self.block(tables=(1, 3), outer=0.1)
        g = self.p_guard(scope, 0)
        if g is not None:
            q.where.append(g)
        self.where(q, scope, (0, 2), sub=0.03)
        if self.chance(0.3):
            self.rng.shuffle(q.where)
        q.items = self.items(scope, self.rng.randint(1, 3))
        c = self.col(scope, types=(INT, BIGINT))
        if c is not None and self.chance(0.5):
            n = Lit(self.rng.choice([8, 12, 7]), INT)
            q.items.append(Item(Case([When(Bin("=", c, Lit(0, INT), BOOL), Lit(0, INT))],
                                     Bin("%", n, c, c.t), c.t, guard=True), f"c{len(q.items)}"))
        return self.finish(q)

    def q_topn(self):
        q, scope, _ = self.block(tables=(1, 3), outer=0.3)
        self.where(q, scope, (0, 2), sub=0.05)
        if self.chance(0.4):
            self.group(q, scope, self.rng.randint(1, 2), self.rng.randint(1, 2), having=0.2)
        else:
            q.items = self.items(scope, self.rng.randint(1, 4))
        self.order(q, total=True, limit=self.rng.choice([1, 2, 3, 5, 10, 25]))
        return self.finish(q, p_order=0, p_limit=0)

    def q_distinct_from(self):
        q, scope, _ = self.block(tables=(2, 3), outer=0.3)
        if q.joins and self.chance(0.6):
            j = self.rng.choice(q.joins)
            eq = j.on[0]
            if isinstance(eq, Bin):
                j.on[0] = self.distinct(eq.left, eq.right, negated=True)
            if len(j.on) == 1 and self.chance(0.6):
                bound = scope.find(j.source.alias)
                j.on.append(self.on_extra(scope, bound))
        for _ in range(self.rng.randint(1, 2)):
            p = self.p_distinct(scope, 0)
            q.where.append(p if self.chance(0.6) else
                           Bin(self.rng.choice(["AND", "OR"]), p, self.pred(scope, 1, sub=0), BOOL))
        if self.chance(0.5):
            q.where.append(self.p_cmp_col(scope, 0) or self.p_cmp(scope, 0))
        q.items = self.items(scope, self.rng.randint(2, 4))
        return self.finish(q)

    def q_minmax_self(self):
        """`WHERE a.x = (SELECT min(b.x) FROM <the same tables> WHERE b.k = a.k AND <the
        same filters>)`: what `subquery_as_window` computes as a window."""
        q, scope, _ = self.block(tables=(1, 2), outer=0.0)
        self.where(q, scope, (0, 2), sub=0, guard=0, like=1)
        first = scope.bound[0]
        keys = [c for c in self.columns(scope, domain=True) if c.alias == first.alias]
        measures = [c for c in self.columns(scope) if c.alias == first.alias
                    and c.t in (INT, BIGINT, DEC15, DOUBLE, DATE, TS)]
        if not keys or not measures:
            return self.q_scalar()
        key, m = self.rng.choice(keys), self.rng.choice(measures)
        mapping = {b.alias: f"{b.alias}x" for b in scope.bound}
        inner = Select(items=[], source=rename(q.source, mapping), joins=rename(q.joins, mapping),
                       where=rename(q.where, mapping))
        inner.where.append(Bin("=", Col(mapping[key.alias], key.name, key.t), key, BOOL))
        f = self.rng.choice(["min", "max"])
        inner.items = [Item(Agg(f, Col(mapping[m.alias], m.name, m.t), m.t), "c0")]
        q.where.append(Bin("=", m, Scalar(inner, m.t), BOOL))
        self.features.add("minmax_self")
        q.items = [Item(key, "c0"), Item(m, "c1")] + self.items(scope, self.rng.randint(0, 2))[:2]
        for i, it in enumerate(q.items):
            it.name = f"c{i}"
        return self.finish(q, p_order=0.4, p_limit=0.2)

    def q_total_share(self):
        """`HAVING sum(x) * 20 > (SELECT sum(x) FROM <the same tables and filters>)`:
        what `subquery_as_window` computes as a window over the groups."""
        q, scope, _ = self.block(tables=(1, 2), outer=0.0)
        self.where(q, scope, (0, 2), sub=0, guard=0)
        measures = self.columns(scope, types=(INT, BIGINT, DEC15))
        if not measures:
            return self.q_group()
        m = self.rng.choice(measures)
        keys = self.columns(scope, types=(INT, BIGINT, STR, DATE))
        group = self.rng.sample(keys, self.rng.randint(1, 2))
        f = self.pick({"sum": 4, "max": 1, "min": 1})
        t = BIGINT if f == "sum" and m.t == INT else m.t
        mine = Agg(f, m, t)
        q.group_by = group
        q.items = [Item(e, f"c{i}") for i, e in enumerate(group + [mine])]
        mapping = {b.alias: f"{b.alias}x" for b in scope.bound}
        inner = Select(items=[Item(Agg(f, rename(m, mapping), t), "c0")],
                       source=rename(q.source, mapping), joins=rename(q.joins, mapping),
                       where=rename(q.where, mapping))
        k = self.rng.choice([5, 10, 20, 100])
        q.having.append(Bin(">", Bin("*", Agg(f, m, t), Lit(k, INT), t), Scalar(inner, t), BOOL))
        self.features.add("total_share")
        return self.finish(q, p_order=0.5)
