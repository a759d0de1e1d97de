"""One hostile user can't stall everyone: 8 annotators take the next record and submit (a fast human's pace)
while one user sends hostile searches and bodies; the annotators' p95 stays under 300 ms, every hostile request
gets its clear 4xx (a slow scan stopped by SQLite's progress handler), and the server's memory returns to within
100 MB of where it started.

A dedicated SQLite server (3,000 records of dense Chinese text, cloned in the database) with a 1 s query limit, so
that the slowest query a user can still send — 32 one-character terms, each too common for the text index — runs
into it."""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import statistics
import threading
import time
import uuid

import httpx
import psutil
import pytest

from curate.review import server

pytestmark = pytest.mark.e2e

ANNOTATORS = [f"ann{i}" for i in range(1, 9)]
POOL = "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss(home) -> int:
    pid = json.loads((home / "pids.json").read_text())["server"]
    p = psutil.Process(pid)
    return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)])


def _p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[max(0, -(-95 * len(xs) // 100) - 1)]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    home = tmp_path_factory.mktemp("load") / "home"
    os.environ["CURATE_REVIEW_QUERY_TIMEOUT_S"] = "1"
    try:
        info = server.start(home, port=_free_port(), annotators=ANNOTATORS)
    finally:
        os.environ.pop("CURATE_REVIEW_QUERY_TIMEOUT_S", None)
    try:
        import argilla as rg

        owner = rg.Argilla(api_url=info.api_url, api_key=info.owner.api_key, timeout=120)
        settings = rg.Settings(fields=[rg.TextField(name="prompt", client=owner), rg.TextField(name="response", client=owner)],
                               questions=[rg.LabelQuestion(name="better", labels=["a", "b", "tie"], client=owner)],
                               distribution=rg.TaskDistribution(min_submitted=1))
        ds = rg.Dataset(name=f"load-{uuid.uuid4().hex[:6]}", workspace=info.workspace, settings=settings,
                        client=owner).create()
        rnd = random.Random(0)
        ds.records.log([rg.Record(id=f"s{i:03d}", fields={"prompt": "".join(rnd.choice(POOL) for _ in range(400)),
                                                         "response": "".join(rnd.choice(POOL) for _ in range(600))})
                        for i in range(200)])
        con = sqlite3.connect(home / "argilla.db", timeout=60)  # to 3,000 records (the text index's triggers fire)
        for k in range(1, 15):
            con.execute(
                "INSERT INTO records (id, fields, metadata, external_id, dataset_id, status, inserted_at, updated_at) "
                "SELECT lower(hex(randomblob(16))), fields, metadata, external_id || '-' || ?, dataset_id, status, "
                "inserted_at, updated_at FROM records WHERE dataset_id = ? AND external_id NOT LIKE '%-%'",
                (k, ds.id.hex),
            )
        con.commit()
        assert con.execute("SELECT count(*) FROM records WHERE dataset_id = ?", (ds.id.hex,)).fetchone()[0] == 3000
        con.close()
        yield info, str(ds.id), home
    finally:
        server.stop(home)


def _annotator(info, account, dataset_id, stop, lat, errors):
    http = httpx.Client(base_url=info.api_url, headers={"X-Argilla-Api-Key": account.api_key}, timeout=60)
    queue = {"filters": {"and": [{"type": "terms", "scope": {"entity": "response", "property": "status"},
                                  "values": ["pending"]}]}}
    rnd = random.Random(account.username)
    while not stop.is_set():
        t = time.perf_counter()
        r = http.post(f"/api/v1/me/datasets/{dataset_id}/records/search", params={"limit": 1, "offset": rnd.randrange(50)},
                      json=queue)
        lat.append(time.perf_counter() - t)
        if r.status_code != 200 or not r.json()["items"]:
            errors.append(f"next record: {r.status_code} {r.text[:100]}")
            continue
        rid = r.json()["items"][0]["record"]["id"]
        time.sleep(0.3)  # reads and decides
        t = time.perf_counter()
        r = http.post(f"/api/v1/records/{rid}/responses",
                      json={"values": {"better": {"value": rnd.choice("ab")}}, "status": "submitted"})
        lat.append(time.perf_counter() - t)
        if r.status_code != 201:
            errors.append(f"submit: {r.status_code} {r.text[:100]}")


def _hostile(info, dataset_id, outcomes):
    key = info.owner.api_key
    search = f"{info.api_url}/api/v1/me/datasets/{dataset_id}/records/search"
    port = int(info.api_url.rsplit(":", 1)[1])

    def q(text):
        r = httpx.post(search, headers={"X-Argilla-Api-Key": key}, json={"query": {"text": {"q": text}}}, timeout=120)
        return r.status_code, r.json().get("detail", "")

    def raw(head: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(head)
            return s.recv(200)

    for _ in range(2):
        outcomes.append(("500k terms", *q("x " * 500_000)))
        outcomes.append(("20k terms", *q(" ".join(f"t{i}" for i in range(20_000)))))
        outcomes.append(("1000 terms", *q(" ".join(f"w{i}" for i in range(1000)))))
        head = (f"POST /api/v1/me/datasets/{dataset_id}/records/search HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/json\r\nContent-Length: 200000000\r\n\r\n").encode()
        outcomes.append(("200 MB body, no key", int(raw(head)[9:12]), ""))
        for _ in range(3):
            outcomes.append(("slow scan", *q(" ".join(POOL[:32]))))


def _annotators(info, dataset_id, seconds: float | None, during=None) -> tuple[list[float], list[str], float]:
    """8 annotators at work for `seconds`, or while `during` (a thread) runs; their latencies and errors."""
    accounts = {a.username: a for a in info.annotators}
    stop, lat, errors = threading.Event(), [], []
    workers = [threading.Thread(target=_annotator, args=(info, accounts[n], dataset_id, stop, lat, errors))
               for n in ANNOTATORS]
    for w in workers:
        w.start()
    time.sleep(2)  # annotators at work first
    t0 = time.monotonic()
    if during is not None:
        during.start()
        during.join(timeout=180)
    busy = time.monotonic() - t0
    time.sleep(max(0.0, (seconds or 8) - busy))
    stop.set()
    for w in workers:
        w.join(timeout=60)
    return lat, errors, busy


def test_hostile_user_doesnt_stall_annotators(loaded):
    """The target is absolute (p95 < 300 ms) on a machine that isn't overloaded already: when the annotators'
    own p95 without the hostile user (measured first, same test) is over 150 ms, the machine is busy with other
    work, and the check becomes relative — the hostile user may not make the 8 annotators more than 2.5x
    slower (the stall this guards against was 14 s; on 2 busy cores the hostile requests' own CPU costs a little)."""
    info, dataset_id, home = loaded
    base, errors, _ = _annotators(info, dataset_id, 6)  # 6 seconds of the same 8 annotators alone
    assert not errors, errors[:5]
    rss_start = _rss(home)
    outcomes: list = []
    lat, errors, busy = _annotators(info, dataset_id, 8, threading.Thread(target=_hostile, args=(info, dataset_id, outcomes)))
    assert not errors, errors[:5]
    expected = {"500k terms": (422, "the limit is 1000"), "20k terms": (422, "the limit is 1000"),
                "1000 terms": (422, "the limit is"), "200 MB body, no key": (413, ""),
                "slow scan": (422, "took longer than 1 s")}
    for name, status, detail in outcomes:
        want, text = expected[name]
        assert status == want and text in detail, (name, status, detail)
    assert len(outcomes) == 2 * 7
    p95, p95_base = _p95(lat), _p95(base)
    print(f"annotator requests: {len(lat)}, p50 {statistics.median(lat) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms "
          f"(alone: p95 {p95_base * 1000:.0f} ms); hostile phase {busy:.1f} s; load {os.getloadavg()[0]:.1f}")
    assert len(lat) >= 8 * 10
    if p95_base < 0.150:
        assert p95 < 0.300, f"annotators' p95 {p95 * 1000:.0f} ms while a hostile user searched"
    else:
        assert p95 < 2.5 * p95_base, f"p95 {p95 * 1000:.0f} ms with a hostile user vs {p95_base * 1000:.0f} alone"
    time.sleep(2)
    growth = _rss(home) - rss_start
    assert growth < 100 * 1024 * 1024, f"server memory grew by {growth / 2**20:.0f} MB"
