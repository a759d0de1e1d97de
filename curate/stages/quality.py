"""Quality stage: the defects that make ORPO/DPO learn the wrong thing, each a reason code you can reject or flag.

What and why, per check (each configurable `reject` / `flag` / `off`; the default is in brackets):
- `role_marker_in_text` [chosen: reject, rejected: flag, prompt: flag] — a reply or prompt turn holds a leaked
  transcript or chat-template marker ("Human: …", "<|im_end|>", "### Response:", "用户：…"; rules and false
  positives in curate/quality/markers.py). A leak in the chosen reply teaches the model to write the user's next
  turn; in the rejected reply it is a fair negative, so it is only flagged.
- `inverted_scores` [flag] — chosen_score < rejected_score: the source contradicts its own labels. `swap` makes
  the higher-scored reply the chosen one (and recomputes pair_id, the content hash); `reject` drops the pair.
  A source with most of its pairs inverted gets a warning (its scores may be ranks, lower = better).
- `tied_scores` [flag] — chosen_score == rejected_score: the source saw no preference.
- `score_margin_below` [flag, off until `min_score_margin` is set] — 0 < chosen_score - rejected_score < margin.
  The three score checks are disjoint (margin < 0, = 0, in between) and need both scores.
- `near_identical_responses` [flag] — chosen and rejected have a normalised Levenshtein similarity (NFC,
  whitespace folded, case folded; rapidfuzz) ≥ `near_identical_threshold`: the pair barely differs, so the
  preference term gives almost no signal (DPO's loss sits at ln 2). Beyond clean's exact-identical check.
- `over_max_tokens` [reject, only with `tokenizer` or `train_preset`] — prompt + longer reply exceed `max_tokens`
  tokens of the training tokenizer and chat template (curate/quality/tokens.py): dropped, never truncated.
- `pii` [flag] — e-mail addresses, phone numbers, Chinese resident IDs (checksum), bank cards (Luhn), IP
  addresses in any text (curate/quality/pii.py); `redact` replaces them by typed placeholders ([EMAIL], [PHONE],
  [CN_ID], [BANK_CARD], [IP]) and keeps the pair, `reject` drops it.
- `truncated_reply` [flag] — a reply the source cut: it ends inside an open code fence (and not on a finished
  sentence), or on a mark or word no finished reply ends with (a comma, colon, opening bracket; "the", "and",
  "of" …; 以及, 因为, 例如, 一种 …), or without terminal punctuation at a round length (a multiple of
  `truncated_round_to`, from `truncated_min_chars`) or at its source's cap (the source's longest reply length,
  shared by at least `truncated_cap_repeats` unpunctuated replies). Short answers without a full stop ("Paris",
  "是的", "Answer: B", a sum) are not cut.
Also a length-bias report (curate/quality/lengths.py): the share of pairs whose chosen reply is the longer one,
per source and language, in the stats and report.html; `balance` can even it out (`length_balance`).

Defaults reject only what is near-certainly a defect that trains the wrong behaviour (a leaked marker in the
chosen reply; over-long pairs once you name the training tokenizer). Everything that needs judgement is flagged:
a flag column per check travels to the export, so a training job can filter on it.

How: the checks run in one streaming pass over the text columns; each check that needs more than a regex (context,
checksums, edit distance, a tokenizer) runs its Python part only on the rows a Polars prefilter lets through.
Decisions (a few small columns) are collected, stats and examples computed from them, and joined back to the
lazy input by row number, so the wide input still streams to the runner's Parquet writer.

Config: see `Config`. Input columns: row_id, source, system, prompt, chosen, rejected, chosen_score,
rejected_score (+ lang when the language stage ran before). Output columns (on kept and rejected rows):
`quality_<check>` (bool: the check fired; null when the check is off) for every check, `quality_pii_kinds`
(list of the kinds found) and `quality_tokens` (prompt + longer reply in training tokens, with a tokenizer).
Reasons: role_marker_in_text, inverted_scores, tied_scores, score_margin_below, near_identical_responses,
over_max_tokens, pii, truncated_reply.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from curate.quality import lengths, markers
from curate.quality import pii as piilib
from curate.schema import id_exprs
from curate.stage import StageResult, reject

NAME = "quality"
NEEDS = ("row_id", "source", "system", "prompt", "chosen", "rejected", "chosen_score", "rejected_score")

ROLE_MARKER_IN_TEXT = "role_marker_in_text"
INVERTED_SCORES = "inverted_scores"
TIED_SCORES = "tied_scores"
SCORE_MARGIN_BELOW = "score_margin_below"
NEAR_IDENTICAL_RESPONSES = "near_identical_responses"
OVER_MAX_TOKENS = "over_max_tokens"
PII = "pii"
TRUNCATED_REPLY = "truncated_reply"
# In this order: the first check that rejects a pair names its reason.
REASONS = (
    ROLE_MARKER_IN_TEXT, INVERTED_SCORES, TIED_SCORES, SCORE_MARGIN_BELOW, NEAR_IDENTICAL_RESPONSES,
    OVER_MAX_TOKENS, PII, TRUNCATED_REPLY,
)
FLAG_PREFIX = "quality_"
ADDS = (*[FLAG_PREFIX + r for r in REASONS], "quality_pii_kinds", "quality_tokens")

Action = Literal["reject", "flag", "off"]
PLACES = ("chosen", "rejected", "prompt")
_DEFAULT_ROLE: dict[str, Action] = {"chosen": "reject", "rejected": "flag", "prompt": "flag"}


@dataclass(frozen=True)
class Config:
    role_marker_in_text: dict[str, Action] = field(
        default_factory=lambda: dict(_DEFAULT_ROLE),
        metadata={"help": "Leaked transcript/template markers, per place: { chosen = \"reject\", rejected = \"flag\", "
                  "prompt = \"flag\" } (places left out keep these defaults)."},
    )
    inverted_scores: Literal["reject", "swap", "flag", "off"] = field(
        default="flag", metadata={"help": "chosen_score < rejected_score: reject, swap the replies, flag, or off."}
    )
    tied_scores: Action = field(default="flag", metadata={"help": "chosen_score == rejected_score."})
    score_margin_below: Action = field(
        default="flag", metadata={"help": "0 < chosen_score - rejected_score < min_score_margin (needs the margin)."}
    )
    min_score_margin: float | None = field(
        default=None,
        metadata={"above": 0, "help": "Smallest score margin that counts as a preference; unset: no margin check."},
    )
    near_identical_responses: Action = field(
        default="flag", metadata={"help": "chosen and rejected at least near_identical_threshold similar."}
    )
    near_identical_threshold: float = field(
        default=0.95,
        metadata={"above": 0, "max": 1, "help": "Normalised Levenshtein similarity (NFC, whitespace and case "
                  "folded) that counts as near-identical."},
    )
    over_max_tokens: Action = field(
        default="reject",
        metadata={"help": "Pairs whose prompt + longer reply exceed max_tokens training tokens (needs tokenizer or "
                  "train_preset); they are dropped, never truncated."},
    )
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "Training tokenizer: a transformers folder (its chat template is applied, as in training) or "
                  "a tokenizer.json (raw text, a lower bound); default: the train_preset's model."},
    )
    train_preset: str | None = field(
        default=None,
        metadata={"help": "A `curate train` preset (name or .toml): its model, orpo.max_length and curate.system set "
                  "tokenizer, max_tokens and system where those are unset."},
    )
    max_tokens: int | None = field(
        default=None,
        metadata={"min": 1, "help": "Token limit of prompt + longer reply (default: the preset's orpo.max_length)."},
    )
    system: Literal["keep", "merge", "drop"] | None = field(
        default=None,
        metadata={"help": "System-message policy when counting tokens, as curate.system in training (default: the "
                  "preset's, else keep)."},
    )
    pii: Literal["reject", "redact", "flag", "off"] = field(
        default="flag",
        metadata={"help": "Personal data in any text: reject the pair, redact it ([EMAIL], [PHONE] …), flag, or off."},
    )
    pii_kinds: tuple[str, ...] = field(
        default=piilib.KINDS, metadata={"help": "Which kinds: email, phone, cn_id, bank_card, ip."}
    )
    truncated_reply: Action = field(default="flag", metadata={"help": "Replies the source cut mid-sentence."})
    truncated_round_to: tuple[int, ...] = field(
        default=(100, 128),
        metadata={"min": 1, "help": "A reply without terminal punctuation whose length is a multiple of one of "
                  "these counts as cut."},
    )
    truncated_min_chars: int = field(
        default=200, metadata={"min": 0, "help": "Round lengths count from this many characters."}
    )
    truncated_cap_repeats: int = field(
        default=3,
        metadata={"min": 1, "help": "Unpunctuated replies ending at their source's longest reply length, at least "
                  "this many, mark that length as the source's cut."},
    )
    examples: int = field(default=3, metadata={"min": 0, "help": "Example rows per check in report.html."})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.role_marker_in_text) - set(PLACES))
        if unknown:
            raise ValueError(f"role_marker_in_text: unknown place {unknown[0]!r} (known: {', '.join(PLACES)})")
        bad = [v for v in self.role_marker_in_text.values() if v not in ("reject", "flag", "off")]
        if bad:
            raise ValueError(f"role_marker_in_text: {bad[0]!r} is not one of 'reject', 'flag', 'off'")
        object.__setattr__(self, "role_marker_in_text", {**_DEFAULT_ROLE, **self.role_marker_in_text})
        unknown = sorted(set(self.pii_kinds) - set(piilib.KINDS))
        if unknown:
            raise ValueError(f"pii_kinds: unknown kind {unknown[0]!r} (known: {', '.join(piilib.KINDS)})")
        if not 0 < self.near_identical_threshold <= 1:
            raise ValueError("near_identical_threshold must be in (0, 1]")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if self.max_tokens is not None and self.tokenizer is None and self.train_preset is None:
            raise ValueError("max_tokens needs a tokenizer or a train_preset to count with")
        if any(n < 1 for n in self.truncated_round_to):
            raise ValueError("truncated_round_to: lengths must be at least 1")

    def action(self, check: str) -> str:
        """The action of a check (role markers: the strictest of their places)."""
        if check == ROLE_MARKER_IN_TEXT:
            acts = set(self.role_marker_in_text.values())
            return "reject" if "reject" in acts else "flag" if "flag" in acts else "off"
        if check == SCORE_MARGIN_BELOW and self.min_score_margin is None:
            return "off"
        return getattr(self, check)


# ---------------------------------------------------------------------------------------------------- expressions


def _request() -> pl.Expr:
    """The last user turn."""
    return (
        pl.col("prompt")
        .list.eval(pl.element().filter(pl.element().struct.field("role") == "user").struct.field("content"))
        .list.last()
        .fill_null("")
    )


def _turns_text() -> pl.Expr:
    """Every prompt turn's content, joined by newlines (computed once per pass as `__ptext`)."""
    return pl.col("prompt").list.eval(pl.element().struct.field("content").fill_null("")).list.join("\n").fill_null("")


