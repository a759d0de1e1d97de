"""A search-box query in one field reads that field's own text index (SQLite: an FTS5 column per field;
PostgreSQL: a row per (record, field) with a partial pg_trgm index per field name) and answers exactly what the
field's text holds: the same ids and totals as a scan of each record's field, pages that add up to the full
ranking, exclusions and short (one-, two-character) terms checked in that field only; a dataset with more fields
than the index has columns (the 8th and later share one) still answers exactly; an older one-column SQLite index
is made again at start, and PostgreSQL's partial index is what the query reads."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid

import pytest

from curate.review import server

from tests.e2e.conftest import TextSearch, drop_pg_database, free_port, new_pg_database, psql

pytestmark = pytest.mark.e2e

N = 36
EXTRA = [f"f{k}" for k in range(4, 10)]  # 4 + 6 = 10 fields: f7, f8, f9 share the last SQLite column
WORDS = ["example", "Example", "EXAMPLE", "sample", "量子", "量子力学", "机器学习", "米饭", "x", "ab"]


def _fields(i: int) -> dict:
    """Each field holds a different slice of the vocabulary, so a term in one field is often absent from another."""
    def pick(k: int, n: int) -> str:
        return " ".join(WORDS[(i * k + j) % len(WORDS)] for j in range(n))

    out = {"prompt": f"问题{i}: {pick(1, 2)}", "a": f"回答A {pick(3, 3)}", "b": f"Answer B {pick(7, 2)}"}
    for k, name in enumerate(EXTRA):
        out[name] = f"{name}-{pick(k + 2, 1 + i % 3)}"
    out["chat"] = [{"role": "user", "content": pick(5, 2)}, {"role": "assistant", "content": f"好的 {i}"}]
    return out


def _text(value) -> str:
    """The string leaves of a field value (a chat: its roles and contents), as the index holds them."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_text(v) for v in value)
    if isinstance(value, dict):
        return "\n".join(_text(v) for v in value.values())
    return ""


def _expected(field: str, must: list[str], must_not: list[str] = ()) -> set[str]:
    out = set()
    for i in range(N):
        t = _text(_fields(i)[field]).lower()
        if all(m.lower() in t for m in must) and not any(m.lower() in t for m in must_not):
            out.add(f"t{i:02d}")
    return out


def _dataset(info, name: str) -> str:
    import argilla as rg

    owner = rg.Argilla(api_url=info.api_url, api_key=info.owner.api_key, timeout=120)
    fields = [rg.TextField(name=n, client=owner) for n in ("prompt", "a", "b", *EXTRA)]
    fields.insert(3, rg.ChatField(name="chat", required=False, _client=owner))
    settings = rg.Settings(fields=fields, questions=[rg.LabelQuestion(name="better", labels=["a", "b"], client=owner)])
    ds = rg.Dataset(name=name, workspace=info.workspace, settings=settings, client=owner).create()
    ds.records.log([rg.Record(id=f"t{i:02d}", fields=_fields(i)) for i in range(N)])
    return str(ds.id)


CASES = [
    ("example", "prompt", ["example"], []),
    ("EXAMPLE", "a", ["example"], []),
    ("量子", "a", ["量子"], []),  # two Chinese characters
    ("量子 -量子力学", "b", ["量子"], ["量子力学"]),  # an exclusion checked in the field only
    ("x", "prompt", ["x"], []),  # one character
    ("ab", "a", ["ab"], []),  # two Latin characters
    ("example sample", "a", ["example", "sample"], []),
    ("用户", "chat", [], []),  # not in any text (the chat's role is "user")
    ("user", "chat", ["user"], []),  # a chat's roles are text, as in the whole-record index
    ("好的", "chat", ["好的"], []),
    ("f7", "f7", ["f7"], []),  # f7, f8, f9 share the last column: each still only its own text
    ("f8", "f7", ["f8"], []),
    ("米饭 -x", "f9", ["米饭"], ["x"]),
    ("机器学习", "f4", ["机器学习"], []),
    ("prompt", "prompt", ["prompt"], []),  # a field's name is not its text
]


_DS: dict[str, str] = {}


@pytest.mark.parametrize("q, field, must, must_not", CASES)
def test_one_field_search_answers_what_the_field_holds(any_server, q, field, must, must_not):
    info = any_server
    if info.api_url not in _DS:
        _DS[info.api_url] = _dataset(info, f"ftx-{uuid.uuid4().hex[:8]}")
    dsid = _DS[info.api_url]
    api = TextSearch(info, info.annotators[0])
    want = _expected(field, must, must_not) if must else set()
    full, total, scores = api.search(dsid, q, field)
    assert set(full) == want and total == len(want) == len(full), (q, field)
    assert all(a >= b for a, b in zip(scores, scores[1:], strict=False))  # ranked
    pages = []
    for offset in range(0, total, 4):
        page, page_total, _ = api.search(dsid, q, field, limit=4, offset=offset)
        assert page_total == total
        pages += page
    assert pages == full
    if not must_not:  # the whole record holds at least what each field holds
        assert want <= set(api.search(dsid, q, None)[0])


