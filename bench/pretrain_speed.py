"""Training throughput: our GPT vs ``transformers.GPT2LMHeadModel`` at the same dimensions.

    python bench/pretrain_speed.py                 # CPU, GPT-2-style models, both libraries, 3 shapes
    python bench/pretrain_speed.py --gpu           # CUDA: the gpt2-124m preset, bf16, compiled

CPU mode: at each shape of ``CPU_SHAPES`` (nanoGPT's CPU recipe, the ``tiny`` preset's
shape, a wider one), both models are GPT-2 style with identical shapes (learned positions,
LayerNorm, GELU, biases, tied embeddings), the same batch of random tokens, and the same
optimizer (``torch.optim.AdamW``, non-fused). One *window* = ``--steps`` training steps
(forward, backward, optimizer step); windows alternate between the two models so that
load changes on a shared machine hit both alike; we report the median tokens/s of
``--windows`` windows each, after ``--warmup`` steps.

GPU mode: ``PRETRAIN_PRESETS["gpt2-124m"]``'s model at batch 32 x 1024, bf16 autocast,
``torch.compile``, fused AdamW, as the training loop runs it (:mod:`lanternlm.train.loop`); reports tokens/s
and MFU against the device's bf16 dense peak (H200/H100: 989 TFLOP/s), and the same
figures for HF ``GPT2LMHeadModel`` (eager, bf16 autocast) for comparison.

Writes its section of ``bench/RESULTS.md`` (``--gpu`` writes a separate section).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from results import write_section  # noqa: E402


def ours_model(n_layer: int, n_head: int, n_embd: int, block: int, vocab: int):
    from lanternlm.model import GPT, GPTConfig

    return GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=n_head, n_embd=n_embd))


def hf_model(n_layer: int, n_head: int, n_embd: int, block: int, vocab: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=block, n_embd=n_embd, n_layer=n_layer,
                                      n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def make_step(model, kind: str, x: torch.Tensor, autocast, fused: bool = False):
    """One training step closure: forward with the loss, backward, AdamW step."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)

    def step():
        with autocast:
            loss = model(x, x).loss if kind == "ours" else model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def timed(step, steps: int, sync) -> float:
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return time.perf_counter() - t0


# (label, layers, heads, width, context, vocab, batch): the issue's reference shape first
CPU_SHAPES = {
    "nanogpt": ("nanoGPT's CPU recipe, as in the quality benchmark", 4, 4, 128, 64, 65, 12),
    "tiny": ("the `tiny` preset's shape", 4, 4, 128, 128, 4096, 8),
    "wide": ("twice as wide and long", 4, 4, 256, 256, 4096, 8),
}


def cpu_shape(args, shape: tuple) -> dict:
    """Interleaved windows of both models at one shape: median tokens/s of each."""
    _, n_layer, n_head, width, context, vocab, batch = shape
    dims = (n_layer, n_head, width, context, vocab)
    torch.manual_seed(0)
    x = torch.randint(0, vocab, (batch, context))
    models = {"ours": ours_model(*dims), "hf": hf_model(*dims)}
    n_params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    assert n_params["ours"] == n_params["hf"], n_params
    steps = {k: make_step(m, k, x, torch.autocast("cpu", enabled=False)) for k, m in models.items()}
    for k in steps:
        timed(steps[k], args.warmup, lambda: None)
    rates = {k: [] for k in steps}
    for _ in range(args.windows):
        for k in steps:
            rates[k].append(batch * context * args.steps / timed(steps[k], args.steps, lambda: None))
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"params": n_params["ours"], "ours": med["ours"], "hf": med["hf"], "ratio": med["ours"] / med["hf"]}


