"""Tests for lanternlm.tokenizer: a golden example, parity with rustbpe / tiktoken / HF, round-trips."""

from __future__ import annotations

import importlib
import json
import pickle

import pytest
import regex
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import lanternlm.tokenizer as tokmod
from lanternlm.errors import LanternError
from lanternlm.tokenizer import (DEFAULT_SPECIAL_TOKENS, GPT4_SPLIT_PATTERN, Tokenizer, bpe_encode_chunk,
                                 count_chunks, train_bpe_python)

# A small, diverse, hermetic corpus: docstrings of the standard library (every machine has
# them) plus hand-written lines exercising unicode, numbers, whitespace and contractions.
STDLIB_MODULES = ["json", "collections", "functools", "itertools", "os", "re", "argparse", "pathlib",
                  "textwrap", "string", "decimal", "fractions", "statistics", "logging", "email.message"]
EXTRA = [
    "naïve café — 東京で日本語を話す。 Здравствуй, мир! 😀🎉👍🏽 “quoted” ‘single’ e\u0301 \u00a0nbsp",
    "Numbers: 1 12 123 1234 12345 3.14159 -42 1e-9 0xFF 2024-01-01 $1,000,000.",
    "don't I'M we'll they've she'd you're IT'S", "tabs\tand\t\ttabs\n\n\n  indented\r\nwindows\r\n",
    "<|endoftext|> looks special but is plain text unless allowed",
]


def stdlib_texts() -> list[str]:
    texts = []
    for name in STDLIB_MODULES:
        module = importlib.import_module(name)
        texts.append(module.__doc__ or "")
        for value in vars(module).values():
            doc = getattr(value, "__doc__", None)
            if isinstance(doc, str) and doc not in texts:
                texts.append(doc)
    return texts + EXTRA


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    texts = stdlib_texts()
    assert sum(map(len, texts)) > 50_000
    return texts


@pytest.fixture(scope="module")
def tok(corpus) -> Tokenizer:
    return Tokenizer.train(corpus, vocab_size=1024)


def reference_encode(tok: Tokenizer, text: str) -> list[int]:
    """Plain-Python encoding: split with the regex, apply merges in learned order per chunk."""
    ranks = {pair: 256 + r for r, pair in enumerate(tok.merges)}
    ids = []
    for chunk in regex.findall(tok.pattern, text):
        ids += bpe_encode_chunk(chunk.encode("utf-8"), ranks)
    return ids


# --------------------------------------------------------------------------- golden example


def test_golden_worked_example():
    # Corpus "aaabdaaabac" is one regex chunk (all letters). Worked by hand:
    #  pair counts: aa=4, ab=2, bd=da=ba=ac=1      -> merge (97,97)   = 256 "aa"
    #  a a a b d a a a b a c -> [256 a b d 256 a b a c]
    #  counts: (256,97)=2 and (97,98)=2 tie; the smaller pair wins -> (97,98) = 257 "ab"
    #  -> [256 257 d 256 257 a c]; (256,257)=2   -> merge (256,257) = 258 "aaab"
    #  -> [258 d 258 a c]; all pairs count 1; smallest is (97,99) -> 259 "ac"
    #  -> [258 d 258 259]; smallest of (258,100),(100,258),(258,259) -> (100,258) = 260 "daaab"
    # vocab = 256 bytes + 5 merges + 1 special = 262, so <|endoftext|> gets id 261.
    expected = [(97, 97), (97, 98), (256, 257), (97, 99), (100, 258)]
    for backend in ("python", "rust"):
        tok = Tokenizer.train(["aaabdaaabac"], vocab_size=262, special_tokens=["<|endoftext|>"], backend=backend)
        assert tok.merges == expected, backend
        assert tok.eot_id == 261 and tok.vocab_size == 262
        assert tok.encode("aaabdaaabac") == [258, 260, 259]
        # "abc" -> [ab, c]; " aab" is its own chunk: [space, aa, b] ("aab" was never merged)
        assert tok.encode("abc aab") == [257, 99, 32, 256, 98]
        assert [tok.token_bytes(i) for i in (256, 257, 258, 259, 260)] == [b"aa", b"ab", b"aaab", b"ac", b"daaab"]


