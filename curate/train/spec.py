"""Preset file + `--set` overrides → the effective training configuration (a plain dict saved with the run).

A preset is a TOML file with these tables (see presets/*.toml, which document every value they set):

    [preset]  description, model (default for --model), num_processes, accelerate_config
    [curate]  what curate adds around TRL: method (full | lora | qlora), loss (trl | chunked | liger),
              loss_chunk_tokens, dtype, attn_implementation, system (keep | merge | drop), train_split, eval_split,
              cpu_threads, prompt_overflow (drop | truncate_left), min_train_pairs, max_dropped_share, evaluate,
              eval_max_pairs, eval_generations, eval_max_new_tokens (each documented in CURATE_DEFAULTS)
    [orpo]    keyword arguments of TRL's ORPOConfig (beta, learning_rate, max_length, optim, bf16 …), passed verbatim
    [lora]    keyword arguments of peft's LoraConfig (r, lora_alpha, target_modules …), for method lora/qlora

`--set TABLE.KEY=VALUE` overrides any of them (VALUE in TOML syntax; bare words are strings). Keys are checked
against the table's schema (for [orpo] and [lora], the real TRL/peft dataclasses), so a typo is a one-line error
instead of a silently ignored option.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import tomllib
from pathlib import Path
from typing import Any

from curate.train import TrainError

PRESET_DIR = Path(__file__).resolve().parent / "presets"
ACCELERATE_DIR = Path(__file__).resolve().parent / "accelerate"

# Defaults of the tables curate owns; a preset overrides them. Each key documented once, here.
PRESET_DEFAULTS: dict[str, Any] = {
    "description": "",  # one line shown by --dry-run and in the model card
    "model": "",  # model name or path used when --model is not given
    "num_processes": 1,  # >1: run through `accelerate launch` with accelerate_config
    "accelerate_config": "",  # file name in curate/train/accelerate/ or a path; "" = plain single process
}
CURATE_DEFAULTS: dict[str, Any] = {
    "method": "full",  # full: all parameters; lora: peft LoRA adapter; qlora: LoRA on a 4-bit base (bitsandbytes)
    # ORPO loss implementation. trl: TRL's own (full-vocabulary logits of chosen and rejected in memory);
    # chunked: curate's token-chunked LM head, same loss without the logits, soft-capping supported, any device;
    # liger: liger-kernel's fused linear ORPO loss (CUDA, no final-logit soft-capping, chunks by pairs).
    # chunked and liger need the whole LM head per process: one GPU or DDP, not ZeRO-3/FSDP.
    "loss": "trl",
    "loss_chunk_tokens": 1024,  # curate.loss=chunked: tokens per LM-head chunk (chunk × vocab fp32 buffers)
    "dtype": "auto",  # dtype to load the model in: auto | bfloat16 | float16 | float32
    "attn_implementation": "eager",  # eager | sdpa | flash_attention_2 … ("" = transformers' default)
    "system": "keep",  # system messages: keep (the chat template must accept them) | merge into first user turn | drop
    "train_split": "train",
    "eval_split": "test",  # evaluated when present in the export and orpo.eval_strategy is not "no"
    "cpu_threads": 0,  # torch CPU threads (0 = torch's default); 1 is far faster for tiny models on busy CPUs
    # Pairs whose prompt alone reaches orpo.max_length tokens: TRL would cut their replies to nothing, which turns
    # the loss NaN and the weights with it. drop: leave them out of training and evaluation (counted in the
    # pre-flight); truncate_left: remove the earliest turns (the system message stays) until prompt + reply fit,
    # and drop only the pairs whose last user turn alone is still too long.
    "prompt_overflow": "drop",
    "min_train_pairs": 0,  # refuse to train when fewer pairs are left (0 = one global batch)
    "max_dropped_share": 0.25,  # refuse to train when the overflow policy would drop more than this share
    "evaluate": True,  # ORPO loss, reward accuracy and margin per language on eval_split, before and after training
    "eval_max_pairs": 0,  # evaluate the first N pairs of eval_split (0 = all of them)
    "eval_generations": 3,  # test prompts per language (zh, en) answered before and after training (0 = none)
    "eval_max_new_tokens": 128,  # length limit of those answers (greedy decoding)
}
METHODS = ("full", "lora", "qlora")
LOSSES = ("trl", "chunked", "liger")
DTYPES = ("auto", "bfloat16", "float16", "float32")
SYSTEM_MODES = ("keep", "merge", "drop")
OVERFLOW_MODES = ("drop", "truncate_left")
# ORPOConfig fields curate sets itself from the command line, so a preset can't contradict them.
RESERVED_ORPO = {"output_dir": "--out", "resume_from_checkpoint": "--resume"}


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def preset_path(preset: str) -> Path:
    """A shipped preset by name, or a path to the user's own preset file."""
    path = Path(preset)
    if path.suffix == ".toml" and path.is_file():
        return path
    shipped = PRESET_DIR / f"{preset}.toml"
    if not shipped.is_file():
        raise TrainError(f"unknown preset {preset!r} (shipped presets: {', '.join(preset_names())}; or a .toml path)")
    return shipped


