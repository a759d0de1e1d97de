"""Format-family detection from the columns (and value types) of a file's first rows.

Detection looks at the first few hundred rows that parse as JSON objects: a column counts when at least half of
them have it non-null, and its kind (str / list / dict / number) is that of its first non-null value. Rows that
don't fit the detected family later are rejected one by one with a reason; a file whose columns fit no family, or
fit two, is a whole-file `InputError` that names the columns seen and a `--map` that would work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from curate.errors import InputError
from curate.ingest import conversational, flat, hh, openai, sharegpt

SAMPLE_ROWS = 500

# Names a user may give with --map (left of "="), i.e. the logical fields the families read.
MAP_FIELDS = (
    "prompt", "chosen", "rejected", "system", "history", "instruction", "input", "conversations",
    "preferred_output", "non_preferred_output", "chosen_score", "rejected_score",
)
PROMPT_NAMES = ("prompt", "question", "instruction")
CHOSEN_NAMES = ("chosen", "response_chosen")
REJECTED_NAMES = ("rejected", "response_rejected")
CHOSEN_SCORE_NAMES = ("chosen_score", "score_chosen", "chosen_rating", "chosen-rating", "chosen_reward")
REJECTED_SCORE_NAMES = ("rejected_score", "score_rejected", "rejected_rating", "rejected-rating", "rejected_reward")


@dataclass(frozen=True)
class Plan:
    """How to read one file's rows: the family, and which real column holds each logical field."""

    family: str
    fields: dict[str, str]  # logical name → column name in the file
    convert: Callable[[dict[str, Any], dict[str, str], str | None], tuple]
    consumed: frozenset[str] = field(default_factory=frozenset)  # columns not copied into meta
    extra_meta: Callable[[dict[str, Any], dict[str, str]], dict[str, Any]] | None = None


def _kind(v: Any) -> str:
    if isinstance(v, str):
        return "str"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "dict"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return "num"
    return type(v).__name__


def check_mapping(mapping: dict[str, str] | None) -> dict[str, str]:
    mapping = dict(mapping or {})
    for key, col in mapping.items():
        if key not in MAP_FIELDS:
            raise InputError(f"--map {key}={col}: unknown field {key!r}; use one of {', '.join(MAP_FIELDS)}")
        if not isinstance(col, str) or not col:
            raise InputError(f"--map {key}=…: give the column name that holds {key}")
    return mapping


def columns_of(sample: list[dict[str, Any]]) -> tuple[list[str], dict[str, int], dict[str, str]]:
    """Columns in first-seen order, how many sample rows have each non-null, and each one's kind."""
    order: dict[str, None] = {}
    count: dict[str, int] = {}
    kind: dict[str, str] = {}
    for row in sample:
        for k, v in row.items():
            order.setdefault(k, None)
            if v is not None:
                count[k] = count.get(k, 0) + 1
                kind.setdefault(k, _kind(v))
    return list(order), count, kind


