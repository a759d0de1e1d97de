"""Known-distinct probe questions per language: the stage's check that the embedding model tells them apart.

At the start of semantic dedup the stage embeds these (through the cache: a few dozen texts) and takes, per
language, the highest cosine between two probes that the stage would act on (its own vetoes applied, as for any
pair of rows). Every probe pair is a *different* question: pairs on one template differing in a slot, the way real
data does (「X的临床表现有些什么？」 for different X, "What are some insults for people from X?"), and pairs across
templates and topics. If any pair reaches the language's threshold, the model cannot separate distinct questions
in that language at that threshold, and semantic dedup is switched off for it (one warning; the lexical methods
still run). It is also off when the model's tokenizer can't read more than a fifth of the probes' characters
(all-MiniLM-L6-v2 on Chinese). The probes are not part of the calibration set in bench/ (different fillers and
templates), so the check is not tuned on itself.
"""

from __future__ import annotations

PROBES: dict[str, tuple[str, ...]] = {
    "zh": (
        "高血压的临床表现有些什么？",
        "低血压的临床表现有些什么？",
        "胃溃疡的临床表现有些什么？",
        "小儿感冒的临床表现有些什么？",
        "老年人跌倒后应该怎么护理？",
        "老年人中风后应该怎么护理？",
        "孕妇可以吃螃蟹吗？",
        "孕妇可以喝咖啡吗？",
        "北京到上海的高铁要坐多久？",
        "北京到西安的高铁要坐多久？",
        "请把这句话翻译成英文：我很想你。",
        "请把这句话翻译成日文：我很想你。",
        "用Python写一个快速排序。",
        "用Python写一个二分查找。",
        "为什么夏天会打雷？",
        "为什么冬天会下雪？",
        # Reworded and a different slot: the vetoes don't see these, only the model can tell them apart.
        "怎样才能预防小儿感冒？",
        "成人感冒了应该如何预防传染给家人？",
        "宝宝发烧到三十九度该怎么处理？",
        "老人咳嗽很久不好要吃什么药？",
        "怎么做一道好吃的红烧排骨？",
        "清蒸鲈鱼的做法是什么？",
    ),
    "en": (
        "What are some insults for people from Spain?",
        "What are some insults for people from Italy?",
        "What are some insults for people from Japan?",
        "What are some insults for fat people?",
        "How do I get rid of ants in my kitchen?",
        "How do I get rid of mice in my kitchen?",
        "What is the capital of Slovenia?",
        "What is the capital of Slovakia?",
        "Can you recommend a good book about the Roman Empire?",
        "Can you recommend a good book about the French Revolution?",
        "Write a Python function that checks whether a number is prime.",
        "Write a Python function that checks whether a string is a palindrome.",
        "How long should I boil an egg?",
        "How long should I boil pasta?",
        "Why do dogs bark at night?",
        "Why do owls hoot at night?",
        # Reworded and a different slot: the vetoes don't see these, only the model can tell them apart.
        "What's the best way to keep mice out of my garage?",
        "How can I stop ants from coming into the kitchen?",
        "Which is the largest city in Canada?",
        "What is the capital city of Australia?",
        "Give me a recipe for chocolate chip cookies.",
        "How do you make banana bread?",
    ),
}


def probes_for(lang: str) -> tuple[str, ...]:
    """Probe texts for a language key (zh, en; mixed → both; others → none)."""
    if lang == "mixed":
        return PROBES["zh"] + PROBES["en"]
    return PROBES.get(lang, ())