def load_preset(preset: str) -> dict[str, dict[str, Any]]:
    path = preset_path(preset)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TrainError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - {"preset", "curate", "orpo", "lora"})
    if unknown:
        raise TrainError(f"{path}: unknown table [{unknown[0]}] (known: preset, curate, orpo, lora)")
    return {
        "preset": {**PRESET_DEFAULTS, **doc.get("preset", {}), "name": path.stem},
        "curate": {**CURATE_DEFAULTS, **doc.get("curate", {})},
        "orpo": dict(doc.get("orpo", {})),
        "lora": dict(doc.get("lora", {})),
    }


def parse_set(text: str) -> tuple[str, str, Any]:
    """`TABLE.KEY=VALUE` → (table, key, value), VALUE read as TOML (bare words as strings)."""
    from curate.config import parse_override

    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise TrainError(f"--set {text!r}: expected TABLE.KEY=VALUE, e.g. --set orpo.beta=0.1 or --set lora.r=8")
    table, key, value = parse_override(text)
    return table.strip(), key.strip(), value


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def orpo_fields() -> set[str]:
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.orpo import ORPOConfig

    return _fields(ORPOConfig)


def lora_fields() -> set[str]:
    from peft import LoraConfig

    return _fields(LoraConfig)


def _check_type(where: str, value: Any, default: Any) -> None:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise TrainError(f"{where}: expected {type(default).__name__}, got {value!r}")


def resolve(preset: str, overrides: list[str] | tuple[str, ...] = (), model: str | None = None) -> dict[str, Any]:
    """The effective configuration: preset, then overrides, checked. `model` (the --model option) wins."""
    spec = load_preset(preset)
    for item in overrides:
        table, key, value = parse_set(item)
        if table not in spec:
            raise TrainError(f"--set {item!r}: unknown table {table!r} (known: preset, curate, orpo, lora)")
        spec[table][key] = value
    validate(spec)
    if model:
        spec["preset"]["model"] = model
    if not spec["preset"]["model"]:
        raise TrainError(f"preset {spec['preset']['name']!r} names no model: pass --model NAME_OR_PATH")
    return spec


