"""What curate's embedded server changes in argilla-server 2.8.0, in one place, and why.

argilla-server is feature-frozen upstream, so nothing of it is forked or patched on disk. This module, imported
by the server process (curate/review/boot.py) before the app serves its first request, adds:

- **Own responses only** (`GET /api/v1/records/{id}`): argilla returns every annotator's responses (and every
  metadata value) to anyone in the workspace, which breaks independent annotation; and it answers 500 for
  records with vectors (it lazy-loads each vector's settings outside the async session). The route is replaced by
  one that loads vectors with their settings and, for users who may not list all responses (annotators), keeps
  only the caller's own response and the metadata they may see — what `/me/datasets/{id}/records/search`
  already does.
- **No internal text in errors**: argilla's catch-all handler puts the exception text (SQL, driver messages,
  tracebacks' last line) into the 500 body. Ours logs it and answers a fixed message.
- **Bounded requests**: request bodies are capped before they are read (413; a large record upload must carry a
  valid key first, 401 otherwise); every SELECT has a time limit (SQLite progress handler, PostgreSQL
  `statement_timeout`), answered 503 when it is hit; text queries are capped in the search engine (422).

Runs inside the argilla-server virtualenv: only the stdlib, argilla_server and its dependencies. No
`from __future__ import annotations`: FastAPI reads the route's annotations at runtime, from local imports.
"""

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from typing import Any

_LOGGER = logging.getLogger("curate.review")

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Request bounds of the embedded server. Each can be set with the environment variable CURATE_REVIEW_<NAME>
    (upper case), e.g. CURATE_REVIEW_QUERY_TIMEOUT_S=10."""

    max_body_bytes: int = field(
        default=2 * MiB, metadata={"help": "largest request body (search, responses, settings); larger: 413"}
    )
    max_records_body_bytes: int = field(
        default=64 * MiB,
        metadata={"help": "largest body of a record upload (bulk upsert/create/update), accepted only from a "
                          "caller whose API key or token is checked before the body is read"},
    )
    max_query_chars: int = field(
        default=1000, metadata={"help": "longest search-box query, in characters; longer: 422"}
    )
    max_query_terms: int = field(default=32, metadata={"help": "most terms in one search-box query; more: 422"})
    query_timeout_s: float = field(
        default=5.0, metadata={"help": "time limit of one SELECT statement; a search over it answers 422, others 503"}
    )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Limits":
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"CURATE_REVIEW_{f.name.upper()}")
            if raw:
                values[f.name] = float(raw) if f.type in (float, "float") else int(raw)
        return cls(**values)


LIMITS = Limits.from_env()

# Record uploads: the only requests that legitimately carry megabytes (vectors, long replies).
_RECORD_WRITES = (("POST", "/records/bulk"), ("PUT", "/records/bulk"), ("POST", "/records"), ("PATCH", "/records"))


def _is_record_write(method: str, path: str) -> bool:
    if not path.startswith("/api/v1/datasets/"):
        return False
    return any(method == m and path.endswith(suffix) for m, suffix in _RECORD_WRITES)


# ---------------------------------------------------------------------------------------------- body limit
Send = Callable[[dict], Awaitable[None]]
Receive = Callable[[], Awaitable[dict]]


async def _json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


_LOOPBACK = {"127.0.0.1", "::1"}


class BodyLimit:
    """ASGI wrapper: refuse an over-large body from its Content-Length before reading a byte of it; a body of
    unknown length (chunked) is read at most up to the limit. Large record uploads need a valid credential
    first, so an anonymous caller can't make the server hold 64 MB."""

    def __init__(
        self, app: Any, limits: Limits = LIMITS, authenticate: Callable[[dict], Awaitable[bool]] | None = None
    ):
        self.app = app
        self.limits = limits
        self.authenticate = authenticate or _authenticated

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if (scope.get("client") or ("",))[0] in _LOOPBACK:
            # argilla compresses every response (brotli, gzip at level 9): pure CPU cost on the same machine
            # (6% of the server's time per pushed record); a reverse proxy in front can compress for the network.
            plain = [(k, v) for k, v in scope.get("headers") or [] if k.lower() != b"accept-encoding"]
            scope = {**scope, "headers": plain}
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        length_raw = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if length_raw is None and not chunked:
            return await self.app(scope, receive, send)
        try:
            length = int(length_raw) if length_raw is not None else None
        except ValueError:
            return await _json(send, 400, "bad Content-Length header")
        big = _is_record_write(scope["method"], scope.get("path", ""))
        limit = self.limits.max_records_body_bytes if big else self.limits.max_body_bytes
        if length is not None and length > limit:
            return await _json(send, 413, f"request body of {length} bytes is over the limit of {limit} bytes")
        if big and (length is None or length > self.limits.max_body_bytes) and not await self.authenticate(headers):
            return await _json(send, 401, "a valid API key or token is needed before a large upload is read")
        if length is not None:
            return await self.app(scope, _counting(receive, limit), send)
        # Unknown length: read up to the limit, then hand the buffered body on.
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            total += len(message.get("body", b""))
            if total > limit:
                return await _json(send, 413, f"request body is over the limit of {limit} bytes")
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def _counting(receive: Receive, limit: int) -> Receive:
    """A client may send more than it declared; stop reading past the limit (the app sees a disconnect)."""
    seen = 0

    async def wrapped() -> dict:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                return {"type": "http.disconnect"}
        return message

    return wrapped


