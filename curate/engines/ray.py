"""The Ray engine: the same steps as the local engine, spread over a Ray cluster with Ray Data.

How each step is spread (docs/scaling.md has the picture):
    ingest        one Ray Data task per source (file, or split of a saved dataset): each converts its source batch
                  by batch with curate.ingest's own functions; the driver writes the batches in source order with
                  curate.ingest.write, so pairs.parquet is the file the local engine writes.
    row-local     stages whose module says `ROW_LOCAL = True` (clean, language): `map_batches` over slices of the
                  step's input (its row groups, in file order; each task reads its own slice); each runs the
                  stage's own `run` on `pl.from_arrow(batch)` (no copy); per-batch stats are combined by the
                  stage's `merge_stats`.
    global        other stages (dedup, balance) need every row at once: their own `run` on the driver, over the
                  Parquet file, exactly as the local engine does — except the embedding inside it: while a global
                  stage runs, `curate.embed.spread_over` hands the embedder's length-sorted chunks to a pool of
                  embedding actors (one per CPU the cluster offers, or one per GPU with `num_gpus=1` when the
                  embedder runs on CUDA), and the vectors come back in chunk order; and `curate.parallel.
                  spread_tasks` runs the stage's per-chunk work (dedup's MinHash signatures, 20k keys a chunk)
                  as Ray tasks, results in chunk order.

Same result: batches come back in input order (`preserve_order`), and the driver writes each step's kept.parquet
and rejects.parquet with the runner's own writer (curate.runner.sink_result), so the files, the export and
report.json are the local engine's. Ray Data retries a task whose worker process died (its default); workers never
write into the run folder, so a failed or interrupted step leaves no half-written file there.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import polars as pl
import pyarrow as pa

from curate.errors import ConfigError, CurateError

BATCH_ROWS = 20_000  # rows per map_batches call: the runner's row-group size; big enough to amortise scheduling
# Failure injection for tests (tests/engines/): when set to a path that does not exist yet, the first batch task to
# see it creates it and kills its own worker process, so Ray has to retry the task.
FAIL_ONCE_ENV = "CURATE_RAY_FAIL_ONCE"


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(blob: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(blob)).read_all()


def _record(**cols: Any) -> pa.Table:
    """One result per task call: the kept and rejected tables as Arrow IPC, plus counts and stats as JSON.

    Ray Data blocks must share a schema; the kept and rejected tables of a step don't (rejects add stage, reason,
    detail), so each call's result travels as one record that carries both."""
    return pa.table({k: pa.array([v], type=pa.large_binary() if isinstance(v, bytes) else None)
                     for k, v in cols.items()})


def _maybe_fail() -> None:
    marker = os.environ.get(FAIL_ONCE_ENV)
    if marker and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os._exit(1)  # a dead worker, as an OOM kill or a lost node would leave: Ray retries the task


def _error_text(exc: CurateError) -> str:
    """A CurateError as data ("Class<TAB>message"): it is the user's to fix, so Ray must not retry it, and Ray's
    exception wrapping would lose its class and message on the way. `_raise` makes it an exception again."""
    return f"{type(exc).__name__}\t{exc}"


def _failed(exc: CurateError, **empty: Any) -> pa.Table:
    """A batch task's result record carrying a CurateError (see `_error_text`)."""
    return _record(**empty, error=_error_text(exc))


def _ingest_source(batch: pa.Table, prep: Any) -> Iterator[pa.Table]:
    """Ray task: convert one source, batch by batch, with curate.ingest's functions."""
    from curate import ingest as ing

    for k in batch.column("k").to_pylist():
        try:
            for sink in ing.convert_source(prep, k):
                _maybe_fail()
                pairs, rejects = ing.tables(sink)
                yield _record(k=k, rows_in=sink.rows_in, extra=len(sink.subs),
                              pairs=_ipc(pairs) if pairs is not None else b"",
                              rejects=_ipc(rejects) if rejects is not None else b"", error="")
        except CurateError as exc:
            yield _failed(exc, k=k, rows_in=0, extra=0, pairs=b"", rejects=b"")
            return


