"""Cleaning and quality filters: small pure functions, and a pipeline that counts.

Transforms take a text and return a cleaner text:

    normalize_unicode   NFC, so that "é" is one code point however it arrived
    strip_markup        HTML to text (stdlib ``html.parser``), only when the text looks like HTML
    strip_boilerplate   Project Gutenberg headers, footers and licence blocks
    normalize_whitespace  line endings, odd spaces, control characters, trailing spaces, blank runs

Measures take a text and return a number that a filter compares with a threshold
(the thresholds follow the Gopher rules of thumb):

    symbol_ratio              share of characters that are neither letters, digits, spaces nor common punctuation
    duplicate_line_fraction   share of characters in lines that already appeared earlier in the document
    top_ngram_fraction        share of word characters covered by the single most frequent word n-gram

:class:`Pipeline` runs transforms and filters over a stream of documents and
records, per step, how many documents and UTF-8 bytes it removed (a transform that
leaves nothing removes the document; an empty document never passes ``min_chars``). Deduplication (:mod:`lanternlm.data.dedup`)
plugs in as two more filters.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from ..config import option

if TYPE_CHECKING:
    from .sources import Document


@dataclass
class CleanConfig:
    """How documents are cleaned and which ones are kept."""

    strip_html: bool = option(True, "strip HTML markup from documents that look like HTML")
    strip_boilerplate: bool = option(True, "remove Project Gutenberg headers, footers and licence blocks")
    min_chars: int = option(200, "drop documents shorter than this many characters (after cleaning)")
    max_chars: int = option(0, "drop documents longer than this many characters (0: no limit)")
    max_symbol_ratio: float = option(0.25, "drop documents where more than this share of characters "
                                           "are symbols (not letters, digits, spaces or common punctuation)")
    max_duplicate_line_fraction: float = option(0.3, "drop documents where more than this share of "
                                                     "characters sit in repeated lines")
    max_top_ngram_fraction: float = option(0.2, "drop documents where the most frequent word bigram "
                                                "covers more than this share of word characters")


# --------------------------------------------------------------------------- transforms


def normalize_unicode(text: str) -> str:
    """Unicode NFC: composed characters, one code point where one exists.

    >>> normalize_unicode("cafe\\u0301") == "caf\\u00e9"
    True
    """
    return unicodedata.normalize("NFC", text)


_KNOWN_TAG = re.compile(
    r"</?(?:html|head|body|title|meta|link|script|style|p|div|span|a|br|hr|img|ul|ol|li|table|tr|td|th"
    r"|h[1-6]|b|i|em|strong|pre|code|blockquote|section|article|nav|header|footer)\b[^>]*>|<!doctype\b",
    re.IGNORECASE)


def looks_like_html(text: str) -> bool:
    """True when ``text`` holds at least two HTML tags (so ``a < b`` stays plain text).

    >>> looks_like_html("a <b>bold</b> move"), looks_like_html("if x < y and y > z")
    (True, False)
    """
    return len(_KNOWN_TAG.findall(text, 0, 100_000)) >= 2


class _TextExtractor(HTMLParser):
    """Collect the visible text of an HTML document; blocks become line breaks."""

    SKIP = {"script", "style", "noscript", "template", "head"}
    PARAGRAPH = {"p", "div", "section", "article", "blockquote", "pre", "table", "ul", "ol",
                 "h1", "h2", "h3", "h4", "h5", "h6", "header", "footer", "nav", "hr"}
    LINE = {"br", "li", "tr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.in_pre = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.PARAGRAPH:
            self.parts.append("\n\n")
        elif tag in self.LINE:
            self.parts.append("\n")
        if tag == "pre":
            self.in_pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.PARAGRAPH:
            self.parts.append("\n\n")
        if tag == "pre":
            self.in_pre = max(0, self.in_pre - 1)

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        if not self.in_pre:
            data = re.sub(r"\s+", " ", data)
            if not self.parts or self.parts[-1].endswith("\n"):
                data = data.lstrip(" ")
        self.parts.append(data)


def strip_markup(text: str) -> str:
    """Visible text of an HTML document (entities decoded, scripts/styles dropped).

    Text that does not look like HTML (see :func:`looks_like_html`) is returned unchanged.

    >>> strip_markup("<html><head><title>t</title></head><body><p>Fish &amp; chips</p>"
    ...              "<script>x()</script><p>are <b>good</b>.</p></body></html>")
    'Fish & chips\\n\\nare good.'
    >>> strip_markup("3 < 4")
    '3 < 4'
    """
    if not looks_like_html(text):
        return text
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    out = re.sub(r"[ \t]+\n", "\n", "".join(parser.parts))
    return re.sub(r"\n{3,}", "\n\n", out).strip("\n ")


_GUTENBERG_START = re.compile(r"^\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.IGNORECASE | re.MULTILINE)
_GUTENBERG_END = re.compile(r"^(?:\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG|End of (?:the )?Project Gutenberg)",
                            re.IGNORECASE | re.MULTILINE)
_LICENCE_BLOCK = re.compile(r"<<THIS ELECTRONIC VERSION OF.*?>>", re.DOTALL)


def strip_boilerplate(text: str) -> str:
    """Drop Project Gutenberg headers (up to ``*** START OF ...``), footers and licence blocks.

    >>> strip_boilerplate("The Project Gutenberg eBook of X\\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\\n"
    ...                   "Call me Ishmael.\\n<<THIS ELECTRONIC VERSION OF X IS COPYRIGHT.>>\\nThe end.\\n"
    ...                   "*** END OF THE PROJECT GUTENBERG EBOOK X ***\\nlicence text")
    '\\nCall me Ishmael.\\n\\nThe end.\\n'
    """
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end():]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[:end.start()]
    return _LICENCE_BLOCK.sub("", text)


_ODD_SPACE = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_INVISIBLE = re.compile(r"[\u00ad\u200b\u2060\ufeff]|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def normalize_whitespace(text: str) -> str:
    """Unix line endings, plain spaces, no control characters, no trailing spaces, at most one blank line.

    Indentation and tabs at the start of lines are kept (code and verse need them).

    >>> normalize_whitespace("Hello,\\u00a0world!  \\r\\n\\r\\n\\r\\n\\tBye\\x07\\n")
    'Hello, world!\\n\\n\\tBye'
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n")
    text = _INVISIBLE.sub("", _ODD_SPACE.sub(" ", text))
    text = re.sub(r"[ \t]+$", "", text, flags=re.MULTILINE)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n")


