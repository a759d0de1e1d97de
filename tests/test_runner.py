"""End-to-end runs of the pipeline runner and the CLI on small files written here."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner

from curate.cli import main
from curate.config import load
from curate.runner import run_pipeline
from tests.conftest import REPO

CLEAN_ONLY = '[pipeline]\nname = "t"\nseed = 7\nstages = ["clean"]\n[clean]\nmax_response_chars = 200\n[export]\ntest_size = 0.25\n'


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    rows = [{"prompt": f"Question number {i}?", "chosen": f"A careful answer {i}.", "rejected": f"Meh {i}."}
            for i in range(20)]
    rows[3]["chosen"] = rows[3]["rejected"].replace(" ", "   ")  # identical once whitespace is folded: clean
    rows[7]["chosen"] = rows[7]["rejected"]            # identical as given: ingest rejects it
    rows[5]["chosen"] = "x" * 500                      # too long for max_response_chars = 200
    lines = [json.dumps(r, ensure_ascii=False) for r in rows] + ['{"prompt": "truncated", "chosen": ']
    (d / "a.jsonl").write_text("\n".join(lines) + "\n")
    rows_b = [{"prompt": f"问题 {i}", "chosen": f"好的回答 {i}", "rejected": f"差 {i}"} for i in range(8)]
    (d / "b.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows_b) + "\n")
    return d


@pytest.fixture
def pipeline_file(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text(CLEAN_ONLY)
    return p


def test_run_accounts_for_every_row(inputs, pipeline_file, tmp_path):
    out = tmp_path / "run"
    rep = run_pipeline(load(pipeline_file), [inputs], out)
    assert rep["input_rows"] == 29
    assert rep["input_rows"] == rep["kept_rows"] + rep["rejected_rows"]
    for step in rep["funnel"]:
        assert step["rows_in"] == step["kept"] + step["rejected"]
    assert [s["stage"] for s in rep["funnel"]] == ["ingest", "clean"]
    assert rep["funnel"][1]["rows_in"] == rep["funnel"][0]["kept"]
    assert rep["steps"][1]["rejects_by_reason"] == {"identical_responses": 1, "response_too_long": 1}
    rejects = pl.read_parquet(out / "rejects.parquet")
    assert rejects.height == rep["rejected_rows"]
    assert set(rejects["stage"]) == {"ingest", "clean"}
    assert rejects["reason"].null_count() == 0 and rejects["detail"].null_count() == 0
    assert pl.read_parquet(out / "pairs.parquet").height == rep["kept_rows"] == 25
    by_source = {r["source"].rsplit("/", 1)[-1]: r for r in rep["sources"]}
    assert by_source["a.jsonl"]["rows_in"] == 21 and by_source["a.jsonl"]["kept"] == 17
    assert by_source["a.jsonl"]["rejected_clean"] == 2
    assert rep["export"]["splits"]["train"] + rep["export"]["splits"]["test"] == 25
    html = (out / "report.html").read_text()
    for text in ("Funnel", "Rejects by reason", "identical_responses", "Sources", "Lengths"):
        assert text in html
    assert json.loads((out / "report.json").read_text())["kept_rows"] == 25


def test_two_runs_byte_identical(inputs, pipeline_file, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_pipeline(load(pipeline_file), [inputs], a)
    run_pipeline(load(pipeline_file), [inputs], b)
    for name in ("pairs.parquet", "rejects.parquet"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    files = sorted(p.relative_to(a / "export") for p in (a / "export").rglob("*") if p.is_file())
    assert files
    for rel in files:
        assert (a / "export" / rel).read_bytes() == (b / "export" / rel).read_bytes(), rel


def test_rerun_skips_finished_stages(inputs, pipeline_file, tmp_path):
    out = tmp_path / "run"
    run_pipeline(load(pipeline_file), [inputs], out)
    said: list[str] = []
    run_pipeline(load(pipeline_file), [inputs], out, progress=said.append)
    assert "ingest: unchanged, skipped" in said and "clean: unchanged, skipped" in said
    said.clear()
    run_pipeline(load(pipeline_file, ["clean.max_response_chars=1000"]), [inputs], out, progress=said.append)
    assert "ingest: unchanged, skipped" in said and not any(s.startswith("clean: unchanged") for s in said)
    assert json.loads((out / "report.json").read_text())["kept_rows"] == 26


def test_cli_run_and_stats(inputs, pipeline_file, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["run", str(pipeline_file), "--input", str(inputs), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "25 pairs kept" in res.output
    res = CliRunner().invoke(main, ["stats", str(out), "--json"])
    assert res.exit_code == 0, res.output
    stats = json.loads(res.output)
    assert stats["pairs"] == 25 and sum(stats["by_source"].values()) == 25
    assert stats["lengths"]["chosen"]["p50"] > 0
    res = CliRunner().invoke(main, ["export", str(out), "--out", str(tmp_path / "exp2"), "--set", "export.test_size=0"])
    assert res.exit_code == 0, res.output
    assert "train 25" in res.output



def test_cli_export_of_a_run_uses_the_runs_own_export_settings(inputs, pipeline_file, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["run", str(pipeline_file), "--input", str(inputs), "--out", str(out),
                                    "--set", "export.name=my-set", "--license", "CC-BY-4.0"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["export", str(out), "--out", str(tmp_path / "again")])
    assert res.exit_code == 0, res.output
    card = (tmp_path / "again" / "README.md").read_text(encoding="utf-8")
    assert "pretty_name: my-set" in card and "CC-BY-4.0" in card  # not pipelines/default.toml's
    res = CliRunner().invoke(main, ["export", str(out), "--out", str(tmp_path / "third"), "--set", "export.name=b"])
    assert res.exit_code == 0 and "pretty_name: b" in (tmp_path / "third" / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "PIPE", "--input", "/no/such/file.jsonl", "--out", "OUT"], "/no/such/file.jsonl"),
        (["run", "PIPE", "--input", "IN", "--out", "OUT", "--set", "clean.nope=1"], "unknown key 'nope'"),
        (["run", "/no/pipeline.toml", "--input", "IN", "--out", "OUT"], "not found"),
        (["stats", "/no/such/run"], "no such file"),
        (["export", "/no/such/run", "--out", "OUT"], "not a run folder"),
        (["ingest", "IN", "--out", "OUT", "--map", "promptquery"], "expected FIELD=COLUMN"),
        (["run", "PIPE", "--input", "IN", "--out", "OUT", "--against", "IN"], "needs the dedup stage"),
    ],
)
def test_cli_errors_are_one_line_exit_2(inputs, pipeline_file, tmp_path, args, message):
    subst = {"PIPE": str(pipeline_file), "IN": str(inputs), "OUT": str(tmp_path / "o")}
    res = CliRunner().invoke(main, [subst.get(a, a) for a in args])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], res.output
    assert "Traceback" not in res.output


def test_default_pipeline_is_valid():
    pipe = load(REPO / "pipelines" / "default.toml")
    assert pipe.stages


def test_stage_files_and_export_are_zstd(inputs, pipeline_file, tmp_path):
    """Stage files use the cheap codec (zstd level 1, curate.io.STAGE_CODEC) and the export stays zstd; both are
    read by pyarrow (any Parquet reader: not LZ4_RAW, which older readers lack)."""
    import pyarrow.parquet as pq

    out = tmp_path / "run"
    run_pipeline(load(pipeline_file), [inputs], out)
    files = [out / "01-clean" / "kept.parquet", out / "01-clean" / "rejects.parquet",
             out / "export" / "trl" / "train.parquet"]
    for f in files:
        meta = pq.ParquetFile(f).metadata
        codecs = {meta.row_group(g).column(c).compression for g in range(meta.num_row_groups)
                  for c in range(meta.num_columns)}
        assert codecs == {"ZSTD"}, (f, codecs)
        assert pq.read_table(f).num_rows == meta.num_rows
