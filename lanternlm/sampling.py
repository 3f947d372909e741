"""Turning next-token logits into a chosen token: pure functions, tensors in, tensors out.

A language model does not write text; it outputs a probability for every token of the
vocabulary, and *sampling* picks one. Each knob below reshapes that distribution, and
they are applied in this fixed order by :func:`process_logits`:

1. **repetition penalty** (CTRL, Keskar et al. 2019): for tokens already present in the
   text, a positive logit is divided by the penalty and a negative one multiplied by it,
   so a penalty > 1 always makes a repeat less likely.
   **presence and frequency penalties** (OpenAI's): for each token already *generated*
   (the completion, not the prompt) ``c`` times, the logit drops by
   ``frequency_penalty * c + presence_penalty * (c > 0)``; negative values encourage
   repeats. Both are in [-2, 2], 0 is off.
2. **temperature**: logits are divided by it. Below 1 sharpens, above 1 flattens.
   Temperature 0 means *greedy*: always the most likely token (the other filters are
   then irrelevant and skipped).
3. **top-k**: keep the k highest logits (ties at the k-th value are all kept).
4. **top-p** (nucleus, Holtzman et al. 2019): keep the smallest set of most likely tokens
   whose probabilities add up to at least p.
5. **min-p**: drop tokens whose probability is below ``min_p`` times the top probability.
6. **sample** from what remains, renormalised (softmax of the filtered logits), by the
   inverse CDF: with a uniform number ``u`` in [0, 1), the token whose slice of the
   cumulative distribution holds ``u`` (:func:`sample_from_uniform`).

Removed tokens get a logit of ``-inf``, so "the filtered distribution" is always just
``softmax(filtered_logits)``. All functions work on logits of shape ``(B, V)`` (a batch of
rows) and never modify their input. Randomness comes only from the uniforms passed in
(one per row), so the caller decides where they come from: the engine draws each
request's from its own seeded generator, which makes sampling reproducible.

``PRESETS`` holds the temperature / top-p pairs of the common cheat sheet.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional  # not `int | None`: config's flag parser reads typing.Optional

import torch

from .config import option
from .errors import LanternError

# Float rounding must not decide whether the seed's exact boundary example keeps two or
# three tokens: a token is dropped by top-p once the mass before it reaches p - TOP_P_SLACK.
TOP_P_SLACK = 1e-6


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to pick the next token. The defaults sample from the model's plain distribution."""

    temperature: float = option(1.0, "divide logits by this; 0 = greedy (always the most likely token)")
    top_k: int = option(0, "keep only the k most likely tokens (0 = off)")
    top_p: float = option(1.0, "nucleus: keep the smallest set of tokens with total probability >= p (1 = off)")
    min_p: float = option(0.0, "drop tokens less likely than min_p x the top token's probability (0 = off)")
    repetition_penalty: float = option(1.0, "CTRL penalty for tokens already in the text (1 = off, > 1 = fewer repeats)")
    presence_penalty: float = option(0.0, "subtract this from the logit of every token already generated (-2..2, 0 = off)")
    frequency_penalty: float = option(0.0, "subtract this x the times a token was generated from its logit (-2..2, 0 = off)")
    seed: Optional[int] = option(None, "random seed: the same seed gives the same text (None = fresh randomness)")

    def __post_init__(self) -> None:
        def bad(field: str, value, rule: str) -> LanternError:
            return LanternError(f"sampling: {field}={value!r} is invalid: {rule}")

        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature >= 0):
            raise bad("temperature", self.temperature, "must be a finite number >= 0 (0 = greedy)")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise bad("top_k", self.top_k, "must be an integer >= 0 (0 = off)")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise bad("top_p", self.top_p, "must be in (0, 1] (1 = off)")
        if not (isinstance(self.min_p, (int, float)) and 0 <= self.min_p <= 1):
            raise bad("min_p", self.min_p, "must be in [0, 1] (0 = off)")
        if not (isinstance(self.repetition_penalty, (int, float)) and math.isfinite(self.repetition_penalty)
                and self.repetition_penalty > 0):
            raise bad("repetition_penalty", self.repetition_penalty, "must be a finite number > 0 (1 = off)")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and -2 <= value <= 2):
                raise bad(name, value, "must be a number in [-2, 2] (0 = off)")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise bad("seed", self.seed, "must be an integer or None")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def counts_tokens(self) -> bool:
        """Whether the presence or frequency penalty is on (they need the completion's counts)."""
        return self.presence_penalty != 0 or self.frequency_penalty != 0

    def replace(self, **changes) -> "SamplingParams":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


