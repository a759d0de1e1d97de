"""The curate-sql search engine through argilla-server's own REST API, on SQLite and on PostgreSQL.

One dataset of 30 known records per server; annotators answer through the API; every query checks exact ids.
"""

from __future__ import annotations

import math
import uuid

import httpx
import pytest

pytestmark = pytest.mark.e2e

N = 30
TAGS = {3: ["x", "y"], 4: "x", 5: ["y"]}  # terms metadata may hold a list
PROBLEMS = {6: ["truncated", "unsafe"], 7: ["unsafe"], 8: ["truncated"]}  # multi-label suggestions
ZH_TOPICS = ["请解释量子力学的基本原理", "如何学习中文写作"]


def _prompt(i: int) -> str:
    if i == 7:
        return "100% pure_water is H2O, O'Brien said in C:\\temp with \"quotes\""
    if i == 8:
        return "量子 量子 量子：短"  # dense hits: ranks first for 量子
    if i % 2 == 0:
        return f"{ZH_TOPICS[(i // 2) % 2]}（第{i}题）"
    return f"How to cook rice, item {i}"


def _vector(i: int) -> list[float]:
    a = i * 2 * math.pi / N
    return [math.cos(a), math.sin(a), 0.1, 0.0]


class Api:
    """Thin REST client for one account (the UI and the SDK call these endpoints)."""

    def __init__(self, info, account):
        self.http = httpx.Client(base_url=info.api_url, headers={"X-Argilla-Api-Key": account.api_key}, timeout=60)

    def search(self, dataset_id, body=None, limit=50, offset=0) -> tuple[list[str], int, list]:
        r = self.http.post(
            f"/api/v1/me/datasets/{dataset_id}/records/search",
            params={"limit": limit, "offset": offset},
            json=body or {},
        )
        assert r.status_code == 200, r.text
        data = r.json()
        ids = [item["record"]["external_id"] for item in data["items"]]
        return ids, data["total"], [item.get("query_score") for item in data["items"]]

    def respond(self, record_id, values: dict, status: str) -> None:
        r = self.http.post(
            f"/api/v1/records/{record_id}/responses",
            json={"values": {k: {"value": v} for k, v in values.items()}, "status": status},
        )
        assert r.status_code == 201, r.text


def _ids(*nums: int) -> list[str]:
    return [f"r{i:02d}" for i in nums]


def _terms(scope: dict, *values) -> dict:
    return {"filters": {"and": [{"type": "terms", "scope": scope, "values": list(values)}]}}


def _range(scope: dict, ge=None, le=None) -> dict:
    flt = {"type": "range", "scope": scope}
    if ge is not None:
        flt["ge"] = ge
    if le is not None:
        flt["le"] = le
    return {"filters": {"and": [flt]}}


_DATASETS: dict[str, dict] = {}


@pytest.fixture
def ds(any_server, client):
    """The 30-record dataset on this server (built once per server), with its server ids and API clients."""
    key = any_server.api_url
    if key in _DATASETS:
        return _DATASETS[key]
    import argilla as rg

    owner = client(any_server)
    settings = rg.Settings(
        fields=[rg.TextField(name="prompt"), rg.ChatField(name="chat", required=False)],
        questions=[
            rg.LabelQuestion(name="better", labels=["a", "b", "tie"]),
            rg.MultiLabelQuestion(name="problems", labels=["truncated", "unsafe", "wrong_language"], required=False),
            rg.RatingQuestion(name="rating", values=[1, 2, 3, 4, 5], required=False),
        ],
        metadata=[
            rg.TermsMetadataProperty(name="lang"),
            rg.IntegerMetadataProperty(name="n"),
            rg.FloatMetadataProperty(name="margin"),
            rg.TermsMetadataProperty(name="tags"),
        ],
        vectors=[rg.VectorField(name="emb", dimensions=4)],
        distribution=rg.TaskDistribution(min_submitted=2),
    )
    name = f"engine-{uuid.uuid4().hex[:8]}"
    dataset = rg.Dataset(name=name, workspace=any_server.workspace, settings=settings, client=owner).create()
    records = []
    for i in range(N):
        meta = {"lang": "zh" if i % 2 == 0 else "en", "n": i}
        if i % 5 != 0:
            meta["margin"] = i / 10
        if i in TAGS:
            meta["tags"] = TAGS[i]
        suggestions = [rg.Suggestion("better", "a" if i % 3 == 0 else "b", score=i / N, agent="m1" if i < 15 else "m2")]
        if i in PROBLEMS:
            suggestions.append(rg.Suggestion("problems", PROBLEMS[i], agent="m1"))
        chat = [{"role": "user", "content": "隐藏的彩蛋" if i == 11 else f"chat {i}"}]
        records.append(
            rg.Record(
                id=f"r{i:02d}",
                fields={"prompt": _prompt(i), "chat": chat},
                metadata=meta,
                vectors={"emb": _vector(i)},
                suggestions=suggestions,
            )
        )
    dataset.records.log(records)
    owner_api = Api(any_server, any_server.owner)
    listing = owner_api.http.get(f"/api/v1/datasets/{dataset.id}/records", params={"limit": 1000}).json()["items"]
    server_ids = {item["external_id"]: item["id"] for item in listing}
    ann1, ann2 = (Api(any_server, a) for a in any_server.annotators[:2])
    for i in range(5):
        ann1.respond(server_ids[f"r{i:02d}"], {"better": "a" if i < 3 else "b", "rating": 5 - i}, "submitted")
    ann1.respond(server_ids["r05"], {"better": "tie"}, "draft")
    ann1.respond(server_ids["r06"], {"better": "a"}, "discarded")
    for i in range(2):
        ann2.respond(server_ids[f"r{i:02d}"], {"better": "b", "problems": ["truncated", "unsafe"]}, "submitted")
    _DATASETS[key] = {
        "id": str(dataset.id),
        "dataset": dataset,
        "server_ids": server_ids,
        "owner": owner_api,
        "ann1": ann1,
        "ann2": ann2,
        "metadata": {m.name: m.id for m in dataset.settings.metadata},
    }
    return _DATASETS[key]


