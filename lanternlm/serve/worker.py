"""One thread owns one run's engine: request handlers only queue work and read its events.

::

    handler ──submit(request, sink)──►  inbox  ──►  worker thread:  scheduler.step() ...
    handler ◄──sink(events | error)───────────────────────────────┘   (one call per request per step)

The worker drains its inbox (new requests, cancellations, jobs such as scoring a prompt)
before every step, so a request joins the running batch at the next token and a
cancelled one leaves it at once, freeing its rows. A step's events are grouped by
request, and each request's sink is called once per step with its list — from the
worker thread: the sink must only hand the list over. The last call of a request is its
``None``. An asyncio front-end gives a :class:`LoopSink`: the worker then wakes each event
loop once per step for all of its requests (waking a loop from another thread is a
write to its self-pipe; one per request per step cost a tenth of the worker's time at 16
streams). A request submitted with ``whole=True`` (one nobody reads token by token: not
streamed, no stop strings to look for) gets all its events in one call when it ends. The
front-end's work on each delivery runs under the GIL, so it lengthens the engine's step
by about as much (measured: 1 ms of it per step made a 16-row step 1.1-1.9 ms longer);
waking it once per request instead of once per step gives that time back to decoding.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any, Callable

from ..engine import Engine, Request, Scheduler, TokenEvent
from ..errors import LanternError
from ..log import logger

#: What a sink receives: a step's events of its request, an error, or None (the request is over).
Sink = Callable[["list[TokenEvent] | Exception | None"], None]


class LoopSink:
    """A sink that puts each item on an :class:`asyncio.Queue` of the event loop ``loop``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        self.loop, self.queue = loop, queue

    def __call__(self, item) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


def _put_all(items: list[tuple[asyncio.Queue, Any]]) -> None:
    for queue, item in items:
        queue.put_nowait(item)


class Busy(LanternError):
    """The queue is full: the client should retry later (HTTP 429)."""


class Ticket:
    """A request handed to a :class:`Worker`; :meth:`Worker.cancel` takes it back."""

    def __init__(self, request: Request, sink: Sink, whole: bool = False) -> None:
        self.request, self.sink = request, sink
        self.held: list[TokenEvent] | None = [] if whole else None  # events kept for one delivery at the end
        self.id: int | None = None  # the scheduler's request id, once submitted
        self.done: set[int] = set()  # samples finished or cancelled
        self.cancelled = False
        self.admitted = False  # left the queue: its rows run, or it ended while waiting


