"""View 11, reinforcement learning: what an ``rl`` run's rewards, held-out pass@k and answer
lengths did over the steps, and what changed in its answers.

- **Curves** from the run's ``metrics.jsonl`` (:mod:`lanternlm.train.rl` names them):
  the training reward (mean, ± std, per task) and verifier accuracy; held-out pass@1 and
  pass@k, starting at step 0 with the base model's (the run record's ``base_eval``);
  answer lengths (min, mean, max, thinking) and the share cut at the limit; the share of
  groups with no signal, the entropy, the sampling-vs-training log-prob difference.
- **RLHF** (judged by a reward model): the reward model's score beside the verifier's
  accuracy on the same axes of steps, training and held out: a score that rises while
  accuracy falls is reward hacking.
- **Before / after**: the parent's and this run's greedy answers to the same held-out
  questions (:func:`lanternlm.inspect.preference.before_after`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import LanternError
from ..run import Run
from ..train.metrics import read_metrics
from .common import output_path, pyplot, save

CURVES = ("reward_mean", "reward_std", "accuracy", "format_fraction", "no_signal_fraction", "length_min",
          "length_mean", "length_max", "thinking_mean", "cut_fraction", "entropy", "logprob_diff_max", "kl",
          "clip_low_fraction", "clip_high_fraction", "grad_norm", "val_pass1", "val_passk", "val_reward",
          "val_length_mean")


@dataclass
class RLView:
    run: str
    judge: str  # "tasks" (verifiers) or "reward_model"
    k: int  # answers per held-out question: pass@k
    curves: dict[str, list[tuple[int, float]]]  # name -> (step, value); held-out ones start at the base (step 0)
    tasks: dict[str, dict[str, list[tuple[int, float]]]]  # task -> {"reward_mean", "val_pass1", ...}
    answers: list[dict[str, Any]] = field(default_factory=list)  # before/after rows
    levels: list[str] = field(default_factory=list)


def rl_curves(run_dir: str | os.PathLike) -> tuple[dict, dict, dict[str, Any]]:
    """``(curves, per-task curves, record)`` of an rl run (module docstring)."""
    loaded = Run(run_dir)
    if loaded.stage != "rl":
        raise LanternError(f"{run_dir}: a run of stage {loaded.stage!r}; inspect rl reads rl runs (lantern rl)")
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise LanternError(f"{path}: no such file; has the run trained a step?")
    records, record = read_metrics(path), loaded.record
    start = {"step": 0, **record.get("base_eval", {})}
    held = [start] + [r for r in records if "val_pass1" in r]
    curves = {name: [(r["step"], r[name]) for r in (held if name.startswith("val_") else records) if name in r]
              for name in CURVES}
    tasks = {}
    for task in record.get("tasks", []):
        per = {name: [(r["step"], r[f"{name}_{task}"]) for r in (held if name.startswith("val_") else records)
                      if f"{name}_{task}" in r]
               for name in ("reward_mean", "accuracy", "val_pass1", "val_passk", "val_reward")}
        tasks[task] = {name: points for name, points in per.items() if points}
    return {name: points for name, points in curves.items() if points}, tasks, record


def rl_view(run: str | os.PathLike, tasks: Sequence[str] = (), levels: Sequence[str] = ("high",), n: int = 10,
            device: str | None = None) -> RLView:
    """The curves of ``run`` and, given ``tasks``, its answers beside its parent's."""
    from .preference import before_after

    curves, per_task, record = rl_curves(run)
    view = RLView(str(run), record.get("judge", "tasks"), int(record["config"].get("eval_samples", 1)), curves,
                  per_task, levels=list(levels))
    loaded = Run(run)
    parent = loaded.parent
    if tasks and parent is not None and parent.chat:
        view.answers = before_after(parent.engine(device), loaded.engine(device), loaded.tokenizer, tasks, levels, n)
    return view


