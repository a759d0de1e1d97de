"""The review flow against a live embedded Argilla server: push → two annotators answer through the REST API →
pull → apply; idempotent re-push; an interrupted push resumed; SQLite and PostgreSQL.

The server fixtures (`argilla_server` on SQLite, `argilla_server_pg` on PostgreSQL) come from
tests/e2e/conftest.py; every test uses its own dataset name, so tests share one server.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from curate.errors import ConfigError, ServiceError
from curate.review import guidelines
from curate.review import settings as S
from curate.review.apply import REASON_REJECTED, ResolvePolicy
from curate.review.pull import pull
from curate.review.push import PushOptions, connect, find_dataset, push

pytestmark = pytest.mark.e2e

# What each pair's two annotators answer, in the pair's own terms (unblinded by the test via the mapping).
# (ann1 answer, ann2 answer); an answer is (vote, problems, corrected) or "draft:<vote>" or None.
SCENARIO = {
    "keep": (("chosen", [], None), ("chosen", ["truncated"], None)),
    "swap": (("rejected", [], None), ("rejected", [], None)),
    "both bad": (("both_bad", [], None), ("both_bad", [], None)),
    "unsafe": (("chosen", ["unsafe"], None), ("chosen", [], None)),
    "correct": (("rejected", [], "polished better reply"), ("rejected", [], None)),
    "tie": (("tie", [], None), ("tie", [], None)),
    "split": (("chosen", [], None), ("rejected", [], None)),
    "draft only": ("draft:both_bad", None),
    "untouched": (None, None),
    "both bad, fixed": (("both_bad", [], "这是一个更好的中文回答，写得很清楚。"), ("both_bad", [], None)),
    "how this is done in the kitchen": (("chosen", [], "这是一个用中文写的修改，但问题是英文的。"), ("chosen", [], None)),
}


def _pairs(pairs_factory) -> pl.DataFrame:
    rows = []
    for i, name in enumerate(SCENARIO):
        zh = i % 2 == 1
        rows.append(
            {
                "prompt": f"请解释{name}的意思（第{i}题）" if zh else f"Explain '{name}' (question {i})",
                "system": "你是一个乐于助人的助手。" if zh else ("You are terse." if i % 3 == 0 else None),
                "chosen": f"chosen reply {i}",
                "rejected": f"rejected reply {i}",
                "chosen_score": 9.0 if i % 2 == 0 else None,
                "rejected_score": 2.0 if i % 2 == 0 else None,
                "lang": "zh" if zh else "en",
                "dup_cluster_size": 1 + i % 3,
                "dup_cluster": f"cluster-{i}" if i % 3 else None,
                # what a duplicate row carries (dedup's rejects): the kept pair it points at and how similar
                "dup_of": "kept-pair-0" if i == 3 else None,
                "dup_similarity": 0.91234 if i == 3 else None,
            }
        )
    return pairs_factory(rows)


def _run_dir(tmp_path: Path, pairs: pl.DataFrame, language: bool = False) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    pairs.write_parquet(run / "pairs.parquet")
    if language:  # the run had a language stage: pull checks corrected replies with it
        (run / "pipeline.json").write_text(json.dumps({"pipeline": {"stages": ["clean", "language"]},
                                                       "language": {"mismatch": "reject"}}))
    return run


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _client(info, account):
    import argilla as rg

    return rg.Argilla(api_url=info.api_url, api_key=account.api_key)


def _server_records(conn, dataset) -> list[dict]:
    resp = conn.client.http_client.get(f"/api/v1/datasets/{dataset.id}/records",
                                       params={"limit": 1000, "include": ["responses", "suggestions", "vectors"]})
    resp.raise_for_status()
    return resp.json()["items"]


def _answer(info, run: Path, pairs: pl.DataFrame, conn, dataset) -> None:
    """Two annotators answer through the REST API as the UI would (A/B, after the blind mapping)."""
    mapping = pl.read_parquet(run / "review" / "mapping.parquet")
    a_chosen = dict(zip(mapping["row_id"], mapping["a_is_chosen"]))
    server_id = {r["external_id"]: r["id"] for r in _server_records(conn, dataset)}
    names = list(SCENARIO)
    ann = {a.username: _client(info, a) for a in info.annotators[:2]}
    for i, pid in enumerate(pairs["row_id"]):
        for user, answer in zip(ann, SCENARIO[names[i]]):
            if answer is None:
                continue
            status = "submitted"
            if isinstance(answer, str):
                status, vote = "draft", answer.split(":", 1)[1]
                problems, corrected = [], None
            else:
                vote, problems, corrected = answer
            if vote == "chosen":
                better = "a" if a_chosen[pid] else "b"
            elif vote == "rejected":
                better = "b" if a_chosen[pid] else "a"
            else:
                better = vote
            values = {S.Q_BETTER: {"value": better}}
            if problems:
                values[S.Q_PROBLEMS] = {"value": problems}
            if corrected:
                values[S.Q_CORRECTED] = {"value": corrected}
            values[S.Q_RATING] = {"value": 4}
            resp = ann[user].http_client.post(f"/api/v1/records/{server_id[pid]}/responses",
                                              json={"values": values, "status": status})
            assert resp.status_code == 201, resp.text


def _flow(info, tmp_path, pairs_factory, *, vectors: bool, suggest: bool) -> None:
    pairs = _pairs(pairs_factory)
    run = _run_dir(tmp_path, pairs, language=True)
    name = _name("flow")
    conn = connect(home=info.home)
    seen = []
    result = push(run, conn, PushOptions(dataset=name, min_submitted=2, seed=3, batch_size=4, vectors=vectors,
                                         suggest=suggest),
                  progress=lambda done, total: seen.append((done, total)))
    assert result.created_dataset and result.sent == pairs.height and result.already == 0
    assert seen[0] == (0, 11) and seen[-1] == (11, 11) and len(seen) == 4  # 3 batches of ≤4, plus the start
    dataset = find_dataset(conn, name)

    # the design: context + prompt + two blind responses, four questions, metadata, distribution
    st = dataset.settings
    assert [f.name for f in st.fields] == [S.FIELD_CONTEXT, S.FIELD_PROMPT, S.FIELD_A, S.FIELD_B]
    assert [q.name for q in st.questions] == [S.Q_BETTER, S.Q_PROBLEMS, S.Q_RATING, S.Q_CORRECTED]
    assert {q.name: q.required for q in st.questions} == {S.Q_BETTER: True, S.Q_PROBLEMS: False,
                                                           S.Q_RATING: False, S.Q_CORRECTED: False}
    assert st.distribution.min_submitted == 2 and st.guidelines == guidelines.render(ResolvePolicy(), 2)
    assert {m.name for m in st.metadata} >= {S.META_LANG, S.META_SOURCE, S.META_DUP_SIZE, S.META_MARGIN,
                                             S.META_DUP_OF, S.META_DUP_SIM, S.META_DUP_CLUSTER}
    assert ([v.name for v in st.vectors] == [S.VECTOR]) is vectors

    records = {r["external_id"]: r for r in _server_records(conn, dataset)}
    mapping = pl.read_parquet(run / "review" / "mapping.parquet")
    assert set(records) == set(pairs["row_id"]) == set(mapping["row_id"])
    assert 0 < mapping["a_is_chosen"].sum() < pairs.height  # both orders occur
    for row in pairs.to_dicts():
        rec = records[row["row_id"]]
        a_chosen = mapping.filter(pl.col("row_id") == row["row_id"])["a_is_chosen"].item()
        assert rec["fields"][S.FIELD_A] == (row["chosen"] if a_chosen else row["rejected"])
        assert rec["fields"][S.FIELD_B] == (row["rejected"] if a_chosen else row["chosen"])
        assert rec["fields"][S.FIELD_PROMPT] == row["prompt"][-1]["content"]
        context = rec["fields"].get(S.FIELD_CONTEXT)
        assert (context == f"**System:** {row['system']}") if row["system"] is not None else context is None
        assert rec["metadata"][S.META_LANG] == row["lang"]
        md = rec["metadata"]  # duplicate information, as annotators see it (point 8)
        assert (md[S.META_DUP_SIZE], md.get(S.META_DUP_CLUSTER)) == (row["dup_cluster_size"], row["dup_cluster"])
        assert (md.get(S.META_DUP_OF), md.get(S.META_DUP_SIM)) == (
            (row["dup_of"], 0.9123) if row["dup_of"] else (None, None))
        if row["chosen_score"] is not None and suggest:
            sugg = rec["suggestions"][0]
            assert sugg["value"] == ("a" if a_chosen else "b") and sugg["agent"] == S.SUGGESTION_AGENT
            assert rec["metadata"][S.META_MARGIN] == pytest.approx(7.0)
        else:
            assert rec["suggestions"] == []
        if vectors:
            assert len(rec["vectors"][S.VECTOR]) == 512  # use-multilingual-v3, semantic dedup's default model

    # an annotator sees the records (and nothing that says which reply the source chose)
    ann1 = _client(info, info.annotators[0])
    me_ds = ann1.datasets(name=name, workspace=info.workspace)
    listed = ann1.http_client.post(f"/api/v1/me/datasets/{me_ds.id}/records/search",
                                   params={"include": ["responses"], "limit": 50}, json={})
    assert listed.status_code == 200, listed.text
    payload = json.dumps(listed.json())
    assert listed.json()["total"] == pairs.height
    assert "chosen reply" in payload  # the texts are there …
    assert '"chosen"' not in payload and "a_is_chosen" not in payload  # … but not the label

    _answer(info, run, pairs, conn, dataset)
    res = pull(run, conn, name)
    kept = pl.read_parquet(run / "review" / "pairs.parquet")
    rejects = pl.read_parquet(run / "review" / "rejects.parquet")
    responses = pl.read_parquet(run / "review" / "responses.parquet")
    stats = json.loads((run / "review" / "stats.json").read_text())
    assert kept.height + rejects.height == pairs.height  # conservation
    import jsonschema

    from curate.schema import json_schema

    for decision in pl.read_parquet(run / "review" / "decisions.parquet").to_dicts():  # what schemas/ promises
        jsonschema.validate(decision, json_schema("review_decision"))
    by_row = {r["source_row"]: r for r in kept.to_dicts()}

    def find(label: str) -> dict:
        return by_row[list(SCENARIO).index(label)]

    keep = find("keep")
    assert (keep["chosen"], keep["review_decision"], keep["review_problems"]) == ("chosen reply 0", "chosen", ["truncated"])
    swap = find("swap")
    assert (swap["chosen"], swap["rejected"], swap["review_swapped"]) == ("rejected reply 1", "chosen reply 1", True)
    # ids after the swap: row_id (the record's name) stays; pair_id, the content hash, is that of the new texts
    from curate.schema import with_ids

    before = {r["source_row"]: r for r in pairs.to_dicts()}[swap["source_row"]]
    assert swap["row_id"] == before["row_id"] and swap["prompt_id"] == before["prompt_id"]
    assert swap["pair_id"] != before["pair_id"]
    assert kept["pair_id"].to_list() == with_ids(kept).collect()["pair_id"].to_list()
    assert sorted(kept["row_id"].to_list() + rejects["row_id"].to_list()) == sorted(pairs["row_id"].to_list())
    fixed = find("correct")
    assert fixed["chosen"] == "polished better reply" and fixed["review_replaced"] == "rejected reply 4"
    assert fixed["rejected"] == "chosen reply 4" and fixed["review_corrected"]
    assert find("tie")["review_decision"] == "tie"
    assert find("split")["review_decision"] == "disputed" and find("split")["chosen"] == "chosen reply 6"
    for label in ("draft only", "untouched"):
        row = find(label)
        assert row["review_decision"] is None and row["review_votes"] == 0
    assert sorted(rejects["reason"]) == [REASON_REJECTED, REASON_REJECTED]
    assert set(rejects["stage"]) == {"review"}
    details = " | ".join(rejects["detail"])
    assert "both responses bad (2 of 2 votes)" in details and "flagged unsafe by 1 of 2" in details

    both_fixed = find("both bad, fixed")  # kept: a both-bad voter wrote a corrected reply
    assert both_fixed["review_decision"] == "both_bad" and both_fixed["review_corrected"]
    assert both_fixed["chosen"] == "这是一个更好的中文回答，写得很清楚。" and both_fixed["rejected"] == "rejected reply 9"
    wrong = find("how this is done in the kitchen")  # a Chinese reply to an English prompt: set aside, the vote stands
    assert not wrong["review_corrected"] and wrong["chosen"] == "chosen reply 10"
    assert wrong["review_correction_refused"].startswith("language_mismatch: prompt is en")

    # raw responses: 9 pairs × 2 submitted + 1 draft, with users, statuses, timestamps and raw values
    assert responses.height == 19
    assert sorted(set(responses["user"])) == [info.annotators[0].username, info.annotators[1].username]
    assert responses["status"].value_counts().sort("status").rows() == [("draft", 1), ("submitted", 18)]
    assert responses["inserted_at"].null_count() == 0 and responses["updated_at"].null_count() == 0
    assert json.loads(responses["values"][0])[S.Q_BETTER]["value"] in S.BETTER_LABELS

    assert stats["dataset"] == name and stats["api_url"] == info.api_url
    assert (stats["pairs_in"], stats["kept"], stats["rejected"], stats["reviewed"]) == (11, 9, 2, 9)
    assert stats["responses"] == {"draft": 1, "submitted": 18}
    assert stats["policy"]["min_votes"] == 2 and stats["policy_differs_from_guidelines"] == []
    assert (stats["corrected"], stats["corrections_refused"]) == (2, 1)
    better = stats["agreement"]["better"]
    assert better["items"] == 9 and better["percent"] == pytest.approx(8 / 9)
    assert better["alpha"] is not None and 0.5 < better["alpha"] < 1
    assert stats["agreement"]["problems"]["unsafe"]["percent"] == pytest.approx(8 / 9)
    users = {u["user"]: u for u in stats["annotators"]}
    assert users[info.annotators[0].username]["submitted"] == 9 and users[info.annotators[0].username]["draft"] == 1
    assert res.responses == 19

    # a stricter policy drops the tie and the disputed pair too; the raw answers don't change
    stats = pull(run, conn, name, overrides={"tie": "drop", "disagreement": "drop"}).stats
    rejects = pl.read_parquet(run / "review" / "rejects.parquet")
    assert rejects.height == 4 and pl.read_parquet(run / "review" / "pairs.parquet").height == 7
    assert stats["policy_differs_from_guidelines"] == ["disagreement", "tie"]


def test_flow_sqlite(argilla_server, tmp_path, pairs_factory):
    _flow(argilla_server, tmp_path, pairs_factory, vectors=True, suggest=True)


def test_flow_postgresql(argilla_server_pg, tmp_path, pairs_factory):
    _flow(argilla_server_pg, tmp_path, pairs_factory, vectors=False, suggest=False)


def test_pull_applies_the_policy_push_wrote_into_the_guidelines(any_server, tmp_path, pairs_factory):
    """One source of truth: push records its policy and writes the guidelines from it; pull applies it, with
    min-votes = the dataset's min_submitted, unless told otherwise (and then says so)."""
    pairs = pairs_factory([{"prompt": f"Question {i}?", "chosen": f"good {i}", "rejected": f"bad {i}"}
                           for i in range(3)])
    run = _run_dir(tmp_path, pairs)
    name = _name("policy")
    conn = connect(home=any_server.home)
    policy = ResolvePolicy(tie="drop")
    push(run, conn, PushOptions(dataset=name, min_submitted=2, vectors=False, policy=policy))
    dataset = find_dataset(conn, name)
    assert dataset.settings.guidelines == guidelines.render(policy, 2)
    assert "A pair decided as a tie is dropped." in dataset.settings.guidelines
    mapping = pl.read_parquet(run / "review" / "mapping.parquet")
    a_chosen = dict(zip(mapping["row_id"], mapping["a_is_chosen"]))
    server_id = {r["external_id"]: r["id"] for r in _server_records(conn, dataset)}
    ann1, ann2 = (_client(any_server, a) for a in any_server.annotators[:2])
    ids = pairs["row_id"].to_list()

    def answer(client, pid, better, status="submitted"):
        r = client.http_client.post(f"/api/v1/records/{server_id[pid]}/responses",
                                    json={"values": {S.Q_BETTER: {"value": better}}, "status": status})
        assert r.status_code == 201, r.text

    for c in (ann1, ann2):
        answer(c, ids[0], "tie")
    # pair 1: one annotator prefers the rejected reply, the other has only a draft: not decided (min_submitted 2)
    answer(ann1, ids[1], "b" if a_chosen[ids[1]] else "a")
    answer(ann2, ids[1], "b" if a_chosen[ids[1]] else "a", status="draft")
    stats = pull(run, conn, name).stats
    kept = pl.read_parquet(run / "review" / "pairs.parquet")
    assert ids[0] not in kept["row_id"].to_list()  # the tie was dropped, as the guidelines said
    one_vote = kept.filter(pl.col("row_id") == ids[1]).to_dicts()[0]
    assert one_vote["review_decision"] is None and one_vote["chosen"] == "good 1"  # not swapped on one vote
    assert stats["policy"]["tie"] == "drop" and stats["policy"]["min_votes"] == 2
    assert stats["policy_differs_from_guidelines"] == []
    # an explicit option wins, and the difference is recorded
    stats = pull(run, conn, name, overrides={"tie": "keep", "min_votes": 1}).stats
    kept = pl.read_parquet(run / "review" / "pairs.parquet")
    assert ids[0] in kept["row_id"].to_list()
    assert kept.filter(pl.col("row_id") == ids[1])["review_swapped"].item()
    assert stats["policy_differs_from_guidelines"] == ["min_votes", "tie"]


