"""File readers: turn inputs (files, folders, globs, `save_to_disk` folders) into sources, and a source into
batches of parsed rows.

A reader never raises for one bad row: it yields `(row_index, value, error)` where `error` is
`(reason, detail, raw_text)` for a row that could not be parsed — whatever went wrong with it (broken JSON,
bytes that aren't UTF-8, a lone surrogate, a NUL byte, nesting too deep to parse, a number beyond any float, a
CSV record with a broken quote). Whole-file problems (missing, empty, binary, corrupt compressed stream or
Parquet page, not the format its name says) raise `InputError` naming the file. Batches are bounded by rows and
bytes so memory stays flat whatever the file size (JSON arrays are the exception: a JSON array is one value and
is parsed whole; use JSON Lines or Parquet for big inputs).

`.gz`, `.zst`, `.bz2` and `.xz` files (JSON Lines, JSON, CSV, TSV) are decompressed on the fly.

Sources are named canonically (`canonical_name`) and sorted by that name, so neither the order of the inputs
nor the spelling of a path (`./data/a.jsonl`, `data//a.jsonl`, `/abs/cwd/data/a.jsonl`) changes which row
comes first — the dedup survivor rule and balance depend on that order (docs/reliability.md).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import re
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from curate.errors import InputError
from curate.ingest.reasons import (
    INVALID_UNICODE,
    INVALID_UTF8,
    MALFORMED_CSV,
    MALFORMED_JSON,
    NESTING_TOO_DEEP,
    NUL_BYTE,
    NUMBER_OUT_OF_RANGE,
)
from curate.io import canonical_name

try:  # orjson parses ~3x faster than json and validates UTF-8 itself; json is the fallback.
    import orjson
except ImportError:  # pragma: no cover - orjson comes with the pinned set
    orjson = None  # type: ignore[assignment]  # the module or None: callers test `orjson is not None`
_loads: Callable[[bytes | str], Any] = orjson.loads if orjson is not None else json.loads

BATCH_ROWS = 20_000
BATCH_BYTES = 32 << 20
RAW_LIMIT = 2048  # characters of a bad row kept in the rejects' meta
HEAD = 8192  # bytes looked at to tell text from binary
BOM = b"\xef\xbb\xbf"
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv",
            ".tsv": "tsv"}
COMPRESSIONS = {".gz": "gz", ".zst": "zst", ".zstd": "zst", ".bz2": "bz2", ".xz": "xz"}
TEXT_KINDS = ("jsonl", "json", "csv", "tsv")

Record = tuple[int, Any, "tuple[str, str, str] | None"]


@dataclass(frozen=True)
class Source:
    """One stream of rows: a file, or one split of a `save_to_disk` folder."""

    name: str  # what goes into the `source` column: the canonical path (canonical_name), or "<dir>:<split>"
    path: Path
    kind: str  # jsonl | json | parquet | csv | tsv | dataset
    compression: str | None = None  # gz | zst | bz2 | xz


def classify(name: str) -> tuple[str | None, str | None]:
    """File name → (kind, compression); kind None when curate doesn't read such files."""
    lower = name.lower()
    comp = None
    for suffix, c in COMPRESSIONS.items():
        if lower.endswith(suffix):
            comp, lower = c, lower[: -len(suffix)]
            break
    kind = SUFFIXES.get(os.path.splitext(lower)[1])
    if kind == "parquet" and comp:  # Parquet compresses its own pages; a compressed Parquet file is unusual
        return None, comp
    return kind, comp


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


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _folder(p: Path, name: str, not_read: list[dict[str, str]]) -> list[Source]:
    """Every readable file under a folder, recursively; dataset folders as whole sources. Everything else is
    listed in `not_read` with why: other file types, hidden entries, symlinks that lead outside the folder.
    A dangling symlink is an error: it names data that isn't there."""
    out: list[Source] = []
    root = os.path.realpath(p)
    seen_dirs: set[str] = set()

    def walk(d: Path, rel: str) -> None:
        real = os.path.realpath(d)
        if real in seen_dirs:  # a symlink loop inside the folder
            return
        seen_dirs.add(real)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except PermissionError:
            raise InputError(f"{rel}: permission denied (can't list this folder)") from None
        for entry in entries:
            child, child_name = Path(entry.path), f"{rel}/{entry.name}"
            if entry.is_symlink():
                target = os.path.realpath(child)
                if not os.path.exists(target):
                    raise InputError(f"{child_name}: dangling symlink (to {os.readlink(child)}, which does not exist)")
                if not _inside(target, root):
                    not_read.append({"path": child_name, "why": f"symlink to {target}, outside {name}"})
                    continue
            is_dir = entry.is_dir()
            if entry.name.startswith("."):
                not_read.append({"path": child_name + ("/" if is_dir else ""), "why": "hidden"})
            elif is_dir:
                if _is_dataset_dir(child):
                    out.extend(_dataset_sources(child, child_name))
                else:
                    walk(child, child_name)
            else:
                kind, comp = classify(entry.name)
                if kind is None:
                    why = DOC_OR_CODE if _doc_or_code(entry.name) else "not a data file"
                    not_read.append({"path": child_name, "why": why})
                else:
                    out.append(Source(child_name, child, kind, comp))

    walk(p, name.rstrip("/") or "/")
    if not out:
        raise InputError(f"{name}: no .jsonl, .json, .parquet, .csv or .tsv files (or .gz/.zst/.bz2/.xz of them) "
                         f"in this folder")
    return out


