"""A tiny Gemma2 and a tokenizer trained on the spot: a real model for tests and CPU demos, with no model hub.

The model has Gemma-2's architecture (so the code paths are the ones a gemma-2-9b-it run takes: logit
soft-capping, sliding-window layers, GQA, eager attention) at ~140k parameters, and trains on CPU in milliseconds
per step. The tokenizer is a byte-level BPE trained with `tokenizers` on the export's own text, with a Gemma-style
chat template, so anything the export holds (Chinese included) tokenizes without unknown tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from curate.train import TrainError

# Gemma-style turns. Gemma-2's own template rejects a system message; ours folds it into the first user turn, the
# way Gemma-3's template does, so exports with system prompts train as they are.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] | trim"
    " + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]


def export_texts(export_dir: str | Path, split: str = "train") -> Iterator[str]:
    """Every message text of an export split (prompt turns, chosen and rejected replies)."""
    from datasets import load_from_disk

    hf = Path(export_dir) / "hf"
    if not hf.is_dir():
        raise TrainError(f"{export_dir}: no hf/ folder; is this a curate export folder?")
    ds = load_from_disk(str(hf))[split]
    for row in ds.select_columns([c for c in ("prompt", "chosen", "rejected") if c in ds.column_names]):
        for value in row.values():
            if isinstance(value, str):
                yield value
            else:
                for message in value or []:
                    yield message["content"]


def build_tokenizer(texts: Iterable[str], vocab_size: int = 1000):
    """Train a byte-level BPE tokenizer on `texts` and wrap it as a transformers fast tokenizer with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tokenizer, seed: int = 0, hidden_size: int = 64, layers: int = 2):
    """A randomly initialised Gemma2ForCausalLM sized for CPU tests."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        # A documented extra kwarg: PreTrainedConfig is @strict(accept_kwargs=True), which mypy's dataclass view lacks.
        attn_implementation="eager",  # type: ignore[call-arg]
    )
    torch.manual_seed(seed)
    return Gemma2ForCausalLM(config)


def build_tiny(export_dir: str | Path, out_dir: str | Path, vocab_size: int = 1000, seed: int = 0) -> Path:
    """Build the tiny model + tokenizer for an export and save both to `out_dir` (usable as `--model out_dir`)."""
    out = Path(out_dir)
    tokenizer = build_tokenizer(export_texts(export_dir), vocab_size=vocab_size)
    model = build_model(tokenizer, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
