"""Letter counting: "How many r's are in strawberry?".

Hard for a language model that sees tokens, not letters; easy once it spells the
word first. The thinking trace does exactly that, one numbered line per letter (the
numbers keep a small model's place in the word: an unnumbered spelling, and one with
the count after every letter, both measured worse), at three lengths:

* low: the numbered letters, then the count;
* medium: the numbered letters, each match with the running count, then the total;
* high: a header naming the word and the letter, medium's lines, then the positions
  found and their number.

All three spell in the same tokens (``3 r``), as word reversal does; the header and the
reply restate the word as the question wrote it, quoted or bare (:func:`as_asked`), so
restating it is a copy of the question's own tokens.

The asked count is drawn first, evenly from 0, 1, 2 and "3 or more", and then a word
with a letter of that count: in ordinary words most letters occur once, so with letters
drawn from the word an answer of "1" was right three times in four without looking.
Now always giving the most common count scores about a quarter (the evaluation prints
that baseline beside the score).
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter

from .base import Example, Task, as_asked, check_level, numbers_in, quoted_in
from .words import ENGLISH_WORDS, draw_word

_QUESTIONS = (
    "How many {l}'s are in {w}?",
    "How many {l}'s are in the word \"{w}\"?",
    "How many times does the letter {l} appear in {w}?",
    "Count the letter '{l}' in \"{w}\".",
    "How many '{l}' are there in '{w}'?",
    "In the word {w}, how many {l}'s are there?",
)


_BARE_WORD = re.compile(r"\bin\s+([A-Za-z]+)[.!?]?\s*$")  # "... appears 2 times in returned."
_NAMED_LETTER = re.compile(r"\bletter\s+['\"`]?([A-Za-z])\b|(?<![A-Za-z'])([A-Za-z])'s\b")
COUNT_CLASSES = (0, 1, 2, 3)  # the asked letter's count; the last means "3 or more"


def _times(n: int) -> str:
    return "1 time" if n == 1 else f"{n} times"


class LetterCounting(Task):
    """Count one letter in one word; the split is by word (held-out words)."""

    name = "letters"
    description = "count a letter in a word (\"How many r's are in strawberry?\")"

    held_out = frozenset(ENGLISH_WORDS)

    def sample(self, rng: random.Random) -> Example:
        want = rng.choice(COUNT_CLASSES)
        letters: list[str] = []
        while not letters:  # a few draws at most: a tenth of the words have a letter 3 times
            word = draw_word(rng)
            if want == 0:
                letters = sorted(set(string.ascii_lowercase) - set(word))
            else:
                letters = sorted(ch for ch, n in Counter(word).items() if min(n, COUNT_CLASSES[-1]) == want)
        letter = rng.choice(letters)
        question = rng.choice(_QUESTIONS).format(l=letter, w=word)
        return Example(self.name, word, question, str(word.count(letter)),
                       {"word": word, "letter": letter})

    def thinking(self, example: Example, level: str) -> str:
        check_level(self.name, level)
        word, letter = example.fields["word"], example.fields["letter"]
        count = word.count(letter)
        if level == "low":
            return "\n".join(f"{i} {ch}" for i, ch in enumerate(word, start=1)) + f"\n{letter}: {count}"
        if level == "medium":
            running, lines = 0, []
            for i, ch in enumerate(word, start=1):
                running += ch == letter
                lines.append(f"{i} {ch}, count {running}" if ch == letter else f"{i} {ch}")
            return "\n".join(lines) + f"\nTotal: {count}"
        lines = [f"Spell {as_asked(example.question, word)} one letter per line and count each {letter}:"]
        running, positions = 0, []
        for i, ch in enumerate(word, start=1):
            if ch == letter:
                running += 1
                positions.append(str(i))
                lines.append(f"{i} {ch}, count {running}")
            else:
                lines.append(f"{i} {ch}")
        if positions:
            lines.append(f"Matches at position{'s' if count > 1 else ''} {', '.join(positions)}: "
                         f"that is {count}.")
        else:
            lines.append(f"No letter matched {letter}: that is 0.")
        return "\n".join(lines)

    def reply(self, example: Example) -> str:
        word, letter = example.fields["word"], example.fields["letter"]
        return f"The letter {letter} appears {_times(word.count(letter))} in {as_asked(example.question, word)}."

    def parse(self, answer_text: str) -> str | None:
        """The first number in the reply ("three", "3", "no r's" all count).

        >>> LetterCounting().parse('There are three r\\'s in "strawberry".')
        '3'
        """
        found = numbers_in(answer_text)
        return str(found[0]) if found else None

    def restates(self, example: Example, answer_text: str) -> bool:
        """Any word it quotes, or names bare at the end (``... in returned.``), is the asked
        word, and any letter it names is the asked letter (``letter x``, ``x's``, a quoted
        single letter); naming none is fine.

        >>> ex = Example("letters", "urldefrag", "How many u's are in urldefrag?", "1",
        ...              {"word": "urldefrag", "letter": "u"})
        >>> LetterCounting().restates(ex, 'The letter u appears 1 time in "urldefrag".')
        True
        >>> LetterCounting().restates(ex, 'The letter u appears 1 time in "crcrcr".')
        False
        >>> LetterCounting().restates(ex, "The letter u appears 1 time in urldefrag.")
        True
        >>> LetterCounting().restates(ex, "The letter u appears 1 time in crcrcr.")
        False
        >>> LetterCounting().restates(ex, "There is one r.")
        True
        >>> LetterCounting().restates(ex, "There are 1 r's.")
        False
        """
        word, letter = example.fields["word"], example.fields["letter"]
        quoted = [q.strip().lower() for q in quoted_in(answer_text)]
        words = [q for q in quoted if len(q) > 1 and not q.isdigit()] + \
            [m.group(1).lower() for m in _BARE_WORD.finditer(answer_text)]
        letters = [q for q in quoted if len(q) == 1 and q.isalpha()] + \
            [(m.group(1) or m.group(2)).lower() for m in _NAMED_LETTER.finditer(answer_text)]
        return all(w == word for w in words) and all(ch == letter for ch in letters)
