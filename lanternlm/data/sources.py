"""Where documents come from: text files and folders, JSONL, Parquet, built-in corpora, URLs.

A *source spec* is one string, as typed on the command line:

    book.txt, notes.md         a text file (``.gz`` is read transparently)
    corpus/                    a folder: every .txt/.md/.rst/.jsonl/.parquet file under it, sorted
    web.jsonl                  JSON Lines, one object per line, text in the ``text`` field
    fineweb.parquet            Parquet, text in the ``text`` column (the FineWeb layout)
    builtin:shakespeare        a built-in corpus (see :mod:`lanternlm.data.builtin`)
    https://host/f.txt#sha256=HEX   a download (cached, verified when a checksum is given)
    jsonl:odd.name             a ``kind:`` prefix forces the reader (text, jsonl, parquet, dir)

How a text file becomes documents (``ReadConfig.text_split``):

    file        the whole file is one document (the default)
    paragraph   every block of lines between blank lines is a document
    chunk       consecutive paragraphs packed into documents of at least ``chunk_chars`` characters
    sep:MARK    a line holding only MARK ends a document (TinyStories uses ``sep:<|endoftext|>``)

Everything streams: a file is read line by line (``file`` mode aside, which must hold
one document), Parquet in row-group batches. Bad input raises
:class:`~lanternlm.errors.LanternError` naming the file and line (or row): bytes that
are not UTF-8 (unless ``encoding_errors="replace"``), malformed JSON, a missing
field or column, a text that is not a string. An empty file is skipped with a
warning and listed in the source's stats (``empty_files``), so nothing disappears
without a word.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

from ..config import option
from ..errors import LanternError
from ..log import logger

KINDS = ("text", "jsonl", "parquet", "dir", "builtin", "url")
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)


class Document(NamedTuple):
    """One document: its text and where it came from (``path:line``, ``path row N``, ...)."""

    text: str
    origin: str


@dataclass
class ReadConfig:
    """How sources are read into documents."""

    text_split: str = option("file", "how a text file becomes documents: file, paragraph, chunk or sep:MARK")
    chunk_chars: int = option(4000, "with --text-split chunk: the least characters per document")
    text_field: str = option("text", "the JSONL field that holds the text")
    text_column: str = option("text", "the Parquet column that holds the text")
    encoding_errors: str = option("strict", "non-UTF-8 bytes: 'strict' stops with the file and line, "
                                            "'replace' substitutes U+FFFD")


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source spec: which reader, where, and an optional pinned sha256 (for URLs)."""

    kind: str
    location: str
    sha256: str | None = None


@dataclass
class SourceStats:
    """What was read from one source (recorded in the shard manifest)."""

    spec: str
    kind: str
    files: int = 0
    documents: int = 0
    bytes: int = 0
    empty_files: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)


def parse_source(spec: str) -> SourceSpec:
    """Parse a source spec string (see the module docstring).

    >>> parse_source("builtin:shakespeare")
    SourceSpec(kind='builtin', location='shakespeare', sha256=None)
    >>> parse_source("https://h/x.parquet#sha256=ab12").sha256
    'ab12'
    >>> parse_source("data/web.jsonl.gz").kind, parse_source("jsonl:odd.name").kind
    ('jsonl', 'jsonl')
    """
    if not spec:
        raise LanternError("empty source spec; give a file, a folder, builtin:NAME or a URL")
    if spec.startswith(("http://", "https://")):
        url, _, fragment = spec.partition("#")
        sha = fragment[len("sha256="):] if fragment.startswith("sha256=") else None
        return SourceSpec("url", url, sha)
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in KINDS and prefix != "url":
        return SourceSpec(prefix, rest)
    if spec.endswith(("/", os.sep)) or Path(spec).is_dir():
        return SourceSpec("dir", spec)
    return SourceSpec(_kind_for_name(spec), spec)


def _kind_for_name(name: str) -> str:
    low = name.lower().removesuffix(".gz")
    if low.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if low.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return "text"


def iter_documents(spec: str | SourceSpec, config: ReadConfig | None = None, *,
                   cache: str | os.PathLike | None = None, stats: SourceStats | None = None) -> Iterator[Document]:
    """Stream the documents of one source. ``stats`` (if given) is filled in as documents flow."""
    config = config or ReadConfig()
    parsed = parse_source(spec) if isinstance(spec, str) else spec
    stats = stats if stats is not None else SourceStats(str(spec), parsed.kind)
    for doc in _documents(parsed, config, cache, stats):
        stats.documents += 1
        stats.bytes += len(doc.text.encode("utf-8"))
        yield doc


def _documents(spec: SourceSpec, config: ReadConfig, cache, stats: SourceStats) -> Iterator[Document]:
    if spec.kind == "builtin":
        from . import builtin
        corpus = builtin.get(spec.location, cache=cache)
        config = dataclasses.replace(config, **corpus.read)
        for path in corpus.files:
            yield from _read_file(path, corpus.kind, config, stats)
    elif spec.kind == "url":
        from .download import download
        path = download(spec.location, spec.sha256, cache=cache)
        yield from _read_file(path, _kind_for_name(path.name), config, stats)
    elif spec.kind == "dir":
        yield from _read_dir(Path(spec.location), config, stats)
    elif spec.kind in ("text", "jsonl", "parquet"):
        yield from _read_file(Path(spec.location), spec.kind, config, stats)
    else:
        raise LanternError(f"unknown source kind {spec.kind!r}; expected one of {', '.join(KINDS)}")


