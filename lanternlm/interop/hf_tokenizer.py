"""Real tokenizers in and out: Hugging Face ``tokenizer.json`` and tiktoken rank files.

Out: :meth:`lanternlm.tokenizer.Tokenizer.hf_json` builds the ``tokenizer.json`` document;
:func:`check_hf_tokenizer` loads it with the ``tokenizers`` package and re-encodes
:data:`PROBES` (digit runs, whitespace before and after newlines, contractions, scripts,
emoji, special-token strings) plus seeded random strings, and refuses the file at the first
string whose ids differ, naming it. Every export runs it, so a split pattern that
Hugging Face's regex engine reads differently from ours cannot be written silently.

In: :func:`from_hf_json` reads a byte-level BPE ``tokenizer.json`` (GPT-2, Llama 3, Qwen2
style: ``ByteLevel`` with GPT-2's regex, or a ``Split`` regex then ``ByteLevel``; no
normalizer or NFC), :func:`from_tiktoken` a tiktoken rank file (``base64 rank`` lines), and
:func:`load_tokenizer` either, or a model folder. The ids are the file's own (single bytes
anywhere, special tokens with gaps), and every import is checked the same way, against
``tokenizers`` or ``tiktoken`` on the same file. Anything else is refused, naming it.
"""

from __future__ import annotations

import base64
import json
import os
import random
from pathlib import Path
from typing import Callable, Sequence

from ..config import read_json
from ..errors import LanternError
from ..tokenizer import EOT, GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN, Tokenizer, bytes_to_unicode, layout_from_vocab

LLAMA3_SPLIT_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
                        r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2_SPLIT_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
                       r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
O200K_SPLIT_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""", r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""", r"""\s*[\r\n]+""", r"""\s+(?!\S)""", r"""\s+""",
])
SPLIT_PATTERNS = {"gpt4": GPT4_SPLIT_PATTERN, "cl100k": GPT4_SPLIT_PATTERN, "gpt2": GPT2_SPLIT_PATTERN,
                  "llama3": LLAMA3_SPLIT_PATTERN, "qwen2": QWEN2_SPLIT_PATTERN, "o200k": O200K_SPLIT_PATTERN}
"""Split patterns by name, for rank files (which hold none): ``--pattern NAME``."""

PROBES = (
    "0", "00", "000", "0000", "12345", "1234567", " 12 345 6789", "3.14159 -42 1e-9 0xFF", "2024-01-01",
    "$1,000,000.", "١٢٣٤ ٥", "a  \nb  \n", "end   ", "   ", "\n", "\n\n\n", "  \n\n  x", "x\r\n\r\ny",
    "\t\tindented\n    code()", "!!!\n\nx", "...", " ?! ", "don't I'M we'll they've she'd you're IT'S",
    "Hello, world! How are you?", "naïve café — 東京で日本語を話す。", "Здравствуй, мир!", "😀🎉👍🏽",
    "“quoted” ‘single’", "e\u0301 \u00a0nbsp", "العربية עברית हिन्दी", "a\u200bb", "x" * 40,
    "  leading and trailing  ", "line\n  indented\n\tTabbed\n", "<|endoftext|>plain<|end|>",
)
"""Strings every export re-encodes with ``tokenizers`` (plus :func:`random_probes`)."""

_ALPHABET = "aZ 09\n\r\t.,'!?-_éß東😀\u00a0\u0301\u200b'sll" + "0123456789" + "   "


def random_probes(n: int = 200, seed: int = 0) -> list[str]:
    """``n`` seeded random strings mixing letters, digits, spaces, newlines and punctuation.

    >>> random_probes(2) == random_probes(2) and len(random_probes(3)) == 3
    True
    """
    rng = random.Random(seed)
    return ["".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 24))) for _ in range(n)]


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise LanternError("Hugging Face tokenizer files need the 'tokenizers' package: "
                           "pip install 'lanternlm[hf]'") from None
    return tokenizers


def check_hf_tokenizer(tokenizer: Tokenizer, document: dict | str,
                       texts: Sequence[str] | None = None) -> int:
    """Load ``document`` (a ``tokenizer.json`` as a dict or JSON text) with ``tokenizers``
    and check that it encodes ``texts`` (default: :data:`PROBES` + :func:`random_probes`)
    to the ids ``tokenizer`` gives with ``allowed_special="all"``, and decodes them back.

    Returns the number of strings checked; raises LanternError at the first difference.
    """
    text = document if isinstance(document, str) else json.dumps(document, ensure_ascii=False)
    try:
        hf = _tokenizers().Tokenizer.from_str(text)
    except Exception as err:  # tokenizers raises plain Exceptions
        raise LanternError(f"tokenizer.json: the 'tokenizers' package cannot load it ({err})") from None
    return compare_encodings(tokenizer, lambda t: hf.encode(t, add_special_tokens=False).ids,
                             lambda ids: hf.decode(ids, skip_special_tokens=False),
                             "Hugging Face 'tokenizers'", texts)


