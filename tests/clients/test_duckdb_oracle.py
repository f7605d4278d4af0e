"""Query results through ADBC must equal DuckDB's over the same good files."""

import datetime as dt

import duckdb
import pytest

# (Tarn SQL, DuckDB SQL): the same question in each dialect.
QUERIES = [
    (
        "SELECT kind, count(*), sum(score), min(ts), max(ts) FROM events GROUP BY kind",
        None,
    ),
    (
        "SELECT day, hour, count(*), count(device), avg(score) FROM events GROUP BY day, hour",
        None,
    ),
    (
        "SELECT date_trunc('hour', ts) AS h, count(DISTINCT user_id) FROM events GROUP BY 1",
        None,
    ),
    (
        "SELECT date_bin(INTERVAL '15 minutes', ts, TIMESTAMP '2026-01-01') AS w, kind, count(*) "
        "FROM events WHERE day = 2 GROUP BY 1, 2",
        "SELECT time_bucket(INTERVAL '15 minutes', ts, TIMESTAMP '2026-01-01') AS w, kind, count(*) "
        "FROM events WHERE day = 2 GROUP BY 1, 2",
    ),
    (
        "SELECT u.country, u.plan, count(*), sum(e.score) FROM events e "
        "JOIN users u ON e.user_id = u.user_id WHERE e.kind = 'submit' GROUP BY 1, 2",
        None,
    ),
    (
        "SELECT u.name, count(e.user_id) FROM users u LEFT JOIN events e "
        "ON e.user_id = u.user_id AND e.device = 'ios' GROUP BY 1",
        None,
    ),
    (
        "SELECT day, kind, n, rank() OVER (PARTITION BY day ORDER BY n DESC) FROM "
        "(SELECT day, kind, count(*) AS n FROM events GROUP BY day, kind)",
        None,
    ),
    (
        "SELECT user_id, ts, score, "
        "sum(score) OVER (PARTITION BY user_id ORDER BY ts, score ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW), "
        "lag(kind) OVER (PARTITION BY user_id ORDER BY ts, score, kind) "
        "FROM events WHERE user_id IN (3, 17) AND day = 1",
        None,
    ),
    (
        "SELECT user_id, count(*) FROM events WHERE hour BETWEEN 7 AND 13 AND score >= 50 "
        "GROUP BY user_id HAVING count(*) > 10",
        None,
    ),
]


@pytest.fixture(scope="module")
def duck(lake):
    con = duckdb.connect()
    files = ", ".join(f"'{p}'" for p in lake["good"]["events"])
    con.execute(
        f"CREATE VIEW events AS SELECT * FROM read_parquet([{files}], "
        "hive_partitioning = true, union_by_name = true, "
        "hive_types = {'year': BIGINT, 'month': BIGINT, 'day': BIGINT, 'hour': BIGINT})"
    )
    con.execute(f"CREATE VIEW users AS SELECT * FROM read_parquet('{lake['good']['users'][0]}')")
    return con


def normalise(rows):
    def cell(v):
        if isinstance(v, float):
            return round(v, 9)
        if isinstance(v, dt.datetime):
            return v.replace(tzinfo=None)
        return v

    return sorted((tuple(cell(v) for v in row) for row in rows), key=repr)


@pytest.mark.parametrize("tarn_sql,duck_sql", QUERIES, ids=[f"q{i}" for i in range(len(QUERIES))])
def test_matches_duckdb(conn, duck, tarn_sql, duck_sql):
    cur = conn.cursor()
    cur.execute(tarn_sql)
    ours = normalise(cur.fetchall())
    theirs = normalise(duck.execute(duck_sql or tarn_sql).fetchall())
    assert len(ours) > 0
    assert ours == theirs
