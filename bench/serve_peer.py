"""lantern serve beside a real peer: llama-cpp-python's OpenAI-compatible server on the same
model exported to GGUF, same requests, 1 and 16 concurrent clients.

    pip install 'llama-cpp-python[server]'      # built from PyPI (a few minutes on 2 cores)
    python bench/serve_peer.py --run RUN [--shape-124m] [--requests 32] [--no-write]

Each server runs as its own process with one CPU thread (``lantern serve RUN`` with
``OMP_NUM_THREADS=1``; ``python -m llama_cpp.server --n_threads 1``); the run is exported with
:func:`lanternlm.interop.gguf.export_gguf`. Requests: ``/v1/completions`` on task questions'
text, greedy, ``--max-tokens`` each, not streamed; tokens counted from each response's
``usage.completion_tokens`` (both stop at the end-of-text token, so the counts are each
server's own). Aggregate tokens/s = all completion tokens / wall time, median of ``--runs``.
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import write_section  # noqa: E402
from serve import free_port, prompts  # noqa: E402


def start(command: list[str], url: str) -> subprocess.Popen:
    process = subprocess.Popen(command, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[:4]} exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/v1/models").status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
    raise RuntimeError(f"{command[:4]} did not start")


async def drive(url: str, bodies: list[dict], concurrency: int) -> tuple[int, float, int]:
    """Tokens generated, seconds, errors."""
    queue, tokens, errors = list(reversed(bodies)), 0, 0
    async with httpx.AsyncClient(timeout=600) as client:
        async def worker() -> None:
            nonlocal tokens, errors
            while queue:
                r = await client.post(url + "/v1/completions", json=queue.pop())
                if r.status_code == 200:
                    tokens += r.json()["usage"]["completion_tokens"]
                else:
                    errors += 1
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return tokens, time.perf_counter() - t0, errors


def measure(url: str, model: str, texts: list[str], args) -> dict:
    bodies = [{"model": model, "prompt": t, "max_tokens": args.max_tokens, "temperature": 0} for t in texts]
    asyncio.run(drive(url, bodies[:2], 1))  # warm-up
    out = {}
    for concurrency in (1, args.concurrency):
        speeds, errors = [], 0
        for _ in range(args.runs):
            tokens, seconds, bad = asyncio.run(drive(url, bodies, concurrency))
            speeds.append(tokens / seconds)
            errors += bad
        out[concurrency] = (statistics.median(speeds), errors)
        print(f"  {concurrency} streams: {out[concurrency][0]:,.0f} tok/s ({errors} errors)", flush=True)
    return out


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
    name, row = run_dir.resolve().name, {"run": str(run_dir), "shape": f"{run.model_config.n_layer} x {run.model_config.n_embd}"}
    for label, command in (
            ("lanternlm", [sys.executable, "-m", "lanternlm.cli", "serve", str(run_dir), "--max-batch",
                           str(args.concurrency), "--device", "cpu"]),
            ("llama.cpp", [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", name,
                           "--n_threads", "1", "--n_threads_batch", "1", "--n_ctx", str(run.model_config.block_size),
                           "--interrupt_requests", "False"])):  # by default a new request interrupts the running one
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = start(command + ["--port", str(port), "--host", "127.0.0.1"], url)
        print(f"{label} serving {run_dir}:", flush=True)
        try:
            row[label] = measure(url, name, texts, args)
        finally:
            process.terminate()
            process.wait(30)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a base run (its completions are compared)")
    parser.add_argument("--shape-124m", action="store_true", help="also a random model of GPT-2 small's shape")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    import llama_cpp

    from lanternlm.run import Run

    run = Run(args.run)
    texts = prompts(False, args.requests)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = [Path(args.run)] + ([random_124m(run, tmp / "shape-124m")] if args.shape_124m else [])
        rows = [compare(r, texts, args, tmp) for r in runs]
    lines = [f"| model | server | 1 stream | {args.concurrency} streams | errors |", "|---|---|---|---|---|"]
    for row in rows:
        for label in ("lanternlm", "llama.cpp"):
            (one, e1), (many, e2) = row[label][1], row[label][args.concurrency]
            lines.append(f"| {row['shape']} | {label} | {one:,.0f} tok/s | {many:,.0f} tok/s | {e1 + e2} |")
        ratio = row["lanternlm"][args.concurrency][0] / row["llama.cpp"][args.concurrency][0]
        lines.append(f"| {row['shape']} | **ours / llama.cpp at {args.concurrency} streams** | | **{ratio:.2f}x** | |")
    body = (f"## lantern serve beside llama.cpp's server (`bench/serve_peer.py`)\n\n"
            f"{platform.machine()}, 2 cores; each server one process with one CPU thread; llama-cpp-python "
            f"{llama_cpp.__version__} (built from PyPI) serving our GGUF export (fp32). {args.requests} "
            f"`/v1/completions` requests on task text, greedy, up to {args.max_tokens} tokens, not streamed; "
            f"aggregate completion tokens/s (each server's own usage counts), median of {args.runs} runs. "
            f"Goal: ours >= llama.cpp at {args.concurrency} streams for the tiny model.\n\n" + "\n".join(lines) +
            f"\n\nCommand: `python {' '.join(sys.argv)}`. Load average before: "
            f"{', '.join(f'{x:.2f}' for x in load_before)}; after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}.\n")
    print(body)
    if not args.no_write:
        write_section("serve_peer", body)


if __name__ == "__main__":
    main()
