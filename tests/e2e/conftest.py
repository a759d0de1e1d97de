"""Live embedded Argilla servers for the end-to-end tests, started once per test session.

`argilla_server` runs on SQLite under a temporary home; `argilla_server_pg` on the PostgreSQL database named by
$CURATE_TEST_PG_URL (CI exports it from scripts/ci_services.sh; locally run that script yourself). Both have the
annotators "ann1" and "ann2". Tests share a server, so each uses its own dataset names.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import httpx
import pytest

from curate.review import server
from curate.review.server import Account, ServerInfo

ANNOTATORS = ("ann1", "ann2")
# The engine switches page-query plans at this many matches (1000 in use); 10 makes the 30-record test
# datasets exercise both plans. Servers inherit the environment.
os.environ.setdefault("CURATE_SQL_DENSE_MATCHES", "10")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(url: str, sql: str) -> str:
    """Run one SQL statement with psql against `url` (stop on error) and return its unaligned output."""
    out = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-tAqc", sql], check=True, capture_output=True,
                         text=True)
    return out.stdout.strip()


def new_pg_database(prefix: str) -> str:
    """A fresh, empty PostgreSQL database next to the test one (`prefix` + a random suffix): its URL. The caller
    drops it with `drop_pg_database` once its server is stopped."""
    base = pg_url()
    name = f"{prefix}_{uuid.uuid4().hex[:6]}"
    psql(base, f"CREATE DATABASE {name}")
    return urlunparse(urlparse(base)._replace(path=f"/{name}"))


def drop_pg_database(url: str) -> None:
    psql(pg_url(), f"DROP DATABASE IF EXISTS {urlparse(url).path[1:]} WITH (FORCE)")


class TextSearch:
    """The annotator UI's search-box request over HTTP, as `account` (the owner by default): `search` returns the
    page's external ids, the total and the query scores; `field=None` searches the whole record."""

    def __init__(self, info: ServerInfo, account: Account | None = None):
        account = account or info.owner
        self.http = httpx.Client(base_url=info.api_url, headers={"X-Argilla-Api-Key": account.api_key}, timeout=60)

    def search(self, ds: str, q: str, field: str | None = None, limit: int = 100, offset: int = 0):
        text = {"q": q} if field is None else {"q": q, "field": field}
        r = self.http.post(f"/api/v1/me/datasets/{ds}/records/search", params={"limit": limit, "offset": offset},
                           json={"query": {"text": text}})
        assert r.status_code == 200, r.text
        data = r.json()
        return ([i["record"]["external_id"] for i in data["items"]], data["total"],
                [i["query_score"] for i in data["items"]])


def client(info: ServerInfo, account: Account | None = None):
    """An argilla SDK client signed in as `account` (the owner by default)."""
    import argilla as rg

    account = account or info.owner
    return rg.Argilla(api_url=info.api_url, api_key=account.api_key, timeout=120)


def pg_url() -> str:
    url = os.environ.get("CURATE_TEST_PG_URL")
    if not url:
        pytest.fail(
            "CURATE_TEST_PG_URL is not set: run `export CURATE_TEST_PG_URL=\"$(bash scripts/ci_services.sh | tail -n1)\"`"
        )
    return url


def _serve(home: Path, database_url: str | None) -> ServerInfo:
    return server.start(home, port=free_port(), database_url=database_url, annotators=ANNOTATORS, detach=True)


@pytest.fixture(scope="session")
def argilla_server(tmp_path_factory) -> ServerInfo:
    home = tmp_path_factory.mktemp("argilla-sqlite")
    info = _serve(home, None)
    try:
        yield info
    finally:
        server.stop(home)


@pytest.fixture(scope="session")
def argilla_server_pg(tmp_path_factory) -> ServerInfo:
    url = pg_url()
    home = tmp_path_factory.mktemp("argilla-pg")
    info = _serve(home, url)
    try:
        yield info
    finally:
        server.stop(home)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_server(request) -> ServerInfo:
    """Each test using this runs once per database."""
    return request.getfixturevalue("argilla_server" if request.param == "sqlite" else "argilla_server_pg")


@pytest.fixture(name="client")
def client_fixture():
    """The `client(info, account)` helper as a fixture."""
    return client
