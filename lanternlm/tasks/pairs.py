"""On-policy preference pairs from the verifiable tasks: the model's own answers, judged.

For each question of a task (its ``train`` or ``test`` split), at a reasoning level taken in
turn from ``levels``:

1. the chat model answers it ``k`` times through the engine (one prefill per question,
   ``k`` samples at ``temperature``, each question its own seed), in batches, and the
   task's verifier grades each answer; an answer that never reached ``<|end|>`` counts as
   wrong (:func:`lanternlm.tasks.rollout.sample_groups`, which RL samples with too);
3. when at least one answer is right and one wrong, one right answer (chosen) and one wrong
   answer (rejected) are drawn at random and make a :class:`lanternlm.data.preference.Pair`,
   their thinking and reply decoded exactly as the model wrote them.

A question whose ``k`` answers are all right or all wrong gives no pair: a task the model
almost always (or never) solves gives little to learn from, and the report says so
(:data:`BAND`). The result is an ordinary preference JSONL (``lantern tasks pairs``).
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from ..chat import REASONING_LEVELS, ChatTokens, split_reply
from ..data.preference import Pair
from ..errors import LanternError
from ..log import logger, progress
from .mixture import get_task

#: The share of right answers inside which a task gives pairs worth training on.
BAND = (0.2, 0.8)


def band_warning(task: str, right: float) -> str | None:
    """A warning when a model right ``right`` of the time is outside :data:`BAND`.

    >>> band_warning("letters", 0.5) is None
    True
    >>> band_warning("arithmetic", 0.02)
    'arithmetic: the model is right 2% of the time, outside the 20-80% band: the task is too hard for it, most questions give no pair (all answers equally wrong)'
    """
    low, high = BAND
    if low <= right <= high:
        return None
    hard = right < low
    return (f"{task}: the model is right {right:.0%} of the time, outside the {low:.0%}-{high:.0%} band: the "
            f"task is too {'hard' if hard else 'easy'} for it, most questions give no pair (all answers "
            f"equally {'wrong' if hard else 'right'})").replace("%-", "-")


def on_policy_pairs(engine, tokenizer, tasks: Sequence[str], questions: int, *, k: int = 8,
                    levels: Sequence[str] = REASONING_LEVELS, split: str = "train", seed: int = 0,
                    temperature: float = 1.0, max_tokens: int = 320, batch_questions: int = 8,
                    ) -> tuple[list[Pair], list[dict[str, Any]]]:
    """Pairs from ``questions`` questions per task (module docstring); returns the pairs and
    one report row per task: ``task, questions, samples, right (share), all_right,
    all_wrong, pairs``."""
    from .rollout import Question, sample_groups

    if k < 2 or questions < 1 or batch_questions < 1:
        raise LanternError(f"pairs: k={k} (>= 2), questions={questions} (>= 1) and batch_questions="
                           f"{batch_questions} (>= 1) are needed")
    bad = [level for level in levels if level not in REASONING_LEVELS]
    if bad or not levels:
        raise LanternError(f"pairs: levels {list(levels)}: choose some of {REASONING_LEVELS}")
    chat = ChatTokens.of(tokenizer)
    pairs: list[Pair] = []
    report = []
    bar = progress(total=len(tasks) * questions * k, desc=f"pairs ({split})", unit="answer")
    for task in map(get_task, tasks):
        examples = task.generate(questions, seed, split=split, at_most=split == "test")
        rng = random.Random(f"pairs:{task.name}:{split}:{seed}")
        row = {"task": task.name, "questions": len(examples), "samples": 0, "right": 0, "all_right": 0,
               "all_wrong": 0, "pairs": 0}
        asked = [Question(task, example, levels[i % len(levels)], seed * 1_000_003 + i)
                 for i, example in enumerate(examples)]
        for group in sample_groups(engine, tokenizer, asked, k, temperature=temperature, max_tokens=max_tokens,
                                   batch_questions=batch_questions, bar=bar):
            right = [a.tokens for a in group.answers if a.correct]
            wrong = [a.tokens for a in group.answers if not a.correct]
            row["samples"] += k
            row["right"] += len(right)
            row["all_right"] += not wrong
            row["all_wrong"] += not right
            if right and wrong:
                level = group.question.level
                conversation = task.to_conversation(group.question.example, level)
                pairs.append(Pair(conversation[:-1], _message(rng.choice(right), tokenizer, chat, level),
                                  _message(rng.choice(wrong), tokenizer, chat, level), level))
                row["pairs"] += 1
        row["right"] = row["right"] / max(1, row["samples"])
        report.append(row)
        warning = band_warning(task.name, row["right"])
        if warning:
            logger.warning(warning)
        logger.info(f"pairs ({split}) {task.name}: {row['pairs']} pairs from {row['questions']} questions, "
                    f"right {row['right']:.0%} of {row['samples']} answers; all right {row['all_right']}, "
                    f"all wrong {row['all_wrong']}")
    bar.close()
    return pairs, report


def _message(ids: list[int], tokenizer, chat: ChatTokens, level: str) -> dict:
    """The assistant message a generated reply renders back to (thinking as written)."""
    thinking, answer = split_reply(ids, chat)
    message = {"role": "assistant", "content": tokenizer.decode(answer)}
    if level != "none":
        message["thinking"] = tokenizer.decode(thinking)
    return message
