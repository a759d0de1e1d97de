"""GPU benchmark for `curate train`: TRL's ORPO loss vs curate's two logit-free losses, same model, same batches.

Implementations (curate.loss): `trl` (TRL's ORPOTrainer, the baseline), `chunked` (curate.train.fused.
ChunkedORPOTrainer: token-chunked LM head, curate/train/chunked_loss.py) and `liger` (curate.train.fused.
FusedORPOTrainer: liger-kernel's LigerFusedLinearORPOLoss, compiled).

What it measures (one H100, one command, inside a 15-minute device budget):
1. parity: each implementation's loss and gradients vs TRL's on the same batch, fp32, TF32 off, on a 2-layer model
   with Gemma-2-2B's width and its full 256k vocabulary. Pass: relative difference ≤ 1e-3 for the loss and for
   every parameter's gradient (‖g − g_trl‖ / ‖g_trl‖).
2. speed and memory: ORPO training steps on a randomly initialised Gemma-2-2B-shaped model (2.6B parameters, no
   weights needed) at 2K (4 pairs per step) and 8K (1 pair per step) sequence length, bf16 weights, fused AdamW,
   gradient checkpointing, eager attention. Reported: tokens/s (chosen + rejected tokens over the timed steps),
   peak GPU memory (torch.cuda.max_memory_allocated, weights and optimizer state included), MFU
   (6·N + 12·L·H·d·T FLOPs per token, recomputation not counted, against 989 TFLOP/s bf16 dense), and ratios
   against TRL. Target: ≥ 30% lower peak memory at no lower throughput.

Each configuration runs in its own process, so one's peak memory (or OOM) can't leak into the next.
Final-logit soft-capping is off in the benchmark model for all three: liger has none (curate refuses liger on a
soft-capped model); the chunked loss supports it, at the cost of one tanh per logit chunk.

    python bench/bench_train_gpu.py --out DIR                 # the full run (GPU)
    python bench/bench_train_gpu.py --smoke --out DIR         # CPU smoke test of the harness (tiny shapes)
    python bench/bench_train_gpu.py --softcap 30 --out DIR    # Gemma-2's real soft-capping: TRL vs chunked only

bench/run_train_gpu.sh installs the carried wheels on the device machine and runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CPU_MEMORY = False  # set from --cpu-memory in the parent; passed on to children
CHUNK_TOKENS = 1024  # --chunk-tokens: curate.loss_chunk_tokens for the chunked implementation
SOFTCAP = None  # --softcap: Gemma-2's real final-logit soft-capping (30.0); liger is left out then
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}

# Gemma-2-2B's shape (google/gemma-2-2b config.json), final-logit soft-capping off (see module docstring).
GEMMA2_2B = dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                 num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
                 sliding_window=4096, attn_logit_softcapping=50.0, final_logit_softcapping=None,
                 max_position_embeddings=8192)
# CPU memory mode: Gemma-2's full 256k vocabulary on a small body, so the LM head and its logits dominate memory,
# as they do at long context on the real model. fp32 on CPU.
CPU_MEM = dict(vocab_size=256000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
               num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32, sliding_window=4096,
               attn_logit_softcapping=50.0, final_logit_softcapping=None, max_position_embeddings=8192)
TINY = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32, sliding_window=4096,
            attn_logit_softcapping=50.0, final_logit_softcapping=None, max_position_embeddings=8192)


# --------------------------------------------------------------------------------------------- child: shared setup

def word_tokenizer(vocab_size: int):
    """Token i is the word "i": random token sequences survive TRL's text pipeline unchanged (no hub tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    vocab = {s: i for i, s in enumerate(specials)}
    vocab.update({str(i): i for i in range(len(specials), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                   unk_token="<unk>")


def random_pairs(n: int, seq: int, vocab_size: int, seed: int):
    """n plain-text pairs whose BOS + prompt + reply + EOS is exactly `seq` tokens (prompt = a quarter)."""
    import random

    from datasets import Dataset

    rng = random.Random(seed)
    p_len = seq // 4
    c_len = seq - p_len - 2
    words = lambda k: " ".join(str(rng.randrange(4, vocab_size)) for _ in range(k))  # noqa: E731
    rows = [{"prompt": words(p_len), "chosen": " " + words(c_len), "rejected": " " + words(c_len)} for _ in range(n)]
    return Dataset.from_list(rows)


def build_model(shape: dict, dtype, device: str, seed: int = 0):
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    shape = {**shape, "final_logit_softcapping": SOFTCAP}
    config = Gemma2Config(**shape, pad_token_id=0, eos_token_id=1, bos_token_id=2, attn_implementation="eager")
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Gemma2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model


def orpo_config(out: Path, seq: int, batch: int, steps: int, smoke: bool, bf16: bool | None = None,
                checkpointing: bool | None = None):
    from trl.experimental.orpo import ORPOConfig

    return ORPOConfig(
        output_dir=str(out), beta=0.05, learning_rate=3e-6, lr_scheduler_type="constant", max_steps=steps,
        max_length=seq, per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        optim="adamw_torch" if smoke else "adamw_torch_fused", bf16=(not smoke) if bf16 is None else bf16,
        use_cpu=smoke, gradient_checkpointing=(not smoke) if checkpointing is None else checkpointing,
        logging_steps=1, save_strategy="no", eval_strategy="no", report_to="none", remove_unused_columns=False,
        dataloader_num_workers=0, disable_tqdm=True, seed=0)


def trainer_class(impl: str, smoke: bool):
    if impl == "trl":
        from trl.experimental.orpo import ORPOTrainer

        return ORPOTrainer
    if impl == "chunked":
        from curate.train.fused import ChunkedORPOTrainer

        ChunkedORPOTrainer.chunk_tokens = CHUNK_TOKENS
        return ChunkedORPOTrainer
    from curate.train.fused import FusedORPOTrainer

    if smoke:  # CPU: liger's torch.compile path needs a GPU; the uncompiled chunked loss is the same maths
        FusedORPOTrainer.compiled = False
    else:
        FusedORPOTrainer.check_available()
    return FusedORPOTrainer


# --------------------------------------------------------------------------------------------- child: parity

def child_parity(args) -> dict:
    import torch

    smoke = args.smoke
    if smoke:
        torch.set_num_threads(1)
    device = "cpu" if smoke else "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    shape = dict(TINY if smoke else GEMMA2_2B, num_hidden_layers=2)  # parity needs no big vocabulary on CPU
    seq, batch = (64, 2) if smoke else (1024, 2)
    tok = word_tokenizer(shape["vocab_size"])
    data = random_pairs(batch, seq, shape["vocab_size"], seed=1)
    model = build_model(shape, torch.float32, device)
    out = Path(args.out) / "parity-tmp"
    cfg = lambda: orpo_config(out, seq, batch, 1, smoke, bf16=False, checkpointing=False)  # noqa: E731
    impls = ["trl", *args.impls]
    trainers = {name: trainer_class(name, smoke)(model=model, args=cfg(), train_dataset=data, processing_class=tok)
                for name in impls}
    batch_in = trainers["trl"]._prepare_inputs(next(iter(trainers["trl"].get_train_dataloader())))
    results = {}
    for name, trainer in trainers.items():
        model.zero_grad(set_to_none=True)
        loss, metrics = trainer.get_batch_loss_metrics(model, batch_in)
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        results[name] = (loss.item(), metrics, grads)
    l_ref, m_ref, g_ref = results["trl"]
    report = {"kind": "parity", "seq": seq, "pairs": batch, "dtype": "float32", "shape": shape, "softcap": SOFTCAP,
              "loss_trl": l_ref}
    passed = True
    for name in impls[1:]:
        l_x, m_x, g_x = results[name]
        loss_rel = abs(l_x - l_ref) / abs(l_ref)
        grad_rel = {n: ((g_x[n] - g_ref[n]).norm() / g_ref[n].norm().clamp_min(1e-30)).item() for n in g_ref
                    if n in g_x}
        worst = max(grad_rel, key=grad_rel.get)
        ok = loss_rel <= 1e-3 and grad_rel[worst] <= 1e-3 and sorted(g_ref) == sorted(g_x)
        passed = passed and ok
        report[name] = {
            "loss": l_x, "loss_rel_diff": loss_rel, "grad_rel_diff_max": grad_rel[worst], "worst_param": worst,
            "same_grad_params": sorted(g_ref) == sorted(g_x), "pass": ok,
            "metric_rel_diff": {k: abs(m_x[k] - m_ref[k]) / max(abs(m_ref[k]), 1e-12) for k in
                                ("nll_loss", "log_odds_ratio", "rewards/chosen", "rewards/rejected")},
        }
    report["pass"] = passed
    return report


# --------------------------------------------------------------------------------------------- child: speed/memory

def child_run(args) -> dict:
    import resource

    import psutil
    import torch
    from transformers import TrainerCallback

    smoke = args.smoke
    if smoke:
        torch.set_num_threads(1)
    device = "cpu" if smoke else "cuda"
    shape = CPU_MEM if args.cpu_memory else TINY if smoke else GEMMA2_2B
    seq, batch = args.seq, args.batch
    steps = args.warmup + args.steps
    tok = word_tokenizer(shape["vocab_size"])
    data = random_pairs(steps * batch, seq, shape["vocab_size"], seed=2)  # same data for both trainers
    model = build_model(shape, torch.float32 if smoke else torch.bfloat16, device)
    n_params = sum(p.numel() for p in model.parameters())
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            sync()
            times.append(time.perf_counter() - self.t0)

    result = {"kind": "run", "impl": args.impl, "seq": seq, "batch": batch, "params": n_params,
              "warmup_steps": args.warmup, "timed_steps": args.steps}
    trainer = trainer_class(args.impl, smoke)(
        model=model, args=orpo_config(Path(args.out) / f"tmp-{args.impl}-{seq}", seq, batch, steps, smoke),
        train_dataset=data, processing_class=tok, callbacks=[Timer()])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        result["weights_gib"] = torch.cuda.memory_allocated() / 2**30
    else:  # CPU: resident memory of this process (one configuration per process)
        result["rss_before_train_gib"] = psutil.Process().memory_info().rss / 2**30
    try:
        trainer.train()
    except torch.OutOfMemoryError as exc:
        result.update(oom=True, error=str(exc).splitlines()[0],
                      peak_gib=torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None)
        return result
    timed = times[args.warmup:]
    step_s = sum(timed) / len(timed)
    tokens = 2 * batch * seq  # chosen + rejected, every position a real token (no padding by construction)
    flops_per_token = 6 * n_params + 12 * shape["num_hidden_layers"] * shape["num_attention_heads"] \
        * shape["head_dim"] * seq
    result.update(
        oom=False, first_step_s=times[0], step_s=step_s, tokens_per_s=tokens / step_s,
        peak_gib=torch.cuda.max_memory_allocated() / 2**30 if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # Linux: KiB
        losses=[h["loss"] for h in trainer.state.log_history if "loss" in h],
    )
    if device == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
        result["mfu"] = flops_per_token * result["tokens_per_s"] / peak if peak else None
    return result


# --------------------------------------------------------------------------------------------- parent

def environment(smoke: bool) -> dict:
    import importlib.metadata as md

    env = {"python": platform.python_version(), "machine": platform.machine(), "smoke": smoke}
    for pkg in ("torch", "transformers", "trl", "datasets", "accelerate", "liger-kernel", "triton"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = None
    try:
        import torch

        env["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except Exception as exc:  # noqa: BLE001  (report, don't die: the environment line is informational)
        env["gpu"] = f"error: {exc}"
    return env


def run_child(kind: str, out: Path, smoke: bool, timeout: int, **kw) -> dict:
    result_path = out / f"{kind}-{kw.get('impl', '')}-{kw.get('seq', '')}.json".replace("--", "-")
    argv = [sys.executable, __file__, "--child", kind, "--out", str(out), "--result", str(result_path)]
    argv += ["--smoke"] if smoke else []
    argv += ["--cpu-memory"] if CPU_MEMORY else []
    argv += ["--chunk-tokens", str(CHUNK_TOKENS)] + (["--softcap", str(SOFTCAP)] if SOFTCAP else [])
    for k, v in kw.items():
        argv += [f"--{k}", str(v)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"kind": kind, **kw, "error": f"timed out after {timeout}s"}
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not result_path.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        return {"kind": kind, **kw, "error": f"exit {proc.returncode}", "stderr_tail": tail, "wall_s": wall}
    result = json.loads(result_path.read_text())
    result["wall_s"] = wall
    return result


def table(results: list[dict]) -> str:
    lines = ["| seq | impl | batch (pairs) | tokens/s | step s | first step s | peak GiB (GPU: allocated; CPU: RSS) "
             "| MFU |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        if r.get("kind") != "run":
            continue
        if r.get("error") or r.get("oom"):
            peak = f"{r['peak_gib']:.1f}" if r.get("peak_gib") else ""
            what = "OOM" if r.get("oom") else r.get("error")
            lines.append(f"| {r.get('seq')} | {r.get('impl')} | {r.get('batch')} | {what} | | | {peak} | |")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "n/a"
        peak = f"{r['peak_gib']:.1f}" if r.get("peak_gib") is not None else "n/a"
        lines.append(f"| {r['seq']} | {r['impl']} | {r['batch']} | {r['tokens_per_s']:,.0f} | {r['step_s']:.3f} | "
                     f"{r['first_step_s']:.1f} | {peak} | {mfu} |")
    return "\n".join(lines)


def ratios(results: list[dict]) -> list[dict]:
    """Each implementation against TRL at the same sequence length: peak-memory reduction, throughput ratio."""
    by = {(r.get("impl"), r.get("seq")): r for r in results if r.get("kind") == "run"}
    out = []
    for (impl, seq), r in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        trl = by.get(("trl", seq))
        if impl == "trl" or not trl or r.get("error") or r.get("oom"):
            continue
        row = {"impl": impl, "seq": seq}
        if trl.get("oom"):
            row["note"] = "TRL ran out of memory; this one fits"
        elif not trl.get("error"):
            if trl.get("peak_gib") and r.get("peak_gib"):
                row["peak_memory_reduction"] = round(1 - r["peak_gib"] / trl["peak_gib"], 4)
            row["throughput_ratio"] = round(r["tokens_per_s"] / trl["tokens_per_s"], 4)
        out.append(row)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench-train-gpu")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny shapes: checks the harness, measures nothing")
    p.add_argument("--cpu-memory", action="store_true",
                   help="CPU: peak resident memory with a 256k-vocabulary small-body model (the logits dominate)")
    p.add_argument("--seqs", default=None, help="comma-separated sequence lengths (default 2048,8192)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per configuration (default 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2: compile, allocator)")
    p.add_argument("--timeout", type=int, default=150, help="seconds per configuration")
    p.add_argument("--child", choices=["parity", "run"], help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--chunk-tokens", type=int, default=1024, help="tokens per LM-head chunk for `chunked`")
    p.add_argument("--softcap", type=float, default=None,
                   help="final-logit soft-capping of the model (Gemma-2: 30); liger, which has none, is left out")
    p.add_argument("--impls", default="chunked,liger", help="implementations compared with TRL (chunked, liger)")
    p.add_argument("--budget", type=int, default=400, help="seconds; configurations not started by then are skipped")
    p.add_argument("--impl", choices=["trl", "chunked", "liger"], help=argparse.SUPPRESS)
    p.add_argument("--seq", type=int, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    global CPU_MEMORY, CHUNK_TOKENS, SOFTCAP
    CPU_MEMORY, CHUNK_TOKENS, SOFTCAP = args.cpu_memory, args.chunk_tokens, args.softcap
    if args.cpu_memory:
        args.smoke = True  # the CPU code path
    args.steps = args.steps or (2 if args.smoke else 5)
    args.warmup = args.warmup or (1 if args.smoke else 2)
    args.impls = [i for i in args.impls.split(",") if i and not (args.softcap and i == "liger")]

    if args.child:
        result = child_parity(args) if args.child == "parity" else child_run(args)
        Path(args.result).write_text(json.dumps(result, indent=2) + "\n")
        return 0

    default_seqs = "512,1024" if args.cpu_memory else "64,128" if args.smoke else "2048,8192"
    seqs = [int(s) for s in (args.seqs or default_seqs).split(",")]
    started = time.perf_counter()
    results = [{"kind": "environment", **environment(args.smoke)}]
    print(json.dumps(results[0]), flush=True)
    parity = run_child("parity", out, args.smoke, args.timeout, impls=",".join(args.impls))
    results.append(parity)
    print(json.dumps(parity), flush=True)
    for seq in seqs:
        # same tokens per step at every length: 2K×4, 8K×1 on the GPU; one pair per step in --cpu-memory
        batch = 1 if args.cpu_memory else max(1, (256 if args.smoke else 8192) // seq)
        for impl in ("trl", *args.impls):
            if time.perf_counter() - started > args.budget:
                results.append({"kind": "run", "impl": impl, "seq": seq, "batch": batch,
                                "error": f"skipped: over the {args.budget}s budget"})
                continue
            r = run_child("run", out, args.smoke, args.timeout, impl=impl, seq=seq, batch=batch,
                          steps=args.steps, warmup=args.warmup)
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "losses"}), flush=True)
    summary = {"ratios": ratios(results), "total_wall_s": time.perf_counter() - started}
    results.append({"kind": "summary", **summary})
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    md = [f"environment: {json.dumps(results[0])}", "",
          f"parity vs TRL (fp32, {parity.get('seq')} tokens × {parity.get('pairs')} pairs): "
          + ("PASS" if parity.get("pass") else "FAIL") + (f" — {parity.get('error')}" if parity.get("error") else ""),
          *[f"- {name}: loss rel diff {parity[name]['loss_rel_diff']:.2e}, max grad rel diff "
            f"{parity[name]['grad_rel_diff_max']:.2e} ({parity[name]['worst_param']})"
            for name in args.impls if isinstance(parity.get(name), dict)],
          "", table(results), "", "vs TRL: " + json.dumps(summary["ratios"]),
          f"total wall time: {summary['total_wall_s']:.0f} s"]
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md), flush=True)
    ok = parity.get("pass") and all(not r.get("error") for r in results if r.get("kind") == "run")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
