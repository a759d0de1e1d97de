"""Push a run's pairs to Argilla for blind pairwise review: idempotent, resumable, batched.

Why this shape:
- Record ids are the pairs' key (`settings.RECORD_KEY`; Argilla's external id), and before sending anything we list
  the ids the dataset already holds and send only the others. Pushing again adds only new pairs; an interrupted push
  continues where it stopped (every finished batch is already on the server); nothing is ever duplicated
  (argilla-server also enforces unique (external_id, dataset) and we upsert, so even two pushes racing can't).
- We call the SDK's bulk upsert per batch instead of `dataset.records.log()`: `log()` always draws its own tqdm
  bar and hides the batch boundaries, and we need both (a rich bar in the CLI, resumable batches here).
- The blind A/B mapping is written to RUN_DIR/review/mapping.parquet, one row per (dataset, pair), and never to
  the server. Argilla's `visible_for_annotators=False` hides a metadata property, and the record search
  endpoint filters such values per user, but blinding shouldn't rest on every endpoint doing that; the mapping
  is rebuilt from the seed anyway, so it simply never leaves the curating machine. The seed per dataset is kept in
  RUN_DIR/review/push.json; pushing the same dataset with another seed is refused because its records were already
  shown in the old order.
- Blind by default: no suggestion is sent unless `suggest` is set. Argilla pre-selects a suggested answer (and
  enables Submit), so a source-score suggestion anchors annotators on the source's label — what blind review
  exists to prevent. `--suggest` trades that for speed on sources whose scores are trusted.
- The guidelines come from the resolution policy (curate/review/guidelines.py), recorded in push.json; pull
  applies that same policy unless told otherwise.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from curate.errors import ConfigError, InputError, ServiceError
from curate.io import atomic_path, atomic_write_text
from curate.review import guidelines
from curate.review import settings as S
from curate.review.apply import ResolvePolicy

DEFAULT_WORKSPACE = "curate"
LIST_PAGE = 1000  # argilla-server's largest page for record listing
MAX_BATCH = 500  # argilla-server's largest bulk upsert
SEND_AHEAD = 2  # batches in flight at once (see push())
COPY_OF = "balance_copy_of"  # curate.stages.balance: the row an upsampling copy copies
DEFAULT_EMBED_MODEL = "use-multilingual-v3"  # curate.embed.DEFAULT_MODEL (not imported: numpy at CLI start)

Progress = Callable[[int, int], None]  # (records sent so far in this push, records to send in this push)


def default_home() -> Path:
    """Where `curate review serve` keeps the embedded server (CURATE_REVIEW_HOME or ~/.curate/review)."""
    return Path(os.environ.get("CURATE_REVIEW_HOME") or Path.home() / ".curate" / "review")


@dataclass
class Connection:
    """An authenticated SDK client plus where it points (api_url, the workspace datasets go to)."""

    client: Any  # argilla.Argilla
    api_url: str
    workspace: str
    embedded_home: Path | None = None


def connect(
    home: str | Path | None = None,
    api_url: str | None = None,
    api_key: str | None = None,
    workspace: str | None = None,
) -> Connection:
    """A remote server (api_url/api_key, or ARGILLA_API_URL/ARGILLA_API_KEY) or the embedded one under `home`."""
    if api_url is None and home is None:
        api_url = os.environ.get("ARGILLA_API_URL") or None
    embedded: Path | None = None
    if api_url:
        api_key = api_key or os.environ.get("ARGILLA_API_KEY")
        if not api_key:
            raise ConfigError(f"--api-url {api_url} needs --api-key (or ARGILLA_API_KEY)")
        ws = workspace or DEFAULT_WORKSPACE
    else:
        from curate.review import server

        embedded = Path(home) if home is not None else default_home()
        info = server.read_credentials(embedded)
        api_url, api_key, ws = info.api_url, info.owner.api_key, workspace or info.workspace
    return Connection(client=_client(api_url, api_key), api_url=api_url, workspace=ws, embedded_home=embedded)


def _client(api_url: str, api_key: str) -> Any:
    import warnings

    import argilla as rg

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return rg.Argilla(api_url=api_url, api_key=api_key, timeout=120, retries=1)
    except Exception as exc:  # noqa: BLE001 - the SDK raises many kinds; all mean "can't use this server"
        raise ServiceError(f"can't reach Argilla at {api_url}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def find_dataset(conn: Connection, name: str) -> Any | None:
    """The dataset called `name` in the connection's workspace, or None."""
    import warnings

    try:
        with warnings.catch_warnings():  # the SDK warns "not found" before returning None
            warnings.simplefilter("ignore")
            ws = conn.client.workspaces(name=conn.workspace)
            if ws is None:
                return None
            return conn.client.datasets(name=name, workspace=ws)
    except Exception as exc:  # noqa: BLE001
        raise ServiceError(f"Argilla at {conn.api_url}: can't look up dataset {name!r}: {_first_line(exc)}") from None


