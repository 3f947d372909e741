"""The model: attention paths agree, masks are exact, the KV cache matches full recompute,
presets build and train a step, size arithmetic matches real tensors."""

import dataclasses
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
import torch.nn as nn

import lanternlm.loss as loss_module
from lanternlm.errors import LanternError
from lanternlm.model import (MODEL_PRESETS, GPT, GPTConfig, KVCache, attention_mask,
                             flops_per_token, kv_cache_bytes_per_token, matmul_params,
                             num_params, padded_vocab_size)

GPT2_TINY = MODEL_PRESETS["gpt2-style-tiny"]
LLAMA_TINY = MODEL_PRESETS["llama-style-tiny"]  # GQA: 4 query heads, 2 kv heads
VARIANTS = {
    "gpt2": GPT2_TINY,
    "llama-gqa": LLAMA_TINY,
    "llama-qknorm-window": dataclasses.replace(LLAMA_TINY, qk_norm=True, sliding_window=5),
    "gpt2-mqa-window": dataclasses.replace(GPT2_TINY, n_kv_head=1, sliding_window=3),
}


def make(config: GPTConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(config).eval()
    with torch.no_grad():  # non-trivial norm weights and biases, so they are tested too
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def tokens(config: GPTConfig, *shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, config.vocab_size, shape, generator=torch.Generator().manual_seed(seed))


def test_attention_mask_exact_causal_and_windowed():
    causal = attention_mask(torch.arange(5)[None], 5)[0, 0]
    assert torch.equal(causal, torch.ones(5, 5, dtype=torch.bool).tril())
    windowed = attention_mask(torch.tensor([[2, 3]]), 4, window=2)[0, 0]
    assert windowed.tolist() == [[False, True, True, False], [False, False, True, True]]
    per_row = attention_mask(torch.tensor([[0], [2]]), 3)  # two rows at different positions
    assert per_row.shape == (2, 1, 1, 3)
    assert per_row[:, 0, 0].tolist() == [[True, False, False], [True, True, True]]


@pytest.mark.parametrize("name", VARIANTS)
def test_fast_path_matches_reference_path(name):
    config = VARIANTS[name]
    model = make(config)
    idx = tokens(config, 2, 12)
    fast = model(idx)
    ref = model(idx, return_attention=True)
    assert fast.attentions is None
    assert (fast.logits - ref.logits).abs().max() < 1e-5
    assert len(ref.attentions) == config.n_layer
    for weights in ref.attentions:
        assert weights.shape == (2, config.n_head, 12, 12)
        assert torch.allclose(weights.sum(-1), torch.ones(2, config.n_head, 12), atol=1e-6)
        allowed = attention_mask(torch.arange(12)[None], 12, config.sliding_window)[0, 0]
        assert torch.all(weights[:, :, ~allowed] == 0)  # exactly causal (and windowed)
        assert torch.all(weights[:, :, allowed] > 0)


@pytest.mark.parametrize("name", VARIANTS)
def test_cached_decoding_matches_full_recompute(name):
    config = VARIANTS[name]
    model = make(config)
    idx = tokens(config, 2, 10)
    full = model(idx).logits
    cache = KVCache(config, batch_size=2, max_len=16)
    steps = [model(idx[:, :4], cache=cache).logits]  # prefill 4 positions
    for t in range(4, 10):  # then one token at a time
        steps.append(model(idx[:, t:t + 1], cache=cache).logits)
    assert (torch.cat(steps, dim=1) - full).abs().max() < 1e-5
    assert cache.lengths.tolist() == [10, 10]
    # the reference path reads the cache too
    cache.truncate([9, 9])
    last = model(idx[:, 9:10], cache=cache, return_attention=True)
    assert (last.logits[:, 0] - full[:, 9]).abs().max() < 1e-5
    assert last.attentions[0].shape == (2, config.n_head, 1, 10)


@pytest.mark.parametrize("name", ["gpt2", "llama-qknorm-window"])
@pytest.mark.parametrize("prefill", ["row-by-row", "right-padded"])
def test_batch_of_different_lengths_matches_each_prompt_alone(name, prefill):
    config = VARIANTS[name]
    model = make(config)
    lengths, new = [3, 7, 5], 4
    seqs = [tokens(config, 1, n + new, seed=10 + i)[0] for i, n in enumerate(lengths)]
    alone = [model(s[None]).logits[0] for s in seqs]  # (n + new, V) each

    cache = KVCache(config, batch_size=3, max_len=20)
    if prefill == "row-by-row":
        for b, (s, n) in enumerate(zip(seqs, lengths)):
            out = model(s[None, :n], cache=cache.row(b)).logits[0]
            assert (out - alone[b][:n]).abs().max() < 1e-5
    else:
        padded = torch.zeros(3, max(lengths), dtype=torch.long)
        for b, (s, n) in enumerate(zip(seqs, lengths)):
            padded[b, :n] = s[:n]
        out = model(padded, cache=cache).logits
        cache.truncate(lengths)
        for b, n in enumerate(lengths):
            assert (out[b, :n] - alone[b][:n]).abs().max() < 1e-5
    assert cache.lengths.tolist() == lengths and cache.max_length == 7
    for t in range(new):  # decode all rows together, each at its own position
        step = torch.stack([s[n + t] for s, n in zip(seqs, lengths)])[:, None]  # (3, 1)
        out = model(step, cache=cache).logits[:, 0]
        for b, n in enumerate(lengths):
            assert (out[b] - alone[b][n + t]).abs().max() < 1e-5


def test_static_cache_same_logits_and_reset():
    model = make(LLAMA_TINY)
    idx = tokens(LLAMA_TINY, 1, 6)
    full = model(idx).logits
    cache = KVCache(LLAMA_TINY, batch_size=1, max_len=8, static=True)
    for _ in range(2):  # second round after reset() gives the same again
        cache.reset()
        out = torch.cat([model(idx[:, t:t + 1], cache=cache).logits for t in range(6)], 1)
        assert (out - full).abs().max() < 1e-5


def test_cache_errors():
    model = make(GPT2_TINY)
    with pytest.raises(LanternError, match="max_len"):
        KVCache(GPT2_TINY, 1, max_len=GPT2_TINY.block_size + 1)
    cache = KVCache(GPT2_TINY, batch_size=2, max_len=5)
    with pytest.raises(LanternError, match="batch size"):
        model(tokens(GPT2_TINY, 1, 2), cache=cache)
    model(tokens(GPT2_TINY, 2, 4), cache=cache)
    with pytest.raises(LanternError, match="exceed"):
        model(tokens(GPT2_TINY, 2, 2), cache=cache)
    with pytest.raises(LanternError, match="truncate"):
        cache.truncate([5, 1])  # cannot grow a row
    with pytest.raises(LanternError, match="context window"):
        model(tokens(GPT2_TINY, 1, GPT2_TINY.block_size + 1))


def test_loss_ignores_minus_one_targets():
    model = make(LLAMA_TINY)
    idx = tokens(LLAMA_TINY, 2, 8)
    targets = tokens(LLAMA_TINY, 2, 8, seed=2)
    masked = targets.clone()
    masked[:, :5] = -1
    out = model(idx, masked)
    assert out.logits is None  # the loss never materialises them
    logp = torch.log_softmax(model(idx).logits.float(), -1)
    picked = logp[:, 5:].gather(-1, targets[:, 5:, None])  # (2, 3, 1)
    assert torch.allclose(out.loss, -picked.mean(), atol=1e-6)
    assert out.loss.dtype == torch.float32


@pytest.mark.parametrize("chunk_rows", [None, 3])  # default (one chunk here); 3 rows each
@pytest.mark.parametrize("config", [GPT2_TINY, LLAMA_TINY], ids=["gpt2", "llama"])
def test_chunked_loss_matches_cross_entropy_on_logits(config, chunk_rows, monkeypatch):
    """Loss and every parameter's gradient equal those of F.cross_entropy on the full
    logits (tied and untied heads, masked targets, chunks that do not divide the rows)."""
    model = make(config)
    if chunk_rows is not None:  # fp32 bytes of 3 rows of logits
        monkeypatch.setattr(loss_module, "LOSS_CHUNK_BYTES", chunk_rows * 4 * model.wte.weight.shape[0])
    idx, targets = tokens(config, 2, 11), tokens(config, 2, 11, seed=3)
    targets[0, :4] = -1
    reference = F.cross_entropy(model(idx).logits.flatten(0, 1), targets.flatten(), ignore_index=-1)
    expected = torch.autograd.grad(reference, list(model.parameters()))
    loss = model(idx, targets).loss
    got = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(loss, reference, atol=1e-6, rtol=1e-6)
    for (name, _), g, e in zip(model.named_parameters(), got, expected):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-5, msg=name)
    with torch.no_grad():  # evaluation: the same value, no gradients computed
        torch.testing.assert_close(model(idx, targets).loss, reference.detach(), atol=1e-6, rtol=1e-6)


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_training_step_matches_eager():
    """What the GPU presets run: torch.compile of the model, loss included, traces the
    chunked loss and gives the eager loss and gradients."""
    eager = make(GPT2_TINY)
    compiled_model = make(GPT2_TINY)
    idx, targets = tokens(GPT2_TINY, 2, 16), tokens(GPT2_TINY, 2, 16, seed=5)
    expected = eager(idx, targets).loss
    expected.backward()
    loss = torch.compile(compiled_model)(idx, targets).loss
    loss.backward()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    for a, b in zip(eager.parameters(), compiled_model.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4)