def test_repush_is_idempotent_and_adds_only_new_pairs(argilla_server, tmp_path, pairs_factory):
    pairs = _pairs(pairs_factory)
    run = _run_dir(tmp_path, pairs.head(5))
    name = _name("repush")
    conn = connect(home=argilla_server.home)
    opts = PushOptions(dataset=name, vectors=False)
    assert push(run, conn, opts).sent == 5
    again = push(run, conn, opts)
    assert (again.sent, again.already, again.created_dataset) == (0, 5, False)
    pairs.write_parquet(run / "pairs.parquet")  # the run grew: 4 new pairs
    more = push(run, conn, opts)
    assert (more.sent, more.already) == (6, 5)
    ids = [r["external_id"] for r in _server_records(conn, find_dataset(conn, name))]
    assert sorted(ids) == sorted(pairs["row_id"]) and len(ids) == len(set(ids))
    # changing the blind order of records already shown is refused
    with pytest.raises(ConfigError, match="--seed 0"):
        push(run, conn, PushOptions(dataset=name, seed=1, vectors=False))
    # another dataset from the same run may use another seed; each keeps its own mapping
    other = _name("repush-other")
    assert push(run, conn, PushOptions(dataset=other, seed=1, vectors=False)).sent == pairs.height
    mapping = pl.read_parquet(run / "review" / "mapping.parquet")
    assert mapping.group_by("dataset").agg(pl.col("seed").first()).sort("dataset").rows() == sorted(
        [(name, 0), (other, 1)])
    assert json.loads((run / "review" / "push.json").read_text())["dataset"] == other
    assert pull(run, conn, name).stats["blind_seed"] == 0


