"""A word list every machine already has: the prose and code of Python's own library.

Harvested from :mod:`pydoc_data.topics` (the text behind ``help("if")`` and friends) and
the standard library's ``.py`` sources (its tests, IDLE and Tk demos left out), both
shipped with CPython: lowercase alphabetic words of 3 to 12 letters that occur at least
twice and contain a vowel. Nothing is downloaded. The list depends on the Python version
(3.11 gives about 8,300 words); a word's train/test split does not, since it is a hash of
the word itself.

Beside them, :data:`ENGLISH_WORDS`: ordinary English words (the seed's "strawberry" among
them) that letter counting and reversal keep for evaluation only, so a score also says how
the model does on the words a person would ask about, not only on words from code.

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
# Held out whole (never trained on) by the tasks that spell words. Chosen for letters
# that repeat (a count of 2, 3 or more is as common as a count of 1 in the test set).
ENGLISH_WORDS = tuple(sorted(set("""
strawberry lantern banana mississippi tennessee committee coffee referee engineer
bookkeeper assess possess success nonsense parallel excellent independent
pepper sleepless balloon cinnamon pineapple tomorrow millennium
occurrence necessary address grammar apple orange lemon cherry potato tomato carrot
garden window kitchen bottle summer winter yellow purple rabbit kitten puppy
mirror pillow butter hammer ladder bubble puzzle giraffe elephant penguin dolphin
squirrel chocolate vanilla sandwich pizza cookie muffin umbrella blanket dinner
breakfast teacher student library history science weather rainbow thunder river
mountain forest island ocean desert village street bridge castle palace museum
people happy little sweet green coconut avocado broccoli rhubarb beetroot
cabbage spaghetti lasagna meeting assessment embarrass accommodate intelligence
difference beginning different between remember tomorrow afternoon goodbye freedom
seventeen eleven thirteen hundred dollar cheese sheep steel wheel tree three
""".split())))
ENGLISH_SHARE = 0.05  # of draws; all held out, so about a third of the test questions


def draw_word(rng) -> str:
    """A task word: one of :data:`ENGLISH_WORDS` with probability :data:`ENGLISH_SHARE`,
    else one of :func:`word_list` (the tasks hold the English ones out whole)."""
    return rng.choice(ENGLISH_WORDS if rng.random() < ENGLISH_SHARE else word_list())


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
    return tuple(harvest(texts))
