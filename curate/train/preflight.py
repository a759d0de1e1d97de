"""Read a curate export for training and fit it to the model's `max_length` before any GPU time is spent.

`load_export` opens EXPORT_DIR/hf (the DatasetDict the exporter saves) and keeps only prompt/chosen/rejected.
`fit` renders every pair with the model's chat template (TRL's own `apply_chat_template`, so the text is exactly what
the trainer will tokenize), applies the system-message policy, measures token lengths and applies the prompt-overflow
policy. `check` turns that into the pre-flight report, and `refusal` says when too little is left to train on.

Why pairs whose prompt fills `max_length` must never reach TRL: its ORPOTrainer never shortens a prompt; it cuts the
replies to `max_length - prompt tokens`, i.e. to nothing, so that pair has no reply token, its mean log-probability is
0/0 = NaN, the loss and every gradient turn NaN, and the optimizer writes NaN into every weight while the run goes on
and exits 0 (TRL only logs a warning once). curate drops such pairs (counted), or shortens their prompts by whole
turns from the left (`curate.prompt_overflow = truncate_left`).

The library returns data; the command prints it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from curate.train import TrainError

COLUMNS = ("prompt", "chosen", "rejected")
CJK_SHARE = 0.3  # Chinese when at least this share of letters is Han (accuracy 1.000 on zh/en, measured-facts.md)
SHOWN_IDS = 20  # row indexes kept in the report per count


def manifest_sha256(export_dir: str | Path) -> str:
    """sha256 of EXPORT_DIR/manifest.json's bytes: names the exact dataset a model was trained on."""
    path = Path(export_dir) / "manifest.json"
    if not path.is_file():
        raise TrainError(f"{export_dir}: no manifest.json; is this a curate export folder?")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def apply_system(prompt: Any, mode: str) -> Any:
    """The system-message policy on one prompt: keep it, merge it into the first user turn, or drop it."""
    if isinstance(prompt, str) or mode == "keep" or not prompt or prompt[0]["role"] != "system":
        return prompt
    system, rest = prompt[0]["content"], list(prompt[1:])
    if mode == "drop":
        return rest
    if rest and rest[0]["role"] == "user":
        return [{"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}, *rest[1:]]
    return [{"role": "user", "content": system}, *rest]


def _open_export(export_dir: str | Path):
    from datasets import DatasetDict, load_from_disk

    hf = Path(export_dir) / "hf"
    if not hf.is_dir():
        raise TrainError(f"{export_dir}: no hf/ folder; is this a curate export folder (curate run … / curate export)?")
    try:
        dd = load_from_disk(str(hf))
    except (OSError, ValueError, FileNotFoundError) as exc:
        raise TrainError(f"{hf}: can't load the dataset: {exc}") from None
    if not isinstance(dd, DatasetDict):
        raise TrainError(f"{hf}: expected a DatasetDict with train/test splits, found a single Dataset")
    return hf, dd


def load_export(export_dir: str | Path, spec: dict[str, Any]):
    """(train, eval or None) as datasets.Dataset with only the TRL columns, as exported (`fit` applies the policies)."""
    hf, dd = _open_export(export_dir)
    cur = spec["curate"]
    if cur["train_split"] not in dd:
        raise TrainError(f"{hf}: no split {cur['train_split']!r} (splits: {', '.join(dd)})")
    out: list[Any] = []
    for name in (cur["train_split"], cur["eval_split"]):
        if name not in dd or len(dd[name]) == 0:
            out.append(None)
            continue
        ds = dd[name]
        missing = [c for c in COLUMNS if c not in ds.column_names]
        if missing:
            raise TrainError(f"{hf}[{name}]: missing column {missing[0]!r} (needs {', '.join(COLUMNS)})")
        out.append(ds.select_columns(list(COLUMNS)))
    if out[0] is None:
        raise TrainError(f"{hf}: split {cur['train_split']!r} is empty")
    return out[0], out[1]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "\n".join(m["content"] or "" for m in value or [] if m["role"] != "system")


def cjk_lang(prompt: Any, reply: Any) -> str:
    """zh when Han characters make up at least CJK_SHARE of the letters of prompt + reply, else en.

    The fallback for exports made without the language stage (no `lang` column)."""
    text = _text(prompt) + _text(reply)
    han = sum(1 for ch in text if "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff")
    letters = sum(1 for ch in text if ch.isalpha())
    return "zh" if letters and han / letters >= CJK_SHARE else "en"


def coarse_lang(label: str | None) -> str:
    """The language stage's labels (zh-Hans, zh-Hant, en, mixed, other) as languages: zh-* → zh."""
    if not label:
        return "other"
    return "zh" if label.startswith("zh") else label


def split_meta(export_dir: str | Path, split: str) -> list[dict[str, str]]:
    """pair_id, row_id (when exported) and language of each row of an export split, in row order.

    The language is the language stage's `lang` provenance column (zh-Hans/zh-Hant → zh) when the export has one,
    else `cjk_lang` of prompt + chosen reply."""
    _, dd = _open_export(export_dir)
    if split not in dd:
        return []
    ds = dd[split]
    names = ds.column_names
    ids = ds["pair_id"] if "pair_id" in names else [str(i) for i in range(len(ds))]
    if "lang" in names:
        langs = [coarse_lang(x) for x in ds["lang"]]
    else:
        langs = [cjk_lang(r["prompt"], r["chosen"]) for r in ds.select_columns(["prompt", "chosen"])]
    meta = [{"pair_id": str(i), "lang": lang} for i, lang in zip(ids, langs, strict=True)]
    if "row_id" in names:
        for m, row_id in zip(meta, ds["row_id"], strict=True):
            m["row_id"] = str(row_id)
    return meta


def dependency_warnings(spec: dict[str, Any]) -> list[str]:
    """Optional packages the configuration needs that this machine lacks (bitsandbytes, DeepSpeed, liger)."""
    warnings = []
    optim = spec["orpo"].get("optim", "")
    if ("paged" in optim or "8bit" in optim or spec["curate"]["method"] == "qlora") \
            and importlib.util.find_spec("bitsandbytes") is None:
        warnings.append(f"optim={optim!r} / method={spec['curate']['method']!r} needs bitsandbytes, "
                        "which is not installed (pip install bitsandbytes)")
    if spec["preset"]["num_processes"] > 1 and spec["preset"]["accelerate_config"].startswith("deepspeed") \
            and importlib.util.find_spec("deepspeed") is None:
        warnings.append(f"{spec['preset']['accelerate_config']} needs DeepSpeed, which is not installed "
                        "(pip install deepspeed)")
    if spec["curate"]["loss"] == "liger" and importlib.util.find_spec("liger_kernel") is None:
        warnings.append("curate.loss=liger needs liger-kernel, which is not installed (pip install 'curate[gpu]')")
    return warnings


def render(row: dict[str, Any], tokenizer) -> dict[str, str]:
    """TRL's own chat-template step for one preference row (prompt / chosen / rejected strings)."""
    from trl.data_utils import apply_chat_template

    if isinstance(row["prompt"], str):
        return {k: row[k] for k in COLUMNS}
    return apply_chat_template({k: row[k] for k in COLUMNS}, tokenizer)


@dataclass
class Fitted:
    """One split fitted to max_length: the rows to train (or evaluate) on and what was done to the others."""

    dataset: Any  # datasets.Dataset of the kept rows, system and prompt-overflow policies applied
    rows_in: int
    keep: list[int]  # source row index of each kept row, in order
    overflow: list[int]  # rows whose prompt (as exported) alone reaches max_length
    dropped: list[int]  # rows left out (their prompt still fills max_length after the policy)
    shortened: list[int]  # rows whose earliest turns were removed (truncate_left)
    prompt_tokens: list[int]  # per kept row, as TRL counts them (BOS included)
    pair_tokens: list[int]  # per kept row: prompt + longer reply (EOS included)
    prompt_tokens_in: list[int]  # per source row, before the policy
    example: str  # prompt + chosen reply of the first kept row, chat template applied


def _renderer(tokenizer, system: str):
    def one(row: dict[str, Any], where: str) -> dict[str, str]:
        row = {"prompt": apply_system(row["prompt"], system), "chosen": row["chosen"], "rejected": row["rejected"]}
        try:
            return render(row, tokenizer)
        except Exception as exc:  # noqa: BLE001 - jinja raises TemplateError for roles a template refuses
            hint = " (set --set curate.system=merge to fold system prompts into the first user turn)" \
                if "system" in str(exc).lower() else ""
            raise TrainError(f"{where}: the model's chat template refused it: {exc}{hint}") from None

    return one


def _counter(tokenizer):
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id

    def prompts(texts: list[str]) -> list[int]:  # TRL adds BOS when the rendered prompt doesn't start with it
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(x) + (1 if bos is not None and (not x or x[0] != bos) else 0) for x in ids]

    def replies(texts: list[str]) -> list[int]:  # ... and EOS after a reply that doesn't end with it
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(x) + (1 if not x or x[-1] != eos else 0) for x in ids]

    return prompts, replies


