"""A text index over Argilla's records, so search-box queries read an index instead of every record's JSON.

Why: the curate-sql engine answered text queries by parsing every record's `fields` JSON (LIKE + json_tree):
~300 ms at 100k records on 2 cores, and one hostile query could hold the server for minutes. Elasticsearch, which
this engine replaces, answers from an inverted index; here the database's own text indexes play that part.

What is indexed: each record's text, i.e. every string leaf of its `fields` JSON (chat messages included) joined
by newlines, field by field. Kept current by triggers in the same transaction as argilla's own writes
(so nothing argilla does, nor a crash between two statements, can leave it stale) and rebuilt at start when the
counts disagree (a database from before this index, or restored from a dump).

- SQLite: an FTS5 table with the trigram tokenizer (substring matching, case-folded, any script; contentless, so
  the text isn't stored twice) with a column per field (c0 .. c7: a dataset's fields in the order they were made,
  `curate_text_cols`; an 8th and later field share the last column), plus `curate_text_ids` (stable integer ids;
  FTS rowids must survive VACUUM, which renumbers implicit rowids). A query in the whole record matches any
  column; a query in one field is a column filter (`c1 : "example"`), so a common word in one field reads that
  column's index instead of every hit's field JSON (a field sharing the last column is still checked in its JSON).
  A term of three or more characters is a trigram phrase. A one- or two-character term (most Chinese words are
  two characters) can't be a trigram, but every occurrence of it is followed by two more characters (each
  column's text ends with two newlines), so the records containing it are exactly those holding a trigram that
  starts with it: the index's own vocabulary (fts5vocab, a range read) lists those trigrams. Ranked by bm25. An
  index from before the per-field columns (one `body` column) is made again at start.
- PostgreSQL: a side table `curate_record_text` (record_id, dataset_id, lower-cased body, the distinct Chinese
  character bigrams of the body) with a GIN index on the bigrams (two-character Chinese terms), and
  `curate_field_text` (a row per record and field, the field's lower-cased text) with a partial pg_trgm index per
  field name (made at start and when a dataset is published). A term of three or more characters, in one field
  or in the whole record, reads the field rows' trigram indexes (the whole record: a UNION ALL over the dataset's
  fields; the body is its fields' texts joined by newlines, so a term without a newline is in the body exactly
  when it is in one of its fields); other short terms read the side table's plain text (a fraction of parsing
  JSON). There is no trigram index on the whole body: it held every trigram a second time and cost ~1.3 ms of
  every insert (dropped at start). The trigger reads each record's string leaves once. Without the pg_trgm
  extension (no right to create it) the side tables still serve, without trigram indexes. Ranked by term
  density in the body (one field: in the field's text).

Runs inside the argilla-server virtualenv: only the stdlib and sqlalchemy.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass, field
from typing import Any

_LOGGER = logging.getLogger("curate.review")

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

_SAFE_FIELD = re.compile(r"^[A-Za-z0-9_\-]{1,200}$")
_CJK_LO, _CJK_HI = "\u3400", "\u9fff"  # CJK Extension A .. Unified Ideographs

PG_DDL = (
    ("CREATE OR REPLACE FUNCTION curate_fields_text(f json) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ "
    "SELECT lower(coalesce(string_agg(v #>> '{}', E'\\n'), '')) || E'\\n' "
    "FROM jsonb_path_query(f::jsonb, 'strict $.**') AS v WHERE jsonb_typeof(v) = 'string' $$"),
    # Every bigram of Chinese characters: the runs of two or more of them (a regex, so text without Chinese costs
    # one pass), each run's characters zipped with their successors (unnest of two arrays: linear, no sort).
    # The same set as pairing every character with the next one where both are in the range.
    ("CREATE OR REPLACE FUNCTION curate_cjk_bigrams(t text) RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ "
     "SELECT coalesce(array_agg(DISTINCT u.c || u.n), '{}') "
     f"FROM regexp_matches(t, '[{_CJK_LO}-{_CJK_HI}]{{2,}}', 'g') AS m(r) "
     "CROSS JOIN LATERAL (SELECT string_to_array(m.r[1], NULL) AS a) AS x "
     "CROSS JOIN LATERAL unnest(x.a[1:cardinality(x.a) - 1], x.a[2:]) AS u(c, n) $$"),
    ("CREATE TABLE IF NOT EXISTS curate_record_text (record_id uuid PRIMARY KEY REFERENCES records(id) ON DELETE "
    "CASCADE, dataset_id uuid NOT NULL, body text NOT NULL, bigrams text[] NOT NULL)"),
    "CREATE INDEX IF NOT EXISTS ix_curate_record_text_bigrams ON curate_record_text USING gin (bigrams)",
    # One row per (record, field): a query in one field reads that field's rows (a pg_trgm index per field name,
    # partial, made at start and when a dataset is published) instead of every hit's field JSON.
    ("CREATE TABLE IF NOT EXISTS curate_field_text (record_id uuid NOT NULL REFERENCES records(id) ON DELETE "
     "CASCADE, dataset_id uuid NOT NULL, field text NOT NULL, body text NOT NULL, PRIMARY KEY (record_id, field))"),
    # The record's string leaves are read once (field by field): each field's row from its own leaves, the record's
    # body from all of them in jsonb's key order (length, then bytes: what curate_fields_text(fields) walks), so
    # the body is the same text the whole-record fill computes.
    ("CREATE OR REPLACE FUNCTION curate_record_text_sync() RETURNS trigger LANGUAGE plpgsql AS $$ "
     "DECLARE b text; BEGIN "
     "IF TG_OP = 'UPDATE' THEN DELETE FROM curate_field_text WHERE record_id = NEW.id; END IF; "
     "WITH l AS MATERIALIZED (SELECT e.key, p.o, p.x #>> '{}' AS s FROM json_each(NEW.fields) AS e "
     "LEFT JOIN LATERAL jsonb_path_query(e.value::jsonb, 'strict $.**') WITH ORDINALITY AS p(x, o) "
     "ON jsonb_typeof(p.x) = 'string'), "
     "w AS (INSERT INTO curate_field_text(record_id, dataset_id, field, body) "
     "SELECT NEW.id, NEW.dataset_id, l.key, lower(coalesce(string_agg(l.s, E'\\n' ORDER BY l.o), '')) || E'\\n' "
     "FROM l GROUP BY l.key) "
     "SELECT lower(coalesce(string_agg(l.s, E'\\n' ORDER BY octet_length(l.key), l.key COLLATE \"C\", l.o), '')) "
     "|| E'\\n' INTO b FROM l; "
     "INSERT INTO curate_record_text(record_id, dataset_id, body, bigrams) "
     "VALUES (NEW.id, NEW.dataset_id, b, curate_cjk_bigrams(b)) "
     "ON CONFLICT (record_id) DO UPDATE SET body = EXCLUDED.body, bigrams = EXCLUDED.bigrams; "
     "RETURN NULL; END $$"),
)
PG_FIELD_FILL = (
    "INSERT INTO curate_field_text(record_id, dataset_id, field, body) "
    "SELECT r.id, r.dataset_id, e.key, curate_fields_text(e.value) FROM records r "
    "CROSS JOIN LATERAL json_each(r.fields) AS e "
    "WHERE NOT EXISTS (SELECT 1 FROM curate_field_text x WHERE x.record_id = r.id)"
)
# Created once (see ensure_sync): CREATE TRIGGER needs a lock on `records` that waits for every open transaction.
PG_TRIGGER = (
    "CREATE TRIGGER curate_record_text_sync AFTER INSERT OR UPDATE OF fields ON records "
    "FOR EACH ROW EXECUTE FUNCTION curate_record_text_sync()"
)
PG_TRGM_DDL = ("CREATE EXTENSION IF NOT EXISTS pg_trgm",)  # trusted: the database's owner may create it
# Before: a pg_trgm index on the whole record's body as well. It held every field's trigrams a second time (the
# field rows' partial indexes hold them too) and cost ~1.3 ms of every insert; whole-record terms of three or
# more characters now read the field rows' indexes (`_pg_any_field`). Dropped at start (idempotent).
PG_OLD = ("DROP INDEX IF EXISTS ix_curate_record_text_trgm",)


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


def field_index_ddl(names: list[str]) -> list[str]:
    """PostgreSQL: the partial pg_trgm index of each field name's rows in curate_field_text (a plain name only:
    it is an SQL literal, so the planner can match the index to a query's `field = '...'`)."""
    import hashlib

    return [
        f"CREATE INDEX IF NOT EXISTS ix_curate_ft_{hashlib.sha1(n.encode()).hexdigest()[:16]} ON curate_field_text "
        f"USING gin (body gin_trgm_ops) WHERE field = '{n}'"
        for n in sorted(set(names)) if _SAFE_FIELD.match(n)
    ]


