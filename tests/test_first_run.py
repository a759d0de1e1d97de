"""A new user's first runs: the default pipeline, default options, on one-language folders, the real LLaMA-Factory
demo files alone and together, and the demo — each must finish (exit 0) with a report, say in one line how the
language target was adapted, and keep the rows a default must not lose."""

from __future__ import annotations

import json
import subprocess

import polars as pl
import pytest
from click.testing import CliRunner

from curate.cli import main
from tests.conftest import REPO, shared_data

DEFAULT = str(REPO / "pipelines" / "default.toml")

ZH_ROWS = [
    ("请问如何提高睡眠质量？我最近总是失眠，晚上很难入睡。", "可以每天固定时间睡觉，睡前一小时不要看手机，也不要喝咖啡。", "多喝点酒就能睡着。"),
    ("怎样才能在三个月内学好线性代数？", "先把矩阵运算和向量空间的概念弄懂，再每天做二十道练习题，最后总结解题方法。", "看看视频就行。"),
    ("推荐一本适合初学者的中国历史书。", "可以读黄仁宇的《万历十五年》，它从一个年份切入，写得生动易懂。", "随便买一本。"),
    ("番茄炒蛋怎么做才好吃？", "先把鸡蛋炒到半熟盛出，再炒番茄出汁，最后把鸡蛋倒回去，加少许糖和盐调味。", "把所有东西一起煮。"),
    ("北京有哪些适合带孩子去的博物馆？", "中国科学技术馆、自然博物馆和首都博物馆都很适合孩子，展品丰富又有互动项目。", "没有什么好去的。"),
    ("写一首关于秋天落叶的五言绝句。", "秋风扫落叶，金色满山川。孤雁南飞去，长空一线天。", "秋天到了。"),
    # a Chinese instruction quoting Japanese or Korean input: Chinese, not "other"
    ("请把这句日语翻译成中文：「今日はとても良い天気ですね。公園へ散歩に行きましょうか。」", "今天天气真好啊。我们去公园散步吧？",
     "今天下雨。"),
    ("这句韩语是什么意思？“안녕하세요, 만나서 반갑습니다. 저는 대학생입니다.”", "意思是：你好，很高兴见到你，我是一名大学生。",
     "我不知道。"),
    ("下面这段日文讲了什么？\n東京は日本の首都です。たくさんの人が住んでいて、毎日とても賑やかです。",
     "这段话说东京是日本的首都，住着很多人，每天都很热闹。", "讲了大阪。"),
    ("如何用 Python 读取一个 CSV 文件并统计每一列的缺失值？",
     "可以用 pandas：\n```python\nimport pandas as pd\ndf = pd.read_csv('data.csv')\nprint(df.isna().sum())\n```\n这样会输出每列缺失值的数量。",
     "用记事本打开数一数。"),
]
EN_ROWS = [
    ("How can I improve the quality of my sleep? I have trouble falling asleep at night.",
     "Go to bed at the same time every day, and avoid screens and coffee in the hour before bed.", "Drink more."),
    ("What is a good way to learn linear algebra in three months?",
     "Work through a textbook chapter a week, do the exercises, and watch a lecture series alongside it.", "Skip it."),
    ("Recommend a history book for beginners.", "Try 'Guns, Germs, and Steel' by Jared Diamond: broad and readable.",
     "Any book."),
    ("How do I make a simple tomato and egg stir-fry?",
     "Scramble the eggs until just set, take them out, cook the tomatoes until juicy, then combine and season.",
     "Boil everything."),
    ("Which museums in London are good for children?",
     "The Natural History Museum, the Science Museum and the V&A Museum of Childhood all have hands-on exhibits.",
     "None of them."),
    ("Write a short poem about autumn leaves.", "Amber leaves drift down / on the quiet lane / the year lets go.",
     "Leaves fall."),
    # an English instruction with a French source text: English, not "other"
    ("Translate the following French text into English:\n\nLe chat est sur la table depuis ce matin. Il ne veut pas "
     "descendre, même quand on l'appelle pour manger, et il regarde les oiseaux par la fenêtre pendant des heures.",
     "The cat has been on the table since this morning. It won't come down, even when called to eat, and it "
     "watches the birds through the window for hours.", "The dog is outside."),
    ("Summarize this French paragraph in one sentence:\nSa maîtresse pense qu’il est malade, mais le vétérinaire dit "
     "qu’il est simplement paresseux et qu’il préfère dormir au soleil plutôt que de jouer avec les autres chats du "
     "quartier, qui l’attendent pourtant chaque après-midi devant la porte du jardin.",
     "The vet says the cat is not ill but lazy, preferring to sleep in the sun over playing with the other cats.",
     "It is about a dog."),
    ("How do I count missing values per column of a CSV file in Python?",
     "Use pandas: `pd.read_csv('data.csv').isna().sum()` prints the number of missing values in each column.",
     "Open it in a text editor and count."),
    ("Explain the difference between a list and a tuple in Python.",
     "A list is mutable and can change after creation; a tuple is immutable, so it can be used as a dict key.",
     "There is none."),
]


