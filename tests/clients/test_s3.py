"""Crawling and querying a lake in S3, served by a real S3 API server (moto) on loopback."""

import json
import os

import pyarrow.parquet as pq
import pytest

from conftest import check_remote_lake, moto_s3, tarn
from lake import write_lake


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_s3("lake") as (env, client):
        root = tmp_path_factory.mktemp("s3lake")
        good = write_lake(root)
        for path in root.rglob("*"):
            if path.is_file():
                client.upload_file(str(path), "lake", f"raw/{path.relative_to(root).as_posix()}")
        yield {"env": env, "good": good}


def test_crawl_and_query_s3(s3, tmp_path):
    check_remote_lake("s3://lake/raw", s3["env"], s3["good"], tmp_path)


def test_missing_bucket_is_a_clear_error(s3, tmp_path):
    out = tarn(tmp_path, "crawl", "s3://no-such-bucket/raw", env=s3["env"])
    assert out.returncode != 0
    assert "no-such-bucket" in out.stderr
    assert "panicked" not in out.stderr


def test_listing_pages_through_thousands_of_keys(s3, tmp_path):
    import boto3
    import io

    import pyarrow as pa

    client = boto3.client(
        "s3", endpoint_url=s3["env"]["AWS_ENDPOINT_URL"], region_name="us-east-1",
        aws_access_key_id="tarn-test", aws_secret_access_key="tarn-test",
    )
    client.create_bucket(Bucket="wide")
    buf = io.BytesIO()
    pq.write_table(pa.table({"n": [1, 2, 3]}), buf)
    data = buf.getvalue()
    # 40 partitions of one data file and 30 side files each: 1,240 keys, two list pages.
    for p in range(40):
        client.put_object(Bucket="wide", Key=f"t/p={p:03d}/part-0.parquet", Body=data)
        for k in range(30):
            client.put_object(Bucket="wide", Key=f"t/p={p:03d}/.part-{k}.crc", Body=b"c")
    crawl = tarn(tmp_path, "crawl", "s3://wide/", "--json", env=s3["env"])
    assert crawl.returncode == 0, crawl.stderr
    summary = json.loads(crawl.stdout)
    assert summary["files_listed"] == 40 * 31
    assert summary["files_added"] == 40
    assert summary["skipped"]["hidden"] == 40 * 30
    out = tarn(tmp_path, "sql", "SELECT count(*) AS n, count(DISTINCT p) AS parts FROM t",
               "--format", "csv", env=s3["env"])
    assert out.stdout.split() == ["n,parts", "120,40"]


def test_an_aws_profile_gives_the_endpoint_region_and_keys(s3, tmp_path):
    """No AWS_* settings in the environment but a profile: its shared config and
    credentials files are read, as AWS tools read them."""
    aws = tmp_path / "aws"
    aws.mkdir()
    (aws / "config").write_text(
        "[default]\nregion = eu-west-3\n\n"
        f"[profile lake]\nregion = us-east-1\nendpoint_url = {s3['env']['AWS_ENDPOINT_URL']}\n"
    )
    (aws / "credentials").write_text(
        "[lake]\naws_access_key_id = tarn-test\naws_secret_access_key = tarn-test\n"
    )
    env = {
        "AWS_PROFILE": "lake",
        "AWS_CONFIG_FILE": str(aws / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(aws / "credentials"),
    }
    assert not any(k in os.environ for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"))
    out = tarn(tmp_path / "data", "crawl", "s3://lake/raw", "--table", "raw_users",
               "--include", "users/**", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tables_created"] == ["default.raw_users"]


def test_virtual_hosted_addressing_puts_the_bucket_in_the_host(s3, tmp_path):
    """With AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true the bucket goes in front of the endpoint's
    host (`lake.s3.tarn.test`), as AWS SDKs address it. That name resolves nowhere, so
    requests reach moto through it as an HTTP proxy, and moto takes the bucket from the Host
    header: the crawl only works if every request is addressed virtual-hosted."""
    port = s3["env"]["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]
    env = {
        **s3["env"],
        "AWS_ENDPOINT_URL": f"http://s3.tarn.test:{port}",
        "AWS_PROXY_URL": s3["env"]["AWS_ENDPOINT_URL"],
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "true",
    }
    out = tarn(tmp_path, "crawl", "s3://lake/raw", "--table", "vhost_users",
               "--include", "users/**", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tables_created"] == ["default.vhost_users"]
    rows = sum(pq.read_metadata(p).num_rows for p in s3["good"]["users"])
    out = tarn(tmp_path, "sql", "SELECT count(*) AS n FROM vhost_users", "--format", "csv",
               env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["n", str(rows)]

    # The same endpoint path-style names bucket `s3` to moto, which has no such bucket.
    path_style = {k: v for k, v in env.items() if k != "AWS_VIRTUAL_HOSTED_STYLE_REQUEST"}
    out = tarn(tmp_path / "other", "crawl", "s3://lake/raw", "--include", "users/**",
               env=path_style)
    assert out.returncode != 0
    assert "panicked" not in out.stderr
