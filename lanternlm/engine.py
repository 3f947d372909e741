"""Inference: the autoregressive loop, over token ids only (the tokenizer owns text).

The loop the seed describes, made fast with a KV cache::

    prompt ids ──prefill──► KV cache + logits of the last prompt position
                                  │
          ┌───────────────────────┘
          ▼
    logits ──sampling (penalty → temperature → top-k → top-p → min-p)──► next token
          ▲                                                                   │
          └────────────── decode: feed the one new token per row ◄────────────┘

1. **Prefill**: all prompts go through the model once, right-padded to the longest,
   computing the vocabulary-sized logits only at each row's last prompt position (row
   b's first distribution); the cache is then truncated to each prompt's real length.
2. **Decode**: every step feeds the batch's newest tokens, ``(B, 1)``, and reads one
   distribution per row. A row that finished keeps riding along (its tokens are thrown
   away): the batch shape never changes, so nothing is re-allocated per step.
3. **Thinking budget** (optional, :class:`ThinkingBudget`): a row inside a thinking
   segment (after ``think``, before ``end_think``; the prompt may end inside one) that has
   generated ``budget`` thinking tokens gets ``end_think`` forced as its next token, so
   the answer follows. The forced token's log-probabilities are still the model's.
4. **Stop** a row at one of the ``stop_tokens`` (finish reason ``"stop"``; the stop token
   is not part of the completion), after ``max_tokens`` (``"length"``), or when prompt +
   completion fill the context window (``"context"``). Stop *strings* need text, so they
   are handled one level up, in :mod:`lanternlm.generate`.

Prompts longer than the context window are an error, unless ``truncate="left"``: then the
oldest prompt tokens are dropped so that the prompt plus ``max_tokens`` fits the window,
keeping at least half the window of prompt (the model then sees the latest text).

Sampling is reproducible: each call draws from its own ``torch.Generator`` seeded by
``SamplingParams.seed``. On request every generated token comes with its log-probability
and the top alternatives, under the model's raw distribution *and* under the filtered
distribution it was actually drawn from (see :class:`TokenEvent`).

Speed: on CUDA with ``cuda_graphs=True`` the decode step is captured once as a CUDA graph
over a static KV cache and replayed, removing the per-step Python and launch overhead.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from .errors import LanternError
from .model import GPT, KVCache
from .sampling import SamplingParams, greedy, process_logits, sample_from_logits, token_presence

FINISH_REASONS = ("stop", "length", "context")

# int8 weights (Engine(int8=True)) for linear layers with at least this many entries.
INT8_MIN_WEIGHTS = 512 * 512


@dataclasses.dataclass(frozen=True)
class ThinkingBudget:
    """At most ``budget`` tokens inside a thinking segment, which ``think`` opens and
    ``end_think`` closes; then ``end_think`` is forced. The engine sees only these ids
    (:func:`lanternlm.generate.thinking_budget` finds them in a tokenizer)."""

    think: int
    end_think: int
    budget: int

    def __post_init__(self) -> None:
        if self.budget < 0:
            raise LanternError(f"thinking budget must be >= 0 tokens, got {self.budget}")

    def inside(self, prompt: Sequence[int]) -> bool:
        """Whether ``prompt`` ends inside a thinking segment.

        >>> ThinkingBudget(think=5, end_think=6, budget=8).inside([1, 5, 2])
        True
        >>> ThinkingBudget(think=5, end_think=6, budget=8).inside([1, 5, 2, 6])
        False
        """
        for token in reversed(prompt):
            if token in (self.think, self.end_think):
                return token == self.think
        return False


@dataclasses.dataclass
class TokenEvent:
    """One generated token of one row, as the stream reports it.

    ``logprob`` is the token's log-probability under the model's raw distribution
    (softmax of the logits, temperature 1, no filters); ``sampled_logprob`` under the
    distribution it was drawn from (after penalty, temperature and filters; 0.0 when
    greedy). ``raw_top`` and ``filtered_top`` list the most likely ``(token, probability)``
    pairs of each (the filtered one leaves out removed tokens). ``finish_reason`` is None
    while the row goes on; ``"stop"`` marks a stop token, which is not part of the text.
    """

    row: int
    index: int  # position in the row's completion, 0-based
    token: int
    finish_reason: str | None
    logprob: float | None = None
    sampled_logprob: float | None = None
    raw_top: list[tuple[int, float]] | None = None
    filtered_top: list[tuple[int, float]] | None = None


@dataclasses.dataclass
class Completion:
    """The result for one prompt."""

    prompt: list[int]  # the ids the model saw (after truncation, if any)
    tokens: list[int]  # generated ids, without the stop token
    finish_reason: str  # "stop", "length" or "context"
    stop_token: int | None = None
    events: list[TokenEvent] | None = None  # per token, when details were requested

    @property
    def logprobs(self) -> list[float] | None:
        """Raw log-probability of each generated token (stop token excluded)."""
        if self.events is None:
            return None
        return [e.logprob for e in self.events[:len(self.tokens)]]


@dataclasses.dataclass
class _Step:
    """What one decode step produced, still on the device."""

    tokens: torch.Tensor  # (B,) the chosen ids
    hit_stop: torch.Tensor  # (B,) bool: chose a stop token
    raw_logprobs: torch.Tensor | None = None  # (B, V)
    filtered_logprobs: torch.Tensor | None = None  # (B, V)


class Engine:
    """Generates token ids from a :class:`~lanternlm.model.GPT` with a KV cache.

    ``dtype`` (e.g. ``torch.bfloat16``) casts the model's weights in place; the cache
    uses the same dtype. ``int8=True`` (CPU) runs a copy of the model whose linear layers
    and output head hold int8 weights (see :func:`quantize_int8`): decoding reads a
    quarter of the fp32 bytes. ``vocab_limit`` is the number of real token ids (the
    tokenizer's vocabulary): the model's table is padded up to a multiple of 64 for speed,
    and ids at or above the limit are never produced (their logits are set to -inf).
    Sampling always happens in fp32. ``cuda_graphs`` (CUDA only) replays the decode step
    as a captured CUDA graph over a static cache.

    >>> from lanternlm.model import GPTConfig
    >>> torch.manual_seed(0) and None
    >>> engine = Engine(GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=1, n_head=2, n_embd=8)))
    >>> out = engine.generate([[1, 2, 3], [4]], max_tokens=5, sampling=SamplingParams(seed=0))
    >>> [(len(c.tokens), c.finish_reason) for c in out]
    [(5, 'length'), (5, 'length')]
    """

    def __init__(self, model: GPT, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, cuda_graphs: bool = False,
                 vocab_limit: int | None = None, int8: bool = False) -> None:
        device = torch.device(device) if device is not None else next(model.parameters()).device
        if cuda_graphs and device.type != "cuda":
            raise LanternError(f"Engine: cuda_graphs needs a CUDA device, got {device}")
        if int8:
            if device.type != "cpu" or dtype not in (None, torch.float32):
                raise LanternError(f"Engine: int8 weights run on the CPU with fp32 activations "
                                   f"(got device {device}, dtype {dtype})")
            model = quantize_int8(model.to(device="cpu", dtype=torch.float32))
        if vocab_limit is not None and not 0 < vocab_limit <= model.config.vocab_size:
            raise LanternError(f"Engine: vocab_limit={vocab_limit} must be in 1..{model.config.vocab_size}")
        self.vocab_limit = vocab_limit if vocab_limit is not None else model.config.vocab_size
        self.model = model.to(device=device, dtype=dtype).eval()
        self.config = model.config
        self.device = device
        self.dtype = next(model.parameters()).dtype
        if device.type == "cpu" and self.dtype == torch.float32 and not int8:
            _head_column_major(model)
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[tuple[int, int], _GraphDecoder] = {}

    # ------------------------------------------------------------------ public API

    def generate(self, prompts: Sequence[Sequence[int]], *, max_tokens: int,
                 sampling: SamplingParams = SamplingParams(), stop_tokens: Sequence[int] = (),
                 top_alternatives: int = 0, logprobs: bool = False,
                 truncate: str | None = None, thinking: ThinkingBudget | None = None) -> list[Completion]:
        """Complete every prompt (a batch); see the module docstring for the rules.

        ``logprobs=True`` or ``top_alternatives > 0`` records a :class:`TokenEvent` per
        token in ``Completion.events``. ``thinking`` caps thinking segments (see the module
        docstring).
        """
        details = logprobs or top_alternatives > 0
        if details:
            generation = self.stream(prompts, max_tokens=max_tokens, sampling=sampling,
                                     stop_tokens=stop_tokens, top_alternatives=top_alternatives,
                                     truncate=truncate, thinking=thinking)
            events: list[list[TokenEvent]] = [[] for _ in prompts]
            for event in generation:
                events[event.row].append(event)
            return [_completion(p, ev) for p, ev in zip(generation.prompts, events)]

        prompts = self._check(prompts, max_tokens, truncate)
        steps = self._steps(prompts, max_tokens, sampling, stop_tokens, details=False, thinking=thinking)
        budgets = self._budgets(prompts, max_tokens)
        chosen, stops = [], []
        for step in steps:
            chosen.append(step.tokens)
            stops.append(step.hit_stop)
        tokens = torch.stack(chosen, dim=1).tolist()  # (B, steps): one transfer at the end
        hit = torch.stack(stops, dim=1).tolist()  # (B, steps)
        completions = []
        for b, prompt in enumerate(prompts):
            row = tokens[b][:budgets[b]]
            first_stop = next((i for i, h in enumerate(hit[b][:budgets[b]]) if h), None)
            if first_stop is not None:
                completions.append(Completion(prompt, row[:first_stop], "stop", row[first_stop]))
            else:
                completions.append(Completion(prompt, row, self._limit_reason(prompt, max_tokens)))
        return completions

    def stream(self, prompts: Sequence[Sequence[int]], *, max_tokens: int,
               sampling: SamplingParams = SamplingParams(), stop_tokens: Sequence[int] = (),
               top_alternatives: int = 0, truncate: str | None = None,
               thinking: ThinkingBudget | None = None) -> "Generation":
        """Start a generation; iterate it for :class:`TokenEvent` s as they are produced.

        Within a step, events come in row order; a row's last event carries its
        ``finish_reason``. ``Generation.stop(row)`` ends a row early (e.g. at a stop
        string found in the text).
        """
        prompts = self._check(prompts, max_tokens, truncate)
        return Generation(self, prompts, max_tokens, sampling, stop_tokens, top_alternatives, thinking)

    # ------------------------------------------------------------------ checks

    def _check(self, prompts: Sequence[Sequence[int]], max_tokens: int,
               truncate: str | None) -> list[list[int]]:
        block, vocab = self.config.block_size, self.config.vocab_size
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise LanternError(f"max_tokens={max_tokens!r}: must be a positive integer")
        if truncate not in (None, "left"):
            raise LanternError(f"truncate={truncate!r}: choose None (error on long prompts) or 'left'")
        if len(prompts) == 0:
            raise LanternError("generate: no prompts given")
        checked = []
        for b, prompt in enumerate(prompts):
            prompt = [int(t) for t in prompt]
            if not prompt:
                raise LanternError(f"prompt {b} is empty: give at least one token "
                                   "(e.g. the tokenizer's <|endoftext|>, which starts every document)")
            bad = [t for t in prompt if not 0 <= t < vocab]
            if bad:
                raise LanternError(f"prompt {b}: token ids {bad[:5]} are outside the model's "
                                   f"vocabulary 0..{vocab - 1}")
            if len(prompt) >= block:
                if truncate != "left":
                    raise LanternError(
                        f"prompt {b} has {len(prompt)} tokens but the context window is {block} "
                        f"and must leave room for at least one new token; shorten the prompt or "
                        f"pass truncate='left' (--truncate left) to drop its oldest tokens")
            if truncate == "left":
                keep = block - min(max_tokens, block // 2)
                prompt = prompt[-keep:]
            checked.append(prompt)
        return checked

    def _budgets(self, prompts: list[list[int]], max_tokens: int) -> list[int]:
        """How many tokens each row may generate: max_tokens, or what the window leaves."""
        return [min(max_tokens, self.config.block_size - len(p)) for p in prompts]

    def _limit_reason(self, prompt: list[int], max_tokens: int) -> str:
        return "length" if max_tokens <= self.config.block_size - len(prompt) else "context"

    # ------------------------------------------------------------------ the loop

    @torch.inference_mode()
    def _steps(self, prompts: list[list[int]], max_tokens: int, sampling: SamplingParams,
               stop_tokens: Sequence[int], details: bool,
               stopped: torch.Tensor | None = None,
               thinking: ThinkingBudget | None = None) -> Iterator[_Step]:
        """Prefill, then yield one :class:`_Step` per decode step until every row is done.

        ``stopped`` (B,) bool, on the device, may be set by the caller between steps to
        end rows early. Rows whose budget is spent are retired from the cache so that the
        others can use the whole window.
        """
        B, V = len(prompts), self.config.vocab_size
        lengths = [len(p) for p in prompts]
        budgets = self._budgets(prompts, max_tokens)
        cache_len = min(self.config.block_size, max(lengths) + max_tokens)
        cache = KVCache(self.config, B, cache_len, device=self.device, dtype=self.dtype,
                        static=self.cuda_graphs)
        generator = torch.Generator(device=self.device)
        if sampling.seed is None:
            generator.seed()
        else:
            generator.manual_seed(sampling.seed)
        stop = torch.tensor(sorted(set(stop_tokens)), dtype=torch.long, device=self.device)
        done = torch.zeros(B, dtype=torch.bool, device=self.device)  # stopped by a stop token
        if stopped is None:
            stopped = torch.zeros_like(done)

        padded = torch.full((B, max(lengths)), -1, dtype=torch.long)
        for b, prompt in enumerate(prompts):
            padded[b, :len(prompt)] = torch.tensor(prompt)
        padded = padded.to(self.device)  # (B, T) with -1 after each prompt
        present = (token_presence(padded, V) if sampling.repetition_penalty != 1.0 else None)
        logits = self._prefill(padded.clamp(min=0), lengths, cache)  # (B, V)
        decode = self._decoder(B, cache)

        plain_greedy = sampling.greedy and sampling.repetition_penalty == 1.0
        no_hit = torch.zeros_like(done)
        if thinking is not None:  # per row: inside a thinking segment, and its tokens so far
            in_think = torch.tensor([thinking.inside(p) for p in prompts], device=self.device)
            thought = torch.zeros(B, dtype=torch.long, device=self.device)
        for step in range(max(budgets)):
            if step > 0:
                retired = [b for b in range(B) if budgets[b] <= step]
                if retired and cache.max_length + 1 > cache.max_len:
                    self._retire(cache, retired)
                logits = decode(tokens)  # (B, V)
            logits = logits.float()
            if self.vocab_limit < V:
                logits[:, self.vocab_limit:] = float("-inf")  # padding rows are not tokens
            filtered = logits if plain_greedy and not details else process_logits(logits, sampling, present)
            tokens = greedy(filtered) if sampling.greedy else sample_from_logits(filtered, generator)
            if thinking is not None:
                tokens = torch.where(in_think & (thought >= thinking.budget), thinking.end_think, tokens)
                opened, closed = tokens == thinking.think, tokens == thinking.end_think
                thought = torch.where(opened, 0, thought + (in_think & ~closed).long())
                in_think = (in_think | opened) & ~closed
            hit = torch.isin(tokens, stop) & ~done & ~stopped if len(stop) else no_hit
            if present is not None:
                present.scatter_(1, tokens[:, None], True)
            result = _Step(tokens, hit)
            if details:
                result.raw_logprobs = F.log_softmax(logits, dim=-1)
                result.filtered_logprobs = F.log_softmax(filtered, dim=-1)
            yield result
            if len(stop):  # a device sync, needed only when rows can end early
                done |= hit
                if bool((done | stopped).all()):
                    return

    def _prefill(self, padded: torch.Tensor, lengths: list[int], cache: KVCache) -> torch.Tensor:
        """Run the right-padded prompts (B, T) through the model into ``cache``; return the
        logits at each row's last prompt position (B, V)."""
        T = padded.shape[1]
        last = torch.tensor(lengths, device=self.device) - 1  # (B,) each row's last prompt position
        logits = self.model(padded, cache=cache, logits_at=last).logits[:, 0]  # (B, V)
        if min(lengths) < T:
            cache.truncate(lengths)  # forget the padding
        return logits

    @staticmethod
    def _retire(cache: KVCache, rows: list[int]) -> None:
        """Empty the cache rows of finished rows so the active ones have room."""
        keep = torch.ones_like(cache.lengths, dtype=torch.bool)
        keep[rows] = False
        cache.truncate(torch.where(keep, cache.lengths, 0))

    def _decoder(self, batch_size: int, cache: KVCache):
        """The decode step: tokens (B,) -> next logits (B, V), eager or as a CUDA graph."""
        if not self.cuda_graphs:
            return lambda tokens: self.model(tokens[:, None], cache=cache).logits[:, -1]
        key = (batch_size, cache.max_len)
        if key not in self._graphs:
            self._graphs[key] = _GraphDecoder(self.model, cache)
        graph = self._graphs[key]
        graph.bind(cache)
        return graph


