"""The Transformer, top to bottom: config → norm → RoPE → attention → MLP → block → GPT.

One decoder-only model covers the two families people load: **GPT-2 style** (learned
positions, LayerNorm, GELU, biases, tied embeddings) and **Llama style** (RoPE, RMSNorm,
SwiGLU, grouped-query attention, untied head). Every difference is a switch in
:class:`GPTConfig`; the ``gpt2-124m`` preset is GPT-2 itself, bar the first item below.

Deviations from the original GPT-2 (Radford et al., 2019; the OpenAI TensorFlow code):

- The ``gpt2-124m`` preset pads the vocabulary from 50,257 to 50,304 (a multiple of 64)
  so the embedding and output matmuls hit fast kernels; the extra rows never get targets.
- Weights are ``nn.Linear`` (out, in); GPT-2's ``Conv1D`` stores (in, out). Query, key
  and value live in one fused ``qkv`` matrix (as GPT-2's ``c_attn``), and SwiGLU's gate
  and up projections in one ``fc`` matrix: one matmul instead of two or three.
  :mod:`lanternlm.interop.hf` does the transposes and concatenations.
- Optional Llama parts: rotary positions in Hugging Face Llama's "rotate half" layout
  (pairs ``(i, i + head_dim/2)``, so HF weights map without permutation), RMSNorm,
  SwiGLU, grouped-query attention (``n_kv_head < n_head``), an untied head, no biases.
- Optional extras from later models: QK-norm (RMSNorm of each head's queries and keys
  before RoPE, as in OLMo-2 / Qwen3) and sliding-window attention (Mistral).
- Attention runs through ``F.scaled_dot_product_attention`` (flash / memory-efficient
  kernels); a plain reference path computes the same thing and returns the weights.
- Given targets, the forward returns their log-probabilities and the mean cross-entropy,
  computed in fp32 (also under bf16 autocast) straight from the last hidden states, in
  chunks, without storing the (B, T, vocab) logits (:func:`lanternlm.loss.token_logprobs`);
  targets equal to -1 are ignored (padding, prompt tokens in fine-tuning).
- A key/value cache with a length per batch row (GPT-2's code had none).
- Dropout defaults to 0 (GPT-2 used 0.1); the init is GPT-2's for every family.
- An optional scalar reward head (``reward_head``): the same network as a Bradley–Terry
  reward model, one score per sequence read at its last token (Hugging Face's
  ``*ForSequenceClassification`` with one label reads the same position); such a model
  keeps no untied language head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import option
from .errors import LanternError
from .loss import token_logprobs
from .tokenizer import MAX_VOCAB_SIZE

# --------------------------------------------------------------------------- config


#: The most positions and blocks a model may have: checked, with the tokenizer's MAX_VOCAB_SIZE,
#: before anything is built (a typo or a corrupt model.json must not ask for terabytes).
MAX_BLOCK_SIZE = 1 << 20
MAX_LAYERS = 1 << 12


@dataclass
class GPTConfig:
    """The architecture. ``None`` fields are derived (see :attr:`kv_heads`, :attr:`mlp_size`)."""

    vocab_size: int = option(50304, "number of token ids (the tokenizer's vocabulary, "
                                     "best padded up to a multiple of 64)")
    block_size: int = option(1024, "context window: the most positions the model handles")
    n_layer: int = option(12, "number of Transformer blocks")
    n_head: int = option(12, "number of attention (query) heads")
    n_kv_head: int | None = option(None, "number of key/value heads, grouped-query attention "
                                         "(None = n_head, i.e. ordinary multi-head attention)")
    n_embd: int = option(768, "width of the residual stream")
    mlp_hidden: int | None = option(None, "MLP hidden size (None = 4*n_embd for gelu; "
                                          "8/3*n_embd rounded up to a multiple of 64 for swiglu)")
    pos_encoding: str = option("learned", "'learned' absolute position embeddings (GPT-2) "
                                          "or 'rope' rotary positions (Llama)")
    rope_theta: float = option(10000.0, "RoPE base: wavelengths range from 2*pi to 2*pi*theta")
    norm: str = option("layernorm", "'layernorm' (GPT-2) or 'rmsnorm' (Llama)")
    norm_eps: float = option(1e-5, "epsilon added inside the norms")
    mlp: str = option("gelu", "'gelu' (GPT-2, tanh approximation) or 'swiglu' (Llama)")
    bias: bool = option(True, "biases in the linear layers and LayerNorms (GPT-2 yes, Llama no)")
    tie_embeddings: bool = option(True, "the output head reuses the token-embedding matrix")
    qk_norm: bool = option(False, "RMSNorm on each head's queries and keys before attention")
    sliding_window: int | None = option(None, "attend to at most this many latest positions, "
                                              "itself included (None = the whole causal past)")
    dropout: float = option(0.0, "dropout on attention weights and residual branches (training)")
    reward_head: bool = option(False, "add a scalar head (n_embd -> 1) read at a sequence's last "
                                      "position: a reward model (lantern reward)")
    init_std: float = option(0.02, "std of the normal init; residual output projections get "
                                   "init_std/sqrt(2*n_layer)")

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> LanternError:
            return LanternError(f"GPTConfig.{name}={getattr(self, name)!r}: {why}")

        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        for name, most in (("vocab_size", MAX_VOCAB_SIZE), ("block_size", MAX_BLOCK_SIZE), ("n_layer", MAX_LAYERS)):
            if getattr(self, name) > most:
                raise bad(name, f"must be at most {most:,}")
        if self.pos_encoding not in ("learned", "rope"):
            raise bad("pos_encoding", "choose 'learned' or 'rope'")
        if self.norm not in ("layernorm", "rmsnorm"):
            raise bad("norm", "choose 'layernorm' or 'rmsnorm'")
        if self.mlp not in ("gelu", "swiglu"):
            raise bad("mlp", "choose 'gelu' or 'swiglu'")
        if self.n_embd % self.n_head:
            raise bad("n_embd", f"must be divisible by n_head={self.n_head}")
        if self.pos_encoding == "rope" and self.head_dim % 2:
            raise bad("n_embd", f"RoPE needs an even head size, got {self.head_dim}")
        if self.n_kv_head is not None and (self.n_kv_head < 1 or self.n_head % self.n_kv_head):
            raise bad("n_kv_head", f"must be a positive divisor of n_head={self.n_head}")
        if self.mlp_hidden is not None and self.mlp_hidden < 1:
            raise bad("mlp_hidden", "must be a positive integer or None")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise bad("sliding_window", "must be a positive integer or None")
        if not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", "must be in [0, 1)")
        for name in ("rope_theta", "norm_eps", "init_std"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= (0 if name == "init_std" else 1e-30)):
                raise bad(name, "must be a finite number > 0" if name != "init_std" else "must be finite and >= 0")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads actually used (``n_kv_head`` or ``n_head``)."""
        return self.n_kv_head if self.n_kv_head is not None else self.n_head

    @property
    def mlp_size(self) -> int:
        """MLP hidden size actually used (``mlp_hidden`` or the family's default)."""
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        if self.mlp == "gelu":
            return 4 * self.n_embd
        return 64 * math.ceil(8 * self.n_embd / 3 / 64)


