"""lantern serve beside a real peer: llama-cpp-python's OpenAI-compatible server on the same
model exported to GGUF, same requests, 1 and 16 concurrent clients.

    pip install 'llama-cpp-python[server]'      # built from PyPI (a few minutes on 2 cores)
    python bench/serve_peer.py --run RUN [--shape-124m] [--requests 64] [--requests-124m 16] [--no-write]

Each server runs as its own process with one CPU thread (``lantern serve RUN`` with
``OMP_NUM_THREADS=1``; ``python -m llama_cpp.server --n_threads 1``); the run is exported with
:func:`lanternlm.interop.gguf.export_gguf`. Requests: ``/v1/completions`` on task questions'
text, greedy, ``--max-tokens`` each (less where the prompt leaves less room in the
context window), not streamed; tokens counted from each response's
``usage.completion_tokens`` (both stop at the end-of-text token, so the counts are each
server's own). Aggregate tokens/s = all completion tokens / wall time, median of ``--runs``;
both servers are up at once and take turns run by run, so that a ratio compares the same minutes.
``--shape-124m`` adds a random-weight model of GPT-2 small's shape (12 x 768, Llama-style,
the run's 4,096-token vocabulary) on the run's tokenizer. llama-cpp-python's server decodes
one request at a time; ours decodes concurrent requests together. Goal (issue 13 §5): at 16
streams, ours >= llama.cpp's for the tiny model.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import write_section  # noqa: E402
from serve import Server, prompts  # noqa: E402


async def drive(url: str, bodies: list[dict], concurrency: int) -> tuple[int, float, list[str]]:
    """Tokens generated, seconds, the refused requests' errors."""
    queue, tokens, errors = list(reversed(bodies)), 0, []
    async with httpx.AsyncClient(timeout=600) as client:
        async def worker() -> None:
            nonlocal tokens
            while queue:
                r = await client.post(url + "/v1/completions", json=queue.pop())
                if r.status_code == 200:
                    tokens += r.json()["usage"]["completion_tokens"]
                else:
                    errors.append(f"HTTP {r.status_code}: {r.text[:160]}")
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return tokens, time.perf_counter() - t0, errors


def measure(servers: dict[str, Server], model: str, texts: list[str], budgets: list[int], args) -> dict:
    """Tokens/s of each server at 1 and ``--concurrency`` streams, median of ``--runs``; the
    servers take turns run by run (both idle but one), so each ratio compares the same minutes
    of a shared CPU whose speed drifts. Also the median of each run's own ratio ours/peer."""
    bodies = [{"model": model, "prompt": t, "max_tokens": b, "temperature": 0} for t, b in zip(texts, budgets)]
    speeds = {label: {1: [], args.concurrency: []} for label in servers}
    errors: dict[str, list[str]] = {label: [] for label in servers}
    for server in servers.values():
        asyncio.run(drive(server.url, bodies[:2], 1))  # warm-up
    for r in range(args.runs):
        for concurrency in (1, args.concurrency):
            for label, server in servers.items():
                tokens, seconds, bad = asyncio.run(drive(server.url, bodies, concurrency))
                speeds[label][concurrency].append(tokens / seconds)
                errors[label] += bad
        print(f"  run {r + 1}: " + ", ".join(f"{label} {speeds[label][1][-1]:,.0f} / {speeds[label][args.concurrency][-1]:,.0f}"
                                             for label in servers) + f" tok/s at 1 / {args.concurrency} streams", flush=True)
    ours, peer = speeds["lanternlm"], speeds["llama.cpp"]
    return {"speeds": {label: {c: statistics.median(v) for c, v in s.items()} for label, s in speeds.items()},
            "errors": errors,
            "ratio": {c: statistics.median(o / p for o, p in zip(ours[c], peer[c])) for c in ours}}


def random_124m(run, directory: Path) -> Path:
    """GPT-2 small's shape (Llama-style blocks) with random weights on ``run``'s tokenizer."""
    from lanternlm.checkpoint import save_model
    from lanternlm.model import GPT, MODEL_PRESETS
    from lanternlm.run import write_record

    config = dataclasses.replace(MODEL_PRESETS["tiny"], n_layer=12, n_head=12, n_embd=768,
                                 vocab_size=run.model_config.vocab_size, block_size=run.model_config.block_size)
    import torch

    torch.manual_seed(0)
    save_model(directory, GPT(config))
    run.tokenizer.save(directory / "tokenizer.json")
    write_record(directory, "pretrain", {"note": "random weights of GPT-2 small's shape, for bench/serve_peer.py"})
    return directory


