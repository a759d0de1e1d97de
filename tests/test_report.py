"""report.html / report.json: the first rows of every reject reason (ingest, language, dedup, balance, …) with
their detail, a failed run's report, unit spacing in charts, the font stack."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner

from curate import report
from curate.cli import main
from curate.config import load
from curate.runner import run_pipeline
from tests.conftest import REPO

ZH = [("请问如何提高睡眠质量？我最近总是失眠。", "你可以试试每天固定时间睡觉，睡前不要看手机。", "多喝水。"),
      ("怎样才能学好数学？", "多做练习，理解概念，再总结方法。", "不知道。"),
      ("推荐一本关于历史的书。", "可以读《万历十五年》，写得很好。", "随便。"),
      ("如何做番茄炒蛋？", "先炒鸡蛋，再炒番茄，最后一起翻炒调味。", "用微波炉。"),
      ("北京有哪些好玩的地方？", "故宫、长城、颐和园都值得一去。", "没有。")]


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in ZH]
    rows += [{"prompt": p, "chosen": "You can try going to bed at the same time every day.", "rejected": "No."}
             for p, _, _ in ZH[:2]]  # Chinese questions answered in English: language_mismatch
    rows.append({"prompt": ZH[0][0], "chosen": ZH[0][1], "rejected": ZH[0][1]})  # identical: ingest rejects it
    rows += [{"prompt": f"How do I write good test number {i}?", "chosen": f"Assert behaviour {i}.",
              "rejected": f"Skip it {i}."} for i in range(12)]
    lines = [json.dumps(r, ensure_ascii=False) for r in rows] + ['{"prompt": "cut off']
    (d / "mix.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


PIPE = """[pipeline]
name = "t"
seed = 1
stages = ["clean", "language", "balance"]
[balance]
target = { zh = 0.5, en = 0.5 }
[export]
test_size = 0
"""


def test_examples_for_every_reason_of_every_step(inputs, tmp_path):
    pipe = tmp_path / "p.toml"
    pipe.write_text(PIPE)
    out = tmp_path / "run"
    rep = run_pipeline(load(pipe), [inputs], out)
    ex = rep["examples"]
    assert set(ex) == {"ingest", "language", "balance"}
    assert set(ex["ingest"]) == {"malformed_json", "identical_responses"}
    assert set(ex["language"]) == {"language_mismatch"} and set(ex["balance"]) == {"balance_downsampled"}
    # every reason of every step has examples, at most three, with the detail
    for step in rep["steps"]:
        for reason, n in step["rejects_by_reason"].items():
            rows = ex[step["stage"]][reason]
            assert len(rows) == min(n, report.EXAMPLES_PER_REASON)
            assert all(r["detail"] for r in rows)
    [mismatch_a, mismatch_b] = ex["language"]["language_mismatch"]
    assert mismatch_a["prompt"] == ZH[0][0] and mismatch_a["detail"] == "prompt is zh-Hans, chosen reply is en"
    assert mismatch_a["source_row"] < mismatch_b["source_row"]  # file order: the same rows every run
    assert len(ex["balance"]["balance_downsampled"]) == 3  # 12 en vs 5 zh at 50/50: 7 dropped, 3 shown
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Stage: ingest" in html
    for reason in ("malformed_json", "identical_responses", "language_mismatch", "balance_downsampled"):
        assert f"<caption>{reason}: first " in html
    assert report.esc(ZH[0][0]) in html and "prompt is zh-Hans, chosen reply is en" in html
    assert json.loads((out / "report.json").read_text())["examples"] == json.loads(json.dumps(ex))


def test_examples_clip_long_texts(tmp_path):
    rows = pl.DataFrame({"reason": ["r"] * 5, "detail": ["d"] * 5, "chosen": ["x" * 5000] * 5,
                         "source": ["s"] * 5, "source_row": list(range(5))})
    rows.write_parquet(tmp_path / "rejects.parquet")
    ex = report.reject_examples(tmp_path, [{"stage": "s", "rejects_path": "rejects.parquet"}])
    assert [r["source_row"] for r in ex["s"]["r"]] == [0, 1, 2]
    assert len(ex["s"]["r"][0]["chosen"]) == 300 and ex["s"]["r"][0]["chosen"].endswith("…")


def test_failed_run_still_writes_its_report(inputs, tmp_path):
    # strict balance on data without the target's languages stops the run after clean and language
    pipe = tmp_path / "p.toml"
    pipe.write_text(PIPE.replace("zh = 0.5, en = 0.5 }", "zh = 0.5, en = 0.3, mixed = 0.2 }\nmixed = 'count'\n"
                                                         "strict = true"))
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["run", str(pipe), "--input", str(inputs), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert next(ln for ln in res.output.splitlines() if ln.startswith("error:")).startswith("error: balance:")
    assert f"report (failed run): {out}/report.html" in res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["status"] == "failed" and rep["failed_step"] == "balance"
    assert [s["stage"] for s in rep["steps"]] == ["ingest", "clean", "language"]
    assert "names mixed but the input has no such pairs" in rep["error"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "This run failed" in html and "names mixed but the input has no such pairs" in html
    assert "Finished before it: ingest, clean, language" in html
    assert "<caption>language_mismatch: first 2 rows</caption>" in html  # what finished, with its rejects


def test_failed_ingest_still_writes_a_report(tmp_path):
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "x.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["run", str(REPO / "pipelines" / "default.toml"), "--input", str(bad),
                                    "--out", str(out)])
    assert res.exit_code == 2, res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["failed_step"] == "ingest" and rep["steps"] == []
    assert "Finished before it: nothing" in (out / "report.html").read_text()


def test_chart_units_are_spaced():
    html = report.bar_chart({"exact": 3.0, "near": 0.0283}, "t", "rows")
    assert ">3 rows<" in html and "3rows" not in html
    assert "0.0283 share removed" in report.bar_chart({"a": 0.0283}, "t", "share removed")
    assert ">3<" in report.bar_chart({"a": 3.0}, "t")  # no unit, no trailing space


def test_font_stack_names_cjk_faces():
    body = report.CSS.split("body{font:")[1].split(";")[0]
    for face in ("PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC", "WenQuanYi Micro Hei", "Noto Sans CJK TC"):
        assert f'"{face}"' in body
    assert body.endswith("sans-serif")
