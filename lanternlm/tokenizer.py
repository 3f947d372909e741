"""Byte-level BPE tokenizer: training, encoding, special tokens, save/load, export.

The vocabulary is laid out as::

    ids 0..255                  the 256 single bytes (id == byte value)
    ids 256..256+M-1            the M learned merges, in the order they were learned
    ids 256+M..vocab_size-1     the special tokens (``<|endoftext|>``, chat markers, ...)

An imported vocabulary (GPT-2's, Llama 3's, a tiktoken rank file; see
:mod:`lanternlm.interop.hf_tokenizer`) keeps its own ids: its single bytes may sit anywhere,
its merges make increasing ids (tiktoken's rule: a token's id is its merge rank), its
special tokens may leave gaps, and it may normalize text to NFC first (Qwen2).

Text is first cut into chunks by a GPT-4-style regex (:data:`GPT4_SPLIT_PATTERN`:
letters, 1-3 digit numbers, punctuation runs, whitespace), each chunk is turned into
its UTF-8 bytes, and merges are applied inside a chunk only, never across chunks.

Training ("find the most frequent adjacent pair, merge it into a new token, repeat")
has two backends that give **identical merges in the same order**:

* ``backend="python"``: :func:`train_bpe_python`, the readable reference.
* ``backend="rust"`` (default): the ``rustbpe`` package, the same algorithm in Rust.

Both count pairs over *unique* chunks weighted by how often each chunk occurs, pick
the pair with the highest count and break ties by the smallest pair ``(left, right)``
of token ids.

Encoding goes through a ``tiktoken.Encoding`` built from our own merges (fast, and
multi-threaded for batches); decoding is a byte lookup.

Special tokens are never produced from ordinary text: by default a special token's
string inside the text (say ``"<|endoftext|>"``) is encoded as the plain text it is,
piece by piece. Pass ``allowed_special`` to turn such strings into their special ids.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import heapq
import json
import os
import time
import unicodedata
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Literal, Sequence

import regex

from .config import atomic_write_text, option, read_json
from .errors import LanternError
from .log import logger, progress

GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)
"""The GPT-4 (``cl100k_base``) pre-split regex: the default for training and encoding."""

GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
"""GPT-2's pre-split regex (Hugging Face's ``ByteLevel`` pre-tokenizer with ``use_regex``)."""

EOT = "<|endoftext|>"  # document separator (written *before* each document in shards)
PAD = "<|pad|>"  # fills the rows of a batch after their end
SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"  # chat turns
THINK, END_THINK = "<|think|>", "<|/think|>"  # a thinking segment (see lanternlm.chat)

DEFAULT_SPECIAL_TOKENS = [EOT, PAD, SYSTEM, USER, ASSISTANT, END, THINK, END_THINK]
"""Reserved from the start, so chat fine-tuning later needs no retraining."""

FORMAT = "lanternlm-tokenizer"
VERSION = 1
MAX_VOCAB_SIZE = 1 << 24
"""The largest vocabulary (ids fit the shards' uint32 with room to spare; models share the bound)."""

Pair = tuple[int, int]

# --------------------------------------------------------------------------- pure helpers


def pair_counts(ids: Sequence[int], weight: int = 1) -> Counter[Pair]:
    """Count adjacent pairs in ``ids``, each occurrence worth ``weight``.

    >>> dict(pair_counts([1, 2, 1, 2, 3]))
    {(1, 2): 2, (2, 1): 1, (2, 3): 1}
    >>> dict(pair_counts([7, 7, 7], weight=10))
    {(7, 7): 20}
    """
    counts: Counter[Pair] = Counter()
    for pair in zip(ids, ids[1:]):
        counts[pair] += weight
    return counts


def merge_pair(ids: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``, left to right.

    Overlapping occurrences are taken greedily from the left:

    >>> merge_pair([1, 2, 3, 1, 2], (1, 2), 256)
    [256, 3, 256]
    >>> merge_pair([97, 97, 97], (97, 97), 256)
    [256, 97]
    """
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def escape_bytes(data: bytes) -> str:
    """A printable rendering of a token's bytes: valid UTF-8 as text, the rest as ``\\xNN``.

    Control characters and the backslash are escaped so one token stays on one line.

    >>> escape_bytes(b" hello")
    ' hello'
    >>> escape_bytes(b"\\n\\t")
    '\\\\n\\\\t'
    >>> escape_bytes("é".encode()[:1])
    '\\\\xc3'
    """
    text = data.decode("utf-8", errors="backslashreplace")
    out = []
    for ch in text:
        if ch == "\\" or ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def check_text(text: str, where: str = "text") -> None:
    """Raise :class:`LanternError` if ``text`` cannot be encoded as UTF-8 (a lone surrogate).

    A surrogate U+DC80..U+DCFF is how Python carries a byte that was not UTF-8 (in
    command-line arguments, or input read with ``errors="surrogateescape"``): the error
    names that byte.

    >>> check_text("naïve ☕")
    >>> check_text("bad \\ud800 here")
    Traceback (most recent call last):
    ...
    lanternlm.errors.LanternError: text: lone surrogate U+D800 at character 4 cannot be encoded as UTF-8; fix the input (e.g. decode it with errors='replace')
    >>> check_text("caf\\udce9")
    Traceback (most recent call last):
    ...
    lanternlm.errors.LanternError: text: byte 0xe9 at character 3 is not UTF-8; give UTF-8 text (e.g. convert it with iconv -t utf-8)
    """
    if not isinstance(text, str):
        raise LanternError(f"{where}: expected a str, got {type(text).__name__}")
    if text.isascii():  # O(1) in CPython
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        code = ord(text[err.start])
        if 0xDC80 <= code <= 0xDCFF:
            raise LanternError(f"{where}: byte 0x{code - 0xDC00:02x} at character {err.start} is not UTF-8; "
                               "give UTF-8 text (e.g. convert it with iconv -t utf-8)") from None
        raise LanternError(
            f"{where}: lone surrogate U+{code:04X} at character {err.start} "
            "cannot be encoded as UTF-8; fix the input (e.g. decode it with errors='replace')"
        ) from None


def decode_utf8(data: bytes, where: str) -> str:
    """``data`` as text; bytes that are not UTF-8 are a :class:`LanternError` naming the first.

    >>> decode_utf8(b"caf\\xe9", "standard input")
    Traceback (most recent call last):
    ...
    lanternlm.errors.LanternError: standard input: byte 0xe9 at offset 3 is not UTF-8 (unexpected end of data); give UTF-8 text (e.g. convert it with iconv -t utf-8)
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise LanternError(f"{where}: byte 0x{data[err.start]:02x} at offset {err.start} is not UTF-8 "
                           f"({err.reason}); give UTF-8 text (e.g. convert it with iconv -t utf-8)") from None


#: Texts a split pattern must cut into non-empty pieces that join back to them: letters,
#: punctuation, digits, tabs, both newlines, accents, symbols and CJK.
PATTERN_PROBES = ("Hello, world!", "It's 2024:\tnaïve café ☕ (a+b)=c;", "  日本語\r\n\n x_y-z  ")


def check_pattern(pattern: str) -> None:
    """Raise :class:`LanternError` unless ``pattern`` is a regex that cuts text into
    non-empty pieces covering all of it (text outside the pieces would be dropped
    silently; an empty piece makes every encode fail). Checked on :data:`PATTERN_PROBES`.

    >>> check_pattern(GPT4_SPLIT_PATTERN)
    >>> check_pattern("[A-Za-z]+")
    Traceback (most recent call last):
    ...
    lanternlm.errors.LanternError: tokenizer pattern '[A-Za-z]+' does not cover all text: 'Hello, world!' would be encoded as 'Helloworld'; use the default pattern or one whose pieces cover every character
    """
    try:
        split = regex.compile(pattern)
    except (regex.error, TypeError) as err:
        raise LanternError(f"tokenizer pattern {pattern!r}: invalid regex ({err})") from None
    for text in PATTERN_PROBES:
        pieces = split.findall(text)
        if "" in pieces:
            raise LanternError(f"tokenizer pattern {pattern!r} matches empty pieces (in {text!r}); "
                               "every piece must hold at least one character")
        if "".join(pieces) != text:
            raise LanternError(f"tokenizer pattern {pattern!r} does not cover all text: {text!r} would be "
                               f"encoded as {''.join(pieces)!r}; use the default pattern or one whose pieces "
                               "cover every character")


def check_vocab_size(vocab_size: int, special_tokens: int = len(DEFAULT_SPECIAL_TOKENS)) -> None:
    """Raise :class:`LanternError` unless a tokenizer of ``vocab_size`` ids can be trained:
    256 bytes, the special tokens and at least one merge, at most :data:`MAX_VOCAB_SIZE`.

    >>> check_vocab_size(10)
    Traceback (most recent call last):
    ...
    lanternlm.errors.LanternError: vocab_size=10 is too small: it must be at least 265 (256 bytes + 8 special tokens + 1 merge)
    """
    smallest = 256 + special_tokens + 1
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < smallest:
        raise LanternError(f"vocab_size={vocab_size!r} is too small: it must be at least {smallest} "
                           f"(256 bytes + {special_tokens} special tokens + 1 merge)")
    if vocab_size > MAX_VOCAB_SIZE:
        raise LanternError(f"vocab_size={vocab_size} is too large: at most {MAX_VOCAB_SIZE:,}")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (used by Hugging Face's ByteLevel).

    Printable Latin-1 bytes map to themselves; the others to characters from U+0100 on.

    >>> m = bytes_to_unicode()
    >>> m[ord("a")], m[ord(" ")], m[ord("\\n")]
    ('a', 'Ġ', 'Ċ')
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {}, 0
    for b in range(256):
        if b in keep:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


_INTERVAL = regex.compile(r"\{(\d*)(,\d*)?\}")


def hf_split_pattern(pattern: str) -> str:
    """Our split regex (Python ``regex``) rewritten so that Hugging Face's engine (Oniguruma,
    Ruby syntax) reads it the same way.

    Two constructs read differently there: a possessive interval ``X{m,n}+`` is an interval
    repeated (``(?:X{m,n})+``), so it becomes the atomic group ``(?>X{m,n})``; ``$`` and
    ``^`` match at every line end and start, so they become ``\\Z`` and ``\\A`` (their
    meaning here without the multiline flag). ``*+``, ``++`` and ``?+`` mean the same in
    both and stay. Inline flags other than ``i`` are refused (Ruby's ``m`` is our ``s``).
    Whatever else may differ is caught by re-encoding probe strings after export
    (:func:`lanternlm.interop.hf_tokenizer.check_hf_tokenizer`).

    >>> hf_split_pattern(r"\\p{N}{1,3}+|\\s++$|[$^]")
    '(?>\\\\p{N}{1,3})|\\\\s++\\\\Z|[$^]'
    """
    out: list[str] = []  # pieces; each quantifiable atom is one piece
    groups: list[int] = []  # where each open group starts in `out`
    i, n = 0, len(pattern)

    def refuse(why: str) -> LanternError:
        return LanternError(f"split pattern {pattern!r}: {why} at character {i}; Hugging Face's regex "
                            "engine would read it differently")

    while i < n:
        c = pattern[i]
        if c == "\\":
            j = i + 2
            if pattern[i + 1:i + 2] in ("p", "P", "x", "N") and pattern[j:j + 1] == "{":
                j = pattern.index("}", j) + 1
            elif pattern[i + 1:i + 2] in ("p", "P"):
                j += 1
            out.append(pattern[i:j])
        elif c == "[":
            j = i + 1
            j += pattern[j:j + 1] == "^"
            j += pattern[j:j + 1] == "]"
            while j < n and pattern[j] != "]":
                if pattern[j] == "\\":
                    j += 1
                elif pattern.startswith("[:", j):
                    j = pattern.index(":]", j) + 1
                j += 1
            j += 1
            out.append(pattern[i:j])
        elif c == "(":
            flags = regex.match(r"\(\?([a-zA-Z-]+)([:)])", pattern[i:])
            if flags and set(flags.group(1)) - set("i-"):
                raise refuse(f"inline flags (?{flags.group(1)}) other than i")
            if flags and flags.group(2) == ")":  # (?i): a flag switch, not a group
                out.append(flags.group(0))
                i += len(flags.group(0))
                continue
            opener = regex.match(r"\((\?(<[=!]|P?<\w+>|[:=!>]|[a-z-]+:))?", pattern[i:]).group(0)
            groups.append(len(out))
            out.append(opener)
            j = i + len(opener)
        elif c == ")":
            if not groups:
                raise refuse("an unmatched ')'")
            k = groups.pop()
            out[k:] = ["".join(out[k:]) + ")"]
            j = i + 1
        elif c in "*+?" or (c == "{" and _INTERVAL.match(pattern, i)):
            quantifier = _INTERVAL.match(pattern, i).group(0) if c == "{" else c
            j = i + len(quantifier)
            possessive = pattern[j:j + 1] == "+"
            lazy = pattern[j:j + 1] == "?"
            if not out:
                raise refuse("a quantifier with nothing before it")
            if possessive and c == "{":
                out[-1] = f"(?>{out[-1]}{quantifier})"
                j += 1
            else:
                out[-1] += quantifier + ("+" if possessive else "?" if lazy else "")
                j += possessive or lazy
        elif c in "$^":
            out.append("\\Z" if c == "$" else "\\A")
            j = i + 1
        else:
            out.append(c)
            j = i + 1
        i = j
    if groups:
        raise refuse("an unclosed '('")
    return "".join(out)


def parse_ids(text: str) -> list[int]:
    """Parse token ids written as ``"1 2 3"``, ``"1,2,3"`` or ``"[1, 2, 3]"``.

    >>> parse_ids("[40, 3021,23317 0]")
    [40, 3021, 23317, 0]
    """
    parts = text.replace("[", " ").replace("]", " ").replace(",", " ").split()
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise LanternError(f"token ids: expected integers like '1 2 3' or '[1, 2, 3]', got {text!r}") from None


# --------------------------------------------------------------------------- training


def count_chunks(texts: Iterable[str], pattern: str = GPT4_SPLIT_PATTERN) -> Counter[bytes]:
    """Split every text with ``pattern`` and count each distinct chunk (as UTF-8 bytes).

    >>> sorted(count_chunks(["the cat", "the hat"]).items())
    [(b' cat', 1), (b' hat', 1), (b'the', 2)]
    """
    split = regex.compile(pattern)
    counts: Counter[str] = Counter()
    for i, text in enumerate(texts):
        check_text(text, where=f"training text #{i}")
        counts.update(split.findall(text))
    return Counter({chunk.encode("utf-8"): n for chunk, n in counts.items()})


def train_bpe_python(chunk_counts: dict[bytes, int], num_merges: int) -> list[Pair]:
    """The reference BPE trainer: learn up to ``num_merges`` merges from counted chunks.

    Repeat: take the adjacent pair with the highest count (ties: the smallest pair of
    ids), give it the next id, and replace it in every chunk that contains it. Counts are
    updated incrementally (only chunks containing the merged pair are touched) and the
    best pair comes from a heap whose stale entries are refreshed when popped. Stops
    early when no pair is left.

    Worked example: chunks ``"aaab"`` x1 and ``"ab"`` x2. Pair counts: (a,a)=2, (a,b)=3,
    so (97, 98) becomes 256: ``"aaab"`` -> [a, a, 256], ``"ab"`` -> [256]. Now (a,a)=1
    and (a,256)=1 tie; (97, 97) < (97, 256), so (97, 97) becomes 257.

    >>> train_bpe_python({b"aaab": 1, b"ab": 2}, 2)
    [(97, 98), (97, 97)]
    """
    words = [list(chunk) for chunk in chunk_counts]
    weights = list(chunk_counts.values())
    counts: Counter[Pair] = Counter()
    where: defaultdict[Pair, set[int]] = defaultdict(set)  # pair -> chunks that (may) contain it
    for w, (word, weight) in enumerate(zip(words, weights)):
        for pair in zip(word, word[1:]):
            counts[pair] += weight
            where[pair].add(w)
    # Min-heap of (-count, pair): the top is the highest count, ties the smallest pair.
    heap = [(-c, pair) for pair, c in counts.items()]
    heapq.heapify(heap)

    merges: list[Pair] = []
    bar = progress(total=num_merges, desc="BPE merges (python)", unit="merge")
    while len(merges) < num_merges and heap:
        neg_count, pair = heapq.heappop(heap)
        count = counts[pair]
        if count <= 0:
            continue                                    # pair no longer exists
        if -neg_count != count:
            heapq.heappush(heap, (-count, pair))        # stale entry: requeue with the true count
            continue
        new_id = 256 + len(merges)
        merges.append(pair)
        created: set[Pair] = set()
        for w in where.pop(pair):
            old = words[w]
            new = merge_pair(old, pair, new_id)
            if len(new) == len(old):
                continue
            counts.subtract(pair_counts(old, weights[w]))
            counts.update(pair_counts(new, weights[w]))
            for p in zip(new, new[1:]):
                if new_id in p:                          # only pairs with the new id are new
                    where[p].add(w)
                    created.add(p)
            words[w] = new
        for p in created:
            heapq.heappush(heap, (-counts[p], p))
        bar.update(1)
    bar.close()
    return merges


def train_bpe_rust(texts: Iterable[str], num_merges: int, pattern: str = GPT4_SPLIT_PATTERN) -> list[Pair]:
    """Learn up to ``num_merges`` merges with ``rustbpe`` (same algorithm as :func:`train_bpe_python`).

    rustbpe returns the vocabulary as bytes; :func:`merges_from_vocab` recovers the pairs.
    """
    import rustbpe

    seen = {"texts": 0, "nonempty": 0, "last": ""}

    def checked(texts: Iterable[str]) -> Iterator[str]:
        for text in texts:
            if not isinstance(text, str):
                raise LanternError(f"training text #{seen['texts']}: expected a str, got {type(text).__name__}")
            seen["texts"] += 1
            seen["nonempty"] += bool(text)
            seen["last"] = text
            yield text

    trainer = rustbpe.Tokenizer()
    start = time.perf_counter()
    try:
        trainer.train_from_iterator(checked(texts), 256 + num_merges, pattern=pattern)
    except UnicodeEncodeError:
        # rustbpe converts each text to UTF-8 right after taking it: the culprit is the last one.
        check_text(seen["last"], where=f"training text #{seen['texts'] - 1}")
        raise
    if not seen["nonempty"]:
        raise LanternError("training corpus is empty: give at least one non-empty text")
    vocab = [bytes(b) for b, _ in sorted(trainer.get_mergeable_ranks(), key=lambda item: item[1])]
    logger.info("rustbpe: %d merges from %d texts in %.1f s", len(vocab) - 256, seen["texts"],
                time.perf_counter() - start)
    return merges_from_vocab(vocab)


def merges_from_vocab(vocab: Sequence[bytes] | dict[int, bytes]) -> list[Pair]:
    """Recover the merge pairs from a vocabulary listed in id order (bytes first, then merges).

    Each token splits into two earlier tokens; when several splits are possible, the one
    that byte-pair encoding with the earlier merges produces is taken.

    >>> merges_from_vocab([bytes([b]) for b in range(256)] + [b"ab", b"aab"])
    [(97, 98), (97, 256)]
    """
    byte_ids, merges, merge_ids = layout_from_vocab(dict(enumerate(vocab)) if not isinstance(vocab, dict) else vocab)
    if byte_ids != list(range(256)):
        b = next(b for b in range(256) if byte_ids[b] != b)
        raise LanternError(f"vocabulary: token {b} should be the single byte {b}, got {vocab[b]!r}")
    return merges


def layout_from_vocab(vocab: dict[int, bytes]) -> tuple[list[int], list[Pair], list[int]]:
    """``(byte_ids, merges, merge_ids)`` of a vocabulary given as id -> bytes, where a
    token's id is its merge rank (tiktoken's rank files, rustbpe's output).

    Every single byte must be a token; every longer token, in id order, splits into two
    tokens of lower id, the split byte-pair encoding with the earlier merges produces.

    >>> reversed_bytes = {i: bytes([255 - i]) for i in range(256)}
    >>> byte_ids, merges, merge_ids = layout_from_vocab({**reversed_bytes, 300: b"ab"})
    >>> byte_ids[ord("a")], byte_ids[ord("b")], merges, merge_ids
    (158, 157, [(158, 157)], [300])
    """
    singles = {piece: i for i, piece in vocab.items() if len(piece) == 1}
    missing = [b for b in range(256) if bytes([b]) not in singles]
    if missing:
        raise LanternError(f"vocabulary: {len(missing)} single bytes are not tokens (first: {missing[:8]}); "
                           "a byte-level BPE vocabulary has all 256")
    byte_ids = [singles[bytes([b])] for b in range(256)]
    id_of = {bytes([b]): byte_ids[b] for b in range(256)}
    ranks: dict[Pair, int] = {}
    merges: list[Pair] = []
    merge_ids: list[int] = []
    for token_id in sorted(i for i, piece in vocab.items() if len(piece) != 1):
        piece = vocab[token_id]
        splits = [(id_of[piece[:k]], id_of[piece[k:]]) for k in range(1, len(piece))
                  if piece[:k] in id_of and piece[k:] in id_of]
        if len(splits) > 1:
            ids = bpe_encode_chunk(piece, ranks, byte_ids)
            splits = [tuple(ids)] if len(ids) == 2 else []
        if len(splits) != 1 or piece in id_of:
            raise LanternError(f"vocabulary: token {token_id} {piece!r} is not a merge of two earlier tokens")
        merges.append(splits[0])
        merge_ids.append(token_id)
        ranks[splits[0]] = token_id
        id_of[piece] = token_id
    return byte_ids, merges, merge_ids


def bpe_encode_chunk(piece: bytes, ranks: dict[Pair, int], byte_ids: Sequence[int] | None = None) -> list[int]:
    """Byte-pair encode one chunk: merge the earliest-learned adjacent pair (leftmost on ties) until none applies.

    The readable reference for encoding (the fast path is tiktoken; the tests check that
    they agree). ``ranks`` maps a merge pair to its new id; ``byte_ids`` the id of each
    byte (default: the byte's value).

    >>> bpe_encode_chunk(b"aab", {(97, 98): 256, (97, 256): 257})
    [257]
    >>> bpe_encode_chunk(b"ba", {(97, 98): 256})
    [98, 97]
    """
    ids = list(piece) if byte_ids is None else [byte_ids[b] for b in piece]
    while len(ids) >= 2:
        best, at = None, 0
        for i in range(len(ids) - 1):
            new_id = ranks.get((ids[i], ids[i + 1]))
            if new_id is not None and (best is None or new_id < best):
                best, at = new_id, i
        if best is None:
            break
        ids[at:at + 2] = [best]
    return ids


@dataclass
class TokenizerTrainConfig:
    """How to train a tokenizer (``lantern tokenizer train``)."""

    vocab_size: int = option(8192, "total vocabulary: 256 bytes + merges + special tokens")
    backend: str = option("rust", "training backend: 'rust' (rustbpe, fast) or 'python' (reference)")
    pattern: str = option(GPT4_SPLIT_PATTERN, "regex that pre-splits text into chunks")


# --------------------------------------------------------------------------- the tokenizer


class Tokenizer:
    """A trained byte-level BPE tokenizer (see the module docstring for the id layout).

    >>> tok = Tokenizer.train(["I love pizza! I love pasta!"] * 4, vocab_size=256 + 8 + 5)
    >>> ids = tok.encode("I love pizza!")
    >>> tok.decode(ids)
    'I love pizza!'
    >>> tok.encode("<|endoftext|>", allowed_special="all") == [tok.eot_id]
    True
    """

    def __init__(self, merges: Sequence[Pair], pattern: str = GPT4_SPLIT_PATTERN,
                 special_tokens: Sequence[str] | dict[str, int] = DEFAULT_SPECIAL_TOKENS, *,
                 byte_ids: Sequence[int] | None = None, merge_ids: Sequence[int] | None = None,
                 vocab_size: int | None = None, normalization: str | None = None,
                 bos_token: str | None = None, eot_token: str = EOT):
        """Our layout by default (the module docstring). An imported vocabulary gives its
        own ids: ``byte_ids[b]`` is byte b's id, ``merge_ids[r]`` the id merge r makes
        (increasing), ``special_tokens`` a dict name -> id, and ``vocab_size`` may exceed
        the ids used (the unused ones are gaps). ``normalization="NFC"`` normalizes text
        before encoding. ``bos_token`` starts a prompt (default: ``eot_token``), ``eot_token``
        separates documents."""
        self.merges: list[Pair] = [(int(a), int(b)) for a, b in merges]
        check_pattern(pattern)
        self.pattern = pattern
        if normalization not in (None, "NFC"):
            raise LanternError(f"tokenizer normalization {normalization!r}: only None or 'NFC'")
        self.normalization = normalization
        self._byte_ids = list(range(256)) if byte_ids is None else [int(i) for i in byte_ids]
        self._merge_ids = ([256 + r for r in range(len(self.merges))] if merge_ids is None
                           else [int(i) for i in merge_ids])
        if len(self._byte_ids) != 256 or len(set(self._byte_ids)) != 256 or min(self._byte_ids) < 0:
            raise LanternError("byte_ids: need 256 distinct non-negative ids, one per byte")
        if len(self._merge_ids) != len(self.merges):
            raise LanternError(f"merge_ids: {len(self._merge_ids)} ids for {len(self.merges)} merges")
        vocab = {i: bytes([b]) for b, i in enumerate(self._byte_ids)}
        previous = -1
        for rank, ((a, b), new_id) in enumerate(zip(self.merges, self._merge_ids)):
            if a not in vocab or b not in vocab:
                raise LanternError(f"merge #{rank} ({a}, {b}): both parts must be earlier tokens")
            if new_id in vocab or new_id <= previous:
                raise LanternError(f"merge #{rank} makes id {new_id}: merge ids must increase and not reuse "
                                   "an id (a token's id is its merge rank)")
            vocab[new_id] = vocab[a] + vocab[b]
            previous = new_id
        if len(set(vocab.values())) != len(vocab):
            raise LanternError("merges: two merges produce the same byte string; the merge list is corrupt")
        self._vocab = vocab
        if isinstance(special_tokens, dict):
            specials = {name: int(i) for name, i in special_tokens.items()}
        else:
            names = list(special_tokens)
            if len(set(names)) != len(names):
                raise LanternError(f"special tokens must be distinct non-empty strings, got {names!r}")
            specials = {name: max(vocab) + 1 + k for k, name in enumerate(names)}
        if not all(isinstance(s, str) and s for s in specials):
            raise LanternError(f"special tokens must be distinct non-empty strings, got {list(specials)!r}")
        taken = [i for i in specials.values() if i in vocab or i < 0]
        if taken or len(set(specials.values())) != len(specials):
            raise LanternError(f"special token ids {sorted(specials.values())} must be distinct, non-negative "
                               f"and not ids of ordinary tokens (clash: {taken[:5]})")
        self.special_tokens: dict[str, int] = dict(sorted(specials.items(), key=lambda item: item[1]))
        self._special_bytes = {i: s.encode("utf-8") for s, i in self.special_tokens.items()}
        used = max([*vocab, *specials.values()]) + 1
        self.vocab_size = used if vocab_size is None else int(vocab_size)
        if self.vocab_size < used:
            raise LanternError(f"vocab_size={vocab_size} is smaller than the ids used (up to {used - 1})")
        self._gaps = set(range(self.vocab_size)) - set(vocab) - set(specials.values())
        for role, name in (("bos_token", bos_token), ("eot_token", eot_token)):
            if name is not None and (name != EOT or role != "eot_token") and name not in specials:
                raise LanternError(f"{role}={name!r} is not one of the special tokens {list(specials)}")
        self.bos_token, self.eot_token = bos_token, eot_token
        self._encoding = self._build_encoding()

    def _build_encoding(self):
        import tiktoken

        return tiktoken.Encoding(
            name=f"lanternlm-{self.fingerprint()[:12]}",
            pat_str=self.pattern,
            mergeable_ranks={piece: i for i, piece in self._vocab.items()},
            special_tokens=dict(self.special_tokens),
            explicit_n_vocab=None if self._gaps else self.vocab_size,
        )

    # ------------------------------------------------------------------ training

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int,
              special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
              pattern: str = GPT4_SPLIT_PATTERN,
              backend: Literal["rust", "python"] = "rust") -> "Tokenizer":
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``texts``.

        Both backends give the same merges. If the corpus runs out of pairs first, the
        vocabulary is smaller than asked (a warning says so).
        """
        check_pattern(pattern)
        specials = list(special_tokens)
        check_vocab_size(vocab_size, len(specials))
        num_merges = vocab_size - 256 - len(specials)
        if backend == "rust":
            merges = train_bpe_rust(texts, num_merges, pattern)
        elif backend == "python":
            chunks = count_chunks(texts, pattern)
            if not chunks:
                raise LanternError("training corpus is empty: give at least one non-empty text")
            merges = train_bpe_python(chunks, num_merges)
        else:
            raise LanternError(f"backend={backend!r}: expected 'rust' or 'python'")
        if len(merges) < num_merges:
            logger.warning("tokenizer: the corpus only supports %d merges (asked for %d); vocab_size is %d",
                           len(merges), num_merges, 256 + len(merges) + len(specials))
        return cls(merges, pattern, specials)

    # ------------------------------------------------------------------ encoding

    def _allowed(self, allowed_special: Iterable[str] | Literal["all"]) -> set[str]:
        if allowed_special == "all":
            return set(self.special_tokens)
        allowed = set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise LanternError(f"allowed_special: unknown special tokens {sorted(unknown)}; "
                               f"this tokenizer has {list(self.special_tokens)}")
        return allowed

    def encode(self, text: str, allowed_special: Iterable[str] | Literal["all"] = ()) -> list[int]:
        """Encode ``text`` to token ids.

        Special-token strings in ``text`` are ordinary text unless listed in
        ``allowed_special`` (or ``allowed_special="all"``). A lone surrogate is an error.
        """
        check_text(text)
        if self.normalization:
            text = unicodedata.normalize(self.normalization, text)
        if not allowed_special:
            return self._encoding.encode_ordinary(text)
        return self._encoding.encode(text, allowed_special=self._allowed(allowed_special), disallowed_special=())

    def encode_batch(self, texts: Sequence[str], allowed_special: Iterable[str] | Literal["all"] = (),
                     num_threads: int = 8) -> list[list[int]]:
        """Encode many texts on ``num_threads`` threads; equal to ``[encode(t) for t in texts]``.

        Texts go to the threads in contiguous groups (about four per thread, to balance
        uneven lengths) rather than one by one, so hand-offs stay cheap for short documents.
        """
        texts = list(texts)
        for i, text in enumerate(texts):
            check_text(text, where=f"text #{i}")
        if self.normalization:
            texts = [unicodedata.normalize(self.normalization, text) for text in texts]
        if not allowed_special:
            encode = self._encoding.encode_ordinary
        else:
            encode = functools.partial(self._encoding.encode, allowed_special=self._allowed(allowed_special),
                                       disallowed_special=())
        if num_threads <= 1 or len(texts) <= 1:
            return [encode(text) for text in texts]
        size = -(-len(texts) // (4 * num_threads))  # ceil
        groups = [texts[i:i + size] for i in range(0, len(texts), size)]
        with ThreadPoolExecutor(num_threads) as pool:
            parts = pool.map(lambda group: [encode(text) for text in group], groups)
            return [ids for part in parts for ids in part]

    # ------------------------------------------------------------------ decoding

    def _check_ids(self, ids) -> list[int]:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):
            bad = next(i for i in ids if not 0 <= i < self.vocab_size)
            raise LanternError(f"token id {bad} is outside this tokenizer's vocabulary (0..{self.vocab_size - 1})")
        if self._gaps and not self._gaps.isdisjoint(ids):
            bad = next(i for i in ids if i in self._gaps)
            raise LanternError(f"token id {bad} is unused in this tokenizer's vocabulary (a gap between its ids)")
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes that ``ids`` stand for (special tokens as their UTF-8 strings)."""
        return self._encoding.decode_bytes(self._check_ids(ids))

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to text; bytes that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    @property
    def vocab(self) -> dict[int, bytes]:
        """Every ordinary (non-special) token: id -> its bytes."""
        return dict(sorted(self._vocab.items()))

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token gives its string's UTF-8 bytes)."""
        (token_id,) = self._check_ids([token_id])
        if token_id in self._special_bytes:
            return self._special_bytes[token_id]
        return self._vocab[token_id]

    def token_byte_lengths(self) -> list[int]:
        """Bytes of text per token id, 0 for special tokens and gaps (for bits-per-byte)."""
        return [len(self._vocab.get(i, b"")) for i in range(self.vocab_size)]

    def stream_decoder(self) -> "StreamDecoder":
        """A decoder fed one id at a time that only ever emits complete characters."""
        return StreamDecoder(self)

    # ------------------------------------------------------------------ special tokens

    def with_special_tokens(self, names: Sequence[str]) -> "Tokenizer":
        """This tokenizer with the special tokens ``names`` added at new ids after its
        vocabulary (``vocab_size``, ``vocab_size + 1``, ...); every existing id is kept.
        Names it already has are skipped.

        >>> tok = Tokenizer([], special_tokens=["<|endoftext|>"])
        >>> more = tok.with_special_tokens(["<|user|>", "<|endoftext|>", "<|end|>"])
        >>> more.special_tokens, more.vocab_size, more.encode("hi") == tok.encode("hi")
        ({'<|endoftext|>': 256, '<|user|>': 257, '<|end|>': 258}, 259, True)
        """
        new = [name for name in dict.fromkeys(names) if name not in self.special_tokens]
        if not new:
            return self
        specials = {**self.special_tokens, **{name: self.vocab_size + k for k, name in enumerate(new)}}
        return Tokenizer(self.merges, self.pattern, specials, byte_ids=self._byte_ids, merge_ids=self._merge_ids,
                         vocab_size=self.vocab_size + len(new), normalization=self.normalization,
                         bos_token=self.bos_token, eot_token=self.eot_token)

    def special_id(self, name: str) -> int:
        """The id of special token ``name``."""
        try:
            return self.special_tokens[name]
        except KeyError:
            raise LanternError(f"special token {name!r} is not in this tokenizer "
                               f"(it has {list(self.special_tokens)})") from None

    def token_label(self, token: int) -> str:
        """A token as a quoted literal: text where its bytes are whole characters, else
        bytes; a special token as itself.

        >>> tok = Tokenizer([], special_tokens=["<|endoftext|>"])
        >>> tok.token_label(10), tok.token_label(0xC3), tok.token_label(256)
        ("'\\\\n'", "b'\\\\xc3'", '<|endoftext|>')
        """
        if token in self.special_tokens.values():
            return self.decode([token])
        piece = self.token_bytes(token)
        try:
            return repr(piece.decode("utf-8"))
        except UnicodeDecodeError:
            return repr(piece)

    @property
    def eot_id(self) -> int:
        """Id of ``<|endoftext|>`` (an imported tokenizer's own end of text), the document separator."""
        return self.special_id(self.eot_token)

    @property
    def bos_id(self) -> int:
        """Id that starts a prompt: the document separator, or an imported tokenizer's own
        begin-of-text token (``<|begin_of_text|>``)."""
        return self.eot_id if self.bos_token is None else self.special_id(self.bos_token)

    @property
    def pad_id(self) -> int:
        """Id that fills batch rows after their end: ``<|pad|>``, else ``<|endoftext|>``."""
        return self.special_tokens.get(PAD, self.eot_id)

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict:
        """The canonical content: what :meth:`save` writes and :meth:`fingerprint` hashes.

        Our own layout writes version 1; an imported one (:meth:`__init__`'s keywords)
        version 2 with those of its fields that differ from ours."""
        d = {
            "format": FORMAT,
            "version": VERSION,
            "pattern": self.pattern,
            "vocab_size": self.vocab_size,
            "special_tokens": dict(self.special_tokens),
        }
        layout = {  # field: (value, its value in our layout)
            "byte_ids": (self._byte_ids, list(range(256))),
            "merge_ids": (self._merge_ids, [256 + r for r in range(len(self.merges))]),
            "normalization": (self.normalization, None),
            "bos_token": (self.bos_token, None),
            "eot_token": (self.eot_token, EOT),
        }
        extra = {key: value for key, (value, default) in layout.items() if value != default}
        natural = 256 + len(self.merges)
        if extra or list(self.special_tokens.values()) != list(range(natural, natural + len(self.special_tokens))) \
                or self.vocab_size != natural + len(self.special_tokens):
            d["version"] = 2
            d.update(extra)
        d["merges"] = [list(pair) for pair in self.merges]
        return d

    def fingerprint(self) -> str:
        """sha256 (hex) of the canonical content: equal for equal tokenizers, stable across save/load."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Write one JSON file (merges one pair per line, so it diffs and reads well)."""
        d = self.to_dict()
        head = {k: v for k, v in d.items() if k not in ("merges", "byte_ids", "merge_ids")}
        lines = json.dumps(head, indent=2, ensure_ascii=False)[:-2]
        for key in ("byte_ids", "merge_ids"):  # long id lists on one line each
            if key in d:
                lines += f',\n  "{key}": {json.dumps(d[key], separators=(",", ":"))}'
        merges = ",\n".join(f"    [{a}, {b}]" for a, b in self.merges)
        atomic_write_text(path, f'{lines},\n  "merges": [\n{merges}\n  ]\n}}\n')

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """Load a tokenizer saved by :meth:`save`; a malformed file is a clear error naming it."""
        path = Path(path)
        if not path.is_file():
            raise LanternError(f"{path}: tokenizer file not found")
        try:
            return cls.from_dict(read_json(path, FORMAT))
        except LanternError as err:
            raise LanternError(f"{path}: {err}") from None

    @classmethod
    def from_dict(cls, data: dict) -> "Tokenizer":
        """The tokenizer of :meth:`to_dict`'s content, each field checked."""
        if data.get("version") not in (1, 2):
            raise LanternError(f"field 'version' is {data.get('version')!r}, expected {VERSION} or 2")
        for field, kind in (("pattern", str), ("merges", list), ("special_tokens", dict), ("vocab_size", int)):
            if not isinstance(data.get(field), kind):
                raise LanternError(f"field {field!r} is missing or not a {kind.__name__}")
        merges = data["merges"]
        for rank, pair in enumerate(merges):
            if not (isinstance(pair, list) and len(pair) == 2 and all(type(x) is int for x in pair)):
                raise LanternError(f"field 'merges'[{rank}] is {pair!r}, expected a pair of token ids")
        if not all(type(i) is int for i in data["special_tokens"].values()):
            raise LanternError("field 'special_tokens' must map each token to its id (an integer)")
        specials = dict(sorted(data["special_tokens"].items(), key=lambda item: item[1]))
        if data["version"] == 1:
            expected = [256 + len(merges) + i for i in range(len(specials))]
            if list(specials.values()) != expected:
                raise LanternError(f"field 'special_tokens' ids {list(specials.values())} should be "
                                   f"{expected} (right after the {len(merges)} merges)")
            tok = cls(merges, data["pattern"], list(specials))
        else:
            keys = ("byte_ids", "merge_ids", "normalization", "bos_token")
            tok = cls(merges, data["pattern"], specials, vocab_size=data["vocab_size"],
                      eot_token=data.get("eot_token", EOT), **{k: data[k] for k in keys if k in data})
        if tok.vocab_size != data["vocab_size"]:
            raise LanternError(f"field 'vocab_size' is {data['vocab_size']} but the merges and "
                               f"special tokens make {tok.vocab_size}")
        return tok

    def __getstate__(self) -> dict:
        return self.to_dict()

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(Tokenizer.from_dict(state).__dict__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={len(self.special_tokens)}, fingerprint={self.fingerprint()[:12]})")

    # ------------------------------------------------------------------ human-readable views

    def describe_merges(self) -> str:
        """One line per merge: ``id: [left] + [right] -> [merged]`` with printable escapes.

        >>> tok = Tokenizer([(104, 105)], special_tokens=["<|endoftext|>"])
        >>> print(tok.describe_merges())
        # id: [left] + [right] -> [merged]  (256 byte tokens, 1 merges, 1 special tokens)
        256: [h] + [i] -> [hi]
        257: special <|endoftext|>
        """
        lines = [f"# id: [left] + [right] -> [merged]  ({256} byte tokens, {len(self.merges)} merges, "
                 f"{len(self.special_tokens)} special tokens)"]
        for (a, b), new_id in zip(self.merges, self._merge_ids):
            lines.append(f"{new_id}: [{escape_bytes(self._vocab[a])}] + [{escape_bytes(self._vocab[b])}] "
                         f"-> [{escape_bytes(self._vocab[new_id])}]")
        lines += [f"{i}: special {name}" for name, i in self.special_tokens.items()]
        return "\n".join(lines)

    def render_pieces(self, ids: Iterable[int]) -> list[tuple[int, str]]:
        """Each id with its piece of text, printable (see :func:`escape_bytes`).

        >>> tok = Tokenizer([], special_tokens=["<|endoftext|>"])
        >>> tok.render_pieces(tok.encode("Hi\\n") + [tok.eot_id])
        [(72, 'H'), (105, 'i'), (10, '\\\\n'), (256, '<|endoftext|>')]
        """
        return [(i, escape_bytes(self.token_bytes(i))) for i in self._check_ids(ids)]

    def hf_json(self) -> dict:
        """The Hugging Face ``tokenizer.json`` document of this tokenizer (see :meth:`to_hf_json`)."""
        alphabet = bytes_to_unicode()

        def hf(piece: bytes) -> str:
            return "".join(alphabet[b] for b in piece)

        vocab = self.vocab
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [{"id": i, "content": name, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True} for name, i in self.special_tokens.items()],
            "normalizer": {"type": self.normalization} if self.normalization else None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": hf_split_pattern(self.pattern)}, "behavior": "Isolated",
                 "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ]},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            "model": {
                "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                # special tokens too, as GPT-2's file has them: Hugging Face takes an added token's id
                # from the vocabulary, else numbers it after the others (which would lose a gap)
                "vocab": {hf(piece): i for i, piece in [*vocab.items(), *self._special_bytes.items()]},
                "merges": [f"{hf(vocab[a])} {hf(vocab[b])}" for a, b in self.merges],
            },
        }

    def to_hf_json(self, path: str | os.PathLike) -> None:
        """Export a Hugging Face ``tokenizer.json`` (``tokenizers.Tokenizer.from_file`` loads it).

        Same split regex (rewritten where Hugging Face's engine reads it differently, see
        :func:`hf_split_pattern`), byte-level alphabet, BPE merges and special tokens, so it
        encodes identically to :meth:`encode` with ``allowed_special="all"`` (Hugging Face
        always recognises added special tokens in text). ``ignore_merges`` is on: a chunk that
        is a whole token becomes that token, as in tiktoken, which :meth:`encode` runs on.
        """
        atomic_write_text(path, json.dumps(self.hf_json(), ensure_ascii=False, indent=1) + "\n")


