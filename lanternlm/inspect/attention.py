"""View 3, attention: which earlier tokens each position reads from.

The weights come from the model's own reference attention (``model.hidden(ids,
return_attention=True)``), the same code that generates, so causality and a sliding
window show exactly as the model applies them. Row i of a head's matrix is how
position i spreads its attention over positions 0..i; each row sums to 1.

Attention rollout (Abnar & Zuidema, 2020) follows attention through all layers: per
layer, average the heads, add the identity (the residual connection), renormalise the
rows, and multiply the layers' matrices, so row i says how much each input token
contributes to position i at the top of the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..errors import LanternError
from ..run import Run
from .common import label, output_path, prompt_ids, pyplot, save, view_ids


@torch.no_grad()
def attention_weights(model, ids: Sequence[int]) -> list[torch.Tensor]:
    """Per layer, the attention weights (n_head, T, T) of one sequence, fp32 on the CPU."""
    idx = torch.tensor([list(ids)], dtype=torch.long, device=next(model.parameters()).device)
    _, attentions = model.hidden(idx, return_attention=True)  # no head needed: a reward model has attention too
    return [a[0].float().cpu() for a in attentions]  # (H, T, T) each


def rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout over layers: ``prod_l normalise(mean_heads(A_l) + I)``, (T, T).

    One layer, one head, two positions: token 1 attends half to each.

    >>> a = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])    # (H=1, T=2, T=2)
    >>> rollout([a])
    tensor([[1.0000, 0.0000],
            [0.2500, 0.7500]])
    >>> rollout([a, a])                                  # the second layer mixes once more
    tensor([[1.0000, 0.0000],
            [0.4375, 0.5625]])
    """
    if not attentions:
        raise LanternError("rollout needs the attention of at least one layer")
    T = attentions[0].shape[-1]
    eye = torch.eye(T, dtype=torch.float64)
    result = eye
    for weights in attentions:
        a = weights.double().mean(dim=0) + eye  # (T, T): heads averaged, plus the residual path
        a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result  # later layers act on what earlier layers mixed
    return result.float()


def find_query(labels: Sequence[str], word: str) -> int:
    """The last position whose token is ``word`` (quotes and spaces ignored, any case);
    failing that, the last whose token contains it.

    >>> find_query(["<|endoftext|>", "'The'", "' cat'", "' sat'", "' it'"], "it")
    4
    """
    plain = [lab.strip("'\"").strip().lower() for lab in labels]
    target = word.strip().lower()
    for match in (lambda p: p == target, lambda p: target in p):
        hits = [i for i, p in enumerate(plain) if target and match(p)]
        if hits:
            return hits[-1]
    raise LanternError(f"--query {word!r}: no token of the text matches; its tokens are "
                       f"{', '.join(labels)}")


@dataclass
class AttentionView:
    """One head's matrix (``matrix[i][j]``: how much position i attends to j) and, when a
    query row is chosen, its most-attended positions ``(index, label, weight)``."""

    ids: list[int]
    labels: list[str]
    layer: int
    head: int
    matrix: list[list[float]]
    query: int | None = None
    top: list[tuple[int, str, float]] = field(default_factory=list)
    sliding_window: int | None = None
    rollout: list[list[float]] | None = None


@dataclass
class HeadGrid:
    """Every head of one layer: ``matrices[h][i][j]``."""

    labels: list[str]
    layer: int
    matrices: list[list[list[float]]]


def _check_layer_head(model, layer: int, head: int | None = None) -> None:
    n_layer, n_head = model.config.n_layer, model.config.n_head
    if not 0 <= layer < n_layer:
        raise LanternError(f"--layer {layer}: the model has layers 0..{n_layer - 1}")
    if head is not None and not 0 <= head < n_head:
        raise LanternError(f"--head {head}: the model has heads 0..{n_head - 1}")


