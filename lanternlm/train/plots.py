"""``loss.png``: the raw training loss, a smoothed curve and the validation points.

A leaf: only the training loop's end (and the CLI) import it, lazily, so nothing in
the core pulls in matplotlib. The smoothed curve is an exponential moving average
with bias correction (TensorBoard's smoothing): ``s_t = a s_{t-1} + (1 - a) x_t``,
divided by ``1 - a^t`` so that the first points are not dragged towards zero.
"""

from __future__ import annotations

import os
from typing import Any, Sequence


def ema_smooth(values: Sequence[float], alpha: float = 0.9) -> list[float]:
    """Bias-corrected exponential moving average of ``values``.

    >>> ema_smooth([1.0, 1.0, 1.0])
    [1.0, 1.0, 1.0]
    >>> [round(v, 4) for v in ema_smooth([0.0, 1.0], alpha=0.5)]
    [0.0, 0.6667]
    """
    out, avg = [], 0.0
    for t, x in enumerate(values, start=1):
        avg = alpha * avg + (1 - alpha) * x
        out.append(avg / (1 - alpha ** t))
    return out


def plot_loss(records: Sequence[dict[str, Any]], path: str | os.PathLike, *,
              title: str = "pretraining loss", alpha: float = 0.9) -> None:
    """Draw the curves of ``metrics.jsonl`` records into ``path`` (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["train_loss"]) for r in records if r.get("train_loss") is not None]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if train:
        steps, losses = zip(*train)
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="train (raw)")
        ax.plot(steps, ema_smooth(losses, alpha), color="tab:blue", linewidth=1.8,
                label=f"train (EMA, alpha={alpha})")
    if val:
        steps, losses = zip(*val)
        ax.plot(steps, losses, "o-", color="tab:orange", markersize=4, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