def quantize_int8(model: GPT) -> GPT:
    """A copy of ``model`` for CPU inference with int8 weights (dynamic quantization).

    Every large ``nn.Linear`` (attention and MLP matrices of at least
    ``INT8_MIN_WEIGHTS`` entries, and the output head, which gets its own copy of the
    embedding matrix when the two are tied) stores int8 weights with one scale per
    output row; at each call the activations are quantized with one scale per tensor, the
    product runs in int8 (fbgemm) and comes back in fp32. Decoding is bound by reading
    the weights, so a quarter of the bytes makes it several times faster (about 4x for
    GPT-2 124M's head at batch 1 here). The price: logits move by about 1-2% of their
    range, and, as the activation scale covers the whole batch, a row's result can
    differ slightly with its batch companions. Embeddings and norms stay fp32.
    """
    import warnings

    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as err:  # pragma: no cover - removed from some future torch
        raise LanternError(f"int8 weights need torch.ao.quantization, missing here: {err}") from err
    model = copy.deepcopy(model).eval()
    if model.lm_head is None:  # tied embeddings: the head gets its own (quantized) copy
        vocab, width = model.wte.weight.shape
        model.lm_head = torch.nn.Linear(width, vocab, bias=False)
        model.lm_head.weight = torch.nn.Parameter(model.wte.weight.detach().clone())
    # Small matrices stay fp32: below about 512 x 512 the per-call cost of quantizing the
    # activations outweighs the bytes saved (measured: 128 x 384 takes 24 us in int8 vs
    # 10 us in fp32 at batch 1; 768 x 3072 takes 79 us vs 214 us).
    spec = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)
            and (name == "lm_head" or module.weight.numel() >= INT8_MIN_WEIGHTS)}
    with warnings.catch_warnings():  # the eager-mode API warns that it is moving to torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, spec, dtype=torch.qint8)