def test_listing_pages_have_offsets_limits_and_total(ds):
    ids, total, _ = ds["owner"].search(ds["id"], limit=N)
    assert total == N and ids == _ids(*range(N))  # insertion order without a sort
    pages = []
    for offset in range(0, N, 7):
        page, page_total, _ = ds["owner"].search(ds["id"], limit=7, offset=offset)
        assert page_total == N
        pages += page
    assert pages == ids


def test_sort_by_metadata_and_time(ds):
    def sort(scope, order):
        return ds["owner"].search(ds["id"], {"sort": [{"scope": scope, "order": order}]}, limit=N)[0]

    assert sort({"entity": "metadata", "metadata_property": "n"}, "desc") == _ids(*reversed(range(N)))
    by_margin = sort({"entity": "metadata", "metadata_property": "margin"}, "asc")
    with_margin = [i for i in range(N) if i % 5 != 0]
    assert by_margin[: len(with_margin)] == _ids(*with_margin)  # records missing the value come last
    assert set(by_margin[len(with_margin):]) == set(_ids(0, 5, 10, 15, 20, 25))
    assert sort({"entity": "record", "property": "inserted_at"}, "desc")[0] == "r29"


def test_metadata_terms_and_range_filters(ds):
    s = ds["owner"].search
    ids, total, _ = s(ds["id"], _terms({"entity": "metadata", "metadata_property": "lang"}, "zh"), limit=N)
    assert total == 15 and ids == _ids(*range(0, N, 2))
    ids, total, _ = s(ds["id"], _range({"entity": "metadata", "metadata_property": "n"}, ge=5, le=9))
    assert ids == _ids(5, 6, 7, 8, 9)
    ids, _, _ = s(ds["id"], _range({"entity": "metadata", "metadata_property": "margin"}, ge=2.05))
    assert ids == _ids(*[i for i in range(21, N) if i % 5 != 0])


def test_list_valued_metadata_and_multi_label_suggestions(ds):
    s = ds["owner"].search
    assert s(ds["id"], _terms({"entity": "metadata", "metadata_property": "tags"}, "x"))[0] == _ids(3, 4)
    assert s(ds["id"], _terms({"entity": "metadata", "metadata_property": "tags"}, "y"))[0] == _ids(3, 5)
    scope = {"entity": "suggestion", "question": "problems", "property": "value"}
    assert s(ds["id"], _terms(scope, "unsafe"))[0] == _ids(6, 7)
    assert s(ds["id"], _terms(scope, "truncated", "unsafe"))[0] == _ids(6, 7, 8)
    tags = ds["owner"].http.get(f"/api/v1/metadata-properties/{ds['metadata']['tags']}/metrics").json()
    assert tags["total"] == 4 and {v["term"]: v["count"] for v in tags["values"]} == {"x": 2, "y": 2}


