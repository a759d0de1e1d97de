"""Terms filters read the terms side table (curate_terms: a row per record, terms property and value or list
element), and answer exactly what the JSON conditions answer: the same record ids in the same order with the same
total, alone, with the pending queue and other response statuses, two terms filters together, for scalars, lists,
lists holding nulls, JSON null, missing keys, numbers, an empty list and (PostgreSQL: stored hashed) a value too
long for a B-tree entry; after metadata updates (PATCH, upsert), record deletes, a terms property added to a
dataset that already has records and one deleted. A database from before the table gets it, filled, at start;
the UI's count reads the table's index (PostgreSQL: index statistics; SQLite: the plan is a covering index)."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import httpx
import pytest

from curate.review import server

from tests.e2e.conftest import drop_pg_database, free_port, new_pg_database, pg_url, psql

pytestmark = pytest.mark.e2e

N = 60
LONG = "long " + "x" * 600  # over the PostgreSQL table's 500-character key: stored hashed


def _lang(i: int):
    if i == 23:
        return None  # JSON null: the key is there, no value
    if i == 29:
        return 3  # a number in a terms property (argilla checks terms only when the property lists its values)
    if i == 31:
        return [3, "en"]
    if i == 37:
        return LONG
    if i % 13 == 4:
        return ["zh", None]
    if i % 11 == 0:
        return ["zh", "en"]
    if i % 7 == 0:
        return "missing"
    return "zh" if i % 3 else "en"


def _meta(i: int, lang=None) -> dict:
    meta: dict = {"n": i}
    value = _lang(i) if lang is None else lang
    if value != "missing":
        meta["lang"] = value
    tags = [["a", "b"], ["b"], [], None][i % 4]
    if tags is not None:
        meta["tags"] = tags
    if i % 5 == 0:
        meta["late"] = "x" if i % 10 else ["x", "y"]  # an extra key, made a terms property later
    return meta


def _texts(value) -> list[str]:
    """What a terms filter compares: a scalar as text, each non-null list element; nothing for null / missing."""
    if value is None:
        return []
    return [str(v) for v in (value if isinstance(value, list) else [value]) if v is not None]


class Api:
    def __init__(self, info, account):
        self.http = httpx.Client(base_url=info.api_url, headers={"X-Argilla-Api-Key": account.api_key}, timeout=60)

    def search(self, dataset_id, filters, limit=100, offset=0) -> tuple[list[str], int]:
        r = self.http.post(f"/api/v1/me/datasets/{dataset_id}/records/search",
                           params={"limit": limit, "offset": offset},
                           json={"filters": {"and": filters}} if filters else {})
        assert r.status_code == 200, r.text
        data = r.json()
        return [item["record"]["external_id"] for item in data["items"]], data["total"]


def _terms(prop: str, *values: str) -> dict:
    return {"type": "terms", "scope": {"entity": "metadata", "metadata_property": prop}, "values": list(values)}


STATUS = {"type": "terms", "scope": {"entity": "response", "property": "status"}}


class Data:
    """A dataset with known metadata on a live server: the expected answers are computed from `meta`."""

    def __init__(self, info, name: str, n: int = N):
        import argilla as rg

        owner_sdk = rg.Argilla(api_url=info.api_url, api_key=info.owner.api_key, timeout=120)
        settings = rg.Settings(
            fields=[rg.TextField(name="prompt", client=owner_sdk)],
            questions=[rg.LabelQuestion(name="better", labels=["a", "b"], client=owner_sdk)],
            metadata=[rg.TermsMetadataProperty(name="lang", client=owner_sdk),
                      rg.TermsMetadataProperty(name="tags", client=owner_sdk),
                      rg.IntegerMetadataProperty(name="n", client=owner_sdk)],
            allow_extra_metadata=True,
        )
        ds = rg.Dataset(name=name, workspace=info.workspace, settings=settings, client=owner_sdk).create()
        self.id = str(ds.id)
        self.owner, self.ann = Api(info, info.owner), Api(info, info.annotators[0])
        self.meta = {f"t{i:02d}": _meta(i) for i in range(n)}
        r = self.owner.http.post(f"/api/v1/datasets/{self.id}/records/bulk", json={"items": [
            {"external_id": k, "fields": {"prompt": f"prompt {k}"}, "metadata": m} for k, m in self.meta.items()]})
        assert r.status_code == 201, r.text
        items = self.owner.http.get(f"/api/v1/datasets/{self.id}/records", params={"limit": 1000}).json()["items"]
        self.rid = {i["external_id"]: i["id"] for i in items}
        self.order = self.owner.search(self.id, [])[0]  # the engine's listing order (insertion)
        assert sorted(self.order) == sorted(self.meta)
        self.status: dict[str, str] = {}
        for k, status in [(f"t{i:02d}", "submitted") for i in range(0, n, 5)] + [
                (f"t{i:02d}", "draft") for i in range(2, n, 9) if i % 5]:
            r = self.ann.http.post(f"/api/v1/records/{self.rid[k]}/responses",
                                   json={"values": {"better": {"value": "a"}}, "status": status})
            assert r.status_code == 201, r.text
            self.status[k] = status

    def expected(self, prop_values: list[tuple[str, set[str]]], statuses: set[str] | None = None) -> list[str]:
        def keep(k: str) -> bool:
            if any(not set(_texts(self.meta[k].get(p))) & values for p, values in prop_values):
                return False
            return statuses is None or self.status.get(k, "pending") in statuses

        return [k for k in self.order if k in self.meta and keep(k)]

    def check(self, prop_values: list[tuple[str, set[str]]], statuses: set[str] | None = None) -> None:
        filters = [_terms(p, *sorted(v)) for p, v in prop_values]
        if statuses is not None:
            filters.append({**STATUS, "values": sorted(statuses)})
        want = self.expected(prop_values, statuses)
        assert self.ann.search(self.id, filters) == (want, len(want)), filters
        assert self.ann.search(self.id, filters, limit=4, offset=3) == (want[3:7], len(want)), filters


LANG_CASES = [{"zh"}, {"en"}, {"en", "zh"}, {"3"}, {"3", "en"}, {LONG}, {"nothing"}, {"None"}, {"null"}, {""}]


def _check_all(d: Data) -> None:
    for values in LANG_CASES:
        d.check([("lang", values)])
        d.check([("lang", values)], {"pending"})
        d.check([("lang", values)], {"pending", "draft"})
        d.check([("lang", values)], {"submitted"})
    for values in ({"a"}, {"b"}, {"a", "b"}):
        d.check([("tags", values)])
        d.check([("tags", values), ("lang", {"zh"})], {"pending"})
        d.check([("lang", {"en", "zh"}), ("tags", values)])


def test_terms_filters_answer_what_the_json_conditions_answer(any_server):
    d = Data(any_server, f"terms-{uuid.uuid4().hex[:8]}")
    _check_all(d)
    # metadata updates: PATCH one record, upsert two (bulk PUT with their ids)
    d.meta["t01"] = {**d.meta["t01"], "lang": ["en", "xx"], "tags": ["a"]}
    r = d.owner.http.patch(f"/api/v1/records/{d.rid['t01']}", json={"metadata": d.meta["t01"]})
    assert r.status_code == 200, r.text
    for k, lang in (("t02", "en"), ("t04", None)):
        d.meta[k] = {"n": 1} if lang is None else {**d.meta[k], "lang": lang}
    r = d.owner.http.put(f"/api/v1/datasets/{d.id}/records/bulk", json={"items": [
        {"id": d.rid[k], "fields": {"prompt": f"prompt {k}"}, "metadata": d.meta[k]} for k in ("t02", "t04")]})
    assert r.status_code == 200, r.text
    # deletes: one record, then two through the dataset's bulk delete
    assert d.owner.http.delete(f"/api/v1/records/{d.rid['t03']}").status_code == 200
    r = d.owner.http.delete(f"/api/v1/datasets/{d.id}/records",
                            params={"ids": ",".join(d.rid[k] for k in ("t08", "t11"))})
    assert r.status_code == 204, r.text
    for k in ("t03", "t08", "t11"):
        del d.meta[k]
    _check_all(d)
    d.check([("lang", {"xx"})])
    # a terms property added to a dataset that has records holding its key: its rows are made then
    r = d.owner.http.post(f"/api/v1/datasets/{d.id}/metadata-properties",
                          json={"name": "late", "title": "Late", "settings": {"type": "terms"}})
    assert r.status_code == 201, r.text
    late_id = r.json()["id"]
    for values in ({"x"}, {"y"}, {"x", "y"}):
        d.check([("late", values)])
        d.check([("late", values)], {"pending"})
    d.meta["t06"] = {**d.meta["t06"], "late": "y"}  # and kept for later writes
    assert d.owner.http.patch(f"/api/v1/records/{d.rid['t06']}", json={"metadata": d.meta["t06"]}).status_code == 200
    d.check([("late", {"y"})])
    # deleting the property deletes its rows (a filter on it is then refused by argilla, 422)
    assert d.owner.http.delete(f"/api/v1/metadata-properties/{late_id}").status_code == 200
    r = d.ann.http.post(f"/api/v1/me/datasets/{d.id}/records/search", json={"filters": {"and": [_terms("late", "x")]}})
    assert r.status_code == 422, r.text
    assert _rows(any_server, d.id, "late") == 0
    assert _rows(any_server, d.id, "lang") > 0


def _rows(info, dataset_id: str, name: str) -> int:
    """curate_terms rows of one property of one dataset, read from the database itself."""
    db = Path(info.home) / "argilla.db"
    if not db.exists():  # the PostgreSQL server of the session
        return int(psql(pg_url(), f"SELECT count(*) FROM curate_terms WHERE dataset_id = '{dataset_id}' "
                                           f"AND name = '{name}'"))
    with sqlite3.connect(db) as con:
        return con.execute("SELECT count(*) FROM curate_terms WHERE dataset_id = ? AND name = ?",
                           (uuid.UUID(dataset_id).hex, name)).fetchone()[0]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_terms_table_is_made_and_filled_at_start_and_read_by_index(tmp_path, backend):
    home, port = tmp_path / "home", free_port()
    url = None
    if backend == "postgresql":
        url = new_pg_database("curate_test_terms")
    db = home / "argilla.db"

    def sql(statement: str) -> str:
        if url:
            return psql(url, statement)
        with sqlite3.connect(db) as con:
            rows = con.execute(statement).fetchall()
        return "\n".join("|".join(str(c) for c in row) for row in rows)

    try:
        info = server.start(home, port=port, database_url=url, annotators=["ann1"])
        d = Data(info, "terms", n=30)
        before = sql("SELECT name, value, record_id FROM curate_terms ORDER BY 1, 2, 3")
        assert before and len(before.splitlines()) > 30
        server.stop(home)
        # a database from an older curate: no table, no triggers
        if url:
            sql("DROP TRIGGER curate_terms_prop_sync ON metadata_properties; DROP TABLE curate_terms")
        else:
            with sqlite3.connect(db) as con:
                for trig in ("ai", "au", "ad", "pi", "pd"):
                    con.execute(f"DROP TRIGGER curate_terms_{trig}")
                con.execute("DROP TABLE curate_terms")
        info = server.start(home, port=port, database_url=url, annotators=["ann1"])
        assert sql("SELECT name, value, record_id FROM curate_terms ORDER BY 1, 2, 3") == before
        d.owner, d.ann = Api(info, info.owner), Api(info, info.annotators[0])
        d.check([("lang", {"zh"})], {"pending"})
        d.check([("tags", {"a", "b"})])
        server.stop(home)
        info = server.start(home, port=port, database_url=url, annotators=["ann1"])  # a second start: no change
        assert sql("SELECT name, value, record_id FROM curate_terms ORDER BY 1, 2, 3") == before
        d.owner, d.ann = Api(info, info.owner), Api(info, info.annotators[0])
        d.check([("lang", {"zh"})], {"pending"})
        if url:  # the engine's count read the table's primary key (statistics reach the view within a second)
            used = "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'curate_terms_pkey'"
            deadline = time.monotonic() + 10
            while int(sql(used) or 0) == 0 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert int(sql(used)) > 0
        else:  # the same count on SQLite: the table's key alone (WITHOUT ROWID: the primary key covers)
            plan = sql("EXPLAIN QUERY PLAN SELECT count(*) FROM curate_terms t WHERE dataset_id = "
                       f"'{uuid.UUID(d.id).hex}' AND name = 'lang' AND value = 'zh' AND NOT EXISTS (SELECT 1 FROM "
                       "responses r WHERE r.record_id = t.record_id AND r.user_id = 'x')")
            assert "SEARCH t USING PRIMARY KEY (dataset_id=? AND name=? AND value=?)" in plan, plan
            assert "SCAN" not in plan, plan
    finally:
        server.stop(home)
        if url:
            drop_pg_database(url)
