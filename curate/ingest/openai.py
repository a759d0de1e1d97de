"""OpenAI preference fine-tuning (DPO) JSONL: `input.messages`, `preferred_output` and `non_preferred_output`
(lists holding one assistant message). `input.tools` and the rest of `input` go to meta."""

from __future__ import annotations

from typing import Any

from curate.ingest.messages import canonical_prompt, finish, messages, reply
from curate.ingest.reasons import MISSING_FIELD, WRONG_TYPE, RowError

FAMILY = "openai"


def convert(row: dict[str, Any], f: dict[str, str], system: str | None) -> tuple:
    inp = row.get(f["input"])
    if not isinstance(inp, dict):
        if inp is None:
            raise RowError(MISSING_FIELD, f"{f['input']} is missing")
        raise RowError(WRONG_TYPE, f"{f['input']} is {type(inp).__name__}, expected an object with messages")
    turns = messages(inp.get("messages"), f"{f['input']}.messages")
    system, turns = canonical_prompt(turns, system, where=f"{f['input']}.messages")
    chosen = reply(row.get(f["preferred_output"]), f["preferred_output"])
    rejected = reply(row.get(f["non_preferred_output"]), f["non_preferred_output"])
    finish(chosen, rejected)
    return system, turns, chosen, rejected


def extra_meta(row: dict[str, Any], f: dict[str, str]) -> dict[str, Any]:
    """Fields of `input` other than messages (tools, parallel_tool_calls) are kept for provenance."""
    inp = row.get(f["input"])
    if isinstance(inp, dict):
        return {f"{f['input']}.{k}": v for k, v in inp.items() if k != "messages"}
    return {}
