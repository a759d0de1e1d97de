"""Engine choice without a cluster: config and CLI validation, Ray never imported by a local run, a clear error
when the extra is missing, and language.merge_stats (the piece the Ray engine combines batches with)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from curate.config import load
from curate.errors import ConfigError
from tests.conftest import REPO


def test_pipeline_engine_key(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('[pipeline]\nengine = "ray"\nray_address = "auto"\nstages = ["clean"]\n')
    cfg = load(p)
    assert (cfg.engine, cfg.ray_address) == ("ray", "auto")
    assert "engine" not in cfg.raw["pipeline"]  # how it runs is not what it computes: markers and export agree
    assert load(REPO / "pipelines" / "default.toml").engine == "local"
    p.write_text('[pipeline]\nengine = "spark"\n')
    with pytest.raises(ConfigError, match="engine must be 'local' or 'ray'"):
        load(p)


def test_ray_address_needs_ray_engine():
    from curate import engines

    with pytest.raises(ConfigError, match="needs --engine ray"):
        engines.get("local", "auto")


LOCAL_RUN = """
import sys
from curate.config import load
from curate.runner import run_pipeline
import curate.cli
run_pipeline(load(None, ['dedup.methods=["exact", "near"]']), [sys.argv[1]], sys.argv[2])
bad = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
print("RAY" if bad else "NO-RAY", bad[:3])
"""


def test_local_run_imports_no_ray(tmp_path):
    out = subprocess.run([sys.executable, "-c", LOCAL_RUN, str(REPO / "data"), str(tmp_path / "run")],
                         capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith("NO-RAY"), out.stdout


def test_missing_extra_is_one_line(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; sys.modules['ray.data'] = None\n"
            "from curate.cli import main; main()")
    out = subprocess.run([sys.executable, "-c", code, "run", str(REPO / "pipelines" / "default.toml"), "--input",
                          str(REPO / "data"), "--out", str(tmp_path / "run"), "--engine", "ray"],
                         capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: --engine ray needs Ray Data: pip install 'curate[ray]' "
                                  "(bash scripts/setup.sh installs it)")
    assert not (tmp_path / "run" / "00-ingest").exists()  # failed before any data moved


def test_language_merge_stats_equals_whole(pairs_factory):
    from curate.stages import language

    rows = [{"prompt": p, "chosen": c, "source": s} for p, c, s in [
        ("你好，请介绍一下北京。", "北京是中国的首都。", "a"), ("What is Rust?", "A systems language.", "b"),
        ("請問這是什麼？", "這是一本書。", "a"), ("def f(): pass", "That defines f.", "b"),
        ("用英文翻译：你好", "Hello", "a"), ("Explain gravity briefly please", "引力是质量之间的吸引。", "b"),
        ("Bonjour, comment ça va aujourd'hui ?", "Très bien, merci beaucoup !", "c"), ("1 + 1 = ?", "2", "c"),
    ]]
    df = pairs_factory(rows)
    cfg = language.Config()
    whole = language.run(df.lazy(), cfg).stats
    for cut in (1, 3, 5):
        parts = [language.run(df.slice(0, cut).lazy(), cfg).stats, language.run(df.slice(cut).lazy(), cfg).stats]
        merged = language.merge_stats(parts)
        assert merged == whole and list(merged) == list(whole)
        assert [list(v) for v in merged.values() if isinstance(v, dict)] == \
               [list(v) for v in whole.values() if isinstance(v, dict)]