class Interrupted(RuntimeError):
    pass


def test_interrupted_push_resumes(argilla_server, tmp_path, pairs_factory):
    pairs = _pairs(pairs_factory)
    run = _run_dir(tmp_path, pairs)
    name = _name("resume")
    conn = connect(home=argilla_server.home)
    opts = PushOptions(dataset=name, batch_size=2, vectors=False)

    def die_after_two_batches(done: int, total: int) -> None:
        if done >= 4:
            raise Interrupted("simulated Ctrl-C after 2 batches")

    with pytest.raises(Interrupted):
        push(run, conn, opts, progress=die_after_two_batches)
    dataset = find_dataset(conn, name)
    on_server = len(_server_records(conn, dataset))
    assert 4 <= on_server <= 6 and on_server % 2 == 0  # whole batches only (a second one may have been in flight)
    resumed = push(run, conn, opts)
    assert (resumed.already, resumed.sent) == (on_server, pairs.height - on_server)
    ids = [r["external_id"] for r in _server_records(conn, dataset)]
    assert sorted(ids) == sorted(pairs["row_id"])


def test_cli_push_remote_status_and_pull(argilla_server, tmp_path, pairs_factory):
    """The CLI against the server as a *remote* one (--api-url/--api-key), then status and pull via the home."""
    from curate.cli import main

    pairs = _pairs(pairs_factory)
    run = _run_dir(tmp_path, pairs)
    name = _name("cli")
    runner = CliRunner()
    owner = argilla_server.owner
    r = runner.invoke(main, ["review", "push", str(run), "--dataset", name, "--api-url", argilla_server.api_url,
                             "--api-key", owner.api_key, "--workspace", argilla_server.workspace, "--no-vectors",
                             "--min-submitted", "2"])
    assert r.exit_code == 0, r.output
    assert f"created dataset {name!r}" in r.output and "11 records sent" in r.output
    r = runner.invoke(main, ["review", "push", str(run), "--dataset", name, "--home", str(argilla_server.home),
                             "--no-vectors", "--min-submitted", "2"])
    assert r.exit_code == 0 and "0 records sent, 11 already there" in r.output
    conn = connect(home=argilla_server.home)
    _answer(argilla_server, run, pairs, conn, find_dataset(conn, name))
    r = runner.invoke(main, ["review", "status", str(run), "--home", str(argilla_server.home)])
    assert r.exit_code == 0, r.output
    assert argilla_server.annotators[0].username in r.output and "9 of 11 records completed" in r.output
    r = runner.invoke(main, ["review", "pull", str(run), "--home", str(argilla_server.home), "--only-reviewed",
                             "--tie", "drop"])
    assert r.exit_code == 0, r.output
    assert "11 pairs: 6 kept, 5 rejected" in r.output and "agreement on 'better'" in r.output
    assert "differs from the guidelines annotators saw in: only_reviewed, tie" in r.output
    reasons = pl.read_parquet(run / "review" / "rejects.parquet")["reason"].to_list()
    assert sorted(reasons) == ["review_pending", "review_pending", "review_rejected", "review_rejected",
                               "review_rejected"]