def _path_source(p: Path, name: str, not_read: list[dict[str, str]]) -> list[Source]:
    if p.is_dir():
        return _dataset_sources(p, name.rstrip("/")) if _is_dataset_dir(p) else _folder(p, name, not_read)
    kind, comp = classify(p.name)
    if kind is None:
        if comp and p.name.lower().rsplit(".", 2)[-2:-1] == ["parquet"]:
            raise InputError(f"{name}: compressed Parquet is not read; Parquet compresses its own pages, "
                             f"decompress it first")
        raise InputError(f"{name}: unsupported file type {p.suffix or '(no suffix)'}; use .jsonl, .json, .parquet, "
                         f".csv or .tsv (optionally .gz, .zst, .bz2 or .xz)")
    return [Source(name, p, kind, comp)]


def _missing(name: str) -> InputError:
    if os.path.islink(name):
        return InputError(f"{name}: dangling symlink (to {os.readlink(name)}, which does not exist)")
    return InputError(f"{name}: no such file or folder")


def expand(inputs: list[str | Path]) -> tuple[list[Source], list[dict[str, str]]]:
    """Inputs → sources sorted by canonical name (the same file named twice is read once); also the entries of
    named folders that are not read, each with why (`{"path", "why"}`)."""
    if not inputs:
        raise InputError("no input given")
    sources: list[Source] = []
    not_read: list[dict[str, str]] = []
    for item in inputs:
        name = canonical_name(item)
        p = Path(name)
        if p.exists():
            sources += _path_source(p, name, not_read)
        elif glob.has_magic(str(item)):
            matches = sorted(glob.glob(str(item), recursive=True))
            if not matches:
                raise InputError(f"{item}: no files match this pattern")
            for m in matches:
                mp = Path(m)
                if mp.is_dir() and not _is_dataset_dir(mp):
                    continue  # a glob like data/** also names folders; their files match on their own
                if not mp.exists():
                    raise _missing(m)
                sources += _path_source(mp, canonical_name(m), not_read)
        else:
            raise _missing(str(item))
    sources.sort(key=lambda s: s.name)
    seen: set[tuple[str, str]] = set()
    unique = []
    for s in sources:  # the same file named twice (a folder and a file in it) is read once
        key = (os.path.realpath(s.path), s.name.rsplit(":", 1)[-1] if s.kind == "dataset" else "")
        if key not in seen:
            seen.add(key)
            unique.append(s)
    not_read.sort(key=lambda e: e["path"])
    return unique, not_read


