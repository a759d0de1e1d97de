"""The SQLite text index (see text_index.py for what is indexed and why): an FTS5 table with the trigram
tokenizer, a column per field, kept by triggers; one- and two-character terms through the index's own trigram
vocabulary. Ranked by bm25.

Runs inside the argilla-server virtualenv: only the stdlib and sqlalchemy.
"""

from __future__ import annotations

from typing import Any

from curate.review.text_index import TextPlan, _fts_phrase

# A one- or two-character term with more trigram continuations than this is answered by a scan instead
# (an OR of thousands of phrases costs more than reading the text).
MAX_PREFIX_TRIGRAMS = 512

# SQLite: the FTS5 table has a column per field (c0 .. c{N-1}), so a query in one field reads its column's index
# instead of the field JSON of every hit. A dataset's fields take the columns in the order they were made
# (curate_text_cols, kept by a trigger on argilla's `fields`; a published dataset's fields never change); an 8th
# and later field share the last column, where a one-field query still checks the field's text.
SQLITE_COLUMNS = 8
_COLS = ", ".join(f"c{k}" for k in range(SQLITE_COLUMNS))
_LAST = SQLITE_COLUMNS - 1
# Each column: its fields' string leaves (chat messages included) joined by newlines, two newlines at the end
# (so a one-character term at the very end still starts a trigram); NULL when the record has no text there.
_SQLITE_COLUMN_TEXT = (
    "SELECT " + ", ".join(f"max(CASE WHEN col = {k} THEN txt END)" for k in range(SQLITE_COLUMNS))
    + " FROM (SELECT coalesce(m.col, " + str(_LAST) + ") AS col, "
    "group_concat(t.value, char(10)) || char(10) || char(10) AS txt "
    "FROM json_each({row}.fields) AS f "
    "LEFT JOIN curate_text_cols AS m ON m.dataset_id = {row}.dataset_id AND m.name = f.key "
    "JOIN json_tree({row}.fields, f.fullkey) AS t WHERE t.type = 'text' GROUP BY 1)"
)
_SQLITE_FTS = f"CREATE VIRTUAL TABLE curate_text USING fts5({_COLS}, content='', tokenize='trigram')"

# The same columns for every record at once (SQLite has no LATERAL: one pass grouped by row and column).
_SQLITE_REBUILD = (
    f"INSERT INTO curate_text(rowid, {_COLS}) SELECT i.n, "
    + ", ".join(f"max(CASE WHEN p.col = {k} THEN p.txt END)" for k in range(SQLITE_COLUMNS))
    + " FROM curate_text_ids AS i LEFT JOIN (SELECT r.id AS rid, coalesce(m.col, " + str(_LAST) + ") AS col, "
    "group_concat(t.value, char(10)) || char(10) || char(10) AS txt "
    "FROM records AS r, json_each(r.fields) AS f "
    "LEFT JOIN curate_text_cols AS m ON m.dataset_id = r.dataset_id AND m.name = f.key "
    "JOIN json_tree(r.fields, f.fullkey) AS t WHERE t.type = 'text' GROUP BY r.id, 2) AS p ON p.rid = i.record_id "
    "GROUP BY i.n"
)
SQLITE_DDL = (
    ("CREATE TABLE IF NOT EXISTS curate_text_ids (n INTEGER PRIMARY KEY, record_id CHAR(32) NOT NULL UNIQUE, "
    "dataset_id CHAR(32) NOT NULL)"),
    ("CREATE TABLE IF NOT EXISTS curate_text_cols (dataset_id CHAR(32) NOT NULL, name TEXT NOT NULL, "
     "col INTEGER NOT NULL, PRIMARY KEY (dataset_id, name))"),
    _SQLITE_FTS.replace("CREATE VIRTUAL TABLE", "CREATE VIRTUAL TABLE IF NOT EXISTS"),
    "CREATE VIRTUAL TABLE IF NOT EXISTS curate_text_vocab USING fts5vocab(curate_text, 'row')",
)
# Triggers are dropped and made again at every start (their text may change between versions).
SQLITE_TRIGGERS = {
    "curate_text_cols_ai": (
        "CREATE TRIGGER curate_text_cols_ai AFTER INSERT ON fields BEGIN "
        "INSERT OR IGNORE INTO curate_text_cols(dataset_id, name, col) VALUES (new.dataset_id, new.name, "
        f"min({_LAST}, (SELECT count(*) FROM curate_text_cols WHERE dataset_id = new.dataset_id))); END"
    ),
    "curate_text_ai": (
        "CREATE TRIGGER curate_text_ai AFTER INSERT ON records BEGIN "
        "INSERT INTO curate_text_ids(record_id, dataset_id) VALUES (new.id, new.dataset_id); "
        f"INSERT INTO curate_text(rowid, {_COLS}) SELECT i.n, s.* FROM curate_text_ids AS i, ("
        + _SQLITE_COLUMN_TEXT.format(row="new") + ") AS s WHERE i.record_id = new.id; END"
    ),
    # A contentless FTS5 table forgets a row when told the text it indexed; the same expression recomputes it.
    "curate_text_ad": (
        "CREATE TRIGGER curate_text_ad AFTER DELETE ON records BEGIN "
        f"INSERT INTO curate_text(curate_text, rowid, {_COLS}) SELECT 'delete', i.n, s.* FROM curate_text_ids AS i, ("
        + _SQLITE_COLUMN_TEXT.format(row="old") + ") AS s WHERE i.record_id = old.id; "
        "DELETE FROM curate_text_ids WHERE record_id = old.id; END"
    ),
    "curate_text_au": (
        "CREATE TRIGGER curate_text_au AFTER UPDATE OF fields ON records BEGIN "
        f"INSERT INTO curate_text(curate_text, rowid, {_COLS}) SELECT 'delete', i.n, s.* FROM curate_text_ids AS i, ("
        + _SQLITE_COLUMN_TEXT.format(row="old") + ") AS s WHERE i.record_id = old.id; "
        f"INSERT INTO curate_text(rowid, {_COLS}) SELECT i.n, s.* FROM curate_text_ids AS i, ("
        + _SQLITE_COLUMN_TEXT.format(row="new") + ") AS s WHERE i.record_id = new.id; END"
    ),
}


