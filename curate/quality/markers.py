"""Transcript and chat-template markers leaked into a reply or a prompt turn (`role_marker_in_text`).

Why: a reply that says "Human: No, you are racist…" or ends in "<|im_end|>" teaches the model to write the other
side of the conversation, or to emit control tokens its tokenizer turns into real ones. Sources produce these
when a transcript (HH-RLHF, Vicuna "USER:/ASSISTANT:", Alpaca "### Response:") is split badly or a generation
ran past its end-of-turn.

What counts (outside fenced and inline code, which are removed first):
- template tokens anywhere: ChatML `<|im_start|>`, Llama-3 `<|eot_id|>`, Phi `<|user|>`, Gemma `<start_of_turn>`,
  Llama-2 `[INST]` / `<<SYS>>`, DeepSeek `<｜User｜>`, GLM `[gMASK]`, end/begin-of-sequence `</s>` (not after an
  HTML `<s>`), `<eos>`, `<bos>` …; not when the prompt asks about templates
  (names the token, says "template" / "ChatML" / "special token" / "prompt format" / "模板", or names a model
  family: Llama, Mistral, Gemma, Qwen, GLM, Vicuna, Alpaca, Phi, DeepSeek, Yi).
- Alpaca section headers at a line start: `### Instruction:`, `### Response:`, `### Input:` (with the colon, so a
  recipe's "### Instructions" heading is not one), with the same template-question exemption.
- role names at a line start followed by a colon (ASCII or full-width), plain or bold: Human, User, Assistant,
  USER, ASSISTANT, 用户, 人类, 助手, AI助手. Not counted:
  * a field, not a turn: a User/用户 line whose value is one token without spaces ("User: admin", "USER: root"),
    a placeholder ("User: [your message]"), or a line next to a `Key: value` line with another key (a record or a
    persona: "Host: db1" / "User: John Smith" / "Password: …", "User: a busy parent" / "Goal: …");
  * a requested dialogue: the last user turn asks to write / create / show / continue … a dialogue, conversation,
    script, interview, transcript, scene, an example chat, a role-play, an exchange "between a user and …", or is
    about prompts, few-shot examples, chatbots (写/编/创作/生成/模拟/续写/举例 … 对话, 对白, 剧本, 台词, 访谈,
    聊天记录; 角色扮演, 提示词, 聊天机器人). A prompt that only mentions a play ("米勒写了剧本《推销员之死》")
    or a conversation is no such request;
  * a quote or a translation: the same line is in the prompt, or the last user turn carries role names after its
    opening words (a pasted chat log to summarise, "Translate into English: 用户：你好").
  A user/system turn of the prompt counts role names only when the turn *is* a transcript (it opens with a role
  line, or ends on "Assistant:", and has a user-side and an assistant-side marker) and template tokens only at a
  line start or end: "Summarise this chat:\nUser: …" is a pasted log and "what is <start_of_turn>?" a question.
  "用户想知道…" / "User will give you a task" (no colon) are prose and never match.

The Polars prefilter `PREFILTER` matches every text the precise check can flag (it is the same patterns without
the exemptions), so the Python check runs only on the few rows that contain a candidate.
"""

from __future__ import annotations

import re

USER_ROLES = ("Human", "User", "HUMAN", "USER", "用户", "人类")
ASSISTANT_ROLES = ("Assistant", "ASSISTANT", "AI助手", "助手")
_ROLES = "|".join(USER_ROLES + ASSISTANT_ROLES)
_FIELD_ROLES = ("User", "USER", "用户")  # also a login field ("User: admin"); Human/Assistant are never one
_TEMPLATE_NAMES = (
    "im_start|im_end|im_sep|endoftext|eot_id|eom_id|start_header_id|end_header_id|begin_of_text|end_of_text|"
    "user|assistant|system|end|observation|python_tag|reserved_special_token_[0-9]+"
)
# Pieces written in the common subset of Rust's regex (Polars) and Python's re: no lookarounds, no backrefs.
TEMPLATE_TOKEN = (
    r"<\|(?:" + _TEMPLATE_NAMES + r")\|>|<start_of_turn>|<end_of_turn>|\[/?INST\]|<</?SYS>>"
    r"|<｜[^｜\n]{1,40}｜>|\[gMASK\]|<eos>|<bos>|</s>"
)
ALPACA_HEADER = r"^[ \t]*#{2,4}[ \t]*(?:Instruction|Response|Input)[ \t]*:"
ROLE_LINE = r"^[ \t]*(?:\*\*|__)?(?:" + _ROLES + r")(?:\*\*|__)?[ \t]*[:：]"
PREFILTER = rf"(?m){TEMPLATE_TOKEN}|{ALPACA_HEADER}|{ROLE_LINE}"

