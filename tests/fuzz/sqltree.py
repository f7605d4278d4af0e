"""A small SQL syntax tree and its rendering, in Tarn's and DuckDB's dialects.

The generator builds queries as trees rather than strings so that the shrinker can take a
failing query apart (drop a join, a condition, a select item, a subquery) and put it back
together as valid SQL. Rendering is the one place that knows SQL's syntax: it writes as
few parentheses as the operators' precedence allows, so that a parser's precedence bugs
(`ON a IS NOT DISTINCT FROM b AND c < 2`) are reachable, and it takes a `dialect`
('tarn' or 'duckdb') for the constructs the two engines spell differently.

Nodes are plain dataclasses compared by identity (`eq=False`): an ORDER BY item refers
to the select item it sorts by, and `copy.deepcopy` keeps that reference inside the copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, Iterator, Optional

from .lake import BIGINT, DATE, DEC15, DEC38, DOUBLE, INT, STR, TS

BOOL = "bool"

SQL_TYPES = {
    INT: "INTEGER", BIGINT: "BIGINT", DEC15: "DECIMAL(15,2)", DEC38: "DECIMAL(38,10)",
    DOUBLE: "DOUBLE", STR: "VARCHAR", DATE: "DATE", TS: "TIMESTAMP", BOOL: "BOOLEAN",
}


def family(t: str) -> str:
    """Types that compare with each other without an explicit cast in both engines."""
    return "num" if t in (INT, BIGINT, DEC15, DEC38, DOUBLE) else t


class Node:
    def children(self) -> Iterator[tuple[str, Optional[int], "Node"]]:
        """(field, index or None, child) for every child node."""
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Node):
                yield f.name, None, v
            elif isinstance(v, list):
                for i, x in enumerate(v):
                    if isinstance(x, Node):
                        yield f.name, i, x


# ---------------------------------------------------------------- expressions

@dataclass(eq=False)
class Col(Node):
    alias: str
    name: str
    t: str


@dataclass(eq=False)
class Lit(Node):
    value: Any  # None for NULL
    t: str


@dataclass(eq=False)
class Bin(Node):
    op: str  # AND OR = <> < <= > >= + - * % ||
    left: Node
    right: Node
    t: str
    guard: bool = False  # `x <> 0 AND 8 % x = 0`: the shrinker keeps both sides


@dataclass(eq=False)
class Not(Node):
    arg: Node
    t: str = BOOL


@dataclass(eq=False)
class IsNull(Node):
    arg: Node
    negated: bool = False
    t: str = BOOL


@dataclass(eq=False)
class Distinct(Node):
    """`left IS [NOT] DISTINCT FROM right`; `negated` is IS NOT DISTINCT FROM."""
    left: Node
    right: Node
    negated: bool = False
    bare: bool = False  # no parentheses even inside AND / OR (see gen.distinct)
    t: str = BOOL


@dataclass(eq=False)
class Like(Node):
    arg: Node
    pattern: str
    negated: bool = False
    escape: Optional[str] = None
    ilike: bool = False
    t: str = BOOL


@dataclass(eq=False)
class Between(Node):
    arg: Node
    low: Node
    high: Node
    negated: bool = False
    t: str = BOOL


@dataclass(eq=False)
class InList(Node):
    arg: Node
    items: list
    negated: bool = False
    t: str = BOOL


@dataclass(eq=False)
class InSub(Node):
    arg: Node
    query: "Query"
    negated: bool = False
    t: str = BOOL


@dataclass(eq=False)
class Exists(Node):
    query: "Query"
    negated: bool = False
    t: str = BOOL


@dataclass(eq=False)
class Scalar(Node):
    query: "Query"
    t: str


@dataclass(eq=False)
class When(Node):
    cond: Node
    value: Node


@dataclass(eq=False)
class Case(Node):
    whens: list
    else_: Optional[Node]
    t: str
    guard: bool = False  # CASE WHEN x <> 0 THEN 8 % x END: the shrinker keeps it whole


@dataclass(eq=False)
class Cast(Node):
    arg: Node
    t: str


@dataclass(eq=False)
class Func(Node):
    name: str
    args: list
    t: str


@dataclass(eq=False)
class Agg(Node):
    func: str  # count sum min max avg
    arg: Optional[Node]  # None: count(*)
    t: str
    distinct: bool = False
    filter: Optional[Node] = None


@dataclass(eq=False)
class SortKey(Node):
    expr: Node
    desc: bool = False
    nulls_first: bool = False


@dataclass(eq=False)
class Win(Node):
    func: str  # row_number rank dense_rank sum count min max lag
    arg: Optional[Node]
    t: str
    partition: list = field(default_factory=list)
    order: list = field(default_factory=list)
    frame: Optional[str] = None


# ---------------------------------------------------------------- queries

@dataclass(eq=False)
class TableRef(Node):
    name: str  # a lake table or a CTE
    alias: str


@dataclass(eq=False)
class Derived(Node):
    query: "Query"
    alias: str


@dataclass(eq=False)
class Join(Node):
    kind: str  # INNER LEFT RIGHT FULL
    source: Node
    on: list  # conjuncts; empty renders as ON TRUE


@dataclass(eq=False)
class Item(Node):
    expr: Node
    name: str


@dataclass(eq=False)
class OrderBy(Node):
    item: Item  # a select item of the query (by identity)
    desc: bool = False
    nulls_first: bool = False
    by_name: bool = True  # ORDER BY c1 rather than ORDER BY <its expression>


@dataclass(eq=False)
class Cte(Node):
    name: str
    query: "Query"


@dataclass(eq=False)
class Select(Node):
    items: list
    source: Node
    joins: list = field(default_factory=list)
    where: list = field(default_factory=list)
    group_by: list = field(default_factory=list)
    having: list = field(default_factory=list)
    order_by: list = field(default_factory=list)
    limit: Optional[int] = None
    distinct: bool = False
    ctes: list = field(default_factory=list)


@dataclass(eq=False)
class SetOp(Node):
    op: str  # UNION, UNION ALL
    left: Select
    right: Select
    order_by: list = field(default_factory=list)
    limit: Optional[int] = None
    ctes: list = field(default_factory=list)

    @property
    def items(self):
        return self.left.items


Query = Select | SetOp


# ---------------------------------------------------------------- rendering

def quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def literal(value: Any, t: str) -> str:
    if value is None:
        return f"CAST(NULL AS {SQL_TYPES[t]})"
    if t == BOOL:
        return "TRUE" if value else "FALSE"
    if t in (INT, BIGINT):
        return str(int(value))
    if t in (DEC15, DEC38):
        # From a string: exact in both engines (a bare 1.5 is a double in DataFusion).
        return f"CAST({quote(str(Decimal(value)))} AS {SQL_TYPES[t]})"
    if t == DOUBLE:
        # The lake's floats are multiples of 1/4: exact in decimal and binary alike.
        return f"CAST({float(value)!r} AS DOUBLE)"
    if t == STR:
        return quote(value)
    if t == DATE:
        return f"DATE '{value.isoformat()}'"
    if t == TS:
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    raise ValueError(t)


# Binding strength: a child binding less tightly than its parent needs parentheses.
PREC = {"OR": 1, "AND": 2, "NOT": 3, "CMP": 4, "||": 5, "+": 6, "-": 6, "*": 7, "%": 7, "ATOM": 9}
COMPARISONS = {"=", "<>", "<", "<=", ">", ">="}


def _prec(e: Node) -> int:
    if isinstance(e, Bin):
        return PREC["CMP"] if e.op in COMPARISONS else PREC[e.op]
    if isinstance(e, Not):
        return PREC["NOT"]
    if isinstance(e, Distinct) and not e.bare:
        return 0  # parenthesised wherever it is an operand
    if isinstance(e, (IsNull, Distinct, Like, Between, InList, InSub)):
        return PREC["CMP"]
    if isinstance(e, Lit) and isinstance(e.value, (int, float)) and e.value < 0:
        return PREC["+"]  # -3 reads as a unary minus
    return PREC["ATOM"]


class Renderer:
    def __init__(self, dialect: str):
        assert dialect in ("tarn", "duckdb")
        self.dialect = dialect

    def wrap(self, e: Node, above: int) -> str:
        """`e`, in parentheses unless it binds more tightly than `above`."""
        s = self.expr(e)
        return f"({s})" if _prec(e) <= above else s

    def expr(self, e: Node) -> str:
        m = getattr(self, "e_" + type(e).__name__)
        return m(e)

    def e_Col(self, e: Col) -> str:
        return f"{e.alias}.{e.name}"

    def e_Lit(self, e: Lit) -> str:
        return literal(e.value, e.t)

    def e_Bin(self, e: Bin) -> str:
        if e.op in ("AND", "OR"):
            p = PREC[e.op]
            return f"{self.wrap(e.left, p - 1)} {e.op} {self.wrap(e.right, p - 1)}"
        if e.op in COMPARISONS:
            p = PREC["CMP"]
            return f"{self.wrap(e.left, p)} {e.op} {self.wrap(e.right, p)}"
        if e.op == "||":
            # Precedence of || against arithmetic differs between SQL dialects: any
            # operator beneath it gets parentheses.
            return f"{self.wrap(e.left, PREC['+'])} || {self.wrap(e.right, PREC['+'])}"
        p = PREC[e.op]
        return f"{self.wrap(e.left, p - 1)} {e.op} {self.wrap(e.right, p)}"

    def e_Not(self, e: Not) -> str:
        return f"NOT ({self.expr(e.arg)})"

    def e_IsNull(self, e: IsNull) -> str:
        return f"{self.wrap(e.arg, PREC['CMP'])} IS {'NOT ' if e.negated else ''}NULL"

    def e_Distinct(self, e: Distinct) -> str:
        op = "IS NOT DISTINCT FROM" if e.negated else "IS DISTINCT FROM"
        return f"{self.wrap(e.left, PREC['CMP'])} {op} {self.wrap(e.right, PREC['CMP'])}"

    def e_Like(self, e: Like) -> str:
        op = ("NOT " if e.negated else "") + ("ILIKE" if e.ilike else "LIKE")
        escape = f" ESCAPE {quote(e.escape)}" if e.escape else ""
        if not e.escape and "\\" in e.pattern and self.dialect == "duckdb":
            escape = " ESCAPE '\\'"  # DataFusion's LIKE escapes with \ by default, DuckDB's not
        return f"{self.wrap(e.arg, PREC['CMP'])} {op} {quote(e.pattern)}{escape}"

    def e_Between(self, e: Between) -> str:
        op = "NOT BETWEEN" if e.negated else "BETWEEN"
        return (f"{self.wrap(e.arg, PREC['CMP'])} {op} {self.wrap(e.low, PREC['CMP'])} "
                f"AND {self.wrap(e.high, PREC['CMP'])}")

    def e_InList(self, e: InList) -> str:
        items = ", ".join(self.expr(x) for x in e.items)
        return f"{self.wrap(e.arg, PREC['CMP'])} {'NOT ' if e.negated else ''}IN ({items})"

    def e_InSub(self, e: InSub) -> str:
        return (f"{self.wrap(e.arg, PREC['CMP'])} {'NOT ' if e.negated else ''}IN "
                f"({self.query(e.query)})")

    def e_Exists(self, e: Exists) -> str:
        return f"{'NOT ' if e.negated else ''}EXISTS ({self.query(e.query)})"

    def e_Scalar(self, e: Scalar) -> str:
        return f"({self.query(e.query)})"

    def e_Case(self, e: Case) -> str:
        whens = " ".join(f"WHEN {self.expr(w.cond)} THEN {self.expr(w.value)}" for w in e.whens)
        other = f" ELSE {self.expr(e.else_)}" if e.else_ is not None else ""
        return f"CASE {whens}{other} END"

    def e_Cast(self, e: Cast) -> str:
        return f"CAST({self.expr(e.arg)} AS {SQL_TYPES[e.t]})"

    def e_Func(self, e: Func) -> str:
        return f"{e.name}({', '.join(self.expr(a) for a in e.args)})"

    def e_Agg(self, e: Agg) -> str:
        arg = "*" if e.arg is None else ("DISTINCT " if e.distinct else "") + self.expr(e.arg)
        filt = f" FILTER (WHERE {self.expr(e.filter)})" if e.filter is not None else ""
        return f"{e.func}({arg}){filt}"

    def sort_key(self, k: SortKey) -> str:
        return (f"{self.expr(k.expr)} {'DESC' if k.desc else 'ASC'} "
                f"NULLS {'FIRST' if k.nulls_first else 'LAST'}")

    def e_Win(self, e: Win) -> str:
        arg = ("*" if e.func == "count" else "") if e.arg is None else self.expr(e.arg)
        parts = []
        if e.partition:
            parts.append("PARTITION BY " + ", ".join(self.expr(p) for p in e.partition))
        if e.order:
            parts.append("ORDER BY " + ", ".join(self.sort_key(k) for k in e.order))
            if e.frame:
                parts.append(e.frame)
        return f"{e.func}({arg}) OVER ({' '.join(parts)})"

    # -- queries

    def source(self, s: Node) -> str:
        if isinstance(s, TableRef):
            return f"{s.name} {s.alias}"
        return f"({self.query(s.query)}) {s.alias}"

    def order_by(self, q: Query) -> str:
        keys = []
        for o in q.order_by:
            what = o.item.name if (o.by_name or isinstance(q, SetOp)) else self.expr(o.item.expr)
            keys.append(f"{what} {'DESC' if o.desc else 'ASC'} "
                        f"NULLS {'FIRST' if o.nulls_first else 'LAST'}")
        return " ORDER BY " + ", ".join(keys) if keys else ""

    def query(self, q: Query) -> str:
        out = ""
        if q.ctes:
            out = "WITH " + ", ".join(f"{c.name} AS ({self.query(c.query)})" for c in q.ctes) + " "
        if isinstance(q, SetOp):
            out += f"{self.query(q.left)} {q.op} {self.query(q.right)}"
        else:
            items = ", ".join(f"{self.expr(i.expr)} AS {i.name}" for i in q.items)
            out += f"SELECT {'DISTINCT ' if q.distinct else ''}{items} FROM {self.source(q.source)}"
            for j in q.joins:
                kind = {"INNER": "JOIN", "LEFT": "LEFT JOIN", "RIGHT": "RIGHT JOIN",
                        "FULL": "FULL JOIN"}[j.kind]
                on = " AND ".join(self.wrap(c, PREC["AND"] - 1) for c in j.on) or "TRUE"
                out += f" {kind} {self.source(j.source)} ON {on}"
            if q.where:
                out += " WHERE " + " AND ".join(self.wrap(c, PREC["AND"] - 1) for c in q.where)
            if q.group_by:
                out += " GROUP BY " + ", ".join(self.expr(g) for g in q.group_by)
            if q.having:
                out += " HAVING " + " AND ".join(self.wrap(c, PREC["AND"] - 1) for c in q.having)
        out += self.order_by(q)
        if q.limit is not None:
            out += f" LIMIT {q.limit}"
        return out


def render(q: Query, dialect: str = "tarn") -> str:
    return Renderer(dialect).query(q)


def walk(node: Node) -> Iterator[Node]:
    yield node
    for _, _, c in node.children():
        yield from walk(c)


def order_spec(q: Query) -> list[tuple[int, bool, bool]]:
    """The top-level ORDER BY as (output column, descending, nulls first) triples."""
    out = []
    for o in q.order_by:
        for i, item in enumerate(q.items):
            if item is o.item:
                out.append((i, o.desc, o.nulls_first))
    return out


def is_total_order(q: Query) -> bool:
    """Whether the top-level ORDER BY sorts by every output column (a total order on
    the rows' values: rows it cannot tell apart are equal)."""
    return {i for i, _, _ in order_spec(q)} == set(range(len(q.items)))