def _stage_batch(batch: pa.Table, name: str, cfg: Any) -> pa.Table:
    """Ray task: one Arrow batch through a row-local stage's own `run`."""
    from curate.stages import stage_module

    _maybe_fail()
    try:
        frame = cast(pl.DataFrame, pl.from_arrow(batch))  # a Table gives a DataFrame, without a copy
        result = stage_module(name).run(frame.lazy(), cfg).collect()
    except CurateError as exc:
        return _failed(exc, rows_in=batch.num_rows, kept=b"", rejects=b"", stats="")
    return _record(rows_in=batch.num_rows, kept=_ipc(result.kept.to_arrow()), rejects=_ipc(result.rejects.to_arrow()),
                   stats=json.dumps(result.stats, ensure_ascii=False), error="")


def _stage_slices(items: pa.Table, path: str, name: str, cfg: Any) -> pa.Table:
    """Ray task: slices of the step's input (row group, offset, rows), each read here and run by `_stage_batch`."""
    import pyarrow.parquet as pq

    src = pq.ParquetFile(path)
    out = []
    for rg, offset, rows in zip(*(items.column(c).to_pylist() for c in ("rg", "offset", "rows")), strict=True):
        out.append(_stage_batch(src.read_row_group(rg).slice(offset, rows), name, cfg))
    return pa.concat_tables(out)


def slices(path: Path, rows: int) -> list[dict[str, int]]:
    """The step input's batches, in file order: each row group cut into pieces of at most `rows` rows.

    Why not `ray.data.read_parquet`: on Ray 2.60 its blocks of one large file come back rotated (a 1M-row file of
    50 row groups gave groups 16…49 then 0…15, preserve_order notwithstanding), so the kept rows were reordered."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    out = []
    for rg in range(meta.num_row_groups):
        n = meta.row_group(rg).num_rows
        out += [{"rg": rg, "offset": o, "rows": min(rows, n - o)} for o in range(0, n, rows)]
    return out


class _EmbedWorker:
    """Ray actor (made remote in `Engine._embed_pool`): loads the embedding backend once, embeds chunks with it."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def encode(self, spec: Any, texts: list[str], batch_size: int) -> tuple[str, Any]:
        from curate.embed import encode_chunk

        _maybe_fail()
        try:
            return "", encode_chunk(spec, texts, batch_size, self.threads)
        except CurateError as exc:
            return _error_text(exc), None


def _task(fn: Any, args: tuple[Any, ...]) -> tuple[str, Any]:
    """One `curate.parallel.map_tasks` call on a worker; a CurateError comes back as data (`_error_text`)."""
    try:
        return "", fn(*args)
    except CurateError as exc:
        return _error_text(exc), None


