"""The content check behind near and semantic dedup (curate.dedup.verify): which differences are typos (noise)
and which make another question (content), on pairs we wrote, and the default lexical methods on the labelled
calibration set (bench/data/dedup_calibration.json): every distinct pair kept."""

from __future__ import annotations

import importlib.util

import pytest

from curate.config import build
from curate.dedup.verify import content_change, words_key
from curate.stages import dedup
from tests.conftest import REPO


def change(a: str, b: str) -> str | None:
    return content_change(words_key(a), words_key(b))


# Distinct questions: the difference is content, whatever the edit distance.
DISTINCT = [
    # n't is a negation though the key splits it ("shouldn t"); before, "shouldn" counted as a typo of "should"
    ("You should go to the doctor today.", "You shouldn't go to the doctor today."),
    ("This medicine is safe for children.", "This medicine isn't safe for children."),
    ("I can swim across the river.", "I can't swim across the river."),
    ("I do like it.", "I don't like it."),
    ("He did it on purpose.", "He didn it on purpose."),  # "didn" is a negation with its t lost: not "did"
    ("It is safe to eat.", "It is nozt safe to eat."),  # a mistyped negation is still a negation
    ("You should go to the doctor today.", "You shoulxdn't go to the doctor today."),  # … in one word, too
    # short strings that are names, acronyms, identifiers: a substitution is another thing
    ("What is the TCP protocol used for?", "What is the UDP protocol used for?"),
    ("What is RSA encryption used for?", "What is DSA encryption used for?"),
    ("Define the word xyz for me please.", "Define the word abc for me please."),
    # numbers, real words (both common: "world" / "word" is another question, by design)
    ("Set the oven to 40 degrees.", "Set the oven to 400 degrees."),
    ("How big is the world?", "How big is the word?"),
    ("Tell me about the Iran nuclear deal.", "Tell me about the Iraq nuclear deal."),
    ("How do I take care of a cat?", "How do I take care of a cot?"),
    # real-word pairs where the context fits both: a bigram-count rule can't tell them from the typos it would be
    # meant to catch (measured for my cell / cello and flat tire / tier against that made / that ad:
    # docs/bench/dedup.md, "Context from word bigrams")
    ("How do I clean my cell?", "How do I clean my cello?"),
    ("What is written in their diary?", "What is written in their dairy?"),
    ("Describe the desert.", "Describe the dessert."),
    ("Where can I buy a horse?", "Where can I buy a hose?"),
    ("How do I fix a flat tire?", "How do I fix a flat tier?"),
    # a real word changed beside a typo is still a changed word; a typo as close to another word is no typo of it
    ("Tell me about the Iran nuclear deal.", "Tell me about the Iraq nucllear deal."),
    ("What is the TCP protocol used for?", "What is ther UDP protocol used for?"),
    ("How big is the world today?", "How big is the wbord today?"),  # wbord: one edit from "word", two from "world"
    ("What is the plural of goose?", "What is the plural of moosr?"),
    ("化学反应的速度由什么决定？", "化学反映映的的的速度由什么决定？"),  # doubling and particles aside, 反映
    # Chinese: homophones that are both common words are the IME's choice, not a typo
    ("权利和义务有什么区别？", "权力和义务有什么区别？"),
    ("化学反应的速度由什么决定？", "化学反映的速度由什么决定？"),
    ("这份报告必须在周五前提交吗？", "这份报告必需在周五前提交吗？"),
    ("胃癌的临床表现有些什么？", "胃炎的临床表现有些什么？"),  # 癌 has an old reading yán: not a homophone of 炎
    ("他明天会来参加会议吗？", "他明天不会来参加会议吗？"),
    ("他不会来参加会议吗？", "他部会来参加会议吗？"),  # 部会 is a word: not a mistyped 不
    ("这是事实吗？请说明理由。", "这是事吗？请说明理由。"),  # 实 makes the word 事实 with its neighbour
    ("Translate into English: 我喜欢猫, and keep the tone.", "Translate into English: 我喜欢狗, and keep the tone."),
    # in a question of a few characters a particle is part of what it asks (before: noise, and semantic dedup
    # merged 「他走了吗」 into 「他走吗」 at cosine ≥ 0.97)
    ("他走了吗？", "他走吗？"),
    ("你好吗？", "你好！"),
    ("是的。", "是吗？"),
    ("你吃饭了吗？", "你吃饭吗？"),
    # a pronoun changed into a common word names someone else (before, any one-edit change of a stopword was a typo)
    ("Write a poem for me.", "Write a poem for men."),
    ("Draw a picture of him.", "Draw a picture of Tim."),
    # … or into any dictionary word (Zipf ≥ 3: a name as often as a typo; before, Zipf ≥ 4 only), or into another
    # pronoun of another person (before: two stopwords, noise; near merged "Is he" / "Is she" at edit sim. 0.92)
    ("Can you help me with this?", "Can you help Meg with this?"),
    ("Write a song about you.", "Write a song about Lou."),
    ("Is he a doctor?", "Is she a doctor?"),
    ("Is this your book?", "Is this their book?"),
    ("Draw a picture of him.", "Draw a picture of her."),
    # real-word pairs where the context fits both: the trigram language model of pocketsphinx scores them as far
    # apart as real-word typos (docs/bench/dedup.md, "Context from a trigram language model")
    ("How do I choose a cot for my baby?", "How do I choose a cat for my baby?"),
    ("Is the weather good for a walk today?", "Is the weather good for a talk today?"),
    ("What should I feed my cat?", "What should I feed my rat?"),
    ("How do I cook a yam?", "How do I cook a ham?"),
    # Chinese: a homophone in a two-character name after a common surname, or of the surname (before: an IME typo)
    ("张伟是哪个公司的经理？", "张维是哪个公司的经理？"),
    ("王芳老师的电话是多少？", "汪芳老师的电话是多少？"),
    ("刘洋是第一位女航天员吗？", "刘阳是第一位女航天员吗？"),
    ("张伟是哪个公司的经理？", "张维维是哪个公司的经理？"),  # the doubling stripped, still 张维
    # two edits into a non-word that is one edit from a word about as common as the one meant: no typo of it
    ("What is the plural of goose?", "What is the plural of moosr?"),
    ("What is RSA encryption used for?", "What iSDSA encyption used for?"),  # … in a region of several words: any
]

