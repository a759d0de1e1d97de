"""The Argilla dataset design for blind pairwise preference review, and the blind A/B mapping.

Why blind: annotators who know which reply the source preferred tend to agree with it, and annotators favour
whichever reply is shown first. So each pair's two replies are shown as "Response A" / "Response B" in an
order drawn from a hash of (seed, the pair's key): reproducible, different per pair, and independent of the source's
label. The mapping is kept on the curating side only (RUN_DIR/review/mapping.parquet); it can always be
rebuilt from the seed, so the server never needs to hold it.

Nothing here talks to a server except `build_settings`/`check_compatible`, which need an `argilla.Argilla`
client (the SDK's settings objects bind to one at construction). `record_payload` is pure, for tests.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING, Any

import polars as pl

from curate.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import argilla as rg

# The column that names a pair across push, the server and pull: record ids sent to Argilla, the keys of
# review/mapping.parquet and of every pull/apply join. `row_id` (unique per row in a run), not `pair_id` (a
# content hash: two identical pairs from two files share it, so their records and answers would collide).
RECORD_KEY = "row_id"
LEGACY_KEY = "pair_id"  # what curate before row_id used; pull still reads datasets pushed that way

# Field, question, metadata and vector names on the Argilla side. Stable: pull reads them back.
FIELD_CONTEXT = "context"
FIELD_PROMPT = "prompt"
FIELD_A = "response_a"
FIELD_B = "response_b"

Q_BETTER = "better"
Q_PROBLEMS = "problems"
Q_RATING = "rating"
Q_CORRECTED = "corrected"

VECTOR = "prompt_embedding"

# "better" labels as stored by Argilla (A/B: positions) → shown text.
BETTER_LABELS: dict[str, str] = {
    "a": "Response A",
    "b": "Response B",
    "tie": "Tie: equally good",
    "both_bad": "Both bad",
}
PROBLEM_LABELS: dict[str, str] = {
    "wrong_language": "Wrong language",
    "factual_error": "Factual error",
    "unsafe": "Unsafe / harmful",
    "truncated": "Truncated",
    "translationese": "Translationese",
    "duplicate": "Duplicate",
}
RATING_VALUES = [1, 2, 3, 4, 5]

# Votes in the source pair's own terms, after undoing the blind mapping.
VOTE_CHOSEN = "chosen"
VOTE_REJECTED = "rejected"
VOTE_TIE = "tie"
VOTE_BOTH_BAD = "both_bad"
VOTES = (VOTE_CHOSEN, VOTE_REJECTED, VOTE_TIE, VOTE_BOTH_BAD)

META_LANG = "language"
META_SOURCE = "source"
META_PROMPT_CHARS = "prompt_chars"
META_A_CHARS = "response_a_chars"
META_B_CHARS = "response_b_chars"
META_DUP_SIZE = "dup_cluster_size"
META_DUP_OF = "duplicate_of"
META_DUP_SIM = "duplicate_similarity"
META_DUP_CLUSTER = "duplicate_cluster"
META_MARGIN = "score_margin"

SUGGESTION_AGENT = "source-scores"



# ----------------------------------------------------------------------------------------------------------
# Blind A/B mapping
# ----------------------------------------------------------------------------------------------------------


def a_is_chosen(seed: int, pair_id: str) -> bool:
    """Whether "Response A" shows the source's chosen reply for this pair (deterministic, ~50/50)."""
    digest = hashlib.sha256(f"{seed}\x1f{pair_id}".encode()).digest()
    return bool(digest[0] & 1)


def mapping_frame(pair_ids: list[str] | pl.Series, seed: int) -> pl.DataFrame:
    """key → a_is_chosen for every pair, plus the seed that made it (written to review/mapping.parquet)."""
    ids = list(pair_ids)
    return pl.DataFrame(
        {
            RECORD_KEY: pl.Series(ids, dtype=pl.String),
            "a_is_chosen": pl.Series([a_is_chosen(seed, p) for p in ids], dtype=pl.Boolean),
            "seed": pl.Series([seed] * len(ids), dtype=pl.Int64),
        }
    )


