"""argilla-server search engine answering from Argilla's own tables with SQL (SQLite or PostgreSQL).

Why: argilla-server 2.8.0 needs Elasticsearch/OpenSearch; neither can be installed on a curation laptop. The
server picks its engine by name (`ARGILLA_SEARCH_ENGINE`), so this class, registered as "curate-sql" and
imported before the app starts (curate/review/boot.py), replaces it without patching argilla_server. The
database already holds records, responses, suggestions, metadata and vectors, so filters and sorts are SQL over
argilla's tables (on indexes created here; PostgreSQL's metadata filters on a narrow jsonb copy of each record's
metadata, `curate_meta`, kept by a trigger), text queries read a text index kept by database triggers
(text_index.py: FTS5 trigram on SQLite, pg_trgm + bigrams on PostgreSQL), and similarity search multiplies a
normalised float32 matrix per vector field (vector_cache.py: refreshed incrementally, saved to disk). Bound
parameters only: the UI search box reaches this SQL. Query length and term count are capped (422); a statement
over the time limit (adapter.py) is answered 422 here.

Runs inside the argilla-server virtualenv: import only the stdlib, argilla_server, sqlalchemy and numpy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import numpy as np
from argilla_server.database import AsyncSessionLocal
from argilla_server.enums import (
    MetadataPropertyType,
    ResponseStatusFilter,
    SimilarityOrder,
    SortOrder,
)
from argilla_server.errors.future import UnprocessableEntityError
from argilla_server.models import (
    Dataset,
    MetadataProperty,
    Question,
    Record,
    Response,
    Suggestion,
    User,
    VectorSettings,
)
from argilla_server.models import Field as DatasetField
from argilla_server.search_engine.base import (
    AndFilter,
    Filter,
    FloatMetadataMetrics,
    IntegerMetadataMetrics,
    MetadataFilterScope,
    MetadataMetrics,
    Order,
    RangeFilter,
    RecordFilterScope,
    ResponseFilterScope,
    SearchEngine,
    SearchResponseItem,
    SearchResponses,
    SuggestionFilterScope,
    TermsFilter,
    TermsMetrics,
    TextQuery,
)
from argilla_server.settings import settings
from sqlalchemy import (
    Float,
    Integer,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    text,
    true,
)
from sqlalchemy import column as sa_column
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import table as sa_table
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql.elements import ColumnElement

from curate.review import text_index, vector_cache
from curate.review.adapter import LIMITS, is_timeout
from curate.review.text_index_pg import create_trigger_once

# SQLAlchemy's SQLite compiler drops FROM hints (its hook returns None); render them, so a query can name the
# index SQLite should use ("INDEXED BY ..."). argilla_server never uses hints, so nothing else changes.
SQLiteCompiler.get_from_hint_text = lambda self, table, text: text  # type: ignore[method-assign, unused-ignore]

ENGINE_NAME = "curate-sql"
VERSION = "1"
# A page query walks records in insertion order (stopping after `limit` matches) once a filter matches at
# least this many records; fewer matches are fetched through the filter's own index and sorted.
DENSE_MATCHES = int(os.environ.get("CURATE_SQL_DENSE_MATCHES", "1000"))

# Extra indexes the engine's queries rely on (listing sorted per dataset, per-user response status, suggestions).
INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_curate_records_ds_inserted ON records (dataset_id, inserted_at, id)",
    "CREATE INDEX IF NOT EXISTS ix_curate_records_ds_updated ON records (dataset_id, updated_at)",
    "CREATE INDEX IF NOT EXISTS ix_curate_records_ds_status ON records (dataset_id, status)",
    "CREATE INDEX IF NOT EXISTS ix_curate_responses_rec_user ON responses (record_id, user_id, status)",
    "CREATE INDEX IF NOT EXISTS ix_curate_responses_user_status ON responses (user_id, status, record_id)",
    "CREATE INDEX IF NOT EXISTS ix_curate_suggestions_rec_q ON suggestions (record_id, question_id)",
    # Covering: "records.id IN (responses/suggestions subquery) AND dataset_id = ?" never reads the wide row.
    "CREATE INDEX IF NOT EXISTS ix_curate_records_id_ds ON records (id, dataset_id, inserted_at)",
    # The vector cache's freshness check (count, last update) reads only this index.
    "CREATE INDEX IF NOT EXISTS ix_curate_vectors_settings_updated ON vectors (vector_settings_id, updated_at)",
)
# SQLite only: expression indexes, so metadata / suggestion-value filters and metadata sorts read an index
# instead of parsing every record's JSON (100k records: ~100 ms -> a few ms).
SQLITE_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_curate_suggestions_q_value ON suggestions (question_id, json_extract(value, '$'))",
)
# PostgreSQL: a metadata number as float8, NULL when it isn't a JSON number or doesn't fit (1e400 would make a
# plain cast fail, and with it every insert of such a record once an index uses the cast). IMMUTABLE, so expression
# indexes may use it; PL/pgSQL for the exception handler (the block is entered for numbers only).
PG_FUNCTIONS = (
    ("CREATE OR REPLACE FUNCTION curate_jsonb_float(j jsonb, k text) RETURNS double precision "
    "LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$ BEGIN "
    "IF jsonb_typeof(j -> k) IS DISTINCT FROM 'number' THEN RETURN NULL; END IF; "
    "BEGIN RETURN CAST(j ->> k AS double precision); EXCEPTION WHEN others THEN RETURN NULL; END; END $$"),
)
# What the PostgreSQL terms index holds for a list value: all lists share this key, so "any element in values"
# reads them through the same index (the elements are then checked); a scalar equal to it is checked the same way.
PG_LIST_KEY = "[list]"
# PostgreSQL: a narrow copy of each record's metadata as jsonb, kept by a trigger in argilla's own transactions. The
# metadata expression indexes live on it: PostgreSQL reads the table row of every index match (it can't answer
# an expression from the index alone), and a records row carries its fields (~1.5 KB) while this one carries
# ~150 bytes; jsonb because a json value is parsed again by every operator (~8 us a row for the term expression,
# so the planner's sequential scan of 2/3 of 30k rows took 240 ms). A metadata object jsonb can't hold (a \u0000
# escape) is stored as NULL: that record then matches no metadata filter, and argilla's insert still succeeds.
PG_META_DDL = (
    ("CREATE TABLE IF NOT EXISTS curate_meta (record_id uuid PRIMARY KEY REFERENCES records(id) ON DELETE "
     "CASCADE, dataset_id uuid NOT NULL, metadata jsonb)"),
    ("CREATE OR REPLACE FUNCTION curate_meta_jsonb(m json) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE "
     "AS $$ BEGIN RETURN CAST(m AS jsonb); EXCEPTION WHEN others THEN RETURN NULL; END $$"),
    # The record's terms rows (curate_terms, below) are kept by the same trigger.
    ("CREATE OR REPLACE FUNCTION curate_meta_sync() RETURNS trigger LANGUAGE plpgsql AS $$ "
     "DECLARE m jsonb := curate_meta_jsonb(NEW.metadata); BEGIN "
     "INSERT INTO curate_meta(record_id, dataset_id, metadata) VALUES (NEW.id, NEW.dataset_id, m) "
     "ON CONFLICT (record_id) DO UPDATE SET metadata = EXCLUDED.metadata; "
     "IF TG_OP = 'UPDATE' THEN DELETE FROM curate_terms WHERE record_id = NEW.id; END IF; "
     "INSERT INTO curate_terms(dataset_id, name, value, record_id) "
     "SELECT NEW.dataset_id, p.name, curate_terms_key(e.v), NEW.id FROM metadata_properties AS p "
     "CROSS JOIN LATERAL jsonb_array_elements_text(CASE WHEN jsonb_typeof(m -> p.name) = 'array' THEN m -> p.name "
     "ELSE jsonb_build_array(m -> p.name) END) AS e(v) "
     "WHERE p.dataset_id = NEW.dataset_id AND CAST(p.settings AS jsonb) ->> 'type' = 'terms' AND e.v IS NOT NULL "
     "ON CONFLICT DO NOTHING; RETURN NULL; END $$"),
)
PG_META_TRIGGER = (
    "CREATE TRIGGER curate_meta_sync AFTER INSERT OR UPDATE OF metadata ON records "
    "FOR EACH ROW EXECUTE FUNCTION curate_meta_sync()"
)
PG_META_FILL = (
    "INSERT INTO curate_meta(record_id, dataset_id, metadata) "
    "SELECT r.id, r.dataset_id, curate_meta_jsonb(r.metadata) "
    "FROM records r WHERE NOT EXISTS (SELECT 1 FROM curate_meta m WHERE m.record_id = r.id)"
)
# The terms side table: a row per (record, terms metadata property, scalar value or list element), with a B-tree
# over all four columns, so a terms filter (alone or with the pending queue: NOT EXISTS on responses (record_id,
# user_id)) is answered from the index alone — the JSON conditions read every matching record's metadata (30k
# records, language = zh + pending, PostgreSQL: 5-6 ms against 26-37 ms). The value is the text the JSON
# conditions compare (`_json_any_in`, `_pg_metadata_filter`): a string itself, a number's or a nested value's
# JSON text (SQLite: true / false as 1 / 0, as its json_each gives them); JSON null has no row. Kept in
# argilla's own transactions by triggers on records (insert, update of metadata, delete) and on
# metadata_properties (a terms property added to a dataset with records is filled, a deleted one emptied);
# made and filled at start when missing (a database from before it). PostgreSQL: a B-tree entry holds at most
# ~2.7 KB, so a value over TERMS_KEY_CHARS characters is stored as TERMS_LONG + its md5, and a filter with such a
# value (or one starting with TERMS_LONG) uses the JSON conditions instead.
TERMS_KEY_CHARS = 500
TERMS_LONG = "\x1fmd5:"
# PostgreSQL: the rows of such hashed values, as a literal condition (a partial index matches only a literal
# predicate, and a B-tree range on the marker would depend on the database's collation).
_PG_IS_LONG = "left({col}, 5) = chr(31) || 'md5:'"
PG_TERMS_DDL = (
    ("CREATE OR REPLACE FUNCTION curate_terms_key(v text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ "
     f"SELECT CASE WHEN length(v) <= {TERMS_KEY_CHARS} THEN v ELSE chr(31) || 'md5:' || md5(v) END $$"),
    ("CREATE TABLE IF NOT EXISTS curate_terms (dataset_id uuid NOT NULL, name text NOT NULL, value text NOT NULL, "
     "record_id uuid NOT NULL REFERENCES records(id) ON DELETE CASCADE, "
     "PRIMARY KEY (dataset_id, name, value, record_id))"),
    "CREATE INDEX IF NOT EXISTS ix_curate_terms_record ON curate_terms (record_id)",
    # the hashed long values' rows (usually none), for the terms dropdown (_PG_TERMS_METRICS)
    ("CREATE INDEX IF NOT EXISTS ix_curate_terms_long ON curate_terms (dataset_id, name, record_id) "
     f"WHERE {_PG_IS_LONG.format(col='value')}"),
    ("CREATE OR REPLACE FUNCTION curate_terms_prop_sync() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
     "IF TG_OP = 'DELETE' THEN "
     "DELETE FROM curate_terms WHERE dataset_id = OLD.dataset_id AND name = OLD.name; RETURN NULL; END IF; "
     "IF CAST(NEW.settings AS jsonb) ->> 'type' = 'terms' THEN "
     "INSERT INTO curate_terms(dataset_id, name, value, record_id) "
     "SELECT m.dataset_id, NEW.name, curate_terms_key(e.v), m.record_id FROM curate_meta AS m "
     "CROSS JOIN LATERAL jsonb_array_elements_text(CASE WHEN jsonb_typeof(m.metadata -> NEW.name) = 'array' "
     "THEN m.metadata -> NEW.name ELSE jsonb_build_array(m.metadata -> NEW.name) END) AS e(v) "
     "WHERE m.dataset_id = NEW.dataset_id AND e.v IS NOT NULL ON CONFLICT DO NOTHING; END IF; "
     "RETURN NULL; END $$"),
)
PG_TERMS_TRIGGER = (
    "CREATE TRIGGER curate_terms_prop_sync AFTER INSERT OR DELETE ON metadata_properties "
    "FOR EACH ROW EXECUTE FUNCTION curate_terms_prop_sync()"
)
PG_TERMS_FILL = (
    "INSERT INTO curate_terms(dataset_id, name, value, record_id) "
    "SELECT m.dataset_id, p.name, curate_terms_key(e.v), m.record_id "
    "FROM curate_meta AS m JOIN metadata_properties AS p ON p.dataset_id = m.dataset_id "
    "AND CAST(p.settings AS jsonb) ->> 'type' = 'terms' "
    "CROSS JOIN LATERAL jsonb_array_elements_text(CASE WHEN jsonb_typeof(m.metadata -> p.name) = 'array' "
    "THEN m.metadata -> p.name ELSE jsonb_build_array(m.metadata -> p.name) END) AS e(v) "
    "WHERE e.v IS NOT NULL ON CONFLICT DO NOTHING"
)
# SQLite: the same rows from a record's metadata JSON. `{src}` adds tables to FROM, `{meta}` is the metadata,
# `{prop}` restricts the top-level keys to terms properties; scalars as json_each gives them, lists and objects
# by element (what `_json_any_in`'s json_each over the property's path yields).
_SQLITE_TERMS_OF = (
    "SELECT {ds}, k.key, CAST(k.value AS TEXT), {rid} FROM {src}json_each({meta}) AS k "
    "WHERE {prop} AND k.type NOT IN ('array', 'object', 'null') "
    "UNION ALL SELECT {ds}, k.key, CAST(e.value AS TEXT), {rid} FROM {src}json_each({meta}) AS k, "
    "json_each(k.value) AS e WHERE {prop} AND k.type IN ('array', 'object') AND e.type <> 'null'"
)
_SQLITE_TERMS_PROPS = ("k.key IN (SELECT name FROM metadata_properties WHERE dataset_id = {ds} "
                       "AND json_extract(settings, '$.type') = 'terms')")


# The UI's terms dropdown (compute_metrics_for): each value with the number of records holding it, most first, from
# curate_terms instead of parsing every record's metadata (100k records: the JSON walk read all of them). A record
# counts once per value, as Elasticsearch's terms aggregation counts documents (the JSON walk counted a value twice
# in a list holding it twice), and the values are the ones a terms filter matches (PostgreSQL: jsonb's text of a
# number or a nested value, which a filter compares). PostgreSQL: a value stored hashed (over TERMS_KEY_CHARS) is
# read back from its record's metadata.
_SQLITE_TERMS_METRICS = (
    "SELECT value, count(*) AS n FROM curate_terms WHERE dataset_id = :ds AND name = :name "
    "GROUP BY value ORDER BY n DESC, value"
)
_PG_TERMS_METRICS = (
    "SELECT term, count(*) AS n FROM (SELECT value AS term FROM curate_terms "
    f"WHERE dataset_id = :ds AND name = :name AND NOT {_PG_IS_LONG.format(col='value')} "
    "UNION ALL SELECT e.v FROM curate_terms AS t JOIN curate_meta AS m ON m.record_id = t.record_id "
    "CROSS JOIN LATERAL jsonb_array_elements_text(CASE WHEN jsonb_typeof(m.metadata -> t.name) = 'array' "
    "THEN m.metadata -> t.name ELSE jsonb_build_array(m.metadata -> t.name) END) AS e(v) "
    f"WHERE t.dataset_id = :ds AND t.name = :name AND {_PG_IS_LONG.format(col='t.value')} "
    "AND curate_terms_key(e.v) = t.value"
    ") AS v GROUP BY term ORDER BY n DESC, term"
)


def _sqlite_terms_of(row: str) -> str:
    ds = f"{row}.dataset_id"
    return ("INSERT OR IGNORE INTO curate_terms(dataset_id, name, value, record_id) " + _SQLITE_TERMS_OF.format(
        ds=ds, rid=f"{row}.id", src="", meta=f"{row}.metadata", prop=_SQLITE_TERMS_PROPS.format(ds=ds)))


SQLITE_TERMS_DDL = (
    ("CREATE TABLE IF NOT EXISTS curate_terms (dataset_id CHAR(32) NOT NULL, name TEXT NOT NULL, "
     "value TEXT NOT NULL, record_id CHAR(32) NOT NULL, PRIMARY KEY (dataset_id, name, value, record_id)) "
     "WITHOUT ROWID"),
    "CREATE INDEX IF NOT EXISTS ix_curate_terms_record ON curate_terms (record_id)",
)
# Dropped and made again at every start, like the text index's.
SQLITE_TERMS_TRIGGERS = {
    "curate_terms_ai": f"CREATE TRIGGER curate_terms_ai AFTER INSERT ON records BEGIN {_sqlite_terms_of('new')}; END",
    "curate_terms_au": (
        "CREATE TRIGGER curate_terms_au AFTER UPDATE OF metadata ON records BEGIN "
        f"DELETE FROM curate_terms WHERE record_id = old.id; {_sqlite_terms_of('new')}; END"
    ),
    "curate_terms_ad": (
        "CREATE TRIGGER curate_terms_ad AFTER DELETE ON records BEGIN "
        "DELETE FROM curate_terms WHERE record_id = old.id; END"
    ),
    "curate_terms_pi": (
        "CREATE TRIGGER curate_terms_pi AFTER INSERT ON metadata_properties "
        "WHEN json_extract(new.settings, '$.type') = 'terms' BEGIN "
        "INSERT OR IGNORE INTO curate_terms(dataset_id, name, value, record_id) " + _SQLITE_TERMS_OF.format(
            ds="r.dataset_id", rid="r.id", src="records AS r, ", meta="r.metadata",
            prop="r.dataset_id = new.dataset_id AND k.key = new.name") + "; END"
    ),
    "curate_terms_pd": (
        "CREATE TRIGGER curate_terms_pd AFTER DELETE ON metadata_properties BEGIN "
        "DELETE FROM curate_terms WHERE dataset_id = old.dataset_id AND name = old.name; END"
    ),
}
SQLITE_TERMS_FILL = (
    "INSERT OR IGNORE INTO curate_terms(dataset_id, name, value, record_id) " + _SQLITE_TERMS_OF.format(
        ds="r.dataset_id", rid="r.id", src="records AS r, ", meta="r.metadata",
        prop=_SQLITE_TERMS_PROPS.format(ds="r.dataset_id"))
)
# Objects of development builds of this change (a json side table, indexes on records): dropped at start.
PG_META_OLD = (
    "DROP TRIGGER IF EXISTS curate_record_meta_sync ON records",
    "DROP TABLE IF EXISTS curate_record_meta",
    "DROP FUNCTION IF EXISTS curate_record_meta_sync()",
    "DROP FUNCTION IF EXISTS curate_json_float(json, text)",
)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,200}$")


def _meta_path_sql(name: str) -> str | None:
    """The JSON path of a metadata property as an SQL literal, or None if the name isn't plain (then bound)."""
    return f"'$.\"{name}\"'" if _SAFE_NAME.match(name) else None


