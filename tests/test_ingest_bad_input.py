"""Bad input: per-row problems become rejects with reasons; whole-file problems are one-line InputErrors that
name the file. Never a traceback of another kind."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.errors import CurateError, InputError
from curate.ingest import ingest
from tests.test_ingest import GOOD, read_out, write_jsonl


def one_line_error(path: Path, out: Path, fragment: str, inputs: list | None = None) -> str:
    with pytest.raises(InputError) as e:
        ingest(inputs or [path], out)
    msg = str(e.value)
    assert isinstance(e.value, CurateError)
    assert "\n" not in msg and str(path) in msg and fragment in msg, msg
    assert not (out / "pairs.parquet").exists()
    return msg


def test_truncated_last_json_line(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD)[:20])  # no newline, cut mid-string
    report = ingest([p], tmp_path / "out")
    pairs, rejects, _ = read_out(tmp_path / "out")
    assert (report["kept_rows"], report["rejects_by_reason"]) == (1, {"malformed_json": 1})
    assert rejects["meta"][0] == json.dumps(GOOD)[:20]


def test_wrong_types(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "w.jsonl", [
        GOOD,
        {"prompt": ["not", "messages"], "chosen": "a", "rejected": "b"},  # list of strings where text is expected
        {"prompt": "q", "chosen": None, "rejected": "b"},
        {"prompt": "q", "chosen": {"text": "a"}, "rejected": "b"},
        {"prompt": 3.5, "chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": "a", "rejected": "b", "system": 7},
        {"prompt": "q", "chosen": "a", "rejected": "b", "chosen_score": True},
    ])
    report = ingest([p], tmp_path / "out")
    _, rejects, _ = read_out(tmp_path / "out")
    assert report["kept_rows"] == 1
    assert rejects.sort("source_row")["reason"].to_list() == [
        "non_string_content", "missing_field", "missing_field", "non_string_content", "non_string_content", "bad_score"]


def test_wrong_types_in_messages(tmp_path: Path) -> None:
    m = lambda r, c: {"role": r, "content": c}  # noqa: E731
    p = write_jsonl(tmp_path / "m.jsonl", [
        {"prompt": [m("user", "q")], "chosen": [m("assistant", "a")], "rejected": [m("assistant", "b")]},
        {"prompt": [m("user", 5)], "chosen": [m("assistant", "a")], "rejected": [m("assistant", "b")]},
        {"prompt": ["q"], "chosen": [m("assistant", "a")], "rejected": [m("assistant", "b")]},
        {"prompt": [m("user", [{"type": "image_url", "image_url": "x"}])], "chosen": [m("assistant", "a")],
         "rejected": [m("assistant", "b")]},
        {"prompt": [m("user", "q")], "chosen": [m("user", "a")], "rejected": [m("assistant", "b")]},
        {"prompt": [m("user", "q")], "chosen": [], "rejected": [m("assistant", "b")]},
        {"prompt": [{"content": "q"}], "chosen": [m("assistant", "a")], "rejected": [m("assistant", "b")]},
    ])
    report = ingest([p], tmp_path / "out")
    _, rejects, _ = read_out(tmp_path / "out")
    assert report["kept_rows"] == 1
    assert rejects.sort("source_row")["reason"].to_list() == [
        "non_string_content", "wrong_type", "non_string_content", "roles_out_of_order", "empty_field", "missing_field"]


@pytest.mark.parametrize("name,content", [("e.jsonl", b""), ("w.jsonl", b"\n  \n"), ("e.json", b""),
                                          ("e.csv", b""), ("e.parquet", b""), ("a.json", b"[]")])
def test_empty_file(tmp_path: Path, name: str, content: bytes) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    one_line_error(p, tmp_path / "out", "empty")


def test_empty_parquet_and_header_only_csv(tmp_path: Path) -> None:
    p = tmp_path / "e.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), p)
    one_line_error(p, tmp_path / "out", "no rows")
    c = tmp_path / "h.csv"
    c.write_text("prompt,chosen,rejected\n")
    one_line_error(c, tmp_path / "out", "no rows")


@pytest.mark.parametrize("name", ["b.jsonl", "b.json", "b.csv", "b.parquet"])
def test_binary_file(tmp_path: Path, name: str) -> None:
    p = tmp_path / name
    p.write_bytes(bytes(range(256)) * 40)
    one_line_error(p, tmp_path / "out", "binary" if not name.endswith(".parquet") else "not a Parquet file")


def test_corrupt_parquet_and_utf16(tmp_path: Path) -> None:
    p = tmp_path / "c.parquet"
    p.write_bytes(b"PAR1" + b"garbage" * 10)
    one_line_error(p, tmp_path / "out", "not a readable Parquet file")
    u = tmp_path / "u.jsonl"
    u.write_bytes(json.dumps(GOOD).encode("utf-16"))
    one_line_error(u, tmp_path / "out", "UTF-16")


def test_text_that_is_not_json(tmp_path: Path) -> None:
    p = tmp_path / "notes.jsonl"
    p.write_text("hello\nworld\n")
    one_line_error(p, tmp_path / "out", "no row is a JSON object")
    # A truncated JSON array costs only its broken tail: the elements before it are read.
    a = tmp_path / "trunc.json"
    a.write_text("[" + json.dumps(GOOD) + ", {\"prompt\": ")
    report = ingest([a], tmp_path / "out")
    assert (report["kept_rows"], report["rejects_by_reason"]) == (1, {"malformed_json": 1})
    b = tmp_path / "garbage.json"
    b.write_text("[not json at all")
    one_line_error(b, tmp_path / "out2", "no row is a JSON object")


def test_values_orjson_refuses(tmp_path: Path) -> None:
    p = tmp_path / "n.jsonl"
    p.write_text(json.dumps(GOOD) + "\n" + '{"prompt": "q", "chosen": "a", "rejected": "b", "id": 123456789012345678901234567890, '
                 '"x": NaN}\n' + '{"prompt": "q", "chosen": 5, "rejected": "b", "id": 123456789012345678901234567890}\n')
    report = ingest([p], tmp_path / "out")
    pairs, rejects, _ = read_out(tmp_path / "out")
    assert (report["kept_rows"], report["rejects_by_reason"]) == (2, {"non_string_content": 1})
    assert json.loads(pairs["meta"][1])["id"] == 123456789012345678901234567890
    assert '"id":' in rejects["meta"][0]  # orjson reads a >64-bit int as a float: kept, possibly rounded


def test_ten_megabyte_field(tmp_path: Path) -> None:
    big = "长" * (10 * 1024 * 1024 // 3) + "end"  # ~10 MB of UTF-8
    p = write_jsonl(tmp_path / "big.jsonl", [GOOD, {"prompt": "q", "chosen": big, "rejected": "b"}, GOOD])
    c = tmp_path / "big.csv"
    c.write_text(f'prompt,chosen,rejected\nq,"{big}",b\n', encoding="utf-8")
    report = ingest([p, c], tmp_path / "out")
    pairs, _, _ = read_out(tmp_path / "out")
    assert report["kept_rows"] == 4
    assert pairs.filter(pl.col("chosen").str.len_bytes() > 10_000_000).height == 2  # kept whole: clean limits it
    # a rejected huge row keeps only ~2 KB of it in meta
    q = write_jsonl(tmp_path / "bigbad.jsonl", [GOOD, {"prompt": "q", "chosen": big, "rejected": big}])
    ingest([q], tmp_path / "out2")
    _, rejects, _ = read_out(tmp_path / "out2")
    assert rejects["reason"].to_list() == ["identical_responses"] and len(rejects["meta"][0]) <= 2049


def test_invalid_utf8(tmp_path: Path) -> None:
    p = tmp_path / "u.jsonl"
    p.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"prompt": "\xc3\x28", "chosen": "a", "rejected": "b"}\n'
                  + b'{"prompt": "\\ud800", "chosen": "a", "rejected": "b"}\n')
    a = tmp_path / "u.json"
    a.write_bytes(b"[" + json.dumps(GOOD).encode() + b', {"prompt": "\xff", "chosen": "a", "rejected": "b"}]')
    c = tmp_path / "u.csv"
    c.write_bytes(b"prompt,chosen,rejected\nq,a,b\n\xffq,a,b\n")
    report = ingest([p, a, c], tmp_path / "out")
    _, rejects, _ = read_out(tmp_path / "out")
    # bytes that aren't UTF-8 are invalid_utf8; a \\ud800 escape (valid UTF-8, not a character) invalid_unicode
    assert report["kept_rows"] == 3 and report["rejects_by_reason"] == {"invalid_unicode": 1, "invalid_utf8": 3}
    assert all("\ufffd" in m or "\\ud800" in m for m in rejects["meta"].to_list())


def test_bom(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    p = tmp_path / "b.jsonl"
    p.write_bytes(bom + json.dumps(GOOD).encode() + b"\n" + bom + json.dumps(GOOD).encode() + b"\n")
    a = tmp_path / "b.json"
    a.write_bytes(bom + json.dumps([GOOD]).encode())
    c = tmp_path / "b.csv"
    c.write_bytes(bom + b"prompt,chosen,rejected\nq,a,b\n")
    report = ingest([p, a, c], tmp_path / "out")
    pairs, _, _ = read_out(tmp_path / "out")
    assert report["kept_rows"] == 4 and report["rejected_rows"] == 0
    assert pairs["meta"].to_list() == ["{}"] * 4  # no "\ufeffprompt" column leaked into meta


def test_missing_inputs(tmp_path: Path) -> None:
    one_line_error(tmp_path / "nope.jsonl", tmp_path / "out", "no such file or folder")
    (tmp_path / "empty_dir").mkdir()
    one_line_error(tmp_path / "empty_dir", tmp_path / "out", "no .jsonl")
    t = tmp_path / "x.txt"
    t.write_text("hello")
    one_line_error(t, tmp_path / "out", "unsupported file type .txt")
    with pytest.raises(InputError, match="no input"):
        ingest([], tmp_path / "out")


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Failure injection: tests may run as root, who can read a chmod-0 file, so the open itself is made to fail."""
    from curate.ingest import readers

    p = write_jsonl(tmp_path / "p.jsonl", [GOOD])

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr(readers, "open", denied, raising=False)
    one_line_error(p, tmp_path / "out", "permission denied")


