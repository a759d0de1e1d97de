"""SQLite: a search-box query of terms alone (no filter, exclusion or sort) is answered by the text index's own
ranked page (text_index_sqlite._page_sql: hits scored once, the count and the page's lowest score from them, only
the page's candidates joined to their records), and it answers exactly what the engine's ordered statement (every
hit joined to its record, a window count) answers: the same ids in the same order, the same scores and totals, on
every page, ties included; whether the dataset is the only one with records (no id lookup per hit) or not, and
after writes. The ordered statement is reached through the API by adding a filter every record passes (pending
for an annotator who answered nothing), and run directly in SQL as the engine built it before."""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from curate.review import server
from curate.review.text_index_sqlite import PAGE_PARAMS, _page_sql

from tests.e2e.conftest import free_port

pytestmark = pytest.mark.e2e

# Few distinct texts, many records each: bm25 ties (the page's lowest score shared by several records).
TEXTS = [
    ("Explain the example simply", "an example and another example"),
    ("Explain the example simply", "an example and another example"),
    ("量子力学的基本概念", "举例说明：量子 例子"),
    ("example of 量子", "a sample"),
    ("quetzal example", "examples of the example, example"),
    ("no match here", "nothing"),
    ("基本 例子 example", "基本概念"),
]
QUERIES = [("example", None), ("example", "prompt"), ("example", "chosen"), ("量子", None), ("基本 例子", None),
           ("例子", "chosen"), ("quetzal", None), ("sample", None), ("nowhere", None), ("基本概念 example", None)]
PENDING = {"and": [{"type": "terms", "scope": {"entity": "response", "property": "status"}, "values": ["pending"]}]}

# The engine's ordered statement for a plain MATCH (before the ranked page), as the reference.
ORDERED = (
    "SELECT r.id, h.score, count(*) OVER () FROM records r JOIN (SELECT i.record_id AS rid, -bm25(curate_text) "
    "AS score FROM curate_text f JOIN curate_text_ids i ON i.n = f.rowid WHERE curate_text MATCH :q "
    "AND i.dataset_id = :ds) h ON h.rid = r.id WHERE r.dataset_id = :ds "
    "ORDER BY h.score DESC, r.inserted_at ASC, r.id ASC LIMIT :lim OFFSET :off"
)
MATCHES = ['"example"', 'c0 : "example"', '"quetzal"', '"基本概念" AND "example"', '"nowhere"']


def _fields(i: int, shift: int = 0) -> dict:
    prompt, chosen = TEXTS[(i + shift) % len(TEXTS)]
    return {"prompt": prompt, "chosen": chosen}


def _dataset(info, name: str, n: int, shift: int = 0):
    import argilla as rg

    owner = rg.Argilla(api_url=info.api_url, api_key=info.owner.api_key, timeout=120)
    fields = [rg.TextField(name=f, client=owner) for f in ("prompt", "chosen")]
    settings = rg.Settings(fields=fields, questions=[rg.LabelQuestion(name="better", labels=["a", "b"], client=owner)])
    ds = rg.Dataset(name=name, workspace=info.workspace, settings=settings, client=owner).create()
    for start in range(0, n, 9):  # several batches: distinct inserted_at values as well as equal ones
        ds.records.log([rg.Record(id=f"{name}-{i:02d}", fields=_fields(i, shift)) for i in range(start, min(n, start + 9))])
    return ds


class Api:
    def __init__(self, info, account):
        self.http = httpx.Client(base_url=info.api_url, headers={"X-Argilla-Api-Key": account.api_key}, timeout=60)

    def search(self, dsid: str, q: str, field: str | None, limit: int, offset: int, filters=None):
        text = {"q": q} if field is None else {"q": q, "field": field}
        body = {"query": {"text": text}} | ({"filters": filters} if filters else {})
        r = self.http.post(f"/api/v1/me/datasets/{dsid}/records/search", params={"limit": limit, "offset": offset},
                           json=body)
        assert r.status_code == 200, r.text
        data = r.json()
        return [(i["record"]["external_id"], i["query_score"]) for i in data["items"]], data["total"]


