"""Whole-record search-box queries answer exactly what the records' text holds, on both backends: the ids, the
totals, pages that add up to the full ranking; on PostgreSQL also the order, checked against the ranking formula
(terms' occurrences in the record's body over its length) computed here from the records' own text. Chinese and
English, one-, two- and more-character terms, two terms, exclusions, a term whose halves sit in two fields (no
match: a field boundary is a newline). PostgreSQL answers terms of three or more characters from the field rows'
partial trigram indexes (no whole-record trigram index any more): the engine's query plan reads them, the old
index is dropped at start (idempotent), and the trigger that now reads each record's leaves once writes the same
body and bigrams as the whole-record functions."""

from __future__ import annotations

import random
import uuid

import pytest

from curate.review import server

from tests.e2e.conftest import TextSearch, drop_pg_database, free_port, new_pg_database, psql

pytestmark = pytest.mark.e2e

N = 48
VOCAB = ["机器学习", "量子", "量子力学", "基本", "例子", "基本概念", "麒麟", "example", "Example", "sample", "examples",
         "ab", "x", "米饭", "㐀㐁", "quetzal", "的", "the"]


def _fields(i: int) -> dict:
    rnd = random.Random(i)

    def words(lo: int, hi: int) -> str:
        sep = rnd.choice(["", " ", "，"])
        return sep.join(rnd.choice(VOCAB) for _ in range(rnd.randint(lo, hi)))

    out = {"prompt": f"问题{i} {words(1, 4)}", "chosen": words(0, 12) or "好", "rejected": words(0, 3) or "否"}
    if i % 4 == 0:
        out["chat"] = [{"role": "user", "content": words(1, 3)}, {"role": "assistant", "content": f"好的{i}"}]
    if i == 7:  # 量 | 子 across two fields, 机器 | 学习 too: neither is a match in the whole record
        out.update(prompt="问题七 量", chosen="子曰 机器", rejected="学习")
    return out


def _leaves(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _leaves(v)]
    if isinstance(value, dict):
        return [s for k in sorted(value, key=lambda k: (len(k.encode()), k.encode())) for s in _leaves(value[k])]
    return []


def _body(i: int) -> str:
    """The record's body as the index holds it: its string leaves in jsonb's key order, newline-joined."""
    return "\n".join(_leaves(_fields(i))).lower() + "\n"


CASES = [
    ("机器学习", ["机器学习"], []),
    ("量子", ["量子"], []),
    ("量", ["量"], []),
    ("麒麟", ["麒麟"], []),
    ("㐀㐁", ["㐀㐁"], []),  # CJK Extension A
    ("基本 例子", ["基本", "例子"], []),
    ("基本概念 example", ["基本概念", "example"], []),
    ("example", ["example"], []),
    ("EXAMPLE", ["example"], []),
    ("example -examples", ["example"], ["examples"]),
    ("量子 -量子力学", ["量子"], ["量子力学"]),
    ("sample -x", ["sample"], ["x"]),
    ("ab", ["ab"], []),
    ("x", ["x"], []),
    ("quetzal 麒麟", ["quetzal", "麒麟"], []),
    ("问题七", ["问题七"], []),
    ("子曰", ["子曰"], []),
    ("user", ["user"], []),  # a chat's roles are text
    ("nowhere", ["nowhere"], []),
]


def _expected(must: list[str], must_not: list[str]) -> list[int]:
    return [i for i in range(N) if all(m.lower() in _body(i) for m in must)
            and not any(m.lower() in _body(i) for m in must_not)]


def _score(i: int, must: list[str]) -> float:
    body = _body(i)
    return sum(body.count(m.lower()) for m in must) / (1.0 + len(body) / 500.0)


def _dataset(info, name: str) -> str:
    import argilla as rg

    owner = rg.Argilla(api_url=info.api_url, api_key=info.owner.api_key, timeout=120)
    fields = [rg.TextField(name=n, client=owner) for n in ("prompt", "chosen", "rejected")]
    fields.append(rg.ChatField(name="chat", required=False, _client=owner))
    settings = rg.Settings(fields=fields, questions=[rg.LabelQuestion(name="better", labels=["a", "b"], client=owner)])
    ds = rg.Dataset(name=name, workspace=info.workspace, settings=settings, client=owner).create()
    for start in range(0, N, 16):  # several batches: distinct inserted_at values as well as ties
        ds.records.log([rg.Record(id=f"w{i:02d}", fields=_fields(i)) for i in range(start, min(N, start + 16))])
    return str(ds.id)


def _order(info, dsid: str) -> dict[str, tuple]:
    """Each record's tie-break key after the score: (inserted_at, id), as the engine orders ties."""
    items = TextSearch(info).http.get(f"/api/v1/datasets/{dsid}/records", params={"limit": 1000}).json()["items"]
    return {i["external_id"]: (i["inserted_at"], i["id"]) for i in items}


def _check(info, dsid: str, q: str, must: list[str], must_not: list[str], ranked_like_pg: bool) -> None:
    api = TextSearch(info, info.annotators[0])
    want = {f"w{i:02d}" for i in _expected(must, must_not)}
    full, total, scores = api.search(dsid, q)
    assert set(full) == want and total == len(want) == len(full), (q, sorted(set(full) ^ want))
    assert all(a >= b for a, b in zip(scores, scores[1:], strict=False)), q
    if ranked_like_pg and want:
        ties = _order(info, dsid)
        key = {f"w{i:02d}": round(_score(i, must), 9) for i in range(N)}
        assert full == sorted(want, key=lambda e: (-key[e], ties[e])), q
        assert [round(s, 9) for s in scores] == [key[e] for e in full], q
    pages = []
    for offset in range(0, total, 5):
        page, page_total, _ = api.search(dsid, q, limit=5, offset=offset)
        assert page_total == total, q
        pages += page
    assert pages == full, q


