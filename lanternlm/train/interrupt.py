"""Stopping a training run cleanly on SIGINT (Ctrl-C) or SIGTERM (a scheduler's notice).

While a function decorated with :func:`stop_on_signals` runs (the training loop), the
first such signal does not interrupt anything: it is only noted, and the loop asks
:func:`stop_requested` after every step, so it finishes the step, writes a checkpoint and
stops (then raises :class:`KeyboardInterrupt`, which the CLI reports in one line). A
second signal interrupts at once. Outside the main thread (where Python cannot install
handlers) signals behave as usual.
"""

from __future__ import annotations

import functools
import signal
import threading
from typing import Callable, TypeVar

from ..log import logger

F = TypeVar("F", bound=Callable)
SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[str] = []  # names of the signals noted while the innermost guard is active


def stop_requested() -> str | None:
    """The name of the signal that asked the running loop to stop (``"SIGINT"``), or None."""
    return _received[0] if _received else None


def _note(signum: int, frame) -> None:
    if _received:  # asked twice: stop now
        raise KeyboardInterrupt(f"{signal.Signals(signum).name} received twice")
    _received.append(signal.Signals(signum).name)
    logger.warning(f"{_received[0]} received: stopping after this step with a checkpoint "
                   f"(send it again to stop at once, without one)")


def stop_on_signals(fn: F) -> F:
    """Run ``fn`` with SIGINT and SIGTERM noted for :func:`stop_requested` (see the module doc)."""
    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return fn(*args, **kwargs)
        previous = {sig: signal.signal(sig, _note) for sig in SIGNALS}
        _received.clear()
        try:
            return fn(*args, **kwargs)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            _received.clear()
    return guarded  # type: ignore[return-value]
