"""The one writer of bench/RESULTS.md: each benchmark owns the sections between its markers.

``write_section("tokenizer", markdown)`` replaces the text between ``<!-- BEGIN tokenizer -->``
and ``<!-- END tokenizer -->`` (or appends the section), leaving every other section as it is.
"""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def write_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) section ``name`` of ``path`` with ``body`` (Markdown)."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
