"""Word reversal: "Reverse the word lantern." -> "nretnal".

Like letter counting it needs the letters behind the tokens, so the trace spells, in
letter counting's own format (one numbered line per letter, ``3 n``: the spelling a word
task teaches is the same tokens in both tasks):

* low: the letters forward, then backward;
* medium: the numbered letters, the same lines from the last number down, the joined result;
* high: a header, the numbered letters, the lines read back, the joined result, and a
  check that reversing it again gives the word.

(Earlier medium and high traces wrote ``1:l 2:a``: four tokens a letter, and the letters in
another form than letter counting's; these take three.) The header and the reply restate
the word as the question wrote it (:func:`as_asked`).
"""

from __future__ import annotations

import random
import re

from .base import Example, Task, as_asked, check_level, quoted_in
from .words import ENGLISH_WORDS, draw_word

_BARE_WORD = re.compile(r"\s*([A-Za-z]+)\s+reversed\b", re.IGNORECASE)  # "lantern reversed is ..."

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
        forward = [f"{i} {ch}" for i, ch in enumerate(word, start=1)]
        back = [f"{i} {word[i - 1]}" for i in range(len(word), 0, -1)]
        if level == "medium":
            return "\n".join(forward + back + [f"Joined: {backward}"])
        lines = [f"Spell {as_asked(example.question, word)} one letter per line, then read it back:", *forward,
                 f"Read from {len(word)} down to 1:", *back, f"Joined: {backward}",
                 f"Check: {backward} reversed is {word}; {len(word)} letters each."]
        return "\n".join(lines)

    def reply(self, example: Example) -> str:
        return f"{as_asked(example.question, example.fields['word'])} reversed is \"{example.answer}\"."

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
        """Every quoted string before the answer, and a bare word that opens it
        (``lantern reversed is ...``), is the asked word.

        >>> ex = WordReversal().generate(1, seed=0)[0]
        >>> WordReversal().restates(ex, f'"{ex.key}" reversed is "{ex.answer}".')
        True
        >>> WordReversal().restates(ex, f'"lantern" reversed is "{ex.answer}".')
        False
        >>> WordReversal().restates(ex, f'lantern reversed is "{ex.answer}".')
        False
        """
        word = example.fields["word"]
        bare = _BARE_WORD.match(answer_text)
        return all(q.strip().lower() == word for q in quoted_in(answer_text)[:-1]) and \
            (bare is None or bare.group(1).lower() == word)
