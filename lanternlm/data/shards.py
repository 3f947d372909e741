"""Token shards: documents in, flat uint16/uint32 arrays + a JSON manifest out; and back.

The layout of a shards folder (the contract every reader relies on)::

    manifest.json        {"format": "lanternlm-shards/1", "tokenizer": {...}, "dtype": "uint16",
                          "splits": {"train": {...}, "val": {...}}, "sources": [...], "report": {...}}
    tokenizer.json       the tokenizer the ids belong to (its fingerprint is in the manifest)
    train_00000.bin ...  little-endian token ids, shard after shard
    val_00000.bin ...

Every document is written as ``[eot_id] + tokens(document)``: the separator comes
first and doubles as a beginning-of-document marker. Ordinary text never encodes
to ``eot_id`` (special-token strings in text are plain text), so the number of
``eot_id`` in a shard is the number of documents that *start* in it, which is what
the manifest's per-shard ``documents`` counts. A document can continue into the
next shard. ``bytes`` per split is the UTF-8 size of its documents (for bits per byte).

Which split a document goes to depends only on its text (:func:`is_validation`),
so the split is stable when the corpus grows or is reordered. Writing streams:
texts are tokenized in batches of about ``batch_bytes`` and appended to the open
shard; memory does not grow with the corpus. Everything is written into a hidden
``.partial-*`` folder inside the output first and moved in only when complete (the
manifest last, atomically: a folder without one is unfinished), so a failed run (a bad
source line, a typo in a path) leaves the folder's earlier shards as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import atomic_write_text, file_in, read_json
from ..errors import LanternError
from ..log import logger

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

FORMAT = "lanternlm-shards/1"
SPLITS = ("train", "val")
_SHARD_FILE = re.compile(r"^(?:train|val)_\d{5}\.bin$")
_STAGING = ".partial-"  # the folder inside the output where a ShardWriter writes before swapping in


def dtype_for(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds every id: uint16 up to 65,536 tokens, else uint32.

    >>> dtype_for(50257).name, dtype_for(65536).name, dtype_for(65537).name
    ('uint16', 'uint16', 'uint32')
    """
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def is_validation(text: str, fraction: float) -> bool:
    """Whether a document belongs to the validation split: its hash, read as a number in [0, 1), is below ``fraction``.

    >>> is_validation("any text", 0.0), is_validation("any text", 1.0)
    (False, True)
    >>> sum(is_validation(f"document {i}", 0.25) for i in range(10_000))   # about 2,500
    2449
    """
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") < fraction * 2.0 ** 64


class _SplitWriter:
    """Appends token arrays to ``SPLIT_00000.bin``, ``SPLIT_00001.bin``, ... of ``shard_tokens`` each."""

    def __init__(self, out_dir: Path, split: str, dtype: np.dtype, shard_tokens: int, eot_id: int) -> None:
        self.out_dir, self.split, self.dtype = out_dir, split, dtype
        self.shard_tokens, self.eot_id = shard_tokens, eot_id
        self.shards: list[dict] = []
        self.documents = self.bytes = 0
        self._file = None
        self._hash = None

    def write(self, ids: np.ndarray) -> None:
        while len(ids):
            if self._file is None:
                name = f"{self.split}_{len(self.shards):05d}.bin"
                self._file = open(self.out_dir / name, "wb")
                self._hash = hashlib.sha256()
                self.shards.append({"file": name, "tokens": 0, "documents": 0, "sha256": ""})
            shard = self.shards[-1]
            piece = ids[: self.shard_tokens - shard["tokens"]]
            data = piece.astype(self.dtype, copy=False).tobytes()
            self._file.write(data)
            self._hash.update(data)
            shard["tokens"] += len(piece)
            shard["documents"] += int(np.count_nonzero(piece == self.eot_id))
            ids = ids[len(piece):]
            if shard["tokens"] == self.shard_tokens:
                self._close_shard()

    def _close_shard(self) -> None:
        if self._file is not None:
            self._file.close()
            self.shards[-1]["sha256"] = self._hash.hexdigest()
            self._file = None

    def close(self) -> dict:
        self._close_shard()
        return {"shards": self.shards, "tokens": sum(s["tokens"] for s in self.shards),
                "documents": self.documents, "bytes": self.bytes}