_TEMPLATE_RE = re.compile(TEMPLATE_TOKEN)
_ALPACA_RE = re.compile(ALPACA_HEADER, re.MULTILINE)
_ROLE_RE = re.compile(
    r"^[ \t]*(?:\*\*|__)?(?P<role>" + _ROLES + r")(?:\*\*|__)?[ \t]*[:：](?:[ \t]*(?:\*\*|__))?(?P<value>[^\n]*)$",
    re.MULTILINE,
)
_KEY_LINE_RE = re.compile(
    r"^[ \t]*(?:[-*•][ \t]+)?(?P<key>[A-Za-z\u4e00-\u9fff][\w \-\u4e00-\u9fff]{0,24}?)[ \t]*[:：][ \t]*\S"
)
_PLACEHOLDER_RE = re.compile(r"^[ \t]*[\[<{（(【][^\n]*[\]>})）】][ \t]*$")  # "User: [your message]"
_FENCE_RE = re.compile(r"^[ \t]*(```|~~~)")
_INLINE_CODE_RE = re.compile(r"`[^`\n]+`")
_HAN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
# A request for a dialogue: a verb of writing near a dialogue noun (a prompt that merely mentions a play or a
# conversation is no such request), or a role-play.
_DIALOGUE_RE = re.compile(
    r"(?i)\b(?:write|create|generate|compose|draft|continue|simulate|make|give|imagine|produce|prepare|script|show|"
    r"provide|demonstrate|illustrate|act out|examples?|samples?|mock|rewrite|convert|format|turn)\b"
    r"[^.?!\n]{0,60}?\b(?:dialog(?:ue)?s?|conversations?|chats?|chat ?logs?|scripts?|screenplays?|interviews?|"
    r"transcripts?|skits?|sketch(?:es)?|plays?|exchanges?|scenes?)\b"
    r"|\brole-?play|\bbetween (?:a |an |the )?(?:user|customer|human|client|patient|student)s? and (?:a |an |the )?\w+"
    # prompt engineering: example exchanges are the answer
    r"|\b(?:few-?shot|prompts?|chatbots?|system messages?|chat ?gpt|llms?)\b"
    r"|(?:写|编|编写|创作|生成|模拟|续写|设计|撰写|给出|提供|来|举|举个|示例|演示)(?![了过着])[^。？！\n]{0,20}?"
    r"(?:对话|对白|剧本|台词|访谈|采访|聊天记录|情景剧|小品|短剧|话剧|相声)"
    r"|角色扮演|扮演|提示词|聊天机器人|少样本"
)
# The prompt asks about chat formats or a model family's template: a reply may spell the tokens out.
_TEMPLATE_TALK_RE = re.compile(
    r"(?i)templat|chatml|special tokens?|prompt format|format (?:a |the |my )?prompt|chat format|\b(?:llama|mistral|"
    r"mixtral|gemma|qwen|chatglm|glm|vicuna|alpaca|phi|deepseek|yi)\b|模板|提示词格式|对话格式"
)
# A role name and a colon anywhere in a line (the pasted-material test below).
_ROLE_ANYWHERE_RE = re.compile(r"(?:" + _ROLES + r")[ \t]*[:：]")


def strip_code(text: str) -> str:
    """The text with fenced code blocks (an unclosed fence runs to the end) and inline code blanked, lines kept."""
    out, in_fence = [], False
    for line in text.split("\n"):
        if _FENCE_RE.match(line):
            in_fence = not in_fence
            out.append("")
        elif in_fence:
            out.append("")
        else:
            out.append(_INLINE_CODE_RE.sub(" ", line))
    return "\n".join(out)


def _is_field(value: str) -> bool:
    v = value.strip().strip("*_").strip()
    return bool(v) and not _HAN_RE.search(v) and len(v) <= 40 and not any(c.isspace() for c in v)


def _in_key_block(lines: list[str], i: int) -> bool:
    """Is line i next to a `Key: value` line whose key is not a role name (a record, not a transcript)?"""
    for j in (i - 1, i + 1):
        if 0 <= j < len(lines):
            m = _KEY_LINE_RE.match(lines[j])
            if m and m.group("key").strip().strip("*_") not in USER_ROLES + ASSISTANT_ROLES:
                return True
    return False


