"""Format-family detection from the columns (and value types) of a file's first rows.

Detection looks at the columns of every row of the file that parses as a JSON object (`ColumnStats`, streamed):
a column counts when at least half of the rows have it non-null (optional ones such as `system`, `history` and
scores when any row has them), and its kind (str / list / dict / number) is that of its first non-null value. Rows that
don't fit the detected family later are rejected one by one with a reason; a file whose columns fit no family, or
fit two, is a whole-file `InputError` that names the columns seen and a `--map` that would work.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from curate.errors import InputError
from curate.ingest import chat, conversational, flat, hh, openai, rated, sharegpt
from curate.ingest.reasons import RowError

SAMPLE_ROWS = 500

# Names a user may give with --map (left of "="), i.e. the logical fields the families read.
MAP_FIELDS = (
    "prompt", "chosen", "rejected", "system", "history", "instruction", "input", "conversations",
    "preferred_output", "non_preferred_output", "chosen_score", "rejected_score",
    "messages", "responses", "scores", "score",
)
# Keys inside a column's values, not columns: `score` = the key of each rated response's score (rated.py).
INNER_FIELDS = ("text", "score")
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
    convert: Callable[..., Any]  # (row, fields, system) → (system, turns, chosen, rejected); rated: a list of pairs
    consumed: frozenset[str] = field(default_factory=frozenset)  # columns not copied into meta
    extra_meta: Callable[[dict[str, Any], dict[str, str]], dict[str, Any]] | None = None

    @property
    def rated(self) -> bool:
        """Rows of several scored responses, each yielding 0..k pairs (rated.py), not one pair per row."""
        return self.family in rated.FAMILIES


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


class ColumnStats:
    """The columns of a whole file, streamed row by row (nothing kept but counts): first-seen order, how many
    rows have each one non-null, the kind of its first non-null value, and how many rows were seen. Detection
    reads these rather than the first rows only, so a `system`, `history` or score column that first appears at
    row 10,000 is still honoured."""

    def __init__(self) -> None:
        self.order: dict[str, None] = {}
        self.count: dict[str, int] = {}
        self.kind: dict[str, str] = {}
        self.rows = 0

    def add(self, row: dict[str, Any]) -> None:
        self.rows += 1
        order, count, kind = self.order, self.count, self.kind
        for k, v in row.items():
            if k not in order:
                order[k] = None
            if v is not None:
                count[k] = count.get(k, 0) + 1
                if k not in kind:
                    kind[k] = _kind(v)

    def add_counts(self, rows: int, columns: dict[str, tuple[int, str]]) -> None:
        """A batch known by column (Arrow): rows, and per column (non-null count, kind)."""
        self.rows += rows
        for k, (n, kd) in columns.items():
            self.order.setdefault(k, None)
            if n:
                self.count[k] = self.count.get(k, 0) + n
                self.kind.setdefault(k, kd)

    def result(self) -> tuple[list[str], dict[str, int], dict[str, str]]:
        return list(self.order), self.count, self.kind


def columns_of(sample: list[dict[str, Any]]) -> tuple[list[str], dict[str, int], dict[str, str]]:
    """Columns in first-seen order, how many sample rows have each non-null, and each one's kind."""
    stats = ColumnStats()
    for row in sample:
        stats.add(row)
    return stats.result()


