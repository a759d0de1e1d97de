"""A text index over Argilla's records, so search-box queries read an index instead of every record's JSON.

Why: the curate-sql engine answered text queries by parsing every record's `fields` JSON (LIKE + json_tree):
~300 ms at 100k records on 2 cores, and one hostile query could hold the server for minutes. Elasticsearch, which
this engine replaces, answers from an inverted index; here the database's own text indexes play that part.

What is indexed: each record's text, i.e. every string leaf of its `fields` JSON (chat messages included) joined
by newlines, with a newline at the end. Kept current by triggers in the same transaction as argilla's own writes
(so nothing argilla does, nor a crash between two statements, can leave it stale) and rebuilt at start when the
counts disagree (a database from before this index, or restored from a dump).

- SQLite: an FTS5 table with the trigram tokenizer (substring matching, case-folded, any script; contentless, so
  the text isn't stored twice) plus `curate_text_ids` (stable integer ids; FTS rowids must survive VACUUM, which
  renumbers implicit rowids). A term of three or more characters is a trigram phrase. A one- or two-character
  term (most Chinese words are two characters) can't be a trigram, but every occurrence of it is followed by some
  character (the trailing newline guarantees one), so the records containing it are exactly those holding a
  trigram that starts with it: the index's own vocabulary (fts5vocab, a range read) lists those trigrams.
  Ranked by bm25.
- PostgreSQL: a side table `curate_record_text` (record_id, dataset_id, lower-cased body, the distinct Chinese
  character bigrams of the body) with a pg_trgm GIN index on the body (terms of three or more characters) and a
  GIN index on the bigrams (two-character Chinese terms); other short terms read the side table's plain text
  (a fraction of parsing JSON). Without the pg_trgm extension (no right to create it) the side table still
  serves, without its trigram index. Ranked by term density.

Runs inside the argilla-server virtualenv: only the stdlib and sqlalchemy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

_LOGGER = logging.getLogger("curate.review")

# A one- or two-character term with more trigram continuations than this is answered by a scan instead
# (an OR of thousands of phrases costs more than reading the text).
MAX_PREFIX_TRIGRAMS = 512

_SQLITE_TEXT = (
    "coalesce((SELECT group_concat(value, char(10)) FROM json_tree({row}.fields) WHERE type = 'text'), '') || char(10)"
)

SQLITE_DDL = (
    ("CREATE TABLE IF NOT EXISTS curate_text_ids (n INTEGER PRIMARY KEY, record_id CHAR(32) NOT NULL UNIQUE, "
    "dataset_id CHAR(32) NOT NULL)"),
    "CREATE VIRTUAL TABLE IF NOT EXISTS curate_text USING fts5(body, content='', tokenize='trigram')",
    "CREATE VIRTUAL TABLE IF NOT EXISTS curate_text_vocab USING fts5vocab(curate_text, 'row')",
    "CREATE TRIGGER IF NOT EXISTS curate_text_ai AFTER INSERT ON records BEGIN "
    "INSERT INTO curate_text_ids(record_id, dataset_id) VALUES (new.id, new.dataset_id); "
    "INSERT INTO curate_text(rowid, body) VALUES ((SELECT n FROM curate_text_ids WHERE record_id = new.id), "
    + _SQLITE_TEXT.format(row="new") + "); END",
    # A contentless FTS5 table forgets a row when told the text it indexed; the same expression recomputes it.
    "CREATE TRIGGER IF NOT EXISTS curate_text_ad AFTER DELETE ON records BEGIN "
    "INSERT INTO curate_text(curate_text, rowid, body) SELECT 'delete', n, " + _SQLITE_TEXT.format(row="old")
    + " FROM curate_text_ids WHERE record_id = old.id; DELETE FROM curate_text_ids WHERE record_id = old.id; END",
    "CREATE TRIGGER IF NOT EXISTS curate_text_au AFTER UPDATE OF fields ON records BEGIN "
    "INSERT INTO curate_text(curate_text, rowid, body) SELECT 'delete', n, " + _SQLITE_TEXT.format(row="old")
    + " FROM curate_text_ids WHERE record_id = old.id; "
    "INSERT INTO curate_text(rowid, body) SELECT n, " + _SQLITE_TEXT.format(row="new")
    + " FROM curate_text_ids WHERE record_id = new.id; END",
)

_CJK_LO, _CJK_HI = "\u3400", "\u9fff"  # CJK Extension A .. Unified Ideographs

PG_DDL = (
    ("CREATE OR REPLACE FUNCTION curate_fields_text(f json) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ "
    "SELECT lower(coalesce(string_agg(v #>> '{}', E'\\n'), '')) || E'\\n' "
    "FROM jsonb_path_query(f::jsonb, 'strict $.**') AS v WHERE jsonb_typeof(v) = 'string' $$"),
    # Every bigram of Chinese characters, in one linear pass over the characters (each with its successor);
    # substr(t, i, 2) in a loop would be quadratic on long texts. Code-point ranges compared bytewise (COLLATE "C").
    ("CREATE OR REPLACE FUNCTION curate_cjk_bigrams(t text) RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ "
     "SELECT coalesce(array_agg(DISTINCT c || n), '{}') FROM ("
     "SELECT c, lead(c) OVER (ORDER BY i) AS n FROM unnest(string_to_array(t, NULL)) WITH ORDINALITY AS u(c, i)) s "
     f"WHERE c COLLATE \"C\" BETWEEN '{_CJK_LO}' AND '{_CJK_HI}' "
     f"AND n COLLATE \"C\" BETWEEN '{_CJK_LO}' AND '{_CJK_HI}' $$"),
    ("CREATE TABLE IF NOT EXISTS curate_record_text (record_id uuid PRIMARY KEY REFERENCES records(id) ON DELETE "
    "CASCADE, dataset_id uuid NOT NULL, body text NOT NULL, bigrams text[] NOT NULL)"),
    "CREATE INDEX IF NOT EXISTS ix_curate_record_text_bigrams ON curate_record_text USING gin (bigrams)",
    ("CREATE OR REPLACE FUNCTION curate_record_text_sync() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "DECLARE b text := curate_fields_text(NEW.fields); BEGIN "
    "INSERT INTO curate_record_text(record_id, dataset_id, body, bigrams) "
    "VALUES (NEW.id, NEW.dataset_id, b, curate_cjk_bigrams(b)) "
    "ON CONFLICT (record_id) DO UPDATE SET body = EXCLUDED.body, bigrams = EXCLUDED.bigrams; RETURN NULL; END $$"),
)
# Created once (see ensure_sync): CREATE TRIGGER needs a lock on `records` that waits for every open transaction.
PG_TRIGGER = (
    "CREATE TRIGGER curate_record_text_sync AFTER INSERT OR UPDATE OF fields ON records "
    "FOR EACH ROW EXECUTE FUNCTION curate_record_text_sync()"
)
PG_TRGM_DDL = (
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",  # a trusted extension: the database's owner may create it
    "CREATE INDEX IF NOT EXISTS ix_curate_record_text_trgm ON curate_record_text USING gin (body gin_trgm_ops)",
)


def ensure_sync(conn: Any, is_pg: bool) -> dict[str, Any]:
    """Create the index objects (idempotent) and fill in what is missing. `conn`: a SQLAlchemy sync connection
    in a transaction. Returns what was done, for the log."""
    if not is_pg:
        for ddl in SQLITE_DDL:
            conn.exec_driver_sql(ddl)
        have = conn.exec_driver_sql("SELECT count(*) FROM curate_text_ids").scalar_one()
        records = conn.exec_driver_sql("SELECT count(*) FROM records").scalar_one()
        if have == records:
            return {"rebuilt": False, "records": records}
        # Counts disagree: a database from before the index (or edited behind argilla's back). Rebuild it all.
        conn.exec_driver_sql("INSERT INTO curate_text(curate_text) VALUES ('delete-all')")
        conn.exec_driver_sql("DELETE FROM curate_text_ids")
        conn.exec_driver_sql(
            "INSERT INTO curate_text_ids(record_id, dataset_id) SELECT id, dataset_id FROM records ORDER BY rowid"
        )
        conn.exec_driver_sql(
            "INSERT INTO curate_text(rowid, body) SELECT i.n, " + _SQLITE_TEXT.format(row="r")
            + " FROM curate_text_ids i JOIN records r ON r.id = i.record_id"
        )
        return {"rebuilt": True, "records": records}
    for ddl in PG_DDL:
        conn.exec_driver_sql(ddl)
    if not conn.exec_driver_sql(
        "SELECT 1 FROM pg_trigger WHERE tgname = 'curate_record_text_sync' AND tgrelid = 'records'::regclass"
    ).first():
        conn.exec_driver_sql(PG_TRIGGER)
    trgm = True
    for ddl in PG_TRGM_DDL:
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
    return {"rebuilt": bool(added), "added": added, "pg_trgm": trgm}


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


async def _sqlite_match(db: Any, term: str) -> str | None:
    """An FTS5 MATCH expression for one term, "" when no record can contain it, None when it must be scanned."""
    if len(term) >= 3:
        return _fts_phrase(term)
    grams = await _prefix_trigrams(db, term)
    if grams is None:
        return None
    if not grams:
        return ""
    return "(" + " OR ".join(_fts_phrase(g) for g in grams) + ")"


async def plan(db: Any, dataset_id: Any, must: list[str], must_not: list[str], is_pg: bool) -> TextPlan:
    """The index plan for a query's required and excluded terms (see the module docstring)."""
    p = TextPlan()
    if is_pg:
        ds = p._name(dataset_id)
        conds, score_parts = [f"t.dataset_id = :{ds}"], []
        for term in must:
            conds.append(_pg_term(p, term))
            t = p._name(term)
            tl = f"lower(CAST(:{t} AS text))"
            score_parts.append(f"(length(t.body) - length(replace(t.body, {tl}, ''))) / length({tl})")
        for term in must_not:
            p.exclude_sql.append(
                f"SELECT t.record_id FROM curate_record_text t WHERE t.dataset_id = :{ds} AND {_pg_term(p, term)}"
            )
        if must:
            score = f"CAST(({' + '.join(score_parts)}) AS FLOAT) / (1.0 + length(t.body) / 500.0)"
            where = " AND ".join(conds)
            p.hits_sql = f"SELECT t.record_id AS rid, {score} AS score FROM curate_record_text t WHERE {where}"
        return p
    ds = p._name(dataset_id.hex if hasattr(dataset_id, "hex") else str(dataset_id))
    parts = []
    for term in must:
        m = await _sqlite_match(db, term)
        if m is None:
            p.scan_must.append(term)
        elif m == "":
            p.empty = True
            return p
        else:
            parts.append(m)
    for term in must_not:
        m = await _sqlite_match(db, term)
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


def _pg_term(p: TextPlan, term: str) -> str:
    """One term's condition on the side table `t`: the trigram index for 3+ characters, the bigram index for two
    Chinese characters, the plain text otherwise."""
    like = p._name(_like(term.lower()))
    cond = f"t.body LIKE :{like} ESCAPE '\\'"
    if len(term) == 2 and all(_is_cjk(c) for c in term):
        b = p._name(term.lower())
        cond = f"t.bigrams @> ARRAY[CAST(:{b} AS text)]"
    return cond
