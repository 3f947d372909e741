"""A reward model's scores: how good an answer is, one number per (conversation, answer).

A reward run (``lantern reward``, stage ``reward``) is the chat model's network with a
scalar head read at the last token of the rendered conversation (``<|end|>`` of the
assistant's turn), trained so that preferred answers score higher (Bradley–Terry). The
score is a logit: only differences mean something, ``σ(s_a - s_b)`` being the model's
probability that answer a is preferred to b.

- :func:`score_rows`: scores of token rows, in right-padded batches (what training and
  evaluation use too);
- :class:`RewardModel`: a reward run loaded for scoring conversations, or the ids an
  engine generated after a prompt;
- :func:`best_of_n`: sample n answers per prompt and keep the one the reward model scores
  highest (``lantern generate/chat --best-of N --reward-model RM``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

import torch

from .chat import ChatTokens, render
from .errors import LanternError

if TYPE_CHECKING:
    from .data.preference import Pair


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded rows and the index of each row's last token.

    >>> x, last = pad_rows([[5, 6, 7], [8]], pad_id=0)
    >>> x.tolist(), last.tolist()
    ([[5, 6, 7], [8, 0, 0]], [2, 0])
    """
    if not rows or any(len(r) == 0 for r in rows):
        raise LanternError("reward: every row to score needs at least one token")
    x = torch.full((len(rows), max(len(r) for r in rows)), pad_id, dtype=torch.long)  # (B, T)
    for b, row in enumerate(rows):
        x[b, :len(row)] = torch.tensor(list(row), dtype=torch.long)
    return x, torch.tensor([len(r) - 1 for r in rows], dtype=torch.long)


@torch.no_grad()
def score_rows(model, rows: Sequence[Sequence[int]], pad_id: int, batch_size: int = 16) -> list[float]:
    """The reward model's score of each token row (a whole rendered conversation)."""
    device = next(model.parameters()).device
    block = model.config.block_size
    long = [i for i, r in enumerate(rows) if len(r) > block]
    if long:
        raise LanternError(f"reward: row {long[0]} has {len(rows[long[0]])} tokens, more than the reward "
                           f"model's context of {block}")
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths together: less padding
    scores = [0.0] * len(rows)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        x, last = pad_rows([rows[i] for i in chunk], pad_id)
        for i, value in zip(chunk, model.rewards(x.to(device), last.to(device)).tolist()):
            scores[i] = value
    return scores


class RewardModel:
    """A reward run, ready to score: ``RewardModel("runs/rm").score(conversations)``."""

    def __init__(self, run: str | os.PathLike, device: str | torch.device | None = None) -> None:
        from .run import Run

        self.run = Run(run)
        if self.run.stage != "reward":
            raise LanternError(f"{self.run.path}: a run of stage {self.run.stage!r} is not a reward model "
                               f"(train one with lantern reward)")
        self.tokenizer = self.run.tokenizer
        self.model = self.run.model(device)
        self.chat = ChatTokens.of(self.tokenizer)

    def score(self, conversations: Sequence[list[dict]], batch_size: int = 16) -> list[float]:
        """Scores of conversations that end with the assistant answer to judge."""
        for k, conversation in enumerate(conversations):
            if not conversation or conversation[-1].get("role") != "assistant":
                raise LanternError(f"reward: conversation {k} must end with the assistant answer to score")
        return score_rows(self.model, [render(c, self.tokenizer).ids for c in conversations],
                          self.tokenizer.pad_id, batch_size)

    def score_pairs(self, pairs: Sequence["Pair"], batch_size: int = 16) -> list[float]:
        """Scores of each pair's chosen then rejected answer: ``[c0, r0, c1, r1, ...]``."""
        from .data.preference import render_pair

        rows = [rendered.ids for pair in pairs for rendered in render_pair(pair, self.tokenizer)]
        return score_rows(self.model, rows, self.tokenizer.pad_id, batch_size)

    def score_replies(self, prompt: Sequence[int], replies: Sequence[Sequence[int]],
                      tokenizer=None, batch_size: int = 16) -> list[float]:
        """Scores of ``replies`` (ids an engine wrote after the chat ``prompt``, the stop token
        left out) to one prompt: each row is ``prompt + reply + <|end|>``."""
        if tokenizer is not None and tokenizer.fingerprint() != self.tokenizer.fingerprint():
            raise LanternError(f"{self.run.path}: the reward model's tokenizer is not the chat model's; "
                               f"train the reward model from the same chat lineage")
        rows = [[*prompt, *reply[:_end(reply, self.chat.end)], self.chat.end] for reply in replies]
        return score_rows(self.model, rows, self.tokenizer.pad_id, batch_size)


def _end(reply: Sequence[int], end: int) -> int:
    return list(reply).index(end) if end in reply else len(reply)


def best_of(scores: Sequence[float]) -> int:
    """The index of the best-scored answer (the first of equal ones).

    >>> best_of([0.2, 1.5, 1.5, -3.0])
    1
    """
    if not scores:
        raise LanternError("best_of: no answers to choose from")
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def best_of_n(engine, reward_model: RewardModel, tokenizer, prompts: Sequence[Sequence[int]], n: int, *,
              max_tokens: int, sampling, thinking=None, truncate: str | None = None,
              ) -> list[tuple[int, list[float], list]]:
    """For each chat prompt, ``n`` sampled answers (one prefill, ``n`` samples) stopping at
    ``<|end|>``, scored by ``reward_model``; returns per prompt ``(best index, scores,
    completions)``."""
    if n < 1:
        raise LanternError(f"best of n: n={n} must be >= 1")
    chat = ChatTokens.of(tokenizer)
    completions = engine.generate(prompts, max_tokens=max_tokens, sampling=sampling, stop_tokens=[chat.end],
                                  thinking=thinking, truncate=truncate, n=n)
    out = []
    for i in range(len(prompts)):
        group = completions[i * n:(i + 1) * n]
        scores = reward_model.score_replies(group[0].prompt, [c.tokens for c in group], tokenizer)
        out.append((best_of(scores), scores, group))
    return out
