"""The Ray engine on a real local cluster (ray.init(num_cpus=2)): the same files as the local engine, byte for
byte — every step's kept and rejects, the final pairs and rejects, the export — and the same report.json up to
timings and the run folder's own path; a worker killed mid-task is retried; a task's CurateError is one line."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from click.testing import CliRunner

from curate.cli import main
from curate.config import load
from curate.runner import run_pipeline
from tests.conftest import REPO, shared_data
from tests.engines import planted

QUIET = ["dedup.semantic.progress=false"]


def _report(path: Path, run: Path) -> dict:
    """report.json with what legitimately differs between two runs removed: timings and the run folder's path."""
    def scrub(v):
        if isinstance(v, dict):
            return {k: scrub(x) for k, x in v.items() if k not in ("seconds", "texts_per_second")}
        if isinstance(v, list):
            return [scrub(x) for x in v]
        return v.replace(str(run), "RUN") if isinstance(v, str) else v
    return scrub(json.loads(path.read_text()))


def _done(path: Path) -> object:
    """A DONE marker (JSON since the run-folder hashes: marker + outputs' sizes and SHA-256) without stats.json's
    entry, whose timings differ between any two runs; plain-text markers as they are."""
    text = path.read_text()
    try:
        done = json.loads(text)
    except ValueError:
        return text
    if isinstance(done, dict) and isinstance(done.get("outputs"), dict):
        done["outputs"].pop("stats.json", None)
    return done


def assert_same_run(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert {p.relative_to(b) for p in b.rglob("*") if p.is_file()} == set(files)
    parquet = [f for f in files if f.suffix == ".parquet"]
    assert any(f.parts[0] == "export" for f in files) and len(parquet) >= 6
    for rel in files:
        if rel.name in ("report.json", "report.html", "stats.json", "manifest.json"):
            continue
        if rel.name == "DONE":
            assert _done(a / rel) == _done(b / rel), f"{rel} differs between the engines"
            continue
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), f"{rel} differs between the engines"
    for rel in (f for f in files if f.name in ("report.json", "stats.json", "manifest.json")):
        assert _report(a / rel, a) == _report(b / rel, b), f"{rel} differs between the engines"
    # report.json's key order too (write_json keeps insertion order): compare the JSON text once scrubbed.
    ra, rb = _report(a / "report.json", a), _report(b / "report.json", b)
    assert json.dumps(ra, ensure_ascii=False) == json.dumps(rb, ensure_ascii=False)


def _both(tmp_path: Path, inputs: list, sets: list[str], pipeline: str | None = None) -> tuple[Path, Path, dict]:
    # No embedding cache: the second run would count cache hits the first one didn't (stats differ by run order).
    cfg = load(pipeline or REPO / "pipelines" / "default.toml", [*QUIET, "dedup.semantic.cache_dir=''", *sets])
    local, ray = tmp_path / "local", tmp_path / "ray"
    run_pipeline(cfg, inputs, local, engine="local")
    rep = run_pipeline(cfg, inputs, ray, engine="ray")
    return local, ray, rep


def test_demo_data_same_bytes(ray_cluster, tmp_path):
    local, ray, rep = _both(tmp_path, [REPO / "data"], [])
    assert_same_run(local, ray)
    for step in rep["steps"]:  # conservation per stage, under Ray
        assert step["rows_in"] + step.get("copies", 0) == step["kept"] + step["rejected"]


def test_planted_duplicates_zh_en_in_many_batches(ray_cluster, tmp_path, monkeypatch):
    """600 pairs in 3 files, batches of 64 rows: ingest spreads over sources, clean and language over batches."""
    import curate.engines.ray as ray_engine

    monkeypatch.setattr(ray_engine, "BATCH_ROWS", 64)
    # Stage files of 128-row groups (both engines): a row-local step reads several row groups, cut into batches.
    import curate.runner as runner

    monkeypatch.setattr(runner, "ROW_GROUP", 128)
    chunks: list[int] = []
    spread = ray_engine.Engine._embed_chunks

    def counted(self, spec, parts, batch_size):
        for vecs in spread(self, spec, parts, batch_size):
            chunks.append(len(vecs))
            yield vecs

    monkeypatch.setattr(ray_engine.Engine, "_embed_chunks", counted)
    # MinHash signatures 100 keys a chunk (both engines): near dedup's chunks become Ray tasks.
    import curate.dedup.minhash as minhash

    monkeypatch.setattr(minhash, "_CHUNK", 100)
    tasks: list[int] = []
    spread_tasks = ray_engine.Engine._map_tasks

    def counted_tasks(self, fn, calls):
        for part, lens in spread_tasks(self, fn, calls):
            tasks.append(len(lens))
            yield part, lens

    monkeypatch.setattr(ray_engine.Engine, "_map_tasks", counted_tasks)
    planted.write(tmp_path / "in", 600, seed=3)
    # Embedding batches of 4 texts: chunks of 64, so semantic dedup's embedding is spread over the actor pool.
    local, ray, rep = _both(tmp_path, [tmp_path / "in"], ["dedup.semantic.batch_size=4"])
    assert_same_run(local, ray)
    assert len(chunks) >= 5 and set(chunks[:-1]) == {64}, chunks
    # The n-gram pass over every key and the short-key edit pass: each ≥ 5 chunks of ≤ 100 keys.
    assert len(tasks) >= 10 and max(tasks) == 100, tasks
    dedup = next(s for s in rep["steps"] if s["stage"] == "dedup")
    reasons = dedup["rejects_by_reason"]
    # Planted near copies change random characters; in Chinese the content veto keeps those on purpose (a random
    # substitution may name another thing), so fewer than planted are removed: a handful still must be.
    assert reasons.get("exact_duplicate", 0) > 10 and reasons.get("near_duplicate", 0) >= 5, reasons
    assert reasons.get("semantic_duplicate", 0) >= 1, reasons
    lang = next(s for s in rep["steps"] if s["stage"] == "language")["stats"]
    assert set(lang["pairs"]) >= {"zh-Hans", "en"}