def padded_vocab_size(vocab_size: int, multiple: int = 64) -> int:
    """Round a tokenizer's vocabulary up so the embedding matmuls are fast.

    >>> padded_vocab_size(50257)
    50304
    >>> padded_vocab_size(4096)
    4096
    """
    return multiple * math.ceil(vocab_size / multiple)


MODEL_PRESETS: dict[str, GPTConfig] = {
    # A laptop CPU trains this in minutes (~1,200 steps of 8 x 128 tokens in 5 minutes on
    # 2 cores): Llama-style (the modern default), 4 layers, 128 wide, context 128, tied
    # embeddings (small vocabularies make up much of a small model). The vocabulary is
    # replaced by the tokenizer's at training time.
    "tiny": GPTConfig(vocab_size=4096, block_size=128, n_layer=4, n_head=4, n_embd=128,
                      pos_encoding="rope", norm="rmsnorm", norm_eps=1e-5, mlp="swiglu",
                      bias=False, tie_embeddings=True),
    # GPT-2 small (124M parameters), vocabulary padded to 50,304.
    "gpt2-124m": GPTConfig(vocab_size=50304, block_size=1024, n_layer=12, n_head=12,
                           n_embd=768),
    # Small members of each family, for tests and quick experiments.
    "gpt2-style-tiny": GPTConfig(vocab_size=512, block_size=128, n_layer=2, n_head=4,
                                 n_embd=64),
    "llama-style-tiny": GPTConfig(vocab_size=512, block_size=128, n_layer=2, n_head=4,
                                  n_kv_head=2, n_embd=64, pos_encoding="rope", norm="rmsnorm",
                                  norm_eps=1e-6, mlp="swiglu", bias=False,
                                  tie_embeddings=False),
}


