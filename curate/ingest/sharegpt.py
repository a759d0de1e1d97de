"""LLaMA-Factory ShareGPT ranking: `conversations` of {from, value} (system/human/gpt), `chosen`/`rejected` as
{from: gpt, value}, optional `system` column (LLaMA-Factory's `dataset_info.json`: ranking + sharegpt)."""

from __future__ import annotations

from typing import Any

from curate.ingest.messages import canonical_prompt, finish, messages, reply

FAMILY = "sharegpt"


def convert(row: dict[str, Any], f: dict[str, str], system: str | None) -> tuple:
    turns = messages(row.get(f["conversations"]), f["conversations"])
    system, turns = canonical_prompt(turns, system, where=f["conversations"])
    chosen = reply(row.get(f["chosen"]), f["chosen"])
    rejected = reply(row.get(f["rejected"]), f["rejected"])
    finish(chosen, rejected)
    return system, turns, chosen, rejected
