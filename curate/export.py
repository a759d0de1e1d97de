"""Export: canonical pairs → an ORPO-ready dataset folder that training jobs load.

EXPORT_DIR/
  hf/                        datasets.DatasetDict (train, test) saved with save_to_disk
  trl/{train,test}.parquet   TRL conversational format: prompt = messages (system first when present),
  trl/{train,test}.jsonl       chosen = [assistant message], rejected = [assistant message], + provenance columns
  llamafactory/{train,test}.jsonl + dataset_info.json   LLaMA-Factory ShareGPT ranking format
  kto/{train,test}.parquet|.jsonl   (formats = [..., "kto"]) unpaired: prompt, completion = [assistant message],
                             label (true for the chosen reply, false for the rejected one), two rows per pair
  README.md                  dataset card
  manifest.json              pipeline, curate version, seed, input and output file hashes

The split is by prompt_id (seeded), so no prompt lands in both splits. Nothing here carries a timestamp:
the same pairs + config + seed give byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curate import __version__
from curate.errors import InputError, OutputError
from curate.io import ROW_GROUP, STREAM_CHUNK, atomic_path, atomic_write_text, count_rows, sha256_file, writing

SPLITS = ("train", "test")
PROVENANCE = ("pair_id", "prompt_id", "row_id", "source", "lang")
SCORES = ("chosen_score", "rejected_score")
QUALITY_PREFIX = "quality_"  # the quality stage's flag columns (curate/stages/quality.py)
FORMATS = ("hf", "trl", "llamafactory", "kto")


def carried(names: list[str]) -> list[str]:
    """Columns exported beside prompt/chosen/rejected: provenance, the scores and every quality flag column, so a
    training job can filter (e.g. drop pairs with quality_tied_scores)."""
    return [c for c in (*PROVENANCE, *SCORES) if c in names] + [c for c in names if c.startswith(QUALITY_PREFIX)]


@dataclass(frozen=True)
class Config:
    test_size: float = field(
        default=0.05,
        metadata={"min": 0, "help": "Test split: a fraction of pairs (< 1) or a number of pairs (>= 1), rounded to "
                  "whole prompts."},
    )
    seed: int = field(
        default=0, metadata={"min": 0, "help": "Seed of the train/test split (defaults to the pipeline seed)."}
    )
    formats: tuple[str, ...] = field(
        default=("hf", "trl", "llamafactory"),
        metadata={"help": "Which outputs to write: hf, trl, llamafactory, kto (unpaired prompt/completion/label)."},
    )
    name: str = field(default="curate-orpo", metadata={"help": "Dataset name used in the card and dataset_info.json."})
    license: str = field(
        default="",
        metadata={"help": "Licence of the data, for the dataset card (curate can't know it; empty: the card says "
                  "'not stated'). Also `curate run/export --license`."},
    )
    description: str = field(default="", metadata={"help": "Free text for the top of the dataset card."})

    def validate(self) -> None:
        if self.test_size < 0:
            raise ValueError("test_size must be >= 0")
        bad = sorted(set(self.formats) - set(FORMATS))
        if bad:
            raise ValueError(f"unknown format {bad[0]!r} (known: {', '.join(FORMATS)})")


def resolve_pairs(path: str | Path) -> tuple[Path, Path | None]:
    """A run folder (reviewed pairs preferred), a folder with pairs.parquet, or a Parquet file → (pairs, run dir)."""
    p = Path(path)
    if p.is_file() and p.suffix == ".parquet":
        return p, None
    if p.is_dir():
        for candidate in (p / "review" / "pairs.parquet", p / "pairs.parquet"):
            if candidate.is_file():
                return candidate, p
    raise InputError(f"{path}: not a run folder, a folder with pairs.parquet, or a .parquet file of pairs")


def assign_splits(pairs: pl.LazyFrame, test_size: float, seed: int) -> pl.DataFrame:
    """prompt_id → split. Prompts are shuffled with the seed and taken for test until test_size pairs are reached."""
    counts = pairs.group_by("prompt_id").len().sort("prompt_id").collect()
    n_pairs = int(counts["len"].sum())
    target = test_size * n_pairs if test_size < 1 else min(test_size, n_pairs)
    order = np.random.default_rng(seed).permutation(counts.height)
    shuffled = counts[order]
    before = shuffled["len"].cum_sum() - shuffled["len"]  # pairs already in test before this prompt
    is_test = (before.to_numpy() < target) & (target > 0)
    return shuffled.select("prompt_id").with_columns(
        pl.Series("split", np.where(is_test, "test", "train"), dtype=pl.String)
    )


def to_trl(pairs: pl.LazyFrame) -> pl.LazyFrame:
    names = pairs.collect_schema().names()
    msg = pl.Struct({"role": pl.String, "content": pl.String})
    has_system = pl.col("system").is_not_null() & (pl.col("system") != "")
    system = pl.struct(pl.lit("system").alias("role"), pl.col("system").alias("content"))
    prompt = pl.col("prompt").cast(pl.List(msg))

    def reply(c: str) -> pl.Expr:
        return pl.concat_list(pl.struct(pl.lit("assistant").alias("role"), pl.col(c).alias("content")))

    return pairs.select(
        # Both branches are columns: an empty-list literal in otherwise() made this sink hold ~1 GB at 1M pairs.
        pl.when(has_system).then(pl.concat_list(system, prompt)).otherwise(prompt).alias("prompt"),
        reply("chosen").alias("chosen"),
        reply("rejected").alias("rejected"),
        *[pl.col(c) for c in carried(names)],
    )


def to_kto(trl: pl.LazyFrame) -> pl.LazyFrame:
    """TRL's unpaired preference format (KTOTrainer): each pair becomes a desirable row (the chosen reply,
    label true) followed by an undesirable one (the rejected reply, label false), both with the pair's prompt and
    columns — what `trl.data_utils.unpair_preference_dataset` makes, streamed."""
    extra = [c for c in trl.collect_schema().names() if c not in ("prompt", "chosen", "rejected")]
    both = pl.concat_list(
        pl.struct(pl.col("chosen").alias("completion"), pl.lit(True).alias("label")),
        pl.struct(pl.col("rejected").alias("completion"), pl.lit(False).alias("label")),
    ).alias("__kto")
    return (
        trl.select("prompt", both, *extra).explode("__kto").unnest("__kto")
        .select("prompt", "completion", "label", *extra)
    )


def to_llamafactory(trl: pl.LazyFrame) -> pl.LazyFrame:
    """ShareGPT ranking: conversations [{from, value}], chosen/rejected {from: gpt, value}, system apart."""
    role = pl.element().struct.field("role")
    turns = pl.col("prompt").list.filter(role != "system")
    conv = turns.list.eval(
        pl.struct(
            pl.when(role == "user").then(pl.lit("human")).otherwise(pl.lit("gpt")).alias("from"),
            pl.element().struct.field("content").alias("value"),
        )
    )
    sys_turn = pl.col("prompt").list.filter(role == "system").list.first().struct.field("content")

    def gpt(c: str) -> pl.Expr:
        return pl.struct(pl.lit("gpt").alias("from"), pl.col(c).list.first().struct.field("content").alias("value"))

    return trl.select(conv.alias("conversations"), gpt("chosen").alias("chosen"), gpt("rejected").alias("rejected"),
                      sys_turn.fill_null("").alias("system"))


def export(
    source: str | Path, out_dir: str | Path, cfg: Config | None = None, pipeline: Any = None
) -> dict[str, Any]:
    """Write the export folder; return a summary (split sizes, files) that also goes into the run report."""
    cfg = cfg or Config()
    pairs_path, run_dir = resolve_pairs(source)
    target = Path(out_dir)
    # Built in a temp folder beside the target and renamed into place: an interrupted export never leaves a
    # partial folder where a finished one is expected (the old one stays until the new one is complete).
    build = _start_build(target)
    try:
        with writing(target):
            summary = _export_into(build, target, pairs_path, run_dir, cfg, pipeline)
            _swap_into_place(build, target)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return summary


EXPORT_ENTRIES = {"hf", "trl", "llamafactory", "README.md", "manifest.json"}


def _start_build(target: Path) -> Path:
    """Check the target can be replaced, remove earlier runs' leftovers beside it, make the build folder."""
    from curate.runner import make_out_dir

    if target.exists() or target.is_symlink():
        if not target.is_dir() or target.is_symlink():
            raise OutputError(f"--out {target}: is a file, not a folder")
        foreign = sorted(set(os.listdir(target)) - EXPORT_ENTRIES)
        if foreign:  # never delete a folder curate didn't write
            raise OutputError(f"--out {target}: exists and holds {foreign[0]!r}, which is not part of a curate "
                              f"export; remove it or choose another folder")
    make_out_dir(target.parent)
    for old in target.parent.glob(f".curate-export-{target.name}-*"):  # an export that was killed (kill -9)
        shutil.rmtree(old, ignore_errors=True)
    build = Path(tempfile.mkdtemp(prefix=f".curate-export-{target.name}-", dir=target.parent))
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(build, 0o777 & ~umask)  # mkdtemp makes 0700; the export gets the permissions mkdir would give
    return build


