"""One test per ingest reason code: a file with a good row and the bad row; the bad row is rejected with the
reason, the good one kept, and the detail says what was wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate.ingest import REASONS, ingest
from curate.ingest import reasons as R
from tests.test_ingest import GOOD, read_out

M = lambda role, content: {"role": role, "content": content}  # noqa: E731
TRL_GOOD = {"prompt": [M("user", "hi")], "chosen": [M("assistant", "hello")], "rejected": [M("assistant", "go")]}
UF_GOOD = {"chosen": [M("user", "hi"), M("assistant", "hello")], "rejected": [M("user", "hi"), M("assistant", "go")]}
HH_GOOD = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go"}
RATED_GOOD = {"prompt": "hi", "responses": ["hello", "go"], "scores": [5, 1]}
SG_GOOD = {"conversations": [{"from": "human", "value": "hi"}], "chosen": {"from": "gpt", "value": "hello"},
           "rejected": {"from": "gpt", "value": "go"}}


def line(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


# reason → (file name, good row, bad row as raw bytes, a fragment the detail must contain)
CASES: dict[str, tuple[str, dict, bytes, str]] = {
    R.INVALID_UTF8: ("a.jsonl", GOOD, b'{"prompt": "caf\xe9", "chosen": "x", "rejected": "y"}\n', "not valid UTF-8"),
    R.MALFORMED_JSON: ("a.jsonl", GOOD, b'{"prompt": "a", "chosen": \n', "line 2"),
    R.MALFORMED_CSV: ("a.csv", {}, b"", "4 fields, header has 3"),  # file written in the test
    R.NOT_AN_OBJECT: ("a.jsonl", GOOD, b'["a", "b", "c"]\n', "not an object"),
    R.MISSING_FIELD: ("a.jsonl", GOOD, line({"prompt": "a", "chosen": "b"}), "rejected is missing"),
    R.EMPTY_FIELD: ("a.jsonl", GOOD, line({"prompt": "a", "chosen": "  ", "rejected": "c"}), "chosen is empty"),
    R.WRONG_TYPE: ("a.jsonl", TRL_GOOD, line({**TRL_GOOD, "prompt": "just a string"}), "not a list of messages"),
    R.NON_STRING_CONTENT: ("a.jsonl", GOOD, line({"prompt": "a", "chosen": 42, "rejected": "c"}), "int, not a string"),
    R.BAD_SCORE: ("a.jsonl", {**GOOD, "score_chosen": 1, "score_rejected": 0},
                  line({**GOOD, "score_chosen": "high", "score_rejected": 0}), "not a number"),
    R.UNKNOWN_ROLE: ("a.jsonl", TRL_GOOD, line({**TRL_GOOD, "prompt": [M("tool", "42"), M("user", "hi")]}), "'tool'"),
    R.ROLES_OUT_OF_ORDER: ("a.jsonl", TRL_GOOD, line({**TRL_GOOD, "prompt": [M("user", "a"), M("user", "b")]}),
                           "turn 1 is user, expected assistant"),
    R.PROMPT_NOT_ENDING_ON_USER: ("a.json", SG_GOOD, line(
        {**SG_GOOD, "conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}), "ends on an assistant"),
    R.CONVERSATIONS_DIVERGE: ("a.jsonl", UF_GOOD, line({**UF_GOOD, "rejected": [M("user", "other"), M("assistant", "go")]}),
                              "differ before the final reply"),
    R.MALFORMED_TRANSCRIPT: ("a.jsonl", HH_GOOD, line({"chosen": "Human: hi there, Assistant: hello",
                                                      "rejected": "Human: hi there, Assistant: go"}), "no '\\n\\nAssistant:'"),
    R.IDENTICAL_RESPONSES: ("a.jsonl", GOOD, line({"prompt": "a", "chosen": "same ", "rejected": " same"}), "same text"),
    R.TOO_FEW_RESPONSES: ("a.jsonl", RATED_GOOD, line({**RATED_GOOD, "scores": [2, None]}),
                          "1 usable response(s) of 2 (left out 1: no score)"),
    R.TIED_SCORES: ("a.jsonl", RATED_GOOD, line({**RATED_GOOD, "scores": [3, 3.0]}), "score 3: no preference"),
    R.BELOW_MARGIN: ("a.jsonl", RATED_GOOD, line({**RATED_GOOD, "scores": [2, 1.5]}), "less than the margin 2"),
    R.SCORES_MISMATCH: ("a.jsonl", RATED_GOOD, line({**RATED_GOOD, "scores": [2]}), "2 responses but scores 1 scores"),
    R.INVALID_UNICODE: ("a.json", GOOD, b'{"prompt": "\\ud800", "chosen": "x", "rejected": "y"}', "lone surrogate"),
    R.NUL_BYTE: ("a.jsonl", GOOD, b'{"prompt": "a\x00b", "chosen": "x", "rejected": "y"}\n', "NUL byte"),
    R.NESTING_TOO_DEEP: ("a.jsonl", GOOD, b'{"prompt": "a", "chosen": "x", "rejected": "y", "unused": '
                         + b"[" * 1100 + b"]" * 1100 + b"}\n", "nested too deeply"),
    R.NUMBER_OUT_OF_RANGE: ("a.jsonl", {**GOOD, "chosen_score": 1}, line({**GOOD, "chosen_score": 10**400}),
                            "too large for a 64-bit float"),
    R.UNREADABLE_ROW: ("a.jsonl", TRL_GOOD, line({**TRL_GOOD, "prompt": [M("user", "boom")]}), "KeyError: 'boom'"),
}
BINARIZE = {R.BELOW_MARGIN: "all-margin:2"}  # the default best-worst never needs a margin


def test_every_reason_has_a_case() -> None:
    assert set(CASES) == set(REASONS)
    codes = {v for k, v in vars(R).items() if k.isupper() and k != "STAGE" and isinstance(v, str)}
    assert codes == set(REASONS)


@pytest.mark.parametrize("reason", sorted(CASES))
def test_reason(tmp_path: Path, reason: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name, good, bad, fragment = CASES[reason]
    if reason == R.UNREADABLE_ROW:  # failure injection: a converter failing in a way no reason names
        import sys

        from curate.ingest import conversational

        def broken(row, f, system):
            if row["prompt"][0]["content"] == "boom":
                raise KeyError("boom")
            return conversational.convert_explicit(row, f, system)

        monkeypatch.setitem(sys.modules["curate.ingest.detect"].CONVERTERS, conversational.FAMILY, broken)
    path = tmp_path / name
    if name.endswith(".csv"):
        path.write_text("prompt,chosen,rejected\nq,a,b\nq2,a2,b2,extra\n", encoding="utf-8")
    elif name.endswith(".json"):  # JSON array: exercise the array reader too
        path.write_text("[" + json.dumps(good) + "," + bad.decode() + "]", encoding="utf-8")
    else:
        path.write_bytes(line(good) + bad)
    report = ingest([path], tmp_path / "out", binarize=BINARIZE.get(reason, "best-worst"))
    pairs, rejects, _ = read_out(tmp_path / "out")
    assert report["rejects_by_reason"] == {reason: 1}
    assert pairs.height == 1 and pairs["source_row"].to_list() == [0]
    rej = rejects.row(0, named=True)
    assert (rej["reason"], rej["stage"], rej["source"], rej["source_row"]) == (reason, "ingest", str(path), 1)
    assert fragment in rej["detail"], rej["detail"]
    assert rej["meta"]  # the raw row is kept for the user to see