class Worker:
    """A thread that runs one :class:`~lanternlm.engine.Scheduler` of ``max_batch`` rows.

    At most ``max_queue`` requests wait for rows; :meth:`submit` raises :class:`Busy` beyond.
    """

    def __init__(self, engine: Engine, *, max_batch: int = 16, max_queue: int = 64, name: str = "engine") -> None:
        if not isinstance(max_queue, int) or max_queue < 0:
            raise LanternError(f"max_queue={max_queue!r}: must be an integer >= 0")
        self.engine, self.max_batch, self.max_queue = engine, max_batch, max_queue
        self.scheduler = Scheduler(engine, max_batch)
        self._wake = threading.Condition()
        self._inbox: list[tuple[str, Any]] = []
        self._running: dict[int, Ticket] = {}  # by scheduler request id
        self._queued = 0  # submitted tickets not yet admitted to rows (inbox + scheduler's waiting)
        self._outbox: list[tuple[Sink, Any]] = []  # sink calls of this turn of the loop, in order
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"lantern-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ any thread

    @property
    def load(self) -> dict[str, int]:
        """Rows running and requests waiting, for ``/health``."""
        return {"running": self.scheduler.num_active, "waiting": self._queued, "max_batch": self.max_batch,
                "max_queue": self.max_queue}

    def submit(self, request: Request, sink: Sink, whole: bool = False) -> Ticket:
        """Queue ``request``; its events go to ``sink``, each step's (or with ``whole``, all
        of them in one list when it ends). Raises :class:`Busy` when ``max_queue``
        requests already wait and no row is free."""
        with self._wake:
            free = self.max_batch - self.scheduler.num_active
            if self._queued >= self.max_queue + max(free, 0):
                raise Busy(f"the server is busy: {self._queued} requests wait for {self.max_batch} rows "
                           f"(queue limit {self.max_queue}); retry later")
            ticket = Ticket(request, sink, whole)
            self._queued += 1
            self._post("submit", ticket)
        return ticket

    def cancel(self, ticket: Ticket, sample: int | None = None) -> None:
        """Stop ``ticket``'s request (only its sample ``sample`` if given, e.g. at a stop
        string): the rows are freed before the next step and produce no more events."""
        with self._wake:
            self._post("cancel", (ticket, sample))

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn()`` in the worker thread between two steps (e.g. a forward pass that
        must not race the engine's); its result or exception comes back in the future."""
        future: Future = Future()
        with self._wake:
            self._post("call", (fn, future))
        return future

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join()

    def _post(self, kind: str, item: Any) -> None:
        if self._closed:
            raise LanternError("the engine worker has stopped")
        self._inbox.append((kind, item))
        self._wake.notify()

    # ------------------------------------------------------------------ the worker thread

    def _loop(self) -> None:
        try:
            while True:
                with self._wake:
                    while not self._inbox and self.scheduler.idle and not self._closed:
                        self._wake.wait()
                    if self._closed:
                        break
                    work, self._inbox = self._inbox, []
                for kind, item in work:
                    getattr(self, f"_{kind}")(item)
                if not self.scheduler.idle:
                    self._step()
                self._flush()
        finally:
            for ticket in list(self._running.values()):
                self._finish(ticket, LanternError("the server is shutting down"))
            self._flush()
            self.scheduler.close()

    def _send(self, sink: Sink, item: Any) -> None:
        self._outbox.append((sink, item))

    def _flush(self) -> None:
        """Make this turn's sink calls: a :class:`LoopSink`'s items go to their loop in one
        wake-up per loop, in order; other sinks are called directly."""
        out, self._outbox = self._outbox, []
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for sink, item in out:
            if isinstance(sink, LoopSink):
                by_loop.setdefault(sink.loop, []).append((sink.queue, item))
            else:
                sink(item)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, items)
            except RuntimeError:  # the loop has closed: nobody is waiting for these
                pass

    def _submit(self, ticket: Ticket) -> None:
        try:
            ticket.id = self.scheduler.submit(ticket.request)
        except LanternError as err:
            self._finish(ticket, err)
            return
        self._running[ticket.id] = ticket

    def _cancel(self, item: tuple[Ticket, int | None]) -> None:
        ticket, sample = item
        if ticket.cancelled or ticket.id not in self._running:  # finished already (or refused)
            return
        if sample is None:
            ticket.cancelled = True
            self.scheduler.cancel(ticket.id)
            self._finish(ticket)
        elif sample not in ticket.done:
            self.scheduler.cancel(ticket.id, sample)
            ticket.done.add(sample)
            if len(ticket.done) == ticket.request.n:
                self._finish(ticket)

    def _call(self, job: tuple[Callable[[], Any], Future]) -> None:
        fn, future = job
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn())
            except BaseException as err:  # handed to the caller
                future.set_exception(err)

    def _step(self) -> None:
        try:
            events = self.scheduler.step()
        except Exception as err:  # e.g. out of memory: fail what runs, keep serving
            logger.error("engine step failed: %s", err)
            for ticket in list(self._running.values()):
                self.scheduler.cancel(ticket.id)
                self._finish(ticket, err)
            return
        by_request: dict[int, list[TokenEvent]] = {}
        for event in events:
            by_request.setdefault(event.request, []).append(event)
        for request, batch in by_request.items():
            ticket = self._running.get(request)
            if ticket is None:
                continue
            self._admitted(ticket)
            batch = [e for e in batch if e.sample not in ticket.done]
            if ticket.held is None:
                self._send(ticket.sink, batch)
            else:
                ticket.held += batch
            ticket.done.update(e.sample for e in batch if e.finish_reason is not None)
            if len(ticket.done) == ticket.request.n:
                self._finish(ticket)

    def _admitted(self, ticket: Ticket) -> None:
        """The ticket left the queue (its rows run, or it ended while waiting)."""
        if not ticket.admitted:
            ticket.admitted = True
            with self._wake:
                self._queued -= 1

    def _finish(self, ticket: Ticket, error: Exception | None = None) -> None:
        self._running.pop(ticket.id, None)
        self._admitted(ticket)
        if ticket.held:
            self._send(ticket.sink, ticket.held)
            ticket.held = []
        if error is not None:
            self._send(ticket.sink, error)
        self._send(ticket.sink, None)