# --------------------------------------------------------------------------- training parity


def test_python_and_rust_backends_learn_identical_merges(corpus):
    py = Tokenizer.train(corpus, vocab_size=1500, backend="python")
    rs = Tokenizer.train(corpus, vocab_size=1500, backend="rust")
    assert len(py.merges) == 1500 - 256 - len(DEFAULT_SPECIAL_TOKENS)
    assert py.merges == rs.merges  # same pairs, same order
    assert py.fingerprint() == rs.fingerprint()


def test_merges_match_rustbpe_directly(corpus):
    import rustbpe

    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(corpus), 900, pattern=GPT4_SPLIT_PATTERN)
    theirs = [bytes(b) for b, _ in sorted(trainer.get_mergeable_ranks(), key=lambda x: x[1])]
    ours = train_bpe_python(count_chunks(corpus), 900 - 256)
    tok = Tokenizer(ours, special_tokens=[])
    assert [tok.token_bytes(i) for i in range(tok.vocab_size)] == theirs
    assert trainer.get_pattern() == GPT4_SPLIT_PATTERN


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("ab c\n1é😀'"), max_size=40), min_size=1, max_size=6),
       st.integers(1, 40))
def test_backends_agree_on_random_corpora(texts, merges):
    assume(any(texts))
    vocab_size = 256 + 1 + merges
    py = Tokenizer.train(texts, vocab_size, special_tokens=["<|endoftext|>"], backend="python")
    rs = Tokenizer.train(texts, vocab_size, special_tokens=["<|endoftext|>"], backend="rust")
    assert py.merges == rs.merges
    for text in texts:
        assert py.encode(text) == reference_encode(py, text)


def test_small_corpus_gives_smaller_vocab():
    tok = Tokenizer.train(["ab ab"], vocab_size=300, special_tokens=["<|endoftext|>"], backend="python")
    rs = Tokenizer.train(["ab ab"], vocab_size=300, special_tokens=["<|endoftext|>"], backend="rust")
    assert tok.merges == rs.merges == [(97, 98), (32, 256)]
    assert tok.vocab_size == 259 and tok.eot_id == 258


@pytest.mark.parametrize("backend", ["python", "rust"])
def test_training_errors(backend):
    with pytest.raises(LanternError, match="too small"):
        Tokenizer.train(["hello"], vocab_size=256 + len(DEFAULT_SPECIAL_TOKENS), backend=backend)
    with pytest.raises(LanternError, match="empty"):
        Tokenizer.train(["", ""], vocab_size=512, backend=backend)
    with pytest.raises(LanternError, match="empty"):
        Tokenizer.train([], vocab_size=512, backend=backend)
    with pytest.raises(LanternError, match="training text #1: lone surrogate U\\+D83D at character 4"):
        Tokenizer.train(["fine", "bad \ud83d here", "fine"], vocab_size=512, backend=backend)
    with pytest.raises(LanternError, match="expected a str"):
        Tokenizer.train([b"bytes"], vocab_size=512, backend=backend)


def test_unknown_backend():
    with pytest.raises(LanternError, match="backend"):
        Tokenizer.train(["hello"], vocab_size=512, backend="java")


# --------------------------------------------------------------------------- encoding parity


VARIED = [
    "Hello world", "Hello   world\n\n\n  x", "  leading spaces", "trailing   ", "\r\n\r\n", "\t\t\n",
    "1234567890 3.14159 1,000", "don't DON'T we'll they've I'm", "naïve café 東京 😀😀😀 e\u0301",
    "a\u200bb\u2028c", "x<|endoftext|>y", "def f(x):\n    return x ** 2  # square\n", "",
]


