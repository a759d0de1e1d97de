"""Resolve annotators' answers per pair, and apply the decisions to the pairs with the conservation law.

Resolution (per pair, over its *submitted* responses; drafts and discarded answers don't vote):
1. Fewer than `min_votes` submitted answers (default: the dataset's min_submitted, the overlap push asked
   for) → unreviewed: kept unchanged (review_decision null), or rejected as `review_pending` with
   `only_reviewed`.
2. A problem listed in `drop_problems` (default: unsafe) flagged by any / a majority of annotators → dropped.
3. The votes (already unblinded to chosen / rejected / tie / both_bad) decide by strict plurality:
   chosen → keep; rejected → keep with chosen/rejected (and their scores) swapped; both_bad → dropped, unless
   a both-bad voter wrote a corrected reply (then kept with it as chosen); tie → the `tie` policy; no strict
   plurality (e.g. 1 vs 1) → "disputed", the `disagreement` policy.
4. A kept pair whose annotators wrote a corrected better reply gets it as `chosen` (the replaced reply is kept
   in `review_replaced`). Only corrections from annotators whose vote matches the decision count (any, for a
   kept tie or disputed pair); among several, the most recently updated wins (then the user name), so the
   result is deterministic.
5. The language check (when the run has a language stage): a corrected pair is labelled again with the language
   stage's own labelling function and configuration (`curate.stages.language.label`), so its lang_* columns
   describe the new chosen reply. A correction the stage would reject as a language mismatch (a reply in
   English to a Chinese prompt) is set aside (`review_correction_refused` says why) and the pair is decided
   without it; a both-bad pair whose only correction is refused is dropped. With the stage's `convert`, a
   correction in the source script is converted like the rest of the pair.

The guidelines annotators see are generated from the same policy (curate/review/guidelines.py).

Every dropped pair lands in the rejects table with stage "review", reason `review_rejected` (or
`review_pending`) and a detail a person can read. Ids (DESIGN.md, curate/schema.py): `row_id` names the row and
is its Argilla record id, so it stays as it is; `pair_id` is the content hash of system + prompt + chosen +
rejected, so a swapped or corrected pair gets it recomputed (as the quality stage's swap does); `prompt_id`
hashes the prompt only and stays. After a swap the language stage's per-reply labels (lang_chosen, lang_rejected)
are swapped with the replies; a corrected pair is labelled again (rule 5). The quality stage's quality_* columns
describe the pair as that stage saw it, before review.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from curate.errors import ConservationError
from curate.review.settings import (
    PROBLEM_LABELS,
    RECORD_KEY,
    VOTE_BOTH_BAD,
    VOTE_CHOSEN,
    VOTE_REJECTED,
    VOTE_TIE,
    VOTES,
)
from curate.schema import id_exprs
from curate.stage import reject

STAGE = "review"
KEY = RECORD_KEY
COPY_OF = "balance_copy_of"
REASON_REJECTED = "review_rejected"  # both bad, flagged unsafe, or dropped by the tie/disagreement policy
REASON_PENDING = "review_pending"  # not reviewed yet, and only reviewed pairs were asked for

DECISION_DISPUTED = "disputed"

DECISION_COLUMNS = pl.Schema(
    {
        KEY: pl.String(),
        "review_decision": pl.String(),
        "review_votes": pl.Int64(),
        "review_vote_counts": pl.String(),
        "review_swapped": pl.Boolean(),
        "review_corrected": pl.Boolean(),
        "review_problems": pl.List(pl.String),
        "review_rating": pl.Float64(),
        "review_annotators": pl.List(pl.String),
        "review_correction_refused": pl.String(),
        "__drop": pl.String(),
        "__correction": pl.String(),
    }
)
REVIEW_COLUMNS = [n for n in DECISION_COLUMNS.names() if not n.startswith("__") and n != KEY] + ["review_replaced"]


@dataclass(frozen=True)
class ResolvePolicy:
    """How answers become decisions. Each option is also a `curate review pull` flag."""

    tie: Literal["keep", "drop"] = field(
        default="keep", metadata={"help": "a pair resolved as Tie: keep it as the source labelled it, or drop it"}
    )
    disagreement: Literal["keep", "drop"] = field(
        default="keep",
        metadata={"help": "no strict majority (e.g. 1 vs 1): keep the source's label (decision 'disputed') or drop"},
    )
    drop_problems: tuple[str, ...] = field(
        default=("unsafe",), metadata={"help": "problem labels that drop a pair when flagged"}
    )
    problem_votes: Literal["any", "majority"] = field(
        default="any", metadata={"help": "flags needed to drop: any annotator, or a majority of those who submitted"}
    )
    min_votes: int | None = field(
        default=None,
        metadata={"help": "submitted answers a pair needs to count as reviewed (default: the dataset's min_submitted)"},
    )
    only_reviewed: bool = field(
        default=False, metadata={"help": "reject unreviewed pairs (reason review_pending) instead of keeping them"}
    )
    corrections: bool = field(default=True, metadata={"help": "replace chosen by an annotator's corrected reply"})

    def validate(self) -> None:
        unknown = sorted(set(self.drop_problems) - set(PROBLEM_LABELS))
        if unknown:
            raise ValueError(f"drop_problems: unknown label {unknown[0]!r} (known: {', '.join(PROBLEM_LABELS)})")
        if self.min_votes is not None and self.min_votes < 1:
            raise ValueError(f"min_votes must be at least 1, got {self.min_votes}")

    def votes_needed(self, min_submitted: int) -> int:
        """Submitted answers that make a pair reviewed: min_votes, or the dataset's min_submitted."""
        return self.min_votes if self.min_votes is not None else max(1, int(min_submitted))

    def resolved(self, min_submitted: int) -> ResolvePolicy:
        """This policy with min_votes fixed from the dataset's min_submitted (what pull applies)."""
        from dataclasses import replace

        return replace(self, min_votes=self.votes_needed(min_submitted))