def _read_dir(root: Path, config: ReadConfig, stats: SourceStats) -> Iterator[Document]:
    if not root.is_dir():
        raise LanternError(f"{root}: no such folder")
    found = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        low = path.name.lower().removesuffix(".gz")
        if not low.endswith(TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES):
            stats.skipped_files.append(str(path))
            continue
        found += 1
        yield from _read_file(path, _kind_for_name(path.name), config, stats)
    if stats.skipped_files:
        logger.warning("%s: skipped %d files that are not text, JSONL or Parquet (first: %s)",
                       root, len(stats.skipped_files), stats.skipped_files[0])
    if not found:
        raise LanternError(f"{root}: no .txt, .md, .rst, .jsonl or .parquet files in this folder")


def _read_file(path: Path, kind: str, config: ReadConfig, stats: SourceStats) -> Iterator[Document]:
    if not path.is_file():
        raise LanternError(f"{path}: no such file")
    stats.files += 1
    reader = {"text": _read_text, "jsonl": _read_jsonl, "parquet": _read_parquet}[kind]
    count = 0
    for doc in reader(path, config):
        count += 1
        yield doc
    if count == 0:
        logger.warning("%s: empty file (no documents), skipped", path)
        stats.empty_files.append(str(path))


def _lines(path: Path, errors: str) -> Iterator[tuple[int, str]]:
    """(line number, decoded line with its newline); non-UTF-8 bytes name the line and column."""
    if errors not in ("strict", "replace"):
        raise LanternError(f"encoding_errors must be 'strict' or 'replace', not {errors!r}")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                yield lineno, raw.decode("utf-8", errors=errors)
            except UnicodeDecodeError as err:
                raise LanternError(
                    f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                    "convert the file to UTF-8, or pass --encoding-errors replace") from None


def _read_text(path: Path, config: ReadConfig) -> Iterator[Document]:
    mode = config.text_split
    if mode == "file":
        text = "".join(line for _, line in _lines(path, config.encoding_errors))
        if text.strip():
            yield Document(text, str(path))
        return
    if mode.startswith("sep:"):
        marker = mode[len("sep:"):]
        ends_document = lambda line: line.strip() == marker  # noqa: E731
    elif mode in ("paragraph", "chunk"):
        ends_document = lambda line: not line.strip()  # noqa: E731
    else:
        raise LanternError(f"text_split must be file, paragraph, chunk or sep:MARK, not {mode!r}")
    minimum = config.chunk_chars if mode == "chunk" else 0
    buffer: list[str] = []
    size = start = 0
    held: Document | None = None           # the last full document, held back so a short tail can join it
    for lineno, line in _lines(path, config.encoding_errors):
        if ends_document(line):
            if buffer and size >= minimum:
                if held is not None:
                    yield held
                held = Document("".join(buffer), f"{path}:{start}")
                buffer, size = [], 0
            elif buffer:
                buffer.append(line)        # chunk mode: keep the paragraph break inside the chunk
            continue
        if not buffer:
            if not line.strip():
                continue
            start = lineno
        buffer.append(line)
        size += len(line)
    tail = "".join(buffer)
    if tail.strip():
        if held is not None and size < minimum:
            held = Document(held.text + "\n" + tail, held.origin)
        else:
            if held is not None:
                yield held
            held = Document(tail, f"{path}:{start}")
    if held is not None:
        yield held


def _read_jsonl(path: Path, config: ReadConfig) -> Iterator[Document]:
    name = config.text_field
    for lineno, line in _lines(path, config.encoding_errors):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise LanternError(f"{path}:{lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(record, dict):
            raise LanternError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        if name not in record:
            raise LanternError(f"{path}:{lineno}: no field {name!r} (fields: {', '.join(map(repr, record))}); "
                               "choose one with --text-field")
        text = record[name]
        if not isinstance(text, str):
            raise LanternError(f"{path}:{lineno}: field {name!r} is {type(text).__name__}, expected a string")
        yield Document(text, f"{path}:{lineno}")


def _read_parquet(path: Path, config: ReadConfig, batch_rows: int = 1024) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = config.text_column
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise LanternError(f"{path}: not a readable Parquet file ({err})") from None
    schema = parquet.schema_arrow
    if name not in schema.names:
        raise LanternError(f"{path}: no column {name!r} (columns: {', '.join(map(repr, schema.names))}); "
                           "choose one with --text-column")
    kind = schema.field(name).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise LanternError(f"{path}: column {name!r} has type {kind}, expected strings")
    row = 0
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=[name]):
        for text in batch.column(0).to_pylist():
            if text is None:
                raise LanternError(f"{path}: row {row} (0-based): column {name!r} is null")
            yield Document(text, f"{path} row {row}")
            row += 1
