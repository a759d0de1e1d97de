"""Regression tests for issue 15 on the run-folder side: the lock, kill -9 during export, leftovers, DONE
markers that are re-checked, report.json last, user-fixable conditions as exit 2, determinism across input
order and path spelling. Real processes and real kill -9 where the condition can be produced; failure
injection (monkeypatch) only where it can't (root reads chmod-0 files; no tmpfs to fill)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from curate.cli import main
from curate.config import load
from curate.errors import ConfigError, RunLockedError
from curate.runner import LOCK, clean_leftovers, run_lock, run_pipeline
from tests.conftest import REPO

PIPE = '[pipeline]\nname = "t"\nseed = 7\nstages = ["clean"]\n[export]\ntest_size = 0.25\n'
DEDUP = ('[pipeline]\nname = "d"\nseed = 3\nstages = ["clean", "dedup"]\n[dedup]\nmethods = ["exact"]\n'
         '[export]\ntest_size = 0.3\n')


def rows(prefix: str, n: int) -> list[dict]:
    return [{"prompt": f"{prefix} question {i}?", "chosen": f"{prefix} good {i}", "rejected": f"{prefix} bad {i}"}
            for i in range(n)]


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items))
    return path


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    write_jsonl(tmp_path / "in" / "a.jsonl", rows("a", 12))
    pipe = tmp_path / "p.toml"
    pipe.write_text(PIPE)
    return tmp_path / "in", pipe


def cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args))
    assert "Traceback" not in res.output + res.stderr, res.output + res.stderr
    return res.exit_code, res.output, res.stderr


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def python(code: str, cwd: Path | None = None, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd or REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


# --- Why: "No lock on a run folder" ---------------------------------------------------------------------------


def test_second_run_into_a_held_folder_exits_2_naming_the_holder(setup, tmp_path: Path) -> None:
    inputs, pipe = setup
    out = tmp_path / "run"
    out.mkdir()
    holder = python(f"""
        import time
        from pathlib import Path
        from curate.runner import run_lock
        with run_lock(Path({str(out)!r})):
            print("held", flush=True)
            time.sleep(60)
    """)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = cli("run", str(pipe), "--input", str(inputs), "--out", str(out))
        assert code == 2
        line = one_error_line(err)
        assert f"pid {holder.pid}" in line and str(out) in line and "another curate run" in line, line
        assert not (out / "00-ingest").exists()  # the loser wrote nothing
        with pytest.raises(RunLockedError), run_lock(out):
            pass
    finally:
        holder.kill()  # our own child, by its pid
        holder.wait()
    code, out_text, _ = cli("run", str(pipe), "--input", str(inputs), "--out", str(out))
    assert code == 0 and (out / "report.json").is_file() and not (out / LOCK).exists(), out_text


def test_two_runs_at_once_one_wins_and_reports_only_what_is_on_disk(setup, tmp_path: Path) -> None:
    inputs, pipe = setup
    write_jsonl(inputs / "big.jsonl", rows("big", 3000))
    out = tmp_path / "run"
    code = f"""
        import sys
        from curate.cli import main
        sys.argv = ["curate", "run", {str(pipe)!r}, "--input", {str(inputs)!r}, "--out", {str(out)!r}]
        main()
    """
    procs = [python(code) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes in ([0, 0], [0, 2]), results  # never 1, never a crash
    for rc, _, err in results:
        assert "Traceback" not in err
        if rc == 2:
            assert "another curate run is using this run folder" in err
    report = json.loads((out / "report.json").read_text())
    for split, n in report["export"]["splits"].items():
        assert len((out / "export" / "trl" / f"{split}.jsonl").read_text().splitlines()) == n
        assert (out / "export" / "llamafactory" / f"{split}.jsonl").is_file()


def test_stale_lock_of_a_dead_run_does_not_block(setup, tmp_path: Path) -> None:
    inputs, pipe = setup
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text(json.dumps({"pid": 2**22 + 12345, "host": "gone"}))
    said: list[str] = []
    rep = run_pipeline(load(pipe), [inputs], out, progress=said.append)
    assert rep["kept_rows"] == 12
    assert any("did not finish" in s and str(2**22 + 12345) in s for s in said), said


# --- Why: "Export is not atomic", temp files leak, DONE trusted blindly ------------------------------------------


def test_kill_9_during_export_keeps_the_old_export_and_no_report(setup, tmp_path: Path) -> None:
    inputs, pipe = setup
    out = tmp_path / "run"
    run_pipeline(load(pipe), [inputs], out)
    before = {p.relative_to(out / "export"): p.read_bytes() for p in (out / "export").rglob("*") if p.is_file()}
    assert {"manifest.json", "README.md"} <= {p.name for p in before}
    write_jsonl(inputs / "b.jsonl", rows("b", 5))  # the second run has more data
    killed = python(f"""
        import os, signal
        from pathlib import Path
        import curate.export as ex
        from curate.config import load
        from curate.runner import run_pipeline
        real = ex.save_hf
        def die(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of the export
        ex.save_hf = die
        run_pipeline(load({str(pipe)!r}), [{str(inputs)!r}], Path({str(out)!r}))
    """)
    killed.wait(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    after = {p.relative_to(out / "export"): p.read_bytes() for p in (out / "export").rglob("*") if p.is_file()}
    assert after == before  # the old export, whole: not a mix, not a half
    assert not (out / "report.json").exists()  # no report describes counts that are not on disk
    assert list(out.glob(".curate-export-*"))  # the half-built one is left by kill -9 ...
    said: list[str] = []
    rep = run_pipeline(load(pipe), [inputs], out, progress=said.append)
    assert not list(out.glob(".curate-export-*"))  # ... and removed by the next run
    assert any("did not finish" in s for s in said)
    assert rep["export"]["splits"]["train"] + rep["export"]["splits"]["test"] == 17
    assert json.loads((out / "report.json").read_text())["kept_rows"] == 17


def test_export_error_removes_its_temp_folder_and_keeps_the_old(setup, tmp_path: Path, monkeypatch) -> None:
    inputs, pipe = setup
    out = tmp_path / "run"
    run_pipeline(load(pipe), [inputs], out)
    manifest = (out / "export" / "manifest.json").read_bytes()
    import curate.export as ex

    def boom(*a, **k):
        raise RuntimeError("injected failure in the HF writer")

    monkeypatch.setattr(ex, "save_hf", boom)
    with pytest.raises(RuntimeError):
        run_pipeline(load(pipe), [inputs], out)
    assert (out / "export" / "manifest.json").read_bytes() == manifest
    assert not list(out.glob(".curate-export-*"))
    assert not list(out.rglob("*.tmp")) and not (out / LOCK).exists()


def test_leftover_temp_files_are_removed_by_the_next_run(setup, tmp_path: Path) -> None:
    inputs, pipe = setup
    out = tmp_path / "run"
    run_pipeline(load(pipe), [inputs], out)
    junk = [out / "01-clean" / ".kept.parquet.abc123.tmp", out / "00-ingest" / ".pairs.parquet.x.tmp",
            out / ".report.json.q.tmp", out / "export" / ".README.md.z.tmp"]
    for j in junk:
        j.write_bytes(b"half a file" * 1000)
    (out / ".curate-export-export-deadbeef" / "hf").mkdir(parents=True)
    assert len(clean_leftovers(out)) == 5
    for j in junk:
        j.write_bytes(b"again")
    run_pipeline(load(pipe), [inputs], out)
    assert not any(j.exists() for j in junk)


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip"])
def test_done_marker_is_rechecked_against_its_outputs(setup, tmp_path: Path, damage: str) -> None:
    inputs, pipe = setup
    out = tmp_path / "run"
    run_pipeline(load(pipe), [inputs], out)
    kept = out / "01-clean" / "kept.parquet"
    good = kept.read_bytes()
    done = json.loads((out / "01-clean" / "DONE").read_text())
    assert done["outputs"]["kept.parquet"] == {"size": len(good), "sha256": __import__("hashlib").sha256(good).hexdigest()}
    if damage == "delete":
        kept.unlink()
    elif damage == "truncate":
        kept.write_bytes(good[: len(good) // 2])
    else:  # same size, one byte changed
        kept.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])
    said: list[str] = []
    rep = run_pipeline(load(pipe), [inputs], out, progress=said.append)
    assert "ingest: unchanged, skipped" in said and "clean: unchanged, skipped" not in said
    assert kept.read_bytes() == good and rep["kept_rows"] == 12


# --- Why: "Exit codes": user-fixable conditions are exit 2 with one line --------------------------------------


def test_out_under_a_file(setup, tmp_path: Path) -> None:
    inputs, pipe = setup
    (tmp_path / "afile").write_text("x")
    code, _, err = cli("run", str(pipe), "--input", str(inputs), "--out", str(tmp_path / "afile" / "run"))
    assert code == 2 and "is a file, not a folder" in one_error_line(err)


def test_out_read_only(setup, tmp_path: Path, monkeypatch) -> None:
    inputs, pipe = setup
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: inject what a read-only folder answers
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m, **k: False if str(p).startswith(str(ro)) else real(p, m, **k))
        monkeypatch.setattr(Path, "mkdir", _denied_under(ro, Path.mkdir))
    else:
        ro.chmod(0o500)
    code, _, err = cli("run", str(pipe), "--input", str(inputs), "--out", str(ro / "run"))
    assert code == 2 and str(ro / "run") in one_error_line(err)
    assert "permission denied" in err or "not writable" in err


def _denied_under(root: Path, real):
    def mkdir(self, *a, **k):
        if str(self).startswith(str(root)) and self != root:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)
    return mkdir


def test_disk_full_while_writing_is_exit_2(setup, tmp_path: Path) -> None:
    """A real write failure: a file-size limit (RLIMIT_FSIZE) makes the OS refuse writes past 64 KB (EFBIG), as
    a full disk refuses them (ENOSPC); both are one line and exit 2."""
    inputs, pipe = setup
    write_jsonl(inputs / "big.jsonl", rows("x" * 200, 3000))
    out = tmp_path / "run"
    proc = python(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))
        from curate.cli import main
        sys.argv = ["curate", "run", {str(pipe)!r}, "--input", {str(inputs)!r}, "--out", {str(out)!r}]
        main()
    """)
    proc.wait(timeout=300)
    err = proc.stderr.read()
    assert proc.returncode == 2, err
    line = one_error_line(err)
    assert "file too large" in line and str(out) in line and "Traceback" not in err, err


