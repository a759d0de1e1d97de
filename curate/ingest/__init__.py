"""Ingest: read preference data in any of the common formats and write canonical pairs.

`ingest(inputs, out_dir)` expands the inputs (files, folders, globs, `datasets.save_to_disk` folders), detects
each source's format family (`detect.py`), converts its rows with that family's module (flat, conversational,
hh, sharegpt, openai, chat, rated) and streams the results, batch by batch, to `out_dir/pairs.parquet`
(canonical schema, `curate.schema.PAIR_SCHEMA`) and `out_dir/rejects.parquet` (the same columns plus
stage/reason/detail), then writes `out_dir/report.json`. Per-row problems become rejects with a reason code
(`reasons.py`); whole-file problems raise `InputError`. Every input row ends up in exactly one of the two files —
or, for rated completions (`rated.py`), a row that yields k pairs ends up as k rows of pairs.parquet: the report
counts the k − 1 extra as `extra_pairs`, so input_rows + extra_pairs = kept_rows + rejected_rows, and
input_rows = paired_rows + rejected_rows (paired_rows: input rows that made at least one pair).

Deterministic: sources sorted by canonical name whatever order they are given in (`readers.canonical_name`),
rows in file order, no clocks or randomness in the outputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import InputError
from curate.ingest import readers
from curate.ingest.detect import (
    FAMILIES,
    INNER_FIELDS,
    SAMPLE_ROWS,
    ColumnStats,
    Plan,
    check_mapping,
    detect,
)
from curate.ingest.messages import score, string
from curate.ingest.rated import Binarize, parse_binarize
from curate.ingest.reasons import (
    INVALID_UNICODE,
    NESTING_TOO_DEEP,
    NOT_AN_OBJECT,
    NUMBER_OUT_OF_RANGE,
    REASONS,
    STAGE,
    UNREADABLE_ROW,
    RowError,
)
from curate.io import atomic_path, atomic_write_text, sha256_tree
from curate.schema import PAIR_SCHEMA, REJECT_COLUMNS, conform, derived_id, row_ids, with_ids

__all__ = ["FAMILIES", "REASONS", "Binarize", "ingest", "parse_binarize"]

_MSG = pa.struct([("role", pa.string()), ("content", pa.string())])


def _dumps(value: Any) -> str:
    """Compact JSON for meta. orjson refuses integers beyond 64 bits (json parses them): json writes those."""
    if readers.orjson is not None:
        try:
            return readers.orjson.dumps(value, option=readers.orjson.OPT_NON_STR_KEYS, default=str).decode("utf-8")
        except TypeError:
            pass
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _schemas() -> tuple[pa.Schema, pa.Schema]:
    pairs = pl.DataFrame(schema=PAIR_SCHEMA)
    rejects = pairs.with_columns([pl.lit(None, dtype=t).alias(n) for n, t in REJECT_COLUMNS.items()])
    return pairs.to_arrow().schema, rejects.to_arrow().schema


class _Sink:
    """Accumulates one batch of kept rows and rejects, then appends them to the two Parquet writers."""

    def __init__(self, name: str, source_key: str) -> None:
        self.name = name
        self.source_key = source_key  # row ids: see curate.schema.row_ids
        self.rows: list[int] = []
        self.system: list[str | None] = []
        self.offsets: list[int] = [0]  # prompt turns, flattened: Arrow list offsets + roles + contents
        self.roles: list[str] = []
        self.contents: list[str] = []
        self.chosen: list[str] = []
        self.rejected: list[str] = []
        self.cs: list[float | None] = []
        self.rs: list[float | None] = []
        self.meta: list[str] = []
        self.r_rows: list[int] = []
        self.r_reason: list[str] = []
        self.r_detail: list[str] = []
        self.r_meta: list[str] = []
        self.rows_in = 0
        self.subs: dict[int, int] = {}  # position in this batch → pair index j >= 1 within its row (rated rows)

    def keep(self, idx: int, system: str | None, turns: list[dict[str, str]], chosen: str, rejected: str,
             cs: float | None, rs: float | None, meta: str, sub: int = 0) -> None:
        if sub:
            self.subs[len(self.rows)] = sub
        self.rows.append(idx)
        self.system.append(system)
        for t in turns:
            self.roles.append(t["role"])
            self.contents.append(t["content"])
        self.offsets.append(len(self.roles))
        self.chosen.append(chosen)
        self.rejected.append(rejected)
        self.cs.append(cs)
        self.rs.append(rs)
        self.meta.append(meta)

    def reject(self, row: int, reason: str, detail: str, raw: str) -> None:
        self.r_rows.append(row)
        self.r_reason.append(reason)
        self.r_detail.append(detail)
        self.r_meta.append(raw)

    def pairs_table(self, schema: pa.Schema) -> pa.Table | None:
        n = len(self.rows)
        if not n:
            return None
        ids = row_ids(self.source_key, self.rows)
        for pos, j in self.subs.items():  # pair j of a rated row: an id derived from the row's own
            ids[pos] = derived_id(ids[pos], f"pair{j}")
        tbl = pa.table(
            {
                "row_id": pa.array(ids, pa.string()),
                "source": pa.array([self.name] * n, pa.string()),
                "source_row": pa.array(self.rows, pa.int64()),
                "system": pa.array(self.system, pa.string()),
                "prompt": pa.ListArray.from_arrays(
                    pa.array(self.offsets, pa.int32()),
                    pa.StructArray.from_arrays(
                        [pa.array(self.roles, pa.string()), pa.array(self.contents, pa.string())],
                        fields=list(_MSG),
                    ),
                ),
                "chosen": pa.array(self.chosen, pa.string()),
                "rejected": pa.array(self.rejected, pa.string()),
                "chosen_score": pa.array(self.cs, pa.float64()),
                "rejected_score": pa.array(self.rs, pa.float64()),
                "meta": pa.array(self.meta, pa.string()),
            }
        )
        frame = cast(pl.DataFrame, pl.from_arrow(tbl))  # a Table gives a DataFrame (untyped pyarrow: no overload)
        return conform(with_ids(frame)).collect().to_arrow().cast(schema)

    def rejects_table(self, schema: pa.Schema) -> pa.Table | None:
        n = len(self.r_rows)
        if not n:
            return None
        given = {
            "row_id": pa.array(row_ids(self.source_key, self.r_rows), pa.string()),
            "source": pa.array([self.name] * n, pa.string()),
            "source_row": pa.array(self.r_rows, pa.int64()),
            "meta": pa.array(self.r_meta, pa.string()),
            "stage": pa.array([STAGE] * n, pa.string()),
            "reason": pa.array(self.r_reason, pa.string()),
            "detail": pa.array(self.r_detail, pa.string()),
        }
        cols = [given[f.name].cast(f.type) if f.name in given else pa.nulls(n, f.type) for f in schema]
        return pa.Table.from_arrays(cols, schema=schema)


def _convert_batch(batch: list[readers.Record], plan: Plan, sink: _Sink, how: Binarize) -> None:
    """Convert one batch, in row order. Flat triples without history (the common case at scale) take a fast
    path: a few type checks and no per-field function calls (about 4x faster); a row that doesn't pass them goes
    through the family's full checks, which give the same result for rows that do."""
    f = plan.fields
    if plan.family == "flat" and "history" not in f:
        pc, cc, rc, sc = f["prompt"], f["chosen"], f["rejected"], f.get("system")
        cs_col, rs_col = f.get("chosen_score"), f.get("rejected_score")
        consumed = plan.consumed
        roles, contents, offsets = sink.roles, sink.contents, sink.offsets
        num = (float, int, type(None))
        for rec in batch:
            idx, row, err = rec
            if err is None and type(row) is dict:
                p, c, r = row.get(pc), row.get(cc), row.get(rc)
                s = row.get(sc) if sc else None
                if (type(p) is str and type(c) is str and type(r) is str and (s is None or type(s) is str)
                        and (cs_col is None or type(row.get(cs_col)) in num)
                        and (rs_col is None or type(row.get(rs_col)) in num)):
                    cstr, rstr = c.strip(), r.strip()
                    if cstr and rstr and cstr != rstr and p.strip():
                        try:  # a number beyond any float, or meta too deep to write: the full path names it
                            v = row.get(cs_col) if cs_col else None
                            cs = None if v is None else float(v)
                            v = row.get(rs_col) if rs_col else None
                            rs = None if v is None else float(v)
                            if len(row) == len(consumed) and all(k in consumed for k in row):
                                meta = "{}"
                            else:
                                meta = _dumps({k: v for k, v in row.items() if k not in consumed})
                        except Exception:  # noqa: BLE001 - _convert_row turns it into a reject
                            _convert_row(rec, plan, sink, how)
                            continue
                        sink.rows.append(idx)
                        sink.system.append(s if s and s.strip() else None)
                        roles.append("user")
                        contents.append(p)
                        offsets.append(len(roles))
                        sink.chosen.append(c)
                        sink.rejected.append(r)
                        sink.cs.append(cs)
                        sink.rs.append(rs)
                        sink.meta.append(meta)
                        continue
            _convert_row(rec, plan, sink, how)
    else:
        for rec in batch:
            _convert_row(rec, plan, sink, how)


