"""The PostgreSQL text index (see text_index.py for what is indexed and why): side tables of each record's
text and each field's text, pg_trgm indexes per field name, a GIN index over each record's Chinese bigrams, and
each body's length (`curate_record_len`). Ranked by term density. A whole-record query whose terms the field rows
answer is ranked from those rows in one pass (the body's length from its own narrow table); other plans rank
the rows they read, each text decompressed once, the score computed before the engine's window count.

Runs inside the argilla-server virtualenv: only the stdlib and sqlalchemy.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from typing import Any

from curate.review.text_index import _CJK_HI, _CJK_LO, _SAFE_FIELD, TextPlan, _is_cjk, _like

_LOGGER = logging.getLogger("curate.review")

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
    # Each record's body length in characters, the denominator of the ranking: a narrow table (~100 bytes a
    # record), so a whole-record query ranked from the field rows (`_pg_any_field_hits`) doesn't read the bodies
    # a second time. Kept by a trigger on curate_record_text itself, so whatever writes a body (this version's
    # trigger, an older one's, the fill at start) keeps its length.
    ("CREATE TABLE IF NOT EXISTS curate_record_len (record_id uuid PRIMARY KEY "
     "REFERENCES curate_record_text(record_id) ON DELETE CASCADE, len integer NOT NULL)"),
    ("CREATE OR REPLACE FUNCTION curate_record_len_sync() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
     "INSERT INTO curate_record_len(record_id, len) VALUES (NEW.record_id, length(NEW.body)) "
     "ON CONFLICT (record_id) DO UPDATE SET len = EXCLUDED.len WHERE curate_record_len.len <> EXCLUDED.len; "
     "RETURN NULL; END $$"),
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
PG_LEN_TRIGGER = (
    "CREATE TRIGGER curate_record_len_sync AFTER INSERT OR UPDATE OF body ON curate_record_text "
    "FOR EACH ROW EXECUTE FUNCTION curate_record_len_sync()"
)
# The lengths a database from before the length table lacks (a key-only anti-join when none is missing).
PG_LEN_FILL = (
    "INSERT INTO curate_record_len(record_id, len) SELECT t.record_id, length(t.body) FROM curate_record_text t "
    "WHERE NOT EXISTS (SELECT 1 FROM curate_record_len l WHERE l.record_id = t.record_id)"
)
PG_TRGM_DDL = ("CREATE EXTENSION IF NOT EXISTS pg_trgm",)  # trusted: the database's owner may create it
# Before: a pg_trgm index on the whole record's body as well. It held every field's trigrams a second time (the
# field rows' partial indexes hold them too) and cost ~1.3 ms of every insert; whole-record terms of three or
# more characters now read the field rows' indexes (`_pg_any_field`). Dropped at start (idempotent).
PG_OLD = ("DROP INDEX IF EXISTS ix_curate_record_text_trgm",)


def field_index_ddl(names: list[str]) -> list[str]:
    """PostgreSQL: the partial pg_trgm index of each field name's rows in curate_field_text (a plain name only:
    it is an SQL literal, so the planner can match the index to a query's `field = '...'`)."""
    return [
        f"CREATE INDEX IF NOT EXISTS ix_curate_ft_{hashlib.sha1(n.encode()).hexdigest()[:16]} ON curate_field_text "
        f"USING gin (body gin_trgm_ops) WHERE field = '{n}'"
        for n in sorted(set(names)) if _SAFE_FIELD.match(n)
    ]


def create_trigger_once(conn: Any, name: str, table: str, ddl: str) -> None:
    """PostgreSQL: run `ddl` (CREATE TRIGGER `name` ON `table`) unless the trigger is there. Created once, not
    dropped and made again at every start: CREATE TRIGGER takes a lock on the table that waits for every open
    transaction on it."""
    from sqlalchemy import text

    if not conn.execute(
        text("SELECT 1 FROM pg_trigger WHERE tgname = :name AND tgrelid = to_regclass(:table)"),
        {"name": name, "table": table},
    ).first():
        conn.exec_driver_sql(ddl)


def ensure_sync(conn: Any) -> dict[str, Any]:
    """Create the PostgreSQL index objects (idempotent) and fill the side tables' missing rows."""
    for ddl in PG_OLD + PG_DDL:
        conn.exec_driver_sql(ddl)
    create_trigger_once(conn, "curate_record_text_sync", "records", PG_TRIGGER)
    create_trigger_once(conn, "curate_record_len_sync", "curate_record_text", PG_LEN_TRIGGER)
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
    lengths_added = conn.exec_driver_sql(PG_LEN_FILL).rowcount
    return {"rebuilt": bool(added or fields_added or lengths_added), "added": added,
            "field_rows_added": fields_added, "lengths_added": lengths_added, "pg_trgm": trgm}


