"""A word list every machine already has: the prose and code of Python's own library.

Harvested from :mod:`pydoc_data.topics` (the text behind ``help("if")`` and friends) and
the standard library's ``.py`` sources (its tests, IDLE and Tk demos left out), both
shipped with CPython: lowercase alphabetic words of 3 to 12 letters that occur at least
twice and contain a vowel. Nothing is downloaded. The list depends on the Python version
(3.11 gives about 8,300 words); a word's train/test split does not, since it is a hash of
the word itself.

Why so many: a model spells a word from its tokens, so a held-out word can only be spelled
if its tokens were spelled in training words. With the documentation alone (~1,900 words)
a quarter of the held-out words had a token no training word has (for the quickstart's
4,096-token vocabulary); with the library sources, 7 %.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from pathlib import Path

MIN_LETTERS, MAX_LETTERS = 3, 12
EXTRA_WORDS = ("strawberry", "lantern")  # the seed's own example, and our name
_WORD = re.compile(r"(?<![\w.'-])[a-z]+(?![\w'-])")


def harvest(texts: list[str], min_count: int = 2) -> list[str]:
    """Sorted lowercase words of 3–12 letters, with a vowel, seen ``min_count`` times.

    >>> harvest(["the cat saw the other cat; x.cat_id", "The rhythm of the sky"])
    ['cat', 'the']
    """
    counts = Counter(w for text in texts for w in _WORD.findall(text)
                     if MIN_LETTERS <= len(w) <= MAX_LETTERS and re.search("[aeiou]", w))
    return sorted(w for w, c in counts.items() if c >= min_count)


SKIPPED_PARTS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3",
                 "tkinter", "turtledemo", "ensurepip"}


def library_sources() -> list[str]:
    """The text of the standard library's ``.py`` files, sorted by path (tests and GUI
    code left out); empty where the sources are not installed."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if not SKIPPED_PARTS & set(p.relative_to(root).parts))
    return [p.read_text(encoding="utf-8", errors="replace") for p in files]


@functools.lru_cache(maxsize=1)
def word_list() -> tuple[str, ...]:
    """The task word list (sorted, deterministic for a given Python version)."""
    from pydoc_data.topics import topics

    texts = list(topics.values()) + library_sources()
    return tuple(sorted(set(harvest(texts)) | set(EXTRA_WORDS)))
