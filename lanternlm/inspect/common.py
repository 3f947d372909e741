"""Pieces every view shares: token labels, bars, prompt ids, saving figures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import LanternError

if TYPE_CHECKING:
    from ..model import GPT
    from ..tokenizer import Tokenizer


def label(tokenizer: "Tokenizer", token: int) -> str:
    """A token as people read it in a table or on a plot axis: a quoted piece of text.

    Ids past the tokenizer's vocabulary (the model's padding rows) read ``<id N>``.

    >>> from lanternlm.tokenizer import Tokenizer
    >>> tok = Tokenizer([], special_tokens=["<|endoftext|>"])
    >>> label(tok, 104), label(tok, 256), label(tok, 300)
    ("'h'", '<|endoftext|>', '<id 300>')
    """
    if not 0 <= token < tokenizer.vocab_size:
        return f"<id {token}>"
    return tokenizer.token_label(token)


def bar(fraction: float, width: int) -> str:
    """A horizontal bar of ``fraction * width`` cells, in eighths of a cell.

    >>> bar(0.5, 4), bar(0.53, 4), bar(0.0, 4)
    ('██', '██▏', '')
    """
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[part]


def prompt_ids(tokenizer: "Tokenizer", text: str, model: "GPT", bos: bool = True) -> list[int]:
    """``[<|endoftext|>] + encode(text)`` (as the engine sees a prompt), checked against the window."""
    from ..generate import encode_prompt

    if not text:
        raise LanternError("the text to inspect is empty")
    ids = encode_prompt(tokenizer, text, bos=bos)
    if len(ids) > model.config.block_size:
        raise LanternError(f"the text is {len(ids)} tokens, longer than the model's context window "
                           f"({model.config.block_size}); shorten it")
    return ids


def view_ids(tokenizer: "Tokenizer", text: str | None, model: "GPT", bos: bool = True,
             ids: "Sequence[int] | None" = None) -> list[int]:
    """The ids a view looks at: ``ids`` as they are (checked against the vocabulary and the
    window), else :func:`prompt_ids` of ``text``."""
    if ids is None:
        return prompt_ids(tokenizer, text or "", model, bos)
    ids = [int(t) for t in ids]
    if not ids:
        raise LanternError("the token ids to inspect are empty")
    bad = [t for t in ids if not 0 <= t < tokenizer.vocab_size]
    if bad:
        raise LanternError(f"token ids {bad[:5]} are outside the vocabulary 0..{tokenizer.vocab_size - 1}")
    if len(ids) > model.config.block_size:
        raise LanternError(f"{len(ids)} tokens are more than the model's context window "
                           f"({model.config.block_size})")
    return ids


def output_path(out: str | os.PathLike, name: str) -> Path:
    """``out/name``, creating the folder."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (imported only when plotting)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | os.PathLike) -> Path:
    """Write a figure as PNG (tight layout, nothing clipped) and close it."""
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", dpi=fig.dpi)
    plt.close(fig)
    return path
