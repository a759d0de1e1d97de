"""The embedded stack's launcher: accounts and credentials, detach/stop, foreground shutdown on SIGTERM, and
one-line errors (taken port, Redis failure, failed migration) instead of hangs."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from curate.errors import ServiceError
from curate.review import server

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _me(info, api_key: str) -> httpx.Response:
    return httpx.get(f"{info.api_url}/api/v1/me", headers={"X-Argilla-Api-Key": api_key}, timeout=30)


def test_accounts_are_random_private_and_in_the_workspace(argilla_server):
    info = argilla_server
    creds = info.home / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert server.read_credentials(info.home) == info
    assert info.api_url.startswith("http://127.0.0.1:")
    assert info.owner.password != "1234" and len(info.owner.password) >= 16 and len(info.owner.api_key) >= 32
    me = _me(info, info.owner.api_key).json()
    assert (me["username"], me["role"]) == ("owner", "owner")
    for account in info.annotators:
        assert _me(info, account.api_key).json()["role"] == "annotator"
    users = httpx.get(
        f"{info.api_url}/api/v1/users", headers={"X-Argilla-Api-Key": info.owner.api_key}, timeout=30
    ).json()["items"]
    # The server fixture is shared with other tests (the SDK suite adds users), so: ours exist, the default
    # argilla/1234 account never does.
    names = {u["username"] for u in users}
    assert {"owner", "ann1", "ann2"} <= names and "argilla" not in names
    ws = httpx.get(
        f"{info.api_url}/api/v1/me/workspaces", headers={"X-Argilla-Api-Key": info.annotators[0].api_key}, timeout=30
    ).json()["items"]
    assert [w["name"] for w in ws] == [info.workspace]
    # Password sign-in works for the UI.
    token = httpx.post(
        f"{info.api_url}/api/v1/token",
        data={"username": "ann1", "password": info.annotators[0].password},
        timeout=30,
    )
    assert token.status_code == 201, token.text
    bad = httpx.post(f"{info.api_url}/api/v1/token", data={"username": "argilla", "password": "1234"}, timeout=30)
    assert bad.status_code == 401


def test_engine_is_the_plugin_and_running_reports_the_stack(argilla_server):
    status = httpx.get(f"{argilla_server.api_url}/api/v1/status", timeout=30).json()
    assert status["search_engine"]["engine"] == "curate-sql"
    assert server.running(argilla_server.home)


def test_taken_port_is_one_line_error_without_starting_anything(argilla_server, tmp_path):
    port = int(argilla_server.api_url.rsplit(":", 1)[1])
    t0 = time.monotonic()
    with pytest.raises(ServiceError, match=f"port {port} .* already in use") as err:
        server.start(tmp_path / "h", port=port)
    assert "\n" not in str(err.value) and time.monotonic() - t0 < 5
    assert not (tmp_path / "h" / "pids.json").exists()


def test_redis_that_wont_start_is_one_line_error(tmp_path, monkeypatch):
    # Failure injection: a redis-server that dies at once (a real Redis can't be made to fail otherwise).
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL: cannot bind (injected)'\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(server, "_redis_binary", lambda: str(fake))
    with pytest.raises(ServiceError, match="Redis won't start: FATAL: cannot bind") as err:
        server.start(tmp_path / "h", port=_free_port())
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "h").glob("tmp-*")) and not (tmp_path / "h" / "pids.json").exists()


def test_failed_migration_is_one_line_error_and_stops_redis(tmp_path):
    home = tmp_path / "h"
    t0 = time.monotonic()
    with pytest.raises(ServiceError, match="database migration failed") as err:
        server.start(home, port=_free_port(), database_url="postgresql://nobody:wrong@127.0.0.1:1/none")
    assert "\n" not in str(err.value) and "wrong" not in str(err.value)  # no password in the message
    assert time.monotonic() - t0 < 120
    assert not list(home.glob("tmp-*")) and not (home / "pids.json").exists()


def test_unsupported_database_url_and_bad_annotator_names(tmp_path):
    with pytest.raises(ServiceError, match="unsupported database URL"):
        server.start(tmp_path / "a", port=_free_port(), database_url="mysql://x@y/z")
    with pytest.raises(ServiceError, match="bad annotator name"):
        server.start(tmp_path / "b", port=_free_port(), annotators=["Bad Name"])


def test_read_credentials_without_a_server(tmp_path):
    with pytest.raises(ServiceError, match="no review server was set up"):
        server.read_credentials(tmp_path)
    assert not server.running(tmp_path)
    server.stop(tmp_path)  # nothing to stop: no error


def test_detach_then_stop_then_serve_again_keeps_accounts(tmp_path):
    home = tmp_path / "home"
    info = server.start(home, port=_free_port(), annotators=["ann1"])
    pids = json.loads((home / "pids.json").read_text())
    tmpdir = Path(pids["tmpdir"])
    assert tmpdir.is_dir() and all(_alive(pids[k]) for k in ("redis", "server", "worker"))
    with pytest.raises(ServiceError, match="already runs"):
        server.start(home, port=_free_port())
    server.stop(home)
    assert not any(_alive(pids[k]) for k in ("redis", "server", "worker"))
    assert not tmpdir.exists() and not (home / "pids.json").exists() and not server.running(home)
    # Same home again: the same owner, old annotators kept, new ones added; data kept in argilla.db.
    again = server.start(home, port=_free_port(), annotators=["ann2"])
    try:
        assert again.owner == info.owner
        assert [a.username for a in again.annotators] == ["ann1", "ann2"]
        assert _me(again, again.annotators[1].api_key).json()["username"] == "ann2"
    finally:
        server.stop(home)


def test_foreground_stops_every_child_on_sigterm(tmp_path):
    home = tmp_path / "fg"
    port = _free_port()
    script = textwrap.dedent(
        f"""
        from curate.review import server
        server.start({str(home)!r}, port={port}, detach=False)
        print("READY", flush=True)
        server.wait({str(home)!r})
        print("STOPPED", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        pids = json.loads((home / "pids.json").read_text())
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/status", timeout=30).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline().strip() == "STOPPED"
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10
    while any(_alive(pids[k]) for k in ("redis", "server", "worker")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pids[k]) for k in ("redis", "server", "worker"))
    assert not Path(pids["tmpdir"]).exists() and not (home / "pids.json").exists()


