"""Record vectors as one normalised float32 matrix per vector field, for brute-force "Find similar".

Why a cache of our own: argilla stores each vector as JSON text. Parsing 100k × 384 of them takes 10-30 s on two
cores, so the matrix is (1) kept in memory, (2) refreshed incrementally — only vectors written after the cached
watermark are read — and (3) saved next to the server's data (ARGILLA_HOME_PATH/curate-vectors/, private), so
the first "Find similar" after a restart loads a binary file (~0.1 s at 100k) instead of re-parsing JSON. The
server also refreshes it in the background after each record upload (and once at start), so a search seldom
waits for it.

Freshness: a cached matrix is current when the database's (count, latest updated_at) of that vector field
equals the cache's; a changed count after applying the new rows means records were deleted, and the surviving
ids are re-read. Reads go through argilla's synchronous engine in a worker thread, so parsing never blocks the
server's event loop.

Runs inside the argilla-server virtualenv: only the stdlib, numpy, sqlalchemy and argilla_server.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np

_LOGGER = logging.getLogger("curate.review")
SAVE_EVERY = 1000  # rows changed since the file was written before it is written again
FORMAT = 1


@dataclass
class Matrix:
    settings_id: UUID
    dataset_id: UUID
    ids: list[UUID]
    matrix: np.ndarray  # (n, dims) float32, rows L2-normalised
    count: int  # the database's vector count this matrix reflects
    last: str | None  # the database's max(updated_at), as text
    unsaved: int = 0
    pos: dict[UUID, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.pos:
            self.pos = {rid: i for i, rid in enumerate(self.ids)}


_CACHE: dict[UUID, Matrix] = {}
_LOCKS: dict[UUID, threading.Lock] = {}
_GUARD = threading.Lock()


def _lock(settings_id: UUID) -> threading.Lock:
    with _GUARD:
        return _LOCKS.setdefault(settings_id, threading.Lock())


def forget_dataset(dataset_id: UUID) -> None:
    """A dataset was deleted: drop its matrices from memory and disk."""
    with _GUARD:
        gone = [k for k, m in _CACHE.items() if m.dataset_id == dataset_id]
        for k in gone:
            _CACHE.pop(k, None)
    for k in gone:
        try:
            _path(k).unlink()
        except OSError:
            pass


def _dir() -> Path:
    from argilla_server.settings import settings

    return Path(settings.home_path) / "curate-vectors"


def _path(settings_id: UUID) -> Path:
    return _dir() / f"{settings_id}.npz"


def _normalise(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (rows / norms).astype(np.float32, copy=False)


def _parse(raw: Any, dims: int) -> np.ndarray | None:
    if raw is None:
        return None
    values = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    row = np.asarray(values, dtype=np.float32)
    return row if row.shape == (dims,) else None


def _save(m: Matrix) -> None:
    path = _path(m.settings_id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
        np.savez(
            fh,
            format=np.int64(FORMAT),
            dataset_id=np.frombuffer(m.dataset_id.bytes, dtype=np.uint8),
            ids=np.frombuffer(b"".join(u.bytes for u in m.ids), dtype=np.uint8).reshape(-1, 16),
            matrix=m.matrix,
            count=np.int64(m.count),
            last=np.array(m.last or ""),
        )
    os.replace(tmp, path)
    m.unsaved = 0


def _load(settings_id: UUID) -> Matrix | None:
    path = _path(settings_id)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) != FORMAT:
                return None
            ids = [UUID(bytes=bytes(row)) for row in z["ids"]]
            return Matrix(
                settings_id=settings_id, dataset_id=UUID(bytes=bytes(z["dataset_id"])), ids=ids,
                matrix=np.array(z["matrix"], dtype=np.float32), count=int(z["count"]), last=str(z["last"]) or None,
            )
    except (OSError, ValueError, KeyError) as exc:
        _LOGGER.warning("curate-sql: ignoring unreadable vector cache %s (%s)", path, exc)
        return None


def _sql(conn: Any, statement: str, **params: Any) -> Any:
    from sqlalchemy import text

    return conn.execute(text(statement), params)


def _id(value: Any, is_pg: bool) -> str:
    """A UUID as the raw SQL driver wants it: text for psycopg2, argilla's CHAR(32) hex on SQLite."""
    return str(value) if is_pg else value.hex


