"""lantern serve under load: the HTTP streaming path against the engine called directly.

    python bench/serve.py --run RUN [--requests 1000] [--concurrency 16] [--no-write]

The server runs as its own process (``lantern serve RUN``, one torch thread) on 127.0.0.1;
the clients are asyncio + httpx in this process, reading the server-sent events as they
come. The same prompts (questions of the verifiable tasks for a chat run, the tasks' text
for a base run), greedy, ``--max-tokens`` each, with the run's own stop tokens:

1. **engine direct**: :meth:`Engine.stream` in this process (one torch thread), one request
   after another: generated tokens / wall time;
2. **HTTP, one stream**: the same requests one after another through ``/v1/chat/completions``
   (or ``/v1/completions``) with ``stream: true``; tokens from the usage chunk;
3. **HTTP, ``--concurrency`` streams**: the same requests with that many in flight;
4. **load**: ``--requests`` requests (the prompts in turn) at ``--concurrency`` streams: errors,
   time to first token and between tokens (p50/p99, per content chunk), aggregate tokens/s,
   and the server's resident memory sampled every 0.5 s (flat = no leak).

Goals (issue 13 §5): 0 errors; HTTP at one stream >= 85 % of the engine's tokens/s;
aggregate at 16 streams >= 4x one stream. Figures are CPU ratios (2 cores shared by server
and clients).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import write_section  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prompts(chat: bool, n: int) -> list:
    """Chat messages (``chat``) or texts: task questions."""
    from lanternlm.tasks import make_sft_mixture

    conversations = make_sft_mixture(["letters", "arithmetic", "reverse", "glue"], max(1, n // 4 + 1), seed=7)
    asks = [[m for m in c if m["role"] == "user"][:1] for c in conversations] if chat else \
        [c[-1]["content"] for c in conversations]
    return [asks[i % len(asks)] for i in range(n)]  # glue has few distinct questions: cycle to n


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))] if values else float("nan")


class Server:
    def __init__(self, run: str, max_batch: int) -> None:
        self.port = free_port()
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.process = subprocess.Popen([sys.executable, "-m", "lanternlm.cli", "serve", run, "--port", str(self.port),
                                         "--max-batch", str(max_batch), "--max-queue", "4096", "--device", "cpu"],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health").status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start: " + self.process.stderr.read().decode()[-2000:])

    def rss(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)


async def one_request(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    """Stream one request; returns tokens, time to first content, gaps between chunks."""
    t0 = time.perf_counter()
    stamps, tokens, error = [], 0, None
    async with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            return {"error": f"HTTP {response.status_code}", "tokens": 0, "stamps": [], "t0": t0}
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                error = chunk["error"]["message"]
            elif chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"]:
                choice = chunk["choices"][0]
                if choice.get("text") or (choice.get("delta") or {}).get("content") or \
                        (choice.get("delta") or {}).get("reasoning_content"):
                    stamps.append(time.perf_counter())
    return {"error": error, "tokens": tokens, "stamps": stamps, "t0": t0, "t1": time.perf_counter()}


async def drive(url: str, bodies: list[dict], concurrency: int, on_tick=None) -> tuple[list[dict], float]:
    queue = list(reversed(bodies))
    results: list[dict] = []
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        async def worker() -> None:
            while queue:
                body = queue.pop()
                try:
                    results.append(await one_request(client, url, body))
                except httpx.HTTPError as err:
                    results.append({"error": repr(err), "tokens": 0, "stamps": [], "t0": 0})

        async def ticker() -> None:
            while True:
                on_tick()
                await asyncio.sleep(0.5)

        tick = asyncio.ensure_future(ticker()) if on_tick else None
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
        if tick:
            tick.cancel()
    return results, seconds


def engine_direct(run, messages: list, max_tokens: int) -> tuple[int, float]:
    from lanternlm.chat import render_for_generation
    from lanternlm.generate import encode_prompt
    from lanternlm.sampling import SamplingParams
    from lanternlm.serve.completions import stop_tokens

    engine, tokenizer = run.engine("cpu"), run.tokenizer
    stops = stop_tokens(tokenizer, run.chat)  # as the server
    ids = [render_for_generation(m, tokenizer) if run.chat else encode_prompt(tokenizer, m) for m in messages]
    engine.generate([ids[0]], max_tokens=4, sampling=SamplingParams(temperature=0), stop_tokens=stops)  # warm-up
    tokens, t0 = 0, time.perf_counter()
    for prompt in ids:
        for _ in engine.stream([prompt], max_tokens=max_tokens, sampling=SamplingParams(temperature=0),
                               stop_tokens=stops):
            tokens += 1
    return tokens, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="the run to serve")
    parser.add_argument("--requests", type=int, default=1000, help="requests of the load test")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--speed-requests", type=int, default=32, help="requests of each speed measurement")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3, help="repeats of each speed measurement (median)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from lanternlm.run import Run

    torch.set_num_threads(1)
    run = Run(args.run)
    asks = prompts(run.chat, max(args.requests, args.speed_requests))
    key = "messages" if run.chat else "prompt"
    path = "/v1/chat/completions" if run.chat else "/v1/completions"
    name = Path(args.run).resolve().name
    bodies = [{"model": name, key: a, "max_tokens": args.max_tokens, "temperature": 0, "stream": True,
               "stream_options": {"include_usage": True}} for a in asks]
    load_before = os.getloadavg()
    direct = []
    for _ in range(args.runs):
        tokens, seconds = engine_direct(run, asks[:args.speed_requests], args.max_tokens)
        direct.append(tokens / seconds)
        print(f"engine direct: {tokens} tokens, {direct[-1]:,.0f} tok/s", flush=True)
    server = Server(args.run, args.concurrency)
    try:
        url = server.url + path
        asyncio.run(drive(url, bodies[:2], 1))  # warm-up
        one, many = [], []
        for _ in range(args.runs):
            results, seconds = asyncio.run(drive(url, bodies[:args.speed_requests], 1))
            one.append(sum(r["tokens"] for r in results) / seconds)
            results, seconds = asyncio.run(drive(url, bodies[:args.speed_requests * 2], args.concurrency))
            many.append(sum(r["tokens"] for r in results) / seconds)
            print(f"HTTP: 1 stream {one[-1]:,.0f} tok/s, {args.concurrency} streams {many[-1]:,.0f} tok/s", flush=True)
        rss: list[tuple[float, int]] = []
        t_start = time.perf_counter()
        results, seconds = asyncio.run(drive(url, bodies[:args.requests], args.concurrency,
                                             on_tick=lambda: rss.append((time.perf_counter() - t_start, server.rss()))))
    finally:
        server.close()
    errors = [r["error"] for r in results if r["error"]]
    ttft = [(r["stamps"][0] - r["t0"]) * 1000 for r in results if r["stamps"]]
    gaps = [(b - a) * 1000 for r in results for a, b in zip(r["stamps"], r["stamps"][1:])]
    total = sum(r["tokens"] for r in results)
    d, o, m = statistics.median(direct), statistics.median(one), statistics.median(many)
    tenth = rss[max(0, len(rss) // 10)][1] if rss else 0
    body = f"""## lantern serve under load (`bench/serve.py`)

