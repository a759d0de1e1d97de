"""Language stage: labels per text (zh-Hans / zh-Hant / en / mixed / other), the pair rule, mismatch policy,
script conversion, stats and the report section."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

from curate import langid
from curate.config import build
from curate.errors import ConfigError
from curate.stages import language

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lang" / "labelled.jsonl"
LABELLED = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]

ZH_Q = "请问如何提高睡眠质量？我最近总是失眠，晚上很难入睡。"
ZH_A = "你可以试试每天固定时间睡觉，睡前不要看手机，也不要喝咖啡。"
EN_Q = "How can I improve the quality of my sleep? I have trouble falling asleep at night."
EN_A = "Try going to bed at the same time every day, and avoid screens and coffee before bed."
HANT_Q = "請問如何提高睡眠品質？我最近總是失眠，晚上很難入睡。"
HANT_A = "你可以試試每天固定時間睡覺，睡前不要看手機，也不要喝咖啡。"


@pytest.mark.parametrize("case", LABELLED, ids=[f"{c['label']}-{c['kind']}-{i}" for i, c in enumerate(LABELLED)])
def test_labelled_text(case):
    assert langid.detect([case["text"]]) == [case["label"]], langid.explain(case["text"])


def test_fixture_covers_every_label_and_kind():
    labels = {c["label"] for c in LABELLED}
    kinds = {c["kind"] for c in LABELLED}
    assert labels == set(langid.LABELS)
    assert {"short", "code", "noise", "names", "mixed", "terms"} <= kinds


def test_code_urls_numbers_math_do_not_make_chinese_english():
    text = (
        "下面是完整的实现：\n```python\ndef quick_sort(arr):\n    if len(arr) <= 1:\n        return arr\n"
        "    pivot = arr[len(arr) // 2]\n    left = [x for x in arr if x < pivot]\n    return quick_sort(left)\n```\n"
        "参考 https://en.wikipedia.org/wiki/Quicksort ，时间复杂度是 $O(n \\log n)$。"
    )
    assert langid.detect([text]) == ["zh-Hans"]
    # the same code with an English explanation is English
    assert langid.detect([text.replace("下面是完整的实现：", "Here is the full implementation of the function:")
                          .replace("参考", "See").replace("，时间复杂度是", ", and the complexity is")]) == ["en"]


def test_traditional_vs_simplified_by_round_trip():
    simp, trad = langid.script_tables()
    assert "这" in simp and "這" in trad
    assert "台" not in simp  # kept by the Hong Kong standard: no evidence of Simplified
    assert langid.opencc_script("這是我們的學校") == "zh-Hant"
    assert langid.opencc_script("这是我们的学校") == "zh-Hans"
    assert langid.opencc_script("大家好") == "zh-Hans"  # neutral text → neutral_script


def test_neutral_script_setting():
    assert langid.detect(["大家好"], langid.Params(neutral_script="zh-Hant")) == ["zh-Hant"]


def test_null_and_empty_texts_are_other():
    assert langid.detect([None, "", "   ", "42"]) == ["other"] * 4


def _pair(prompt: str, chosen: str, rejected: str = "", **kw) -> dict:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected or chosen + " (worse)", **kw}


def test_pair_rule_and_mismatch_reject(pairs_factory):
    df = pairs_factory(
        [
            _pair(ZH_Q, ZH_A),
            _pair(EN_Q, EN_A),
            _pair(ZH_Q, EN_A),  # Chinese question answered in English
            _pair(EN_Q, ZH_A),  # and the reverse
            _pair(ZH_Q, ZH_A, EN_A),  # English *rejected* reply: fine
        ]
    )
    res = language.run(df, language.Config()).collect()
    assert res.kept["lang"].to_list() == ["zh-Hans", "en", "zh-Hans"]
    assert res.reasons() == {language.LANGUAGE_MISMATCH: 2}
    assert res.rejects["detail"].to_list() == [
        "prompt is zh-Hans, chosen reply is en",
        "prompt is en, chosen reply is zh-Hans",
    ]
    assert set(res.rejects["stage"]) == {"language"}
    assert res.kept["lang_rejected"].to_list()[-1] == "en"
    assert res.rows_in == df.height


def test_mismatch_flag_keeps_and_marks(pairs_factory):
    df = pairs_factory([_pair(ZH_Q, EN_A), _pair(ZH_Q, ZH_A)])
    res = language.run(df, language.Config(mismatch="flag")).collect()
    assert res.rejects.height == 0
    assert res.kept["lang"].to_list() == ["mismatch", "zh-Hans"]
    assert res.stats["mismatch"] == 1 and res.stats["pairs"] == {"zh-Hans": 1, "mismatch": 1}


def test_mismatch_exemptions(pairs_factory):
    df = pairs_factory(
        [
            _pair("请把下面这句话翻译成英文：我今天很高兴，因为我通过了考试。", "I am very happy today because I passed the exam."),
            _pair(ZH_Q, "Tom and Ralph"),  # too short to say anything about its language
            _pair(HANT_Q, ZH_A),  # Traditional question, Simplified answer: same language
            _pair(ZH_Q, "这个问题 is really about your daily habits, 所以 you should change them slowly 慢慢来."),
        ]
    )
    res = language.run(df, language.Config()).collect()
    assert res.rejects.height == 0
    assert res.kept["lang"].to_list() == ["zh-Hans", "zh-Hans", "zh-Hant", "zh-Hans"]
    assert res.kept["lang_chosen"].to_list()[3] == "mixed"
    # without the exemption pattern the translation pair mismatches
    res = language.run(df, language.Config(mismatch_exempt="")).collect()
    assert res.reasons() == {language.LANGUAGE_MISMATCH: 1}


def test_code_only_prompt_takes_the_chosen_language(pairs_factory):
    df = pairs_factory([_pair("```python\nprint(1 + 1)\n```", ZH_A)])
    res = language.run(df, language.Config()).collect()
    assert res.kept.row(0, named=True)["lang_prompt"] == "other"
    assert res.kept.row(0, named=True)["lang"] == "zh-Hans"


def test_prompt_language_uses_user_turns_only(pairs_factory):
    prompt = [
        {"role": "system", "content": "You are a helpful assistant. Answer the user's questions carefully."},
        {"role": "user", "content": ZH_Q},
        {"role": "assistant", "content": ZH_A},
        {"role": "user", "content": "还有别的办法吗？"},
    ]
    df = pairs_factory([{"prompt": prompt, "chosen": ZH_A, "rejected": "不知道。"}])
    assert language.run(df, language.Config()).collect().kept["lang_prompt"].to_list() == ["zh-Hans"]


def test_lang_detail_is_json_with_shares(pairs_factory):
    df = pairs_factory([_pair(ZH_Q, ZH_A, "Bonjour, je ne sais pas du tout comment vous aider avec cette question.")])
    row = language.run(df, language.Config()).collect().kept.row(0, named=True)
    detail = json.loads(row["lang_detail"])
    assert detail["prompt"]["by"] == "script" and detail["prompt"]["han"] == 1.0 and detail["prompt"]["simp"] > 0
    assert detail["rejected"]["by"] == "lingua" and row["lang_rejected"] == "other"
    assert row["script_converted"] is None


def test_convert_t2s_rewrites_text_relabels_and_recomputes_ids(pairs_factory):
    df = pairs_factory([_pair(HANT_Q, HANT_A), _pair(ZH_Q, ZH_A)])
    res = language.run(df, language.Config(convert="t2s")).collect()
    converted, untouched = res.kept.row(0, named=True), res.kept.row(1, named=True)
    assert converted["prompt"][0]["content"] == "请问如何提高睡眠品质？我最近总是失眠，晚上很难入睡。"
    assert converted["chosen"].startswith("你可以试试每天固定时间睡觉")
    assert converted["lang"] == converted["lang_prompt"] == converted["lang_chosen"] == "zh-Hans"
    assert converted["script_converted"] == "t2s"
    old_id = df.row(0, named=True)["pair_id"]
    assert converted["pair_id"] != old_id and json.loads(converted["lang_detail"])["converted_from"] == old_id
    from curate.schema import with_ids

    recomputed = with_ids(res.kept.head(1)).collect().row(0, named=True)
    assert recomputed["pair_id"] == converted["pair_id"] and recomputed["prompt_id"] == converted["prompt_id"]
    assert untouched["script_converted"] is None and untouched["pair_id"] == df.row(1, named=True)["pair_id"]
    assert res.stats["converted"] == 1


def test_convert_s2t(pairs_factory):
    df = pairs_factory([_pair(ZH_Q, ZH_A, system="你是一个乐于助人的助手。")])
    row = language.run(df, language.Config(convert="s2t")).collect().kept.row(0, named=True)
    assert row["system"] == "你是一個樂於助人的助手。"
    assert row["lang"] == "zh-Hant" and row["script_converted"] == "s2t"


def test_stats_mix_per_source(pairs_factory):
    df = pairs_factory(
        [_pair(ZH_Q, ZH_A, source="a.jsonl"), _pair(EN_Q, EN_A, source="a.jsonl"), _pair(EN_Q, EN_A, source="b.jsonl")]
    )
    stats = language.run(df, language.Config()).stats
    assert stats["pairs"] == {"zh-Hans": 1, "en": 2}
    assert stats["by_source"] == {"a.jsonl": {"zh-Hans": 1, "en": 1}, "b.jsonl": {"en": 1}}
    assert stats["prompt"] == {"zh-Hans": 1, "en": 2}
    assert stats["methods"]["script"] == 9
    json.dumps(stats)  # JSON-able


def test_lazy_in_lazy_out_and_deterministic(pairs_factory):
    df = pairs_factory([_pair(ZH_Q, ZH_A), _pair(EN_Q, EN_A), _pair(ZH_Q, EN_A), _pair(HANT_Q, HANT_A)] * 3)
    r1 = language.run(df.lazy(), language.Config())
    assert isinstance(r1.kept, pl.LazyFrame) and isinstance(r1.rejects, pl.LazyFrame)
    a, b = r1.collect(), language.run(df, language.Config()).collect()
    assert a.kept.equals(b.kept) and a.rejects.equals(b.rejects)
    assert a.kept.columns == [*df.columns, *language.ADDS]
    assert a.rejects.columns == [*df.columns, *language.ADDS, "stage", "reason", "detail"]


def test_config_from_toml_table_and_errors():
    cfg = build(language.Config, {"mismatch": "flag", "convert": "t2s", "lingua_languages": ["en", "fr"]}, "[language]")
    assert cfg.mismatch == "flag" and cfg.lingua_languages == ("en", "fr")
    with pytest.raises(ConfigError, match="mixed_min"):
        build(language.Config, {"mixed_min": 0.9, "zh_min": 0.5}, "[language]")
    with pytest.raises(ConfigError, match="xx"):
        build(language.Config, {"lingua_languages": ["xx"]}, "[language]")
    with pytest.raises(ConfigError, match="mismatch"):
        build(language.Config, {"mismatch": "maybe"}, "[language]")


def test_html_section(pairs_factory):
    df = pairs_factory([_pair(ZH_Q, ZH_A, source="a.jsonl"), _pair(EN_Q, EN_A, source="b.jsonl")])
    html = language.html_section(language.run(df, language.Config()).stats)
    assert "<svg" in html and "Language mix per source" in html and "a.jsonl" in html


SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "llamafactory_dpo_demo"


def _demo_frame(name: str) -> pl.DataFrame:
    path = SHARED / name
    if not path.exists():
        if os.environ.get("CI"):
            raise AssertionError(f"shared sample data missing at {path}")
        pytest.skip(f"{path} not present (outside CI)")
    rows = json.loads(path.read_text(encoding="utf-8"))
    return pl.DataFrame(
        {
            "source": [name] * len(rows),
            "prompt": [
                [{"role": "user", "content": m["value"]} for m in r["conversations"] if m["from"] == "human"]
                for r in rows
            ],
            "chosen": [r["chosen"]["value"] for r in rows],
            "rejected": [r["rejected"]["value"] for r in rows],
        }
    )


@pytest.mark.parametrize("name, lang", [("dpo_zh_demo.json", "zh-Hans"), ("dpo_en_demo.json", "en")])
def test_shared_demo_prompts_are_labelled_by_their_language(name, lang):
    """Real data: ≥ 95% of each file's prompts get the file's language; the rest are mixed/other (Chinese
    instructions quoting Swedish or Japanese, English ones quoting Hindi) — never the other of zh/en."""
    df = _demo_frame(name)
    res = language.run(df, language.Config(mismatch="flag")).collect()
    counts = res.stats["prompt"]
    assert counts.get(lang, 0) >= 0.95 * df.height, counts
    wrong = "en" if lang == "zh-Hans" else "zh-Hans"
    assert counts.get(wrong, 0) == 0 and counts.get("zh-Hant", 0) == 0, counts


def test_long_code_first_reply_is_read_in_full():
    """Nothing but code in the first max_chars: the whole text decides (the Chinese explanation after it)."""
    code = "```python\n" + "\n".join(f"value_{i} = compute(value_{i - 1}, step={i})" for i in range(1, 60)) + "\n```\n"
    text = code + "上面的代码逐步计算每个值，最后一步的结果就是我们需要的答案。"
    assert len(code) > langid.Params().max_chars
    row = langid.explain(text)
    assert row["lang"] == "zh-Hans" and row["by"] == "full-text"
    assert langid.detect([code]) == ["other"]  # code only, even in full


def test_relabelling_a_labelled_frame_replaces_the_columns(pairs_factory):
    df = pairs_factory([_pair(ZH_Q, ZH_A), _pair(EN_Q, EN_A)])
    once = language.run(df, language.Config()).collect().kept
    twice = language.run(once, language.Config()).collect().kept
    assert twice.columns == once.columns and twice.equals(once)


# --- the pair's language is the language of its instruction (pair_rule = "instruction") ---------------------------
FR = ("Le chat est sur la table depuis ce matin. Il ne veut pas descendre, même quand on l'appelle pour manger, "
      "et il regarde les oiseaux par la fenêtre pendant des heures.")
FR2 = ("Sa maîtresse pense qu’il est malade, mais le vétérinaire dit qu’il est simplement paresseux et qu’il "
       "préfère dormir au soleil plutôt que de jouer avec les autres chats du quartier.")
ZH_PASSAGE = ("人工智能正在改变我们的生活方式。从智能手机上的语音助手到自动驾驶汽车，这项技术已经渗透到日常生活的方方面面。"
              "专家认为，未来十年内，人工智能将在医疗、教育和交通等领域发挥更大的作用。")
INSTRUCTION_CASES = [
    # (prompt, chosen, pair lang, rule, prompt as a whole)
    ("Translate the following French text into English:\n\n" + FR,
     "The cat has been on the table since this morning. It won't come down, even when called to eat.",
     "en", "translation", "en"),
    ("Summarize this French paragraph in one sentence:\n" + FR + " " + FR2,
     "A lazy cat spends the day on the table watching birds and refuses to come down.", "en", "instruction", "other"),
    ("Explain the grammar of « " + FR + " " + FR2 + " »",
     "The first sentence uses the present tense with depuis for an action still going on.", "en", "instruction",
     "other"),
    ("请把这句日语翻译成中文：「今日はとても良い天気ですね。公園へ散歩に行きましょうか。」", "今天天气真好啊。我们去公园散步吧？",
     "zh-Hans", "translation", "other"),
    ("下面这段日文是什么意思？\n東京は日本の首都です。たくさんの人が住んでいて、毎日とても賑やかです。",
     "东京是日本的首都，住着很多人，每天都很热闹。", "zh-Hans", "instruction", "other"),
    ("这句韩语是什么意思？“안녕하세요, 만나서 반갑습니다. 저는 대학생입니다.”", "意思是：你好，很高兴见到你，我是大学生。",
     "zh-Hans", "instruction", "other"),
    ("這句韓語是什麼意思？「감사합니다, 정말 도움이 많이 됐어요.」", "意思是：謝謝，真的幫了我很多忙。", "zh-Hant", "instruction",
     "other"),
    # the instruction itself is in another language: other
    (("次の英文を日本語に訳してください：「The weather is really nice today, so let's go for a walk in the park after "
      "lunch.」"), "今日は本当に天気がいいので、昼食の後に公園を散歩しましょう。", "other", "instruction", "other"),
    ("다음 문장을 영어로 번역해 주세요: “오늘은 날씨가 정말 좋네요.”", "The weather is really nice today.", "other", "instruction",
     "other"),
    ("Traduisez cette phrase en anglais : « Je voudrais réserver une table pour deux personnes ce soir. »",
     "I would like to book a table for two tonight.", "other", "instruction", "other"),
    ("Quelle est la capitale de l'Australie ? Beaucoup de gens pensent que c'est Sydney.",
     "La capitale de l'Australie est Canberra.", "other", "instruction", "other"),
    # only quoted text: the reply says which language the task is in
    ('"Carpe diem, quam minimum credula postero."',
     "It is Latin, from Horace: seize the day, trusting as little as possible in tomorrow.", "en", "reply", "other"),
    # an English task about a Chinese passage, answered in English: no mismatch
    ("Summarize the following passage in one English sentence:\n" + ZH_PASSAGE,
     "Experts expect AI, already part of daily life, to play a bigger role in medicine, education and transport.",
     "en", "instruction", "zh-Hans"),
    ("请用一句话总结下面这段话：\n" + ZH_PASSAGE, "人工智能已深入日常生活，未来将在更多领域发挥作用。", "zh-Hans", "prompt",
     "zh-Hans"),
]


@pytest.mark.parametrize("prompt, chosen, lang, rule, whole", INSTRUCTION_CASES,
                         ids=[f"{c[2]}-{c[3]}-{i}" for i, c in enumerate(INSTRUCTION_CASES)])
def test_pair_takes_the_language_of_its_instruction(pairs_factory, prompt, chosen, lang, rule, whole):
    df = pairs_factory([_pair(prompt, chosen)])
    res = language.run(df, language.Config()).collect()
    assert res.rejects.height == 0
    row = res.kept.row(0, named=True)
    assert (row["lang"], json.loads(row["lang_detail"])["rule"], row["lang_prompt"]) == (lang, rule, whole)
    # the prompt-only rule labels the pair by the prompt as a whole (and rejects the English-for-Chinese pair)
    old = language.run(df, language.Config(pair_rule="prompt")).collect()
    if whole in ("zh-Hans", "zh-Hant", "en") and lang != whole:
        assert old.reasons() == {language.LANGUAGE_MISMATCH: 1}
    else:
        assert old.kept["lang"].to_list() == [whole]


def test_instruction_rules_are_counted(pairs_factory):
    df = pairs_factory([_pair(p, c) for p, c, *_ in INSTRUCTION_CASES] + [_pair(ZH_Q, ZH_A), _pair(EN_Q, EN_A)])
    st = language.run(df, language.Config()).collect().stats
    assert st["pair_rule"] == "instruction"
    assert st["rules"] == {"prompt": 3, "translation": 2, "instruction": 10, "reply": 1}
    assert st["relabelled"] == {
        "instruction": {"mismatch→en": 1, "other→en": 2, "other→zh-Hans": 2, "other→zh-Hant": 1},
        "reply": {"other→en": 1},
        "translation": {"other→zh-Hans": 1},
    }
    assert st["pairs"]["other"] == 4 and st["mismatch"] == 0
    html = language.html_section(st)
    assert "How each pair&#x27;s language was decided" in html and "mismatch→en" in html


def test_a_mixed_prompt_never_becomes_other(pairs_factory):
    # a Japanese opening line in a mixed prompt: the instruction rule may only move mixed to zh / en
    prompt = ("ありがとう。\n我最近在学习 machine learning，但是 the math is really hard for me，尤其是线性代数和概率论这两门"
              "课程，我应该怎么安排每天的学习计划和复习时间才能在期末考试中取得好成绩呢？ Could you give me some advice about it?")
    df = pairs_factory([_pair(prompt, "你可以每天先复习线性代数，再做概率论的练习题。")])
    row = language.run(df, language.Config()).collect().kept.row(0, named=True)
    assert row["lang_prompt"] == "mixed" and row["lang"] == "mixed"


def test_instruction_rule_on_multi_turn_and_empty_prompts(pairs_factory):
    turns = [{"role": "user", "content": "Can you help me with a French text?"},
             {"role": "assistant", "content": "Of course, please paste it."},
             {"role": "user", "content": FR + " " + FR2}]
    df = pairs_factory([_pair(turns, "It describes a lazy cat that watches birds all day."),
                        _pair("```python\nprint(1 + 1)\n```", ZH_A)])
    res = language.run(df, language.Config()).collect()
    rows = res.kept.to_dicts()
    assert rows[0]["lang"] == "en" and json.loads(rows[0]["lang_detail"])["rule"] == "instruction"
    assert rows[1]["lang"] == "zh-Hans" and json.loads(rows[1]["lang_detail"])["rule"] == "reply_for_empty_prompt"


def test_labels_stream_in_morsels_in_row_order(pairs_factory):
    """The stage collects labels with the streaming engine in 2,000-row morsels: across many morsels, with texts
    each second pass resolves (lingua, OpenCC round trip, full text after a long code block, instruction
    segments), the labels are those of the in-memory engine, row for row."""
    varied = [
        _pair(ZH_Q, ZH_A), _pair(EN_Q, EN_A), _pair(HANT_Q, HANT_A), _pair(ZH_Q, EN_A),
        _pair("Bonjour, pouvez-vous m'aider à écrire une lettre de motivation ?", "Bien sûr, voici une lettre."),
        _pair("```python\n" + "x = 1\n" * 400 + "```\n这段代码有什么问题？", ZH_A),
        _pair("请把下面这句话翻译成英文：我今天很高兴。", "I am very happy today."),
        _pair('Translate into English: "Je suis très content aujourd\'hui."', "I am very happy today."),
        _pair("這個 API 的 rate limit 是多少？", "每分鐘六十次。"), _pair("42", "42"),
    ]
    rows = [dict(varied[(i * 7) % len(varied)], prompt=varied[(i * 7) % len(varied)]["prompt"] + f" {i}")
            for i in range(5_003)]
    df = pairs_factory(rows)
    cfg = language.Config(mismatch="flag")
    res = language.run(df, cfg).collect()
    lf = df.lazy().with_row_index("__row")
    ref = language.label(lf.select("__row", "source", "prompt", "chosen", "rejected"), cfg).collect()
    ref = language.instruction_labels(lf, ref, cfg)
    assert res.kept.height == 5_003
    for col in ("lang_prompt", "lang_chosen", "lang_rejected", "lang"):
        assert res.kept[col].to_list() == ref[col].to_list(), col
    assert set(res.kept["lang"]) >= {"zh-Hans", "zh-Hant", "en", "other", "mismatch"}