def compare(run_dir: Path, texts: list[str], args, tmp: Path) -> dict:
    from lanternlm.interop.gguf import export_gguf
    from lanternlm.run import Run

    run = Run(run_dir)
    gguf = export_gguf(run, tmp / f"{run_dir.name}.gguf")
    name = run_dir.resolve().name
    # Each request's budget fits the window with two positions to spare (llama.cpp's BOS and
    # one more): llama-cpp-python fails a completion that reaches the end of its context
    # (HTTP 500 after the work is done), where ours ends it with finish_reason "length".
    block = run.model_config.block_size
    budgets = [min(args.max_tokens, block - 2 - len(run.tokenizer.encode(t))) for t in texts]
    servers: dict[str, Server] = {}
    try:
        servers["lanternlm"] = Server(str(run_dir), args.concurrency)
        servers["llama.cpp"] = Server(command=[
            sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", name,
            "--n_threads", "1", "--n_threads_batch", "1", "--n_ctx", str(run.model_config.block_size),
            "--interrupt_requests", "False"])  # by default a new request interrupts the running one
        print(f"serving {run_dir}:", flush=True)
        row = measure(servers, name, texts, budgets, args)
    finally:
        for server in servers.values():
            server.close()
    return {"run": str(run_dir), "shape": f"{run.model_config.n_layer} x {run.model_config.n_embd}",
            "requests": len(texts), **row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a base run (its completions are compared)")
    parser.add_argument("--shape-124m", action="store_true", help="also a random model of GPT-2 small's shape")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--requests-124m", type=int, default=16, help="requests for the 124M shape (slow on CPU)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    import llama_cpp

    from lanternlm.run import Run

    run = Run(args.run)
    texts = prompts(False, max(args.requests, args.requests_124m))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = [Path(args.run)] + ([random_124m(run, tmp / "shape-124m")] if args.shape_124m else [])
        rows = [compare(r, texts[:args.requests if i == 0 else args.requests_124m], args, tmp)
                for i, r in enumerate(runs)]
    c = args.concurrency
    lines = [f"| model | server | 1 stream | {c} streams | refused |", "|---|---|---|---|---|"]
    for row in rows:
        for label in ("lanternlm", "llama.cpp"):
            speed = row["speeds"][label]
            lines.append(f"| {row['shape']} | {label} | {speed[1]:,.0f} tok/s | {speed[c]:,.0f} tok/s | "
                         f"{len(row['errors'][label])} |")
        lines.append(f"| {row['shape']} | **ours / llama.cpp** | {row['ratio'][1]:.2f}x | **{row['ratio'][c]:.2f}x** | |")
    body = (f"## lantern serve beside llama.cpp's server (`bench/serve_peer.py`)\n\n"
            f"{platform.machine()}, 2 cores; each server one process with one CPU thread; llama-cpp-python "
            f"{llama_cpp.__version__} (built from PyPI) serving our GGUF export (fp32). "
            f"{' and '.join(str(row['requests']) + ' (' + row['shape'] + ')' for row in rows)} "
            f"`/v1/completions` requests on task text, greedy, up to {args.max_tokens} tokens (less where the prompt "
            f"leaves less room in the context window), not streamed; "
            f"aggregate completion tokens/s (each server's own usage counts), median of {args.runs} runs; "
            f"both servers run at once and take turns run by run, and the ratio row is the median of "
            f"each run's own ratio. "
            f"Goal: ours >= llama.cpp at {args.concurrency} streams for the tiny model.\n\n" + "\n".join(lines) +
            "".join(f"\n\n{label} refused {len(e)} of {row['requests'] * args.runs * 2} requests ({row['shape']}): "
                      + "; ".join(sorted(set(e)))
                      for row in rows for label, e in row["errors"].items() if e) +
            f"\n\nCommand: `python {' '.join(sys.argv)}`. Load average before: "
            f"{', '.join(f'{x:.2f}' for x in load_before)}; after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}.\n")
    print(body)
    if not args.no_write:
        write_section("serve_peer", body)


if __name__ == "__main__":
    main()
