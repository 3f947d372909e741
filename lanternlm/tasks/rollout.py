"""Groups of answers: each task question asked ``k`` times through the engine, every answer
graded by the task's verifier. What on-policy preference pairs (:mod:`.pairs`) and RL
(:mod:`lanternlm.train.rl`) both sample.

For a batch of :class:`Question` s (a task's example, the reasoning level it is asked at,
and its own sampling seed):

1. each question becomes a chat prompt (:func:`lanternlm.chat.render_for_generation`,
   the level in the system line) and one engine request with ``n=k`` (one prefill, ``k``
   samples, the question's seed), stopping at ``<|end|>``; the batch's requests run
   together on one scheduler;
2. every answer keeps its tokens, whether it reached ``<|end|>`` (``finished``; else it
   was cut at ``max_tokens`` or the context), which tokens the thinking budget forced,
   and each token's log-probability under the distribution it was drawn from (the
   engine's ``sampled_logprob``: after temperature; the stop token's too);
3. the task grades it (:meth:`lanternlm.tasks.base.Task.grade`); an unfinished answer is
   wrong whatever it says.

A seeded question gives the same answers whatever else is in its batch (the engine's
rule 3), so batching is a matter of speed only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

from ..chat import ChatTokens, render_for_generation
from ..errors import LanternError
from .base import Example, Task


@dataclass(frozen=True)
class Question:
    """One question to ask: a task's example at a reasoning level, with its sampling seed."""

    task: Task
    example: Example
    level: str
    seed: int


@dataclass
class Answer:
    """One sampled answer to a question."""

    tokens: list[int]  # what the model wrote, without the stop token
    finished: bool  # it ended with <|end|> (else cut at max_tokens or the context)
    forced: list[bool]  # per token of `tokens` (+ the stop token when finished): forced by the thinking budget
    logprobs: list[float]  # the same tokens' log-probabilities at sampling (the distribution drawn from)
    correct: bool  # the task's verdict (False when not finished)
    thinking: int  # thinking tokens in it

    def actions(self, end: int) -> list[int]:
        """The tokens the model chose: the answer, and the stop token when it finished.

        >>> Answer([7, 8], True, [False] * 3, [-0.1] * 3, True, 0).actions(end=4)
        [7, 8, 4]
        """
        return [*self.tokens, end] if self.finished else list(self.tokens)


@dataclass
class Group:
    """A question's ``k`` answers; ``prompt`` is the ids the model saw."""

    question: Question
    prompt: list[int]
    answers: list[Answer]


def sample_groups(engine, tokenizer, questions: Sequence[Question], k: int, *, temperature: float = 1.0,
                  max_tokens: int = 320, batch_questions: int = 8, thinking=None, bar=None) -> Iterator[Group]:
    """The groups of ``k`` answers to ``questions``, in order (module docstring), sampled
    ``batch_questions`` questions at a time; ``thinking`` is an optional
    :class:`lanternlm.engine.ThinkingBudget`, ``bar`` a progress bar to advance per answer."""
    from ..engine import Generation, Request
    from ..sampling import SamplingParams

    if k < 1 or batch_questions < 1 or max_tokens < 1:
        raise LanternError(f"groups: k={k}, batch_questions={batch_questions} and max_tokens={max_tokens} "
                           f"must each be >= 1")
    chat = ChatTokens.of(tokenizer)
    for start in range(0, len(questions), batch_questions):
        batch = questions[start:start + batch_questions]
        requests = [Request(render_for_generation(q.task.to_conversation(q.example, q.level)[:-1], tokenizer, q.level),
                            max_tokens, SamplingParams(temperature=temperature, seed=q.seed),
                            stop_tokens=[chat.end], thinking=thinking, n=k, logprobs=True, truncate="left")
                   for q in batch]
        generation = Generation(engine, requests)
        rows = len(generation.prompts)
        tokens: list[list[int]] = [[] for _ in range(rows)]
        forced: list[list[bool]] = [[] for _ in range(rows)]
        logprobs: list[list[float]] = [[] for _ in range(rows)]
        finished = [False] * rows
        for event in generation:
            forced[event.row].append(event.forced)
            logprobs[event.row].append(event.sampled_logprob)
            if event.finish_reason == "stop":
                finished[event.row] = True
            else:
                tokens[event.row].append(event.token)
        if bar is not None:
            bar.update(rows)
        for j, question in enumerate(batch):
            answers = []
            for r in range(j * k, (j + 1) * k):
                graded = question.task.grade(question.example, tokens[r], tokenizer)
                answers.append(Answer(tokens[r], finished[r], forced[r], logprobs[r],
                                      finished[r] and graded.correct, len(graded.thinking)))
            yield Group(question, generation.prompts[j * k], answers)
