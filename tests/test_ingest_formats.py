"""Messages-style pairs, rated completions → pairs (binarisation), and --map suggestions that work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest

from curate.errors import ConfigError, InputError
from curate.ingest import ingest, parse_binarize
from curate.io import canonical_name
from tests.test_ingest import FIXTURES, read_out, shared_data, turns, write_jsonl

M = lambda role, content: {"role": role, "content": content}


def meta(row: dict) -> dict:
    return json.loads(row["meta"])


# --- messages-style -----------------------------------------------------------------------------------------------

def test_messages_pairs_shared_turns_system_and_typed_parts(tmp_path: Path) -> None:
    ingest([FIXTURES / "messages_pairs.jsonl"], tmp_path)
    pairs, rejects, report = read_out(tmp_path)
    assert rejects.height == 0 and report["sources"][canonical_name(FIXTURES / "messages_pairs.jsonl")]["fields"] == {
        "chosen": "chosen_messages", "rejected": "rejected_messages"}
    first, second = pairs.iter_rows(named=True)
    assert first["system"] == "You are a concise cooking assistant."  # a typed-parts system turn
    assert turns(first["prompt"]) == [("user", "How long should I boil an egg for a runny yolk?")]
    assert first["rejected"] == "20 minutes." and meta(first) == {"id": "mp-1"}
    # multi-turn: the prompt is every shared turn, ending on the last user turn
    assert [r for r, _ in turns(second["prompt"])] == ["user", "assistant", "user"]
    assert second["chosen"] == "烦请您在方便时将相关文件发送给我，不胜感激。" and second["rejected"] == "快点发文件。"


def test_messages_pairs_that_diverge_are_row_rejects_not_a_file_error(tmp_path: Path) -> None:
    shared = [M("user", "Name a prime number.")]
    rows = [
        {"chosen_messages": [*shared, M("assistant", "7")], "rejected_messages": [*shared, M("assistant", "8")]},
        # the rejected conversation took another turn earlier
        {"chosen_messages": [M("user", "Hi"), M("assistant", "Hello!"), M("user", "2+2?"), M("assistant", "4")],
         "rejected_messages": [M("user", "Hi"), M("assistant", "Go away."), M("user", "2+2?"), M("assistant", "5")]},
        # chosen carries two assistant turns after the shared prefix
        {"chosen_messages": [*shared, M("assistant", "7"), M("user", "another"), M("assistant", "11")],
         "rejected_messages": [*shared, M("assistant", "8")]},
    ]
    path = write_jsonl(tmp_path / "conv.jsonl", rows)
    report = ingest([path], tmp_path / "out")
    pairs, rejects, _ = read_out(tmp_path / "out")
    assert report["sources"][str(path)]["format"] == "messages_pairs"
    assert pairs.height == 1 and report["rejects_by_reason"] == {"conversations_diverge": 2}
    assert rejects.sort("source_row")["source_row"].to_list() == [1, 2]
    assert "differ before the final reply" in rejects["detail"][0]


def test_messages_prompt_with_single_turn_replies(tmp_path: Path) -> None:
    ingest([FIXTURES / "messages.jsonl"], tmp_path)
    pairs, rejects, _ = read_out(tmp_path)
    assert rejects.height == 0
    first, second = pairs.iter_rows(named=True)
    assert first["system"] == "你是一名耐心的数学老师。" and first["rejected"] == "这是规定，记住就行。"
    # `messages` stored the chosen conversation whole: its last turn is the reply, not part of the prompt
    assert turns(second["prompt"]) == [("user", "Suggest a name for a grey kitten.")]
    assert second["chosen"].startswith('How about "Pebble"')


def test_messages_column_next_to_whole_conversations_is_still_ultrafeedback(tmp_path: Path) -> None:
    """UltraFeedback-binarized carries `messages` (= the chosen conversation) beside full chosen/rejected lists;
    single-turn chosen/rejected lists next to `messages` are the messages family instead."""
    uf = {"messages": [M("user", "hi"), M("assistant", "hello")], "chosen": [M("user", "hi"), M("assistant", "hello")],
          "rejected": [M("user", "hi"), M("assistant", "go")], "score_chosen": 8.0, "score_rejected": 3.0}
    single = {"messages": [M("system", "Be brief."), M("user", "hi")], "chosen": [M("assistant", "hello")],
              "rejected": [M("assistant", "go")]}
    a, b = write_jsonl(tmp_path / "a_uf.jsonl", [uf]), write_jsonl(tmp_path / "b_single.jsonl", [single])
    report = ingest([a, b], tmp_path / "out")
    pairs, rejects, _ = read_out(tmp_path / "out")
    assert [s["format"] for s in report["sources"].values()] == ["ultrafeedback", "messages"]
    assert rejects.height == 0 and pairs["chosen_score"].to_list() == [8.0, None]
    assert pairs["system"].to_list() == [None, "Be brief."]
    assert pairs["prompt"].to_list()[1] == [M("user", "hi")]


def test_llamafactory_openai_style_reads_like_its_sharegpt_twin(tmp_path: Path) -> None:
    """The shared LLaMA-Factory demo rewritten with OpenAI-style tags (`messages`, role/content, as LLaMA-Factory's
    dataset_info allows) gives the same pairs as the original sharegpt files."""
    data = shared_data()
    role = {"human": "user", "gpt": "assistant", "system": "system"}
    for f in sorted(data.glob("*.json")):
        rows = json.loads(f.read_text(encoding="utf-8"))
        write_jsonl(tmp_path / f"{f.stem}.jsonl", [
            {"messages": [M(role[m["from"]], m["value"]) for m in r["conversations"]],
             "chosen": M("assistant", r["chosen"]["value"]), "rejected": M("assistant", r["rejected"]["value"])}
            for r in rows])
    ours = ingest([tmp_path / f"{f.stem}.jsonl" for f in sorted(data.glob("*.json"))], tmp_path / "a")
    theirs = ingest(sorted(data.glob("*.json")), tmp_path / "b")
    assert {s["format"] for s in ours["sources"].values()} == {"messages"}
    assert ours["kept_rows"] == theirs["kept_rows"] == 600 and ours["rejected_rows"] == 0
    cols = ["pair_id", "prompt_id", "system", "chosen", "rejected"]
    assert read_out(tmp_path / "a")[0].select(cols).equals(read_out(tmp_path / "b")[0].select(cols))


# --- rated completions -------------------------------------------------------------------------------------------

UF = FIXTURES / "ultrafeedback_raw.jsonl"


def test_raw_ultrafeedback_best_worst(tmp_path: Path) -> None:
    report = ingest([UF], tmp_path)
    pairs, rejects, _ = read_out(tmp_path)
    src = report["sources"][canonical_name(UF)]
    assert src["fields"] == {"prompt": "instruction", "responses": "completions", "text": "response",
                             "score": "fine-grained_score"}
    assert (report["input_rows"], report["kept_rows"], report["extra_pairs"], rejects.height) == (2, 2, 0, 0)
    row = pairs.row(0, named=True)
    assert (row["chosen_score"], row["rejected_score"]) == (4.75, 1.25)
    assert row["rejected"] == "Blue is the colour of air."
    m = meta(row)
    assert m["source"] == "evol_instruct" and "completions" not in m and "instruction" not in m
    b = m["binarize"]
    assert (b["strategy"], b["score"], b["chosen"], b["rejected"], b["pair"], b["pairs_from_row"]) == \
        ("best-worst", "fine-grained_score", 1, 3, 0, 1)
    assert b["scores"] == [1.75, 4.75, 3.5, 1.25]
    assert b["chosen_response"]["model"] == "gpt-4" and "response" not in b["chosen_response"]
    assert b["rejected_response"]["annotations"]["honesty"]["Rating"] == "N/A"


def test_all_margin_pairs_row_accounting_and_ids(tmp_path: Path) -> None:
    report = ingest([UF], tmp_path, binarize="all-margin:1")
    pairs, rejects, _ = read_out(tmp_path)
    # row 0 ranks 4.75 (1), 3.5 (2), 1.75 (0), 1.25 (3): every gap >= 1 but 1.75 - 1.25; row 1: all three gaps
    assert pairs["source_row"].to_list() == [0] * 5 + [1] * 3
    got = [(meta(r)["binarize"]["chosen"], meta(r)["binarize"]["rejected"]) for r in pairs.iter_rows(named=True)]
    assert got == [(1, 2), (1, 0), (1, 3), (2, 0), (2, 3), (0, 2), (0, 1), (2, 1)]
    assert [meta(r)["binarize"]["pair"] for r in pairs.iter_rows(named=True)] == [0, 1, 2, 3, 4, 0, 1, 2]
    assert {meta(r)["binarize"]["pairs_from_row"] for r in pairs.iter_rows(named=True)} == {5, 3}
    assert all(r["chosen_score"] - r["rejected_score"] >= 1 for r in pairs.iter_rows(named=True))
    # rows in + extra pairs = pairs kept + rows rejected; rows in = rows that made pairs + rows rejected
    assert (report["input_rows"], report["kept_rows"], report["extra_pairs"], report["paired_rows"]) == (2, 8, 6, 2)
    assert report["input_rows"] + report["extra_pairs"] == pairs.height + rejects.height
    src = report["sources"][canonical_name(UF)]
    assert (src["rows_in"], src["rows_kept"], src["paired_rows"], src["extra_pairs"]) == (2, 8, 2, 6)
    # row ids stay unique: the first pair keeps the row's id, pair j gets one derived from it
    assert pairs["row_id"].n_unique() == 8
    single = ingest([UF], tmp_path / "bw")
    first_pairs = pairs.filter(pl.col("meta").str.contains('"pair":0,'))
    assert read_out(tmp_path / "bw")[0]["row_id"].to_list() == first_pairs["row_id"].to_list()
    assert single["binarize"] == "best-worst" and report["binarize"] == "all-margin:1"


def test_best_random_is_seeded_and_only_picks_strictly_lower(tmp_path: Path) -> None:
    rows = [{"prompt": f"Question {i}", "responses": [f"best {i}", f"tie-best {i}", f"mid {i}", f"low {i}", f"low2 {i}"],
             "scores": [9, 9, 5, 2, 2]} for i in range(40)]
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    picks = {}
    for seed in (0, 0, 1):
        out = tmp_path / f"s{seed}-{len(picks)}"
        ingest([path], out, binarize="best-random", seed=seed)
        pairs = read_out(out)[0]
        assert pairs.height == 40
        assert pairs["chosen"].str.starts_with("best ").all()  # ties for best go to the first listed
        assert pairs["rejected"].str.contains(r"^(mid|low|low2) ").all()  # never the tied best
        picks.setdefault(seed, []).append(pairs["rejected"].to_list())
    assert picks[0][0] == picks[0][1]  # same seed, same picks
    assert picks[0][0] != picks[1][0]  # another seed, other picks
    assert len({r.split()[0] for r in picks[0][0]}) == 3  # all lower responses get picked somewhere
    assert (tmp_path / "s0-0" / "pairs.parquet").read_bytes() == (tmp_path / "s0-1" / "pairs.parquet").read_bytes()


def test_ties_never_make_a_pair(tmp_path: Path) -> None:
    rows = [{"prompt": "a", "responses": ["x", "y", "z"], "scores": [3, 3, 1]},
            {"prompt": "b", "responses": ["x", "y"], "scores": [4, 4]},
            {"prompt": "c", "responses": ["same", "same ", "other"], "scores": [5, 1, 1]},
            {"prompt": "d", "responses": ["only one"], "scores": [5]}]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    report = ingest([path], tmp_path / "out", binarize="all-margin:0")
    pairs, rejects, _ = read_out(tmp_path / "out")
    got = [(r["source_row"], r["chosen"], r["rejected"]) for r in pairs.iter_rows(named=True)]
    assert got == [(0, "x", "z"), (0, "y", "z"), (2, "same", "other")]  # not x-y; not same vs "same "
    assert report["rejects_by_reason"] == {"tied_scores": 1, "too_few_responses": 1}
    assert dict(zip(rejects["source_row"], rejects["reason"])) == {1: "tied_scores", 3: "too_few_responses"}
    # best-worst on the same file: one pair per row that has a preference
    ingest([path], tmp_path / "bw")
    assert read_out(tmp_path / "bw")[0]["chosen"].to_list() == ["x", "same"]


def test_distilabel_generations_ratings_and_unusable_responses(tmp_path: Path) -> None:
    rows = [{"instruction": "Translate 'good morning' to French.",
             "generations": ["Bonjour.", "", "Bonsoir.", None, "Salut."], "ratings": [5, 4, None, 1, "2"],
             "model_names": ["m1", "m2", "m3", "m4", "m5"]}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    report = ingest([path], tmp_path / "out")
    pairs, _, _ = read_out(tmp_path / "out")
    assert report["sources"][str(path)]["format"] == "rated_responses"
    row = pairs.row(0, named=True)
    # "" is empty, "Bonsoir." has no score, None has no text: left out and named; "2" (text) is a score
    assert (row["chosen"], row["rejected"], row["chosen_score"], row["rejected_score"]) == ("Bonjour.", "Salut.", 5, 2)
    m = meta(row)
    assert m["binarize"]["left_out"] == {"1": "empty", "2": "no score", "3": "missing_field"}
    assert m["binarize"]["scores"] == [5, 4, None, 1, 2] and m["model_names"][0] == "m1"


def test_responses_as_messages_or_objects_beside_a_scores_list(tmp_path: Path) -> None:
    rows = [{"messages": [M("system", "Be kind."), M("user", "Cheer me up.")],
             "responses": [M("assistant", "You've got this!"), M("assistant", "No.")], "rewards": [0.8, -1.2]}]
    objs = [{"question": "2+2?", "outputs": [{"text": "4", "model": "a"}, {"text": "5", "model": "b"}],
             "scores": [1, 0]}]
    a, b = write_jsonl(tmp_path / "m.jsonl", rows), write_jsonl(tmp_path / "o.jsonl", objs)
    report = ingest([a, b], tmp_path / "out")
    pairs, rejects, _ = read_out(tmp_path / "out")
    assert [s["format"] for s in report["sources"].values()] == ["rated_responses", "rated_responses"]
    assert rejects.height == 0
    first, second = pairs.iter_rows(named=True)
    assert (first["system"], first["chosen"], first["rejected"], first["rejected_score"]) == (
        "Be kind.", "You've got this!", "No.", -1.2)
    assert (second["chosen"], second["rejected"]) == ("4", "5")
    assert meta(second)["binarize"]["rejected_response"] == {"model": "b"}


def test_score_key_annotations_mean_and_map_override(tmp_path: Path) -> None:
    def comp(text: str, ratings: list[str], overall: float) -> dict:
        return {"response": text, "overall_score": overall,
                "annotations": {a: {"Rating": r, "Rationale": "…"} for a, r in zip(("helpfulness", "honesty"), ratings)}}

    rows = [{"instruction": "Pick a colour.", "completions": [comp("Blue.", ["5", "N/A"], 3.0), comp("Red.", ["2", "3"], 9.0),
                                                              comp("Green.", ["4", "4"], 1.0)]}]
    path = write_jsonl(tmp_path / "u.jsonl", rows)
    report = ingest([path], tmp_path / "a")
    pairs, _, _ = read_out(tmp_path / "a")
    assert report["sources"][str(path)]["fields"]["score"] == "annotations"
    # means: Blue 5 (N/A ignored), Red 2.5, Green 4
    assert (pairs["chosen"][0], pairs["rejected"][0], pairs["chosen_score"][0]) == ("Blue.", "Red.", 5.0)
    report = ingest([path], tmp_path / "b", mapping={"score": "overall_score"})
    pairs, _, _ = read_out(tmp_path / "b")
    assert report["sources"][str(path)]["fields"]["score"] == "overall_score"
    assert (pairs["chosen"][0], pairs["rejected"][0]) == ("Red.", "Green.")


def test_parse_binarize() -> None:
    assert parse_binarize("all-margin:0.5").label == "all-margin:0.5"
    assert parse_binarize(" Best-Random ", seed=3).seed == 3
    for bad in ("best", "all-margin:-1", "all-margin:x", "all-margin:nan"):
        with pytest.raises(ConfigError, match="binarize"):
            parse_binarize(bad)


# --- errors that propose only maps that work --------------------------------------------------------------------

UNKNOWN = {
    "flat.jsonl": [{"query": "What is 10 / 2?", "good": "5", "bad": "2"}, {"query": "一年有几季？", "good": "四季。", "bad": "两季。"}],
    "conv.jsonl": [{"dialog_good": [M("user", "hi"), M("assistant", "hello")],
                    "dialog_bad": [M("user", "hi"), M("assistant", "go")]}],
    "rated.jsonl": [{"input_text": "Say hi", "model_outputs": ["hi", "go away", "hello!"], "reward_scores": [0.9, 0.1, 0.8]}],
    "named_like_prompt.jsonl": [{"chosen_turns": [M("user", "hi"), M("assistant", "hello")],
                                 "prompt_messages": [M("user", "hi")],
                                 "rejected_turns": [M("user", "hi"), M("assistant", "go")]}],
}


@pytest.mark.parametrize("name", sorted(UNKNOWN))
def test_unknown_format_suggests_only_maps_that_work(tmp_path: Path, name: str) -> None:
    path = write_jsonl(tmp_path / name, UNKNOWN[name])
    with pytest.raises(InputError) as e:
        ingest([path], tmp_path / "x")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: can't tell the preference format")
    maps = re.findall(r"--map (\S+)", msg)
    assert maps, msg
    cols = set(UNKNOWN[name][0])
    for i, m in enumerate(maps):
        mapping = dict(kv.split("=", 1) for kv in m.split(","))
        assert set(mapping.values()) <= cols  # only columns that exist
        report = ingest([path], tmp_path / f"ok{i}", mapping=mapping)  # and it detects and converts
        assert report["kept_rows"] >= 1 and report["rejected_rows"] == 0


def test_no_working_guess_proposes_no_map(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "abc.jsonl", [{"a": "x", "b": "y", "c": "z"}])
    with pytest.raises(InputError) as e:
        ingest([path], tmp_path / "x")
    assert "[a, b, c]" in str(e.value) and not re.search(r"--map \S+=", str(e.value))


def test_ambiguous_suggestions_work(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "amb.jsonl", [{"prompt": "p", "question": "q", "chosen": "c", "rejected": "r"}])
    with pytest.raises(InputError, match="ambiguous") as e:
        ingest([path], tmp_path / "x")
    maps = re.findall(r"--map (\S+)", str(e.value))
    assert len(maps) == 2
    prompts = set()
    for i, m in enumerate(maps):
        ingest([path], tmp_path / f"ok{i}", mapping=dict(kv.split("=", 1) for kv in m.split(",")))
        prompts.add(read_out(tmp_path / f"ok{i}")[0]["prompt"][0][0]["content"])
    assert prompts == {"p", "q"}  # --map prompt=prompt now picks `prompt` (the other name stays in meta)


def test_unknown_file_in_a_multi_folder_run_is_named(tmp_path: Path) -> None:
    """Messages-style and rated files among others read without --map; an unreadable one is named in full."""
    import shutil

    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "deep").mkdir(parents=True)
    for f in ("messages_pairs.jsonl", "ultrafeedback_raw.jsonl", "flat.jsonl"):
        shutil.copy(FIXTURES / f, tmp_path / "a" / f)
    shutil.copy(FIXTURES / "responses_scores.jsonl", tmp_path / "b" / "responses_scores.jsonl")
    report = ingest([tmp_path / "a", tmp_path / "b"], tmp_path / "ok")
    assert sorted(s["format"] for s in report["sources"].values()) == [
        "flat", "messages_pairs", "rated_completions", "rated_responses"]
    bad = write_jsonl(tmp_path / "b" / "deep" / "odd.jsonl", UNKNOWN["flat.jsonl"])
    with pytest.raises(InputError) as e:
        ingest([tmp_path / "a", tmp_path / "b"], tmp_path / "x")
    assert str(e.value).startswith(f"{bad}: can't tell") and "--map prompt=query,chosen=good,rejected=bad" in str(e.value)
    assert not (tmp_path / "x" / "pairs.parquet").exists()