def attention_view(model, tokenizer, text: str | None, layer: int = 0, head: int = 0,
                   query: str | None = None, top: int = 3, with_rollout: bool = False,
                   bos: bool = True, ids: Sequence[int] | None = None) -> AttentionView:
    """The matrix of ``layer``/``head`` over ``text`` (preceded by <|endoftext|> with ``bos``),
    or over the token ``ids`` as they are."""
    _check_layer_head(model, layer, head)
    ids = view_ids(tokenizer, text, model, bos, ids)
    labels = [label(tokenizer, i) for i in ids]
    weights = attention_weights(model, ids)
    matrix = weights[layer][head]  # (T, T)
    view = AttentionView(ids, labels, layer, head, matrix.tolist(),
                         sliding_window=model.config.sliding_window)
    if query is not None:
        view.query = find_query(labels, query)
        row = matrix[view.query]
        values, where = torch.topk(row, min(top, view.query + 1))
        view.top = [(int(j), labels[j], float(v)) for v, j in zip(values, where)]
    if with_rollout:
        view.rollout = rollout(weights).tolist()
    return view


def head_grid(model, tokenizer, text: str, layer: int = 0, bos: bool = True) -> HeadGrid:
    """All heads of ``layer`` over ``text``."""
    _check_layer_head(model, layer)
    ids = prompt_ids(tokenizer, text, model, bos)
    weights = attention_weights(model, ids)[layer]  # (H, T, T)
    return HeadGrid([label(tokenizer, i) for i in ids], layer, weights.tolist())


def render_attention(view: AttentionView, color: bool = True, max_tokens: int = 24) -> str:
    """The matrix as a table of percentages (rows attend to columns); the query row marked.

    Long texts show their last ``max_tokens`` rows and columns (where the query row is, if
    it is earlier, it is kept by shifting the window).
    """
    T = len(view.labels)
    end = T if view.query is None else max(min(T, view.query + 1), min(T, max_tokens))
    start = max(0, end - max_tokens)
    cols = range(start, end)
    short = [lab if len(lab) <= 10 else lab[:9] + "…" for lab in view.labels]
    width = max(len(short[i]) for i in cols) + 5
    lines = [f"layer {view.layer}, head {view.head}: row = the token attending, column = the token "
             f"attended to (%, each row sums to 100)"
             + (f"; sliding window {view.sliding_window}" if view.sliding_window else "")]
    if start:
        lines.append(f"(positions {start}..{end - 1} of {T})")
    lines.append(" " * (width + 2) + "".join(f"{j:>4}" for j in cols))
    for i in cols:
        mark = "▶" if i == view.query else " "
        cells = []
        for j in cols:
            w = view.matrix[i][j]
            cell = "   ." if j > i else f"{round(100 * w):>4}"
            if color and j <= i and w > 0:
                shade = 255 - min(23, round(w * 23))  # 256-colour greys: darker = more attention
                cell = f"\x1b[48;5;{shade}m\x1b[{'97' if w > 0.5 else '30'}m{cell}\x1b[0m"
            cells.append(cell)
        lines.append(f"{mark} {f'{i:>2} {short[i]}':<{width}}" + "".join(cells))
    if view.query is not None:
        reads = ", ".join(f"{lab} ({w:.0%})" for _, lab, w in view.top)
        lines.append(f"{view.labels[view.query]} (position {view.query}) attends most to: {reads}")
    return "\n".join(lines)


