"""Reason codes for rows the ingest step rejects, in one place (each has its own test in tests/test_ingest_reasons.py).

A reason names the check that failed; `detail` on the reject row says where (field, line, message index).
"""

from __future__ import annotations

STAGE = "ingest"

INVALID_UTF8 = "invalid_utf8"  # the line/row holds bytes that are not UTF-8
INVALID_UNICODE = "invalid_unicode"  # valid UTF-8, but a JSON escape makes a lone surrogate (\ud800-\udfff)
NUL_BYTE = "nul_byte"  # a raw NUL byte in the line/record (a damaged or binary region of a text file)
MALFORMED_JSON = "malformed_json"  # the line does not parse as JSON (e.g. a truncated last line)
NESTING_TOO_DEEP = "nesting_too_deep"  # JSON nested deeper than the parsers go (~1,000 levels), in any field
NUMBER_OUT_OF_RANGE = "number_out_of_range"  # a number no float holds (a 401-digit score) or too long to read
MALFORMED_CSV = "malformed_csv"  # a CSV record with more fields than the header, or a broken quote
UNREADABLE_ROW = "unreadable_row"  # converting the row failed in a way no other reason names (detail says how)
NOT_AN_OBJECT = "not_an_object"  # a JSON value that is not an object ({...}), e.g. a bare list or number
MISSING_FIELD = "missing_field"  # a field the detected format needs is absent or null
EMPTY_FIELD = "empty_field"  # a prompt turn or reply is empty or only whitespace
WRONG_TYPE = "wrong_type"  # a structure has the wrong type (messages not a list, a message not an object, ...)
NON_STRING_CONTENT = "non_string_content"  # a text field or message content is not a string (or text parts)
BAD_SCORE = "bad_score"  # a score is present but not a number
UNKNOWN_ROLE = "unknown_role"  # a message role we can't map to system/user/assistant (tool, observation, ...)
ROLES_OUT_OF_ORDER = "roles_out_of_order"  # turns don't alternate user/assistant from a user turn
PROMPT_NOT_ENDING_ON_USER = "prompt_not_ending_on_user"  # the conversation before the replies ends on an assistant turn
# chosen/rejected carry whole conversations that differ before the reply
CONVERSATIONS_DIVERGE = "conversations_diverge"
MALFORMED_TRANSCRIPT = "malformed_transcript"  # an HH-RLHF transcript without "Human:"/"Assistant:" turns
IDENTICAL_RESPONSES = "identical_responses"  # chosen == rejected (after trimming): nothing to learn
# Rated completions (rated.py): a row of N scored responses that yields no pair.
TOO_FEW_RESPONSES = "too_few_responses"  # fewer than two responses with a text and a usable score
TIED_SCORES = "tied_scores"  # every usable response has the same score: no preference to learn
BELOW_MARGIN = "below_margin"  # all-margin:M and no two responses differ by at least M
SCORES_MISMATCH = "scores_mismatch"  # the responses and scores lists differ in length

REASONS: dict[str, str] = {
    INVALID_UTF8: "the row holds bytes that are not valid UTF-8",
    INVALID_UNICODE: "the row holds a lone surrogate escape (not a Unicode character)",
    NUL_BYTE: "the row holds a NUL byte",
    MALFORMED_JSON: "the line does not parse as JSON",
    NESTING_TOO_DEEP: "the row is nested too deeply to read",
    NUMBER_OUT_OF_RANGE: "a number in the row is out of range",
    MALFORMED_CSV: "the CSV record has more fields than the header, or a broken quote",
    UNREADABLE_ROW: "the row could not be converted",
    NOT_AN_OBJECT: "the JSON value is not an object",
    MISSING_FIELD: "a field the format needs is missing or null",
    EMPTY_FIELD: "a prompt turn or reply is empty",
    WRONG_TYPE: "a field has the wrong structure",
    NON_STRING_CONTENT: "a text field is not a string",
    BAD_SCORE: "a score is not a number",
    UNKNOWN_ROLE: "a message role is not system/user/assistant",
    ROLES_OUT_OF_ORDER: "turns do not alternate user/assistant",
    PROMPT_NOT_ENDING_ON_USER: "the prompt ends on an assistant turn",
    CONVERSATIONS_DIVERGE: "chosen and rejected conversations differ before the reply",
    MALFORMED_TRANSCRIPT: "an HH-RLHF transcript lacks Human/Assistant turns",
    IDENTICAL_RESPONSES: "chosen and rejected are the same text",
    TOO_FEW_RESPONSES: "fewer than two responses with a text and a score",
    TIED_SCORES: "all responses have the same score",
    BELOW_MARGIN: "no two responses differ by the binarisation margin",
    SCORES_MISMATCH: "the responses and scores lists differ in length",
}


class RowError(Exception):
    """A per-row problem: the row goes to the rejects with this reason and detail, never up to the user."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
