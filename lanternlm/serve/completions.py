"""From an OpenAI request to engine requests, and from token events back to OpenAI objects.

A request becomes one :class:`~lanternlm.engine.Request` per prompt (its ``n`` choices share
one prefill) and runs as a :class:`Job` on the run's :class:`~lanternlm.serve.worker.Worker`.
Each choice turns its token events into text with the text layer
(:class:`~lanternlm.generate.ReplyStream` for chat: thinking and answer apart, markers in
neither; :class:`~lanternlm.generate.TextStream` for plain completions), so the text a
client receives always decodes cleanly and stops before a stop string.

Counting, as OpenAI does: ``completion_tokens`` is every token the model generated for
the choices (thinking, its markers and the stop token included); ``reasoning_tokens`` the
thinking's share (``<|think|>`` through ``<|/think|>``); ``prompt_tokens`` the prompt once
per prompt, as the model saw it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
import uuid
from typing import Any, AsyncIterator, Sequence

from ..chat import ChatTokens, render_for_generation
from ..engine import Request, TokenEvent
from ..errors import LanternError
from ..generate import ReplyPiece, ReplyStream, TextStream, default_stop_tokens, thinking_budget
from ..run import Run
from ..sampling import SamplingParams
from ..tokenizer import Tokenizer
from . import schema
from .worker import LoopSink, Ticket, Worker

MAX_STOPS = 16
LOG_ZERO = -9999.0  # what a log-probability of 0 is sent as (JSON has no -inf), as OpenAI does


class ApiError(Exception):
    """A request the server refuses, as OpenAI's error object with an HTTP status."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclasses.dataclass
class Served:
    """One run behind the API."""

    name: str
    run: Run
    tokenizer: Tokenizer
    worker: Worker
    created: int = dataclasses.field(default_factory=lambda: int(time.time()))

    @property
    def engine(self):
        return self.worker.engine

    @property
    def chat(self) -> bool:
        return self.run.chat

    def card(self) -> schema.ModelCard:
        return schema.ModelCard(id=self.name, created=self.created, stage=self.run.stage, chat=self.chat,
                                context_length=self.engine.config.block_size)


class Job:
    """One engine request seen from asyncio: iterate it for each step's events (with
    ``whole``, for all of them at once when it ends: for a reply nobody reads token by token)."""

    def __init__(self, served: Served, request: Request, whole: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.worker = served.worker
        self.ticket: Ticket = served.worker.submit(request, LoopSink(loop, self.queue), whole)
        self.over = False

    async def batches(self) -> AsyncIterator[list[TokenEvent]]:
        """The events of the steps done since the last batch (one step's, when the client
        keeps up; several, joined, when it lags, so that a slow reader costs fewer writes);
        an engine refusal (prompt too long, ...) raises LanternError."""
        while not self.over:
            item = await self.queue.get()
            while isinstance(item, list) and not self.queue.empty() and isinstance(self.queue._queue[0], list):
                item = item + self.queue.get_nowait()
            if item is None:
                self.over = True
            elif isinstance(item, Exception):
                self.over = True
                raise item
            else:
                yield item

    def cancel(self, sample: int | None = None) -> None:
        if not self.over:
            self.worker.cancel(self.ticket, sample)


# --------------------------------------------------------------------------- one choice


def finish_reason(engine_reason: str | None) -> str | None:
    """OpenAI's names: the engine's ``context`` (window full) is a ``length`` finish too.

    >>> finish_reason("context"), finish_reason("stop"), finish_reason(None)
    ('length', 'stop', None)
    """
    return None if engine_reason is None else "stop" if engine_reason == "stop" else "length"


def logprob_of(p: float) -> float:
    """A probability as a log-probability JSON can carry."""
    return math.log(p) if p > 0 else LOG_ZERO


class Choice:
    """One choice as it streams: its text, counts, finish, its token ids and the events of
    its content tokens (for log-probabilities). ``inside``: the prompt ends inside an open
    thinking segment (a reply prefix that stops mid-thought)."""

    def __init__(self, tokenizer: Tokenizer, stops: Sequence[str], chat: bool, inside: bool = False) -> None:
        self.reply = ReplyStream(tokenizer, stops, inside) if chat else None
        self.text = None if chat else TextStream(tokenizer, stops)
        self.tokens = self.reasoning_tokens = 0
        self.finish: str | None = None
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.scored: list[TokenEvent] = []  # the content tokens' events (and a completion's stop token)
        self.ids: list[int] = []  # every generated token

    def add(self, event: TokenEvent) -> tuple[ReplyPiece, list[TokenEvent]]:
        """Take one event; returns what it added and the content-token events it added.
        ``piece.stop`` with ``event.finish_reason != "stop"``: a stop string, end the row."""
        self.tokens += 1
        self.ids.append(event.token)
        if self.reply is not None:
            piece = self.reply.push(event.token, event.finish_reason)
        else:
            piece = ReplyPiece("", *self.text.push(event.token, event.finish_reason))
        self.reasoning_tokens += piece.thinking_token
        # a stop token is not text, but a plain completion lists it with its log-probability
        # (as OpenAI's completions do; harnesses count on the prompt's tokens being followed by one)
        scored = [event] if not piece.thinking_token and (event.finish_reason != "stop" or self.reply is None) else []
        self.scored += scored
        self.content.append(piece.content)
        self.reasoning.append(piece.reasoning)
        self.finish = finish_reason(piece.finish_reason)
        return piece, scored


def token_logprob(tokenizer: Tokenizer, event: TokenEvent, top: int) -> dict[str, Any]:
    """A chat token's log-probabilities (the fields of :class:`schema.TokenLogprob`): raw
    (``logprob``, ``top_logprobs``) and, as the extension fields, under the distribution it
    was drawn from. A plain dict: a stream sends one per token, so it skips validation."""

    def entry(token: int, logprob: float) -> dict[str, Any]:
        data = tokenizer.token_bytes(token)
        return {"token": data.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(data), "id": token}

    head = entry(event.token, max(event.logprob, LOG_ZERO))
    return {**head, "top_logprobs": [entry(t, logprob_of(p)) for t, p in (event.raw_top or [])[:top]],
            "filtered_logprob": max(event.sampled_logprob, LOG_ZERO),
            "filtered_top_logprobs": [entry(t, logprob_of(p)) for t, p in (event.filtered_top or [])[:top]]}


# --------------------------------------------------------------------------- requests


def sampling_params(body: schema.SamplingFields) -> SamplingParams:
    """The request's sampling settings (OpenAI's defaults: temperature 1, top_p 1)."""
    given = {name: getattr(body, name) for name in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                                                    "presence_penalty", "frequency_penalty", "seed")}
    return SamplingParams(**{k: v for k, v in given.items() if v is not None})


