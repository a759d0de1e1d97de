"""Dedup keys: what each method compares, conversation-aware.

The rule (documented in the stage docstring and the README):
- exact: the whole conversation (every prompt turn, in order; plus the replies for key = prompt+chosen / pair).
- near and semantic: centred on the last user turn, the message the replies answer. Two rows are near or
  semantic duplicates only when their last user turns are (with the replies, for key = prompt+chosen / pair), AND
  their earlier turns — the context — are near-duplicates too (n-gram Jaccard at the near threshold), or both
  have none. So two branches of one conversation that end on different user turns are never duplicates, however
  long the opening they share, and the same short follow-up ("Is that good?") after two different conversations
  is not a duplicate either.

`focus` is the text that is hashed / embedded; `context` is the earlier turns joined by newlines ("" for a
single-turn prompt).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Keys:
    """One String column per key text (Arrow memory, no Python object per row)."""

    whole: pl.Series  # exact key text: all prompt turns (+ replies)
    focus: pl.Series  # near/semantic key text: the last user turn (+ replies)
    context: pl.Series  # the turns before the last user turn ("" when none)


def _content() -> pl.Expr:
    return pl.element().struct.field("content").fill_null("")


def build(df: pl.DataFrame, key: str) -> Keys:
    """Key texts of every row of `df` (columns prompt, chosen, rejected) for `key` = prompt | prompt+chosen | pair."""
    frame = key_frame(df.lazy(), key).collect()
    return Keys(frame["whole"], frame["focus"], frame["context"])


def key_frame(lf: pl.LazyFrame, key: str, keep: Sequence[str | pl.Expr] = ()) -> pl.LazyFrame:
    """The key texts (columns whole, focus, context) of every row, beside the columns or expressions `keep`.

    Lazy, so a caller that collects it never holds the rows' prompt structs or replies: only what it asks for.
    """
    prompt = pl.col("prompt")
    roles = prompt.list.eval(pl.element().struct.field("role"))
    # Index of the last user turn (the canonical prompt ends with it; fall back to the last turn).
    last_user = roles.list.eval(pl.arg_where(pl.element() == "user").last()).list.first()
    n = prompt.list.len()
    idx = pl.coalesce(last_user, (n - 1).cast(pl.Int64)).cast(pl.Int64)
    # The replies join the key only for prompt+chosen / pair.
    replies = [pl.col("chosen").fill_null("").alias("__ch")] if key in ("prompt+chosen", "pair") else []
    if key == "pair":
        replies.append(pl.col("rejected").fill_null("").alias("__rj"))
    frame = lf.select(
        *keep,
        prompt.list.eval(_content()).list.join("\n").fill_null("").alias("whole"),
        prompt.list.eval(_content()).alias("__c"),
        idx.alias("__i"),
        *replies,
    )
    frame = frame.with_columns(
        pl.col("__c").list.get(pl.col("__i").clip(0), null_on_oob=True).fill_null("").alias("focus"),
        pl.col("__c").list.head(pl.col("__i").clip(0)).list.join("\n").fill_null("").alias("context"),
    )
    reply_cols = [r.meta.output_name() for r in replies]
    extra = [pl.col(c) for c in reply_cols]
    if extra:
        frame = frame.with_columns(
            pl.concat_str([pl.col("whole"), *extra], separator="\n").alias("whole"),
            pl.concat_str([pl.col("focus"), *extra], separator="\n").alias("focus"),
        )
    return frame.drop("__c", "__i", *reply_cols)