def _on_candidates(fn, dtype: pl.DataType | type[pl.DataType]):
    """A batch function over a struct whose first field `c` says which rows to look at; others get null."""

    def run(s: pl.Series) -> pl.Series:
        idx = s.struct.field("c").fill_null(False).arg_true().to_list()
        out: list[Any] = [None] * len(s)
        if idx:
            for i, row in zip(idx, s.gather(idx).to_list(), strict=True):
                out[i] = fn(row)
        return pl.Series(out, dtype=dtype)

    return run


def _marker_expr(place: str) -> pl.Expr:
    if place == "prompt":
        cand = pl.col("__ptext").str.contains(markers.PREFILTER) | pl.col("system").fill_null("").str.contains(
            markers.PREFILTER)

        def fn(r: dict[str, Any]) -> str | None:
            return markers.find_in_prompt(r["prompt"], r["system"])

        s = pl.struct(cand.alias("c"), pl.col("prompt"), pl.col("system"))
    else:
        cand = pl.col(place).fill_null("").str.contains(markers.PREFILTER)

        def fn(r: dict[str, Any]) -> str | None:
            users = [t["content"] or "" for t in r["prompt"] or [] if t["role"] == "user"]
            context = "\n".join([r["system"] or "", *users])
            return markers.find(r["t"], context, users[-1] if users else "")

        # the prompt column itself (no copy); the context is built in Python for the few candidate rows only
        s = pl.struct(cand.alias("c"), pl.col(place).alias("t"), pl.col("prompt"), pl.col("system"))
    return s.map_batches(_on_candidates(fn, pl.String), return_dtype=pl.String, is_elementwise=True)


