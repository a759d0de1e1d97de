"""`curate stats` on everything curate writes: run, ingest and stage folders, export folders and their hf/, trl/,
llamafactory/ parts, and single Parquet / JSON Lines / Arrow files; one-line errors for the rest."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from curate.cli import main
from curate.config import load
from curate.errors import InputError
from curate.runner import run_pipeline
from curate.stats import compute
from tests.conftest import REPO

PIPELINE = ('[pipeline]\nname = "t"\nseed = 3\nstages = ["clean", "language"]\n'
            '[export]\ntest_size = 0.2\n')


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("stats")
    p = tmp / "p.toml"
    p.write_text(PIPELINE)
    out = tmp / "run"
    run_pipeline(load(p), [REPO / "data"], out)
    return out


def stats(path: Path) -> dict:
    res = CliRunner().invoke(main, ["stats", str(path), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_run_folder(run: Path) -> None:
    s = stats(run)
    pairs = pl.read_parquet(run / "pairs.parquet")
    rejects = pl.read_parquet(run / "rejects.parquet")
    assert (s["kind"], s["format"], s["pairs"]) == ("run", "pairs", pairs.height)
    assert s["prompts"] == pairs["prompt_id"].n_unique()
    assert s["by_source"] == dict(pairs.group_by("source").len().sort("source").iter_rows())
    assert sum(s["by_lang"].values()) == pairs.height
    assert s["rejected"] == rejects.height and sum(s["rejects_by_reason"].values()) == rejects.height
    assert s["lengths"]["chosen"]["max"] == pairs["chosen"].str.len_chars().max()


def test_export_folder_and_each_of_its_formats(run: Path) -> None:
    """Every export view of the same pairs gives the same counts and lengths as the run's pairs."""
    base = stats(run)
    export = run / "export"
    splits = json.loads((export / "manifest.json").read_text())["splits"]
    views = {
        export: ("export", "trl"),
        export / "hf": ("hf", "trl"),
        export / "trl": ("trl", "trl"),
        export / "llamafactory": ("llamafactory", "llamafactory"),
    }
    for path, (kind, fmt) in views.items():
        s = stats(path)
        assert (s["kind"], s["format"]) == (kind, fmt), path
        assert s["pairs"] == base["pairs"] and s["prompts"] == base["prompts"], path
        assert s["by_split"] == splits, path
        assert s["lengths"] == base["lengths"], path  # system + prompt turns, chosen, rejected: same characters
        if fmt == "trl":
            assert s["by_source"] == base["by_source"] and s["by_lang"] == base["by_lang"]
    with pytest.raises(InputError, match="not a file curate writes"):
        compute(export / "manifest.json")


@pytest.mark.parametrize("rel,fmt", [
    ("export/trl/train.parquet", "trl"), ("export/trl/test.jsonl", "trl"), ("export/llamafactory/train.jsonl",
                                                                          "llamafactory"),
    ("export/hf/train", "trl"), ("pairs.parquet", "pairs"), ("01-clean/kept.parquet", "pairs"),
    ("rejects.parquet", "rejects"), ("00-ingest/rejects.parquet", "rejects"),
])
def test_single_files(run: Path, rel: str, fmt: str) -> None:
    s = stats(run / rel)
    assert s["format"] == fmt
    if rel.endswith(("train.parquet", "train.jsonl", "hf/train")):
        train = pl.read_parquet(run / "export" / "trl" / "train.parquet")
        assert s["pairs"] == train.height and s["lengths"]["chosen"]["max"] == max(
            len(c[0]["content"]) for c in train["chosen"].to_list())
    if fmt == "rejects":
        rejects = pl.read_parquet(run / rel)
        assert s["pairs"] == rejects.height
        assert s["by_reason"] == dict(rejects.group_by("reason").len().sort("reason").iter_rows())
        assert set(s["by_stage"]) == set(rejects["stage"])


def test_ingest_and_stage_folders(run: Path) -> None:
    s = stats(run / "00-ingest")
    ingest = json.loads((run / "00-ingest" / "report.json").read_text())
    assert (s["kind"], s["pairs"], s["rejected"]) == ("pairs", ingest["kept_rows"], ingest["rejected_rows"])
    assert s["rejects_by_reason"] == ingest["rejects_by_reason"]
    s = stats(run / "02-language")
    assert s["kind"] == "stage" and s["pairs"] == pl.read_parquet(run / "02-language" / "kept.parquet").height
    assert "by_lang" in s


def test_human_output_for_an_export(run: Path) -> None:
    res = CliRunner().invoke(main, ["stats", str(run / "export")])
    assert res.exit_code == 0, res.output
    assert "(export, trl)" in res.output and "by split" in res.output and "train" in res.output


def test_errors(tmp_path: Path) -> None:
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps({"query": "q", "good": "a", "bad": "b"}) + "\n")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    (tmp_path / "empty").mkdir()
    for path, fragment in ((raw, "use `curate ingest`"), (broken, "not readable"), (tmp_path / "empty", "holds no"),
                           (tmp_path / "nope", "no such file")):
        res = CliRunner().invoke(main, ["stats", str(path)])
        assert res.exit_code == 2 and fragment in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