class ShardWriter:
    """Write documents into a shards folder; :meth:`finish` writes the manifest. Use as::

        with ShardWriter(out_dir, tokenizer) as writer:
            for text in texts:
                writer.add(text)
            manifest = writer.finish(sources=[...], report={...})   # extra keys go into the manifest
    """

    def __init__(self, out_dir: str | os.PathLike, tokenizer: "Tokenizer", *, shard_tokens: int = 10_000_000,
                 val_fraction: float = 0.02, batch_bytes: int = 1 << 20) -> None:
        if shard_tokens < 1:
            raise LanternError(f"shard_tokens must be at least 1, not {shard_tokens}")
        if not 0.0 <= val_fraction < 1.0:
            raise LanternError(f"val_fraction must be in [0, 1), not {val_fraction}")
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise LanternError(f"{self.out_dir}: is a file; give a folder for the shards")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # Everything is written here first; the old shards stay until finish() swaps the new ones in.
        self.staging = Path(tempfile.mkdtemp(prefix=_STAGING, dir=self.out_dir))
        self.tokenizer = tokenizer
        self.dtype = dtype_for(tokenizer.vocab_size)
        self.eot_id = tokenizer.eot_id
        self.val_fraction = val_fraction
        self.batch_bytes = batch_bytes
        self.writers = {split: _SplitWriter(self.staging, split, self.dtype, shard_tokens, self.eot_id)
                        for split in SPLITS}
        self._batch: list[str] = []
        self._batch_size = 0

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        for writer in self.writers.values():
            writer._close_shard()
        shutil.rmtree(self.staging, ignore_errors=True)  # unfinished: the folder keeps its old shards

    def add(self, text: str) -> None:
        """Queue one document; tokenization happens in batches."""
        self._batch.append(text)
        self._batch_size += len(text)
        if self._batch_size >= self.batch_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        encoded = self.tokenizer.encode_batch(self._batch)
        per_split: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
        for text, ids in zip(self._batch, encoded):
            split = "val" if is_validation(text, self.val_fraction) else "train"
            writer = self.writers[split]
            writer.documents += 1
            writer.bytes += len(text.encode("utf-8"))
            row = np.empty(len(ids) + 1, dtype=np.uint32)
            row[0], row[1:] = self.eot_id, ids
            per_split[split].append(row)
        for split, arrays in per_split.items():
            if arrays:
                self.writers[split].write(np.concatenate(arrays))
        self._batch, self._batch_size = [], 0

    def finish(self, **extra: Any) -> dict:
        """Flush, close the shards, save the tokenizer, then write ``manifest.json`` (atomically, last)."""
        self._flush()
        splits = {split: writer.close() for split, writer in self.writers.items()}
        self.tokenizer.save(self.staging / "tokenizer.json")
        manifest = {
            "format": FORMAT,
            "tokenizer": {"file": "tokenizer.json", "fingerprint": self.tokenizer.fingerprint(),
                          "vocab_size": self.tokenizer.vocab_size, "eot_id": self.eot_id},
            "dtype": self.dtype.name,
            "splits": splits,
            **extra,
        }
        if splits["val"]["documents"] == 0 and self.val_fraction > 0:
            logger.warning("%s: no document fell into the validation split (val_fraction=%s, %d documents); "
                           "use more, smaller documents (e.g. --text-split chunk) or a larger --val-fraction",
                           self.out_dir, self.val_fraction, splits["train"]["documents"])
        atomic_write_text(self.staging / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        _swap_in(self.staging, self.out_dir)
        return manifest


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Replace the shards, tokenizer and manifest of ``out_dir`` by those written in
    ``staging`` (renames on one file system, the manifest last); other files stay."""
    (out_dir / "manifest.json").unlink(missing_ok=True)  # unfinished until the new one lands
    for stale in out_dir.iterdir():
        if _SHARD_FILE.match(stale.name):
            stale.unlink()
        elif stale.name.startswith(_STAGING) and stale != staging:  # left by an interrupted run
            shutil.rmtree(stale, ignore_errors=True)
    for new in sorted(staging.iterdir(), key=lambda p: p.name == "manifest.json"):
        os.replace(new, out_dir / new.name)
    staging.rmdir()


# --------------------------------------------------------------------------- reading

#: Tokens at the start and the end of each shard whose ids are checked when it is opened.
ID_CHECK_TOKENS = 1 << 16


def check_ids(ids: np.ndarray, vocab_size: int, where: str, offset: int = 0) -> None:
    """Raise :class:`LanternError` naming ``where`` (and the position, from ``offset``) when an
    id of ``ids`` is outside the vocabulary: the shard is corrupt.

    >>> check_ids(np.array([3, 1, 9]), 8, "train_00000.bin")
    Traceback (most recent call last):
    ...
    lanternlm.errors.LanternError: train_00000.bin: token id 9 at position 2 is outside the tokenizer's vocabulary (0..7); the shard is corrupt: check the folder with `lantern data check` and prepare the data again
    """
    if ids.size and int(ids.max()) >= vocab_size:
        flat = np.asarray(ids).reshape(-1)
        at = int(np.argmax(flat >= vocab_size))
        raise LanternError(f"{where}: token id {int(flat[at])} at position {offset + at} is outside the tokenizer's "
                           f"vocabulary (0..{vocab_size - 1}); the shard is corrupt: check the folder with "
                           "`lantern data check` and prepare the data again")


def _ids(file: Path, dtype: np.dtype, tokens: int) -> np.ndarray:
    """The ids of a shard file, memory-mapped read-only (an empty shard cannot be mapped)."""
    return np.memmap(file, dtype=dtype, mode="r", shape=(tokens,)) if tokens else np.zeros(0, dtype)


class ShardSet:
    """A shards folder, checked on opening: manifest, tokenizer fingerprint, every shard's size."""

    def __init__(self, directory: Path, manifest: dict) -> None:
        self.directory = directory
        self.manifest = manifest
        self.dtype = np.dtype(manifest["dtype"]).newbyteorder("<")

    def tokenizer(self) -> "Tokenizer":
        """Load ``tokenizer.json``; an error if it is not the one the shards were written with."""
        from ..tokenizer import Tokenizer

        info = self.manifest["tokenizer"]
        tokenizer = Tokenizer.load(file_in(self.directory, info.get("file"), str(self.directory / "manifest.json")))
        if tokenizer.fingerprint() != info["fingerprint"]:
            raise LanternError(f"{self.directory / info['file']}: tokenizer fingerprint {tokenizer.fingerprint()[:16]}… "
                               f"does not match the manifest's {info['fingerprint'][:16]}…; the file was replaced "
                               "after the shards were written: prepare the data again")
        return tokenizer

    def _split(self, name: str) -> dict:
        splits = self.manifest["splits"]
        if name not in splits:
            raise LanternError(f"{self.directory}: no split {name!r} (splits: {', '.join(splits)})")
        return splits[name]

    def split(self, name: str) -> list[np.memmap]:
        """The shards of split ``name`` as read-only memory maps (one flat array each)."""
        return [_ids(self.directory / s["file"], self.dtype, s["tokens"]) for s in self._split(name)["shards"]]

    def tokens(self, name: str) -> int:
        return int(self._split(name)["tokens"])

    def bytes(self, name: str) -> int:
        return int(self._split(name)["bytes"])

    def documents(self, name: str) -> int:
        return int(self._split(name)["documents"])

    def describe(self) -> str:
        """One line per split: shards, documents, tokens (what ``lantern data check`` prints)."""
        return "\n".join(f"{name:5}  {len(split['shards'])} shard(s)  {split['documents']:>9,} documents  "
                         f"{split['tokens']:>12,} tokens" for name, split in self.manifest["splits"].items())

    def verify(self) -> None:
        """Recompute every shard's sha256 and compare with the manifest, and check every id
        against the vocabulary (reads everything)."""
        from .download import sha256_file

        vocab = self.manifest["tokenizer"]["vocab_size"]
        for split in self.manifest["splits"].values():
            for shard in split["shards"]:
                ids = _ids(self.directory / shard["file"], self.dtype, shard["tokens"])
                for start in range(0, len(ids), 1 << 24):
                    check_ids(ids[start:start + (1 << 24)], vocab, str(self.directory / shard["file"]), start)
                actual = sha256_file(self.directory / shard["file"])
                if actual != shard["sha256"]:
                    raise LanternError(f"{self.directory / shard['file']}: sha256 {actual[:16]}… does not match "
                                       f"the manifest's {shard['sha256'][:16]}…; the shard is corrupt: "
                                       "prepare the data again")


def check_manifest(manifest: dict, path: Path) -> None:
    """Raise :class:`LanternError` naming ``path`` and the field when the manifest does not
    have the layout of the module docstring, or its counts disagree (a split's tokens and
    documents are its shards' sums; the ids fit the dtype)."""
    def field(where: str, value: Any, kind: type | tuple, what: str) -> Any:
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            raise LanternError(f"{path}: field {where} is {value!r:.60}, expected {what}")
        return value

    tok = field("'tokenizer'", manifest.get("tokenizer"), dict, "an object")
    for key, kind, what in (("file", str, "a file name"), ("fingerprint", str, "a hex digest"),
                            ("vocab_size", int, "a count"), ("eot_id", int, "a token id")):
        field(f"'tokenizer.{key}'", tok.get(key), kind, what)
    if manifest.get("dtype") not in ("uint16", "uint32"):
        raise LanternError(f"{path}: field 'dtype' is {manifest.get('dtype')!r}, expected 'uint16' or 'uint32'")
    if tok["vocab_size"] > np.iinfo(manifest["dtype"]).max + 1 or tok["eot_id"] >= tok["vocab_size"]:
        raise LanternError(f"{path}: field 'tokenizer': vocab_size {tok['vocab_size']} and eot_id {tok['eot_id']} "
                           f"do not fit {manifest['dtype']} ids")
    for name, split in field("'splits'", manifest.get("splits"), dict, "an object").items():
        field(f"'splits.{name}'", split, dict, "an object")
        shards = field(f"'splits.{name}.shards'", split.get("shards"), list, "a list")
        for i, shard in enumerate(shards):
            field(f"'splits.{name}.shards[{i}]'", shard, dict, "an object")
            for key, kind, what in (("file", str, "a file name"), ("tokens", int, "a count"),
                                    ("documents", int, "a count"), ("sha256", str, "a hex digest")):
                field(f"'splits.{name}.shards[{i}].{key}'", shard.get(key), kind, what)
        for key in ("tokens", "documents", "bytes"):
            field(f"'splits.{name}.{key}'", split.get(key), int, "a count")
        for key in ("tokens", "documents"):
            if split[key] != sum(shard[key] for shard in shards):
                raise LanternError(f"{path}: field 'splits.{name}.{key}' is {split[key]}, but its shards hold "
                                   f"{sum(shard[key] for shard in shards)}")


def open_shards(directory: str | os.PathLike, expect_tokenizer: "Tokenizer | None" = None,
                verify: bool = False) -> ShardSet:
    """Open a shards folder written by :class:`ShardWriter` (or ``lantern data prepare``).

    Checks the manifest, that every shard exists with exactly ``tokens × itemsize``
    bytes, and (``expect_tokenizer``) that the shards were made with that tokenizer;
    ``verify=True`` also recomputes every sha256. Problems raise LanternError.
    """
    directory = Path(directory)
    path = directory / "manifest.json"
    if not path.exists():
        raise LanternError(f"{directory}: no manifest.json; make shards with `lantern data prepare SOURCES --out "
                           f"{directory}` (a folder without a manifest is unfinished)")
    manifest = read_json(path, FORMAT)
    check_manifest(manifest, path)
    if expect_tokenizer is not None and expect_tokenizer.fingerprint() != manifest["tokenizer"]["fingerprint"]:
        raise LanternError(
            f"{path}: tokenizer mismatch: the shards were made with tokenizer "
            f"{manifest['tokenizer']['fingerprint'][:16]}… (vocab {manifest['tokenizer']['vocab_size']}), "
            f"but this one is {expect_tokenizer.fingerprint()[:16]}… (vocab {expect_tokenizer.vocab_size}); "
            "prepare the data with the model's tokenizer (--tokenizer)")
    shards = ShardSet(directory, manifest)
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            file = file_in(directory, shard["file"], str(path))
            if not file.exists():
                raise LanternError(f"{file}: shard listed in {path} is missing")
            expected = shard["tokens"] * shards.dtype.itemsize
            if file.stat().st_size != expected:
                raise LanternError(f"{file}: {file.stat().st_size} bytes, but the manifest says {shard['tokens']} "
                                   f"{manifest['dtype']} tokens = {expected} bytes; the shard is truncated or "
                                   "corrupt: prepare the data again")
            if shard["tokens"]:  # cheap: the ids at both ends (the loader checks every batch it reads)
                ids = _ids(file, shards.dtype, shard["tokens"])
                tail = max(0, len(ids) - ID_CHECK_TOKENS)
                check_ids(ids[:ID_CHECK_TOKENS], manifest["tokenizer"]["vocab_size"], str(file))
                check_ids(ids[tail:], manifest["tokenizer"]["vocab_size"], str(file), tail)
    if verify:
        shards.verify()
    return shards
