"""The named tasks, ready to use: ``TASKS["letters"]``, ``TASKS["arithmetic"]``, ..."""

from __future__ import annotations

from .arithmetic import Arithmetic
from .base import Task
from .glue import Glue
from .letters import LetterCounting
from .reverse import WordReversal

TASKS: dict[str, Task] = {task.name: task for task in
                          (LetterCounting(), Arithmetic(), WordReversal(), Glue())}