# --------------------------------------------------------------------------- size arithmetic


def num_params(config: GPTConfig, non_embedding: bool = False) -> int:
    """Exact number of parameters of ``GPT(config)``.

    ``non_embedding=True`` leaves out the token and position embeddings and the output
    head (the vocabulary-sized matrices), as in scaling-law papers.

    >>> num_params(MODEL_PRESETS["gpt2-124m"])
    124475904
    """
    C, hd, L = config.n_embd, config.head_dim, config.n_layer
    qkv_out = (config.n_head + 2 * config.kv_heads) * hd
    fc_out = config.mlp_size * (2 if config.mlp == "swiglu" else 1)
    norm = C * (2 if config.norm == "layernorm" and config.bias else 1)
    layer = 2 * norm + C * qkv_out + config.n_head * hd * C + C * fc_out + config.mlp_size * C
    if config.bias:
        layer += qkv_out + C + fc_out + C
    if config.qk_norm:
        layer += 2 * hd
    total = L * layer + norm + (C if config.reward_head else 0)
    if non_embedding:
        return total
    total += config.vocab_size * C
    if config.pos_encoding == "learned":
        total += config.block_size * C
    if not config.tie_embeddings and not config.reward_head:
        total += config.vocab_size * C
    return total


def matmul_params(config: GPTConfig) -> int:
    """Weights used in matrix multiplies per token: every linear layer plus the output head.

    Embedding lookups, norms and biases are left out (they cost no matmul FLOPs).
    """
    C, hd = config.n_embd, config.head_dim
    per_layer = (C * (config.n_head + 2 * config.kv_heads) * hd + config.n_head * hd * C
                 + C * config.mlp_size * (2 if config.mlp == "swiglu" else 1)
                 + config.mlp_size * C)
    return config.n_layer * per_layer + config.vocab_size * C


def flops_per_token(config: GPTConfig, seq_len: int | None = None) -> int:
    """Training FLOPs per token (forward + backward), the usual estimate for MFU.

    ``6 * matmul_params`` (2 FLOPs per multiply-add, forward once, backward twice) plus
    the attention scores and weighted sum, ``12 * n_layer * n_head * head_dim * S`` where S
    is the attended span (``seq_len``, default the context window, capped by the sliding
    window). As in the PaLM paper and nanoGPT, the causal mask's saving is not subtracted.

    >>> flops_per_token(MODEL_PRESETS["gpt2-124m"]) / 1e6
    854.654976
    """
    span = config.block_size if seq_len is None else seq_len
    if config.sliding_window is not None:
        span = min(span, config.sliding_window)
    return 6 * matmul_params(config) + 12 * config.n_layer * config.n_head * config.head_dim * span


def kv_cache_bytes_per_token(config: GPTConfig, bytes_per_value: int = 2) -> int:
    """Bytes one position occupies in the KV cache: keys and values of every layer.

    >>> kv_cache_bytes_per_token(MODEL_PRESETS["gpt2-124m"], bytes_per_value=2)
    36864
    """
    return 2 * config.n_layer * config.kv_heads * config.head_dim * bytes_per_value


# --------------------------------------------------------------------------- norms


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight``, normalised in fp32 as in Hugging Face Llama."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def make_norm(config: GPTConfig, dim: int) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(dim, config.norm_eps)
    return nn.LayerNorm(dim, eps=config.norm_eps, bias=config.bias)


# --------------------------------------------------------------------------- rotary positions


