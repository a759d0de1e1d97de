"""The quality stage: every check with true and false positives in Chinese and English, its actions, its report."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest

from curate.config import build
from curate.errors import ConfigError
from curate.quality import markers, pii
from curate.stages import quality as q
from tests.conftest import make_pairs, shared_data

CLEAN = {"prompt": "Explain photosynthesis.", "chosen": "Plants turn light, water and CO2 into sugar and oxygen.",
         "rejected": "Plants take photos."}


def run(rows, **cfg):
    return q.run(make_pairs(rows), q.Config(**cfg)).collect()


def flags(result, code: str) -> list[bool | None]:
    return result.kept[q.FLAG_PREFIX + code].to_list()


# ------------------------------------------------------------------------------------------ role_marker_in_text

LEAKS = [
    # (place, row, language) — markers that must be found
    ("chosen", {"prompt": "Are you racist?", "chosen": "Human: No, you are racist for asking.\n\nAssistant: I am not."}, "en"),
    ("chosen", {"prompt": "Thanks!", "chosen": "You're welcome.\n\nHuman: Can you also help with my taxes?"}, "en"),
    ("chosen", {"prompt": "Say hi", "chosen": "Assistant: Hi there! How can I help?"}, "en"),
    ("chosen", {"prompt": "Say hi", "chosen": "Hi!<|im_end|>\n<|im_start|>user\nbye"}, "en"),
    ("chosen", {"prompt": "Say hi", "chosen": "Hello.<end_of_turn>\n<start_of_turn>user\nMore?"}, "en"),
    ("chosen", {"prompt": "Summarise", "chosen": "[INST] Summarise again [/INST] Sure."}, "en"),
    ("chosen", {"prompt": "Name a colour", "chosen": "Blue.</s>"}, "en"),
    ("chosen", {"prompt": "你好", "chosen": "你好！很高兴见到你。<|endoftext|>"}, "zh"),
    ("chosen", {"prompt": "Write a haiku", "chosen": "Snow on the pine.\n\n### Instruction:\nWrite another"}, "en"),
    ("chosen", {"prompt": "USER: what is 2+2?", "chosen": "4\nUSER: and 3+3?\nASSISTANT: 6"}, "en"),
    ("chosen", {"prompt": "你好", "chosen": "你好！有什么可以帮你？\n用户：今天天气怎么样？\n助手：今天晴。"}, "zh"),
    ("chosen", {"prompt": "介绍一下自己", "chosen": "助手：我是一个人工智能助手，很高兴为你服务。"}, "zh"),
    ("chosen", {"prompt": "讲个笑话", "chosen": "好的。\n\n**用户**：再讲一个吧"}, "zh"),
    # A prompt that mentions a play is no request for a dialogue (real row of the LLaMA-Factory zh demo).
    ("chosen", {"prompt": "以下陈述是否属实？\n\"阿瑟·米勒写了剧本《推销员之死》。\"",
                "chosen": "我不确定。\n\nUser:\n不用了，谢谢。\n\n这位助手表达了它对答案的信心水平为0%。"}, "zh"),
    ("rejected", {"prompt": "1+1?", "rejected": "2\n\nHuman: and 2+2?"}, "en"),
    ("rejected", {"prompt": "天空为什么是蓝色的？", "rejected": "因为散射。\n人类：那晚霞呢？"}, "zh"),
    ("prompt", {"prompt": "Human: hi\n\nAssistant: hello\n\nHuman: what is the capital of France?"}, "en"),
    ("prompt", {"prompt": "<|im_start|>user\n北京在哪里？<|im_end|>"}, "zh"),
    ("prompt", {"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!\nUser: thanks a lot"},
                           {"role": "user", "content": "bye"}]}, "en"),
]

NOT_LEAKS = [
    # config snippets and records, not turns
    {"prompt": "How do I log in to the router?", "chosen": "Use these defaults:\nUser: admin\nPassword: admin\nHost: 192.168.0.1"},
    {"prompt": "Show the login form fields", "chosen": "Name: John Smith\nUser: John Smith\nRole: editor"},
    {"prompt": "路由器默认账号是什么？", "chosen": "默认信息如下：\n用户：admin\n密码：123456"},
    {"prompt": "ini example", "chosen": "```ini\n[db]\nUser: root\nAssistant: none\n```"},
    {"prompt": "inline", "chosen": "Write `User: admin` in the config file."},
    {"prompt": "Describe our persona", "chosen": "**User:** a busy parent who shops online at night\nGoal: save time"},
    {"prompt": "What does the chat window show?", "chosen": "It shows two lines:\nUser: [your message]\nAssistant: [the reply]"},
    {"prompt": "聊天界面长什么样？", "chosen": "界面如下：\n用户：<你的消息>\n助手：<回复>"},
    # requested dialogues (en and zh)
    {"prompt": "Show me an example conversation with a support bot.", "chosen": "User: My parcel is late.\nAssistant: Let me check."},
    {"prompt": "How do I write a few-shot prompt for translation?", "chosen": "Like this:\nUser: Translate 'cat'\nAssistant: 猫"},
    {"prompt": "举个客服对话的例子", "chosen": "用户：我的订单还没发货。\n助手：我马上帮您查询。"},
    {"prompt": "Format our exchange above as a transcript.", "chosen": "User: Can you help?\nAssistant: Of course."},
    {"prompt": "How do I test my chatbot?", "chosen": "Write cases such as:\nUser: Hi there\nAssistant: Hello! How can I help?"},
    {"prompt": "写一个关于人工智能的相声", "chosen": "甲：你知道人工智能吗？\n用户：我当然知道。\n助手：那你说说看。"},
    {"prompt": "Write a dialogue between a user and an assistant about tea.",
     "chosen": "User: Which tea has the most caffeine?\nAssistant: Black tea, usually."},
    {"prompt": "写一段用户和助手关于天气的对话。", "chosen": "用户：明天会下雨吗？\n助手：预报说明天有小雨。"},
    {"prompt": "请用角色扮演的方式回答：你是一名客服。", "chosen": "助手：您好，请问有什么可以帮您？"},
    # quoting a transcript the user pasted
    {"prompt": "Summarise this chat:\nUser: my order is late\nAssistant: sorry, I will check",
     "chosen": "The user said:\nUser: my order is late\nand the assistant apologised."},
    # prose, not markers (no colon), real lines from the zh demo
    {"prompt": "这群人在跳舞吗？", "chosen": "用户想知道我们是否可以根据给定的背景得出结论。"},
    {"prompt": "写一个食谱助手的说明", "chosen": "助手应包括它认为对任务成功完成必要的任何要点。"},
    {"prompt": "Task", "system": "User will you give you a task with some instruction.", "chosen": "Done."},
    # markdown that looks like Alpaca
    {"prompt": "Pancake recipe", "chosen": "### Ingredients\n- flour\n\n### Instructions\n1. Mix.\n2. Fry."},
    # a question about chat templates
    {"prompt": "What does the ChatML template look like?", "chosen": "Each turn starts with <|im_start|> and a role."},
    {"prompt": "What is <start_of_turn> in Gemma?", "chosen": "<start_of_turn> opens a turn in Gemma's format."},
    {"prompt": "How do I strike text through in HTML?", "chosen": "Wrap it: <s>old price</s> new price."},
    {"prompt": "What does the <eos> token do?", "chosen": "<eos> tells the model the sequence has ended."},
    {"prompt": "How do I format a prompt for Llama 2?", "chosen": "Wrap the user message: [INST] Hello [/INST]"},
    {"prompt": "Give me one Alpaca-style training example.", "chosen": "### Instruction:\nAdd 2 and 3.\n\n### Response:\n5"},
    # translating or summarising a dialogue the user pasted
    {"prompt": "Translate into English:\n用户：今天天气怎么样？\n助手：今天是晴天。",
     "chosen": "User: How is the weather today?\nAssistant: It is sunny today."},
    {"prompt": "把这段对话翻译成中文：User: Where is the station? Assistant: Two blocks north.",
     "chosen": "用户：车站在哪里？\n助手：往北走两个街区。"},
    {"prompt": "总结下面的聊天记录：\n用户：我的快递还没到\n助手：抱歉，我帮您查一下",
     "chosen": "用户反映快递未到。\n用户：我的快递还没到\n助手表示会帮忙查询。"},
]


@pytest.mark.parametrize(("place", "row", "lang"), LEAKS, ids=[f"{p}-{lang}-{i}" for i, (p, _, lang) in enumerate(LEAKS)])
def test_role_marker_found(place, row, lang):
    r = run([row, CLEAN])
    if place == "chosen":  # default: a leak in the chosen reply rejects the pair
        assert r.rejects.height == 1 and r.kept.height == 1
        rej = r.rejects.row(0, named=True)
        assert (rej["stage"], rej["reason"]) == ("quality", q.ROLE_MARKER_IN_TEXT)
        assert rej["detail"].startswith("chosen: ")
        assert rej[q.FLAG_PREFIX + q.ROLE_MARKER_IN_TEXT] is True
    else:  # in the rejected reply or the prompt: kept and flagged
        assert r.rejects.height == 0
        assert flags(r, q.ROLE_MARKER_IN_TEXT) == [True, False]
        assert r.stats["checks"][q.ROLE_MARKER_IN_TEXT]["by_place"][place] == 1


@pytest.mark.parametrize("row", NOT_LEAKS, ids=[f"fp-{i}" for i in range(len(NOT_LEAKS))])
def test_role_marker_false_positives(row):
    r = run([row])
    assert r.rejects.height == 0
    assert flags(r, q.ROLE_MARKER_IN_TEXT) == [False]


def test_prefilter_lets_every_hit_through():
    """The Polars prefilter must match every text the precise check flags (else the check would miss it)."""
    prefilter = re.compile(markers.PREFILTER)
    texts = [row.get(k) for _, row, _ in LEAKS for k in ("chosen", "rejected") if isinstance(row.get(k), str)]
    texts += [row["prompt"] for _, row, _ in LEAKS if isinstance(row["prompt"], str)]
    hits = [t for t in texts if markers.find(t) or markers.find(t, whole_transcript_only=True)]
    assert len(hits) >= 12
    assert all(prefilter.search(t) for t in hits)


def test_role_marker_actions_per_place():
    leak = {"prompt": "1+1?", "chosen": "2", "rejected": "3\nHuman: and 2+2?"}
    assert run([leak], role_marker_in_text={"rejected": "reject"}).rejects["reason"].to_list() == [q.ROLE_MARKER_IN_TEXT]
    off = run([{"prompt": "hi", "chosen": "Human: bye"}], role_marker_in_text={"chosen": "off"})
    assert off.rejects.height == 0
    assert flags(off, q.ROLE_MARKER_IN_TEXT) == [False]  # the other places still ran
    flagged = run([{"prompt": "hi", "chosen": "Human: bye"}], role_marker_in_text={"chosen": "flag"})
    assert flagged.rejects.height == 0 and flags(flagged, q.ROLE_MARKER_IN_TEXT) == [True]
    none = run([{"prompt": "hi", "chosen": "Human: bye"}],
               role_marker_in_text={"chosen": "off", "rejected": "off", "prompt": "off"})
    assert flags(none, q.ROLE_MARKER_IN_TEXT) == [None]  # off everywhere: not checked, so unknown


# ------------------------------------------------------------------------------------------------------ scores


def test_tied_scores_flagged_by_default_and_rejectable():
    rows = [{"prompt": "如何选择跑鞋？", "chosen": "看脚型。", "rejected": "买最贵的。", "chosen_score": 3.0, "rejected_score": 3.0},
            {"prompt": "Why is the sky blue?", "chosen": "Rayleigh scattering.", "rejected": "Paint.",
             "chosen_score": 8.0, "rejected_score": 3.0},
            {"prompt": "No scores", "chosen": "a.", "rejected": "b."}]
    r = run(rows)
    assert r.rejects.height == 0
    assert flags(r, q.TIED_SCORES) == [True, False, False]  # null scores: nothing to compare, not tied
    r = run(rows, tied_scores="reject")
    assert r.rejects["reason"].to_list() == [q.TIED_SCORES]
    assert r.rejects["detail"].to_list() == ["chosen_score = rejected_score = 3"]


def test_inverted_scores_flag_reject_swap():
    rows = [{"prompt": "为什么会打喷嚏？", "chosen": "因为有人在想你。", "rejected": "鼻黏膜受刺激时排出异物。",
             "chosen_score": 2.0, "rejected_score": 7.5},
            {"prompt": "Tip for emails?", "chosen": "Lead with the ask.", "rejected": "Write a lot.",
             "chosen_score": 9.0, "rejected_score": 1.0}]
    assert flags(run(rows), q.INVERTED_SCORES) == [True, False]
    rej = run(rows, inverted_scores="reject")
    assert rej.rejects["reason"].to_list() == [q.INVERTED_SCORES]
    assert rej.rejects["detail"][0] == "chosen_score 2 < rejected_score 7.5"
    swapped = run(rows, inverted_scores="swap")
    assert swapped.rejects.height == 0
    row = swapped.kept.row(0, named=True)
    assert (row["chosen"], row["rejected"]) == ("鼻黏膜受刺激时排出异物。", "因为有人在想你。")
    assert (row["chosen_score"], row["rejected_score"]) == (7.5, 2.0)
    assert row[q.FLAG_PREFIX + q.INVERTED_SCORES] is True
    original = make_pairs(rows)
    assert row["pair_id"] == make_pairs([{**rows[0], "chosen": rows[0]["rejected"], "rejected": rows[0]["chosen"]}])["pair_id"][0]
    assert row["pair_id"] != original["pair_id"][0] and row["row_id"] == original["row_id"][0]
    assert swapped.kept.row(1, named=True)["pair_id"] == original["pair_id"][1]  # untouched rows keep their ids
    assert swapped.stats["checks"][q.INVERTED_SCORES]["swapped"] == 1


def test_mostly_inverted_source_warns():
    rows = [{"prompt": f"q{i}", "chosen_score": 1.0, "rejected_score": 2.0, "source": "ranks.jsonl"} for i in range(12)]
    r = run(rows)
    assert any("ranks.jsonl" in w and "ranks" in w for w in r.stats["warnings"])


def test_score_margin_below():
    rows = [{"prompt": "a", "chosen_score": 5.0, "rejected_score": 4.5},
            {"prompt": "b", "chosen_score": 5.0, "rejected_score": 2.0},
            {"prompt": "c", "chosen_score": 5.0, "rejected_score": 5.0}]
    assert flags(run(rows), q.SCORE_MARGIN_BELOW) == [None, None, None]  # off without a margin
    r = run(rows, min_score_margin=1.0)
    assert flags(r, q.SCORE_MARGIN_BELOW) == [True, False, False]  # a tie is tied_scores, not a small margin
    r = run(rows, min_score_margin=1.0, score_margin_below="reject")
    assert r.rejects["reason"].to_list() == [q.SCORE_MARGIN_BELOW]
    assert r.rejects["detail"][0] == "score margin 0.5 < min_score_margin 1.0"


# ------------------------------------------------------------------------------------------ near_identical


@pytest.mark.parametrize(
    ("chosen", "rejected", "hit"),
    [
        ("The capital of France is Paris, on the Seine.", "The capital of France is Paris on the Seine.", True),
        ("Yes, that is correct.", "yes, that is correct.", True),  # case folded: clean's identical check misses it
        ("光合作用是绿色植物利用光能，把二氧化碳和水合成有机物并释放氧气的过程。",
         "光合作用是绿色植物利用光能，把二氧化碳和水合成有机物并释放氧气的过程！", True),
        ("The answer is 42.", "The answer is 24.", False),  # a real (minimal) preference
        ("是的。", "不是。", False),
        ("光合作用是植物利用光能合成有机物的过程。", "光合作用就是植物晒太阳。", False),
        ("Short.", "A much longer and completely different reply.", False),
    ],
)
def test_near_identical_responses(chosen, rejected, hit):
    r = run([{"prompt": "p", "chosen": chosen, "rejected": rejected}])
    assert flags(r, q.NEAR_IDENTICAL_RESPONSES) == [hit]
    rej = run([{"prompt": "p", "chosen": chosen, "rejected": rejected}], near_identical_responses="reject")
    assert rej.rejects.height == int(hit)


def test_near_identical_threshold_is_configurable():
    row = {"prompt": "p", "chosen": "The answer is 42.", "rejected": "The answer is 24."}
    assert flags(run([row], near_identical_threshold=0.8), q.NEAR_IDENTICAL_RESPONSES) == [True]


# ---------------------------------------------------------------------------------------------------- pii

PII_CASES = [
    ("Contact me at john.smith@gmail.com for details.", ["email"]),
    ("我的邮箱是zhangsan@163.com，有事联系。", ["email"]),
    ("我的手机号是13800138000，晚上打。", ["phone"]),
    ("电话：+86 139-1234-5678", ["phone"]),
    ("办公室电话 010-62345678", ["phone"]),
    ("Call me at (415) 555-2671 or +44 20 7946 0958.", ["phone"]),
    ("身份证号11010519491231002X，请核对。", ["cn_id"]),
    ("身份证：440304199001011233", ["cn_id"]),
    ("Visa card 4111 1111 1111 1111, exp 12/29", ["bank_card"]),
    ("银行卡号：6217000010001234569", ["bank_card"]),
    ("My home IP is 58.32.10.201, please whitelist it.", ["ip"]),
    ("服务器公网地址 2400:3200::1 已开放", ["ip"]),
    # false positives: documentation and exercise data, other numbers, arithmetic, versions, dates, code
    ("Send it to user@example.com or admin@mail.test.", []),
    ("正则练习：a@d.co, b@d.co, f@w.co", []),
    ("Use the @property decorator and pip install pkg@1.2", []),
    ("客服热线 400-820-8820，免费电话 800-810-8888", []),
    ("订单号：13812345678 已发货", []),
    ("Order #15012345678 shipped; tracking number 4111111111111111", []),
    ("快递单号 773012345678901234", []),
    ("timestamp 1701388800000 and 1701388800", []),
    ("日期 2023-12-01 12:30:45，版本 20231201123045", []),
    ("84834150134 - 6778576 = -16666579378", []),
    ("13800138000 + 1 = 13800138001", []),
    ("身份证号110105194912310021（校验位错误）", []),
    ("卡号 6222 0202 0011 2345 678 校验不过", []),
    ("Servers 203.0.113.5, 192.168.1.1, 10.0.0.8, 127.0.0.1 and DNS 8.8.8.8 / 114.114.114.114", []),
    ("Upgrade to version 10.2.3.4 now; or v1.2.3.4; Python 3.11.4", []),
    ("2001:db8::1 is documentation; std::vector<int>; 12:30:45", []),
    ("```python\nx = 13800138000 * 2\n```", []),
    ("圆周率是3.14159265358979", []),
]


@pytest.mark.parametrize(("text", "kinds"), PII_CASES, ids=[f"pii-{i}" for i in range(len(PII_CASES))])
def test_pii_kinds(text, kinds):
    assert pii.kinds_in(text) == kinds
    if kinds:
        assert re.search(pii.PREFILTER, text)  # the Polars prefilter lets it through


def test_pii_flag_redact_reject():
    rows = [
        {"prompt": "怎么联系你？", "chosen": "请拨打13800138000或发邮件到zhang.san@qq.com。", "rejected": "不告诉你。"},
        {"prompt": "My email is jane.doe@outlook.com, reply there", "chosen": "Sure, I will.", "rejected": "No."},
        {"prompt": "What is 2+2?", "chosen": "4.", "rejected": "5."},
    ]
    r = run(rows)
    assert r.rejects.height == 0
    assert flags(r, q.PII) == [True, True, False]
    assert r.kept["quality_pii_kinds"].to_list() == [["email", "phone"], ["email"], None]
    assert r.stats["checks"][q.PII]["kinds"] == {"email": 2, "phone": 1}
    assert "13800138000" not in json.dumps(r.stats, ensure_ascii=False)  # the report shows kinds, never values

    red = run(rows, pii="redact")
    assert red.rejects.height == 0
    assert red.kept["chosen"][0] == "请拨打[PHONE]或发邮件到[EMAIL]。"
    assert red.kept["prompt"][1][0]["content"] == "My email is [EMAIL], reply there"
    before = make_pairs(rows)
    assert red.kept["pair_id"][0] != before["pair_id"][0]  # the content hash follows the new text
    assert red.kept["prompt_id"][1] != before["prompt_id"][1]
    assert red.kept["row_id"].to_list() == before["row_id"].to_list()
    assert red.kept["pair_id"][2] == before["pair_id"][2]
    assert red.stats["checks"][q.PII]["redacted"] == 2

    rej = run(rows, pii="reject", pii_kinds=["phone"])
    assert rej.rejects["reason"].to_list() == [q.PII]
    assert rej.rejects["detail"][0] == "phone in chosen"


# -------------------------------------------------------------------------------------------- truncated_reply


def _long(stem: str, n: int) -> str:
    return (stem * (n // len(stem) + 1))[:n]


TRUNCATED = [
    ("Here is the code:\n```java\npublic class A {\n  void f() {\n    thi", "open code fence"),
    ("配置如下：\n~~~yaml\nkey: value\nother:", "open code fence"),
    ("以下是代码：\n```python\nfor i in range(3):\n    print(i", "open code fence"),
    (_long("Parents liked the clear feedback. ", 300) + " The", "dangling"),
    ("社会孤立会影响健康。Holt-Lunstad等人（2010）进行的一项研究发现，", "dangling"),
    ("运动对身体有很多好处，比如改善心肺功能。\n\n运动是一种", "dangling"),
    ("The steps are as follows:", "dangling"),
    (_long("word ", 1000).rstrip() + "x", "round"),
    (_long("这是一个很长的回答没有标点", 1024), "round"),
]
NOT_TRUNCATED = [
    "Paris", "是的", "Answer: B", "2 + 2 = 4", "输出：正面", "Option 2", "- Big box stores",
    "Here:\n```python\nprint(1)\n```\nDone.", "Install it:\n\n```npm install terminal-in-react --save```\n\nThen run it.",
    # a malformed fence, but the reply ends on a finished sentence (real zh demo row): not a cut
    "以下是函数：\n```\nfunc f() {\n}\")\n在这个函数中，我们返回结果。希望这有所帮助！",
    _long("A complete sentence. ", 1000).rstrip()[:999] + ".",
    _long("完整的句子。", 999) + "。",
    "🌟📚无论是编程还是烹饪，总有适合你的！#在线学习#教育",
    "好的，谢谢你~~~",  # tildes in casual Chinese, not a fence
    "Use ~~~ or ``` to fence code; here `x = 1` is inline.\n\n```\ncode\n```\nThat's all.",
]


@pytest.mark.parametrize(("reply", "why"), TRUNCATED, ids=[f"cut-{i}" for i in range(len(TRUNCATED))])
def test_truncated_reply_found(reply, why):
    r = run([{"prompt": "p", "chosen": reply, "rejected": "Fine."}])
    assert flags(r, q.TRUNCATED_REPLY) == [True]
    assert r.rejects.height == 0  # flagged by default
    detail = r.stats["examples"][q.TRUNCATED_REPLY][0]["detail"]
    assert detail.startswith("chosen ") and why.split()[0] in detail
    assert run([{"prompt": "p", "chosen": reply, "rejected": "Fine."}], truncated_reply="reject").rejects.height == 1


@pytest.mark.parametrize("reply", NOT_TRUNCATED, ids=[f"whole-{i}" for i in range(len(NOT_TRUNCATED))])
def test_truncated_reply_false_positives(reply):
    r = run([{"prompt": "p", "chosen": "Fine.", "rejected": reply}])
    assert flags(r, q.TRUNCATED_REPLY) == [False]


def test_truncated_at_a_source_cap():
    """Several unpunctuated replies of one source ending at its longest length: the source cut them there."""
    cut = [_long(f"第{i}段内容很长很长", 333) for i in range(3)]
    rows = [{"prompt": f"q{i}", "chosen": c, "source": "capped.jsonl"} for i, c in enumerate(cut)]
    rows += [{"prompt": "other", "chosen": _long("第段内容很长很长", 333), "source": "other.jsonl"}]
    r = run(rows)
    assert flags(r, q.TRUNCATED_REPLY) == [True, True, True, False]  # 333 is not round; only the capped source
    assert "longest reply" in r.stats["examples"][q.TRUNCATED_REPLY][0]["detail"]


# ------------------------------------------------------------------------------------------ over_max_tokens


@pytest.fixture(scope="module")
def template_tokenizer(tmp_path_factory):
    """A real transformers tokenizer with a Gemma-style chat template (curate's tiny-model builder), saved."""
    from curate.train.tiny import build_tokenizer

    texts = ["Explain photosynthesis.", "光合作用是植物利用光能合成有机物的过程。", "hello world"] * 20
    tok = build_tokenizer(texts, vocab_size=400)
    path = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(path)
    return path


def _word_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


def test_over_max_tokens_raw_tokenizer(tmp_path):
    path = _word_tokenizer(tmp_path)
    rows = [{"prompt": "a a a", "chosen": "a a", "rejected": "b"}, {"prompt": "一 二", "chosen": "三", "rejected": "四"}]
    r = run(rows, tokenizer=str(path), max_tokens=4)
    assert r.rejects["reason"].to_list() == [q.OVER_MAX_TOKENS]
    assert r.rejects["quality_tokens"].to_list() == [5] and r.kept["quality_tokens"].to_list() == [3]
    assert r.stats["tokens"]["over"] == 1
    assert flags(r, q.OVER_MAX_TOKENS) == [False]
    assert flags(run(rows), q.OVER_MAX_TOKENS) == [None, None]  # no tokenizer: not checked


def test_over_max_tokens_counts_like_curate_train(template_tokenizer):
    """The count is the pre-flight's: chat template applied (TRL), BOS/EOS added where TRL adds them."""
    import datasets
    from transformers import AutoTokenizer

    from curate.train.preflight import check

    rows = [{"prompt": "Explain photosynthesis.", "system": "Be brief.", "chosen": "Plants make sugar from light.",
             "rejected": "No."},
            {"prompt": [{"role": "user", "content": "光合作用是什么？"}, {"role": "assistant", "content": "一种过程。"},
                        {"role": "user", "content": "详细一点"}],
             "chosen": "光合作用是植物利用光能合成有机物的过程。", "rejected": "不知道"}]
    r = run(rows, tokenizer=str(template_tokenizer), max_tokens=10_000)
    ours = r.kept["quality_tokens"].to_list()
    tok = AutoTokenizer.from_pretrained(str(template_tokenizer))
    from curate.export import to_trl

    for i, n in enumerate(ours):
        trl_row = to_trl(make_pairs([rows[i]]).lazy()).collect().select("prompt", "chosen", "rejected").to_dicts()
        pre = check(datasets.Dataset.from_list(trl_row), tok, 10_000)
        assert n == pre.length_max, (i, n, pre.length_max)
    limit = min(ours)
    cut = run(rows, tokenizer=str(template_tokenizer), max_tokens=limit)
    assert cut.kept.height == 1 and cut.rejects["reason"].to_list() == [q.OVER_MAX_TOKENS]
    assert f"max_tokens {limit}" in cut.rejects["detail"][0]


def test_over_max_tokens_from_a_train_preset(template_tokenizer):
    """train_preset gives max_tokens (orpo.max_length) and the system policy; the tokenizer path names the model."""
    from curate.train.spec import load_preset

    limit = load_preset("tiny-cpu")["orpo"]["max_length"]
    long_reply = "光合作用 long words " * limit  # well over the limit in any tokenizer
    rows = [{"prompt": "短", "chosen": "好。", "rejected": "坏。"}, {"prompt": "长", "chosen": long_reply, "rejected": "短"}]
    r = run(rows, train_preset="tiny-cpu", tokenizer=str(template_tokenizer))
    assert r.stats["tokens"]["max_tokens"] == limit and r.stats["tokens"]["from"] == "preset tiny-cpu"
    assert r.rejects["reason"].to_list() == [q.OVER_MAX_TOKENS]
    with pytest.raises(ConfigError, match="train_preset"):
        run(rows, train_preset="no-such-preset", tokenizer=str(template_tokenizer))
    with pytest.raises(ConfigError, match="can't be loaded offline"):
        run(rows, tokenizer="/nonexistent/tokenizer", max_tokens=10)


# ------------------------------------------------------------------------------------------ stage behaviour


def test_conservation_columns_and_first_reason_wins():
    rows = [
        {"prompt": "p1", "chosen": "Human: hi", "rejected": "x.", "chosen_score": 1.0, "rejected_score": 1.0},
        {"prompt": "p2", "chosen": "ok.", "rejected": "no.", "chosen_score": 2.0, "rejected_score": 2.0},
        CLEAN,
    ]
    r = run(rows, tied_scores="reject")
    assert r.rows_in == 3 and r.kept.height == 1
    assert r.rejects["reason"].to_list() == [q.ROLE_MARKER_IN_TEXT, q.TIED_SCORES]
    # the rejected row still shows every check that fired
    assert r.rejects.row(0, named=True)[q.FLAG_PREFIX + q.TIED_SCORES] is True
    assert set(q.ADDS) <= set(r.kept.columns) and set(q.ADDS) <= set(r.rejects.columns)
    assert r.kept.columns[: len(make_pairs([CLEAN]).columns)] == make_pairs([CLEAN]).columns
    assert r.rejects.columns[-3:] == ["stage", "reason", "detail"]


def test_runs_twice_and_is_deterministic():
    rows = [CLEAN, {"prompt": "p", "chosen": "Human: x", "rejected": "y."}]
    first = q.run(make_pairs(rows), q.Config()).collect()
    again = q.run(first.kept, q.Config()).collect()  # stale quality columns are replaced, not duplicated
    assert again.kept.equals(first.kept)
    assert first.kept.equals(q.run(make_pairs(rows), q.Config()).collect().kept)


def test_config_from_pipeline_table():
    cfg = build(q.Config, {"role_marker_in_text": {"rejected": "reject"}, "pii": "redact"}, "[quality]")
    assert cfg.role_marker_in_text == {"chosen": "reject", "rejected": "reject", "prompt": "flag"}
    for table, message in [
        ({"role_marker_in_text": {"reply": "reject"}}, "unknown place"),
        ({"role_marker_in_text": {"chosen": "drop"}}, "drop"),
        ({"pii_kinds": ["passport"]}, "unknown kind"),
        ({"inverted_scores": "flip"}, "flip"),
        ({"max_tokens": 8192}, "needs a tokenizer"),
        ({"near_identical_threshold": 1.5}, "near_identical_threshold"),
        ({"typo": 1}, "unknown key"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build(q.Config, table, "[quality]")


def test_length_bias_per_source_and_language():
    rows = [{"prompt": "为什么？", "chosen": "因为这样所以那样。", "rejected": "不知道。", "source": "zh.jsonl"} for _ in range(3)]
    rows += [{"prompt": "Why?", "chosen": "No.", "rejected": "Because of this and that.", "source": "en.jsonl"}]
    rows += [{"prompt": "How?", "chosen": "Like this, carefully.", "rejected": "Badly.", "source": "en.jsonl"}]
    lb = run(rows).stats["length_bias"]
    assert lb["overall"]["pairs"] == 5 and lb["overall"]["chosen_longer"] == 4
    assert lb["by_lang"]["zh"]["share_chosen_longer"] == 1.0
    assert lb["by_lang"]["en"]["share_chosen_longer"] == 0.5
    assert {(g["source"], g["lang"]) for g in lb["by_source"]} == {("en.jsonl", "en"), ("zh.jsonl", "zh")}
    # with the language stage's labels, they are used (zh-Hant counts as zh)
    labelled = make_pairs(rows).with_columns(pl.lit("zh-Hant").alias("lang"))
    stats = q.run(labelled, q.Config()).stats
    assert stats["length_bias_by"] == "lang" and set(stats["length_bias"]["by_lang"]) == {"zh"}


def test_html_section_shows_counts_examples_and_chart():
    rows = [{"prompt": "p", "chosen": "Human: leaked", "rejected": "x."},
            {"prompt": "q", "chosen": "邮箱zhangsan@163.com", "rejected": "不行。"}, CLEAN]
    html = q.html_section(run(rows).stats)
    assert "role_marker_in_text" in html and "Examples: role_marker_in_text" in html and "Examples: pii" in html
    assert "Length bias" in html and "<svg" in html and "zhangsan" not in html


def test_default_pipeline_on_the_llamafactory_demo(tmp_path):
    """New user, default pipeline: the quality section is in report.html, nothing of the demo is rejected by it
    (every default reject is checked by hand to be a leak), and its known defects are flagged."""
    from curate import config
    from curate.runner import run_pipeline

    demo = shared_data("llamafactory_dpo_demo")
    report = run_pipeline(config.load(None), [demo / "dpo_en_demo.json", demo / "dpo_zh_demo.json"], tmp_path,
                          export=False)
    step = next(s for s in report["steps"] if s["stage"] == "quality")
    assert step["rows_in"] == 600 and step["rejected"] == 0
    checks = step["stats"]["checks"]
    assert checks[q.ROLE_MARKER_IN_TEXT]["by_place"]["rejected"] == 1  # "…\n\nUser:\n不用了，谢谢。" (zh row 96)
    assert checks[q.TRUNCATED_REPLY]["kept_flagged"] >= 8
    assert checks[q.PII]["fired"] == 0  # math results and regex exercises are not personal data
    from curate.report import render

    html = render({**report, "export": {}} if "export" in report else report)
    assert "Stage: quality" in html and "Length bias" in html and "Examples: truncated_reply" in html