async def _authenticated(headers: dict[bytes, bytes]) -> bool:
    """A valid API key (one indexed lookup) or a valid signed token (no database)."""
    key = headers.get(b"x-argilla-api-key")
    if key:
        from argilla_server.contexts import accounts
        from argilla_server.database import AsyncSessionLocal

        async with AsyncSessionLocal() as db:
            return await accounts.get_user_by_api_key(db, key.decode("latin-1")) is not None
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        from argilla_server.errors import UnauthorizedError
        from argilla_server.security.authentication.jwt import JWT

        try:
            JWT.decode(auth[7:].strip())
            return True
        except UnauthorizedError:
            return False
    return False


# ---------------------------------------------------------------------------------------------- query time limit
class QueryTimeout(Exception):
    """A SELECT ran past Limits.query_timeout_s and was stopped."""


def install_query_timeout(engine: Any, timeout_s: float, is_postgresql: bool) -> None:
    """Give every SELECT on `engine` (argilla_server's async engine) a time limit.

    SQLite: a progress handler (called every 100,000 virtual-machine steps, in aiosqlite's thread) aborts the
    statement once its deadline has passed; the deadline is set just before each SELECT and cleared after it
    (streamed results, e.g. the vector cache load, are read after `after_cursor_execute` and stay unlimited).
    PostgreSQL: `statement_timeout` for the session, lifted around statements that are not SELECTs (a cascading
    delete of a 100k-record dataset may take longer)."""
    from sqlalchemy import event

    sync_engine = engine.sync_engine
    if timeout_s <= 0:
        return

    def _is_select(statement: str) -> bool:
        head = statement.lstrip()[:6].upper()
        return head.startswith(("SELECT", "WITH"))

    if not is_postgresql:

        @event.listens_for(sync_engine, "connect")
        def _progress(dbapi_connection, record):
            state: dict[str, float | None] = {"deadline": None}
            record.info["curate_timeout"] = state
            raw = dbapi_connection._connection  # aiosqlite.Connection; its sqlite3 connection lives in its thread

            def handler() -> int:
                deadline = state["deadline"]
                return 1 if deadline is not None and time.monotonic() > deadline else 0

            # Every 100,000 virtual-machine steps (~1 ms): often enough for the limit, rare enough that taking the
            # GIL for the check doesn't slow the event loop while a long scan runs.
            dbapi_connection.await_(raw._execute(lambda: raw._conn.set_progress_handler(handler, 100_000)))

        @event.listens_for(sync_engine, "before_cursor_execute")
        def _start(conn, cursor, statement, parameters, context, executemany):
            state = conn.info.get("curate_timeout")
            exempt = conn.get_execution_options().get("curate_no_timeout")
            if state is not None and _is_select(statement) and not exempt:
                state["deadline"] = time.monotonic() + timeout_s

        @event.listens_for(sync_engine, "after_cursor_execute")
        def _end(conn, cursor, statement, parameters, context, executemany):
            state = conn.info.get("curate_timeout")
            if state is not None:
                state["deadline"] = None

        @event.listens_for(sync_engine, "handle_error")
        def _clear(ctx):
            state = ctx.connection.info.get("curate_timeout") if ctx.connection is not None else None
            if state is not None:
                state["deadline"] = None

        return

    ms = str(int(timeout_s * 1000))

    # The session default comes with the connection (asyncpg server_settings), so no transaction can undo it; a
    # SET inside a transaction that rolls back is undone by PostgreSQL itself, so lifting it can't leak either.
    @event.listens_for(sync_engine, "do_connect")
    def _pg_timeout(dialect, record, cargs, cparams):
        cparams.setdefault("server_settings", {})["statement_timeout"] = ms

    def _set(conn, value: str) -> None:
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.execute(f"SET statement_timeout = {value}")
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _pg_lift(conn, cursor, statement, parameters, context, executemany):
        if not _is_select(statement) or conn.get_execution_options().get("curate_no_timeout"):
            _set(conn, "0")
            conn.info["curate_lifted"] = True

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _pg_restore(conn, cursor, statement, parameters, context, executemany):
        if conn.info.pop("curate_lifted", False):
            _set(conn, ms)

    @event.listens_for(sync_engine, "handle_error")
    def _pg_forget(ctx):
        if ctx.connection is not None:
            ctx.connection.info.pop("curate_lifted", None)


