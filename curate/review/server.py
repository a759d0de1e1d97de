"""Embedded Argilla stack: Redis + argilla-server 2.8.0 (own venv) + rq worker, with curate's SQL search engine.

Why: a normal Argilla deployment needs Elasticsearch; this runs the real server and web UI on SQLite or
PostgreSQL with a search-engine plugin that answers from Argilla's own tables (see search_engine.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from curate.errors import ServiceError


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
    """Start Redis, argilla-server and its worker; migrate; create accounts; wait until ready."""
    raise ServiceError("curate review serve: not implemented yet")


def wait(home: str | Path) -> None:
    """Foreground mode: block until SIGINT/SIGTERM, then stop everything cleanly."""
    raise ServiceError("not implemented yet")


def stop(home: str | Path) -> None:
    """Stop a detached stack (reads <home>/pids.json) and remove its temporary folders."""
    raise ServiceError("not implemented yet")


def read_credentials(home: str | Path) -> ServerInfo:
    """Read <home>/credentials.json; ServiceError if no server was set up there."""
    raise ServiceError("not implemented yet")


def running(home: str | Path) -> bool:
    """True when the stack recorded in <home>/pids.json is alive and answering."""
    return False
