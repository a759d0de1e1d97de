"""Small I/O helpers shared by every stage: atomic writes (temp file + rename) and file hashes."""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

# Rows per Parquet row group for every sink. Polars' default morsels (~123k rows, several in flight) hold ~800 MB
# of ~1 KB pairs whatever the input size; 20k-row groups keep a stage's memory flat (bench/bench_pipeline.py).
ROW_GROUP = 20_000
# Rows per streaming morsel for wide rows (message lists): Polars' default let the export's TRL transform hold
# 718 MB at 1M pairs; 2,000 rows held 314 MB (bench/bench_pipeline.py).
STREAM_CHUNK = 2_000
# Codec of the stage files in a run folder (written at every step, read once by the next one): zstd level 1 costs
# 44% less CPU to write and read back than Polars' default level 3, for files 27% larger; lz4 saves 55% but its
# files are 63% larger and LZ4_RAW, which older Parquet readers lack (bench/bench_pipeline.py --codecs). Ingest's
# pyarrow writer already uses level 1 (pyarrow's default); the export keeps Polars' default, zstd level 3.
STAGE_CODEC: Final = "zstd"  # Final: its type is the literal, one of the codecs sink_parquet names
STAGE_CODEC_LEVEL = 1


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it over `path`, on error remove it.

    An interrupted run never leaves a half-written file where a finished one is expected."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def canonical_name(path: str | Path) -> str:
    """The one spelling of a path that curate records (`source`, manifest, pipeline file): relative to the
    working directory when the path lies under it, absolute otherwise; `.`/`..`/`//` folded; symlinks *not*
    resolved (the name the user sees). `./data/a.jsonl`, `data//a.jsonl` and `$PWD/data/a.jsonl` all give
    `data/a.jsonl`."""
    absolute = os.path.abspath(os.fspath(path))
    rel = os.path.relpath(absolute, os.getcwd())
    return absolute if rel == ".." or rel.startswith(".." + os.sep) else rel


@contextmanager
def writing(where: str | Path) -> Iterator[None]:
    """Turn an OS error a user can fix (disk full, read-only, permission, a file in the way) raised while
    writing under `where` — by Python, Polars or pyarrow — into one OutputError line naming the place."""
    from curate.errors import CurateError, OutputError, user_os_error

    try:
        yield
    except CurateError:
        raise
    except Exception as exc:
        what = user_os_error(exc, where)
        if what is None:
            raise
        raise OutputError(what) from None


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes. Remembered per (path, size, mtime) within a process: the runner's manifest and
    ingest's row ids both need it, and reading a big input twice for the same answer is waste."""
    p = Path(path)
    st = p.stat()
    return _sha256_file(str(p.resolve()), st.st_size, st.st_mtime_ns, chunk)


@functools.lru_cache(maxsize=4096)
def _sha256_file(path: str, size: int, mtime_ns: int, chunk: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: str | Path) -> str:
    """SHA-256 over a file, or over every file under a folder (relative names and contents, in sorted order)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(f"{f.relative_to(p).as_posix()}\0{sha256_file(f)}\0".encode())
    return h.hexdigest()


def count_rows(path: str | Path) -> int:
    """Rows of a Parquet file, from its metadata."""
    import polars as pl

    return pl.scan_parquet(path).select(pl.len()).collect().item()
