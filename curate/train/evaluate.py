"""How a model does on the export's held-out pairs: ORPO loss, reward accuracy and margin per language, plus a few
answers to real test prompts.

Per pair, one forward pass over chosen and rejected gives (exactly as TRL's ORPOTrainer computes them): the mean
log-probability of each reply's tokens, and the chosen sequence's token NLL (prompt + reply). Per language (and
"all"), over its pairs:

    nll_loss         token-weighted mean NLL of the chosen sequences (TRL's NLL term, as if the group were one batch)
    log_odds_ratio   mean log σ(log-odds(chosen) − log-odds(rejected))
    orpo_loss        nll_loss − β · log_odds_ratio  (TRL's ORPO loss for that batch)
    reward_accuracy  share of pairs whose chosen reply has the higher mean log-probability (ties count as wrong)
    reward_margin    β · mean(chosen − rejected mean log-probability) (TRL's rewards/margins)
    logp_margin      the same without β, comparable across β

Languages come from the export's `lang` column (zh-Hans/zh-Hant → zh) or, without the language stage, from the
share of Han characters (preflight.cjk_lang).

`PairEval` is mixed into the ORPO trainer class so the pass goes through `Trainer.predict` (sharded across processes,
DeepSpeed/FSDP-wrapped, gathered in order); `evaluate_model` is what `curate eval` runs.
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curate.train import TrainError
from curate.train.guard import fmt, to_json

if TYPE_CHECKING:  # the mixin's type-checking base: what the trainer class it is mixed into provides
    from trl.experimental.orpo import ORPOTrainer as _TrainerBase
else:
    _TrainerBase = object

STATS = ("chosen_logp_sum", "chosen_tokens", "rejected_logp_sum", "rejected_tokens", "nll_sum", "nll_tokens")
LANG_ORDER = ("zh", "en")  # generation samples are taken for these languages


class PairEval(_TrainerBase):
    """Mixin for ORPOTrainer classes: `pair_stats(dataset)` → one row of STATS per pair, in dataset order."""

    _pair_eval = False

    def _eval_token_logps(self, model, input_ids, attention_mask, wanted):
        """log p(input_ids[:, 1:]) at the positions `wanted` (rows × T-1, bool); 0 elsewhere."""
        import torch

        if hasattr(self, "_hidden_and_head"):  # curate's chunked / liger trainers: never the full logits
            from curate.train.chunked_loss import token_logps
            from curate.train.fused import _base_model

            hidden, head, _ = self._hidden_and_head(model, input_ids, attention_mask)
            rows, length = input_ids.shape[0], input_ids.shape[1] - 1
            flat = wanted.reshape(-1).nonzero().squeeze(1)
            h = hidden[:, :-1].reshape(rows * length, -1).index_select(0, flat)
            cap = getattr(_base_model(model).config, "final_logit_softcapping", None)
            logps, _ = token_logps(h, head.weight, head.bias, input_ids[:, 1:].reshape(-1).index_select(0, flat),
                                   cap, getattr(self, "chunk_tokens", 1024))
            return logps.new_zeros(rows * length).index_put((flat,), logps).view(rows, length)
        from trl.trainer.utils import selective_log_softmax

        logits = model(input_ids, attention_mask=attention_mask, use_cache=False).logits
        per_token = selective_log_softmax(logits[:, :-1].float(), input_ids[:, 1:])
        return torch.where(wanted, per_token, torch.zeros_like(per_token))

    def _pair_rows(self, model, batch):
        import torch

        b = self.concatenated_inputs(batch, is_encoder_decoder=False, padding_value=self.padding_value,
                                     device=self.accelerator.device)
        ids, mask, labels = b["concatenated_input_ids"], b["concatenated_attention_mask"], b["concatenated_labels"]
        n = ids.shape[0] // 2
        reply = labels[:, 1:] != -100
        nll = mask[:, 1:] == 1
        nll[n:] = False
        logps = self._eval_token_logps(model, ids, mask, reply | nll).float()
        reply_sum = (logps * reply).sum(-1)
        reply_n = reply.sum(-1).float()
        return torch.stack([reply_sum[:n], reply_n[:n], reply_sum[n:], reply_n[n:],
                            -(logps[:n] * nll[:n]).sum(-1), nll[:n].sum(-1).float()], dim=1)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if not self._pair_eval:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        import torch
        from torch.amp import autocast

        ctx = autocast(self.accelerator.device.type) if getattr(self, "_peft_has_been_casted_to_bf16", False) \
            else nullcontext()
        with torch.no_grad(), ctx:
            rows = self._pair_rows(model, inputs)
        return None, rows, None

    def pair_stats(self, dataset=None):
        """STATS per pair of `dataset` (a dataset this trainer tokenized; default: its eval_dataset) as numpy."""
        data = dataset if dataset is not None else self.eval_dataset
        if data is None or isinstance(data, dict):  # curate's trainers get one eval dataset, never a dict of them
            raise TrainError("pair evaluation needs one dataset: this trainer has no single eval_dataset")
        self._pair_eval = True
        try:
            out = self.predict(data, metric_key_prefix="pair")
        finally:
            self._pair_eval = False
        return out.predictions


def _log1mexp(x: float) -> float:
    return math.log1p(-math.exp(x)) if x < -0.6931471805599453 else math.log(-math.expm1(x))


def _logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def summarize(stats, langs: list[str], beta: float) -> dict[str, dict[str, float]]:
    """Per language (and "all"): pairs, orpo_loss, nll_loss, log_odds_ratio, reward_accuracy, margins, logps."""
    rows = [[float(v) for v in r] for r in stats]
    if len(rows) != len(langs):
        raise TrainError(f"evaluation returned {len(rows)} rows for {len(langs)} pairs")
    groups = {"all": list(range(len(rows)))}
    for lang in sorted(set(langs), key=lambda x: (x not in LANG_ORDER, LANG_ORDER.index(x) if x in LANG_ORDER
                                                  else 0, x)):
        groups[lang] = [i for i, x in enumerate(langs) if x == lang]
    out = {}
    for name, idx in groups.items():
        if not idx:
            continue
        chosen = [rows[i][0] / rows[i][1] if rows[i][1] else math.nan for i in idx]
        rejected = [rows[i][2] / rows[i][3] if rows[i][3] else math.nan for i in idx]
        ratios = []
        for c, r in zip(chosen, rejected, strict=True):
            try:
                ratios.append(_logsigmoid((c - r) - (_log1mexp(c) - _log1mexp(r))))
            except (ValueError, OverflowError):
                ratios.append(math.nan)
        nll_n = sum(rows[i][5] for i in idx)
        nll = sum(rows[i][4] for i in idx) / nll_n if nll_n else math.nan
        ratio = sum(ratios) / len(ratios)
        diff = [c - r for c, r in zip(chosen, rejected, strict=True)]
        out[name] = {
            "pairs": len(idx),
            "orpo_loss": nll - beta * ratio,
            "nll_loss": nll,
            "log_odds_ratio": ratio,
            "reward_accuracy": math.nan if any(math.isnan(d) for d in diff)  # NaN > NaN is no verdict
            else sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(idx),
            "reward_margin": beta * sum(diff) / len(idx),
            "logp_margin": sum(diff) / len(idx),
            "logp_chosen": sum(chosen) / len(idx),
            "logp_rejected": sum(rejected) / len(idx),
        }
    return out


def pick_prompts(dataset, meta: list[dict[str, str]], per_lang: int) -> list[dict[str, Any]]:
    """The first `per_lang` test pairs of each of zh and en, in split order (the split is seeded)."""
    picked = []
    for lang in LANG_ORDER:
        for i in [i for i, m in enumerate(meta) if m["lang"] == lang][:per_lang]:
            row = dataset[i]
            sample: dict[str, Any] = {"lang": lang}
            sample.update({k: meta[i][k] for k in ("pair_id", "row_id") if k in meta[i]})
            sample.update(prompt=row["prompt"], chosen=row["chosen"])
            picked.append(sample)
    return picked


def generate(model, tokenizer, samples: list[dict[str, Any]], max_new_tokens: int, synced: bool = False) -> list[str]:
    """Greedy answers to each sample's prompt, rendered with the chat template as in training."""
    import torch

    from curate.train.preflight import render

    if not samples or max_new_tokens <= 0:
        return []
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    answers = []
    try:
        for sample in samples:
            text = render({"prompt": sample["prompt"], "chosen": sample["chosen"], "rejected": sample["chosen"]},
                          tokenizer)["prompt"]
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if tokenizer.bos_token_id is not None and (not ids or ids[0] != tokenizer.bos_token_id):
                ids = [tokenizer.bos_token_id, *ids]  # as TRL does for training
            input_ids = torch.tensor([ids], device=device)
            with torch.no_grad():
                out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                     max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, synced_gpus=synced)
            answers.append(tokenizer.decode(out[0, len(ids):], skip_special_tokens=True))
    finally:
        model.train(was_training)
    return answers


