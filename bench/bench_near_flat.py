"""Prototype for issue 16 phase 2: dedup keys and near-duplicate candidates with flat arrays, against today's code.

    .venv/bin/python bench/bench_near_flat.py RUN/02-language/kept.parquet [--rounds 2] [--bands 25x5]

On the prompts of a stage file (a run folder of bench/bench_default_pipeline.py --keep):
1. keys: curate.dedup.normalise.normalise per text (today) vs the same steps as Polars expressions (NFKC, CJK
   punctuation, OpenCC t2s in one call per 20k keys, case folding from Python's own casefold table, punctuation
   and whitespace classes built from unicodedata / re, so no Unicode-version drift); keys compared one by one,
   plus every code point alone.
2. near-duplicate pairs of the distinct keys: curate.dedup.minhash.candidate_pairs (datasketch MinHash + LSH, exact
   Jaccard on string sets) vs flat arrays: code points -> n-gram hashes (NumPy) -> MinHash digests (rensa's
   digest_matrix_from_flat_token_hashes, Rust) -> LSH bands sorted in NumPy -> Jaccard on the hashed n-gram sets.
CPU seconds (process_time: all threads) beside pair counts; pairs both find must have the same Jaccard.
Landed (issue 16 phase 2): curate.dedup.normalise.normalise_series and curate.dedup.minhash are this prototype's
code, so "today" below is now the landed flat path (rensa) and the comparison checks the prototype against it;
the datasketch path it replaced is the 1e52a76 / 11fb8c1 revision of curate/dedup/minhash.py.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.dedup import normalise as N


@functools.lru_cache(maxsize=1)
def _tables() -> tuple[str, str, dict[str, str]]:
    """Punctuation (category P*), whitespace (re's \\s) and casefold tables from this Python's own Unicode data."""
    allc = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    punct = "".join(c for c in allc if unicodedata.category(c).startswith("P"))
    ws = "".join(c for c in allc if re.match(r"\s", c))
    fold = {c: c.casefold() for c in allc if c.casefold() != c}  # Python's own table: no Unicode-version drift
    return punct, ws, fold


def _esc(point: int) -> str:
    return f"\\x{{{point:x}}}"


def _cls(chars: str) -> str:
    """A regex class (Rust syntax) for exactly these characters; runs of code points become ranges."""
    pts = sorted(ord(c) for c in chars)
    parts = []
    i = 0
    while i < len(pts):
        j = i
        while j + 1 < len(pts) and pts[j + 1] == pts[j] + 1:
            j += 1
        a, b = pts[i], pts[j]
        parts.append(_esc(a) if a == b else f"{_esc(a)}-{_esc(b)}")
        i = j + 1
    return "[" + "".join(parts) + "]"


def normalise_series(
    s: pl.Series,
    unicode_form: str = "NFKC",
    t2s: bool = True,
    casefold: bool = True,
    punctuation: str = "strip",
    whitespace: str = "strip",
    strip_prefixes: bool = True,
) -> pl.Series:
    """curate.dedup.normalise.normalise over a Series, as Polars expressions (OpenCC t2s in one call per 20k keys,
    joined by a private-use character no key contains; row by row if one does)."""
    punct, ws, fold = _tables()
    cjk = {chr(k): v for k, v in N._CJK_PUNCT.items()}
    e = pl.col("t").fill_null("").str.normalize(unicode_form).str.replace_many(list(cjk), list(cjk.values()))
    out = pl.DataFrame({"t": s}).select(e.alias("t"))["t"]
    if strip_prefixes:  # N.strip_prefix: up to three leading instruction prefixes, never down to an empty key
        wsc = _cls(ws)
        pat = "(?i)" + N._PREFIX.pattern.replace(r"\s", wsc)
        col = pl.col("t")
        for _ in range(3):
            new = col.str.replace(pat, "")
            col = pl.when(new.str.replace_all(wsc, "") != "").then(new).otherwise(col)
        out = pl.DataFrame({"t": out}).select(col.alias("t"))["t"]
    if t2s:
        sep = "\ue000"
        conv = N._t2s()
        if out.str.contains(sep, literal=True).any():  # the separator occurs: convert row by row
            out = pl.Series([conv.convert(t) for t in out.to_list()], dtype=pl.String)
            sep = None
        parts = []
        step = 20000
        for k in range(0, len(out) if sep else 0, step):
            chunk = out.slice(k, step).to_list()
            res = conv.convert(sep.join(chunk)).split(sep)
            assert len(res) == len(chunk)
            parts.append(pl.Series(res, dtype=pl.String))
        out = pl.concat(parts) if sep and parts else out
    e = pl.col("t")
    if casefold:
        e = e.str.replace_many(list(fold), list(fold.values()))
    if punctuation == "strip":
        e = e.str.replace_all(_cls(punct), "")
    wsc = _cls(ws)
    e = (
        e.str.replace_all(wsc + "+", "")
        if whitespace == "strip"
        else e.str.replace_all(wsc + "+", " ").str.strip_chars(ws)
    )
    return pl.DataFrame({"t": out}).select(e.alias("t"))["t"]


M1, M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
MUL = np.uint64(0x100000001B3)


def _mix(h):
    h = h ^ (h >> np.uint64(30))
    h = h * M1
    h = h ^ (h >> np.uint64(27))
    h = h * M2
    return h ^ (h >> np.uint64(31))


def codepoints(keys: list[str]):
    lens = np.fromiter((len(k) for k in keys), dtype=np.int64, count=len(keys))
    cp = np.frombuffer("".join(keys).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    off = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum(lens, out=off[1:])
    return cp, off, lens


def ngram_hashes(cp, off, lens, sizes):
    """Flat uint64 hash per n-gram window (window n = sizes[row]); a key shorter than n is one token."""
    n_rows = len(lens)
    out_h, out_row = [], []
    with np.errstate(over="ignore"):
        for n in np.unique(sizes):
            rows = np.flatnonzero(sizes == n)
            # windows: start positions p with p + n <= end, for rows with len >= n
            full = rows[lens[rows] >= n]
            cnt = lens[full] - n + 1
            starts = np.repeat(off[full], cnt) + (np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt))
            h = np.zeros(len(starts), dtype=np.uint64)
            for k in range(int(n)):
                h = h * MUL + cp[starts + k]
            h = _mix(h ^ np.uint64(int(n) << 56))
            out_h.append(h)
            out_row.append(np.repeat(full, cnt))
            short = rows[(lens[rows] < n) & (lens[rows] > 0)]  # whole key as one token
            if len(short):
                hs = np.zeros(len(short), dtype=np.uint64)
                for k in range(int(n) - 1):
                    valid = lens[short] > k
                    hs = np.where(valid, hs * MUL + cp[np.minimum(off[short] + k, len(cp) - 1)], hs)
                hs = _mix(hs ^ (lens[short].astype(np.uint64) << np.uint64(56)))
                out_h.append(hs)
                out_row.append(short)
    h = np.concatenate(out_h)
    row = np.concatenate(out_row)
    order = np.argsort(row, kind="stable")  # grouped by row; duplicates kept (a MinHash does not mind them)
    h, row = h[order], row[order]
    toff = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=n_rows), out=toff[1:])
    return h, toff


def digests(h, toff, num_perm, seed, chunk=50_000):
    from rensa import RMinHash

    n = len(toff) - 1
    out = np.zeros((n, num_perm), dtype=np.uint32)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        lo, hi = toff[a], toff[b]
        m = RMinHash.digest_matrix_from_flat_token_hashes(
            h[lo:hi], (toff[a : b + 1] - lo).astype(np.uint64), num_perm, seed
        )
        out[a:b] = np.asarray(m.to_rows(), dtype=np.uint32)
    return out


def band_pairs(sig, nonempty, b, r):
    n = sig.shape[0]
    rows_all = np.flatnonzero(nonempty)
    found = []
    with np.errstate(over="ignore"):
        for k in range(b):
            band = sig[rows_all, k * r : (k + 1) * r].astype(np.uint64)
            h = np.zeros(len(rows_all), dtype=np.uint64)
            for c in range(r):
                h = _mix(h * MUL + band[:, c])
            order = np.argsort(h, kind="stable")
            hs = h[order]
            rs = rows_all[order]
            same = hs[1:] == hs[:-1]
            if not same.any():
                continue
            # Pairs within runs of equal hashes: neighbours d apart in the sorted order, for d = 1..D, cover every
            # pair of a run up to D + 1 long without a Python loop; the rare longer runs add their far pairs.
            start = np.flatnonzero(np.concatenate([[True], ~same]))
            length = np.diff(np.concatenate([start, [len(hs)]]))
            d_max = int(min(length.max() - 1, 8))
            for d in range(1, d_max + 1):
                m = hs[d:] == hs[:-d]
                a, c = rs[:-d][m], rs[d:][m]
                found.append(np.minimum(a, c) * n + np.maximum(a, c))
            for st, m in zip(start[length > d_max + 1].tolist(), length[length > d_max + 1].tolist()):
                idx = np.sort(rs[st : st + m])
                ii, jj = np.triu_indices(m, d_max + 1)
                found.append(idx[ii] * n + idx[jj])
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    u = np.unique(np.concatenate(found))
    return u // n, u % n


def jaccard_pairs(h, toff, i, j):
    """Exact Jaccard of the n-gram hash sets of each candidate pair (sets made only for candidate rows)."""
    sets: dict[int, np.ndarray] = {}

    def of(r: int) -> np.ndarray:
        if r not in sets:
            sets[r] = np.unique(h[toff[r] : toff[r + 1]])
        return sets[r]

    out = np.empty(len(i), dtype=np.float64)
    for k, (a, b) in enumerate(zip(i.tolist(), j.tolist())):
        sa, sb = of(a), of(b)
        inter = len(np.intersect1d(sa, sb, assume_unique=True))
        out[k] = inter / (len(sa) + len(sb) - inter)
    return out


def candidate_pairs_fast(keys, sizes, num_perm=128, threshold=0.6, lsh_threshold=None, seed=1, bands=None):
    from datasketch.lsh import _optimal_param

    lsh_t = lsh_threshold if lsh_threshold is not None else max(0.05, threshold - 0.1)
    b, r = bands or _optimal_param(lsh_t, num_perm, 0.5, 0.5)
    t = {}
    c = time.process_time()
    cp, off, lens = codepoints(keys)
    h, toff = ngram_hashes(cp, off, lens, np.asarray(sizes))
    t["ngrams"] = time.process_time() - c
    c = time.process_time()
    sig = digests(h, toff, num_perm, seed)
    t["signatures"] = time.process_time() - c
    c = time.process_time()
    i, j = band_pairs(sig, lens > 0, b, r)
    t["lsh"] = time.process_time() - c
    c = time.process_time()
    s = jaccard_pairs(h, toff, i, j) if len(i) else np.zeros(0)
    ok = s >= threshold
    t["verify"] = time.process_time() - c
    return i[ok], j[ok], s[ok], t, len(i)


def main() -> None:
    from curate.dedup.minhash import candidate_pairs
    from curate.dedup.normalise import cjk_share

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage_file")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (today, flat, today, flat ...)")
    ap.add_argument("--bands", default="", help="BxR band layout for the flat LSH (default: datasketch's own)")
    ap.add_argument("--keys-only", action="store_true", help="only the key comparison")
    ap.add_argument("--skip-codepoints", action="store_true", help="skip the one-by-one code point check (~1 min)")
    args = ap.parse_args()
    df = pl.read_parquet(args.stage_file, columns=["prompt"])
    texts = df.select(
        pl.col("prompt").list.eval(pl.element().struct.field("content").fill_null("")).list.join("\n").fill_null("")
    )["prompt"].to_list()
    texts += [
        "Question: 如何学习？",
        "请问：今天天气怎么样",
        "Please answer the following question: Why?",
        "Q. Q: ",
        "ANSWER:\x1c what is ſ?",
        "问题：",
        "请回答下面的问题：请问 为什么",
        "ß Straße ΣΑΣ ﬁne ǅ İstanbul",
        "全角ＡＢＣ，。！？「」",
        "臺灣 這們 發展",
        "a\x1cb\x1fc  d\u3000e",
        "Ⅻ ① ㈱ ﬃ",
        "",
        "…—–～·",
        "ǰ̌ ẞ ς σ",
    ]
    _tables()
    for _ in range(args.rounds):
        c0 = time.process_time()
        ref = [N.normalise(t) for t in texts]
        c1 = time.process_time()
        got = normalise_series(pl.Series(texts, dtype=pl.String)).to_list()
        c2 = time.process_time()
        bad = sum(a != b for a, b in zip(ref, got))
        print(
            f"keys: {len(texts):,} texts, today {c1 - c0:.2f} CPU-s, Polars {c2 - c1:.2f} CPU-s, {bad} differ",
            flush=True,
        )
    if args.keys_only:
        return
    if not args.skip_codepoints:
        allc = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
        r1 = [N.normalise(c) for c in allc]
        r2 = normalise_series(pl.Series(allc)).to_list()
        diff = [(hex(ord(c)), unicodedata.category(c)) for c, a, b in zip(allc, r1, r2) if a != b]
        print(f"code points one by one: {len(diff)} of {len(allc):,} differ, categories {sorted({d[1] for d in diff})}")
    keys = list(dict.fromkeys(got))
    sizes = [2 if cjk_share(k) >= 0.3 else 5 for k in keys]
    bands = tuple(int(x) for x in args.bands.split("x")) if args.bands else None
    print(f"near: {len(keys):,} distinct keys")
    for _ in range(args.rounds):
        c = time.process_time()
        ri, rj, rs = candidate_pairs(keys, ngram=sizes, num_perm=128, threshold=0.6)
        ref_cpu = time.process_time() - c
        c = time.process_time()
        fi, fj, fs, t, ncand = candidate_pairs_fast(keys, sizes, bands=bands)
        fast_cpu = time.process_time() - c
        a = {(x, y): s for x, y, s in zip(ri.tolist(), rj.tolist(), rs.tolist())}
        b = {(x, y): s for x, y, s in zip(fi.tolist(), fj.tolist(), fs.tolist())}
        both = a.keys() & b.keys()
        dj = max((abs(a[k] - b[k]) for k in both), default=0.0)
        steps = ", ".join(f"{k} {v:.2f}" for k, v in t.items())
        print(
            f"today {ref_cpu:.2f} CPU-s, {len(a):,} pairs | flat {fast_cpu:.2f} CPU-s ({steps}; {ncand:,} candidates), "
            f"{len(b):,} pairs | both {len(both):,}, only today {len(a.keys() - b.keys())}, only flat "
            f"{len(b.keys() - a.keys())}, max |dJ| {dj:.1e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
