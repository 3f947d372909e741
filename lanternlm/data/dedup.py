"""Duplicate removal: exact (hash of the normalised text) and near (MinHash + LSH).

Both are filters for :class:`lanternlm.data.clean.Pipeline`: called with a text,
they answer "keep?" and remember what they kept, so the first copy of a document
survives and later copies go. Memory grows with the number of *kept documents*
only: 16 bytes (plus a Python set entry) per document for the exact filter,
``num_perm`` × 4 bytes plus one dict entry per band for the near filter (about
1.9 KB per document at the defaults, measured with tracemalloc); texts are never held.

Near duplicates, step by step:

1. **Shingles**: the set of word ``n``-grams of the normalised text (lower case,
   single spaces), each hashed to 32 bits (CRC-32 of each word, a position-weighted
   sum over the n-gram, then MurmurHash3's finaliser to mix the bits). Two documents are near duplicates when
   the Jaccard similarity of their shingle sets, |A ∩ B| / |A ∪ B|, is at least the
   threshold.
2. **MinHash**: ``num_perm`` random hash functions (see :class:`MinHasher`); the
   signature keeps the minimum of each over the shingles. For two sets, the
   chance that one position agrees equals their Jaccard similarity, so the share of
   equal positions estimates it.
3. **LSH**: the signature is cut into ``bands`` of ``rows``; documents sharing any
   band exactly are candidates (likely when similar, rare otherwise). The band
   layout is chosen for the threshold (:func:`lsh_params`). Each candidate is then
   checked: estimated Jaccard ≥ threshold means duplicate.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

import numpy as np

from ..config import option
from ..errors import LanternError

@dataclass
class DedupConfig:
    """Which duplicates are removed."""

    dedup_exact: bool = option(True, "drop documents whose normalised text equals an earlier one")
    dedup_near: bool = option(True, "drop near duplicates of earlier documents (MinHash + LSH)")
    near_threshold: float = option(0.8, "Jaccard similarity of word shingles at which two documents are near duplicates")
    num_perm: int = option(128, "MinHash signature length (more: a finer estimate, more memory)")
    shingle_words: int = option(5, "words per shingle for near-duplicate detection")
    dedup_seed: int = option(1234, "seed of the MinHash functions")


def normalize_for_dedup(text: str) -> str:
    """Lower case, whitespace collapsed to single spaces: what "the same text" means here.

    >>> normalize_for_dedup("  Hello\\n\\tWORLD ")
    'hello world'
    """
    return " ".join(text.lower().split())


class ExactDedup:
    """Keep the first document with a given normalised text.

    >>> keep = ExactDedup()
    >>> [keep(t) for t in ["A cat.", "a  CAT.", "a dog."]]
    [True, False, True]
    """

    def __init__(self) -> None:
        self.seen: set[bytes] = set()

    def __call__(self, text: str) -> bool:
        key = hashlib.blake2b(normalize_for_dedup(text).encode("utf-8"), digest_size=16).digest()
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finaliser: spreads every input bit over the output (uint32 in, uint32 out)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


_SHINGLE_MULTIPLIERS = _fmix32(np.arange(1, 65, dtype=np.uint32)) | np.uint32(1)   # odd, fixed


def shingles(text: str, n: int = 5) -> np.ndarray:
    """The distinct 32-bit hashes of the word ``n``-grams of the normalised text (sorted uint32).

    A text with fewer than ``n`` words has one shingle: all its words.

    >>> len(shingles("a b c d e f", n=5)), len(shingles("a b c a b c", n=3)), len(shingles("short", n=5))
    (2, 3, 1)
    """
    if not 1 <= n <= len(_SHINGLE_MULTIPLIERS):
        raise LanternError(f"shingle_words must be between 1 and {len(_SHINGLE_MULTIPLIERS)}, not {n}")
    words = normalize_for_dedup(text).split()
    if not words:
        return np.zeros(0, dtype=np.uint32)
    hashed = np.array([zlib.crc32(word.encode("utf-8")) for word in words], dtype=np.uint32)
    width = min(n, len(words))
    count = len(words) - width + 1
    combined = np.zeros(count, dtype=np.uint32)
    with np.errstate(over="ignore"):
        for i in range(width):                               # position-weighted sum, wrapping mod 2^32
            combined += hashed[i:i + count] * _SHINGLE_MULTIPLIERS[i]
        return np.unique(_fmix32(combined))


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: a bijection on uint64 that mixes every bit into every other."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


class MinHasher:
    """``num_perm`` hash functions ``h_i(x) = fmix64(x XOR s_i)`` with random 64-bit seeds ``s_i``.

    Each ``h_i`` is a bijection that scrambles its input thoroughly, so the shingle
    with the smallest ``h_i`` is, in effect, drawn at random, independently per ``i``.
    (Linear families like ``(a·x + b) mod p`` are only safe with full-width ``a``; with
    small ``a`` their minima correlate and the estimates drift.)

    >>> mh = MinHasher(num_perm=64, seed=0)
    >>> a = shingles("the quick brown fox jumps over the lazy dog " * 3, 3)
    >>> jaccard(mh.signature(a), mh.signature(a))
    1.0
    """

    def __init__(self, num_perm: int = 128, seed: int = 1234, block: int = 4096) -> None:
        if num_perm < 1:
            raise LanternError(f"num_perm must be positive, not {num_perm}")
        rng = np.random.default_rng(seed)
        self.seeds = rng.integers(0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64, endpoint=True)
        self.num_perm = num_perm
        self.block = block

    def signature(self, shingle_hashes: np.ndarray) -> np.ndarray:
        """The MinHash signature (uint64, ``num_perm`` values) of a set of 32-bit shingle hashes."""
        signature = np.full(self.num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
        x = shingle_hashes.astype(np.uint64)
        with np.errstate(over="ignore"):
            for start in range(0, len(x), self.block):          # bounded memory for long documents
                values = _fmix64(x[start:start + self.block, None] ^ self.seeds)   # (block, num_perm)
                np.minimum(signature, values.min(axis=0), out=signature)
        return signature


def jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """The Jaccard similarity estimated from two MinHash signatures: the share of equal positions."""
    return float(np.mean(sig_a == sig_b))


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """``(bands, rows)`` with ``bands × rows ≤ num_perm`` that best separate similarities at ``threshold``.

    A pair with Jaccard ``s`` becomes a candidate with probability ``1 − (1 − s^rows)^bands``;
    we minimise the area of false positives below the threshold plus false negatives above it.

    >>> lsh_params(0.8, 128)
    (9, 14)
    """
    if not 0.0 < threshold < 1.0:
        raise LanternError(f"near_threshold must be between 0 and 1 (exclusive), not {threshold}")
    step = 1e-3
    s = np.arange(0.0, 1.0, step) + step / 2                  # midpoints of a fine grid on [0, 1]
    best, best_cost = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        rows = num_perm // bands
        candidate = 1.0 - (1.0 - s ** rows) ** bands
        false_pos = np.sum(np.where(s < threshold, candidate, 0.0)) * step
        false_neg = np.sum(np.where(s >= threshold, 1.0 - candidate, 0.0)) * step
        if false_pos + false_neg < best_cost:
            best, best_cost = (bands, rows), false_pos + false_neg
    return best


class NearDedup:
    """Keep a document unless an earlier kept one has estimated Jaccard ≥ ``threshold``.

    >>> keep = NearDedup(threshold=0.7, num_perm=128, shingle_words=3)
    >>> base = "it was the best of times it was the worst of times it was the age of wisdom"
    >>> keep(base), keep(base.replace("wisdom", "foolishness")), keep("a completely different sentence here")
    (True, False, True)
    """

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, shingle_words: int = 5, seed: int = 1234) -> None:
        self.threshold = threshold
        self.shingle_words = shingle_words
        self.hasher = MinHasher(num_perm, seed)
        self.bands, self.rows = lsh_params(threshold, num_perm)
        # band key -> index of a kept document, or a list of indexes when several share the key
        self.buckets: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]
        self._signatures = np.zeros((1024, num_perm), dtype=np.uint32)   # low 32 bits, one row per kept doc
        self.count = 0

    @property
    def kept(self) -> np.ndarray:
        """The (low 32 bits of the) signatures of the kept documents, one row each."""
        return self._signatures[:self.count]

    def __call__(self, text: str) -> bool:
        signature = self.hasher.signature(shingles(text, self.shingle_words))
        short = signature.astype(np.uint32)
        keys = [hash(signature[i * self.rows:(i + 1) * self.rows].tobytes()) for i in range(self.bands)]
        checked: set[int] = set()
        for band, key in enumerate(keys):
            found = self.buckets[band].get(key)
            for index in (() if found is None else [found] if isinstance(found, int) else found):
                if index not in checked:
                    checked.add(index)
                    if jaccard(short, self._signatures[index]) >= self.threshold:
                        return False
        if self.count == len(self._signatures):                            # grow by doubling
            self._signatures = np.concatenate([self._signatures, np.zeros_like(self._signatures)])
        index = self.count
        self._signatures[index] = short
        self.count += 1
        for band, key in enumerate(keys):
            found = self.buckets[band].get(key)
            if found is None:
                self.buckets[band][key] = index
            elif isinstance(found, int):
                self.buckets[band][key] = [found, index]
            else:
                found.append(index)
        return True