def cpu_mode(args) -> list[str]:
    rows = []
    for name in args.shapes:
        shape = CPU_SHAPES[name]
        result = cpu_shape(args, shape)
        label, n_layer, n_head, width, context, vocab, batch = shape
        rows.append(f"| {n_layer}/{n_head}/{width}/{context}, {vocab:,}, {batch} ({label}) | {result['params']:,} | "
                    f"{result['ours']:,.0f} | {result['hf']:,.0f} | **{result['ratio']:.2f}x** |")
        print(rows[-1], flush=True)
    load = os.getloadavg()[0]
    threads = os.environ.get("OMP_NUM_THREADS")
    return [
        "## Pretraining speed, CPU (`bench/pretrain_speed.py`)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s); load average {load:.1f} at the end. Both models GPT-2 style "
        "with identical shapes and parameter counts (learned positions, LayerNorm, tanh GELU, biases, tied "
        "embeddings), fp32, eager, the same random batch and the same non-fused `torch.optim.AdamW`; windows of "
        f"{args.steps} steps alternate between the models (so load changes hit both alike); median of "
        f"{args.windows} windows after {args.warmup} warmup steps.",
        "",
        "| dims (layers/heads/width/context, vocab, batch) | parameters | lanternlm tokens/s | "
        "HF `GPT2LMHeadModel` tokens/s | ours / HF |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"Command: `{'OMP_NUM_THREADS=' + threads + ' ' if threads else ''}python bench/pretrain_speed.py"
        f"{' --shapes ' + ','.join(args.shapes) if args.shapes != list(CPU_SHAPES) else ''}"
        f"{' --windows ' + str(args.windows) if args.windows != 7 else ''}`. Goal: ours >= 1.2x HF.",
    ]


def gpu_mode(args) -> list[str]:
    import dataclasses

    from lanternlm.model import MODEL_PRESETS, GPT, flops_per_token
    from lanternlm.train.metrics import peak_flops

    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    conf = dataclasses.replace(MODEL_PRESETS["gpt2-124m"])
    batch, block = args.batch, conf.block_size
    x = torch.randint(0, conf.vocab_size, (batch, block), device=device)
    sync = torch.cuda.synchronize
    bf16 = torch.autocast("cuda", dtype=torch.bfloat16)
    peak = peak_flops(device)
    results = []
    for kind in ("ours", "hf"):
        torch.manual_seed(0)
        model = (GPT(conf) if kind == "ours" else
                 hf_model(conf.n_layer, conf.n_head, conf.n_embd, block, conf.vocab_size)).to(device)
        run = torch.compile(model) if kind == "ours" else model
        step = make_step(run, kind, x, bf16, fused=True)
        timed(step, args.warmup, sync)
        rates = [batch * block * args.steps / timed(step, args.steps, sync) for _ in range(args.windows)]
        rate = statistics.median(rates)
        mfu = rate * flops_per_token(conf) / peak if peak else float("nan")
        results.append((kind, rate, mfu))
        del model, run, step
        torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(device)
    (_, ours_rate, ours_mfu), (_, hf_rate, hf_mfu) = results
    return [
        "## Pretraining speed, GPU (`bench/pretrain_speed.py --gpu`)",
        "",
        f"Device: {name}, torch {torch.__version__}; peak {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s bf16 dense. "
        f"gpt2-124m preset ({sum(p.numel() for p in GPT(conf).parameters()):,} parameters), batch {batch} x {block}, "
        f"bf16 autocast, fused AdamW; median of {args.windows} windows of {args.steps} steps after {args.warmup} warmup steps. "
        f"MFU uses {flops_per_token(conf) / 1e6:.0f} MFLOP per token (6N + attention).",
        "",
        "| model | tokens/s | MFU |",
        "|---|---:|---:|",
        f"| lanternlm `GPT`, torch.compile | {ours_rate:,.0f} | {ours_mfu:.1%} |",
        f"| HF `GPT2LMHeadModel`, eager | {hf_rate:,.0f} | {hf_mfu:.1%} |",
        "",
        "Goal: >= 600K tokens/s for ours (nanoGPT compiled: 511K, 44% MFU; HF eager: 215K on the same H200).",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", action="store_true", help="CUDA mode: gpt2-124m, bf16, compiled")
    parser.add_argument("--shapes", type=lambda v: v.split(","), default=list(CPU_SHAPES),
                        help=f"CPU shapes, comma-separated, of {list(CPU_SHAPES)} (default: all)")
    parser.add_argument("--batch", type=int, default=32, help="GPU batch size (CPU shapes fix their own)")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed window (default 3 CPU, 20 GPU)")
    parser.add_argument("--windows", type=int, default=7, help="timed windows per model (median reported)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2 CPU, 30 GPU)")
    args = parser.parse_args()
    unknown = [name for name in args.shapes if name not in CPU_SHAPES]
    if unknown:
        parser.error(f"unknown shape(s) {unknown}; choose from {list(CPU_SHAPES)}")
    if args.gpu and not torch.cuda.is_available():
        parser.error("--gpu needs a CUDA device")
    args.steps = args.steps or (20 if args.gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (30 if args.gpu else 2)
    lines = gpu_mode(args) if args.gpu else cpu_mode(args)
    write_section("pretrain_speed_gpu" if args.gpu else "pretrain_speed", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