def detect(sample: list[dict[str, Any]], mapping: dict[str, str], source: str) -> Plan:
    """Pick the format family for one file from a sample of its rows (JSON objects)."""
    cols, count, kind = columns_of(sample)
    half = max(1, (len(sample) + 1) // 2)
    # The view: logical name → real column. --map entries win; a column they shadow stays in meta.
    view: dict[str, str] = {c: c for c in cols}
    for logical, col in mapping.items():
        if col in count:
            view.pop(col, None)
            view[logical] = col

    def has(name: str, *kinds: str) -> bool:
        col = view.get(name)
        return col is not None and count.get(col, 0) >= half and (not kinds or kind.get(col) in kinds)

    def any_(name: str) -> bool:
        col = view.get(name)
        return col is not None and count.get(col, 0) > 0

    candidates: list[tuple[str, dict[str, str]]] = []
    if has("input", "dict") and has("preferred_output") and has("non_preferred_output"):
        candidates.append((openai.FAMILY, _pick(view, "input", "preferred_output", "non_preferred_output")))
    if has("conversations", "list") and has("chosen") and has("rejected"):
        candidates.append((sharegpt.FAMILY, _pick(view, "conversations", "chosen", "rejected")))
    if has("prompt", "list") and has("chosen") and has("rejected"):
        candidates.append((conversational.FAMILY, _pick(view, "prompt", "chosen", "rejected")))
    if has("chosen", "list") and has("rejected", "list") and not has("prompt", "list") and not has("conversations"):
        fields = _pick(view, "chosen", "rejected")
        if any_("prompt"):
            fields["prompt"] = view["prompt"]
        candidates.append((conversational.IMPLICIT, fields))
    prompts = [n for n in PROMPT_NAMES if has(n, "str")]
    chosens = [n for n in CHOSEN_NAMES if has(n, "str", "dict")]
    rejecteds = [n for n in REJECTED_NAMES if has(n, "str", "dict")]
    if not prompts and not any_("conversations") and has("chosen", "str") and has("rejected", "str"):
        looks = sum(hh.looks_like(r.get(view["chosen"])) for r in sample)
        if looks >= half:
            candidates.append((hh.FAMILY, _pick(view, "chosen", "rejected")))
    if prompts and chosens and rejecteds and not has("conversations") and not has("prompt", "list"):
        if len(prompts) > 1 or len(chosens) > 1 or len(rejecteds) > 1:
            seen = [view[n] for n in prompts + chosens + rejecteds]
            raise InputError(
                f"{source}: ambiguous format: columns {', '.join(seen)} could each be the prompt or a reply; "
                f"pick with e.g. --map prompt={view[prompts[0]]},chosen={view[chosens[0]]},rejected={view[rejecteds[0]]}"
            )
        fields = {"chosen": view[chosens[0]], "rejected": view[rejecteds[0]]}
        if prompts[0] == "instruction":
            fields["instruction"] = view["instruction"]
            if any_("input"):
                fields["input"] = view["input"]
            family = flat.ALPACA
        else:
            fields["prompt"] = view[prompts[0]]
            family = flat.FAMILY
        if any_("history"):
            fields["history"] = view["history"]
        candidates.append((family, fields))

    if not candidates:
        raise InputError(f"{source}: can't tell the preference format from its columns [{', '.join(cols)}]; "
                         f"name them, e.g. --map {suggest_map(cols, kind)}")
    if len(candidates) > 1:
        names = " and ".join(c[0] for c in candidates)
        first = candidates[0][1]
        raise InputError(
            f"{source}: ambiguous format: columns [{', '.join(cols)}] fit both {names}; pick one with --map, e.g. "
            f"--map {','.join(f'{k}={v}' for k, v in first.items())}"
        )
    family, fields = candidates[0]
    if any_("system") and family != openai.FAMILY:
        fields["system"] = view["system"]
    for logical, names in (("chosen_score", CHOSEN_SCORE_NAMES), ("rejected_score", REJECTED_SCORE_NAMES)):
        for n in names:
            if any_(n):
                fields[logical] = view[n]
                break
    return Plan(
        family=family,
        fields=fields,
        convert=CONVERTERS[family],
        consumed=frozenset(fields.values()),
        extra_meta=openai.extra_meta if family == openai.FAMILY else None,
    )


def _pick(view: dict[str, str], *names: str) -> dict[str, str]:
    return {n: view[n] for n in names}


CONVERTERS: dict[str, Callable[..., tuple]] = {
    flat.FAMILY: flat.convert,
    flat.ALPACA: flat.convert,
    conversational.FAMILY: conversational.convert_explicit,
    conversational.IMPLICIT: conversational.convert_implicit,
    hh.FAMILY: hh.convert,
    sharegpt.FAMILY: sharegpt.convert,
    openai.FAMILY: openai.convert,
}
FAMILIES = tuple(CONVERTERS)

_GUESS = {
    "prompt": r"prompt|query|question|instruction|input|context|request|user|text|conversation|message|history",
    "chosen": r"chosen|good|better|best|prefer|accept|positive|pos|win|response_j|answer_j|_a$",
    "rejected": r"reject|bad|worse|worst|non_prefer|dispref|negative|neg|los|response_k|answer_k|_b$",
}


def suggest_map(cols: list[str], kind: dict[str, str]) -> str:
    """A --map guess from column names (rejected patterns first, so 'non_preferred' isn't taken as chosen)."""
    taken: dict[str, str] = {}
    for logical in ("rejected", "chosen", "prompt"):
        for c in cols:
            if c not in taken.values() and re.search(_GUESS[logical], c, re.IGNORECASE):
                taken[logical] = c
                break
    return ",".join(f"{k}={taken.get(k, f'<{k} column>')}" for k in ("prompt", "chosen", "rejected"))
