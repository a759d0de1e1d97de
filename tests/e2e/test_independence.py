"""Annotators are independent: through every endpoint the web UI and the SDK use, an annotator reads only their own
responses (and writes only their own); records with vectors don't fail; error bodies carry no internal text.
On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

pytestmark = pytest.mark.e2e

_DATA: dict[str, dict] = {}


class As:
    def __init__(self, info, account):
        self.account = account
        self.http = httpx.Client(base_url=info.api_url, headers={"X-Argilla-Api-Key": account.api_key}, timeout=60)


@pytest.fixture
def world(any_server, client):
    """A dataset with a vector field: r0 answered by ann1 (b) and ann2 (a), r1 by ann2 only (a, draft),
    r2 has no vector. Built once per server."""
    if any_server.api_url in _DATA:
        return _DATA[any_server.api_url]
    import argilla as rg

    owner = client(any_server)
    settings = rg.Settings(
        fields=[rg.TextField(name="prompt")],
        questions=[rg.LabelQuestion(name="better", labels=["a", "b"]),
                   rg.TextQuestion(name="corrected", required=False)],
        metadata=[rg.TermsMetadataProperty(name="lang"),
                  rg.TermsMetadataProperty(name="secret", visible_for_annotators=False)],
        vectors=[rg.VectorField(name="emb", dimensions=3)],
    )
    ds = rg.Dataset(name=f"indep-{uuid.uuid4().hex[:8]}", workspace=any_server.workspace, settings=settings,
                    client=owner).create()
    ds.records.log([
        rg.Record(id="r0", fields={"prompt": "zero"}, metadata={"lang": "en", "secret": "s0"}, vectors={"emb": [1, 0, 0]}),
        rg.Record(id="r1", fields={"prompt": "one"}, metadata={"lang": "en", "secret": "s1"}, vectors={"emb": [0, 1, 0]}),
        rg.Record(id="r2", fields={"prompt": "two"}, metadata={"lang": "zh", "secret": "s2"}),
    ])
    o = As(any_server, any_server.owner)
    ids = {r["external_id"]: r["id"] for r in o.http.get(f"/api/v1/datasets/{ds.id}/records").json()["items"]}
    ann1, ann2 = (As(any_server, a) for a in any_server.annotators[:2])

    def answer(who, ext, value, status="submitted", corrected=None):
        values = {"better": {"value": value}}
        if corrected:
            values["corrected"] = {"value": corrected}
        r = who.http.post(f"/api/v1/records/{ids[ext]}/responses", json={"values": values, "status": status})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    responses = {
        ("ann1", "r0"): answer(ann1, "r0", "b"),
        ("ann2", "r0"): answer(ann2, "r0", "a", corrected="ann2's private rewrite"),
        ("ann2", "r1"): answer(ann2, "r1", "a", status="draft"),
    }
    _DATA[any_server.api_url] = {"id": str(ds.id), "ids": ids, "owner": o, "ann1": ann1, "ann2": ann2,
                                 "responses": responses, "ann2_id": None}
    _DATA[any_server.api_url]["ann2_id"] = ann2.http.get("/api/v1/me").json()["id"]
    return _DATA[any_server.api_url]


def _users(record: dict) -> list[str]:
    return sorted(r["user_id"] for r in record.get("responses") or [])


def test_get_record_returns_only_the_callers_response(world):
    ann1, ann2, owner = world["ann1"], world["ann2"], world["owner"]
    me1 = ann1.http.get("/api/v1/me").json()["id"]
    for ext in ("r0", "r1", "r2"):  # with and without a vector: 200, never the 500 argilla gave
        r = ann1.http.get(f"/api/v1/records/{world['ids'][ext]}")
        assert r.status_code == 200, r.text
        assert set(_users(r.json())) <= {me1}
        assert "ann2's private rewrite" not in r.text and "secret" not in r.json()["metadata"]
    r0 = ann1.http.get(f"/api/v1/records/{world['ids']['r0']}").json()
    assert [x["values"]["better"]["value"] for x in r0["responses"]] == ["b"]
    assert r0["vectors"] == {"emb": [1.0, 0.0, 0.0]}
    assert ann1.http.get(f"/api/v1/records/{world['ids']['r1']}").json()["responses"] == []
    assert len(ann2.http.get(f"/api/v1/records/{world['ids']['r0']}").json()["responses"]) == 1
    full = owner.http.get(f"/api/v1/records/{world['ids']['r0']}").json()  # the owner reviews everyone's
    assert len(full["responses"]) == 2 and full["metadata"]["secret"] == "s0"


def test_search_as_annotator_returns_only_own_responses_and_filters_on_them(world):
    ann1 = world["ann1"]
    me1 = ann1.http.get("/api/v1/me").json()["id"]
    r = ann1.http.post(f"/api/v1/me/datasets/{world['id']}/records/search",
                       params={"include": ["responses", "vectors", "suggestions"]}, json={})
    assert r.status_code == 200, r.text
    for item in r.json()["items"]:
        assert set(_users(item["record"])) <= {me1}
    assert "ann2's private rewrite" not in r.text
    # filtering on answers sees only the caller's own: ann2 said "a" on r0 and r1, ann1 never did
    flt = {"filters": {"and": [{"type": "terms", "scope": {"entity": "response", "question": "better"}, "values": ["a"]}]}}
    assert ann1.http.post(f"/api/v1/me/datasets/{world['id']}/records/search", json=flt).json()["total"] == 0
    status = {"filters": {"and": [{"type": "terms", "scope": {"entity": "response", "property": "status"},
                                   "values": ["draft"]}]}}
    assert ann1.http.post(f"/api/v1/me/datasets/{world['id']}/records/search", json=status).json()["total"] == 0
    sim = {"query": {"vector": {"name": "emb", "record_id": world["ids"]["r0"]}}}
    r = ann1.http.post(f"/api/v1/me/datasets/{world['id']}/records/search", params={"include": "responses"}, json=sim)
    assert r.status_code == 200 and all(set(_users(i["record"])) <= {me1} for i in r.json()["items"])


def test_listings_with_everyones_responses_are_refused(world):
    ann1 = world["ann1"]
    assert ann1.http.get(f"/api/v1/datasets/{world['id']}/records", params={"include": "responses"}).status_code == 403
    assert ann1.http.post(f"/api/v1/datasets/{world['id']}/records/search", json={}).status_code == 403


def test_other_annotators_responses_cant_be_changed_or_deleted(world):
    ann1, theirs = world["ann1"], world["responses"][("ann2", "r0")]
    r = ann1.http.put(f"/api/v1/responses/{theirs}", json={"values": {"better": {"value": "b"}}, "status": "submitted"})
    assert r.status_code == 403 and "ann2's private rewrite" not in r.text
    assert ann1.http.delete(f"/api/v1/responses/{theirs}").status_code == 403
    # the bulk endpoint the UI uses writes the caller's own response, and answers with it only
    r = ann1.http.post("/api/v1/me/responses/bulk", json={"items": [
        {"record_id": world["ids"]["r1"], "values": {"better": {"value": "b"}}, "status": "draft"}]})
    assert r.status_code == 200, r.text
    assert "ann2's private rewrite" not in r.text and world["ann2_id"] not in r.text
    after = world["owner"].http.get(f"/api/v1/records/{world['ids']['r0']}").json()
    assert {x["values"]["better"]["value"] for x in after["responses"]} == {"a", "b"}  # ann2's answer unchanged


def test_suggestions_metrics_and_progress_carry_no_answers(world):
    ann1 = world["ann1"]
    r = ann1.http.get(f"/api/v1/records/{world['ids']['r0']}/suggestions")
    assert r.status_code == 200 and "ann2's private rewrite" not in r.text
    metrics = ann1.http.get(f"/api/v1/me/datasets/{world['id']}/metrics").json()
    assert metrics["responses"]["submitted"] == 1  # ann1's own count
    for path in (f"/api/v1/datasets/{world['id']}/progress", f"/api/v1/datasets/{world['id']}/users/progress"):
        r = ann1.http.get(path)
        assert r.status_code == 200 and '"values"' not in r.text and "private rewrite" not in r.text


def test_error_bodies_carry_no_internal_text(world, any_server):
    ann1 = world["ann1"]
    for r in (
        ann1.http.get(f"/api/v1/records/{uuid.uuid4()}"),
        ann1.http.post(f"/api/v1/me/datasets/{world['id']}/records/search",
                       json={"query": {"vector": {"name": "emb", "record_id": world["ids"]["r2"]}}}),
        ann1.http.post(f"/api/v1/me/datasets/{world['id']}/records/search", json={"sort": "nonsense"}),
    ):
        assert 400 <= r.status_code < 500, r.text
        body = json.dumps(r.json()).lower()
        for leak in ("traceback", "sqlalchemy", "asyncpg", "sqlite", "greenlet", 'file "', "select "):
            assert leak not in body, body