# A dataset's own README, licence or generating script beside its files: listed in the report, not warned about
# (every dataset folder has one; a warning that always fires teaches users to ignore it) and no --strict-inputs error.
DOC_OR_CODE = "documentation or code"
_DOC_SUFFIXES = (".md", ".rst", ".py", ".sh", ".ipynb", ".yaml", ".yml", ".toml", ".cfg")
_DOC_STEMS = ("readme", "license", "licence", "notice", "copying", "authors", "changelog", "citation")


def _doc_or_code(file_name: str) -> bool:
    lower = file_name.lower()
    return lower.endswith(_DOC_SUFFIXES) or lower.split(".", 1)[0] in _DOC_STEMS


def worth_warning(not_read: list[dict[str, str]]) -> list[dict[str, str]]:
    """The entries not read that may be data the user meant: all but documentation and code."""
    return [e for e in not_read if e["why"] != DOC_OR_CODE]


def describe_not_read(not_read: list[dict[str, str]], limit: int = 8) -> str:
    """One line naming the entries not read (the first `limit`, then a count)."""
    shown = [f"{e['path']} ({e['why']})" for e in not_read[:limit]]
    more = f" and {len(not_read) - limit} more" if len(not_read) > limit else ""
    n = len(not_read)
    return f"{n} {'entry' if n == 1 else 'entries'} in the input folders not read: {', '.join(shown)}{more}"


# --- opening --------------------------------------------------------------------------------------------------


def open_binary(src: Source) -> IO[bytes]:
    """The source's bytes, decompressed when its name says so."""
    if src.compression is None:
        return open(src.path, "rb")
    if src.compression == "gz":
        import gzip

        return cast(IO[bytes], gzip.open(src.path, "rb"))
    if src.compression == "bz2":
        import bz2

        return bz2.open(src.path, "rb")
    if src.compression == "xz":
        import lzma

        return lzma.open(src.path, "rb")
    # zstd: the standard library has no zstd before 3.14; pyarrow (already a dependency) ships the codec.
    import pyarrow as pa

    return io.BufferedReader(pa.input_stream(str(src.path), compression="zstd"))


def _head(src: Source) -> bytes:
    with open_binary(src) as f:
        return f.read(HEAD)


def looks_binary(head: bytes) -> bool:
    """Mostly not text: at least 1% of the first characters are control characters (NUL included) other than
    whitespace, and with bytes that aren't UTF-8 they make up 30% or more. One NUL byte (or a few) in a text
    file is not binary — that row is a `nul_byte` reject — and neither is text in another encoding (its rows
    are `invalid_utf8` rejects, and the error when no row is left says so)."""
    text = head.decode("utf-8", "replace")
    if not text:
        return False
    controls = sum(1 for ch in text if ch < " " and ch not in "\t\n\r\f\b\x1b")
    return controls >= 0.01 * len(text) and controls + text.count("\ufffd") >= 0.3 * len(text)


def _check_head(src: Source, head: bytes) -> None:
    if not head.strip():
        raise InputError(f"{src.name}: empty file")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(f"{src.name}: UTF-16 text; save it as UTF-8")
    if looks_binary(head):
        raise InputError(f"{src.name}: binary file, not UTF-8 text (expected {src.kind.upper()})")


# --- per-row helpers ------------------------------------------------------------------------------------------