def validate(spec: dict[str, dict[str, Any]]) -> None:
    """Reject unknown keys and impossible values, naming the key."""
    for table, defaults in (("preset", {**PRESET_DEFAULTS, "name": ""}), ("curate", CURATE_DEFAULTS)):
        for key, value in spec[table].items():
            if key not in defaults:
                raise TrainError(f"{table}.{key}: unknown key (known keys: {', '.join(sorted(defaults))})")
            _check_type(f"{table}.{key}", value, defaults[key])
    cur = spec["curate"]
    for key, allowed in (("method", METHODS), ("dtype", DTYPES), ("system", SYSTEM_MODES), ("loss", LOSSES),
                         ("prompt_overflow", OVERFLOW_MODES)):
        if cur[key] not in allowed:
            raise TrainError(f"curate.{key}: {cur[key]!r} is not one of {', '.join(allowed)}")
    if spec["preset"]["num_processes"] < 1:
        raise TrainError("preset.num_processes: must be at least 1")
    known = orpo_fields()
    for key in spec["orpo"]:
        if key in RESERVED_ORPO:
            raise TrainError(f"orpo.{key}: set by curate; use {RESERVED_ORPO[key]} instead")
        if key not in known:
            raise TrainError(f"orpo.{key}: unknown key (not a field of TRL's ORPOConfig)")
    if spec["lora"]:
        known = lora_fields()
        for key in spec["lora"]:
            if key not in known:
                raise TrainError(f"lora.{key}: unknown key (not a field of peft's LoraConfig)")
    if cur["loss_chunk_tokens"] < 1:
        raise TrainError("curate.loss_chunk_tokens: must be at least 1")
    for key in ("min_train_pairs", "eval_max_pairs", "eval_generations", "eval_max_new_tokens"):
        if cur[key] < 0:
            raise TrainError(f"curate.{key}: must be 0 or more")
    if not 0 <= cur["max_dropped_share"] <= 1:
        raise TrainError("curate.max_dropped_share: must be between 0 and 1")
    if (max_len := spec["orpo"].get("max_length", 1024)) is not None and \
            (not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 2):
        raise TrainError(f"orpo.max_length: expected a whole number of tokens (at least 2), got {max_len!r}")
    if spec["preset"]["num_processes"] > 1:
        text = accelerate_config_path(spec).read_text(encoding="utf-8")  # must exist
        if cur["loss"] != "trl" and ("FSDP" in text or re.search(r"zero_stage:\s*3", text)):
            raise TrainError(f"curate.loss={cur['loss']} needs the whole LM head in each process, and "
                             f"{spec['preset']['accelerate_config']} shards it (ZeRO-3/FSDP); use curate.loss=trl "
                             "or a one-GPU/DDP setup")


def max_length(spec: dict[str, Any]) -> int:
    """The token budget of one sequence (prompt + reply) as TRL's ORPOTrainer applies it."""
    value = spec["orpo"].get("max_length", 1024)  # ORPOConfig's default
    return 512 if value is None else int(value)  # ORPOTrainer falls back to 512 when it is None


def length_limits(preset: str, overrides: list[str] | tuple[str, ...] = (), model: str | None = None) -> dict[str, Any]:
    """What a preset allows per pair, for code outside training (e.g. dropping over-long pairs while curating).

    {"model": tokenizer to count with, "max_length": tokens of prompt + reply, "prompt_overflow": policy,
     "system": system-message policy}. Same resolution and errors as `curate train --preset … --set …`.
    """
    spec = resolve(preset, overrides, model)
    return {"model": spec["preset"]["model"], "max_length": max_length(spec),
            "prompt_overflow": spec["curate"]["prompt_overflow"], "system": spec["curate"]["system"]}


def global_batch(spec: dict[str, Any]) -> int:
    """Pairs per optimizer step across all processes."""
    orpo = spec["orpo"]
    return int(orpo.get("per_device_train_batch_size", 8)) * int(orpo.get("gradient_accumulation_steps", 1)) \
        * int(spec["preset"].get("num_processes", 1))


def accelerate_config_path(spec: dict[str, dict[str, Any]]) -> Path:
    name = spec["preset"]["accelerate_config"]
    if not name:
        raise TrainError("preset.accelerate_config: needed when preset.num_processes > 1 "
                         "(deepspeed-zero3.yaml or fsdp.yaml, or a path)")
    path = Path(name)
    if not path.is_file():
        path = ACCELERATE_DIR / name
    if not path.is_file():
        shipped = ", ".join(sorted(p.name for p in ACCELERATE_DIR.glob("*.yaml")))
        raise TrainError(f"preset.accelerate_config: {name!r} not found (shipped: {shipped}; or a path)")
    return path


def save(spec: dict[str, Any], path: str | Path) -> Path:
    """Write the effective configuration as JSON (atomically), so a run can be reproduced and launched from it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(spec, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load(path: str | Path) -> dict[str, Any]:
    try:
        return copy.deepcopy(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainError(f"{path}: can't read the training configuration: {exc}") from None