def _pii_expr(kinds: tuple[str, ...]) -> pl.Expr:
    """Struct {kinds: list of kinds found, where: 'email in chosen; phone in prompt'}, null when nothing found."""
    texts = {"system": pl.col("system"), "prompt": pl.col("__ptext"), "chosen": pl.col("chosen"),
             "rejected": pl.col("rejected")}
    cand = pl.any_horizontal([t.fill_null("").str.contains(piilib.PREFILTER) for t in texts.values()])
    dtype = pl.Struct({"kinds": pl.List(pl.String), "where": pl.String})

    def fn(row: dict[str, Any]) -> dict[str, Any] | None:
        found, where = set(), []
        for place in ("system", "prompt", "chosen", "rejected"):
            ks = piilib.kinds_in(row[place], kinds)
            if ks:
                found |= set(ks)
                where.append(f"{', '.join(ks)} in {place}")
        return {"kinds": sorted(found), "where": "; ".join(where)} if found else None

    s = pl.struct(cand.alias("c"), *[t.alias(k) for k, t in texts.items()])
    return s.map_batches(_on_candidates(fn, dtype), return_dtype=dtype, is_elementwise=True)


def _fold(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split()).casefold()


def _similarity_expr(threshold: float) -> pl.Expr:
    """Normalised Levenshtein similarity of chosen and rejected where it can reach the threshold, else null.

    Similarity = 1 - distance / longer length, and the distance is at least the length difference, so a pair whose
    shorter reply is below `threshold` of the longer one can't be near-identical (a margin of 0.05 covers what
    whitespace folding changes); only the others are compared (rapidfuzz, C++).
    """
    c, r = pl.col("chosen").str.len_chars(), pl.col("rejected").str.len_chars()
    cand = (pl.min_horizontal(c, r) >= (threshold - 0.05) * pl.max_horizontal(c, r)) & (pl.max_horizontal(c, r) > 0)

    def run(s: pl.Series) -> pl.Series:
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        idx = s.struct.field("c").fill_null(False).arg_true()
        out = pl.Series([None] * len(s), dtype=pl.Float64)
        if len(idx):
            sub = s.gather(idx)
            a = [_fold(t or "") for t in sub.struct.field("a").to_list()]
            b = [_fold(t or "") for t in sub.struct.field("b").to_list()]
            # score_cutoff: rapidfuzz stops early on pairs that can't reach it (they score 0)
            sims = process.cpdist(a, b, scorer=Levenshtein.normalized_similarity, dtype="float64",
                                  score_cutoff=threshold)
            out = out.scatter(idx, pl.Series(sims, dtype=pl.Float64))
        return out

    s = pl.struct(cand.alias("c"), pl.col("chosen").alias("a"), pl.col("rejected").alias("b"))
    return s.map_batches(run, return_dtype=pl.Float64, is_elementwise=True)


