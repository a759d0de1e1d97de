"""Ingest: every format family on real samples and on our fixtures, readers, detection, mapping, determinism.

Also holds the helpers the other tests/test_ingest_*.py files import."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import polars as pl
import pytest

from curate.errors import InputError
from curate.ingest import FAMILIES, ingest
from curate.ingest.readers import canonical_name
from curate.schema import PAIR_SCHEMA, REJECT_COLUMNS, with_ids

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "ingest"
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()
LLAMAFACTORY = SHARED_DATA / "llamafactory_dpo_demo"


def shared_data() -> Path:
    """The shared real samples; in CI they must be there (no skipping), elsewhere a missing folder skips."""
    if not LLAMAFACTORY.is_dir():
        if os.environ.get("CI"):
            raise AssertionError(f"shared sample data missing at {LLAMAFACTORY}")
        pytest.skip(f"shared sample data not at {LLAMAFACTORY} (not in CI)")
    return LLAMAFACTORY


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_out(out: Path) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return pl.read_parquet(out / "pairs.parquet"), pl.read_parquet(out / "rejects.parquet"), report


GOOD = {"prompt": "What is 1 + 1?", "chosen": "2", "rejected": "3"}

MAP = {"prompt": "query", "chosen": "good", "rejected": "bad"}

# file → (format, rows, first row: system, prompt turns as (role, content), chosen, chosen_score)
EXPECTED = {
    "flat.jsonl": ("flat", 3, "你是一个乐于助人的助手。", [("user", "用一句话解释什么是光合作用。")],
                   "光合作用是植物利用光能把二氧化碳和水转化为葡萄糖并释放氧气的过程。", 9.0),
    "question.jsonl": ("flat", 2, None, [("user", "Name three primary colours.")],
                       "Red, yellow and blue (in the traditional model).", None),
    "alpaca.json": ("alpaca", 2, "You are a translator.", [("user", "把下面的句子翻译成英文。\n今天天气很好。")],
                    "The weather is nice today.", None),
    "trl_conversational.jsonl": ("trl_conversational", 3, "Answer briefly.", [("user", "2 + 2 = ?")], "4", None),
    "ultrafeedback.parquet": ("ultrafeedback", 2, None, [("user", "Write a haiku about autumn.")],
                              "Crisp leaves drift and fall / ...", 8.5),
    "hh_rlhf.jsonl": ("hh_rlhf", 2, None, [("user", "How do I keep basil alive?"),
                                          ("assistant", "Give it sun and water when the soil is dry."),
                                          ("user", "How much sun?")],
                      "About six hours of direct sunlight a day.", None),
    "sharegpt.json": ("sharegpt", 2, "你是一名历史老师。", [("user", "秦朝是哪一年建立的？")], "秦朝建立于公元前221年。", None),
    "openai.jsonl": ("openai", 2, "Reply in English.", [("user", "Hello, how is the weather in Paris?")],
                     "I can't see live weather, but Paris is mild in spring.", None),
    "flat.csv": ("flat", 2, None, [("user", "Give me a synonym for happy.")], "Joyful.", 7.0),
    "mapped.jsonl": ("flat", 2, None, [("user", "What is 10 / 2?")], "5", None),
    "messages_pairs.jsonl": ("messages_pairs", 2, "You are a concise cooking assistant.",
                             [("user", "How long should I boil an egg for a runny yolk?")],
                             "About 6 minutes from boiling water, then straight into cold water.", None),
    "messages.jsonl": ("messages", 2, "你是一名耐心的数学老师。", [("user", "为什么任何数的0次方都等于1？")],
                       "因为 a^n ÷ a^n = a^(n-n) = a^0，而任何非零数除以自身等于1，所以 a^0 = 1（a≠0）。", None),
    "ultrafeedback_raw.jsonl": ("rated_completions", 2, None, [("user", "Explain in two sentences why the sky is blue.")],
                                ("Sunlight is scattered by air molecules, and shorter blue wavelengths scatter far "
                                 "more than red ones (Rayleigh scattering). So blue light reaches our eyes from every "
                                 "direction."), 4.75),
    "responses_scores.jsonl": ("rated_responses", 2, None, [("user", "Write a one-line slogan for a bicycle shop.")],
                               "Ride further, smile wider.", 8.0),
}


def turns(prompt: list[dict]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in prompt]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_family_fixture(tmp_path: Path, name: str) -> None:
    fmt, rows, system, prompt, chosen, score = EXPECTED[name]
    report = ingest([FIXTURES / name], tmp_path, mapping=MAP if name == "mapped.jsonl" else None)
    pairs, rejects, _ = read_out(tmp_path)
    src = report["sources"][canonical_name(FIXTURES / name)]
    assert src["format"] == fmt
    assert (src["rows_in"], src["rows_kept"], rejects.height) == (rows, rows, 0)
    first = pairs.row(0, named=True)
    assert first["system"] == system
    assert turns(first["prompt"]) == prompt
    assert first["chosen"] == chosen
    assert first["chosen_score"] == score
    assert first["source"] == canonical_name(FIXTURES / name) and first["source_row"] == 0
    assert pairs["source_row"].to_list() == list(range(rows))


def test_every_family_is_covered_by_a_fixture() -> None:
    assert {v[0] for v in EXPECTED.values()} == set(FAMILIES)


def test_fixture_details(tmp_path: Path) -> None:
    ingest([FIXTURES], tmp_path, mapping=MAP)
    pairs, _, report = read_out(tmp_path)
    by = {(Path(r["source"]).name, r["source_row"]): r for r in pairs.iter_rows(named=True)}
    # typed text parts are joined; replies given as typed parts too
    assert turns(by["trl_conversational.jsonl", 2]["prompt"]) == [("user", "Describe the sky in one word.")]
    assert by["trl_conversational.jsonl", 2]["chosen"] == "Blue."
    # Alpaca history becomes earlier turns; empty input adds nothing
    assert turns(by["alpaca.json", 1]["prompt"])[0] == ("user", "What is special about Rust?")
    assert turns(by["alpaca.json", 1]["prompt"])[-1] == ("user", "Summarise the previous answer in five words.")
    # ShareGPT multi-turn and HH in Chinese
    assert [r for r, _ in turns(by["sharegpt.json", 1]["prompt"])] == ["user", "assistant", "user"]
    assert by["hh_rlhf.jsonl", 1]["rejected"] == "多喝咖啡。"
    # scores: ints and numeric CSV text become floats; UltraFeedback score_* names are mapped
    assert (by["flat.jsonl", 0]["chosen_score"], by["flat.jsonl", 0]["rejected_score"]) == (9.0, 3.5)
    assert (by["flat.csv", 1]["chosen_score"], by["flat.csv", 1]["rejected_score"]) == (8.5, 2.0)
    assert by["ultrafeedback.parquet", 1]["rejected_score"] == 1.0
    # meta keeps every other field of the source row, as a JSON object
    assert json.loads(by["flat.jsonl", 0]["meta"]) == {"id": "f1"}
    assert json.loads(by["question.jsonl", 0]["meta"]) == {"source": "handwritten"}
    assert json.loads(by["openai.jsonl", 0]["meta"]) == {"input.tools": [], "input.parallel_tool_calls": True}
    uf = json.loads(by["ultrafeedback.parquet", 0]["meta"])
    assert uf["prompt_id"] == "a1" and "messages" in uf and "prompt" not in uf
    assert json.loads(by["sharegpt.json", 0]["meta"]) == {}
    # an empty system string is no system
    assert by["flat.jsonl", 2]["system"] is None
    assert report["skipped"] == [canonical_name(FIXTURES / "make_fixtures.py")]


def test_llamafactory_real_samples(tmp_path: Path) -> None:
    data = shared_data()
    raw = {f.name: json.loads(f.read_text(encoding="utf-8")) for f in sorted(data.glob("*.json"))}
    report = ingest([data], tmp_path)
    pairs, rejects, _ = read_out(tmp_path)
    assert rejects.height == 0 and pairs.height == report["input_rows"] == 600
    assert {s["format"] for s in report["sources"].values()} == {"sharegpt"}
    assert report["skipped"] == [f"{data}/SOURCES.md"]
    for name, rows in raw.items():
        got = pairs.filter(pl.col("source") == f"{data}/{name}").sort("source_row")
        assert got.height == len(rows)
        for row, out in zip(rows, got.iter_rows(named=True)):
            conv = row["conversations"]
            system = [m["value"] for m in conv if m["from"] == "system"]
            assert out["system"] == (system[0] if system else None)
            assert [m["content"] for m in out["prompt"]] == [m["value"] for m in conv if m["from"] != "system"]
            assert out["prompt"][-1]["role"] == "user"
            assert (out["chosen"], out["rejected"]) == (row["chosen"]["value"], row["rejected"]["value"])
    # the English file is multi-turn (57 rows of 5 turns per its SOURCES.md)
    en = pairs.filter(pl.col("source").str.ends_with("dpo_en_demo.json"))
    assert en.filter(pl.col("prompt").list.len() == 5).height == 57
    # exact duplicate rows in the source share pair ids (dedup relies on it)
    assert pairs["pair_id"].n_unique() < pairs.height


def test_schema_and_ids(tmp_path: Path) -> None:
    ingest([FIXTURES], tmp_path, mapping=MAP)
    pairs, rejects, _ = read_out(tmp_path)
    assert pairs.schema == PAIR_SCHEMA
    assert rejects.schema == pl.Schema({**PAIR_SCHEMA, **REJECT_COLUMNS})
    again = with_ids(pairs.drop("pair_id", "prompt_id")).collect()
    assert again["pair_id"].to_list() == pairs["pair_id"].to_list()
    assert again["prompt_id"].to_list() == pairs["prompt_id"].to_list()
    assert pairs["pair_id"].n_unique() == pairs.height


def test_row_ids_unique_and_independent_of_path_spelling(tmp_path: Path) -> None:
    """Identical rows in two files share a pair_id (content) but never a row_id; the same file named by a
    relative or an absolute path, or copied under another name, gives the same ids."""
    import os
    import shutil

    row = {"prompt": "Same question", "chosen": "Good", "rejected": "Bad"}
    a = write_jsonl(tmp_path / "a.jsonl", [row, row])
    shutil.copyfile(a, tmp_path / "copy.jsonl")
    ingest([a, tmp_path / "copy.jsonl"], tmp_path / "o1")
    pairs, _, _ = read_out(tmp_path / "o1")
    assert pairs["pair_id"].n_unique() == 1
    assert pairs["row_id"].n_unique() == 4 and pairs["row_id"].str.contains(r"^[0-9a-f]{16}$").all()
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        ingest(["a.jsonl"], tmp_path / "o2")
    finally:
        os.chdir(cwd)
    ingest([str(a.resolve())], tmp_path / "o3")
    ids2 = read_out(tmp_path / "o2")[0]["row_id"].to_list()
    assert ids2 == read_out(tmp_path / "o3")[0]["row_id"].to_list() == pairs["row_id"].to_list()[:2]


def test_same_prompt_same_prompt_id_across_formats(tmp_path: Path) -> None:
    flat = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "Hi  there", "chosen": "Hello", "rejected": "Go away"}])
    trl = write_jsonl(tmp_path / "b.jsonl", [{"prompt": [{"role": "user", "content": "Hi there "}],
                                             "chosen": [{"role": "assistant", "content": "Hello"}],
                                             "rejected": [{"role": "assistant", "content": "Bye"}]}])
    ingest([flat, trl], tmp_path / "out")
    pairs, _, _ = read_out(tmp_path / "out")
    assert pairs["prompt_id"].n_unique() == 1 and pairs["pair_id"].n_unique() == 2


def test_determinism_byte_identical(tmp_path: Path) -> None:
    inputs = [FIXTURES, FIXTURES / "flat.jsonl"]
    ingest(inputs, tmp_path / "a", mapping=MAP)
    ingest(inputs, tmp_path / "b", mapping=MAP)
    for f in ("pairs.parquet", "rejects.parquet", "report.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_folder_sorted_recursive_and_file_named_twice_read_once(tmp_path: Path) -> None:
    (tmp_path / "in" / "b").mkdir(parents=True)
    write_jsonl(tmp_path / "in" / "b" / "z.jsonl", [GOOD])
    write_jsonl(tmp_path / "in" / "a.jsonl", [GOOD])
    write_jsonl(tmp_path / "in" / "c.jsonl", [GOOD])
    (tmp_path / "in" / "notes.txt").write_text("not data")
    (tmp_path / "in" / ".hidden.jsonl").write_text("garbage")
    folder = str(tmp_path / "in")
    report = ingest([folder, f"{folder}/a.jsonl"], tmp_path / "out")
    assert list(report["sources"]) == [f"{folder}/a.jsonl", f"{folder}/b/z.jsonl", f"{folder}/c.jsonl"]
    assert report["skipped"] == [f"{folder}/.hidden.jsonl", f"{folder}/notes.txt"]  # listed, never silent
    pairs, _, _ = read_out(tmp_path / "out")
    assert pairs["source"].to_list() == list(report["sources"])


def test_glob(tmp_path: Path) -> None:
    for n in ("x1", "x2", "y"):
        write_jsonl(tmp_path / f"{n}.jsonl", [GOOD])
    report = ingest([str(tmp_path / "x*.jsonl")], tmp_path / "out")
    assert [Path(s).name for s in report["sources"]] == ["x1.jsonl", "x2.jsonl"]
    with pytest.raises(InputError, match=r"nothing\*\.jsonl: no files match"):
        ingest([str(tmp_path / "nothing*.jsonl")], tmp_path / "out2")


def test_datasets_save_to_disk(tmp_path: Path) -> None:
    import datasets

    rows = [{"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": [{"role": "assistant", "content": f"good {i}"}],
             "rejected": [{"role": "assistant", "content": f"bad {i}"}], "tag": i} for i in range(5)]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:3]), "test": datasets.Dataset.from_list(rows[3:])})
    d, single = str(tmp_path / "in" / "dd"), str(tmp_path / "in" / "single")
    dd.save_to_disk(d)
    datasets.Dataset.from_list(rows[:2]).save_to_disk(single)
    report = ingest([d, single], tmp_path / "out")
    expected = {f"{d}:train": 3, f"{d}:test": 2, single: 2}
    assert {k: v["rows_kept"] for k, v in report["sources"].items()} == expected
    assert {v["format"] for v in report["sources"].values()} == {"trl_conversational"}
    pairs, _, _ = read_out(tmp_path / "out")
    assert json.loads(pairs.filter(pl.col("source") == f"{d}:test")["meta"][1]) == {"tag": 4}
    # inside a folder, a save_to_disk folder is read as a dataset (every split), not as loose Arrow files
    report = ingest([tmp_path / "in"], tmp_path / "out2")
    assert {k: v["rows_kept"] for k, v in report["sources"].items()} == expected
    # canonical pairs (our own output) ingest again as TRL conversational with string replies
    report = ingest([tmp_path / "out" / "pairs.parquet"], tmp_path / "out3")
    assert report["kept_rows"] == 7


def test_json_lines_under_json_name_and_wrapped_array(tmp_path: Path) -> None:
    lines = write_jsonl(tmp_path / "lines.json", [GOOD, {**GOOD, "chosen": "two"}])
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"version": "1", "data": [GOOD, GOOD]}))
    report = ingest([lines, wrapped], tmp_path / "out")
    assert [s["rows_kept"] for s in report["sources"].values()] == [2, 2]
    assert [s["reader"] for s in report["sources"].values()] == ["json", "json"]


def test_mapping_and_detection_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        ingest([FIXTURES / "mapped.jsonl"], tmp_path / "a")
    msg = str(e.value)
    assert "\n" not in msg and canonical_name(FIXTURES / "mapped.jsonl") in msg
    assert "[query, good, bad]" in msg and "--map prompt=query,chosen=good,rejected=bad" in msg
    with pytest.raises(InputError, match="unknown field 'answer'"):
        ingest([FIXTURES / "mapped.jsonl"], tmp_path / "b", mapping={"answer": "good"})
    amb = write_jsonl(tmp_path / "amb.jsonl", [{"prompt": "a", "question": "b", "chosen": "c", "rejected": "d"}])
    with pytest.raises(InputError) as e:
        ingest([amb], tmp_path / "c")
    assert "ambiguous" in str(e.value) and "amb.jsonl" in str(e.value) and "--map prompt=" in str(e.value)
    # the --map it suggests works
    report = ingest([amb], tmp_path / "d", mapping={"prompt": "question"})
    pairs, _, _ = read_out(tmp_path / "d")
    assert report["kept_rows"] == 1 and pairs["prompt"][0][0]["content"] == "b"
    assert json.loads(pairs["meta"][0]) == {"prompt": "a"}  # the shadowed column stays in meta
    # files are all checked before anything is written: a bad second file leaves no output
    with pytest.raises(InputError, match="mapped.jsonl"):
        ingest([FIXTURES / "flat.jsonl", FIXTURES / "mapped.jsonl"], tmp_path / "e")
    assert not (tmp_path / "e" / "pairs.parquet").exists()


def test_conservation_mixed_good_and_bad(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES, tmp_path / "in", ignore=shutil.ignore_patterns("mapped.jsonl"))
    bad = tmp_path / "in" / "bad.jsonl"
    bad.write_bytes(b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n\xff\xfe\n[1]\n{"prompt": "a", "chosen": 1, '
                    b'"rejected": "c"}\n\n{"prompt": "x", "chosen": "y", "rejected": "y"}\n{"prompt": "tr')
    report = ingest([tmp_path / "in"], tmp_path / "out")
    pairs, rejects, _ = read_out(tmp_path / "out")
    assert report["input_rows"] == report["kept_rows"] + report["rejected_rows"]
    assert (pairs.height, rejects.height) == (report["kept_rows"], report["rejected_rows"])
    for name, s in report["sources"].items():
        assert s["rows_in"] == s["rows_kept"] + s["rows_rejected"]
        assert pairs.filter(pl.col("source") == name).height == s["rows_kept"]
        assert rejects.filter(pl.col("source") == name).height == s["rows_rejected"]
    assert report["sources"][str(bad)]["rejects_by_reason"] == {
        "identical_responses": 1, "invalid_utf8": 1, "malformed_json": 1, "non_string_content": 1, "not_an_object": 1}
    assert sum(report["rejects_by_reason"].values()) == report["rejected_rows"] == 5
    r = rejects.sort("source_row")
    assert r["source_row"].to_list() == [1, 2, 3, 4, 5]  # the blank line is not a row
    assert r["stage"].unique().to_list() == ["ingest"]
    assert r.filter(pl.col("reason") == "malformed_json")["meta"][0] == '{"prompt": "tr'
    assert r.filter(pl.col("reason") == "malformed_json")["detail"][0].startswith("line 7:")


def test_demo_samples_in_data(tmp_path: Path) -> None:
    """data/ (the README demo) covers six formats and carries the planted problems ingest must catch."""
    report = ingest([ROOT / "data"], tmp_path)
    assert {Path(k).name: v["format"] for k, v in report["sources"].items()} == {
        "chat_trl.jsonl": "trl_conversational", "flat_zh.jsonl": "flat", "hh_en.jsonl": "hh_rlhf",
        "openai_prefs.jsonl": "openai", "scored.csv": "flat", "sharegpt_ranking.json": "sharegpt"}
    assert (report["input_rows"], report["kept_rows"]) == (132, 123)
    assert report["rejects_by_reason"] == {"empty_field": 2, "identical_responses": 3, "malformed_json": 2,
                                           "non_string_content": 1, "roles_out_of_order": 1}
    pairs, _, _ = read_out(tmp_path)
    assert pairs["pair_id"].n_unique() < pairs.height  # exact duplicates are left for the dedup stage


def test_demo_samples_are_reproducible(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_samples", ROOT / "data" / "make_samples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(tmp_path)
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == sorted(p.name for p in (ROOT / "data").iterdir() if p.suffix in (".jsonl", ".json", ".csv"))
    for name in made:
        assert (tmp_path / name).read_bytes() == (ROOT / "data" / name).read_bytes(), name
