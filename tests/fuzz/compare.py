"""Comparing one query's results across engines, tolerant of what may honestly differ.

The engines may differ in types without differing in meaning: DuckDB sums integers into
HUGEINT and averages decimals into DOUBLE where DataFusion gives BIGINT and a DECIMAL
truncated to scale + 4; a float sum's last bits depend on the order of addition. So:
- values are normalised (dates and timestamps to ISO strings, NULL to None);
- integers and decimals compare exactly when both are exact and of one scale, within
  the coarser scale's unit when scales differ (a truncated average), and floats within a
  relative and absolute 1e-9 (or the decimal's unit, against a decimal);
- rows compare as multisets, except that a query ending in ORDER BY … LIMIT (which the
  generator always makes a total order on the output) compares as a list, and a query
  ending in a partial ORDER BY also checks that each engine's rows are sorted by it.

Outcomes are then grouped by agreement: a *difference* is any split. Its *signature*
(who agrees with whom, and the kind of each error) is what the shrinker must keep.
"""

from __future__ import annotations

import collections
import datetime as dt
import math
import re
from decimal import Decimal
from typing import Any, Optional

from .engines import Outcome

ENGINES = ("tarn-on", "tarn-off", "duckdb")
REL_TOL = Decimal("1e-9")
ABS_TOL = Decimal("1e-9")