def test_language_conversion_and_flagging_same_bytes(ray_cluster, tmp_path, monkeypatch):
    """The language stage's row-local paths that rewrite text (t2s conversion, ids recomputed) and keep flagged
    mismatches, over several batches; clean with rejects in several batches."""
    import curate.engines.ray as ray_engine

    monkeypatch.setattr(ray_engine, "BATCH_ROWS", 7)
    pipe = tmp_path / "p.toml"
    pipe.write_text('[pipeline]\nname = "t"\nseed = 5\nstages = ["clean", "language"]\n'
                    '[clean]\nmax_response_chars = 60\n[language]\nmismatch = "flag"\nconvert = "t2s"\n'
                    '[export]\ntest_size = 0.2\n')
    rows = [{"prompt": "請問這個軟體怎麼安裝？" if i % 3 == 0 else f"Question {i} about the weather today?",
             "chosen": ("這個軟體的安裝步驟如下。" if i % 5 else "Install it with the package manager please.")
             if i % 3 == 0 else ("x" * 80 if i % 11 == 0 else f"It is sunny, answer {i}."),
             "rejected": f"Dunno {i}."} for i in range(60)]
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    cfg = load(pipe)
    run_pipeline(cfg, [d], tmp_path / "local", engine="local")
    rep = run_pipeline(cfg, [d], tmp_path / "ray", engine="ray")
    assert_same_run(tmp_path / "local", tmp_path / "ray")
    lang = next(s for s in rep["steps"] if s["stage"] == "language")["stats"]
    assert lang["converted"] > 0 and lang["mismatch"] > 0 and rep["steps"][1]["rejected"] > 0


def test_llamafactory_demo_same_bytes(ray_cluster, tmp_path):
    """The real LLaMA-Factory DPO demo (en + zh) through the default pipeline without semantic dedup (embedding
    ~4k prompts twice is too slow for a 2-core CI; the planted test covers semantic dedup)."""
    folder = shared_data("llamafactory_dpo_demo")
    inputs = [folder / "dpo_en_demo.json", folder / "dpo_zh_demo.json"]
    local, ray, rep = _both(tmp_path, inputs, ['dedup.methods=["exact", "near"]', "balance.max_drop_fraction=0.9"])
    assert_same_run(local, ray)
    lang = next(s for s in rep["steps"] if s["stage"] == "language")["stats"]
    assert rep["input_rows"] >= 600 and {"zh-Hans", "en"} <= set(lang["pairs"])


def test_dead_worker_is_retried(ray_cluster, fail_marker, tmp_path, monkeypatch):
    """A worker process that dies in the middle of a batch (as after an OOM kill) is replaced and its task run
    again: the run finishes with the local engine's bytes."""
    import curate.engines.ray as ray_engine

    monkeypatch.setattr(ray_engine, "BATCH_ROWS", 64)
    planted.write(tmp_path / "in", 300, seed=4, files=2)
    pipe = tmp_path / "p.toml"
    pipe.write_text('[pipeline]\nname = "t"\nseed = 1\nstages = ["clean", "language"]\n[export]\ntest_size = 0.1\n')
    cfg = load(pipe)
    run_pipeline(cfg, [tmp_path / "in"], tmp_path / "local", engine="local")
    fail_marker.unlink()
    run_pipeline(cfg, [tmp_path / "in"], tmp_path / "ray", engine="ray")
    assert fail_marker.read_text().isdigit(), "no task was killed"
    assert_same_run(tmp_path / "local", tmp_path / "ray")
    assert not list((tmp_path / "ray").glob(".ray-*")), "the engine's temp folder was left in the run folder"