def _swap_into_place(build: Path, target: Path) -> None:
    """Rename the finished build over the target (the old export moved aside first, then removed)."""
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".curate-export-{target.name}-old-", dir=target.parent))
        os.rmdir(old)
        os.rename(target, old)
        os.rename(build, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(build, target)


def _export_into(out: Path, target: Path, pairs_path: Path, run_dir: Path | None, cfg: Config,
                 pipeline: Any) -> dict[str, Any]:
    pairs = pl.scan_parquet(pairs_path)
    splits = assign_splits(pairs, cfg.test_size, cfg.seed)
    # A membership test rather than a join: it streams in file order (an order-keeping join buffered ~1 GB at 1M).
    test_ids = splits.filter(pl.col("split") == "test")["prompt_id"].implode()
    tagged = pairs.with_columns(
        pl.when(pl.col("prompt_id").is_in(test_ids)).then(pl.lit("test")).otherwise(pl.lit("train")).alias("split")
    )
    work = out / ".work"  # inside the build folder: removed with it, never left in /tmp
    work.mkdir()
    try:
        with pl.Config(streaming_chunk_size=STREAM_CHUNK):
            counts, tmp_parquet = _write_splits(tagged, cfg, out, work)
        if "llamafactory" in cfg.formats:
            atomic_write_text(out / "llamafactory" / "dataset_info.json", _dump(llamafactory_info(cfg.name)))
        if "hf" in cfg.formats:
            save_hf(tmp_parquet, out / "hf", work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    review = _review_provenance(run_dir)
    summary = {"path": str(target), "pairs_file": str(pairs_path), "splits": counts, "review": review}
    card = dataset_card(cfg, pairs, counts, run_dir, pipeline, review)
    atomic_write_text(out / "README.md", card)
    manifest = build_manifest(out, cfg, run_dir, pipeline, pairs_path, counts, review)
    atomic_write_text(out / "manifest.json", _dump(manifest))
    summary["manifest_sha256"] = sha256_file(out / "manifest.json")
    return summary


def _write_splits(tagged: pl.LazyFrame, cfg: Config, out: Path, work: Path) -> tuple[dict[str, int], dict[str, Path]]:
    """Per split: TRL Parquet (kept in `work` for the HF step), then TRL JSONL and LLaMA-Factory JSONL from it.
    Returns the pair count and the TRL Parquet path of each split."""
    counts: dict[str, int] = {}
    tmp_parquet: dict[str, Path] = {}
    for split in SPLITS:
        part = to_trl(tagged.filter(pl.col("split") == split))
        trl_path = work / f"{split}.parquet"
        part.sink_parquet(trl_path, engine="streaming", row_group_size=ROW_GROUP)
        tmp_parquet[split] = trl_path
        counts[split] = count_rows(trl_path)
        if "trl" in cfg.formats:
            _write(out / "trl" / f"{split}.parquet", lambda t, p=trl_path: shutil.copyfile(p, t))
            _write(out / "trl" / f"{split}.jsonl", lambda t, p=trl_path: pl.scan_parquet(p).sink_ndjson(t))
        if "llamafactory" in cfg.formats:
            _write(
                out / "llamafactory" / f"{split}.jsonl",
                lambda t, p=trl_path: to_llamafactory(pl.scan_parquet(p)).sink_ndjson(t),
            )
        if "kto" in cfg.formats:
            _write(out / "kto" / f"{split}.parquet",
                   lambda t, p=trl_path: to_kto(pl.scan_parquet(p)).sink_parquet(t, row_group_size=ROW_GROUP))
            _write(out / "kto" / f"{split}.jsonl", lambda t, p=trl_path: to_kto(pl.scan_parquet(p)).sink_ndjson(t))
    return counts, tmp_parquet


def _write(path: Path, fn) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fn(tmp)


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def llamafactory_info(name: str) -> dict[str, Any]:
    def entry(split: str) -> dict[str, Any]:
        return {
            "file_name": f"{split}.jsonl",
            "formatting": "sharegpt",
            "ranking": True,
            "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "system": "system"},
            "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
        }

    return {f"{name}_train": entry("train"), f"{name}_test": entry("test")}


def plain_arrow_type(t: Any) -> Any:
    """The same Arrow type with 32-bit offsets: large_string → string, large_list → list (inside structs too).

    Polars writes large_* types; `datasets` maps them to LargeList / Value("large_string"), which datasets 4.x
    can't describe (`ds.features` raises AttributeError: 'LargeList' object has no attribute 'length'). Plain
    lists and strings load in datasets 4.x and 5.x alike; offsets stay 32-bit per Arrow chunk, which
    `datasets` writes in batches far below 2 GiB.
    """
    import pyarrow as pa

    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_large_list(t) or pa.types.is_list(t):
        return pa.list_(pa.field(t.value_field.name, plain_arrow_type(t.value_type), t.value_field.nullable))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, plain_arrow_type(f.type), f.nullable) for f in t])
    return t


