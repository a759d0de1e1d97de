"""Metadata filters on the engine's indexes (terms: the curate_terms side table; ranges: expression indexes,
SQLite json_extract, PostgreSQL the number as float8) return exactly what the plain JSON conditions return: the
same record ids in the same order with the same total, for scalars, lists, missing values and values that look
like an index's list key; the PostgreSQL indexes are made when a server starts on an existing database, and the
UI's filters read them. (More terms cases: test_metadata_terms.py.)"""

from __future__ import annotations

import hashlib
import time
import uuid

import httpx
import pytest

from curate.review import server

from tests.e2e.conftest import drop_pg_database, free_port, new_pg_database, psql

pytestmark = pytest.mark.e2e

N = 80


def _lang(i: int):
    """Scalars, lists, a scalar and a list holding the PostgreSQL list key, a value starting with "[", none."""
    if i % 11 == 0:
        return ["zh", "en"]
    if i == 13:
        return "[list]"
    if i == 17:
        return ["[list]"]
    if i == 19:
        return "[x"
    if i % 7 == 0:
        return None  # property missing
    return "zh" if i % 3 else "en"


def _meta(i: int) -> dict:
    meta = {}
    if _lang(i) is not None:
        meta["lang"] = _lang(i)
    if i % 6 != 5:
        meta["n"] = i
    if i % 4 != 3:
        meta["margin"] = (i - 40) / 20
    return meta


def _matches_terms(value, wanted: set[str]) -> bool:
    values = value if isinstance(value, list) else [value]
    return any(v is not None and str(v) in wanted for v in values)


def _in_range(value, ge, le) -> bool:
    return isinstance(value, (int, float)) and (ge is None or value >= ge) and (le is None or value <= le)


class Api:
    def __init__(self, info, account):
        self.http = httpx.Client(base_url=info.api_url, headers={"X-Argilla-Api-Key": account.api_key}, timeout=60)

    def search(self, dataset_id, body, limit=100, offset=0) -> tuple[list[str], int]:
        r = self.http.post(f"/api/v1/me/datasets/{dataset_id}/records/search",
                           params={"limit": limit, "offset": offset}, json=body)
        assert r.status_code == 200, r.text
        data = r.json()
        return [item["record"]["external_id"] for item in data["items"]], data["total"]


def _dataset(info, name: str, n: int = N):
    import argilla as rg

    owner = rg.Argilla(api_url=info.api_url, api_key=info.owner.api_key, timeout=120)
    settings = rg.Settings(
        fields=[rg.TextField(name="prompt", client=owner)],
        questions=[rg.LabelQuestion(name="better", labels=["a", "b"], client=owner)],
        metadata=[rg.TermsMetadataProperty(name="lang", client=owner),
                  rg.IntegerMetadataProperty(name="n", client=owner),
                  rg.FloatMetadataProperty(name="margin", client=owner)],
    )
    ds = rg.Dataset(name=name, workspace=info.workspace, settings=settings, client=owner).create()
    ds.records.log([rg.Record(id=f"m{i:02d}", fields={"prompt": f"prompt {i}"}, metadata=_meta(i)) for i in range(n)])
    return ds


_DS: dict[str, str] = {}


def test_metadata_filters_return_what_the_scan_returns(any_server):
    info = any_server
    if info.api_url not in _DS:
        ds = _dataset(info, f"mdx-{uuid.uuid4().hex[:8]}")
        ann = Api(info, info.annotators[0])
        ids = {i["external_id"]: i["id"] for i in Api(info, info.owner).http.get(
            f"/api/v1/datasets/{ds.id}/records", params={"limit": 1000}).json()["items"]}
        for i in range(0, N, 5):  # ann1 answers every fifth record
            r = ann.http.post(f"/api/v1/records/{ids[f'm{i:02d}']}/responses",
                              json={"values": {"better": {"value": "a"}}, "status": "submitted"})
            assert r.status_code == 201, r.text
        _DS[info.api_url] = str(ds.id)
    dsid = _DS[info.api_url]
    ann = Api(info, info.annotators[0])
    pending = {"type": "terms", "scope": {"entity": "response", "property": "status"}, "values": ["pending"]}
    cases = []
    for values in (["zh"], ["en", "zh"], ["[list]"], ["[x"], ["zh", "[list]"], ["nothing"]):
        flt = {"type": "terms", "scope": {"entity": "metadata", "metadata_property": "lang"}, "values": values}
        cases.append((flt, [i for i in range(N) if _matches_terms(_lang(i), set(values))]))
    for prop, ge, le in (("n", 10, 30), ("n", None, 4), ("margin", -0.5, 1.5), ("margin", 1.0, None)):
        flt = {"type": "range", "scope": {"entity": "metadata", "metadata_property": prop}}
        flt.update({k: v for k, v in (("ge", ge), ("le", le)) if v is not None})
        cases.append((flt, [i for i in range(N) if _in_range(_meta(i).get(prop), ge, le)]))
    for flt, expected in cases:
        want = [f"m{i:02d}" for i in expected]
        assert ann.search(dsid, {"filters": {"and": [flt]}}) == (want, len(want)), flt
        # a later page of the same query: the same order
        assert ann.search(dsid, {"filters": {"and": [flt]}}, limit=7, offset=7) == (want[7:14], len(want)), flt
        mine = [f"m{i:02d}" for i in expected if i % 5 != 0]  # and pending for ann1
        assert ann.search(dsid, {"filters": {"and": [flt, pending]}}) == (mine, len(mine)), flt


