"""lantern serve under load: the HTTP streaming path against the engine called directly.

    python bench/serve.py --run RUN [--requests 1000] [--concurrency 16] [--no-write]

The server runs as its own process (``lantern serve RUN``, one torch thread) on 127.0.0.1;
the clients are asyncio + httpx in this process, reading the server-sent events as they
come. The same prompts (questions of the verifiable tasks for a chat run, the tasks' text
for a base run), greedy, ``--max-tokens`` each, with the run's own stop tokens:

1. **engine direct**: :meth:`Engine.stream` in this process (one torch thread), one request
   after another: generated tokens / wall time;
2. **HTTP, one stream**: the same requests one after another through ``/v1/chat/completions``
   (or ``/v1/completions``) with ``stream: true``; tokens from the usage chunk. Paired with 1:
   each request goes directly and then over HTTP before the next, so both see the same
   machine;
3. **HTTP, ``--concurrency`` streams**: twice as many requests with that many in flight,
   right after the run's one-stream part;
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
import tempfile
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
    """A server process on 127.0.0.1 with one CPU thread: ``lantern serve RUN`` by default, or
    ``command`` (a peer; ``--host``/``--port`` are added). Its stderr goes to a file: a pipe
    that nobody reads fills up and stalls the server at its next log line (llama.cpp's server
    prints timings after every request)."""

    def __init__(self, run: str | None = None, max_batch: int = 16, command: list[str] | None = None) -> None:
        self.port = free_port()
        if command is None:
            command = [sys.executable, "-m", "lanternlm.cli", "serve", run, "--max-batch", str(max_batch),
                       "--max-queue", "4096", "--device", "cpu"]
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command + ["--host", "127.0.0.1", "--port", str(self.port)],
                                        env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                                        stderr=self.log)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{command[:4]} exited: {self.stderr()}")
            try:
                if httpx.get(self.url + "/v1/models").status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.close()
        raise RuntimeError(f"{command[:4]} did not start: {self.stderr()}")

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def rss(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


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


class Direct:
    """The engine called directly in this process, as the server's worker calls it: the
    same rendering, stop tokens and greedy settings."""

    def __init__(self, run, max_tokens: int) -> None:
        from lanternlm.chat import render_for_generation
        from lanternlm.generate import encode_prompt
        from lanternlm.serve.completions import stop_tokens

        self.run, self.max_tokens, self.engine = run, max_tokens, run.engine("cpu")
        self.stops = stop_tokens(run.tokenizer, run.chat)
        self.render = (lambda m: render_for_generation(m, run.tokenizer)) if run.chat else \
            (lambda text: encode_prompt(run.tokenizer, text))
        self.request(ASK_WARM_UP if run.chat else "Hello", 4)

    def request(self, ask, max_tokens: int | None = None) -> tuple[int, float]:
        """One request through :meth:`Engine.stream`: tokens generated, seconds."""
        from lanternlm.sampling import SamplingParams

        t0, tokens = time.perf_counter(), 0
        for _ in self.engine.stream([self.render(ask)], max_tokens=max_tokens or self.max_tokens,
                                    sampling=SamplingParams(temperature=0), stop_tokens=self.stops):
            tokens += 1
        return tokens, time.perf_counter() - t0


ASK_WARM_UP = [{"role": "user", "content": "Hello!"}]


async def paired_speeds(direct: Direct, url: str, asks: list, bodies: list[dict], concurrent: list[dict],
                        concurrency: int) -> dict:
    """One repeat of the speed measurements, paired so that both sides of a ratio see the
    same machine (a shared CPU's speed drifts by a fifth within seconds): each request
    directly and then over HTTP, one stream, alternating; then ``concurrent`` at ``concurrency``
    streams. Tokens/s of each."""
    d_tokens = d_seconds = h_tokens = h_seconds = 0.0
    async with httpx.AsyncClient(timeout=600) as client:
        for ask, body in zip(asks, bodies):
            tokens, seconds = direct.request(ask)
            d_tokens, d_seconds = d_tokens + tokens, d_seconds + seconds
            result = await one_request(client, url, body)
            h_tokens, h_seconds = h_tokens + result["tokens"], h_seconds + result["t1"] - result["t0"]
    results, seconds = await drive(url, concurrent, concurrency)
    return {"direct": d_tokens / d_seconds, "one": h_tokens / h_seconds,
            "many": sum(r["tokens"] for r in results) / seconds}


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
    direct = Direct(run, args.max_tokens)
    server = Server(args.run, args.concurrency)
    try:
        url = server.url + path
        asyncio.run(drive(url, bodies[:2], 1))  # warm-up
        speeds = []
        for _ in range(args.runs):
            speeds.append(asyncio.run(paired_speeds(direct, url, asks[:args.speed_requests],
                                                    bodies[:args.speed_requests],
                                                    bodies[:args.speed_requests * 2], args.concurrency)))
            s = speeds[-1]
            print(f"direct {s['direct']:,.0f} tok/s, HTTP 1 stream {s['one']:,.0f} ({s['one'] / s['direct']:.2f}), "
                  f"{args.concurrency} streams {s['many']:,.0f} tok/s ({s['many'] / s['one']:.2f}x)", flush=True)
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
    d, o, m = (statistics.median(s[k] for s in speeds) for k in ("direct", "one", "many"))
    one_ratio = statistics.median(s["one"] / s["direct"] for s in speeds)
    many_ratio = statistics.median(s["many"] / s["one"] for s in speeds)
    tenth = rss[max(0, len(rss) // 10)][1] if rss else 0
    body = f"""## lantern serve under load (`bench/serve.py`)

{platform.machine()}, 2 cores shared by the server (one process, 1 torch thread, `--max-batch {args.concurrency}`) and the clients (asyncio + httpx, SSE), torch {torch.__version__}, CPU fp32. Run `{args.run}` (stage {run.stage}, {run.model_config.n_layer} layers x {run.model_config.n_embd}); task questions, greedy, up to {args.max_tokens} tokens, the run's stop tokens; speeds are medians of {args.runs} runs of {args.speed_requests} requests (concurrent: {args.speed_requests * 2}); the ratios are medians of each run's own ratio, paired: each request goes to the engine directly and then over HTTP, one after the other, and each run's concurrent part follows its one-stream part (the shared CPU's speed drifts by up to a fifth within seconds, so runs measured apart are not comparable).

| path | tokens/s | ratio |
|---|---|---|
| engine direct (`Engine.stream`, one request at a time) | {d:,.0f} | 1.00 |
| HTTP streaming, 1 stream | {o:,.0f} | **{one_ratio:.2f}** of direct (goal >= 0.85) |
| HTTP streaming, {args.concurrency} streams | {m:,.0f} | **{many_ratio:.2f}x** one stream (goal >= 4x) |

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