def unblind(better: str | None, a_chosen: bool) -> str | None:
    """An A/B answer → a vote in the pair's own terms (chosen / rejected / tie / both_bad)."""
    if better is None:
        return None
    if better == "a":
        return VOTE_CHOSEN if a_chosen else VOTE_REJECTED
    if better == "b":
        return VOTE_REJECTED if a_chosen else VOTE_CHOSEN
    if better in (VOTE_TIE, VOTE_BOTH_BAD):
        return better
    raise ValueError(f"unknown answer {better!r} to question {Q_BETTER!r}")


# ----------------------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------------------


def prompt_messages(system: str | None, prompt: list[dict] | None) -> list[dict[str, str]]:
    """The chat shown to annotators: the system prompt first when present, then the conversation."""
    messages = []
    if system:
        messages.append({"role": "system", "content": system})
    for turn in prompt or []:
        messages.append({"role": str(turn.get("role") or "user"), "content": str(turn.get("content") or "")})
    if not messages:  # Argilla refuses an empty chat; a pair always has a prompt after clean, but be safe
        messages.append({"role": "user", "content": ""})
    return messages


ROLE_TITLES = {"system": "System", "user": "User", "assistant": "Assistant"}


def split_prompt(system: str | None, prompt: list[dict] | None) -> tuple[str | None, str]:
    """(context, prompt) as two texts: the conversation before the final user turn (system prompt first, each turn
    headed by its role, markdown) or None when there is none, and the final user turn.

    Why text fields and not Argilla's chat field: the UI's "Find similar" shows the first two fields as
    "title: content", and a chat field's content (a list of messages) shows as "[object Object]"."""
    messages = prompt_messages(system, prompt)
    last = len(messages) - 1
    while last > 0 and messages[last]["role"] != "user":
        last -= 1
    before = messages[:last]
    context = "\n\n".join(f"**{ROLE_TITLES.get(m['role'], m['role'].title())}:** {m['content']}" for m in before)
    return (context or None), messages[last]["content"] + "".join(
        f"\n\n**{ROLE_TITLES.get(m['role'], m['role'].title())}:** {m['content']}" for m in messages[last + 1:]
    )


def embed_texts(prompts: list[list[dict] | None], t2s: bool = True) -> list[str]:
    """The texts embedded for "Find similar": exactly what semantic dedup embeds for a prompt (its key's focus, the
    last user turn — curate.dedup.keys — through curate.dedup.normalise.embedding_input), so push reads back the
    vectors dedup cached instead of computing them again."""
    from curate.dedup.keys import build
    from curate.dedup.normalise import embedding_input
    from curate.schema import PAIR_SCHEMA

    if not prompts:
        return []
    blank = [None] * len(prompts)
    frame = pl.DataFrame({"prompt": prompts, "chosen": blank, "rejected": blank},
                         schema={"prompt": PAIR_SCHEMA["prompt"], "chosen": pl.String, "rejected": pl.String})
    return [embedding_input(t, t2s=t2s) for t in build(frame, "prompt").focus]


def prompt_text(system: str | None, prompt: list[dict] | None) -> str:
    """The text embedded for "find similar": the user turns (the system prompt is shared by many pairs)."""
    turns = [str(t.get("content") or "") for t in (prompt or []) if t.get("role") == "user"]
    return "\n".join(turns) if turns else (system or "")


def score_margin(chosen_score: float | None, rejected_score: float | None) -> float | None:
    """|chosen - rejected| when both scores exist (unsigned, so it doesn't reveal the source's choice)."""
    if chosen_score is None or rejected_score is None:
        return None
    if not (math.isfinite(chosen_score) and math.isfinite(rejected_score)):
        return None
    return abs(chosen_score - rejected_score)


