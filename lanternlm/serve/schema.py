"""The wire format: OpenAI's request and response objects as pydantic models.

They validate requests (a bad field is a 400 with OpenAI's error object, see
:mod:`lanternlm.serve.app`) and they are the server's OpenAPI document, which the tests
fuzz with schemathesis. Fields beyond OpenAI's are marked *extension* in their
description. Unknown request fields are ignored, as many clients send a few of their own.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

SEED_RANGE = {"ge": -(2 ** 63), "le": 2 ** 64 - 1}  # what torch.Generator.manual_seed accepts
EFFORTS = ("none", "minimal", "low", "medium", "high")


def _tuple(*kinds: str, description: str) -> WithJsonSchema:
    """A fixed-length array's schema without ``prefixItems``: schemathesis' response check
    reads OpenAPI 3.1 tuples as Draft 4's ``items: [...]`` and rejects them."""
    return WithJsonSchema({"type": "array", "minItems": len(kinds), "maxItems": len(kinds),
                           "items": {"anyOf": [{"type": k} for k in dict.fromkeys(kinds)]},
                           "description": description})


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- errors


class ErrorDetail(_Response):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(_Response):
    error: ErrorDetail


# --------------------------------------------------------------------------- shared pieces


class StreamOptions(_Request):
    include_usage: bool = False


class SamplingFields(_Request):
    """The sampling settings both completion endpoints take."""

    temperature: Optional[float] = Field(None, ge=0, le=2, description="0 = greedy (default 1)")
    top_p: Optional[float] = Field(None, gt=0, le=1, description="nucleus sampling (default 1 = off)")
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    seed: Optional[int] = Field(None, **SEED_RANGE, description="the same request and seed give the same output")
    stop: Union[str, list[str], None] = Field(None, description="up to 4 strings; the text ends before the first")
    n: int = Field(1, ge=1, description="choices to generate (they share one prefill)")
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None
    top_k: Optional[int] = Field(None, ge=0, description="extension: keep the k most likely tokens (0 = off)")
    min_p: Optional[float] = Field(None, ge=0, le=1, description="extension: drop tokens below min_p x the top one")
    repetition_penalty: Optional[float] = Field(None, gt=0, le=10,
                                                description="extension: CTRL penalty for tokens in the text (1 = off)")


TOKEN_IDS = ("extension (as vLLM's): the prompt's token ids (prompt_token_ids) and each choice's generated "
             "ids (token_ids: every token the model wrote, thinking, its markers and the stop token included)")


class TopLogprob(_Response):
    token: str
    logprob: float
    bytes: Optional[list[int]] = None
    id: Optional[int] = Field(None, description="extension: the token id")


class TokenLogprob(_Response):
    """One generated token. ``logprob`` / ``top_logprobs`` are the model's **raw**
    distribution (softmax of the logits: no temperature, no filters); the ``filtered_*``
    extension fields are the distribution the token was actually drawn from."""

    token: str
    logprob: float
    bytes: Optional[list[int]] = None
    id: Optional[int] = Field(None, description="extension: the token id")
    top_logprobs: list[TopLogprob] = []
    filtered_logprob: Optional[float] = Field(None, description="extension: under the sampling distribution")
    filtered_top_logprobs: Optional[list[TopLogprob]] = Field(
        None, description="extension: the most likely tokens after penalties, temperature and filters")


class ChoiceLogprobs(_Response):
    content: Optional[list[TokenLogprob]] = None


class CompletionTokensDetails(_Response):
    reasoning_tokens: int = 0


class Usage(_Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: Optional[CompletionTokensDetails] = None


# --------------------------------------------------------------------------- chat


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart], None] = None
    name: Optional[str] = None
    reasoning_content: Optional[str] = Field(None, description="thinking a client sends back: dropped")
    reasoning: Optional[str] = Field(None, description="thinking a client sends back: dropped")