def _meta_index_name(name: str) -> str:
    return "ix_curate_mdx_" + hashlib.sha1(name.encode()).hexdigest()[:16]


def _pg_meta_sql(name: str, kind: str, table: str = "curate_meta.") -> str | None:
    """PostgreSQL: the indexed expression of a metadata property, as SQL text with the name as a literal (an
    expression index is used only for the same expression, never for a bound parameter): `kind` "term" gives the
    scalar as text (a list: PG_LIST_KEY), "number" the value as float8. None if the name isn't plain."""
    if not _SAFE_NAME.match(name):
        return None
    col, key = f"{table}metadata", f"'{name}'"
    if kind == "number":
        return f"curate_jsonb_float({col}, {key})"
    return f"(CASE WHEN jsonb_typeof({col} -> {key}) = 'array' THEN '{PG_LIST_KEY}' ELSE {col} ->> {key} END)"


def _meta_index_ddl(name: str, mp_type: str | None = None) -> str | None:
    """The expression index of one metadata property; on PostgreSQL by its type (terms: the term, integer /
    float: the number; unknown type: none)."""
    if _is_pg():
        # terms properties: none (their filters read curate_terms)
        kind = {"integer": "number", "float": "number"}.get(str(mp_type or ""))
        expr = _pg_meta_sql(name, kind, table="") if kind else None
        if expr is None:
            return None
        prefix = "ix_curate_mmt_" if kind == "term" else "ix_curate_mmn_"
        # dataset_id leads: equal for every query, then the term (equality) or the number (range).
        return (f"CREATE INDEX IF NOT EXISTS {prefix}{hashlib.sha1(name.encode()).hexdigest()[:16]} "
                f"ON curate_meta (dataset_id, {expr}, record_id)")
    path = _meta_path_sql(name)
    if path is None:
        return None
    # The expression leads: an index led by dataset_id would compete with (dataset_id, inserted_at) for plain
    # listings and make SQLite sort instead of reading in order.
    return (f"CREATE INDEX IF NOT EXISTS {_meta_index_name(name)} "
            f"ON records (json_extract(metadata, {path}), dataset_id, id)")