def compare_encodings(tokenizer: Tokenizer, encode: Callable[[str], list[int]], decode: Callable[[list[int]], str],
                      name: str, texts: Sequence[str] | None = None) -> int:
    """Check that another implementation (``encode``, ``decode``, called ``name`` in errors)
    gives our ids and text on ``texts`` (default: :data:`PROBES` + :func:`random_probes`)."""
    texts = list(PROBES) + random_probes() if texts is None else list(texts)
    for probe in texts:
        ours = tokenizer.encode(probe, allowed_special="all")
        theirs = list(encode(probe))
        if theirs != ours:
            raise LanternError(
                f"tokenizer: {name} encodes {probe!r} as {theirs} but lanternlm gives {ours} "
                f"({[tokenizer.decode([i]) for i in ours]}); the split pattern {tokenizer.pattern!r} "
                "is read differently by its regex engine, or the files disagree")
        if decode(ours) != tokenizer.decode(ours):
            raise LanternError(f"tokenizer: {name} decodes {ours} differently from lanternlm ({probe!r})")
    return len(texts)


# --------------------------------------------------------------------------- import


def _refuse(what: str) -> LanternError:
    return LanternError(f"tokenizer.json: {what} is not supported (byte-level BPE only: GPT-2, Llama 3, "
                        "Qwen2 style)")


def _split_pattern(pre: dict | None) -> str:
    """The one split regex of a byte-level pre-tokenizer, or a clear refusal."""
    steps = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else [pre] if pre else []
    kinds = [step.get("type") for step in steps]
    byte_level = steps[-1] if kinds and kinds[-1] == "ByteLevel" else None
    if byte_level is None:
        raise _refuse(f"pre-tokenizer {kinds or None} (need ByteLevel last)")
    if byte_level.get("add_prefix_space"):
        raise _refuse("ByteLevel add_prefix_space=true")
    if kinds == ["ByteLevel"]:
        if not byte_level.get("use_regex", True):
            raise _refuse("ByteLevel without a split regex")
        return GPT2_SPLIT_PATTERN
    split = steps[0]
    if kinds != ["Split", "ByteLevel"] or byte_level.get("use_regex", True):
        raise _refuse(f"pre-tokenizer sequence {kinds}")
    if split.get("behavior") != "Isolated" or split.get("invert") or "Regex" not in split.get("pattern", {}):
        raise _refuse(f"Split {split.get('behavior')}, invert={split.get('invert')}, pattern "
                      f"{split.get('pattern')}")
    return split["pattern"]["Regex"]


def from_hf_json(document: dict | str | os.PathLike, *, bos_token: str | None = None,
                 eot_token: str | None = None) -> Tokenizer:
    """Our tokenizer from a byte-level BPE ``tokenizer.json`` (a path or its parsed content),
    with the file's own ids; checked against ``tokenizers`` on the same file.

    ``eot_token`` (default ``<|endoftext|>`` when the file has it) separates documents and
    ``bos_token`` starts prompts (default: ``eot_token``).
    """
    if not isinstance(document, dict):
        document = read_json(document)
    model = document.get("model") or {}
    if model.get("type") != "BPE":
        raise _refuse(f"model type {model.get('type')!r}")
    for key in ("byte_fallback", "continuing_subword_prefix", "end_of_word_suffix", "dropout"):
        if model.get(key):
            raise _refuse(f"BPE {key}={model[key]!r}")
    normalizer = document.get("normalizer")
    normalization = None
    if normalizer:
        if normalizer.get("type") != "NFC":
            raise _refuse(f"normalizer {normalizer.get('type')!r}")
        normalization = "NFC"
    if (document.get("decoder") or {}).get("type") != "ByteLevel":
        raise _refuse(f"decoder {(document.get('decoder') or {}).get('type')!r}")
    pattern = _split_pattern(document.get("pre_tokenizer"))

    specials = {token["content"]: token["id"] for token in document.get("added_tokens", [])}
    alphabet = {char: b for b, char in bytes_to_unicode().items()}
    added_ids = set(specials.values())
    vocab: dict[int, bytes] = {}
    for text, i in model.get("vocab", {}).items():
        if i in added_ids:
            continue
        try:
            vocab[i] = bytes(alphabet[char] for char in text)
        except KeyError:
            raise _refuse(f"vocabulary entry {text!r} (id {i}) outside the byte-level alphabet") from None
    id_of = {piece: i for i, piece in vocab.items()}
    merges, merge_ids = [], []
    for rank, merge in enumerate(model.get("merges", [])):
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        try:
            a, b = (id_of[bytes(alphabet[c] for c in part)] for part in (left, right))
            merge_ids.append(id_of[vocab[a] + vocab[b]])
        except KeyError:
            raise LanternError(f"tokenizer.json: merge #{rank} {merge!r} names a token not in the vocabulary") from None
        merges.append((a, b))
    made = {bytes([b]) for b in range(256)} | {vocab[i] for i in merge_ids}
    unreachable = sorted(i for i, piece in vocab.items() if piece not in made)
    if unreachable:
        raise _refuse(f"{len(unreachable)} vocabulary entries that no merge makes (first ids {unreachable[:5]})")
    byte_ids, _, _ = layout_from_vocab({i: vocab[i] for i in vocab if len(vocab[i]) == 1})
    try:
        tokenizer = Tokenizer(merges, pattern, specials, byte_ids=byte_ids, merge_ids=merge_ids,
                              vocab_size=max([*vocab, *specials.values()]) + 1, normalization=normalization,
                              bos_token=bos_token, eot_token=eot_token or EOT)
    except LanternError as err:
        raise LanternError(f"tokenizer.json: {err}") from None
    check_hf_tokenizer(tokenizer, document)
    return tokenizer