class ChatCompletionRequest(SamplingFields):
    model: str
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1, description="deprecated name of max_completion_tokens")
    max_completion_tokens: Optional[int] = Field(None, ge=1, description="tokens to generate, thinking included")
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)
    reasoning_effort: Optional[Literal[EFFORTS]] = Field(
        None, description="the reasoning level: none, low, medium, high (minimal = low); default: the "
                          "system message's 'Reasoning:' line, else medium")
    thinking_budget: Optional[int] = Field(None, ge=0, description="extension: at most this many thinking tokens")
    return_token_ids: bool = Field(False, description=TOKEN_IDS)
    reply_prefix: Optional[list[int]] = Field(
        None, description="extension: token ids the reply starts with (e.g. an earlier reply's token_ids up to "
                          "one token, then another candidate there: a branch); the model continues after them, "
                          "and the response holds the continuation only")


class AssistantMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: Optional[str] = None
    reasoning_content: Optional[str] = None
    reasoning: Optional[str] = Field(None, description="the same text as reasoning_content")


class ChatChoice(_Response):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: Optional[ChoiceLogprobs] = None
    token_ids: Optional[list[int]] = Field(None, description=TOKEN_IDS)


class ChatCompletion(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: Optional[str] = None
    prompt_token_ids: Optional[list[int]] = Field(None, description=TOKEN_IDS)


class ChatDelta(_Response):
    role: Optional[Literal["assistant"]] = None
    content: Optional[str] = None
    reasoning_content: Optional[str] = None
    reasoning: Optional[str] = None


class ChatChunkChoice(_Response):
    index: int
    delta: ChatDelta
    finish_reason: Optional[Literal["stop", "length"]] = None
    logprobs: Optional[ChoiceLogprobs] = None
    token_ids: Optional[list[int]] = Field(None, description=TOKEN_IDS + "; in a chunk, the ids it adds")


class ChatCompletionChunk(_Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Optional[Usage] = None
    system_fingerprint: Optional[str] = None
    prompt_token_ids: Optional[list[int]] = Field(None, description=TOKEN_IDS + "; in the first chunk")


# --------------------------------------------------------------------------- completions


class CompletionRequest(SamplingFields):
    model: str
    prompt: Union[str, list[str], list[int], list[list[int]]] = Field(
        ..., description="a string, strings, token ids, or lists of token ids")
    max_tokens: int = Field(16, ge=0, description="0 with echo scores the prompt without generating")
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0, le=5, description="the most likely alternatives per token")
    return_token_ids: bool = Field(False, description=TOKEN_IDS)


class CompletionLogprobs(_Response):
    tokens: list[str]
    token_logprobs: list[Optional[float]]
    top_logprobs: list[Optional[dict[str, float]]]
    text_offset: list[int]


class CompletionChoice(_Response):
    index: int
    text: str
    finish_reason: Optional[Literal["stop", "length"]] = None
    logprobs: Optional[CompletionLogprobs] = None
    prompt_token_ids: Optional[list[int]] = Field(None, description=TOKEN_IDS + "; in a stream, in the "
                                                                                 "choice's first chunk")
    token_ids: Optional[list[int]] = Field(None, description=TOKEN_IDS)


class Completion(_Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Optional[Usage] = None
    system_fingerprint: Optional[str] = None


# --------------------------------------------------------------------------- models, tokens


class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lanternlm"
    stage: Optional[str] = Field(None, description="extension: the stage that made the run (pretrain, sft, ...)")
    chat: bool = Field(False, description="extension: whether the model takes chat completions")
    context_length: int = Field(0, description="extension: the context window in tokens")


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class SamplingPreset(_Response):
    """A named sampling setting of the common cheat sheet (``lanternlm.sampling.PRESETS``)."""

    name: str
    temperature: float
    top_k: int
    top_p: float
    min_p: float


class PresetList(_Response):
    object: Literal["list"] = "list"
    data: list[SamplingPreset]


class Health(_Response):
    status: Literal["ok"] = "ok"
    models: dict[str, dict[str, int]]


class TokenizeRequest(_Request):
    model: str
    prompt: Optional[str] = None
    messages: Optional[list[ChatMessage]] = Field(None, min_length=1)
    add_generation_prompt: bool = True
    reasoning_effort: Optional[Literal[EFFORTS]] = None


class TokenPiece(_Response):
    id: int
    text: str
    bytes: list[int]


class TokenizeResponse(_Response):
    tokens: list[int]
    count: int
    max_model_len: int
    pieces: list[TokenPiece]


class DetokenizeRequest(_Request):
    model: str
    tokens: list[int]


class DetokenizeResponse(_Response):
    prompt: str
    pieces: list[TokenPiece] = Field([], description="extension: each token's text and bytes")


# --------------------------------------------------------------------------- the glass box


class FilterSetting(_Request):
    """One sampling setting whose effect on the next-token distribution is shown."""

    name: str = Field(..., max_length=100)
    temperature: float = Field(1.0, ge=0, le=2)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    min_p: float = Field(0.0, ge=0, le=1)


class InspectText(_Request):
    """What to look at: a text, or token ids as they are (e.g. a chat's prompt_token_ids and
    reply token_ids, chat markers included)."""

    model: str
    text: Optional[str] = Field(None, min_length=1, description="the text; the document separator goes first "
                                                                 "with bos")
    tokens: Optional[list[int]] = Field(None, min_length=1, description="extension: token ids instead of text")
    bos: bool = True


class NextTokenRequest(InspectText):
    k: int = Field(10, ge=1, le=100, description="candidates shown")
    settings: Optional[list[FilterSetting]] = Field(
        None, max_length=16, description="default: three temperatures, top-k 5 and top-p 0.9")


class DistributionOut(_Response):
    name: str
    params: dict[str, Union[float, int, None]]
    probs: list[float]
    kept: int
    entropy: float


class Candidate(_Response):
    id: int
    label: str


class NextTokenOut(_Response):
    text: str
    ids: list[int]
    candidates: list[Annotated[tuple[int, str], _tuple("integer", "string", description="(token id, label)")]]
    raw: DistributionOut
    settings: list[DistributionOut]


class AttentionRequest(InspectText):
    layer: int = Field(0, ge=0)
    head: int = Field(0, ge=0)
    query: Optional[str] = Field(None, description="a token of the text whose row is summarised")


class Attended(_Response):
    index: int
    label: str
    weight: float


class AttentionOut(_Response):
    ids: list[int]
    labels: list[str]
    layer: int
    head: int
    matrix: list[list[float]] = Field(..., description="matrix[i][j]: how much position i attends to j")
    query: Optional[int] = None
    top: list[Annotated[tuple[int, str, float], _tuple("integer", "string", "number",
                                                       description="(position, label, weight)")]] = Field(
        ..., description="with a query: the positions it attends to most")
    sliding_window: Optional[int] = None
    rollout: Optional[list[list[float]]] = None


class EmbeddingsRequest(_Request):
    model: str
    words: list[str] = Field([], max_length=32, description="words that are one token (' word' or 'word')")
    tokens: list[int] = Field([], max_length=32, description="extension: token ids (beside or instead of words)")
    k: int = Field(8, ge=1, le=50)
    map_neighbours: int = Field(3, ge=0, le=20)


class NeighbourOut(_Response):
    token: int
    label: str
    similarity: float


class WordEmbeddingOut(_Response):
    word: str
    token: int
    label: str
    neighbours: list[NeighbourOut]


class MapPoint(_Response):
    label: str
    kind: Literal["word", "neighbour"]
    x: float
    y: float


class EmbeddingsOut(_Response):
    words: list[WordEmbeddingOut]
    missing: dict[str, list[str]]
    map: list[MapPoint]
    explained: list[float]


class ModelInfo(_Response):
    name: str
    stage: Optional[str]
    parameters: int
    layers: int
    heads: int
    kv_heads: int
    width: int
    context: int
    vocab: int
    memory: dict[str, dict[str, int]] = Field(
        ..., description="estimated bytes per dtype: weights, kv_cache (full context), activations, runtime")
    device: str = Field("cpu", description="where the server runs the model")
    dtype: str = Field("float32", description="the served weights' type")
    machine: dict[str, int] = Field({}, description="total memory of this machine in bytes: RAM and each GPU")