def ensure_sync(conn: Any, is_pg: bool) -> dict[str, Any]:
    """Create the index objects (idempotent) and fill in what is missing. `conn`: a SQLAlchemy sync connection
    in a transaction. Returns what was done, for the log."""
    if not is_pg:
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
    for ddl in PG_OLD + PG_DDL:
        conn.exec_driver_sql(ddl)
    if not conn.exec_driver_sql(
        "SELECT 1 FROM pg_trigger WHERE tgname = 'curate_record_text_sync' AND tgrelid = 'records'::regclass"
    ).first():
        conn.exec_driver_sql(PG_TRIGGER)
    trgm = True
    names = [n for (n,) in conn.exec_driver_sql("SELECT DISTINCT name FROM fields").all()]
    for ddl in PG_TRGM_DDL + tuple(field_index_ddl(names)):
        try:
            with conn.begin_nested():
                conn.exec_driver_sql(ddl)
        except Exception as exc:  # noqa: BLE001 - no right to create the extension: the side table still serves
            _LOGGER.warning("curate-sql: no pg_trgm index (%s); text search reads the side table", str(exc)[:200])
            trgm = False
            break
    added = conn.exec_driver_sql(
        "INSERT INTO curate_record_text(record_id, dataset_id, body, bigrams) "
        "SELECT r.id, r.dataset_id, t.b, curate_cjk_bigrams(t.b) FROM records r "
        "CROSS JOIN LATERAL (SELECT curate_fields_text(r.fields) AS b) t "
        "WHERE NOT EXISTS (SELECT 1 FROM curate_record_text x WHERE x.record_id = r.id)"
    ).rowcount
    fields_added = conn.exec_driver_sql(PG_FIELD_FILL).rowcount
    return {"rebuilt": bool(added or fields_added), "added": added, "field_rows_added": fields_added,
            "pg_trgm": trgm}


