"""Blind A/B mapping and record payloads: deterministic, balanced, reversible, hiding the source's label."""

from __future__ import annotations

from curate.review.settings import (
    FIELD_A,
    FIELD_B,
    FIELD_CONTEXT,
    FIELD_PROMPT,
    META_DUP_CLUSTER,
    META_DUP_OF,
    META_DUP_SIM,
    META_DUP_SIZE,
    META_MARGIN,
    VECTOR,
    a_is_chosen,
    mapping_frame,
    record_payload,
    split_prompt,
    suggestion,
    unblind,
)


def test_mapping_is_deterministic_and_balanced():
    ids = [f"{i:016x}" for i in range(2000)]
    m1, m2 = mapping_frame(ids, seed=7), mapping_frame(ids, seed=7)
    assert m1.equals(m2)
    share = m1["a_is_chosen"].mean()
    assert 0.45 < share < 0.55  # position of the chosen reply is a coin flip
    other = mapping_frame(ids, seed=8)
    assert (m1["a_is_chosen"] != other["a_is_chosen"]).sum() > 800  # the seed changes the draw


def test_unblind_round_trip():
    for a_chosen in (True, False):
        picked_chosen = "a" if a_chosen else "b"
        picked_rejected = "b" if a_chosen else "a"
        assert unblind(picked_chosen, a_chosen) == "chosen"
        assert unblind(picked_rejected, a_chosen) == "rejected"
        assert unblind("tie", a_chosen) == "tie" and unblind("both_bad", a_chosen) == "both_bad"
    assert unblind(None, True) is None


def _row(**kw):
    row = {"row_id": "abc", "source": "s.jsonl", "system": "Be brief.", "prompt": [{"role": "user", "content": "你好"}],
           "chosen": "GOOD", "rejected": "BAD!", "chosen_score": 9.0, "rejected_score": 3.0, "lang": "zh"}
    row.update(kw)
    return row


def test_payload_places_replies_by_mapping_and_shows_system_first():
    p = record_payload(_row(), a_chosen=True)
    assert p["id"] == "abc"
    assert p["fields"][FIELD_A] == "GOOD" and p["fields"][FIELD_B] == "BAD!"
    # every field is text (the UI's "Find similar" shows a chat field's messages as "[object Object]")
    assert all(isinstance(v, str) for v in p["fields"].values())
    assert p["fields"][FIELD_CONTEXT] == "**System:** Be brief." and p["fields"][FIELD_PROMPT] == "你好"
    assert list(p["fields"]) == [FIELD_CONTEXT, FIELD_PROMPT, FIELD_A, FIELD_B]
    assert FIELD_CONTEXT not in record_payload(_row(system=None), a_chosen=True)["fields"]  # optional field
    # a dataset pushed by an older curate keeps its chat field
    old = record_payload(_row(), a_chosen=True, layout="chat")
    assert old["fields"][FIELD_PROMPT][0] == {"role": "system", "content": "Be brief."} and FIELD_CONTEXT not in old["fields"]
    q = record_payload(_row(), a_chosen=False, vector=[0.1, 0.2])
    assert q["fields"][FIELD_A] == "BAD!" and q["fields"][FIELD_B] == "GOOD"
    assert q["vectors"] == {VECTOR: [0.1, 0.2]}
    # metadata never says which reply is the source's chosen one
    assert "chosen" not in " ".join(map(str, q["metadata"])) and q["metadata"][META_MARGIN] == 6.0


def test_suggestion_follows_scores_through_the_mapping():
    assert suggestion(_row(), a_chosen=True)["value"] == "a"
    assert suggestion(_row(), a_chosen=False)["value"] == "b"
    # source scores that disagree with the source label still point at the higher-scored reply
    assert suggestion(_row(chosen_score=1.0, rejected_score=2.0), a_chosen=True)["value"] == "b"
    assert suggestion(_row(chosen_score=2.0, rejected_score=2.0), a_chosen=True)["value"] == "tie"
    assert suggestion(_row(chosen_score=None), a_chosen=True) is None
    assert record_payload(_row(), True, with_suggestion=False)["suggestions"] == []
    # blind by default: nothing suggested (Argilla would pre-select it) unless asked for
    assert record_payload(_row(), True)["suggestions"] == []
    assert record_payload(_row(), True, with_suggestion=True)["suggestions"][0]["value"] == "a"
    s = suggestion(_row(), a_chosen=True)
    assert 0.0 <= s["score"] <= 1.0 and s["score"] == round(6 / 12, 6)


def test_a_is_chosen_depends_on_pair():
    assert len({a_is_chosen(0, f"p{i}") for i in range(20)}) == 2


def test_responses_frame_unblinds_raw_api_records():
    from curate.review.pull import responses_frame

    raw = [
        {"id": "r-1", "external_id": "p1", "responses": [
            {"user_id": "u1", "status": "submitted", "inserted_at": "2026-01-01T00:00:00", "updated_at": "2026-01-01T00:00:05",
             "values": {"better": {"value": "a"}, "problems": {"value": ["unsafe", "truncated"]},
                        "rating": {"value": 3}, "corrected": {"value": "  "}}},
            {"user_id": "u2", "status": "draft", "inserted_at": "t", "updated_at": "t",
             "values": {"better": {"value": "b"}}},
        ]},
        {"id": "r-2", "external_id": "p2", "responses": [
            {"user_id": "u9", "status": "discarded", "inserted_at": "t", "updated_at": "t", "values": None},
        ]},
        {"id": "r-3", "external_id": None, "responses": []},
    ]
    frame = responses_frame(raw, {"u1": "ann1", "u2": "ann2"}, {"p1": False, "p2": True})
    rows = frame.to_dicts()
    assert [(r["row_id"], r["user"], r["status"]) for r in rows] == [
        ("p1", "ann1", "submitted"), ("p1", "ann2", "draft"), ("p2", "u9", "discarded")]
    assert rows[0]["vote"] == "rejected" and rows[1]["vote"] == "chosen"  # A held the rejected reply
    assert rows[0]["problems"] == ["truncated", "unsafe"] and rows[0]["rating"] == 3
    assert rows[0]["corrected"] is None  # blank text is no correction
    assert rows[2]["better"] is None and rows[2]["vote"] is None


def test_multi_turn_prompt_splits_into_context_and_final_turn():
    turns = [{"role": "user", "content": "第一问"}, {"role": "assistant", "content": "第一答"},
             {"role": "user", "content": "What next?"}]
    context, last = split_prompt("Sys.", turns)
    assert last == "What next?"
    assert context == "**System:** Sys.\n\n**User:** 第一问\n\n**Assistant:** 第一答"
    assert split_prompt(None, [{"role": "user", "content": "only"}]) == (None, "only")


def test_duplicate_information_is_metadata():
    p = record_payload(_row(dup_of="k-7", dup_similarity=0.93456, dup_cluster="k-7", dup_cluster_size=3), True)
    md = p["metadata"]
    assert (md[META_DUP_OF], md[META_DUP_SIM], md[META_DUP_CLUSTER], md[META_DUP_SIZE]) == ("k-7", 0.9346, "k-7", 3)
    plain = record_payload(_row(dup_of=None, dup_similarity=float("nan")), True)["metadata"]
    assert META_DUP_OF not in plain and META_DUP_SIM not in plain