def _convert_row(rec: readers.Record, plan: Plan, sink: _Sink, how: Binarize) -> None:
    """One row → kept or rejected. Any exception converting it is that row's reject, never the run's end."""
    idx, row, err = rec
    if err is not None:
        sink.reject(idx, *err)
        return
    if not isinstance(row, dict):
        sink.reject(idx, NOT_AN_OBJECT, f"row {idx} is a JSON {type(row).__name__}, not an object", _raw(row))
        return
    fields = plan.fields
    sys_col = fields.get("system")
    cs_col = fields.get("chosen_score")
    rs_col = fields.get("rejected_score")
    if plan.rated:
        _convert_rated(idx, row, plan, sink, how)
        return
    try:
        system = string(row.get(sys_col), sys_col, required=False) if sys_col else None
        system, turns, chosen, rejected = plan.convert(row, fields, system or None)
        cs = score(row.get(cs_col), cs_col) if cs_col else None
        rs = score(row.get(rs_col), rs_col) if rs_col else None
        meta = {k: v for k, v in row.items() if k not in plan.consumed}
        if plan.extra_meta is not None:
            meta.update(plan.extra_meta(row, fields))
        meta_json = _dumps(meta)
    except RowError as e:
        sink.reject(idx, e.reason, f"row {idx}: {e.detail}", _raw(row))
        return
    except Exception as e:  # noqa: BLE001 - one row's problem, whatever it is, is that row's reject
        reason, detail = _row_failure(e)
        sink.reject(idx, reason, f"row {idx}: {detail}", _raw(row))
        return
    sink.keep(idx, system, turns, chosen, rejected, cs, rs, meta_json)