def norm(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else v
    if isinstance(v, Decimal):
        return v if v.is_finite() else str(v)
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return v.isoformat(sep=" ")
    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.hex()
    return repr(v)


def normalise(rows: list[tuple]) -> list[tuple]:
    return [tuple(norm(v) for v in r) for r in rows]


def _is_num(v) -> bool:
    return isinstance(v, (int, float, Decimal)) and not isinstance(v, bool)


def _unit(v) -> Decimal:
    """The smallest step of a decimal (1 for an integer), 0 for a float."""
    if isinstance(v, Decimal):
        return Decimal(1).scaleb(v.as_tuple().exponent)
    return Decimal(1) if isinstance(v, int) else Decimal(0)


def cells_equal(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if _is_num(a) and _is_num(b):
        if isinstance(a, float) or isinstance(b, float):
            fa, fb = float(a), float(b)
            if math.isinf(fa) or math.isinf(fb):
                return fa == fb
            da, db = Decimal(fa) if isinstance(a, float) else Decimal(a), \
                Decimal(fb) if isinstance(b, float) else Decimal(b)
            tol = max(ABS_TOL, REL_TOL * max(abs(da), abs(db)), _unit(a), _unit(b))
            return abs(da - db) <= tol
        da, db = Decimal(a), Decimal(b)
        if da == db:
            return True
        ua, ub = _unit(a), _unit(b)
        return ua != ub and abs(da - db) <= max(ua, ub)  # one side truncated to fewer places
    return type(a) is type(b) and a == b


def rows_equal(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(cells_equal(x, y) for x, y in zip(a, b))


def _exact_key(row: tuple) -> tuple:
    return tuple((0, 0) if v is None else (1, Decimal(v)) if _is_num(v) else (2, str(v))
                 for v in row)


def _coarse(v):
    if v is None:
        return (0, 0)
    if _is_num(v):
        return (1, float(f"{float(v):.6g}"))
    return (2, str(v))


def multiset_equal(a: list[tuple], b: list[tuple]) -> bool:
    if len(a) != len(b):
        return False
    # Sorted by exact values, equal rows meet unless a tolerated difference reorders them.
    sa, sb = sorted(a, key=_exact_key), sorted(b, key=_exact_key)
    if all(rows_equal(x, y) for x, y in zip(sa, sb)):
        return True
    # Else group rows by values rounded to 6 digits and match within each group.
    groups: dict[tuple, list] = collections.defaultdict(list)
    for y in b:
        groups[tuple(_coarse(v) for v in y)].append(y)
    for x in a:
        group = groups.get(tuple(_coarse(v) for v in x))
        if not group or len(group) > 5000:
            return False
        for i, y in enumerate(group):
            if rows_equal(x, y):
                del group[i]
                break
        else:
            return False
    return True


def _cmp(a, b) -> int:
    if isinstance(a, str) and isinstance(b, str):
        return (a > b) - (a < b)  # code points: UTF-8 byte order, as both engines sort
    if _is_num(a) and _is_num(b):
        da, db = Decimal(a) if not isinstance(a, float) else Decimal(a), Decimal(b)
        return (da > db) - (da < db)
    return (a > b) - (a < b)


def sorted_by(rows: list[tuple], spec: list[tuple[int, bool, bool]]) -> bool:
    """Whether `rows` are in the order of `spec` ((column, descending, nulls first)...)."""
    return first_unsorted(rows, spec) is None


def first_unsorted(rows: list[tuple], spec: list[tuple[int, bool, bool]]) -> Optional[int]:
    """The first row that `spec` puts before the row preceding it, if any."""
    for n, (prev, row) in enumerate(zip(rows, rows[1:]), start=1):
        for col, desc, nulls_first in spec:
            a, b = prev[col], row[col]
            if a is None and b is None:
                continue
            if a is None or b is None:
                if (a is None) != nulls_first:  # b belongs before a
                    return n
                break
            c = _cmp(a, b)
            if desc:
                c = -c
            if c < 0:
                break
            if c > 0:
                return n
        # all keys equal: any order
    return None


class Comparison:
    """How the outcomes of one query compare: `ordered` compares lists (a total ORDER BY
    with LIMIT); `spec` is the top-level ORDER BY each engine's rows must follow."""

    def __init__(self, ordered: bool, spec: list[tuple[int, bool, bool]]):
        self.ordered, self.spec = ordered, spec

    def view(self, o: Outcome):
        if o.error is not None:
            return None
        rows = normalise(o.rows)
        return rows, (sorted_by(rows, self.spec) if self.spec and not self.ordered else True)

    def agree(self, a: Outcome, b: Outcome) -> bool:
        if a.error is not None or b.error is not None:
            return a.error is not None and b.error is not None
        ra, sa = self.view(a)
        rb, sb = self.view(b)
        if sa != sb:
            return False
        if self.ordered:
            return len(ra) == len(rb) and all(rows_equal(x, y) for x, y in zip(ra, rb))
        return multiset_equal(ra, rb)

    def groups(self, outcomes: dict[str, Outcome]) -> list[list[str]]:
        groups: list[list[str]] = []
        for name in ENGINES:
            for g in groups:
                if self.agree(outcomes[g[0]], outcomes[name]):
                    g.append(name)
                    break
            else:
                groups.append([name])
        return groups

    def signature(self, outcomes: dict[str, Outcome]) -> tuple:
        groups = tuple(tuple(g) for g in self.groups(outcomes))
        kinds = tuple(error_kind(outcomes[n].error) if outcomes[n].error else "rows"
                      for n in ENGINES)
        return groups, kinds


def error_kind(message: Optional[str]) -> str:
    """A short, stable name for an error: the DataFusion or DuckDB error class and the
    start of its message, without names, numbers and quoted text."""
    if message is None:
        return "rows"
    if message.startswith("tarn server exited"):
        return "crash"
    text = message
    for marker in ("[FlightSQL] ", "query failed: ", "SQL error: "):
        text = text.split(marker, 1)[-1]
    text = re.sub(r"\((InvalidArgument|Internal|Aborted|Unknown);.*", "", text, flags=re.S)
    text = re.sub(r"'[^']*'|\"[^\"]*\"|`[^`]*`", "?", text)
    text = re.sub(r"\b(Utf8View|LargeUtf8|Utf8|U?Int(8|16|32|64)|Float(16|32|64)|Boolean|"
                  r"Date(32|64)|Null|Decimal128\(\d+, \d+\)|Timestamp\([^)]*\))(?!\w)", "T", text)
    text = re.sub(r"\d+", "N", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text[:100]


def describe(o: Outcome, limit: int = 12, spec=None) -> str:
    """The outcome for a report: the error, or the row count and the first rows (and,
    when `spec` is the query's ORDER BY and the rows break it, the rows around the
    first break)."""
    if o.error is not None:
        return "ERROR " + o.error.strip()[:600]
    rows = normalise(o.rows)
    shown = "\n".join("  " + repr(r) for r in rows[:limit])
    more = f"\n  … {len(rows) - limit} more" if len(rows) > limit else ""
    out = f"{len(rows)} rows\n{shown}{more}" if rows else "0 rows"
    bad = first_unsorted(rows, spec) if spec else None
    if bad is not None:
        out += (f"\n  NOT IN ORDER BY ORDER: row {bad} comes after row {bad + 1}:\n"
                f"  #{bad}: {rows[bad - 1]!r}\n  #{bad + 1}: {rows[bad]!r}")
    return out


def describe_difference(got: Outcome, expected: Outcome, spec=None, context: int = 3,
                        labels: tuple[str, str] = ("got", "expected")) -> str:
    """How two outcomes that `Comparison.agree` found different differ, for a report: an
    error or the row counts, a break of `spec` (the query's ORDER BY), and the `context`
    rows from the first position at which they differ (in the engines' order when `spec`
    is given, else each sorted by value)."""
    if got.error is not None or expected.error is not None:
        return "\n".join(f"{label}: {describe(o, context)}"
                         for label, o in zip(labels, (got, expected)))
    a, b = normalise(got.rows), normalise(expected.rows)
    lines = [f"{labels[0]}: {len(a)} rows, {labels[1]}: {len(b)} rows"]
    for label, rows in zip(labels, (a, b)):
        bad = first_unsorted(rows, spec) if spec else None
        if bad is not None:
            lines.append(f"{label} breaks the ORDER BY at row {bad + 1}: "
                         f"{rows[bad - 1]!r} then {rows[bad]!r}")
    if not spec:
        a, b = sorted(a, key=_exact_key), sorted(b, key=_exact_key)
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if not rows_equal(x, y)),
                 min(len(a), len(b)))
    lines.append(f"first difference at row {first + 1}:")
    for label, rows in zip(labels, (a, b)):
        shown = rows[first:first + context]
        lines.append(f"  {label}:" + "".join(f"\n    {r!r}" for r in shown) if shown
                     else f"  {label}: (no more rows)")
    return "\n".join(lines)
