"""The annotation guidelines, written from the same ResolvePolicy that `curate review pull` applies.

Why generated: the guidelines are the contract with annotators ("both bad drops the pair unless you write a
correction", "unsafe drops it"). Typed by hand they drifted from what pull did (a pair was swapped on one vote
while the text promised two). Push renders them from the policy it records in RUN_DIR/review/push.json; pull
applies that recorded policy by default; every rule sentence below is produced from a policy field, and the tests
check each sentence against what `resolve_pair` does with the same policy.
"""

from __future__ import annotations

from curate.review.apply import ResolvePolicy
from curate.review.settings import BETTER_LABELS, PROBLEM_LABELS


def _who(policy: ResolvePolicy) -> str:
    return "any annotator" if policy.problem_votes == "any" else "a majority of the annotators who submitted"


def rules(policy: ResolvePolicy, min_submitted: int) -> dict[str, str]:
    """One sentence per rule pull applies, keyed by the policy field (or topic) it comes from."""
    votes = policy.votes_needed(min_submitted)
    out = {
        "min_votes": (
            f"Each record is shown to annotators until it has {min_submitted} submitted answer"
            f"{'s' if min_submitted != 1 else ''}; a pair is decided once it has {votes} submitted answer"
            f"{'s' if votes != 1 else ''} (drafts and discarded records don't count), by majority."
        ),
        "tie": (
            "A pair decided as a tie is kept as the source labelled it."
            if policy.tie == "keep"
            else "A pair decided as a tie is dropped."
        ),
        "disagreement": (
            "When annotators split with no majority, the pair is kept as the source labelled it."
            if policy.disagreement == "keep"
            else "When annotators split with no majority, the pair is dropped."
        ),
        "both_bad": (
            "A pair decided as both bad is dropped, unless an annotator who chose Both bad writes a corrected reply:"
            " then that reply becomes the chosen one."
            if policy.corrections
            else "A pair decided as both bad is dropped."
        ),
        "corrections": (
            "A corrected reply replaces the chosen reply. Only corrections from annotators whose answer matches the"
            " decision count (the latest one wins), and a correction must be in the language of the prompt: one"
            " that is not is set aside and the pair is decided without it."
            if policy.corrections
            else "Corrected replies are kept with your answers but not used in this dataset."
        ),
    }
    for label in policy.drop_problems:
        out[f"drop:{label}"] = f"A pair flagged **{PROBLEM_LABELS[label]}** by {_who(policy)} is dropped."
    return out


def render(policy: ResolvePolicy, min_submitted: int) -> str:
    """The full guidelines text (markdown) for a dataset pushed with this policy."""
    r = rules(policy, min_submitted)
    drops = [r[k] for k in r if k.startswith("drop:")]
    better = BETTER_LABELS
    lines = [
        "# Pairwise preference review",
        "",
        "Each record is one prompt (with the conversation before it, when there is one) and two candidate replies,",
        f"**{better['a']}** and **{better['b']}**. Their order is random for every record, so don't read anything",
        "into which one comes first. Judge the replies as the final assistant turn of the conversation. Nothing is",
        "pre-selected: the answer is yours alone.",
        "",
        "## Which response is better? (required)",
        (f"- **{better['a']} / {better['b']}**: that reply is more helpful, correct, safe and natural *in the"
         " language of the prompt*. Prefer the correct reply over the longer one."),
        f"- **{better['tie']}**: both are acceptable and you can't honestly prefer one. {r['tie']}",
        (f"- **{better['both_bad']}**: neither reply should be used to teach a model (wrong, unsafe, off-topic,"
         f" broken). {r['both_bad']}"),
        "",
        "## Problems (optional, pick all that apply, for either reply)",
        "- **Wrong language**: the reply isn't in the language the user wrote in or asked for (e.g. English reply to a",
        "  Chinese question, Simplified vs Traditional Chinese mix-ups).",
        "- **Factual error**: states something false.",
        "- **Unsafe / harmful**: dangerous, hateful or private content.",
        "- **Truncated**: stops mid-sentence or mid-code.",
        "- **Translationese**: grammatical but stilted, word-for-word translated phrasing.",
        "- **Duplicate**: you've seen this same prompt and replies already (the metadata panel shows the pair a",
        "  duplicate was matched to, and how similar it is).",
        *(drops or ["No problem label drops a pair by itself in this dataset."]),
        "",
        "## Rating (optional)",
        "Overall quality of the **better** reply, 1 (poor) to 5 (excellent).",
        "",
        "## Corrected reply (optional)",
        "If the better reply is nearly right — or, with Both bad, if you can write a good reply — write it here with",
        f"your fixes. {r['corrections']}",
        "",
        "## How answers become the dataset",
        f"{r['min_votes']} {r['disagreement']}",
        "",
        "The metadata panel (language, source, lengths, duplicates, score margin) and *Find similar* help you compare",
        "a record with its neighbours.",
    ]
    return "\n".join(lines)  # no final newline: the server strips it, and push compares
