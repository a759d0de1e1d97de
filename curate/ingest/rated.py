"""Rated completions → preference pairs: one prompt with N scored responses becomes one or more pairs.

Two families:
- `rated_completions`: a list of objects, one per response, each with its text and a score. Raw UltraFeedback
  (`instruction`, `completions[{model, response, overall_score, fine-grained_score, annotations{aspect: {Rating,
  Rationale}}, ...}]`) is the best-known case. The score key is chosen once per file, the first of
  `fine-grained_score` (UltraFeedback's mean of the four aspect ratings, which Argilla's cleaned binarisation ranks
  by), the mean of `annotations.*.Rating`, `overall_score` (the critique score, known to be unreliable), `score`,
  `rating`, `reward` that most responses carry; `--map score=KEY` picks another. Never mixed within a file:
  fine-grained (1-5) and overall (1-10) scores are on different scales.
- `rated_responses`: parallel lists, `responses` (or `completions`/`generations`/`outputs`) of texts (or assistant
  messages, or objects with a text key) and `scores` (or `ratings`/`rewards`) of numbers, as distilabel's
  UltraFeedback task writes them (`generations`, `ratings`).

The prompt is `prompt`/`instruction`/`question` (a string) or `prompt`/`messages` (a list of messages); `system`
as elsewhere. A response without a usable score (missing, null, NaN, "N/A") or text (missing, empty, not text) is
left out of the ranking and named in the pair's meta; it never pairs.

Binarisation (`--binarize`, `[ingest] binarize`):
- `best-worst` (default): the best-scored response against the worst one.
- `best-random`: the best against one response chosen at random among those scored strictly lower; the choice is
  seeded (the pipeline seed, `--seed` for `curate ingest`) and depends only on the seed and the row's text.
- `all-margin:M`: every pair whose scores differ by at least M (and by more than zero), best-ranked first.
Ties never make a pair; neither do two responses with the same text. Ties for best (or worst) go to the response
listed first. Each pair keeps `chosen_score`/`rejected_score` and, in meta, `binarize` = {strategy, score (the
key ranked by), pair (its index among the row's pairs), pairs_from_row, chosen / rejected (response indices),
scores (all of them), left_out (index → why)}, plus the chosen and rejected response objects without their text.

Row accounting: a row that yields k pairs counts once in `rows_in`; its first pair has the row's `row_id`, pair j
(j ≥ 1) gets an id derived from it (`curate.schema.derived_id(row_id, "pair<j>")`); all k share `source_row`. The
ingest report counts `extra_pairs` (k − 1 summed over rows), so rows in + extra_pairs = pairs kept + rows
rejected. A row that yields no pair is one reject: `too_few_responses`, `tied_scores`, `below_margin`,
`scores_mismatch` or `identical_responses`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from curate.errors import ConfigError
from curate.ingest.messages import Turn, canonical_prompt, messages, reply
from curate.ingest.reasons import (
    BELOW_MARGIN,
    IDENTICAL_RESPONSES,
    MISSING_FIELD,
    SCORES_MISMATCH,
    TIED_SCORES,
    TOO_FEW_RESPONSES,
    WRONG_TYPE,
    RowError,
)

OBJECTS = "rated_completions"
LISTS = "rated_responses"
FAMILIES = (OBJECTS, LISTS)

RESPONSE_COLUMNS = ("completions", "responses", "generations", "outputs", "candidates")
SCORE_COLUMNS = ("scores", "ratings", "rewards")
PROMPT_COLUMNS = ("prompt", "instruction", "question", "messages")
TEXT_KEYS = ("response", "text", "completion", "generation", "output", "content", "answer")
ANNOTATIONS = "annotations"  # pseudo score key: the mean of annotations.*.Rating
SCORE_KEYS = ("fine-grained_score", ANNOTATIONS, "overall_score", "score", "rating", "reward")
STRATEGIES = ("best-worst", "best-random", "all-margin")
_NOT_A_SCORE = {"", "n/a", "na", "none", "null", "nan", "-"}

Has = Callable[..., bool]
Pair = tuple[str | None, list[Turn], str, str, float, float, dict[str, Any]]


@dataclass(frozen=True)
class Binarize:
    """How a row of rated responses becomes pairs (see the module docstring)."""

    strategy: str = "best-worst"
    margin: float = 0.0
    seed: int = 0

    @property
    def label(self) -> str:
        return f"all-margin:{self.margin:g}" if self.strategy == "all-margin" else self.strategy


def parse_binarize(text: str | Binarize | None, seed: int = 0) -> Binarize:
    """`best-worst` | `best-random` | `all-margin:M` → Binarize; anything else is a ConfigError naming the forms."""
    if isinstance(text, Binarize):
        return text
    value = (text or "best-worst").strip().lower()
    m = re.fullmatch(r"all-margin(?::(.*))?", value)
    if m:
        try:
            margin = float(m.group(1)) if m.group(1) is not None else 0.0
        except ValueError:
            margin = -1.0
        if not math.isfinite(margin) or margin < 0:
            raise ConfigError(f"binarize {text!r}: the margin must be a number >= 0, e.g. all-margin:1")
        return Binarize("all-margin", margin, seed)
    if value in STRATEGIES:
        return Binarize(value, 0.0, seed)
    raise ConfigError(f"binarize {text!r}: use best-worst, best-random or all-margin:M (M a number >= 0)")


# --- detection -------------------------------------------------------------------------------------------------

def _elements(sample: list[dict[str, Any]], col: str, limit: int = 200) -> list[Any]:
    out: list[Any] = []
    for row in sample:
        v = row.get(col)
        if isinstance(v, list):
            out.extend(v)
            if len(out) >= limit:
                break
    return out


def _score_of(el: dict[str, Any], key: str) -> Any:
    if key != ANNOTATIONS:
        return el.get(key)
    ann = el.get(ANNOTATIONS)
    if not isinstance(ann, dict):
        return None
    found = [_number(a.get("Rating")) for a in ann.values() if isinstance(a, dict)]
    ratings = [r for r in found if r is not None]
    return sum(ratings) / len(ratings) if ratings else None


def text_key_of(elements: list[Any]) -> str | None:
    objs = [e for e in elements if isinstance(e, dict)]
    for key in TEXT_KEYS:
        if objs and sum(isinstance(e.get(key), (str, list, dict)) for e in objs) * 2 >= len(objs):
            return key
    return None


def score_key_of(elements: list[Any]) -> str | None:
    objs = [e for e in elements if isinstance(e, dict)]
    for key in SCORE_KEYS:
        if objs and sum(_number(_score_of(e, key)) is not None for e in objs) * 2 >= len(objs):
            return key
    return None


def candidates(sample: list[dict[str, Any]], view: dict[str, str], has: Has,
               mapping: dict[str, str]) -> list[tuple[str, dict[str, str]]]:
    """The rated family these columns fit, if any: a prompt, a list of responses and their scores."""
    prompt = next(
        (n for n in PROMPT_COLUMNS if has(n, "str") or (n in ("prompt", "messages") and has(n, "list"))), None
    )
    responses = next((n for n in RESPONSE_COLUMNS if has(n, "list")), None)
    if prompt is None or responses is None:
        return []
    elements = _elements(sample, view[responses])
    if not elements:
        return []
    fields = {"prompt": view[prompt], "responses": view[responses]}
    scores = next((n for n in SCORE_COLUMNS if has(n, "list")), None)
    if all(isinstance(e, dict) for e in elements[:20]):
        # response objects: messages ({role, content}) are read as replies; others need a text key
        is_message = all("role" in e or "from" in e for e in elements[:20])
        text_key = None if is_message else text_key_of(elements)
        if text_key is None and not is_message:
            return []
        if text_key is not None:
            fields["text"] = text_key
        score_key = mapping.get("score") or score_key_of(elements)
        if score_key is not None and text_key is not None:
            return [(OBJECTS, {**fields, "score": score_key})]
    if scores is None:
        return []
    return [(LISTS, {**fields, "scores": view[scores]})]


# --- conversion ------------------------------------------------------------------------------------------------

def _number(value: Any) -> float | None:
    """A usable score, or None (missing, NaN, "N/A", a boolean or non-numeric text)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        if value.strip().lower() in _NOT_A_SCORE:
            return None
        try:
            v = float(value)
        except ValueError:
            return None
        return v if math.isfinite(v) else None
    return None


