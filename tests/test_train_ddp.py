"""`torchrun --nproc_per_node=2` (gloo, CPU) follows the same loss curve as 1 process
with the same global batch: pretraining (token windows) and fine-tuning (padded chat rows
of different lengths, a different count of trained tokens in every micro-batch)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from lanternlm.train.metrics import read_metrics
from sft_helpers import make_base, train_tokenizer
from test_train import make_shards

FLAGS = ["-q", "pretrain", "--preset", "tiny", "--model", "llama-style-tiny", "--n-layer", "2",
         "--n-head", "2", "--n-kv-head", "1", "--n-embd", "32", "--block-size", "16",
         "--max-steps", "8", "--max-minutes", "none", "--lr", "1e-2", "--warmup-steps", "2",
         "--eval-every", "4", "--eval-tokens", "256", "--log-every", "1", "--checkpoint-every", "8",
         "--seed", "0", "--device", "cpu"]
SFT_FLAGS = ["-q", "sft", "--examples-per-task", "8", "--val-per-task", "2", "--block-size", "512",
             "--max-steps", "4", "--max-minutes", "none", "--lr", "5e-3", "--warmup-steps", "1",
             "--eval-every", "2", "--log-every", "1", "--checkpoint-every", "4", "--seed", "0", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def one_and_two(flags, one, two, batch):
    """Run the command once in one process with ``--batch-size batch`` and once under
    torchrun in two with half of it; return both metrics files' records."""
    subprocess.run([sys.executable, "-m", "lanternlm.cli", *flags, "--batch-size", str(batch), "--out", str(one)],
                   env=ENV, check=True, timeout=300)
    subprocess.run([*TORCHRUN, "-m", "lanternlm.cli", *flags, "--batch-size", str(batch // 2), "--out", str(two)],
                   env=ENV, check=True, timeout=300)
    return read_metrics(one / "metrics.jsonl"), read_metrics(two / "metrics.jsonl")


def assert_same_curves(a, b, steps):
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, steps + 1))
    for key in ("train_loss", "grad_norm"):
        np.testing.assert_allclose([r[key] for r in b], [r[key] for r in a], rtol=1e-4, err_msg=key)
    np.testing.assert_allclose([r["val_loss"] for r in b if "val_loss" in r],
                               [r["val_loss"] for r in a if "val_loss" in r], rtol=1e-4)
    assert len([r for r in a if "val_loss" in r]) >= 2


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    data = make_shards(tmp_path / "shards")
    a, b = one_and_two([*FLAGS, "--data", str(data)], tmp_path / "one", tmp_path / "two", batch=4)
    assert_same_curves(a, b, steps=8)
    assert a[0]["train_loss"] - a[-1]["train_loss"] > 0.5  # it did learn


@pytest.mark.slow
def test_sft_two_processes_match_one_with_the_same_global_batch(tmp_path):
    base = make_base(train_tokenizer(), tmp_path)
    a, b = one_and_two([*SFT_FLAGS, "--base", str(base)], tmp_path / "one", tmp_path / "two", batch=4)
    assert_same_curves(a, b, steps=4)
    assert all(0 < r["pad_fraction"] < 1 and 0 < r["trained_fraction"] < 1 for r in a + b)
    assert a[0]["train_loss"] > a[-1]["train_loss"]  # it did learn


@pytest.mark.slow
def test_dpo_and_reward_two_processes_match_one(tmp_path):
    """Pairs per micro-batch instead of tokens, statistics beside the loss, and (DPO) the
    reference table computed by both processes in shares."""
    import json

    from lanternlm.train.sft import sft
    from sft_helpers import small_sft
    from test_preference import some_pairs

    chat = tmp_path / "chat"
    sft(small_sft(make_base(train_tokenizer(), tmp_path), tasks=["letters"], max_steps=2), chat)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in some_pairs(18)))
    flags = ["--base", str(chat), "--pairs", str(pairs), "--block-size", "256", "--max-steps", "4",
             "--max-minutes", "none", "--lr", "1e-3", "--warmup-steps", "1", "--eval-every", "2", "--log-every", "1",
             "--checkpoint-every", "4", "--seed", "0", "--device", "cpu"]
    for stage, stats in (("dpo", ("margins", "accuracies", "logps_chosen")), ("reward", ("margins", "accuracies"))):
        a, b = one_and_two(["-q", stage, *flags], tmp_path / f"{stage}1", tmp_path / f"{stage}2", batch=4)
        assert_same_curves(a, b, steps=4)
        for key in stats:
            np.testing.assert_allclose([r[key] for r in b], [r[key] for r in a], rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_rl_two_processes_match_one(tmp_path):
    """Each process samples its questions of the global batch with the seeds one process
    uses, the loss divides by the trained tokens of all processes, and the rollout
    statistics are gathered: the same curves, rewards and held-out scores."""
    import json

    from lanternlm.train.reward import RewardConfig, reward
    from lanternlm.train.sft import sft
    from sft_helpers import small_sft
    from test_preference import some_pairs

    chat, rm = tmp_path / "chat", tmp_path / "rm"
    sft(small_sft(make_base(train_tokenizer(), tmp_path), tasks=["letters"], max_steps=2), chat)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in some_pairs(12)))
    reward(RewardConfig(base=str(chat), pairs=[str(pairs)], batch_size=4, max_steps=2, warmup_steps=1, eval_every=2,
                        log_every=1, checkpoint_every=2, block_size=256, device="cpu"), rm)
    flags = ["-q", "rl", "--base", str(chat), "--reward", "tasks:letters", "--reward-model", str(rm),
             "--group-size", "4", "--max-tokens", "10", "--eval-questions", "2", "--eval-samples", "2",
             "--block-size", "256", "--max-steps", "3", "--max-minutes", "none", "--lr", "1e-3", "--warmup-steps",
             "1", "--eval-every", "3", "--log-every", "1", "--checkpoint-every", "3", "--updates-per-batch", "2",
             "--seed", "0", "--device", "cpu"]
    a, b = one_and_two(flags, tmp_path / "rl1", tmp_path / "rl2", batch=4)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3]
    for key in ("train_loss", "grad_norm", "reward_mean", "reward_std", "entropy", "length_mean",
                "clip_low_fraction", "clip_high_fraction", "val_pass1", "val_reward"):
        np.testing.assert_allclose([r[key] for r in b if key in r], [r[key] for r in a if key in r],
                                   rtol=1e-4, atol=1e-7, err_msg=key)
    assert a[0]["reward_std"] > 0 and a[0]["grad_norm"] > 0  # a real step, not an empty one
