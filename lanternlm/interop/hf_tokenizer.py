"""Our tokenizer ↔ Hugging Face ``tokenizers``: the check that an exported file encodes as we do.

:meth:`lanternlm.tokenizer.Tokenizer.hf_json` builds the ``tokenizer.json`` document;
:func:`check_hf_tokenizer` loads it with the ``tokenizers`` package and re-encodes
:data:`PROBES` (digit runs, whitespace before and after newlines, contractions, scripts,
emoji, special-token strings) plus seeded random strings, and refuses the file at the first
string whose ids differ, naming it. Every export runs it, so a split pattern that
Hugging Face's regex engine reads differently from ours cannot be written silently.
"""

from __future__ import annotations

import json
import random
from typing import Sequence

from ..errors import LanternError
from ..tokenizer import Tokenizer

PROBES = (
    "0", "00", "000", "0000", "12345", "1234567", " 12 345 6789", "3.14159 -42 1e-9 0xFF", "2024-01-01",
    "$1,000,000.", "١٢٣٤ ٥", "a  \nb  \n", "end   ", "   ", "\n", "\n\n\n", "  \n\n  x", "x\r\n\r\ny",
    "\t\tindented\n    code()", "!!!\n\nx", "...", " ?! ", "don't I'M we'll they've she'd you're IT'S",
    "Hello, world! How are you?", "naïve café — 東京で日本語を話す。", "Здравствуй, мир!", "😀🎉👍🏽",
    "“quoted” ‘single’", "e\u0301 \u00a0nbsp", "العربية עברית हिन्दी", "a\u200bb", "x" * 40,
    "  leading and trailing  ", "line\n  indented\n\tTabbed\n", "<|endoftext|>plain<|end|>",
)
"""Strings every export re-encodes with ``tokenizers`` (plus :func:`random_probes`)."""

_ALPHABET = "aZ 09\n\r\t.,'!?-_éß東😀\u00a0\u0301\u200b'sll" + "0123456789" + "   "


def random_probes(n: int = 200, seed: int = 0) -> list[str]:
    """``n`` seeded random strings mixing letters, digits, spaces, newlines and punctuation.

    >>> random_probes(2) == random_probes(2) and len(random_probes(3)) == 3
    True
    """
    rng = random.Random(seed)
    return ["".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 24))) for _ in range(n)]


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise LanternError("Hugging Face tokenizer files need the 'tokenizers' package: "
                           "pip install 'lanternlm[hf]'") from None
    return tokenizers


def check_hf_tokenizer(tokenizer: Tokenizer, document: dict | str,
                       texts: Sequence[str] | None = None) -> int:
    """Load ``document`` (a ``tokenizer.json`` as a dict or JSON text) with ``tokenizers``
    and check that it encodes ``texts`` (default: :data:`PROBES` + :func:`random_probes`)
    to the ids ``tokenizer`` gives with ``allowed_special="all"``, and decodes them back.

    Returns the number of strings checked; raises LanternError at the first difference.
    """
    text = document if isinstance(document, str) else json.dumps(document, ensure_ascii=False)
    try:
        hf = _tokenizers().Tokenizer.from_str(text)
    except Exception as err:  # tokenizers raises plain Exceptions
        raise LanternError(f"tokenizer.json: the 'tokenizers' package cannot load it ({err})") from None
    texts = list(PROBES) + random_probes() if texts is None else list(texts)
    for probe in texts:
        ours = tokenizer.encode(probe, allowed_special="all")
        theirs = hf.encode(probe, add_special_tokens=False).ids
        if theirs != ours:
            raise LanternError(
                f"tokenizer.json: Hugging Face 'tokenizers' encodes {probe!r} as {theirs} "
                f"({[hf.id_to_token(i) for i in theirs]}) but lanternlm gives {ours} "
                f"({[tokenizer.decode([i]) for i in ours]}); the split pattern {tokenizer.pattern!r} "
                "is read differently by its regex engine: not exported")
        if hf.decode(ours, skip_special_tokens=False) != tokenizer.decode(ours):
            raise LanternError(f"tokenizer.json: Hugging Face 'tokenizers' decodes {ours} differently from "
                               f"lanternlm ({probe!r}): not exported")
    return len(texts)
