"""Tiny runs for the interop tests: a trained tokenizer, random weights, a run directory."""

from __future__ import annotations

import dataclasses
import random

import torch

from lanternlm.checkpoint import save_model
from lanternlm.model import GPT, MODEL_PRESETS, padded_vocab_size
from lanternlm.run import write_record
from lanternlm.tokenizer import Tokenizer, bytes_to_unicode

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


def permuted_ids(tok: Tokenizer, seed: int = 0) -> dict[int, int]:
    """A new id for every ordinary token: the single bytes shuffled and scattered among the
    merges (as in cl100k, where some bytes rank after merges), the merges' order kept."""
    rng = random.Random(seed)
    byte_ids = list(range(256))
    rng.shuffle(byte_ids)
    order = []  # the ordinary tokens in new-id order
    merges = list(range(256, 256 + len(tok.merges)))
    while byte_ids or merges:
        if byte_ids and (not merges or rng.random() < 0.6):
            order.append(byte_ids.pop())
        else:
            order.append(merges.pop(0))
    return {old: new for new, old in enumerate(order)}


def hf_document(tok: Tokenizer, gpt2_style: bool = False, seed: int = 0) -> dict:
    """tok's tokenizer.json with the ids permuted and the special tokens at gapped ids."""
    doc = tok.hf_json()
    new = permuted_ids(tok, seed)
    alphabet = bytes_to_unicode()
    doc["model"]["vocab"] = {"".join(alphabet[b] for b in piece): new[i] for i, piece in tok.vocab.items()}
    top = len(new)
    doc["added_tokens"] = [{"id": top + 3 * k + 2, "content": name, "single_word": False, "lstrip": False,
                            "rstrip": False, "normalized": False, "special": True}
                           for k, name in enumerate(tok.special_tokens)]
    for token in doc["added_tokens"]:  # as in GPT-2's file: Hugging Face takes an added token's id from here
        doc["model"]["vocab"]["".join(alphabet[b] for b in token["content"].encode())] = token["id"]
    doc["model"]["ignore_merges"] = False  # as GPT-2's file
    if gpt2_style:
        doc["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                "use_regex": True}
    return doc
