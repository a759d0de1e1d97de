"""`curate ingest` and `curate run` take inputs the same way (arguments, or --input with one or several paths,
repeatable), and --binarize / [ingest] binarize reach the rated-completion families through the runner."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from curate.cli import main, spread_inputs
from tests.test_ingest import FIXTURES, write_jsonl

PIPELINE = '[pipeline]\nname = "t"\nseed = 7\nstages = ["clean"]\n[export]\ntest_size = 0.25\n'


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    out = []
    for name, lang in (("c.jsonl", "en"), ("a.jsonl", "zh"), ("b.jsonl", "en")):  # not in sorted order
        rows = [{"prompt": f"{name} question {i} ({lang})", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(3)]
        out.append(str(write_jsonl(tmp_path / name, rows)))
    return out


@pytest.fixture
def pipeline(tmp_path: Path) -> str:
    p = tmp_path / "p.toml"
    p.write_text(PIPELINE)
    return str(p)


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def sources(out: Path) -> list[str]:
    return pl.read_parquet(out / "pairs.parquet")["source"].unique(maintain_order=True).to_list()


def test_spread_inputs() -> None:
    assert spread_inputs(["p.toml", "--input", "a", "b", "c", "--out", "x"]) == \
        ["p.toml", "--input", "a", "--input", "b", "--input", "c", "--out", "x"]
    assert spread_inputs(["--input=a", "b", "--map", "prompt=q", "d"]) == ["--input=a", "--input", "b", "--map",
                                                                           "prompt=q", "d"]
    assert spread_inputs(["--input", "a.jsonl", "p.toml", "--out", "x"]) == ["--input", "a.jsonl", "p.toml", "--out", "x"]
    assert spread_inputs(["--input", "a", "--", "b"]) == ["--input", "a", "--", "b"]


def test_run_input_several_paths_repeated_or_as_arguments(tmp_path: Path, files: list[str], pipeline: str) -> None:
    forms = {
        "spread": ["run", pipeline, "--input", *files, "--out", str(tmp_path / "spread")],
        "repeated": ["run", pipeline, *[a for f in files for a in ("--input", f)], "--out", str(tmp_path / "repeated")],
        "arguments": ["run", pipeline, *files, "--out", str(tmp_path / "arguments")],
        "pipeline_last": ["run", "--input", *files, pipeline, "--out", str(tmp_path / "pipeline_last")],
    }
    for name, args in forms.items():
        res = invoke(*args)
        assert res.exit_code == 0, (name, res.output)
        assert sources(tmp_path / name) == sorted(files), name  # every input, in sorted order (issue 15)
    first = (tmp_path / "spread" / "pairs.parquet").read_bytes()
    assert all((tmp_path / n / "pairs.parquet").read_bytes() == first for n in forms)


def test_ingest_takes_inputs_the_same_way(tmp_path: Path, files: list[str]) -> None:
    for name, args in {"args": files, "spread": ["--input", *files],
                       "repeated": [a for f in files for a in ("--input", f)]}.items():
        res = invoke("ingest", *args, "--out", str(tmp_path / name))
        assert res.exit_code == 0, res.output
        assert sources(tmp_path / name) == sorted(files)


@pytest.mark.parametrize("cmd", ["ingest", "run"])
def test_input_errors_are_one_line_exit_2(tmp_path: Path, files: list[str], pipeline: str, cmd: str) -> None:
    head = [cmd] if cmd == "ingest" else [cmd, pipeline]
    res = CliRunner().invoke(main, [*head, files[0], "--input", files[1], "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "not both" in res.output
    res = CliRunner().invoke(main, [*head, "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "no input" in res.output
    res = CliRunner().invoke(main, [*head, "--input", files[0], "--binarize", "best-of-3", "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and "best-worst, best-random or all-margin:M" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_run_binarize_keeps_conservation(tmp_path: Path, pipeline: str) -> None:
    uf = str(FIXTURES / "ultrafeedback_raw.jsonl")
    out = tmp_path / "run"
    res = invoke("run", pipeline, "--input", uf, str(FIXTURES / "flat.jsonl"), "--out", str(out), "--binarize",
                 "all-margin:1")
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    ing = json.loads((out / "00-ingest" / "report.json").read_text())
    assert (ing["input_rows"], ing["kept_rows"], ing["extra_pairs"], ing["binarize"]) == (5, 11, 6, "all-margin:1")
    assert rep["input_rows"] == 5 and rep["copied_rows"] == 6
    assert rep["input_rows"] + rep["copied_rows"] == rep["kept_rows"] + rep["rejected_rows"]
    assert "Rows in = kept + rejected: yes" in (out / "report.html").read_text()
    # the binarisation is part of the ingest step's identity: the same one skips, another re-ingests
    res = invoke("run", pipeline, "--input", uf, str(FIXTURES / "flat.jsonl"), "--out", str(out), "--binarize",
                 "all-margin:1")
    assert res.exit_code == 0 and "ingest: unchanged" in res.output
    res = invoke("run", pipeline, "--input", uf, str(FIXTURES / "flat.jsonl"), "--out", str(out))
    assert res.exit_code == 0 and "ingest: unchanged" not in res.output
    assert json.loads((out / "00-ingest" / "report.json").read_text())["kept_rows"] == 5


def test_pipeline_ingest_table(tmp_path: Path) -> None:
    from curate.config import load
    from curate.errors import ConfigError

    p = tmp_path / "p.toml"
    p.write_text(PIPELINE + '[ingest]\nbinarize = "best-random"\n')
    cfg = load(p)
    assert (cfg.ingest.binarize, cfg.ingest.seed) == ("best-random", 7)  # seed: the pipeline's
    assert load(p, ["ingest.binarize=all-margin:2"]).ingest.binarize == "all-margin:2"
    assert load(tmp_path / "p.toml").raw["ingest"] == {"binarize": "best-random", "seed": 7}
    p.write_text(PIPELINE + '[ingest]\nbinarise = "best-random"\n')
    with pytest.raises(ConfigError, match=r"\[ingest\]: unknown key 'binarise'"):
        load(p)
    p.write_text(PIPELINE + '[ingest]\nbinarize = "all-margin:-1"\n')
    with pytest.raises(ConfigError, match="margin must be a number >= 0"):
        load(p)
