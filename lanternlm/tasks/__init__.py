"""Verifiable tasks: each generates examples, writes thinking traces, evaluates, rewards.

>>> from lanternlm.tasks import TASKS
>>> task = TASKS["letters"]
>>> example = task.generate(1, seed=0)[0]
>>> task.evaluate(example, f"There are {example.answer}.")
True

``TASKS`` maps names to ready-made instances; :func:`make_sft_mixture` turns a few
of them into chat conversations for supervised fine-tuning.
"""

from __future__ import annotations

from ..chat import write_jsonl
from .arithmetic import Arithmetic
from .base import SPLITS, THINKING_LEVELS, Example, Task, numbers_in, split_of
from .glue import Glue
from .letters import LetterCounting
from .mixture import get_task, make_sft_mixture, preview, task_counts, write_mixture
from .reverse import WordReversal
from .registry import TASKS

__all__ = ["Arithmetic", "Example", "Glue", "LetterCounting", "SPLITS", "TASKS", "THINKING_LEVELS",
           "Task", "WordReversal", "get_task", "make_sft_mixture", "numbers_in", "preview", "split_of",
           "task_counts", "write_jsonl", "write_mixture"]
