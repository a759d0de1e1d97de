"""Messages-style pairs, the shape many chat datasets and LLaMA-Factory's OpenAI-style ranking files use.

Two families:
- `messages_pairs`: `chosen_messages`/`rejected_messages` (also `chosen_conversation(s)`/`rejected_conversation(s)`)
  are whole conversations that share every turn but the last assistant reply. The prompt is the shared turns
  (system turns become `system`); conversations that differ earlier are a per-row `conversations_diverge` reject.
- `messages`: `messages` holds the prompt turns and `chosen`/`rejected` the single replies (a string, a message, or
  a one-message list). When `messages` ends on an assistant turn identical to the chosen reply (the chosen
  conversation stored whole), that turn is taken as the reply, not as part of the prompt.

Message content may be a string or typed text parts (`[{type: "text", text: ...}]`), as everywhere in ingest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from curate.ingest.conversational import convert_implicit
from curate.ingest.messages import canonical_prompt, finish, messages, reply

PAIRS = "messages_pairs"
PROMPT = "messages"
FAMILIES = (PAIRS, PROMPT)

CHOSEN_CONVERSATIONS = ("chosen_messages", "chosen_conversation", "chosen_conversations")
REJECTED_CONVERSATIONS = ("rejected_messages", "rejected_conversation", "rejected_conversations")
_USER_ROLES = ("user", "human")

Has = Callable[..., bool]


def convert_pairs(row: dict[str, Any], f: dict[str, str], system: str | None) -> tuple:
    """Two whole conversations → (system, shared turns, chosen reply, rejected reply); see conversational."""
    return convert_implicit(row, f, system)


def convert_prompt(row: dict[str, Any], f: dict[str, str], system: str | None) -> tuple:
    turns = messages(row.get(f["messages"]), f["messages"])
    chosen = reply(row.get(f["chosen"]), f["chosen"])
    rejected = reply(row.get(f["rejected"]), f["rejected"])
    if turns and turns[-1]["role"] == "assistant" and turns[-1]["content"] == chosen:
        turns = turns[:-1]  # `messages` is the chosen conversation, reply included
    system, turns = canonical_prompt(turns, system, where=f["messages"])
    finish(chosen, rejected)
    return system, turns, chosen, rejected


def replies_are_conversations(sample: list[dict[str, Any]], col: str) -> bool:
    """Whether a `chosen` column holds whole conversations (a user turn inside) in most sample rows."""
    seen = whole = 0
    for row in sample:
        v = row.get(col)
        if v is None:
            continue
        seen += 1
        if isinstance(v, list) and any(
            isinstance(m, dict) and str(m.get("role", m.get("from", ""))).lower() in _USER_ROLES for m in v
        ):
            whole += 1
    return seen > 0 and whole * 2 >= seen


def prompt_in_messages(sample: list[dict[str, Any]], view: dict[str, str], has: Has,
                       prompt_names: tuple[str, ...]) -> bool:
    """`messages` is the prompt and `chosen`/`rejected` are single replies (not whole conversations)."""
    return (
        has("messages", "list") and has("chosen") and has("rejected")
        and not has("conversations") and not any(has(n) for n in prompt_names)
        and not replies_are_conversations(sample, view["chosen"])
    )


def candidates(sample: list[dict[str, Any]], view: dict[str, str], has: Has,
               prompt_names: tuple[str, ...]) -> list[tuple[str, dict[str, str]]]:
    """The messages-style families these columns fit (detect() adds them to its candidates)."""
    out: list[tuple[str, dict[str, str]]] = []
    c = next((n for n in CHOSEN_CONVERSATIONS if has(n, "list")), None)
    r = next((n for n in REJECTED_CONVERSATIONS if has(n, "list")), None)
    if c and r:
        fields = {"chosen": view[c], "rejected": view[r]}
        if has("prompt", "str"):
            fields["prompt"] = view["prompt"]  # used only when the conversations hold nothing but the replies
        out.append((PAIRS, fields))
    if prompt_in_messages(sample, view, has, prompt_names):
        out.append((PROMPT, {n: view[n] for n in ("messages", "chosen", "rejected")}))
    return out
