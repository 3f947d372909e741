"""Every stage's batches, in one place: token windows for pretraining, padded chat rows for
fine-tuning, and packed chat rows (the alternative to padding, measured by
``bench/thinking.py``).

**Token windows** (:class:`BatchLoader`, :func:`eval_batches`). The training loader cuts
every shard into non-overlapping windows of ``block_size + 1`` tokens, shuffles the
windows with a generator seeded by ``(seed, epoch)`` and deals them out as *global
batches* of ``batch_size * world_size`` windows. Process ``rank`` takes rows
``[rank * batch_size, (rank + 1) * batch_size)`` of every global batch, so N processes
together consume exactly the windows one process with a batch of ``N * batch_size``
would, in the same order. Each epoch starts the windows at a different offset (drawn
from the same generator, ``0 <= offset < block_size``) so that later epochs do not
repeat the exact same cuts of the text. The validation iterator is fixed: contiguous
windows from the start of the split covering its first ``max_tokens`` tokens.

**Chat rows** (:class:`ChatBatches`, :func:`chat_eval_batches`). One rendered
conversation per row, right-padded (:func:`collate`), rows of similar length batched
together (:func:`bucketed_batches`) so that little padding is computed. They are dealt
to processes like the windows: an epoch is planned in global batches of ``batch_size *
world_size`` rows and rank r takes its slice of each. An epoch's remainder (the
``len % global batch`` conversations left after the shuffle) sits that epoch out, so
every global batch is full and no rank ever gets an empty batch; the next epoch's
shuffle leaves out others.

**Packed rows** (:func:`pack`): several conversations in one fixed-length row, each
position labelled with its conversation.

Both training streams are endless, and their position is two integers (epoch, batch
within the epoch): ``state_dict()`` / ``load_state_dict()`` carry it across a resume,
which then sees the same batches as an uninterrupted run; ``epochs_done`` says how far
they went.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..chat import Rendered
from ..errors import LanternError
from .shards import check_ids


def window_starts(lengths: Sequence[int], block_size: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(shard index, start) of every ``block_size + 1`` window, cut from ``offset`` on.

    Windows share one token at their seams (the target of the last position of
    one window is the first input of the next), never cross a shard boundary,
    and a shard's tail shorter than a window is left out.

    >>> shard, start = window_starts([10, 7], block_size=3)
    >>> shard.tolist(), start.tolist()
    ([0, 0, 0, 1, 1], [0, 3, 6, 0, 3])
    >>> window_starts([10], block_size=3, offset=2)[1].tolist()
    [2, 5]
    """
    shards, starts = [], []
    for i, length in enumerate(lengths):
        count = max(0, (int(length) - 1 - offset) // block_size)
        starts.append(offset + block_size * np.arange(count, dtype=np.int64))
        shards.append(np.full(count, i, dtype=np.int64))
    if not starts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(shards), np.concatenate(starts)


def _place(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``batch`` on ``device``; on CUDA copied from pinned memory without waiting."""
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch


def _windows(shards: Sequence[np.ndarray], shard: np.ndarray, start: np.ndarray, span: int,
             vocab_size: int | None) -> np.ndarray:
    """The windows ``shards[shard[i]][start[i]:start[i] + span]`` stacked, each id checked
    against ``vocab_size`` (a corrupt shard is an error naming it, not an IndexError later)."""
    buf = np.stack([shards[s][a:a + span] for s, a in zip(shard, start)])  # (B, span)
    if vocab_size is not None and buf.size and int(buf.max()) >= vocab_size:
        row = int(np.argmax(buf.max(axis=1) >= vocab_size))
        check_ids(buf[row], vocab_size, getattr(shards[shard[row]], "filename", None) or "a shard", int(start[row]))
    return buf


def _to_device(buf: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``block_size + 1`` tokens -> (x, y) LongTensors, y shifted by one."""
    rows = _place(torch.from_numpy(buf.astype(np.int64)), device)  # (B, T + 1)
    return rows[:, :-1], rows[:, 1:]  # (B, T), (B, T)


class BatchLoader:
    """Endless shuffled batches of ``(x, y)``, both ``LongTensor[batch_size, block_size]``.

    ``shards`` are 1-D token arrays (the memmaps of ``ShardSet.split(name)``); with
    ``vocab_size`` every batch's ids are checked to be below it.
    """

    def __init__(self, shards: Sequence[np.ndarray], batch_size: int, block_size: int, *,
                 seed: int = 0, rank: int = 0, world_size: int = 1,
                 device: str | torch.device = "cpu", vocab_size: int | None = None) -> None:
        if batch_size < 1 or block_size < 1:
            raise LanternError(f"batch_size ({batch_size}) and block_size ({block_size}) must be >= 1")
        if not 0 <= rank < world_size:
            raise LanternError(f"rank {rank} is outside world_size {world_size}")
        self.shards = list(shards)
        self.lengths = [len(s) for s in self.shards]
        self.batch_size, self.block_size = batch_size, block_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.device = torch.device(device)
        self.vocab_size = vocab_size
        self.global_batch = batch_size * world_size
        # Every epoch, even with the largest offset, must hold at least one global batch.
        worst = len(window_starts(self.lengths, block_size, offset=block_size - 1)[0])
        if worst < self.global_batch:
            raise LanternError(
                f"not enough tokens for one batch: {sum(self.lengths):,} tokens in "
                f"{len(self.shards)} shard(s) give {worst} windows of {block_size + 1} tokens, "
                f"but a global batch needs {self.global_batch} (batch_size {batch_size} x "
                f"world_size {world_size}); use a smaller batch_size or block_size, or more data")
        self.epoch, self.batch = 0, 0
        self._plan_epoch()

    def _plan_epoch(self) -> None:
        """Draw this epoch's offset and window order."""
        rng = np.random.default_rng([self.seed, self.epoch])
        offset = int(rng.integers(self.block_size))
        self._shard, self._start = window_starts(self.lengths, self.block_size, offset)
        self._order = rng.permutation(len(self._start))
        self.batches_per_epoch = len(self._order) // self.global_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batch >= self.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
            self._plan_epoch()
        first = self.batch * self.global_batch + self.rank * self.batch_size
        picks = self._order[first:first + self.batch_size]
        buf = _windows(self.shards, self._shard[picks], self._start[picks], self.block_size + 1, self.vocab_size)
        self.batch += 1
        return _to_device(buf, self.device)  # (B, T), (B, T)

    @property
    def epochs_done(self) -> float:
        """Passes over the windows so far (fractional)."""
        return self.epoch + self.batch / self.batches_per_epoch

    def state_dict(self) -> dict[str, int]:
        """Where the stream stands, plus what must match for a resume to see the same order."""
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed,
                "global_batch": self.global_batch, "block_size": self.block_size,
                "tokens": sum(self.lengths)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state``; the data, seed, global batch and block size must be the same."""
        for key in ("seed", "global_batch", "block_size", "tokens"):
            if state[key] != self.state_dict()[key]:
                raise LanternError(
                    f"cannot resume the data order: saved loader {key} is {state[key]}, "
                    f"now {self.state_dict()[key]} (the data, seed, batch_size x world_size and "
                    f"block_size must match the interrupted run)")
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._plan_epoch()


def eval_batches(shards: Sequence[np.ndarray], batch_size: int, block_size: int, max_tokens: int, *,
                 rank: int = 0, world_size: int = 1, device: str | torch.device = "cpu",
                 vocab_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed validation windows: the first ``max_tokens`` tokens, contiguous, in order.

    Window ``i`` goes to rank ``i % world_size``; the last batch of a rank may be short.
    Raises :class:`LanternError` at once (not when iterated) when the split holds no
    whole window; ids are checked against ``vocab_size`` when given.
    """
    lengths = [len(s) for s in shards]
    shard, start = window_starts(lengths, block_size)
    keep = max(1, max_tokens // block_size)
    shard, start = shard[:keep], start[:keep]
    if len(start) == 0:
        raise LanternError(f"the validation split ({sum(lengths):,} tokens) is shorter than one "
                           f"window of {block_size + 1} tokens; use a smaller block_size or more data")
    mine = np.arange(rank, len(start), world_size)
    device = torch.device(device)
    return (_to_device(_windows(shards, shard[picks], start[picks], block_size + 1, vocab_size), device)
            for picks in (mine[i:i + batch_size] for i in range(0, len(mine), batch_size)))  # (b, T), (b, T)


# --------------------------------------------------------------------------- chat rows


def bucketed_batches(lengths: Sequence[int], batch_size: int, seed: int, window: int = 32) -> list[list[int]]:
    """One epoch of full batches (lists of indices): shuffled, rows of similar length together.

    The indices are shuffled and the last ``len(lengths) % batch_size`` of them sit this
    epoch out (so every batch is full); the rest are cut into windows of ``window *
    batch_size``, each window sorted by length and cut into batches; then the batches are
    shuffled. The same arguments give the same batches.

    >>> bucketed_batches([5, 1, 4, 2, 3, 6], batch_size=2, seed=0)
    [[5, 0], [3, 1], [2, 4]]
    >>> bucketed_batches([5, 1, 4, 2, 3, 6, 7], batch_size=2, seed=0)  # index 6 sits out
    [[5, 0], [3, 1], [2, 4]]
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    order = order[:len(order) - len(order) % batch_size]
    span = window * batch_size
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(items: Sequence[Rendered], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded inputs and targets (-1 = no loss), as long as the longest item.

    >>> x, y = collate([Rendered([9, 1, 2], [0, 1, 1], "none"), Rendered([9, 3], [0, 1], "none")], pad_id=0)
    >>> x.tolist(), y.tolist()
    ([[9, 1], [9, 0]], [[1, 2], [3, -1]])
    """
    T = max(len(r.ids) for r in items) - 1
    x = torch.full((len(items), T), pad_id, dtype=torch.long)  # (B, T)
    y = torch.full((len(items), T), -1, dtype=torch.long)  # (B, T)
    for b, r in enumerate(items):
        n = len(r.ids) - 1
        x[b, :n] = torch.tensor(r.ids[:-1])
        y[b, :n] = torch.tensor(r.targets())
    return x, y


class ChatBatches:
    """Endless epochs of padded chat rows ``(x, y)``, ``LongTensor[batch_size, T]`` with T the
    longest row of the batch; rank ``rank`` of ``world_size`` takes its slice of every
    global batch (see the module docstring).

    Other items batch the same way given their ``length`` and a ``collate_fn`` that makes a
    tuple of tensors of them (preference pairs: :func:`lanternlm.train.pairs.collate_pairs`)."""

    def __init__(self, rows: Sequence[Any], batch_size: int, *, pad_id: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, device: str | torch.device = "cpu",
                 length: Callable[[Any], int] = lambda r: len(r.ids),
                 collate_fn: Callable[..., tuple[torch.Tensor, ...]] = collate) -> None:
        if batch_size < 1:
            raise LanternError(f"batch_size ({batch_size}) must be >= 1")
        if not 0 <= rank < world_size:
            raise LanternError(f"rank {rank} is outside world_size {world_size}")
        self.rows, self.batch_size, self.pad_id, self.seed = rows, batch_size, pad_id, seed
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        self.global_batch = batch_size * world_size
        if len(rows) < self.global_batch:
            raise LanternError(f"not enough conversations for one batch: {len(rows)}, but a global batch "
                               f"needs {self.global_batch} (batch_size {batch_size} x world_size "
                               f"{world_size}); use a smaller batch_size or more data")
        self.lengths = [length(r) for r in rows]
        self.collate_fn = collate_fn
        self.epoch, self.batch = 0, 0
        self._plan_epoch()

    def _plan_epoch(self) -> None:
        self._plan = bucketed_batches(self.lengths, self.global_batch, self.seed + self.epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, ...]:
        if self.batch >= len(self._plan):
            self.epoch, self.batch = self.epoch + 1, 0
            self._plan_epoch()
        mine = self._plan[self.batch][self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        self.batch += 1
        tensors = self.collate_fn([self.rows[i] for i in mine], self.pad_id)
        return tuple(_place(t, self.device) for t in tensors)  # chat rows: (B, T), (B, T)

    @property
    def epochs_done(self) -> float:
        """Passes over the conversations so far (fractional)."""
        return self.epoch + self.batch / len(self._plan)

    def state_dict(self) -> dict[str, int]:
        """Where the stream stands, plus what must match for a resume to see the same order."""
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed,
                "global_batch": self.global_batch, "rows": len(self.rows)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state``; the data, seed and global batch must be the same."""
        for key in ("seed", "global_batch", "rows"):
            if state[key] != self.state_dict()[key]:
                raise LanternError(
                    f"cannot resume the batch order: saved {key} is {state[key]}, now "
                    f"{self.state_dict()[key]} (the conversations, seed and batch_size x world_size "
                    f"must match the interrupted run)")
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._plan_epoch()


class Phases:
    """``steps`` batches of ``first``, then ``then`` for ever: a curriculum of two streams
    (SFT's copy drills before the mixture), with one position for a resume.

    >>> first = ChatBatches([Rendered([1, 2], [0, 1], "copy")] * 2, 2, pad_id=0)
    >>> then = ChatBatches([Rendered([3, 4, 5], [0, 1, 1], "none")] * 2, 2, pad_id=0)
    >>> stream = Phases(first, 1, then)
    >>> [tuple(next(stream)[0].shape) for _ in range(3)]
    [(2, 1), (2, 2), (2, 2)]
    """

    def __init__(self, first: ChatBatches, steps: int, then: ChatBatches) -> None:
        self.first, self.steps, self.then, self.done = first, steps, then, 0

    def __iter__(self) -> "Phases":
        return self

    def __next__(self) -> tuple[torch.Tensor, ...]:
        if self.done < self.steps:
            self.done += 1
            return next(self.first)
        return next(self.then)

    @property
    def epochs_done(self) -> float:
        """Passes over the second stream (the one the epochs are about)."""
        return self.then.epochs_done

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done, "steps": self.steps, "first": self.first.state_dict(),
                "then": self.then.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("steps") != self.steps:
            raise LanternError(f"cannot resume the batch order: saved {state.get('steps')} first-phase "
                               f"steps, now {self.steps}")
        self.done = int(state["done"])
        self.first.load_state_dict(state["first"])
        self.then.load_state_dict(state["then"])


def chat_eval_batches(rows: Sequence[Any], batch_size: int, pad_id: int, *, rank: int = 0,
                      world_size: int = 1, device: str | torch.device = "cpu",
                      collate_fn: Callable[..., tuple[torch.Tensor, ...]] = collate
                      ) -> Iterator[tuple[torch.Tensor, ...]]:
    """Fixed validation batches of padded chat rows (or other items, as in
    :class:`ChatBatches`): row ``i`` goes to rank ``i % world_size``, in order; a rank's
    last batch may be short (and a rank may get none)."""
    mine = list(rows[rank::world_size])
    device = torch.device(device)
    for start in range(0, len(mine), batch_size):
        tensors = collate_fn(mine[start:start + batch_size], pad_id)
        yield tuple(_place(t, device) for t in tensors)  # chat rows: (b, T), (b, T)


# --------------------------------------------------------------------------- packed rows


@dataclass(frozen=True)
class PackedRow:
    """One training row: inputs, targets (-1 = no loss) and the conversation of each position.

    ``segments[i]`` is the index (within the row) of the conversation position ``i``
    belongs to, -1 for padding: attention can be kept inside a conversation with it.
    """

    inputs: list[int]
    targets: list[int]
    segments: list[int]


def pack(rendered: Sequence[Rendered], seq_len: int, pad_id: int) -> list[PackedRow]:
    """Pack conversations, in order, into rows of ``seq_len`` (inputs, targets) pairs.

    A conversation of ``L`` tokens gives ``L - 1`` pairs; it goes into the current row if
    it fits, else starts a new one (the old row is padded: input ``pad_id``, target -1).
    A conversation longer than a row is cut to ``seq_len`` pairs.

    >>> a, b = Rendered([9, 1, 2], [0, 1, 1], "none"), Rendered([9, 3, 4, 5], [0, 0, 1, 1], "none")
    >>> [(r.inputs, r.targets, r.segments) for r in pack([a, b], seq_len=4, pad_id=0)]
    [([9, 1, 0, 0], [1, 2, -1, -1], [0, 0, -1, -1]), ([9, 3, 4, 0], [-1, 4, 5, -1], [0, 0, 0, -1])]
    """
    if seq_len < 1:
        raise LanternError(f"pack: seq_len must be >= 1, got {seq_len}")
    rows: list[PackedRow] = []
    inputs: list[int] = []
    targets: list[int] = []
    segments: list[int] = []

    def close() -> None:
        pad = seq_len - len(inputs)
        rows.append(PackedRow(inputs + [pad_id] * pad, targets + [-1] * pad, segments + [-1] * pad))

    for item in rendered:
        pairs = min(len(item.ids) - 1, seq_len)
        if pairs < 1:
            continue
        if len(inputs) + pairs > seq_len:
            close()
            inputs, targets, segments = [], [], []
        segment = segments[-1] + 1 if segments else 0
        inputs += item.ids[:pairs]
        targets += item.targets()[:pairs]
        segments += [segment] * pairs
    if inputs:
        close()
    return rows