def plain_arrow_schema(schema: Any) -> Any:
    import pyarrow as pa

    return pa.schema([pa.field(f.name, plain_arrow_type(f.type), f.nullable) for f in schema])


def save_hf(parquet: dict[str, Path], target: Path, work: Path) -> None:
    """DatasetDict.save_to_disk from the split Parquet files, via an Arrow cache on disk (memory stays flat).

    Features are plain List / Value("string") (see `plain_arrow_type`), so datasets 4.x and 5.x both load them.
    `datasets` derives `_fingerprint` in state.json from temp paths; it is pinned to the content hash so that
    the folder is byte-identical across runs."""
    import datasets

    datasets.disable_progress_bars()
    import pyarrow.parquet as pq

    def load(p: Path) -> datasets.Dataset:
        schema = plain_arrow_schema(pq.read_schema(p))
        if pq.ParquetFile(p).metadata.num_rows == 0:  # from_parquet refuses an empty file
            return datasets.Dataset(pq.read_table(p).cast(schema))
        return datasets.Dataset.from_parquet(str(p), cache_dir=str(work / "hf-cache"), keep_in_memory=False,
                                             features=datasets.Features.from_arrow_schema(schema))

    dd = datasets.DatasetDict({s: load(p) for s, p in parquet.items()})
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dd.save_to_disk(str(tmp))
    for split, p in parquet.items():
        state_path = tmp / split / "state.json"
        state = json.loads(state_path.read_text())
        state["_fingerprint"] = sha256_file(p)[:16]
        state_path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def _review_provenance(run_dir: Path | None) -> dict[str, Any] | None:
    if run_dir is None or not (run_dir / "review" / "stats.json").is_file():
        return None
    return json.loads((run_dir / "review" / "stats.json").read_text())