def _convert_rated(idx: int, row: dict[str, Any], plan: Plan, sink: _Sink, how: Binarize) -> None:
    """A row of scored responses → its pairs (pair j gets sub-index j), or one reject when it yields none."""
    sys_col = plan.fields.get("system")
    try:
        system = string(row.get(sys_col), sys_col, required=False) if sys_col else None
        made = plan.convert(row, plan.fields, system or None, how)
        meta = {k: v for k, v in row.items() if k not in plan.consumed}
        metas = [_dumps({**meta, "binarize": info}) for *_, info in made]
    except RowError as e:
        sink.reject(idx, e.reason, f"row {idx}: {e.detail}", _raw(row))
        return
    except Exception as e:  # noqa: BLE001 - one row's problem, whatever it is, is that row's reject
        reason, detail = _row_failure(e)
        sink.reject(idx, reason, f"row {idx}: {detail}", _raw(row))
        return
    for j, ((system, turns, chosen, rejected, cs, rs, _), meta_json) in enumerate(zip(made, metas, strict=True)):
        sink.keep(idx, system, turns, chosen, rejected, cs, rs, meta_json, sub=j)


def _row_failure(e: Exception) -> tuple[str, str]:
    """A reason code for an exception converting one row (RowError aside)."""
    first = readers._first_line(e)
    if isinstance(e, OverflowError):
        return NUMBER_OUT_OF_RANGE, f"a number too large for a 64-bit float ({first})"
    if isinstance(e, RecursionError):
        return NESTING_TOO_DEEP, "nested too deeply to convert"
    if isinstance(e, UnicodeError):
        return INVALID_UNICODE, f"text that is not valid Unicode ({first})"
    return UNREADABLE_ROW, f"{type(e).__name__}: {first}"