def _row(name: str, points: list[tuple[int, float]]) -> str:
    shown = points if len(points) <= 6 else [points[0], *points[len(points) // 4::len(points) // 4][:4], points[-1]]
    return f"  {name:<19} " + "  ".join(f"{step}:{value:.3f}" for step, value in shown)


def render_rl(view: RLView, width: int = 38) -> str:
    from .preference import render_preference, PreferenceView

    judge = "the reward model" if view.judge == "reward_model" else "the verifiers"
    lines = [f"{view.run} (rl, judged by {judge}): over steps (held out from step 0, the base model; "
             f"pass@k with k={view.k})"]
    lines += [_row(name, points) for name, points in view.curves.items()]
    for task, curves in view.tasks.items():
        lines += [f"  {task}:"] + [_row("  " + name, points) for name, points in curves.items()]
    if "val_pass1" in view.curves and len(view.curves["val_pass1"]) >= 2:
        (_, p1_0), (_, p1) = view.curves["val_pass1"][0], view.curves["val_pass1"][-1]
        (_, pk_0), (_, pk) = view.curves["val_passk"][0], view.curves["val_passk"][-1]
        gap = pk_0 - p1_0
        closed = f", {(p1 - p1_0) / gap:.0%} of the pass@1 -> pass@{view.k} gap closed" if gap > 0 else ""
        lines.append(f"held out: pass@1 {p1_0:.1%} -> {p1:.1%}, pass@{view.k} {pk_0:.1%} -> {pk:.1%}{closed}")
    if view.answers:
        table = render_preference(PreferenceView(view.run, "rl", {}, view.answers, view.levels), width)
        lines += table.splitlines()[1:]
    return "\n".join(lines)


def plot_rl(view: RLView, path: str | os.PathLike) -> Path:
    """Four panels: training reward (± std) and accuracy; held-out pass@1 / pass@k; answer
    lengths and the share cut; for RLHF the reward model's score against verifier accuracy,
    else the share of groups with no signal and the entropy."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), dpi=110)
    (reward_ax, pass_ax), (length_ax, last_ax) = axes
    c = view.curves

    def line(ax, name, label, style="-", **kwargs):
        if name in c:
            steps, values = zip(*c[name])
            ax.plot(steps, values, style, label=label, **kwargs)

    if "reward_mean" in c:
        steps, mean = zip(*c["reward_mean"])
        std = [v for _, v in c.get("reward_std", [])] or [0.0] * len(mean)
        reward_ax.plot(steps, mean, label="reward (mean)")
        reward_ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                               alpha=0.2, label="± std")
    for task, curves in view.tasks.items():
        if "reward_mean" in curves and len(view.tasks) > 1:
            steps, values = zip(*curves["reward_mean"])
            reward_ax.plot(steps, values, lw=0.8, alpha=0.7, label=task)
    line(reward_ax, "accuracy", "verifier accuracy", "--")
    reward_ax.set_title("training rollouts: reward")
    line(pass_ax, "val_pass1", "pass@1", "o-")
    line(pass_ax, "val_passk", f"pass@{view.k}", "s-")
    for task, curves in view.tasks.items():
        if "val_pass1" in curves and len(view.tasks) > 1:
            steps, values = zip(*curves["val_pass1"])
            pass_ax.plot(steps, values, ":", lw=0.9, label=f"pass@1 {task}")
    pass_ax.set_ylim(-0.02, 1.02)
    pass_ax.set_title("held out (step 0: the base model)")
    for name, label in (("length_max", "max"), ("length_mean", "mean"), ("length_min", "min"),
                        ("thinking_mean", "thinking (mean)")):
        line(length_ax, name, label)
    length_ax.set_title("answer length (tokens)")
    if "cut_fraction" in c:
        cut_ax = length_ax.twinx()
        steps, values = zip(*c["cut_fraction"])
        cut_ax.plot(steps, values, color="grey", ls="--", label="cut at the limit (share)")
        cut_ax.set_ylim(0, 1.02)
        cut_ax.legend(loc="upper right")
    if view.judge == "reward_model":
        line(last_ax, "reward_mean", "reward-model score (training)")
        line(last_ax, "val_reward", "reward-model score (held out)", "o-")
        accuracy_ax = last_ax.twinx()
        line(accuracy_ax, "accuracy", "verifier accuracy (training)", "--", color="tab:red")
        line(accuracy_ax, "val_pass1", "verifier accuracy (held out)", "s--", color="tab:purple")
        accuracy_ax.set_ylim(-0.02, 1.02)
        accuracy_ax.legend(loc="lower right")
        last_ax.set_title("RLHF: reward-model score vs verifier accuracy")
    else:
        line(last_ax, "no_signal_fraction", "groups without signal (share)")
        line(last_ax, "format_fraction", "well-formed answers (share)")
        entropy_ax = last_ax.twinx()
        line(entropy_ax, "entropy", "entropy (nats)", "--", color="tab:red")
        entropy_ax.legend(loc="lower right")
        last_ax.set_ylim(-0.02, 1.02)
        last_ax.set_title("learning signal")
    for ax in (reward_ax, pass_ax, length_ax, last_ax):
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{Path(view.run).name}: rl")
    fig.tight_layout()
    return save(fig, path)


def rl_command(run: str, tasks: Sequence[str] = (), levels: Sequence[str] = ("high",), n: int = 10,
               out: str | None = None, device: str | None = None) -> str:
    """``lantern inspect rl``: the curves, the picture and the before/after table."""
    view = rl_view(run, tasks, levels, n, device)
    png = plot_rl(view, output_path(out or Path(run) / "inspect", "rl.png"))
    return render_rl(view) + f"\nwrote {png}"