_TILDE_FENCE = r"(?m)^[ \t]*~~~"  # at a line start only: "谢谢~~~" is no fence
_SENTENCE_END = r"[.!?。！？…][\"”’'」』）)\]*_~`]*\s*\z"
# A reply that ends on a letter, digit, comma, colon, dash or an opening bracket/quote stopped mid-sentence ...
_UNFINISHED_END = r"[\p{L}\p{N},，、:：;；\-—(\[{（《“‘]\s*\z"
# ... and one that ends on a word or mark no complete reply ends with is cut, whatever its length.
_DANGLING_END = (
    r"(?:[,，、:：；(\[{（《“‘]|(?i:(?-u:\b)(?:the|a|an|and|or|but|of|to|in|on|at|for|with|by|from|as|that|which|is|"
    r"are|was|were|such)(?-u:\b))|以及|并且|因为|所以|但是|如果|例如|比如|包括|一种|一个|其中|由于|而且)\s*\z"
)
_DANGLING_MIN_CHARS = 20  # "A:" or "答：" alone is a label, not a cut


def _truncation_exprs(place: str, cfg: Config) -> list[pl.Expr]:
    text = pl.col(place).fill_null("")
    # The end-anchored patterns read only the last 40 characters: a regex over the whole text would scan all of it,
    # and Rust's fast engines give up on Unicode word boundaries in non-ASCII text (10x slower on Chinese replies).
    tail = text.str.slice(-40)
    n = text.str.len_chars()
    round_len = pl.lit(False)
    for k in cfg.truncated_round_to:
        round_len = round_len | (n % k == 0)
    # Every ``` toggles a fence; a one-line ```npm install x``` toggles twice (a literal count is a memchr scan).
    fences = text.str.count_matches("```", literal=True) + text.str.count_matches(_TILDE_FENCE)
    return [
        ((fences % 2 == 1) & ~tail.str.contains(_SENTENCE_END)).alias(f"__{place}_open_fence"),
        tail.str.contains(_UNFINISHED_END).alias(f"__{place}_unfinished"),
        ((n >= _DANGLING_MIN_CHARS) & tail.str.contains(_DANGLING_END)).alias(f"__{place}_dangling"),
        (round_len & (n >= cfg.truncated_min_chars)).alias(f"__{place}_round"),
        n.alias(f"__{place}_len"),
        # for the detail of a dangling end only (null elsewhere, so the decisions stay small)
        pl.when(tail.str.contains(_DANGLING_END)).then(tail.str.strip_chars_end().str.slice(-12)).alias(f"__{place}_tail"),
    ]


def _tokens_expr(b) -> pl.Expr:
    from curate.quality import tokens

    count = tokens.counter(b)

    def run(s: pl.Series) -> pl.Series:
        return pl.Series(count(s.to_list()) if len(s) else [], dtype=pl.Int64)

    s = pl.struct("system", "prompt", "chosen", "rejected")
    return s.map_batches(run, return_dtype=pl.Int64, is_elementwise=True).alias("quality_tokens")


def _swap(lf: pl.LazyFrame) -> pl.LazyFrame:
    """chosen ↔ rejected (and their scores) where chosen_score < rejected_score; pair_id recomputed for them."""
    inv = (pl.col("chosen_score") < pl.col("rejected_score")).fill_null(False)
    swapped = lf.with_columns(
        pl.when(inv).then(pl.col("rejected")).otherwise(pl.col("chosen")).alias("chosen"),
        pl.when(inv).then(pl.col("chosen")).otherwise(pl.col("rejected")).alias("rejected"),
        pl.when(inv).then(pl.col("rejected_score")).otherwise(pl.col("chosen_score")).alias("chosen_score"),
        pl.when(inv).then(pl.col("chosen_score")).otherwise(pl.col("rejected_score")).alias("rejected_score"),
        inv.alias("__swapped"),
    )
    pair_id = next(e for e in id_exprs() if e.meta.output_name() == "pair_id")
    return swapped.with_columns(
        pl.when(pl.col("__swapped")).then(pair_id).otherwise(pl.col("pair_id")).alias("pair_id")
    )


