"""Resume after a real SIGKILL gives bit-identical losses to an uninterrupted run (CPU)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from lanternlm.train.metrics import read_metrics
from test_train import make_shards

FLAGS = ["--preset", "tiny", "--model", "llama-style-tiny", "--n-layer", "2", "--n-head", "2",
         "--n-kv-head", "1", "--n-embd", "32", "--block-size", "16", "--batch-size", "4",
         "--max-steps", "200", "--max-minutes", "none", "--lr", "1e-2", "--warmup-steps", "5",
         "--eval-every", "50", "--eval-tokens", "128", "--log-every", "1", "--checkpoint-every", "10",
         "--seed", "0", "--device", "cpu", "--optimizer", "muon"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _lantern(*args):
    return [sys.executable, "-m", "lanternlm.cli", "-q", "pretrain", *FLAGS, *args]


@pytest.mark.slow
def test_killed_and_resumed_run_matches_uninterrupted(tmp_path):
    data = make_shards(tmp_path / "shards")
    subprocess.run(_lantern("--data", str(data), "--out", str(tmp_path / "ref")), env=ENV, check=True)

    run = tmp_path / "run"
    proc = subprocess.Popen(_lantern("--data", str(data), "--out", str(run)), env=ENV)
    latest = run / "checkpoints" / "latest"
    deadline = time.monotonic() + 120
    while not latest.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = int(latest.read_text().split("_")[1])
    assert killed_at < 200

    subprocess.run(_lantern("--data", str(data), "--out", str(run), "--resume"), env=ENV, check=True)
    ref, got = read_metrics(tmp_path / "ref" / "metrics.jsonl"), read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in got] == list(range(1, 201))
    for key in ("train_loss", "lr", "grad_norm", "val_loss", "bpb"):
        assert [r.get(key) for r in got] == [r.get(key) for r in ref], key  # bit-identical floats