# PostgreSQL settings for the server's own sessions (nothing in the server's config files changes). `jit = off`:
# the engine's statements take tens of ms, and a plan costed over jit_above_cost (100,000 by default) pays LLVM
# compilation on every call (each statement is planned afresh): at 100k records the whole-record text plan is
# costed ~256,000, and a variant costed 612,000 (over the inlining and optimisation thresholds, 500,000) spent
# 553 ms of its 588 ms execution in compilation (EXPLAIN ANALYZE, psql session with the server's default jit).
PG_SESSION_SETTINGS = {"jit": "off"}


def install_pg_session_settings(engine: Any) -> None:
    """Give every PostgreSQL connection of `engine` (argilla_server's async engine) PG_SESSION_SETTINGS, as
    connection parameters (asyncpg server_settings), so no transaction can undo them."""
    from sqlalchemy import event

    @event.listens_for(engine.sync_engine, "do_connect")
    def _pg_settings(dialect, record, cargs, cparams):
        cparams.setdefault("server_settings", {}).update(PG_SESSION_SETTINGS)


def is_timeout(exc: BaseException) -> bool:
    """True for a statement stopped by the time limit (SQLite 'interrupted', PostgreSQL query_canceled)."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return False
        text = str(seen).lower()
        if isinstance(seen, QueryTimeout) or "interrupted" in text or "statement timeout" in text or \
                type(seen).__name__ in ("QueryCanceledError",):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return False


# ---------------------------------------------------------------------------------------------- routes, errors
def _install_routes(api_v1: Any) -> None:
    from uuid import UUID

    from argilla_server.api.policies.v1 import (
        DatasetPolicy,
        RecordPolicy,
        authorize,
        is_authorized,
    )
    from argilla_server.api.schemas.v1.records import Record as RecordSchema
    from argilla_server.database import get_async_db
    from argilla_server.models import Dataset, Record, User, Vector
    from argilla_server.security import auth
    from fastapi import APIRouter, Depends, Security
    from fastapi.routing import APIRoute
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import selectinload

    async def get_record(
        *,
        db: AsyncSession = Depends(get_async_db),  # noqa: B008 - FastAPI dependency
        record_id: UUID,
        current_user: User = Security(auth.get_current_user),  # noqa: B008
    ) -> RecordSchema:
        """argilla's GET /records/{id}, with vectors loaded with their settings and, for annotators, only their
        own response and the metadata they may see."""
        record = await Record.get_or_raise(
            db,
            record_id,
            options=[
                selectinload(Record.dataset).selectinload(Dataset.metadata_properties),
                selectinload(Record.suggestions),
                selectinload(Record.responses),
                selectinload(Record.vectors).selectinload(Vector.vector_settings),
            ],
        )
        await authorize(current_user, RecordPolicy.get(record))
        out = RecordSchema.model_validate(record)
        if not await is_authorized(current_user, DatasetPolicy.list_records_with_all_responses(record.dataset)):
            out.responses = [r for r in out.responses or [] if r.user_id == current_user.id]
            if out.metadata is not None:
                out.metadata = {
                    name: value
                    for name, value in out.metadata.items()
                    if await is_authorized(current_user, RecordPolicy.get_metadata(record, name))
                }
        return out

    api_v1.router.routes = [
        r for r in api_v1.router.routes
        if not (isinstance(r, APIRoute) and r.path == "/records/{record_id}" and "GET" in r.methods)
    ]
    router = APIRouter(tags=["records"])
    router.add_api_route("/records/{record_id}", get_record, methods=["GET"], response_model=RecordSchema)
    api_v1.include_router(router)


def _install_error_handlers(api_v1: Any) -> None:
    from fastapi.responses import JSONResponse

    async def internal_error(request: Any, exc: Exception) -> JSONResponse:
        if is_timeout(exc):
            return JSONResponse(
                status_code=503,
                content={"detail": f"the request's database query took longer than {LIMITS.query_timeout_s:g} s and "
                                   "was stopped; try a narrower filter"},
            )
        _LOGGER.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            status_code=500,
            content={"detail": {"code": "argilla.api.errors::GenericServerError",
                                "params": {"message": "internal server error (details are in the server log)"}}},
        )

    api_v1.add_exception_handler(Exception, internal_error)


def install(app: Any) -> Any:
    """Apply everything above to argilla_server's app; returns the ASGI app to serve."""
    from argilla_server.api.routes import api_v1
    from argilla_server.database import async_engine
    from argilla_server.settings import settings

    _install_routes(api_v1)
    _install_error_handlers(api_v1)
    install_query_timeout(async_engine, LIMITS.query_timeout_s, bool(settings.database_is_postgresql))
    if settings.database_is_postgresql:
        install_pg_session_settings(async_engine)
    return BodyLimit(app, LIMITS)