def safe_bytes(text: str) -> bytes:
    """UTF-8 of a string that may hold lone surrogates: bad bytes read with surrogateescape come back as they
    were, other lone surrogates as \\udXXX escapes (never an exception)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace")


def raw_text(value: str | bytes) -> str:
    if isinstance(value, str):
        value = safe_bytes(value)
    text = value.decode("utf-8", "replace").rstrip("\r\n")
    return text if len(text) <= RAW_LIMIT else text[:RAW_LIMIT] + "…"


def has_surrogate(v: Any) -> bool:
    """True when a parsed value holds a lone surrogate: invalid UTF-8 decoded with surrogateescape, or a lone
    \\ud800-style escape. Arrow and Parquet can't store those."""
    stack = [v]
    while stack:  # iterative: a deeply nested value must not hit the recursion limit
        x = stack.pop()
        if isinstance(x, str):
            try:
                x.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return False


def _only_escaped_bytes(v: Any) -> bool:
    """True when every lone surrogate in `v` is one that surrogateescape makes from a byte (\\udc80-\\udcff)."""
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            if any("\ud800" <= ch <= "\udfff" and not "\udc80" <= ch <= "\udcff" for ch in x):
                return False
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return True


def _parse_slow(data: bytes, where: str) -> tuple[Any, tuple[str, str, str] | None]:
    """Slow path for a value orjson refused: name what is wrong (a NUL byte, bytes that aren't UTF-8, broken
    JSON, nesting too deep, an integer too long to read, a lone surrogate), and accept a stray BOM and what
    json reads but orjson does not (NaN, integers beyond 64 bits)."""
    nul = data.find(b"\x00")
    if nul >= 0:
        return None, (NUL_BYTE, f"{where}: a NUL byte at byte {nul}", raw_text(data))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, (INVALID_UTF8, f"{where}: byte {e.start} is not valid UTF-8", raw_text(data))
    text = text.lstrip("\ufeff")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return None, (MALFORMED_JSON, f"{where}: {e.msg} at column {e.colno}", raw_text(text))
    except RecursionError:
        return None, (NESTING_TOO_DEEP, f"{where}: nested too deeply to read (over ~1,000 levels)", raw_text(text))
    except ValueError as e:  # an integer of more than 4,300 digits (Python's int-from-text limit)
        return None, (NUMBER_OUT_OF_RANGE, f"{where}: {str(e).split(';')[0]}", raw_text(text))
    if has_surrogate(value):
        return None, (INVALID_UNICODE, f"{where}: a lone surrogate escape (\\ud800-\\udfff)", raw_text(text))
    return value, None


def _parse_line(line: bytes, lineno: int) -> tuple[Any, tuple[str, str, str] | None]:
    return _parse_slow(line, f"line {lineno}")


# --- readers --------------------------------------------------------------------------------------------------


def _jsonl(src: Source, f: Iterable[bytes] | None = None, first_lineno: int = 1,
           batch_rows: int = BATCH_ROWS) -> Iterator[list[Record]]:
    own = f is None
    if own:
        _check_head(src, _head(src))
        f = open_binary(src)
    assert f is not None
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
                value, err = None, (INVALID_UNICODE, f"line {lineno}: a lone surrogate escape", raw_text(line))
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
            f.close()  # type: ignore[attr-defined]


# Tokens that matter for splitting a JSON array into its elements: whole strings (skipped) and structure.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},]', re.DOTALL)


def array_items(data: bytes, start: int) -> Iterator[tuple[int, int]]:
    """Byte spans of the top-level elements of the JSON array whose `[` is at `start`, found without parsing
    them, so that one element nobody can parse costs only itself. A truncated array's tail is its last span."""
    depth = 0
    item = start + 1
    for m in _TOKEN.finditer(data, start):
        c = data[m.start()]
        if c == 0x22:  # a string
            continue
        if c in b"[{":
            depth += 1
        elif c in b"]}":
            depth -= 1
            if depth == 0:
                yield item, m.start()
                return
        elif depth == 1:  # a comma between two elements
            yield item, m.start()
            item = m.end()
    yield item, len(data)


