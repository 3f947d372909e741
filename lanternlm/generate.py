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


class _RowText:
    """Decoded text of one row, with stop strings cut out."""

    def __init__(self, tokenizer: Tokenizer, stops: Sequence[str]):
        self.decoder = tokenizer.stream_decoder()
        self.stops = list(stops)
        self.pending = ""  # decoded, not yet final
        self.emitted: list[str] = []
        self.stop: str | None = None

    def add(self, text: str, final: bool) -> str:
        """Take newly decoded text; return what is now final (all of it when ``final``)."""
        self.pending += text
        found = [(self.pending.find(s), s) for s in self.stops if s in self.pending]
        if found:
            cut, self.stop = min(found)
            out, self.pending = self.pending[:cut], ""
        else:
            keep = 0 if final else held_back(self.pending, self.stops)
            out = self.pending[:len(self.pending) - keep]
            self.pending = self.pending[len(self.pending) - keep:]
        self.emitted.append(out)
        return out


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
    rows = [_RowText(tokenizer, stop) for _ in generation.prompts]
    for event in generation:
        row = rows[event.row]
        if event.finish_reason == "stop":  # a stop token: not part of the text
            piece = row.add(row.decoder.flush(), final=True)
            yield TextPiece(event.row, piece, event, "stop",
                            row.stop or tokenizer.decode([event.token]))
            continue
        text = row.decoder.push(event.token)
        final = event.finish_reason is not None
        if final:
            text += row.decoder.flush()
        piece = row.add(text, final)
        if row.stop is not None:
            generation.stop(event.row)
            yield TextPiece(event.row, piece, event, "stop", row.stop)
        else:
            yield TextPiece(event.row, piece, event, event.finish_reason)


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