def test_suggestion_value_agent_and_score_filters(ds):
    s = ds["owner"].search
    ids, _, _ = s(ds["id"], _terms({"entity": "suggestion", "question": "better", "property": "value"}, "a"), limit=N)
    assert ids == _ids(*range(0, N, 3))
    ids, total, _ = s(ds["id"], _terms({"entity": "suggestion", "question": "better", "property": "agent"}, "m2"))
    assert total == 15 and ids[0] == "r15"
    ids, _, _ = s(ds["id"], _range({"entity": "suggestion", "question": "better", "property": "score"}, ge=0.9))
    assert ids == _ids(27, 28, 29)


def test_response_status_filters_are_per_user(ds):
    def status(api, *values):
        ids, total, _ = api.search(ds["id"], _terms({"entity": "response", "property": "status"}, *values), limit=N)
        return ids, total

    assert status(ds["ann1"], "submitted") == (_ids(0, 1, 2, 3, 4), 5)
    assert status(ds["ann1"], "draft") == (_ids(5), 1)
    assert status(ds["ann1"], "discarded") == (_ids(6), 1)
    pending, total = status(ds["ann1"], "pending")
    assert total == N - 7 and pending[0] == "r07"
    assert status(ds["ann1"], "pending", "draft")[1] == N - 6
    assert status(ds["ann2"], "submitted") == (_ids(0, 1), 2)
    assert status(ds["ann2"], "pending")[1] == N - 2


def test_record_status_follows_min_submitted(ds):
    ids, total, _ = ds["owner"].search(ds["id"], _terms({"entity": "record", "property": "status"}, "completed"))
    assert (ids, total) == (_ids(0, 1), 2)
    assert ds["owner"].search(ds["id"], _terms({"entity": "record", "property": "status"}, "pending"))[1] == N - 2


def test_response_value_filters(ds):
    ids, _, _ = ds["ann1"].search(ds["id"], _terms({"entity": "response", "question": "better"}, "a"))
    assert ids == _ids(0, 1, 2, 6)  # ann1's own answers, whatever their status
    ids, _, _ = ds["ann2"].search(ds["id"], _terms({"entity": "response", "question": "problems"}, "unsafe"))
    assert ids == _ids(0, 1)  # any label of a multi-label answer
    ids, _, _ = ds["ann1"].search(ds["id"], _range({"entity": "response", "question": "rating"}, ge=4))
    assert ids == _ids(0, 1)


def test_chinese_text_search_ranks_dense_matches_first(ds):
    ids, total, scores = ds["owner"].search(ds["id"], {"query": {"text": {"q": "量子"}}}, limit=N)
    expected = {f"r{i:02d}" for i in range(N) if "量子" in _prompt(i)}
    assert set(ids) == expected and total == len(expected)
    assert ids[0] == "r08" and scores[0] > scores[1] > 0
    # Terms are ANDed, like Elasticsearch's simple_query_string default here.
    ids, _, _ = ds["owner"].search(ds["id"], {"query": {"text": {"q": "量子 原理"}}}, limit=N)
    assert set(ids) == expected - {"r08"}
    ids, _, _ = ds["owner"].search(ds["id"], {"query": {"text": {"q": "rice -item"}}})
    assert ids == []


def test_text_search_in_one_field_or_the_whole_record(ds):
    s = ds["owner"].search
    assert s(ds["id"], {"query": {"text": {"q": "彩蛋"}}})[0] == ["r11"]
    assert s(ds["id"], {"query": {"text": {"q": "彩蛋", "field": "chat"}}})[0] == ["r11"]
    assert s(ds["id"], {"query": {"text": {"q": "彩蛋", "field": "prompt"}}})[0] == []
    assert s(ds["id"], {"query": {"text": {"q": "RICE", "field": "prompt"}}})[1] == 14  # case-insensitive
    # one string field: LIKE's wildcards and quotes are literal there too
    assert s(ds["id"], {"query": {"text": {"q": "100%", "field": "prompt"}}})[0] == ["r07"]
    assert s(ds["id"], {"query": {"text": {"q": "pure_water o'brien", "field": "prompt"}}})[0] == ["r07"]
    assert s(ds["id"], {"query": {"text": {"q": "pure_water", "field": "chat"}}})[0] == []
    # Backslashes and quotes are stored JSON-escaped; matching is on the decoded text.
    assert s(ds["id"], {"query": {"text": {"q": "C:\\temp"}}})[0] == ["r07"]
    assert s(ds["id"], {"query": {"text": {"q": 'with "quotes"'}}})[0] == ["r07"]
    assert s(ds["id"], {"query": {"text": {"q": "content"}}})[0] == []  # JSON keys are not text
    ids, total, _ = s(ds["id"], {"query": {"text": {"q": "量子"}}, **_terms({"entity": "metadata", "metadata_property": "lang"}, "zh")})
    assert total == len(ids) > 0


