"""The engines a query runs on: DuckDB in-process (the oracle) and `tarn serve` processes
over one catalog, reached through ADBC Flight SQL as a client would reach them.

Two Tarn servers answer every query: one with Tarn's defaults (every planner rule on) and
one with every rule off (`--datafusion-config tarn.<rule>=false,…` and
`--no-rollup-rewrite`): plain DataFusion over Tarn's tables. When the two disagree, a
Tarn rule is to blame, and servers with one rule off each (started only when a
difference needs them, then kept) tell which. Every server runs with
`--result-cache-mb 0`, so a query the shrinker repeats is really run again.

The rule names come from `TarnOptions` in crates/optimizer/src/lib.rs, read at start-up, so a new
rule is switched off (and blamed) without editing this file.
"""

from __future__ import annotations

import collections
import concurrent.futures
import ctypes
import os
import re
import signal
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
OPTIONS_SOURCE = ROOT / "crates" / "optimizer" / "src" / "lib.rs"
QUERY_TIMEOUT_S = 60


def tarn_rules(source: Path = OPTIONS_SOURCE) -> list[str]:
    """The fields of `TarnOptions` (each a rule's `tarn.<name>` switch), in order."""
    text = source.read_text()
    m = re.search(r"pub struct TarnOptions \{(.*?)\n    \}", text, re.S)
    if not m:
        raise RuntimeError(f"no `pub struct TarnOptions` in {source}")
    names = re.findall(r"pub (\w+): bool, default = true", m.group(1))
    if not names:
        raise RuntimeError(f"no rule switches in TarnOptions ({source})")
    return names


def _die_with_parent():
    """In the child, before exec: ask Linux to terminate it when this process dies, so a
    killed fuzzer leaves no servers behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: `Engines.close` still stops the servers on a normal exit


@dataclass
class Outcome:
    """A query's result on one engine: its rows, or the error it failed with."""
    rows: Optional[list[tuple]] = None
    error: Optional[str] = None
    columns: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


class DuckEngine:
    """DuckDB over the lake's files, each table a view of the name Tarn gives it."""

    def __init__(self, views: list[str]):
        self.views = views
        self.restarts = 0
        self.connect()

    def connect(self):
        import duckdb

        self.con = duckdb.connect()
        self.con.execute("SET threads = 1")  # the data is tiny; leave the cores to Tarn
        for v in self.views:
            self.con.execute(v)

    def run(self, sql: str) -> Outcome:
        start = time.monotonic()
        timer = threading.Timer(QUERY_TIMEOUT_S, self.con.interrupt)
        timer.start()
        try:
            cur = self.con.execute(sql)
            rows = cur.fetchall()
            return Outcome(rows=rows, columns=[d[0] for d in cur.description],
                           seconds=time.monotonic() - start)
        except Exception as e:  # noqa: BLE001 - any failure is the query's outcome
            message = f"{type(e).__name__}: {e}"
            if "INTERNAL Error" in message or "FATAL Error" in message:
                # DuckDB invalidates its database after an internal error: every later
                # query would fail. This one's outcome is the error; start afresh.
                self.con.close()
                self.restarts += 1
                self.connect()
            return Outcome(error=message, seconds=time.monotonic() - start)
        finally:
            timer.cancel()

    def close(self):
        self.con.close()