def _snippet(line: str, width: int = 60) -> str:
    line = line.strip()
    return line if len(line) <= width else line[: width - 1] + "…"


def role_lines(text: str) -> list[tuple[int, str, str]]:
    """(line number, role, line) of every role-name line that is a turn marker (fields and records left out)."""
    lines = text.split("\n")
    found = []
    for i, line in enumerate(lines):
        m = _ROLE_RE.match(line)
        if not m:
            continue
        value, role = m.group("value"), m.group("role")
        if (role in _FIELD_ROLES and _is_field(value)) or _PLACEHOLDER_RE.match(value) or _in_key_block(lines, i):
            continue
        found.append((i + 1, m.group("role"), line))
    return found


def _at_line_edge(text: str, start: int, end: int) -> bool:
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    return not text[line_start:start].strip() or not text[end:len(text) if line_end < 0 else line_end].strip()


def _quotes_markers(request: str) -> bool:
    """The request carries role names after its own opening words: pasted material ("Summarise this chat:\nUser: …",
    "Translate into English: 用户：你好"), so a reply may quote or translate them. A request that *starts* with one
    ("USER: what is 2+2?") is itself a leak and exempts nothing."""
    body = strip_code(request)
    lead = len(body) - len(body.lstrip())
    return any(m.start() > lead for m in _ROLE_ANYWHERE_RE.finditer(body))


def find(text: str | None, prompt: str = "", request: str = "", whole_transcript_only: bool = False) -> str | None:
    """A short description of the first leaked marker in `text`, or None.

    `prompt` is the prompt text before `text` (for the quote and template-question exemptions), `request` the
    last user turn (for the dialogue-request exemption). `whole_transcript_only`: role names count only when
    both a user-side and an assistant-side marker are present (used for user/system turns).
    """
    if not text:
        return None
    body = strip_code(text)
    template_talk = bool(_TEMPLATE_TALK_RE.search(prompt))
    for m in _TEMPLATE_RE.finditer(body):
        if m.group(0) in prompt or template_talk:
            break
        if m.group(0) == "</s>" and "<s>" in body[: m.start()]:
            continue  # HTML strikethrough <s>…</s>, not Llama's end-of-sequence
        if whole_transcript_only and not _at_line_edge(body, m.start(), m.end()):
            continue  # a user asking "what is <start_of_turn>?" mentions the token mid-sentence
        line_no = body.count("\n", 0, m.start()) + 1
        return f"template token {m.group(0)} (line {line_no})"
    alpaca = _ALPACA_RE.search(body)
    if alpaca and not template_talk:
        line_no = body.count("\n", 0, alpaca.start()) + 1
        return f"{_snippet(body.split(chr(10))[line_no - 1])!r} (line {line_no})"
    found = role_lines(body)
    if not found:
        return None
    if whole_transcript_only:
        roles = {r for _, r, _ in found}
        if not (roles & set(USER_ROLES) and roles & set(ASSISTANT_ROLES)):
            return None
        first = next((i for i, line in enumerate(body.split("\n"), start=1) if line.strip()), 0)
        if found[0][0] != first and not body.rstrip().endswith(tuple(f"{r}:" for r in ASSISTANT_ROLES)):
            return None  # "Summarise this chat:\nUser: …" is a pasted log; a turn that *is* a transcript leaked
    elif _DIALOGUE_RE.search(request) or _quotes_markers(request):
        return None
    else:
        found = [f for f in found if f[2].strip() not in prompt]  # a line quoted from the prompt is a quote
        if not found:
            return None
    line_no, _, line = found[0]
    return f"{_snippet(line)!r} (line {line_no})"


def find_in_prompt(turns: list[dict] | None, system: str | None = None) -> str | None:
    """The first leaked marker in the system prompt or a prompt turn, as `turn N (role): …`, or None.

    Assistant turns of the history are judged like replies (with the turns before them as context); user and
    system turns only by template tokens, Alpaca headers and whole transcripts.
    """
    seen: list[str] = []
    request = ""
    items = ([{"role": "system", "content": system}] if system else []) + list(turns or [])
    for n, turn in enumerate(items, start=0 if system else 1):
        role, content = turn.get("role") or "", turn.get("content") or ""
        context = "\n".join(seen)
        if role == "assistant":
            hit = find(content, prompt=context, request=request)
        else:
            hit = find(content, prompt=context, whole_transcript_only=True)
        if hit:
            where = "system prompt" if role == "system" and n == 0 and system else f"turn {n} ({role})"
            return f"{where}: {hit}"
        seen.append(content)
        if role == "user":
            request = content
    return None