def _is_cjk(ch: str) -> bool:
    return _CJK_LO <= ch <= _CJK_HI  # the same range as curate_cjk_bigrams


def _fts_phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@dataclass
class TextPlan:
    """How one query's terms are answered: `hits` is SQL selecting (rid, score) of matching records of a dataset
    (None when no term can use the index), with its bound parameters; `scan_must` / `scan_not` are terms left for
    the engine's scan of the records' JSON (one-character terms with very many continuations)."""

    hits_sql: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    exclude_sql: list[str] = field(default_factory=list)  # SQL selecting record ids to exclude (must_not terms)
    scan_must: list[str] = field(default_factory=list)
    scan_not: list[str] = field(default_factory=list)
    empty: bool = False  # a required term occurs nowhere: no record matches
    # A query in one field: True when the plan restricts every indexed term (and exclusion) to that field, so
    # the engine checks only `scan_must` / `scan_not` in the field's JSON; False: the plan finds records holding
    # the terms anywhere (and ignores exclusions), the engine checks every term in the field.
    field_indexed: bool = False

    def _name(self, value: Any) -> str:
        name = f"curate_t{len(self.params)}"
        self.params[name] = value
        return name


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


async def plan(db: Any, dataset_id: Any, must: list[str], must_not: list[str], is_pg: bool,
               field_name: str | None = None) -> TextPlan:
    """The index plan for a query's required and excluded terms, in the whole record or in one field (see the
    module docstring and TextPlan.field_indexed)."""
    p = TextPlan()
    if is_pg and field_name is not None:
        return _pg_field_plan(p, dataset_id, must, must_not, field_name)
    if is_pg:
        ds = p._name(dataset_id)
        fields = await _pg_fields(db, dataset_id)
        conds, score_parts, in_fields, grams = [f"t.dataset_id = :{ds}"], [], [], []
        # A query with a Chinese term reads the bigram index (one GIN scan) and checks its other terms in the
        # bodies of those records; only a query without one reads the field rows' trigram indexes (computing
        # their union for a common word when a rare Chinese term already leaves no record was 4x slower).
        by_bigrams = any(_cjk_pairs(t) for t in must)
        for term in must:
            any_field = None if by_bigrams else _pg_any_field(p, term, ds, fields)
            if any_field is not None:
                in_fields.append(any_field)
            else:
                like, gram = _pg_term_parts(p, term)
                if gram is not None:
                    grams.append(gram)
                if like is not None and gram is None:
                    conds.insert(1, like)  # a plain-text term: checked first
                elif like is not None:
                    conds.append(like)  # a Chinese term's body check: after the plain-text terms
            t = p._name(term)
            tl = f"lower(CAST(:{t} AS text))"
            score_parts.append(f"(length(t.body) - length(replace(t.body, {tl}, ''))) / length({tl})")
        # The filter is checked in this order (equal-cost conditions keep it): the plain-text terms first, then the
        # Chinese ones, the bigram containment last. A bigram array of a Chinese record is stored compressed, and
        # a common term's bigrams leave most records to check: with `基本概念 example` at 30k (19,980 records
        # hold 基本概念) a scan that tested the bigrams first took 650-1,000 ms, `LIKE '%example%'` first 150.
        conds.extend(grams)
        if in_fields:
            # The records holding every such term in some field, computed once (an array: the planner then reads
            # curate_record_text by its key for exactly those records; a join or IN on the union let it pick a
            # nested loop over every record, 30-90 s for a common word at 30k).
            both = " INTERSECT ".join(f"SELECT record_id FROM ({u}) AS u{k}" for k, u in enumerate(in_fields))
            conds.append(f"t.record_id = ANY(ARRAY({both}))")
        for term in must_not:
            any_field = None if _cjk_pairs(term) else _pg_any_field(p, term, ds, fields)
            p.exclude_sql.append(any_field or (
                f"SELECT t.record_id FROM curate_record_text t WHERE t.dataset_id = :{ds} AND {_pg_term(p, term)}"
            ))
        if must:
            score = f"CAST(({' + '.join(score_parts)}) AS FLOAT) / (1.0 + length(t.body) / 500.0)"
            where = " AND ".join(conds)
            p.hits_sql = f"SELECT t.record_id AS rid, {score} AS score FROM curate_record_text t WHERE {where}"
        return p
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
    return p


