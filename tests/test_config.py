from __future__ import annotations

import pytest

from curate.config import load, parse_override
from curate.errors import ConfigError

from tests.conftest import REPO


def write(tmp_path, text):
    p = tmp_path / "p.toml"
    p.write_text(text)
    return p


def test_default_pipeline_loads():
    pipe = load(REPO / "pipelines" / "default.toml")
    assert pipe.stages[0][0] == "clean"
    assert pipe.export.seed == pipe.seed  # the pipeline seed reaches configs that have one


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[pipeline]\nstages = ["clean", "nosuch"]\n', "unknown stage 'nosuch'"),
        ('[pipeline]\nstages = ["clean"]\n[clean]\nmax_chars = 1\n', "unknown key 'max_chars'"),
        ('[pipeline]\nstages = ["clean"]\ncolour = 1\n', "unknown key 'colour'"),
        ('[pipeline]\nstages = ["clean"]\n[clean]\nmax_prompt_chars = "many"\n', "expected an integer"),
        ('[pipeline]\nstages = ["clean"]\n[export]\nformats = ["csv"]\n', "unknown format 'csv'"),
        ('[pipeline]\nstages = []\n[nosuch]\nx = 3\n', "table [nosuch] is not a known stage"),
        ('[pipeline]\nstages = []\n[clean]\nmax_chars = 3\n', "[clean] (not run): unknown key 'max_chars'"),
        ('[pipeline]\nstages = ["clean", "clean"]\n', "listed twice"),
        ("[pipeline\n", "not valid TOML"),
    ],
)
def test_errors_name_the_bad_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as exc:
        load(write(tmp_path, text))
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_pipeline_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "missing.toml")


def test_overrides():
    assert parse_override("clean.max_prompt_chars=100") == ("clean", "max_prompt_chars", 100)
    assert parse_override("export.name=my-set") == ("export", "name", "my-set")
    pipe = load(REPO / "pipelines" / "default.toml", ["clean.max_prompt_chars=100", "export.test_size=0.5"])
    assert pipe.stage_config("clean").max_prompt_chars == 100
    assert pipe.export.test_size == 0.5
    with pytest.raises(ConfigError, match="STAGE.KEY=VALUE"):
        parse_override("novalue")


def test_nested_override_reaches_sub_tables():
    pipe = load(REPO / "pipelines" / "default.toml", ["dedup.near.threshold=0.5"])
    assert pipe.stage_config("dedup").near.threshold == 0.5
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        load(REPO / "pipelines" / "default.toml", ["dedup.near.nope=1"])


def test_a_table_for_a_stage_not_run_is_checked_not_run(tmp_path):
    pipe = load(write(tmp_path, '[pipeline]\nstages = ["clean"]\n[balance]\ntarget = { zh = 1.0 }\n'))
    assert [n for n, _ in pipe.stages] == ["clean"]


def test_skip_leaves_stages_out():
    pipe = load(REPO / "pipelines" / "default.toml", skip=["balance", "dedup"])
    assert [n for n, _ in pipe.stages] == ["clean", "quality", "language"]
    assert pipe.raw["pipeline"]["stages"] == ["clean", "quality", "language"]
    assert pipe.raw["pipeline"]["skipped"] == ["dedup", "balance"]
    assert "balance" not in pipe.raw
    with pytest.raises(ConfigError, match="--skip nosuch: not a stage of"):
        load(REPO / "pipelines" / "default.toml", skip=["nosuch"])
