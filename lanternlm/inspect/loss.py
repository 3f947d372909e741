"""View 6, loss: per-step training loss (noisy), its smoothed curve, validation points,
several runs overlaid, and where a plateau rule would have stopped each run.

Reads each run's ``metrics.jsonl``; smoothing is the training plots' bias-corrected EMA
(:func:`lanternlm.train.plots.ema_smooth`) and the plateau rule is the training loop's
(:class:`lanternlm.train.metrics.Plateau`), replayed over the validation losses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import LanternError
from ..train.metrics import Plateau, read_metrics
from ..train.plots import ema_smooth
from .common import output_path, pyplot, save


def plateau_step(val_steps: Sequence[int], val_losses: Sequence[float], patience: int,
                 min_delta: float = 0.0) -> int | None:
    """The step at which :class:`Plateau` would stop, or None if it never fires.

    >>> plateau_step([100, 200, 300, 400], [3.0, 2.5, 2.6, 2.55], patience=2)
    400
    >>> plateau_step([100, 200], [3.0, 2.5], patience=2) is None
    True
    """
    rule = Plateau(patience, min_delta)
    for step, loss in zip(val_steps, val_losses):
        if rule.update(loss):
            return step
    return None


@dataclass
class RunCurves:
    name: str
    steps: list[int]
    train: list[float]
    smoothed: list[float]
    val_steps: list[int]
    val: list[float]
    plateau: int | None  # step where the plateau rule stops, if it fires
    best_val: float | None


def run_curves(records: Sequence[dict], name: str, alpha: float = 0.9, patience: int = 3,
               min_delta: float = 0.0) -> RunCurves:
    """The curves of one run's metrics records."""
    train = [(r["step"], r["train_loss"]) for r in records if r.get("train_loss") is not None]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    steps, losses = (list(x) for x in zip(*train)) if train else ([], [])
    vsteps, vlosses = (list(x) for x in zip(*val)) if val else ([], [])
    return RunCurves(name, steps, losses, ema_smooth(losses, alpha), vsteps, vlosses,
                     plateau_step(vsteps, vlosses, patience, min_delta), min(vlosses) if vlosses else None)


def loss_curves(runs: Sequence[str | os.PathLike], alpha: float = 0.9, patience: int = 3,
                min_delta: float = 0.0) -> list[RunCurves]:
    """The curves of each run directory (its ``metrics.jsonl``)."""
    if not runs:
        raise LanternError("give at least one run directory")
    curves = []
    for run in runs:
        path = Path(run) / "metrics.jsonl"
        records = read_metrics(path)
        if not records:
            raise LanternError(f"{path}: no metrics (is {run} a training run directory?)")
        curves.append(run_curves(records, Path(run).resolve().name, alpha, patience, min_delta))
    return curves


def render_loss(curves: Sequence[RunCurves], patience: int = 3) -> str:
    """One line per run: steps, last and smoothed train loss, best validation, plateau step."""
    width = max(3, *(len(c.name) for c in curves))
    lines = [f"{'run':<{width}}  {'steps':>6}  {'train':>7}  {'smoothed':>8}  {'best val':>8}  "
             f"plateau (patience {patience})"]
    for c in curves:
        best = f"{c.best_val:.4f}" if c.best_val is not None else "-"
        stop = f"would stop at step {c.plateau}" if c.plateau is not None else "never fires"
        lines.append(f"{c.name:<{width}}  {(c.steps or [0])[-1]:>6}  {(c.train or [float('nan')])[-1]:>7.4f}  "
                     f"{(c.smoothed or [float('nan')])[-1]:>8.4f}  {best:>8}  {stop}")
    return "\n".join(lines)


def plot_loss_curves(curves: Sequence[RunCurves], path: str | os.PathLike, patience: int = 3) -> Path:
    """Every run in its colour: raw (faint), smoothed (solid), validation (dots), plateau (dashed line)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    for k, c in enumerate(curves):
        colour = f"C{k % 10}"
        ax.plot(c.steps, c.train, color=colour, alpha=0.25, linewidth=0.8)
        ax.plot(c.steps, c.smoothed, color=colour, linewidth=1.8, label=f"{c.name}: train (smoothed)")
        if c.val:
            ax.plot(c.val_steps, c.val, "o--", color=colour, markersize=4, linewidth=1,
                    label=f"{c.name}: validation")
        if c.plateau is not None:
            ax.axvline(c.plateau, color=colour, linestyle=":", linewidth=1.5,
                       label=f"{c.name}: plateau stop (patience {patience})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title("training loss (faint: per step; solid: smoothed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def loss_command(runs: Sequence[str], alpha: float = 0.9, patience: int = 3, min_delta: float = 0.0,
                 out: str | None = None) -> str:
    """``lantern inspect loss``: the table; writes ``loss_curves.png``."""
    curves = loss_curves(runs, alpha, patience, min_delta)
    png = plot_loss_curves(curves, output_path(out or Path(runs[0]) / "inspect", "loss_curves.png"), patience)
    return render_loss(curves, patience) + f"\nwrote {png}"