def _pg_field_plan(p: TextPlan, dataset_id: Any, must: list[str], must_not: list[str], field_name: str) -> TextPlan:
    """PostgreSQL, one field: the field's rows of curate_field_text (its partial pg_trgm index for terms of three
    or more characters; two Chinese characters through the record's bigram index, then the field's text),
    ranked by the terms' density in the field."""
    p.field_indexed = True
    ds = p._name(dataset_id)
    fcond = _pg_field_cond(p, field_name)

    def cond(term: str) -> str:
        like = p._name(_like(term.lower()))
        c = f"f.body LIKE :{like} ESCAPE '\\'"
        if len(term) == 2 and all(_is_cjk(ch) for ch in term):
            b = p._name(term.lower())
            c += (f" AND f.record_id IN (SELECT t.record_id FROM curate_record_text t WHERE t.dataset_id = :{ds} "
                  f"AND t.bigrams @> ARRAY[CAST(:{b} AS text)])")
        return c

    for term in must_not:
        p.exclude_sql.append(
            f"SELECT f.record_id FROM curate_field_text f WHERE f.dataset_id = :{ds} AND {fcond} AND {cond(term)}"
        )
    if must:
        conds, score_parts = [f"f.dataset_id = :{ds}", fcond], []
        for term in must:
            conds.append(cond(term))
            t = p._name(term)
            tl = f"lower(CAST(:{t} AS text))"
            score_parts.append(f"(length(f.body) - length(replace(f.body, {tl}, ''))) / length({tl})")
        score = f"CAST(({' + '.join(score_parts)}) AS FLOAT) / (1.0 + length(f.body) / 500.0)"
        p.hits_sql = (f"SELECT f.record_id AS rid, {score} AS score FROM curate_field_text f "
                      f"WHERE {' AND '.join(conds)}")
    return p