def _sqlite_has_current_fts(conn: Any) -> bool:
    row = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'curate_text'").first()
    return row is None or f"fts5({_COLS}," in row[0]


def _sqlite_fill_columns(conn: Any) -> None:
    """Give every field of every dataset its column, in the order the fields were made (what the trigger on
    `fields` does for new ones)."""
    rows = conn.exec_driver_sql("SELECT dataset_id, name FROM fields ORDER BY dataset_id, inserted_at, rowid").all()
    for dataset_id, name in rows:
        conn.exec_driver_sql(
            "INSERT OR IGNORE INTO curate_text_cols(dataset_id, name, col) VALUES (?, ?, "
            f"min({_LAST}, (SELECT count(*) FROM curate_text_cols WHERE dataset_id = ?)))",
            (dataset_id, name, dataset_id),
        )


def ensure_sync(conn: Any) -> dict[str, Any]:
    """Create the SQLite index objects (idempotent) and rebuild the index when its counts disagree."""
    migrated = not _sqlite_has_current_fts(conn)
    if migrated:  # a one-column index from before the per-field columns: made again
        conn.exec_driver_sql("DROP TABLE IF EXISTS curate_text_vocab")
        conn.exec_driver_sql("DROP TABLE IF EXISTS curate_text")
    for ddl in SQLITE_DDL:
        conn.exec_driver_sql(ddl)
    for name, ddl in SQLITE_TRIGGERS.items():
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
        conn.exec_driver_sql(ddl)
    have = conn.exec_driver_sql("SELECT count(*) FROM curate_text_ids").scalar_one()
    records = conn.exec_driver_sql("SELECT count(*) FROM records").scalar_one()
    if have == records and not migrated:
        return {"rebuilt": False, "records": records}
    # Counts disagree: a database from before the index (or edited behind argilla's back). Rebuild it all.
    _sqlite_fill_columns(conn)
    conn.exec_driver_sql("INSERT INTO curate_text(curate_text) VALUES ('delete-all')")
    conn.exec_driver_sql("DELETE FROM curate_text_ids")
    conn.exec_driver_sql(
        "INSERT INTO curate_text_ids(record_id, dataset_id) SELECT id, dataset_id FROM records ORDER BY rowid"
    )
    conn.exec_driver_sql(_SQLITE_REBUILD)
    return {"rebuilt": True, "records": records, "per_field_columns": migrated}


async def _prefix_trigrams(db: Any, term: str) -> list[str] | None:
    """The trigrams of the SQLite index starting with `term` (1-2 characters), or None when there are too many."""
    from sqlalchemy import text

    low = term.lower()
    rows = (
        await db.execute(
            text("SELECT term FROM curate_text_vocab WHERE term >= :lo AND term < :hi LIMIT :cap"),
            {"lo": low, "hi": low + "\U0010ffff", "cap": MAX_PREFIX_TRIGRAMS + 1},
        )
    ).scalars().all()
    return None if len(rows) > MAX_PREFIX_TRIGRAMS else list(rows)


