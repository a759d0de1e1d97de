"""Bounded requests: search queries are capped (clear 422), request bodies are capped before they are read (413;
a large upload without a valid key gets 401 first), and a SELECT that runs past the time limit is stopped (here:
one waiting on a PostgreSQL lock; the SQLite progress handler is exercised by tests/e2e/test_load.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid

import httpx
import pytest

pytestmark = pytest.mark.e2e
_DS: dict[str, str] = {}


def _dataset(info, client) -> str:
    if info.api_url not in _DS:
        import argilla as rg

        owner = client(info)  # first: the SDK's settings objects bind to the latest client
        settings = rg.Settings(fields=[rg.TextField(name="prompt", client=owner)],
                               questions=[rg.LabelQuestion(name="better", labels=["a", "b"], client=owner)])
        ds = rg.Dataset(name=f"limits-{uuid.uuid4().hex[:8]}", workspace=info.workspace, settings=settings,
                        client=owner).create()
        ds.records.log([{"prompt": f"量子力学 question {i}"} for i in range(5)])
        _DS[info.api_url] = str(ds.id)
    return _DS[info.api_url]


@pytest.fixture
def dataset_id(any_server, client) -> str:
    return _dataset(any_server, client)


def _search(info, dataset_id, q, account=None):
    account = account or info.annotators[0]
    t = time.monotonic()
    r = httpx.post(f"{info.api_url}/api/v1/me/datasets/{dataset_id}/records/search",
                   headers={"X-Argilla-Api-Key": account.api_key}, json={"query": {"text": {"q": q}}}, timeout=120)
    return r, time.monotonic() - t


def test_hostile_queries_get_a_clear_4xx_at_once(any_server, dataset_id):
    cases = {
        "x " * 500_000: "characters long; the limit is 1000",  # ran 188 s and left the server at 4.9 GB
        " ".join(f"t{i}" for i in range(20_000)): "characters long",  # stalled every request for 14 s
        " ".join(f"w{i}" for i in range(40)): "has 40 terms; the limit is 32",  # ~1000 terms: "Expression tree"
    }
    for q, message in cases.items():
        r, took = _search(any_server, dataset_id, q)
        assert r.status_code == 422 and message in r.json()["detail"], r.text[:300]
        assert took < 10, f"a refused query took {took:.1f} s"
    r, _ = _search(any_server, dataset_id, "量子")
    assert r.status_code == 200 and r.json()["total"] == 5


def _raw(info, request: bytes, then_send: bytes = b"", wait: float = 10.0) -> bytes:
    port = int(info.api_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(request)
        if then_send:
            try:
                s.sendall(then_send)
            except OSError:  # the server answered and closed without reading it all: what we want
                pass
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        try:
            data += s.recv(4096)
        except OSError:
            pass
        return data


def _head(path: str, length: int, key: str | None = None, method: str = "POST") -> bytes:
    auth = f"X-Argilla-Api-Key: {key}\r\n" if key else ""
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
            f"Content-Length: {length}\r\n\r\n").encode()


def test_bodies_over_the_limit_are_refused_before_they_are_read(any_server, dataset_id):
    t = time.monotonic()
    # 200 MB announced, not a byte of it sent: the answer comes at once (it was read fully before the 401)
    reply = _raw(any_server, _head(f"/api/v1/me/datasets/{dataset_id}/records/search", 200_000_000))
    assert reply.startswith(b"HTTP/1.1 413") and b"over the limit" in reply
    bulk = f"/api/v1/datasets/{dataset_id}/records/bulk"
    reply = _raw(any_server, _head(bulk, 10_000_000, method="PUT"))  # a big upload, no key: refused unread
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    reply = _raw(any_server, _head(bulk, 10_000_000, key="not-a-key", method="PUT"))
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    reply = _raw(any_server, _head(bulk, 200_000_000, key=any_server.owner.api_key, method="PUT"))
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert time.monotonic() - t < 10
    # no Content-Length (chunked): read up to the limit, then refused
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(40)) + b"0\r\n\r\n"  # 2.5 MiB
    head = (f"POST /api/v1/me/datasets/{dataset_id}/records/search HTTP/1.1\r\nHost: x\r\n"
            f"X-Argilla-Api-Key: {any_server.annotators[0].api_key}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    assert _raw(any_server, head, body).startswith(b"HTTP/1.1 413")


def test_a_large_upload_with_a_valid_key_is_accepted(any_server, dataset_id):
    text = "长" * 1_000_000  # a 3 MB field: over the 2 MiB cap of other requests, within the upload cap
    r = httpx.put(f"{any_server.api_url}/api/v1/datasets/{dataset_id}/records/bulk",
                  headers={"X-Argilla-Api-Key": any_server.owner.api_key},
                  json={"items": [{"external_id": f"big-{uuid.uuid4().hex[:6]}", "fields": {"prompt": text}}]},
                  timeout=120)
    assert r.status_code == 200, r.text[:300]
    assert len(json.dumps({"prompt": text}, ensure_ascii=False).encode()) > 2 * 1024 * 1024


def test_a_select_past_the_time_limit_is_stopped_on_postgresql(argilla_server_pg, client):
    """A lock held on `responses` makes every read of it wait; statement_timeout (5 s) stops the wait."""
    from tests.e2e.conftest import pg_url

    info = argilla_server_pg
    dataset_id = _dataset(info, client)
    holder = subprocess.Popen(
        ["psql", pg_url(), "-v", "ON_ERROR_STOP=1", "-c",
         "BEGIN; LOCK TABLE responses IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(20); COMMIT;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.0)
        assert holder.poll() is None, holder.stderr.read().decode()[:300]
        headers = {"X-Argilla-Api-Key": info.annotators[0].api_key}
        pending = {"filters": {"and": [{"type": "terms", "scope": {"entity": "response", "property": "status"},
                                        "values": ["pending"]}]}}
        t = time.monotonic()
        r = httpx.post(f"{info.api_url}/api/v1/me/datasets/{dataset_id}/records/search", headers=headers,
                       json=pending, timeout=60)
        took = time.monotonic() - t
        assert r.status_code == 422 and "longer than 5 s" in r.json()["detail"], r.text[:300]
        assert 4 < took < 15
        r = httpx.get(f"{info.api_url}/api/v1/me/datasets/{dataset_id}/metrics", headers=headers, timeout=60)
        assert r.status_code == 503 and "took longer than 5 s" in r.json()["detail"]
        assert "canceling" not in r.text and "asyncpg" not in r.text
    finally:
        holder.kill()
        holder.wait()
    r = httpx.post(f"{info.api_url}/api/v1/me/datasets/{dataset_id}/records/search",
                   headers={"X-Argilla-Api-Key": info.annotators[0].api_key}, json={}, timeout=60)
    assert r.status_code == 200  # the server is fine afterwards
