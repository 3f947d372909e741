"""Word reversal: "Reverse the word lantern." -> "nretnal".

Like letter counting it needs the letters behind the tokens, so the trace spells:

* low: the letters forward, then backward;
* medium: the letters numbered, then read back from the last number;
* high: numbered letters, read back one per line, the joined result, and a check
  that reversing it again gives the word.
"""

from __future__ import annotations

import random
import re

from .base import Example, Task, check_level, quoted_in
from .words import ENGLISH_WORDS, draw_word

_QUESTIONS = (
    "Reverse the word {w}.",
    "Reverse the word \"{w}\".",
    "What is \"{w}\" spelled backwards?",
    "Spell {w} backwards.",
    "Write '{w}' in reverse.",
)
_LETTERS = re.compile(r"[A-Za-z]+")


class WordReversal(Task):
    """Reverse the letters of a word; the split is by word."""

    name = "reverse"
    description = "spell a word backwards (\"Reverse the word lantern.\")"
    held_out = frozenset(ENGLISH_WORDS)

    def sample(self, rng: random.Random) -> Example:
        word = draw_word(rng)
        question = rng.choice(_QUESTIONS).format(w=word)
        return Example(self.name, word, question, word[::-1], {"word": word})

    def thinking(self, example: Example, level: str) -> str:
        check_level(self.name, level)
        word = example.fields["word"]
        backward = word[::-1]
        if level == "low":
            return f"{' '.join(word)}\n{' '.join(backward)}"
        numbered = " ".join(f"{i}:{ch}" for i, ch in enumerate(word, start=1))
        if level == "medium":
            back = " ".join(f"{i}:{word[i - 1]}" for i in range(len(word), 0, -1))
            return f"Letters: {numbered}\nFrom the last: {back}\nJoined: {backward}"
        lines = [f"Spell \"{word}\" with positions: {numbered} ({len(word)} letters)."]
        lines.append(f"Read from {len(word)} down to 1:")
        lines.extend(f"{i}:{word[i - 1]}" for i in range(len(word), 0, -1))
        lines.append(f"Joined: {backward}")
        lines.append(f"Check: {backward} reversed is {word}; {len(word)} letters each.")
        return "\n".join(lines)

    def reply(self, example: Example) -> str:
        return f"\"{example.fields['word']}\" reversed is \"{example.answer}\"."

    def parse(self, answer_text: str) -> str | None:
        """The last quoted string (''/""/``/**), else the last run of letters, lowercased.

        >>> WordReversal().parse('"lantern" reversed is "nretnal".')
        'nretnal'
        >>> WordReversal().parse("It is NRETNAL")
        'nretnal'
        """
        quoted = quoted_in(answer_text)
        if quoted:
            return quoted[-1].strip().lower()
        words = _LETTERS.findall(answer_text)
        return words[-1].lower() if words else None

    def restates(self, example: Example, answer_text: str) -> bool:
        """Every quoted string before the answer is the asked word.

        >>> ex = WordReversal().generate(1, seed=0)[0]
        >>> WordReversal().restates(ex, f'"{ex.key}" reversed is "{ex.answer}".')
        True
        >>> WordReversal().restates(ex, f'"lantern" reversed is "{ex.answer}".')
        False
        """
        return all(q.strip().lower() == example.fields["word"] for q in quoted_in(answer_text)[:-1])
