"""Shared row helpers: message roles, text parts, reply extraction and the canonical prompt check.

Every format family reduces a row to (system, turns, chosen, rejected); these helpers hold the checks that all
families share, so a reason code means the same thing whatever the input format was.
"""

from __future__ import annotations

from typing import Any, Literal, overload

from curate.ingest.reasons import (
    BAD_SCORE,
    EMPTY_FIELD,
    IDENTICAL_RESPONSES,
    MISSING_FIELD,
    NON_STRING_CONTENT,
    PROMPT_NOT_ENDING_ON_USER,
    ROLES_OUT_OF_ORDER,
    UNKNOWN_ROLE,
    WRONG_TYPE,
    RowError,
)

# Role names seen in the wild (OpenAI/TRL, ShareGPT, Gemini, HH) → canonical role.
ROLES: dict[str, str] = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "chatgpt": "assistant",
    "system": "system",
    "developer": "system",
}

Turn = dict[str, str]


def text_of(value: Any, where: str) -> str:
    """A message content as one string: a str, or a list of typed text parts ([{type: text, text|value}]), joined."""
    if isinstance(value, str):
        return value
    if value is None:
        raise RowError(MISSING_FIELD, f"{where} has no content")
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            if isinstance(part, str):
                texts.append(part)
                continue
            if not isinstance(part, dict):
                raise RowError(NON_STRING_CONTENT, f"{where} part {i} is {type(part).__name__}, not a text part")
            kind = part.get("type", "text")
            text = part.get("text", part.get("value"))
            if kind not in ("text", "input_text", "output_text") or not isinstance(text, str):
                raise RowError(NON_STRING_CONTENT, f"{where} part {i} is a {kind!r} part, not text")
            texts.append(text)
        return "".join(texts)  # chat templates concatenate text parts with no separator
    raise RowError(NON_STRING_CONTENT, f"{where} is {type(value).__name__}, not a string")


def message(m: Any, where: str) -> Turn:
    """One message ({role, content} or ShareGPT {from, value}) with its role made canonical."""
    if not isinstance(m, dict):
        raise RowError(WRONG_TYPE, f"{where} is {type(m).__name__}, not a message object")
    raw_role = m.get("role", m.get("from"))
    if raw_role is None:
        raise RowError(MISSING_FIELD, f"{where} has no role")
    role = ROLES.get(str(raw_role).lower()) if isinstance(raw_role, str) else None
    if role is None:
        raise RowError(UNKNOWN_ROLE, f"{where} has role {raw_role!r}")
    content = m["content"] if "content" in m else m.get("value")
    return {"role": role, "content": text_of(content, where)}


def messages(value: Any, where: str) -> list[Turn]:
    if value is None:
        raise RowError(MISSING_FIELD, f"{where} is missing")
    if not isinstance(value, list):
        raise RowError(WRONG_TYPE, f"{where} is {type(value).__name__}, not a list of messages")
    return [message(m, f"{where}[{i}]") for i, m in enumerate(value)]


def canonical_prompt(turns: list[Turn], system: str | None, where: str = "prompt") -> tuple[str | None, list[Turn]]:
    """Split leading system messages off and check the rest alternates user/assistant and ends on user."""
    i = 0
    sys_parts = [system] if system else []
    while i < len(turns) and turns[i]["role"] == "system":
        sys_parts.append(turns[i]["content"])
        i += 1
    rest = turns[i:]
    if not rest:
        raise RowError(MISSING_FIELD, f"{where} has no user turn")
    for j, t in enumerate(rest):
        expected = "user" if j % 2 == 0 else "assistant"
        if t["role"] != expected:
            raise RowError(ROLES_OUT_OF_ORDER, f"{where} turn {i + j} is {t['role']}, expected {expected}")
        if not t["content"].strip():
            raise RowError(EMPTY_FIELD, f"{where} turn {i + j} ({t['role']}) is empty")
    if rest[-1]["role"] != "user":
        raise RowError(PROMPT_NOT_ENDING_ON_USER, f"{where} ends on an assistant turn")
    sys_text = "\n\n".join(p for p in sys_parts if p and p.strip()) or None
    return sys_text, rest


def reply(value: Any, field: str) -> str:
    """A final assistant reply from a string, a message ({role|from, content|value}) or a one-message list."""
    if value is None:
        raise RowError(MISSING_FIELD, f"{field} is missing")
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if len(value) != 1:
            raise RowError(
                ROLES_OUT_OF_ORDER if value else EMPTY_FIELD,
                f"{field} has {len(value)} messages; expected one assistant reply",
            )
        value = value[0]
    if isinstance(value, dict):
        m = message(value, field)
        if m["role"] != "assistant":
            raise RowError(ROLES_OUT_OF_ORDER, f"{field} is a {m['role']} message, expected assistant")
        return m["content"]
    raise RowError(NON_STRING_CONTENT, f"{field} is {type(value).__name__}, not a string")


@overload
def string(value: Any, field: str, required: Literal[True] = True) -> str: ...
@overload
def string(value: Any, field: str, required: bool) -> str | None: ...
def string(value: Any, field: str, required: bool = True) -> str | None:
    """`value` as a string; a missing one raises `missing_field` unless not `required` (then None)."""
    if value is None:
        if required:
            raise RowError(MISSING_FIELD, f"{field} is missing")
        return None
    if not isinstance(value, str):
        raise RowError(NON_STRING_CONTENT, f"{field} is {type(value).__name__}, not a string")
    return value


def score(value: Any, field: str) -> float | None:
    """A numeric score; numeric strings (CSV) are accepted, NaN stays NaN, anything else is `bad_score`."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RowError(BAD_SCORE, f"{field} is a boolean, not a number")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise RowError(BAD_SCORE, f"{field} is {value!r:.40}, not a number")


def finish(chosen: str, rejected: str) -> None:
    """Checks every family ends with: both replies non-empty and different."""
    if not chosen.strip():
        raise RowError(EMPTY_FIELD, "chosen is empty")
    if not rejected.strip():
        raise RowError(EMPTY_FIELD, "rejected is empty")
    if chosen.strip() == rejected.strip():
        raise RowError(IDENTICAL_RESPONSES, "chosen and rejected are the same text")
