"""Entry point run by the argilla-server virtualenv's python (PYTHONPATH=<repo root>).

Why a separate entry: the plugin must be registered (imported) before argilla_server builds its app or its rq
worker runs a job, and this process must not import curate's own dependencies (polars etc. are not installed
in that venv). Only the stdlib, argilla_server, sqlalchemy and numpy may be imported here.

Usage:
    python -m curate.review.boot setup < spec.json                  # migrate, add indexes, create accounts
    python -m curate.review.boot server --host H --port P [--setup SPEC]  # (setup first, then) serve
    python -m curate.review.boot worker

`server --setup SPEC` runs the setup in the server's own process (one ~8 s argilla_server import instead of
two); SPEC holds passwords, so it is deleted as soon as it is read. A failed setup prints one line starting with
SETUP_FAILED and exits with code 3, which the launcher turns into a ServiceError.

Secrets (the token-signing key, the Redis password, the database URL) come from the 0600 file named by
$CURATE_REVIEW_SECRETS and are put into this process's environment here, before argilla_server reads its settings:
they never appear on a command line or in the environment the launcher passes (both readable by other local users
via /proc or ps).
Every file this process creates is private (umask 077): the SQLite database and its journal, logs, the UI copy.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import threading


def _load_secrets() -> None:
    """Set the signing key and the Redis URL (with its password) from the launcher's private secrets file."""
    os.umask(0o077)
    path = os.environ.pop("CURATE_REVIEW_SECRETS", None)
    if not path:
        return
    with open(path) as fh:
        secrets = json.load(fh)
    # argilla reads ARGILLA_AUTH_SECRET_KEY once, at import: a key kept across restarts keeps sign-ins valid.
    os.environ["ARGILLA_AUTH_SECRET_KEY"] = secrets["secret_key"]
    os.environ["ARGILLA_REDIS_URL"] = secrets["redis_url"]
    os.environ["ARGILLA_DATABASE_URL"] = secrets["database_url"]


def _logging() -> None:
    """curate's own server-side messages (text index rebuilt, vector cache, internal errors) go to the server's
    log. Re-applied after the migration: alembic's fileConfig disables every logger that existed before it."""
    import logging

    log = logging.getLogger("curate.review")
    log.disabled = False
    log.setLevel(logging.INFO)
    log.propagate = False
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s [%(name)s] %(message)s"))
        log.addHandler(handler)


def _register() -> None:
    import curate.review.search_engine  # noqa: F401  (registers the "curate-sql" engine)


def _migrate() -> None:
    import alembic.config
    from argilla_server.database import ALEMBIC_CONFIG_FILE

    alembic.config.main(argv=["-q", "-c", ALEMBIC_CONFIG_FILE, "upgrade", "head"])


async def _create_users(users: list[dict]) -> None:
    """Create each account unless its username exists; add it to its workspaces either way."""
    from argilla_server.contexts import accounts
    from argilla_server.database import AsyncSessionLocal
    from argilla_server.models import User, Workspace, WorkspaceUser
    from sqlalchemy import select

    async with AsyncSessionLocal() as db:
        for spec in users:
            workspaces = []
            for name in spec.get("workspaces", []):
                ws = (await db.execute(select(Workspace).where(Workspace.name == name))).scalar_one_or_none()
                if ws is None:
                    ws = Workspace(name=name)
                    db.add(ws)
                    await db.flush()
                workspaces.append(ws)
            user = await accounts.get_user_by_username(db, spec["username"])
            if user is None:
                user = User(
                    first_name=spec["username"],
                    username=spec["username"],
                    role=spec["role"],
                    password_hash=accounts.hash_password(spec["password"]),
                    api_key=spec["api_key"],
                )
                db.add(user)
                await db.flush()
            else:
                user.password_hash = accounts.hash_password(spec["password"])
                user.api_key = spec["api_key"]
            for ws in workspaces:
                link = (
                    await db.execute(
                        select(WorkspaceUser).where(
                            WorkspaceUser.workspace_id == ws.id, WorkspaceUser.user_id == user.id
                        )
                    )
                ).scalar_one_or_none()
                if link is None:
                    db.add(WorkspaceUser(workspace_id=ws.id, user_id=user.id))
        await db.commit()
    # Pooled asyncpg connections are bound to this event loop; the server runs its own, so drop them.
    from argilla_server.database import async_engine

    await async_engine.dispose()


SETUP_FAILED = "SETUP_FAILED:"


def setup(spec: dict) -> None:
    """Migrate the database, add the engine's indexes, create the accounts in spec["users"]."""
    try:
        _migrate()
    except SystemExit as exc:  # alembic exits on failure
        if exc.code:
            raise RuntimeError(f"database migration failed (alembic exit {exc.code})") from exc
    _logging()
    from curate.review.search_engine import ensure_indexes_sync, ensure_wal_sync

    ensure_wal_sync()
    ensure_indexes_sync()
    asyncio.run(_create_users(spec.get("users", [])))


