"""The annotator's queue and the filters next to it answer the same records, order and totals whichever plan the
engine picks: the pending queue at every offset (SQLite starts a deep page from the dataset's key at that offset,
search_engine.QUEUE_SKIP), "submitted by me" and other own statuses (PostgreSQL counts the user's responses),
metadata range filters (PostgreSQL counts curate_meta alone), against what the metadata and the responses say;
with records sharing an insertion time (the id breaks the tie), another user's responses, the same user's
responses in another dataset, and again after more submissions and a deleted response."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import pg_url, psql

pytestmark = pytest.mark.e2e

N = 90
STATUS = {"type": "terms", "scope": {"entity": "response", "property": "status"}}


def _num(i: int):
    """prompt_chars of record i: ints, floats, a string, a boolean, null, missing."""
    if i % 17 == 3:
        return "42"  # text, not a number: no range matches it
    if i % 19 == 5:
        return True
    if i % 23 == 7:
        return None
    if i % 29 == 11:
        return "missing"
    return i % 50 + (0.5 if i % 4 == 1 else 0)


def _in(v, ge, le) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return (ge is None or v >= ge) and (le is None or v <= le)


def _rng(ge, le) -> dict:
    f: dict = {"type": "range", "scope": {"entity": "metadata", "metadata_property": "prompt_chars"}}
    if ge is not None:
        f["ge"] = ge
    if le is not None:
        f["le"] = le
    return f


class Api:
    def __init__(self, info, account):
        self.http = httpx.Client(base_url=info.api_url, headers={"X-Argilla-Api-Key": account.api_key}, timeout=60)

    def search(self, ds, filters, limit=10, offset=0) -> tuple[list[str], int]:
        r = self.http.post(f"/api/v1/me/datasets/{ds}/records/search", params={"limit": limit, "offset": offset},
                           json={"filters": {"and": filters}})
        assert r.status_code == 200, r.text
        data = r.json()
        return [i["record"]["external_id"] for i in data["items"]], data["total"]

    def respond(self, record_id: str, status: str) -> str:
        r = self.http.post(f"/api/v1/records/{record_id}/responses",
                           json={"values": {"better": {"value": "a"}}, "status": status})
        assert r.status_code == 201, r.text
        return r.json()["id"]


def _dataset(info, name: str, n: int) -> tuple[str, dict[str, str]]:
    import argilla as rg

    sdk = rg.Argilla(api_url=info.api_url, api_key=info.owner.api_key, timeout=120)
    settings = rg.Settings(
        fields=[rg.TextField(name="prompt", client=sdk)],
        questions=[rg.LabelQuestion(name="better", labels=["a", "b"], client=sdk)],
        allow_extra_metadata=True,  # prompt_chars is added after the records: argilla would refuse its strings
    )
    ds = rg.Dataset(name=name, workspace=info.workspace, settings=settings, client=sdk).create()
    owner = Api(info, info.owner)
    items = []
    for i in range(n):
        v = _num(i)
        items.append({"external_id": f"r{i:03d}", "fields": {"prompt": f"prompt {i}"},
                      "metadata": {} if v == "missing" else {"prompt_chars": v}})
    for chunk in (items[: n // 2], items[n // 2:]):  # two uploads: two runs of insertion times
        r = owner.http.post(f"/api/v1/datasets/{ds.id}/records/bulk", json={"items": chunk})
        assert r.status_code == 201, r.text
    r = owner.http.post(f"/api/v1/datasets/{ds.id}/metadata-properties",
                        json={"name": "prompt_chars", "title": "Prompt chars", "settings": {"type": "float"}})
    assert r.status_code == 201, r.text
    listed = owner.http.get(f"/api/v1/datasets/{ds.id}/records", params={"limit": 1000}).json()["items"]
    return str(ds.id), {i["external_id"]: i["id"] for i in listed}


def _sql(info, sql: str, params: tuple = ()) -> list[tuple]:
    """A statement on the server's own database (SQLite file or the session's PostgreSQL database)."""
    db = Path(info.home) / "argilla.db"
    if db.exists():
        with sqlite3.connect(db) as con:
            return con.execute(sql, params).fetchall()
    for p in params:  # psql has no bound parameters: ids and external ids only, checked here
        assert all(c.isalnum() or c == "-" for c in str(p)), p
        sql = sql.replace("?", f"'{p}'", 1)
    out = psql(pg_url(), sql)
    return [tuple(line.split("|")) for line in out.splitlines() if line]


def _db_id(info, rid: str) -> str:
    return rid.replace("-", "") if (Path(info.home) / "argilla.db").exists() else rid


def test_queue_and_filters_answer_the_same_at_every_offset(any_server):
    info = any_server
    ds, rid = _dataset(info, f"queue-{uuid.uuid4().hex[:8]}", N)
    other, other_rid = _dataset(info, f"queue-other-{uuid.uuid4().hex[:8]}", 12)
    ann, owner = Api(info, info.annotators[0]), Api(info, info.owner)
    # ten records share one insertion time: the id orders them
    same = [_db_id(info, rid[f"r{i:03d}"]) for i in range(20, 30)]
    _sql(info, "UPDATE records SET inserted_at = (SELECT inserted_at FROM records WHERE id = ?) WHERE id IN ("
         + ", ".join("?" for _ in same) + ")", (same[0], *same))
    order = [r[0] for r in _sql(info, "SELECT external_id FROM records WHERE dataset_id = ? ORDER BY inserted_at, id",
                                (_db_id(info, ds),))]
    assert sorted(order) == sorted(rid) and order != sorted(rid)  # the tie's ids aren't in external-id order
    status: dict[str, str] = {}
    response_of: dict[str, str] = {}

    def answer(keys: list[str], st: str) -> None:
        for k in keys:
            response_of[k] = ann.respond(rid[k], st)
            status[k] = st

    answer([f"r{i:03d}" for i in range(0, 12, 3)], "submitted")
    answer(["r005", "r013"], "draft")
    answer(["r001"], "discarded")
    for k in ("r002", "r004", "r040"):  # the owner's responses leave the annotator's queue as it was
        owner.respond(rid[k], "submitted")
    for k in list(other_rid)[:8]:  # the annotator's responses in another dataset don't count here
        ann.respond(other_rid[k], "submitted")

    def check() -> None:
        pending = [k for k in order if k not in status]
        # deep offsets: more than QUEUE_SKIP (5) times the annotator's responses, so SQLite's other plan runs too
        for off in list(range(0, N + 3)):
            assert ann.search(ds, [{**STATUS, "values": ["pending"]}], limit=4, offset=off) == (
                pending[off:off + 4], len(pending)), off
        for values in (["submitted"], ["draft"], ["discarded"], ["submitted", "draft"], ["pending", "draft"]):
            want = [k for k in order if status.get(k, "pending") in values]
            for off in (0, 3, len(want) - 1, len(want), len(want) + 5):
                assert ann.search(ds, [{**STATUS, "values": values}], limit=3, offset=max(off, 0)) == (
                    want[max(off, 0):max(off, 0) + 3], len(want)), (values, off)
        for ranges in ([(40, 45)], [(None, 10)], [(10.5, None)], [(0, 49.5)], [(60, 70)], [(3, 30), (20, 40)]):
            want = [k for k in order if all(_in(_num(int(k[1:])), ge, le) for ge, le in ranges)]
            filters = [_rng(ge, le) for ge, le in ranges]
            for off in (0, 2, len(want)):
                assert ann.search(ds, filters, limit=5, offset=off) == (want[off:off + 5], len(want)), (ranges, off)
        want = [k for k in order if k not in status and _in(_num(int(k[1:])), 5, 40)]
        assert ann.search(ds, [{**STATUS, "values": ["pending"]}, _rng(5, 40)], limit=100) == (want, len(want))

    check()
    # more submissions, some deep in the order, and a deleted response (its record is pending again)
    answer(["r061", "r062", "r075", "r088", "r024", "r027"], "submitted")
    assert ann.http.delete(f"/api/v1/responses/{response_of['r003']}").status_code == 200
    del status["r003"]
    check()
