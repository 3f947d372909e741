"""What every task shares: the example record, the train/test split, answer parsing.

A task owns its data, its evaluation and its reward, so supervised fine-tuning,
evaluation and RL all read the same code: :meth:`Task.grade` takes the ids a model
wrote, splits them into thinking and answer with :func:`lanternlm.chat.split_reply` and
judges the answer. A subclass writes four things:

* :meth:`Task.sample` draws one example from a random generator;
* :meth:`Task.thinking` writes the thinking trace at a reasoning level;
* :meth:`Task.reply` writes the final answer as the assistant says it;
* :meth:`Task.parse` pulls the final answer out of a model's reply.

The split is a pure function of the example's ``key`` (the word, the sum, ...):
``split_of(task, key)`` hashes it, so a held-out key never appears in training,
whatever the seed and however many examples are drawn. A task may also hold out whole
keys (:attr:`Task.held_out`: the ordinary English words of the word tasks).
"""

from __future__ import annotations

import abc
import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..chat import REASONING_LEVELS, THINKING_LEVELS, ChatTokens, split_reply
from ..errors import LanternError

SPLITS = ("train", "test")
TEST_PERCENT = 10  # share of keys held out for evaluation
MAX_MISSES = 20_000  # draws without a new example before generate() gives up


@dataclass(frozen=True)
class Example:
    """One task instance.

    ``key`` decides the split; ``question`` is the user's message; ``answer`` is the
    canonical final answer (``"3"``, ``"579"``, ``"nretnal"``) that :meth:`Task.evaluate`
    compares against; ``fields`` holds what the traces need (the word, the operands...).
    """

    task: str
    key: str
    question: str
    answer: str
    fields: dict[str, Any] = field(default_factory=dict, compare=False)


def split_of(task: str, key: str) -> str:
    """``"test"`` for about :data:`TEST_PERCENT` % of keys, ``"train"`` for the rest.

    >>> split_of("letters", "python")
    'train'
    >>> split_of("letters", "python") == split_of("letters", "python")
    True
    """
    digest = hashlib.sha256(f"{task}\0{key}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % 100 < TEST_PERCENT else "train"


_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"no": 0, "none": 0, "once": 1, "twice": 2})
_NUMBER = re.compile(r"(?<![\w.])[-\u2212]?\d[\d,]*(?:\.\d+)?(?![\w])|\b[a-z]+\b", re.IGNORECASE)


def numbers_in(text: str) -> list[int]:
    """The whole numbers written in ``text``, in order (digits or words up to twenty).

    Commas group thousands, a leading ``-`` (or the Unicode minus) negates, and
    decimals that are not whole are skipped.

    >>> numbers_in("There are three r's, and 1,234 - -5 = 1239.")
    [3, 1234, -5, 1239]
    >>> numbers_in("no q's in 'queue'? twice: 2.0 and 2.5")
    [0, 2, 2]
    """
    found = []
    for match in _NUMBER.finditer(text):
        token = match.group(0)
        if token[0].isalpha():
            if token.lower() in _NUMBER_WORDS:
                found.append(_NUMBER_WORDS[token.lower()])
            continue
        token = token.replace(",", "").replace("\u2212", "-")
        value = float(token) if "." in token else int(token)
        if value == int(value):
            found.append(int(value))
    return found


_QUOTED = re.compile(r"\"([^\"]*)\"|(?<![A-Za-z])'([^']*)'(?![A-Za-z])|`([^`]*)`|\*\*([^*]*)\*\*")


def quoted_in(text: str) -> list[str]:
    """The strings quoted in ``text`` ("", '', `` or **bold**), in order.

    >>> quoted_in('''The letter 'r' appears 3 times in "strawberry", **3**.''')
    ['r', 'strawberry', '3']
    """
    return [next(g for g in m.groups() if g is not None) for m in _QUOTED.finditer(text)]


@dataclass(frozen=True)
class Graded:
    """A model's reply to an example: its thinking ids, its answer text, and the verdict."""

    thinking: list[int]
    answer: str
    correct: bool