@pytest.mark.parametrize("kind", ["missing", "empty", "binary", "undetectable"])
def test_cli_one_line_error_exit_2(tmp_path: Path, kind: str) -> None:
    from click.testing import CliRunner

    from curate.cli import main

    p = tmp_path / "in.jsonl"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "binary":
        p.write_bytes(b"\x00\x01\x02" * 100)
    elif kind == "undetectable":
        write_jsonl(p, [{"query": "q", "good": "a", "bad": "b"}])
    result = CliRunner().invoke(main, ["ingest", str(p), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and str(p) in err and "Traceback" not in result.output + err, err


def test_fuzzed_rows_never_raise(tmp_path: Path) -> None:
    """Random junk in every field of every family: rows are kept or rejected with a known reason, nothing raises."""
    import random

    from curate.ingest import REASONS

    rng = random.Random(7)

    def junk(depth: int = 0):
        kind = rng.randrange(9 if depth < 2 else 6)
        if kind == 0:
            return None
        if kind == 1:
            return rng.randint(-3, 3)
        if kind == 2:
            return rng.random()
        if kind == 3:
            return rng.choice([True, False])
        if kind in (4, 5):
            return rng.choice(["", " ", "hi", "user", "assistant", "gpt", "human", "system", "text",
                               "\n\nHuman: a\n\nAssistant: b", "\n\nAssistant: x"])
        if kind == 6:
            return [junk(depth + 1) for _ in range(rng.randrange(3))]
        if kind == 7:
            return {rng.choice(["role", "from", "content", "value", "type", "text", "messages"]): junk(depth + 1)
                    for _ in range(rng.randrange(4))}
        return [{"role": rng.choice(["user", "assistant", "system", "tool"]), "content": junk(depth + 1)}
                for _ in range(rng.randrange(1, 4))]

    shapes = {
        "flat": ["prompt", "chosen", "rejected", "system", "history", "chosen_score", "rejected_score"],
        "alpaca": ["instruction", "input", "chosen", "rejected", "history"],
        "trl": ["prompt", "chosen", "rejected"],
        "uf": ["chosen", "rejected", "score_chosen", "score_rejected"],
        "hh": ["chosen", "rejected"],
        "sharegpt": ["conversations", "chosen", "rejected", "system"],
        "openai": ["input", "preferred_output", "non_preferred_output"],
    }
    good = {
        "flat": GOOD, "alpaca": {"instruction": "i", "chosen": "a", "rejected": "b"},
        "trl": {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
                "rejected": [{"role": "assistant", "content": "b"}]},
        "uf": {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
               "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]},
        "hh": {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"},
        "sharegpt": {"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "gpt", "value": "a"},
                     "rejected": {"from": "gpt", "value": "b"}},
        "openai": {"input": {"messages": [{"role": "user", "content": "q"}]},
                   "preferred_output": [{"role": "assistant", "content": "a"}],
                   "non_preferred_output": [{"role": "assistant", "content": "b"}]},
    }
    paths = []
    for name, cols in shapes.items():
        rows = [good[name]] * 200  # a majority of good rows, so detection sees the family
        for _ in range(150):
            row = dict(good[name])
            for c in rng.sample(cols, rng.randint(1, len(cols))):
                if rng.random() < 0.2:
                    row.pop(c, None)
                else:
                    row[c] = junk()
            rows.append(row)
        paths.append(write_jsonl(tmp_path / f"{name}.jsonl", rows))
    report = ingest(paths, tmp_path / "out")
    assert report["input_rows"] == 7 * 350 == report["kept_rows"] + report["rejected_rows"]
    assert set(report["rejects_by_reason"]) <= set(REASONS)
    assert report["rejected_rows"] > 500