# ------------------------------------------------------------------------------------------------------- decisions


def _num(x: pl.Expr) -> pl.Expr:
    return x.round(4).cast(pl.String).str.replace(r"\.0$", "")


def decide(lf: pl.LazyFrame, cfg: Config, names: list[str]) -> tuple[pl.DataFrame, dict[str, Any]]:
    """One pass over the text columns: every check's outcome per row (small columns), then stats and examples."""
    cols = [pl.col("__row"), pl.col("row_id"), pl.col("source"), lengths.lang_expr(names).alias("__lang")]
    for place in PLACES:
        if cfg.role_marker_in_text[place] != "off":
            cols.append(_marker_expr(place).alias(f"__marker_{place}"))
    margin = pl.col("chosen_score") - pl.col("rejected_score")
    cols += [margin.alias("__margin"), pl.col("chosen_score").alias("__cs"), pl.col("rejected_score").alias("__rs")]
    if cfg.near_identical_responses != "off":
        cols.append(_similarity_expr(cfg.near_identical_threshold).alias("__similarity"))
    if cfg.pii != "off":
        cols.append(_pii_expr(tuple(cfg.pii_kinds)).alias("__pii"))
    for place in ("chosen", "rejected"):
        cols += _truncation_exprs(place, cfg)
    from curate.quality import tokens as tokmod

    b = tokmod.budget(cfg.tokenizer, cfg.train_preset, cfg.max_tokens, cfg.system) \
        if cfg.over_max_tokens != "off" else None
    if b is not None:
        cols.append(_tokens_expr(b))
    if "__swapped" in lf.collect_schema().names():
        cols.append(pl.col("__swapped"))
    df = lf.with_columns(_turns_text().alias("__ptext")).select(cols).collect(engine="streaming").sort("__row")

    fired: dict[str, pl.Expr] = {}
    detail: dict[str, pl.Expr] = {}

    places = [p for p in PLACES if cfg.role_marker_in_text[p] != "off"]
    if places:
        fired[ROLE_MARKER_IN_TEXT], detail[ROLE_MARKER_IN_TEXT] = _marker_outcome(places)
    m = pl.col("__margin")
    cs, rs = _num(pl.col("__cs")), _num(pl.col("__rs"))
    if cfg.inverted_scores != "off":
        if "__swapped" in df.columns:  # swapped before the checks: the scores are in their new order
            fired[INVERTED_SCORES] = pl.col("__swapped")
            detail[INVERTED_SCORES] = pl.format("swapped: chosen_score was {} < rejected_score {}", rs, cs)
        else:
            fired[INVERTED_SCORES] = (m < 0).fill_null(False)
            detail[INVERTED_SCORES] = pl.format("chosen_score {} < rejected_score {}", cs, rs)
    if cfg.tied_scores != "off":
        fired[TIED_SCORES] = (m.abs() <= 1e-9).fill_null(False)
        detail[TIED_SCORES] = pl.format("chosen_score = rejected_score = {}", cs)
    if cfg.action(SCORE_MARGIN_BELOW) != "off":
        fired[SCORE_MARGIN_BELOW] = ((m > 1e-9) & (m < cfg.min_score_margin)).fill_null(False)
        detail[SCORE_MARGIN_BELOW] = pl.format("score margin {} < min_score_margin {}", _num(m),
                                               pl.lit(str(cfg.min_score_margin)))
    if cfg.near_identical_responses != "off":
        sim = pl.col("__similarity")
        fired[NEAR_IDENTICAL_RESPONSES] = (sim >= cfg.near_identical_threshold).fill_null(False)
        detail[NEAR_IDENTICAL_RESPONSES] = pl.format(
            "chosen and rejected are {} similar (near_identical_threshold {})", sim.round(3),
            pl.lit(str(cfg.near_identical_threshold)),
        )
    if b is not None:
        t = pl.col("quality_tokens")
        fired[OVER_MAX_TOKENS] = (t > b.max_tokens).fill_null(False)
        detail[OVER_MAX_TOKENS] = pl.format(
            "prompt + longer reply is {} tokens (max_tokens {}, {})", t, pl.lit(b.max_tokens), pl.lit(b.source)
        )
    if cfg.pii != "off":
        fired[PII] = pl.col("__pii").is_not_null()
        detail[PII] = pl.col("__pii").struct.field("where")
    if cfg.truncated_reply != "off":
        df = df.with_columns(_cap_lengths(df, cfg))
        fired[TRUNCATED_REPLY], detail[TRUNCATED_REPLY] = _truncation_outcome()

    df = df.with_columns([e.fill_null(False).alias(FLAG_PREFIX + k) for k, e in fired.items()])
    df = df.with_columns(*_reason_exprs(cfg, fired, detail, places))
    df = df.with_columns(
        [pl.lit(None, dtype=pl.Boolean).alias(FLAG_PREFIX + k) for k in REASONS if FLAG_PREFIX + k not in df.columns]
    )
    df = df.with_columns(
        (pl.col("__pii").struct.field("kinds") if "__pii" in df.columns else pl.lit(None, dtype=pl.List(pl.String)))
        .alias("quality_pii_kinds"),
        *([] if "quality_tokens" in df.columns else [pl.lit(None, dtype=pl.Int64).alias("quality_tokens")]),
    )
    stats = _stats(df, cfg, fired, detail, b)
    stats["length_bias_by"] = "lang" if "lang" in names else "script"
    _add_previews(lf, stats["examples"])
    return df, stats


