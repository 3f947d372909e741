"""``lantern serve``: an OpenAI-compatible HTTP API over the scheduling engine.

One :class:`~lanternlm.serve.worker.Worker` thread per run owns its engine; request
handlers (asyncio, FastAPI) only turn requests into engine requests, queue them and turn
the events that come back into OpenAI's objects (:mod:`lanternlm.serve.completions`).
Concurrent requests therefore decode together, one step for all of them.

Endpoints: ``GET /v1/models``, ``GET /health``, ``POST /v1/chat/completions`` (chat runs),
``POST /v1/completions`` (every run: plain text), ``POST /tokenize``, ``POST /detokenize``,
and the glass box (:mod:`lanternlm.serve.glass`): ``POST /v1/inspect/next_token``,
``/v1/inspect/attention``, ``/v1/inspect/embeddings``, ``GET /v1/inspect/model/{name}``;
``GET /v1/sampling/presets``.
A chat completion on a base run is a 400 that points to ``/v1/completions``: a base model
never learned the chat markers, so a chat reply from it would be noise.

The web page (:mod:`lanternlm.serve.page`) is served at ``/``, a client of these endpoints.

Safe by default: binds 127.0.0.1; ``api_key`` makes every endpoint but ``/health`` and the
page's files ask for ``Authorization: Bearer KEY`` (401); a full queue answers 429; a body over
``max_body_bytes`` 413; every refusal is OpenAI's error object and the server goes on.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

from ..errors import LanternError
from ..generate import encode_prompt
from ..log import logger
from . import ServeConfig, glass, schema
from .page import add_page, public
from .completions import (ApiError, Choice, Job, Served, chat_prompt, check_stream_options, engine_request,
                          finish_reason, inside_thinking, logprob_of, new_id, sse, stop_strings, token_logprob,
                          usage)
from .worker import Busy, Worker

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException
except ImportError as err:  # pragma: no cover - the serve extra is missing
    raise LanternError(f"lantern serve needs FastAPI and uvicorn: pip install 'lanternlm[serve]' ({err})") from err


ERROR_RESPONSES = {status: {"model": schema.ErrorResponse, "description": text} for status, text in (
    (400, "bad request"), (401, "missing or wrong API key"), (404, "unknown model"), (413, "body too large"),
    (429, "the queue is full"), (500, "the engine failed"))}


def load_models(runs: Sequence[str], config: ServeConfig) -> list[Served]:
    """A worker for every run; the model name is the run directory's name (made unique)."""
    from ..run import Run

    served, names = [], set()
    for path in runs:
        run = Run(path)
        name = Path(path).resolve().name
        while name in names:
            name += "'"
        names.add(name)
        engine = run.engine(config.device, config.dtype)
        served.append(Served(name, run, run.tokenizer, Worker(engine, max_batch=config.max_batch,
                                                              max_queue=config.max_queue, name=name)))
    return served