def _head_column_major(model: GPT) -> None:
    """Store the output head (vocab, C) column-major: same values, same shape, other strides.

    Decoding multiplies one row per sequence by the vocabulary-sized head, the largest
    matrix of a small model. On CPU in fp32 that product reads a column-major matrix in
    order and runs 2-3.5x faster (measured for (50304, 128) and (50304, 768) at batch 1
    and 16; for bf16 and the square block matrices the layouts are about even, so they
    stay as they are). With tied embeddings the token-embedding lookup shares the matrix
    and is unaffected (one row per token).
    """
    head = model.wte.weight if model.lm_head is None else model.lm_head.weight
    if head.stride(0) == 1:
        return
    with torch.no_grad():
        head.data = head.data.t().contiguous().t()  # (V, C) with strides (1, V)


class _GraphDecoder:
    """The decode step captured once as a CUDA graph over one static cache's buffers.

    Replaying a graph re-runs its kernels on the same memory, so the decoder owns the
    cache storage: :meth:`bind` copies a freshly prefilled cache's contents and lengths
    into it and points the cache at the shared buffers. The cache's Python-side
    ``max_length`` is advanced here, as the model would in eager mode.
    """

    def __init__(self, model: GPT, cache: KVCache) -> None:
        self.model = model
        self.cache = cache
        self.tokens = torch.zeros(cache.batch_size, dtype=torch.long, device=cache.k.device)
        saved = cache.lengths.clone(), cache.max_length
        cache.max_length = 0  # capture with room for one step; lengths are restored below
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up runs (allocator, kernels' autotuning)
            for _ in range(2):
                model(self.tokens[:, None], cache=cache)
                cache.lengths.copy_(saved[0])
                cache.max_length = 0
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = model(self.tokens[:, None], cache=cache).logits[:, -1]  # (B, V)
        cache.lengths.copy_(saved[0])
        cache.max_length = saved[1]

    def bind(self, cache: KVCache) -> None:
        if cache is self.cache:
            return
        self.cache.k.copy_(cache.k)
        self.cache.v.copy_(cache.v)
        self.cache.lengths.copy_(cache.lengths)
        cache.k, cache.v, cache.lengths = self.cache.k, self.cache.v, self.cache.lengths
        self.cache.max_length = cache.max_length
        self.cache = cache

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.cache.max_length + 1 > self.cache.max_len:
            raise LanternError("KV cache full")  # the engine retires rows before this
        self.tokens.copy_(tokens)
        self.graph.replay()
        self.cache.max_length += 1
        return self.logits


class Generation:
    """A generation in progress: iterate it for :class:`TokenEvent` s.

    ``stop(row)`` ends a row early (its next event is not produced); the loop ends when
    every row has finished. ``prompts`` holds the ids the model saw.
    """

    def __init__(self, engine: Engine, prompts: list[list[int]], max_tokens: int,
                 sampling: SamplingParams, stop_tokens: Sequence[int], top_alternatives: int,
                 thinking: ThinkingBudget | None = None):
        if top_alternatives < 0:
            raise LanternError(f"top_alternatives={top_alternatives}: must be >= 0")
        self.engine, self.prompts = engine, prompts
        self.top_alternatives = min(top_alternatives, engine.config.vocab_size)
        self.budgets = engine._budgets(prompts, max_tokens)
        self.reasons = [engine._limit_reason(p, max_tokens) for p in prompts]
        self.finished = [False] * len(prompts)
        self._stopped = torch.zeros(len(prompts), dtype=torch.bool, device=engine.device)
        self._steps = engine._steps(prompts, max_tokens, sampling, stop_tokens, details=True,
                                    stopped=self._stopped, thinking=thinking)
        self._events = self._run()

    def stop(self, row: int) -> None:
        self.finished[row] = True
        self._stopped[row] = True

    def __iter__(self) -> Iterator[TokenEvent]:
        return self._events

    def __next__(self) -> TokenEvent:
        return next(self._events)

    def close(self) -> None:
        self._events.close()

    def _run(self) -> Iterator[TokenEvent]:
        k = self.top_alternatives
        for index, step in enumerate(self._steps):
            tokens, hit = step.tokens.tolist(), step.hit_stop.tolist()
            raw = step.raw_logprobs.gather(1, step.tokens[:, None])[:, 0].tolist()
            sampled = step.filtered_logprobs.gather(1, step.tokens[:, None])[:, 0].tolist()
            if k:
                raw_top = step.raw_logprobs.topk(k, dim=-1)
                filtered_top = step.filtered_logprobs.topk(k, dim=-1)
                raw_top = _pairs(raw_top.indices.tolist(), raw_top.values.exp().tolist())
                filtered_top = _pairs(filtered_top.indices.tolist(), filtered_top.values.exp().tolist())
            for b in range(len(tokens)):
                if self.finished[b]:
                    continue
                reason = "stop" if hit[b] else (self.reasons[b] if index + 1 >= self.budgets[b] else None)
                if reason is not None:
                    self.finished[b] = True
                yield TokenEvent(b, index, tokens[b], reason, raw[b], sampled[b],
                                 raw_top[b] if k else None,
                                 [pair for pair in filtered_top[b] if pair[1] > 0] if k else None)
            if all(self.finished):
                self._steps.close()
                return


def _pairs(ids: list[list[int]], probs: list[list[float]]) -> list[list[tuple[int, float]]]:
    return [list(zip(row_ids, row_probs)) for row_ids, row_probs in zip(ids, probs)]


def _completion(prompt: list[int], events: list[TokenEvent]) -> Completion:
    last = events[-1]
    if last.finish_reason == "stop":
        return Completion(prompt, [e.token for e in events[:-1]], "stop", last.token, events)
    # a row ended by Generation.stop() has no finish reason on its last event
    return Completion(prompt, [e.token for e in events], last.finish_reason or "stop", None, events)