def _marker_outcome(places: list[str]) -> tuple[pl.Expr, pl.Expr]:
    """Fired in any of `places`, and the detail of the first of them: `chosen: 'Human: …' (line 1)`."""
    hit = pl.any_horizontal([pl.col(f"__marker_{p}").is_not_null() for p in places])
    why = pl.lit(None, dtype=pl.String)
    for p in reversed(places):
        col = pl.col(f"__marker_{p}")
        why = pl.when(col.is_not_null()).then(pl.format(f"{p}: {{}}", col)).otherwise(why)
    return hit, why


def _truncation_outcome() -> tuple[pl.Expr, pl.Expr]:
    """Fired for either reply, and why (open fence, dangling end, round length, the source's cap)."""
    hits, why = [], pl.lit(None, dtype=pl.String)
    for place in ("rejected", "chosen"):  # built backwards: the chosen reply's reason comes first
        fence, unfinished = pl.col(f"__{place}_open_fence"), pl.col(f"__{place}_unfinished")
        dangling, n = pl.col(f"__{place}_dangling"), pl.col(f"__{place}_len")
        at_round, at_cap = pl.col(f"__{place}_round"), pl.col(f"__{place}_at_cap")
        hit = fence | dangling | (unfinished & (at_round | at_cap))
        hits.append(hit)
        text = (
            pl.when(fence).then(pl.lit(f"{place} ends inside an open code fence"))
            .when(dangling).then(pl.format(f"{place} ends on a dangling word or mark at {{}} characters: …{{}}", n,
                                           pl.col(f"__{place}_tail")))
            .when(at_cap)
            .then(pl.format(f"{place} ends mid-sentence at {{}} characters, its source's longest reply", n))
            .otherwise(pl.format(f"{place} ends mid-sentence at a round {{}} characters", n))
        )
        why = pl.when(hit).then(text).otherwise(why)
    return pl.any_horizontal(hits), why


def _reason_exprs(cfg: Config, fired: dict[str, pl.Expr], detail: dict[str, pl.Expr],
                  places: list[str]) -> list[pl.Expr]:
    """`__reason` / `__detail`: the first check, in REASONS order, that fired and rejects (null: kept)."""
    reason, why = pl.lit(None, dtype=pl.String), pl.lit(None, dtype=pl.String)
    for code in reversed(REASONS):
        if code not in fired:
            continue
        if code == ROLE_MARKER_IN_TEXT:  # rejects only for the places set to reject
            rejecting = [p for p in places if cfg.role_marker_in_text[p] == "reject"]
            if not rejecting:
                continue
            hit, d = _marker_outcome(rejecting)
        elif cfg.action(code) == "reject":
            hit, d = pl.col(FLAG_PREFIX + code), detail.get(code, pl.lit(code))
        else:
            continue
        reason = pl.when(hit).then(pl.lit(code)).otherwise(reason)
        why = pl.when(hit).then(d).otherwise(why)
    return [reason.alias("__reason"), why.alias("__detail")]


def _add_previews(lf: pl.LazyFrame, examples: dict[str, list[dict[str, Any]]]) -> None:
    """The first 80 characters of the last user turn of each example row (one small scan of the prompt column)."""
    rows = sorted({e["__row"] for shown in examples.values() for e in shown})
    if not rows:
        return
    found = lf.select("__row", _request().str.slice(0, 80).alias("p")).filter(pl.col("__row").is_in(rows)).collect()
    preview = dict(zip(found["__row"].to_list(), found["p"].to_list(), strict=True))
    for shown in examples.values():
        for e in shown:
            e["prompt"] = preview.get(e.pop("__row"))


def _cap_lengths(df: pl.DataFrame, cfg: Config) -> list[pl.Expr]:
    """`__<place>_at_cap`: the reply is unpunctuated and as long as its source's longest reply, a length that at
    least `truncated_cap_repeats` unpunctuated replies of that source share (the source cut at a length)."""
    parts = [
        df.select("source", pl.col(f"__{p}_len").alias("n"), pl.col(f"__{p}_unfinished").alias("u"))
        for p in ("chosen", "rejected")
    ]
    both = pl.concat(parts)
    longest = both.group_by("source").agg(pl.col("n").max().alias("top"))
    caps = (
        both.filter(pl.col("u")).group_by("source", "n").len()
        .join(longest, on="source")
        .filter((pl.col("n") == pl.col("top")) & (pl.col("len") >= cfg.truncated_cap_repeats))
    )
    cap_of = dict(zip(caps["source"].to_list(), caps["n"].to_list(), strict=True))
    out = []
    for p in ("chosen", "rejected"):
        if cap_of:
            cap = pl.col("source").replace_strict(cap_of, default=None, return_dtype=pl.Int64)
            at_cap = (pl.col(f"__{p}_unfinished") & (pl.col(f"__{p}_len") == cap)).fill_null(False)
            out.append(at_cap.alias(f"__{p}_at_cap"))
        else:
            out.append(pl.lit(False).alias(f"__{p}_at_cap"))
    return out


