"""Training measurements: bits per byte, MFU, the metrics JSONL file and the plateau rule.

``metrics.jsonl`` holds one JSON object per logged step with the keys
``step, train_loss, lr, grad_norm, tokens_per_s, mfu, ..._fraction, elapsed_s`` and the
evaluation's (``val_loss``, ``bpb``, ...) on evaluation steps; ``mfu`` only where the
device's peak is known (the training loop writes them, :mod:`lanternlm.train.loop`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from ..config import atomic_write_text

#: Dense bf16 peak FLOP/s per device name fragment (from the vendors' data sheets).
PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "4090": 165e12,
}


def bits_per_byte(ce_sum_nats: float, num_bytes: int) -> float:
    """Cross-entropy summed over target tokens, per UTF-8 byte of those tokens, in bits.

    Comparable across tokenizers: a model that spends 2 nats on a 4-byte token and one
    that spends 0.5 nats on each of its 4 one-byte tokens both score 2 / (4 ln 2).

    >>> round(bits_per_byte(2.0, 4), 6)
    0.721348
    """
    if num_bytes <= 0:
        raise ValueError("bits per byte needs at least one byte of targets")
    return ce_sum_nats / (math.log(2) * num_bytes)


def byte_lengths(tokenizer, vocab_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """UTF-8 bytes of every id of a model's vocabulary (0 for special tokens and padding
    rows): what :func:`bits_per_byte` divides by.

    >>> from lanternlm.tokenizer import Tokenizer
    >>> byte_lengths(Tokenizer([(104, 105)], special_tokens=["<|endoftext|>"]), 260)[255:].tolist()
    [1, 2, 0, 0, 0]
    """
    table = torch.zeros(vocab_size, dtype=torch.long)
    table[:tokenizer.vocab_size] = torch.tensor(tokenizer.token_byte_lengths(), dtype=torch.long)
    return table.to(device)


def peak_flops(device: torch.device) -> float | None:
    """The bf16 dense peak of a CUDA device from :data:`PEAK_FLOPS`, or None when unknown/CPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_FLOPS.items() if key in name), None)


def model_flops_utilization(tokens_per_s: float, train_flops_per_token: float, peak: float) -> float:
    """Achieved training FLOP/s over the device's peak.

    >>> model_flops_utilization(1000.0, 6e9, 12e12)
    0.5
    """
    return tokens_per_s * train_flops_per_token / peak


class MetricsLog:
    """Append-only ``metrics.jsonl``; on resume, lines after the checkpoint's step are dropped."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Keep the records with ``step <= step`` (a killed run may have logged past its checkpoint)."""
        kept = [r for r in read_metrics(self.path) if r["step"] <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics file; a last line cut short by a kill is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class Plateau:
    """Early stopping: stop once ``patience`` evaluations in a row failed to beat the best by ``min_delta``.

    >>> rule = Plateau(patience=2, min_delta=0.01)
    >>> [rule.update(x) for x in (3.0, 2.5, 2.495, 2.6, 2.4)]
    [False, False, False, True, False]
    """

    def __init__(self, patience: int, min_delta: float) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best, self.bad = math.inf, 0

    def update(self, val_loss: float) -> bool:
        if val_loss < self.best - self.min_delta:
            self.best, self.bad = val_loss, 0
        else:
            self.bad += 1
        return self.patience > 0 and self.bad >= self.patience

    def state_dict(self) -> dict[str, float]:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.best, self.bad = float(state["best"]), int(state["bad"])
