"""Batches of (input, target) token windows over a split of token shards.

The training loader cuts every shard into non-overlapping windows of
``block_size + 1`` tokens, shuffles the windows with a generator seeded by
``(seed, epoch)`` and deals them out as *global batches* of
``batch_size * world_size`` windows. Process ``rank`` takes rows
``[rank * batch_size, (rank + 1) * batch_size)`` of every global batch, so N
processes together consume exactly the windows one process with a batch of
``N * batch_size`` would, in the same order.

Each epoch starts the windows at a different offset (drawn from the same
generator, ``0 <= offset < block_size``) so that later epochs do not repeat
the exact same cuts of the text.

The position in the stream is two integers (epoch, batch within the epoch):
:meth:`BatchLoader.state_dict` / :meth:`BatchLoader.load_state_dict` carry it
across a resume, which then sees the same batches as an uninterrupted run.

The validation iterator (:func:`eval_batches`) is fixed: contiguous windows
from the start of the split covering its first ``max_tokens`` tokens.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from ..errors import LanternError


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


def _to_device(buf: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``block_size + 1`` tokens -> (x, y) LongTensors, y shifted by one."""
    rows = torch.from_numpy(buf.astype(np.int64))  # (B, T + 1)
    if device.type == "cuda":
        rows = rows.pin_memory().to(device, non_blocking=True)
    return rows[:, :-1], rows[:, 1:]  # (B, T), (B, T)


class BatchLoader:
    """Endless shuffled batches of ``(x, y)``, both ``LongTensor[batch_size, block_size]``.

    ``shards`` are 1-D token arrays (the memmaps of ``ShardSet.split(name)``).
    """

    def __init__(self, shards: Sequence[np.ndarray], batch_size: int, block_size: int, *,
                 seed: int = 0, rank: int = 0, world_size: int = 1,
                 device: str | torch.device = "cpu") -> None:
        if batch_size < 1 or block_size < 1:
            raise LanternError(f"batch_size ({batch_size}) and block_size ({block_size}) must be >= 1")
        if not 0 <= rank < world_size:
            raise LanternError(f"rank {rank} is outside world_size {world_size}")
        self.shards = list(shards)
        self.lengths = [len(s) for s in self.shards]
        self.batch_size, self.block_size = batch_size, block_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.device = torch.device(device)
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
        span = self.block_size + 1
        buf = np.stack([self.shards[self._shard[w]][self._start[w]:self._start[w] + span] for w in picks])
        self.batch += 1
        return _to_device(buf, self.device)  # (B, T), (B, T)

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
                 rank: int = 0, world_size: int = 1,
                 device: str | torch.device = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed validation windows: the first ``max_tokens`` tokens, contiguous, in order.

    Window ``i`` goes to rank ``i % world_size``; the last batch of a rank may be short.
    Raises :class:`LanternError` when the split holds no whole window.
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
    span = block_size + 1
    for i in range(0, len(mine), batch_size):
        picks = mine[i:i + batch_size]
        buf = np.stack([shards[shard[w]][start[w]:start[w] + span] for w in picks])
        yield _to_device(buf, device)  # (b, T), (b, T)