class Task(abc.ABC):
    """A verifiable task: generate examples, write traces, check answers, give rewards."""

    name: str = ""
    description: str = ""
    held_out: frozenset[str] = frozenset()  # keys that are always "test"
    spec: str = ""  # how get_task() was asked for this instance ("arithmetic:max_mul_digits=1"), "" = the default

    @property
    def scope(self) -> str:
        """The range of the questions, where a task has settings ("" otherwise)."""
        return ""

    # ------------------------------------------------------------------ to write per task

    @abc.abstractmethod
    def sample(self, rng: random.Random) -> Example:
        """Draw one example (of either split; :meth:`generate` filters)."""

    @abc.abstractmethod
    def thinking(self, example: Example, level: str) -> str:
        """The thinking trace at ``level`` (``low`` terse, ``medium``, ``high`` detailed)."""

    @abc.abstractmethod
    def reply(self, example: Example) -> str:
        """The final answer as the assistant says it."""

    @abc.abstractmethod
    def parse(self, answer_text: str) -> str | None:
        """The final answer found in a reply (comparable to ``example.answer``), or None."""

    # ------------------------------------------------------------------ shared

    def split(self, key: str) -> str:
        """The split of ``key``: ``"test"`` if held out whole, else :func:`split_of`."""
        return "test" if key in self.held_out else split_of(self.name, key)

    def generate(self, n: int, seed: int, split: str = "train", at_most: bool = False) -> list[Example]:
        """``n`` examples of ``split``, the same for the same seed.

        Training examples may repeat (like epochs); test examples are distinct (by key and
        fields, whatever the phrasing), so an accuracy counts different questions. Examples whose key belongs to the other
        split are skipped, so the two splits never share a key. A task with fewer than
        ``n`` distinct test examples raises, or, with ``at_most``, returns those it has.
        """
        if split not in SPLITS:
            raise LanternError(f"{self.name}: unknown split {split!r}; use one of {SPLITS}")
        if n < 0:
            raise LanternError(f"{self.name}: number of examples must be >= 0, got {n}")
        rng = random.Random(f"{self.name}:{split}:{seed}")
        examples: list[Example] = []
        seen: set[str] = set()
        misses = 0  # draws since the last accepted example
        while len(examples) < n:
            if misses > MAX_MISSES:
                if at_most:
                    break
                raise LanternError(
                    f"{self.name}: found only {len(examples)} distinct {split} examples of the "
                    f"{n} asked; ask for fewer")
            misses += 1
            example = self.sample(rng)
            if self.split(example.key) != split:
                continue
            if split == "test":
                identity = f"{example.key}\0{sorted(example.fields.items())}"
                if identity in seen:
                    continue
                seen.add(identity)
            examples.append(example)
            misses = 0
        return examples

    def evaluate(self, example: Example, answer_text: str) -> bool:
        """True when the answer (the reply without its thinking) is the example's and
        whatever it restates of the question is right (:meth:`restates`)."""
        return self.parse(answer_text) == example.answer and self.restates(example, answer_text)

    def restates(self, example: Example, answer_text: str) -> bool:
        """False when the reply restates the question wrongly: a right number for another
        word or other operands is not a right answer. True when it restates nothing."""
        return True

    def constant_baseline(self, examples: Sequence[Example]) -> tuple[str, float] | None:
        """The score of always giving the most common answer: ``(answer, share)``.

        What a model scores without reading the question; printed beside every table.
        None for an empty list (and for tasks whose answers are not compared as such).

        >>> from lanternlm.tasks import get_task
        >>> get_task("letters").constant_baseline([Example("letters", w, "?", n) for w, n in zip("abcd", "1121")])
        ('1', 0.75)
        """
        if not examples:
            return None
        answer, count = Counter(e.answer for e in examples).most_common(1)[0]
        return answer, count / len(examples)

    def reward(self, example: Example, answer_text: str) -> float:
        """1.0 for a correct final answer, 0.0 otherwise (what RL maximises)."""
        return 1.0 if self.evaluate(example, answer_text) else 0.0

    def grade(self, example: Example, reply: Sequence[int], tokenizer) -> Graded:
        """Judge the ids a model wrote after the prompt: thinking and answer split by
        :func:`lanternlm.chat.split_reply`, the answer decoded and :meth:`evaluate` d."""
        thinking, answer = split_reply(reply, ChatTokens.of(tokenizer))
        text = tokenizer.decode(answer).strip()
        return Graded(thinking, text, self.evaluate(example, text))

    def to_conversation(self, example: Example, reasoning: str = "medium") -> list[dict]:
        """The example as a chat: system line with the level, question, reply (+ thinking).

        ``reasoning="none"`` gives an assistant turn without a thinking segment.
        """
        if reasoning not in REASONING_LEVELS:
            raise LanternError(f"{self.name}: unknown reasoning level {reasoning!r}; "
                               f"use one of {REASONING_LEVELS}")
        assistant = {"role": "assistant", "content": self.reply(example)}
        if reasoning != "none":
            assistant["thinking"] = self.thinking(example, reasoning)
        return [{"role": "system", "content": f"Reasoning: {reasoning}"},
                {"role": "user", "content": example.question},
                assistant]


def as_asked(question: str, word: str) -> str:
    """``word`` written as the question writes it: in the same quotes, or bare.

    A trace or reply that restates the word in the question's own form copies the
    question's tokens (a bare word after a space and a quoted one are different BPE
    pieces), which a small model learns far sooner than re-spelling the word in other
    pieces.

    >>> as_asked('Count the letter r in "strawberry".', "strawberry"), as_asked("Reverse lantern.", "lantern")
    ('"strawberry"', 'lantern')
    """
    for quote in ('"', "'"):
        if f"{quote}{word}{quote}" in question:
            return f"{quote}{word}{quote}"
    return word


def check_level(task: str, level: str) -> None:
    """Raise unless ``level`` is a thinking level (traces exist for low/medium/high)."""
    if level not in THINKING_LEVELS:
        raise LanternError(f"{task}: no thinking trace for level {level!r}; "
                           f"use one of {THINKING_LEVELS}")
