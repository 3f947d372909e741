"""Tiny runs for the interop tests: a trained tokenizer, random weights, a run directory."""

from __future__ import annotations

import dataclasses

import torch

from lanternlm.checkpoint import save_model
from lanternlm.model import GPT, MODEL_PRESETS, padded_vocab_size
from lanternlm.run import write_record
from lanternlm.tokenizer import Tokenizer

TEXTS = ["I love pizza! I love pasta! 1234 numbers 0000 and 12,345.\n\n  Indented line.\n",
         "The lanterns over the river, don't they glow? naïve café 東京 😀\n"] * 8

GPT2 = dataclasses.replace(MODEL_PRESETS["gpt2-style-tiny"], norm_eps=1e-5)
LLAMA = dataclasses.replace(MODEL_PRESETS["llama-style-tiny"], rope_theta=500.0)  # GQA 4/2, untied


def tokenizer(pattern: str | None = None, vocab_size: int = 340) -> Tokenizer:
    kwargs = {} if pattern is None else {"pattern": pattern}
    return Tokenizer.train(TEXTS, vocab_size=vocab_size, backend="python", **kwargs)


def random_model(config, seed: int = 0) -> GPT:
    """Our model with every parameter random (norm weights and biases included)."""
    torch.manual_seed(seed)
    model = GPT(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            norm_weight = p.ndim == 1 and not name.endswith("bias")
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim == 1 else 0.12) + norm_weight * 1.0)
    return model


def make_run(path, config, tok: Tokenizer, stage: str = "sft", seed: int = 0):
    """A run directory of ``stage`` with random weights; the vocabulary padded as training pads it."""
    config = dataclasses.replace(config, vocab_size=padded_vocab_size(tok.vocab_size))
    save_model(path, random_model(config, seed))
    tok.save(path / "tokenizer.json")
    write_record(path, stage, {"note": "test run"})
    return path