def test_worker_runs_jobs_with_the_engine(argilla_server_pg, client):
    """Changing min_submitted enqueues an rq job that recomputes record status: only the worker can do it.

    On the PostgreSQL server: the SDK suite leaves hundreds of jobs queued on the SQLite one, which its one worker
    needed 153 s (load 20) to over 240 s (load 30) to work through before reaching this test's job."""
    import argilla as rg

    argilla_server = argilla_server_pg

    owner = client(argilla_server)
    settings = rg.Settings(
        fields=[rg.TextField(name="prompt")],
        questions=[rg.LabelQuestion(name="better", labels=["a", "b"])],
        distribution=rg.TaskDistribution(min_submitted=2),
    )
    ds = rg.Dataset(name=f"worker-{os.getpid()}-{time.time_ns()}", workspace=argilla_server.workspace,
                    settings=settings, client=owner).create()
    ds.records.log([{"prompt": "一"}, {"prompt": "two"}])
    headers = {"X-Argilla-Api-Key": argilla_server.annotators[0].api_key}
    items = httpx.get(f"{argilla_server.api_url}/api/v1/datasets/{ds.id}/records",
                      headers={"X-Argilla-Api-Key": argilla_server.owner.api_key}, timeout=30).json()["items"]
    r = httpx.post(f"{argilla_server.api_url}/api/v1/records/{items[0]['id']}/responses", headers=headers,
                   json={"values": {"better": {"value": "a"}}, "status": "submitted"}, timeout=30)
    assert r.status_code == 201, r.text

    def completed() -> int:
        return httpx.get(f"{argilla_server.api_url}/api/v1/datasets/{ds.id}/progress",
                         headers={"X-Argilla-Api-Key": argilla_server.owner.api_key}, timeout=30).json()["completed"]

    assert completed() == 0
    ds.settings.distribution = rg.TaskDistribution(min_submitted=1)
    ds.update()
    # the one worker may still be working through the jobs earlier tests queued
    deadline = time.monotonic() + 240
    while completed() != 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert completed() == 1
