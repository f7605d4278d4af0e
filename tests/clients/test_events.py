"""Event mode: a crawler that reads the bucket's S3 event notifications from an SQS queue
(moto serves both, and delivers the notifications itself) and re-crawls only the tables
they name."""

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from conftest import moto_s3, tarn
from lake import write_lake


def run(data, env) -> dict:
    out = tarn(data, "crawler", "run", "raw", "--json", env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def notifications(env, s3, bucket: str, name: str) -> str:
    """An SQS queue that `bucket` sends its object created and removed events to."""
    import boto3

    sqs = boto3.client(
        "sqs", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
        aws_access_key_id="tarn-test", aws_secret_access_key="tarn-test",
    )
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={"QueueConfigurations": [
            {"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]},
    )
    return queue


def test_event_mode_recrawls_only_the_tables_the_events_name(tmp_path):
    with moto_s3("evlake") as (env, s3):
        queue = notifications(env, s3, "evlake", "lake-events")
        root = tmp_path / "src"
        good = write_lake(root)
        uploads = [p for p in root.rglob("*") if p.is_file()]
        for path in uploads:
            s3.upload_file(str(path), "evlake", f"raw/{path.relative_to(root).as_posix()}")

        data = tmp_path / "data"
        created = tarn(data, "crawler", "create", "raw", "s3://evlake/raw",
                       "--events-queue", queue, env=env)
        assert created.returncode == 0, created.stderr

        # The first run crawls everything, and takes the events of the uploads with it.
        first = run(data, env)
        assert sorted(first["tables_created"]) == ["default.events", "default.users"]
        # (and the test event S3 sends when notifications are configured).
        assert first["events_read"] == len(uploads) + 1

        # Nothing new: one request to the queue, no listing.
        idle = run(data, env)
        assert idle["events_read"] == 0 and idle["files_listed"] == 0
        assert idle["tables_updated"] == idle["tables_unchanged"] == []

        # A new hour of events: only that folder of that table is listed and crawled.
        new_rows = pq.read_table(good["events"][0])
        s3.put_object(Bucket="evlake", Key="raw/events/year=2026/month=03/day=09/hour=01/new.parquet",
                      Body=parquet_bytes(new_rows))
        # A writer's success marker at the table's top does not widen the crawl.
        s3.put_object(Bucket="evlake", Key="raw/events/_SUCCESS", Body=b"")
        one = run(data, env)
        assert one["events_read"] == 2
        assert one["tables_updated"] == ["default.events"]
        assert "default.users" not in one["tables_unchanged"]
        events_objects = len(s3.list_objects_v2(Bucket="evlake", Prefix="raw/events/")["Contents"])
        assert one["files_listed"] == 1 < events_objects
        assert one["files_added"] == 1 and one["files_removed"] == 0
        before = sum(pq.read_metadata(p).num_rows for p in good["events"])
        out = tarn(data, "sql", "SELECT count(*) AS n FROM events", "--format", "csv", env=env)
        assert out.stdout.split() == ["n", str(before + new_rows.num_rows)], out.stderr

        # Its folder emptied again: listed alone, its file removed, the others kept.
        s3.delete_object(Bucket="evlake", Key="raw/events/year=2026/month=03/day=09/hour=01/new.parquet")
        emptied = run(data, env)
        assert emptied["files_listed"] == 0 and emptied["files_removed"] == 1, emptied
        out = tarn(data, "sql", "SELECT count(*) AS n FROM events", "--format", "csv", env=env)
        assert out.stdout.split() == ["n", str(before)], out.stderr

        # A removed object is an event too.
        users_key = s3.list_objects_v2(Bucket="evlake", Prefix="raw/users/")["Contents"][0]["Key"]
        s3.delete_object(Bucket="evlake", Key=users_key)
        gone = run(data, env)
        assert gone["tables_updated"] == ["default.users"] and gone["files_removed"] == 1

        # An object outside every table may start a new one: the whole location is crawled.
        s3.put_object(Bucket="evlake", Key="raw/orders/part-0.parquet",
                      Body=parquet_bytes(pa.table({"order_id": [1, 2, 3]})))
        new_table = run(data, env)
        assert new_table["tables_created"] == ["default.orders"]
        out = tarn(data, "crawler", "history", "raw", env=env)
        assert out.returncode == 0, out.stderr
        # Every run that had events to act on is in the crawler's history (the idle one,
        # with nothing queued, records no crawl), each succeeded.
        assert out.stdout.count("succeeded") == 5, out.stdout
        assert "failed" not in out.stdout


def test_event_mode_keeps_globs_and_retries_unreadable_files(tmp_path):
    """The crawler's include/exclude globs (relative to its location) hold for the tables
    its events re-crawl, and a file that could not be read (here an archived object,
    readable once restored) keeps its notification in the queue for the next run."""
    with moto_s3("evlake-retry") as (env, s3):
        queue = notifications(env, s3, "evlake-retry", "retry-events")
        rows = pa.table({"id": [1, 2, 3]})

        def put(key, **kw):
            s3.put_object(Bucket="evlake-retry", Key=f"raw/{key}", Body=parquet_bytes(rows), **kw)

        put("events/day=1/a.parquet")
        data = tmp_path / "data"
        created = tarn(data, "crawler", "create", "raw", "s3://evlake-retry/raw",
                       "--events-queue", queue, "--exclude", "events/day=3/**", env=env)
        assert created.returncode == 0, created.stderr
        assert run(data, env)["tables_created"] == ["default.events"]

        put("events/day=2/b.parquet")
        put("events/day=3/c.parquet")
        globbed = run(data, env)
        assert globbed["events_read"] == 2
        assert globbed["files_added"] == 1 and globbed["skipped"]["excluded"] == 1, globbed
        out = tarn(data, "sql", "SELECT day, count(*) AS n FROM events GROUP BY day ORDER BY day",
                   "--format", "csv", env=env)
        assert out.stdout.split() == ["day,n", "1,3", "2,3"], out.stderr

        put("events/day=4/d.parquet", StorageClass="GLACIER")
        archived = run(data, env)
        assert archived["files_added"] == 0 and archived["events_kept"] == 1, archived
        assert archived["retry"] == ["raw/events/day=4/d.parquet"], archived
        [problem] = archived["problems"]
        assert "crawl again to retry" in problem["message"], problem

        s3.restore_object(Bucket="evlake-retry", Key="raw/events/day=4/d.parquet",
                          RestoreRequest={"Days": 1})
        retried = run(data, env)
        assert retried["events_read"] == 1 and retried["events_kept"] == 0, retried
        assert retried["files_added"] == 1 and retried["problems"] == [], retried
        idle = run(data, env)
        assert idle["events_read"] == 0 and idle["files_listed"] == 0, idle
        out = tarn(data, "sql", "SELECT count(*) AS n FROM events", "--format", "csv", env=env)
        assert out.stdout.split() == ["n", "9"], out.stderr
