"""The one scoring function: values and gradients against F.cross_entropy / log_softmax on
the full logits, the engine's own log-probabilities, and the memory it saves."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lanternlm.engine import Engine
from lanternlm.errors import LanternError
from lanternlm.inspect.memory import LiveBytes
from lanternlm.loss import token_logprobs
from lanternlm.model import GPT, GPTConfig
from lanternlm.sampling import SamplingParams


def reference(x, w, targets, mask=None, vocab_limit=None):
    """Per-token log-probabilities written out on the full (N, V) logits; 0 where not counted."""
    logits = x @ w.t()
    if vocab_limit is not None:
        logits = logits[:, :vocab_limit]
    logp = torch.log_softmax(logits.float(), dim=-1).gather(1, targets.clamp(min=0)[:, None])[:, 0]
    keep = targets != -1 if mask is None else (targets != -1) & mask.bool()
    return torch.where(keep, logp, 0.0), keep


def inputs(n=23, c=8, v=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, requires_grad=True)
    w = torch.randn(v, c, generator=g, requires_grad=True)
    targets = torch.randint(0, v, (n,), generator=g)
    targets[[0, 5, 6]] = -1
    mask = torch.rand(n, generator=g) > 0.3
    return x, w, targets, mask


@pytest.mark.parametrize("chunk_rows", [None, 4])  # one chunk; chunks that do not divide 23 rows
@pytest.mark.parametrize("vocab_limit", [None, 30])
def test_every_reduction_matches_the_full_logits_in_value_and_gradient(chunk_rows, vocab_limit):
    x, w, targets, mask = inputs()
    targets[targets >= 30] = 3  # targets must be tokens under the limit
    losses = {  # a non-linear function of per-token values (as DPO's), a sum, a mean
        "none": lambda lp: torch.sigmoid(lp.reshape(-1)[:12].sum() - lp.reshape(-1)[12:].sum()),
        "sum": lambda lp: lp * 0.7, "mean": lambda lp: lp * 0.7}
    for reduction, loss_of in losses.items():
        want, keep = reference(x, w, targets, mask, vocab_limit)
        expected = want if reduction == "none" else want.sum() if reduction == "sum" else want.sum() / keep.sum()
        e_dx, e_dw = torch.autograd.grad(loss_of(expected), [x, w])
        got = token_logprobs(x, w, targets, mask=mask, reduction=reduction, vocab_limit=vocab_limit,
                             chunk_rows=chunk_rows)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6, msg=reduction)
        g_dx, g_dw = torch.autograd.grad(loss_of(got), [x, w])
        torch.testing.assert_close(g_dx, e_dx, atol=1e-6, rtol=1e-5, msg=reduction)
        torch.testing.assert_close(g_dw, e_dw, atol=1e-6, rtol=1e-5, msg=reduction)
        with torch.no_grad():  # evaluation: the same values, no gradient work
            torch.testing.assert_close(token_logprobs(x, w, targets, mask=mask, reduction=reduction,
                                                      vocab_limit=vocab_limit, chunk_rows=chunk_rows), expected.detach())
    assert bool((want[~keep] == 0).all())


def test_the_mean_is_minus_cross_entropy_and_shapes_follow_the_targets():
    x, w, targets, _ = inputs()
    loss = F.cross_entropy(x @ w.t(), targets, ignore_index=-1)
    torch.testing.assert_close(-token_logprobs(x, w, targets, reduction="mean"), loss)
    per_token = token_logprobs(x.reshape(1, 23, 8), w, targets.reshape(1, 23))
    assert per_token.shape == (1, 23) and per_token.dtype == torch.float32


def test_model_forward_gives_per_token_logprobs_with_the_vocabulary_rule():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16))
    idx = torch.randint(0, 50, (2, 9))
    targets = torch.randint(0, 50, (2, 9))
    targets[0, :3] = -1
    out = model(idx, targets, reduction="none", vocab_limit=50)
    assert out.logits is None and out.loss is None and out.logprobs.shape == (2, 9)
    logp = torch.log_softmax(model(idx).logits[..., :50], dim=-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    torch.testing.assert_close(out.logprobs, torch.where(targets != -1, logp, 0.0), atol=1e-6, rtol=1e-5)
    mean = model(idx, targets)
    torch.testing.assert_close(mean.loss, -mean.logprobs)


def test_scores_equal_the_engines_logprobs_of_a_sampled_sequence():
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=128, block_size=64, n_layer=2, n_head=2, n_embd=32,
                          pos_encoding="rope", norm="rmsnorm", mlp="swiglu", bias=False)).eval()
    prompt = [5, 17, 3, 99, 42]
    completion = Engine(model, vocab_limit=100).generate([prompt], max_tokens=20, logprobs=True,
                                                          sampling=SamplingParams(temperature=1.3, seed=7))[0]
    ids = torch.tensor([prompt + completion.tokens])
    targets = torch.full_like(ids, -1)
    targets[0, len(prompt) - 1:-1] = ids[0, len(prompt):]  # position p predicts token p + 1
    with torch.no_grad():
        scored = model(ids, targets, reduction="none", vocab_limit=100).logprobs[0, len(prompt) - 1:-1]
    assert len(completion.tokens) == 20
    torch.testing.assert_close(scored, torch.tensor(completion.logprobs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_peak_memory_at_gpt2_vocabulary_is_far_below_the_full_logits(reduction):
    torch.manual_seed(0)
    n, c, v = 1024, 32, 50304  # the full logits alone: 206 MB
    x, w = torch.randn(n, c, requires_grad=True), torch.randn(v, c, requires_grad=True)
    targets = torch.randint(0, v, (n,))
    peaks = {}
    for name in ("full", "ours"):
        with LiveBytes() as mode:
            if name == "full":
                lp = torch.log_softmax(x @ w.t(), -1).gather(1, targets[:, None])[:, 0]
                lp = lp.mean() if reduction == "mean" else lp
            else:
                lp = token_logprobs(x, w, targets, reduction=reduction, chunk_rows=128)
            (lp if reduction == "mean" else lp.sigmoid().sum()).backward()
        peaks[name] = mode.peak
    assert peaks["full"] > 2 * n * v * 4  # logits and their gradient at least
    assert peaks["ours"] < peaks["full"] / 4, peaks


def test_bad_arguments_are_clear_errors():
    x, w, targets, _ = inputs()
    with pytest.raises(LanternError, match="reduction"):
        token_logprobs(x, w, targets, reduction="avg")
    with pytest.raises(LanternError, match="line up"):
        token_logprobs(x, w, targets[:5])
    with pytest.raises(LanternError, match="vocab_limit"):
        token_logprobs(x, w, targets.clamp(min=0) * 0 + 36, vocab_limit=30)