def _ensure_workspace(conn: Connection) -> Any:
    import argilla as rg

    ws = conn.client.workspaces(name=conn.workspace)
    if ws is None:
        try:
            ws = rg.Workspace(name=conn.workspace, client=conn.client).create()
        except Exception as exc:  # noqa: BLE001
            raise ServiceError(
                f"workspace {conn.workspace!r} doesn't exist on {conn.api_url} and can't be created: {_first_line(exc)}"
            ) from None
    return ws


@dataclass(frozen=True)
class PushOptions:
    """Options of `curate review push` (each documented once, here)."""

    dataset: str = field(metadata={"help": "Argilla dataset name (created on first push, reused after)"})
    min_submitted: int = field(default=1, metadata={"help": "submitted answers a record needs (overlap for agreement)"})
    seed: int = field(default=0, metadata={"help": "seed of the blind A/B order"})
    batch_size: int = field(default=200, metadata={"help": f"records per request (max {MAX_BATCH})"})
    vectors: bool = field(default=True, metadata={"help": "embed prompts for 'find similar'"})
    suggest: bool = field(
        default=False,
        metadata={"help": "suggest an answer to 'better' from the source's scores; Argilla pre-selects it, which "
                          "anchors annotators on the source's label (off: blind review)"},
    )
    embed_model: str = field(
        default=DEFAULT_EMBED_MODEL,
        metadata={"help": "model for the prompt vectors of 'Find similar' (curate.embed; the default pipeline's "
                          "semantic-dedup model, so its cached vectors are reused)"},
    )
    embed_cache: str | None = field(
        default=None,
        metadata={"help": "on-disk embedding cache folder (curate.embed); default: the run's semantic-dedup cache "
                          "when it used the same model (its prompt vectors are reused), '' for none"},
    )
    policy: ResolvePolicy = field(
        default_factory=ResolvePolicy,
        metadata={"help": "how pull will resolve answers; the guidelines are written from it"},
    )

    def validate(self) -> None:
        if not self.dataset or not self.dataset.strip():
            raise ConfigError("--dataset must not be empty")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ConfigError(f"--batch-size must be between 1 and {MAX_BATCH}, got {self.batch_size}")
        if self.min_submitted < 1:
            raise ConfigError(f"--min-submitted must be at least 1, got {self.min_submitted}")
        try:
            self.policy.validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


@dataclass(frozen=True)
class PushResult:
    dataset: str
    workspace: str
    api_url: str
    pairs: int  # pairs in RUN_DIR/pairs.parquet
    already: int  # of those, already on the server before this push
    copies: int  # balance's upsampling copies: not sent, they follow their original
    sent: int  # sent by this push
    created_dataset: bool
    vectors: str | None  # embedding model used, None when pushed without vectors
    seconds: float
    timings: dict[str, float]

    @property
    def records_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def read_pairs(run_dir: str | Path) -> pl.DataFrame:
    """RUN_DIR/pairs.parquet (the final kept pairs of a run), or an InputError saying what's missing."""
    path = Path(run_dir) / "pairs.parquet"
    if not path.is_file():
        raise InputError(f"{path} not found: push needs a finished run folder (curate run … --out RUN_DIR)")
    pairs = pl.read_parquet(path)
    if S.RECORD_KEY not in pairs.columns and S.LEGACY_KEY in pairs.columns and pairs[S.LEGACY_KEY].is_unique().all():
        # a run folder from before row_id: its pair_ids (unique there, push required it) name its rows
        pairs = pairs.with_columns(pl.col(S.LEGACY_KEY).alias(S.RECORD_KEY))
    missing = [c for c in (S.RECORD_KEY, "prompt", "chosen", "rejected") if c not in pairs.columns]
    if missing:
        raise InputError(f"{path}: missing column {missing[0]!r}; is this a curate run folder?")
    if pairs[S.RECORD_KEY].n_unique() != pairs.height:
        raise InputError(f"{path}: {S.RECORD_KEY} is not unique, so record ids would collide")
    return pairs