def _json_items(src: Source, data: bytes, start: int, batch_rows: int) -> Iterator[list[Record]]:
    """A JSON array the fast parsers refused, element by element: bad elements become rejects."""
    batch: list[Record] = []
    idx = 0
    for a, b in array_items(data, start):
        chunk = data[a:b]
        if not chunk.strip():
            continue  # `[]`, or a trailing comma
        try:
            value, err = _loads(chunk), None
        except ValueError:
            value, err = _parse_slow(chunk.strip(), f"row {idx}")
        batch.append((idx, value, err))
        idx += 1
        if len(batch) >= batch_rows:
            yield batch
            batch = []
    if idx == 0:
        raise InputError(f"{src.name}: empty JSON array (no rows)")
    if batch:
        yield batch


def _json(src: Source, batch_rows: int = BATCH_ROWS) -> Iterator[list[Record]]:
    with open_binary(src) as f:
        data = f.read()
    _check_head(src, data[:HEAD])
    if data.startswith(BOM):
        data = data[3:]
    start = len(data) - len(data.lstrip())
    first = data[start : start + 1]
    lenient = False
    strict_utf8 = True
    try:
        value = _loads(data)
    except ValueError:
        # json reads what orjson refuses (NaN, >64-bit integers, lone surrogates); bad bytes become lone
        # surrogates (surrogateescape) and rows holding them are rejected.
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text, strict_utf8 = data.decode("utf-8", "surrogateescape"), False
        try:
            value = json.loads(text)
            lenient = True
        except (ValueError, RecursionError):
            del text
            if first == b"[":  # one bad element: read the array element by element
                yield from _json_items(src, data, start, batch_rows)
                return
            # Not one JSON value: JSON Lines under a .json name.
            yield from _jsonl(Source(src.name, src.path, "jsonl"), iter(data.splitlines(keepends=True)),
                              batch_rows=batch_rows)
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
                dumped = _dump_lenient(row)  # escapes stay escapes; bytes that were not UTF-8 come back as bytes
                raw = raw_text(dumped.encode("utf-8", "backslashreplace") if strict_utf8 else safe_bytes(dumped))
                if strict_utf8 or not _only_escaped_bytes(row):
                    why = f"row {j}: a lone surrogate escape (\\ud800-\\udfff)"
                    batch.append((j, None, (INVALID_UNICODE, why, raw)))
                else:
                    batch.append((j, None, (INVALID_UTF8, f"row {j}: holds bytes that are not valid UTF-8", raw)))
            else:
                batch.append((j, row, None))
        yield batch


def _dump_lenient(row: Any) -> str:
    try:
        return json.dumps(row, ensure_ascii=False)
    except (ValueError, RecursionError):
        return repr(row)[:RAW_LIMIT]


def _parquet(src: Source, batch_rows: int = BATCH_ROWS) -> Iterator[list[Record]]:
    pf = open_parquet(src)
    idx = 0
    with pf:
        for rb in _parquet_batches(src, pf, batch_rows):
            rows = rb.to_pylist()
            yield [(idx + i, r, None) for i, r in enumerate(rows)]
            idx += len(rows)


