"""Clean: normalise text and drop pairs that can't teach a preference.

What and why: every text (system, prompt turns, replies) is NFC-normalised, its line endings made `\\n` and its
leading/trailing whitespace trimmed (inner whitespace is kept: it matters in code). Pairs with an empty prompt or
reply, identical replies (after id normalisation), or lengths outside the configured limits are rejected. Text
made only of invisible characters (zero-width spaces and joiners, control and format characters, fillers) counts
as empty: such a reply is `empty_response`, such a system prompt absent. Lengths are in characters; in tokens
too when `tokenizer` names a local tokenizer (a `tokenizer.json` file or a folder `transformers` can load
offline).

Config: see `Config` below.
Input columns: system, prompt, chosen, rejected.
Output columns: none added; those texts are rewritten in place.
Reasons: empty_prompt, empty_response, identical_responses, prompt_too_long, response_too_long,
response_too_short, too_many_tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from curate.schema import normalise_expr
from curate.stage import StageResult, split

NAME = "clean"
NEEDS = ("system", "prompt", "chosen", "rejected")
ADDS: tuple[str, ...] = ()
ROW_LOCAL = True  # each row's fate depends on that row alone: engines may run `run` on batches (no stats to merge)

EMPTY_PROMPT = "empty_prompt"
EMPTY_RESPONSE = "empty_response"
IDENTICAL_RESPONSES = "identical_responses"
PROMPT_TOO_LONG = "prompt_too_long"
RESPONSE_TOO_LONG = "response_too_long"
RESPONSE_TOO_SHORT = "response_too_short"
TOO_MANY_TOKENS = "too_many_tokens"
REASONS = (
    EMPTY_PROMPT, EMPTY_RESPONSE, IDENTICAL_RESPONSES, PROMPT_TOO_LONG, RESPONSE_TOO_LONG, RESPONSE_TOO_SHORT,
    TOO_MANY_TOKENS,
)


@dataclass(frozen=True)
class Config:
    max_prompt_chars: int = field(
        default=32_000,
        metadata={"min": 1, "help": "Reject pairs whose system + prompt turns exceed this many characters."},
    )
    max_response_chars: int = field(
        default=32_000, metadata={"min": 1, "help": "Reject pairs where either reply exceeds this many characters."}
    )
    min_response_chars: int = field(
        default=1, metadata={"min": 0, "help": "Reject pairs where either reply (trimmed) is shorter than this."}
    )
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "Local tokenizer (tokenizer.json or a transformers folder) for token limits; none: "
                  "chars only."},
    )
    max_tokens: int | None = field(
        default=None,
        metadata={"min": 1, "help": "With `tokenizer`: reject pairs whose prompt + longer reply exceed this many "
                  "tokens."},
    )

    def validate(self) -> None:
        if self.max_tokens is not None and self.tokenizer is None:
            raise ValueError("max_tokens needs a tokenizer (set tokenizer = \"path/to/tokenizer.json\")")
        if self.min_response_chars < 0 or self.max_response_chars < self.min_response_chars:
            raise ValueError("need 0 <= min_response_chars <= max_response_chars")


# A character a reader can see: not a control (Cc) or format character (Cf: zero-width space/joiners, bidi marks,
# soft hyphen, BOM, tags), not whitespace or a separator (Z), not a filler that renders as nothing (Hangul
# fillers, Braille blank, combining grapheme joiner, variation selectors). Text without one counts as empty.
VISIBLE = r"[^\p{Cc}\p{Cf}\p{Z}\s\x{115F}\x{1160}\x{3164}\x{FFA0}\x{2800}\x{034F}\x{FE00}-\x{FE0F}]"


def blank(expr: pl.Expr) -> pl.Expr:
    """True for null, empty or invisible-only text (a reply made only of zero-width spaces is no reply)."""
    return ~expr.str.contains(VISIBLE).fill_null(False)


def _tidy(expr: pl.Expr) -> pl.Expr:
    return expr.str.normalize("NFC").str.replace_all("\r\n?", "\n").str.strip_chars()


def _load_tokenizer(spec: str) -> Callable[[list[str]], list[int]]:
    from pathlib import Path

    from curate.errors import ConfigError

    path = Path(spec)
    try:
        if path.is_file():
            from tokenizers import Tokenizer

            raw = Tokenizer.from_file(str(path))
            return lambda texts: [len(e.ids) for e in raw.encode_batch(texts, add_special_tokens=False)]
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return lambda texts: [len(ids) for ids in hf(texts, add_special_tokens=False)["input_ids"]]
    except Exception as exc:  # noqa: BLE001 - any loader failure is a config problem for the user
        raise ConfigError(f"[clean] tokenizer {spec!r} can't be loaded offline: {str(exc).splitlines()[0]}") from None


def run(frame: pl.LazyFrame | pl.DataFrame, cfg: Config) -> StageResult:
    system = _tidy(pl.col("system"))
    lf = frame.lazy().with_columns(
        # when/then rather than .replace("", None): replace() is not streaming in Polars 2.1 and buffered the
        # whole input (1.4 GB at 1M pairs; bench/bench_pipeline.py).
        pl.when(~blank(system)).then(system).alias("system"),
        pl.col("prompt").list.eval(
            pl.struct(pl.element().struct.field("role"), _tidy(pl.element().struct.field("content")).alias("content"))
        ),
        _tidy(pl.col("chosen")).alias("chosen"),
        _tidy(pl.col("rejected")).alias("rejected"),
    )
    contents = pl.col("prompt").list.eval(pl.element().struct.field("content"))
    prompt_chars = contents.list.eval(pl.element().str.len_chars()).list.sum().fill_null(0) + pl.col(
        "system"
    ).str.len_chars().fill_null(0)
    chosen_len = pl.col("chosen").str.len_chars().fill_null(0)
    rejected_len = pl.col("rejected").str.len_chars().fill_null(0)
    longest = pl.max_horizontal(chosen_len, rejected_len)
    shortest = pl.min_horizontal(chosen_len, rejected_len)
    any_empty_turn = contents.list.eval(blank(pl.element())).list.any().fill_null(True)
    chosen_blank, rejected_blank = blank(pl.col("chosen")), blank(pl.col("rejected"))

    checks: list[tuple[str, pl.Expr, pl.Expr | str]] = [
        (EMPTY_PROMPT, pl.col("prompt").list.len().fill_null(0).eq(0) | any_empty_turn, "a prompt turn is empty"),
        (
            EMPTY_RESPONSE,
            chosen_blank | rejected_blank,
            pl.when(chosen_blank).then(pl.lit("chosen reply is empty or only invisible characters"))
            .otherwise(pl.lit("rejected reply is empty or only invisible characters")),
        ),
        (
            IDENTICAL_RESPONSES,
            normalise_expr(pl.col("chosen")) == normalise_expr(pl.col("rejected")),
            "chosen and rejected are the same text",
        ),
        (
            PROMPT_TOO_LONG,
            prompt_chars > cfg.max_prompt_chars,
            pl.format("prompt has {} characters (max_prompt_chars = {})", prompt_chars, pl.lit(cfg.max_prompt_chars)),
        ),
        (
            RESPONSE_TOO_LONG,
            longest > cfg.max_response_chars,
            pl.format("a reply has {} characters (max_response_chars = {})", longest, pl.lit(cfg.max_response_chars)),
        ),
        (
            RESPONSE_TOO_SHORT,
            shortest < cfg.min_response_chars,
            pl.format("a reply has {} characters (min_response_chars = {})", shortest, pl.lit(cfg.min_response_chars)),
        ),
    ]
    if cfg.tokenizer and cfg.max_tokens:
        count = _load_tokenizer(cfg.tokenizer)

        def tokens(s: pl.Series) -> pl.Series:
            return pl.Series(count([t or "" for t in s.to_list()]), dtype=pl.Int64)

        prompt_text = pl.concat_str([pl.col("system").fill_null(""), contents.list.join("\n")], separator="\n")
        n_tokens = prompt_text.map_batches(tokens, return_dtype=pl.Int64) + pl.max_horizontal(
            pl.col("chosen").map_batches(tokens, return_dtype=pl.Int64),
            pl.col("rejected").map_batches(tokens, return_dtype=pl.Int64),
        )
        checks.append(
            (
                TOO_MANY_TOKENS,
                n_tokens > cfg.max_tokens,
                pl.format("prompt + longer reply is {} tokens (max_tokens = {})", n_tokens, pl.lit(cfg.max_tokens)),
            )
        )
    return split(lf, NAME, checks)