def existing_ids(conn: Connection, dataset: Any) -> set[str]:
    """External ids of the records the dataset already holds (paged listing without responses/suggestions)."""
    ids: set[str] = set()
    offset = 0
    while True:
        try:
            resp = conn.client.http_client.get(
                f"/api/v1/datasets/{dataset.id}/records", params={"offset": offset, "limit": LIST_PAGE}
            )
            resp.raise_for_status()
        except Exception as exc:  # noqa: BLE001
            raise ServiceError(f"Argilla at {conn.api_url}: listing records failed: {_first_line(exc)}") from None
        items = resp.json()["items"]
        ids.update(str(item["external_id"]) for item in items if item.get("external_id") is not None)
        if len(items) < LIST_PAGE:
            return ids
        offset += len(items)


class PromptEmbedder:
    """Prompt vectors for "Find similar", through curate.embed (shared model loading and on-disk cache).

    `available` turns False (and vectors are skipped, not fatal) when the model can't be loaded: review
    without "Find similar" is still review."""

    def __init__(self, model: str, cache_dir: str | None, semantic: dict[str, Any] | None = None):
        from curate.embed import Embedder

        # with the run's semantic-dedup settings (same model): the same vectors, so the same cache entries
        sem = semantic or {}
        self.embedder = Embedder(model=model, cache_dir=cache_dir, precision=sem.get("precision", "auto"),
                                 max_tokens=int(sem.get("max_tokens", 256)))
        self.t2s = bool(sem.get("t2s", True))
        self.model = model
        self.seconds = 0.0

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, list[float]]:
        """key → unit vector of its prompt (pairs sharing a prompt share the vector via the cache).

        The text is what semantic dedup embeds (settings.embed_texts), so with dedup's cache folder the vectors it
        computed are read back instead of computed again."""
        t = time.perf_counter()
        texts = S.embed_texts([r.get("prompt") for r in rows], t2s=self.t2s)
        vecs = self.embedder.embed(texts)
        self.seconds += time.perf_counter() - t
        return {r[S.RECORD_KEY]: [round(float(x), 6) for x in v] for r, v in zip(rows, vecs, strict=True)}


def read_push_meta(run_dir: Path) -> dict[str, Any]:
    """RUN_DIR/review/push.json: {"dataset": last pushed, "datasets": {name: {seed, workspace, api_url, …}}}."""
    path = run_dir / "review" / "push.json"
    if not path.is_file():
        return {"dataset": None, "datasets": {}}
    return json.loads(path.read_text())


def _mapping_for(run_dir: Path, pairs: pl.DataFrame, opts: PushOptions) -> pl.DataFrame:
    """The blind mapping for these pairs; refuses a seed that differs from the one this dataset was pushed with."""
    previous = read_push_meta(run_dir)["datasets"].get(opts.dataset)
    if previous is not None and previous.get("key", S.LEGACY_KEY) != S.RECORD_KEY:
        raise ConfigError(
            f"dataset {opts.dataset!r} was pushed by an older curate, with {previous.get('key', S.LEGACY_KEY)} as "
            f"record ids; pushing {S.RECORD_KEY}s would duplicate its records: push to a new --dataset name "
            "(pull still reads the old one)"
        )
    if previous is not None and previous["seed"] != opts.seed:
        raise ConfigError(
            f"dataset {opts.dataset!r} was pushed from this run with --seed {previous['seed']}; pushing with "
            f"--seed {opts.seed} would reorder responses already shown (pass --seed {previous['seed']})"
        )
    return S.mapping_frame(pairs[S.RECORD_KEY], opts.seed).with_columns(pl.lit(opts.dataset).alias("dataset"))


def run_semantic(run_dir: Path, model: str) -> dict[str, Any] | None:
    """The run's semantic-dedup settings (pipeline.json [dedup.semantic]) when that stage ran with `model`."""
    try:
        raw = json.loads((run_dir / "pipeline.json").read_text())
    except (OSError, ValueError):
        return None
    stages = (raw.get("pipeline") or {}).get("stages") or []
    dedup = raw.get("dedup") or {}
    if "dedup" not in stages or "semantic" not in (dedup.get("methods") or ["semantic"]):
        return None
    sem = dedup.get("semantic") or {}
    return sem if sem.get("model", DEFAULT_EMBED_MODEL) == model else None