def _raw(row: Any) -> str:
    """The row as text for the rejects' meta, whatever it holds (a depth-limited repr when JSON can't say it)."""
    try:
        return readers.raw_text(_dumps(row))
    except Exception:  # noqa: BLE001 - too deep or too odd for JSON
        import reprlib

        r = reprlib.Repr()
        r.maxlevel, r.maxstring, r.maxother, r.maxdict, r.maxlist = 8, 400, 400, 50, 50
        return readers.raw_text(r.repr(row))


def _plan_for(src: readers.Source, mapping: dict[str, str]) -> Plan:
    """Detect from the columns of every row of the file (streamed: only counts are kept) and a sample of the
    first rows that parse as objects."""
    sample, stats = _survey(src)
    return detect(sample, mapping, src.name, columns=stats)


def _survey(src: readers.Source) -> tuple[list[dict[str, Any]], ColumnStats]:
    """The first rows that parse as objects, and the columns of all of them. Parquet and datasets folders are
    counted from Arrow, column by column."""
    sample: list[dict[str, Any]] = []
    stats = ColumnStats()
    first_error: str | None = None
    if src.kind in ("parquet", "dataset"):
        for batch in readers.read(src, batch_rows=SAMPLE_ROWS):
            sample = [row for _, row, _ in batch]
            break
        readers.arrow_columns(src, stats)
    else:
        for batch in readers.read(src):
            for _, row, err in batch:
                if err is None and isinstance(row, dict):
                    stats.add(row)
                    if len(sample) < SAMPLE_ROWS:
                        sample.append(row)
                elif first_error is None:
                    first_error = err[1] if err else f"a JSON {type(row).__name__}, not an object"
    if not sample:
        raise InputError(f"{src.name}: no row is a JSON object (first problem: {first_error})")
    return sample, stats


def _check_mapped_columns(mapping: dict[str, str], stats: list[ColumnStats]) -> None:
    """A --map naming a column that no input has is a typo: say so before any row is written."""
    seen: dict[str, None] = {}
    for st in stats:
        seen.update(st.order)
    for logical, col in mapping.items():
        if logical not in INNER_FIELDS and col not in seen:  # inner fields name keys inside values, not columns
            cols = ", ".join(list(seen)[:20]) + (", …" if len(seen) > 20 else "")
            raise InputError(f"--map {logical}={col}: no input has a column {col!r} (columns seen: {cols})")


def source_keys(sources: list[readers.Source]) -> list[str]:
    """Each source's identity for row ids: the SHA-256 of its content, with `#k` added for the k-th repeat of the
    same content (the same file under two names), so ids stay unique in a run and don't depend on path spelling."""
    seen: dict[str, int] = {}
    keys = []
    for src in sources:
        try:
            digest = sha256_tree(src.path)
        except PermissionError:
            raise InputError(f"{src.name}: permission denied") from None
        except OSError as e:
            raise InputError(f"{src.name}: can't be read ({e.strerror or e})") from None
        k = seen.get(digest, 0)
        seen[digest] = k + 1
        keys.append(digest if k == 0 else f"{digest}#{k}")
    return keys