_META = sa_table(
    "curate_meta",
    sa_column("record_id", Record.id.type),
    sa_column("dataset_id", Record.dataset_id.type),
    sa_column("metadata", JSONB()),
)
_TERMS = sa_table(
    "curate_terms",
    sa_column("dataset_id", Record.dataset_id.type),
    sa_column("name", Record.external_id.type),
    sa_column("value", Record.external_id.type),
    sa_column("record_id", Record.id.type),
)


def _flat(flt: Filter | None) -> list[Filter]:
    """The filters of an AND (argilla's only combinator), or the one filter."""
    if flt is None:
        return []
    return [g for f in flt.filters for g in _flat(f)] if isinstance(flt, AndFilter) else [flt]


def _terms_table_answers(flt: Filter, terms: frozenset[str]) -> bool:
    """Whether curate_terms answers this metadata filter: a terms filter on a terms property, with values the
    table stores as themselves (PostgreSQL: not over TERMS_KEY_CHARS, not starting with TERMS_LONG)."""
    if not (isinstance(flt, TermsFilter) and isinstance(flt.scope, MetadataFilterScope)):
        return False
    if flt.scope.metadata_property not in terms:
        return False
    return not _is_pg() or all(len(str(v)) <= TERMS_KEY_CHARS and not str(v).startswith(TERMS_LONG)
                               for v in flt.values)


def _pg_meta_range(flt: RangeFilter) -> ColumnElement:
    """PostgreSQL: a metadata range filter as a condition on curate_meta's row (its number expression index)."""
    name = flt.scope.metadata_property
    num_sql = _pg_meta_sql(name, "number")
    num = (func.curate_jsonb_float(_META.c.metadata, literal(name)) if num_sql is None
           else literal_column(num_sql, Float()))
    return _range(num, flt.ge, flt.le)


def _is_meta_range(flt: Filter) -> bool:
    return isinstance(flt, RangeFilter) and isinstance(flt.scope, MetadataFilterScope)


def _own_status(flt: Filter) -> tuple[UUID, list[str]] | None:
    """(user id, statuses) when `flt` is a response-status filter of one user (the UI's queue, "submitted by me"),
    else None."""
    if not (isinstance(flt, TermsFilter) and isinstance(flt.scope, ResponseFilterScope)
            and flt.scope.property == "status" and flt.scope.question is None and flt.scope.user is not None):
        return None
    return flt.scope.user.id, sorted({str(v) for v in flt.values})


def _answered(dataset_id: UUID, user_id: UUID, statuses: list[str] | None = None):
    """The count of the user's responses (with one of `statuses`, or any) to records of the dataset: the records
    the user answered (argilla keeps one response per record and user, so no DISTINCT). Each response probes the
    covering (id, dataset_id, inserted_at) index; on PostgreSQL as a per-response subquery, because its planner
    otherwise hash-joins the dataset's every index entry with the responses (100k records, 5k responses: 10.7 ms
    against 6.3 ms)."""
    conds = [Response.user_id == user_id] + ([Response.status.in_(statuses)] if statuses is not None else [])
    stmt = select(func.count()).select_from(Response)
    if _is_pg():
        owner = select(Record.dataset_id).where(Record.id == Response.record_id).scalar_subquery()
        return stmt.where(*conds, owner == dataset_id)
    return stmt.join(Record, Record.id == Response.record_id).where(*conds, Record.dataset_id == dataset_id)


# SQLite, a page deep in the pending queue: walking the (dataset, inserted_at, id) index costs ~0.05 us a row, the
# pending check ~0.4 us more, and finding the user's answered records before a key ~1.5 us per response; so the
# page starts from the key at that offset in the dataset (no check) once the offset is over this many times the
# user's responses (100k records, 5k answered, offset 50,000: 24 -> 17 ms).
QUEUE_SKIP = 5
# The k-th pending record (0-based, in insertion order) is, with K the key of the dataset's k-th record and c the
# user's answered records before K, the c-th pending record from K on: the k records before K hold k - c pending
# ones. One statement, so one snapshot: exact under concurrent submissions as the OFFSET walk it replaces.
_SQLITE_QUEUE_PAGE = (
    "SELECT records.id FROM records WHERE records.dataset_id = :ds AND (records.inserted_at, records.id) >= ({k}) "
    "AND records.id NOT IN (SELECT record_id FROM responses WHERE user_id = :uid) "
    "ORDER BY records.inserted_at, records.id LIMIT :lim OFFSET (SELECT count(*) FROM responses "
    "JOIN records AS r ON r.id = responses.record_id WHERE responses.user_id = :uid AND r.dataset_id = :ds "
    "AND (r.inserted_at, r.id) < ({k}))"
).format(k="SELECT inserted_at, id FROM records WHERE dataset_id = :ds ORDER BY inserted_at, id LIMIT 1 OFFSET :off")


def _sqlite_queue_page(dataset_id: UUID, user_id: UUID, offset: int, limit: int):
    """SQLite: the ids of the user's pending queue page at a deep `offset` (_SQLITE_QUEUE_PAGE)."""
    return text(_SQLITE_QUEUE_PAGE).bindparams(
        bindparam("ds", dataset_id, type_=Record.dataset_id.type),
        bindparam("uid", user_id, type_=Response.user_id.type), bindparam("off", offset), bindparam("lim", limit),
    ).columns(literal_column("id", Record.id.type))


def _terms_condition(dataset_id: UUID, flt: TermsFilter, record_id: ColumnElement, dense: bool = False):
    """`record_id` has one of the filter's values for its property, read from curate_terms: IN (the matching rows,
    one index range per value), or with `dense` a probe of the index per record."""
    t = _TERMS.alias()
    conds = [t.c.dataset_id == dataset_id, t.c.name == flt.scope.metadata_property,
             t.c.value.in_(sorted({str(v) for v in flt.values}))]
    if dense:
        return exists(select(literal(1)).select_from(t).where(*conds, t.c.record_id == record_id))
    return record_id.in_(select(t.c.record_id).where(*conds))


_RECORD_COLUMNS = {
    "id": Record.id,
    "external_id": Record.external_id,
    "inserted_at": Record.inserted_at,
    "updated_at": Record.updated_at,
    "status": Record.status,
}
_TERM = re.compile(r'"([^"]+)"|(\S+)')


def ensure_indexes_sync() -> None:
    """Create the engine's indexes and the text index with argilla_server's synchronous engine (boot setup, every
    start); a text index missing rows (a database from before it) is filled in here."""
    import logging

    from argilla_server.database import sync_engine

    mp_type = "CAST(settings AS json) ->> 'type'" if _is_pg() else "json_extract(settings, '$.type')"
    with sync_engine.begin() as conn:
        if _is_pg():
            _ensure_pg_meta_sync(conn)
        props = conn.exec_driver_sql(f"SELECT DISTINCT name, {mp_type} FROM metadata_properties").all()
        for ddl in _all_index_ddl([(name, t) for name, t in props]):
            conn.exec_driver_sql(ddl)
        filled = _ensure_terms_sync(conn)
        done = text_index.ensure_sync(conn, _is_pg())
    if filled:
        logging.getLogger("curate.review").warning("curate-sql: metadata terms table filled in (%d rows)", filled)
    if done.get("rebuilt"):
        logging.getLogger("curate.review").warning("curate-sql: text index filled in (%s)", done)


