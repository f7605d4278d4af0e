"""The fuzzer's lake: five small tables written with pyarrow, shaped to trip a planner.

Small (about 2,200 rows in all) so that every query runs in milliseconds, and built to
break assumptions rather than to look realistic:

- `sales` (the facts) is Hive-partitioned by `region` (a string, with one partition
  `__HIVE_DEFAULT_PARTITION__`, which Tarn and DuckDB both read as NULL) and `day` (a
  date). Its files hold disjoint `sale_id` ranges in some partitions and interleaved,
  overlapping ranges in others (what Tarn's one-phase aggregation reads from the
  catalog's statistics), and one file holds decimals near DECIMAL(15,2)'s limit, so the
  decimal fast path sees batches it must not take.
- The dimensions (`customers`, `products`, `stores`) have DUPLICATE and NULL keys, so
  joins repeat fact rows (what eager aggregation must get right). Two of them have keys
  of another type than the facts' (int32 against int64), so those joins need casts;
  `customers.cust_id` has the facts' type, so that Tarn's rules that want plain column
  equalities (eager aggregation) apply to its joins.
- `returns` refers to sales, with NULL `sale_id`s (what `NOT IN` must get right) and ids
  that match no sale; it is Hive-partitioned by an integer (`yr`).
- Strings hold `%`, `_`, `!`, unicode (`東京`, `Köln`), empty strings and NULLs; numbers
  are negative as well as positive; floats are multiples of 1/4, which add up exactly
  in any order; every table has a unique, non-null `row_id`-like column, so a query can
  always order its rows totally.

Everything derives from one seed, so a lake (and therefore a query's answer) is the same
on every run. `COLUMNS` describes the tables to the generator: each column's type class
and values that occur in it (for literals that select something).
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

LAKE_SEED = 20240101

# Type classes, shared with the generator. Each maps to one Arrow type in the files.
INT, BIGINT, DEC15, DEC38, DOUBLE, STR, DATE, TS = (
    "int", "bigint", "dec15", "dec38", "double", "str", "date", "ts")
ARROW = {
    INT: pa.int32(), BIGINT: pa.int64(), DEC15: pa.decimal128(15, 2),
    DEC38: pa.decimal128(38, 10), DOUBLE: pa.float64(), STR: pa.string(),
    DATE: pa.date32(), TS: pa.timestamp("us"),
}
NUMERIC = {INT, BIGINT, DEC15, DEC38, DOUBLE}
INTEGER = {INT, BIGINT}

# Partition columns as Tarn's crawler types them (int64 / date / string); DuckDB is told
# the same with `hive_types`.
PARTITIONS = {
    "sales": {"region": STR, "day": DATE},
    "returns": {"yr": BIGINT},
}
DUCK_TYPES = {STR: "VARCHAR", DATE: "DATE", BIGINT: "BIGINT"}

REGIONS = ["north", "south", "east", "west"]
DAYS = [dt.date(2024, 1, d) for d in (1, 2, 3, 4)]
NOTES = ["plain", "a%b", "x_y", "東京 store", "", None, "a_b%c", "abc", "ab", "ba", "Ab",
         "promo 10%", "north", "a!b", "Köln", "b%a", "xay", None, "back\\slash"]
CITIES = ["Paris", "東京", "", None, "Köln", "a%b", "Lyon", "x_y", "Paris", "Oslo"]
SEGMENTS = ["retail", "corp", "corp", None, "gov", "_x"]
CATEGORIES = ["tools", "toys", "food", None, "%off", "tools"]
REASONS = ["damaged", "late", None, "wrong_size", "", "東京"]


def _money(rng: random.Random, lo: int = -5000, hi: int = 99999) -> Decimal:
    return Decimal(rng.randrange(lo, hi)) / 100


def _maybe(rng: random.Random, value, share: float):
    """`value`, or None with probability `share`."""
    return None if rng.random() < share else value


# Columns per table: (name, type class). Partition columns come last, as both engines
# put them.
SCHEMA: dict[str, list[tuple[str, str]]] = {
    "sales": [
        ("sale_id", BIGINT), ("cust_id", INT), ("prod_id", BIGINT), ("store_id", INT),
        ("qty", INT), ("price", DEC15), ("discount", DEC38), ("amount", DOUBLE),
        ("note", STR), ("ts", TS), ("sale_date", DATE), ("region", STR), ("day", DATE),
    ],
    "customers": [
        ("row_id", BIGINT), ("cust_id", INT), ("name", STR), ("city", STR),
        ("region", STR), ("segment", STR), ("credit", DEC15), ("signup", DATE),
        ("score", DOUBLE),
    ],
    "products": [
        ("row_id", INT), ("prod_id", INT), ("category", STR), ("cost", DEC15),
        ("weight", DOUBLE), ("label", STR),
    ],
    "stores": [
        ("row_id", INT), ("store_id", BIGINT), ("region", STR), ("manager", STR),
        ("opened", DATE), ("size", INT),
    ],
    "returns": [
        ("return_id", BIGINT), ("sale_id", BIGINT), ("rqty", INT), ("reason", STR),
        ("ret_ts", TS), ("refund", DEC15), ("yr", BIGINT),
    ],
}

# A column per table that no two rows share and that is never NULL: ordering by it (with
# the other tables' ones) makes any order total.
UNIQUE = {"sales": "sale_id", "customers": "row_id", "products": "row_id",
          "stores": "row_id", "returns": "return_id"}

# Join domains: columns of different tables whose values are meant to meet.
DOMAINS = {
    "cust": [("sales", "cust_id"), ("customers", "cust_id")],
    "prod": [("sales", "prod_id"), ("products", "prod_id")],
    "store": [("sales", "store_id"), ("stores", "store_id")],
    "sale": [("sales", "sale_id"), ("returns", "sale_id")],
    "region": [("sales", "region"), ("customers", "region"), ("stores", "region")],
    "size": [("sales", "qty"), ("stores", "size"), ("returns", "rqty")],
}


def _write(table: str, rows: dict[str, list], path: Path, row_group_size: int = 64):
    parts = PARTITIONS.get(table, {})
    columns = {name: pa.array(rows[name], ARROW[kind])
               for name, kind in SCHEMA[table] if name not in parts}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)


def _sales(rng: random.Random, root: Path) -> list[dict]:
    """Fact files: (region, day) partitions, some with two files of interleaved ids."""
    written = []
    next_id = 1000
    layout = []
    for region in REGIONS + [None]:
        for day in DAYS:
            if rng.random() < 0.35 and region is not None:
                continue  # not every partition exists
            layout.append((region, day, 2 if rng.random() < 0.3 else 1))
    shareable = None  # the even ids' range of the partition before, if it may be shared
    for region, day, files in layout:
        n = 40 + rng.randrange(120)
        if shareable is not None and rng.random() < 0.4:
            # The odd ids in (and beyond) the partition before's range: the partitions'
            # ranges overlap, though no id repeats.
            ids = [shareable + 1 + 2 * i for i in range(n * files)]
            next_id = max(next_id, ids[-1] + 1 + ids[-1] % 2)
            shareable = None
        else:
            ids = [next_id + 2 * i for i in range(n * files)]
            shareable = next_id
            next_id += 2 * n * files + rng.choice([0, 0, 100])  # gaps between partitions
        if files == 2 and rng.random() < 0.5:
            chunks = [ids[0::2], ids[1::2]]  # overlapping ranges
        else:
            chunks = [ids[i * n:(i + 1) * n] for i in range(files)]  # disjoint ranges
        for part, chunk in enumerate(chunks):
            if rng.random() < 0.3:
                chunk = list(reversed(chunk))
            big = rng.random() < 0.12
            rows = {"sale_id": chunk, "cust_id": [], "prod_id": [], "store_id": [], "qty": [],
                    "price": [], "discount": [], "amount": [], "note": [], "ts": [],
                    "sale_date": []}
            for _ in chunk:
                rows["cust_id"].append(_maybe(rng, 1 + rng.randrange(130), 0.06))
                rows["prod_id"].append(_maybe(rng, 1 + rng.randrange(65), 0.05))
                rows["store_id"].append(_maybe(rng, 1 + rng.randrange(12), 0.04))
                rows["qty"].append(_maybe(rng, rng.randrange(-3, 13), 0.05))
                price = _money(rng)
                if big and rng.random() < 0.2:
                    price = Decimal("9999999999999.99") - Decimal(rng.randrange(1000)) / 100
                    price = price if rng.random() < 0.7 else -price
                rows["price"].append(_maybe(rng, price, 0.05))
                rows["discount"].append(_maybe(
                    rng, Decimal(rng.randrange(1, 5 * 10**9)) / 10**10, 0.1))
                rows["amount"].append(_maybe(rng, rng.randrange(-400, 4000) / 4, 0.05))
                rows["note"].append(rng.choice(NOTES))
                rows["ts"].append(dt.datetime.combine(day, dt.time())
                                  + dt.timedelta(seconds=rng.randrange(86400)))
                rows["sale_date"].append(_maybe(
                    rng, day - dt.timedelta(days=rng.choice([0, 0, 0, 1, 3])), 0.03))
            folder = f"region={region if region is not None else '__HIVE_DEFAULT_PARTITION__'}"
            path = root / "sales" / folder / f"day={day.isoformat()}" / f"part-{part}.parquet"
            _write("sales", rows, path)
            written.append({"region": region, "day": day, "ids": chunk})
    return written


def _customers(rng: random.Random, root: Path):
    # Keys 1..120 with some repeated (up to three times), some missing, some NULL; two
    # files whose key ranges overlap.
    keys = []
    for k in range(1, 121):
        r = rng.random()
        if r < 0.08:
            continue
        keys.extend([k] * (1 if r < 0.8 else rng.choice([2, 3])))
    keys.extend([None] * 6)
    rng.shuffle(keys)
    half = len(keys) // 2
    for part, chunk in enumerate([keys[:half + 10], keys[half + 10:]]):
        base = part * 1000
        rows = {
            "row_id": [base + i for i in range(len(chunk))],
            "cust_id": chunk,
            "name": [f"cust-{k}" if k is not None else None for k in chunk],
            "city": [rng.choice(CITIES) for _ in chunk],
            "region": [rng.choice(REGIONS + [None, "north"]) for _ in chunk],
            "segment": [rng.choice(SEGMENTS) for _ in chunk],
            "credit": [_maybe(rng, _money(rng, -100000, 1000000), 0.08) for _ in chunk],
            "signup": [_maybe(rng, dt.date(2023, 1, 1) + dt.timedelta(days=rng.randrange(400)), 0.05)
                       for _ in chunk],
            "score": [_maybe(rng, rng.randrange(-40, 400) / 4, 0.08) for _ in chunk],
        }
        _write("customers", rows, root / "customers" / f"part-{part}.parquet")


def _products(rng: random.Random, root: Path):
    keys = [k for k in range(1, 61) if rng.random() > 0.05]
    keys += [rng.randrange(1, 61) for _ in range(8)] + [None, None, None]
    rng.shuffle(keys)
    rows = {
        "row_id": list(range(1, len(keys) + 1)),
        "prod_id": keys,
        "category": [rng.choice(CATEGORIES) for _ in keys],
        "cost": [_maybe(rng, _money(rng, -1000, 50000), 0.06) for _ in keys],
        "weight": [_maybe(rng, rng.randrange(0, 200) / 4, 0.06) for _ in keys],
        "label": [_maybe(rng, rng.choice(["red_1", "blue%", "東京", "", "x_y", "plain", "a%b"]), 0.1)
                  for _ in keys],
    }
    _write("products", rows, root / "products" / "products.parquet")


def _stores(rng: random.Random, root: Path):
    # Store 3 twice (in two regions), no store 11 or 12, one NULL key.
    keys = [1, 2, 3, 3, 4, 5, 6, 7, 8, 9, 10, None]
    rows = {
        "row_id": list(range(1, len(keys) + 1)),
        "store_id": keys,
        "region": ["north", "south", "north", "east", None, "west", "north", "", "south",
                   "east", None, "west"],
        "manager": ["Ann", "Bo", "Cy", None, "Di", "東京", "Ed", "", "Fa", "Gu", "Hi", "a_b"],
        "opened": [dt.date(2020, 1, 1) + dt.timedelta(days=97 * i) if i != 4 else None
                   for i in range(len(keys))],
        "size": [rng.randrange(-1, 9) if i != 5 else None for i in range(len(keys))],
    }
    _write("stores", rows, root / "stores" / "stores.parquet")


def _returns(rng: random.Random, root: Path, sale_ids: list[int]):
    for yr in (2023, 2024):
        n = 60 if yr == 2023 else 180
        rows = {"return_id": [], "sale_id": [], "rqty": [], "reason": [], "ret_ts": [],
                "refund": []}
        for i in range(n):
            rows["return_id"].append(yr * 1000 + i)
            r = rng.random()
            sid = rng.choice(sale_ids) if r < 0.85 else (None if r < 0.93 else 99000 + i)
            rows["sale_id"].append(sid)
            rows["rqty"].append(_maybe(rng, rng.randrange(0, 9), 0.06))
            rows["reason"].append(rng.choice(REASONS))
            rows["ret_ts"].append(_maybe(rng, dt.datetime(yr, 1, 1) + dt.timedelta(
                minutes=rng.randrange(60 * 24 * 30)), 0.04))
            rows["refund"].append(_maybe(rng, _money(rng, 0, 20000), 0.07))
        _write("returns", rows, root / "returns" / f"yr={yr}" / "part-0.parquet")


def write_lake(root: Path, seed: int = LAKE_SEED) -> Path:
    """Writes the lake under `root` (one folder per table); returns `root`."""
    rng = random.Random(seed)
    files = _sales(rng, root)
    _customers(rng, root)
    _products(rng, root)
    _stores(rng, root)
    ids = [i for f in files for i in f["ids"]]
    _returns(rng, root, ids)
    return root


def duckdb_views(root: Path) -> list[str]:
    """DuckDB statements that register each table as a view of the same name over the
    same files, with the partition columns typed as Tarn's crawler types them."""
    out = []
    for table in SCHEMA:
        parts = PARTITIONS.get(table, {})
        types = ", ".join(f"'{c}': {DUCK_TYPES[k]}" for c, k in parts.items())
        hive = f", hive_partitioning = true, hive_types = {{{types}}}" if parts else ""
        names = ", ".join(c for c, _ in SCHEMA[table])
        out.append(f"CREATE OR REPLACE VIEW {table} AS SELECT {names} FROM "
                   f"read_parquet('{root / table}/**/*.parquet'{hive})")
    return out


def column_values(con) -> dict[tuple[str, str], list]:
    """Distinct non-null values of every column, read through `con` (a DuckDB connection
    with `duckdb_views`): the generator draws literals from them, so that filters keep
    some rows."""
    out = {}
    for table, columns in SCHEMA.items():
        for name, _ in columns:
            rows = con.execute(
                f"SELECT DISTINCT {name} FROM {table} WHERE {name} IS NOT NULL ORDER BY 1"
            ).fetchall()
            out[(table, name)] = [r[0] for r in rows]
    return out
