"""View 10, preference tuning: what DPO (or a reward model) learned, step by step, and what
changed in the answers.

- **Curves** from the run's ``metrics.jsonl``: the margin between the chosen and the
  rejected answer and the share of pairs ranked the right way round, in training and on
  the held-out pairs, and (DPO) the chosen answers' log-probability, which should not fall
  far below where it started.
- **Before / after** (DPO and other chat stages): the same held-out task questions answered
  greedily by the parent run and by this run, side by side, graded by the task
  (:func:`lanternlm.evaluate.evaluate_tasks`, the numbers of ``lantern eval``), with the
  share of answers that changed.
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

CURVES = ("margins", "accuracies", "logps_chosen", "val_margin", "val_accuracy", "val_logps_chosen")


@dataclass
class PreferenceView:
    run: str
    stage: str
    curves: dict[str, list[tuple[int, float]]]  # name -> (step, value), of CURVES present
    answers: list[dict[str, Any]] = field(default_factory=list)  # before/after rows
    levels: list[str] = field(default_factory=list)


def preference_curves(run_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """The preference metrics over steps (the names of :data:`CURVES` the run logged)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise LanternError(f"{path}: no such file; is {run_dir} a dpo or reward run?")
    records = read_metrics(path)
    curves = {name: [(r["step"], r[name]) for r in records if name in r] for name in CURVES}
    return {name: points for name, points in curves.items() if points}


def before_after(before, after, tokenizer, tasks: Sequence[str], levels: Sequence[str], n: int,
                 max_tokens: int = 320) -> list[dict[str, Any]]:
    """Greedy answers of two engines to the same ``n`` held-out questions per task and level:
    one row per question with ``task, level, question, expected, before, after`` (answer
    texts) and ``before_correct, after_correct``."""
    from ..evaluate import evaluate_tasks

    runs = [evaluate_tasks(engine, tokenizer, tasks, levels, n, max_tokens=max_tokens, keep_examples=n)
            for engine in (before, after)]
    rows = []
    for old, new in zip(*runs):
        for a, b in zip(old["samples"], new["samples"]):
            rows.append({"task": old["task"], "level": old["level"], "question": a["question"],
                         "expected": a["expected"], "before": a["answer"], "after": b["answer"],
                         "before_correct": a["correct"], "after_correct": b["correct"]})
    return rows


def preference_view(run: str | os.PathLike, tasks: Sequence[str] = (), levels: Sequence[str] = ("high",),
                    n: int = 10, device: str | None = None) -> PreferenceView:
    """Curves of ``run`` and, for a chat run with a chat parent and ``tasks``, its answers
    beside its parent's."""
    loaded = Run(run)
    if loaded.stage not in ("dpo", "reward", "rl"):
        raise LanternError(f"{run}: a run of stage {loaded.stage!r}; inspect preference reads dpo, reward "
                           f"and rl runs")
    view = PreferenceView(str(run), loaded.stage, preference_curves(run), levels=list(levels))
    parent = loaded.parent
    if tasks and loaded.chat and parent is not None and parent.chat:
        view.answers = before_after(parent.engine(device), loaded.engine(device), loaded.tokenizer, tasks,
                                    levels, n)
    return view


def changed_share(rows: Sequence[dict]) -> float:
    """The share of questions whose answer text changed.

    >>> changed_share([{"before": "3", "after": "3"}, {"before": "3", "after": "4"}])
    0.5
    """
    return sum(r["before"] != r["after"] for r in rows) / max(1, len(rows))


def render_preference(view: PreferenceView, width: int = 38) -> str:
    lines = [f"{view.run} ({view.stage}): preference metrics over steps"]
    for name, points in view.curves.items():
        shown = points if len(points) <= 6 else [points[0], *points[len(points) // 4::len(points) // 4][:4], points[-1]]
        lines.append(f"  {name:<17} " + "  ".join(f"{step}:{value:+.3f}" for step, value in shown))
    if view.answers:
        rows = view.answers
        before = sum(r["before_correct"] for r in rows) / len(rows)
        after = sum(r["after_correct"] for r in rows) / len(rows)
        lines += ["", f"held-out answers, parent -> this run (greedy, levels {', '.join(view.levels)}): "
                      f"accuracy {before:.0%} -> {after:.0%}, {changed_share(rows):.0%} of the answers changed",
                  f"  {'task':<10} {'level':<6} {'expected':<10} {'before':<{width}} {'after':<{width}}"]
        for r in rows:
            def cell(text: str, ok: bool) -> str:
                text = ("✓ " if ok else "✗ ") + " ".join(text.split())
                return text if len(text) <= width else text[:width - 1] + "…"
            lines.append(f"  {r['task']:<10} {r['level']:<6} {str(r['expected'])[:10]:<10} "
                         f"{cell(r['before'], r['before_correct']):<{width}} {cell(r['after'], r['after_correct'])}")
    return "\n".join(lines)


def plot_preference(view: PreferenceView, path: str | os.PathLike) -> Path:
    """Margins (left) and the share of pairs ranked right (right), training and held out."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for ax, (train, val, label) in ((left, ("margins", "val_margin", "margin (chosen - rejected)")),
                                    (right, ("accuracies", "val_accuracy", "pairs ranked right"))):
        for name, style, legend in ((train, "-", "training"), (val, "o-", "held out")):
            if name in view.curves:
                steps, values = zip(*view.curves[name])
                ax.plot(steps, values, style, label=legend, alpha=0.8 if style == "-" else 1.0)
        ax.set_xlabel("step")
        ax.set_title(label)
        ax.legend()
    right.axhline(0.5, color="grey", lw=0.8, ls="--")
    right.set_ylim(0, 1.02)
    fig.suptitle(f"{Path(view.run).name}: {view.stage}")
    return save(fig, path)


def preference_command(run: str, tasks: Sequence[str] = (), levels: Sequence[str] = ("high",), n: int = 10,
                       out: str | None = None, device: str | None = None) -> str:
    """``lantern inspect preference``: the curves, the picture and the before/after table."""
    view = preference_view(run, tasks, levels, n, device)
    png = plot_preference(view, output_path(out or Path(run) / "inspect", "preference.png"))
    return render_preference(view) + f"\nwrote {png}"