# The same question with typos: noise.
TYPOS = [
    # a surname character inside a word is no name: the homophone after it is an IME typo (如何, 眉毛, 位于, 多少钱)
    ("如何学习Python编程？", "如何血习Python编程？"),
    ("终于！我把眉毛穿孔了！", "终于！我把眉毛传孔了！"),
    ("乔治少年酒店位于附近。", "乔治少年酒店位余附近。"),
    ("打胎需要多少钱呀？", "打胎需要多少钱压？"),
    ("Write a sentence not in English.", "Write a senvtence no din English."),
    ("Say whether the verb is not a negation.", "Say whether the verb is nozt a negation."),
    ("How do I say no to my boss?", "How do I say nno to my boss?"),  # "no" mistyped is still "no"
    ("You cannot use a calculator.", "You canmnot use a calculator."),
    ("We didn't even think about it.", "We didn' even think anbout it."),
    ("What is the capital of France?", "What is teh capital of France?"),  # a transposition: one edit
    ("My dog is sick, what should I do?", "My dog is sick, whuat shoxuld I do?"),
    ("Turn the light off before you leave.", "Turn the light ogf before you leave."),  # off (common) / ogf (rare)
    ("Can you show me how to implement a queue in Python?", "Can you show me how to implement a qeue in Python?"),
    ("Describe what historical research requires.", "Describe what historical reserach requires."),
    ("使用以下关键词撰写一条推文：在线学习。", "使佣用以下关键词撰写一条啊推文：在线学习。"),  # a stutter: 用 → 佣用
    ("计算 123456 乘以 789，并写出步骤。", "计计算 123456 乘以 789，并写写出出步骤。"),  # doubled characters
    ("用 Python 写一个反转字符串的函数。", "用 Python 写一啊阁反转字符串了的函数。"),  # 个 → 啊阁: a particle + 阁 (ge)
    ("如果问题无法回答，请说无法回答。", "如果问题物法回答，请说无法回答。"),  # 无 → 物 (wu), 物法 no word
    ("肺癌的临床表现有些什么？", "肺癌的临床表现有些甚么？"),  # 甚么 is a variant spelling of 什么, not another word
    ("Translate into English: 我喜欢英语, and keep the tone.", "Translate into English: 我喜欢迎语, and keep the tone."),
    ("Explain why 40 degrees is hot in 数百名消防员一直在与火灾作斗争以上.",
     "Explain why 40 degrees is hot in 数百名消防员一直在与火灾作斗争以以上."),  # the same 40 beside a typo
    # a function word two edits into a non-word (or a lone letter): a function word's slot holds no name
    ("What is the capital of Australia?", "What is the ccapital ovk Australia?"),
    ("Only respond with math and no words.", "Only respond with math anwr no words."),
    ("What is the freezing point of water?", "hact is the freezing poilt of water?"),
    ("How do I bake bread at home?", "H do I bake bread at home?"),
    ("Also make it only 2 paragraphs.", "Also make iy only 2 paragraphs."),  # a pronoun into a non-word: a typo
    ("Can you elaborate on this?", "Can yu elaborate on this?"),  # … or two letters under Zipf 4 ("yu" 3.9)
    ("My cat is sick, what can I do?", "M cat is sick, what can I do?"),  # … or a lone letter
    ("The cat is sleeping on the sofa.", "The cazt is sleeping on the sofa."),  # cazt: one edit from cant, too
    ("Jaws is a ride you can see in Japan.", "Jaws is a ride you cann see in Japan."),  # as near can as cant
    ("What should I cook for dinner tonight?", "What should k cook for dinner tonight?"),
    # two edits from the word meant and one from a much rarer word ("convex", Zipf 3.3 against 4.6): a typo
    ("Generate a context and a hypothesis.", "Generate a convtex and a hypothesis."),
]