def resolve_pair(answers: list[dict[str, Any]], policy: ResolvePolicy) -> dict[str, Any]:
    """One pair's submitted answers → its decision row (see the module docstring for the rules).

    Each answer: user, vote (chosen/rejected/tie/both_bad), problems (list), rating (int|None), corrected
    (str|None), updated_at (sortable|None). `policy.min_votes` None counts as 1 here; pull passes
    `policy.resolved(min_submitted)`."""
    answers = [a for a in answers if a.get("vote") in VOTES]
    n = len(answers)
    counts = Counter(a["vote"] for a in answers)
    flags = Counter(p for a in answers for p in set(a.get("problems") or []))
    ratings = [a["rating"] for a in answers if a.get("rating") is not None]
    row: dict[str, Any] = {
        "review_decision": None,
        "review_votes": n,
        "review_vote_counts": _counts_json(counts),
        "review_swapped": False,
        "review_corrected": False,
        "review_problems": sorted(flags),
        "review_rating": (sum(ratings) / len(ratings)) if ratings else None,
        "review_annotators": sorted(a["user"] for a in answers),
        "review_correction_refused": None,
        "__drop": None,
        "__correction": None,
    }
    if n < policy.votes_needed(1):
        return row
    top = max(counts.values())
    winners = sorted(v for v, c in counts.items() if c == top)
    decision = winners[0] if len(winners) == 1 else DECISION_DISPUTED
    row["review_decision"] = decision

    need = 1 if policy.problem_votes == "any" else n // 2 + 1
    flagged = [p for p in policy.drop_problems if flags.get(p, 0) >= need]
    correction = _correction(answers, decision, policy)
    if flagged:
        row["__drop"] = f"flagged {', '.join(flagged)} by {flags[flagged[0]]} of {n} annotators"
    elif decision == VOTE_BOTH_BAD and correction is None:
        row["__drop"] = f"both responses bad ({counts[VOTE_BOTH_BAD]} of {n} votes)"
    elif decision == VOTE_TIE and policy.tie == "drop":
        row["__drop"] = f"tie ({counts[VOTE_TIE]} of {n} votes) and tie policy is drop"
    elif decision == DECISION_DISPUTED and policy.disagreement == "drop":
        row["__drop"] = f"annotators disagree ({_counts_text(counts)}) and disagreement policy is drop"
    if row["__drop"] is not None:
        return row

    row["review_swapped"] = decision == VOTE_REJECTED
    if correction is not None:
        row["__correction"] = correction
        row["review_corrected"] = True
    return row


def _correction(answers: list[dict[str, Any]], decision: str, policy: ResolvePolicy) -> str | None:
    """The corrected reply that counts for this decision, or None (see rule 4 of the module docstring)."""
    if not policy.corrections:
        return None
    agreeing = decision not in (VOTE_CHOSEN, VOTE_REJECTED, VOTE_BOTH_BAD)
    pool = [a for a in answers if (a.get("corrected") or "").strip() and (agreeing or a["vote"] == decision)]
    if not pool:
        return None
    best = max(pool, key=lambda a: (str(a.get("updated_at") or ""), a["user"]))
    return best["corrected"].strip()


def _counts_json(counts: Counter) -> str:
    import json

    return json.dumps({v: counts.get(v, 0) for v in VOTES}, sort_keys=False)


def _counts_text(counts: Counter) -> str:
    return ", ".join(f"{v} {counts[v]}" for v in VOTES if counts.get(v))


