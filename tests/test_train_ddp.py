"""`torchrun --nproc_per_node=2` (gloo, CPU) follows the same loss curve as 1 process
with the same global batch."""

import os
import subprocess
import sys

import numpy as np
import pytest

from lanternlm.train.metrics import read_metrics
from test_train import make_shards

FLAGS = ["-q", "pretrain", "--preset", "tiny", "--model", "llama-style-tiny", "--n-layer", "2",
         "--n-head", "2", "--n-kv-head", "1", "--n-embd", "32", "--block-size", "16",
         "--max-steps", "8", "--max-minutes", "none", "--lr", "1e-2", "--warmup-steps", "2",
         "--eval-every", "4", "--eval-tokens", "256", "--log-every", "1", "--checkpoint-every", "8",
         "--seed", "0", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    data = make_shards(tmp_path / "shards")
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-m", "lanternlm.cli", *FLAGS, "--batch-size", "4",
                    "--data", str(data), "--out", str(one)], env=ENV, check=True, timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    "-m", "lanternlm.cli", *FLAGS, "--batch-size", "2",
                    "--data", str(data), "--out", str(two)], env=ENV, check=True, timeout=300)
    a, b = read_metrics(one / "metrics.jsonl"), read_metrics(two / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 9))
    for key in ("train_loss", "grad_norm"):
        np.testing.assert_allclose([r[key] for r in b], [r[key] for r in a], rtol=1e-4, err_msg=key)
    np.testing.assert_allclose([r["val_loss"] for r in b if "val_loss" in r],
                               [r["val_loss"] for r in a if "val_loss" in r], rtol=1e-4)
    assert a[0]["train_loss"] - a[-1]["train_loss"] > 0.5  # it did learn