def default_embed_cache(run_dir: Path, model: str) -> str | None:
    """The run's semantic-dedup embedding cache when that stage ran with `model` (pipeline.json), else None."""
    sem = run_semantic(run_dir, model)
    return None if sem is None else (sem.get("cache_dir", "~/.cache/curate/embeddings") or None)


def push(
    run_dir: str | Path,
    conn: Connection,
    opts: PushOptions,
    progress: Progress | None = None,
) -> PushResult:
    """Create or reuse the dataset, then send the pairs it doesn't hold yet, batch by batch.

    With vectors, the next batch is embedded in a background thread while the current one is being sent
    (torch and HTTP waits both release the GIL), so embedding and the server's work overlap."""
    from concurrent.futures import ThreadPoolExecutor

    import argilla as rg

    opts.validate()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    run_dir = Path(run_dir)
    pairs = read_pairs(run_dir)
    mapping = _mapping_for(run_dir, pairs, opts)

    t = time.perf_counter()
    dataset = find_dataset(conn, opts.dataset)
    created = dataset is None
    already: set[str] = set()
    if dataset is None:
        want_vectors = opts.vectors
    else:
        S.check_compatible(dataset)
        want_vectors = opts.vectors and any(v.name == S.VECTOR for v in dataset.settings.vectors)
        already = existing_ids(conn, dataset)
    # Balance's upsampling copies are the same pair again: reviewed once, through their original (pull gives
    # each copy its original's decision).
    originals = pairs.filter(pl.col(COPY_OF).is_null()) if COPY_OF in pairs.columns else pairs
    todo = originals.filter(~pl.col(S.RECORD_KEY).is_in(list(already)))
    total = todo.height
    batches = [todo.slice(s, opts.batch_size).to_dicts() for s in range(0, total, opts.batch_size)]
    timings["list_existing"] = time.perf_counter() - t

    embedder: PromptEmbedder | None = None
    first_vectors: dict[str, list[float]] = {}
    t = time.perf_counter()
    if want_vectors and batches:
        cache = opts.embed_cache if opts.embed_cache is not None else default_embed_cache(run_dir, opts.embed_model)
        try:
            embedder = PromptEmbedder(opts.embed_model, cache or None, run_semantic(run_dir, opts.embed_model))
            first_vectors = embedder(batches[0])
        except Exception:  # noqa: BLE001 - no usable model: push without vectors rather than fail the review
            embedder, first_vectors = None, {}
    timings["embed_first"] = time.perf_counter() - t

    t = time.perf_counter()
    text = guidelines.render(opts.policy, opts.min_submitted)
    if dataset is None:
        dims = len(next(iter(first_vectors.values()))) if first_vectors else None
        ws = _ensure_workspace(conn)
        settings = S.build_settings(conn.client, guidelines=text, min_submitted=opts.min_submitted, vector_dims=dims)
        try:
            dataset = rg.Dataset(name=opts.dataset, workspace=ws, settings=settings, client=conn.client).create()
        except Exception as exc:  # noqa: BLE001
            raise ServiceError(
                f"Argilla at {conn.api_url}: can't create dataset {opts.dataset!r}: {_first_line(exc)}"
            ) from None
    elif dataset.settings.distribution.min_submitted != opts.min_submitted or dataset.settings.guidelines != text:
        dataset.settings.distribution = rg.TaskDistribution(min_submitted=opts.min_submitted)
        dataset.settings.guidelines = text
        try:
            dataset.update()
        except Exception as exc:  # noqa: BLE001
            raise ServiceError(
                f"Argilla at {conn.api_url}: can't update dataset {opts.dataset!r}: {_first_line(exc)}"
            ) from None
    timings["dataset"] = time.perf_counter() - t
    layout = S.layout_of(dataset)
    known_metadata = {m.name for m in dataset.settings.metadata}

    _write_push_meta(run_dir, conn, opts, mapping, pairs.height, embedder.model if embedder else None)

    t = time.perf_counter()
    a_chosen = dict(zip(mapping[S.RECORD_KEY].to_list(), mapping["a_is_chosen"].to_list(), strict=True))
    sent = 0
    wait = 0.0
    if progress:
        progress(0, total)
    user_id = conn.client.me.id
    # Two batches in flight: while the server's database thread writes one (SQLite releases the GIL), its Python
    # side validates the next — on two cores ~1.5x the sequential rate. Batches finish in any order; every
    # finished batch is on the server, so an interrupted push still resumes by listing the ids there.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="curate-embed") as pool, \
            ThreadPoolExecutor(max_workers=SEND_AHEAD, thread_name_prefix="curate-send") as senders:
        pending = None
        in_flight: list[tuple[Any, int]] = []

        def settle(keep: int) -> None:
            nonlocal sent
            while len(in_flight) > keep:
                fut, n = in_flight.pop(0)
                fut.result()
                sent += n
                if progress:
                    progress(sent, total)

        try:
            for i, batch in enumerate(batches):
                if embedder is None:
                    vectors: dict[str, list[float]] = {}
                elif i == 0:
                    vectors = first_vectors
                else:
                    assert pending is not None  # submitted with the batch before
                    w = time.perf_counter()
                    vectors = pending.result()
                    wait += time.perf_counter() - w
                if embedder is not None and i + 1 < len(batches):
                    pending = pool.submit(embedder, batches[i + 1])
                settle(SEND_AHEAD - 1)
                start = sum(len(b) for b in batches[:i])
                in_flight.append((senders.submit(_send, conn, dataset, batch, a_chosen, vectors, opts, user_id, start,
                                                 total, layout, known_metadata), len(batch)))
            settle(0)
        finally:
            for fut, _ in in_flight:  # an error or an interrupt: don't leave a batch half-reported
                fut.cancel()
    timings["send"] = time.perf_counter() - t
    timings["embed_wait"] = wait
    timings["embed_compute"] = embedder.seconds if embedder else 0.0

    return PushResult(
        dataset=opts.dataset, workspace=conn.workspace, api_url=conn.api_url, pairs=pairs.height,
        already=originals.height - total, sent=sent, created_dataset=created, copies=pairs.height - originals.height,
        vectors=embedder.model if embedder else None,
        seconds=time.perf_counter() - t0, timings={k: round(v, 4) for k, v in timings.items()},
    )