class TarnServer:
    """A `tarn serve` child process on 127.0.0.1:0 and an ADBC connection to it."""

    def __init__(self, binary: str, data_dir: Path, disabled: frozenset[str] = frozenset(),
                 no_rollup: bool = False, extra_config: tuple[str, ...] = ()):
        self.binary, self.data_dir = binary, data_dir
        self.disabled, self.no_rollup = disabled, no_rollup
        self.extra_config = extra_config
        self.log: collections.deque[str] = collections.deque(maxlen=200)
        self.proc: Optional[subprocess.Popen] = None
        self.conn = None
        self.restarts = 0
        self.start()

    @property
    def name(self) -> str:
        if self.no_rollup:
            return "tarn-off"
        return "tarn-on" if not self.disabled else "tarn-without-" + "+".join(sorted(self.disabled))

    def command(self) -> list[str]:
        config = [f"tarn.{r}=false" for r in sorted(self.disabled)] + list(self.extra_config)
        cmd = [self.binary, "--data-dir", str(self.data_dir)]
        if config:
            cmd += ["--datafusion-config", ",".join(config)]
        if self.no_rollup:
            cmd.append("--no-rollup-rewrite")
        return cmd + ["serve", "--listen", "127.0.0.1:0", "--result-cache-mb", "0"]

    def start(self):
        # Tarn reads every flag from a TARN_* variable too: none may leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("TARN_")}
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env,
                                     preexec_fn=_die_with_parent)
        found: dict[str, str] = {}
        ready = threading.Event()

        def read_stdout():
            for line in self.proc.stdout:
                self.log.append(line)
                m = re.search(r"listening on (grpc(?:\+tls)?)://(\S+)", line)
                if m and not ready.is_set():
                    found["uri"] = f"{m.group(1)}://{m.group(2)}"
                    ready.set()
            ready.set()  # the process ended

        def read_stderr():
            for line in self.proc.stderr:
                self.log.append(line)

        threading.Thread(target=read_stdout, daemon=True).start()
        threading.Thread(target=read_stderr, daemon=True).start()
        if not ready.wait(120) or "uri" not in found:
            self.stop()
            log = "".join(self.log)
            hint = (" (the binary does not know a rule that crates/optimizer/src/lib.rs's TarnOptions "
                    "names: rebuild it, or use one built from this checkout)"
                    if "not found on TarnOptions" in log else "")
            raise RuntimeError(f"{self.name} did not start{hint}: {log[-2000:]}")
        self.uri = found["uri"]
        self.connect()

    def connect(self):
        import adbc_driver_flightsql
        import adbc_driver_flightsql.dbapi as flightsql

        timeout = str(QUERY_TIMEOUT_S)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no transactions: the DB-API wrapper warns
            self.conn = flightsql.connect(self.uri, db_kwargs={
                adbc_driver_flightsql.DatabaseOptions.TIMEOUT_QUERY.value: timeout,
                adbc_driver_flightsql.DatabaseOptions.TIMEOUT_FETCH.value: timeout,
            })

    def run(self, sql: str) -> Outcome:
        start = time.monotonic()
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql)
                table = cur.fetch_arrow_table()
            columns = [c.to_pylist() for c in table.columns]
            rows = list(zip(*columns)) if columns else []
            return Outcome(rows=rows, columns=table.column_names, seconds=time.monotonic() - start)
        except Exception as e:  # noqa: BLE001 - any failure is the query's outcome
            error = f"{type(e).__name__}: {e}"
            if self.proc.poll() is not None:
                # The server died with this query: that is the outcome; start another.
                error = f"tarn server exited ({self.proc.returncode}): {''.join(self.log)[-1500:]}"
                self.restart()
            return Outcome(error=error, seconds=time.monotonic() - start)

    def restart(self):
        self.stop()
        self.restarts += 1
        self.start()

    def stop(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - the server may be gone already
                pass
            self.conn = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Engines:
    """DuckDB, Tarn with every rule on, Tarn with every rule off; and, on demand, Tarn
    with a chosen set of rules off."""

    def __init__(self, binary: str, data_dir: Path, duck_views: list[str],
                 rules: Optional[list[str]] = None, extra_config: tuple[str, ...] = ()):
        self.binary, self.data_dir = binary, data_dir
        self.rules = rules or tarn_rules()
        self.extra_config = extra_config
        self.duck = DuckEngine(duck_views)
        self.on = TarnServer(binary, data_dir, extra_config=extra_config)
        self.off = TarnServer(binary, data_dir, frozenset(self.rules), no_rollup=True,
                              extra_config=extra_config)
        self.variants: dict[frozenset[str], TarnServer] = {}
        self.pool = concurrent.futures.ThreadPoolExecutor(2)

    def run(self, tarn_sql: str, duck_sql: str) -> dict[str, Outcome]:
        """The query on the three engines at once (each server has a core to itself,
        DuckDB's share is small; ADBC and DuckDB release the GIL while they wait)."""
        on = self.pool.submit(self.on.run, tarn_sql)
        off = self.pool.submit(self.off.run, tarn_sql)
        duck = self.duck.run(duck_sql)
        return {"tarn-on": on.result(), "tarn-off": off.result(), "duckdb": duck}

    def with_off(self, disabled: frozenset[str]) -> TarnServer:
        """A server with exactly `disabled` rules off (started on first use, then kept)."""
        if not disabled:
            return self.on
        if disabled not in self.variants:
            self.variants[disabled] = TarnServer(self.binary, self.data_dir, disabled,
                                                 extra_config=self.extra_config)
        return self.variants[disabled]

    @property
    def servers(self) -> list[TarnServer]:
        return [self.on, self.off, *self.variants.values()]

    def close(self):
        self.pool.shutdown()
        for s in self.servers:
            s.stop()
        self.duck.close()