class StreamDecoder:
    """Decode ids one at a time, emitting text only once a character is complete.

    A multi-byte character split across tokens is held back until its last byte arrives;
    invalid bytes come out as U+FFFD.

    >>> tok = Tokenizer([], special_tokens=["<|endoftext|>"])
    >>> dec = tok.stream_decoder()
    >>> [dec.push(i) for i in tok.encode("é!")], dec.flush()
    (['', 'é', '!'], '')
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Add one id; return the text completed by it (possibly empty)."""
        return self._decoder.decode(self.tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """End of stream: return what is left (an unfinished character becomes U+FFFD)."""
        text = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return text


# --------------------------------------------------------------------------- terminal view

_COLOURS = [153, 217, 187, 223, 183, 152]  # soft 256-colour backgrounds, black text


def render_colored(tokenizer: Tokenizer, text: str, color: bool = True, allowed_special=()) -> str:
    """The ``"I love pizza!" -> [...]`` view: pieces on coloured backgrounds, ids, counts.

    >>> tok = Tokenizer([], special_tokens=["<|endoftext|>"])
    >>> print(render_colored(tok, "Hi!", color=False))
    'Hi!' -> [72, 105, 33]
    [H|72] [i|105] [!|33]
    3 tokens, 3 characters, 3 bytes, 1.00 bytes/token
    """
    ids = tokenizer.encode(text, allowed_special=allowed_special)
    pieces = tokenizer.render_pieces(ids)
    if color:  # the text as contiguous coloured pieces, then each id on its piece's colour
        paint = [f"\x1b[48;5;{_COLOURS[k % len(_COLOURS)]}m\x1b[30m" for k in range(len(pieces))]
        shown = ["".join(f"{p}{piece}\x1b[0m" for p, (_, piece) in zip(paint, pieces)),
                 " ".join(f"{p}{i}\x1b[0m" for p, (i, _) in zip(paint, pieces))]
    else:
        shown = [" ".join(f"[{piece}|{i}]" for i, piece in pieces)]
    n_bytes = len(text.encode("utf-8"))
    return "\n".join([
        f"{text!r} -> {ids}",
        *shown,
        f"{len(ids)} tokens, {len(text)} characters, {n_bytes} bytes, "
        f"{n_bytes / max(1, len(ids)):.2f} bytes/token",
    ])


# --------------------------------------------------------------------------- files


def iter_file_texts(paths: Sequence[str | os.PathLike]) -> Iterator[str]:
    """Yield the text of files (folders: their ``*.txt`` files), cut into paragraphs.

    Cuts fall only after a newline followed by a non-space character, where no regex
    chunk can span, so training sees exactly the chunks of the whole file.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("*.txt"))
        elif p.exists():
            files.append(p)
        else:
            raise LanternError(f"{p}: no such file or folder")
    if not files:
        raise LanternError(f"no text files found in {[str(p) for p in paths]}")
    cut = regex.compile(r"(?<=\n)(?=\S)")
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            line = f.read_bytes()[: err.start].count(b"\n") + 1
            raise LanternError(f"{f}: line {line}: byte {err.start} is not UTF-8 ({err.reason})") from None
        yield from cut.splititer(text)


def train_files(paths: Sequence[str | os.PathLike], out: str | os.PathLike,
                config: TokenizerTrainConfig | None = None) -> Tokenizer:
    """Train on text files, save to ``out`` (and ``out`` with ``.merges.txt`` listing), return it."""
    config = config or TokenizerTrainConfig()
    logger.info("training a %d-token tokenizer (%s backend) on %s", config.vocab_size, config.backend,
                ", ".join(map(str, paths)))
    tok = Tokenizer.train(iter_file_texts(paths), config.vocab_size, pattern=config.pattern,
                          backend=config.backend)  # type: ignore[arg-type]
    tok.save(out)
    listing = Path(out).with_suffix(".merges.txt")
    atomic_write_text(listing, tok.describe_merges() + "\n")
    logger.info("saved %r to %s (merges listed in %s)", tok, out, listing)
    return tok
