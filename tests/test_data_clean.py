"""Cleaning transforms, quality filters with exact counts, dedup, and the modules' worked examples."""

import random

import numpy as np
import pytest

from lanternlm.data import clean
from lanternlm.data.clean import CleanConfig, Pipeline, cleaning_steps, format_report
from lanternlm.data.dedup import ExactDedup, MinHasher, NearDedup, jaccard, lsh_params, shingles
from lanternlm.data.sources import Document


def test_html_stripping_keeps_visible_text_only():
    page = ("<!DOCTYPE html><html><head><style>p {color: red}</style><title>T</title></head>"
            "<body><h1>Title</h1><p>One &lt; two &amp;&nbsp;three.</p><ul><li>a</li><li>b</li></ul>"
            "<script>var x = 1;</script><pre>  code\n    indented</pre></body></html>")
    assert clean.strip_markup(page) == "Title\n\nOne < two & three.\n\na\nb\n\n  code\n    indented"
    assert clean.strip_markup("x<y and y>z") == "x<y and y>z"


def test_whitespace_and_unicode():
    assert clean.normalize_unicode("e\u0301") == "\u00e9"
    assert clean.normalize_whitespace("a\u200bb\u00adc\r\nd\u2028e\t \n\n\n\n  f  ") == "abc\nd\ne\n\n  f"


def docs(*texts):
    return [Document(t, f"doc{i}") for i, t in enumerate(texts)]


def test_pipeline_counts_every_filter_exactly():
    good = "The quick brown fox jumps over the lazy dog near the river bank today."   # 70 chars
    config = CleanConfig(min_chars=30, max_chars=200, max_symbol_ratio=0.2,
                         max_duplicate_line_fraction=0.3, max_top_ngram_fraction=0.2)
    inputs = docs(
        good,
        "too short",                                            # min_chars
        good * 3,                                               # max_chars (210 characters)
        "#$%^&*@!~`|\\<>{}+=_" * 3 + " " + good,                # symbols
        "buy now\n" * 6 + good,                                 # duplicate lines
        "spam eggs " * 10,                                      # top bigram
        "   \n\t  ",                                            # emptied by whitespace normalisation
        "<p>" + good + "</p><p>Second paragraph here.</p>",     # HTML, kept after stripping
    )
    pipeline = Pipeline(cleaning_steps(config))
    kept = [d.text for d in pipeline(inputs)]
    assert kept == [good, good + "\n\nSecond paragraph here."]
    removed = {s["name"]: (s["documents_removed"], s["bytes_removed"]) for s in pipeline.report()}
    assert removed == {
        "normalize_unicode": (0, 0),
        "strip_markup": (0, 14 - 2),                            # four tags out, one paragraph break in
        "strip_boilerplate": (0, 0),
        "normalize_whitespace": (1, 7 + 1),                     # the blank document + a trailing space
        "min_chars>=30": (1, 9),
        "max_chars<=200": (1, 210),
        "symbol_ratio<=0.2": (1, 57 + 1 + 70),
        "duplicate_lines<=0.3": (1, 48 + 70),
        "top_bigram<=0.2": (1, 99),
    }
    changed = {s["name"]: s["documents_changed"] for s in pipeline.report()}
    assert changed["strip_markup"] == 1 and changed["normalize_whitespace"] == 1
    table = format_report(pipeline.report())
    assert table.splitlines()[0].split()[:2] == ["step", "kind"] and "max_chars<=200" in table


def test_exact_dedup_ignores_case_and_spacing():
    keep = ExactDedup()
    assert [keep(t) for t in ["Hello  World", "hello world", "hello world!", "HELLO\nWORLD"]] == [True, False, True, False]


def _pair_with_jaccard(n_shared, n_a, n_b, seed=0):
    """Two texts whose 1-word shingle sets have exactly the given sizes (distinct random words)."""
    rng = random.Random(seed)
    words = [f"w{rng.getrandbits(40):x}" for _ in range(n_shared + n_a + n_b)]
    shared, only_a, only_b = words[:n_shared], words[n_shared:n_shared + n_a], words[n_shared + n_a:]
    return " ".join(shared + only_a), " ".join(shared + only_b)


@pytest.mark.parametrize("n_shared, n_only", [(300, 0), (240, 30), (150, 75), (60, 120)])
def test_minhash_estimates_known_jaccard(n_shared, n_only):
    a, b = _pair_with_jaccard(n_shared, n_only, n_only)
    sa, sb = shingles(a, 1), shingles(b, 1)
    exact = len(np.intersect1d(sa, sb)) / len(np.union1d(sa, sb))
    assert exact == pytest.approx(n_shared / (n_shared + 2 * n_only))
    hasher = MinHasher(num_perm=256, seed=7)
    assert jaccard(hasher.signature(sa), hasher.signature(sb)) == pytest.approx(exact, abs=0.08)


def test_minhash_agrees_with_datasketch():
    datasketch = pytest.importorskip("datasketch")
    ours, theirs = [], []
    for n_shared, n_only in [(240, 30), (150, 75), (60, 120)]:
        a, b = _pair_with_jaccard(n_shared, n_only, n_only, seed=1)
        hasher = MinHasher(num_perm=256, seed=3)
        ours.append(jaccard(hasher.signature(shingles(a, 1)), hasher.signature(shingles(b, 1))))
        ma, mb = datasketch.MinHash(num_perm=256, seed=3), datasketch.MinHash(num_perm=256, seed=3)
        ma.update_batch([w.encode() for w in a.split()])
        mb.update_batch([w.encode() for w in b.split()])
        theirs.append(ma.jaccard(mb))
    assert np.allclose(ours, theirs, atol=0.1)


def test_lsh_params_separate_at_threshold():
    for threshold in (0.5, 0.8, 0.9):
        bands, rows = lsh_params(threshold, 128)
        assert bands * rows <= 128
        chance = lambda s: 1 - (1 - s ** rows) ** bands  # noqa: E731
        assert chance(threshold + 0.1) > 0.8 and chance(threshold - 0.3) < 0.1


def test_near_dedup_drops_only_near_copies():
    rng = random.Random(0)
    vocabulary = [f"word{i}" for i in range(5000)]
    base = [rng.choice(vocabulary) for _ in range(400)]
    light = base.copy()
    for i in rng.sample(range(400), 4):          # 4 words changed: about 0.9 shingle Jaccard
        light[i] = "changed"
    heavy = base.copy()
    for i in rng.sample(range(400), 80):         # 80 changed: about 0.2
        heavy[i] = "changed"
    other = [rng.choice(vocabulary) for _ in range(400)]
    keep = NearDedup(threshold=0.8, num_perm=128, shingle_words=5)
    assert [keep(" ".join(t)) for t in (base, light, heavy, other, light)] == [True, False, True, True, False]
    assert len(keep.kept) == 3
