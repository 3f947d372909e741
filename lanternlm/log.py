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


def progress(iterable: Iterable[T] | None = None, *, total: float | None = None,
             desc: str = "", unit: str = "it", **kwargs) -> "tqdm[T]":
    """A progress bar on stderr (silent when quiet). Use as an iterator or with ``update``."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=_state["quiet"],
                dynamic_ncols=True, file=sys.stderr, **kwargs)


def iterate(iterable: Iterable[T], **kwargs) -> Iterator[T]:
    """Shorthand: ``for x in iterate(xs, desc=...)`` with a bar."""
    yield from progress(iterable, **kwargs)
