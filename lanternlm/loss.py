"""Scoring: the log-probability of given target tokens, straight from the hidden states.

Every loss and score in lanternlm is built on :func:`token_logprobs`: the training loss of
pretraining and fine-tuning (``-mean``), validation loss and bits per byte (``none``,
weighted by bytes), and the sequence scores preference tuning and RL need (``none``,
summed per row). One function, so a number computed in training and the same number
computed at evaluation can never drift apart.

For position i with hidden state ``h_i`` (the model's last normed layer) and target
``t_i``::

    logits_i = h_i @ weight.T                       (the output head; ids >= vocab_limit left out)
    logprob_i = logits_i[t_i] - logsumexp(logits_i)

Nothing of size (positions x vocabulary) is ever kept: rows go through in chunks of at
most :data:`LOSS_CHUNK_BYTES` of fp32 logits (GPT-2's 50,304-entry vocabulary at batch
32 x 1024 would need 6.6 GB at once). Gradients come two ways:

- ``reduction="mean"`` or ``"sum"`` (a training loss): the result is linear in the
  per-token values, so its gradient with respect to each chunk's logits is known in the
  forward pass (``(onehot - softmax) * weight_of_row``). Each chunk turns in place into
  that gradient and gives dhidden and dweight by two matmuls on the spot; backward only
  scales them by the incoming scalar. No logits, log-softmax or logits-gradient tensor is
  stored, and the passes separate kernels would make over them are saved (5-10% of a small
  model's training step on CPU, ``bench/RESULTS.md``).
- ``reduction="none"`` (per-token values for a loss that is *not* linear in them, such as
  DPO's sigmoid of a difference of sums): the forward keeps only each row's logsumexp;
  backward recomputes each chunk's logits and applies the incoming per-token gradient.

Targets equal to -1 (padding, prompt tokens) and positions where ``mask`` is 0 count
for nothing: their log-probability is 0 and they are left out of ``mean``'s count. The
reduced losses do not even compute their logits: only the counted rows go through the
head (fine-tuning trains ~80 % of a row's positions; DPO and RL fewer).
"""

from __future__ import annotations

import torch

from .errors import LanternError

# fp32 logits held at once. Smaller chunks are slower: on CPU, chunks under ~512 rows cost
# up to 2x in the head's matmuls (measured at vocabulary 4,096 and 50,304).
LOSS_CHUNK_BYTES = 512 << 20

REDUCTIONS = ("none", "sum", "mean")


