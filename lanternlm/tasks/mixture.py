"""A fine-tuning mixture (tasks x reasoning levels, as chat conversations), and previews."""

from __future__ import annotations

import os
import random
from typing import Sequence

from ..chat import REASONING_LEVELS, render, show, write_jsonl
from ..errors import LanternError
from ..log import logger
from .base import Task
from .registry import TASKS


def get_task(name_or_task: str | Task) -> Task:
    """A task by name (from :data:`TASKS`), by name with settings (``NAME:KEY=INT:KEY=INT``,
    passed to the task's constructor; no commas, so a spec fits a comma-separated
    ``--tasks`` list), or the task itself.

    >>> get_task("arithmetic:max_mul_digits=1").scope
    '+ and - up to 3 digits, * by up to 1 digit'
    """
    if isinstance(name_or_task, Task):
        return name_or_task
    name, _, settings = name_or_task.partition(":")
    if name not in TASKS:
        raise LanternError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    if not settings:
        return TASKS[name]
    values = {}
    for item in settings.split(":"):
        key, _, value = item.partition("=")
        if not value.strip().lstrip("-").isdigit():
            raise LanternError(f"task {name_or_task!r}: settings are KEY=INT, separated by ':'; got {item!r}")
        values[key.strip()] = int(value)
    try:
        task = type(TASKS[name])(**values)
    except TypeError as err:
        raise LanternError(f"task {name_or_task!r}: {err}") from None
    task.spec = name_or_task
    return task


def task_counts(tasks: Sequence[str | Task], n_per_task: int, weights: Sequence[float] = ()) -> list[int]:
    """Examples per task: ``n_per_task`` each, or ``round(n_per_task * weight)`` with weights.

    >>> task_counts(["letters", "glue"], 12000, [1, 1/3])
    [12000, 4000]
    >>> task_counts(["letters", "glue"], 10)
    [10, 10]
    """
    if not weights:
        return [n_per_task] * len(tasks)
    if len(weights) != len(tasks):
        raise LanternError(f"task weights: {len(weights)} given for {len(tasks)} tasks; give one per task, in order")
    if not all(0 < w < float("inf") for w in weights):
        raise LanternError(f"task weights must be finite and > 0, got {list(weights)}")
    return [max(1, round(n_per_task * w)) for w in weights]


def make_sft_mixture(tasks: Sequence[str | Task], n_per_task: int,
                     levels: Sequence[str] = REASONING_LEVELS, seed: int = 0,
                     multi_turn: float = 0.1, weights: Sequence[float] = ()) -> list[list[dict]]:
    """``n_per_task`` training examples of each task, levels spread evenly, shuffled.

    With ``weights`` (one per task, in order), task ``i`` gets ``round(n_per_task *
    weights[i])`` examples instead: a task the model learns quickly can take a smaller
    share (:func:`task_counts`). Each example gets one level (``levels`` taken in turn, so
    each level gets an equal share of every task). A ``multi_turn`` share of the
    conversations is joined with the next one into a two-exchange chat, so the model also
    sees history (whose thinking :func:`lanternlm.chat.render` drops). The same arguments
    give the same list.
    """
    bad = [level for level in levels if level not in REASONING_LEVELS]
    if bad or not levels:
        raise LanternError(f"unknown reasoning levels {bad}; use some of {REASONING_LEVELS}")
    if not 0.0 <= multi_turn <= 1.0:
        raise LanternError(f"multi_turn must be a share between 0 and 1, got {multi_turn}")
    rng = random.Random(seed)
    singles = []
    for task, count in zip(map(get_task, tasks), task_counts(tasks, n_per_task, weights)):
        examples = task.generate(count, seed=seed, split="train")
        for i, example in enumerate(examples):
            singles.append(task.to_conversation(example, levels[i % len(levels)]))
    rng.shuffle(singles)
    mixture, i = [], 0
    while i < len(singles):
        if i + 1 < len(singles) and rng.random() < multi_turn:
            first, second = singles[i], singles[i + 1]
            mixture.append([second[0], *first[1:], *second[1:]])  # the second one's system line
            i += 2
        else:
            mixture.append(singles[i])
            i += 1
    return mixture


def write_mixture(out: str | os.PathLike, tasks: Sequence[str | Task], n_per_task: int,
                  levels: Sequence[str] = REASONING_LEVELS, seed: int = 0,
                  multi_turn: float = 0.1) -> int:
    """Write :func:`make_sft_mixture` to ``out`` as chat JSONL; return the conversation count."""
    conversations = make_sft_mixture(tasks, n_per_task, levels, seed, multi_turn)
    write_jsonl(out, conversations)
    logger.info("wrote %d conversations (%d tasks x %d examples, levels %s) to %s",
                len(conversations), len(tasks), n_per_task, ",".join(levels), out)
    return len(conversations)


def preview(task: str | Task, n: int = 2, seed: int = 0, split: str = "train",
            reasoning: str = "high", tokenizer=None, color: bool = False) -> str:
    """Examples of a task as a person reads them.

    Without a tokenizer: question, thinking and answer as text. With one: the rendered
    conversation with its loss mask shown (:func:`lanternlm.chat.show`) and its length.
    """
    task = get_task(task)
    blocks = []
    for i, example in enumerate(task.generate(n, seed=seed, split=split)):
        messages = task.to_conversation(example, reasoning)
        head = f"--- {task.name} #{i + 1} ({split}, reasoning {reasoning}, answer {example.answer!r})"
        if tokenizer is not None:
            rendered = render(messages, tokenizer)
            body = f"{show(rendered, tokenizer, color=color)}\n[{len(rendered.ids)} tokens, " \
                   f"{sum(rendered.mask)} trained]"
        else:
            reply = messages[-1]
            thinking = f"thinking:\n{reply['thinking']}\n" if "thinking" in reply else ""
            body = f"user: {example.question}\n{thinking}assistant: {reply['content']}"
        blocks.append(f"{head}\n{body}")
    return "\n\n".join(blocks)