def write_generations(path: Path, samples: list[dict[str, Any]], answers: dict[str, list[str]]) -> None:
    """generations.jsonl: one line per test prompt with the reference (chosen) reply and each answer."""
    from curate.io import atomic_write_text

    lines = []
    for k, sample in enumerate(samples):
        keys: tuple[str, ...] = ("lang", "pair_id", "row_id", "prompt", "chosen")
        row: dict[str, Any] = {k: sample[k] for k in keys if k in sample}
        row.update({name: got[k] for name, got in answers.items() if k < len(got)})
        lines.append(json.dumps(row, ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def table(evaluation: dict[str, Any]) -> list[str]:
    """Markdown rows: language | pairs | ORPO loss | reward accuracy | reward margin, before → after."""
    before, after = evaluation.get("before") or {}, evaluation.get("after") or {}
    both = before and after
    head = "| language | pairs | ORPO loss | reward accuracy | reward margin |"
    lines = [head, "| --- | ---: | ---: | ---: | ---: |"]
    for lang in (after or before):
        b, a = before.get(lang, {}), after.get(lang, {})
        cells = [f"{fmt(b.get(k))} → {fmt(a.get(k))}" if both else fmt((a or b).get(k))
                 for k in ("orpo_loss", "reward_accuracy", "reward_margin")]
        lines.append(f"| {lang} | {(a or b)['pairs']} | " + " | ".join(cells) + " |")
    return lines


def resolve_eval_spec(model: str, preset: str | None, overrides: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """--preset wins; else the train_config.json of the curate run `model` belongs to (RUN/model, RUN/adapter)."""
    from curate.train import spec as specmod

    if preset:
        return specmod.resolve(preset, overrides, model)
    here = Path(model)
    for config in (here / "train_config.json", here.parent / "train_config.json"):
        if config.is_file():
            spec = specmod.load(config)
            for item in overrides:
                table_, key, value = specmod.parse_set(item)
                if table_ not in spec:
                    raise TrainError(f"--set {item!r}: unknown table {table_!r} (known: preset, curate, orpo, lora)")
                spec[table_][key] = value
            specmod.validate(spec)
            if config.parent == here:  # the run folder itself: its model/ (full) or adapter/ (LoRA)
                here = here / ("model" if spec["curate"]["method"] == "full" else "adapter")
            spec["preset"]["model"] = str(here)
            return spec
    raise TrainError(f"{model}: not inside a curate training run (no train_config.json next to it); pass --preset "
                     "(e.g. --preset tiny-cpu or gemma2-9b-lora) for max_length, beta and dtype")


def evaluate_model(export_dir: str | Path, spec: dict[str, Any], out_dir: str | Path | None = None) -> dict[str, Any]:
    """`curate eval`: the test split's per-language metrics for spec's model (+ generations.jsonl in out_dir)."""
    import tempfile

    import torch

    from curate.train import preflight
    from curate.train import trainer as T
    from curate.train.spec import max_length

    T._quiet()
    cur = spec["curate"]
    model_path = spec["preset"]["model"]
    tokenizer = T.load_tokenizer(model_path)
    _, eval_raw = preflight.load_export(export_dir, spec)
    if eval_raw is None:
        raise TrainError(f"{export_dir}: no {cur['eval_split']!r} split with pairs to evaluate "
                         "(set [export] test_size, or --set curate.eval_split=…)")
    fitted, meta = T.fit_eval(export_dir, eval_raw, tokenizer, spec)
    if not fitted.keep:
        raise TrainError(f"{export_dir}[{cur['eval_split']}]: every pair's prompt fills max_length="
                         f"{max_length(spec)} tokens; nothing to evaluate (raise orpo.max_length)")
    threads = torch.get_num_threads()
    if cur["cpu_threads"] > 0:
        torch.set_num_threads(cur["cpu_threads"])
    try:
        model = T.load_model(spec, model_path)
        with tempfile.TemporaryDirectory(prefix="curate-eval-") as tmp:
            # TRL's trainer wants a training split: one pair of the test split, tokenized and never trained on
            trainer = T.make_trainer(spec, model, tokenizer, fitted.dataset.select(range(1)), fitted.dataset,
                                     Path(tmp), peft=False)
            stats = trainer.pair_stats()
            samples = pick_prompts(fitted.dataset, meta, cur["eval_generations"])
            answers = generate(trainer.accelerator.unwrap_model(trainer.model), tokenizer, samples,
                               cur["eval_max_new_tokens"])
    finally:
        torch.set_num_threads(threads)
    result = {
        "export": str(Path(export_dir).resolve()),
        "manifest_sha256": preflight.manifest_sha256(export_dir),
        "model": model_path,
        "split": cur["eval_split"],
        "max_length": max_length(spec),
        "beta": float(spec["orpo"].get("beta", 0.1)),
        **preflight.split_counts(fitted),
        "metrics": summarize(stats, [m["lang"] for m in meta], float(spec["orpo"].get("beta", 0.1))),
        "generations": [{**s, "answer": a} for s, a in zip(samples, answers, strict=False)],
    }
    if out_dir is not None:
        from curate.io import atomic_write_text

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "eval.json", json.dumps(to_json({k: v for k, v in result.items()
                                                                 if k != "generations"}), indent=2,
                                                        ensure_ascii=False) + "\n")
        write_generations(out / "generations.jsonl", samples, {"answer": answers})
    return result
