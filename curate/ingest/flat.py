"""Flat triples: `prompt`/`chosen`/`rejected` strings (or `question`/`response_chosen`/`response_rejected`),
Alpaca ranking `instruction`/`input`/`chosen`/`rejected`; optional `system` and `history` [[user, assistant], ...]."""

from __future__ import annotations

from typing import Any

from curate.ingest.messages import Turn, canonical_prompt, finish, reply, string
from curate.ingest.reasons import WRONG_TYPE, RowError

FAMILY = "flat"
ALPACA = "alpaca"


def history_turns(value: Any, field: str) -> list[Turn]:
    """LLaMA-Factory's `history`: [[user, assistant], ...] before the final prompt."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise RowError(WRONG_TYPE, f"{field} is {type(value).__name__}, expected [[user, assistant], ...]")
    turns: list[Turn] = []
    for i, pair in enumerate(value):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise RowError(WRONG_TYPE, f"{field}[{i}] is not a [user, assistant] pair")
        turns.append({"role": "user", "content": string(pair[0], f"{field}[{i}][0]")})
        turns.append({"role": "assistant", "content": string(pair[1], f"{field}[{i}][1]")})
    return turns


def convert(row: dict[str, Any], f: dict[str, str], system: str | None) -> tuple:
    # Alpaca: the prompt is instruction, then input when there is one (LLaMA-Factory joins with \n)
    if "instruction" in f:
        text = string(row.get(f["instruction"]), f["instruction"])
        extra = string(row.get(f["input"]), f["input"], required=False) if "input" in f else None
        prompt = f"{text}\n{extra}" if extra else text
    else:
        prompt = string(row.get(f["prompt"]), f["prompt"])
    turns = history_turns(row.get(f["history"]), f["history"]) if "history" in f else []
    turns.append({"role": "user", "content": prompt})
    system, turns = canonical_prompt(turns, system)
    chosen = reply(row.get(f["chosen"]), f["chosen"])
    rejected = reply(row.get(f["rejected"]), f["rejected"])
    finish(chosen, rejected)
    return system, turns, chosen, rejected
