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
  index from before the per-field columns (one `body` column) is made again at start. A query of terms alone
  takes its ranked page from the hits alone (text_index_sqlite._page_sql).
- PostgreSQL: a side table `curate_record_text` (record_id, dataset_id, lower-cased body, the distinct Chinese
  character bigrams of the body) with a GIN index on the bigrams (two-character Chinese terms), and
  `curate_field_text` (a row per record and field, the field's lower-cased text) with a partial pg_trgm index per
  field name (made at start and when a dataset is published). A term of three or more characters, in one field or in
  the whole record, reads the field rows' trigram indexes (the whole record: a UNION ALL over the dataset's fields,
  one BitmapOr, ranked from the field rows themselves with the body's length from `curate_record_len`, kept by a
  trigger on curate_record_text; the body is its fields' texts joined by newlines, so a term without a newline is in
  the body exactly when it is in one of its fields); other short terms read the side table's plain text (a fraction
  of parsing JSON). There is no trigram index on the whole body: it held every trigram a second time and cost ~1.3
  ms of every insert (dropped at start). The trigger reads each record's string leaves once. Without the pg_trgm
  extension (no right to create it) the side tables still serve, without trigram indexes. Ranked by term density in
  the body (one field: in the field's text).

This module holds what both backends share (the plan's shape, term helpers) and dispatches; the SQLite index
is text_index_sqlite.py, the PostgreSQL one text_index_pg.py.

Runs inside the argilla-server virtualenv: only the stdlib and sqlalchemy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_SAFE_FIELD = re.compile(r"^[A-Za-z0-9_\-]{1,200}$")
_CJK_LO, _CJK_HI = "\u3400", "\u9fff"  # CJK Extension A .. Unified Ideographs


def ensure_sync(conn: Any, is_pg: bool) -> dict[str, Any]:
    """Create the index objects (idempotent) and fill in what is missing. `conn`: a SQLAlchemy sync connection
    in a transaction. Returns what was done, for the log."""
    from curate.review import text_index_pg, text_index_sqlite

    return text_index_pg.ensure_sync(conn) if is_pg else text_index_sqlite.ensure_sync(conn)


def field_index_ddl(names: list[str]) -> list[str]:
    """PostgreSQL: the partial pg_trgm index of each field name's rows (text_index_pg)."""
    from curate.review import text_index_pg

    return text_index_pg.field_index_ddl(names)


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
    # PostgreSQL: the hits are best ranked inside the engine's own window statement, where the planner scans them in
    # parallel (Chinese and plain-text terms together), not cut to the page first (search_engine._pg_top_hits).
    rank_in_engine: bool = False
    # SQLite, a query of terms alone: a statement giving the ranked page with its total by itself (record id,
    # score, total; text_index_sqlite._page_sql), None when there is none.
    page_sql: str | None = None

    def _name(self, value: Any) -> str:
        name = f"curate_t{len(self.params)}"
        self.params[name] = value
        return name




async def plan(db: Any, dataset_id: Any, must: list[str], must_not: list[str], is_pg: bool,
               field_name: str | None = None) -> TextPlan:
    """The index plan for a query's required and excluded terms, in the whole record or in one field (see the
    module docstring and TextPlan.field_indexed)."""
    from curate.review import text_index_pg, text_index_sqlite

    if is_pg:
        return await text_index_pg.plan(db, dataset_id, must, must_not, field_name)
    return await text_index_sqlite.plan(db, dataset_id, must, must_not, field_name)