def _same_as_ordered_statement(api: Api, dsid: str) -> None:
    """Every page of every query, terms alone (the ranked page) against the same terms with a filter every record
    passes (the engine's ordered statement): same ids, order, scores, totals."""
    for q, field in QUERIES:
        full, total = api.search(dsid, q, field, 100, 0)
        assert (full, total) == api.search(dsid, q, field, 100, 0, PENDING), (q, field)
        assert len(full) == total
        for limit in (1, 3, 4):
            pages = []
            for offset in range(0, total + limit, limit):  # and one page past the end
                page, page_total = api.search(dsid, q, field, limit, offset)
                assert page_total == total and (page, page_total) == api.search(dsid, q, field, limit, offset,
                                                                                  PENDING), (q, field, limit, offset)
                pages += page
            assert pages == full, (q, field, limit)


def _sql_pages(db, ds_hex: str) -> None:
    """The page statement itself against the ordered statement, every offset, on the server's database."""
    con = sqlite3.connect(db)
    page_sql = _page_sql("q", "ds")
    off, lim, end = PAGE_PARAMS
    try:
        for match in MATCHES:
            total = len(con.execute(ORDERED, {"q": match, "ds": ds_hex, "lim": -1, "off": 0}).fetchall())
            for limit in (1, 2, 5):
                for offset in range(0, total + 2):
                    want = con.execute(ORDERED, {"q": match, "ds": ds_hex, "lim": limit, "off": offset}).fetchall()
                    got = con.execute(page_sql, {"q": match, "ds": ds_hex, lim: limit, off: offset,
                                                 end: offset + limit}).fetchall()
                    assert got == want, (match, limit, offset)
        plan = [r[3] for r in con.execute("EXPLAIN QUERY PLAN " + page_sql,
                                          {"q": '"example"', "ds": ds_hex, lim: 10, off: 0, end: 10})]
    finally:
        con.close()
    # the MATCH drives; the dataset's being alone is two probes of argilla's dataset index; records are read
    # only for the page's candidates (by id), never scanned
    assert any(p.startswith("SCAN f VIRTUAL TABLE") for p in plan), plan
    assert sum("USING COVERING INDEX ix_records_dataset_id (dataset_id" in p for p in plan) == 2, plan
    assert not any(p.startswith(("SCAN r", "SCAN records")) for p in plan), plan


def test_terms_alone_page_equals_the_ordered_statement(tmp_path):
    home, port = tmp_path / "home", free_port()
    info = server.start(home, port=port, annotators=["ann1", "ann2"])
    try:
        api = Api(info, info.annotators[1])  # answers nothing: "pending" is every record
        a = _dataset(info, "rpa", 40)
        a_hex = str(a.id).replace("-", "")
        db = home / "argilla.db"
        con = sqlite3.connect(db)
        # ties of score and insertion time too, so the last tie-break (the id) decides (argilla stamps each record;
        # a bulk copy inside the database, as the benchmark's, gives many the same time)
        con.execute("UPDATE records SET inserted_at = (SELECT min(inserted_at) FROM records) "
                    "WHERE external_id < 'rpa-18'")
        con.commit()
        alone = "SELECT count(DISTINCT dataset_id) FROM records"
        assert con.execute(alone).fetchone() == (1,)
        _same_as_ordered_statement(api, str(a.id))
        _sql_pages(db, a_hex)

        # a second dataset with records, the same texts shifted: each hit's id row is probed
        b = _dataset(info, "rpb", 25, shift=3)
        assert con.execute(alone).fetchone() == (2,)
        for ds in (a, b):
            _same_as_ordered_statement(api, str(ds.id))
            _sql_pages(db, str(ds.id).replace("-", ""))
        only_a = {e for e, _ in api.search(str(a.id), "example", None, 100, 0)[0]}
        assert only_a and all(e.startswith("rpa-") for e in only_a)

        # writes: an upsert changes a record's text, the second dataset goes; the page follows
        import argilla as rg

        a.records.log([rg.Record(id="rpa-05", fields={"prompt": "example example example", "chosen": "x"})])
        b.delete()
        assert con.execute(alone).fetchone() == (1,)
        con.close()
        full, total = api.search(str(a.id), "example", None, 100, 0)
        assert "rpa-05" in {e for e, _ in full} and total == len(full)
        _same_as_ordered_statement(api, str(a.id))
        _sql_pages(db, a_hex)
    finally:
        server.stop(home)
