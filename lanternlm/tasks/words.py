"""A word list every machine already has: the prose of Python's own documentation.

Harvested from :mod:`pydoc_data.topics` (the text behind ``help("if")`` and friends,
shipped with CPython): lowercase alphabetic words of 3 to 12 letters that occur at
least twice and contain a vowel. Nothing is downloaded. The list depends on the
Python version (3.11 gives about 1,900 words); a word's train/test split does not,
since it is a hash of the word itself.
"""

from __future__ import annotations

import functools
import re
from collections import Counter

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


@functools.lru_cache(maxsize=1)
def word_list() -> tuple[str, ...]:
    """The task word list (sorted, deterministic for a given Python version)."""
    from pydoc_data.topics import topics

    return tuple(sorted(set(harvest(list(topics.values()))) | set(EXTRA_WORDS)))
