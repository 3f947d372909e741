"""The GRPO objective as pure functions (Shao et al., 2024, "DeepSeekMath"), with the
choices later work made, each a switch here; the RL stage (:mod:`.rl`) calls them.

For a question, the policy writes G answers; answer i gets the reward r_i and the
**group-relative advantage** ``A_i = r_i - mean(r)`` (optionally divided by the group's
std): better than its siblings, pushed up; worse, pushed down; no critic network. Every
token t the model chose in answer i (prompt and forced tokens excluded) then adds

    ℓ_it = -min(ρ_it A_i, clip(ρ_it, 1 - ε_low, 1 + ε_high) A_i) + β KL_it,
    ρ_it = π(token | prefix) / π_old(token | prefix),

with π_old the policy that sampled the batch (PPO's clipped surrogate; ρ = 1 on-policy) and
KL_it the "k3" estimate of KL(π ‖ π_ref) to the reference model. The defaults, and why:

- **mean-centred, no std scaling** (``scale_std=False``, Liu et al., 2025, "Dr. GRPO"):
  dividing by the group's std up-weights questions whose answers barely differ (nearly
  all right or all wrong), a difficulty bias; centring alone keeps the gradient unbiased.
- **token-level aggregation** (``"token"``, Yu et al., 2025, "DAPO"): the step's loss is
  the mean over all its trained tokens, so every token weighs the same and a long answer's
  tokens are not diluted by its length; ``"sequence"`` is the original GRPO's mean per
  answer, then over answers.
- **ε_low = 0.2, ε_high = 0.28** (PPO's 0.2; DAPO's "clip-higher" lets an unlikely token's
  probability grow further, against entropy collapse). They only act when a batch is
  reused for several updates: for the first, ρ = 1.
- **β = 0** (no KL term, as DAPO and Dr. GRPO): a verifier cannot be exploited the way a
  learned reward can, and the penalty costs a reference model's forward pass and holds
  the policy near the SFT model. With a reward model as the judge, β > 0 is the classic
  guard against reward hacking (the stage also stops on falling held-out accuracy).
"""

from __future__ import annotations

import math

import torch

from ..errors import LanternError

AGGREGATIONS = ("token", "sequence")


