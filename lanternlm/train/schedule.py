"""Learning-rate schedules as pure functions of the step.

Both schedules warm up linearly from ``max_lr / warmup_steps`` to ``max_lr`` over
``warmup_steps`` steps, then:

- ``cosine``: follow half a cosine from ``max_lr`` down to ``min_lr`` at ``total_steps``;
- ``wsd`` (warmup-stable-decay): hold ``max_lr``, then in the last ``decay_fraction``
  of the steps go linearly down to ``min_lr``.

``total_steps`` may be a float: a run with a time budget estimates it as it goes.
"""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "wsd")


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warmup: 1/warmup at step 0, 1.0 from step ``warmup_steps - 1`` on.

    >>> [warmup_factor(s, 4) for s in range(5)]
    [0.25, 0.5, 0.75, 1.0, 1.0]
    >>> warmup_factor(0, 0)
    1.0
    """
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


def cosine_lr(step: int, *, max_lr: float, min_lr: float, warmup_steps: int, total_steps: float) -> float:
    """Warmup then cosine decay to ``min_lr`` at ``total_steps`` (held there after).

    >>> [round(cosine_lr(s, max_lr=1.0, min_lr=0.0, warmup_steps=2, total_steps=10), 4)
    ...  for s in (0, 1, 2, 6, 10, 12)]
    [0.5, 1.0, 1.0, 0.5, 0.0, 0.0]
    """
    if step < warmup_steps:
        return max_lr * warmup_factor(step, warmup_steps)
    span = max(1e-9, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def wsd_lr(step: int, *, max_lr: float, min_lr: float, warmup_steps: int, total_steps: float,
           decay_fraction: float) -> float:
    """Warmup, stable at ``max_lr``, then linear decay over the last ``decay_fraction``.

    >>> [round(wsd_lr(s, max_lr=1.0, min_lr=0.0, warmup_steps=2, total_steps=10,
    ...               decay_fraction=0.4), 4) for s in (0, 1, 5, 6, 8, 10)]
    [0.5, 1.0, 1.0, 1.0, 0.5, 0.0]
    """
    if step < warmup_steps:
        return max_lr * warmup_factor(step, warmup_steps)
    decay_start = total_steps * (1.0 - decay_fraction)
    if step <= decay_start:
        return max_lr
    progress = min(1.0, (step - decay_start) / max(1e-9, total_steps - decay_start))
    return max_lr + (min_lr - max_lr) * progress


def lr_at(name: str, step: int, *, max_lr: float, min_lr: float, warmup_steps: int,
          total_steps: float, decay_fraction: float = 0.2) -> float:
    """The learning rate of schedule ``name`` (one of :data:`SCHEDULES`) at ``step``.

    >>> lr_at("cosine", 0, max_lr=1.0, min_lr=0.1, warmup_steps=0, total_steps=100)
    1.0
    """
    if name == "cosine":
        return cosine_lr(step, max_lr=max_lr, min_lr=min_lr, warmup_steps=warmup_steps,
                         total_steps=total_steps)
    if name == "wsd":
        return wsd_lr(step, max_lr=max_lr, min_lr=min_lr, warmup_steps=warmup_steps,
                      total_steps=total_steps, decay_fraction=decay_fraction)
    raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")
