"""Optimizers: AdamW for everything, or Muon for the hidden matrices + AdamW for the rest.

Parameter groups (nanoGPT's rule, plus Muon's):

- tensors with 2 or more dimensions (matrices, embeddings) get weight decay; vectors
  (norm gains, biases) do not;
- with ``name="muon"``, the 2-D weights *inside the blocks* are updated by Muon
  (momentum, then the update orthogonalised by a Newton-Schulz iteration); the
  token/position embeddings and the output head (any ``nn.Embedding``, and
  ``model.lm_head`` when the head is not tied) stay with AdamW, as Muon's authors
  recommend.

Muon is ``torch.optim.Muon`` when torch has it (2.9+); older torch gets
:class:`NewtonSchulzMuon`, the same algorithm written out below, and so does a model
sharded by FSDP2 (``--parallel fsdp``): it orthogonalises each matrix's whole update (an
all-gather of the update's shards) and keeps this process's rows, whatever the shapes
(``torch.optim.Muon`` leaves that to DTensor's sharding rules, which fail on a matrix with
fewer rows than processes, such as a reward head). Both keep the same state and group
fields, so either reads the other's checkpoints.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

OPTIMIZERS = ("adamw", "muon")


#: Keller Jordan's quintic coefficients (torch.optim.Muon's defaults).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def zeropower_newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7,
                            coefficients: tuple[float, float, float] = NS_COEFFICIENTS) -> torch.Tensor:
    """Approximately orthogonalise ``g`` (U S V^T -> about U V^T) by a quintic Newton-Schulz iteration.

    The coefficients (3.4445, -4.7750, 2.0315) are Keller Jordan's: they push singular
    values towards 1 fast, landing in roughly [0.7, 1.2] rather than exactly 1. Runs in
    bfloat16, as the reference does.
    """
    a, b, c = coefficients
    x = g.bfloat16()
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T  # (cols, rows): iterate on the wide side
    x = x / x.norm().clamp(min=eps)  # spectral norm <= Frobenius norm = 1
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b * gram + c * gram @ gram
        x = torch.addmm(x, poly, x, beta=a)  # a * x + poly @ x
    return x.T if tall else x


class NewtonSchulzMuon(torch.optim.Optimizer):
    """Muon for torch < 2.9, the same update as ``torch.optim.Muon`` with its defaults.

    Per 2-D parameter: momentum as an average ``m = lerp(m, g, 1 - momentum)``; with
    Nesterov the direction is ``lerp(g, m, momentum)``; it is orthogonalised, scaled by
    ``sqrt(max(1, rows / cols))``, and applied after decoupled weight decay
    ``p *= 1 - lr * weight_decay``. A parameter sharded by FSDP2 (a ``DTensor``) gets its
    rows of the update of the whole matrix. The groups hold ``torch.optim.Muon``'s fields
    (``ns_coefficients``, ``eps``, ``adjust_lr_fn``: only its default, ``None``, is done).
    """

    def __init__(self, params, lr: float = 0.02, weight_decay: float = 0.0, momentum: float = 0.95,
                 nesterov: bool = True, ns_steps: int = 5) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                      ns_coefficients=NS_COEFFICIENTS, eps=1e-7, ns_steps=ns_steps,
                                      adjust_lr_fn=None))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - group["momentum"])
                direction = p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                sharded = isinstance(direction, DTensor)
                update = zeropower_newton_schulz(direction.full_tensor() if sharded else direction,
                                                 group["ns_steps"], group["eps"], group["ns_coefficients"])
                if sharded:  # the same whole update on every process: keep this one's rows
                    update = distribute_tensor(update, p.device_mesh, p.placements, src_data_rank=None)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                scale = math.sqrt(max(1.0, p.size(0) / p.size(1)))
                p.add_(update, alpha=-group["lr"] * scale)


def _head_and_embedding_params(model: nn.Module) -> set[int]:
    """The ids of every ``nn.Embedding`` weight and of the output head ``model.lm_head``."""
    ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    if getattr(model, "lm_head", None) is not None:
        ids.add(id(model.lm_head.weight))
    return ids


def _adamw(groups: list[dict[str, Any]], lr: float, betas: tuple[float, float], fused: bool):
    if fused:
        try:
            return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
        except (RuntimeError, TypeError):  # this torch/device has no fused kernel
            pass
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


class Optimizers:
    """One or two torch optimizers stepped together, with the lr set as a factor of each group's base."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers
        for opt in optimizers:
            for group in opt.param_groups:
                group["base_lr"] = group["lr"]

    def set_lr_factor(self, factor: float) -> None:
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * factor

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def state_dict(self) -> list[dict[str, Any]]:
        return [opt.state_dict() for opt in self.optimizers]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        for opt, state in zip(self.optimizers, states, strict=True):
            opt.load_state_dict(state)


def build_optimizers(model: nn.Module, *, name: str, lr: float, muon_lr: float,
                     weight_decay: float, betas: tuple[float, float], fused: bool) -> Optimizers:
    """The optimizer(s) for ``model``: ``name`` is ``"adamw"`` or ``"muon"`` (see the module doc)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
    outer = _head_and_embedding_params(model)
    seen: set[int] = set()
    decay, no_decay, matrices = [], [], []
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if name == "muon" and p.dim() == 2 and id(p) not in outer:
            matrices.append(p)
        elif p.dim() >= 2:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    optimizers: list[torch.optim.Optimizer] = [_adamw(groups, lr, betas, fused)]
    if matrices:
        sharded = any(isinstance(p, DTensor) for p in matrices)
        muon_cls = NewtonSchulzMuon if sharded else getattr(torch.optim, "Muon", NewtonSchulzMuon)
        optimizers.append(muon_cls(matrices, lr=muon_lr, weight_decay=weight_decay, momentum=0.95))
    return Optimizers(optimizers)
