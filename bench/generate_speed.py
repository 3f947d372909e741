"""Decode speed: lanternlm's engine vs Hugging Face ``generate()`` on the same weights.

Both generate greedily, with a KV cache, exactly ``--new-tokens`` tokens per row (no early
stop) after the same random prompts; time = the whole call (prefill + decode), reported as
new tokens per second, median of ``--runs`` runs after one warm-up. Our weights go into a
``GPT2LMHeadModel`` through :func:`lanternlm.interop.hf.to_hf`, and the greedy tokens of
the two fp32 runs are compared as a correctness check.

CPU (default): a 4-layer 128-wide GPT-2 and GPT-2 124M, batch 1 and 16, ours in fp32 and
bf16 against HF in fp32 and bf16, and ours with int8 weights (``Engine(int8=True)``)
against both. ``--gpu``: the ``gpt2-124m`` preset in bf16 on CUDA,
batch 1 and 64, ours with CUDA graphs over a static KV cache vs HF ``generate()``.

    python bench/generate_speed.py --threads 1          # CPU, writes bench/RESULTS.md
    python bench/generate_speed.py --gpu                # on a CUDA machine
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch

from lanternlm.engine import Engine
from lanternlm.interop.hf import to_hf
from lanternlm.model import GPT, MODEL_PRESETS, GPTConfig
from lanternlm.sampling import SamplingParams
from results import write_section

SIZES = {
    "4x128": GPTConfig(vocab_size=50304, block_size=1024, n_layer=4, n_head=4, n_embd=128),
    "124M": MODEL_PRESETS["gpt2-124m"],
}
GREEDY = SamplingParams(temperature=0)


def timed(fn, runs: int, sync) -> tuple[float, object]:
    """Median seconds of ``runs`` calls after one warm-up, and the last result."""
    result = fn()
    times = []
    for _ in range(runs):
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def ours(model: GPT, prompts: torch.Tensor, new_tokens: int, **engine_kwargs):
    engine = Engine(copy.deepcopy(model), **engine_kwargs)
    ids = prompts.tolist()
    return lambda: [c.tokens for c in engine.generate(ids, max_tokens=new_tokens, sampling=GREEDY)]


def theirs(hf_model, prompts: torch.Tensor, new_tokens: int):
    hf_model.generation_config.eos_token_id = None
    hf_model.generation_config.pad_token_id = 0

    def run():
        with torch.inference_mode():
            out = hf_model.generate(prompts, attention_mask=torch.ones_like(prompts),
                                    max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                    do_sample=False)
        return out[:, prompts.shape[1]:].tolist()
    return run


def bench(size: str, config: GPTConfig, batches: list[int], args, device: str, dtypes: list[str]):
    torch.manual_seed(0)
    model = GPT(config).eval()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows = []
    for batch in batches:
        prompts = torch.randint(0, 50257, (batch, args.prompt_len), device=device)
        speeds, tokens = {}, {}
        for dtype in dtypes:
            torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
            hf_model = to_hf(model).to(device=device, dtype=torch_dtype)
            seconds, tokens[("hf", dtype)] = timed(theirs(hf_model, prompts, args.new_tokens), args.runs, sync)
            speeds[("hf", dtype)] = batch * args.new_tokens / seconds
            del hf_model
            extra = {"cuda_graphs": True} if device == "cuda" else {}
            seconds, tokens[("ours", dtype)] = timed(
                ours(model, prompts, args.new_tokens, device=device, dtype=torch_dtype, **extra),
                args.runs, sync)
            speeds[("ours", dtype)] = batch * args.new_tokens / seconds
            print(f"{size} batch {batch} {dtype}: ours {speeds[('ours', dtype)]:.0f} tok/s, "
                  f"HF {speeds[('hf', dtype)]:.0f} tok/s", flush=True)
        if device == "cpu":  # ours with int8 weights (the CPU's fastest path) against HF as given
            seconds, tokens[("ours", "int8")] = timed(ours(model, prompts, args.new_tokens, int8=True),
                                                      args.runs, sync)
            speeds[("ours", "int8")] = batch * args.new_tokens / seconds
            print(f"{size} batch {batch} int8: ours {speeds[('ours', 'int8')]:.0f} tok/s", flush=True)
        dtype = dtypes[0]
        same = sum(a == b for a, b in zip(tokens[("ours", dtype)], tokens[("hf", dtype)]))
        rows.append((size, batch, speeds, f"{same}/{batch}"))
    return rows


def table(rows, dtypes: list[str]) -> str:
    head = ["model", "batch"]
    for d in dtypes:
        head += [f"HF {d}", f"ours {d}", f"ours/HF {d}"]
    if len(dtypes) > 1:
        head += [f"ours {dtypes[-1]} / HF {dtypes[0]}"]
    int8 = ("ours", "int8") in rows[0][2]
    if int8:
        head += ["ours int8", f"ours int8 / HF {dtypes[0]}", "ours int8 / best HF"]
    head += [f"same greedy tokens ({dtypes[0]})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for size, batch, speeds, same in rows:
        cells = [size, str(batch)]
        for d in dtypes:
            h, o = speeds[("hf", d)], speeds[("ours", d)]
            cells += [f"{h:,.0f}", f"{o:,.0f}", f"{o / h:.2f}x"]
        if len(dtypes) > 1:
            cells += [f"{speeds[('ours', dtypes[-1])] / speeds[('hf', dtypes[0])]:.2f}x"]
        if int8:
            o, best = speeds[("ours", "int8")], max(speeds[("hf", d)] for d in dtypes)
            cells += [f"{o:,.0f}", f"{o / speeds[('hf', dtypes[0])]:.2f}x", f"{o / best:.2f}x"]
        cells += [same]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="CUDA mode: gpt2-124m, bf16, batch 1 and 64")
    parser.add_argument("--sizes", default="4x128,124M", help="CPU model sizes: 4x128, 124M")
    parser.add_argument("--batches", default=None, help="comma-separated (default 1,16; GPU 1,64)")
    parser.add_argument("--new-tokens", type=int, default=None, help="per row (default 64; GPU 256)")
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    if args.gpu:
        args.new_tokens = args.new_tokens or 256
        batches = [int(b) for b in (args.batches or "1,64").split(",")]
        rows = bench("gpt2-124m", MODEL_PRESETS["gpt2-124m"], batches, args, "cuda", ["bf16"])
        body = (f"## Generation speed on GPU (`bench/generate_speed.py --gpu`)\n\n"
                f"{torch.cuda.get_device_name()}, torch {torch.__version__}, transformers "
                f"{transformers.__version__}; gpt2-124m preset (random weights), bf16, prompt "
                f"{args.prompt_len} tokens, {args.new_tokens} new tokens per row, greedy, median "
                f"of {args.runs} runs. Ours: CUDA graph over a static KV cache. Goal: >= 2,000 "
                f"new tokens/s at batch 1.\n\n{table(rows, ['bf16'])}\n")
        section = "generate_speed_gpu"
    else:
        args.new_tokens = args.new_tokens or 64
        batches = [int(b) for b in (args.batches or "1,16").split(",")]
        rows = []
        for size in args.sizes.split(","):
            rows += bench(size, SIZES[size], batches, args, "cpu", ["fp32", "bf16"])
        body = (f"## Generation speed on CPU (`bench/generate_speed.py`)\n\n"
                f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), torch "
                f"{torch.__version__}, transformers {transformers.__version__}. GPT-2 "
                f"architecture with random weights (vocab 50,304), prompt {args.prompt_len} tokens, "
                f"{args.new_tokens} new tokens per row, greedy, no early stop; new tokens/s over "
                f"the whole call (prefill included), median of {args.runs} runs. Goal: ours >= 2x HF.\n\n"
                f"{table(rows, ['fp32', 'bf16'])}\n\n"
                "Columns: HF `generate()` and our engine with the weights in fp32 and cast to "
                "bf16, and our engine with int8 weights (`Engine(int8=True)`, `--dtype int8`: "
                "dynamic int8 quantization of the output head and of matrices of >= 512x512 "
                "entries). Single-token decoding reads every weight once per step, so it is "
                "bound by weight bytes: int8 reads a quarter of fp32's. bf16 matmuls on this CPU "
                "are not faster than fp32 at batch 1. The greedy-token check compares the two "
                "fp32 runs; int8 changes logits by ~1-2% of their range, so on random weights "
                "(nearly flat distributions) its greedy tokens can differ from fp32's.\n")
        section = "generate_speed"
    print(body)
    if not args.no_write:
        write_section(section, body)


if __name__ == "__main__":
    main()