def _setup_or_exit(spec: dict) -> None:
    try:
        setup(spec)
    except Exception as exc:  # noqa: BLE001 - any failure is one line for the launcher to show
        print(f"{SETUP_FAILED} {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr, flush=True)
        sys.exit(3)


def _cache_type_adapters() -> None:
    """argilla_server builds a pydantic TypeAdapter for every metadata value and suggestion it validates
    (Question/MetadataProperty.parsed_settings); building one costs more than validating with it. Reuse one
    adapter per type: same validation, ~23% of the server's CPU per logged record saved (py-spy, bench_review_push)."""
    from argilla_server.api.schemas.v1.questions import QuestionSettings
    from argilla_server.models import database as db
    from argilla_server.models.metadata_properties import MetadataPropertySettings
    from pydantic import TypeAdapter

    question, metadata = TypeAdapter(QuestionSettings), TypeAdapter(MetadataPropertySettings)
    db.Question.parsed_settings = property(lambda self: question.validate_python(self.settings))
    db.MetadataProperty.parsed_settings = property(lambda self: metadata.validate_python(self.settings))


def _skip_unheard_record_events() -> None:
    """argilla builds a webhook event for every record it writes — a dataset query with five eager loads and a
    full record dump each — and only then finds that no webhook is enabled (webhook_jobs.enqueue_notify_events).
    Ask that question first: the same outcome (nothing enqueued when no enabled webhook listens to the event),
    without ~8% of the server's CPU per pushed record (py-spy, bench_review_scale)."""
    from argilla_server.bulk import records_bulk
    from argilla_server.contexts import distribution, webhooks
    from argilla_server.webhooks.v1 import records as record_events

    original = record_events.notify_record_event

    async def notify_record_event(db, record_event, record):
        enabled = await webhooks.list_enabled_webhooks(db)
        if not any(record_event in w.events for w in enabled):
            return []
        return await original(db, record_event, record)

    record_events.notify_record_event = notify_record_event
    records_bulk.notify_record_event_v1 = notify_record_event
    distribution.notify_record_event_v1 = notify_record_event


def _remember_membership() -> None:
    """argilla asks the database "is this user a member of this workspace?" for every metadata value of every
    record it returns to an annotator (RecordPolicy.get_metadata → User.is_member): ~70 queries for one page of 10
    records. The answer can't change within a request, and argilla loads the user afresh for each request, so
    the answer is remembered on that request's user object: the same outcome, one query."""
    from argilla_server.models import User

    original = User.is_member

    async def is_member(self, workspace_id):
        known = self.__dict__.setdefault("_curate_membership", {})
        if workspace_id not in known:
            known[workspace_id] = await original(self, workspace_id)
        return known[workspace_id]

    User.is_member = is_member


def freeze_heap_after(thread: threading.Thread) -> None:
    """Once `thread` (the vector cache's warm-up) is done, move every object alive into the collector's permanent
    generation. Why: a full (generation 2) collection walks every tracked object while holding the GIL — at 100k
    records ~430k objects (argilla's app, the vector cache's record ids), 330-390 ms during which no request
    progresses: the lone 320 ms outlier of a "submitted by me" call in the 100k bench. Frozen objects are skipped
    by later collections (0.1 ms after the freeze); what is allocated later is collected as usual. Startup garbage
    not yet collected stays frozen (a few objects, once)."""
    thread.join()
    gc.freeze()


def server(host: str, port: int, spec_path: str | None = None) -> None:
    import uvicorn

    _load_secrets()
    _logging()
    _register()
    _cache_type_adapters()
    _skip_unheard_record_events()
    _remember_membership()
    if spec_path:
        with open(spec_path) as fh:
            spec = json.load(fh)
        os.unlink(spec_path)
        _setup_or_exit(spec)
    from argilla_server import app as argilla_app

    from curate.review import vector_cache
    from curate.review.adapter import install

    vector_cache.BACKGROUND = True
    warm = vector_cache.warm_all()
    threading.Thread(target=freeze_heap_after, args=(warm,), name="curate-gc-freeze", daemon=True).start()

    # Bounded graceful shutdown: open keep-alive connections (SDK clients) must not delay a stop.
    uvicorn.run(
        install(argilla_app), host=host, port=port, access_log=False, log_level="warning", timeout_graceful_shutdown=3
    )


def _light_argilla_package() -> None:
    """Make `argilla_server.*` importable without running argilla_server/__init__.py.

    Why: that __init__ builds the whole web app (and copies the 14 MB UI to TMPDIR); the idle worker needs only
    its settings and queues. Without this the worker idles at ~270 MB RSS, most of the stack's budget.
    """
    import importlib.util

    if "argilla_server" in sys.modules:
        return
    spec = importlib.util.find_spec("argilla_server")
    if spec is None:  # not installed: the import that follows fails with the usual one-line setup error
        return
    module = importlib.util.module_from_spec(spec)  # sets __path__/__file__; __init__ is not executed
    sys.modules["argilla_server"] = module


def worker() -> None:
    """One rq worker on both queues (argilla's default pool starts 2; one is plenty on a laptop).

    Jobs run in rq's forked work-horse, which registers the engine before the job imports its module, so the
    idle parent stays small.
    """
    _load_secrets()
    _light_argilla_package()
    from argilla_server.jobs.queues import DEFAULT_QUEUE, HIGH_QUEUE, REDIS_CONNECTION
    from rq import Worker

    class _Worker(Worker):
        def main_work_horse(self, job, queue):  # runs in the forked child
            _register()
            return super().main_work_horse(job, queue)

    _Worker([HIGH_QUEUE, DEFAULT_QUEUE], connection=REDIS_CONNECTION).work(logging_level="WARNING")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="curate.review.boot")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup")
    srv = sub.add_parser("server")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=6900)
    srv.add_argument("--setup", default=None, help="JSON accounts spec to set up first (deleted once read)")
    sub.add_parser("worker")
    args = parser.parse_args(argv)
    if args.cmd == "setup":
        _load_secrets()
        _setup_or_exit(json.load(sys.stdin))
    elif args.cmd == "server":
        server(args.host, args.port, args.setup)
    else:
        worker()
    return 0


if __name__ == "__main__":
    sys.exit(main())