async def _pg_fields(db: Any, dataset_id: Any) -> list[str]:
    """The names of a dataset's fields (argilla refuses a record with a field its dataset doesn't have)."""
    from sqlalchemy import text

    rows = await db.execute(text("SELECT name FROM fields WHERE dataset_id = :ds ORDER BY name"), {"ds": dataset_id})
    return list(rows.scalars().all())


def _pg_any_field(p: TextPlan, term: str, ds: str, fields: list[str]) -> str | None:
    """SQL selecting the records of the dataset holding a term of three or more characters in any field: a UNION
    ALL over the dataset's fields, each through its field's partial pg_trgm index (the name a literal, so the
    planner can match it). A record's body is its fields' texts joined by newlines, so a term without a newline
    is in the body exactly when it is in one of its fields. None when that doesn't hold (a shorter term, a
    newline in the term, a dataset without fields): the caller reads the body."""
    if len(term) < 3 or "\n" in term or not fields:
        return None
    like = p._name(_like(term.lower()))
    parts = []
    for name in fields:
        parts.append(f"SELECT f.record_id FROM curate_field_text f WHERE {_pg_field_cond(p, name)} "
                     f"AND f.dataset_id = :{ds} AND f.body LIKE :{like} ESCAPE '\\'")
    return " UNION ALL ".join(parts)


def _pg_field_cond(p: TextPlan, name: str) -> str:
    """`f` is a row of field `name`: the name as a literal when it is a plain one, so the planner can pick the
    field's partial index, else a bound parameter."""
    return f"f.field = '{name}'" if _SAFE_FIELD.match(name) else f"f.field = :{p._name(name)}"


def _cjk_pairs(term: str) -> list[str]:
    """The term's bigrams of adjacent Chinese characters (what curate_cjk_bigrams indexes), in order, distinct."""
    low = term.lower()
    return list(dict.fromkeys(a + b for a, b in itertools.pairwise(low) if _is_cjk(a) and _is_cjk(b)))


def _pg_term(p: TextPlan, term: str) -> str:
    """`_pg_term_parts` as one condition."""
    like, gram = _pg_term_parts(p, term)
    return " AND ".join(c for c in (gram, like) if c is not None)


def _pg_term_parts(p: TextPlan, term: str) -> tuple[str | None, str | None]:
    """One term's condition on the side table `t` when the field rows' indexes don't answer it: a term holding
    two adjacent Chinese characters reads the bigram index (all its bigrams, in one GIN scan with the query's
    other terms'; a longer term then checked in the body, so the match stays exact), other terms the plain text.
    Returns (the body's condition or None, the bigram condition or None), so the caller can order them."""
    pairs = _cjk_pairs(term)
    like = p._name(_like(term.lower()))
    body = f"t.body LIKE :{like} ESCAPE '\\'"
    if not pairs:
        return body, None
    grams = ", ".join(f"CAST(:{p._name(g)} AS text)" for g in pairs)
    cond = f"t.bigrams @> ARRAY[{grams}]"
    return (None if len(term) == 2 else body), cond  # two characters: the bigram alone answers