@dataclass(frozen=True)
class Prepared:
    """Every source of an ingest, its detected plan and its row-id key, in input order (see `prepare`)."""

    sources: list[readers.Source]
    plans: list[Plan]
    keys: list[str]
    not_read: list[dict[str, str]]
    mapping: dict[str, str] | None
    how: Binarize


def prepare(inputs: Sequence[str | Path], mapping: dict[str, str] | None = None,
            binarize: str | Binarize = "best-worst", seed: int = 0, strict_inputs: bool = False) -> Prepared:
    """Expand the inputs, detect each source's format and key its row ids: every file is checked before any row
    is written, so a bad file fails fast. Engines (curate/engines/) share this, then convert sources their own way."""
    mapping = check_mapping(mapping)
    how = parse_binarize(binarize, seed)
    sources, not_read = readers.expand(list(inputs))
    if strict_inputs and readers.worth_warning(not_read):
        raise InputError(f"--strict-inputs: {readers.describe_not_read(readers.worth_warning(not_read))}")
    surveys = [_survey(src) for src in sources]
    _check_mapped_columns(mapping, [st for _, st in surveys])
    plans = [detect(sample, mapping, src.name, columns=st) for src, (sample, st) in zip(sources, surveys, strict=True)]
    return Prepared(sources, plans, source_keys(sources), not_read, mapping, how)


def convert_source(prep: Prepared, k: int) -> Iterator[_Sink]:
    """Source `k` converted batch by batch: one filled `_Sink` (kept rows + rejects, tables not yet built) each."""
    src, plan, key = prep.sources[k], prep.plans[k], prep.keys[k]
    for batch in readers.read(src):
        sink = _Sink(src.name, key)
        _convert_batch(batch, plan, sink, prep.how)
        sink.rows_in = len(batch)
        del batch
        yield sink


class Built:
    """A converted batch whose tables were built elsewhere (an engine's worker): what `write` needs of a _Sink."""

    def __init__(self, rows_in: int, pairs: pa.Table | None, rejects: pa.Table | None, extra: int) -> None:
        self.rows_in = rows_in
        self.pairs, self.rejects = pairs, rejects
        self.rows = range(pairs.num_rows if pairs is not None else 0)
        self.r_reason = rejects.column("reason").to_pylist() if rejects is not None else []
        self.r_rows = self.r_reason
        self.subs = range(extra)  # pairs beyond the first of rated rows: only their number matters here

    def pairs_table(self, schema: pa.Schema) -> pa.Table | None:
        return self.pairs

    def rejects_table(self, schema: pa.Schema) -> pa.Table | None:
        return self.rejects


def tables(sink: _Sink) -> tuple[pa.Table | None, pa.Table | None]:
    """The kept and rejected tables of one converted batch (hashes the row ids: the costly part)."""
    pairs_schema, rejects_schema = _schemas()
    return sink.pairs_table(pairs_schema), sink.rejects_table(rejects_schema)


