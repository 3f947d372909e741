"""The loaders: deterministic order, resumable position, rank sharding, validation batches;
token windows and padded chat rows alike."""

import numpy as np
import pytest
import torch

from lanternlm.chat import Rendered
from lanternlm.data.loader import (BatchLoader, ChatBatches, bucketed_batches, chat_eval_batches, eval_batches,
                                   window_starts)
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


# --------------------------------------------------------------------------- chat rows


def _chats(n=23):
    """Conversations of 3..12 tokens whose every id is their index + 1 (0 is the pad)."""
    return [Rendered([i + 1] * (3 + (i * 7) % 10), [0] + [1] * (2 + (i * 7) % 10), "none") for i in range(n)]


def _row_ids(x):
    return [int(row[0]) - 1 for row in x]


def test_bucketed_batches_are_full_cover_each_example_once_with_similar_lengths():
    lengths = [(i * 37) % 101 for i in range(203)]
    batches = bucketed_batches(lengths, batch_size=8, seed=5, window=25)
    assert all(len(b) == 8 for b in batches) and len(batches) == 203 // 8
    seen = [i for b in batches for i in b]
    assert len(seen) == len(set(seen)) == 200  # 3 sit this epoch out
    assert bucketed_batches(lengths, 8, seed=5, window=25) == batches
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 10  # random batches would spread over ~80
    left_out = [set(range(203)) - {i for b in bucketed_batches(lengths, 8, seed=s) for i in b} for s in (1, 2)]
    assert left_out[0] != left_out[1]


def test_chat_batches_pad_the_rows_and_resume_in_the_same_order():
    rows = _chats()
    ref = ChatBatches(rows, 4, pad_id=0, seed=1)
    expected = [next(ref) for _ in range(12)]  # 5 batches per epoch: crosses two epochs
    for x, y in expected:
        assert x.shape == y.shape and x.shape[0] == 4
        for b, i in enumerate(_row_ids(x)):  # each row is one conversation, right-padded
            n = len(rows[i].ids) - 1
            assert x[b, :n].tolist() == rows[i].ids[:-1] and (x[b, n:] == 0).all()
            assert y[b, :n].tolist() == rows[i].targets() and (y[b, n:] == -1).all()
    assert ref.epoch == 2 and ref.epochs_done == pytest.approx(2.4)
    first = ChatBatches(rows, 4, pad_id=0, seed=1)
    [next(first) for _ in range(7)]
    resumed = ChatBatches(rows, 4, pad_id=0, seed=1)
    resumed.load_state_dict(first.state_dict())
    for (x, y), (ex, ey) in zip([next(resumed) for _ in range(5)], expected[7:]):
        assert torch.equal(x, ex) and torch.equal(y, ey)
    with pytest.raises(LanternError, match="global_batch"):
        ChatBatches(rows, 2, pad_id=0, seed=1).load_state_dict(first.state_dict())


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_together_take_exactly_the_single_process_chat_rows(world):
    rows = _chats()
    single = ChatBatches(rows, 2 * world, pad_id=0, seed=4)
    ranks = [ChatBatches(rows, 2, pad_id=0, seed=4, rank=r, world_size=world) for r in range(world)]
    for _ in range(15):  # several epochs, each leaving out its remainder
        whole = _row_ids(next(single)[0])
        parts = [next(loader)[0] for loader in ranks]
        assert all(len(part) == 2 for part in parts)  # no rank ever gets an empty or short batch
        assert [i for part in parts for i in _row_ids(part)] == whole


def test_too_few_conversations_and_validation_rows_by_rank():
    with pytest.raises(LanternError, match="not enough conversations for one batch: 3"):
        ChatBatches(_chats(3), 2, pad_id=0, world_size=2)
    rows = _chats(7)
    every = [i for x, _ in chat_eval_batches(rows, 3, pad_id=0) for i in _row_ids(x)]
    assert every == list(range(7))
    parts = [[i for x, _ in chat_eval_batches(rows, 3, 0, rank=r, world_size=2) for i in _row_ids(x)]
             for r in range(2)]
    assert parts == [[0, 2, 4, 6], [1, 3, 5]]
