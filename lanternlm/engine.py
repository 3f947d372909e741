"""Inference over token ids (the tokenizer owns text): a scheduler of requests over one KV cache.

A :class:`Request` is a prompt with its own settings: sampling (with its seed), stop tokens,
a thinking budget, ``n`` samples, log-probabilities. A :class:`Scheduler` serves many at
once: each sequence (one sample of one request) holds a row of a per-row KV cache while it
runs; requests join the running batch when rows are free and leave it when done, so a
server can add a request at any time::

    submit(request) ──► waiting (first come, first served)
                              │ admitted when the request's n rows are free
    step():                   ▼
      1. decode   last step's tokens (n, 1) ──model──► logits (n, V)     rows 0 .. n-1
      2. admit    new prompts, right-padded ──model──► logits (k, V)     rows n .. n+k-1
                  (n samples of a prompt: one prefill, its row copied n-1 times)
      3. choose   each row: penalties → temperature → top-k → top-p → min-p by its own
                  settings, then its own random number picks the token
      4. report   one TokenEvent per row; finished rows leave the batch

1. **Rows stay compacted**: the n running sequences occupy cache rows 0 .. n-1, so a decode
   step is one forward over a view of those rows, ``(n, 1)``, whatever the cache's capacity.
   When a sequence finishes (or is cancelled) the last running row moves into its place:
   only its filled positions are copied, and its per-row state (next token, random
   numbers, repetition mask, thinking state) moves with it; free rows have length 0. A
   leaving sequence thus costs one row's copy, where leaving holes would make every decode
   step pay for the whole capacity (or gather the live rows' caches every step).
2. **Prefill**: the requests admitted in a step run through the model together,
   right-padded to the longest, with the vocabulary-sized logits computed only at each
   prompt's last position (its first distribution); the cache rows are then truncated to
   the real lengths. A request's ``n`` samples share one prefill: its row is copied into
   n-1 more.
3. **Randomness, per request**: at submission a request draws ``u = torch.rand(n, budget,
   generator=torch.Generator().manual_seed(seed))`` (a CPU generator; ``seed=None``: one
   seeded from fresh OS randomness), where ``budget = min(max_tokens, block_size -
   len(prompt))`` counts the tokens it may generate. Token t (0-based) of sample s is
   ``sample_from_uniform(process_logits(logits, sampling, present), u[s, t:t+1])``, i.e.
   :func:`~lanternlm.sampling.sample_next_token` with that uniform (greedy takes the argmax
   and leaves u unused; so does a forced token). A seeded request therefore gives the same
   tokens whatever else is in the batch (up to float rounding), and sample 0 is the same
   whatever n. Rows are filtered by their own settings: one call of the filters per group
   of rows with equal settings.
4. **Thinking budget** (optional, :class:`ThinkingBudget`): a row inside a thinking segment
   (after ``think``, before ``end_think``; the prompt may end inside one) that has generated
   ``budget`` thinking tokens gets ``end_think`` forced as its next token, so the answer
   follows. A forced token is marked (:attr:`TokenEvent.forced`, :attr:`Completion.forced`:
   RL leaves it out of the gradient); its log-probabilities are still the model's.
5. **Stop** a row at one of its ``stop_tokens`` (finish reason ``"stop"``; the stop token is
   not part of the completion), after ``max_tokens`` (``"length"``), or when prompt +
   completion fill the context window (``"context"``). Stop *strings* need text, so they
   are handled one level up, in :mod:`lanternlm.generate`.

Prompts longer than the context window are an error, unless ``truncate="left"``: then the
oldest prompt tokens are dropped so that the prompt plus ``max_tokens`` fits the window,
keeping at least half the window of prompt (the model then sees the latest text).

On request every generated token comes with its log-probability and the top alternatives,
under the model's raw distribution *and* under the filtered distribution it was actually
drawn from (see :class:`TokenEvent`).

The engine does not change the model it is given, so a trainer can generate with its live
policy: forwards run without autograd and with dropout off, and the model's training flags
are put back after every step. :meth:`Engine.generate` and :meth:`Engine.stream` drive a
scheduler of their own for one batch of prompts, each prompt a request with the call's
settings.

Speed: on CUDA with ``cuda_graphs=True`` the decode step over every row of a static cache
(free rows riding along) is captured once as a CUDA graph and replayed, removing the
per-step Python and launch overhead.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from .errors import LanternError
from .model import GPT, KVCache
from .sampling import SamplingParams, greedy, process_logits, sample_from_uniform, token_presence

# The weight types a front-end may name (``--dtype``); "int8" is Engine(int8=True), fp32 activations.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": None}

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
class Request:
    """One prompt to complete with its own settings, ``n`` times (samples share one prefill).

    ``logprobs=True`` or ``top_alternatives > 0`` fills the log-probability fields of its
    :class:`TokenEvent` s. The fields that need no model are checked here; the prompt's
    ids and length are checked against the model by :meth:`Scheduler.submit`.
    """

    prompt: list[int]
    max_tokens: int
    sampling: SamplingParams = SamplingParams()
    stop_tokens: Sequence[int] = ()
    thinking: ThinkingBudget | None = None
    n: int = 1
    top_alternatives: int = 0
    logprobs: bool = False
    truncate: str | None = None  # None: a prompt too long for the window is an error; "left": cut its start

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise LanternError(f"max_tokens={self.max_tokens!r}: must be a positive integer")
        if self.truncate not in (None, "left"):
            raise LanternError(f"truncate={self.truncate!r}: choose None (error on long prompts) or 'left'")
        if not isinstance(self.n, int) or self.n < 1:
            raise LanternError(f"n={self.n!r}: the number of samples must be a positive integer")
        if self.top_alternatives < 0:
            raise LanternError(f"top_alternatives={self.top_alternatives}: must be >= 0")
        self.prompt = [int(t) for t in self.prompt]
        if not self.prompt:
            raise LanternError("prompt is empty: give at least one token "
                               "(e.g. the tokenizer's <|endoftext|>, which starts every document)")
        self.stop_tokens = tuple(int(t) for t in self.stop_tokens)

    def model_prompt(self, block_size: int) -> list[int]:
        """The ids the model sees: the prompt, or with ``truncate="left"`` its latest tokens,
        so that they plus ``max_tokens`` fit the window, keeping at least half of it.

        >>> Request(list(range(10)), max_tokens=3, truncate="left").model_prompt(8)
        [5, 6, 7, 8, 9]
        >>> Request(list(range(10)), max_tokens=6, truncate="left").model_prompt(8)
        [6, 7, 8, 9]
        """
        if self.truncate != "left":
            return self.prompt
        return self.prompt[-(block_size - min(self.max_tokens, block_size // 2)):]


@dataclasses.dataclass
class TokenEvent:
    """One generated token of one sequence, as the stream reports it.

    ``row`` numbers the sequences in submission order, a request's samples consecutively
    (in :meth:`Engine.stream`, prompt i's sample s is row ``i * n + s``); ``request`` is the
    id :meth:`Scheduler.submit` returned and ``sample`` the sample's index in it.

    ``logprob`` is the token's log-probability under the model's raw distribution
    (softmax of the logits, temperature 1, no filters); ``sampled_logprob`` under the
    distribution it was drawn from (after penalty, temperature and filters; 0.0 when
    greedy). ``raw_top`` and ``filtered_top`` list the most likely ``(token, probability)``
    pairs of each (the filtered one leaves out removed tokens). ``finish_reason`` is None
    while the row goes on; ``"stop"`` marks a stop token, which is not part of the text.
    ``forced`` marks a token the thinking budget forced instead of sampling one.
    """

    row: int
    index: int  # position in the row's completion, 0-based
    token: int
    finish_reason: str | None
    logprob: float | None = None
    sampled_logprob: float | None = None
    raw_top: list[tuple[int, float]] | None = None
    filtered_top: list[tuple[int, float]] | None = None
    forced: bool = False
    request: int = 0
    sample: int = 0


@dataclasses.dataclass
class Completion:
    """The result for one sequence (one sample of one prompt)."""

    prompt: list[int]  # the ids the model saw (after truncation, if any)
    tokens: list[int]  # generated ids, without the stop token
    finish_reason: str  # "stop", "length" or "context"
    stop_token: int | None = None
    events: list[TokenEvent] | None = None  # per token, when details were requested
    forced: list[bool] = dataclasses.field(default_factory=list)  # per token of `tokens`: forced, not sampled

    @property
    def logprobs(self) -> list[float] | None:
        """Raw log-probability of each generated token (stop token excluded)."""
        if self.events is None:
            return None
        return [e.logprob for e in self.events[:len(self.tokens)]]


class Engine:
    """Generates token ids from a :class:`~lanternlm.model.GPT` with a KV cache, leaving the
    model as it is.

    By default the engine runs the model it is given, live: weights updated in place (an
    optimizer step) are seen by the next step. A ``device`` or ``dtype`` other than the
    model's, or ``int8=True``, makes it work on a copy made here (cast and moved, or with
    int8 weights, see :func:`quantize_int8`: on the CPU, decoding then reads a quarter of
    the fp32 bytes), which later updates of the original do not reach. The cache uses the
    engine's dtype; sampling always happens in fp32. ``vocab_limit`` is the number of real
    token ids (the tokenizer's vocabulary): the model's table is padded up to a multiple of
    64 for speed, and ids at or above the limit are never produced (their logits are set to
    -inf). ``cuda_graphs`` (CUDA only) replays the decode step as a captured CUDA graph,
    which reads the weights where they were at capture (updated in place: seen).

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
        weight = next(model.parameters())
        device = weight.device if device is None else torch.device(device)
        if cuda_graphs and device.type != "cuda":
            raise LanternError(f"Engine: cuda_graphs needs a CUDA device, got {device}")
        if vocab_limit is not None and not 0 < vocab_limit <= model.config.vocab_size:
            raise LanternError(f"Engine: vocab_limit={vocab_limit} must be in 1..{model.config.vocab_size}")
        if int8:
            if device.type != "cpu" or dtype not in (None, torch.float32):
                raise LanternError(f"Engine: int8 weights run on the CPU with fp32 activations "
                                   f"(got device {device}, dtype {dtype})")
            model = quantize_int8(model)
        elif (device.type != weight.device.type or device.index not in (None, weight.device.index)
              or dtype not in (None, weight.dtype)):
            model = copy.deepcopy(model).to(device=device, dtype=dtype)
        self.model, self.config = model, model.config
        self.device, self.dtype = next(model.parameters()).device, next(model.parameters()).dtype
        self.vocab_limit = vocab_limit if vocab_limit is not None else model.config.vocab_size
        self.cuda_graphs, self.int8 = cuda_graphs, int8
        self._modules = tuple(model.modules())
        self._column_major = self.device.type == "cpu" and self.dtype == torch.float32 and not int8
        self._head_source: torch.Tensor | None = None  # the weight the head copy was made from
        self._head_key: tuple[int, int] | None = None  # its (data_ptr, version) then
        self._head_copy: torch.Tensor | None = None
        self._graphs: dict[tuple[int, int], list[_GraphDecoder]] = {}  # free captures by shape

    # ------------------------------------------------------------------ batch drivers

    def generate(self, prompts: Sequence[Sequence[int]], *, max_tokens: int,
                 sampling: SamplingParams = SamplingParams(), stop_tokens: Sequence[int] = (),
                 top_alternatives: int = 0, logprobs: bool = False, truncate: str | None = None,
                 thinking: ThinkingBudget | None = None, n: int = 1) -> list[Completion]:
        """Complete every prompt ``n`` times: completion ``i * n + s`` is prompt i's sample s.

        See the module docstring for the rules. Each prompt is a request of its own, so
        equal prompts with a seed give equal completions: ask for different samples with
        ``n``. ``logprobs=True`` or ``top_alternatives > 0`` records a :class:`TokenEvent`
        per token in ``Completion.events``.
        """
        generation = Generation(self, [Request(p, max_tokens, sampling, stop_tokens, thinking, n,
                                               top_alternatives, logprobs, truncate) for p in prompts])
        events: list[list[TokenEvent]] = [[] for _ in generation.prompts]
        for event in generation:
            events[event.row].append(event)
        details = logprobs or top_alternatives > 0
        return [_completion(prompt, row, details) for prompt, row in zip(generation.prompts, events)]

    def stream(self, prompts: Sequence[Sequence[int]], *, max_tokens: int,
               sampling: SamplingParams = SamplingParams(), stop_tokens: Sequence[int] = (),
               top_alternatives: int = 0, truncate: str | None = None,
               thinking: ThinkingBudget | None = None, n: int = 1) -> "Generation":
        """Start a generation; iterate it for :class:`TokenEvent` s (with log-probabilities)
        as they are produced. Rows are numbered as in :meth:`generate`.

        Within a step, events come in the batch's row order; a row's last event carries
        its ``finish_reason``. ``Generation.stop(row)`` ends a row early (e.g. at a stop
        string found in the text).
        """
        return Generation(self, [Request(p, max_tokens, sampling, stop_tokens, thinking, n,
                                         top_alternatives, True, truncate) for p in prompts])

    def score(self, prompt: Sequence[int], top: int = 0) -> list[tuple[float, list[tuple[int, float]]]]:
        """The prompt's own log-probabilities under the raw distribution: for each token
        after the first, ``(log p(token | the tokens before it), [(id, logprob), ...] of the
        top most likely tokens there)`` — what an evaluation harness reads to score text.

        >>> from lanternlm.model import GPTConfig
        >>> engine = Engine(GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=1, n_head=2, n_embd=8)))
        >>> scored = engine.score([1, 2, 3], top=2)
        >>> len(scored), len(scored[0][1]), scored[0][0] <= 0
        (2, 2, True)
        """
        ids = [int(t) for t in prompt]
        if not 0 < len(ids) <= self.config.block_size:
            raise LanternError(f"score: the prompt has {len(ids)} tokens; give 1..{self.config.block_size} "
                               f"(the context window)")
        bad = [t for t in ids if not 0 <= t < self.vocab_limit]
        if bad:
            raise LanternError(f"score: token ids {bad[:5]} are outside the vocabulary 0..{self.vocab_limit - 1}")
        x = torch.tensor([ids], device=self.device)  # (1, T)
        with self._forwards():
            hidden, _ = self.model.hidden(x)  # (1, T, C)
            logprobs = torch.log_softmax(self.logits(hidden[0, :-1]), dim=-1)  # (T-1, V)
            chosen = logprobs.gather(1, x[0, 1:, None])[:, 0].tolist()  # (T-1,)
            if top:
                values, indices = logprobs.topk(min(top, self.vocab_limit), dim=-1)  # (T-1, top)
                alternatives = _pairs(indices.tolist(), values.tolist())
            else:
                alternatives = [[] for _ in chosen]
        return list(zip(chosen, alternatives))

    # ------------------------------------------------------------------ what a step runs

    @contextlib.contextmanager
    def _forwards(self) -> Iterator[None]:
        """Run forwards without autograd and with dropout off; the training flags go back after."""
        flags = [module.training for module in self._modules]
        training = any(flags)
        if training:
            self.model.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            if training:
                for module, flag in zip(self._modules, flags):
                    module.training = flag

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, V) in fp32 from final hidden states (B, C), through the
        engine's head (the int8 copy's, or :meth:`_head`); ids >= ``vocab_limit`` get -inf."""
        logits = (self.model.lm_head(hidden) if self.int8 else F.linear(hidden, self._head())).float()
        if self.vocab_limit < self.config.vocab_size:
            logits[:, self.vocab_limit:] = float("-inf")  # padding rows are not tokens
        return logits

    def weights_changed(self) -> None:
        """Forget what the engine derived from the weights (the head's copy, :meth:`_head`):
        for writes its version check cannot see, e.g. FSDP2 gathering a sharded model's
        weights into the same storage again (:func:`lanternlm.train.distributed.gathered`)."""
        self._head_source = self._head_key = self._head_copy = None

    def _head(self) -> torch.Tensor:
        """The output head's (V, C) weight as the engine multiplies by it.

        On CPU in fp32 it is the engine's own column-major copy (same values, strides
        (1, V)). Decoding multiplies one row per sequence by the vocabulary-sized head, the
        largest matrix of a small model, and reading it column-major is in order: 2-3.5x
        faster (measured for (50304, 128) and (50304, 768) at batch 1 and 16; for bf16 and
        on CUDA the layouts are about even, so there the weight itself is used). The copy is
        made again when the weight changes: another tensor, or an in-place update, which
        bumps its version counter (optimizer steps and ``load_state_dict`` do; writes through
        ``.data`` do not, and are not seen).
        """
        weight = self.model.head_weight
        if not self._column_major:
            return weight
        key = (weight.data_ptr(), weight._version)
        if weight is not self._head_source or key != self._head_key:
            self._head_copy = weight.detach().t().contiguous().t()  # (V, C) with strides (1, V)
            self._head_source, self._head_key = weight, key
        return self._head_copy

    def _take_graph(self, rows: int, max_len: int) -> _GraphDecoder:
        """A captured decode step over an empty static cache of this shape (a free one, or new)."""
        free = self._graphs.setdefault((rows, max_len), [])
        graph = free.pop() if free else _GraphDecoder(self, rows, max_len)
        graph.cache.reset()
        return graph

    def _release_graph(self, graph: _GraphDecoder) -> None:
        self._graphs[(graph.cache.batch_size, graph.cache.max_len)].append(graph)


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
    model = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
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


# --------------------------------------------------------------------------- the scheduler


@dataclasses.dataclass
class _Waiting:
    """A submitted request not yet admitted."""

    id: int
    first_row: int  # the row number (TokenEvent.row) of its sample 0
    request: Request
    prompt: list[int]  # as the model sees it
    budget: int  # tokens each sample may generate
    uniforms: torch.Tensor  # (n, budget) its random numbers, on the CPU (rule 3)
    samples: list[int]  # the samples still wanted (cancel can drop some)


@dataclasses.dataclass
class _Sequence:
    """What the host keeps of one running sequence (one sample of one request)."""

    request: int
    sample: int
    row: int  # TokenEvent.row
    params: SamplingParams  # the request's settings without the seed: equal ones are filtered together
    stops: frozenset[int]
    budget: int
    limit_reason: str  # why it ends after `budget` tokens: "length" or "context"
    details: bool  # report log-probabilities
    top: int  # alternatives to report
    thinking: bool  # has a thinking budget
    count: int = 0  # tokens chosen so far


@dataclasses.dataclass
class _RowState:
    """The running sequences' per-row state, on the device; row i belongs to cache row i."""

    tokens: torch.Tensor  # (R,) the token chosen last step, fed at the next
    count: torch.Tensor  # (R,) tokens chosen so far: the column of `uniforms` to use next
    uniforms: torch.Tensor  # (R, max_len) the sequence's random numbers, one per token
    present: torch.Tensor  # (R, V) bool: ids in prompt + completion (kept for repetition penalties)
    generated: torch.Tensor  # (R, V) how often each id was generated (kept for presence/frequency penalties)
    thinking: torch.Tensor  # (R, 3) think id, end_think id, budget; (-1, -1, 0) without a budget
    in_think: torch.Tensor  # (R,) bool: inside a thinking segment
    thought: torch.Tensor  # (R,) thinking tokens generated in the open segment

    @staticmethod
    def allocate(rows: int, max_len: int, vocab: int, device: torch.device) -> _RowState:
        def zeros(*shape, dtype=torch.long):
            return torch.zeros(shape, dtype=dtype, device=device)
        return _RowState(zeros(rows), zeros(rows), zeros(rows, max_len, dtype=torch.float32),
                         zeros(rows, vocab, dtype=torch.bool), zeros(rows, vocab, dtype=torch.int32),
                         zeros(rows, 3), zeros(rows, dtype=torch.bool), zeros(rows))

    def move(self, src: list[int], dst: list[int]) -> None:
        """Row ``dst[i]`` takes row ``src[i]``'s state."""
        src_index = torch.tensor(src, device=self.tokens.device)
        dst_index = torch.tensor(dst, device=self.tokens.device)
        for field in dataclasses.fields(self):
            tensor = getattr(self, field.name)
            tensor[dst_index] = tensor[src_index]


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What choosing tokens for the running rows involves; remade when rows join or leave."""

    groups: list[tuple[SamplingParams, torch.Tensor | None]]  # settings -> their rows (None: all rows)
    greedy: bool  # every row greedy: argmax, no random numbers
    unfiltered: bool  # greedy without penalty or details: the filters are not needed at all
    penalty: bool  # a row has a repetition penalty: keep `present` up to date
    counting: bool  # a row has a presence/frequency penalty: keep `generated` up to date
    thinking: bool  # a row has a thinking budget
    details: bool  # a row reports log-probabilities
    top: int  # the most alternatives a row reports


class Scheduler:
    """Serves :class:`Request` s on one engine: up to ``max_batch`` sequences at once, over one
    KV cache of ``max_len`` positions per row (default: the context window).

    :meth:`submit` queues a request and returns its id; each :meth:`step` advances every
    running sequence by one token, admitting waiting requests into free rows first come,
    first served, and returns that step's :class:`TokenEvent` s in row order (a sequence's
    last one carries its finish reason); :meth:`cancel` ends a request, or one of its samples, at
    once. The module docstring describes the loop.

    >>> from lanternlm.model import GPTConfig
    >>> torch.manual_seed(0) and None
    >>> engine = Engine(GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=1, n_head=2, n_embd=8)))
    >>> scheduler = Scheduler(engine, max_batch=4)
    >>> scheduler.submit(Request([1, 2, 3], max_tokens=2))
    0
    >>> [(e.request, e.index, e.finish_reason) for e in scheduler.step()]
    [(0, 0, None)]
    >>> scheduler.submit(Request([4], max_tokens=2, n=2))  # joins the running batch
    1
    >>> [(e.request, e.sample, e.index, e.finish_reason) for e in scheduler.step()]
    [(0, 0, 1, 'length'), (1, 0, 0, None), (1, 1, 0, None)]
    >>> [(e.request, e.sample, e.index, e.finish_reason) for e in scheduler.step()], scheduler.idle
    ([(1, 0, 1, 'length'), (1, 1, 1, 'length')], True)
    """

    def __init__(self, engine: Engine, max_batch: int, max_len: int | None = None) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise LanternError(f"Scheduler: max_batch={max_batch!r} must be a positive integer")
        self.engine, self.max_batch = engine, max_batch
        self.max_len = engine.config.block_size if max_len is None else max_len
        with torch.inference_mode():
            if engine.cuda_graphs:
                self._graph: _GraphDecoder | None = engine._take_graph(max_batch, self.max_len)
                self.cache = self._graph.cache
            else:
                self._graph = None
                self.cache = KVCache(engine.config, max_batch, self.max_len, device=engine.device,
                                     dtype=engine.dtype)
            self._state = _RowState.allocate(max_batch, self.max_len, engine.config.vocab_size, engine.device)
        self._rows: list[_Sequence] = []  # the running sequences, in cache row order
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._requests = self._sequences = 0  # submitted so far: the next request id, the next row
        self._view: KVCache | None = None  # cache rows 0 .. n-1 for decoding, remade when rows change
        self._replan()

    @property
    def num_active(self) -> int:
        """Sequences running now (each holds a cache row)."""
        return len(self._rows)

    @property
    def num_waiting(self) -> int:
        """Requests submitted but not yet admitted."""
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        return not self._rows and not self._waiting

    def submit(self, request: Request) -> int:
        """Queue ``request``; returns its id (events carry it as :attr:`TokenEvent.request`)."""
        if self.cache is None:
            raise LanternError("Scheduler: closed")
        config = self.engine.config
        block, vocab = config.block_size, config.vocab_size
        bad = [t for t in request.prompt if not 0 <= t < vocab]
        if bad:
            raise LanternError(f"prompt: token ids {bad[:5]} are outside the model's vocabulary 0..{vocab - 1}")
        if len(request.prompt) >= block and request.truncate != "left":
            raise LanternError(
                f"prompt has {len(request.prompt)} tokens but the context window is {block} and "
                f"must leave room for at least one new token; shorten the prompt or pass "
                f"truncate='left' (--truncate left) to drop its oldest tokens")
        prompt = request.model_prompt(block)
        budget = min(request.max_tokens, block - len(prompt))
        if len(prompt) + budget - 1 > self.max_len:
            raise LanternError(f"request: {len(prompt)} prompt tokens and up to {budget} new ones need "
                               f"{len(prompt) + budget - 1} cache positions; this scheduler's rows hold "
                               f"{self.max_len} (its max_len)")
        if request.n > self.max_batch:
            raise LanternError(f"request: n={request.n} samples, but the scheduler runs at most "
                               f"max_batch={self.max_batch} sequences")
        generator = torch.Generator()
        if request.sampling.seed is None:
            generator.seed()
        else:
            generator.manual_seed(request.sampling.seed)
        uniforms = torch.rand(request.n, budget, generator=generator)  # (n, budget): rule 3
        self._waiting.append(_Waiting(self._requests, self._sequences, request, prompt, budget, uniforms,
                                      list(range(request.n))))
        self._requests += 1
        self._sequences += request.n
        return self._requests - 1

    @torch.inference_mode()
    def cancel(self, request: int, sample: int | None = None) -> None:
        """End request ``request`` (only its sample ``sample`` if given) now: its rows are
        freed at once and it produces no more events. A finished one is left as it is."""
        if not 0 <= request < self._requests:
            raise LanternError(f"Scheduler.cancel: no request {request} was submitted")
        for waiting in self._waiting:
            if waiting.id == request:
                waiting.samples = [s for s in waiting.samples if sample is not None and s != sample]
        self._waiting = collections.deque(w for w in self._waiting if w.samples)
        self._remove([i for i, seq in enumerate(self._rows)
                      if seq.request == request and sample in (None, seq.sample)])

    def step(self) -> list[TokenEvent]:
        """Advance every running sequence by one token, admitting waiting requests first;
        returns this step's events (none when idle)."""
        if self.cache is None:
            raise LanternError("Scheduler: closed")
        with self.engine._forwards():
            logits = [self._decode()] if self._rows else []
            admitted = self._admit()
            if admitted is not None:
                logits.append(admitted)
            if not logits:
                return []
            return self._choose(torch.cat(logits) if len(logits) > 1 else logits[0])

    def close(self) -> None:
        """Give the cache back (a CUDA graph's returns to the engine for the next scheduler)."""
        if self._graph is not None:
            self.engine._release_graph(self._graph)
        self._graph = self.cache = self._view = None

    # ------------------------------------------------------------------ inside a step

    def _decode(self) -> torch.Tensor:
        """Feed each running row the token it chose last step; its next logits (n, V)."""
        n = len(self._rows)
        if self._graph is not None:  # every row of the static cache rides along
            logits = self._graph(self._state.tokens)[:n]
            self.cache.lengths[n:] = 0  # free rows stay empty
            return logits
        if self._view is None:
            self._view = self.cache.rows(0, n)
        hidden, _ = self.engine.model.hidden(self._state.tokens[:n, None], cache=self._view)  # (n, 1, C)
        return self.engine.logits(hidden[:, 0])

    def _admit(self) -> torch.Tensor | None:
        """Move waiting requests into the free rows (first come, first served) and prefill
        them together (rule 2); the new rows' first logits (m, V), in row order."""
        free, batch = self.max_batch - len(self._rows), []
        while self._waiting and len(self._waiting[0].samples) <= free:
            free -= len(self._waiting[0].samples)
            batch.append(self._waiting.popleft())
        if not batch:
            return None
        first, k, device = len(self._rows), len(batch), self.engine.device
        logits, padded = self._prefill([w.prompt for w in batch], first)  # rows first .. first+k-1
        # Each request's first sample takes its prefill row; its other samples follow, copied.
        order = [(i, w.samples[0]) for i, w in enumerate(batch)]
        order += [(i, s) for i, w in enumerate(batch) for s in w.samples[1:]]
        source = [i for i, _ in order]  # the prefill row of each new row
        if len(order) > k:
            self.cache.copy_rows([first + i for i in source[k:]], list(range(first + k, first + len(order))))

        block, vocab = self.engine.config.block_size, self.engine.config.vocab_size
        uniforms = torch.zeros(len(order), self.max_len)
        thinking = []
        for j, (i, s) in enumerate(order):
            w, budget = batch[i], batch[i].request.thinking
            self._rows.append(_Sequence(
                request=w.id, sample=s, row=w.first_row + s, params=w.request.sampling.replace(seed=None),
                stops=frozenset(w.request.stop_tokens), budget=w.budget,
                limit_reason="length" if w.request.max_tokens <= block - len(w.prompt) else "context",
                details=w.request.logprobs or w.request.top_alternatives > 0,
                top=min(w.request.top_alternatives, vocab), thinking=budget is not None))
            uniforms[j, :w.budget] = w.uniforms[s]
            thinking.append([budget.think, budget.end_think, budget.budget, budget.inside(w.prompt)]
                            if budget is not None else [-1, -1, 0, False])
        rows, state = slice(first, first + len(order)), self._state
        thinking = torch.tensor(thinking, device=device)  # (m, 4)
        state.count[rows] = 0
        state.uniforms[rows] = uniforms.to(device)
        state.thinking[rows] = thinking[:, :3]
        state.in_think[rows] = thinking[:, 3].bool()
        state.thought[rows] = 0
        source = torch.tensor(source, device=device)
        if any(w.request.sampling.repetition_penalty != 1.0 for w in batch):
            state.present[rows] = token_presence(padded, vocab)[source]
        if any(w.request.sampling.counts_tokens for w in batch):
            state.generated[rows] = 0
        self._replan()
        return logits if len(order) == k else logits[source]

    def _prefill(self, prompts: list[list[int]], first: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``prompts`` through the model into the empty cache rows ``first ..``; returns
        their last positions' logits (k, V) and the prompts right-padded with -1 (k, T)."""
        lengths = [len(p) for p in prompts]
        padded = torch.full((len(prompts), max(lengths)), -1, dtype=torch.long)
        for i, prompt in enumerate(prompts):
            padded[i, :lengths[i]] = torch.tensor(prompt)
        padded = padded.to(self.engine.device)  # (k, T) with -1 after each prompt
        view = self.cache.rows(first, first + len(prompts))
        last = torch.tensor(lengths, device=padded.device) - 1  # (k,) each prompt's last position
        hidden, _ = self.engine.model.hidden(padded.clamp(min=0), cache=view, at=last)  # (k, 1, C)
        if min(lengths) < padded.shape[1]:
            view.truncate(lengths)  # forget the padding
        return self.engine.logits(hidden[:, 0]), padded

    def _choose(self, logits: torch.Tensor) -> list[TokenEvent]:
        """Pick each running row's next token from its logits (n, V) (rules 3-4), then report."""
        n, state, plan = len(self._rows), self._state, self._plan
        filtered = logits if plan.unfiltered else self._filter(logits)
        if plan.greedy:
            tokens = greedy(filtered)
        else:
            u = state.uniforms[:n].gather(1, state.count[:n, None])[:, 0]  # (n,) this step's numbers
            tokens = sample_from_uniform(filtered, u)
        forced = None
        if plan.thinking:
            think, end_think, budget = state.thinking[:n].unbind(1)  # (n,) each
            in_think, thought = state.in_think[:n], state.thought[:n]
            forced = in_think & (thought >= budget)
            tokens = torch.where(forced, end_think, tokens)
            opened, closed = tokens == think, tokens == end_think
            state.thought[:n] = torch.where(opened, 0, thought + (in_think & ~closed).long())
            state.in_think[:n] = (in_think | opened) & ~closed
        if plan.penalty:
            state.present[:n].scatter_(1, tokens[:, None], True)
        if plan.counting:
            state.generated[:n].scatter_add_(1, tokens[:, None], torch.ones_like(tokens[:, None], dtype=torch.int32))
        state.tokens[:n] = tokens
        state.count[:n] += 1
        return self._report(tokens, forced, logits, filtered)

    def _filter(self, logits: torch.Tensor) -> torch.Tensor:
        """Each row's logits filtered by its own settings: one call per group of equal ones."""
        present, generated = self._state.present[:len(self._rows)], self._state.generated[:len(self._rows)]
        if len(self._plan.groups) == 1:
            return process_logits(logits, self._plan.groups[0][0], present, generated)
        filtered = torch.empty_like(logits)
        for params, rows in self._plan.groups:
            filtered[rows] = process_logits(logits[rows], params, present[rows], generated[rows])
        return filtered

    def _report(self, tokens: torch.Tensor, forced: torch.Tensor | None, logits: torch.Tensor,
                filtered: torch.Tensor) -> list[TokenEvent]:
        """This step's events (one transfer from the device, more only for log-probabilities);
        finished rows leave the batch."""
        plan, n = self._plan, len(self._rows)
        if forced is None:
            chosen, was_forced = tokens.tolist(), [0] * n
        else:
            chosen, was_forced = torch.stack([tokens, forced.long()]).tolist()
        if plan.details:
            raw, drawn = F.log_softmax(logits, dim=-1), F.log_softmax(filtered, dim=-1)  # (n, V) each
            picked = torch.stack([raw.gather(1, tokens[:, None])[:, 0], drawn.gather(1, tokens[:, None])[:, 0]])
            raw_logprob, drawn_logprob = picked.tolist()
        if plan.top:
            raw_top, drawn_top = raw.topk(plan.top, dim=-1), drawn.topk(plan.top, dim=-1)
            raw_top = _pairs(raw_top.indices.tolist(), raw_top.values.exp().tolist())
            drawn_top = _pairs(drawn_top.indices.tolist(), drawn_top.values.exp().tolist())
        events, done = [], []
        for i, seq in enumerate(self._rows):
            token, index = chosen[i], seq.count
            seq.count += 1
            reason = "stop" if token in seq.stops else seq.limit_reason if seq.count >= seq.budget else None
            event = TokenEvent(seq.row, index, token, reason, forced=bool(was_forced[i]),
                               request=seq.request, sample=seq.sample)
            if seq.details:
                event.logprob, event.sampled_logprob = raw_logprob[i], drawn_logprob[i]
            if seq.top:
                event.raw_top = raw_top[i][:seq.top]
                event.filtered_top = [pair for pair in drawn_top[i][:seq.top] if pair[1] > 0]
            events.append(event)
            if reason is not None:
                done.append(i)
        self._remove(done)
        return sorted(events, key=lambda e: e.row)  # moved rows leave the cache order shuffled

    def _remove(self, rows: list[int]) -> None:
        """Free ``rows``: the last running rows move into their places (rule 1)."""
        if not rows:
            return
        n, keep, gone = len(self._rows), len(self._rows) - len(rows), set(rows)
        holes = [r for r in rows if r < keep]
        movers = [r for r in range(keep, n) if r not in gone]  # as many as holes
        if holes:
            self.cache.copy_rows(movers, holes)
            self._state.move(movers, holes)
            for src, dst in zip(movers, holes):
                self._rows[dst] = self._rows[src]
        del self._rows[keep:]
        self.cache.rows(keep, n).reset()
        self._replan()

    def _replan(self) -> None:
        """Remake the plan for choosing tokens (and, at the next decode, the view of the
        running rows) after rows joined or left."""
        self._view = None
        groups: dict[SamplingParams, list[int]] = {}
        for i, seq in enumerate(self._rows):
            groups.setdefault(seq.params, []).append(i)
        device = self.engine.device
        greedy_rows = all(p.greedy for p in groups)
        penalty = any(p.repetition_penalty != 1.0 for p in groups)
        counting = any(p.counts_tokens for p in groups)
        details = any(seq.details for seq in self._rows)
        self._plan = _Plan(
            groups=[(p, torch.tensor(rows, device=device) if len(groups) > 1 else None)
                    for p, rows in groups.items()],
            greedy=greedy_rows, unfiltered=greedy_rows and not penalty and not counting and not details,
            penalty=penalty, counting=counting,
            thinking=any(seq.thinking for seq in self._rows), details=details,
            top=max((seq.top for seq in self._rows), default=0))


class _GraphDecoder:
    """The decode step over every row of one static cache, captured once as a CUDA graph.

    Replaying re-runs the captured kernels on the same memory: the cache's buffers, the
    ``tokens`` input, the ``logits`` output, and the weights at the addresses they had at
    capture (in-place updates are seen; a weight replaced by another tensor is not). Rows
    without a sequence ride along; the scheduler sets their lengths back to 0 after each
    replay. The engine keeps free captures for the next scheduler of the same shape.
    """

    def __init__(self, engine: Engine, rows: int, max_len: int) -> None:
        self.cache = KVCache(engine.config, rows, max_len, device=engine.device, dtype=engine.dtype,
                             static=True)
        self.tokens = torch.zeros(rows, dtype=torch.long, device=engine.device)

        def decode() -> torch.Tensor:  # (rows, V)
            hidden, _ = engine.model.hidden(self.tokens[:, None], cache=self.cache)  # (rows, 1, C)
            return engine.logits(hidden[:, 0])

        with engine._forwards():
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up runs (allocator, kernels' autotuning)
                for _ in range(2):
                    decode()
                    self.cache.reset()
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.logits = decode()
            self.cache.reset()

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        self.tokens.copy_(tokens)
        self.graph.replay()
        return self.logits


class Generation:
    """Requests in progress on a scheduler of their own: iterate it for :class:`TokenEvent` s.

    Rows are numbered in submission order, a request's samples consecutively; ``prompts``
    holds the ids the model sees, one per row. ``stop(row)`` ends a row at once (its next
    event is not produced); the loop ends when every row has finished.
    """

    def __init__(self, engine: Engine, requests: list[Request]) -> None:
        if not requests:
            raise LanternError("generate: no prompts given")
        block = engine.config.block_size
        max_len = min(block, max(len(r.prompt) + r.max_tokens for r in requests))
        self.scheduler = Scheduler(engine, sum(r.n for r in requests), max_len)
        try:
            ids = [self.scheduler.submit(r) for r in requests]
        except LanternError:
            self.scheduler.close()
            raise
        self.prompts = [r.model_prompt(block) for r in requests for _ in range(r.n)]
        self._sequences = [(i, s) for i, r in zip(ids, requests) for s in range(r.n)]
        self.finished = [False] * len(self.prompts)
        self._events = self._run()

    def stop(self, row: int) -> None:
        self.finished[row] = True
        self.scheduler.cancel(*self._sequences[row])

    def __iter__(self) -> Iterator[TokenEvent]:
        return self._events

    def __next__(self) -> TokenEvent:
        return next(self._events)

    def close(self) -> None:
        self._events.close()

    def _run(self) -> Iterator[TokenEvent]:
        try:
            while not self.scheduler.idle:
                for event in self.scheduler.step():
                    if self.finished[event.row]:  # stopped while this step's events were read
                        continue
                    self.finished[event.row] = event.finish_reason is not None
                    yield event
        finally:
            self.scheduler.close()


def _pairs(ids: list[list[int]], probs: list[list[float]]) -> list[list[tuple[int, float]]]:
    return [list(zip(row_ids, row_probs)) for row_ids, row_probs in zip(ids, probs)]


def _completion(prompt: list[int], events: list[TokenEvent], details: bool) -> Completion:
    tokens, forced = [e.token for e in events], [e.forced for e in events]
    last = events[-1]
    if last.finish_reason == "stop":  # the stop token is not part of the completion
        return Completion(prompt, tokens[:-1], "stop", last.token, events if details else None, forced[:-1])
    return Completion(prompt, tokens, last.finish_reason, None, events if details else None, forced)