def ingest(inputs: Sequence[str | Path], out_dir: str | Path, mapping: dict[str, str] | None = None,
           binarize: str | Binarize = "best-worst", seed: int = 0, strict_inputs: bool = False) -> dict:
    """Read every input, detect each file's format family, convert rows to canonical pairs, and write
    out_dir/pairs.parquet, out_dir/rejects.parquet and out_dir/report.json.

    `binarize` (`best-worst` | `best-random` | `all-margin:M`) and `seed` say how rows of rated responses become
    pairs (rated.py); other families ignore them.

    Returns the report: input_rows, kept_rows (pairs written), rejected_rows, paired_rows (input rows that made a
    pair), extra_pairs (pairs beyond the first of rows that made several), rejects_by_reason, binarize, sources
    ({source: {format, rows_in, rows_kept, rows_rejected, paired_rows, extra_pairs, rejects_by_reason, fields}}),
    not_read (entries of input folders that aren't read, each {path, why}) and skipped (their paths). Raises
    InputError (one line naming the file) for whole-file problems, and with `strict_inputs` for any entry not
    read; every file is checked and its format detected before any row is written, so a bad file fails fast.
    """
    prep = prepare(inputs, mapping, binarize, seed, strict_inputs)
    return write(prep, out_dir, ((k, sink) for k in range(len(prep.sources)) for sink in convert_source(prep, k)))


def write(prep: Prepared, out_dir: str | Path, batches: Iterable[tuple[int, _Sink | Built]]) -> dict:
    """Write converted batches, given in source order as (source index, batch), and the report (see `ingest`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs_schema, rejects_schema = _schemas()
    per_source: dict[str, dict[str, Any]] = {
        src.name: {"format": plan.family, "reader": src.kind, "rows_in": 0, "rows_kept": 0, "rows_rejected": 0,
                   "paired_rows": 0, "extra_pairs": 0, "rejects_by_reason": {}, "fields": dict(plan.fields)}
        for src, plan in zip(prep.sources, prep.plans, strict=True)
    }
    with atomic_path(out / "pairs.parquet") as tp, atomic_path(out / "rejects.parquet") as tr:
        with pq.ParquetWriter(tp, pairs_schema, compression="zstd") as pw, \
                pq.ParquetWriter(tr, rejects_schema, compression="zstd") as rw:
            def flush(sink: _Sink | Built) -> None:
                if (t := sink.pairs_table(pairs_schema)) is not None:
                    pw.write_table(t)
                if (t := sink.rejects_table(rejects_schema)) is not None:
                    rw.write_table(t)

            # One writer thread: while it hashes ids (Polars, off the GIL) and writes batch k, this thread parses
            # and converts batch k+1. At most one batch waits, so memory stays bounded; writes stay in order.
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending: Future | None = None
                for k, sink in batches:
                    stats = per_source[prep.sources[k].name]
                    stats["rows_in"] += sink.rows_in
                    stats["rows_kept"] += len(sink.rows)
                    stats["rows_rejected"] += len(sink.r_rows)
                    stats["extra_pairs"] += len(sink.subs)
                    stats["paired_rows"] += len(sink.rows) - len(sink.subs)
                    for r in sink.r_reason:
                        stats["rejects_by_reason"][r] = stats["rejects_by_reason"].get(r, 0) + 1
                    if pending is not None:
                        pending.result()
                    pending = pool.submit(flush, sink)
                if pending is not None:
                    pending.result()
    for stats in per_source.values():
        stats["rejects_by_reason"] = dict(sorted(stats["rejects_by_reason"].items()))
    by_reason: dict[str, int] = {}
    for s in per_source.values():
        for r, n in s["rejects_by_reason"].items():
            by_reason[r] = by_reason.get(r, 0) + n
    report = {
        "stage": STAGE,
        "input_rows": sum(s["rows_in"] for s in per_source.values()),
        "kept_rows": sum(s["rows_kept"] for s in per_source.values()),
        "rejected_rows": sum(s["rows_rejected"] for s in per_source.values()),
        "paired_rows": sum(s["paired_rows"] for s in per_source.values()),
        "extra_pairs": sum(s["extra_pairs"] for s in per_source.values()),
        "binarize": prep.how.label,
        "rejects_by_reason": dict(sorted(by_reason.items())),
        "sources": per_source,
        "not_read": prep.not_read,
        "skipped": [e["path"] for e in prep.not_read],
        "mapping": prep.mapping,
    }
    atomic_write_text(out / "report.json", json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    return report