async def _sqlite_match(db: Any, term: str, col: int | None = None) -> str | None:
    """An FTS5 MATCH expression for one term (in column `col` when given), "" when no record can contain it,
    None when it must be scanned."""
    scope = "" if col is None else f"c{col} : "
    if len(term) >= 3:
        return scope + _fts_phrase(term)
    grams = await _prefix_trigrams(db, term)
    if grams is None:
        return None
    if not grams:
        return ""
    return scope + "(" + " OR ".join(_fts_phrase(g) for g in grams) + ")"


async def _sqlite_column(db: Any, dataset_hex: str, field_name: str) -> int | None:
    """The FTS5 column holding only this field's text, None when it has none (unknown, or sharing the last)."""
    from sqlalchemy import text

    col = (
        await db.execute(
            text("SELECT col FROM curate_text_cols WHERE dataset_id = :ds AND name = :name"),
            {"ds": dataset_hex, "name": field_name},
        )
    ).scalar_one_or_none()
    return None if col is None or col >= _LAST else int(col)


# Bound at search time by the engine: the page's offset and limit, and the rank of its last row (offset + limit).
PAGE_PARAMS = ("curate_page_offset", "curate_page_limit", "curate_page_end")


def _page_sql(match: str, ds: str) -> str:
    """The ranked page of a MATCH in one dataset, with the total, in one statement (one snapshot).

    Why: joining every hit to `records` for the tie-break and sorting them all under a window count was ~60 % of
    a common word's statement at 100k (33k hits). Here each hit is scored once (a materialized CTE of FTS rowid
    and score); the count and the page's lowest score (the end rank's) are read from it, and only the hits
    scoring at least that much (the page's rows and their ties) are joined to their record and sorted by
    (score, inserted_at, id), as the engine's ordered statement does: same rows, order and total.
    The dataset: when no other dataset has records (two range probes of argilla's dataset index), every FTS row
    is one of its records and the hits need no lookup; otherwise each hit's id row is probed, as before."""
    alone = (
        f"(NOT EXISTS (SELECT 1 FROM records WHERE dataset_id < :{ds}) "
        f"AND NOT EXISTS (SELECT 1 FROM records WHERE dataset_id > :{ds}))"
    )
    off, lim, end = PAGE_PARAMS
    return (
        "WITH curate_ranked AS MATERIALIZED (SELECT f.rowid AS n, -bm25(curate_text) AS score FROM curate_text f "
        f"WHERE curate_text MATCH :{match} AND ({alone} OR EXISTS (SELECT 1 FROM curate_text_ids AS d "
        f"WHERE d.n = f.rowid AND d.dataset_id = :{ds}))) "
        "SELECT i.record_id, h.score, (SELECT count(*) FROM curate_ranked) AS total FROM curate_ranked AS h "
        "JOIN curate_text_ids AS i ON i.n = h.n JOIN records AS r ON r.id = i.record_id "
        # fewer hits than the page's end: no lowest score, every hit is a candidate
        "WHERE h.score >= coalesce((SELECT score FROM curate_ranked ORDER BY score DESC "
        f"LIMIT 1 OFFSET :{end} - 1), h.score) "
        f"ORDER BY h.score DESC, r.inserted_at ASC, r.id ASC LIMIT :{lim} OFFSET :{off}"
    )


async def plan(db: Any, dataset_id: Any, must: list[str], must_not: list[str],
               field_name: str | None = None) -> TextPlan:
    """The SQLite plan: FTS5 MATCH over the whole record or one field's column."""
    p = TextPlan()
    ds_hex = dataset_id.hex if hasattr(dataset_id, "hex") else str(dataset_id).replace("-", "")
    col = None
    if field_name is not None:
        col = await _sqlite_column(db, ds_hex, field_name)
        p.field_indexed = col is not None
        if col is None:
            must_not = []  # checked in the field's JSON by the engine
    ds = p._name(ds_hex)
    parts = []
    for term in must:
        m = await _sqlite_match(db, term, col)
        if m is None:
            p.scan_must.append(term)
        elif m == "":
            p.empty = True
            return p
        else:
            parts.append(m)
    for term in must_not:
        m = await _sqlite_match(db, term, col)
        if m is None:
            p.scan_not.append(term)
        elif m:
            q = p._name(m)
            p.exclude_sql.append(
                f"SELECT i.record_id FROM curate_text f JOIN curate_text_ids i ON i.n = f.rowid "
                f"WHERE curate_text MATCH :{q} AND i.dataset_id = :{ds}"
            )
    if parts:
        q = p._name(" AND ".join(parts))
        p.hits_sql = (
            f"SELECT i.record_id AS rid, -bm25(curate_text) AS score FROM curate_text f "
            f"JOIN curate_text_ids i ON i.n = f.rowid WHERE curate_text MATCH :{q} AND i.dataset_id = :{ds}"
        )
        if not (p.scan_must or p.scan_not or p.exclude_sql):
            p.page_sql = _page_sql(q, ds)
    return p

