"""View 8, thinking: accuracy and mean thinking length per reasoning level, on a task.

Only a chat model knows the conversation format and the thinking markers, so the view
first checks that the run is one. **The marker** (agreed here, for the fine-tuning
stages to write): a run directory is a chat model when its ``config.json`` has a
top-level ``"stage"`` naming a chat stage (:data:`CHAT_STAGES`), e.g. what
``lanternlm.config.save(path, cfg, sources, stage="sft")`` writes. Pretraining runs
have no ``stage`` and are refused with a message saying a chat model is needed.

For each level (``none`` = no thinking, then low / medium / high), held-out task
questions are rendered with :func:`lanternlm.chat.render_for_generation`, answered by the
engine (greedy, stopping at ``<|end|>``), split by :func:`lanternlm.chat.parse_assistant`
and scored by the task's own :meth:`~lanternlm.tasks.base.Task.evaluate`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import LanternError
from .common import output_path, pyplot, save

CHAT_STAGES = ("sft", "dpo", "rl")
LEVELS = ("none", "low", "medium", "high")


def chat_stage(run: str | os.PathLike) -> str | None:
    """The chat stage recorded in ``run/config.json`` (see the module docstring), or None."""
    path = Path(run) / "config.json"
    if not path.is_file():
        return None
    try:
        stage = json.loads(path.read_text(encoding="utf-8")).get("stage")
    except (json.JSONDecodeError, AttributeError):
        raise LanternError(f"{path}: not a JSON object") from None
    return stage if stage in CHAT_STAGES else None


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


def thinking_view(engine, tokenizer, task: str, n: int = 20, levels: Sequence[str] = LEVELS,
                  max_tokens: int = 128, seed: int = 0) -> ThinkingView:
    """Answer ``n`` held-out questions of ``task`` at each level; score and measure thinking."""
    from ..chat import ChatTokens, parse_assistant, render_for_generation
    from ..sampling import SamplingParams
    from ..tasks.registry import TASKS

    if task not in TASKS:
        raise LanternError(f"--task {task!r}: choose one of {', '.join(TASKS)}")
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad:
        raise LanternError(f"reasoning levels {bad}: choose from {LEVELS}")
    examples = TASKS[task].generate(n, seed, split="test")
    tokens = ChatTokens.of(tokenizer)
    results = []
    for level in levels:
        prompts = [render_for_generation(TASKS[task].to_conversation(ex, level)[:-1], tokenizer, level)
                   for ex in examples]
        completions = engine.generate(prompts, max_tokens=max_tokens, sampling=SamplingParams(temperature=0.0),
                                      stop_tokens=[tokens.end], truncate="left")
        correct, thinking_tokens = 0, 0
        for ex, c in zip(examples, completions):
            ids = c.tokens + ([c.stop_token] if c.stop_token is not None else [])
            if level == "none":  # the prompt already closed the (empty) thinking segment
                ids = [tokens.think, tokens.end_think] + ids
            thinking, answer = parse_assistant(ids, tokenizer)
            thinking_tokens += len(tokenizer.encode(thinking)) if thinking else 0
            correct += TASKS[task].evaluate(ex, answer)
        results.append(LevelResult(level, len(examples), correct, correct / max(1, len(examples)),
                                   thinking_tokens / max(1, len(examples))))
    return ThinkingView(task, results)


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


def thinking_command(run: str, task: str, n: int = 20, max_tokens: int = 128, out: str | None = None,
                     device: str | None = None) -> str:
    """``lantern inspect thinking``: needs a chat model (see :data:`CHAT_STAGES`)."""
    from ..terminal import load_engine

    if chat_stage(run) is None:
        raise LanternError(f"{run}: inspect thinking needs a chat model (a run whose config.json has "
                           f"\"stage\" in {list(CHAT_STAGES)}, made by chat fine-tuning); this run is "
                           "a base model, which has never seen the thinking markers")
    engine, tokenizer = load_engine(run, device=device)
    view = thinking_view(engine, tokenizer, task, n, max_tokens=max_tokens)
    png = plot_thinking(view, output_path(out or Path(run) / "inspect", "thinking.png"))
    return render_thinking(view) + f"\nwrote {png}"
