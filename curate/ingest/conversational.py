"""TRL conversational pairs, with an explicit prompt or an implicit one (UltraFeedback-binarized).

Explicit: `prompt` is a list of messages, `chosen`/`rejected` lists holding the assistant reply.
Implicit (UltraFeedback-binarized, `trl-lib/ultrafeedback_binarized`): `chosen`/`rejected` are whole conversations
that share every turn but the last; the prompt is derived from them. A plain-string `prompt` column beside them is
used only when the conversations hold nothing but the reply.
"""

from __future__ import annotations

from typing import Any

from curate.ingest.messages import canonical_prompt, finish, messages, reply
from curate.ingest.reasons import CONVERSATIONS_DIVERGE, EMPTY_FIELD, ROLES_OUT_OF_ORDER, RowError

FAMILY = "trl_conversational"
IMPLICIT = "ultrafeedback"


def convert_explicit(row: dict[str, Any], f: dict[str, str], system: str | None) -> tuple:
    turns = messages(row.get(f["prompt"]), f["prompt"])
    system, turns = canonical_prompt(turns, system)
    chosen = reply(row.get(f["chosen"]), f["chosen"])
    rejected = reply(row.get(f["rejected"]), f["rejected"])
    finish(chosen, rejected)
    return system, turns, chosen, rejected


def convert_implicit(row: dict[str, Any], f: dict[str, str], system: str | None) -> tuple:
    c = messages(row.get(f["chosen"]), f["chosen"])
    r = messages(row.get(f["rejected"]), f["rejected"])
    if not c or not r:
        raise RowError(EMPTY_FIELD, f"{f['chosen'] if not c else f['rejected']} has no messages")
    for name, conv in ((f["chosen"], c), (f["rejected"], r)):
        if conv[-1]["role"] != "assistant":
            raise RowError(ROLES_OUT_OF_ORDER, f"{name} ends on a {conv[-1]['role']} turn, expected assistant")
    if c[:-1] != r[:-1]:
        raise RowError(CONVERSATIONS_DIVERGE, f"{f['chosen']} and {f['rejected']} differ before the final reply")
    turns = c[:-1]
    if not [t for t in turns if t["role"] != "system"] and "prompt" in f and isinstance(row.get(f["prompt"]), str):
        turns = turns + [{"role": "user", "content": row[f["prompt"]]}]
    system, turns = canonical_prompt(turns, system, where=f"{f['chosen']} (before the reply)")
    chosen, rejected = c[-1]["content"], r[-1]["content"]
    finish(chosen, rejected)
    return system, turns, chosen, rejected
