"""View 4, the next-token distribution: a language model outputs a probability for every
token, and the sampling settings reshape that distribution before one token is drawn.

The logits are the model's own (``model.forward``, last position), and every setting is
applied by :func:`lanternlm.sampling.process_logits`, the function the engine samples
with, so "what top-p keeps" here is exactly what generation would keep.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..errors import LanternError
from ..run import Run
from ..sampling import SamplingParams, process_logits
from .common import bar, label, output_path, pyplot, save, view_ids

#: The panels shown beside the raw distribution: three temperatures, then top-k and top-p.
DEFAULT_SETTINGS: dict[str, SamplingParams] = {
    "temperature 0.2": SamplingParams(temperature=0.2),
    "temperature 0.7": SamplingParams(temperature=0.7),
    "temperature 1.2": SamplingParams(temperature=1.2),
    "top-k 5": SamplingParams(top_k=5),
    "top-p 0.9": SamplingParams(top_p=0.9),
}


def entropy(probs: torch.Tensor) -> float:
    """Shannon entropy in nats of a probability vector (zeros contribute nothing).

    >>> round(entropy(torch.tensor([0.25, 0.25, 0.25, 0.25])), 4)  # log(4)
    1.3863
    >>> entropy(torch.tensor([1.0, 0.0]))
    0.0
    """
    p = probs.double()
    p = p[p > 0]
    return float(-(p * p.log()).sum()) + 0.0


@dataclass
class Distribution:
    """One setting's distribution: ``probs[i]`` of the view's ``candidates[i]`` (0 when the
    filters removed it), how many tokens it keeps in all, and its entropy in nats."""

    name: str
    params: dict
    probs: list[float]
    kept: int
    entropy: float


@dataclass
class NextTokenView:
    text: str
    ids: list[int]
    candidates: list[tuple[int, str]]  # the raw distribution's top tokens, most likely first
    raw: Distribution
    settings: list[Distribution] = field(default_factory=list)


def distribution(logits: torch.Tensor, params: SamplingParams, name: str,
                 candidates: Sequence[int]) -> Distribution:
    """``softmax(process_logits(logits, params))`` of a (V,) logit vector, on ``candidates``.

    >>> d = distribution(torch.tensor([2.0, 1.0, 0.0]), SamplingParams(top_k=2), "top-k 2", [0, 1, 2])
    >>> [round(p, 4) for p in d.probs], d.kept
    ([0.7311, 0.2689, 0.0], 2)
    """
    filtered = process_logits(logits[None].float(), params)[0]  # (V,)
    probs = torch.softmax(filtered, dim=-1)
    return Distribution(name, {k: v for k, v in vars(params).items() if k != "seed"},
                        [float(probs[i]) for i in candidates], int(torch.isfinite(filtered).sum()),
                        entropy(probs))


@torch.no_grad()
def next_logits(model, ids: Sequence[int]) -> torch.Tensor:
    """The model's logits (V,) for the token after ``ids``."""
    idx = torch.tensor([list(ids)], dtype=torch.long, device=next(model.parameters()).device)
    return model(idx).logits[0, -1].float().cpu()


def next_token_view(model, tokenizer, text: str | None, k: int = 10,
                    settings: dict[str, SamplingParams] | None = None, bos: bool = True,
                    ids: Sequence[int] | None = None) -> NextTokenView:
    """The top-``k`` next tokens after ``text`` (or after the token ``ids`` as they are)
    under the raw distribution and each setting."""
    if k < 1:
        raise LanternError(f"k={k}: show at least one candidate")
    settings = DEFAULT_SETTINGS if settings is None else settings
    ids = view_ids(tokenizer, text, model, bos, ids)
    text = tokenizer.decode(ids) if text is None else text
    logits = next_logits(model, ids)[:tokenizer.vocab_size]  # padding rows are not tokens
    top = torch.topk(logits, min(k, logits.numel())).indices.tolist()
    view = NextTokenView(text, ids, [(t, label(tokenizer, t)) for t in top],
                         distribution(logits, SamplingParams(), "raw (temperature 1)", top))
    view.settings = [distribution(logits, params, name, top) for name, params in settings.items()]
    return view


def render_next_token(view: NextTokenView, bar_width: int = 20) -> str:
    """Candidates with raw probability bars, then each setting's probabilities ('-' = removed)."""
    width = max(8, *(len(lab) for _, lab in view.candidates))
    names = [d.name.replace("temperature ", "T=") for d in view.settings]
    col = max(7, *(len(n) for n in names))
    lines = [f"next token after {view.text!r}  (entropy {view.raw.entropy:.2f} nats)",
             f"{'token':<{width}}  {'raw':>6}  {'':<{bar_width}}" + "".join(f"  {n:>{col}}" for n in names)]
    for i, (_, lab) in enumerate(view.candidates):
        p = view.raw.probs[i]
        cells = "".join(f"  {(f'{d.probs[i]:.1%}' if d.probs[i] > 0 else '-'):>{col}}" for d in view.settings)
        lines.append(f"{lab:<{width}}  {p:>6.1%}  {bar(p, bar_width):<{bar_width}}{cells}")
    lines.append(f"{'kept':<{width}}  {view.raw.kept:>6}  {'':<{bar_width}}"
                 + "".join(f"  {d.kept:>{col}}" for d in view.settings))
    lines.append(f"{'entropy':<{width}}  {view.raw.entropy:>6.2f}  {'':<{bar_width}}"
                 + "".join(f"  {d.entropy:>{col}.2f}" for d in view.settings))
    return "\n".join(lines)


def plot_next_token(view: NextTokenView, path: str | os.PathLike) -> Path:
    """Horizontal bars: the raw distribution, then one panel per setting (same tokens, same order;
    a removed token has no bar and a grey ``removed`` note)."""
    plt = pyplot()
    panels = [view.raw] + view.settings
    n = len(view.candidates)
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels) + 1.2, 0.32 * n + 1.8),
                             dpi=110, sharey=True, constrained_layout=True)
    labels = [lab for _, lab in view.candidates]
    for j, (ax, d) in enumerate(zip(axes, panels)):
        colours = ["tab:orange" if j == 0 else "tab:blue"] * n
        ax.barh(range(n), d.probs, color=colours)
        for i, p in enumerate(d.probs):
            ax.text(p + 0.01, i, f"{p:.0%}" if p > 0 else "removed", va="center",
                    fontsize=7, color="black" if p > 0 else "0.5")
        ax.set_xlim(0, 1.15)
        ax.set_title(f"{d.name}\nkeeps {d.kept:,}, entropy {d.entropy:.2f}", fontsize=9)
        ax.set_xlabel("probability")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(n), labels, fontsize=9)
    axes[0].invert_yaxis()
    axes[0].set_ylabel("next token")
    fig.suptitle(f"what comes after {view.text!r}?", fontsize=11)
    return save(fig, path)


def next_command(run: str, text: str, k: int = 10, out: str | None = None, device: str | None = None) -> str:
    """``lantern inspect next``: the table; writes ``next_token.png``."""
    loaded = Run(run)
    model, tokenizer = loaded.model(device), loaded.tokenizer
    view = next_token_view(model, tokenizer, text, k)
    png = plot_next_token(view, output_path(out or Path(run) / "inspect", "next_token.png"))
    return render_next_token(view) + f"\nwrote {png}"
