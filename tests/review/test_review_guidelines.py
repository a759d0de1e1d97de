"""The guidelines are written from the policy pull applies: each rule sentence is checked against what
resolve_pair does under the same policy, for the defaults and for every non-default choice."""

from __future__ import annotations

import pytest

from curate.review.apply import ResolvePolicy, resolve_pair
from curate.review.guidelines import render, rules


def ans(user, vote, problems=(), corrected=None):
    return {"user": user, "vote": vote, "problems": list(problems), "rating": None, "corrected": corrected,
            "updated_at": "t"}


POLICIES = [
    ResolvePolicy(),
    ResolvePolicy(tie="drop", disagreement="drop"),
    ResolvePolicy(corrections=False),
    ResolvePolicy(drop_problems=("unsafe", "factual_error"), problem_votes="majority"),
    ResolvePolicy(drop_problems=()),
    ResolvePolicy(min_votes=1),
]


def _dropped(policy, answers, min_submitted):
    return resolve_pair(answers, policy.resolved(min_submitted))["__drop"] is not None


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: repr(p)[13:60])
@pytest.mark.parametrize("min_submitted", [1, 2])
def test_every_rule_sentence_matches_what_pull_does(policy, min_submitted):
    r = rules(policy, min_submitted)
    text = render(policy, min_submitted)
    assert all(sentence in text for sentence in r.values())

    # votes needed
    votes = policy.votes_needed(min_submitted)
    assert f"decided once it has {votes} submitted answer" in r["min_votes"]
    one = resolve_pair([ans("a", "rejected")], policy.resolved(min_submitted))
    assert (one["review_decision"] is not None) is (votes == 1)

    n = max(votes, 2)
    users = [f"u{i}" for i in range(n)]
    # ties
    tie_dropped = _dropped(policy, [ans(u, "tie") for u in users], min_submitted)
    assert tie_dropped is ("is dropped" in r["tie"])
    # no majority
    split = [ans(users[0], "chosen"), ans(users[1], "rejected")]
    assert _dropped(policy, split, min_submitted) is ("is dropped" in r["disagreement"]) or votes > 2
    # both bad, with and without a correction from a both-bad voter
    assert _dropped(policy, [ans(u, "both_bad") for u in users], min_submitted)
    rescued = not _dropped(policy, [ans(users[0], "both_bad", corrected="good"), *[ans(u, "both_bad") for u in users[1:]]],
                           min_submitted)
    assert rescued is ("unless" in r["both_bad"]) is policy.corrections
    # corrections used at all
    fixed = resolve_pair([ans(u, "chosen", corrected="better") for u in users], policy.resolved(min_submitted))
    assert fixed["review_corrected"] is ("replaces the chosen reply" in r["corrections"])
    # problems that drop a pair, and how many flags it takes
    for label in ("unsafe", "factual_error", "truncated"):
        flagged_by_one = [ans(users[0], "chosen", [label]), *[ans(u, "chosen") for u in users[1:]]]
        flagged_by_all = [ans(u, "chosen", [label]) for u in users]
        key = f"drop:{label}"
        assert _dropped(policy, flagged_by_all, min_submitted) is (key in r)
        if key in r:
            assert _dropped(policy, flagged_by_one, min_submitted) is ("any annotator" in r[key])


def test_defaults_say_what_the_issue_asked_for():
    text = render(ResolvePolicy(), 2)
    assert "a pair is decided once it has 2 submitted answers" in text
    assert "unless an annotator who chose Both bad writes a corrected reply" in text
    assert "A pair flagged **Unsafe / harmful** by any annotator is dropped." in text
    assert "Nothing is\npre-selected" in text or "Nothing is pre-selected" in text.replace("\n", " ")
    assert "No problem label drops a pair" in render(ResolvePolicy(drop_problems=()), 1)
