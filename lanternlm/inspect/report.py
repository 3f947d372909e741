"""A report about one trained run: Markdown + the PNGs of every view that applies.

``lantern quickstart`` calls :func:`write_report` at its end; ``lantern inspect report RUN``
does the same for any run. Each section shows a view's terminal rendering (plain text)
and its picture.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..errors import LanternError
from ..run import Run
from ..log import logger
from .common import label, output_path

#: Words tried for the embedding map; those that are single tokens of the run's tokenizer
#: are used (the first ``max_words``).
CANDIDATE_WORDS = ("cat", "dog", "bird", "fish", "king", "queen", "man", "woman", "boy", "girl",
                   "mother", "father", "red", "blue", "green", "happy", "sad", "big", "little",
                   "one", "two", "three", "day", "night", "house", "tree", "sun", "water", "apple",
                   "banana", "def", "class", "return", "list", "string", "file", "int", "True")


def _block(text: str) -> str:
    return "```\n" + text.rstrip() + "\n```\n"


def write_report(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                 sentence: str = "The cat sat on the mat because it was tired.",
                 prompt: str = "Once upon a time", words: Sequence[str] | None = None,
                 query: str | None = "it", steps: int = 10, max_words: int = 14,
                 device: str | None = None) -> Path:
    """Write ``out_dir/report.md`` (default ``RUN/report/``) and its PNGs; return the Markdown path."""
    from ..engine import Engine
    from ..sampling import SamplingParams
    from . import attention, embeddings, loop, loss, memory, next_token, tokens

    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    loaded = Run(run_dir)
    model, tokenizer = loaded.model(device), loaded.tokenizer
    config = model.config
    md = [f"# What is inside `{run_dir.name}`\n",
          f"{model.num_params():,} parameters: {config.n_layer} layers, {config.n_head} heads, "
          f"width {config.n_embd}, context {config.block_size}, vocabulary {config.vocab_size:,}.\n"]

    md.append("## 1. Tokens\n")
    view = tokens.token_view(tokenizer, sentence, "tokenizer")
    tokens.plot_tokens([view], output_path(out, "tokens.png"))
    md += [_block(tokens.render_tokens({"tokenizer": tokenizer}, sentence, color=False)), "![tokens](tokens.png)\n"]

    md.append("## 2. Embeddings\n")
    chosen = list(words) if words else [w for w in CANDIDATE_WORDS
                                        if embeddings.word_token(tokenizer, w) is not None][:max_words]
    if len(chosen) >= 2:
        emb = embeddings.embedding_view(model, tokenizer, chosen, k=5)
        md.append(_block(embeddings.render_embeddings(emb)))
        if len(emb.map) >= 2:
            embeddings.plot_embeddings(emb, output_path(out, "embeddings.png"))
            md.append("![embeddings](embeddings.png)\n")
    else:
        md.append("Fewer than two of the candidate words are single tokens of this tokenizer.\n")

    md.append("## 3. Attention\n")
    layer = config.n_layer - 1
    use_query = None
    if query:  # only when the sentence has that token (find_query raises otherwise)
        try:
            attention.find_query([label(tokenizer, i) for i in tokenizer.encode(sentence)], query)
            use_query = query
        except LanternError:
            pass
    att = attention.attention_view(model, tokenizer, sentence, layer, 0, use_query, with_rollout=True)
    attention.plot_attention(att, output_path(out, "attention.png"))
    attention.plot_head_grid(attention.head_grid(model, tokenizer, sentence, layer), output_path(out, "attention_heads.png"))
    attention.plot_rollout(att, output_path(out, "attention_rollout.png"))
    md += [_block(attention.render_attention(att, color=False)),
           "![attention](attention.png)\n", "![all heads](attention_heads.png)\n", "![rollout](attention_rollout.png)\n"]

    if config.reward_head:  # a reward model scores answers: no next-token distribution, no loop
        md.append("## 4-5. Next token and the loop\n")
        md.append("A reward model does not predict tokens: its head gives one score per conversation "
                  "(`lantern reward score`).\n")
    else:
        md.append("## 4. Next-token distribution\n")
        nxt = next_token.next_token_view(model, tokenizer, prompt)
        next_token.plot_next_token(nxt, output_path(out, "next_token.png"))
        md += [_block(next_token.render_next_token(nxt)), "![next token](next_token.png)\n"]

        md.append("## 5. The loop\n")
        engine = Engine(model, vocab_limit=loaded.vocab_limit)
        trace = loop.generation_trace(engine, tokenizer, prompt, steps,
                                      SamplingParams(temperature=0.7, top_k=10, seed=0))
        loop.plot_loop_strip(trace, output_path(out, "loop.png"))
        loop.write_loop_gif(trace, output_path(out, "loop.gif"))
        md += [_block(loop.render_loop(trace)), "![loop](loop.png)\n", "Animated: [loop.gif](loop.gif)\n"]

    if (run_dir / "metrics.jsonl").is_file():
        md.append("## 6. Loss\n")
        curves = loss.loss_curves([run_dir])
        loss.plot_loss_curves(curves, output_path(out, "loss_curves.png"))
        md += [_block(loss.render_loss(curves)), "![loss](loss_curves.png)\n"]

    if loaded.stage == "rl" and (run_dir / "metrics.jsonl").is_file():
        from . import rl

        md.append("## Reinforcement learning\n")
        view = rl.rl_view(run_dir)
        rl.plot_rl(view, output_path(out, "rl.png"))
        md += [_block(rl.render_rl(view)), "![rl](rl.png)\n",
               f"Answers before and after: `lantern inspect rl {run_dir} --tasks letters`\n"]

    if loaded.stage in ("dpo", "reward"):
        from . import preference

        md.append("## Preference tuning\n")
        pref = preference.PreferenceView(str(run_dir), loaded.stage, preference.preference_curves(run_dir))
        preference.plot_preference(pref, output_path(out, "preference.png"))
        md += [_block(preference.render_preference(pref)), "![preference](preference.png)\n",
               f"Answers before and after: `lantern inspect preference {run_dir} --tasks letters`\n"]

    md.append("## 7. Memory\n")
    mem = memory.memory_view(model)
    memory.plot_memory(mem, output_path(out, "memory.png"))
    md += [_block(memory.render_memory(mem)), "![memory](memory.png)\n"]

    path = output_path(out, "report.md")
    path.write_text("\n".join(md), encoding="utf-8")
    logger.info("wrote the report %s", path)
    return path