def test_unreachable_server_is_one_line_error(tmp_path):
    with pytest.raises(ServiceError, match="can't reach Argilla at http://127.0.0.1:9"):
        connect(api_url="http://127.0.0.1:9", api_key="nope")
    with pytest.raises(ConfigError, match="needs --api-key"):
        connect(api_url="http://127.0.0.1:9", api_key=None)


def test_wrong_key_is_one_line_error(argilla_server):
    with pytest.raises(ServiceError, match="can't reach Argilla"):
        connect(api_url=argilla_server.api_url, api_key="not-a-key")


def test_cli_serve_prints_new_credentials_once_and_stop(tmp_path):
    """`curate review serve --detach` / `stop`: passwords are printed when accounts are made, never again."""
    import socket

    from curate.cli import main
    from curate.review import server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tmp_path / "home"
    runner = CliRunner()
    try:
        r = runner.invoke(main, ["review", "serve", "--home", str(home), "--port", str(port), "--annotators", "rev1",
                                 "--detach"])
        assert r.exit_code == 0, r.output
        info = server.read_credentials(home)
        assert f"http://127.0.0.1:{port}" in r.output and info.owner.password in r.output
        assert info.annotators[0].password in r.output
        assert oct((home / "credentials.json").stat().st_mode & 0o777) == "0o600"
        r = runner.invoke(main, ["review", "stop", "--home", str(home)])
        assert r.exit_code == 0 and "stopped" in r.output
        r = runner.invoke(main, ["review", "serve", "--home", str(home), "--port", str(port), "--detach"])
        assert r.exit_code == 0, r.output
        assert info.owner.password not in r.output and "owner, rev1" in r.output
    finally:
        runner.invoke(main, ["review", "stop", "--home", str(home)])
    assert not server.running(home)