def _as_uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def refresh_sync(dataset_id: UUID, settings_id: UUID) -> Matrix:
    """The current matrix of one vector field (see the module docstring). Thread-safe; blocking."""
    from argilla_server.database import sync_engine
    from argilla_server.settings import settings

    is_pg = bool(settings.database_is_postgresql)
    sid = _id(settings_id, is_pg)
    with _lock(settings_id):
        with sync_engine.connect() as conn:
            count, last = _sql(
                conn, "SELECT count(*), CAST(max(updated_at) AS TEXT) FROM vectors WHERE vector_settings_id = :s", s=sid
            ).one()
            with _GUARD:
                m = _CACHE.get(settings_id)
            if m is None:
                m = _load(settings_id)
            if m is not None and m.count == count and m.last == last:
                _remember(m)
                return m
            dims = _sql(conn, "SELECT dimensions FROM vectors_settings WHERE id = :s", s=sid).scalar_one()
            t0 = time.perf_counter()
            if m is None or m.matrix.shape[1:] != (dims,):
                m = _build(conn, dataset_id, settings_id, sid, dims, count, last)
                full = True
            else:
                m = _update(conn, m, sid, dims, count, last, is_pg)
                full = False
            _LOGGER.info("curate-sql: vector cache %s %s (%d rows) in %.2f s", settings_id,
                         "built" if full else "updated", len(m.ids), time.perf_counter() - t0)
        _remember(m)
        if full or m.unsaved >= SAVE_EVERY:
            try:
                _save(m)
            except OSError as exc:
                _LOGGER.warning("curate-sql: could not save the vector cache (%s)", exc)
        return m


def _remember(m: Matrix) -> None:
    with _GUARD:
        _CACHE[m.settings_id] = m


def _stream(conn: Any, statement: str, **params: Any):
    from sqlalchemy import text

    return conn.execution_options(stream_results=True, yield_per=2000, curate_no_timeout=True).execute(
        text(statement), params
    )


def _build(conn: Any, dataset_id: UUID, settings_id: UUID, sid: Any, dims: int, count: int, last: Any) -> Matrix:
    # Parse straight into a preallocated matrix: 100k × 384 as Python lists first would need over a gigabyte.
    matrix = np.zeros((count, dims), dtype=np.float32)
    ids: list[UUID] = []
    rows = _stream(
        conn,
        # record_id order: read along the (record_id, vector_settings_id) unique index, no sort of the JSON rows
        "SELECT record_id, CAST(value AS TEXT) FROM vectors WHERE vector_settings_id = :s ORDER BY record_id",
        s=sid,
    )
    for record_id, raw in rows:
        if len(ids) >= count:
            break
        row = _parse(raw, dims)
        if row is None:
            continue
        matrix[len(ids)] = row
        ids.append(_as_uuid(record_id))
    matrix = _normalise(matrix[: len(ids)])
    return Matrix(settings_id=settings_id, dataset_id=dataset_id, ids=ids, matrix=matrix, count=count, last=last)