@pytest.mark.parametrize(("a", "b"), DISTINCT)
def test_a_content_change_is_content(a, b):
    assert change(a, b) is not None
    assert change(b, a) is not None


@pytest.mark.parametrize(("a", "b"), TYPOS)
def test_a_typo_is_noise(a, b):
    assert change(a, b) is None, change(a, b)
    assert change(b, a) is None


def test_the_stage_keeps_distinct_pairs_and_removes_typos(pairs_factory):
    texts = [t for pair in DISTINCT for t in pair] + [t for pair in TYPOS for t in pair]
    frame = pairs_factory([{"prompt": t} for t in dict.fromkeys(texts)])
    res = dedup.run(frame, build(dedup.Config, {"methods": ["exact", "near"]}, "[dedup]")).collect()
    assert res.kept.height + res.rejects.height == frame.height
    removed = {p[-1]["content"] for p in res.rejects["prompt"].to_list()}
    text_of = dict(zip(res.kept["row_id"].to_list(), [p[-1]["content"] for p in res.kept["prompt"].to_list()]))
    merged = {frozenset((p[-1]["content"], text_of[c])) for p, c in zip(res.rejects["prompt"].to_list(),
                                                                        res.rejects["dup_cluster"].to_list())}
    assert merged.isdisjoint(frozenset(pair) for pair in DISTINCT), merged
    # Every typo pair lost exactly one member (the edit pass or n-gram Jaccard found it, the check let it go).
    for a, b in TYPOS:
        assert (a in removed) != (b in removed), (a, b)


def test_lexical_methods_merge_no_distinct_pair_of_the_calibration_set():
    spec = importlib.util.spec_from_file_location("dedup_calibrate", REPO / "bench" / "dedup_calibrate.py")
    calib = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(calib)
    for lang in ("zh", "en"):
        r = calib.evaluate_lexical(lang)
        assert r["false_merges"] == 0, r["false_examples"]
        assert r["pairs_distinct"] > 100_000 and r["removed_into_variant"] > 100  # the check did run on real pairs


def _near_run(texts: list[str], pairs_factory, **near) -> tuple[set[str], list[str]]:
    frame = pairs_factory([{"prompt": t} for t in texts])
    cfg = build(dedup.Config, {"methods": ["exact", "near"], "near": near}, "[dedup]")
    res = dedup.run(frame, cfg).collect()
    assert res.kept.height + res.rejects.height == frame.height
    return {p[-1]["content"] for p in res.rejects["prompt"].to_list()}, res.rejects["detail"].to_list()


# Short Chinese keys with doubled characters and particles: under near.edit_similarity when every edit counts.
NOISY_ZH = [
    ("我的猫生病了怎么办？", "我的呢猫生病了怎么么办办？"),  # 3 edits in 9 characters, all noise: 0.75 counted in full
    ("森林砍伐如何影响气候变化？", "森林砍伐如何何影影响气候了变化？"),
    ("上海明天会下雨吗？", "上害明天会下雨？"),  # a homophone and a dropped 吗: the homophone alone counts
]
# Kept: below cjk_noise_free characters a particle can be the question; a substitution (a name) counts in full.
KEPT_ZH = [("你好吗？", "你好！"), ("他走了吗？", "他走吗？"), ("张伟是谁呀？", "张维是谁？")]


def test_doubled_characters_and_particles_are_free_edits_in_short_chinese_keys(pairs_factory):
    texts = [t for pair in NOISY_ZH + KEPT_ZH for t in pair]
    removed, details = _near_run(texts, pairs_factory)
    for a, b in NOISY_ZH:
        assert (a in removed) != (b in removed), (a, b)
    for a, b in KEPT_ZH:
        assert a not in removed and b not in removed, (a, b)
    assert any("of them doubled characters or particles" in d for d in details), details
    # Off: every edit counts again, and these pairs fall under near.edit_similarity 0.85 (the second one's n-grams
    # still find it).
    removed_off, _ = _near_run(texts, pairs_factory, cjk_noise_free=0)
    assert not removed_off & {t for pair in (NOISY_ZH[0], NOISY_ZH[2]) for t in pair}, removed_off


def test_edit_pass_finds_pairs_one_lsh_round_misses(pairs_factory):
    """Three typos in a 24-character key (trigram Jaccard 0.45): the main LSH round (seed 1) proposes no such pair
    here, the second round over keys of ≤ 40 characters does. A typo that moves a mixed-script key across the 0.3
    CJK share gave the two keys different n-gram sizes and no shingle in common: the mixed-script round hashes
    both with one size."""
    texts = ["How do I grow tomatoes at home?", "How d I grow tomtoes at hwme?", "How do I grow cucumbers at home?",
             "解释一下javawicket中的listview类", "解释一下下javawicket众的listview类"]
    removed, details = _near_run(texts, pairs_factory)
    assert (texts[0] in removed) != (texts[1] in removed), removed
    assert (texts[3] in removed) != (texts[4] in removed), removed
    assert texts[2] not in removed
    assert all("edit similarity" in d for d in details), details