def dataset_card(cfg: Config, pairs: pl.LazyFrame, counts: dict[str, int], run_dir: Path | None, pipeline: Any,
                 review: dict | None) -> str:
    names = pairs.collect_schema().names()
    by_source = pairs.group_by("source").len().sort("source").collect()
    lines = [
        "---",
        f"pretty_name: {cfg.name}",
        "tags: [orpo, dpo, preference, curate]",
        "configs:",
        "- config_name: default",
        "  data_files:",
        *[f"  - split: {s}\n    path: trl/{s}.parquet" for s in SPLITS],
        "---",
        "",
        f"# {cfg.name}",
        "",
        cfg.description or "Preference pairs (prompt / chosen / rejected) prepared for ORPO/DPO training with curate.",
        "",
        "## Splits",
        "",
        "| split | pairs |",
        "| --- | ---: |",
        *[f"| {s} | {counts[s]:,} |" for s in SPLITS],
        "",
        "The split is by prompt: no prompt appears in both.",
        "",
    ]
    if "lang" in names:
        langs = pairs.group_by("lang").len().sort("lang").collect()
        lines += ["## Languages", "", "| language | pairs |", "| --- | ---: |"]
        lines += [f"| {lang} | {n:,} |" for lang, n in langs.iter_rows()] + [""]
    lines += _sources_and_licence(cfg, by_source, run_dir)
    if review:
        lines += ["## Human review", "", "```json", json.dumps(review, indent=2, ensure_ascii=False), "```", ""]
    if pipeline is not None:
        lines += ["## Pipeline", "", f"File `{pipeline.path}`, seed {pipeline.seed}, curate {__version__}:", "",
                  "```json", json.dumps(pipeline.raw, indent=2, ensure_ascii=False), "```", ""]
    lines += [
        "## Loading",
        "",
        "```python",
        "from datasets import load_from_disk, load_dataset",
        'dd = load_from_disk("hf")',
        'dd = load_dataset("parquet", data_files={"train": "trl/train.parquet", "test": "trl/test.parquet"})',
        "```",
        "",
    ]
    return "\n".join(lines)