def test_sqlite_one_column_index_is_made_again_at_start(tmp_path):
    """A database from before the per-field columns (one `body` column) gets the new index at start, filled from
    the records and the fields' columns; the second start changes nothing."""
    home, port = tmp_path / "home", free_port()
    info = server.start(home, port=port, annotators=["ann1"])
    try:
        dsid = _dataset(info, "ftx-old")
        server.stop(home)
        con = sqlite3.connect(home / "argilla.db")
        con.executescript(
            "DROP TABLE curate_text_vocab; DROP TABLE curate_text; DELETE FROM curate_text_cols; "
            "CREATE VIRTUAL TABLE curate_text USING fts5(body, content='', tokenize='trigram'); "
            "CREATE VIRTUAL TABLE curate_text_vocab USING fts5vocab(curate_text, 'row');"
        )
        con.commit()
        con.close()
        info = server.start(home, port=port, annotators=["ann1"])
        assert "per_field_columns': True" in (home / "logs" / "server.log").read_text()
        api = TextSearch(info, info.annotators[0])
        for q, field, must, must_not in CASES[:6]:
            assert set(api.search(dsid, q, field)[0]) == _expected(field, must, must_not), (q, field)
        con = sqlite3.connect(home / "argilla.db")
        cols = con.execute("SELECT name, col FROM curate_text_cols ORDER BY col, name").fetchall()
        con.close()
        assert cols[:4] == [("prompt", 0), ("a", 1), ("b", 2), ("chat", 3)] and len(cols) == 10
        assert {c for _, c in cols[7:]} == {7}
        server.stop(home)
        info = server.start(home, port=port, annotators=["ann1"])
        assert "text index filled in" not in (home / "logs" / "server.log").read_text()  # nothing to do
        assert set(TextSearch(info).search(dsid, "example", "prompt")[0]) == _expected("prompt", ["example"])
    finally:
        server.stop(home)


def test_postgresql_field_rows_are_filled_at_start_follow_writes_and_are_read(tmp_path):
    url = new_pg_database("curate_test_ftx")
    home, port = tmp_path / "home", free_port()
    try:
        info = server.start(home, port=port, database_url=url, annotators=["ann1"])
        dsid = _dataset(info, "ftx")
        n_fields = sum(len(_fields(i)) for i in range(N))
        assert psql(url, "SELECT count(*) FROM curate_field_text") == str(n_fields)
        index = f"ix_curate_ft_{hashlib.sha1(b'prompt').hexdigest()[:16]}"
        assert psql(url, f"SELECT count(*) FROM pg_indexes WHERE indexname = '{index}'") == "1"  # at publish
        server.stop(home)
        # a database from before the field rows: filled (and the indexes made) at start
        psql(url, "DELETE FROM curate_field_text; " + f"DROP INDEX {index}")
        info = server.start(home, port=port, database_url=url, annotators=["ann1"])
        assert psql(url, "SELECT count(*) FROM curate_field_text") == str(n_fields)
        assert psql(url, f"SELECT count(*) FROM pg_indexes WHERE indexname = '{index}'") == "1"
        api = TextSearch(info, info.annotators[0])
        assert set(api.search(dsid, "example", "prompt")[0]) == _expected("prompt", ["example"])
        # the engine's condition on a field's rows (the name as a literal) can read that field's partial index
        # (a tiny table: a sequential scan, or the primary key's, would win; both ruled out in a rolled-back
        # transaction)
        plan = psql(url, "BEGIN; ALTER TABLE curate_field_text DROP CONSTRAINT curate_field_text_pkey; "
                         "SET LOCAL enable_seqscan = off; EXPLAIN SELECT f.record_id FROM curate_field_text f "
                         f"WHERE f.dataset_id = '{dsid}' AND f.field = 'prompt' AND f.body LIKE '%example%'; "
                         "ROLLBACK")
        assert index in plan, plan
        # an update of a record's text (an upsert of the same id) replaces its field rows; a delete removes them
        import argilla as rg

        owner = rg.Argilla(api_url=info.api_url, api_key=info.owner.api_key, timeout=120)
        ds = owner.datasets(name="ftx", workspace=info.workspace)
        new = dict(_fields(0), prompt="全新的问题 quetzal")
        ds.records.log([rg.Record(id="t00", fields=new)])
        assert api.search(dsid, "quetzal", "prompt")[0] == ["t00"]
        assert "t00" not in api.search(dsid, "问题0", "prompt")[0]
        t01 = [i["id"] for i in TextSearch(info).http.get(f"/api/v1/datasets/{dsid}/records", params={"limit": 1000})
               .json()["items"] if i["external_id"] == "t01"][0]
        assert TextSearch(info).http.delete(f"/api/v1/records/{t01}").status_code == 200
        assert psql(url, f"SELECT count(*) FROM curate_field_text WHERE record_id = '{t01}'") == "0"
        assert psql(url, "SELECT count(*) FROM curate_field_text WHERE field = 'prompt'") == str(N - 1)
    finally:
        server.stop(home)
        drop_pg_database(url)