def _cut_points(prompt: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Shorter prompts, longest first: the earliest turns removed, the system message kept, a user turn first."""
    pinned = prompt[:1] if prompt and prompt[0]["role"] == "system" else []
    rest = prompt[len(pinned):]
    return [pinned + rest[i:] for i in range(1, len(rest)) if rest[i]["role"] == "user"]


@contextmanager
def no_dataset_cache() -> Iterator[None]:
    """datasets' map results in a temporary folder instead of cache-*.arrow files inside the export.

    An export is a finished, hashed folder (manifest.json), possibly read-only or shared: training must not write
    into it. TRL's tokenization and curate's own maps run inside this context."""
    import datasets

    was = datasets.is_caching_enabled()
    datasets.disable_caching()
    try:
        yield
    finally:
        if was:
            datasets.enable_caching()


FIT_CHUNK = 512  # rows rendered and tokenized at a time: memory stays flat whatever the split's size


def fit(ds, tokenizer, max_length: int, system: str = "keep", policy: str = "drop", where: str = "pair") -> Fitted:
    """Render, measure and apply the prompt-overflow policy (see the module docstring and spec.CURATE_DEFAULTS)."""
    if getattr(tokenizer, "chat_template", None) is None and len(ds) and not isinstance(ds[0]["prompt"], str):
        raise TrainError("the tokenizer has no chat template, and the export is conversational; "
                         "use an instruction-tuned model's tokenizer (e.g. gemma-2-9b-it)")
    one = _renderer(tokenizer, system)
    count_prompts, count_replies = _counter(tokenizer)
    n_rows = len(ds)
    p: list[int] = []
    reply: list[int] = []
    for start in range(0, n_rows, FIT_CHUNK):
        batch = ds[start:start + FIT_CHUNK]
        rendered = [one({k: batch[k][t] for k in COLUMNS}, f"{where} {start + t}") for t in range(len(batch["prompt"]))]
        p += count_prompts([r["prompt"] for r in rendered])
        chosen = count_replies([r["chosen"] for r in rendered])
        rejected = count_replies([r["rejected"] for r in rendered])
        reply += [max(a, b) for a, b in zip(chosen, rejected, strict=True)]
    overflow = [i for i, n in enumerate(p) if n >= max_length]
    # truncate_left also shortens prompts that fit but leave too little room: old turns go before reply tokens do
    candidates = {i for i, n in enumerate(p) if n + reply[i] > max_length} if policy == "truncate_left" \
        else set(overflow)
    keep, dropped, shortened = [], [], []
    new_prompts: dict[int, list[dict[str, Any]]] = {}
    prompt_len = list(p)
    for i in range(n_rows):
        if i not in candidates:
            keep.append(i)
            continue
        row = {k: ds[i][k] for k in COLUMNS}
        if policy == "truncate_left" and not isinstance(row["prompt"], str):
            choice = None
            for cand in _cut_points(list(row["prompt"])):
                n = count_prompts([one({**row, "prompt": cand}, f"{where} {i}")["prompt"]])[0]
                if n < max_length:
                    choice = (cand, n)
                if n + reply[i] <= max_length:
                    break
            if choice is not None:
                new_prompts[i], prompt_len[i] = choice
                shortened.append(i)
                keep.append(i)
                continue
        if p[i] >= max_length:
            dropped.append(i)
        else:
            keep.append(i)  # no shorter prompt exists, but this one fits: TRL cuts the replies, as it would anyway
    with no_dataset_cache():
        out = ds.select(keep) if len(keep) < n_rows else ds
        conversational = n_rows > 0 and not isinstance(ds[0]["prompt"], str)
        if conversational and (new_prompts or system != "keep"):
            def apply(row: dict[str, Any], k: int) -> dict[str, Any]:
                return {"prompt": apply_system(new_prompts.get(keep[k], row["prompt"]), system)}

            out = out.map(apply, with_indices=True, desc="fitting prompts to max_length",
                          new_fingerprint=f"{getattr(ds, '_fingerprint', 'ds')}-fit-{system}-{policy}-{max_length}")
    example = ""
    if keep:
        first = {k: ds[keep[0]][k] for k in COLUMNS}
        first["prompt"] = new_prompts.get(keep[0], first["prompt"])
        r = one(first, f"{where} {keep[0]}")
        example = r["prompt"] + r["chosen"]
    return Fitted(
        dataset=out,
        rows_in=n_rows,
        keep=keep,
        overflow=overflow,
        dropped=dropped,
        shortened=shortened,
        prompt_tokens=[prompt_len[i] for i in keep],
        pair_tokens=[prompt_len[i] + reply[i] for i in keep],
        prompt_tokens_in=p,
        example=example,
    )


def _pct(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0


def refusal(fitted: Fitted, spec: dict[str, Any]) -> str | None:
    """Why training must not start on this split (too few pairs left, or too many dropped), or None."""
    from curate.train.spec import global_batch, max_length

    cur = spec["curate"]
    limit = max_length(spec)
    kept, total = len(fitted.keep), fitted.rows_in
    hint = (f"prompts: p95 {_pct(fitted.prompt_tokens_in, 0.95)}, max {max(fitted.prompt_tokens_in, default=0)} "
            f"tokens; raise orpo.max_length"
            + (" or set curate.prompt_overflow=truncate_left" if cur["prompt_overflow"] == "drop" else ""))
    dropped = len(fitted.dropped)
    if total and dropped / total > cur["max_dropped_share"]:
        return (f"{dropped} of {total} training pairs ({dropped / total:.0%}) have a prompt that alone fills "
                f"max_length={limit} tokens, more than curate.max_dropped_share={cur['max_dropped_share']:g} "
                f"allows to drop ({hint}, or raise curate.max_dropped_share)")
    need = cur["min_train_pairs"] or global_batch(spec)
    if kept < need:
        why = "curate.min_train_pairs" if cur["min_train_pairs"] else "one global batch"
        return (f"only {kept} of {total} training pairs are left after dropping {dropped} whose prompt alone fills "
                f"max_length={limit} tokens; {why} needs {need} ({hint})")
    return None


@dataclass
class Preflight:
    """What the model will see: one rendered example, token lengths, what max_length does to the pairs, warnings."""

    pairs: int  # training pairs in the export
    max_length: int
    prompt_overflow_policy: str  # curate.prompt_overflow
    example: str  # prompt + chosen reply of the first kept pair, chat template applied
    prompt_p95: int  # prompt tokens, before the policy
    prompt_max: int
    prompt_overflow: int  # pairs whose prompt alone reaches max_length (their replies would be cut to nothing)
    prompt_overflow_ids: list[int]  # row indexes, first 20
    shortened: int  # pairs whose earliest turns were removed (truncate_left)
    dropped: int  # pairs left out of training
    dropped_ids: list[int]
    pairs_kept: int  # pairs trained on
    length_min: int  # tokens per kept pair (prompt + longer reply)
    length_median: float
    length_p95: int
    length_max: int
    truncated: int  # kept pairs whose replies TRL will cut to fit max_length
    truncated_ids: list[int] = field(default_factory=list)  # row indexes, first 20
    eval: dict[str, int] | None = None  # the eval split: pairs, prompt_overflow, shortened, dropped, pairs_kept
    refusal: str | None = None  # set when training must not start (see `refusal`)
    warnings: list[str] = field(default_factory=list)
    # the fitted splits themselves, so training can reuse them instead of rendering every pair again (not saved)
    train_fit: Fitted | None = field(default=None, repr=False, compare=False)
    eval_fit: Fitted | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("train_fit", "eval_fit")}


def split_counts(fitted: Fitted) -> dict[str, int]:
    return {"pairs": fitted.rows_in, "prompt_overflow": len(fitted.overflow), "shortened": len(fitted.shortened),
            "dropped": len(fitted.dropped), "pairs_kept": len(fitted.keep)}


def check(train, tokenizer, max_length: int, spec: dict[str, Any] | None = None, eval_ds=None) -> Preflight:
    """Fit the training split (and the eval split, when given) to max_length and report what that does."""
    from curate.train.spec import CURATE_DEFAULTS

    cur = spec["curate"] if spec is not None else CURATE_DEFAULTS
    fitted = fit(train, tokenizer, max_length, cur["system"], cur["prompt_overflow"])
    lengths = sorted(fitted.pair_tokens)
    cut = [fitted.keep[k] for k, n in enumerate(fitted.pair_tokens) if n > max_length]
    warnings = []
    if fitted.overflow:
        warnings.append(f"{len(fitted.overflow)} of {fitted.rows_in} training pairs have a prompt that alone fills "
                        f"max_length={max_length} tokens (no reply token would be left); {len(fitted.dropped)} "
                        f"dropped (curate.prompt_overflow={cur['prompt_overflow']})")
    if fitted.shortened:
        warnings.append(f"{len(fitted.shortened)} training prompts shortened by whole turns from the left "
                        "(curate.prompt_overflow=truncate_left)")
    if cut:
        warnings.append(f"{len(cut)} of {len(fitted.keep)} training pairs exceed max_length={max_length} tokens and "
                        f"their replies will be cut to fit; raise orpo.max_length to keep them whole")
    if spec is not None:
        warnings += dependency_warnings(spec)
    fitted_eval = None
    if eval_ds is not None:
        fitted_eval = fit(eval_ds, tokenizer, max_length, cur["system"], cur["prompt_overflow"], "eval pair")
    return Preflight(
        pairs=fitted.rows_in,
        max_length=max_length,
        prompt_overflow_policy=cur["prompt_overflow"],
        example=fitted.example,
        prompt_p95=_pct(fitted.prompt_tokens_in, 0.95),
        prompt_max=max(fitted.prompt_tokens_in, default=0),
        prompt_overflow=len(fitted.overflow),
        prompt_overflow_ids=fitted.overflow[:SHOWN_IDS],
        shortened=len(fitted.shortened),
        dropped=len(fitted.dropped),
        dropped_ids=fitted.dropped[:SHOWN_IDS],
        pairs_kept=len(fitted.keep),
        length_min=lengths[0] if lengths else 0,
        length_median=float(statistics.median(lengths)) if lengths else 0.0,
        length_p95=_pct(lengths, 0.95),
        length_max=lengths[-1] if lengths else 0,
        truncated=len(cut),
        truncated_ids=cut[:SHOWN_IDS],
        eval=split_counts(fitted_eval) if fitted_eval is not None else None,
        refusal=refusal(fitted, spec) if spec is not None else None,
        warnings=warnings,
        train_fit=fitted,
        eval_fit=fitted_eval,
    )
