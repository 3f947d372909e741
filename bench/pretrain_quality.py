"""Validation bits per byte after the same wall-clock budget: our `tiny` preset vs nanoGPT's CPU recipe.

    python bench/pretrain_quality.py [TEXT] [--minutes 5] [--vocab 2048]

Data: TEXT (default ``../shared/data/tinyshakespeare_input.txt``); validation is the
last 10% of the characters, training the first 90%. Our tokenizer is trained on the
training part only.

- **ours**: ``PRETRAIN_PRESETS["tiny"]`` via :func:`lanternlm.train.pretrain.pretrain`,
  stopped by ``max_minutes``; bits per byte from its own evaluation over the whole
  validation text (CE summed over target tokens / (ln 2 x their UTF-8 bytes)).
- **baseline**: ``transformers.GPT2LMHeadModel`` set up as nanoGPT's published CPU
  recipe for shakespeare_char: characters as tokens, 4 layers, 4 heads, width 128,
  context 64, batch 12, no dropout, AdamW lr 1e-3 betas (0.9, 0.99) weight decay 0.1
  on matrices, gradient clip 1.0, 100 warmup steps then cosine to 1e-4; random
  windows as nanoGPT's ``get_batch``. Its cosine is stretched to the time budget the
  same way ours is (total steps re-estimated from the speed so far). Bits per byte =
  CE summed over every validation character / (ln 2 x their bytes), evaluated over
  all non-overlapping 64-character windows of the validation text.

Writes its section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from results import write_section

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEXT = ROOT.parent / "shared" / "data" / "tinyshakespeare_input.txt"


def split_text(text: str) -> tuple[str, str]:
    cut = int(len(text) * 0.9)
    return text[:cut], text[cut:]


def write_shards(out: Path, tokenizer, train_text: str, val_text: str) -> Path:
    """A shards folder by the contract with an exact split: one document per part."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out / "tokenizer.json")
    splits = {}
    for name, text in (("train", train_text), ("val", val_text)):
        ids = np.asarray([tokenizer.eot_id] + tokenizer.encode(text), dtype="<u2")
        ids.tofile(out / f"{name}_00000.bin")
        splits[name] = {"shards": [{"file": f"{name}_00000.bin", "tokens": len(ids), "documents": 1,
                                    "sha256": hashlib.sha256(ids.tobytes()).hexdigest()}],
                        "tokens": len(ids), "documents": 1, "bytes": len(text.encode())}
    manifest = {"format": "lanternlm-shards/1",
                "tokenizer": {"file": "tokenizer.json", "fingerprint": tokenizer.fingerprint(),
                              "vocab_size": tokenizer.vocab_size, "eot_id": tokenizer.eot_id},
                "dtype": "uint16", "splits": splits, "sources": ["bench"], "report": {}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def run_ours(train_text: str, val_text: str, minutes: float, vocab: int, work: Path) -> dict:
    import dataclasses

    from lanternlm.tokenizer import Tokenizer
    from lanternlm.train.pretrain import PRETRAIN_PRESETS, pretrain

    t0 = time.perf_counter()
    tok = Tokenizer.train([train_text], vocab_size=vocab)
    shards = write_shards(work / "shards", tok, train_text, val_text)
    prep_s = time.perf_counter() - t0
    val_tokens = len(tok.encode(val_text)) + 1
    config = dataclasses.replace(PRETRAIN_PRESETS["tiny"], data=str(shards), max_minutes=minutes,
                                 eval_tokens=val_tokens, device="cpu")
    summary = pretrain(config, work / "run")
    return {"bpb": summary["bpb"], "val_loss": summary["val_loss"], "steps": summary["steps"],
            "tokens": summary["tokens"], "params": summary["params"], "seconds": summary["elapsed_s"],
            "prep_s": prep_s, "vocab": tok.vocab_size, "config": config,
            "chars_per_token": len(val_text) / val_tokens}


def run_baseline(text: str, train_text: str, val_text: str, minutes: float, seed: int = 1337) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel

    from lanternlm.train.schedule import cosine_lr

    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    train = torch.tensor([stoi[c] for c in train_text], dtype=torch.long)
    val = torch.tensor([stoi[c] for c in val_text], dtype=torch.long)
    block, batch, max_lr, min_lr, warmup = 64, 12, 1e-3, 1e-4, 100
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(chars), n_positions=block, n_embd=128, n_layer=4,
                                       n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=max_lr, betas=(0.9, 0.99))
    budget, total, step = minutes * 60, 5000.0, 0
    model.train()
    t0 = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - t0
        if elapsed >= budget:
            break
        if step > 0:
            total = max(warmup + 1, step * budget / elapsed)
        lr = cosine_lr(step, max_lr=max_lr, min_lr=min_lr, warmup_steps=warmup, total_steps=total)
        for group in opt.param_groups:
            group["lr"] = lr
        ix = torch.randint(len(train) - block, (batch,))
        x = torch.stack([train[i:i + block] for i in ix])  # (B, T)
        y = torch.stack([train[i + 1:i + 1 + block] for i in ix])  # (B, T)
        logits = model(input_ids=x).logits  # (B, T, V)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
    seconds = time.perf_counter() - t0
    model.eval()
    ce_sum, n = 0.0, 0
    starts = list(range(0, len(val) - block - 1 + 1, block))
    with torch.no_grad():
        for i in range(0, len(starts), 64):
            rows = torch.stack([val[s:s + block + 1] for s in starts[i:i + 64]])  # (b, T + 1)
            logits = model(input_ids=rows[:, :-1]).logits  # (b, T, V)
            ce_sum += F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten(), reduction="sum").item()
            n += rows[:, 1:].numel()
    targets = "".join(val_text[s + 1:s + block + 1] for s in starts)
    nbytes = len(targets.encode())
    return {"bpb": ce_sum / (math.log(2) * nbytes), "val_loss": ce_sum / n, "steps": step,
            "tokens": step * batch * block, "params": sum(p.numel() for p in model.parameters()),
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("text", nargs="?", default=str(DEFAULT_TEXT), help="training text (UTF-8)")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget for each model")
    parser.add_argument("--vocab", type=int, default=1024, help="our tokenizer's vocabulary size")
    parser.add_argument("--skip-baseline", action="store_true", help="only train ours")
    args = parser.parse_args()
    from transformers import __version__ as hf_version

    from lanternlm.log import set_verbosity
    set_verbosity()
    text = Path(args.text).read_text(encoding="utf-8")
    train_text, val_text = split_text(text)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_ours(train_text, val_text, args.minutes, args.vocab, Path(tmp))
    base = None if args.skip_baseline else run_baseline(text, train_text, val_text, args.minutes)
    load_after = os.getloadavg()[0]
    c = ours["config"]
    from lanternlm.train.pretrain import model_config_for

    m = model_config_for(c, ours["vocab"])  # the preset's model shape, as trained
    lines = [
        "## Pretraining quality (`bench/pretrain_quality.py`)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"transformers {hf_version}, {torch.get_num_threads()} torch threads. Load average "
        f"{load_before:.1f} before / {load_after:.1f} after (the models run one after the other, each "
        "for the same wall-clock budget: other jobs on the machine cost both of them steps).",
        "",
        f"Command: `{'OMP_NUM_THREADS=' + os.environ['OMP_NUM_THREADS'] + ' ' if 'OMP_NUM_THREADS' in os.environ else ''}"
        f"python bench/pretrain_quality.py --minutes {args.minutes:g} --vocab {args.vocab}`. "
        f"Text: `{Path(args.text).name}` ({len(text):,} chars); validation = the last 10% "
        f"({len(val_text):,} chars), evaluated in full by both.",
        "",
        "| model | params | tokens | context | steps in budget | train s | val loss (nats/token) | **val bits/byte** |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| lanternlm `tiny` ({m.n_layer}L/{m.n_embd}w, Llama-style, BPE {ours['vocab']}, "
        f"{ours['chars_per_token']:.2f} chars/token) | {ours['params']:,} | BPE | {m.block_size} tokens "
        f"| {ours['steps']:,} | {ours['seconds']:.0f} | {ours['val_loss']:.3f} | **{ours['bpb']:.3f}** |",
    ]
    if base is not None:
        lines.append(
            f"| HF `GPT2LMHeadModel`, nanoGPT CPU recipe (4L/128w, char-level) | {base['params']:,} | chars "
            f"| 64 chars | {base['steps']:,} | {base['seconds']:.0f} | {base['val_loss']:.3f} | "
            f"**{base['bpb']:.3f}** |")
        lines += ["", f"Ours / baseline bits per byte: **{ours['bpb'] / base['bpb']:.3f}** "
                  f"(lower is better; goal: clearly below 1). Reference from the issue: nanoGPT's own "
                  f"code with this recipe reached 2.30 bits/byte after 8,000 iterations (~5.2 min, quiet machine)."]
    lines += ["", f"Our tokenizer training + shard writing took {ours['prep_s']:.1f} s (outside the budget). "
              f"Our preset: batch {c.batch_size} x {m.block_size}, lr {c.lr:g} (AdamW, betas {c.beta1}/{c.beta2}), "
              f"{c.warmup_steps} warmup steps then cosine to {c.min_lr_ratio:g} x lr, stretched to the time budget."]
    write_section("pretrain_quality", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