_DS: dict[str, str] = {}


@pytest.mark.parametrize("q, must, must_not", CASES)
def test_whole_record_search_answers_what_the_text_holds(request, any_server, q, must, must_not):
    info = any_server
    if info.api_url not in _DS:
        _DS[info.api_url] = _dataset(info, f"wtx-{uuid.uuid4().hex[:8]}")
    is_pg = request.node.callspec.params["any_server"] == "postgresql"
    _check(info, _DS[info.api_url], q, must, must_not, ranked_like_pg=is_pg)


OLD_BIGRAMS = (
    "CREATE OR REPLACE FUNCTION curate_test_old_bigrams(t text) RETURNS text[] LANGUAGE sql IMMUTABLE AS $$ "
    "SELECT coalesce(array_agg(DISTINCT c || n), '{}') FROM ("
    "SELECT c, lead(c) OVER (ORDER BY i) AS n FROM unnest(string_to_array(t, NULL)) WITH ORDINALITY AS u(c, i)) s "
    "WHERE c COLLATE \"C\" BETWEEN '\u3400' AND '\u9fff' AND n COLLATE \"C\" BETWEEN '\u3400' AND '\u9fff' $$"
)


def test_postgresql_whole_record_terms_read_the_field_indexes(tmp_path):
    """A database made before (with the whole-record trigram index) loses that index at start and answers the
    same; the trigger's body and bigrams equal the whole-record functions'; the engine's condition for a term
    of three or more characters reads the field rows' partial indexes; a second start changes nothing."""
    url = new_pg_database("curate_test_wtx")
    home, port = tmp_path / "home", free_port()
    try:
        info = server.start(home, port=port, database_url=url, annotators=["ann1"])
        dsid = _dataset(info, "wtx")
        assert psql(url, "SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_curate_record_text_trgm'") == "0"
        psql(url, OLD_BIGRAMS)
        # the trigger reads each record's leaves once; what it writes equals the whole-record functions' text
        assert psql(url, "SELECT count(*) FROM curate_record_text t JOIN records r ON r.id = t.record_id "
                         "WHERE t.body = curate_fields_text(r.fields) "
                         "AND t.bigrams = curate_test_old_bigrams(t.body) "
                         "AND t.bigrams = curate_cjk_bigrams(curate_fields_text(r.fields))") == str(N)
        assert psql(url, "SELECT count(*) FROM curate_record_text WHERE cardinality(bigrams) > 0") == str(N)
        # an update through argilla (an upsert) rewrites the body, bigrams and field rows the same way
        import argilla as rg

        owner = rg.Argilla(api_url=info.api_url, api_key=info.owner.api_key, timeout=120)
        ds = owner.datasets(name="wtx", workspace=info.workspace)
        ds.records.log([rg.Record(id="w03", fields=dict(_fields(3), prompt="全新的 quetzalcoatl 问题"))])
        assert psql(url, "SELECT count(*) FROM curate_record_text t JOIN records r ON r.id = t.record_id "
                         "WHERE t.body = curate_fields_text(r.fields) "
                         "AND t.bigrams = curate_test_old_bigrams(t.body)") == str(N)
        api = TextSearch(info, info.annotators[0])
        assert api.search(dsid, "quetzalcoatl")[0] == ["w03"]
        ds.records.log([rg.Record(id="w03", fields=_fields(3))])
        assert api.search(dsid, "quetzalcoatl")[1] == 0
        # the engine's condition (a UNION ALL over the dataset's fields, the name a literal) reads the partial
        # indexes (a tiny table: a sequential scan would win, ruled out in a rolled-back transaction)
        plan = psql(url, "BEGIN; ALTER TABLE curate_field_text DROP CONSTRAINT curate_field_text_pkey; "
                         "SET LOCAL enable_seqscan = off; EXPLAIN SELECT f.record_id FROM curate_field_text f "
                         f"WHERE f.field = 'chosen' AND f.dataset_id = '{dsid}' AND f.body LIKE '%example%' "
                         "UNION ALL SELECT f.record_id FROM curate_field_text f "
                         f"WHERE f.field = 'prompt' AND f.dataset_id = '{dsid}' AND f.body LIKE '%example%'; "
                         "ROLLBACK")
        assert plan.count("Bitmap Index Scan on ix_curate_ft_") == 2, plan
        server.stop(home)
        # a database from before: the whole-record trigram index is dropped at start, the answers stay right
        psql(url, "CREATE INDEX ix_curate_record_text_trgm ON curate_record_text USING gin (body gin_trgm_ops)")
        info = server.start(home, port=port, database_url=url, annotators=["ann1"])
        assert psql(url, "SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_curate_record_text_trgm'") == "0"
        for q, must, must_not in CASES:
            _check(info, dsid, q, must, must_not, ranked_like_pg=True)
        server.stop(home)
        log = home / "logs" / "server.log"  # emptied at every start: it holds this start's messages only
        info = server.start(home, port=port, database_url=url, annotators=["ann1"])  # idempotent
        assert log.read_text().count("text index filled in") == 0
        assert psql(url, "SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_curate_record_text_trgm'") == "0"
        _check(info, dsid, "基本 例子", ["基本", "例子"], [], ranked_like_pg=True)
    finally:
        server.stop(home)
        drop_pg_database(url)