def _write(folder, rows, name):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"prompt": p, "chosen": c, "rejected": r}, ensure_ascii=False) for p, c, r in rows]
    (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("embeddings")  # one embedding cache for the module's runs


def _run(inputs, out, cache, *extra):
    args = ["run", DEFAULT, *[a for i in inputs for a in ("--input", str(i))], "--out", str(out),
            "--set", f"dedup.semantic.cache_dir={json.dumps(str(cache))}", *extra]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert (out / "report.html").is_file() and (out / "export" / "README.md").is_file()
    return res.output, json.loads((out / "report.json").read_text())


def _balance(rep):
    return next(s for s in rep["steps"] if s["stage"] == "balance")


@pytest.mark.parametrize("lang, rows", [("zh", ZH_ROWS), ("en", EN_ROWS)])
def test_default_pipeline_on_a_one_language_folder(tmp_path, cache, lang, rows):
    folder = _write(tmp_path / "in", rows, f"{lang}.jsonl")
    output, rep = _run([folder], tmp_path / "run", cache)
    assert rep["kept_rows"] == len(rows)  # nothing lost: no duplicates, no mismatches, nothing balanced away
    bal = _balance(rep)
    assert bal["rejected"] == 0 and bal["rows_in"] == len(rows)
    missing = "en" if lang == "zh" else "zh"
    lines = [ln for ln in output.splitlines() if ln.startswith("warning: balance: ")]
    assert len(lines) == 1 and f"the input has no {missing} pairs" in lines[0]
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert f"the input has no {missing} pairs" in html
    kept = pl.read_parquet(tmp_path / "run" / "pairs.parquet")
    assert set(kept["lang"]) == ({"zh-Hans"} if lang == "zh" else {"en"})  # quoting prompts included, not "other"
    card = (tmp_path / "run" / "export" / "README.md").read_text(encoding="utf-8")
    assert "Not stated — set `export.license`" in card and "Apache" not in card and "curate-demo" not in card


def test_default_pipeline_on_the_real_demo_files_alone_and_together(tmp_path, cache):
    zh = shared_data("llamafactory_dpo_demo", "dpo_zh_demo.json")
    en = shared_data("llamafactory_dpo_demo", "dpo_en_demo.json")
    _, rep_zh = _run([zh], tmp_path / "zh", cache)
    _, rep_en = _run([en], tmp_path / "en", cache)
    # a one-language file keeps every pair that survives dedup (11 and 5 exact duplicates)
    assert _balance(rep_zh)["rejected"] == 0 and rep_zh["kept_rows"] == 289
    assert _balance(rep_en)["rejected"] == 0 and rep_en["kept_rows"] == 295
    _, rep = _run([zh, en], tmp_path / "both", cache, "--license", "Apache-2.0 (LLaMA-Factory demo files)")
    st = _balance(rep)["stats"]
    assert st["target_met"] and st["warnings"] == []
    assert st["groups"]["zh"]["quota"] == 289 and st["groups"]["en"]["quota"] == 124  # 70 / 30, all Chinese kept
    assert st["policy_rows"]["other"]["rows"] == 0  # the quoting prompts are labelled by their instruction
    card = (tmp_path / "both" / "export" / "README.md").read_text(encoding="utf-8")
    assert "Apache-2.0 (LLaMA-Factory demo files)" in card and "dpo_zh_demo.json" in card


def test_skip_leaves_balance_out(tmp_path, cache):
    folder = _write(tmp_path / "in", ZH_ROWS[:4] + EN_ROWS[:4], "mix.jsonl")
    _, rep = _run([folder], tmp_path / "run", cache, "--skip", "balance", "--skip", "dedup")
    assert [s["stage"] for s in rep["funnel"]] == ["ingest", "clean", "quality", "language"]
    assert rep["pipeline"]["skipped"] == ["dedup", "balance"]


def test_demo_script_runs(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh"), "--out", str(out)], capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "report.html").is_file()
    card = (out / "export" / "README.md").read_text(encoding="utf-8")
    assert "Apache-2.0 (the sample data in data/ was written for curate)" in card and "# curate-demo" in card


FORMAT_FIXTURES = sorted(p.name for p in (REPO / "tests" / "fixtures" / "ingest").iterdir()
                         if p.suffix in (".json", ".jsonl", ".csv", ".parquet") and p.name != "mapped.jsonl")


def _conserved(rep):
    for step in rep["steps"]:
        assert step["rows_in"] + step.get("copies", 0) == step["kept"] + step["rejected"], step["stage"]
    assert rep["kept_rows"] > 0


@pytest.mark.parametrize("name", FORMAT_FIXTURES)
def test_default_pipeline_on_a_folder_of_one_format(tmp_path, cache, name):
    """Each input format alone in a folder (one language or both, few rows): the default run finishes, nothing
    is lost between stages. (mapped.jsonl needs --map and is covered in tests/test_ingest_cli.py.)"""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / name).write_bytes((REPO / "tests" / "fixtures" / "ingest" / name).read_bytes())
    _, rep = _run([folder], tmp_path / "run", cache)
    _conserved(rep)
    (src,) = rep["steps"][0]["stats"]["sources"].values()
    assert src["format"] and src["rows_kept"] > 0, src


def test_default_pipeline_on_every_format_together(tmp_path, cache):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in FORMAT_FIXTURES:
        (folder / name).write_bytes((REPO / "tests" / "fixtures" / "ingest" / name).read_bytes())
    _, rep = _run([folder], tmp_path / "run", cache)
    _conserved(rep)
    assert len(rep["steps"][0]["stats"]["sources"]) == len(FORMAT_FIXTURES)
