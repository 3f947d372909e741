"""The one place the library talks to people: a logger and progress bars.

Library code never calls ``print``; it logs through :data:`logger` and wraps long
loops in :func:`progress`. The CLI decides how loud to be (``set_verbosity``).
"""

from __future__ import annotations

import logging
import sys
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

logger = logging.getLogger("lanternlm")
_state = {"quiet": False}


def set_verbosity(quiet: bool = False, debug: bool = False) -> None:
    """Configure the ``lanternlm`` logger: INFO by default, WARNING when quiet."""
    _state["quiet"] = quiet
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)


#: Seconds between the plain lines that stand for a bar when stderr is not a terminal.
PLAIN_EVERY_S = 30.0


class _Lines:
    """A stream for tqdm that turns each redraw into one plain line (for logs and pipes).

    >>> import io
    >>> out = io.StringIO()
    >>> _Lines(out).write("\\rtrain:  50%|#####     | 5/10")
    >>> out.getvalue()
    'train:  50%|#####     | 5/10\\n'
    """

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").rstrip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable: Iterable[T] | None = None, *, total: float | None = None,
             desc: str = "", unit: str = "it", **kwargs) -> "tqdm[T]":
    """A progress bar on stderr (silent when quiet). Use as an iterator or with ``update``.

    On a terminal it redraws in place; elsewhere (a log file, CI) it writes a plain line
    every :data:`PLAIN_EVERY_S` seconds and one at the end."""
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=_state["quiet"],
                    dynamic_ncols=True, file=sys.stderr, **kwargs)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=_state["quiet"], file=_Lines(sys.stderr),
                mininterval=PLAIN_EVERY_S, maxinterval=PLAIN_EVERY_S, ascii=True, ncols=100, **kwargs)


def iterate(iterable: Iterable[T], **kwargs) -> Iterator[T]:
    """Shorthand: ``for x in iterate(xs, desc=...)`` with a bar."""
    yield from progress(iterable, **kwargs)
