"""A fine-tuning mixture: tasks x reasoning levels, shuffled, as chat conversations."""

from __future__ import annotations

import random
from typing import Sequence

from ..chat import REASONING_LEVELS
from ..errors import LanternError
from .base import Task
from .registry import TASKS


def get_task(name_or_task: str | Task) -> Task:
    """A task by name (from :data:`TASKS`), or the task itself."""
    if isinstance(name_or_task, Task):
        return name_or_task
    if name_or_task not in TASKS:
        raise LanternError(f"unknown task {name_or_task!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name_or_task]


def make_sft_mixture(tasks: Sequence[str | Task], n_per_task: int,
                     levels: Sequence[str] = REASONING_LEVELS, seed: int = 0,
                     multi_turn: float = 0.1) -> list[list[dict]]:
    """``n_per_task`` training examples of each task, levels spread evenly, shuffled.

    Each example gets one level (``levels`` taken in turn, so each level gets an equal
    share of every task). A ``multi_turn`` share of the conversations is joined with
    the next one into a two-exchange chat, so the model also sees history (whose
    thinking :func:`lanternlm.chat.render` drops). The same arguments give the same
    list.
    """
    bad = [level for level in levels if level not in REASONING_LEVELS]
    if bad or not levels:
        raise LanternError(f"unknown reasoning levels {bad}; use some of {REASONING_LEVELS}")
    if not 0.0 <= multi_turn <= 1.0:
        raise LanternError(f"multi_turn must be a share between 0 and 1, got {multi_turn}")
    rng = random.Random(seed)
    singles = []
    for task in map(get_task, tasks):
        examples = task.generate(n_per_task, seed=seed, split="train")
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