def from_tiktoken(path: str | os.PathLike, pattern: str = GPT4_SPLIT_PATTERN,
                  special_tokens: dict[str, int] | None = None, *, bos_token: str | None = None,
                  eot_token: str | None = None) -> Tokenizer:
    """Our tokenizer from a tiktoken rank file (one ``base64(token) rank`` per line): the
    merges are recovered from the ranks; checked against ``tiktoken`` on the same ranks.
    ``pattern`` is a regex or a name in :data:`SPLIT_PATTERNS`."""
    import tiktoken

    path = Path(path)
    pattern = SPLIT_PATTERNS.get(pattern, pattern)
    ranks: dict[bytes, int] = {}
    try:
        for number, line in enumerate(path.read_text(encoding="ascii").splitlines(), start=1):
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
    except (OSError, UnicodeDecodeError) as err:
        raise LanternError(f"{path}: cannot read the rank file ({err})") from None
    except ValueError:
        raise LanternError(f"{path}:{number}: expected 'base64-token rank', got {line[:60]!r}") from None
    specials = dict(special_tokens or {})
    byte_ids, merges, merge_ids = layout_from_vocab({rank: piece for piece, rank in ranks.items()})
    try:
        tokenizer = Tokenizer(merges, pattern, specials, byte_ids=byte_ids, merge_ids=merge_ids,
                              bos_token=bos_token, eot_token=eot_token or EOT)
    except LanternError as err:
        raise LanternError(f"{path}: {err}") from None
    reference = tiktoken.Encoding(name=path.stem, pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials)
    compare_encodings(tokenizer, lambda t: reference.encode(t, allowed_special="all"), reference.decode,
                      "tiktoken")
    return tokenizer


def load_tokenizer(source: str | os.PathLike, *, pattern: str = GPT4_SPLIT_PATTERN,
                   special_tokens: dict[str, int] | None = None, bos_token: str | None = None,
                   eot_token: str | None = None) -> Tokenizer:
    """A tokenizer from a ``tokenizer.json``, a ``.tiktoken`` rank file, or a model folder
    holding ``tokenizer.json`` (its ``tokenizer_config.json`` names the BOS and EOS tokens
    unless given). ``pattern`` and ``special_tokens`` are for rank files only."""
    source = Path(source)
    if source.is_dir():
        config = source / "tokenizer_config.json"
        names = read_json(config) if config.is_file() else {}
        bos_token = bos_token or _token_name(names.get("bos_token"))
        eot_token = eot_token or _token_name(names.get("eos_token"))
        if not (source / "tokenizer.json").is_file():
            return from_hf_json(_converted(source), bos_token=bos_token, eot_token=eot_token)
        source = source / "tokenizer.json"
    if not source.is_file():
        raise LanternError(f"{source}: no such tokenizer file")
    if source.suffix == ".tiktoken":
        return from_tiktoken(source, pattern, special_tokens, bos_token=bos_token, eot_token=eot_token)
    return from_hf_json(source, bos_token=bos_token, eot_token=eot_token)


def _converted(folder: Path) -> dict:
    """The tokenizer.json that ``transformers`` builds for a folder without one (GPT-2's
    ``vocab.json`` + ``merges.txt``)."""
    try:
        from transformers import AutoTokenizer

        fast = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        return json.loads(fast.backend_tokenizer.to_str())
    except Exception as err:  # ImportError, or whatever transformers raises for a folder it cannot read
        raise LanternError(f"{folder}: no tokenizer.json, and transformers cannot build one here "
                           f"({type(err).__name__}: {err})") from None


def _token_name(value) -> str | None:
    """A token named in ``tokenizer_config.json``: a string or ``{"content": ...}``."""
    return value.get("content") if isinstance(value, dict) else value