def detect(sample: list[dict[str, Any]], mapping: dict[str, str], source: str, suggest: bool = True,
           columns: ColumnStats | None = None) -> Plan:
    """Pick the format family for one file from its columns — those of the whole file when `columns` is given,
    else of the sample — and a sample of its rows (JSON objects).

    `suggest`: on failure, try --map guesses against this sample and propose those that work (suggest_maps)."""
    if columns is None:
        columns = ColumnStats()
        for row in sample:
            columns.add(row)
    cols, count, kind = columns.result()
    half = max(1, (columns.rows + 1) // 2)
    # The view: logical name → real column. --map entries win; a column they shadow stays in meta, and so do the
    # other usual names of a field the map names (--map prompt=prompt hides `question`).
    view: dict[str, str] = {c: c for c in cols}
    for logical, col in mapping.items():
        if col in count:
            view.pop(col, None)
            view[logical] = col
    for logical, alts in (("prompt", PROMPT_NAMES), ("chosen", CHOSEN_NAMES), ("rejected", REJECTED_NAMES)):
        if mapping.get(logical) in count:  # only where the map applies to this file
            for n in alts:
                if n != logical and n not in mapping and view.get(n) == n:
                    view.pop(n)

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
    if (has("chosen", "list") and has("rejected", "list") and not has("prompt", "list") and not has("conversations")
            and not chat.prompt_in_messages(sample, view, has, PROMPT_NAMES)):
        fields = _pick(view, "chosen", "rejected")
        if any_("prompt"):
            fields["prompt"] = view["prompt"]
        candidates.append((conversational.IMPLICIT, fields))
    prompts = [n for n in PROMPT_NAMES if has(n, "str")]
    chosens = [n for n in CHOSEN_NAMES if has(n, "str", "dict")]
    rejecteds = [n for n in REJECTED_NAMES if has(n, "str", "dict")]
    if not prompts and not any_("conversations") and has("chosen", "str") and has("rejected", "str"):
        looks = sum(hh.looks_like(r.get(view["chosen"])) for r in sample)
        if looks >= max(1, (len(sample) + 1) // 2):  # a share of the sample: only sample rows are looked at
            candidates.append((hh.FAMILY, _pick(view, "chosen", "rejected")))
    if prompts and chosens and rejecteds and not has("conversations") and not has("prompt", "list"):
        if len(prompts) > 1 or len(chosens) > 1 or len(rejecteds) > 1:
            seen = [view[n] for n in prompts + chosens + rejecteds]
            picks = [{"prompt": view[p], "chosen": view[c], "rejected": view[r]}
                     for p in prompts for c in chosens for r in rejecteds]
            raise InputError(
                f"{source}: ambiguous format: columns {', '.join(seen)} could each be the prompt or a reply; "
                + _map_hint(sample, mapping, source, suggest, picks)
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

    candidates += chat.candidates(sample, view, has, PROMPT_NAMES)
    if not candidates:  # rated responses only when no column names a chosen/rejected pair
        candidates += rated.candidates(sample, view, has, mapping)

    if not candidates:
        raise InputError(f"{source}: can't tell the preference format from its columns [{', '.join(cols)}]; "
                         + _map_hint(sample, mapping, source, suggest))
    if len(candidates) > 1:
        fits = " and ".join(c[0] for c in candidates)
        raise InputError(
            f"{source}: ambiguous format: columns [{', '.join(cols)}] fit both {fits}; "
            + _map_hint(sample, mapping, source, suggest, [c[1] for c in candidates])
        )
    family, fields = candidates[0]
    if any_("system") and family != openai.FAMILY:
        fields["system"] = view["system"]
    for logical, names in (("chosen_score", CHOSEN_SCORE_NAMES), ("rejected_score", REJECTED_SCORE_NAMES)):
        for n in names:
            if any_(n) and family not in rated.FAMILIES:
                fields[logical] = view[n]
                break
    return Plan(
        family=family,
        fields=fields,
        convert=CONVERTERS[family],
        consumed=frozenset(v for k, v in fields.items() if k not in INNER_FIELDS),
        extra_meta=openai.extra_meta if family == openai.FAMILY else None,
    )


def _pick(view: dict[str, str], *names: str) -> dict[str, str]:
    return {n: view[n] for n in names}


CONVERTERS: dict[str, Callable[..., Any]] = {
    flat.FAMILY: flat.convert,
    flat.ALPACA: flat.convert,
    conversational.FAMILY: conversational.convert_explicit,
    conversational.IMPLICIT: conversational.convert_implicit,
    hh.FAMILY: hh.convert,
    sharegpt.FAMILY: sharegpt.convert,
    openai.FAMILY: openai.convert,
    chat.PAIRS: chat.convert_pairs,
    chat.PROMPT: chat.convert_prompt,
    rated.OBJECTS: rated.convert,  # rated families return a list of pairs (Plan.rated)
    rated.LISTS: rated.convert,
}
FAMILIES = tuple(CONVERTERS)

_GUESS = {
    "prompt": r"prompt|query|question|instruction|input|context|request|user|text|conversation|message|history",
    "chosen": r"chosen|good|better|best|prefer|accept|positive|pos|win|response_j|answer_j|_a$",
    "rejected": r"reject|bad|worse|worst|non_prefer|dispref|negative|neg|los|response_k|answer_k|_b$",
    "responses": r"response|completion|generation|output|answer|candidate|repl",
    "scores": r"score|rating|reward|grade",
}
_MAP_ORDER = ("prompt", "chosen", "rejected", "responses", "scores")
_MAX_TRIALS = 64
_TRIAL_ROWS = 50


def format_map(mapping: dict[str, str]) -> str:
    keys = [k for k in _MAP_ORDER if k in mapping] + sorted(k for k in mapping if k not in _MAP_ORDER)
    return ",".join(f"{k}={mapping[k]}" for k in keys)


def map_works(sample: list[dict[str, Any]], mapping: dict[str, str], source: str) -> bool:
    """Whether `--map mapping` detects a family on this sample and converts at least half of its first rows."""
    try:
        plan = detect(sample, mapping, source, suggest=False)
    except InputError:
        return False
    rows = sample[:_TRIAL_ROWS]
    ok = 0
    for row in rows:
        try:
            if plan.rated:
                plan.convert(row, plan.fields, None, rated.Binarize())
            else:
                plan.convert(row, plan.fields, None)
            ok += 1
        except RowError:
            pass
    return ok > 0 and ok * 2 >= len(rows)


def _trials(sample: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Candidate maps from column names (each role's matching columns, by name pattern and value kind)."""
    cols, _, kind = columns_of(sample)

    def guess(role: str, kinds: tuple[str, ...]) -> list[str]:
        return [c for c in cols if re.search(_GUESS[role], c, re.IGNORECASE) and kind.get(c) in kinds][:4]

    prompts, chosens, rejecteds = guess("prompt", ("str", "list")), guess("chosen", ("str", "list", "dict")), \
        guess("rejected", ("str", "list", "dict"))
    out: list[dict[str, str]] = []
    for r in rejecteds:  # rejected first: 'non_preferred' must not be taken as chosen
        for c in chosens:
            if c == r:
                continue
            out.extend({"prompt": p, "chosen": c, "rejected": r} for p in prompts if p not in (c, r))
            out.append({"chosen": c, "rejected": r})  # whole conversations / transcripts carry the prompt
    for x in guess("responses", ("list",)):
        for p in prompts:
            if p == x:
                continue
            out.extend({"prompt": p, "responses": x, "scores": s}
                       for s in guess("scores", ("list",)) if s not in (p, x))
            out.append({"prompt": p, "responses": x})
    return out


def suggest_maps(sample: list[dict[str, Any]], mapping: dict[str, str], source: str,
                 extra: list[dict[str, str]] | None = None, limit: int = 2) -> list[dict[str, str]]:
    """--map values that work on this sample (map_works), best guesses first; at most `limit`."""
    found: list[dict[str, str]] = []
    seen: set[tuple] = set()
    for trial in [*(extra or []), *_trials(sample)][:_MAX_TRIALS]:
        full = {**mapping, **trial}
        key = tuple(sorted(full.items()))
        if key in seen or full == mapping:
            continue
        seen.add(key)
        if map_works(sample, full, source):
            found.append(full)
            if len(found) >= limit:
                break
    return found


def _map_hint(sample: list[dict[str, Any]], mapping: dict[str, str], source: str, suggest: bool,
              extra: list[dict[str, str]] | None = None) -> str:
    if suggest:
        maps = suggest_maps(sample, mapping, source, extra)
        if maps:
            return "name them with " + " or ".join(f"--map {format_map(m)}" for m in maps)
    return ("no --map guessed from the column names works on its rows; name the prompt, chosen and rejected "
            "columns (or prompt, responses and scores) yourself with --map")