NO_LICENCE = "Not stated — set `export.license` (or pass `--license` to `curate run` / `curate export`)."


def _sources_and_licence(cfg: Config, by_source: pl.DataFrame, run_dir: Path | None) -> list[str]:
    """The licence as the user stated it (never a default: curate can't know it) and every source with its hash.

    Sources are the run's input files (inputs.json, with SHA-256) plus any source named in the pairs; a file
    that contributed no pair is listed with 0, so the card names everything the data came from.
    """
    pairs = {str(s): int(n) for s, n in by_source.iter_rows()}
    hashes: dict[str, str] = {}
    if run_dir is not None and (run_dir / "inputs.json").is_file():
        for f in json.loads((run_dir / "inputs.json").read_text()).get("files", []):
            hashes[str(f.get("path"))] = str(f.get("sha256", ""))
    names = sorted(set(pairs) | set(hashes))
    lines = ["## Sources", "", "| source | SHA-256 | pairs |", "| --- | --- | ---: |"]
    lines += [f"| `{n}` | {('`' + hashes[n][:16] + '…`') if hashes.get(n) else ''} | {pairs.get(n, 0):,} |"
              for n in names]
    lines += ["", "## Licence", "", cfg.license.strip() or NO_LICENCE, "",
              "Each source's own licence and terms apply to the pairs taken from it.", ""]
    return lines


def build_manifest(out: Path, cfg: Config, run_dir: Path | None, pipeline: Any, pairs_path: Path,
                   counts: dict[str, int], review: dict | None) -> dict[str, Any]:
    inputs = []
    if run_dir is not None and (run_dir / "inputs.json").is_file():
        inputs = json.loads((run_dir / "inputs.json").read_text()).get("files", [])
    outputs = {
        str(p.relative_to(out)): sha256_file(p)
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    return {
        "curate_version": __version__,
        "pipeline_file": pipeline.path if pipeline is not None else None,
        "pipeline": pipeline.raw if pipeline is not None else None,
        "seed": cfg.seed,
        "export": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "pairs_sha256": sha256_file(pairs_path),
        "splits": counts,
        "inputs": inputs,
        "outputs": outputs,
        "review": review,
    }