def suggestion(row: dict[str, Any], a_chosen: bool) -> dict[str, Any] | None:
    """A suggested answer to "better" from the source's scores, or None when they don't say.

    Score in [0, 1]: the relative margin |c - r| / (|c| + |r|), a rough, scale-free confidence."""
    c, r = row.get("chosen_score"), row.get("rejected_score")
    if c is None or r is None or not (math.isfinite(c) and math.isfinite(r)):
        return None
    if c == r:
        value = VOTE_TIE
    else:
        higher_is_chosen = c > r
        value = "a" if higher_is_chosen == a_chosen else "b"
    denom = abs(c) + abs(r)
    score = min(1.0, abs(c - r) / denom) if denom > 0 else 0.0
    return {"question_name": Q_BETTER, "value": value, "score": round(score, 6), "agent": SUGGESTION_AGENT}


def _dup_metadata(row: dict[str, Any]) -> dict[str, Any]:
    """What dedup recorded about this pair's duplicates (curate.stages.dedup), as metadata annotators can filter on:
    the pair it duplicates and how similar they are, and its cluster (the kept pair's key)."""
    out: dict[str, Any] = {}
    if row.get("dup_cluster_size") is not None:
        out[META_DUP_SIZE] = int(row["dup_cluster_size"])
    if row.get("dup_of"):
        out[META_DUP_OF] = str(row["dup_of"])
    sim = row.get("dup_similarity")
    if sim is not None and math.isfinite(sim):
        out[META_DUP_SIM] = round(float(sim), 4)
    if row.get("dup_cluster"):
        out[META_DUP_CLUSTER] = str(row["dup_cluster"])
    return out


def record_payload(
    row: dict[str, Any],
    a_chosen: bool,
    *,
    vector: list[float] | None = None,
    with_suggestion: bool = False,
    layout: str = "text",
) -> dict[str, Any]:
    """One pair → the parts of an Argilla record (id, fields, metadata, vectors, suggestions). Pure.

    `layout`: "text" (context + prompt text fields, what build_settings makes) or "chat" (one chat field named
    prompt, what datasets pushed by older versions have). No suggestion unless asked for: blind review."""
    a_text, b_text = (row["chosen"], row["rejected"]) if a_chosen else (row["rejected"], row["chosen"])
    messages = prompt_messages(row.get("system"), row.get("prompt"))
    metadata: dict[str, Any] = {
        META_SOURCE: row.get("source") or "unknown",
        META_PROMPT_CHARS: sum(len(m["content"]) for m in messages),
        META_A_CHARS: len(a_text or ""),
        META_B_CHARS: len(b_text or ""),
    }
    if row.get("lang"):
        metadata[META_LANG] = row["lang"]
    metadata.update(_dup_metadata(row))
    margin = score_margin(row.get("chosen_score"), row.get("rejected_score"))
    if margin is not None:
        metadata[META_MARGIN] = margin
    if layout == "chat":
        fields: dict[str, Any] = {FIELD_PROMPT: messages}
    else:
        context, last = split_prompt(row.get("system"), row.get("prompt"))
        fields = {FIELD_PROMPT: last}
        if context is not None:
            fields = {FIELD_CONTEXT: context, **fields}
    fields.update({FIELD_A: a_text or "", FIELD_B: b_text or ""})
    payload: dict[str, Any] = {
        "id": row[RECORD_KEY],
        "fields": fields,
        "metadata": metadata,
        "vectors": {VECTOR: vector} if vector is not None else {},
        "suggestions": [],
    }
    if with_suggestion:
        s = suggestion(row, a_chosen)
        if s is not None:
            payload["suggestions"].append(s)
    return payload


# ----------------------------------------------------------------------------------------------------------
# Settings (need a client)
# ----------------------------------------------------------------------------------------------------------


