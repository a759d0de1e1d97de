"""Data builders for the training tests (a module with its own name, so it can't be confused with another conftest)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

EN = [
    ("What is the capital of France?", "The capital of France is Paris.", "France has no capital."),
    ("Name a prime number.", "Seven is a prime number.", "Nine is a prime number."),
    ("How many legs does a spider have?", "A spider has eight legs.", "A spider has six legs."),
    ("What colour is the sky on a clear day?", "It is blue.", "It is green."),
]
ZH = [
    ("中国的首都是哪里？", "中国的首都是北京。", "中国没有首都。"),
    ("一年有几个月？", "一年有十二个月。", "一年有十个月。"),
    ("水在多少度沸腾？", "在标准大气压下，水在一百摄氏度沸腾。", "水在五十度沸腾。"),
    ("请说一个颜色。", "红色。", "我不知道。"),
]


def pair_rows(n: int, system: str | None = "You are a helpful assistant.") -> list[dict]:
    """TRL conversational rows as curate's exporter writes them (system message first when present)."""
    base = EN + ZH
    rows = []
    for i in range(n):
        q, good, bad = base[i % len(base)]
        prompt = ([{"role": "system", "content": system}] if system and i % 2 == 0 else []) + [
            {"role": "user", "content": q if i < len(base) else f"{q} ({i})"}]
        rows.append({
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": good}],
            "rejected": [{"role": "assistant", "content": bad}],
            "pair_id": hashlib.sha256(f"pair{i}".encode()).hexdigest()[:16],
            "prompt_id": hashlib.sha256(f"prompt{i}".encode()).hexdigest()[:16],
            "source": "fixture",
            "lang": "zh" if (i % len(base)) >= len(EN) else "en",
        })
    return rows


def write_export(out: Path, train_rows: list[dict], test_rows: list[dict]) -> Path:
    """An export folder in the exporter's layout: hf/ (DatasetDict train/test) + manifest.json."""
    from datasets import Dataset, DatasetDict

    out.mkdir(parents=True, exist_ok=True)
    DatasetDict({"train": Dataset.from_list(train_rows), "test": Dataset.from_list(test_rows)}).save_to_disk(
        str(out / "hf"))
    manifest = {"files": sorted(str(p.relative_to(out)) for p in (out / "hf").rglob("*") if p.is_file()),
                "rows": {"train": len(train_rows), "test": len(test_rows)}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out