def _update(conn: Any, m: Matrix, sid: Any, dims: int, count: int, last: Any, is_pg: bool) -> Matrix:
    # ">=": rows written in the same instant as the watermark may have landed after it was read.
    since = "CAST(:since AS timestamp)" if is_pg else ":since"
    rows = _stream(
        conn,
        "SELECT record_id, CAST(value AS TEXT) FROM vectors WHERE vector_settings_id = :s "
        f"AND updated_at >= {since}",
        s=sid, since=m.last or "1970-01-01 00:00:00",
    )
    ids, pos = list(m.ids), dict(m.pos)
    changed: dict[int, np.ndarray] = {}
    added: list[np.ndarray] = []
    for record_id, raw in rows:
        row = _parse(raw, dims)
        rid = _as_uuid(record_id)
        if row is None:
            continue
        if rid in pos:
            changed[pos[rid]] = row
        else:
            pos[rid] = len(ids)
            ids.append(rid)
            added.append(row)
    matrix = m.matrix
    if added:
        matrix = np.concatenate([matrix, _normalise(np.stack(added))])
    elif changed:
        matrix = matrix.copy()  # searches running on the old matrix keep it intact
    for i, row in changed.items():
        matrix[i] = _normalise(row[None, :])[0]
    fresh = Matrix(settings_id=m.settings_id, dataset_id=m.dataset_id, ids=ids, matrix=matrix, count=count, last=last,
                   unsaved=m.unsaved + len(changed) + len(added), pos=pos)
    if len(ids) != count:  # some records (and their vectors) were deleted: keep the survivors
        rows = _sql(conn, "SELECT record_id FROM vectors WHERE vector_settings_id = :s", s=sid).scalars()
        alive = {_as_uuid(r) for r in rows}
        keep = [i for i, rid in enumerate(ids) if rid in alive]
        fresh = Matrix(settings_id=m.settings_id, dataset_id=m.dataset_id, ids=[ids[i] for i in keep],
                       matrix=matrix[keep], count=count, last=last, unsaved=fresh.unsaved + len(ids) - len(keep))
    return fresh


# ---------------------------------------------------------------------------------------------- background refresh
_PENDING: set[UUID] = set()
_RUNNING = threading.Event()
BACKGROUND = False  # set by the server process (boot.py); the rq worker never keeps matrices


def schedule(dataset_id: UUID) -> None:
    """Refresh this dataset's matrices soon, in one background thread (coalescing bursts of uploads)."""
    if not BACKGROUND:
        return
    with _GUARD:
        _PENDING.add(dataset_id)
        if _RUNNING.is_set():
            return
        _RUNNING.set()
    threading.Thread(target=_drain, name="curate-vectors", daemon=True).start()


def _settings_of(dataset_id: UUID | None) -> list[tuple[UUID, UUID]]:
    from argilla_server.database import sync_engine
    from argilla_server.settings import settings

    with sync_engine.connect() as conn:
        if dataset_id is None:
            rows = _sql(conn, "SELECT dataset_id, id FROM vectors_settings").all()
        else:
            rows = _sql(conn, "SELECT dataset_id, id FROM vectors_settings WHERE dataset_id = :d",
                        d=_id(dataset_id, bool(settings.database_is_postgresql))).all()
    return [(_as_uuid(d), _as_uuid(s)) for d, s in rows]


def _drain() -> None:
    try:
        while True:
            time.sleep(0.5)  # let a burst of batches land first
            with _GUARD:
                if not _PENDING:
                    _RUNNING.clear()
                    return
                dataset_id = _PENDING.pop()
            try:
                for ds, sid in _settings_of(dataset_id):
                    refresh_sync(ds, sid)
            except Exception as exc:  # noqa: BLE001 - a failed warm-up only means the next search refreshes
                _LOGGER.warning("curate-sql: background vector refresh failed: %s", exc)
    except BaseException:
        _RUNNING.clear()
        raise


def warm_all() -> threading.Thread:
    """At server start: load (or build) every vector field's matrix, in a background thread (returned, started)."""

    def run() -> None:
        try:
            for ds, sid in _settings_of(None):
                refresh_sync(ds, sid)
        except Exception as exc:  # noqa: BLE001
            _LOGGER.warning("curate-sql: vector warm-up failed: %s", exc)

    thread = threading.Thread(target=run, name="curate-vectors-warm", daemon=True)
    thread.start()
    return thread
