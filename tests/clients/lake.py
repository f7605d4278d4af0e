"""A Firehose-style fixture lake written with pyarrow, and the list of its good files.

events/year=2026/month=03/day=DD/hour=HH/part-N.parquet over two days; the second day's
writer widened user_id (int32 -> int64) and score (float32 -> float64) and added `device`.
Beside the data: _SUCCESS markers, .crc side files, an abandoned _temporary/ upload, a
._COPYING_ upload in progress, an empty file and a corrupt file.
"""

import datetime as dt
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

KINDS = ["view", "view", "answer", "answer", "hint", "submit"]
DEVICES = ["web", "ios", "android", None]
USERS = 50


def write_lake(root: Path) -> dict:
    rng = random.Random(20260322)
    good = {"events": [], "users": []}
    events = root / "events"
    start = dt.datetime(2026, 3, 1, 0, 0, 0)
    for day in (1, 2):
        for hour in (0, 7, 13, 22):
            folder = events / f"year=2026/month=03/day={day:02d}/hour={hour:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for part in range(2):
                n = 300 + rng.randrange(200)
                base = start + dt.timedelta(days=day - 1, hours=hour)
                ts = sorted(base + dt.timedelta(seconds=rng.randrange(3600)) for _ in range(n))
                users = [1 + rng.randrange(USERS) for _ in range(n)]
                kinds = [rng.choice(KINDS) for _ in range(n)]
                # Multiples of 1/4 add up exactly in binary floating point, so sums
                # compare exactly across engines whatever the order of addition.
                scores = [rng.randrange(400) / 4 for _ in range(n)]
                if day == 1:
                    table = pa.table({
                        "ts": pa.array(ts, pa.timestamp("us")),
                        "user_id": pa.array(users, pa.int32()),
                        "kind": kinds,
                        "score": pa.array(scores, pa.float32()),
                    })
                else:
                    table = pa.table({
                        "user_id": pa.array(users, pa.int64()),
                        "ts": pa.array(ts, pa.timestamp("us")),
                        "kind": kinds,
                        "score": pa.array(scores, pa.float64()),
                        "device": [rng.choice(DEVICES) for _ in range(n)],
                    })
                path = folder / f"part-{part}.parquet"
                pq.write_table(table, path, row_group_size=128)
                good["events"].append(path)
                (folder / f".part-{part}.parquet.crc").write_bytes(b"crc")
        (events / f"year=2026/month=03/day={day:02d}/_SUCCESS").write_bytes(b"")
    temp = events / "_temporary/0/task_1"
    temp.mkdir(parents=True)
    (temp / "part-9.parquet").write_bytes(b"PAR1 half written")
    last = events / "year=2026/month=03/day=02/hour=22"
    (last / "part-5.parquet._COPYING_").write_bytes(b"PAR1")
    (last / "empty.parquet").write_bytes(b"")
    (last / "corrupt.parquet").write_bytes(b"PAR1" + bytes(range(200)) + b"\x10\x00\x00\x00PAR1")

    users = root / "users"
    users.mkdir(parents=True)
    ids = list(range(1, USERS + 1))
    table = pa.table({
        "user_id": pa.array(ids, pa.int64()),
        "name": [f"learner-{i:03d}" for i in ids],
        "country": [rng.choice(["DE", "FR", "IN", "US"]) for _ in ids],
        "plan": [rng.choice(["free", "school"]) for _ in ids],
    })
    pq.write_table(table, users / "users.parquet")
    good["users"].append(users / "users.parquet")
    return good
