"""Fixtures: a fixture lake crawled by the real `tarn` binary, and a real `tarn serve`
on 127.0.0.1:0 for the session. The binary comes from TARN_BIN (set by scripts/test)."""

import json
import os
import re
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme

from lake import write_lake

ROOT = Path(__file__).resolve().parents[2]


def tarn_bin() -> str:
    path = os.environ.get("TARN_BIN") or str(ROOT / "target" / "debug" / "tarn")
    if not Path(path).exists():
        pytest.exit(f"tarn binary not found at {path}; build it with `cargo build` or set TARN_BIN")
    return path


def tarn(data_dir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tarn_bin(), "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    good = write_lake(root)
    data_dir = tmp_path_factory.mktemp("data")
    crawl = tarn(data_dir, "crawl", str(root), "--json")
    assert crawl.returncode == 0, crawl.stderr
    summary = json.loads(crawl.stdout)
    return {"root": root, "good": good, "data_dir": data_dir, "summary": summary}


def tpch_lake(work: Path, scale: float) -> tuple[Path, Path]:
    """TPC-H at `scale` as Parquet under `work` (tpchgen-cli, `--parts 2`: two files a
    table but nation and region, so the rules and plans that need several files apply),
    crawled into a catalog of its own: the data's directory and the catalog's."""
    import sys
    data = work / f"sf{scale:g}"
    tpchgen = Path(sys.executable).parent / "tpchgen-cli"
    subprocess.run([str(tpchgen), "parquet", "-s", f"{scale:g}", "--parts", "2",
                    "--output-dir", str(data)], check=True, capture_output=True)
    catalog = work / "tarn"
    crawled = tarn(catalog, "crawl", str(data))
    assert crawled.returncode == 0, crawled.stderr
    return data, catalog


class Server:
    """`tarn serve` (or `tarn worker`) in a child process; the address comes from its ready
    line."""

    def __init__(self, data_dir: Path, command=("serve",), env: dict | None = None):
        self.proc = subprocess.Popen(
            [tarn_bin(), "--data-dir", str(data_dir), *command, "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )
        self.output = []
        ready = threading.Event()
        found = {}

        def read():
            for line in self.proc.stdout:
                self.output.append(line)
                m = re.search(r"(?:Flight SQL|worker) listening on (grpc(?:\+tls)?|http)://(\S+)",
                              line)
                if m:
                    found["scheme"], found["addr"] = m.group(1), m.group(2)
                    ready.set()
            ready.set()

        self.log = []
        self.logged = threading.Condition()

        def read_log():
            for line in self.proc.stderr:
                with self.logged:
                    self.log.append(line)
                    self.logged.notify_all()

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=read_log, daemon=True).start()
        if not ready.wait(60) or "addr" not in found:
            self.stop()
            raise RuntimeError(f"tarn serve did not start: {''.join(self.log)}")
        self.uri = f"{found['scheme']}://{found['addr']}"

    def wait_for_log(self, pattern: str, timeout: float = 60) -> str:
        """Waits until the server logs a line matching `pattern` (its log goes to stderr)."""
        found = {}

        def seen():
            for line in self.log:
                if re.search(pattern, line):
                    found["line"] = line
                    return True
            return False

        with self.logged:
            if not self.logged.wait_for(seen, timeout):
                raise AssertionError(f"server never logged {pattern!r}: {''.join(self.log)[-2000:]}")
        return found["line"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def server(lake):
    s = Server(lake["data_dir"])
    yield s
    s.stop()
    assert s.proc.returncode == 0, f"tarn serve exited with {s.proc.returncode}"


PASSWORDS = {"alice": "wonderland", "bob": "builder"}


def hash_password(password: str) -> str:
    out = subprocess.run(
        [tarn_bin(), "auth", "hash-password"], input=password + "\n",
        capture_output=True, text=True, check=True,
    )
    return out.stdout.strip()


def credentials(root: Path, token_name: str = "dashboard-job") -> dict:
    """A CA and a certificate for 127.0.0.1, and a config with alice (admin), bob (reader)
    and an API token (reader) named `token_name`, written under `root`."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path, ca_path = root / "cert.pem", root / "key.pem", root / "ca.pem"
    cert_path.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key_path))
    ca.cert_pem.write_to_path(str(ca_path))

    made = tarn(root, "auth", "new-token")
    assert made.returncode == 0, made.stderr
    token = made.stdout.split("token:")[1].split()[0]
    sha_line = next(line for line in made.stdout.splitlines() if line.startswith("sha256"))
    config = root / "tarn.toml"
    config.write_text(
        "token_ttl_secs = 600\n\n"
        f'[[users]]\nname = "alice"\npassword_hash = "{hash_password(PASSWORDS["alice"])}"\nrole = "admin"\n\n'
        f'[[users]]\nname = "bob"\npassword_hash = "{hash_password(PASSWORDS["bob"])}"\nrole = "reader"\n\n'
        f'[[tokens]]\nname = "{token_name}"\n{sha_line}\nrole = "reader"\n'
    )
    return {"cert": cert_path, "key": key_path, "ca": ca_path, "token": token, "config": config}


@pytest.fixture(scope="session")
def secured(lake, tmp_path_factory):
    """A TLS, auth-enabled server over the shared lake's catalog."""
    made = credentials(tmp_path_factory.mktemp("secured"))
    server = Server(lake["data_dir"], command=(
        "serve", "--config", str(made["config"]), "--tls-cert", str(made["cert"]),
        "--tls-key", str(made["key"]),
    ))
    yield {"server": server, "ca": made["ca"].read_text(), "token": made["token"]}
    server.stop()
    assert server.proc.returncode == 0


def connect(uri: str, **kwargs):
    import adbc_driver_flightsql.dbapi as flightsql
    import warnings

    with warnings.catch_warnings():
        # Tarn is read-only and has no transactions; the DB-API wrapper warns about that.
        warnings.simplefilter("ignore")
        return flightsql.connect(uri, **kwargs)


@pytest.fixture()
def conn(server):
    c = connect(server.uri)
    yield c
    c.close()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def flight_sql_command(name: str, query: str) -> bytes:
    """A Flight SQL command with one string field (the query), wrapped in protobuf `Any`,
    encoded by hand: what a raw `pyarrow.flight` client sends."""
    inner = b"\x0a" + _varint(len(query.encode())) + query.encode()
    url = f"type.googleapis.com/arrow.flight.protocol.sql.{name}".encode()
    return b"\x0a" + _varint(len(url)) + url + b"\x12" + _varint(len(inner)) + inner


@contextmanager
def postgres_server():
    """A throwaway PostgreSQL server (Debian's `postgresql` binaries) on a free loopback
    port, with its cluster in a temporary directory; yields a function that creates a
    database and returns its URL. Run as root (as CI is), the server runs as `postgres`."""
    import shutil
    import socket
    import tempfile

    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name))
    assert versions, "PostgreSQL's server is not installed (scripts/test installs Debian's postgresql)"
    bin_dir = versions[-1].parent
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="tarn-pg-"))
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-A", "trust", "-U", "tarn",
                    "--no-sync", "-E", "UTF8", "-D", str(data)], check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [*as_postgres, str(bin_dir / "postgres"), "-D", str(data), "-h", "127.0.0.1",
         "-p", str(port), "-k", str(root), "-c", "fsync=off", "-c", "max_connections=200"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ready = threading.Event()
    log = []

    def read():
        for line in proc.stderr:
            log.append(line)
            if "ready to accept connections" in line:
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(60) and proc.poll() is None, f"PostgreSQL did not start: {''.join(log)}"

        def database(name: str) -> str:
            subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "tarn", "-d",
                            "postgres", "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {name}"],
                           check=True, capture_output=True)
            return f"postgres://tarn@127.0.0.1:{port}/{name}"

        yield database
    finally:
        # SIGINT is PostgreSQL's fast shutdown, sent to the server itself (runuser does not
        # pass signals on): its pid is the first line of postmaster.pid.
        pid_file = data / "postmaster.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text().split()[0]), 2)
        else:
            proc.send_signal(2)
        proc.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def moto_s3(*buckets: str):
    """A real S3 API server (moto) on loopback with `buckets` created; yields the AWS
    environment that points Tarn (and boto3/deltalake) at it. Servers in one test process
    share moto's state, so each test module uses buckets of its own."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {
            "AWS_ACCESS_KEY_ID": "tarn-test",
            "AWS_SECRET_ACCESS_KEY": "tarn-test",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        }
        client = boto3.client(
            "s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
            aws_access_key_id="tarn-test", aws_secret_access_key="tarn-test",
        )
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield env, client
    finally:
        server.stop()


def check_remote_lake(location: str, env: dict, good: dict, tmp_path: Path):
    """Crawls the fixture lake (`lake.write_lake`) uploaded under `location` (an object
    store URL), checks the crawl, an incremental re-crawl, the CLI and a served join."""
    import pyarrow.parquet as pq

    crawl = tarn(tmp_path, "crawl", location, "--json", env=env)
    assert crawl.returncode == 0, crawl.stderr
    summary = json.loads(crawl.stdout)
    assert sorted(summary["tables_created"]) == ["default.events", "default.users"]
    assert [p["path"] for p in summary["problems"]] == [
        "raw/events/year=2026/month=03/day=02/hour=22/corrupt.parquet"
    ]
    expected = sum(pq.read_metadata(p).num_rows for p in good["events"])
    out = tarn(tmp_path, "sql", "SELECT count(*) AS n FROM events", "--format", "csv", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["n", str(expected)]

    again = tarn(tmp_path, "crawl", location, "--json", env=env)
    assert json.loads(again.stdout)["footers_read"] == 1, "only the corrupt file is re-read"

    server = Server(tmp_path, env=env)
    try:
        with connect(server.uri) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM events e JOIN users u USING (user_id) WHERE day = ?",
                        parameters=(1,))
            (n,) = cur.fetchone()
            day1 = sum(pq.read_metadata(p).num_rows for p in good["events"] if "day=01" in str(p))
            assert n == day1
    finally:
        server.stop()


def pytest_sessionfinish(session, exitstatus):
    """A skipped test fails the run (its reason is listed by `-rs`): a missing tool must not
    turn a run green without the tests it would have run. Skips the person running the tests
    asked for (reason `asked: …`, e.g. TARN_FUZZ_QUERIES=0) are expected; `TARN_ALLOW_SKIPS=1`
    allows the others on a machine known to lack a tool (say so where it is set)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = [
        report for report in (reporter.stats.get("skipped", []) if reporter else [])
        if not (isinstance(report.longrepr, tuple) and "asked:" in str(report.longrepr[-1]))
    ]
    if skipped and exitstatus == 0 and os.environ.get("TARN_ALLOW_SKIPS") != "1":
        names = ", ".join(report.nodeid for report in skipped)
        reporter.write_line(f"unexpected skips (set TARN_ALLOW_SKIPS=1 to allow): {names}", red=True)
        session.exitstatus = 1