def resolve(responses: pl.DataFrame, policy: ResolvePolicy) -> pl.DataFrame:
    """Long responses (pair_id, user, status, vote, problems, rating, corrected, updated_at) → one decision
    row per pair that has any submitted answer."""
    sub = responses.filter(pl.col("status") == "submitted") if responses.height else responses
    grouped: dict[str, list[dict[str, Any]]] = {}
    for r in sub.sort(KEY, "user").to_dicts() if sub.height else []:
        grouped.setdefault(r[KEY], []).append(r)
    rows = [{KEY: pid, **resolve_pair(answers, policy)} for pid, answers in sorted(grouped.items())]
    return pl.DataFrame(rows, schema=DECISION_COLUMNS) if rows else pl.DataFrame(schema=DECISION_COLUMNS)


@dataclass(frozen=True)
class Applied:
    kept: pl.DataFrame
    rejects: pl.DataFrame
    stats: dict[str, Any]


LANG_COLUMNS = ("lang_prompt", "lang_chosen", "lang_rejected", "lang")


def _check_corrections(joined: pl.DataFrame, language: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rule 5: the corrected pairs, labelled again by the language stage; refused corrections set aside.

    Returns (joined with refused corrections removed, new labels of the accepted corrected pairs by key)."""
    from curate.stages import language as lang_stage

    todo = joined.filter(pl.col("__correction").is_not_null() & pl.col("__drop").is_null())
    empty = pl.DataFrame(schema={KEY: pl.String, **dict.fromkeys(LANG_COLUMNS, pl.String), "__correction": pl.String})
    if todo.height == 0:
        return joined, empty
    rejected = pl.when(pl.col("review_swapped")).then(pl.col("chosen")).otherwise(pl.col("rejected"))
    cand = todo.select(KEY, "source", "prompt", pl.col("__correction").alias("chosen"), rejected.alias("rejected"))
    labels = (
        lang_stage.label(cand, language).select(KEY, *LANG_COLUMNS, pl.col("chosen").alias("__correction")).collect()
    )
    refuse = (pl.col("lang") == "mismatch") if language.mismatch == "reject" else pl.lit(False)
    refused = labels.filter(refuse)
    accepted = labels.filter(~refuse)
    if language.convert != "none":  # the stage converted this pair's texts; convert its correction the same way
        source = "zh-Hant" if language.convert == "t2s" else "zh-Hans"
        target = "zh-Hans" if language.convert == "t2s" else "zh-Hant"
        conv = lang_stage._opencc(language.convert)
        accepted = accepted.with_columns(
            pl.when(pl.col("lang_chosen") == source)
            .then(pl.col("__correction").map_elements(conv.convert, return_dtype=pl.String))
            .otherwise(pl.col("__correction"))
            .alias("__correction"),
            *[pl.col(c).replace(source, target) for c in LANG_COLUMNS],
        )
    if refused.height:
        why = refused.select(
            KEY, pl.format("language_mismatch: prompt is {}, corrected reply is {}", "lang_prompt", "lang_chosen")
            .alias("__why")
        )
        joined = joined.join(why, on=KEY, how="left", maintain_order="left")
        hit = pl.col("__why").is_not_null()
        joined = joined.with_columns(
            pl.when(hit).then(pl.col("__why")).otherwise(pl.col("review_correction_refused"))
            .alias("review_correction_refused"),
            pl.when(hit).then(None).otherwise(pl.col("__correction")).alias("__correction"),
            pl.when(hit).then(False).otherwise(pl.col("review_corrected")).alias("review_corrected"),
            pl.when(hit & (pl.col("review_decision") == VOTE_BOTH_BAD))
            .then(pl.format("both responses bad and the corrected reply was set aside ({})", pl.col("__why")))
            .otherwise(pl.col("__drop")).alias("__drop"),
        ).drop("__why")
    return joined, accepted


def _rehash(kept: pl.DataFrame) -> pl.DataFrame:
    """pair_id recomputed where the texts changed (swapped or corrected); row_id and prompt_id untouched."""
    changed = pl.col("review_swapped") | pl.col("review_corrected")
    if kept.height == 0 or not kept.select(changed.any()).item():
        return kept
    pair_id = next(e for e in id_exprs() if e.meta.output_name() == "pair_id")
    return kept.with_columns(pl.when(changed).then(pair_id).otherwise(pl.col("pair_id")).alias("pair_id"))


def apply_decisions(
    pairs: pl.DataFrame, decisions: pl.DataFrame, policy: ResolvePolicy, language: Any = None
) -> Applied:
    """Pairs + decisions → kept (swapped/corrected) and rejected pairs, checking rows in = kept + rejected.

    `language`: the run's language stage Config, for rule 5 (None: the run has no language stage, no check)."""
    if COPY_OF in pairs.columns:
        # an upsampling copy wasn't pushed: it gets its original's decision (the original must be in `pairs`)
        dec_key = pl.coalesce(pl.col(COPY_OF), pl.col(KEY)).alias("__decided_as")
        joined = pairs.with_columns(dec_key).join(
            decisions.rename({KEY: "__decided_as"}), on="__decided_as", how="left", maintain_order="left"
        ).drop("__decided_as")
    else:
        joined = pairs.join(decisions, on=KEY, how="left", maintain_order="left")
    joined = joined.with_columns(
        pl.col("review_votes").fill_null(0),
        pl.col("review_swapped").fill_null(False),
        pl.col("review_corrected").fill_null(False),
        pl.col("review_problems").fill_null(pl.lit([], dtype=pl.List(pl.String))),
        pl.col("review_annotators").fill_null(pl.lit([], dtype=pl.List(pl.String))),
    )
    relabel = None
    if language is not None and "lang" in pairs.columns:
        joined, relabel = _check_corrections(joined, language)
        if relabel.height:
            joined = joined.update(relabel.select(KEY, "__correction"), on=KEY)
    reviewed = pl.col("review_decision").is_not_null()
    dropped = pl.col("__drop").is_not_null()
    pending = ~reviewed & pl.lit(policy.only_reviewed)

    swap = pl.col("review_swapped")
    new_chosen = pl.when(swap).then(pl.col("rejected")).otherwise(pl.col("chosen"))
    new_rejected = pl.when(swap).then(pl.col("chosen")).otherwise(pl.col("rejected"))
    corrected = pl.col("review_corrected")
    kept = (
        joined.filter(~dropped & ~pending)
        .with_columns(
            pl.when(corrected).then(pl.col("__correction")).otherwise(new_chosen).alias("chosen"),
            new_rejected.alias("rejected"),
            pl.when(swap).then(pl.col("rejected_score")).otherwise(pl.col("chosen_score")).alias("chosen_score"),
            pl.when(swap).then(pl.col("chosen_score")).otherwise(pl.col("rejected_score")).alias("rejected_score"),
            pl.when(corrected).then(new_chosen).otherwise(pl.lit(None, dtype=pl.String)).alias("review_replaced"),
        )
        # a corrected chosen has no source score any more
        .with_columns(pl.when(corrected).then(None).otherwise(pl.col("chosen_score")).alias("chosen_score"))
        .drop("__drop", "__correction")
    )
    if {"lang_chosen", "lang_rejected"} <= set(kept.columns):  # the language stage's per-reply labels follow them
        kept = kept.with_columns(
            pl.when(swap).then(pl.col("lang_rejected")).otherwise(pl.col("lang_chosen")).alias("lang_chosen"),
            pl.when(swap).then(pl.col("lang_chosen")).otherwise(pl.col("lang_rejected")).alias("lang_rejected"),
        )
    if relabel is not None and relabel.height:
        cols = [c for c in LANG_COLUMNS if c in kept.columns]
        kept = kept.update(relabel.select(KEY, *cols), on=KEY)
    if "pair_id" in kept.columns:
        kept = _rehash(kept)
    dropped_rows = reject(
        joined.filter(dropped).lazy().with_columns(pl.lit(None, dtype=pl.String).alias("review_replaced")),
        STAGE,
        REASON_REJECTED,
        pl.col("__drop"),
    ).drop("__drop", "__correction")
    pending_rows = reject(
        joined.filter(pending & ~dropped).lazy().with_columns(pl.lit(None, dtype=pl.String).alias("review_replaced")),
        STAGE,
        REASON_PENDING,
        pl.lit("not reviewed yet (only reviewed pairs were kept)"),
    ).drop("__drop", "__correction")
    rejects = pl.concat([dropped_rows, pending_rows]).collect()
    if pairs.height != kept.height + rejects.height:
        raise ConservationError(
            f"review: {pairs.height} pairs in but {kept.height} kept + {rejects.height} rejected"
        )
    decisions_count = Counter(kept["review_decision"].to_list() + rejects["review_decision"].to_list())
    stats = {
        "pairs_in": pairs.height,
        "kept": kept.height,
        "rejected": rejects.height,
        "reviewed": int(joined.select(reviewed.sum()).item()),
        "unreviewed": int(joined.select((~reviewed).sum()).item()),
        "swapped": int(kept["review_swapped"].sum()),
        "corrected": int(kept["review_corrected"].sum()),
        "corrections_refused": int(joined["review_correction_refused"].is_not_null().sum()),
        "decisions": {
            str(k): v for k, v in sorted(decisions_count.items(), key=lambda kv: str(kv[0])) if k is not None
        },
        "reasons": dict(sorted(Counter(rejects["reason"].to_list()).items())),
    }
    return Applied(kept=kept, rejects=rejects, stats=stats)