def _heatmap(ax, matrix, labels: Sequence[str], title: str, ticks: bool = True, query: int | None = None):
    import numpy as np

    T = len(labels)
    data = np.array(matrix, dtype=float)
    data[np.triu_indices(T, 1)] = np.nan  # the future: not attendable
    image = ax.imshow(data, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    if ticks:
        short = [lab if len(lab) <= 12 else lab[:11] + "…" for lab in labels]
        size = 9 if T <= 20 else 7 if T <= 40 else 5
        ax.set_xticks(range(T), short, rotation=90, fontsize=size)
        ax.set_yticks(range(T), short, fontsize=size)
        ax.set_xlabel("attended token (key)")
        ax.set_ylabel("attending token (query)")
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if query is not None:
        import matplotlib.patches as patches

        ax.add_patch(patches.Rectangle((-0.5, query - 0.5), T, 1, fill=False, edgecolor="red", linewidth=2))
    return image


def plot_attention(view: AttentionView, path: str | os.PathLike) -> Path:
    """Heatmap of the head's matrix (the query row outlined in red), labelled by token."""
    plt = pyplot()
    T = len(view.labels)
    side = min(14.0, max(5.0, 0.35 * T + 2.5))
    fig, ax = plt.subplots(figsize=(side + 1.2, side), dpi=110)
    title = f"attention, layer {view.layer}, head {view.head}"
    if view.query is not None:
        title += f"\n{view.labels[view.query]} attends most to " + ", ".join(
            f"{lab} ({w:.0%})" for _, lab, w in view.top)
    image = _heatmap(ax, view.matrix, view.labels, title, query=view.query)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="attention weight")
    return save(fig, path)


def plot_rollout(view: AttentionView, path: str | os.PathLike) -> Path:
    """Heatmap of the rollout matrix (all layers, heads averaged)."""
    if view.rollout is None:
        raise LanternError("this attention view was computed without rollout")
    plt = pyplot()
    T = len(view.labels)
    side = min(14.0, max(5.0, 0.35 * T + 2.5))
    fig, ax = plt.subplots(figsize=(side + 1.2, side), dpi=110)
    image = _heatmap(ax, view.rollout, view.labels, "attention rollout over all layers\n"
                     "(heads averaged, residual added, layers multiplied)", query=view.query)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the input token")
    return save(fig, path)


def plot_head_grid(grid: HeadGrid, path: str | os.PathLike) -> Path:
    """Every head of a layer side by side (axis labels on the first column and last row)."""
    plt = pyplot()
    H, T = len(grid.matrices), len(grid.labels)
    cols = min(H, 4)
    rows = -(-H // cols)
    cell = 2.2 + 0.12 * T
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols + 1.0, cell * rows + 0.6), dpi=110,
                             squeeze=False)
    short = [lab if len(lab) <= 10 else lab[:9] + "…" for lab in grid.labels]
    size = 8 if T <= 16 else 6 if T <= 32 else 4
    for h, ax in enumerate(axes.flat):
        if h >= H:
            ax.axis("off")
            continue
        image = _heatmap(ax, grid.matrices[h], grid.labels, f"head {h}", ticks=False)
        if h % cols == 0:
            ax.set_yticks(range(T), short, fontsize=size)
        if h >= H - cols:
            ax.set_xticks(range(T), short, rotation=90, fontsize=size)
    fig.suptitle(f"all heads of layer {grid.layer} (rows attend to columns)", fontsize=11)
    fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02, label="attention weight")
    return save(fig, path)


def attention_command(run: str, text: str, layer: int = 0, head: int = 0, query: str | None = None,
                      grid: bool = False, with_rollout: bool = False, out: str | None = None,
                      color: bool = True, device: str | None = None) -> str:
    """``lantern inspect attention``: table + heatmap (+ head grid, + rollout)."""
    loaded = Run(run)
    model, tokenizer = loaded.model(device), loaded.tokenizer
    folder = out or Path(run) / "inspect"
    view = attention_view(model, tokenizer, text, layer, head, query, with_rollout=with_rollout)
    written = [plot_attention(view, output_path(folder, f"attention_l{layer}h{head}.png"))]
    if grid:
        written.append(plot_head_grid(head_grid(model, tokenizer, text, layer),
                                      output_path(folder, f"attention_l{layer}_heads.png")))
    if with_rollout:
        written.append(plot_rollout(view, output_path(folder, "attention_rollout.png")))
    return render_attention(view, color=color) + "".join(f"\nwrote {p}" for p in written)
