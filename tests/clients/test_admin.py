"""The admin gRPC API through the CLI's `--server` mode: crawls run on a remote server, and
tables, partitions and crawl history are read from it; with TLS and roles when secured."""

import json

import pyarrow.parquet as pq

from conftest import PASSWORDS, Server, connect, tarn


def test_remote_crawl_then_list_describe_and_history(lake, tmp_path):
    root = lake["root"]
    server = Server(tmp_path / "server", command=("--allow-location", str(root), "serve"))
    client_dir = tmp_path / "client"  # the CLI's own data dir stays untouched
    remote = ("--server", server.uri)
    try:
        out = tarn(client_dir, "crawl", str(root), "--database", "remote", "--json", *remote)
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout)
        assert sorted(summary["tables_created"]) == ["remote.events", "remote.users"]
        assert [p["path"].rsplit("/", 1)[-1] for p in summary["problems"]] == ["corrupt.parquet"]
        assert not (client_dir / "catalog.db").exists()

        # The server's Flight SQL sees what its admin API crawled.
        expected = sum(pq.read_metadata(p).num_rows for p in lake["good"]["events"])
        with connect(server.uri) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM remote.events")
            assert cur.fetchone() == (expected,)

        tables = tarn(client_dir, "tables", "--database", "remote", *remote)
        assert tables.returncode == 0, tables.stderr
        assert "events" in tables.stdout and "users" in tables.stdout

        described = tarn(client_dir, "describe", "remote.events", *remote)
        assert described.returncode == 0, described.stderr
        assert f"{expected} rows" in described.stdout
        assert "partition" in described.stdout and "device" in described.stdout

        partitions = tarn(client_dir, "partitions", "remote.events", *remote)
        assert partitions.returncode == 0, partitions.stderr
        header = partitions.stdout.splitlines()[1]
        assert all(k in header for k in ("year", "month", "day", "hour", "files", "rows"))

        history = tarn(client_dir, "crawls", *remote)
        assert history.returncode == 0, history.stderr
        assert "succeeded" in history.stdout and str(root) in history.stdout.replace("\n", "")

        # A location the server is not configured for is refused, naming the fix.
        refused = tarn(client_dir, "crawl", "/etc", *remote)
        assert refused.returncode != 0
        assert "--allow-location" in refused.stderr

        missing = tarn(client_dir, "describe", "remote.nope", *remote)
        assert missing.returncode != 0 and "remote.nope" in missing.stderr
    finally:
        server.stop()


def test_local_admin_commands_read_the_local_catalog(lake):
    out = tarn(lake["data_dir"], "describe", "events")
    assert out.returncode == 0, out.stderr
    assert "default.events (parquet)" in out.stdout


def test_remote_admin_over_tls_with_roles(secured, lake, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text(secured["ca"])
    remote = ("--server", secured["server"].uri, "--tls-ca", str(ca))
    as_reader = tarn(tmp_path, "crawl", str(lake["root"]), *remote, "--token", secured["token"])
    assert as_reader.returncode != 0
    assert "'dashboard-job' has role reader, and crawling needs role admin" in as_reader.stderr

    listed = tarn(tmp_path, "tables", *remote, "--user", "alice", env={"TARN_PASSWORD": PASSWORDS["alice"]})
    assert listed.returncode == 0, listed.stderr
    assert "users" in listed.stdout

    wrong = tarn(tmp_path, "tables", *remote, "--user", "alice", env={"TARN_PASSWORD": "rabbit"})
    assert wrong.returncode != 0 and "wrong user name or password" in wrong.stderr

    plain = tarn(tmp_path, "tables", "--server", secured["server"].uri, "--token", secured["token"])
    assert plain.returncode != 0, "no CA given: the server's certificate is not trusted"