def test_postgresql_metadata_indexes_are_made_at_start_and_used(tmp_path):
    url = new_pg_database("curate_test_mdx")
    home, port = tmp_path / "home", free_port()
    try:
        info = server.start(home, port=port, database_url=url, annotators=["ann1"])
        ds = _dataset(info, "mdx", n=30)
        index_sql = ("SELECT count(*) FROM pg_indexes WHERE tablename = 'curate_meta' "
                     "AND (indexname LIKE 'ix_curate_mmt_%' OR indexname LIKE 'ix_curate_mmn_%')")
        # made when the properties were configured: the numbers' (terms filters read curate_terms)
        assert psql(url, index_sql) == "2"
        # a number that doesn't fit a float8 is no number (and no failed insert), a string is none either
        assert psql(url, "SELECT curate_jsonb_float('{\"a\": 1e400}', 'a') IS NULL, "
                         "curate_jsonb_float('{\"a\": \"3\"}', 'a') IS NULL, curate_jsonb_float('{\"a\": 2.5}', 'a')"
                    ) == "t|t|2.5"
        # a term expression index of an earlier curate is dropped at start (terms filters read curate_terms)
        psql(url, "CREATE INDEX ix_curate_mmt_0123456789abcdef ON curate_meta (dataset_id, (metadata ->> 'lang'))")
        server.stop(home)
        server.start(home, port=port, database_url=url, annotators=["ann1"])
        assert psql(url, index_sql) == "2"
        server.stop(home)
        assert psql(url, "SELECT count(*) FROM curate_meta") == "30"
        # an existing database without them (made by an older curate): made and filled again at start
        psql(url, "DROP TRIGGER curate_meta_sync ON records; DROP TABLE curate_meta; "
                  "DROP TRIGGER curate_terms_prop_sync ON metadata_properties; DROP TABLE curate_terms")
        assert psql(url, "SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'ix_curate_mm%'") == "0"
        db = psql(url, "SELECT current_database()")
        psql(url, f"ALTER DATABASE {db} SET enable_seqscan = off")  # tiny table: make an index plan possible
        info = server.start(home, port=port, database_url=url, annotators=["ann1"])
        assert psql(url, index_sql) == "2"
        assert psql(url, "SELECT count(*) FROM curate_meta") == "30"
        ann = Api(info, info.annotators[0])
        lang = {"type": "terms", "scope": {"entity": "metadata", "metadata_property": "lang"}, "values": ["zh"]}
        n_range = {"type": "range", "scope": {"entity": "metadata", "metadata_property": "n"}, "ge": 3, "le": 9}
        want = [f"m{i:02d}" for i in range(30) if _matches_terms(_lang(i), {"zh"})]
        assert ann.search(str(ds.id), {"filters": {"and": [lang]}}) == (want, len(want))
        want = [f"m{i:02d}" for i in range(30) if _in_range(_meta(i).get("n"), 3, 9)]
        assert ann.search(str(ds.id), {"filters": {"and": [n_range]}}) == (want, len(want))
        # the engine's own SQL read both indexes (statistics reach the view within a second or so)
        names = ["curate_terms_pkey", f"ix_curate_mmn_{hashlib.sha1(b'n').hexdigest()[:16]}"]
        used = ("SELECT count(*) FROM pg_stat_user_indexes WHERE idx_scan > 0 AND indexrelname IN "
                f"('{names[0]}', '{names[1]}')")
        deadline = time.monotonic() + 10
        while psql(url, used) != "2" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert psql(url, used) == "2"
        # the side table follows argilla's writes: a metadata update (an upsert of the same id) and a delete
        import argilla as rg

        ds.records.log([rg.Record(id="m01", fields={"prompt": "prompt 1"}, metadata={"lang": "en", "n": 1})])
        m02 = [i["id"] for i in Api(info, info.owner).http.get(
            f"/api/v1/datasets/{ds.id}/records", params={"limit": 1000}).json()["items"] if i["external_id"] == "m02"]
        assert Api(info, info.owner).http.delete(f"/api/v1/records/{m02[0]}").status_code == 200
        want = [f"m{i:02d}" for i in range(30) if _matches_terms(_lang(i), {"zh"}) and i not in (1, 2)]
        assert ann.search(str(ds.id), {"filters": {"and": [lang]}}) == (want, len(want))
        assert psql(url, "SELECT count(*) FROM curate_meta") == "29"
        # metadata jsonb can't hold (a NUL escape): argilla's insert still succeeds, the side row holds NULL
        ds.records.log([rg.Record(id="m99", fields={"prompt": "nul"}, metadata={"lang": "a\u0000b"})])
        assert psql(url, "SELECT count(*) FROM records") == "30"
        assert psql(url, "SELECT count(*) FROM curate_meta WHERE metadata IS NULL") == "1"
        assert ann.search(str(ds.id), {"filters": {"and": [lang]}}) == (want, len(want))
    finally:
        server.stop(home)
        drop_pg_database(url)
