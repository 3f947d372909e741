"""Tiny pieces shared by the SFT, eval and thinking tests: a tokenizer trained on task text,
a base run pretrained for two steps on tiny shards, and a scripted model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from lanternlm.model import GPT, GPTConfig
from lanternlm.tasks import make_sft_mixture
from lanternlm.tokenizer import Tokenizer


def task_text(n: int = 30) -> list[str]:
    """Plain text of task conversations (questions, thinking, answers) to train a tokenizer on."""
    texts = []
    for conv in make_sft_mixture(["letters", "arithmetic", "reverse", "glue"], n, seed=1):
        texts += [m["content"] + "\n" + m.get("thinking", "") for m in conv]
    return texts


def train_tokenizer(merges: int = 400) -> Tokenizer:
    return Tokenizer.train(task_text(), vocab_size=256 + 8 + merges)


def make_base(tokenizer: Tokenizer, directory: Path, *, pos_encoding: str = "rope") -> Path:
    """A pretraining run (config.json with shards, model, tokenizer) after two tiny steps."""
    from lanternlm.data.shards import ShardWriter
    from lanternlm.train.pretrain import PretrainConfig, pretrain

    shards = directory / "shards"
    with ShardWriter(shards, tokenizer, val_fraction=0.3) as writer:
        for text in task_text(40):
            writer.add(text)
        writer.finish()
    model = "llama-style-tiny" if pos_encoding == "rope" else "gpt2-style-tiny"
    config = PretrainConfig(data=str(shards), model=model, n_layer=1, n_head=2, n_embd=32, block_size=64,
                            batch_size=4, max_steps=2, warmup_steps=1, eval_every=2, eval_tokens=256,
                            log_every=1, checkpoint_every=2, beta2=0.99, weight_decay=0.05, device="cpu")
    run = directory / "base"
    pretrain(config, run)
    return run


def scripted_model(script: list[int], vocab_size: int, block_size: int = 128) -> GPT:
    """A GPT that predicts ``script[p]`` at position p whatever the input (crafted weights)."""
    assert len(script) <= block_size
    config = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=1, n_head=1,
                       n_embd=block_size, tie_embeddings=False)
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.norm_f.weight.fill_(1.0)
        model.wpe.weight.copy_(torch.eye(block_size))
        for position, token in enumerate(script):
            model.lm_head.weight[token, position] = 10.0
    return model.eval()


def small_sft(base: Path, **overrides):
    from lanternlm.train.sft import SFTConfig

    values = dict(base=str(base), examples_per_task=6, val_per_task=2, block_size=512, batch_size=4,
                  max_steps=3, warmup_steps=1, eval_every=3, log_every=1, checkpoint_every=2, seed=3)
    values.update(overrides)
    return dataclasses.replace(SFTConfig(), **values)
