"""The glass box over HTTP: the same inspection functions as ``lantern inspect``, as JSON.

Each view runs in the run's worker thread between two engine steps (it reads the engine's
model), so inspecting never races generation. Texts are bounded by the context window,
which bounds the attention matrix (at most ``block_size``² numbers per head).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Callable

from ..errors import LanternError
from ..sampling import SamplingParams
from . import schema
from .completions import ApiError, Served


async def _in_worker(served: Served, fn: Callable[[], object]) -> dict:
    try:
        return dataclasses.asdict(await asyncio.wrap_future(served.worker.call(fn)))
    except LanternError as err:
        raise ApiError(400, str(err)) from None


def _one_of(body: schema.InspectText) -> None:
    if (body.text is None) == (body.tokens is None):
        raise ApiError(400, "give either text or tokens", param="text")


def add_routes(app, model: Callable[[str], Served]) -> None:
    """Register ``/v1/inspect/...`` on ``app``; ``model(name)`` finds a served run (or 404s)."""

    @app.post("/v1/inspect/next_token", response_model=schema.NextTokenOut)
    async def next_token(body: schema.NextTokenRequest) -> dict:
        from ..inspect.next_token import next_token_view

        served = model(body.model)
        _one_of(body)
        settings = None if body.settings is None else {
            s.name: SamplingParams(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p)
            for s in body.settings}
        return await _in_worker(served, lambda: next_token_view(served.engine.model, served.tokenizer, body.text,
                                                                body.k, settings, body.bos, body.tokens))

    @app.post("/v1/inspect/attention", response_model=schema.AttentionOut)
    async def attention(body: schema.AttentionRequest) -> dict:
        from ..inspect.attention import attention_view

        served = model(body.model)
        _one_of(body)
        return await _in_worker(served, lambda: attention_view(served.engine.model, served.tokenizer, body.text,
                                                               body.layer, body.head, body.query, bos=body.bos,
                                                               ids=body.tokens))

    @app.post("/v1/inspect/embeddings", response_model=schema.EmbeddingsOut)
    async def embeddings(body: schema.EmbeddingsRequest) -> dict:
        from ..inspect.embeddings import embedding_view

        served = model(body.model)
        return await _in_worker(served, lambda: embedding_view(served.engine.model, served.tokenizer, body.words,
                                                               body.k, body.map_neighbours, body.tokens))

    @app.get("/v1/inspect/model/{name}", response_model=schema.ModelInfo)
    async def model_info(name: str) -> schema.ModelInfo:
        from ..memory import available_memory, memory_estimate, num_params

        served = model(name)
        config = served.engine.config
        memory = {}
        for dtype in ("fp32", "bf16", "int8"):
            e = memory_estimate(config, dtype)
            memory[dtype] = {"weights": e.weights, "kv_cache": e.kv_cache, "activations": e.activations,
                             "runtime": e.runtime}
        return schema.ModelInfo(name=served.name, stage=served.run.stage, parameters=num_params(config),
                                layers=config.n_layer, heads=config.n_head, kv_heads=config.n_kv_head or config.n_head,
                                width=config.n_embd, context=config.block_size, vocab=served.tokenizer.vocab_size,
                                memory=memory, device=str(served.engine.device),
                                dtype=str(served.engine.dtype).removeprefix("torch."), machine=available_memory())