async def plan(db: Any, dataset_id: Any, must: list[str], must_not: list[str],
               field_name: str | None = None) -> TextPlan:
    """The PostgreSQL plan: one field's rows, or the whole record (see the comments below)."""
    p = TextPlan()
    if field_name is not None:
        return _pg_field_plan(p, dataset_id, must, must_not, field_name)
    ds = p._name(dataset_id)
    fields = await _pg_fields(db, dataset_id)
    conds, in_fields, grams = [f"t.dataset_id = :{ds}"], [], []
    # A query with a Chinese term reads the bigram index (one GIN scan) and checks its other terms in the
    # bodies of those records; only a query without one reads the field rows' trigram indexes (computing
    # their union for a common word when a rare Chinese term already leaves no record was 4x slower).
    by_bigrams = any(_cjk_pairs(t) for t in must)
    for term in must_not:
        any_field = None if _cjk_pairs(term) else _pg_any_field(p, term, ds, fields)
        p.exclude_sql.append(any_field or (
            f"SELECT t.record_id FROM curate_record_text t WHERE t.dataset_id = :{ds} AND {_pg_term(p, term)}"
        ))
    if not must:
        return p
    if not by_bigrams and fields and all(_any_field_term(t) for t in must):
        p.hits_sql = _pg_any_field_hits(p, must, ds, fields)
        return p
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
    # Chinese and plain-text terms together (`基本概念 example`): mostly a scan that finds nothing (the two languages
    # rarely meet in a record), which the planner runs in parallel only without the ranking's subqueries (at 100k:
    # 110-120 ms, 170-190 with them); so this plan ranks in the engine's query, as before.
    mixed = by_bigrams and any(not _cjk_pairs(t) for t in must)
    p.rank_in_engine = mixed
    p.hits_sql = _pg_ranked(p, "t.record_id", "t.body", f"curate_record_text t WHERE {' AND '.join(conds)}", must,
                            fenced=not mixed)
    return p


def _pg_occurrences(p: TextPlan, text: str, term: str) -> str:
    """SQL: the non-overlapping occurrences of the lower-cased term in `text`. Counted in bytes: `replace` removes
    whole occurrences, so the bytes removed over the term's bytes is the same integer as the characters removed
    over its characters, without counting the characters of two strings."""
    tl = f"lower(CAST(:{p._name(term)} AS text))"
    return f"(octet_length({text}) - octet_length(replace({text}, {tl}, ''))) / octet_length({tl})"


def _density(occ: str, chars: str) -> str:
    """SQL: the ranking score, the terms' occurrences over (1 + the text's characters / 500)."""
    return f"CAST(({occ}) AS FLOAT) / (1.0 + {chars} / 500.0)"


def _pg_ranked(p: TextPlan, key: str, body: str, from_where: str, must: list[str], fenced: bool = True) -> str:
    """SQL selecting (rid, score) of the rows `from_where` selects, ranked by the terms' density in `body`:
    occurrences over (1 + characters / 500). Each row's text is taken once (`|| ''`: a long text is stored
    compressed, and every function reading it would decompress it again: 2 terms at 100k, 11,100 hits: 166 ->
    118 ms), and the score is computed inside the subquery (OFFSET 0 keeps the planner from moving it above the
    engine's window count, which then buffered every hit's text and spilled it to disk). `fenced=False`: a plain
    subquery the planner may merge into the engine's query (and scan in parallel)."""
    if not fenced:
        occ = " + ".join(_pg_occurrences(p, body, t) for t in must)
        return (f"SELECT {key} AS rid, {_density(occ, f'length({body})')} AS score "
                f"FROM {from_where}")
    occ = " + ".join(_pg_occurrences(p, "d.b", t) for t in must)
    return (f"SELECT d.rid, {_density(occ, 'length(d.b)')} AS score "
            f"FROM (SELECT {key} AS rid, {body} || '' AS b FROM {from_where} OFFSET 0) AS d OFFSET 0")


def _any_field_term(term: str) -> bool:
    """A term the field rows' trigram indexes answer for the whole record (see `_pg_any_field`)."""
    return len(term) >= 3 and "\n" not in term


def _pg_any_field_hits(p: TextPlan, must: list[str], ds: str, fields: list[str]) -> str:
    """SQL selecting (rid, score) of the records holding every term (each `_any_field_term`) in some field, ranked
    from the field rows alone, in one pass over them: a record's body is its fields' texts joined by newlines,
    so a term without a newline occurs in the body as often as in its fields together, and the body's length is
    in curate_record_len. The rows holding any term come from one bitmap (an OR over every field's partial
    trigram index and term), so each heap page is read once; before, a union per field read the field rows
    (every page of curate_field_text, once per field) and then each hit's body again (`example` at 100k,
    33,350 hits: 660-750 ms -> ~300)."""
    likes = [p._name(_like(t.lower())) for t in must]
    ors = " OR ".join(f"({_pg_field_cond(p, n)} AND f.body LIKE :{lk} ESCAPE '\\')" for n in fields for lk in likes)
    occ = " + ".join(_pg_occurrences(p, "x.b", t) for t in must)
    # several terms: the record needs each of them in some field (the same LIKE as the index condition)
    flags = "".join(f", x.b LIKE :{lk} ESCAPE '\\' AS m{k}" for k, lk in enumerate(likes)) if len(must) > 1 else ""
    having = (" HAVING " + " AND ".join(f"bool_or(r.m{k})" for k in range(len(must)))) if len(must) > 1 else ""
    rows = (f"SELECT x.rid, {occ} AS o{flags} FROM (SELECT f.record_id AS rid, f.body || '' AS b "
            f"FROM curate_field_text f WHERE f.dataset_id = :{ds} AND ({ors}) OFFSET 0) AS x OFFSET 0")
    grouped = f"SELECT r.rid, sum(r.o) AS occ FROM ({rows}) AS r GROUP BY r.rid{having}"
    # a length row is written with its body (a trigger on curate_record_text); the body is the fallback all the same
    length = ("coalesce(l.len, (SELECT length(t.body) FROM curate_record_text t WHERE t.record_id = g.rid))")
    return (f"SELECT g.rid, {_density('g.occ', length)} AS score FROM ({grouped}) AS g "
            f"LEFT JOIN curate_record_len l ON l.record_id = g.rid OFFSET 0")


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
        conds = [f"f.dataset_id = :{ds}", fcond] + [cond(term) for term in must]
        p.hits_sql = _pg_ranked(p, "f.record_id", "f.body", f"curate_field_text f WHERE {' AND '.join(conds)}", must)
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
