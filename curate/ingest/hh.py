"""Anthropic HH-RLHF: `chosen`/`rejected` are whole "\\n\\nHuman: … \\n\\nAssistant: …" transcripts that share
everything up to the last Assistant turn. The prompt is that shared prefix, as messages; the replies are what
follows the last "Assistant:" in each."""

from __future__ import annotations

import re
from typing import Any

from curate.ingest.messages import canonical_prompt, finish, string
from curate.ingest.reasons import CONVERSATIONS_DIVERGE, MALFORMED_TRANSCRIPT, RowError

FAMILY = "hh_rlhf"
_ASSISTANT = "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")


def looks_like(text: Any) -> bool:
    return isinstance(text, str) and "Human:" in text and "Assistant:" in text


def _split(text: str, field: str) -> tuple[str, str]:
    if not text.startswith("\n\n"):
        text = "\n\n" + text.lstrip()  # some copies drop the leading blank line
    idx = text.rfind(_ASSISTANT)
    if idx < 0:
        raise RowError(MALFORMED_TRANSCRIPT, f"{field} has no '\\n\\nAssistant:' turn")
    return text[:idx], text[idx + len(_ASSISTANT) :].strip()


def convert(row: dict[str, Any], f: dict[str, str], system: str | None) -> tuple:
    chosen_t = string(row.get(f["chosen"]), f["chosen"])
    rejected_t = string(row.get(f["rejected"]), f["rejected"])
    prefix, chosen = _split(chosen_t, f["chosen"])
    prefix_r, rejected = _split(rejected_t, f["rejected"])
    if prefix != prefix_r:
        raise RowError(CONVERSATIONS_DIVERGE,
                       f"{f['chosen']} and {f['rejected']} differ before the last Assistant turn")
    parts = _TURN.split(prefix)
    if parts[0].strip() or len(parts) < 3:
        raise RowError(MALFORMED_TRANSCRIPT, f"{f['chosen']} does not start with a Human turn")
    turns = [
        {"role": "user" if who == "Human" else "assistant", "content": text.strip()}
        for who, text in zip(parts[1::2], parts[2::2], strict=True)
    ]
    system, turns = canonical_prompt(turns, system, where=f"{f['chosen']} (before the reply)")
    finish(chosen, rejected)
    return system, turns, chosen, rejected
