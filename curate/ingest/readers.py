"""File readers: turn inputs (files, folders, globs, `save_to_disk` folders) into sources, and a source into
batches of parsed rows.

A reader never raises for one bad row: it yields `(row_index, value, error)` where `error` is
`(reason, detail, raw_text)` for a row that could not be parsed. Whole-file problems (missing, empty, binary,
not the format its name says) raise `InputError` naming the file. Batches are bounded by rows and bytes so
memory stays flat whatever the file size (JSON arrays are the exception: a JSON array is one value and is parsed
whole; use JSON Lines or Parquet for big inputs).
"""

from __future__ import annotations

import csv
import glob
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from curate.errors import InputError
from curate.ingest.reasons import INVALID_UTF8, MALFORMED_CSV, MALFORMED_JSON

try:  # orjson parses ~3x faster than json and validates UTF-8 itself; json is the fallback.
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson comes with the pinned set
    orjson = None
    _loads = json.loads

BATCH_ROWS = 20_000
BATCH_BYTES = 32 << 20
RAW_LIMIT = 2048  # characters of a bad row kept in the rejects' meta
BOM = b"\xef\xbb\xbf"
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}

Record = tuple[int, Any, "tuple[str, str, str] | None"]


@dataclass(frozen=True)
class Source:
    """One stream of rows: a file, or one split of a `save_to_disk` folder."""

    name: str  # what goes into the `source` column: the path as given, or "<dir>:<split>"
    path: Path
    kind: str  # jsonl | json | parquet | csv | dataset


def _is_dataset_dir(p: Path) -> bool:
    return (p / "dataset_dict.json").is_file() or ((p / "state.json").is_file() and (p / "dataset_info.json").is_file())


def _dataset_sources(p: Path, name: str) -> list[Source]:
    dd = p / "dataset_dict.json"
    if dd.is_file():
        try:
            splits = json.loads(dd.read_text(encoding="utf-8"))["splits"]
        except (ValueError, KeyError, OSError) as e:
            raise InputError(f"{name}: unreadable dataset_dict.json ({e})") from None
        return [Source(f"{name}:{s}", p / s, "dataset") for s in splits]
    return [Source(name, p, "dataset")]


