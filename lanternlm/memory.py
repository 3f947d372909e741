"""Can I run it on my hardware? Sizes and memory estimates for a model (``lantern info``).

Everything here is arithmetic on a :class:`~lanternlm.model.GPTConfig`: parameter counts,
bytes of the weights in each precision, bytes of the KV cache, and an estimate of the
memory needed to run the model. The tests check the formulas against real tensors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import LanternError
from .model import (MODEL_PRESETS, GPTConfig, flops_per_token, kv_cache_bytes_per_token,
                    num_params)

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}
RUNTIME_OVERHEAD = 512 * 2**20  # the PyTorch runtime itself (CUDA context or CPU libraries)


def format_bytes(n: float) -> str:
    """Bytes for people, in powers of 1024.

    >>> format_bytes(36864)
    '36.0 KiB'
    >>> format_bytes(3 * 2**30)
    '3.00 GiB'
    """
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}" if unit == "GiB" else f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def format_count(n: float) -> str:
    """
    >>> format_count(124_475_904)
    '124.5M'
    >>> format_count(4096)
    '4.1K'
    """
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(int(n))


@dataclass
class MemoryEstimate:
    """Bytes needed to run a model on one device; ``total`` is the sum of the parts."""

    weights: int
    kv_cache: int
    activations: int
    runtime: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations + self.runtime


def memory_estimate(config: GPTConfig, dtype: str = "bf16", batch_size: int = 1,
                    context: int | None = None) -> MemoryEstimate:
    """Estimated memory for inference: weights + a full KV cache + activations + runtime.

    ``dtype`` is the precision of weights and cache (int8 weights keep a bf16 cache).
    Activations are the largest transient tensors of one prefill of ``context`` positions:
    fp32 logits for every position plus a few MLP-sized hidden states. It is an estimate,
    deliberately on the high side; decoding one token at a time needs far less.
    """
    if dtype not in DTYPE_BYTES:
        raise LanternError(f"dtype {dtype!r}: choose one of {sorted(DTYPE_BYTES)}")
    context = config.block_size if context is None else context
    if not 1 <= context <= config.block_size:
        raise LanternError(f"context {context}: must be in 1..{config.block_size} "
                           "(the model's context window)")
    value_bytes = DTYPE_BYTES[dtype]
    act_bytes = max(value_bytes, 2)
    weights = num_params(config) * value_bytes
    kv = batch_size * context * kv_cache_bytes_per_token(config, act_bytes)
    hidden = config.mlp_size * (2 if config.mlp == "swiglu" else 1) + config.n_embd
    activations = batch_size * context * (4 * config.vocab_size + 4 * hidden * act_bytes)
    return MemoryEstimate(weights, kv, activations, RUNTIME_OVERHEAD)


def available_memory() -> dict[str, int]:
    """Total memory of this machine: ``{"RAM": bytes, "CUDA:0 <name>": bytes, ...}``."""
    import torch

    found = {"RAM": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            found[f"CUDA:{i} {props.name}"] = props.total_memory
    return found


def check_fits(config: GPTConfig, device, training: bool = False, shards: int = 1) -> None:
    """Raise :class:`LanternError` before allocating a model whose fp32 weights (training:
    weights, gradients and two AdamW states, 16 bytes a parameter) exceed the total memory
    of ``device`` (the RAM for the CPU): a typo in a size is an error, not a crash. Under
    FSDP (``shards`` processes) each process builds the whole model and then keeps its
    shard, so the gradients and optimizer states (12 of the 16 bytes) count once per shard."""
    import torch

    device = torch.device(device)
    n = num_params(config)
    need = n * 4 + (-(-n * 12 // shards) if training else 0)
    if device.type == "cuda":
        where, have = str(device), torch.cuda.get_device_properties(device.index or 0).total_memory
    else:
        where, have = "this machine's RAM", available_memory()["RAM"]
    if need > have:
        raise LanternError(f"the model has {n:,} parameters: {format_bytes(need)} for its "
                           f"{'weights, gradients and optimizer states' if training else 'weights'}, more than "
                           f"the {format_bytes(have)} of {where}; choose smaller sizes (vocab {config.vocab_size:,}, "
                           f"width {config.n_embd:,}, {config.n_layer:,} layers, context {config.block_size:,})")


def architecture(config: GPTConfig) -> str:
    """One line naming the family switches, e.g. for the GPT-2 preset
    ``learned positions, layernorm, gelu MLP, biases, tied embeddings``."""
    parts = [f"{'RoPE' if config.pos_encoding == 'rope' else 'learned'} positions",
             config.norm, f"{config.mlp} MLP", "biases" if config.bias else "no biases",
             "tied embeddings" if config.tie_embeddings else "untied head"]
    if config.kv_heads != config.n_head:
        parts.append(f"grouped-query attention ({config.kv_heads} kv heads)")
    if config.qk_norm:
        parts.append("QK-norm")
    if config.sliding_window is not None:
        parts.append(f"sliding window {config.sliding_window}")
    return ", ".join(parts)


def describe_presets() -> str:
    """A table of every preset in :data:`~lanternlm.model.MODEL_PRESETS`."""
    header = ("preset", "params", "non-emb", "FLOPs/token", "layers", "heads (kv)", "width",
              "context", "vocab", "family")
    rows = [header]
    for name, c in MODEL_PRESETS.items():
        rows.append((name, format_count(num_params(c)), format_count(num_params(c, True)),
                     format_count(flops_per_token(c)), str(c.n_layer),
                     f"{c.n_head} ({c.kv_heads})", str(c.n_embd), str(c.block_size),
                     str(c.vocab_size), "Llama-style" if c.pos_encoding == "rope" else
                     "GPT-2-style"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.append("")
    lines.append("FLOPs/token: training (forward + backward) at the full context. "
                 "`lantern info PRESET|RUN` for memory.")
    return "\n".join(lines)


def describe_model(config: GPTConfig, title: str, batch_size: int = 1,
                   context: int | None = None) -> str:
    """Sizes, KV cache and an estimate of the memory to run ``config``, as text."""
    context = config.block_size if context is None else context
    n = num_params(config)
    kv_token = kv_cache_bytes_per_token(config, 2)
    lines = [
        title,
        f"  architecture  {architecture(config)}",
        f"  shape         {config.n_layer} layers, {config.n_head} heads ({config.kv_heads} kv), "
        f"width {config.n_embd}, head size {config.head_dim}, MLP {config.mlp_size}, "
        f"context {config.block_size}, vocab {config.vocab_size}",
        f"  parameters    {n:,} ({num_params(config, True):,} non-embedding)",
        f"  FLOPs/token   {format_count(flops_per_token(config))} to train (6N + attention), "
        f"~{format_count(flops_per_token(config) // 3)} to run",
        "  weights       " + "   ".join(f"{d} {format_bytes(n * b)}"
                                       for d, b in DTYPE_BYTES.items()),
        f"  KV cache      {format_bytes(kv_token)} per token in bf16 ({format_bytes(2 * kv_token)}"
        f" fp32); {format_bytes(kv_token * config.block_size)} for a full context of "
        f"{config.block_size}",
        "",
        f"Estimated memory to run it (batch {batch_size}, context {context}; weights + KV cache"
        " + activations of one prefill + runtime):",
    ]
    header = ("dtype", "weights", "KV cache", "activations", "runtime", "total")
    table = [header]
    totals = {}
    for dtype in DTYPE_BYTES:
        est = memory_estimate(config, dtype, batch_size, context)
        totals[dtype] = est.total
        table.append((dtype, format_bytes(est.weights), format_bytes(est.kv_cache),
                      format_bytes(est.activations), format_bytes(est.runtime),
                      format_bytes(est.total)))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in table]
    lines.append("")
    for device, size in available_memory().items():
        fits = [d for d, total in totals.items() if total <= size]
        verdict = ("fits in " + ", ".join(fits)) if fits else "does not fit in any precision"
        lines.append(f"This machine: {device} {format_bytes(size)} total: {verdict} "
                     "(before other programs' use)")
    return "\n".join(lines)


def info(target: str | None = None, batch_size: int = 1, context: int | None = None) -> str:
    """``lantern info``: the presets table, or one preset's / run directory's report."""
    if batch_size < 1:
        raise LanternError(f"--batch-size {batch_size}: must be >= 1")
    if target is None:
        return describe_presets()
    if target in MODEL_PRESETS:
        return describe_model(MODEL_PRESETS[target], f"preset {target}", batch_size, context)
    if Path(target).is_dir():
        from .checkpoint import WEIGHTS_FILE, saved_dtype
        from .run import Run

        run = Run(target)
        weights = run.path / WEIGHTS_FILE
        on_disk = format_bytes(weights.stat().st_size) if weights.is_file() else "missing"
        title = (f"{run.stage or 'bare'} model in {target} (weights {on_disk} on disk, saved as "
                 f"{saved_dtype(run.path)})")
        return describe_model(run.model_config, title, batch_size, context)
    raise LanternError(f"{target!r} is neither a preset ({', '.join(MODEL_PRESETS)}) nor a "
                       "model/run directory")