def _prompt_turns(value: Any, col: str, system: str | None) -> tuple[str | None, list[Turn]]:
    if isinstance(value, str):
        return canonical_prompt([{"role": "user", "content": value}], system, where=col)
    return canonical_prompt(messages(value, col), system, where=col)


def _choose(seed: int, key_text: str, n: int) -> int:
    digest = hashlib.sha256(f"{seed}\x1f{key_text}".encode()).hexdigest()
    return int(digest[:16], 16) % n


def convert(row: dict[str, Any], f: dict[str, str], system: str | None, how: Binarize) -> list[Pair]:
    """One row → its pairs under `how`; a row that yields none raises RowError with the reason."""
    system, turns = _prompt_turns(row.get(f["prompt"]), f["prompt"], system)
    items = row.get(f["responses"])
    if items is None:
        raise RowError(MISSING_FIELD, f"{f['responses']} is missing")
    if not isinstance(items, list):
        raise RowError(WRONG_TYPE, f"{f['responses']} is {type(items).__name__}, not a list of responses")
    if "scores" in f:
        scores = row.get(f["scores"])
        if not isinstance(scores, list):
            raise RowError(MISSING_FIELD if scores is None else WRONG_TYPE, f"{f['scores']} is not a list of scores")
        if len(scores) != len(items):
            raise RowError(SCORES_MISMATCH, f"{f['responses']} has {len(items)} responses but {f['scores']} "
                                            f"{len(scores)} scores")
        raw_scores = list(scores)
    else:
        raw_scores = [_score_of(e, f["score"]) if isinstance(e, dict) else None for e in items]

    usable: list[tuple[int, str, float]] = []
    left_out: dict[str, str] = {}
    all_scores: list[float | None] = []
    for i, item in enumerate(items):
        where = f"{f['responses']}[{i}]"
        s = _number(raw_scores[i])
        all_scores.append(s)
        try:
            if "text" in f and not isinstance(item, dict):
                raise RowError(WRONG_TYPE, f"{where} is {type(item).__name__}, not a response object")
            text = reply(item.get(f["text"]) if "text" in f else item, where)
        except RowError as e:
            left_out[str(i)] = e.reason
            continue
        if not text.strip():
            left_out[str(i)] = "empty"
        elif s is None:
            left_out[str(i)] = "no score"
        else:
            usable.append((i, text, s))
    if len(usable) < 2:
        why = ", ".join(f"{i}: {r}" for i, r in left_out.items())
        raise RowError(TOO_FEW_RESPONSES, f"{len(usable)} usable response(s) of {len(items)}"
                                          + (f" (left out {why})" if why else ""))

    ranked = sorted(usable, key=lambda u: (-u[2], u[0]))
    picks = _pairs(ranked, how, turns, system)
    if not picks:
        best, worst = ranked[0][2], ranked[-1][2]
        if best == worst:
            raise RowError(TIED_SCORES, f"all {len(usable)} usable responses score {best:g}: no preference")
        if how.strategy == "all-margin" and best - worst < how.margin:
            raise RowError(BELOW_MARGIN, f"scores span {worst:g}..{best:g}, less than the margin {how.margin:g}")
        raise RowError(IDENTICAL_RESPONSES, "the responses that differ in score have the same text")

    out: list[Pair] = []
    for j, (c, r) in enumerate(picks):
        info: dict[str, Any] = {
            "strategy": how.label, "score": f.get("score", f.get("scores")), "pair": j, "pairs_from_row": len(picks),
            "chosen": c[0], "rejected": r[0], "scores": all_scores,
        }
        if left_out:
            info["left_out"] = left_out
        if "text" in f:
            info["chosen_response"] = {k: v for k, v in items[c[0]].items() if k != f["text"]}
            info["rejected_response"] = {k: v for k, v in items[r[0]].items() if k != f["text"]}
        out.append((system, turns, c[1], r[1], c[2], r[2], info))
    return out


def _pairs(ranked: list[tuple[int, str, float]], how: Binarize, turns: list[Turn],
           system: str | None) -> list[tuple[tuple[int, str, float], tuple[int, str, float]]]:
    """(chosen, rejected) picks from responses ranked best first (ties by position)."""
    def differ(a: tuple[int, str, float], b: tuple[int, str, float]) -> bool:
        return a[2] > b[2] and a[1].strip() != b[1].strip()

    best = ranked[0]
    if how.strategy == "best-worst":
        lower = [u for u in ranked if differ(best, u)]
        if not lower:
            return []
        worst = min(lower, key=lambda u: (u[2], u[0]))
        return [(best, worst)]
    if how.strategy == "best-random":
        lower = sorted((u for u in ranked if differ(best, u)), key=lambda u: u[0])
        if not lower:
            return []
        key = "\x1e".join([system or "", *(t["content"] for t in turns), *(u[1] for u in sorted(ranked))])
        return [(best, lower[_choose(how.seed, key, len(lower))])]
    margin = how.margin
    return [(a, b) for k, a in enumerate(ranked) for b in ranked[k + 1:] if differ(a, b) and a[2] - b[2] >= margin]