def group_advantages(rewards: torch.Tensor, scale_std: bool = False, eps: float = 1e-4) -> torch.Tensor:
    """Advantages (Q, G) of rewards (Q, G), one row per question's group of G answers:
    ``r - mean(r)`` per row, divided by the row's (sample) std + ``eps`` with ``scale_std``.

    A worked example: a group rewarded [1, 0, 0, 1] (mean 0.5) and one all right:

    >>> rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    >>> group_advantages(rewards).tolist()
    [[0.5, -0.5, -0.5, 0.5], [0.0, 0.0, 0.0, 0.0]]

    With std scaling the first group's std is sqrt(1/3) = 0.577, so 0.5 becomes 0.866; the
    second keeps 0 (no spread, nothing to learn):

    >>> [round(a, 3) for a in group_advantages(rewards, scale_std=True)[0].tolist()]
    [0.866, -0.866, -0.866, 0.866]
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise LanternError(f"group_advantages: rewards must be (questions, G >= 2), got {tuple(rewards.shape)}")
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scale_std:
        centred = centred / (rewards.std(dim=1, keepdim=True) + eps)
    return centred


def no_signal(rewards: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """(Q,) True for a group whose rewards are all equal: every advantage 0, no gradient.

    >>> no_signal(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])).tolist()
    [False, True, True]
    """
    return (rewards.max(dim=1).values - rewards.min(dim=1).values) <= tol


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from the sampled token's log-probabilities,
    ``exp(d) - d - 1`` with ``d = ref_logp - logp`` (Schulman's "k3": unbiased, never
    negative, as in GRPO).

    The policy gives the token 1/2, the reference 1/4: d = ln 1/2, 0.5 + 0.693 - 1 = 0.193.

    >>> round(kl_k3(torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25))).item(), 4)
    0.1931
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def grpo_token_losses(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, *,
                      clip_low: float = 0.2, clip_high: float = 0.28, ref_logp: torch.Tensor | None = None,
                      beta: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token losses ℓ (B, T) (module docstring) from the policy's log-probabilities
    ``logp`` (B, T, with gradient), the sampling policy's ``old_logp`` (B, T) and each row's
    advantage (B,); and per-token 0/1 flags ``clip_low`` (ρ < 1 - ε_low with A < 0: held at
    the lower clip) and ``clip_high`` (ρ > 1 + ε_high with A > 0), plus ``kl`` with β > 0.
    The caller weighs the tokens (:func:`aggregation_weights`; padding, prompt and forced
    tokens weigh 0).

    A worked example, one answer with A = +1 and one with A = -1, two tokens each:

    - A = +1, ρ = 1: ℓ = -1 (on-policy, the gradient is -A ∇logp);
    - A = +1, ρ = 1.5 > 1.28: held at 1.28, ℓ = -1.28, no gradient;
    - A = -1, ρ = 0.5 < 0.8: held at 0.8, ℓ = 0.8, no gradient;
    - A = -1, ρ = 1.5: min(-1.5, -1.28) = -1.5, ℓ = 1.5: a step that made a bad token
      likelier is never clipped.

    >>> old = torch.zeros(2, 2)
    >>> logp = torch.log(torch.tensor([[1.0, 1.5], [0.5, 1.5]]))
    >>> losses, flags = grpo_token_losses(logp, old, torch.tensor([1.0, -1.0]))
    >>> [[round(v, 2) for v in row] for row in losses.tolist()]
    [[-1.0, -1.28], [0.8, 1.5]]
    >>> flags["clip_high"].tolist(), flags["clip_low"].tolist()
    ([[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]])
    """
    ratio = torch.exp(logp - old_logp)  # (B, T)
    a = advantages[:, None].to(ratio.dtype)  # (B, 1)
    surrogate = torch.min(ratio * a, ratio.clamp(1 - clip_low, 1 + clip_high) * a)
    losses = -surrogate
    flags = {"clip_low": ((ratio < 1 - clip_low) & (a < 0)).float().detach(),
             "clip_high": ((ratio > 1 + clip_high) & (a > 0)).float().detach()}
    if beta > 0:
        if ref_logp is None:
            raise LanternError("grpo_token_losses: beta > 0 needs the reference's log-probabilities")
        kl = kl_k3(logp, ref_logp)
        losses = losses + beta * kl
        flags["kl"] = kl.detach()
    return losses, flags


def aggregation_weights(trained: torch.Tensor, kind: str = "token") -> tuple[torch.Tensor, int]:
    """Each token's weight in a batch's summed loss (B, T), and what the sum counts.

    ``trained`` (B, T) marks the tokens in the gradient. ``"token"``: weight 1 each, the
    count is the trained tokens (the step's loss is their mean); ``"sequence"``: 1 / the
    answer's trained tokens, the count is the answers (the mean per answer, then over
    answers).

    >>> trained = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]]).bool()
    >>> w, n = aggregation_weights(trained)
    >>> w.tolist(), n
    ([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]], 5)
    >>> w, n = aggregation_weights(trained, "sequence")
    >>> w.tolist(), n
    ([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]], 2)
    """
    weights = trained.float()
    if kind == "token":
        return weights, int(trained.sum())
    if kind == "sequence":
        lengths = weights.sum(dim=1, keepdim=True)  # (B, 1)
        return weights / lengths.clamp(min=1), int((lengths > 0).sum())
    raise LanternError(f"aggregation {kind!r}: choose one of {AGGREGATIONS}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """The chance that at least one of k answers is right, estimated without bias from n
    samples of which c are right (Chen et al., 2021): ``1 - C(n - c, k) / C(n, k)``.
    pass@1 is c / n.

    >>> pass_at_k(8, 2, 1), pass_at_k(8, 0, 8), pass_at_k(8, 1, 8)
    (0.25, 0.0, 1.0)
    >>> round(pass_at_k(10, 2, 4), 4)  # 1 - C(8, 4) / C(10, 4) = 1 - 70/210
    0.6667
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise LanternError(f"pass_at_k: need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
