"""View 1, tokens: how a text splits into pieces, with ids, counts and bytes per token.

Several tokenizers can be compared on the same text (``lantern inspect tokens TEXT
--tokenizer A --tokenizer B``): the one that needs fewer tokens packs more text into
the model's context window.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import LanternError
from ..tokenizer import Tokenizer, escape_bytes, render_colored
from .common import output_path, pyplot, save


@dataclass
class TokenView:
    """One tokenizer's reading of ``text``: ``ids[i]`` covers ``pieces[i]`` (``nbytes[i]`` bytes)."""

    name: str
    text: str
    ids: list[int]
    pieces: list[str]  # printable (see lanternlm.tokenizer.escape_bytes)
    nbytes: list[int]
    n_chars: int
    n_bytes: int
    bytes_per_token: float


def token_view(tokenizer: Tokenizer, text: str, name: str = "tokenizer") -> TokenView:
    """Split ``text`` and describe every piece.

    >>> tok = Tokenizer([(104, 105)], special_tokens=["<|endoftext|>"])
    >>> v = token_view(tok, "hi!")
    >>> v.ids, v.pieces, v.nbytes, v.bytes_per_token
    ([256, 33], ['hi', '!'], [2, 1], 1.5)
    """
    ids = tokenizer.encode(text)
    raw = [tokenizer.token_bytes(i) for i in ids]
    n_bytes = len(text.encode("utf-8"))
    return TokenView(name, text, ids, [escape_bytes(b) for b in raw], [len(b) for b in raw],
                     len(text), n_bytes, n_bytes / max(1, len(ids)))


def render_tokens(tokenizers: dict[str, Tokenizer], text: str, color: bool = True) -> str:
    """The coloured pieces of each tokenizer, then a comparison line per tokenizer."""
    blocks = [f"== {name} (vocab {tok.vocab_size:,})\n{render_colored(tok, text, color=color)}"
              for name, tok in tokenizers.items()]
    if len(tokenizers) > 1:
        views = [token_view(tok, text, name) for name, tok in tokenizers.items()]
        width = max(len("tokenizer"), *(len(v.name) for v in views))
        blocks.append("\n".join([f"{'tokenizer':<{width}}  tokens  bytes/token"] + [
            f"{v.name:<{width}}  {len(v.ids):>6}  {v.bytes_per_token:>11.2f}" for v in views]))
    return "\n\n".join(blocks)


_PALETTE = ["#a6cee3", "#fbb4ae", "#b3de69", "#fdd49e", "#d9b3ff", "#a1d99b"]


def plot_tokens(views: Sequence[TokenView], path: str | os.PathLike, line_chars: int = 64) -> Path:
    """Each tokenizer's pieces as coloured boxes (piece above, id below), wrapped in lines."""
    plt = pyplot()
    layouts = []  # per view: list of (line, column, width, piece, id)
    for view in views:
        line, col, boxes = 0, 0, []
        for piece, token in zip(view.pieces, view.ids):
            width = max(len(piece), len(str(token))) + 1
            if col + width > line_chars and col > 0:
                line, col = line + 1, 0
            boxes.append((line, col, width, piece, token))
            col += width
        layouts.append(boxes)
    rows = sum(boxes[-1][0] + 1 for boxes in layouts if boxes) + 1.2 * len(views)
    fig = plt.figure(figsize=(0.13 * line_chars + 0.5, 0.55 * rows + 0.3), dpi=110)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-1, line_chars + 1)
    y = 0.0
    for view, boxes in zip(views, layouts):
        ax.text(0, y, f"{view.name}: {len(view.ids)} tokens, {view.n_bytes} bytes, "
                      f"{view.bytes_per_token:.2f} bytes/token", fontsize=10, weight="bold", va="center")
        y += 1.0
        for k, (line, col, width, piece, token) in enumerate(boxes):
            top = y + line * 1.0
            ax.add_patch(plt.Rectangle((col, top - 0.35), width - 0.2, 0.8,
                                       color=_PALETTE[k % len(_PALETTE)], linewidth=0))
            ax.text(col + 0.1, top - 0.1, piece.replace(" ", "\u2423"), fontsize=9,
                    family="monospace", va="center")
            ax.text(col + 0.1, top + 0.25, str(token), fontsize=6.5, family="monospace",
                    va="center", color="#333333")
        y += (boxes[-1][0] + 1 if boxes else 0) + 0.4
    ax.set_ylim(y, -0.8)
    ax.axis("off")
    return save(fig, path)


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """A tokenizer JSON file, or the ``tokenizer.json`` of a run / shards directory."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise LanternError(f"{path}: no such tokenizer file (give a tokenizer JSON or a run directory)")
    return Tokenizer.load(path)


def tokens_command(text: str, tokenizers: Sequence[str], out: str | os.PathLike = ".",
                   color: bool = True) -> str:
    """``lantern inspect tokens``: the terminal view; writes ``out/tokens.png``."""
    if not tokenizers:
        raise LanternError("give at least one --tokenizer (a tokenizer JSON file or a run directory)")
    loaded: dict[str, Tokenizer] = {}
    for spec in tokenizers:
        name = Path(spec).name if Path(spec).name != "tokenizer.json" else Path(spec).parent.name
        while name in loaded:
            name += "'"
        loaded[name] = load_tokenizer(spec)
    png = plot_tokens([token_view(t, text, n) for n, t in loaded.items()], output_path(out, "tokens.png"))
    return render_tokens(loaded, text, color=color) + f"\n\nwrote {png}"