def merge_stats(module: Any, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine per-batch stats with the stage's own `merge_stats`; a stage without one must report no stats."""
    merge = getattr(module, "merge_stats", None)
    if merge is not None:
        return merge(parts)
    if any(parts):
        raise CurateError(f"stage {module.NAME!r} is ROW_LOCAL with stats but has no merge_stats(parts)")
    return {}


def code_digest() -> tuple[str, str]:
    """curate's version and a SHA-256 over its Python sources (relative paths and contents, sorted)."""
    import hashlib

    import curate

    root = Path(curate.__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f"{f.relative_to(root).as_posix()}\0".encode())
        h.update(f.read_bytes())
    return curate.__version__, h.hexdigest()


def _worker_code() -> tuple[str, str]:
    return code_digest()


def _raise(error: str) -> None:
    """Raise, on the driver, the CurateError a task sent back (see `_error_text`)."""
    from curate import errors

    name, _, message = error.partition("\t")
    cls = getattr(errors, name, None)
    raise (cls if isinstance(cls, type) and issubclass(cls, CurateError) else CurateError)(message)


class Engine:
    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        try:
            import ray.data  # noqa: F401 - fail here, before any data moves, when the extra is missing
        except ImportError:
            raise ConfigError(
                "--engine ray needs Ray Data: pip install 'curate[ray]' (bash scripts/setup.sh installs it)"
            ) from None
        self.address = address
        self._started = False
        self._checked = False
        self._pool: tuple[Any, list[Any]] | None = None  # (backend spec, embedding actors), made on first use

    def _ray(self) -> Any:
        """Join (or start) the cluster once; make Ray Data keep input order and stay quiet on stderr."""
        import logging

        import ray
        import ray.data

        if not ray.is_initialized():
            try:
                # No address: a new cluster on this machine ("local"), never a stranger's that happens to run here.
                ray.init(address=self.address or "local", include_dashboard=False, logging_level=logging.WARNING,
                         log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = self.address or "a new local cluster"
                raise ConfigError(f"can't start Ray on {where}: {str(exc).splitlines()[0]}") from None
            self._started = True
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # the bytes written depend on row order
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset INFO lines on the user's stderr
        if not self._checked:
            self._check_version(ray)
            self._checked = True
        return ray

    def _check_version(self, ray: Any) -> None:
        """The same bytes need the same code: a worker's curate must be the driver's, file for file."""
        ours = code_digest()
        try:
            theirs = ray.get(ray.remote(num_cpus=0)(_worker_code).remote())
        except Exception as exc:  # noqa: BLE001 - a worker that can't import this engine: any error, one message
            raise ConfigError(f"the Ray workers can't run this curate ({type(exc).__name__}): install the same "
                              f"curate[ray] on every node, and start the driver outside other curate checkouts "
                              f"(workers import from the driver's working directory first)") from None
        if theirs != ours:
            raise ConfigError(f"the Ray workers run other curate code (curate {theirs[0]}, source {theirs[1][:12]}) "
                              f"than this driver (curate {ours[0]}, source {ours[1][:12]}): install the same "
                              f"curate[ray] on every node")

    def _results(self, ds: Any) -> Iterator[dict[str, Any]]:
        """The records of a dataset, in order, as Python values; a task's CurateError is raised here as itself."""
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2):
            for rec in batch.to_pylist():
                if rec["error"]:
                    _raise(rec["error"])
                yield rec

    def ingest(self, inputs: list[str], out_dir: Path, mapping: dict[str, str] | None, binarize: str,
               seed: int) -> dict[str, Any]:
        from curate import ingest as ing

        ray = self._ray()
        # Detection reads a sample of each file here: a bad file fails fast, before any task is sent.
        prep = ing.prepare(inputs, mapping, binarize, seed)
        n = len(prep.sources)
        ds = ray.data.from_items([{"k": k} for k in range(n)], override_num_blocks=max(n, 1)).map_batches(
            _ingest_source, fn_kwargs={"prep": prep}, batch_size=1, batch_format="pyarrow",
        )

        def built() -> Iterator[tuple[int, ing.Built]]:
            for rec in self._results(ds):
                pairs = _from_ipc(rec["pairs"]) if rec["pairs"] else None
                rejects = _from_ipc(rec["rejects"]) if rec["rejects"] else None
                yield rec["k"], ing.Built(rec["rows_in"], pairs, rejects, rec["extra"])

        return ing.write(prep, out_dir, built())

    def run_stage(self, name: str, cfg: Any, current: Path, step_dir: Path) -> dict[str, Any]:
        from curate.io import count_rows
        from curate.runner import sink_result
        from curate.stages import stage_module

        module = stage_module(name)
        if not getattr(module, "ROW_LOCAL", False) or count_rows(current) == 0:
            from curate.embed import spread_over
            from curate.engines.local import Engine as Local
            from curate.parallel import spread_tasks

            try:
                with spread_over(self._embed_chunks), spread_tasks(self._map_tasks):
                    return Local().run_stage(name, cfg, current, step_dir)
            finally:
                self._drop_pool()  # idle actors would hold the CPUs a later step's map_batches needs
        ray = self._ray()
        items = slices(current, BATCH_ROWS)
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _stage_slices, fn_kwargs={"path": str(current), "name": name, "cfg": cfg}, batch_size=1,
            batch_format="pyarrow",
        )
        parts: list[dict[str, Any]] = []
        step_dir.parent.mkdir(parents=True, exist_ok=True)
        # The batches are gathered beside the run folder's steps, in a hidden temp folder removed at the end; the
        # step's files are then written by the runner's own writer, so they are byte for byte the local ones.
        # A leftover (after a crash) is removed by the runner.
        work = Path(tempfile.mkdtemp(prefix=f".ray-{name}-", suffix=".tmp", dir=step_dir.parent))
        try:
            kept_tmp, rejects_tmp = work / "kept.arrow", work / "rejects.arrow"
            writers: dict[str, tuple[Any, pa.Schema]] = {}
            try:
                for rec in self._results(ds):
                    parts.append(json.loads(rec["stats"]))
                    for side, path in (("kept", kept_tmp), ("rejects", rejects_tmp)):
                        table = _from_ipc(rec[side])
                        if side not in writers:
                            writers[side] = (pa.ipc.new_file(str(path), table.schema), table.schema)
                        writer, schema = writers[side]
                        writer.write_table(table.cast(schema))
            finally:
                for writer, _ in writers.values():
                    writer.close()
            sink_result(pl.scan_ipc(kept_tmp), pl.scan_ipc(rejects_tmp), step_dir)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return merge_stats(module, parts)

    def _embed_pool(self, spec: Any) -> list[Any]:
        """Embedding actors for `spec`: one per GPU (`num_gpus=1`) when the embedder runs on CUDA, else one per CPU
        of the cluster, each with one BLAS thread. A dead actor is restarted and its chunk sent again."""
        if self._pool is not None and self._pool[0] == spec:
            return self._pool[1]
        ray = self._ray()
        self._drop_pool()
        res = ray.cluster_resources()
        if spec.device.startswith("cuda") and res.get("GPU", 0) >= 1:
            n, opts = int(res["GPU"]), {"num_gpus": 1, "num_cpus": 1}
        else:
            n, opts = max(1, int(res.get("CPU", 1))), {"num_cpus": 1}
        actor = ray.remote(max_restarts=2, max_task_retries=2, **opts)(_EmbedWorker)
        actors = [actor.remote(1) for _ in range(n)]
        self._pool = (spec, actors)
        return actors

    def _embed_chunks(self, spec: Any, chunks: list[list[str]], batch_size: int) -> Iterator[Any]:
        """`curate.embed.ChunkMapper` on the actor pool: each chunk's vectors, in chunk order, at most one chunk in
        flight per actor (ActorPool.map submits the next chunk when an actor is free)."""
        from ray.util import ActorPool

        pool = ActorPool(self._embed_pool(spec))
        for error, vecs in pool.map(lambda a, c: a.encode.remote(spec, c, batch_size), chunks):
            if error:
                _raise(error)
            yield vecs

    def _map_tasks(self, fn: Any, calls: Iterable[tuple[Any, ...]]) -> Iterator[Any]:
        """`curate.parallel.TaskMapper` on Ray tasks (one CPU each, retried when a worker dies): at most two
        calls per cluster CPU in flight, results in call order."""
        ray = self._ray()
        self._drop_pool()  # idle embedding actors hold every CPU: the tasks would never be scheduled
        remote = ray.remote(num_cpus=1, max_retries=3)(_task)
        window = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
        todo = iter(calls)
        pending: deque[Any] = deque()
        for args in itertools.islice(todo, window):
            pending.append(remote.remote(fn, args))
        while pending:
            error, result = ray.get(pending.popleft())
            for args in itertools.islice(todo, 1):
                pending.append(remote.remote(fn, args))
            if error:
                _raise(error)
            yield result

    def _drop_pool(self) -> None:
        if self._pool is not None:
            import ray

            for a in self._pool[1]:
                ray.kill(a)
            self._pool = None

    def close(self) -> None:
        self._drop_pool()
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