def test_no_space_left_is_exit_2_naming_the_file(setup, tmp_path: Path, monkeypatch) -> None:
    import errno
    import shutil

    inputs, pipe = setup

    def full(src, dst, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(shutil, "copyfile", full)  # the final pairs.parquet copy
    code, _, err = cli("run", str(pipe), "--input", str(inputs), "--out", str(tmp_path / "run"))
    line = one_error_line(err)
    assert code == 2 and "no space left on the device" in line and "pairs.parquet" in line, line


def test_unreadable_input_is_exit_2(setup, tmp_path: Path, monkeypatch) -> None:
    """Hashing happens before ingest: a file root can read but a user can't is exit 2 naming it (injected:
    tests may run as root)."""
    import curate.io as cio

    inputs, pipe = setup
    victim = str((inputs / "a.jsonl").resolve())
    real = cio._sha256_file

    def denied(path, *a):
        if path == victim:
            raise PermissionError(13, "Permission denied", path)
        return real(path, *a)

    monkeypatch.setattr(cio, "_sha256_file", denied)
    code, _, err = cli("run", str(pipe), "--input", str(inputs), "--out", str(tmp_path / "run"))
    assert code == 2 and "a.jsonl: permission denied" in one_error_line(err)


def test_pipeline_file_not_utf8_and_bad_settings_fail_before_data_moves(setup, tmp_path: Path) -> None:
    inputs, pipe = setup
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[pipeline]\nname = "caf\xe9"\nstages = ["clean"]\n')
    out = tmp_path / "run"
    code, _, err = cli("run", str(latin), "--input", str(inputs), "--out", str(out))
    assert code == 2 and "not UTF-8" in one_error_line(err) and str(latin) in err
    for setting, fragment in [("clean.max_response_chars=0", "out of range"), ("export.test_size=nan", "nan"),
                              ("export.test_size=-1", "out of range"), ("clean.max_prompt_chars=true", "integer")]:
        code, _, err = cli("run", str(pipe), "--input", str(inputs), "--out", str(out), "--set", setting)
        assert code == 2 and fragment in one_error_line(err), (setting, err)
    bad_seed = tmp_path / "s.toml"
    bad_seed.write_text('[pipeline]\nseed = -1\nstages = ["clean"]\n')
    with pytest.raises(ConfigError, match="seed must be an integer from 0"):
        load(bad_seed)
    assert not out.exists()  # nothing was written for any of them


def test_dangling_symlink_in_a_run_is_exit_2(setup, tmp_path: Path) -> None:
    inputs, pipe = setup
    os.symlink(tmp_path / "nowhere.jsonl", inputs / "gone.jsonl")
    code, _, err = cli("run", str(pipe), "--input", str(inputs), "--out", str(tmp_path / "run"))
    assert code == 2 and "gone.jsonl: dangling symlink" in one_error_line(err)


def test_strict_inputs_and_the_not_read_warning_in_a_run(setup, tmp_path: Path) -> None:
    inputs, pipe = setup
    (inputs / "notes.txt").write_text("x")
    code, _, err = cli("run", str(pipe), "--input", str(inputs), "--out", str(tmp_path / "run"))
    assert code == 0 and sum(line.startswith("warning:") and "notes.txt" in line for line in err.splitlines()) == 1
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Not read" in html and "notes.txt" in html
    assert json.loads((tmp_path / "run" / "report.json").read_text())["not_read"][0]["why"] == "not a data file"
    code, _, err = cli("run", str(pipe), "--input", str(inputs), "--out", str(tmp_path / "run2"), "--strict-inputs")
    assert code == 2 and "notes.txt" in one_error_line(err) and not (tmp_path / "run2").exists()


# --- Why: "Input order changes which duplicate survives", "relative vs absolute path changes the bytes" -------


def test_survivor_and_bytes_independent_of_input_order_and_spelling(tmp_path: Path, monkeypatch) -> None:
    """Byte-identical means every data file: the run's pairs/rejects and every file of the export, manifest
    and dataset card included. inputs.json and report.json also record the command as typed, so they are
    compared without those fields."""
    shared = [{"prompt": f"Shared question {i}?", "chosen": f"from {{}} {i}", "rejected": f"bad {i}"} for i in range(6)]
    d = tmp_path / "data"
    write_jsonl(d / "a.jsonl", [{**r, "chosen": r["chosen"].format("a")} for r in shared] + rows("a", 4))
    write_jsonl(d / "b.jsonl", [{**r, "chosen": r["chosen"].format("b")} for r in shared] + rows("b", 4))
    pipe = tmp_path / "p.toml"
    pipe.write_text(DEDUP)
    monkeypatch.chdir(tmp_path)
    runs = {"ab": ["data/a.jsonl", "data/b.jsonl"], "ba": ["data/b.jsonl", "data/a.jsonl"],
            "abs": [str(d / "b.jsonl"), "./data//a.jsonl"], "folder": [str(d) + "/"]}
    for name, inputs in runs.items():
        run_pipeline(load("p.toml" if name != "abs" else pipe), inputs, tmp_path / name)
    base = tmp_path / "ab"
    pairs = __import__("polars").read_parquet(base / "pairs.parquet")
    survivors = pairs.filter(pairs["prompt"].list.first().struct.field("content").str.starts_with("Shared"))
    assert survivors.height == 6 and set(survivors["source"]) == {"data/a.jsonl"}  # first in canonical order
    files = sorted(p.relative_to(base) for p in base.rglob("*") if p.is_file() and p.suffix != ".html")
    for name in runs:
        other = tmp_path / name
        for rel in files:
            a, b = (base / rel).read_bytes(), (other / rel).read_bytes()
            if rel.name in ("inputs.json", "report.json"):
                ja, jb = json.loads(a), json.loads(b)
                for j in (ja, jb):
                    j.pop("inputs", None) if rel.name == "inputs.json" else j.pop("pipeline_file", None)
                    if "export" in j:
                        j["export"].pop("path", None)
                        j["export"].pop("pairs_file", None)
                assert ja == jb, (name, rel)
            else:
                assert a == b, (name, rel)
    manifest = json.loads((base / "export" / "manifest.json").read_text())
    assert [f["path"] for f in manifest["inputs"]] == ["data/a.jsonl", "data/b.jsonl"]
    assert manifest["pipeline_file"] == "p.toml"


def test_export_never_replaces_a_folder_it_did_not_write(setup, tmp_path: Path) -> None:
    """The old export was removed with rmtree whatever the folder held; now only an export is replaced."""
    inputs, pipe = setup
    out = tmp_path / "run"
    run_pipeline(load(pipe), [inputs], out, export=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("months of work")
    code, _, err = cli("export", str(out), "--out", str(mine))
    assert code == 2 and "'thesis.tex', which is not part of a curate export" in one_error_line(err)
    assert (mine / "thesis.tex").read_text() == "months of work"
    code, _, _ = cli("export", str(out), "--out", str(tmp_path / "exp"))
    code2, _, _ = cli("export", str(out), "--out", str(tmp_path / "exp"))  # an export replaces an export
    assert code == code2 == 0 and (tmp_path / "exp" / "manifest.json").is_file()
    assert oct((tmp_path / "exp").stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