def rope_tables(head_dim: int, length: int, theta: float,
                device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of ``position * frequency``, each (length, head_dim // 2), in fp32.

    Frequency i is ``theta ** (-2i / head_dim)``: the first pair turns by one radian per
    position, the last pair almost not at all.

    >>> cos, sin = rope_tables(head_dim=4, length=3, theta=100.0)
    >>> cos.shape
    torch.Size([3, 2])
    >>> torch.allclose(sin[2], torch.tensor([math.sin(2.0), math.sin(0.2)]))
    True
    """
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=device)
                         / head_dim)  # (head_dim/2,)
    angles = torch.outer(torch.arange(length, dtype=torch.float32, device=device), inv_freq)
    return angles.cos(), angles.sin()  # (length, head_dim/2) each


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair ``(x[i], x[i + d/2])`` of every head by its angle.

    This is Hugging Face Llama's "rotate half" layout. x: (B, H, T, d); cos, sin
    broadcast to (B, H, T, d/2).

    >>> x = torch.tensor([[[[1.0, 0.0]]]])                  # one pair (1, 0)
    >>> c, s = torch.tensor([0.0]), torch.tensor([1.0])     # a quarter turn
    >>> apply_rope(x, c, s)
    tensor([[[[0., 1.]]]])
    """
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)  # (B, H, T, d/2) each
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)  # (B, H, T, d)


# --------------------------------------------------------------------------- attention


def attention_mask(q_pos: torch.Tensor, key_len: int, window: int | None = None) -> torch.Tensor:
    """Which keys each query may see: key s is visible from position p iff
    ``s <= p`` (causal) and, with a sliding window, ``p - s < window``.

    q_pos: (B, T) absolute positions of the queries; the keys are positions
    ``0 .. key_len-1``. Returns a bool tensor (B, 1, T, key_len), True = attend.

    >>> attention_mask(torch.arange(4)[None], 4, window=2)[0, 0].int()
    tensor([[1, 0, 0, 0],
            [1, 1, 0, 0],
            [0, 1, 1, 0],
            [0, 0, 1, 1]], dtype=torch.int32)
    """
    keys = torch.arange(key_len, device=q_pos.device)  # (S,)
    offset = q_pos[:, :, None] - keys  # (B, T, S): how far back each key is
    visible = offset >= 0
    if window is not None:
        visible = visible & (offset < window)
    return visible[:, None]  # (B, 1, T, S)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Share each key/value head with ``n_rep`` consecutive query heads (GQA).

    (B, Hkv, S, d) -> (B, Hkv * n_rep, S, d); query head h uses kv head ``h // n_rep``.
    """
    if n_rep == 1:
        return x
    B, Hkv, S, d = x.shape
    return x[:, :, None].expand(B, Hkv, n_rep, S, d).reshape(B, Hkv * n_rep, S, d)


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(q k^T / sqrt(d) + mask) v`` written out, also returning the weights.

    q: (B, H, T, d); k, v: (B, Hkv, S, d); mask: bool, broadcastable to (B, H, T, S), or
    None for plain causal attention with T == S. Returns ``(y (B, H, T, d), weights
    (B, H, T, S))``; each row of weights sums to 1 (softmax in fp32). No dropout: this
    path is for looking inside the model.
    """
    n_rep = q.size(1) // k.size(1)
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, H, S, d)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, H, T, S)
    if mask is None:
        T = q.size(-2)
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()  # (T, S=T)
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # (B, H, T, S)
    return weights @ v, weights  # (B, H, T, d), (B, H, T, S)


def _sdpa_supports_gqa() -> bool:
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 5)


_SDPA_GQA = _sdpa_supports_gqa()  # `enable_gqa=` arrived in torch 2.5


def fast_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   mask: torch.Tensor | None, dropout_p: float = 0.0) -> torch.Tensor:
    """The same as :func:`reference_attention` through ``F.scaled_dot_product_attention``.

    Shapes as there; returns y (B, H, T, d). ``mask=None`` means causal with T == S.
    """
    n_rep = q.size(1) // k.size(1)
    extra = {}
    if n_rep > 1 and _SDPA_GQA and q.is_cuda:
        extra["enable_gqa"] = True  # the kernel shares kv heads without copying them
    else:
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, H, S, d)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                          is_causal=mask is None, **extra)


class CausalSelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention with an optional KV cache."""

    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.n_embd, (self.n_head + 2 * self.n_kv_head) * self.head_dim,
                             bias=config.bias)
        self.proj = nn.Linear(self.n_head * self.head_dim, config.n_embd, bias=config.bias)
        self.q_norm = RMSNorm(self.head_dim, config.norm_eps) if config.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, config.norm_eps) if config.qk_norm else None
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                mask: torch.Tensor | None, cache: KVCache | None, positions: torch.Tensor,
                return_attention: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, _ = x.shape
        H, Hkv, d = self.n_head, self.n_kv_head, self.head_dim
        q, k, v = self.qkv(x).split([H * d, Hkv * d, Hkv * d], dim=-1)
        q = q.view(B, T, H, d).transpose(1, 2)  # (B, H, T, d)
        k = k.view(B, T, Hkv, d).transpose(1, 2)  # (B, Hkv, T, d)
        v = v.view(B, T, Hkv, d).transpose(1, 2)  # (B, Hkv, T, d)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v, positions)  # (B, Hkv, S, d)
        weights = None
        if return_attention:
            y, weights = reference_attention(q, k, v, mask)
        else:
            y = fast_attention(q, k, v, mask, self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, H * d)  # (B, T, H*d)
        return self.resid_dropout(self.proj(y)), weights


# --------------------------------------------------------------------------- KV cache


class KVCache:
    """Keys and values of past positions, so decoding costs one position per step.

    It lives with the model, not in the engine, because attention writes into it and its
    layout (layers, kv heads, head size, positions) is the model's; the engine only
    creates, fills, truncates and resets it.

    Storage is preallocated once, ``k`` and ``v`` each (n_layer, B, n_kv_head, max_len,
    head_dim), so shapes never change. ``lengths`` (B,) counts the positions filled in
    each row; a forward with ``cache=`` puts row b's T new tokens at positions
    ``lengths[b] .. lengths[b]+T-1`` (positional encodings included), lets them attend
    to that row's earlier positions only, and then adds T to every row.

    Protocol for a batch of prompts of different lengths:

    1. Prefill, one of
       a. row by row: ``model(prompt_b[None], cache=cache.row(b))`` for each b (a view
          of one row, sharing storage); its last logits predict row b's next token;
       b. all rows at once, right-padded to the longest: ``out = model(padded,
          cache=cache)`` then ``cache.truncate(prompt_lengths)``; row b's next-token
          logits are ``out.logits[b, prompt_lengths[b] - 1]`` (padding comes after the
          prompt, so causality keeps it out of the real positions; truncation forgets it).
    2. Decode all rows together: ``model(next_ids[:, None], cache=cache)`` (B, 1), or
       a contiguous part of them through a :meth:`rows` view.
    3. ``reset()`` to reuse the buffers for new prompts (of one row: ``row(b).reset()``);
       :meth:`copy_rows` moves or duplicates rows.

    With ``static=True`` attention always spans the whole buffer (masked beyond each
    row's length), so every decode step has the same shapes, for ``torch.compile`` or
    CUDA graphs; otherwise it spans only the longest row so far (less work in eager mode).
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                 static: bool = False) -> None:
        max_len = config.block_size if max_len is None else max_len
        if not 1 <= max_len <= config.block_size:
            raise LanternError(f"KVCache max_len={max_len}: must be in 1..block_size "
                               f"({config.block_size}), the model's context window")
        shape = (config.n_layer, batch_size, config.kv_heads, max_len, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.batch_size, self.max_len, self.static = batch_size, max_len, static
        self.max_length = 0  # max(lengths), tracked in Python so no device sync is needed
        self._parent: KVCache | None = None

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def row(self, i: int) -> KVCache:
        """A one-row view of row ``i`` (shares storage): prefill a single prompt with it."""
        if not 0 <= i < self.batch_size:
            raise LanternError(f"KVCache.row({i}): batch size is {self.batch_size}")
        return self.rows(i, i + 1)

    def rows(self, start: int, stop: int) -> KVCache:
        """A view of rows ``start .. stop-1`` (shares storage): run a part of the batch, e.g.
        the engine's active rows, or new prompts prefilled into free rows."""
        if not 0 <= start < stop <= self.batch_size:
            raise LanternError(f"KVCache.rows({start}, {stop}): need 0 <= start < stop <= "
                               f"batch size {self.batch_size}")
        view = KVCache.__new__(KVCache)
        view.k, view.v = self.k[:, start:stop], self.v[:, start:stop]  # (L, stop-start, Hkv, max_len, d)
        view.lengths = self.lengths[start:stop]  # (stop-start,)
        view.batch_size, view.max_len, view.static = stop - start, self.max_len, self.static
        view.max_length = int(view.lengths.max())
        view._parent = self
        return view

    def copy_rows(self, src: Sequence[int], dst: Sequence[int]) -> None:
        """Make row ``dst[i]`` a copy of row ``src[i]`` for each i: its length and its filled
        positions (only those are copied). A row may be copied to several, but no row may be
        both a source and a destination. The engine moves a sequence to another row with
        it, and shares one prompt's prefill between the samples of that prompt."""
        if len(src) != len(dst) or len(set(dst)) != len(dst) or set(src) & set(dst):
            raise LanternError(f"KVCache.copy_rows: {list(src)} -> {list(dst)}: each destination "
                               "once, none of them a source")
        for s, d, n in zip(src, dst, self.lengths[list(src)].tolist()):
            self.k[:, d, :, :n] = self.k[:, s, :, :n]  # (L, Hkv, n, d)
            self.v[:, d, :, :n] = self.v[:, s, :, :n]
        self.lengths[list(dst)] = self.lengths[list(src)]
        self.max_length = int(self.lengths.max())
        if self._parent is not None:
            self._parent.max_length = int(self._parent.lengths.max())

    def reset(self) -> None:
        """Forget every position (of this row only, for a :meth:`row` view)."""
        self.truncate([0] * self.batch_size)

    def truncate(self, lengths: Sequence[int] | torch.Tensor) -> None:
        """Keep only the first ``lengths[b]`` positions of each row (never grows a row)."""
        new = torch.as_tensor(lengths, dtype=torch.long, device=self.lengths.device)
        if new.shape != self.lengths.shape or bool((new < 0).any()) \
                or bool((new > self.lengths).any()):
            raise LanternError(f"KVCache.truncate: lengths {new.tolist()} must be (B,) with "
                               f"0 <= length <= current {self.lengths.tolist()}")
        self.lengths.copy_(new)
        self.max_length = int(new.max())
        if self._parent is not None:
            self._parent.max_length = int(self._parent.lengths.max())

    def positions(self, T: int) -> torch.Tensor:
        """Positions of T new tokens in each row, (B, T); raises past the buffer's end."""
        if self.max_length + T > self.max_len:
            raise LanternError(f"sequence too long: {self.max_length} cached + {T} new "
                               f"positions exceed the cache length {self.max_len} (the "
                               "context window or less); start a new cache or shorten input")
        return self.lengths[:, None] + torch.arange(T, device=self.lengths.device)  # (B, T)

    def span(self, T: int) -> int:
        """How many key positions attention looks at after adding T tokens."""
        return self.max_len if self.static else self.max_length + T

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor,
               positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write new keys/values (B, Hkv, T, d) at ``positions`` (B, T) of ``layer`` and
        return that layer's keys and values (B, Hkv, S, d) for S = :meth:`span`, in the
        dtype of the new ones (a copy only if the cache is stored in another dtype)."""
        B, Hkv, T, d = k.shape
        index = positions[:, None, :, None].expand(B, Hkv, T, d)  # (B, Hkv, T, d)
        self.k[layer].scatter_(2, index, k.to(self.k.dtype))
        self.v[layer].scatter_(2, index, v.to(self.v.dtype))
        S = self.span(T)
        return self.k[layer, :, :, :S].to(k.dtype), self.v[layer, :, :, :S].to(v.dtype)

    def advance(self, T: int) -> None:
        """Count T new positions in every row (called by the model after all layers)."""
        self.lengths += T
        self.max_length += T
        if self._parent is not None:
            self._parent.max_length = max(self._parent.max_length, self.max_length)


# --------------------------------------------------------------------------- MLP and block


class MLP(nn.Module):
    """GELU (GPT-2): ``proj(gelu(fc(x)))``; SwiGLU (Llama): ``proj(silu(gate(x)) * up(x))``,
    with gate and up fused in ``fc`` (gate first)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.swiglu = config.mlp == "swiglu"
        hidden = config.mlp_size
        self.fc = nn.Linear(config.n_embd, hidden * (2 if self.swiglu else 1), bias=config.bias)
        self.proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)  # (B, T, hidden) or (B, T, 2*hidden)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)  # (B, T, hidden) each
            h = F.silu(gate) * up
        else:
            h = F.gelu(h, approximate="tanh")
        return self.dropout(self.proj(h))