def build_settings(
    client: rg.Argilla, *, guidelines: str, min_submitted: int = 1, vector_dims: int | None = None
) -> rg.Settings:
    """The dataset settings: context + prompt + two blind responses, four questions, metadata, optional vector.

    `guidelines`: from curate.review.guidelines.render (the policy pull will apply)."""
    import argilla as rg

    if min_submitted < 1:
        raise ConfigError(f"--min-submitted must be at least 1, got {min_submitted}")
    fields = [
        rg.TextField(name=FIELD_CONTEXT, title="Conversation before the prompt", use_markdown=True, required=False,
                     client=client),
        rg.TextField(name=FIELD_PROMPT, title="Prompt", use_markdown=True, client=client),
        rg.TextField(name=FIELD_A, title="Response A", use_markdown=True, client=client),
        rg.TextField(name=FIELD_B, title="Response B", use_markdown=True, client=client),
    ]
    questions = [
        rg.LabelQuestion(
            name=Q_BETTER,
            title="Which response is better?",
            description="A or B; Tie when both are equally good; Both bad when neither should be kept.",
            labels=BETTER_LABELS,
            required=True,
            client=client,
        ),
        rg.MultiLabelQuestion(
            name=Q_PROBLEMS,
            title="Problems (either response)",
            description="Pick all that apply. Unsafe drops the pair.",
            labels=PROBLEM_LABELS,
            required=False,
            client=client,
        ),
        rg.RatingQuestion(
            name=Q_RATING,
            title="Quality of the better response (1-5)",
            description="Optional: 1 poor … 5 excellent.",
            values=RATING_VALUES,
            required=False,
            client=client,
        ),
        rg.TextQuestion(
            name=Q_CORRECTED,
            title="Corrected better response (optional)",
            description="Write the better reply with your fixes; it replaces the chosen reply.",
            required=False,
            use_markdown=True,
            client=client,
        ),
    ]
    metadata = [
        rg.TermsMetadataProperty(name=META_LANG, title="Language", client=client),
        rg.TermsMetadataProperty(name=META_SOURCE, title="Source", client=client),
        rg.IntegerMetadataProperty(name=META_PROMPT_CHARS, title="Prompt length (chars)", client=client),
        rg.IntegerMetadataProperty(name=META_A_CHARS, title="Response A length (chars)", client=client),
        rg.IntegerMetadataProperty(name=META_B_CHARS, title="Response B length (chars)", client=client),
        rg.IntegerMetadataProperty(name=META_DUP_SIZE, title="Duplicate-cluster size", client=client),
        rg.TermsMetadataProperty(name=META_DUP_OF, title="Duplicate of (pair)", client=client),
        rg.FloatMetadataProperty(name=META_DUP_SIM, title="Similarity to that pair", client=client),
        rg.TermsMetadataProperty(name=META_DUP_CLUSTER, title="Duplicate cluster (kept pair)", client=client),
        rg.FloatMetadataProperty(name=META_MARGIN, title="Source score margin", client=client),
    ]
    vectors = (
        [rg.VectorField(name=VECTOR, dimensions=vector_dims, title="Prompt", _client=client)] if vector_dims else []
    )
    return rg.Settings(
        fields=fields,
        questions=questions,
        metadata=metadata,
        vectors=vectors,
        guidelines=guidelines,
        allow_extra_metadata=False,
        distribution=rg.TaskDistribution(min_submitted=min_submitted),
    )


def layout_of(dataset: rg.Dataset) -> str:
    """ "chat" for a dataset pushed by an older curate (its prompt is a chat field), else "text"."""
    for f in dataset.settings.fields:
        if f.name == FIELD_PROMPT:
            return "chat" if type(f).__name__ == "ChatField" else "text"
    return "text"


def check_compatible(dataset: rg.Dataset) -> None:
    """An existing dataset must have our fields and questions, or push/pull would misread it."""
    settings = dataset.settings
    have_fields = {f.name for f in settings.fields}
    have_questions = {q.name for q in settings.questions}
    missing = sorted(({FIELD_PROMPT, FIELD_A, FIELD_B} - have_fields) | ({Q_BETTER} - have_questions))
    if missing:
        raise ConfigError(
            f"dataset {dataset.name!r} exists but was not made by curate review push (missing {', '.join(missing)}); "
            "pick another --dataset name"
        )


def settings_summary(settings: rg.Settings) -> str:
    """A short, stable description of the design (stored in push.json for provenance)."""
    return json.dumps(
        {
            "fields": [f.name for f in settings.fields],
            "questions": [q.name for q in settings.questions],
            "metadata": [m.name for m in settings.metadata],
            "vectors": [v.name for v in settings.vectors],
            "min_submitted": settings.distribution.min_submitted,
        },
        sort_keys=True,
    )