def test_ranked_text_pages_and_totals(ds):
    """A ranked text query's total comes from the page query itself: every page (and a page past the end, which
    has no row to carry it) reports the same total, and the pages put together are the full ranking."""
    s = ds["ann1"].search
    pending = _terms({"entity": "response", "property": "status"}, "pending")
    for body in ({"query": {"text": {"q": "量子"}}}, {"query": {"text": {"q": "rice", "field": "prompt"}}},
                 {"query": {"text": {"q": "量子"}}, **pending}):
        full, total, _ = s(ds["id"], body, limit=N)
        assert total == len(full) > 2
        pages = []
        for offset in range(0, total, 3):
            page, page_total, _ = s(ds["id"], body, limit=3, offset=offset)
            assert page_total == total
            pages += page
        assert pages == full
        assert s(ds["id"], body, limit=3, offset=total + 5)[:2] == ([], total)
    assert s(ds["id"], {"query": {"text": {"q": "没有的词"}}})[:2] == ([], 0)


@pytest.mark.parametrize(
    "attack",
    [
        "' OR '1'='1",
        "'; DROP TABLE records; --",
        '") OR 1=1 --',
        "%",
        "_",
        "\\",
        "%' UNION SELECT id FROM users --",
        "1; DELETE FROM responses",
    ],
)
def test_sql_injection_in_text_search_matches_only_literally(ds, attack):
    ids, total, _ = ds["owner"].search(ds["id"], {"query": {"text": {"q": attack}}}, limit=N)
    literal = {f"r{i:02d}" for i in range(N) if all(t.lower() in _prompt(i).lower() for t in attack.split())}
    assert set(ids) <= literal | {"r07"} and total == len(ids)
    if attack in ("%", "_"):
        assert ids == ["r07"]  # the one record that really contains the character
    assert ds["owner"].search(ds["id"], limit=1)[1] == N  # nothing was dropped or deleted
    assert ds["ann1"].search(ds["id"], _terms({"entity": "response", "property": "status"}, "submitted"))[1] == 5


def test_similarity_search_by_value_and_by_record(ds):
    api, sid = ds["owner"], ds["server_ids"]
    body = {"query": {"vector": {"name": "emb", "value": _vector(4)}}}
    ids, _, scores = api.search(ds["id"], body, limit=3)
    assert ids == ["r04", "r03", "r05"] or ids == ["r04", "r05", "r03"]
    assert scores[0] == pytest.approx(1.0, abs=1e-4) and scores[0] >= scores[1] >= scores[2]
    ids, _, _ = api.search(ds["id"], {"query": {"vector": {"name": "emb", "record_id": sid["r10"]}}}, limit=2)
    assert "r10" not in ids and set(ids) == {"r09", "r11"}
    body = {"query": {"vector": {"name": "emb", "value": _vector(0), "order": "least_similar"}}}
    assert api.search(ds["id"], body, limit=1)[0] == ["r15"]
    body = {"query": {"vector": {"name": "emb", "value": _vector(4)}}, **_terms({"entity": "metadata", "metadata_property": "lang"}, "en")}
    ids, _, _ = api.search(ds["id"], body, limit=2)
    assert set(ids) == {"r03", "r05"}


def test_metadata_metrics(ds):
    http = ds["owner"].http
    lang = http.get(f"/api/v1/metadata-properties/{ds['metadata']['lang']}/metrics").json()
    assert lang["total"] == N and {v["term"]: v["count"] for v in lang["values"]} == {"zh": 15, "en": 15}
    n = http.get(f"/api/v1/metadata-properties/{ds['metadata']['n']}/metrics").json()
    assert (n["min"], n["max"]) == (0, N - 1)
    margin = http.get(f"/api/v1/metadata-properties/{ds['metadata']['margin']}/metrics").json()
    assert margin["min"] == pytest.approx(0.1) and margin["max"] == pytest.approx(2.9)


def test_dataset_and_user_progress(ds):
    progress = ds["owner"].http.get(f"/api/v1/datasets/{ds['id']}/progress").json()
    assert (progress["total"], progress["completed"], progress["pending"]) == (N, 2, N - 2)
    mine = ds["ann1"].http.get(f"/api/v1/me/datasets/{ds['id']}/metrics").json()["responses"]
    assert mine == {"total": N, "submitted": 5, "discarded": 1, "draft": 1, "pending": N - 7}
    theirs = ds["ann2"].http.get(f"/api/v1/me/datasets/{ds['id']}/metrics").json()["responses"]
    assert theirs["submitted"] == 2 and theirs["pending"] == N - 2
