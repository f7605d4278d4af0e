"""Fixtures: a fixture lake crawled by the real `tarn` binary, and a real `tarn serve`
on 127.0.0.1:0 for the session. The binary comes from TARN_BIN (set by scripts/test)."""

import json
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest

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


class Server:
    """`tarn serve` in a child process; the address comes from its ready line."""

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
                m = re.search(r"listening on (grpc(?:\+tls)?)://(\S+)", line)
                if m:
                    found["scheme"], found["addr"] = m.group(1), m.group(2)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60) or "addr" not in found:
            self.stop()
            raise RuntimeError(f"tarn serve did not start: {self.proc.stderr.read()}")
        self.uri = f"{found['scheme']}://{found['addr']}"

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