def token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                   mask: torch.Tensor | None = None, reduction: str = "none",
                   vocab_limit: int | None = None, chunk_rows: int | None = None) -> torch.Tensor:
    """Log-probabilities (nats, fp32) of ``targets`` under the logits ``hidden @ weight.T``.

    hidden (..., C), weight (V, C), targets (...) with -1 = no target, mask (...) 0/1 or
    bool (optional). ``vocab_limit``: only ids below it are tokens (the rule the engine
    samples by, :attr:`lanternlm.engine.Engine.vocab_limit`); the others are left out of
    the normalisation. ``reduction``: ``"none"`` gives a tensor shaped like ``targets``
    (0 where not counted), ``"sum"`` its sum, ``"mean"`` the mean over counted positions.
    The training loss is ``-token_logprobs(..., reduction="mean")``.

    >>> hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> weight = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]])  # logits of row 0: [2, 0, 0]
    >>> token_logprobs(hidden, weight, torch.tensor([0, -1])).round(decimals=4)  # [2 - log(e^2 + 2), 0]
    tensor([-0.2395,  0.0000])
    >>> round(token_logprobs(hidden, weight, torch.tensor([0, 1]), vocab_limit=2, reduction="mean").item(), 4)
    -0.1269
    """
    if reduction not in REDUCTIONS:
        raise LanternError(f"token_logprobs: reduction={reduction!r}; choose one of {REDUCTIONS}")
    if hidden.shape[:-1] != targets.shape or (mask is not None and mask.shape != targets.shape):
        raise LanternError(f"token_logprobs: hidden {tuple(hidden.shape)}, targets {tuple(targets.shape)} "
                           f"and mask {None if mask is None else tuple(mask.shape)} do not line up")
    if vocab_limit is not None:
        if not 0 < vocab_limit <= weight.shape[0]:
            raise LanternError(f"token_logprobs: vocab_limit={vocab_limit} must be in 1..{weight.shape[0]}")
        weight = weight[:vocab_limit]  # (limit, C): the ids past the limit are not tokens
        if bool((targets >= vocab_limit).any()):
            raise LanternError(f"token_logprobs: a target id is >= vocab_limit={vocab_limit}")
    shape = targets.shape
    x, targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)  # (N, C), (N,)
    keep = targets != -1
    if mask is not None:
        keep = keep & mask.reshape(-1).bool()
    if chunk_rows is None:
        chunk_rows = max(1, LOSS_CHUNK_BYTES // (4 * weight.shape[0]))
    grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if reduction == "none":
        if grad:
            values = _PerToken.apply(x, weight, targets, keep, chunk_rows)
        else:
            values = _chunked(x, weight, targets, keep, chunk_rows)[0]
        return values.reshape(shape)
    scale = keep.to(torch.float32)
    if reduction == "mean":
        scale = scale / keep.sum().clamp(min=1)
    if keep.device.type != "meta" and not bool(keep.all()):  # rows that count for nothing need no logits
        x, targets, keep, scale = x[keep], targets[keep], keep[keep], scale[keep]
    if grad:
        return _Reduced.apply(x, weight, targets, keep, scale, chunk_rows)
    return _chunked(x, weight, targets, keep, chunk_rows, scale=scale)[0]


@torch.no_grad()
def token_entropy(hidden: torch.Tensor, weight: torch.Tensor, *, vocab_limit: int | None = None,
                  chunk_rows: int | None = None) -> torch.Tensor:
    """The entropy (nats, fp32) of each position's next-token distribution ``softmax(hidden @
    weight.T)``, ids at and past ``vocab_limit`` left out as in :func:`token_logprobs`;
    shaped like ``hidden`` without its last axis. Chunked the same way, no gradient (a
    statistic to log: RL watches the policy's entropy collapse).

    >>> hidden = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    >>> weight = torch.tensor([[9.0, 0.0], [0.0, 0.0], [0.0, 0.0]])  # row 0: uniform over 3; row 1: peaked
    >>> token_entropy(hidden, weight).round(decimals=4)  # ln 3, then almost 0
    tensor([1.0986, 0.0025])
    >>> token_entropy(hidden, weight, vocab_limit=2).round(decimals=4)  # ln 2
    tensor([0.6931, 0.0012])
    """
    if vocab_limit is not None:
        weight = weight[:vocab_limit]  # (limit, C)
    x = hidden.reshape(-1, hidden.shape[-1])  # (N, C)
    if chunk_rows is None:
        chunk_rows = max(1, LOSS_CHUNK_BYTES // (4 * weight.shape[0]))
    out = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    for start in range(0, x.shape[0], chunk_rows):
        logits = (x[start:start + chunk_rows] @ weight.t()).float()  # (n, V)
        logp = torch.log_softmax(logits, dim=-1)
        out[start:start + chunk_rows] = -(logp.exp() * logp).sum(-1)
    return out.reshape(hidden.shape[:-1])


def _chunked(x, weight, targets, keep, chunk_rows: int, scale=None, with_grad: bool = False):
    """One pass over the chunks of rows.

    Without ``scale``: ``(logprobs (N,), logsumexp (N,))``. With ``scale`` (N,): the
    scaled sum ``sum(scale * logprob)`` and, ``with_grad``, that sum's gradients with
    respect to ``x`` and ``weight`` (else None).
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    safe = targets.clamp(min=0)
    reduced = scale is not None
    total = torch.zeros((), dtype=dtype, device=x.device)
    values = None if reduced else torch.empty(x.shape[0], dtype=dtype, device=x.device)
    lses = None if reduced else torch.empty_like(values)
    dx = torch.empty_like(x) if with_grad else None
    dw = torch.zeros_like(weight, dtype=dtype) if with_grad else None
    x_, w_ = x.detach(), weight.detach()
    for start in range(0, x.shape[0], chunk_rows):
        rows = slice(start, start + chunk_rows)
        xc, tc = x_[rows], safe[rows]
        logits = xc @ w_.t()  # (n, V), then at least fp32 (also under autocast)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        picked = torch.arange(len(tc), device=x.device), tc
        target_logit = logits[picked]
        peak = logits.amax(dim=-1, keepdim=True)
        exp = logits.sub_(peak).exp_()  # in place: the chunk becomes exp(logit - max)
        norm = exp.sum(dim=-1, keepdim=True)
        lse = (peak + norm.log()).squeeze(-1)  # (n,)
        logprob = torch.where(keep[rows], target_logit - lse, 0.0)
        if not reduced:
            values[rows], lses[rows] = logprob, lse
            continue
        total += (logprob * scale[rows]).sum()
        if with_grad:  # d(sum scale * logprob)/dlogits = (onehot - softmax) * scale
            s = scale[rows].unsqueeze(-1)
            g = exp.mul_(-s / norm)
            g[picked] += s.squeeze(-1)
            g = g.to(weight.dtype)
            dx[rows] = g @ w_
            dw += g.t() @ xc
    if reduced:
        return total, dx, dw
    return values, lses


class _Reduced(torch.autograd.Function):
    """``sum(scale * logprob)`` whose forward already computed its gradients."""

    @staticmethod
    def forward(ctx, x, weight, targets, keep, scale, chunk_rows):
        total, dx, dw = _chunked(x, weight, targets, keep, chunk_rows, scale=scale, with_grad=True)
        ctx.save_for_backward(dx, dw.to(weight.dtype))
        return total

    @staticmethod
    def backward(ctx, grad_total):
        dx, dw = ctx.saved_tensors
        return dx * grad_total, dw * grad_total, None, None, None, None


class _PerToken(torch.autograd.Function):
    """Per-token log-probabilities; backward recomputes each chunk's logits."""

    @staticmethod
    def forward(ctx, x, weight, targets, keep, chunk_rows):
        values, lse = _chunked(x, weight, targets, keep, chunk_rows)
        ctx.save_for_backward(x, weight, targets, keep, lse)
        ctx.chunk_rows = chunk_rows
        return values

    @staticmethod
    def backward(ctx, grad_values):
        x, weight, targets, keep, lse = ctx.saved_tensors
        safe = targets.clamp(min=0)
        dx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        dw = torch.zeros_like(weight, dtype=lse.dtype) if ctx.needs_input_grad[1] else None
        g_rows = grad_values.to(lse.dtype) * keep  # (N,): nothing flows to uncounted positions
        for start in range(0, x.shape[0], ctx.chunk_rows):
            rows = slice(start, start + ctx.chunk_rows)
            xc = x[rows]
            logits = (xc @ weight.t()).to(lse.dtype)  # (n, V)
            s = g_rows[rows].unsqueeze(-1)
            g = logits.sub_(lse[rows].unsqueeze(-1)).exp_().mul_(-s)  # -softmax * grad
            g[torch.arange(len(xc), device=x.device), safe[rows]] += s.squeeze(-1)
            g = g.to(weight.dtype)
            if dx is not None:
                dx[rows] = g @ weight
            if dw is not None:
                dw += g.t() @ xc
        return dx, None if dw is None else dw.to(weight.dtype), None, None, None