def _stats(df: pl.DataFrame, cfg: Config, fired: dict[str, pl.Expr], detail: dict[str, pl.Expr], b) -> dict[str, Any]:
    kept = df.filter(pl.col("__reason").is_null())
    checks: dict[str, Any] = {}
    examples: dict[str, list[dict[str, Any]]] = {}
    for code in REASONS:
        action = cfg.action(code) if code != OVER_MAX_TOKENS or b is not None else "off"
        col = FLAG_PREFIX + code
        if code not in fired:
            checks[code] = {"action": action, "fired": 0, "rejected": 0, "kept_flagged": 0}
            continue
        hit = df.filter(pl.col(col))
        entry = {
            "action": action,
            "fired": hit.height,
            "rejected": int((df["__reason"] == code).sum()),
            "kept_flagged": int(kept[col].sum()),
        }
        if code == ROLE_MARKER_IN_TEXT:
            entry["action"] = dict(cfg.role_marker_in_text)
            entry["by_place"] = {p: int(df[f"__marker_{p}"].is_not_null().sum())
                                 for p in PLACES if f"__marker_{p}" in df.columns}
        if code == INVERTED_SCORES and cfg.inverted_scores == "swap":
            entry["swapped"] = int(kept[col].sum())
        if code == PII:
            kinds = hit["quality_pii_kinds"].explode().drop_nulls().value_counts(sort=True)
            entry["kinds"] = dict(sorted(zip(kinds[kinds.columns[0]].to_list(), kinds["count"].to_list(), strict=True)))
            if cfg.pii == "redact":
                entry["redacted"] = int(kept[col].sum())
        checks[code] = entry
        if hit.height:
            shown = hit.head(cfg.examples).with_columns(_detail_for(code, df, detail).alias("__why"))
            examples[code] = [
                {"__row": r["__row"], "row_id": r["row_id"], "source": r["source"], "prompt": None,
                 "detail": r["__why"]}
                for r in shown.iter_rows(named=True)
            ]
    stats: dict[str, Any] = {
        "pairs": df.height,
        "rejected": int(df["__reason"].is_not_null().sum()),
        "checks": checks,
        "examples": examples,
        "length_bias": lengths.bias(kept.select("source", "__lang", pl.col("__chosen_len").alias("__clen"),
                                                pl.col("__rejected_len").alias("__rlen"))),
        "warnings": [],
    }
    if b is not None:
        t = df["quality_tokens"]
        stats["tokens"] = {
            "tokenizer": b.tokenizer, "max_tokens": b.max_tokens, "system": b.system, "from": b.source,
            "over": int((t > b.max_tokens).sum()), "median": float(t.median() or 0), "max": int(t.max() or 0),  # type: ignore[arg-type]
        }
    if cfg.inverted_scores != "off":
        scored = df.filter(pl.col("__margin").is_not_null())
        by_src = scored.group_by("source").agg(
            pl.len().alias("n"), (pl.col(FLAG_PREFIX + INVERTED_SCORES)).sum().alias("inv")
        )
        for src, n, inv in sorted(by_src.iter_rows()):
            if n >= 10 and inv > n / 2:
                stats["warnings"].append(
                    f"{src}: {inv} of {n} scored pairs have chosen_score < rejected_score; are its scores ranks "
                    "(lower = better)? map them, or set quality.inverted_scores = \"swap\""
                )
    return stats


def _detail_for(code: str, df: pl.DataFrame, detail: dict[str, pl.Expr]) -> pl.Expr:
    return detail.get(code, pl.lit(code))


# ------------------------------------------------------------------------------------------------------------- run


def run(frame: pl.LazyFrame | pl.DataFrame, cfg: Config) -> StageResult:
    lf = frame.lazy()
    stale = [c for c in ADDS if c in lf.collect_schema().names()]  # checked before: check again
    lf = lf.drop(stale)
    names = lf.collect_schema().names()
    if cfg.inverted_scores == "swap":
        lf = _swap(lf)
    lf = lf.with_row_index("__row")
    decisions, stats = decide(lf, cfg, names)
    keep_cols = ["__row", "__reason", "__detail", *ADDS]
    small = decisions.select(keep_cols)
    out_cols = [n for n in names if n not in ADDS] + list(ADDS)
    tagged = lf.join(small.lazy(), on="__row", how="left", maintain_order="left")
    if cfg.pii == "redact":
        tagged = _redact(tagged, tuple(cfg.pii_kinds))
    kept = tagged.filter(pl.col("__reason").is_null()).select(out_cols)
    rejected = tagged.filter(pl.col("__reason").is_not_null())
    rejects = reject(rejected, NAME, pl.col("__reason"), pl.col("__detail")).select(
        *out_cols, "stage", "reason", "detail"
    )
    return StageResult(kept, rejects, stats)


