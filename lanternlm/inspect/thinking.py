"""View 8, thinking: accuracy and mean thinking length per reasoning level, on a task.

Only a chat model knows the conversation format and the thinking markers, so the view
refuses other runs (:attr:`lanternlm.run.Run.chat`). The numbers are ``lantern eval``'s:
held-out task questions at each level (``none`` = no thinking, then low / medium /
high), answered greedily by the engine and graded by the task
(:func:`lanternlm.evaluate.evaluate_tasks`), so the two commands always agree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..chat import REASONING_LEVELS
from ..errors import LanternError
from ..run import CHAT_STAGES, Run
from .common import output_path, pyplot, save


@dataclass
class LevelResult:
    level: str
    examples: int
    correct: int
    accuracy: float
    mean_thinking_tokens: float


@dataclass
class ThinkingView:
    task: str
    results: list[LevelResult]


def thinking_view(engine, tokenizer, task: str, n: int = 20, levels: Sequence[str] = REASONING_LEVELS,
                  max_tokens: int = 320, seed: int = 0) -> ThinkingView:
    """Answer ``n`` held-out questions of ``task`` at each level; score and measure thinking."""
    from ..evaluate import evaluate_tasks

    rows = evaluate_tasks(engine, tokenizer, [task], levels, n, seed=seed, max_tokens=max_tokens)
    return ThinkingView(task, [LevelResult(r["level"], r["examples"], r["correct"], r["accuracy"],
                                           r["mean_thinking_tokens"]) for r in rows])


def render_thinking(view: ThinkingView) -> str:
    lines = [f"task {view.task}: accuracy and thinking length per reasoning level",
             f"{'level':<8}  {'correct':>9}  {'accuracy':>8}  {'thinking tokens':>15}"]
    lines += [f"{r.level:<8}  {f'{r.correct}/{r.examples}':>9}  {r.accuracy:>8.0%}  "
              f"{r.mean_thinking_tokens:>15.1f}" for r in view.results]
    return "\n".join(lines)


def plot_thinking(view: ThinkingView, path: str | os.PathLike) -> Path:
    """Accuracy bars (left axis) and mean thinking length (right axis) per level."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    x = range(len(view.results))
    ax.bar(x, [r.accuracy for r in view.results], color="tab:blue", width=0.6, label="accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy", color="tab:blue")
    ax.set_xticks(list(x), [r.level for r in view.results])
    ax.set_xlabel("reasoning level")
    twin = ax.twinx()
    twin.plot(list(x), [r.mean_thinking_tokens for r in view.results], "o-", color="tab:orange")
    twin.set_ylabel("mean thinking length (tokens)", color="tab:orange")
    twin.set_ylim(bottom=0)
    ax.set_title(f"{view.task}: does thinking longer help?")
    return save(fig, path)


def thinking_command(run: str, task: str, n: int = 20, max_tokens: int = 320, out: str | None = None,
                     device: str | None = None) -> str:
    """``lantern inspect thinking``: needs a chat model (a stage of :data:`CHAT_STAGES`)."""
    loaded = Run(run)
    if not loaded.chat:
        raise LanternError(f"{run}: inspect thinking needs a chat model (stage {' / '.join(CHAT_STAGES)}, "
                           f"made by chat fine-tuning); this run is a {loaded.stage or 'bare'} model, which "
                           "has never seen the thinking markers")
    view = thinking_view(loaded.engine(device), loaded.tokenizer, task, n, max_tokens=max_tokens)
    png = plot_thinking(view, output_path(out or Path(run) / "inspect", "thinking.png"))
    return render_thinking(view) + f"\nwrote {png}"
