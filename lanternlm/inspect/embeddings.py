"""View 2, embeddings: which tokens the model learned to place near each other.

Every token id owns a row of the embedding table (``model.wte.weight``, (V, C)). Tokens
used alike end up with similar rows: nearest neighbours by cosine similarity show it,
and a 2-D map by principal component analysis (PCA) draws it (the cat / dog / banana
picture, from a real model).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..errors import LanternError
from ..run import Run
from .common import label, output_path, pyplot, save


@dataclass
class PCA:
    """``coords`` (N, k): the points on the top-k principal axes; ``components`` (k, C)
    the axes (unit vectors); ``explained`` the share of the variance along each axis."""

    coords: list[list[float]]
    components: list[list[float]]
    explained: list[float]


def pca(x: torch.Tensor, k: int = 2) -> PCA:
    """Principal component analysis of the rows of ``x`` (N, C) by SVD of the centred rows.

    Each axis's sign is fixed so that its largest-magnitude coordinate is positive (SVD
    alone leaves it arbitrary). Points on the line y = 2x lie on one axis:

    >>> r = pca(torch.tensor([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]]), k=2)
    >>> [round(v, 4) for v in r.explained]
    [1.0, 0.0]
    >>> [round(row[0], 4) for row in r.coords]    # signed distance from the mean, +-sqrt(5)
    [-2.2361, 0.0, 2.2361]
    """
    if x.ndim != 2 or x.shape[0] < 2:
        raise LanternError(f"PCA needs at least 2 points as an (N, C) matrix, got shape {tuple(x.shape)}")
    k = min(k, *x.shape)
    centred = x.double() - x.double().mean(dim=0, keepdim=True)  # (N, C)
    u, s, vh = torch.linalg.svd(centred, full_matrices=False)  # (N, r), (r,), (r, C)
    sign = torch.sign(vh[torch.arange(vh.shape[0]), vh.abs().argmax(dim=1)])  # (r,)
    sign[sign == 0] = 1
    vh = vh * sign[:, None]
    coords = centred @ vh[:k].T  # (N, k)
    variance = s.pow(2)
    explained = variance[:k] / variance.sum().clamp_min(1e-300)
    return PCA(coords.tolist(), vh[:k].tolist(), explained.tolist())


def cosine_neighbours(table: torch.Tensor, token: int, k: int,
                      candidates: Sequence[int] | None = None) -> list[tuple[int, float]]:
    """The ``k`` rows of ``table`` (V, C) most similar to row ``token`` by cosine, itself excluded.

    ``candidates`` limits the search (e.g. to real, non-special tokens).

    >>> table = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    >>> [(i, round(s, 3)) for i, s in cosine_neighbours(table, 0, 2)]
    [(1, 0.994), (2, 0.0)]
    """
    unit = torch.nn.functional.normalize(table.float(), dim=1)  # (V, C)
    sims = unit @ unit[token]  # (V,)
    allowed = torch.zeros_like(sims, dtype=torch.bool)
    allowed[list(candidates) if candidates is not None else slice(None)] = True
    allowed[token] = False
    sims = sims.masked_fill(~allowed, float("-inf"))
    k = min(k, int(allowed.sum()))
    values, ids = torch.topk(sims, k)
    return [(int(i), float(v)) for i, v in zip(ids, values)]


def word_token(tokenizer, word: str) -> int | None:
    """The single token of ``word`` as it appears mid-sentence (``" word"``) or alone, else None."""
    for text in (" " + word, word):
        ids = tokenizer.encode(text)
        if len(ids) == 1:
            return ids[0]
    return None


def _is_text(piece: bytes) -> bool:
    """Whole UTF-8 characters (fragments of a character are rarely trained and only add noise)."""
    try:
        piece.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@dataclass
class Neighbour:
    token: int
    label: str
    similarity: float


@dataclass
class WordEmbedding:
    word: str
    token: int
    label: str
    neighbours: list[Neighbour]


@dataclass
class EmbeddingView:
    """Neighbours of each word that is one token; ``missing`` words split into several
    tokens (word → their pieces). ``map`` places words (and their nearest neighbours,
    ``kind`` "neighbour") on the first two principal axes of their embeddings."""

    words: list[WordEmbedding]
    missing: dict[str, list[str]]
    map: list[dict] = field(default_factory=list)  # {"label", "kind", "x", "y"}
    explained: list[float] = field(default_factory=list)


@torch.no_grad()
def embedding_view(model, tokenizer, words: Sequence[str], k: int = 8,
                   map_neighbours: int = 0, tokens: Sequence[int] = ()) -> EmbeddingView:
    """Neighbours of ``words`` (and of the token ids ``tokens``, each shown as its label) in
    the token-embedding table and their PCA map (the words, plus each word's first
    ``map_neighbours`` neighbours). Neighbours are searched among the tokens that are whole
    pieces of text: special tokens and byte fragments of a multi-byte character are left out (and an imported vocabulary's unused ids)."""
    if not words and not tokens:
        raise LanternError("give at least one word or token")
    bad = [t for t in tokens if not 0 <= t < tokenizer.vocab_size]
    if bad:
        raise LanternError(f"token ids {bad[:5]} are outside the vocabulary 0..{tokenizer.vocab_size - 1}")
    table = model.wte.weight.detach().float().cpu()  # (V, C)
    candidates = [i for i, piece in tokenizer.vocab.items() if _is_text(piece)]  # no specials, no unused ids
    found, missing = [], {}
    for word in words:
        token = word_token(tokenizer, word)
        if token is None:
            missing[word] = [label(tokenizer, i) for i in tokenizer.encode(" " + word)]
            continue
        neighbours = [Neighbour(i, label(tokenizer, i), s)
                      for i, s in cosine_neighbours(table, token, k, candidates)]
        found.append(WordEmbedding(word, token, label(tokenizer, token), neighbours))
    for token in tokens:
        neighbours = [Neighbour(i, label(tokenizer, i), s)
                      for i, s in cosine_neighbours(table, token, k, candidates)]
        found.append(WordEmbedding(label(tokenizer, token), token, label(tokenizer, token), neighbours))
    view = EmbeddingView(found, missing)
    points = [(w.token, w.label, "word") for w in found]
    seen = {w.token for w in found}
    for w in found:
        for n in w.neighbours[:map_neighbours]:
            if n.token not in seen:
                points.append((n.token, n.label, "neighbour"))
                seen.add(n.token)
    if len(points) >= 2:
        result = pca(table[[p[0] for p in points]], k=2)
        view.explained = result.explained
        view.map = [{"label": lab, "kind": kind, "x": xy[0], "y": xy[1] if len(xy) > 1 else 0.0}
                    for (_, lab, kind), xy in zip(points, result.coords)]
    return view


def render_embeddings(view: EmbeddingView) -> str:
    """Each word's neighbours with their cosine similarity."""
    lines = []
    for w in view.words:
        lines.append(f"{w.label} (id {w.token}) nearest:")
        lines += [f"    {n.similarity:+.3f}  {n.label}" for n in w.neighbours]
    for word, pieces in view.missing.items():
        lines.append(f"{word!r} is not one token ({' + '.join(pieces)}); skipped")
    if view.explained:
        lines.append("PCA map: axes explain " + ", ".join(f"{e:.0%}" for e in view.explained)
                     + " of the variance of the mapped embeddings")
    return "\n".join(lines)


def plot_embeddings(view: EmbeddingView, path: str | os.PathLike, title: str = "token embeddings") -> Path:
    """The PCA map: chosen words in bold, their nearest neighbours in grey."""
    if len(view.map) < 2:
        raise LanternError("the embedding map needs at least two words that are single tokens")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    for kind, style in (("neighbour", dict(color="0.55", s=18)), ("word", dict(color="tab:blue", s=40))):
        pts = [p for p in view.map if p["kind"] == kind]
        if pts:
            ax.scatter([p["x"] for p in pts], [p["y"] for p in pts], label=kind + "s", **style)
        for p in pts:
            ax.annotate(p["label"], (p["x"], p["y"]), xytext=(4, 3), textcoords="offset points",
                        fontsize=10 if kind == "word" else 8, color="black" if kind == "word" else "0.4",
                        weight="bold" if kind == "word" else "normal")
    ex = view.explained + [0.0, 0.0]
    ax.set_xlabel(f"principal axis 1 ({ex[0]:.0%} of variance)")
    ax.set_ylabel(f"principal axis 2 ({ex[1]:.0%} of variance)")
    ax.set_title(title)
    ax.margins(0.15)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return save(fig, path)


def embeddings_command(run: str, words: Sequence[str], k: int = 8, out: str | None = None,
                       device: str | None = None) -> str:
    """``lantern inspect embeddings``: neighbours as text; writes ``embeddings.png``."""
    loaded = Run(run)
    model, tokenizer = loaded.model(device), loaded.tokenizer
    view = embedding_view(model, tokenizer, words, k)
    text = render_embeddings(view)
    if len(view.map) >= 2:
        png = plot_embeddings(view, output_path(out or Path(run) / "inspect", "embeddings.png"))
        text += f"\nwrote {png}"
    return text