# --------------------------------------------------------------------------- measures


_COMMON_PUNCTUATION = ".,;:!?'\"()\\[\\]\\-\u2014\u2013\u2018\u2019\u201c\u201d&/%$"
_SYMBOL = re.compile(rf"[^\w\s{_COMMON_PUNCTUATION}]|_")
_SPACE = re.compile(r"\s")


def symbol_ratio(text: str) -> float:
    """Share of non-space characters that are not letters, digits or common punctuation.

    >>> symbol_ratio("Hello, world!"), symbol_ratio("#### @@@@ ok")
    (0.0, 0.8)
    """
    visible = len(text) - len(_SPACE.findall(text))
    return len(_SYMBOL.findall(text)) / visible if visible else 0.0


def duplicate_line_fraction(text: str) -> float:
    """Share of characters (in non-empty lines) that sit in a line seen earlier in the document.

    >>> duplicate_line_fraction("to be\\nto be\\nor not")   # 5 of 5 + 5 + 6 characters repeat
    0.3125
    """
    seen: set[str] = set()
    total = duplicated = 0
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        total += len(line)
        if line in seen:
            duplicated += len(line)
        seen.add(line)
    return duplicated / total if total else 0.0


def top_ngram_fraction(text: str, n: int = 2) -> float:
    """Share of word characters covered by the most frequent word n-gram (its occurrences × its length).

    >>> top_ngram_fraction("a b a b a b c d")   # "a b" occurs 3 times: 3 × 2 chars of 8
    0.75
    """
    words = text.split()
    if len(words) < n:
        return 0.0
    counts = Counter(zip(*(words[i:] for i in range(n))))
    gram, count = counts.most_common(1)[0]
    if count < 2:
        return 0.0
    return min(1.0, count * sum(len(w) for w in gram) / sum(len(w) for w in words))


# --------------------------------------------------------------------------- pipeline