def _send(conn: Connection, dataset: Any, batch: list[dict[str, Any]], a_chosen: dict[str, bool],
          vectors: dict[str, list[float]], opts: PushOptions, user_id: Any, sent: int, total: int,
          layout: str = "text", known_metadata: set[str] | None = None) -> None:
    import argilla as rg

    records = []
    for row in batch:
        key = row[S.RECORD_KEY]
        p = S.record_payload(row, a_chosen[key], vector=vectors.get(key), with_suggestion=opts.suggest, layout=layout)
        # a dataset made by an older curate lacks newer metadata properties; it refuses unknown ones
        metadata = p["metadata"] if known_metadata is None else {k: v for k, v in p["metadata"].items()
                                                                  if k in known_metadata}
        records.append(
            rg.Record(
                id=p["id"], fields=p["fields"], metadata=metadata, vectors=p["vectors"],
                suggestions=[rg.Suggestion(**s) for s in p["suggestions"]],
            )
        )
    try:
        models = dataset.records._ingest_records(records=records, user_id=user_id)
        conn.client.api.records.bulk_upsert(dataset_id=dataset.id, records=models)
    except Exception as exc:  # noqa: BLE001
        raise ServiceError(
            f"Argilla at {conn.api_url}: sending records {sent}-{sent + len(batch)} of {total} failed "
            f"(the batches before it are sent; run push again to continue): {_first_line(exc)}"
        ) from None


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else _jsonable(v) if isinstance(v, dict) else v) for k, v in d.items()}


def _write_push_meta(run_dir: Path, conn: Connection, opts: PushOptions, mapping: pl.DataFrame, n: int,
                     model_name: str | None) -> None:
    """mapping.parquet holds one row per (dataset, pair) for every dataset pushed from this run."""
    review = run_dir / "review"
    review.mkdir(parents=True, exist_ok=True)
    path = review / "mapping.parquet"
    if path.is_file():
        old = pl.read_parquet(path).filter(pl.col("dataset") != opts.dataset)
        mapping = pl.concat([old, mapping.select(old.columns)]) if old.height else mapping
    mapping = mapping.select("dataset", S.RECORD_KEY, "a_is_chosen", "seed").sort("dataset", S.RECORD_KEY)
    with atomic_path(path) as tmp:
        mapping.write_parquet(tmp)
    meta = read_push_meta(run_dir)
    meta["dataset"] = opts.dataset
    meta["datasets"][opts.dataset] = {
        "workspace": conn.workspace,
        "api_url": conn.api_url,
        "seed": opts.seed,
        "options": _jsonable(asdict(opts)),
        "policy": _jsonable(asdict(opts.policy)),
        "key": S.RECORD_KEY,
        "pairs": n,
        "vector_model": model_name,
    }
    atomic_write_text(review / "push.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