def _ensure_terms_sync(conn) -> int:
    """The terms side table, its triggers, and its rows when the table is new (a database from before it): the
    rows it then holds. After that the triggers keep it, in the same transactions as argilla's writes."""
    if _is_pg():
        new = conn.exec_driver_sql("SELECT to_regclass('curate_terms') IS NULL").scalar()
        for ddl in PG_TERMS_DDL:
            conn.exec_driver_sql(ddl)
        create_trigger_once(conn, "curate_terms_prop_sync", "metadata_properties", PG_TERMS_TRIGGER)
        # the term expression indexes of an earlier curate: terms filters read curate_terms now
        for (name,) in conn.exec_driver_sql(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'curate_meta' AND indexname ~ '^ix_curate_mmt_'"
        ).all():
            conn.exec_driver_sql(f'DROP INDEX IF EXISTS "{name}"')
        fill = PG_TERMS_FILL
    else:
        new = not conn.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'curate_terms'").first()
        for ddl in SQLITE_TERMS_DDL:
            conn.exec_driver_sql(ddl)
        for name, ddl in SQLITE_TERMS_TRIGGERS.items():
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
            conn.exec_driver_sql(ddl)
        fill = SQLITE_TERMS_FILL
    if not new:
        return 0
    conn.exec_driver_sql(fill)
    return int(conn.exec_driver_sql("SELECT count(*) FROM curate_terms").scalar() or 0)


def _ensure_pg_meta_sync(conn) -> None:
    """PostgreSQL: the metadata side table, its trigger (created once: CREATE TRIGGER waits for every open
    transaction on records) and the rows it lacks (a database from before it)."""
    for ddl in PG_META_OLD + PG_META_DDL:
        conn.exec_driver_sql(ddl)
    create_trigger_once(conn, "curate_meta_sync", "records", PG_META_TRIGGER)
    conn.exec_driver_sql(PG_META_FILL)
    # expression indexes on records itself, from a development build of this change: superseded by the above
    for (name,) in conn.exec_driver_sql(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'records' AND indexname ~ '^ix_curate_md[tn]_'"
    ).all():
        conn.exec_driver_sql(f'DROP INDEX IF EXISTS "{name}"')


def ensure_wal_sync() -> None:
    """SQLite: write-ahead logging, so searches (readers) and annotators' submissions (the writer) don't block
    each other; persistent in the database file. Durability unchanged (synchronous stays FULL)."""
    if _is_pg():
        return
    from argilla_server.database import sync_engine

    with sync_engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")


def _all_index_ddl(metadata: Iterable[tuple[str, str | None]]) -> list[str]:
    """Every index (and PostgreSQL function) the engine creates, given the metadata properties (name, type)."""
    ddl = list(INDEXES) + list(PG_FUNCTIONS if _is_pg() else SQLITE_INDEXES)
    return ddl + [d for d in (_meta_index_ddl(n, t) for n, t in metadata) if d]


def _is_pg() -> bool:
    return bool(settings.database_is_postgresql)


# ---------------------------------------------------------------------------------------------- JSON helpers
def _sqlite_path(keys: Iterable[str]) -> str:
    return "$" + "".join('."' + k.replace('"', "") + '"' for k in keys)


def _json_values(col: ColumnElement, keys: tuple[str, ...]):
    """A one-column selectable of the scalar(s) at `keys` in JSON `col`: each element for a list, else itself."""
    if _is_pg():
        node = col.op("#>")(literal(list(keys)).cast(_text_array())) if keys else col
        arr = case((func.json_typeof(node) == "array", node), else_=func.json_build_array(node))
        return func.json_array_elements_text(arr).table_valued("value").render_derived()
    return func.json_each(col, _sqlite_path(keys)).table_valued("value", "type")


def _text_array():
    from sqlalchemy import Text
    from sqlalchemy.dialects.postgresql import ARRAY

    return ARRAY(Text)


def _json_any_in(col: ColumnElement, keys: tuple[str, ...], values: list[str]) -> ColumnElement:
    """True when the JSON value at `keys` (or any element of it, if a list) equals one of `values` as text."""
    tv = _json_values(col, keys)
    if _is_pg():
        return exists(select(literal(1)).select_from(tv).where(tv.c.value.in_(values)))
    # json_each yields native SQLite values; compare as text so numbers match their string form.
    return exists(select(literal(1)).select_from(tv).where(func.cast(tv.c.value, _sa_text()).in_(values)))


def _sa_text():
    from sqlalchemy import Text

    return Text


def _json_num(col: ColumnElement, keys: tuple[str, ...]) -> ColumnElement:
    """The JSON value at `keys` as a float, NULL when it is not a number."""
    if _is_pg():
        node = col.op("#>")(literal(list(keys)).cast(_text_array())) if keys else col
        return case(
            (func.json_typeof(node) == "number", func.cast(node.op("#>>")(literal("{}").cast(_text_array())), Float)),
            else_=None,
        )
    path = _sqlite_path(keys)
    return case(
        (func.json_type(col, path).in_(("integer", "real")), func.json_extract(col, path)),
        else_=None,
    )


def _json_scalar_text(col: ColumnElement, keys: tuple[str, ...]) -> ColumnElement:
    """The JSON value at `keys` as text (for sorting terms)."""
    if _is_pg():
        return col.op("#>>")(literal(list(keys)).cast(_text_array()))
    return func.json_extract(col, _sqlite_path(keys))


def _range(expr: ColumnElement, ge: Any, le: Any) -> ColumnElement:
    conds = [expr.is_not(None)]
    if ge is not None:
        conds.append(expr >= ge)
    if le is not None:
        conds.append(expr <= le)
    return and_(*conds)


def _as_datetime(value: Any) -> Any:
    """Record date bounds arrive as ISO strings or epoch milliseconds (Elasticsearch's default)."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value / 1000, tz=UTC).replace(tzinfo=None)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def _user_id(user: User | None) -> UUID | None:
    return None if user is None else user.id


def _status_condition(flt: TermsFilter, record_id: ColumnElement) -> ColumnElement:
    """A response-status filter as correlated probes of responses (record_id, user_id, status) for `record_id`:
    pending = no response of the user, other statuses = a response of the user with that status."""
    uid = _user_id(flt.scope.user)
    own = [Response.record_id == record_id] + ([] if uid is None else [Response.user_id == uid])
    values = [str(v) for v in flt.values]
    parts = []
    if ResponseStatusFilter.pending.value in values:
        parts.append(not_(exists(select(literal(1)).where(*own))))
    others = [v for v in values if v != ResponseStatusFilter.pending.value]
    if others:
        parts.append(exists(select(literal(1)).where(*own, Response.status.in_(others))))
    return or_(false(), *parts)


# ---------------------------------------------------------------------------------------------- text search
def _terms(query: str) -> tuple[list[str], list[str]]:
    """Split a search-box query into required and excluded terms (quoted phrases kept whole; -term excludes).

    Elasticsearch's simple_query_string with AND is the model; CJK text has no spaces, so each term is matched
    as a substring, which is what a Chinese reader expects from a search box.
    """
    must: list[str] = []
    must_not: list[str] = []
    for phrase, word in _TERM.findall(query):
        term = phrase or word
        negate = False
        if not phrase:
            if term.startswith("-") and len(term) > 1:
                negate, term = True, term[1:]
            term = term.strip("+|*()~")
        if term:
            (must_not if negate else must).append(term)
    return must, must_not


def _like_pattern(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class _TextSQL:
    """Builds bound-parameter SQL fragments over the string leaves of records.fields (one field or all)."""

    def __init__(self, field: str | None):
        self.field = field
        self.n = 0
        self.params: dict[str, Any] = {}

    def _name(self, value: Any) -> str:
        name = f"curate_q{self.n}"
        self.n += 1
        self.params[name] = value
        return name

    def _leaves(self) -> tuple[str, str]:
        """FROM-clause and text expression enumerating the string leaves (JSON strings decoded, so CJK works)."""
        if _is_pg():
            base = "CAST(records.fields AS jsonb)"
            if self.field is not None:
                base = f"({base} -> :{self._name(self.field)})"
            return (f"jsonb_path_query({base}, 'strict $.**') AS leaf(v)", "(leaf.v #>> '{}')")
        path = self._name(_sqlite_path([self.field]) if self.field is not None else "$")
        return (f"json_tree(records.fields, :{path}) AS leaf", "leaf.value")

    def _leaf_filter(self) -> str:
        return "jsonb_typeof(leaf.v) = 'string'" if _is_pg() else "leaf.type = 'text'"

    def contains(self, term: str) -> str:
        src, val = self._leaves()
        p = self._name(_like_pattern(term))
        op = "ILIKE" if _is_pg() else "LIKE"
        exact = f"EXISTS (SELECT 1 FROM {src} WHERE {self._leaf_filter()} AND {val} {op} :{p} ESCAPE '\\')"
        if _is_pg():
            if self.field is None:
                return f"({exact})"
            # One field that is a string (a TextField): its text straight from the json, without converting the
            # whole record to jsonb and walking it (~5x cheaper per hit); other values (a chat) are walked.
            f = self._name(self.field)
            return (f"(CASE WHEN json_typeof(records.fields -> CAST(:{f} AS text)) = 'string' "
                    f"THEN (records.fields ->> CAST(:{f} AS text)) ILIKE :{p} ESCAPE '\\' ELSE {exact} END)")
        # SQLite: a cheap prefilter on the stored JSON text first. argilla_server writes it with json.dumps
        # (ASCII-escaped), so the term escaped the same way is a substring of every record that truly contains
        # it (SQLite's LIKE folds ASCII case only, in both places); json_tree then drops false hits (keys etc.).
        pre = self._name(_like_pattern(json.dumps(term)[1:-1]))
        return f"(records.fields LIKE :{pre} ESCAPE '\\' AND {exact})"

    def occurrences(self, terms: list[str]) -> str:
        """Score: occurrences of the terms in the text, damped by the text's length (short, dense hits first)."""
        src, val = self._leaves()
        parts = []
        for term in terms:
            t = self._name(term)
            parts.append(f"(length({val}) - length(replace(lower({val}), lower(:{t}), ''))) / length(:{t})")
        occ = " + ".join(parts) or "0"
        total = "sum" if _is_pg() else "total"
        return (
            f"SELECT CAST({total}({occ}) AS FLOAT) / (1.0 + CAST({total}(length({val})) AS FLOAT) / 500.0) "
            f"AS curate_occ FROM {src} WHERE {self._leaf_filter()}"
        )