def _redact(lf: pl.LazyFrame, kinds: tuple[str, ...]) -> pl.LazyFrame:
    """Replace personal data by placeholders in every text of the flagged rows; their ids are recomputed."""
    flag = pl.col(FLAG_PREFIX + PII).fill_null(False)

    def text_fn(s: pl.Series) -> pl.Series:
        idx = s.struct.field("c").fill_null(False).arg_true()
        out = s.struct.field("t")
        if len(idx):
            redacted = [piilib.redact(t, kinds) for t in out.gather(idx).to_list()]
            out = out.scatter(idx, pl.Series(redacted, dtype=pl.String))
        return out

    def prompt_fn(s: pl.Series) -> pl.Series:
        idx = s.struct.field("c").fill_null(False).arg_true().to_list()
        values = s.struct.field("t")
        if not idx:
            return values
        rows = values.to_list()
        for i in idx:
            rows[i] = [{"role": t["role"], "content": piilib.redact(t["content"], kinds)} for t in rows[i] or []]
        return pl.Series(rows, dtype=values.dtype)

    def red(col: str, fn) -> pl.Expr:
        dtype = lf.collect_schema()[col]
        return (
            pl.struct(flag.alias("c"), pl.col(col).alias("t"))
            .map_batches(fn, return_dtype=dtype, is_elementwise=True).alias(col)
        )

    lf = lf.with_columns(red("system", text_fn), red("prompt", prompt_fn), red("chosen", text_fn),
                         red("rejected", text_fn))
    return lf.with_columns([pl.when(flag).then(e).otherwise(pl.col(e.meta.output_name())) for e in id_exprs()])


# ---------------------------------------------------------------------------------------------------------- report


def html_section(stats: dict[str, Any]) -> str:
    """Counts per check, a few example rows per check, the length-bias chart and the token budget."""
    from curate import report

    rows = []
    for code, c in stats.get("checks", {}).items():
        action = c.get("action")
        if isinstance(action, dict):
            action = ", ".join(f"{k} {v}" for k, v in action.items())
        extra = {k: v for k, v in c.items() if k in ("swapped", "redacted")}
        rows.append({"check": code, "action": action, "pairs hit": c.get("fired", 0), "rejected": c.get("rejected", 0),
                     "kept, flagged": c.get("kept_flagged", 0), **extra,
                     "details": "; ".join(f"{k} {v}"
                                          for k, v in {**c.get("by_place", {}), **c.get("kinds", {})}.items())})
    parts = [report.table(rows, "Checks (a flagged pair is kept with quality_<check> = true in the export)")]
    hits = {r["check"]: float(r["pairs hit"]) for r in rows if r["pairs hit"]}
    parts.append(report.bar_chart(hits, "Pairs hit per check"))
    from curate import langid

    examples = stats.get("examples", {})
    names = langid.short_sources(sorted({e["source"] for shown in examples.values() for e in shown}))
    for code, shown in examples.items():
        parts.append(report.table([{**e, "source": names[e["source"]]} for e in shown], f"Examples: {code}"))
    lb = stats.get("length_bias", {})
    by = "language stage" if stats.get("length_bias_by") == "lang" else "script of prompt + chosen"
    groups = lb.get("by_source", [])
    short = langid.short_sources(sorted({g["source"] for g in groups}))
    bars = {}
    for g in groups:
        if g.get("share_chosen_longer") is not None:
            bars[f"{short[g['source']]} · {g['lang']} ({g['pairs']})"] = round(100 * g["share_chosen_longer"], 1)
    overall = lb.get("overall", {})
    head = ""
    if overall.get("pairs"):
        head = (f"<p>Chosen is the longer reply in <b>{100 * overall['share_chosen_longer']:.1f}%</b> of "
                f"{overall['pairs']:,} kept pairs (50% = no length bias; language by {report.esc(by)}). "
                + ", ".join(f"{report.esc(k)} {100 * v['share_chosen_longer']:.1f}%"
                            for k, v in lb.get("by_lang", {}).items()
                            if v.get("share_chosen_longer") is not None) + ".</p>")
    parts.append("<h3>Length bias</h3>" + head + report.bar_chart(bars, "Share of pairs whose chosen reply is longer, "
                                                                  "per source · language (pairs)", unit="%"))
    tok = stats.get("tokens")
    if tok:
        parts.append(report.table([tok], "Training-token budget (over_max_tokens)"))
    return "\n".join(parts)