@dataclass
class Step:
    """One stage of the pipeline: a transform (text -> text) or a filter (text -> keep?)."""

    name: str
    kind: str                               # "transform" or "filter"
    fn: Callable[[str], str] | Callable[[str], bool]
    documents_in: int = 0
    documents_removed: int = 0
    documents_changed: int = 0
    bytes_in: int = 0
    bytes_removed: int = 0

    def stats(self) -> dict:
        """The counters (not ``fn``: a dedup filter's whole index would be copied)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "fn"}


def cleaning_steps(config: CleanConfig) -> list[Step]:
    """The transforms and quality filters that ``config`` asks for, in order."""
    steps = [Step("normalize_unicode", "transform", normalize_unicode)]
    if config.strip_html:
        steps.append(Step("strip_markup", "transform", strip_markup))
    if config.strip_boilerplate:
        steps.append(Step("strip_boilerplate", "transform", strip_boilerplate))
    steps.append(Step("normalize_whitespace", "transform", normalize_whitespace))
    steps.append(Step(f"min_chars>={config.min_chars}", "filter", lambda t: len(t) >= max(1, config.min_chars)))
    if config.max_chars > 0:
        steps.append(Step(f"max_chars<={config.max_chars}", "filter", lambda t: len(t) <= config.max_chars))
    steps.append(Step(f"symbol_ratio<={config.max_symbol_ratio}", "filter",
                      lambda t: symbol_ratio(t) <= config.max_symbol_ratio))
    steps.append(Step(f"duplicate_lines<={config.max_duplicate_line_fraction}", "filter",
                      lambda t: duplicate_line_fraction(t) <= config.max_duplicate_line_fraction))
    steps.append(Step(f"top_bigram<={config.max_top_ngram_fraction}", "filter",
                      lambda t: top_ngram_fraction(t, 2) <= config.max_top_ngram_fraction))
    return steps


class Pipeline:
    """Run steps over a stream of documents, lazily, counting what each step removed.

    >>> from lanternlm.data.sources import Document
    >>> pipe = Pipeline([Step("strip", "transform", str.strip),
    ...                  Step("min_chars>=3", "filter", lambda t: len(t) >= 3)])
    >>> [d.text for d in pipe([Document(" hello ", "a"), Document("hi", "b"), Document("   ", "c")])]
    ['hello']
    >>> [(s["name"], s["documents_removed"], s["bytes_removed"]) for s in pipe.report()]
    [('strip', 1, 5), ('min_chars>=3', 1, 2)]
    """

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps

    def __call__(self, documents: Iterable["Document"]) -> Iterator["Document"]:
        for doc in documents:
            kept = self._apply(doc)
            if kept is not None:
                yield kept

    def _apply(self, doc: "Document") -> "Document | None":
        text = doc.text
        size = len(text.encode("utf-8"))
        for step in self.steps:
            step.documents_in += 1
            step.bytes_in += size
            if step.kind == "transform":
                new = step.fn(text)
                if new != text and not new.strip():
                    step.documents_removed += 1
                    step.bytes_removed += size
                    return None
                if new != text:
                    step.documents_changed += 1
                    new_size = len(new.encode("utf-8"))
                    step.bytes_removed += size - new_size
                    text, size = new, new_size
            elif not step.fn(text):
                step.documents_removed += 1
                step.bytes_removed += size
                return None
        return doc._replace(text=text)

    def report(self) -> list[dict]:
        """Per step: name, kind, documents_in/removed/changed, bytes_in/removed."""
        return [step.stats() for step in self.steps]


def format_report(report: list[dict]) -> str:
    """The per-step report as a plain-text table (what ``lantern data prepare`` prints).

    >>> print(format_report([{"name": "min_chars>=3", "kind": "filter", "documents_in": 4,
    ...     "documents_removed": 1, "documents_changed": 0, "bytes_in": 40, "bytes_removed": 2}]))
    step          kind    docs in  docs removed  changed  bytes in  bytes removed
    min_chars>=3  filter        4             1        0        40              2
    """
    header = ["step", "kind", "docs in", "docs removed", "changed", "bytes in", "bytes removed"]
    keys = ["name", "kind", "documents_in", "documents_removed", "documents_changed", "bytes_in", "bytes_removed"]
    rows = [[str(step[k]) for k in keys] for step in report]
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        left = [c.ljust(w) for c, w in zip(cells[:2], widths[:2])]
        right = [c.rjust(w) for c, w in zip(cells[2:], widths[2:])]
        return "  ".join(left + right).rstrip()

    return "\n".join([line(header)] + [line(r) for r in rows])