@dataclasses.dataclass
class _Text:
    """A search-box query as SQL: WHERE conditions, an optional join on the text index's hits, a score column;
    `empty` when some required term occurs in no record at all."""

    conds: list = dataclasses.field(default_factory=list)
    hits: Any = None
    score: Any = None
    empty: bool = False
    page: Any = None  # SQLite, terms alone: the ranked page with its total (bind offset, limit, end)
    rank_in_engine: bool = False  # PostgreSQL: rank in the window statement, not _pg_top_hits (TextPlan)


# ---------------------------------------------------------------------------------------------- the engine
@SearchEngine.register(engine_name=ENGINE_NAME)
@dataclasses.dataclass
class SQLSearchEngine(SearchEngine):
    """Every SearchEngine method argilla-server 2.8.0 calls, answered from its database."""

    @classmethod
    async def new_instance(cls) -> SQLSearchEngine:
        return cls()

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        async with AsyncSessionLocal() as db:
            await db.execute(select(literal(1)))
        return True

    async def info(self) -> dict:
        return {"engine": ENGINE_NAME, "version": VERSION, "database": "postgresql" if _is_pg() else "sqlite"}

    # -- index lifecycle: the database is the index --------------------------------------------------------
    async def create_index(self, dataset: Dataset) -> None:
        """Publishing a dataset: make sure the indexes exist, including one per metadata property (SQLite)."""
        async with AsyncSessionLocal() as db:
            props = (
                await db.execute(select(MetadataProperty).where(MetadataProperty.dataset_id == dataset.id))
            ).scalars().all()
            for ddl in _all_index_ddl([(p.name, p.settings.get("type")) for p in props]):
                await db.execute(text(ddl))
            if _is_pg():  # the partial text index of each field's rows (pg_trgm may be missing: then none)
                names = (await db.execute(select(DatasetField.name).where(DatasetField.dataset_id == dataset.id)))
                for ddl in text_index.field_index_ddl(list(names.scalars().all())):
                    try:
                        async with db.begin_nested():
                            await db.execute(text(ddl))
                    except Exception as exc:  # noqa: BLE001 - searching in one field still works, without it
                        logging.getLogger("curate.review").warning("curate-sql: no field text index (%s)",
                                                                   str(exc)[:200])
            await db.commit()

    async def delete_index(self, dataset: Dataset) -> None:
        vector_cache.forget_dataset(dataset.id)

    async def configure_metadata_property(self, dataset: Dataset, metadata_property: MetadataProperty) -> None:
        ddl = _meta_index_ddl(metadata_property.name, metadata_property.settings.get("type"))
        if ddl:
            async with AsyncSessionLocal() as db:
                for stmt in (PG_FUNCTIONS if _is_pg() else ()) + (ddl,):
                    await db.execute(text(stmt))
                await db.commit()

    async def configure_index_vectors(self, vector_settings: VectorSettings) -> None:
        return None

    async def index_records(self, dataset: Dataset, records: Iterable[Record]) -> None:
        """Records were written (the text index is kept by triggers): bring the vector matrices up to date in the
        background, so the next "Find similar" doesn't wait for parsing."""
        vector_cache.schedule(dataset.id)

    async def partial_record_update(self, record: Record, **update) -> None:
        return None

    async def delete_records(self, dataset: Dataset, records: Iterable[Record]) -> None:
        vector_cache.schedule(dataset.id)

    async def update_record_response(self, response: Response) -> None:
        return None

    async def delete_record_response(self, response: Response) -> None:
        return None

    async def update_record_suggestion(self, suggestion: Suggestion) -> None:
        return None

    async def delete_record_suggestion(self, suggestion: Suggestion) -> None:
        return None

    # -- progress and metrics ----------------------------------------------------------------------------
    async def get_dataset_progress(self, dataset: Dataset) -> dict:
        if dataset.is_draft:
            return {}
        stmt = select(Record.status, func.count()).where(Record.dataset_id == dataset.id).group_by(Record.status)
        async with AsyncSessionLocal() as db:
            rows = (await db.execute(stmt)).all()
        counts = {str(getattr(status, "value", status)): n for status, n in rows}
        return {"total": sum(counts.values()), **counts}

    async def get_dataset_user_progress(self, dataset: Dataset, user: User) -> dict:
        """Counts of this user's own responses by status (Elasticsearch also counted other users' responses)."""
        if dataset.is_draft:
            return {}
        stmt = (
            select(Response.status, func.count())
            .join(Record, Record.id == Response.record_id)
            .where(Record.dataset_id == dataset.id, Response.user_id == user.id)
            .group_by(Response.status)
        )
        async with AsyncSessionLocal() as db:
            rows = (await db.execute(stmt)).all()
        counts = {str(getattr(status, "value", status)): n for status, n in rows}
        return {"total": sum(counts.values()), **counts}

    async def compute_metrics_for(self, metadata_property: MetadataProperty) -> MetadataMetrics:
        keys = (metadata_property.name,)
        where = Record.dataset_id == metadata_property.dataset_id
        async with AsyncSessionLocal() as db:
            if metadata_property.type == MetadataPropertyType.terms:
                params = [bindparam("ds", metadata_property.dataset_id, type_=Record.dataset_id.type),
                          bindparam("name", metadata_property.name)]
                stmt = text(_PG_TERMS_METRICS if _is_pg() else _SQLITE_TERMS_METRICS).bindparams(*params)
                rows = (await db.execute(stmt)).all()
                return TermsMetrics(
                    total=sum(n for _, n in rows),
                    values=[TermsMetrics.TermCount(term=str(t), count=n) for t, n in rows],
                )
            num = _json_num(Record.metadata_, keys)
            lo, hi = (await db.execute(select(func.min(num), func.max(num)).where(where))).one()
        if metadata_property.type == MetadataPropertyType.integer:
            return IntegerMetadataMetrics(
                min=None if lo is None else int(lo), max=None if hi is None else int(hi)
            )
        return FloatMetadataMetrics(min=lo, max=hi)

    # -- filters -----------------------------------------------------------------------------------------
    def _filter(self, dataset_id: UUID, flt: Filter | None, dense: bool = False,
                terms: frozenset[str] = frozenset()) -> ColumnElement:
        """SQL for a filter. `dense`: write metadata conditions as a probe per record (SQLite: so they can't use
        their expression index), letting a page query walk the (dataset, inserted_at) index and stop after `limit`
        matches, which beats sorting every match when matches are many. `terms`: the filtered metadata properties
        of type terms (`_terms_props`), whose terms filters read curate_terms."""
        if flt is None:
            return true()
        if isinstance(flt, AndFilter):
            return and_(true(), *[self._filter(dataset_id, f, dense, terms) for f in flt.filters])
        scope = flt.scope
        if isinstance(scope, RecordFilterScope):
            return self._record_filter(flt)
        if isinstance(scope, MetadataFilterScope):
            if _terms_table_answers(flt, terms):
                return _terms_condition(dataset_id, flt, Record.id, dense)
            return self._metadata_filter(dataset_id, flt, dense)
        if isinstance(scope, SuggestionFilterScope):
            return self._suggestion_filter(dataset_id, flt, dense)
        if isinstance(scope, ResponseFilterScope):
            return self._response_filter(flt)
        raise ValueError(f"cannot process filter scope {scope}")

    @staticmethod
    async def _terms_props(db, dataset: Dataset, flt: Filter | None) -> frozenset[str]:
        """The metadata properties a filter's terms filters name that are of type terms (those curate_terms
        holds; argilla checks a filter's property exists, not its type). No query when there are none, or when
        argilla loaded the dataset's properties (its search handlers do)."""
        names = {f.scope.metadata_property for f in _flat(flt)
                 if isinstance(f, TermsFilter) and isinstance(f.scope, MetadataFilterScope)}
        if not names:
            return frozenset()
        if "metadata_properties" not in sa_inspect(dataset).unloaded:
            return frozenset(p.name for p in dataset.metadata_properties
                             if p.name in names and (p.settings or {}).get("type") == MetadataPropertyType.terms.value)
        dataset_id = dataset.id
        rows = (await db.execute(
            select(MetadataProperty.name, MetadataProperty.settings).where(
                MetadataProperty.dataset_id == dataset_id, MetadataProperty.name.in_(sorted(names)))
        )).all()
        return frozenset(n for n, st in rows if (st or {}).get("type") == MetadataPropertyType.terms.value)

    @staticmethod
    def _metadata_filter(dataset_id: UUID, flt: Filter, dense: bool) -> ColumnElement:
        name = flt.scope.metadata_property
        keys = (name,)
        if _is_pg():
            return SQLSearchEngine._pg_metadata_filter(dataset_id, flt, name)
        path = _meta_path_sql(name)
        if path is None:  # a name that can't be an index expression: bound parameters
            if isinstance(flt, TermsFilter):
                return _json_any_in(Record.metadata_, keys, [str(v) for v in flt.values])
            return _range(_json_num(Record.metadata_, keys), flt.ge, flt.le)
        expr = func.json_extract(Record.metadata_, literal_column(path))
        if isinstance(flt, TermsFilter):
            values = [str(v) for v in flt.values]
            e = expr.op("||")("") if dense else expr
            # Scalars hit the index; list values (terms may be lists) are JSON text starting with "[".
            return or_(
                e.in_(values),
                and_(e >= "[", e < "\\", _json_any_in(Record.metadata_, keys, values)),
            )
        numeric = func.json_type(Record.metadata_, literal_column(path)).in_(("integer", "real"))
        if dense:
            return and_(_range(expr + 0, flt.ge, flt.le), numeric)
        # Index-only: SQLite orders every number before every text, so `< ''` keeps numbers (a JSON string is
        # text); JSON true / false come out as 1 / 0, so only those two values need the row's json_type.
        return and_(_range(expr, flt.ge, flt.le), expr < "", or_(expr.not_in([0, 1]), numeric))

    @staticmethod
    def _pg_metadata_filter(dataset_id: UUID, flt: Filter, name: str) -> ColumnElement:
        """PostgreSQL: a metadata filter on the side table's expression indexes (PG_META_DDL, _meta_index_ddl):
        scalars compared as text, a list matching when one of its elements does (as the JSON conditions on
        records do). Each branch is its own IN (subquery), so each reads its index."""
        meta = _META.c.metadata
        ds = _META.c.dataset_id == dataset_id
        key = literal(name)
        if isinstance(flt, TermsFilter):
            values = [str(v) for v in flt.values]
            node = meta.op("->")(key)
            arr = case((func.jsonb_typeof(node) == "array", node), else_=func.jsonb_build_array(node))
            elems = func.jsonb_array_elements_text(arr).table_valued("value").render_derived()
            any_elem = exists(select(literal(1)).select_from(elems).where(elems.c.value.in_(values)))
            term_sql = _pg_meta_sql(name, "term")
            if term_sql is None:  # a name that can't be an index expression: bound parameters, no index
                return Record.id.in_(select(_META.c.record_id).where(ds, any_elem))
            term = literal_column(term_sql, _sa_text())
            lists = Record.id.in_(select(_META.c.record_id).where(ds, term == PG_LIST_KEY, any_elem))
            scalars = [v for v in values if v != PG_LIST_KEY]
            if not scalars:
                return lists
            return or_(Record.id.in_(select(_META.c.record_id).where(ds, term.in_(scalars))), lists)
        return Record.id.in_(select(_META.c.record_id).where(ds, _pg_meta_range(flt)))

    @staticmethod
    def _record_filter(flt: Filter) -> ColumnElement:
        prop = str(flt.scope.property)
        col = _RECORD_COLUMNS.get(prop)
        if col is None:
            raise ValueError(f"cannot filter records by {prop!r}")
        if isinstance(flt, TermsFilter):
            values: list[Any] = list(flt.values)
            if prop == "id":
                values = [UUID(str(v)) for v in values]
            return col.in_(values)
        if prop in ("inserted_at", "updated_at"):
            return _range(col, _as_datetime(flt.ge), _as_datetime(flt.le))
        return _range(col, flt.ge, flt.le)

    @staticmethod
    def _question_id(dataset_id: UUID, name: str):
        return (
            select(Question.id)
            .where(Question.dataset_id == dataset_id, Question.name == name)
            .scalar_subquery()
        )

    def _suggestion_filter(self, dataset_id: UUID, flt: Filter, dense: bool = False) -> ColumnElement:
        scope: SuggestionFilterScope = flt.scope
        prop = str(scope.property or "value")
        if prop in ("value", "score"):
            col = Suggestion.value if prop == "value" else Suggestion.score
            if isinstance(flt, TermsFilter):
                values = [str(v) for v in flt.values]
                if prop == "value" and not _is_pg():
                    # Two index range reads instead of an OR that SQLite answers by parsing every suggestion.
                    scalars, lists = self._suggestion_value_selects(dataset_id, scope.question, values)
                    if not dense:
                        return Record.id.in_(scalars.union_all(lists))
                    # A page over many matches: a correlated probe per record, stopping after `limit` hits,
                    # instead of materialising every matching id first.
                    own = Suggestion.record_id == Record.id
                    return or_(
                        exists(scalars.where(own)),
                        exists(lists.where(own)),
                    )
                else:
                    cond = _json_any_in(col, (), values)
            else:
                cond = _range(_json_num(col, ()), flt.ge, flt.le)
        elif prop in ("agent", "type"):
            col = Suggestion.agent if prop == "agent" else Suggestion.type
            cond = col.in_(list(flt.values)) if isinstance(flt, TermsFilter) else false()
        else:
            raise ValueError(f"cannot filter suggestions by {prop!r}")
        if dense:
            return exists(
                select(literal(1)).where(
                    Suggestion.record_id == Record.id,
                    Suggestion.question_id == self._question_id(dataset_id, scope.question),
                    cond,
                )
            )
        # IN (subquery) rather than a correlated EXISTS: the database reads the matching suggestions once.
        return Record.id.in_(
            select(Suggestion.record_id).where(
                Suggestion.question_id == self._question_id(dataset_id, scope.question), cond
            )
        )

    def _suggestion_value_selects(self, dataset_id: UUID, question: str, values: list[str]):
        """SQLite: record ids whose suggestion for `question` is one of `values`, as two index range reads
        (scalar values; list values, which are JSON text starting with "[")."""
        e = func.json_extract(Suggestion.value, literal_column("'$'"))  # ix_curate_suggestions_q_value
        qid = self._question_id(dataset_id, question)
        scalars = select(Suggestion.record_id).where(Suggestion.question_id == qid, e.in_(values))
        lists = select(Suggestion.record_id).where(
            Suggestion.question_id == qid, e >= "[", e < "\\", _json_any_in(Suggestion.value, (), values)
        )
        return scalars, lists

    @staticmethod
    def _response_filter(flt: Filter) -> ColumnElement:
        """SQL for a response filter: an answer's value, or the user's response status (pending: none)."""
        scope: ResponseFilterScope = flt.scope
        uid = _user_id(scope.user)
        own = [] if uid is None else [Response.user_id == uid]
        if scope.question:
            keys = (scope.question, "value")
            if isinstance(flt, TermsFilter):
                cond = _json_any_in(Response.values, keys, [str(v) for v in flt.values])
            else:
                cond = _range(_json_num(Response.values, keys), flt.ge, flt.le)
            return Record.id.in_(select(Response.record_id).where(*own, cond))
        if scope.property == "status" and isinstance(flt, TermsFilter):
            values = [str(v) for v in flt.values]
            parts = []
            if ResponseStatusFilter.pending.value in values:
                parts.append(not_(Record.id.in_(select(Response.record_id).where(*own))))
            others = [v for v in values if v != ResponseStatusFilter.pending.value]
            if others:
                parts.append(Record.id.in_(select(Response.record_id).where(*own, Response.status.in_(others))))
            return or_(false(), *parts)
        raise ValueError(f"cannot process response filter scope {scope}")

    # -- sorting -----------------------------------------------------------------------------------------
    async def _order_by(self, db, dataset_id: UUID, sort: list[Order] | None) -> list:
        clauses: list = []
        for order in sort or []:
            scope = order.scope
            if isinstance(scope, RecordFilterScope):
                expr = _RECORD_COLUMNS.get(str(scope.property))
                if expr is None:
                    raise ValueError(f"cannot sort records by {scope.property!r}")
            elif isinstance(scope, MetadataFilterScope):
                mp_type = (
                    await db.execute(
                        select(MetadataProperty.settings).where(
                            MetadataProperty.dataset_id == dataset_id,
                            MetadataProperty.name == scope.metadata_property,
                        )
                    )
                ).scalar_one_or_none()
                keys = (scope.metadata_property,)
                is_terms = (mp_type or {}).get("type") == MetadataPropertyType.terms.value
                path = None if _is_pg() else _meta_path_sql(scope.metadata_property)
                if path is not None:  # the expression index's own expression, so a page reads it in order
                    expr = func.json_extract(Record.metadata_, literal_column(path))
                    clauses.append(expr.desc() if order.order == SortOrder.desc else expr.asc().nulls_last())
                    continue
                expr = _json_scalar_text(Record.metadata_, keys) if is_terms else _json_num(Record.metadata_, keys)
            elif isinstance(scope, SuggestionFilterScope):
                prop = str(scope.property or "value")
                cols = {"value": None, "score": None, "agent": Suggestion.agent, "type": Suggestion.type}
                if prop not in cols:
                    raise ValueError(f"cannot sort by suggestion {prop!r}")
                inner = cols[prop]
                if inner is None:
                    col = Suggestion.value if prop == "value" else Suggestion.score
                    inner = _json_num(col, ())
                expr = (
                    select(func.max(inner))
                    .where(
                        Suggestion.record_id == Record.id,
                        Suggestion.question_id == self._question_id(dataset_id, scope.question),
                    )
                    .scalar_subquery()
                )
            elif isinstance(scope, ResponseFilterScope):
                uid = _user_id(scope.user)
                conds = [Response.record_id == Record.id]
                if uid is not None:
                    conds.append(Response.user_id == uid)
                inner = (
                    _json_num(Response.values, (scope.question, "value")) if scope.question else Response.status
                )
                agg = func.avg(inner) if scope.question else func.max(inner)
                expr = select(agg).where(*conds).scalar_subquery()
            else:
                raise ValueError(f"cannot sort by scope {scope}")
            # Elasticsearch puts documents missing the sort value last in both directions.
            clauses.append(expr.desc().nulls_last() if order.order == SortOrder.desc else expr.asc().nulls_last())
        return clauses

    # -- search ------------------------------------------------------------------------------------------
    async def _text(self, db, dataset_id: UUID, query: TextQuery | str | None) -> _Text:
        """How a search-box query restricts and ranks records: through the text index (text_index.py) where its
        terms allow, by scanning the records' JSON for the rest. Bound parameters only. Over-long queries and
        queries with too many terms are refused (422) before any SQL runs."""
        if query is None:
            return _Text()
        tq = TextQuery(q=query) if isinstance(query, str) else query
        q = tq.q or ""
        if len(q) > LIMITS.max_query_chars:
            raise UnprocessableEntityError(
                f"search query is {len(q)} characters long; the limit is {LIMITS.max_query_chars}"
            )
        must, must_not = _terms(q)
        if len(must) + len(must_not) > LIMITS.max_query_terms:
            raise UnprocessableEntityError(
                f"search query has {len(must) + len(must_not)} terms; the limit is {LIMITS.max_query_terms}"
            )
        if not must and not must_not:
            return _Text()
        sql = _TextSQL(tq.field)

        def frag(s: str):
            names = re.findall(r":(curate_q\d+)", s)
            return text(s).bindparams(*[bindparam(n, sql.params[n]) for n in dict.fromkeys(names)])

        # A query in one field reads that field's index (text_index: an FTS5 column / the field's rows); where the
        # field has none of its own, the index finds the records holding the terms anywhere and the exact check
        # keeps those holding them in that field (exclusions then checked in that field only).
        plan = await text_index.plan(db, dataset_id, must, must_not, _is_pg(), tq.field)
        if plan.empty:
            return _Text(empty=True)
        by_index = tq.field is None or plan.field_indexed
        scan_must = plan.scan_must if by_index else must
        scan_not = plan.scan_not if by_index else must_not
        conds = [frag(sql.contains(t)) for t in scan_must] + [frag("NOT " + sql.contains(t)) for t in scan_not]
        params = plan.params
        for ex in plan.exclude_sql:
            names = re.findall(r":(curate_t\d+)", ex)
            sub = text(ex).bindparams(**{n: params[n] for n in names})
            sub = sub.columns(literal_column("record_id", Record.id.type))
            conds.append(Record.id.not_in(sub))
        hits = None
        score = None
        page = None
        if plan.hits_sql is not None:
            names = re.findall(r":(curate_t\d+)", plan.hits_sql)
            hits = (
                text(plan.hits_sql)
                .bindparams(**{n: params[n] for n in names})
                .columns(literal_column("rid", Record.id.type), literal_column("score", Float()))
                .subquery("curate_hits")
            )
            score = hits.c.score
            if plan.page_sql is not None and by_index and not conds:  # SQLite: a ranked page for terms alone
                names = re.findall(r":(curate_t\d+)", plan.page_sql)
                page = text(plan.page_sql).bindparams(**{n: params[n] for n in names}).columns(
                    literal_column("record_id", Record.id.type), literal_column("score", Float()),
                    literal_column("total", Integer()))
        elif scan_must:
            # a scalar subquery (a bare text fragment can't be labelled as the score column)
            score = frag(sql.occurrences(scan_must)).columns(literal_column("curate_occ", Float())).scalar_subquery()
        return _Text(conds=conds, hits=hits, score=score, page=page, rank_in_engine=plan.rank_in_engine)

    @staticmethod
    def _from_records(stmt, hits):
        return stmt.join(hits, hits.c.rid == Record.id) if hits is not None else stmt

    @staticmethod
    async def _pg_top_hits(db, dataset_id: UUID, hits, offset: int, limit: int) -> tuple[list, int]:
        """PostgreSQL, a ranked text query alone (no filter, no sort, no condition but the index's hits): only the
        hits ranked within the first offset + limit by score (`rank()`: ties with the last one included) are
        joined with `records` for the tie-break (inserted_at, id), so the page is the one joining every hit gives,
        without probing `records` once per hit (`example` in one field at 100k, 33,350 hits: 232 -> 135 ms). The
        total is the hits' count, from the same pass: every hit is a record of the dataset (the side tables' rows
        are written with the record and deleted with it). Not for a plan the planner scans in parallel in the window
        statement (TextPlan.rank_in_engine: Chinese and plain-text terms together, mostly a scan that finds
        nothing): under rank() its scan ran as one bitmap heap scan, `基本概念 example` at 100k 159 vs 110 ms p50."""
        w = select(
            hits.c.rid, hits.c.score, func.count().over().label("curate_total"),
            func.rank().over(order_by=hits.c.score.desc()).label("curate_rank"),
        ).subquery("curate_w")
        stmt = (
            select(Record.id, w.c.score, w.c.curate_total)
            .join_from(Record, w, w.c.rid == Record.id)
            .where(Record.dataset_id == dataset_id, w.c.curate_rank <= offset + limit)
            .order_by(w.c.score.desc(), Record.inserted_at.asc(), Record.id.asc())
            .offset(offset)
            .limit(limit)
        )
        rows = (await db.execute(stmt)).all()
        if rows:
            return rows, int(rows[0][2])
        if offset == 0:  # the first page holds the best hit if there is one
            return rows, 0
        return rows, int((await db.execute(select(func.count()).select_from(hits))).scalar_one())  # past the end

    async def search(
        self,
        dataset: Dataset,
        query: TextQuery | str | None = None,
        filter: Filter | None = None,
        sort: list[Order] | None = None,
        offset: int = 0,
        limit: int = 100,
        user_id: UUID | None = None,
    ) -> SearchResponses:
        """Matching records with a total; text matches ranked by relevance unless a sort is given.

        Without a sort, records come in insertion order (stable pages for the UI and the SDK). A query stopped by
        the time limit is answered 422 with a message, not a 500.
        """
        try:
            return await self._search(dataset, query, filter, sort, offset, limit)
        except Exception as exc:
            if is_timeout(exc):
                raise UnprocessableEntityError(
                    f"the search took longer than {LIMITS.query_timeout_s:g} s and was stopped: use longer or fewer "
                    "terms, or add a filter"
                ) from None
            raise

    async def _search(self, dataset, query, filter, sort, offset, limit) -> SearchResponses:
        async with AsyncSessionLocal() as db:
            txt = await self._text(db, dataset.id, query)
            if txt.empty:
                return SearchResponses(items=[], total=0)
            terms = await self._terms_props(db, dataset, filter)
            base = [Record.dataset_id == dataset.id, *txt.conds]
            where = and_(*base, self._filter(dataset.id, filter, terms=terms))
            order = await self._order_by(db, dataset.id, sort)
            has_text = bool(txt.conds) or txt.hits is not None
            if txt.score is not None and _is_pg() and txt.hits is not None and not txt.conds and not _flat(filter) \
                    and not order and not txt.rank_in_engine:
                rows, total = await self._pg_top_hits(db, dataset.id, txt.hits, offset, limit)
            elif txt.score is not None:
                if txt.page is not None and not _flat(filter) and not order:
                    # SQLite, terms alone: the index's own ranked page (text_index_sqlite._page_sql)
                    stmt = txt.page.bindparams(curate_page_offset=offset, curate_page_limit=limit,
                                               curate_page_end=offset + limit)
                else:
                    # A ranked text query reads every hit to rank them anyway: the total comes from the same pass
                    # (a window count) instead of a second pass over the hits (and their exact checks).
                    stmt = self._from_records(select(Record.id), txt.hits).where(where).add_columns(
                        txt.score.label("curate_score"), func.count().over().label("curate_total")
                    )
                    order = order or [text("curate_score DESC")]
                    stmt = stmt.order_by(*order, Record.inserted_at.asc(), Record.id.asc()).offset(offset).limit(limit)
                rows = (await db.execute(stmt)).all()
                if rows:
                    total = int(rows[0][2])
                elif offset == 0:
                    total = 0
                else:  # a page past the end: nothing to take the count from
                    total = await self._count(db, dataset.id, filter, where, has_text, txt.hits, terms)
            else:
                only = _flat(filter)
                own = _own_status(only[0]) if not has_text and len(only) == 1 else None
                answered = None
                if own is not None and own[1] == [ResponseStatusFilter.pending.value]:  # the annotator's queue
                    n_records, answered = await self._queue_counts(db, dataset.id, own[0])
                    total = n_records - answered
                else:
                    total = await self._count(db, dataset.id, filter, where, has_text, txt.hits, terms)
                rows = []
                if total > offset and answered is not None and own is not None and not order and not _is_pg() \
                        and offset > QUEUE_SKIP * answered:
                    rows = (await db.execute(_sqlite_queue_page(dataset.id, own[0], offset, limit))).all()
                elif total > offset:
                    page_where = where
                    if not order and total >= DENSE_MATCHES:
                        page_where = and_(*base, self._filter(dataset.id, filter, dense=True, terms=terms))
                    stmt = self._from_records(select(Record.id), txt.hits).where(page_where)
                    stmt = stmt.order_by(*order, Record.inserted_at.asc(), Record.id.asc()).offset(offset).limit(limit)
                    rows = (await db.execute(stmt)).all()
        items = [
            SearchResponseItem(record_id=row[0], score=float(row[1]) if len(row) > 1 and row[1] is not None else None)
            for row in rows
        ]
        return SearchResponses(items=items, total=total)

    async def _count(self, db, dataset_id: UUID, flt: Filter | None, where, has_text: bool, hits=None,
                     terms: frozenset[str] = frozenset()) -> int:
        """Total matches. The annotator's default queue ("pending for me" alone) is counted as records minus
        the user's responses: two index lookups instead of a probe per record. Terms filters (alone, together,
        with response-status filters) are counted from curate_terms alone (`_terms_count`)."""
        only = _flat(flt)
        if not has_text:
            n = await self._terms_count(db, dataset_id, only, terms)
            if n is not None:
                return n
        own = _own_status(only[0]) if not has_text and len(only) == 1 else None
        if own is not None and own[1] == [ResponseStatusFilter.pending.value]:
            n_records, answered = await self._queue_counts(db, dataset_id, own[0])
            return n_records - answered
        if own is not None and _is_pg() and ResponseStatusFilter.pending.value not in own[1]:
            # "submitted by me": the user's responses with those statuses (one per record), not the dataset's
            # records probed against them (100k records: 9 ms, the planner hashing every index entry, against 6 ms)
            return int((await db.execute(_answered(dataset_id, own[0], own[1]))).scalar_one())
        if not has_text and _is_pg() and only and all(_is_meta_range(f) for f in only):
            # Every curate_meta row is a record of its dataset (kept by trigger, deleted by cascade): count the
            # side table's matches alone instead of joining them with the dataset's records (100k records, 12,500
            # matches: 20 ms -> 5 ms).
            conds = [_pg_meta_range(f) for f in only]
            return int((await db.execute(
                select(func.count()).select_from(_META).where(_META.c.dataset_id == dataset_id, *conds))).scalar_one())
        if (
            not has_text
            and not _is_pg()
            and len(only) == 1
            and isinstance(only[0], TermsFilter)
            and isinstance(only[0].scope, SuggestionFilterScope)
            and str(only[0].scope.property or "value") == "value"
        ):
            # A question belongs to one dataset and holds one suggestion per record, so the matching
            # suggestions (an index-only count) are the matching records.
            scalars, lists = self._suggestion_value_selects(
                dataset_id, only[0].scope.question, [str(v) for v in only[0].values]
            )
            both = scalars.union_all(lists).subquery()
            return (await db.execute(select(func.count()).select_from(both))).scalar_one()
        stmt = self._from_records(select(func.count()).select_from(Record), hits).where(where)
        json_terms = [f for f in only if isinstance(f, TermsFilter) and isinstance(f.scope, MetadataFilterScope)
                      and not _terms_table_answers(f, terms)]
        if not _is_pg() and json_terms and _meta_path_sql(json_terms[0].scope.metadata_property):
            # A terms filter matches many records (few distinct values), so SQLite's planner prefers a table
            # scan, parsing every record's JSON; its covering expression index answers in a fraction of that.
            index = _meta_index_name(json_terms[0].scope.metadata_property)
            hinted = stmt.with_hint(Record, f"INDEXED BY {index}", "sqlite")
            try:
                async with db.begin_nested():
                    return (await db.execute(hinted)).scalar_one()
            except OperationalError:  # index missing (created at the next start): plain plan
                pass
        return (await db.execute(stmt)).scalar_one()

    @staticmethod
    async def _queue_counts(db, dataset_id: UUID, user_id: UUID) -> tuple[int, int]:
        """The dataset's records and those the user answered, in one statement (one round trip)."""
        n_records = select(func.count()).select_from(Record).where(Record.dataset_id == dataset_id)
        row = (await db.execute(select(n_records.scalar_subquery(),
                                       _answered(dataset_id, user_id).scalar_subquery()))).one()
        return int(row[0]), int(row[1])

    @staticmethod
    async def _terms_count(db, dataset_id: UUID, only: list[Filter], terms: frozenset[str]) -> int | None:
        """The count of an AND of terms filters curate_terms answers and response-status filters, from the table's
        index alone: the first terms filter's rows, the others probed per row, the user's responses probed by
        (record_id, user_id). Every row is a record of the dataset, so records is not read. None: not such a
        filter."""
        meta = [f for f in only if _terms_table_answers(f, terms)]
        status = [f for f in only if isinstance(f, TermsFilter) and isinstance(f.scope, ResponseFilterScope)
                  and f.scope.property == "status" and not f.scope.question]
        if not meta or len(meta) + len(status) != len(only):
            return None
        t = _TERMS.alias("curate_t0")
        first = meta[0]
        values = sorted({str(v) for v in first.values})
        conds = [t.c.dataset_id == dataset_id, t.c.name == first.scope.metadata_property, t.c.value.in_(values)]
        conds += [_terms_condition(dataset_id, f, t.c.record_id, dense=True) for f in meta[1:]]
        # a record has one row per (property, value): one value counts rows, several count distinct records
        n = func.count() if len(values) == 1 else func.count(func.distinct(t.c.record_id))
        uid = _user_id(status[0].scope.user) if len(status) == 1 else None
        if uid is None or _is_pg():
            # PostgreSQL: one pass over the rows, each probing the user's response (30k records, language = zh +
            # pending: 9 ms); its planner answers the subtraction below with a hash join over all the rows (21 ms)
            conds += [_status_condition(f, t.c.record_id) for f in status]
            return int((await db.execute(select(n).select_from(t).where(*conds))).scalar_one())
        # SQLite, one user's status (the UI's queue): the matching records minus those of the user's responses (one
        # per record and user) that the status excludes, e.g. language = zh + pending = zh records - zh records the
        # user answered: an index range count and a probe per response, not a probe per matching record (30k
        # records: 2 ms CPU against 10-13 ms).
        wanted = {str(v) for v in status[0].values}
        pending = ResponseStatusFilter.pending.value in wanted
        other = sorted(wanted - {ResponseStatusFilter.pending.value})
        answered = select(func.count()).select_from(Response).where(
            Response.user_id == uid, *[_terms_condition(dataset_id, f, Response.record_id, dense=True) for f in meta],
            Response.status.not_in(other) if pending else Response.status.in_(other))
        if not pending:
            return int((await db.execute(answered)).scalar_one())
        total = (await db.execute(select(n).select_from(t).where(*conds))).scalar_one()
        return int(total) - int((await db.execute(answered)).scalar_one())

    async def similarity_search(
        self,
        dataset: Dataset,
        vector_settings: VectorSettings,
        value: list[float] | None = None,
        record: Record | None = None,
        query: TextQuery | str | None = None,
        filter: Filter | None = None,
        max_results: int = 100,
        order: SimilarityOrder = SimilarityOrder.most_similar,
        threshold: float | None = None,
    ) -> SearchResponses:
        """Brute-force cosine over the cached, normalised vectors; score = (1 + cos) / 2 like Elasticsearch.

        With a filter or text query, the best candidates are checked in SQL in growing rounds (4x the results
        wanted, then 4x more …) instead of listing every record the filter allows."""
        if bool(value) == bool(record):
            raise ValueError("Must provide either vector value or record to compute the similarity search")
        excluded = None
        if not value:
            assert record is not None  # one of the two was given (checked above)
            excluded = record.id
            value = record.vector_value_by_vector_settings(vector_settings)
        if not value:
            raise ValueError("Cannot find a vector value to apply with provided info")
        cache = await asyncio.to_thread(vector_cache.refresh_sync, dataset.id, vector_settings.id)
        if not cache.ids:
            return SearchResponses(items=[], total=0)
        q = np.asarray(value, dtype=np.float32)
        norm = float(np.linalg.norm(q))
        if norm == 0 or q.shape != cache.matrix.shape[1:]:
            return SearchResponses(items=[], total=0)
        sims = cache.matrix @ (q / norm)
        if order == SimilarityOrder.least_similar:
            sims = -sims
        if excluded is not None and excluded in cache.pos:
            sims[cache.pos[excluded]] = -np.inf
        n_valid = len(cache.ids) - (1 if excluded is not None and excluded in cache.pos else 0)
        k = min(max_results, n_valid)
        if k <= 0:
            return SearchResponses(items=[], total=0)
        ranked = self._top(sims, min(len(sims), k))
        try:
            async with AsyncSessionLocal() as db:
                txt = await self._text(db, dataset.id, query)
                if txt.empty:
                    return SearchResponses(items=[], total=0)
                if filter is not None or txt.conds or txt.hits is not None:
                    ranked = await self._allowed_top(db, dataset, filter, txt, sims, cache, k, n_valid)
        except Exception as exc:
            if is_timeout(exc):
                raise UnprocessableEntityError(
                    f"the similarity search took longer than {LIMITS.query_timeout_s:g} s and was stopped"
                ) from None
            raise
        items = []
        for i in ranked:
            score = (1.0 + float(sims[i])) / 2.0
            if threshold is not None and score < threshold:
                continue
            items.append(SearchResponseItem(record_id=cache.ids[i], score=score))
        return SearchResponses(items=items, total=len(items))

    @staticmethod
    def _top(sims: np.ndarray, k: int) -> np.ndarray:
        if k <= 0:
            return np.zeros(0, dtype=np.int64)
        part = np.argpartition(-sims, k - 1)[:k] if k < sims.size else np.arange(sims.size)
        part = part[np.isfinite(sims[part])]
        return part[np.argsort(-sims[part], kind="stable")]

    async def _allowed_top(self, db, dataset: Dataset, flt, txt, sims, cache, k: int, n_valid: int) -> np.ndarray:
        """The k best candidates the filter and text query allow, checked in SQL by rounds of candidates."""
        dataset_id = dataset.id
        terms = await self._terms_props(db, dataset, flt)
        where = and_(Record.dataset_id == dataset_id, self._filter(dataset_id, flt, terms=terms), *txt.conds)
        width = max(4 * k, 200)
        while True:
            width = min(width, n_valid)
            cand = self._top(sims, width)
            if width >= n_valid or width > 20_000:
                # Few records pass: list what the filter allows once instead of probing ever wider.
                stmt = self._from_records(select(Record.id), txt.hits).where(where)
                allowed = set((await db.execute(stmt)).scalars().all())
                keep = [i for i in self._top(sims, n_valid) if cache.ids[i] in allowed]
                return np.asarray(keep[:k], dtype=np.int64)
            ids = [cache.ids[i] for i in cand]
            stmt = self._from_records(select(Record.id), txt.hits).where(
                where, Record.id.in_(bindparam("curate_cand", ids, expanding=True))
            )
            allowed = set((await db.execute(stmt)).scalars().all())
            keep = [i for i in cand if cache.ids[i] in allowed]
            if len(keep) >= k:
                return np.asarray(keep[:k], dtype=np.int64)
            width *= 4