class Block(nn.Module):
    """Pre-norm residual block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.norm1 = make_norm(config, config.n_embd)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.norm2 = make_norm(config, config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x, rope, mask, cache, positions, return_attention):
        a, weights = self.attn(self.norm1(x), rope, mask, cache, positions, return_attention)
        x = x + a
        x = x + self.mlp(self.norm2(x))
        return x, weights


# --------------------------------------------------------------------------- the model


class ModelOutput(NamedTuple):
    logits: torch.Tensor | None  # (B, T, vocab_size); None when targets are given
    loss: torch.Tensor | None  # mean cross-entropy (nats, fp32) over targets != -1 (reduction "mean")
    logprobs: torch.Tensor | None  # log-probabilities of the targets under the reduction
    attentions: list[torch.Tensor] | None  # per layer (B, H, T, S) with return_attention=True
    rewards: torch.Tensor | None = None  # (B,) fp32: the reward head's scores with reward_at


class GPT(nn.Module):
    """Token embedding (+ learned positions) → blocks → final norm → output head."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = (nn.Embedding(config.block_size, config.n_embd)
                    if config.pos_encoding == "learned" else None)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm_f = make_norm(config, config.n_embd)
        # a reward model scores with its reward head: an untied language head would go unused
        self.lm_head = (None if config.tie_embeddings or config.reward_head
                        else nn.Linear(config.n_embd, config.vocab_size, bias=False))
        self.reward_head = nn.Linear(config.n_embd, 1, bias=False) if config.reward_head else None
        if config.pos_encoding == "rope":  # derived from the config, so not saved
            self.register_buffer("rope_cos", torch.empty(0), persistent=False)
            self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Every initial value, in one place (GPT-2's scheme, for every family):

        - linear weights, token and position embeddings, untied head: N(0, init_std);
        - residual output projections (``attn.proj``, ``mlp.proj``): N(0, init_std /
          sqrt(2 * n_layer)), so the residual stream's variance does not grow with depth;
        - biases 0; norm weights 1 and LayerNorm biases 0;
        - RoPE tables recomputed (they are buffers, not parameters).
        """
        std = self.config.init_std
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                residual = name.endswith("attn.proj") or name.endswith("mlp.proj")
                scale = 1 / math.sqrt(2 * self.config.n_layer) if residual else 1.0
                nn.init.normal_(module.weight, mean=0.0, std=std * scale)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.LayerNorm, RMSNorm)):
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        self.init_buffers()

    @torch.no_grad()
    def init_buffers(self) -> None:
        """(Re)compute the RoPE tables, e.g. after building the model on the meta device."""
        if self.config.pos_encoding == "rope":
            device = self.wte.weight.device
            cos, sin = rope_tables(self.config.head_dim, self.config.block_size,
                                   self.config.rope_theta, device=device)
            self.rope_cos, self.rope_sin = cos, sin  # (block_size, head_dim/2) each

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (see :func:`num_params`, which computes it from the config)."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            vocab = [self.wte, self.wpe, self.lm_head]
            total -= sum(m.weight.numel() for m in vocab if m is not None)
        return total

    @property
    def head_weight(self) -> torch.Tensor:
        """The output head's (vocab_size, n_embd) matrix (the token embeddings when tied)."""
        if self.config.reward_head and not self.config.tie_embeddings:
            raise LanternError("this reward model has no language head (its base's untied head is left "
                               "out); it scores sequences (reward_at) and does not predict tokens")
        return self.wte.weight if self.lm_head is None else self.lm_head.weight

    def hidden(self, idx: torch.Tensor, *, cache: KVCache | None = None, return_attention: bool = False,
               at: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """idx (B, T) token ids → the final normed hidden states (B, T, C), what the output
        head reads, and the attention weights of every layer with ``return_attention``.

        With ``cache``, idx continues each row of the cache (see :class:`KVCache`). ``at``
        (B,) keeps one position per row → (B, 1, C): a prefill needs only each prompt's
        last position."""
        if idx.ndim != 2:
            raise LanternError(f"token ids must be a (batch, time) tensor, got shape "
                               f"{tuple(idx.shape)}")
        B, T = idx.shape
        if cache is not None:
            if cache.batch_size != B:
                raise LanternError(f"input has batch size {B} but the KV cache has "
                                   f"{cache.batch_size}")
            positions = cache.positions(T)  # (B, T)
            mask = attention_mask(positions, cache.span(T), self.config.sliding_window)
        else:
            if T > self.config.block_size:
                raise LanternError(f"sequence of {T} tokens is longer than the context window "
                                   f"(block_size={self.config.block_size})")
            positions = torch.arange(T, device=idx.device)  # (T,)
            mask = (None if self.config.sliding_window is None
                    else attention_mask(positions[None], T, self.config.sliding_window))
        x = self.wte(idx)  # (B, T, C)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(positions)  # (T, C) or (B, T, C), broadcast over the batch
        else:
            cos, sin = self.rope_cos[positions], self.rope_sin[positions]  # (T|B,T, d/2)
            if cache is not None:
                cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, d/2): broadcast over heads
            rope = (cos, sin)
        x = self.drop(x)
        attentions = [] if return_attention else None
        for block in self.blocks:
            x, weights = block(x, rope, mask, cache, positions, return_attention)
            if attentions is not None:
                attentions.append(weights)
        if cache is not None:
            cache.advance(T)
        if at is not None:
            x = x[torch.arange(B, device=x.device), at][:, None]  # (B, 1, C)
        return self.norm_f(x), attentions

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                reduction: str = "mean", vocab_limit: int | None = None, temperature: float = 1.0,
                cache: KVCache | None = None, return_attention: bool = False,
                logits_at: torch.Tensor | None = None, reward_at: torch.Tensor | None = None) -> ModelOutput:
        """idx (B, T) token ids → logits (B, T, vocab_size); or, with targets (B, T), no
        logits but the targets' log-probabilities under ``reduction`` (``"mean"``: also the
        loss, the mean cross-entropy over targets != -1; ``"none"``: (B, T) per token), see
        :func:`lanternlm.loss.token_logprobs`; with ``temperature``, under ``softmax(logits /
        temperature)``, what the engine samples from at that temperature. ``cache`` and ``logits_at`` as in
        :meth:`hidden` (its ``at``). With ``reward_at`` (B,), a reward model's scores at
        those positions instead (:meth:`rewards`)."""
        if reward_at is not None:
            if self.reward_head is None:
                raise LanternError("this model has no reward head (GPTConfig.reward_head); "
                                   "train one with lantern reward")
            x, attentions = self.hidden(idx, return_attention=return_attention, at=reward_at)  # (B, 1, C)
            return ModelOutput(None, None, None, attentions, self.reward_head(x[:, 0]).squeeze(-1).float())
        x, attentions = self.hidden(idx, cache=cache, return_attention=return_attention, at=logits_at)
        if targets is not None:
            if not isinstance(self.head_weight, torch.Tensor):
                raise LanternError("scoring targets needs the float output head (an int8 copy is "
                                   "for the engine only)")
            if temperature != 1.0:
                x = x / temperature  # the head is linear: scaling its input scales the logits
            logprobs = token_logprobs(x, self.head_weight, targets, reduction=reduction,
                                      vocab_limit=vocab_limit)
            return ModelOutput(None, -logprobs if reduction == "mean" else None, logprobs, attentions)
        # (B, T, V); calling the head module lets inference swap in a quantized one
        logits = F.linear(x, self.head_weight) if self.lm_head is None else self.lm_head(x)
        return ModelOutput(logits, None, None, attentions)

    def rewards(self, idx: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """A reward model's scores: idx (B, T) right-padded rows, last (B,) the index of
        each row's last real token → (B,) fp32, the reward head on the hidden state there
        (which has seen the whole sequence and none of the padding after it)."""
        return self(idx, reward_at=last).rewards