def test_identical_pairs_from_two_files_are_two_records(any_server, tmp_path, pairs_factory):
    """Two files holding the same pair share a pair_id (a content hash) but not a row_id: each is its own record,
    and each record's answer lands on its own row."""
    same = {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"}
    pairs = pairs_factory([{**same, "source": "a.jsonl"}, {**same, "source": "b.jsonl"}])
    assert pairs["pair_id"].n_unique() == 1 and pairs["row_id"].n_unique() == 2
    # and an upsampling copy of the first (curate.stages.balance): reviewed through its original, not again
    copy = pairs.head(1).with_columns(pl.lit("copy-of-a").alias("row_id"))
    pairs = pl.concat([pairs.with_columns(pl.lit(None, dtype=pl.String).alias("balance_copy_of")),
                       copy.with_columns(pl.lit(pairs["row_id"][0]).alias("balance_copy_of"))])
    run = _run_dir(tmp_path, pairs)
    name = _name("twins")
    conn = connect(home=any_server.home)
    result = push(run, conn, PushOptions(dataset=name, vectors=False))
    assert (result.sent, result.copies) == (2, 1)
    dataset = find_dataset(conn, name)
    records = {r["external_id"]: r for r in _server_records(conn, dataset)}
    assert set(records) == set(pairs["row_id"][:2])
    mapping = dict(zip(*pl.read_parquet(run / "review" / "mapping.parquet").select("row_id", "a_is_chosen")))
    ann = _client(any_server, any_server.annotators[0])
    a_row, b_row = pairs["row_id"].to_list()[:2]
    for rid, vote in ((a_row, "chosen"), (b_row, "rejected")):
        better = ("a" if mapping[rid] else "b") if vote == "chosen" else ("b" if mapping[rid] else "a")
        r = ann.http_client.post(f"/api/v1/records/{records[rid]['id']}/responses",
                                 json={"values": {S.Q_BETTER: {"value": better}}, "status": "submitted"})
        assert r.status_code == 201, r.text
    pull(run, conn, name, overrides={"min_votes": 1})
    kept = {r["row_id"]: r for r in pl.read_parquet(run / "review" / "pairs.parquet").to_dicts()}
    assert (kept[a_row]["chosen"], kept[a_row]["review_swapped"]) == ("4", False)
    assert (kept[b_row]["chosen"], kept[b_row]["review_swapped"]) == ("5", True)
    assert (kept["copy-of-a"]["chosen"], kept["copy-of-a"]["review_decision"]) == ("4", "chosen")


def test_a_dataset_pushed_before_row_id_is_still_pulled(argilla_server, tmp_path, pairs_factory):
    """A run folder and dataset from before row_id (records named by pair_id, mapping keyed by pair_id): pull
    reads it; pushing more to it is refused (its ids would not match)."""
    pairs = pairs_factory([{"prompt": f"Old question {i}?", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(2)])
    old = pairs.drop("row_id")
    run = _run_dir(tmp_path, old)
    name = _name("legacy")
    conn = connect(home=argilla_server.home)
    push(run, conn, PushOptions(dataset=name, vectors=False))  # the run's pair_ids name its rows
    meta = json.loads((run / "review" / "push.json").read_text())
    del meta["datasets"][name]["key"]  # exactly what an older curate wrote
    (run / "review" / "push.json").write_text(json.dumps(meta))
    pl.read_parquet(run / "review" / "mapping.parquet").rename({"row_id": "pair_id"}).write_parquet(
        run / "review" / "mapping.parquet")
    dataset = find_dataset(conn, name)
    rec = {r["external_id"]: r for r in _server_records(conn, dataset)}
    assert set(rec) == set(old["pair_id"])
    mapping = dict(zip(*pl.read_parquet(run / "review" / "mapping.parquet").select("pair_id", "a_is_chosen")))
    pid = old["pair_id"][0]
    ann = _client(argilla_server, argilla_server.annotators[0])
    r = ann.http_client.post(f"/api/v1/records/{rec[pid]['id']}/responses",
                             json={"values": {S.Q_BETTER: {"value": "b" if mapping[pid] else "a"}}, "status": "submitted"})
    assert r.status_code == 201, r.text
    pull(run, conn, name)
    kept = pl.read_parquet(run / "review" / "pairs.parquet")
    # the run's rows are named by their old pair_ids (read_pairs makes them the row_id); the swap recomputed pair_id
    swapped = kept.filter(pl.col("row_id") == pid)
    assert swapped["review_swapped"].item() and swapped["pair_id"].item() != pid
    with pytest.raises(ConfigError, match="pushed by an older curate"):
        push(run, conn, PushOptions(dataset=name, vectors=False))
