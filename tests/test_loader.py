"""The batch loader: deterministic order, resumable position, rank sharding, validation windows."""

import numpy as np
import pytest
import torch

from lanternlm.data.loader import BatchLoader, eval_batches, window_starts
from lanternlm.errors import LanternError


def _shards():
    # Two shards of distinct token values, so every window tells where it came from.
    return [np.arange(0, 203, dtype=np.uint16), np.arange(1000, 1130, dtype=np.uint16)]


def _take(loader, n):
    return [next(loader) for _ in range(n)]


def test_window_starts_worked_example():
    shard, start = window_starts([10, 7], block_size=3)
    assert shard.tolist() == [0, 0, 0, 1, 1] and start.tolist() == [0, 3, 6, 0, 3]


def test_batches_are_shifted_windows_of_the_data():
    loader = BatchLoader(_shards(), batch_size=4, block_size=8, seed=0)
    for x, y in _take(loader, 10):
        assert x.shape == y.shape == (4, 8) and x.dtype == y.dtype == torch.long
        assert torch.equal(x[:, 1:], y[:, :-1])
        # consecutive values inside one shard: a contiguous slice that never crosses shards
        assert torch.equal(y - x, torch.ones_like(x))


def test_same_seed_same_order_other_seed_other_order():
    a = _take(BatchLoader(_shards(), 4, 8, seed=1), 12)
    b = _take(BatchLoader(_shards(), 4, 8, seed=1), 12)
    c = _take(BatchLoader(_shards(), 4, 8, seed=2), 12)
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(a, b))
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_one_epoch_uses_each_window_once():
    loader = BatchLoader(_shards(), batch_size=3, block_size=8, seed=0)
    starts = [int(x[i, 0]) for x, _ in _take(loader, loader.batches_per_epoch) for i in range(3)]
    assert len(starts) == len(set(starts)) == 3 * loader.batches_per_epoch
    assert loader.epoch == 0
    next(loader)
    assert loader.epoch == 1


def test_resume_continues_the_same_order_across_epochs():
    ref = BatchLoader(_shards(), 4, 8, seed=5)
    expected = _take(ref, 30)  # several epochs (each has 8 batches here)
    first = BatchLoader(_shards(), 4, 8, seed=5)
    _take(first, 11)
    state = first.state_dict()
    resumed = BatchLoader(_shards(), 4, 8, seed=5)
    resumed.load_state_dict(dict(state))
    for (x, y), (ex, ey) in zip(_take(resumed, 19), expected[11:]):
        assert torch.equal(x, ex) and torch.equal(y, ey)


def test_resume_refuses_other_seed_or_batch():
    state = BatchLoader(_shards(), 4, 8, seed=5).state_dict()
    with pytest.raises(LanternError, match="seed"):
        BatchLoader(_shards(), 4, 8, seed=6).load_state_dict(state)
    with pytest.raises(LanternError, match="global_batch"):
        BatchLoader(_shards(), 2, 8, seed=5).load_state_dict(state)


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_together_consume_exactly_the_single_process_batches(world):
    single = _take(BatchLoader(_shards(), 2 * world, 8, seed=3), 20)
    ranks = [_take(BatchLoader(_shards(), 2, 8, seed=3, rank=r, world_size=world), 20) for r in range(world)]
    for i, (x, y) in enumerate(single):
        assert torch.equal(torch.cat([ranks[r][i][0] for r in range(world)]), x)
        assert torch.equal(torch.cat([ranks[r][i][1] for r in range(world)]), y)


def test_too_little_data_is_a_clear_error():
    with pytest.raises(LanternError, match="not enough tokens"):
        BatchLoader([np.arange(50, dtype=np.uint16)], batch_size=4, block_size=16)
    with pytest.raises(LanternError, match="rank"):
        BatchLoader(_shards(), 2, 8, rank=2, world_size=2)


def test_eval_batches_cover_the_first_tokens_in_order():
    val = [np.arange(500, dtype=np.uint16)]
    rows = torch.cat([x for x, _ in eval_batches(val, batch_size=3, block_size=10, max_tokens=70)])
    assert rows.shape == (7, 10)
    assert rows[:, 0].tolist() == list(range(0, 70, 10))
    # ranks split the same windows between them
    parts = [torch.cat([x for x, _ in eval_batches(val, 3, 10, 70, rank=r, world_size=2)]) for r in range(2)]
    assert sorted(torch.cat(parts)[:, 0].tolist()) == rows[:, 0].tolist()
    with pytest.raises(LanternError, match="shorter than one"):
        list(eval_batches([np.arange(5, dtype=np.uint16)], 2, 10, 100))
