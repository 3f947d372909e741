"""HTTP(S) downloads into a cache: sha256-verified, resumable, atomic.

``download(url, sha256=...)`` is the one function. It keeps files under
``<cache>/downloads/``, where ``<cache>`` is :func:`cache_dir` (the ``cache_dir``
argument, else ``$LANTERN_HOME``, else ``~/.cache/lanternlm``), under a name keyed by
the whole URL (:func:`filename_for`). The life of one file::

    NAME.part   bytes received so far; a later call resumes it with an HTTP Range request
    NAME        the finished file, renamed from NAME.part only after its checksum matched

So the cache never holds a corrupt finished file: a checksum mismatch deletes the
``.part`` and raises. When no checksum is pinned, the sha256 of the first complete
download is recorded beside the file (``NAME.sha256``) and every later use is
verified against it (trust on first use); a warning says so.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import LanternError
from ..log import logger, progress

CHUNK_BYTES = 1 << 16


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The lanternlm cache: ``override``, else ``$LANTERN_HOME``, else ``~/.cache/lanternlm``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("LANTERN_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lanternlm"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks (flat memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def filename_for(url: str) -> str:
    """The cache file name of ``url``: a hash of the whole URL, then its last path segment
    (made safe) so the name still says what it is. Two URLs ending in the same file name
    never share a cache entry.

    >>> filename_for("https://example.org/data/input.txt?raw=1")
    '93ec886d43dc2657-input.txt'
    >>> filename_for("https://example.org/other/input.txt")
    '0841e426cb9754bc-input.txt'
    >>> filename_for("https://example.org/")
    '8198d1bac40a1033-download'
    """
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(urllib.parse.urlparse(url).path).name).lstrip(".")
    return f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name or 'download'}"


def download(url: str, sha256: str | None = None, *, cache: str | os.PathLike | None = None,
             filename: str | None = None, size: int | None = None, timeout: float = 60.0) -> Path:
    """Fetch ``url`` into the cache and return the path of the verified file.

    ``sha256``: the expected hex digest (strongly recommended). ``size``: the expected
    length in bytes, checked before hashing when given. A finished file already in
    the cache is reused after its checksum is verified. A ``.part`` file left by an
    interrupted download is resumed with ``Range: bytes=N-``; a server that ignores
    the range (answers 200) makes the download restart from zero.
    """
    target_dir = cache_dir(cache) / "downloads"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / (filename or filename_for(url))
    part = target.with_name(target.name + ".part")
    recorded = target.with_name(target.name + ".sha256")
    expected = (sha256 or "").lower() or (recorded.read_text().strip() if recorded.exists() else None)

    if target.exists():
        actual = sha256_file(target)
        if expected is None or actual == expected:
            logger.debug("cache hit: %s", target)
            if expected is None:
                recorded.write_text(actual + "\n")
            return target
        logger.warning("%s: cached file has sha256 %s, expected %s; downloading again", target, actual, expected)
        target.unlink()

    _fetch_into(url, part, size=size, timeout=timeout)
    if size is not None and part.stat().st_size != size:
        got = part.stat().st_size
        part.unlink()
        raise LanternError(f"{url}: downloaded {got} bytes, expected {size}; nothing was kept, try again")
    actual = sha256_file(part)
    if expected is not None and actual != expected:
        part.unlink()
        raise LanternError(f"{url}: sha256 mismatch (got {actual}, expected {expected}); "
                           "the corrupt download was deleted, nothing was cached")
    if expected is None:
        logger.warning("%s: no pinned checksum, trusting on first use: recorded sha256 %s in %s "
                       "(later uses are verified against it)", url, actual, recorded)
        recorded.write_text(actual + "\n")
    os.replace(part, target)
    return target


def _fetch_into(url: str, part: Path, *, size: int | None, timeout: float) -> None:
    """Append the bytes of ``url`` to ``part``, resuming from its current length."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "lanternlm"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:          # range past the end: the .part is already complete
            return
        raise LanternError(f"{url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise LanternError(f"{url}: cannot download ({err}); check the address and your network") from err
    with response:
        if have and response.status == 206:
            logger.info("resuming %s at byte %d", url, have)
            mode = "ab"
        else:
            have, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else size
        with open(part, mode) as fh, progress(total=total, initial=have, desc=part.name[:-5],
                                              unit="B", unit_scale=True, unit_divisor=1024) as bar:
            try:
                for block in iter(lambda: response.read(CHUNK_BYTES), b""):
                    fh.write(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException) as err:
                raise LanternError(f"{url}: connection lost after {fh.tell()} bytes ({err!r}); "
                                   f"run again to resume from {part}") from err
            if total is not None and length is not None and fh.tell() != total:
                raise LanternError(f"{url}: connection closed after {fh.tell()} of {total} bytes; "
                                   f"run again to resume from {part}")