def stop_strings(body: schema.SamplingFields) -> list[str]:
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > MAX_STOPS or any(not s for s in stops):
        raise ApiError(400, f"stop: give at most {MAX_STOPS} non-empty strings", param="stop")
    return stops


def check_stream_options(body: schema.SamplingFields) -> None:
    if body.stream_options is not None and not body.stream:
        raise ApiError(400, "stream_options is only allowed when stream is true", param="stream_options")


def reasoning_level(effort: str | None) -> str | None:
    """The chat format's level for OpenAI's ``reasoning_effort`` (``minimal`` is ``low``).

    >>> reasoning_level("minimal"), reasoning_level("high"), reasoning_level(None)
    ('low', 'high', None)
    """
    return "low" if effort == "minimal" else effort


def chat_messages(messages: Sequence[schema.ChatMessage]) -> list[dict]:
    """OpenAI messages as the chat format's: ``developer`` is ``system``; leading system
    messages join into one; content parts join into one text; thinking sent back by a
    client (``reasoning_content``) is dropped, as earlier turns' thinking always is."""
    out: list[dict] = []
    for message in messages:
        role = "system" if message.role == "developer" else message.role
        content = message.content if isinstance(message.content, str) else \
            "".join(part.text for part in message.content or [])
        if role == "system" and out and out[-1]["role"] == "system" and len(out) == 1:
            out[-1]["content"] += "\n" + content
        else:
            out.append({"role": role, "content": content})
    return out


def chat_prompt(served: Served, body: schema.ChatCompletionRequest) -> list[int]:
    """The rendered conversation, opened for the assistant, then the ``reply_prefix`` if any."""
    try:
        prompt = render_for_generation(chat_messages(body.messages), served.tokenizer,
                                       reasoning_level(body.reasoning_effort))
    except LanternError as err:
        raise ApiError(400, str(err), param="messages") from None
    prefix = list(body.reply_prefix or [])
    bad = [t for t in prefix if not 0 <= t < served.tokenizer.vocab_size]
    if bad:
        raise ApiError(400, f"reply_prefix: token ids {bad[:5]} are outside the vocabulary "
                            f"0..{served.tokenizer.vocab_size - 1}", param="reply_prefix")
    return prompt + prefix


def inside_thinking(tokenizer: Tokenizer, prompt: Sequence[int]) -> bool:
    """Whether ``prompt`` ends inside an open thinking segment (its last marker is ``<|think|>``)."""
    budget = thinking_budget(tokenizer, 0)
    return budget.inside(prompt)


def stop_tokens(tokenizer: Tokenizer, chat: bool) -> list[int]:
    """The tokens that end a reply: the end of a document or turn, and for chat also the
    marker of any other turn (a chat model that writes one has ended its own)."""
    stops = default_stop_tokens(tokenizer)
    if chat:
        t = ChatTokens.of(tokenizer)
        stops += [t.system, t.user, t.assistant]
    return stops


def engine_request(served: Served, prompt: list[int], body: schema.SamplingFields, *, max_tokens: int | None,
                   chat: bool, top: int = 0, logprobs: bool = False, thinking: int | None = None) -> Request:
    """The engine request for one prompt; ``max_tokens`` None = up to the context window."""
    tokenizer = served.tokenizer
    try:
        return Request(prompt, max_tokens or served.engine.config.block_size, sampling_params(body),
                       stop_tokens(tokenizer, chat),
                       thinking_budget(tokenizer, thinking) if chat else None, body.n, top, logprobs)
    except LanternError as err:
        raise ApiError(400, str(err)) from None


def usage(prompt_tokens: int, choices: Sequence[Choice]) -> schema.Usage:
    completion = sum(c.tokens for c in choices)
    return schema.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion,
                        total_tokens=prompt_tokens + completion,
                        completion_tokens_details=schema.CompletionTokensDetails(
                            reasoning_tokens=sum(c.reasoning_tokens for c in choices)))


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def sse(data: Any) -> str:
    """One server-sent event: ``data: JSON`` and a blank line."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