def test_chunked_loss_under_bf16_autocast_tracks_fp32():
    model = make(GPT2_TINY)
    idx, targets = tokens(GPT2_TINY, 2, 16), tokens(GPT2_TINY, 2, 16, seed=4)
    fp32 = model(idx, targets).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model(idx, targets).loss
    assert bf16.dtype == torch.float32
    assert abs(bf16.item() - fp32.item()) < 0.02
    bf16.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_logits_at_one_position_per_row_equal_the_full_logits():
    model = make(LLAMA_TINY)
    idx = tokens(LLAMA_TINY, 3, 8)
    at = torch.tensor([7, 0, 4])
    with torch.no_grad():
        full = model(idx).logits  # (3, 8, V)
        picked = model(idx, logits_at=at).logits  # (3, 1, V)
    assert picked.shape == (3, 1, LLAMA_TINY.vocab_size)
    torch.testing.assert_close(picked[:, 0], full[torch.arange(3), at], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", MODEL_PRESETS)
def test_every_preset_builds_and_trains_one_step(name):
    config = MODEL_PRESETS[name]
    assert num_params(config) > 0 and flops_per_token(config) > 0
    with torch.device("meta"):  # full size, no memory: the parameter count formula holds
        assert GPT(config).num_params() == num_params(config)
    small = dataclasses.replace(config, n_layer=min(config.n_layer, 2),
                                n_embd=min(config.n_embd, 64), n_head=min(config.n_head, 4),
                                n_kv_head=None if config.n_kv_head is None else 2,
                                vocab_size=min(config.vocab_size, 256), block_size=32)
    model = GPT(small)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    idx = tokens(small, 2, 16)
    losses = []
    for _ in range(2):
        loss = model(idx[:, :-1], idx[:, 1:]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert math.isfinite(losses[0]) and losses[1] < losses[0]


@pytest.mark.parametrize("name", VARIANTS)
def test_param_and_flops_formulas_match_real_tensors(name):
    config = dataclasses.replace(VARIANTS[name], mlp_hidden=96)
    model = GPT(config)
    assert num_params(config) == model.num_params() == sum(p.numel() for p in model.parameters())
    assert num_params(config, non_embedding=True) == model.num_params(non_embedding=True)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    head = 0 if model.lm_head is not None else model.wte.weight.numel()
    assert matmul_params(config) == linear + head
    attention = 12 * config.n_layer * config.n_embd * 7
    assert flops_per_token(config, seq_len=7) == 6 * (linear + head) + (
        attention if config.sliding_window is None or config.sliding_window >= 7
        else 12 * config.n_layer * config.n_embd * config.sliding_window)


def test_gpt2_124m_numbers():
    config = MODEL_PRESETS["gpt2-124m"]
    assert num_params(config) == 124_475_904  # nanoGPT's 123.69M + 786,432 positions
    assert config.vocab_size == padded_vocab_size(50257) == 50304
    # ~6N + attention: the famous 6 FLOPs per parameter per token, within 15%
    assert 1.0 < flops_per_token(config) / (6 * num_params(config)) < 1.15


def test_kv_cache_bytes_formula_matches_buffers():
    for config in (GPT2_TINY, LLAMA_TINY):
        cache = KVCache(config, batch_size=3, max_len=10, dtype=torch.bfloat16)
        assert cache.nbytes == 3 * 10 * kv_cache_bytes_per_token(config, bytes_per_value=2)


def test_config_validation_names_the_field():
    with pytest.raises(LanternError, match="n_kv_head"):
        GPTConfig(n_head=4, n_kv_head=3, n_embd=64)
    with pytest.raises(LanternError, match="pos_encoding"):
        GPTConfig(pos_encoding="alibi")
    with pytest.raises(LanternError, match="n_embd"):
        GPTConfig(n_head=5, n_embd=64)


@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, torch.float32])
def test_bf16_model_with_cache(cache_dtype):
    model = make(LLAMA_TINY).to(torch.bfloat16)
    idx = tokens(LLAMA_TINY, 2, 6)
    full = model(idx).logits.float()
    cache = KVCache(LLAMA_TINY, batch_size=2, max_len=6, dtype=cache_dtype)
    out = torch.cat([model(idx[:, :3], cache=cache).logits]
                    + [model(idx[:, t:t + 1], cache=cache).logits for t in range(3, 6)], 1)
    assert out.dtype == torch.bfloat16
    assert (out.float() - full).abs().max() < 0.05 * full.abs().max()
