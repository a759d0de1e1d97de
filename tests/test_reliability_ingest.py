"""Regression tests for issue 15 on the ingest side: one bad row never stops a run, columns come from the whole
file, compressed inputs, folder entries not read are listed, symlinks, CSV re-sync, --map typos, order and
path-spelling independence. Each test names the "Why" bullet it guards."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import main
from curate.errors import InputError
from curate.ingest import ingest
from curate.ingest.readers import canonical_name
from tests.test_ingest import GOOD, read_out

GOOD2 = {"prompt": "Another question", "chosen": "A fine answer", "rejected": "Nope"}


def jsonl(rows: list) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def accounted(report: dict) -> None:
    assert report["input_rows"] == report["kept_rows"] + report["rejected_rows"]


# --- Why: "One bad row kills the whole run" -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["jsonl", "json"])
def test_deep_nesting_in_an_unused_field_is_one_reject(tmp_path: Path, kind: str) -> None:
    deep = b'{"prompt": "q", "chosen": "a", "rejected": "b", "extra": ' + b"[" * 1100 + b"]" * 1100 + b"}"
    # 990 levels: orjson reads it, but neither orjson nor json can write it back into meta
    almost = b'{"prompt": "q", "chosen": "a", "rejected": "c", "extra": ' + b"[" * 990 + b"]" * 990 + b"}"
    p = tmp_path / f"deep.{kind}"
    good = [json.dumps(GOOD).encode(), json.dumps(GOOD2).encode()]
    rows = [good[0], deep, almost, good[1]]
    p.write_bytes(b"\n".join(rows) + b"\n" if kind == "jsonl" else b"[" + b",".join(rows) + b"]")
    report = ingest([p], tmp_path / "out")
    accounted(report)
    assert report["kept_rows"] == 2 and report["rejects_by_reason"] == {"nesting_too_deep": 2}
    _, rejects, _ = read_out(tmp_path / "out")
    assert sorted(rejects["source_row"].to_list()) == [1, 2]


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv"])
def test_401_digit_score_is_number_out_of_range(tmp_path: Path, kind: str) -> None:
    big = "9" * 401
    p = tmp_path / f"s.{kind}"
    if kind == "csv":
        p.write_text(f"prompt,chosen,rejected,chosen_score\nq,a,b,1\nq2,a2,b2,{big}\n")
        # CSV scores are text: float("9"*401) is inf, a value, not an error; the row is kept
    else:
        rows = ['{"prompt": "q", "chosen": "a", "rejected": "b", "chosen_score": 1}',
                f'{{"prompt": "q2", "chosen": "a2", "rejected": "b2", "chosen_score": {big}}}',
                f'{{"prompt": "q3", "chosen": "a3", "rejected": "b3", "chosen_score": 1{"0" * 5000}}}']
        p.write_text("\n".join(rows) + "\n" if kind == "jsonl" else "[" + ",".join(rows) + "]")
    report = ingest([p], tmp_path / "out")
    accounted(report)
    if kind == "csv":
        assert report["rejected_rows"] == 0
    else:
        assert report["kept_rows"] == 1 and report["rejects_by_reason"] == {"number_out_of_range": 2}
        _, rejects, _ = read_out(tmp_path / "out")
        details = rejects.sort("source_row")["detail"].to_list()
        assert "64-bit float" in details[0] and "digits" in details[1], details


def test_lone_surrogate_inside_a_json_array(tmp_path: Path) -> None:
    p = tmp_path / "s.json"
    p.write_text('[{"prompt": "q", "chosen": "a", "rejected": "b"}, '
                 '{"prompt": "\\ud800 lone", "chosen": "a", "rejected": "b"}, '
                 '{"prompt": "q2", "chosen": "\\udc80", "rejected": "b"}]')
    report = ingest([p], tmp_path / "out")
    accounted(report)
    assert report["kept_rows"] == 1 and report["rejects_by_reason"] == {"invalid_unicode": 2}
    _, rejects, _ = read_out(tmp_path / "out")
    assert all("\\ud" in m for m in rejects["meta"].to_list())  # the raw row, escapes kept readable


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv"])
def test_nul_byte_in_the_first_8kb_is_a_row_reject(tmp_path: Path, kind: str) -> None:
    p = tmp_path / f"n.{kind}"
    if kind == "csv":
        p.write_bytes(b"prompt,chosen,rejected\nq,a,b\nq\x00x,a,b\nq2,a2,b2\n")
    else:
        rows = [json.dumps(GOOD).encode(), b'{"prompt": "q\x00", "chosen": "a", "rejected": "c"}',
                json.dumps(GOOD2).encode()]
        p.write_bytes(b"\n".join(rows) + b"\n" if kind == "jsonl" else b"[" + b",".join(rows) + b"]")
    report = ingest([p], tmp_path / "out")
    accounted(report)
    assert report["kept_rows"] == 2 and report["rejects_by_reason"] == {"nul_byte": 1}


def test_a_binary_file_is_still_refused(tmp_path: Path) -> None:
    p = tmp_path / "b.jsonl"
    p.write_bytes(os.urandom(4096) + b"\x00" * 200)
    with pytest.raises(InputError, match="binary"):
        ingest([p], tmp_path / "out")


def test_mixed_bad_rows_never_stop_the_cli(tmp_path: Path) -> None:
    """All of the above in one file through the CLI: exit 0, every row accounted for, no traceback."""
    p = tmp_path / "mixed.jsonl"
    p.write_bytes(jsonl([GOOD]) + b'{"prompt": "q", "chosen": "a", "rejected": "b", "x": ' + b"[" * 1100
                  + b"]" * 1100 + b"}\n" + b'{"prompt": "q", "chosen": "a", "rejected": "c", "chosen_score": '
                  + b"7" * 401 + b"}\n" + b'{"prompt": "\x00"}\n' + b'{"prompt": "\\ud800"}\n' + jsonl([GOOD2]))
    res = CliRunner().invoke(main, ["ingest", str(p), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output and "6 rows in → 2 pairs kept, 4 rows rejected" in res.output


# --- Why: "Columns are inferred from the first 500 rows" -----------------------------------------------------


def test_columns_first_seen_at_row_10000_are_honoured(tmp_path: Path) -> None:
    rows = [{"prompt": f"q{i}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(10_000)]
    late = [{"prompt": f"late {i}", "chosen": f"c{i}", "rejected": f"d{i}", "system": f"sys {i}",
             "history": [["earlier question", "earlier answer"]], "chosen_score": 5, "rejected_score": 1}
            for i in range(400)]
    p = tmp_path / "late.jsonl"
    p.write_bytes(jsonl(rows + late))
    report = ingest([p], tmp_path / "out")
    fields = report["sources"][str(p)]["fields"]
    assert {"system", "history", "chosen_score", "rejected_score"} <= set(fields)
    pairs, _, _ = read_out(tmp_path / "out")
    tail = pairs.filter(pl.col("source_row") >= 10_000)
    assert tail.height == 400
    assert tail["system"].null_count() == 0  # 400 system prompts kept, not moved to meta
    assert (tail["prompt"].list.len() == 3).all()  # 400 conversations keep their earlier turns
    assert (tail["chosen_score"] == 5.0).all() and (tail["meta"] == "{}").all()
    head = pairs.filter(pl.col("source_row") < 10_000)
    assert head["system"].null_count() == 10_000 and (head["meta"] == "{}").all()


def test_late_columns_in_parquet(tmp_path: Path) -> None:
    n = 2_000
    tbl = pa.table({"prompt": [f"q{i}" for i in range(n)], "chosen": ["a"] * n, "rejected": ["b"] * n,
                    "system": [None] * (n - 1) + ["the only system prompt"]})
    p = tmp_path / "late.parquet"
    pq.write_table(tbl, p, row_group_size=500)
    report = ingest([p], tmp_path / "out")
    assert report["sources"][str(p)]["fields"]["system"] == "system"
    pairs, _, _ = read_out(tmp_path / "out")
    assert pairs.filter(pl.col("system").is_not_null())["source_row"].to_list() == [n - 1]


# --- Why: "Silent skips" / compressed input ------------------------------------------------------------------


def _zst(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as s:
        s.write(data)
    return sink.getvalue().to_pybytes()


COMPRESS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress, "zst": _zst}


@pytest.mark.parametrize("comp", sorted(COMPRESS))
@pytest.mark.parametrize("kind", ["jsonl", "json", "csv"])
def test_compressed_inputs_are_read(tmp_path: Path, comp: str, kind: str) -> None:
    raw = {"jsonl": jsonl([GOOD, GOOD2]), "json": json.dumps([GOOD, GOOD2]).encode(),
           "csv": b"prompt,chosen,rejected\nq,a,b\nq2,a2,b2\n"}[kind]
    p = tmp_path / f"in.{kind}.{comp}"
    p.write_bytes(COMPRESS[comp](raw))
    report = ingest([p], tmp_path / "out")
    assert (report["input_rows"], report["kept_rows"]) == (2, 2)
    assert report["sources"][str(p)]["reader"] == kind


@pytest.mark.parametrize("comp", sorted(COMPRESS))
def test_corrupt_compressed_input_is_one_line_exit_2(tmp_path: Path, comp: str) -> None:
    p = tmp_path / f"in.jsonl.{comp}"
    p.write_bytes(COMPRESS[comp](jsonl([GOOD] * 2000))[:-40])  # truncated stream
    res = CliRunner().invoke(main, ["ingest", str(p), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and str(p) in err and "corrupt or truncated" in err, err
    assert not (tmp_path / "out" / "pairs.parquet").exists()


def _folder_with_strays(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jsonl").write_bytes(jsonl([GOOD]))
    (d / "b.jsonl.gz").write_bytes(gzip.compress(jsonl([GOOD2])))
    (d / "c.tsv").write_text("prompt\tchosen\trejected\nq\ta\tb\n")
    (d / "notes.txt").write_text("not data")
    (d / "README.md").write_text("# about this data")
    (d / "make_data.py").write_text("print(1)")
    (d / ".hidden.jsonl").write_bytes(jsonl([GOOD]))
    (d / ".git").mkdir()
    (d / ".git" / "HEAD").write_text("ref")
    return d


def test_folder_reads_compressed_and_tsv_and_lists_the_rest(tmp_path: Path) -> None:
    d = _folder_with_strays(tmp_path)
    report = ingest([d], tmp_path / "out")
    assert report["input_rows"] == 3 == report["kept_rows"]
    assert [(e["path"][len(str(d)) + 1 :], e["why"]) for e in report["not_read"]] == [
        (".git/", "hidden"), (".hidden.jsonl", "hidden"), ("README.md", "documentation or code"),
        ("make_data.py", "documentation or code"), ("notes.txt", "not a data file")]


def test_cli_warns_in_one_line_and_strict_inputs_refuses(tmp_path: Path) -> None:
    d = _folder_with_strays(tmp_path)
    res = CliRunner().invoke(main, ["ingest", str(d), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    # a README or a script beside the data is listed in the report but not warned about
    assert len(warnings) == 1 and "3 entries" in warnings[0] and "notes.txt" in warnings[0], res.stderr
    assert "README.md" not in res.stderr and "make_data.py" not in res.stderr
    res = CliRunner().invoke(main, ["ingest", str(d), "--out", str(tmp_path / "out2"), "--strict-inputs"])
    assert res.exit_code == 2 and "--strict-inputs" in res.stderr and "notes.txt" in res.stderr, res.output
    assert not (tmp_path / "out2" / "pairs.parquet").exists()


def test_symlink_to_parent_is_not_followed(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jsonl").write_bytes(jsonl([GOOD]))
    (tmp_path / "secret.jsonl").write_bytes(jsonl([GOOD2]))
    os.symlink("..", d / "up")
    os.symlink("../secret.jsonl", d / "leak.jsonl")
    os.symlink("a.jsonl", d / "alias.jsonl")  # inside the folder: the same file, read once
    (d / "sub").mkdir()
    os.symlink("..", d / "sub" / "loop")  # leads back inside: no endless walk
    report = ingest([d], tmp_path / "out")
    assert report["input_rows"] == 1
    why = {e["path"].rsplit("/", 1)[-1]: e["why"] for e in report["not_read"]}
    assert why["up"].startswith("symlink to") and "outside" in why["leak.jsonl"]


def test_dangling_symlink_is_one_line_exit_2(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jsonl").write_bytes(jsonl([GOOD]))
    os.symlink("gone.jsonl", d / "b.jsonl")
    for target in (d, d / "b.jsonl"):
        res = CliRunner().invoke(main, ["ingest", str(target), "--out", str(tmp_path / "out")])
        assert res.exit_code == 2, res.output
        err = res.stderr.strip()
        assert len(err.splitlines()) == 1 and "dangling symlink" in err and "b.jsonl" in err, err


# --- Why: "A CSV unclosed quote swallows the following good records" ----------------------------------------


def test_csv_broken_quote_costs_only_its_record(tmp_path: Path) -> None:
    p = tmp_path / "q.csv"
    p.write_text(
        "prompt,chosen,rejected\n"
        "q1,a1,b1\n"
        'q2,"never closed,b2\n'           # the broken record
        "q3,a3,b3\n"
        'q4,"multi\nline answer",b4\n'    # a real multi-line field stays one record
        'q5,"a5"x,b5\n'                   # text after a closing quote
        "q6,a6,b6\n"
        'q7,"also broken,b7\n'            # the last one runs to the end of the file
        "q8,a8,b8\n"
    )
    report = ingest([p], tmp_path / "out")
    accounted(report)
    pairs, rejects, _ = read_out(tmp_path / "out")
    assert [t[0]["content"] for t in pairs["prompt"].to_list()] == ["q1", "q3", "q4", "q6", "q8"]
    assert pairs.filter(pl.col("chosen").str.contains("line answer"))["chosen"].to_list() == ["multi\nline answer"]
    assert report["rejects_by_reason"] == {"malformed_csv": 3}
    details = rejects.sort("source_row")["detail"].to_list()
    assert details[0].startswith("line 3:") and "line 4" in details[0], details
    assert rejects.sort("source_row")["meta"].to_list()[0] == 'q2,"never closed,b2'


# --- Why: "Bad settings pass silently" (--map naming a missing column) -------------------------------------


def test_map_naming_a_missing_column(tmp_path: Path) -> None:
    p = tmp_path / "m.jsonl"
    p.write_bytes(jsonl([{"query": "q", "good": "a", "bad": "b"}]))
    res = CliRunner().invoke(main, ["ingest", str(p), "--out", str(tmp_path / "o"),
                                    "--map", "prompt=querry,chosen=good,rejected=bad"])
    assert res.exit_code == 2 and "--map prompt=querry: no input has a column 'querry'" in res.stderr, res.output
    assert "query" in res.stderr and not (tmp_path / "o" / "pairs.parquet").exists()


# --- Why: exit codes (corrupt Parquet page) ------------------------------------------------------------------


def test_corrupt_parquet_page_is_one_line_exit_2(tmp_path: Path) -> None:
    n = 5_000
    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"prompt": [f"question {i} " * 8 for i in range(n)], "chosen": ["a"] * n,
                             "rejected": ["b"] * n}), p, row_group_size=1_000, compression="zstd")
    data = bytearray(p.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 400] = os.urandom(400)  # a page in the middle; header and footer intact
    p.write_bytes(bytes(data))
    res = CliRunner().invoke(main, ["ingest", str(p), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and str(p) in err and "corrupt Parquet data" in err, err


# --- Why: "Input order changes which duplicate survives", "relative vs absolute path changes the bytes" ----


def test_input_order_and_path_spelling_do_not_change_the_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "data"
    d.mkdir()
    (d / "a.jsonl").write_bytes(jsonl([GOOD, GOOD2]))
    (d / "b.jsonl").write_bytes(jsonl([GOOD2, {"prompt": "b only", "chosen": "x", "rejected": "y"}]))
    monkeypatch.chdir(tmp_path)
    spellings = [
        ["data/a.jsonl", "data/b.jsonl"],
        ["data/b.jsonl", "data/a.jsonl"],                      # another order
        [str(d / "b.jsonl"), "./data//a.jsonl"],               # absolute, ./ and //
        ["data/sub/../b.jsonl", str(d / "a.jsonl")],
    ]
    (d / "sub").mkdir()
    outs = []
    for k, inputs in enumerate(spellings):
        ingest(inputs, tmp_path / f"o{k}")
        outs.append(tmp_path / f"o{k}")
    for o in outs[1:]:
        for f in ("pairs.parquet", "rejects.parquet", "report.json"):
            assert (o / f).read_bytes() == (outs[0] / f).read_bytes(), (o, f)
    pairs, _, _ = read_out(outs[0])
    assert pairs["source"].unique(maintain_order=True).to_list() == ["data/a.jsonl", "data/b.jsonl"]
    assert canonical_name(d / "a.jsonl") == "data/a.jsonl"
    assert canonical_name("/elsewhere/x.jsonl") == "/elsewhere/x.jsonl"
