"""Text in, text out: the engine (ids only) joined to the tokenizer (text only).

This is where text-level rules live:

- a prompt becomes ``[<|endoftext|>] + encode(prompt)``: every training document starts
  with the separator, so a base model sees a prompt the way it saw documents;
- streamed text never contains half of a multi-byte character (the tokenizer's stream
  decoder holds incomplete bytes back);
- **thinking budget**: :func:`thinking_budget` finds the thinking markers' ids in the
  tokenizer for the engine, which forces the end of thinking once the budget is spent;
- **stop strings**: text that could still turn into a stop string is held back; once one
  appears, the text is cut before it and the row stops (finish reason ``"stop"``).

The chosen tokens' probabilities ride along with the text (:class:`TextPiece.event`), so
front-ends can show "the model generates probabilities" step by step.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

from .engine import Engine, ThinkingBudget, TokenEvent
from .errors import LanternError
from .sampling import SamplingParams
from .tokenizer import END, END_THINK, THINK, Tokenizer


@dataclasses.dataclass
class TextPiece:
    """Text that became final after one token of row ``row`` (possibly ``""``).

    ``finish_reason`` is set on the row's last piece: ``"stop"`` (stop token or stop
    string), ``"length"`` (max_tokens) or ``"context"`` (the window is full).
    """

    row: int
    text: str
    event: TokenEvent
    finish_reason: str | None = None
    stop: str | None = None  # on a "stop" piece: the stop string, or the stop token's text


@dataclasses.dataclass
class TextCompletion:
    text: str
    tokens: list[int]  # generated ids (for a stop string: up to the token that completed it)
    finish_reason: str
    stop: str | None = None  # the stop string or stop token text that ended it, if any


def encode_prompt(tokenizer: Tokenizer, text: str, bos: bool = True) -> list[int]:
    """Prompt ids: the document separator (an imported tokenizer's own BOS), then the text
    (special-token strings stay text).

    >>> tok = Tokenizer([], special_tokens=["<|endoftext|>"])
    >>> encode_prompt(tok, "Hi")
    [256, 72, 105]
    """
    return ([tokenizer.bos_id] if bos else []) + tokenizer.encode(text)


def default_stop_tokens(tokenizer: Tokenizer) -> list[int]:
    """``<|endoftext|>`` (a document ends) and, if the tokenizer has it, ``<|end|>`` (a turn ends).

    >>> default_stop_tokens(Tokenizer([], special_tokens=["<|endoftext|>", "<|end|>"]))
    [256, 257]
    """
    return [tokenizer.special_tokens[name] for name in (tokenizer.eot_token, END)
            if name in tokenizer.special_tokens]


def thinking_budget(tokenizer: Tokenizer, budget: int | None) -> ThinkingBudget | None:
    """The engine's cap on thinking segments (``<|think|>`` ... ``<|/think|>``), None = no cap.

    >>> tok = Tokenizer([], special_tokens=["<|endoftext|>", "<|think|>", "<|/think|>"])
    >>> thinking_budget(tok, 16)
    ThinkingBudget(think=257, end_think=258, budget=16)
    """
    if budget is None:
        return None
    return ThinkingBudget(tokenizer.special_id(THINK), tokenizer.special_id(END_THINK), budget)


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` could be the start of a stop string.

    >>> held_back("Hello\\nUs", ["\\nUser:"])
    3
    >>> held_back("Hello", ["\\nUser:"])
    0
    """
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


class TextStream:
    """The final text of one row as its tokens arrive: UTF-8-safe, stop strings cut out.

    :meth:`push` takes each token with the engine's finish reason and returns the text that
    became final, the finish reason (``"stop"`` also when a stop string appeared: the
    caller then ends the row) and the stop string or stop token's text.

    >>> tok = Tokenizer([], special_tokens=["<|endoftext|>"])
    >>> text = TextStream(tok, ["\\n\\n"])
    >>> [text.push(t) for t in b"Hi\\n"] + [text.push(10)]
    [('H', None, None), ('i', None, None), ('', None, None), ('', 'stop', '\\n\\n')]
    """

    def __init__(self, tokenizer: Tokenizer, stops: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.decoder = tokenizer.stream_decoder()
        self.stops = list(stops)
        self.pending = ""  # decoded, not yet final
        self.stop: str | None = None

    def push(self, token: int, finish_reason: str | None = None) -> tuple[str, str | None, str | None]:
        if finish_reason == "stop":  # a stop token: not part of the text
            return self.finish(), "stop", self.stop or self.tokenizer.decode([token])
        text = self.decoder.push(token)
        if finish_reason is not None:
            text += self.decoder.flush()
        piece = self._add(text, finish_reason is not None)
        if self.stop is not None:
            return piece, "stop", self.stop
        return piece, finish_reason, None

    def finish(self) -> str:
        """The text still held back, now that the row has ended on another token."""
        return self._add(self.decoder.flush(), final=True)

    def _add(self, text: str, final: bool) -> str:
        """Take newly decoded text; return what is now final (all of it when ``final``)."""
        self.pending += text
        found = [(self.pending.find(s), s) for s in self.stops if s in self.pending]
        if found:
            cut, self.stop = min(found)
            out, self.pending = self.pending[:cut], ""
            return out
        keep = 0 if final else held_back(self.pending, self.stops)
        out = self.pending[:len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep:]
        return out


@dataclasses.dataclass
class ReplyPiece:
    """What one token of a chat reply added: final text of the thinking and of the answer
    (either may be ``""``), and, on the last piece, why it ended."""

    reasoning: str
    content: str
    finish_reason: str | None = None
    stop: str | None = None
    thinking_token: bool = False  # the token belongs to the thinking (its markers included)


class ReplyStream:
    """A chat reply as it streams, split into thinking and answer by token id — the
    streaming form of :func:`lanternlm.chat.split_reply`.

    Tokens after ``<|think|>`` and up to ``<|/think|>`` are thinking, the rest answer; the
    markers themselves are text of neither. Each part decodes on its own (no character
    is split across them); stop strings apply to the answer. ``inside`` says whether the
    prompt ends inside an open thinking segment.

    >>> tok = Tokenizer([], special_tokens=["<|endoftext|>", "<|think|>", "<|/think|>"])
    >>> reply = ReplyStream(tok)
    >>> [(p.reasoning, p.content) for p in map(reply.push, [257, 104, 258, 111])]
    [('', ''), ('h', ''), ('', ''), ('', 'o')]
    """

    def __init__(self, tokenizer: Tokenizer, stops: Sequence[str] = (), inside: bool = False):
        specials = tokenizer.special_tokens
        self.think, self.end_think = specials.get(THINK), specials.get(END_THINK)
        self.thinking = tokenizer.stream_decoder()
        self.answer = TextStream(tokenizer, stops)
        self.inside = inside

    def push(self, token: int, finish_reason: str | None = None) -> ReplyPiece:
        if finish_reason == "stop":  # a stop token ends the reply, inside the thinking or not
            reasoning = self.thinking.flush() if self.inside else ""
            return ReplyPiece(reasoning, *self.answer.push(token, finish_reason))
        if token == self.think and not self.inside:
            self.inside, reasoning = True, ""
        elif token == self.end_think and self.inside:
            self.inside, reasoning = False, self.thinking.flush()
        elif token in (self.think, self.end_think):  # a stray marker in the answer: text of neither part
            return ReplyPiece("", self.answer.finish() if finish_reason else "", finish_reason)
        elif self.inside:
            reasoning = self.thinking.push(token)
        else:
            return ReplyPiece("", *self.answer.push(token, finish_reason))
        if finish_reason is None:
            return ReplyPiece(reasoning, "", thinking_token=True)
        return ReplyPiece(reasoning + self.thinking.flush(), self.answer.finish(), finish_reason,
                          thinking_token=True)


def stream_text(engine: Engine, tokenizer: Tokenizer, prompts: Sequence[Sequence[int]], *,
                max_tokens: int, sampling: SamplingParams = SamplingParams(),
                stop: Sequence[str] = (), stop_tokens: Sequence[int] | None = None,
                top_alternatives: int = 0, truncate: str | None = None,
                thinking: ThinkingBudget | None = None, n: int = 1) -> Iterator[TextPiece]:
    """Generate ``n`` samples of each prompt's ids, yielding :class:`TextPiece` s as text
    becomes final; row ``i * n + s`` is prompt i's sample s (as in :meth:`Engine.generate`).

    ``stop_tokens`` defaults to :func:`default_stop_tokens`. Concatenating a row's pieces
    gives its completion text. ``thinking`` caps thinking segments (:func:`thinking_budget`).
    """
    if any(not s for s in stop):
        raise LanternError("stop strings must be non-empty")
    stop_tokens = default_stop_tokens(tokenizer) if stop_tokens is None else list(stop_tokens)
    generation = engine.stream(prompts, max_tokens=max_tokens, sampling=sampling,
                               stop_tokens=stop_tokens, top_alternatives=top_alternatives,
                               truncate=truncate, thinking=thinking, n=n)
    rows = [TextStream(tokenizer, stop) for _ in generation.prompts]
    for event in generation:
        text, reason, found = rows[event.row].push(event.token, event.finish_reason)
        if reason == "stop" and event.finish_reason != "stop":  # a stop string: end the row
            generation.stop(event.row)
        yield TextPiece(event.row, text, event, reason, found)


def complete(engine: Engine, tokenizer: Tokenizer, prompts: Sequence[Sequence[int]], *,
             max_tokens: int, sampling: SamplingParams = SamplingParams(),
             stop: Sequence[str] = (), stop_tokens: Sequence[int] | None = None,
             truncate: str | None = None, thinking: ThinkingBudget | None = None,
             n: int = 1) -> list[TextCompletion]:
    """Like :func:`stream_text`, collected into one :class:`TextCompletion` per row
    (prompt i's sample s at ``i * n + s``)."""
    texts: list[list[str]] = [[] for _ in range(len(prompts) * n)]
    tokens: list[list[int]] = [[] for _ in texts]
    results: list[TextCompletion | None] = [None] * len(texts)
    for piece in stream_text(engine, tokenizer, prompts, max_tokens=max_tokens, sampling=sampling,
                             stop=stop, stop_tokens=stop_tokens, truncate=truncate,
                             thinking=thinking, n=n):
        texts[piece.row].append(piece.text)
        if piece.event.finish_reason != "stop":  # a stop token is not part of the completion
            tokens[piece.row].append(piece.event.token)
        if piece.finish_reason is not None:
            results[piece.row] = TextCompletion("".join(texts[piece.row]), tokens[piece.row],
                                                piece.finish_reason, piece.stop)
    return [r for r in results if r is not None]