def test_encode_matches_reference_and_independent_tiktoken(tok, corpus):
    import tiktoken

    independent = tiktoken.Encoding(
        name="independent", pat_str=GPT4_SPLIT_PATTERN,
        mergeable_ranks={tok.token_bytes(i): i for i in range(256 + len(tok.merges))}, special_tokens={})
    for text in VARIED + corpus[:200]:
        ours = tok.encode(text)
        assert ours == reference_encode(tok, text)
        assert ours == independent.encode_ordinary(text)


def test_hf_export_encodes_identically(tok, corpus, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    path = tmp_path / "tokenizer.json"
    tok.to_hf_json(path)
    hf = tokenizers.Tokenizer.from_file(str(path))
    assert hf.get_vocab_size() == tok.vocab_size
    for text in VARIED + corpus[:200] + ["<|user|>hi<|end|><|assistant|>"]:
        ids = tok.encode(text, allowed_special="all")
        assert hf.encode(text).ids == ids, text
        assert hf.decode(ids, skip_special_tokens=False) == text


def test_encode_batch_equals_encode(tok, corpus):
    texts = corpus[:100] + VARIED
    single = [tok.encode(t) for t in texts]
    assert tok.encode_batch(texts) == single
    assert tok.encode_batch(texts, num_threads=3) == single
    assert tok.encode_batch(texts, num_threads=1) == single
    assert tok.encode_batch([]) == [] and tok.encode_batch(["x"]) == [tok.encode("x")]
    assert tok.encode_batch(texts, allowed_special="all") == [tok.encode(t, allowed_special="all") for t in texts]


# --------------------------------------------------------------------------- round trips


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_roundtrip_any_unicode(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")
    assert sum(tok.token_byte_lengths()[i] for i in ids) == len(text.encode("utf-8"))
    dec = tok.stream_decoder()
    pieces = [dec.push(i) for i in ids]
    assert "".join(pieces) + dec.flush() == text
    assert all("\ufffd" not in p for p in pieces)  # only ever whole characters


def test_stream_decoder_holds_partial_characters():
    tok = Tokenizer([], special_tokens=["<|endoftext|>"])  # bytes only: "😀" is 4 tokens
    dec = tok.stream_decoder()
    assert [dec.push(i) for i in "😀".encode()] == ["", "", "", "😀"]
    assert dec.push(tok.eot_id) == "<|endoftext|>"
    assert dec.push(0xE6) == ""          # first byte of a 3-byte character, then end of stream
    assert dec.flush() == "\ufffd"
    assert dec.push(ord("x")) == "x"     # flush resets


@pytest.mark.parametrize("text", ["\ud800", "ok \udfff", "emoji half \ud83d!"])
def test_lone_surrogate_is_a_clear_error(tok, text):
    with pytest.raises(LanternError, match="lone surrogate U\\+D"):
        tok.encode(text)
    with pytest.raises(LanternError, match="text #1: lone surrogate"):
        tok.encode_batch(["fine", text])


def test_decode_rejects_unknown_ids(tok):
    with pytest.raises(LanternError, match="outside"):
        tok.decode([1, tok.vocab_size])
    with pytest.raises(LanternError, match="outside"):
        tok.token_bytes(-1)
    assert tok.decode([0xC3]) == "\ufffd"  # half a character decodes to U+FFFD, no crash


# --------------------------------------------------------------------------- special tokens


def test_special_tokens(tok):
    n = len(DEFAULT_SPECIAL_TOKENS)
    assert list(tok.special_tokens) == DEFAULT_SPECIAL_TOKENS
    assert sorted(tok.special_tokens.values()) == list(range(tok.vocab_size - n, tok.vocab_size))
    assert tok.eot_id == tok.special_id("<|endoftext|>") == tok.vocab_size - n
    text = "a<|endoftext|>b<|user|>"
    plain = tok.encode(text)
    assert not set(plain) & set(tok.special_tokens.values())   # plain text by default
    assert tok.decode(plain) == text
    some = tok.encode(text, allowed_special={"<|endoftext|>"})
    assert tok.eot_id in some and tok.special_id("<|user|>") not in some
    assert tok.decode(some) == text
    full = tok.encode(text, allowed_special="all")
    assert full == tok.encode("a") + [tok.eot_id] + tok.encode("b") + [tok.special_id("<|user|>")]
    assert tok.token_byte_lengths()[-n:] == [0] * n
    assert len(tok.token_byte_lengths()) == tok.vocab_size
    assert tok.token_bytes(tok.eot_id) == b"<|endoftext|>"
    with pytest.raises(LanternError, match="unknown special"):
        tok.encode(text, allowed_special={"<|nope|>"})
    with pytest.raises(LanternError, match="not in this tokenizer"):
        tok.special_id("<|nope|>")


def test_no_eot_is_a_clear_error():
    tok = Tokenizer([], special_tokens=["<|pad|>"])
    with pytest.raises(LanternError, match="endoftext"):
        tok.eot_id


# --------------------------------------------------------------------------- files


def test_save_load_roundtrip(tok, tmp_path):
    path = tmp_path / "tok.json"
    tok.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == "lanternlm-tokenizer" and data["version"] == 1
    assert data["merges"][0] == list(tok.merges[0])
    back = Tokenizer.load(path)
    assert back == tok and back.fingerprint() == tok.fingerprint()
    assert back.encode(VARIED[8]) == tok.encode(VARIED[8])
    assert pickle.loads(pickle.dumps(tok)).fingerprint() == tok.fingerprint()
    other = Tokenizer(tok.merges[:-1], special_tokens=DEFAULT_SPECIAL_TOKENS)
    assert other.fingerprint() != tok.fingerprint()


def test_describe_merges_and_render_pieces(tok):
    listing = tok.describe_merges().splitlines()
    assert len(listing) == 1 + len(tok.merges) + len(tok.special_tokens)
    a, b = tok.merges[0]
    assert listing[1].startswith("256: [") and tok.token_bytes(256) == tok.token_bytes(a) + tok.token_bytes(b)
    assert all("\n" not in line for line in listing)
    pieces = tok.render_pieces(tok.encode("I love pizza!\n"))
    assert "".join(p for _, p in pieces) == "I love pizza!\\n"
    shown = tokmod.render_colored(tok, "I love pizza!", color=True)
    assert "\x1b[48;5;" in shown and "bytes/token" in shown


def _corrupt(tmp_path, tok, name, edit):
    path = tmp_path / name
    tok.save(path)
    path.write_text(edit(path.read_text()))
    return path


@pytest.mark.parametrize("name, edit, message", [
    ("truncated.json", lambda s: s[: len(s) // 2], r"truncated\.json: line \d+, column \d+: invalid JSON"),
    ("format.json", lambda s: s.replace("lanternlm-tokenizer", "other"), "field 'format'"),
    ("version.json", lambda s: s.replace('"version": 1', '"version": 99'), "field 'version'"),
    ("merge.json", lambda s: s.replace("\n    [", '\n    ["x", ', 1), r"'merges'\[0\]"),
    ("future.json", lambda s: regex.sub(r"\n    \[\d+, \d+\]", "\n    [9999, 97]", s, count=1), "merge #0"),
    ("special.json", lambda s: s.replace('"<|pad|>": ', '"<|pad|>": 1'), "field 'special_tokens'"),
    ("size.json", lambda s: s.replace('"vocab_size": ', '"vocab_size": 1'), "field 'vocab_size'"),
    ("empty.json", lambda s: "", "invalid JSON"),
])
def test_corrupt_files_name_the_problem(tok, tmp_path, name, edit, message):
    path = _corrupt(tmp_path, tok, name, edit)
    with pytest.raises(LanternError, match=message) as err:
        Tokenizer.load(path)
    assert name in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(LanternError, match="not found"):
        Tokenizer.load(tmp_path / "nope.json")
