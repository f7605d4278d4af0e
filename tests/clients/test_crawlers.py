"""Crawlers as catalog objects: defined, run, listed and scheduled through the CLI, and run
by the server on their schedule."""

import datetime as dt
import json
import re

from conftest import Server, connect, tarn


def test_crawler_lifecycle(lake, tmp_path):
    root = str(lake["root"])
    bad = tarn(tmp_path, "crawler", "create", "nightly", root, "--schedule", "every night")
    assert bad.returncode != 0
    assert "'every night' is not a cron expression" in bad.stderr

    made = tarn(tmp_path, "crawler", "create", "nightly", root, "--database", "lake", "--schedule", "0 3 * * *")
    assert made.returncode == 0, made.stderr
    assert "next run" in made.stdout and "T03:00:00" in made.stdout
    again = tarn(tmp_path, "crawler", "create", "nightly", root)
    assert again.returncode != 0 and "already exists" in again.stderr

    listed = tarn(tmp_path, "crawler", "list")
    assert "nightly" in listed.stdout and "0 3 * * *" in listed.stdout

    # Not due a second before its next run (the clock given, so the test never depends
    # on when it runs).
    next_run = dt.datetime.fromisoformat(re.search(r"next run (\d{4}-\d\d-\d\dT03:00:00(?:\.\d+)?(?:Z|[+-]\d\d:\d\d))", made.stdout).group(1))
    before = (next_run - dt.timedelta(seconds=1)).isoformat()
    due = tarn(tmp_path, "crawler", "run-due", "--at", before)
    assert due.returncode == 0 and "no crawler is due" in due.stdout, due.stdout + due.stderr

    ran = tarn(tmp_path, "crawler", "run", "nightly", "--json")
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert sorted(summary["tables_created"]) == ["lake.events", "lake.users"]

    rerun = json.loads(tarn(tmp_path, "crawler", "run", "nightly", "--json").stdout)
    # Only the corrupt file (not catalogued, so looked at again) is read.
    assert rerun["files_added"] == 0 and rerun["footers_read"] == len(summary["problems"]) == 1

    history = tarn(tmp_path, "crawler", "history", "nightly")
    assert history.returncode == 0
    assert history.stdout.count("succeeded") == 2

    missing = tarn(tmp_path, "crawler", "run", "weekly")
    assert missing.returncode != 0 and "crawler 'weekly' does not exist" in missing.stderr

    dropped = tarn(tmp_path, "crawler", "drop", "nightly")
    assert dropped.returncode == 0
    assert "nightly" not in tarn(tmp_path, "crawler", "list").stdout


def test_server_runs_scheduled_crawlers(lake, tmp_path):
    # Every second (a 6-field schedule, seconds first); the server checks every second.
    made = tarn(tmp_path, "crawler", "create", "often", str(lake["root"]), "--database", "sched",
                "--schedule", "* * * * * *")
    assert made.returncode == 0, made.stderr
    server = Server(tmp_path, command=("serve", "--schedule-check-secs", "1"), env={"TARN_LOG": "tarn=info"})
    try:
        server.wait_for_log(r"scheduled crawl finished.*crawler=often|crawler=often.*scheduled crawl finished")
        with connect(server.uri) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM sched.users")
            assert cur.fetchall() == [(50,)]
    finally:
        server.stop()
    history = tarn(tmp_path, "crawler", "history", "often")
    assert "succeeded" in history.stdout