{platform.machine()}, 2 cores shared by the server (one process, 1 torch thread, `--max-batch {args.concurrency}`) and the clients (asyncio + httpx, SSE), torch {torch.__version__}, CPU fp32. Run `{args.run}` (stage {run.stage}, {run.model_config.n_layer} layers x {run.model_config.n_embd}); task questions, greedy, up to {args.max_tokens} tokens, the run's stop tokens; speeds are medians of {args.runs} runs of {args.speed_requests} requests (concurrent: {args.speed_requests * 2}).

| path | tokens/s | ratio |
|---|---|---|
| engine direct (`Engine.stream`, one request at a time) | {d:,.0f} | 1.00 |
| HTTP streaming, 1 stream | {o:,.0f} | **{o / d:.2f}** of direct (goal >= 0.85) |
| HTTP streaming, {args.concurrency} streams | {m:,.0f} | **{m / o:.2f}x** one stream (goal >= 4x) |

Load: {len(results)} requests at {args.concurrency} concurrent streams in {seconds:.1f} s: **{len(errors)} errors**; {total:,} tokens, aggregate {total / seconds:,.0f} tokens/s; time to first token p50 {percentile(ttft, 50):.0f} ms, p99 {percentile(ttft, 99):.0f} ms; time between content chunks p50 {percentile(gaps, 50):.1f} ms, p99 {percentile(gaps, 99):.1f} ms. Server resident memory: {tenth / 2**20:.0f} MiB at 10 % of the run, {rss[-1][1] / 2**20 if rss else 0:.0f} MiB at the end, peak {max((r for _, r in rss), default=0) / 2**20:.0f} MiB ({len(rss)} samples).

Command: `python {' '.join(sys.argv)}`. Load average before: {', '.join(f'{x:.2f}' for x in load_before)}; after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}.
"""
    print(body)
    if errors:
        print("errors:", errors[:5])
    if not args.no_write:
        write_section("serve_load", body)


if __name__ == "__main__":
    main()