def open_parquet(src: Source) -> Any:
    import pyarrow.parquet as pq

    with open(src.path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(4)
    if size == 0:
        raise InputError(f"{src.name}: empty file")
    if head != b"PAR1":
        raise InputError(f"{src.name}: not a Parquet file (no PAR1 header)")
    try:
        pf = pq.ParquetFile(src.path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid/OSError for non-Parquet bytes
        raise InputError(f"{src.name}: not a readable Parquet file ({_first_line(e)})") from None
    if pf.metadata.num_rows == 0:
        raise InputError(f"{src.name}: empty Parquet file (no rows)")
    return pf


def _parquet_batches(src: Source, pf: Any, batch_rows: int, columns: list[str] | None = None) -> Iterator[Any]:
    """Record batches; a corrupt page is one line naming the file and row group (pyarrow raises OSError or
    ArrowInvalid from deep in the decoder)."""
    import pyarrow as pa

    for g in range(pf.metadata.num_row_groups):
        try:
            batches = list(pf.iter_batches(batch_size=batch_rows, row_groups=[g], columns=columns))
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"{src.name}: corrupt Parquet data in row group {g} ({_first_line(e)})") from None
        yield from batches


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


class _Lines:
    """Physical lines for csv.reader, with a push-back queue: after a broken record the reader restarts at the
    line after the record's first line (re-sync), so a stray quote costs only its own record."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines = lines
        self.pending: deque[tuple[int, str]] = deque()
        self.lineno = 0
        self.taken: list[tuple[int, str]] = []  # lines handed out for the record being read

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.pending:
            item = self.pending.popleft()
        else:
            self.lineno += 1
            item = (self.lineno, next(self.lines))
        self.taken.append(item)
        return item[1]

    def resync(self) -> tuple[int, str]:
        """Give back all but the first line of the broken record; return the first (line number, text)."""
        first, rest = self.taken[0], self.taken[1:]
        self.pending.extendleft(reversed(rest))
        self.taken = []
        return first


def _csv(src: Source, batch_rows: int = BATCH_ROWS) -> Iterator[list[Record]]:
    _check_head(src, _head(src))
    # Fields can be long (a 10 MB reply); csv's default limit is 128 KiB. The limit is process-wide in the csv
    # module, so we raise it once to the largest value it accepts.
    if csv.field_size_limit() < sys.maxsize // 4:
        csv.field_size_limit(2**31 - 1)
    delimiter = "\t" if src.kind == "tsv" else ","
    with io.TextIOWrapper(open_binary(src), encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        lines = _Lines(iter(f))
        reader = csv.reader(lines, delimiter=delimiter, strict=True)
        header: list[str] | None = None
        while not header:
            try:
                header = next(reader)
            except StopIteration:
                raise InputError(f"{src.name}: empty CSV file") from None
            except csv.Error as e:
                raise InputError(f"{src.name}: line {lines.lineno}: the header is not valid CSV ({e})") from None
            lines.taken = []
        batch: list[Record] = []
        idx = 0
        while True:
            try:
                rec = next(reader)
                err = None
                if len(rec) > len(header):
                    err = f"{len(rec)} fields, header has {len(header)}"
            except StopIteration:
                break
            except csv.Error as e:
                rec, err = [], f"not valid CSV ({e})"
            if err is not None:
                if len(lines.taken) > 1 or not rec:  # a broken quote swallowed what follows: re-sync
                    spans = len(lines.taken)
                    lineno, text = lines.resync()
                    reader = csv.reader(lines, delimiter=delimiter, strict=True)
                    if rec:
                        err = f"a quoted field runs over {spans} lines into {err} (a broken quote?)"
                    err += f"; reading goes on at line {lineno + 1}"
                else:
                    lineno, text = lines.taken[0]
                batch.append((idx, None, (MALFORMED_CSV, f"line {lineno}: {err}", raw_text(text))))
            elif rec:
                row = dict(zip(header, rec + [None] * (len(header) - len(rec)), strict=True))
                lineno = lines.taken[0][0]
                if has_surrogate(row):
                    raw = raw_text(delimiter.join(rec))
                    batch.append((idx, None, (INVALID_UTF8, f"line {lineno}: bytes that are not valid UTF-8", raw)))
                elif any("\x00" in v for v in rec):
                    batch.append((idx, None, (NUL_BYTE, f"line {lineno}: a NUL byte", raw_text(delimiter.join(rec)))))
                else:
                    batch.append((idx, row, None))
            else:
                lines.taken = []
                continue  # a blank line
            lines.taken = []
            idx += 1
            if len(batch) >= batch_rows:
                yield batch
                batch = []
        if idx == 0:
            raise InputError(f"{src.name}: CSV file has a header but no rows")
        if batch:
            yield batch


def _dataset(src: Source, batch_rows: int = BATCH_ROWS) -> Iterator[list[Record]]:
    idx = 0
    for tbl in dataset_tables(src, batch_rows):
        rows = tbl.to_pylist()
        yield [(idx + i, r, None) for i, r in enumerate(rows)]
        idx += len(rows)


def dataset_tables(src: Source, batch_rows: int) -> Iterator[Any]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(src.path))
    except Exception as e:  # noqa: BLE001 - datasets raises FileNotFoundError/ValueError variants for broken folders
        raise InputError(f"{src.name}: can't load this datasets folder ({_first_line(e)})") from None
    if isinstance(ds, datasets.DatasetDict):  # a split folder named directly holds a DatasetDict: not expected
        raise InputError(f"{src.name}: holds several splits; name the folder above it")
    if len(ds) == 0:
        raise InputError(f"{src.name}: empty dataset (no rows)")
    try:
        yield from ds.with_format("arrow").iter(batch_size=batch_rows)
    except (OSError, ValueError) as e:
        raise InputError(f"{src.name}: corrupt datasets folder ({_first_line(e)})") from None


def _arrow_kind(t: Any) -> str:
    import pyarrow.types as pt

    if pt.is_string(t) or pt.is_large_string(t) or pt.is_string_view(t):
        return "str"
    if pt.is_list(t) or pt.is_large_list(t) or pt.is_fixed_size_list(t) or pt.is_list_view(t) or pt.is_map(t):
        return "list"
    if pt.is_struct(t):
        return "dict"
    if pt.is_integer(t) or pt.is_floating(t) or pt.is_decimal(t):
        return "num"
    return "bool" if pt.is_boolean(t) else str(t)


def arrow_columns(src: Source, stats: Any) -> None:
    """Count a Parquet file's or datasets folder's columns (non-null rows, kind) into `stats` from Arrow,
    without building Python rows."""
    with file_errors(src):
        if src.kind == "parquet":
            pf = open_parquet(src)
            with pf:
                batches: Iterable[Any] = _parquet_batches(src, pf, BATCH_ROWS)
                for rb in batches:
                    _count_batch(rb, stats)
        else:
            for tbl in dataset_tables(src, BATCH_ROWS):
                _count_batch(tbl, stats)


def _count_batch(tbl: Any, stats: Any) -> None:
    stats.add_counts(tbl.num_rows, {f.name: (tbl.num_rows - tbl.column(i).null_count, _arrow_kind(f.type))
                                    for i, f in enumerate(tbl.schema)})


READERS: dict[str, Callable[..., Iterator[list[Record]]]] = {
    "jsonl": _jsonl, "json": _json, "parquet": _parquet, "csv": _csv, "tsv": _csv, "dataset": _dataset,
}


def read(src: Source, batch_rows: int = BATCH_ROWS) -> Iterator[list[Record]]:
    """Batches of (row_index, parsed value, error) for one source (`batch_rows` small to peek at the head)."""
    with file_errors(src):
        yield from READERS[src.kind](src, batch_rows=batch_rows)


@contextmanager
def file_errors(src: Source) -> Iterator[None]:
    """Turn what the OS or a decompressor raises while reading a source into one InputError line naming it."""
    import lzma
    import zlib

    name = src.name
    try:
        yield
    except InputError:
        raise
    except PermissionError:
        raise InputError(f"{name}: permission denied") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a folder, not a file") from None
    except FileNotFoundError:
        raise InputError(f"{name}: the file went away while it was being read") from None
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
        if src.compression:
            raise InputError(f"{name}: corrupt or truncated {src.compression} data ({_first_line(exc)})") from None
        if isinstance(exc, OSError):
            raise InputError(f"{name}: can't be read ({exc.strerror or _first_line(exc)})") from None
        raise