def test_dead_embedding_actor_is_restarted(ray_cluster, fail_marker, tmp_path):
    """An embedding actor that dies in the middle of a chunk is restarted and the chunk sent again: semantic
    dedup's result is the local engine's. The ray run resumes a copy of the local run folder without its dedup
    step, so the first Ray task of the run (the one that dies) is an embedding chunk."""
    import shutil

    planted.write(tmp_path / "in", 300, seed=6, files=1)
    pipe = tmp_path / "p.toml"
    pipe.write_text('[pipeline]\nname = "t"\nseed = 1\nstages = ["dedup"]\n[dedup]\nmethods = ["exact", "semantic"]\n'
                    '[dedup.semantic]\nbatch_size = 4\nprogress = false\ncache_dir = ""\n[export]\ntest_size = 0.1\n')
    cfg = load(pipe)
    run_pipeline(cfg, [tmp_path / "in"], tmp_path / "local", engine="local")
    shutil.copytree(tmp_path / "local", tmp_path / "ray")
    shutil.rmtree(tmp_path / "ray" / "01-dedup")
    ingest_done = (tmp_path / "ray" / "00-ingest" / "DONE").stat().st_mtime_ns
    fail_marker.unlink()
    rep = run_pipeline(cfg, [tmp_path / "in"], tmp_path / "ray", engine="ray")
    assert (tmp_path / "ray" / "00-ingest" / "DONE").stat().st_mtime_ns == ingest_done, "ingest ran again"
    assert fail_marker.read_text().isdigit(), "no embedding actor was killed"
    assert_same_run(tmp_path / "local", tmp_path / "ray")
    dedup = next(s for s in rep["steps"] if s["stage"] == "dedup")
    assert dedup["stats"]["embedding"]["embedded"] > 64, dedup["stats"]["embedding"]


def test_error_in_a_task_is_one_line(ray_cluster, tmp_path):
    """A CurateError raised on a worker (here: clean's tokenizer can't be loaded) reaches the user as one line,
    exit 2, and the failed step leaves no kept.parquet behind."""
    pipe = tmp_path / "p.toml"
    pipe.write_text('[pipeline]\nname = "t"\nstages = ["clean"]\n'
                    f'[clean]\ntokenizer = "{tmp_path / "missing.json"}"\nmax_tokens = 10\n')
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["run", str(pipe), "--input", str(REPO / "data" / "hh_en.jsonl"), "--out",
                                    str(out), "--engine", "ray"])
    assert res.exit_code == 2, res.output
    err = res.output.strip().splitlines()
    assert err[-1].startswith("error: [clean] tokenizer") and "Traceback" not in res.output
    assert not (out / "01-clean" / "kept.parquet").exists() and not list(out.glob(".ray-*"))


def test_cli_engine_ray_and_pipeline_key(ray_cluster, tmp_path):
    """`curate run … --engine ray` and `[pipeline] engine = "ray"` both run on Ray; the results agree."""
    pipe = tmp_path / "p.toml"
    pipe.write_text('[pipeline]\nname = "t"\nseed = 2\nengine = "ray"\nstages = ["clean", "language"]\n')
    a = CliRunner().invoke(main, ["run", str(pipe), "--input", str(REPO / "data"), "--out", str(tmp_path / "a")])
    b = CliRunner().invoke(main, ["run", str(pipe), "--input", str(REPO / "data"), "--out", str(tmp_path / "b"),
                                  "--engine", "local"])
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert_same_run(tmp_path / "a", tmp_path / "b")
    assert pl.read_parquet(tmp_path / "a" / "pairs.parquet").height > 0


def test_every_input_format_same_bytes(ray_cluster, tmp_path):
    """Ingest on Ray, one task per source, over every format family curate reads (JSON, JSON Lines, CSV,
    Parquet; flat, conversational, hh, sharegpt, openai, messages, rated responses binarised all-margin (extra pairs) with the
    run's seed): the local engine's pairs, rejects and report."""
    fixtures = REPO / "tests" / "fixtures" / "ingest"
    inputs = sorted(str(p) for p in fixtures.iterdir() if p.suffix in (".json", ".jsonl", ".csv", ".parquet")
                    and p.name != "mapped.jsonl")  # mapped.jsonl needs its own --map
    pipe = tmp_path / "p.toml"
    pipe.write_text('[pipeline]\nname = "t"\nseed = 9\nstages = ["clean", "language"]\n'
                    '[ingest]\nbinarize = "all-margin:0.5"\n[language]\nmismatch = "flag"\n')
    cfg = load(pipe)
    run_pipeline(cfg, inputs, tmp_path / "local", engine="local")
    rep = run_pipeline(cfg, inputs, tmp_path / "ray", engine="ray")
    assert_same_run(tmp_path / "local", tmp_path / "ray")
    assert len(rep["steps"][0]["stats"]["sources"]) == len(inputs) >= 10 and rep["steps"][0]["copies"] > 0


def test_slices_follow_the_file_order(tmp_path):
    """A row-local step's batches: every row group in file order, cut into pieces of at most BATCH_ROWS rows (not
    ray.data.read_parquet, whose blocks of a large file came back rotated on Ray 2.60)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curate.engines.ray import slices

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"x": list(range(300))}), path, row_group_size=128)
    items = slices(path, 50)
    assert [(i["rg"], i["offset"], i["rows"]) for i in items] == [
        (0, 0, 50), (0, 50, 50), (0, 100, 28), (1, 0, 50), (1, 50, 50), (1, 100, 28), (2, 0, 44)]
    src = pq.ParquetFile(path)
    rows = [v for i in items for v in src.read_row_group(i["rg"]).slice(i["offset"], i["rows"]).column("x").to_pylist()]
    assert rows == list(range(300))