def _folder(p: Path, name: str, skipped: list[str]) -> list[Source]:
    """Every readable file under a folder, recursively, in sorted path order; dataset folders as whole sources."""
    out: list[Source] = []

    def walk(d: Path, rel: str) -> None:
        for entry in sorted(os.scandir(d), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            child, child_name = Path(entry.path), f"{rel}/{entry.name}"
            if entry.is_dir():
                if _is_dataset_dir(child):
                    out.extend(_dataset_sources(child, child_name))
                else:
                    walk(child, child_name)
            elif Path(entry.name).suffix.lower() in SUFFIXES:
                out.append(Source(child_name, child, SUFFIXES[Path(entry.name).suffix.lower()]))
            else:
                skipped.append(child_name)

    walk(p, name.rstrip("/") or "/")
    if not out:
        raise InputError(f"{name}: no .jsonl, .json, .parquet or .csv files in this folder")
    return out


def _path_source(p: Path, name: str, skipped: list[str]) -> list[Source]:
    if p.is_dir():
        return _dataset_sources(p, name.rstrip("/")) if _is_dataset_dir(p) else _folder(p, name, skipped)
    kind = SUFFIXES.get(p.suffix.lower())
    if kind is None:
        raise InputError(f"{name}: unsupported file type {p.suffix or '(no suffix)'}; use .jsonl, .json, .parquet or .csv")
    return [Source(name, p, kind)]


def expand(inputs: list[str | Path]) -> tuple[list[Source], list[str]]:
    """Inputs → sources in the order given (folders and globs in sorted order); also the files skipped."""
    if not inputs:
        raise InputError("no input given")
    sources: list[Source] = []
    skipped: list[str] = []
    for item in inputs:
        name = str(item)
        p = Path(name)
        if p.exists():
            sources += _path_source(p, name, skipped)
        elif glob.has_magic(name):
            matches = sorted(glob.glob(name, recursive=True))
            if not matches:
                raise InputError(f"{name}: no files match this pattern")
            for m in matches:
                if Path(m).is_dir() and not _is_dataset_dir(Path(m)):
                    continue  # a glob like data/** also names folders; their files match on their own
                sources += _path_source(Path(m), m, skipped)
        else:
            raise InputError(f"{name}: no such file or folder")
    seen: set[tuple[str, str]] = set()
    unique = []
    for s in sources:  # the same file named twice (a folder and a file in it) is read once
        key = (str(s.path.resolve()), s.name.rsplit(":", 1)[-1] if s.kind == "dataset" else "")
        if key not in seen:
            seen.add(key)
            unique.append(s)
    return unique, skipped


def _check_head(src: Source, head: bytes, size: int) -> None:
    if size == 0 or not head.strip():
        raise InputError(f"{src.name}: empty file")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(f"{src.name}: UTF-16 text; save it as UTF-8")
    if b"\x00" in head:
        raise InputError(f"{src.name}: binary file, not UTF-8 text (expected {src.kind.upper()})")


def raw_text(value: str | bytes) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    value = value.rstrip("\r\n")
    return value if len(value) <= RAW_LIMIT else value[:RAW_LIMIT] + "…"


def has_surrogate(v: Any) -> bool:
    """True when a parsed value holds a lone surrogate: invalid UTF-8 decoded with surrogateescape, or a lone
    \\ud800-style escape. Arrow and Parquet can't store those."""
    if isinstance(v, str):
        try:
            v.encode("utf-8")
            return False
        except UnicodeEncodeError:
            return True
    if isinstance(v, dict):
        return any(has_surrogate(k) or has_surrogate(x) for k, x in v.items())
    if isinstance(v, list):
        return any(has_surrogate(x) for x in v)
    return False


def _parse_line(line: bytes, lineno: int) -> tuple[Any, tuple[str, str, str] | None]:
    """Slow path for a line orjson refused: tell invalid UTF-8 from broken JSON, and accept a stray BOM."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, (INVALID_UTF8, f"line {lineno}: byte {e.start} is not valid UTF-8", raw_text(line))
    text = text.lstrip("\ufeff")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return None, (MALFORMED_JSON, f"line {lineno}: {e.msg} at column {e.colno}", raw_text(text))
    if has_surrogate(value):
        return None, (INVALID_UTF8, f"line {lineno}: a lone surrogate escape (\\ud800-\\udfff)", raw_text(text))
    return value, None


def _jsonl(src: Source, f: Any = None, first_lineno: int = 1, batch_rows: int = BATCH_ROWS) -> Iterator[list[Record]]:
    own = f is None
    if own:
        f = open(src.path, "rb")
        size = os.fstat(f.fileno()).st_size
        _check_head(src, f.read(8192), size)
        f.seek(0)
    try:
        batch: list[Record] = []
        nbytes = 0
        idx = 0
        for lineno, line in enumerate(f, first_lineno):
            if lineno == 1 and line.startswith(BOM):
                line = line[3:]
            if not line.strip():
                continue
            try:
                value, err = _loads(line), None
            except ValueError:
                value, err = _parse_line(line, lineno)
            if orjson is None and err is None and has_surrogate(value):
                value, err = None, (INVALID_UTF8, f"line {lineno}: a lone surrogate escape", raw_text(line))
            batch.append((idx, value, err))
            idx += 1
            nbytes += len(line)
            if len(batch) >= batch_rows or nbytes >= BATCH_BYTES:
                yield batch
                batch, nbytes = [], 0
        if idx == 0:
            raise InputError(f"{src.name}: empty file (no JSON lines)")
        if batch:
            yield batch
    finally:
        if own:
            f.close()


def _json(src: Source, batch_rows: int = BATCH_ROWS) -> Iterator[list[Record]]:
    data = src.path.read_bytes()
    _check_head(src, data[:8192], len(data))
    if data.startswith(BOM):
        data = data[3:]
    start = data.lstrip()[:1]
    lenient = False
    try:
        value = _loads(data)
    except ValueError:
        text = data.decode("utf-8", "surrogateescape")  # bad bytes become lone surrogates; rows holding them are rejected
        try:
            value = json.loads(text)
            lenient = True
        except json.JSONDecodeError as e:
            if start == b"[":
                raise InputError(f"{src.name}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
            # Not one JSON value: JSON Lines under a .json name.
            yield from _jsonl(Source(src.name, src.path, "jsonl"), iter(data.splitlines(keepends=True)), batch_rows=batch_rows)
            return
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        rows = lists[0] if len(lists) == 1 and len(value) <= 3 else [value]  # {"data": [...]} wrappers
    elif isinstance(value, list):
        rows = value
    else:
        raise InputError(f"{src.name}: the JSON holds a {type(value).__name__}, not an array of objects")
    if not rows:
        raise InputError(f"{src.name}: empty JSON array (no rows)")
    del value, data
    for i in range(0, len(rows), batch_rows):
        batch: list[Record] = []
        for j, row in enumerate(rows[i : i + batch_rows], start=i):
            if lenient and has_surrogate(row):
                dumped = json.dumps(row, ensure_ascii=False)
                raw = raw_text(dumped.encode("utf-8", "surrogateescape"))
                batch.append((j, None, (INVALID_UTF8, f"row {j}: holds bytes that are not valid UTF-8", raw)))
            else:
                batch.append((j, row, None))
        yield batch


def _parquet(src: Source, batch_rows: int = BATCH_ROWS) -> Iterator[list[Record]]:
    import pyarrow.parquet as pq

    with open(src.path, "rb") as f:
        _check_head_parquet(src, f.read(4), os.fstat(f.fileno()).st_size)
    try:
        pf = pq.ParquetFile(src.path)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError for non-Parquet bytes
        raise InputError(f"{src.name}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    if pf.metadata.num_rows == 0:
        raise InputError(f"{src.name}: empty Parquet file (no rows)")
    idx = 0
    with pf:
        for rb in pf.iter_batches(batch_size=batch_rows):
            rows = rb.to_pylist()
            yield [(idx + i, r, None) for i, r in enumerate(rows)]
            idx += len(rows)


def _check_head_parquet(src: Source, head: bytes, size: int) -> None:
    if size == 0:
        raise InputError(f"{src.name}: empty file")
    if head != b"PAR1":
        raise InputError(f"{src.name}: not a Parquet file (no PAR1 header)")


def _csv(src: Source, batch_rows: int = BATCH_ROWS) -> Iterator[list[Record]]:
    with open(src.path, "rb") as fb:
        _check_head(src, fb.read(8192), os.fstat(fb.fileno()).st_size)
    # Fields can be long (a 10 MB reply); csv's default limit is 128 KiB. The limit is process-wide in the csv
    # module, so we raise it once to the largest value it accepts.
    if csv.field_size_limit() < sys.maxsize // 4:
        csv.field_size_limit(2**31 - 1)
    with open(src.path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            while header is not None and not header:
                header = next(reader, None)
            if header is None:
                raise InputError(f"{src.name}: empty CSV file")
            batch: list[Record] = []
            idx = 0
            for rec in reader:
                if not rec:
                    continue
                if len(rec) > len(header):
                    err = (MALFORMED_CSV, f"line {reader.line_num}: {len(rec)} fields, header has {len(header)}",
                           raw_text(",".join(rec).encode("utf-8", "surrogateescape")))
                    batch.append((idx, None, err))
                else:
                    row = dict(zip(header, rec + [None] * (len(header) - len(rec))))
                    if has_surrogate(row):
                        raw = ",".join(rec).encode("utf-8", "surrogateescape")
                        batch.append((idx, None, (INVALID_UTF8, f"line {reader.line_num}: bytes that are not valid UTF-8", raw_text(raw))))
                    else:
                        batch.append((idx, row, None))
                idx += 1
                if len(batch) >= batch_rows:
                    yield batch
                    batch = []
            if idx == 0:
                raise InputError(f"{src.name}: CSV file has a header but no rows")
            if batch:
                yield batch
        except csv.Error as e:
            raise InputError(f"{src.name}: line {reader.line_num}: not valid CSV ({e})") from None


def _dataset(src: Source, batch_rows: int = BATCH_ROWS) -> Iterator[list[Record]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(src.path))
    except Exception as e:  # datasets raises FileNotFoundError/ValueError variants for broken folders
        raise InputError(f"{src.name}: can't load this datasets folder ({str(e).splitlines()[0]})") from None
    if isinstance(ds, datasets.DatasetDict):  # a split folder named directly holds a DatasetDict: not expected
        raise InputError(f"{src.name}: holds several splits; name the folder above it")
    if len(ds) == 0:
        raise InputError(f"{src.name}: empty dataset (no rows)")
    idx = 0
    for tbl in ds.with_format("arrow").iter(batch_size=batch_rows):
        rows = tbl.to_pylist()
        yield [(idx + i, r, None) for i, r in enumerate(rows)]
        idx += len(rows)


READERS = {"jsonl": _jsonl, "json": _json, "parquet": _parquet, "csv": _csv, "dataset": _dataset}


def read(src: Source, batch_rows: int = BATCH_ROWS) -> Iterator[list[Record]]:
    """Batches of (row_index, parsed value, error) for one source (`batch_rows` small to peek at the head)."""
    try:
        yield from READERS[src.kind](src, batch_rows=batch_rows)
    except PermissionError:
        raise InputError(f"{src.name}: permission denied") from None
    except IsADirectoryError:
        raise InputError(f"{src.name}: is a folder, not a file") from None