def create_app(models: Sequence[Served], config: ServeConfig = ServeConfig()) -> FastAPI:
    """The FastAPI app serving ``models`` (see :func:`load_models`)."""
    from .. import __version__

    by_name = {m.name: m for m in models}
    app = FastAPI(title="lanternlm", version=__version__, responses=ERROR_RESPONSES,
                  description="OpenAI-compatible API of lanternlm. Log-probabilities are the model's raw "
                              "distribution; the filtered_* fields, the distribution tokens were drawn from.")
    app.add_middleware(_Limits, api_key=config.api_key, max_body_bytes=config.max_body_bytes)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, err: ApiError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(Busy)
    async def _busy(_: Request, err: Busy) -> JSONResponse:
        return JSONResponse(ApiError(429, str(err), type="requests", code="rate_limit_exceeded").body(),
                            status_code=429)

    @app.exception_handler(LanternError)
    async def _refused(_: Request, err: LanternError) -> JSONResponse:
        return JSONResponse(ApiError(400, str(err)).body(), status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        where = [str(p) for p in first.get("loc", ()) if p != "body"] if first.get("type") != "json_invalid" else []
        param = ".".join(where) or None
        message = first.get("msg", "invalid request") + (f" ({param})" if param else "")
        return JSONResponse(ApiError(400, message, param=param, code=first.get("type")).body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse(ApiError(err.status_code, str(err.detail)).body(), status_code=err.status_code)

    def model(name: str) -> Served:
        if name not in by_name:
            raise ApiError(404, f"the model {name!r} does not exist; this server has {sorted(by_name)}",
                           param="model", code="model_not_found")
        return by_name[name]

    glass.add_routes(app, model)

    @app.get("/health", response_model=schema.Health)
    async def health() -> schema.Health:
        return schema.Health(models={m.name: m.worker.load for m in models})

    @app.get("/v1/models", response_model=schema.ModelList)
    async def list_models() -> schema.ModelList:
        return schema.ModelList(data=[m.card() for m in models])

    @app.get("/v1/models/{name}", response_model=schema.ModelCard)
    async def get_model(name: str) -> schema.ModelCard:
        return model(name).card()

    @app.get("/v1/sampling/presets", response_model=schema.PresetList)
    async def sampling_presets() -> schema.PresetList:
        """Extension: the named sampling settings ``lantern generate --preset`` knows."""
        from ..sampling import PRESETS

        return schema.PresetList(data=[schema.SamplingPreset(name=name, temperature=p.temperature, top_k=p.top_k,
                                                             top_p=p.top_p, min_p=p.min_p)
                                       for name, p in PRESETS.items()])

    stream_doc = {200: {"content": {"application/json": {}, "text/event-stream": {}},
                        "description": "the completion, or with stream: server-sent events of chunks"}}

    @app.post("/v1/chat/completions", response_model=schema.ChatCompletion, responses=stream_doc)
    async def chat_completions(body: schema.ChatCompletionRequest, request: Request):
        served = model(body.model)
        if not served.chat:
            raise ApiError(400, f"{served.name} is a base model (stage {served.run.stage}): it continues text "
                                f"and never learned the chat format; use /v1/completions", param="model")
        check_stream_options(body)
        stops = stop_strings(body)
        if body.top_logprobs and not body.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        prompt = chat_prompt(served, body)
        top = body.top_logprobs or 0
        job = Job(served, engine_request(served, prompt, body, max_tokens=body.max_completion_tokens or body.max_tokens,
                                         chat=True, top=top, logprobs=body.logprobs, thinking=body.thinking_budget),
                  whole=not body.stream and not stops)
        inside = inside_thinking(served.tokenizer, prompt)
        choices = [Choice(served.tokenizer, stops, chat=True, inside=inside) for _ in range(body.n)]
        batches = await _started(job)
        head = {"id": new_id("chatcmpl"), "created": int(time.time()), "model": served.name}
        ids = body.return_token_ids
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return _events(_chat_chunks(job, batches, choices, served, head, prompt, top, body.logprobs,
                                        include_usage, ids))
        await _collect(job, batches, choices, request)
        return schema.ChatCompletion(**head, usage=usage(len(prompt), choices), prompt_token_ids=prompt if ids else None,
                                     choices=[
            schema.ChatChoice(index=i, finish_reason=c.finish, message=schema.AssistantMessage(
                content="".join(c.content), reasoning_content=_reasoning(c), reasoning=_reasoning(c)),
                logprobs=schema.ChoiceLogprobs(content=[token_logprob(served.tokenizer, e, top) for e in c.scored])
                if body.logprobs else None, token_ids=c.ids if ids else None)
            for i, c in enumerate(choices)])

    @app.post("/v1/completions", response_model=schema.Completion, responses=stream_doc)
    async def completions(body: schema.CompletionRequest, request: Request):
        served = model(body.model)
        check_stream_options(body)
        stops = stop_strings(body)
        tokenizer = served.tokenizer
        prompts = _prompts(served, body.prompt)
        top = body.logprobs or 0
        jobs, choices, scores = [], [], []
        for ids, _, _ in prompts:
            if body.echo and body.logprobs is not None:
                scores.append(served.worker.call(lambda ids=ids: served.engine.score(ids, top)))
            if body.max_tokens > 0:
                jobs.append(Job(served, engine_request(served, ids, body, max_tokens=body.max_tokens, chat=False,
                                                       top=top, logprobs=body.logprobs is not None),
                                whole=not body.stream and not stops))
            choices.append([Choice(tokenizer, stops, chat=False) for _ in range(body.n)])
        try:
            scored = [await asyncio.wrap_future(f) for f in scores]
        except LanternError as err:
            for job in jobs:
                job.cancel()
            raise ApiError(400, str(err), param="prompt") from None
        started = [await _started(job) for job in jobs]
        head = {"id": new_id("cmpl"), "created": int(time.time()), "model": served.name}
        echoes = [_echo(ids, text, separated, scored[i] if scored else None, body.echo)
                  for i, (ids, text, separated) in enumerate(prompts)]
        prompt_tokens = sum(len(ids) for ids, _, _ in prompts)
        flat = [c for group in choices for c in group]
        if body.stream:
            return _events(_completion_chunks(jobs, started, choices, served, head, echoes, prompt_tokens,
                                              top, body.logprobs is not None,
                                              bool(body.stream_options and body.stream_options.include_usage),
                                              [ids for ids, _, _ in prompts] if body.return_token_ids else None))
        for job, batches, group in zip(jobs, started, choices):
            await _collect(job, batches, group, request)
        out = []
        for i, group in enumerate(choices):
            for s, c in enumerate(group):
                echo_text, echo_lp = echoes[i]
                lp = None
                if body.logprobs is not None:
                    lp = _legacy_logprobs(tokenizer, echo_lp, c.scored, top, 0)
                out.append(schema.CompletionChoice(index=i * body.n + s, text=echo_text + "".join(c.content),
                                                   finish_reason=c.finish or "length", logprobs=lp,
                                                   **({"prompt_token_ids": prompts[i][0], "token_ids": c.ids}
                                                      if body.return_token_ids else {})))
        return schema.Completion(**head, choices=out, usage=usage(prompt_tokens, flat))

    @app.post("/tokenize", response_model=schema.TokenizeResponse)
    async def tokenize(body: schema.TokenizeRequest) -> schema.TokenizeResponse:
        served = model(body.model)
        tokenizer = served.tokenizer
        if (body.prompt is None) == (body.messages is None):
            raise ApiError(400, "give either prompt or messages", param="prompt")
        if body.prompt is not None:
            ids = encode_prompt(tokenizer, body.prompt)
        else:
            if not served.chat:
                raise ApiError(400, f"{served.name} is a base model: it has no chat format; tokenize a prompt",
                               param="messages")
            request = schema.ChatCompletionRequest(model=body.model, messages=body.messages,
                                                   reasoning_effort=body.reasoning_effort)
            ids = chat_prompt(served, request)
        return schema.TokenizeResponse(tokens=ids, count=len(ids), max_model_len=served.engine.config.block_size,
                                       pieces=_pieces(tokenizer, ids))

    @app.post("/detokenize", response_model=schema.DetokenizeResponse)
    async def detokenize(body: schema.DetokenizeRequest) -> schema.DetokenizeResponse:
        served = model(body.model)
        bad = [t for t in body.tokens if not 0 <= t < served.tokenizer.vocab_size]
        if bad:
            raise ApiError(400, f"token ids {bad[:5]} are outside the vocabulary 0..{served.tokenizer.vocab_size - 1}",
                           param="tokens")
        return schema.DetokenizeResponse(prompt=served.tokenizer.decode(body.tokens),
                                         pieces=_pieces(served.tokenizer, body.tokens))

    add_page(app)
    return app


def _pieces(tokenizer, ids: Sequence[int]) -> list[schema.TokenPiece]:
    return [schema.TokenPiece(id=t, text=tokenizer.decode([t]), bytes=list(tokenizer.token_bytes(t))) for t in ids]


# --------------------------------------------------------------------------- running jobs


async def _started(job: Job) -> AsyncIterator[list]:
    """The job's batches, once the engine accepted it (a refusal is a 400 here, before any
    response is sent)."""
    batches = job.batches()
    try:
        first = await batches.__anext__()
    except StopAsyncIteration:
        first = None
    except LanternError as err:
        raise ApiError(400, str(err)) from None

    async def rest() -> AsyncIterator[list]:
        if first is not None:
            yield first
        async for batch in batches:
            yield batch
    return rest()


def _feed(job: Job, choices: list[Choice], batch: list) -> list[tuple[int, Any, list, Any]]:
    """Each event to its choice; a stop string ends that choice's row. Returns
    ``(choice index, piece, scored events, event)`` per event taken."""
    added = []
    for event in batch:
        choice = choices[event.sample]
        if choice.finish is not None:
            continue
        piece, scored = choice.add(event)
        if piece.stop is not None and event.finish_reason != "stop":  # a stop string: no more tokens
            job.cancel(event.sample)
        added.append((event.sample, piece, scored, event))
    return added


async def _collect(job: Job, batches: AsyncIterator[list], choices: list[Choice], request: Request) -> None:
    """Run the job to its end; a client that disconnects cancels it."""

    async def consume() -> None:
        async for batch in batches:
            _feed(job, choices, batch)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    work, watch = asyncio.ensure_future(consume()), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not work.done():
            work.cancel()
            job.cancel()
    error = work.exception() if work.done() and not work.cancelled() else None
    if error is not None:
        raise ApiError(500, f"generation failed: {error}", type="server_error")


def _events(chunks: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _guarded(jobs: Sequence[Job], chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """A stream's chunks, then ``[DONE]``; an error midway becomes an error frame; a
    client that goes away (the generator is closed) cancels the jobs."""
    try:
        async for chunk in chunks:
            yield chunk
    except Exception as err:  # after the 200 went out, the error travels in the stream
        logger.error("stream failed: %s", err)
        yield sse(ApiError(500, f"generation failed: {err}", type="server_error").body())
    finally:
        for job in jobs:
            job.cancel()
    yield "data: [DONE]\n\n"


def _reasoning(choice: Choice) -> str | None:
    text = "".join(choice.reasoning)
    return text if choice.reasoning_tokens else None


def _chat_chunks(job: Job, batches: AsyncIterator[list], choices: list[Choice], served: Served, head: dict,
                 prompt: list[int], top: int, logprobs: bool, include_usage: bool,
                 token_ids: bool) -> AsyncIterator[str]:
    """The chunks of a chat stream: a role chunk per choice (the first also carries
    ``prompt_token_ids`` when asked), then a chunk per token that adds text, log-probabilities,
    a finish or (with ``token_ids``) its id, then the usage."""
    def chunk(choice: dict, **extra) -> str:
        return sse({**head, "object": "chat.completion.chunk", "choices": [choice], **extra})

    async def chunks() -> AsyncIterator[str]:
        for i in range(len(choices)):
            yield chunk({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                         "finish_reason": None}, **({"prompt_token_ids": prompt} if token_ids and i == 0 else {}))
        async for batch in batches:
            out = []
            for i, piece, scored, event in _feed(job, choices, batch):
                delta: dict[str, Any] = {}
                if piece.content:
                    delta["content"] = piece.content
                if piece.reasoning:
                    delta["reasoning_content"] = delta["reasoning"] = piece.reasoning
                entries = [token_logprob(served.tokenizer, e, top) for e in scored] if logprobs else []
                done = finish_reason(piece.finish_reason)
                if delta or entries or done or token_ids:
                    out.append(chunk({"index": i, "delta": delta, "finish_reason": done,
                                      "logprobs": {"content": entries} if logprobs else None,
                                      **({"token_ids": [event.token]} if token_ids else {})}))
            if out:
                yield "".join(out)  # one write for the batch's chunks
        if include_usage:
            yield sse({**head, "object": "chat.completion.chunk", "choices": [],
                       "usage": usage(len(prompt), choices).model_dump()})
    return _guarded([job], chunks())


def _completion_chunks(jobs: list[Job], started: list, choices: list[list[Choice]], served: Served, head: dict,
                       echoes: list, prompt_tokens: int, top: int, logprobs: bool,
                       include_usage: bool, prompt_ids: list[list[int]] | None) -> AsyncIterator[str]:
    """The chunks of a completion stream, prompt after prompt: the echo, then a chunk per
    token; with ``prompt_ids`` (return_token_ids) each choice's first chunk carries its
    prompt's ids and every token chunk its id."""
    tokenizer, n = served.tokenizer, len(choices[0])

    def chunk(index: int, text: str, finish: str | None, lp: schema.CompletionLogprobs | None, **ids) -> str:
        return sse({**head, "object": "text_completion", "choices": [{
            "index": index, "text": text, "finish_reason": finish, "logprobs": lp.model_dump() if lp else None,
            **ids}]})

    async def chunks() -> AsyncIterator[str]:
        for i, (echo_text, echo_lp) in enumerate(echoes):
            offsets = [0] * n
            first = [prompt_ids is not None] * n  # the prompt's ids still to send
            for s in range(n):
                if echo_text or echo_lp or (first[s] and not jobs):
                    lp = _legacy_logprobs(tokenizer, echo_lp, [], top, 0) if logprobs else None
                    ids = {"prompt_token_ids": prompt_ids[i], "token_ids": []} if first[s] else {}
                    yield chunk(i * n + s, echo_text, None if jobs else "length", lp, **ids)
                    offsets[s], first[s] = len(echo_text), False
            if not jobs:
                continue
            async for batch in started[i]:
                for s, piece, scored, event in _feed(jobs[i], choices[i], batch):
                    lp = _legacy_logprobs(tokenizer, [], scored, top, offsets[s]) if logprobs else None
                    offsets[s] += len(piece.content)
                    done = finish_reason(piece.finish_reason)
                    if piece.content or scored or done or prompt_ids is not None:
                        ids = {} if prompt_ids is None else {"token_ids": [event.token]}
                        if first[s]:
                            ids["prompt_token_ids"], first[s] = prompt_ids[i], False
                        yield chunk(i * n + s, piece.content, done, lp, **ids)
        if include_usage:
            yield sse({**head, "object": "text_completion", "choices": [],
                       "usage": usage(prompt_tokens, [c for g in choices for c in g]).model_dump()})
    return _guarded(jobs, chunks())


# --------------------------------------------------------------------------- legacy completions


def _prompts(served: Served, prompt: Any) -> list[tuple[list[int], str, bool]]:
    """``(ids, text, separated)`` per prompt: a string gets the document separator in
    front (as in ``lantern generate``); token ids are taken as they are."""
    tokenizer = served.tokenizer
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt:
        raise ApiError(400, "prompt is empty", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        prompt = [prompt]
    out = []
    for p in prompt:
        if isinstance(p, str):
            out.append((encode_prompt(tokenizer, p), p, True))
        else:
            if not p:
                raise ApiError(400, "a prompt of token ids is empty", param="prompt")
            bad = [t for t in p if not 0 <= t < tokenizer.vocab_size]
            if bad:
                raise ApiError(400, f"prompt: token ids {bad[:5]} are outside the vocabulary "
                                    f"0..{tokenizer.vocab_size - 1}", param="prompt")
            out.append((list(p), tokenizer.decode(p), False))
    return out


def _echo(ids: list[int], text: str, separated: bool, scored: list | None,
          echo: bool) -> tuple[str, list[tuple[int, float | None, list]]]:
    """The echoed prompt: its text, and (when scored) per token ``(id, logprob, top)``. A
    string prompt's separator is not echoed, so each of its tokens has a log-probability;
    a prompt of token ids is echoed whole, its first token without one."""
    if not echo:
        return "", []
    if scored is None:
        return text, []
    first = [] if separated else [(ids[0], None, [])]
    return text, first + [(t, lp, alts) for t, (lp, alts) in zip(ids[1:], scored)]


def _legacy_logprobs(tokenizer, echoed: list, events: list, top: int, offset: int) -> schema.CompletionLogprobs:
    """OpenAI's legacy log-probabilities: tokens, their log-probabilities, the top
    alternatives as {token: logprob}, and each token's character offset in the text."""
    rows = list(echoed) + [(e.token, e.logprob, [(t, logprob_of(p)) for t, p in (e.raw_top or [])])
                           for e in events]
    out = schema.CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
    for token, logprob, alts in rows:
        text = tokenizer.decode([token])
        out.tokens.append(text)
        out.token_logprobs.append(logprob)
        out.top_logprobs.append({tokenizer.decode([t]): lp for t, lp in alts[:top]} if logprob is not None else None)
        out.text_offset.append(offset)
        offset += len(text)
    return out


# --------------------------------------------------------------------------- limits


class _Limits:
    """ASGI middleware: the API key (401) and the body size limit (413)."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int) -> None:
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.api_key is not None and not public(scope["path"]):
            given = headers.get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given, f"Bearer {self.api_key}"):
                return await _reply(send, ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                                   code="invalid_api_key"))
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return await _reply(send, ApiError(413, f"the body has {int(length)} bytes; the limit is "
                                                    f"{self.max_body_bytes}", code="body_too_large"))
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise ApiError(413, f"the body is over the limit of {self.max_body_bytes} bytes",
                                   code="body_too_large")
            return message
        await self.app(scope, limited, send)


async def _reply(send, err: ApiError) -> None:
    body = json.dumps(err.body()).encode()
    await send({"type": "http.response.start", "status": err.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------- running the server


def serve(runs: Sequence[str], config: ServeConfig = ServeConfig()) -> None:
    """Load the runs and serve them until Ctrl-C."""
    import uvicorn

    models = load_models(runs, config)
    app = create_app(models, config)
    names = ", ".join(m.name for m in models)
    logger.info("serving %s on http://%s:%d (OpenAI API at /v1)", names, config.host, config.port)
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
    finally:
        for m in models:
            m.worker.close()


__all__ = ["ServeConfig", "create_app", "load_models", "serve", "Busy"]
