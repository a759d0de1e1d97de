"""Local lockdown (docs/review-security.md): the home is 0700 and every file in it 0600; Redis listens on a unix
socket in a 0700 folder, with a password, and no TCP port; no secret appears on a command line or in an
environment other local users could read (/proc/PID/cmdline is world-readable); the token-signing key is kept
across restarts. On the SQLite and the PostgreSQL server."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.e2e


def _modes(home: Path) -> list[tuple[str, int, bool]]:
    out = []
    for root, dirs, files in os.walk(home):
        for name in dirs + files:
            p = Path(root) / name
            st = p.lstat()
            out.append((str(p.relative_to(home)), stat.S_IMODE(st.st_mode), stat.S_ISDIR(st.st_mode)))
    return out


def test_home_and_everything_in_it_are_private(any_server):
    home = any_server.home
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    modes = _modes(home)
    names = {n for n, _, _ in modes}
    assert {"credentials.json", "secrets.json", "pids.json", "logs/server.log", "logs/worker.log",
            "logs/redis.log", "redis/redis.conf"} <= names
    if (home / "argilla.db").exists():
        assert "argilla.db" in names
    for name, mode, is_dir in modes:
        if "/statics" in name:  # argilla's copy of its public web UI, inside the run's 0700 tmp-* folder
            continue
        assert mode & 0o077 == 0, f"{name} is {oct(mode)}: readable by others"
        if not is_dir and not name.endswith(".sock"):
            assert mode == 0o600, f"{name} is {oct(mode)}"
    tmp = [n for n, _, d in modes if d and n.startswith("tmp-") and "/" not in n]
    assert tmp and all(stat.S_IMODE((home / t).stat().st_mode) == 0o700 for t in tmp)


def _stack(home: Path) -> list[psutil.Process]:
    pids = json.loads((home / "pids.json").read_text())
    procs = []
    for key in ("redis", "server", "worker"):
        p = psutil.Process(pids[key])
        procs += [p, *p.children(recursive=True)]
    return procs


def test_redis_needs_its_password_and_has_no_tcp_port(any_server):
    home = any_server.home
    sock = home / "redis" / "redis.sock"
    assert stat.S_ISSOCK(sock.lstat().st_mode) and stat.S_IMODE((home / "redis").stat().st_mode) == 0o700
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # a job pushed from outside is refused
        s.settimeout(5)
        s.connect(str(sock))
        s.sendall(b"RPUSH rq:queue:default injected\r\n")
        assert s.recv(256).startswith(b"-NOAUTH")
    redis = psutil.Process(json.loads((home / "pids.json").read_text())["redis"])
    assert [c for c in redis.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN] == []
    conf = (home / "redis" / "redis.conf").read_text()
    assert "port 0" in conf and "requirepass " in conf


def test_no_secret_on_any_command_line_or_environment(any_server):
    home = any_server.home
    keys = json.loads((home / "secrets.json").read_text())
    creds = json.loads((home / "credentials.json").read_text())
    secrets = [keys["secret_key"], keys["redis_password"], creds["owner"]["password"], creds["owner"]["api_key"],
               *[a["api_key"] for a in creds["annotators"]], *[a["password"] for a in creds["annotators"]]]
    if creds["database"] == "postgresql":  # the database password the user gave
        from urllib.parse import urlparse

        from tests.e2e.conftest import pg_url

        secrets.append(urlparse(pg_url()).password)
    for proc in _stack(home):
        cmdline = " ".join(proc.cmdline())
        # what the launcher itself was given (here CURATE_TEST_PG_URL) passes through, as for any child process
        environ = "\n".join(f"{k}={v}" for k, v in proc.environ().items() if os.environ.get(k) != v)
        for secret in secrets:
            assert secret not in cmdline, f"a secret on the command line of {proc.name()}"
            assert secret not in environ, f"a secret in the environment of {proc.name()}"


def test_signing_key_is_kept_and_private(any_server):
    keys = json.loads((any_server.home / "secrets.json").read_text())
    assert len(keys["secret_key"]) == 64 and len(keys["redis_password"]) >= 32
    # serving the same home again reuses it (tests/e2e/test_browser.py restarts a stack mid-annotation)
    from curate.review.server import load_secrets

    assert load_secrets(any_server.home) == keys
