"""The canonical preference pair in Polars terms, and the stable ids derived from its normalised text.

The JSON Schema twin is `schemas/preference_pair.schema.json`; `tests/test_schema.py` keeps the two in step.

Normalisation for ids (documented in the JSON Schema too): Unicode NFC, then every run of whitespace folded to
one space, then leading/trailing whitespace trimmed. Ids are the first 16 hex digits of SHA-256 over the
normalised fields joined with control separators, so they are stable across runs, machines and Polars versions
(Polars' own `hash()` is not promised stable, hence hashlib).

`pair_id` is a content hash, so two identical rows (from two files, say) share it. `row_id` names one row: it is
unique within a run and made at ingest from the source's content (SHA-256 of its bytes, plus the occurrence
number when the same content is given twice) and the row index — not from the path, so it does not change with
how a path is spelled. Everything that points at one row (`dup_of`, `dup_cluster`, review mappings) uses
`row_id`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"

MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})

# Instances, not classes (pl.String()): one dtype type for the dict, as pl.Schema's signature wants.
PAIR_SCHEMA = pl.Schema(
    {
        "pair_id": pl.String(),
        "prompt_id": pl.String(),
        "row_id": pl.String(),
        "source": pl.String(),
        "source_row": pl.Int64(),
        "system": pl.String(),
        "prompt": pl.List(MESSAGE),
        "chosen": pl.String(),
        "rejected": pl.String(),
        "chosen_score": pl.Float64(),
        "rejected_score": pl.Float64(),
        "meta": pl.String(),
    }
)
CANONICAL_COLUMNS = tuple(PAIR_SCHEMA.names())

# Columns every rejects table has on top of the columns of the frame the row was rejected from.
REJECT_COLUMNS = pl.Schema({"stage": pl.String, "reason": pl.String, "detail": pl.String})

ID_HEX_DIGITS = 16
_FIELD_SEP = "\x1f"  # between system / prompt / chosen / rejected
_TURN_SEP = "\x1e"  # between prompt turns
_ROLE_SEP = "\x1d"  # between a turn's role and content


def normalise_expr(expr: pl.Expr) -> pl.Expr:
    """NFC + whitespace folded + trimmed, as a Polars expression (null stays null)."""
    return expr.str.normalize("NFC").str.replace_all(r"\s+", " ").str.strip_chars()


def normalise_text(text: str | None) -> str:
    """The same normalisation as `normalise_expr`, for one Python string."""
    import re
    import unicodedata

    if text is None:
        return ""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def row_ids(source_key: str, rows: list[int]) -> list[str]:
    """`row_id`s of rows `rows` of the source identified by `source_key` (see the module docstring)."""
    return [hashlib.sha256(f"{source_key}{_FIELD_SEP}{r}".encode()).hexdigest()[:ID_HEX_DIGITS] for r in rows]


def derived_id(row_id: str | None, tag: str) -> str:
    """A fresh id for a row made from another one (a balance copy): stable, unique, traceable by `tag`."""
    return hashlib.sha256(f"{row_id}{_FIELD_SEP}{tag}".encode()).hexdigest()[:ID_HEX_DIGITS]


def _prompt_key_expr() -> pl.Expr:
    turns = pl.col("prompt").cast(pl.List(MESSAGE)).list.eval(
        pl.element().struct.field("role") + _ROLE_SEP + normalise_expr(pl.element().struct.field("content"))
    )
    return pl.concat_str(
        [normalise_expr(pl.col("system").cast(pl.String)).fill_null(""), turns.list.join(_TURN_SEP).fill_null("")],
        separator=_FIELD_SEP,
    )


def _sha(series: pl.Series) -> pl.Series:
    return pl.Series(
        [hashlib.sha256(s.encode("utf-8")).hexdigest()[:ID_HEX_DIGITS] for s in series.to_list()],
        dtype=pl.String,
    )


def id_exprs() -> list[pl.Expr]:
    """Expressions that (re)compute `prompt_id` and `pair_id` from the text columns."""
    prompt_key = _prompt_key_expr()
    pair_key = pl.concat_str(
        [prompt_key, normalise_expr(pl.col("chosen").cast(pl.String)).fill_null(""),
            normalise_expr(pl.col("rejected").cast(pl.String)).fill_null(""),
        ],
        separator=_FIELD_SEP,
    )
    return [
        prompt_key.map_batches(_sha, return_dtype=pl.String).alias("prompt_id"),
        pair_key.map_batches(_sha, return_dtype=pl.String).alias("pair_id"),
    ]


def with_ids(frame: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    return frame.lazy().with_columns(id_exprs())


def conform(frame: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """Cast/add the canonical columns in canonical order, keeping extra (stage-added) columns after them."""
    lf = frame.lazy()
    names = lf.collect_schema().names()
    canon = [
        (pl.col(n).cast(t) if n in names else pl.lit(None, dtype=t).alias(n)) for n, t in PAIR_SCHEMA.items()
    ]
    extra = [pl.col(n) for n in names if n not in PAIR_SCHEMA]
    return lf.select(canon + extra)


def empty_pairs() -> pl.DataFrame:
    return pl.DataFrame(schema=PAIR_SCHEMA)


def json_schema(name: str = "preference_pair") -> dict:
    return json.loads((SCHEMAS_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