# The cheat sheet: (temperature, top_p) per use.
PRESETS: dict[str, SamplingParams] = {
    "code-generation": SamplingParams(temperature=0.2, top_p=0.1),
    "creative-writing": SamplingParams(temperature=0.7, top_p=0.8),
    "chatbot": SamplingParams(temperature=0.5, top_p=0.5),
    "code-comments": SamplingParams(temperature=0.3, top_p=0.2),
    "data-analysis": SamplingParams(temperature=0.2, top_p=0.1),
    "exploratory-code": SamplingParams(temperature=0.6, top_p=0.7),
}


def preset(name: str) -> SamplingParams:
    """The named preset, e.g. ``preset("chatbot") == SamplingParams(temperature=0.5, top_p=0.5)``."""
    if name not in PRESETS:
        raise LanternError(f"sampling: unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


# --------------------------------------------------------------------------- filters


def token_presence(token_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """A ``(B, V)`` bool mask: which tokens occur in each row of ``token_ids`` ``(B, L)``.

    Negative ids are padding and ignored.

    >>> token_presence(torch.tensor([[2, 0, -1]]), 4)
    tensor([[ True, False,  True, False]])
    """
    mask = torch.zeros(token_ids.shape[0], vocab_size + 1, dtype=torch.bool, device=token_ids.device)
    ids = torch.where(token_ids < 0, vocab_size, token_ids)  # padding goes to an extra column
    mask.scatter_(1, ids, True)
    return mask[:, :vocab_size]


def repetition_penalty(logits: torch.Tensor, present: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL repetition penalty on the tokens marked in ``present`` (a ``(B, V)`` bool mask).

    >>> repetition_penalty(torch.tensor([[2.0, -2.0, 2.0]]), torch.tensor([[True, True, False]]), 2.0)
    tensor([[ 1., -4.,  2.]])

    A penalty near 0 would divide a positive logit into infinity, and a softmax over two
    infinities is NaN; the result stays within the dtype's finite range instead:

    >>> out = repetition_penalty(torch.tensor([[2.0, 1.0, -1.0]]), torch.tensor([[True, True, True]]), 1e-200)
    >>> bool(torch.isfinite(out).all()), torch.softmax(out, -1).tolist()
    (True, [[0.5, 0.5, 0.0]])
    """
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    finite = torch.finfo(logits.dtype)
    return torch.where(present, penalised.clamp(finite.min, finite.max), logits)


def presence_frequency_penalty(logits: torch.Tensor, counts: torch.Tensor, presence: float,
                               frequency: float) -> torch.Tensor:
    """OpenAI's penalties: ``logit - frequency * count - presence * (count > 0)``, where
    ``counts`` ``(B, V)`` holds how many times each token was generated so far.

    Token 0 was generated twice, token 1 once, token 2 never; presence 0.5, frequency 1:

    >>> presence_frequency_penalty(torch.tensor([[3.0, 3.0, 3.0]]), torch.tensor([[2, 1, 0]]), 0.5, 1.0)
    tensor([[0.5000, 1.5000, 3.0000]])

    Negative values make repeats more likely:

    >>> presence_frequency_penalty(torch.tensor([[0.0, 0.0]]), torch.tensor([[1, 0]]), -1.0, 0.0)
    tensor([[1., 0.]])
    """
    if presence == 0 and frequency == 0:
        return logits
    counts = counts.to(logits.dtype)
    return logits - frequency * counts - presence * (counts > 0).to(logits.dtype)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide by the temperature (> 0; temperature 0 is greedy and handled by :func:`greedy`).

    Below 1 each row's maximum is subtracted first: the distribution is the same, and a
    tiny temperature (1e-300, below the smallest float32, which divides as that) cannot
    overflow the logits to infinity.

    >>> apply_temperature(torch.tensor([[1.0, -2.0]]), 2.0)
    tensor([[ 0.5000, -1.0000]])
    >>> apply_temperature(torch.tensor([[1.0, 2.0]]), 0.5)
    tensor([[-2.,  0.]])
    >>> torch.softmax(apply_temperature(torch.tensor([[1.0, 2.0]]), 1e-300), dim=-1)
    tensor([[0., 1.]])
    """
    if temperature <= 0:
        raise LanternError(f"sampling: apply_temperature needs temperature > 0, got {temperature} "
                           "(temperature 0 is greedy: use greedy())")
    if temperature >= 1.0:
        return logits if temperature == 1.0 else logits / temperature
    top = logits.amax(dim=-1, keepdim=True)
    return (logits - torch.where(torch.isfinite(top), top, 0.0)) / max(temperature, torch.finfo(logits.dtype).tiny)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` highest logits of each row; the rest become ``-inf``. ``k = 0`` is off.

    Ties: every token equal to the k-th highest value is kept, so the result never depends
    on token order and may hold more than k tokens.

    >>> top_k_filter(torch.tensor([[1.0, 3.0, 2.0, 2.0, 0.0]]), 2)
    tensor([[-inf, 3., 2., 2., -inf]])
    """
    if k < 0:
        raise LanternError(f"sampling: top_k must be >= 0, got {k}")
    if k == 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose mass is >= ``p``.

    A token is kept when the probability of the tokens ranked above it is still below p
    (within ``TOP_P_SLACK``), so the top token is always kept. Among equal probabilities
    the lower token id ranks first. The seed's example keeps exactly two tokens:

    >>> probs = torch.tensor([[0.25, 0.25, 0.125, 0.125, 0.125, 0.125]])
    >>> top_p_filter(probs.log(), 0.5).exp()
    tensor([[0.2500, 0.2500, 0.0000, 0.0000, 0.0000, 0.0000]])
    """
    if not 0 < p <= 1:
        raise LanternError(f"sampling: top_p must be in (0, 1], got {p}")
    if p == 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)  # (B, V)
    sorted_probs = torch.softmax(sorted_logits.float(), dim=-1)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # exclusive cumulative sum
    drop_sorted = mass_before >= p - TOP_P_SLACK
    drop_sorted[..., 0] = False  # the most likely token always stays, however small p is
    drop = torch.empty_like(drop_sorted).scatter_(-1, order, drop_sorted)  # back to vocab order
    return logits.masked_fill(drop, float("-inf"))


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below ``min_p`` x the top probability. ``0`` is off.

    Works on logits directly: p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p).

    >>> min_p_filter(torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log(), 0.25).exp()
    tensor([[0.5000, 0.3000, 0.1500, 0.0000]])
    """
    if not 0 <= min_p <= 1:
        raise LanternError(f"sampling: min_p must be in [0, 1], got {min_p}")
    if min_p == 0.0:
        return logits
    threshold = logits.max(dim=-1, keepdim=True).values + math.log(min_p)  # (B, 1)
    return logits.masked_fill(logits < threshold, float("-inf"))


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """The most likely token of each row (the lowest id among ties): ``(B, V) -> (B,)``.

    >>> greedy(torch.tensor([[0.1, 2.0, 2.0], [5.0, 0.0, 1.0]]))
    tensor([1, 0])
    """
    return torch.argmax(logits, dim=-1)


def greedy_mask(logits: torch.Tensor) -> torch.Tensor:
    """The greedy "distribution": every logit but the argmax set to ``-inf``.

    >>> greedy_mask(torch.tensor([[0.1, 2.0, 2.0]]))
    tensor([[-inf, 2., -inf]])
    """
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, greedy(logits)[:, None], True)
    return logits.masked_fill(~keep, float("-inf"))


# --------------------------------------------------------------------------- the pipeline


def process_logits(logits: torch.Tensor, params: SamplingParams,
                   present: torch.Tensor | None = None, counts: torch.Tensor | None = None) -> torch.Tensor:
    """Apply every filter of ``params`` in the documented order; returns the filtered logits.

    ``softmax`` of the result is the distribution the next token is drawn from (for
    temperature 0 it is a point mass on the greedy token). ``present`` is the ``(B, V)``
    mask of tokens already in each row, needed only for the repetition penalty; ``counts``
    the ``(B, V)`` counts of tokens generated so far, needed only for the presence and
    frequency penalties.

    >>> process_logits(torch.tensor([[4.0, 2.0, 0.0]]), SamplingParams(temperature=2.0, top_k=2))
    tensor([[2., 1., -inf]])
    """
    if params.repetition_penalty != 1.0:
        if present is None:
            raise LanternError("sampling: repetition_penalty needs the mask of tokens already present")
        logits = repetition_penalty(logits, present, params.repetition_penalty)
    if params.counts_tokens:
        if counts is None:
            raise LanternError("sampling: presence/frequency penalties need the counts of tokens generated")
        logits = presence_frequency_penalty(logits, counts, params.presence_penalty, params.frequency_penalty)
    if params.greedy:
        return greedy_mask(logits)
    logits = apply_temperature(logits, params.temperature)
    logits = top_k_filter(logits, params.top_k)
    logits = top_p_filter(logits, params.top_p)
    return min_p_filter(logits, params.min_p)


def sample_from_uniform(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Draw one token per row from ``softmax(logits)`` ``(B, V)`` with the uniforms ``u`` ``(B,)``
    in [0, 1): the inverse CDF, token i when ``cdf[i-1] <= u < cdf[i]``. ``(B,)``.

    Three rows of one distribution (1/3 each for ids 0, 1 and 3; id 2 is filtered out):

    >>> logits = torch.tensor([[0.0, 0.0, float("-inf"), 0.0]]).expand(3, -1)
    >>> sample_from_uniform(logits, torch.tensor([0.2, 0.5, 0.9]))
    tensor([0, 1, 3])

    A token of probability 0 (logit ``-inf``) is never chosen, whatever the rounding: the
    chosen index is the first whose cumulative sum exceeds ``u * total``, which only a
    token with mass can be; and ``u * total`` rounding up to the total itself falls back
    to the last token with mass.
    """
    probs = torch.softmax(logits.float(), dim=-1)  # (B, V)
    cdf = probs.cumsum(dim=-1)  # (B, V), non-decreasing; flat over removed tokens
    total = cdf[:, -1:].contiguous()  # (B, 1): 1 up to rounding
    token = torch.searchsorted(cdf, u.to(cdf.dtype)[:, None] * total, right=True)  # (B, 1)
    last = torch.searchsorted(cdf, total)  # (B, 1): where the cdf reaches its total, a token with mass
    return torch.minimum(token, last)[:, 0]


def sample_next_token(logits: torch.Tensor, params: SamplingParams, u: torch.Tensor | None = None,
                      present: torch.Tensor | None = None, counts: torch.Tensor | None = None) -> torch.Tensor:
    """Filter ``logits`` ``(B, V)`` by ``params`` and pick one token per row: ``(B,)``.

    The reference for one step of the engine: greedy (temperature 0) takes the argmax and
    needs no randomness; otherwise row b draws with its uniform ``u[b]`` in [0, 1)
    (:func:`sample_from_uniform`). ``present`` and ``counts`` as in :func:`process_logits`.

    >>> sample_next_token(torch.tensor([[0.0, 3.0, 1.0]]), SamplingParams(temperature=0))
    tensor([1])
    >>> sample_next_token(torch.tensor([[0.0, 0.0]]), SamplingParams(), torch.tensor([0.7]))
    tensor([1])
    """
    if params.greedy:
        if params.repetition_penalty != 1.0 or params.counts_tokens:
            logits = process_logits(logits, params, present, counts)
        return greedy(logits)
    if u is None:
        raise LanternError("sampling: sample_next_token needs one uniform number per row (u) "
                           "when temperature > 0")
    return sample_from_uniform(process_logits(logits, params, present, counts), u)
