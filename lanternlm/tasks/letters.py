"""Letter counting: "How many r's are in strawberry?".

Hard for a language model that sees tokens, not letters; easy once it spells the
word first. The thinking trace does exactly that, one numbered line per letter (the
numbers keep a small model's place in the word: an unnumbered spelling, and one with
the count after every letter, both measured worse), at three lengths:

* low: the numbered letters, then the count;
* medium: the numbered letters, each match with the running count, then the total;
* high: a header, the numbered letters with matches marked and counted, then a check
  of the length and of the positions found.
"""

from __future__ import annotations

import random
import string

from .base import Example, Task, check_level, numbers_in
from .words import word_list

_QUESTIONS = (
    "How many {l}'s are in {w}?",
    "How many {l}'s are in the word \"{w}\"?",
    "How many times does the letter {l} appear in {w}?",
    "Count the letter '{l}' in \"{w}\".",
    "How many '{l}' are there in '{w}'?",
    "In the word {w}, how many {l}'s are there?",
)


def _times(n: int) -> str:
    return "1 time" if n == 1 else f"{n} times"


class LetterCounting(Task):
    """Count one letter in one word; the split is by word (held-out words)."""

    name = "letters"
    description = "count a letter in a word (\"How many r's are in strawberry?\")"

    def __init__(self, absent_share: float = 0.2):
        self.absent_share = absent_share

    def sample(self, rng: random.Random) -> Example:
        word = rng.choice(word_list())
        absent = sorted(set(string.ascii_lowercase) - set(word))
        if rng.random() < self.absent_share and absent:
            letter = rng.choice(absent)
        else:
            letter = rng.choice(sorted(set(word)))
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
        lines = [f"Spell \"{word}\" one letter per line and mark each {letter}:"]
        running, positions = 0, []
        for i, ch in enumerate(word, start=1):
            if ch == letter:
                running += 1
                positions.append(str(i))
                lines.append(f"{i}. {ch} <- match, count {running}")
            else:
                lines.append(f"{i}. {ch}")
        lines.append(f"Check: {len(word)} letters spelled, and \"{word}\" has {len(word)} letters.")
        if positions:
            lines.append(f"Matches at position{'s' if count > 1 else ''} {', '.join(positions)}: "
                         f"that is {count}.")
        else:
            lines.append(f"No letter matched {letter}: that is 0.")
        return "\n".join(lines)

    def reply(self, example: Example) -> str:
        word, letter = example.fields["word"], example.fields["letter"]
        return f"The letter {letter} appears {_times(word.count(letter))} in \"{word}\"."

    def parse(self, answer_text: str) -> str | None:
        """The first number in the reply ("three", "3", "no r's" all count).

        >>> LetterCounting().parse('There are three r\\'s in "strawberry".')
        '3'
        """
        found = numbers_in(answer_text)
        return str(found[0]) if found else None
