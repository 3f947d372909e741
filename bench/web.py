"""The web page's cost: a chat stream as the page asks for it against the plain API stream.

    python bench/web.py --run RUN [--repeats 30] [--max-tokens 200] [--no-write]

The page asks every reply with ``logprobs`` (10 alternatives, raw and filtered, per token),
``return_token_ids`` and the usage chunk, so that each token can be opened and branched;
its panels load only after the reply ends (never per step). This measures what that costs
the stream: the same request (seeded, ``--max-tokens``, reasoning high with a thinking budget
of 8, so that most of the reply is answer, every token with its alternatives) through ``/v1/chat/completions`` with ``stream: true``, plain and as the page sends
it, alternating, ``--repeats`` times each, against one server in its own process (``lantern
serve RUN``, one torch thread, as in ``bench/serve.py``). Goal (issue 14 §4): the page's stream at most 10 % slower.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.results import write_section  # noqa: E402
from bench.serve import Server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a chat run")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    server = Server(args.run, max_batch=2)
    card = httpx.get(server.url + "/v1/models").json()["data"][0]
    name = card["id"]
    info = httpx.get(f"{server.url}/v1/inspect/model/{name}").json()
    url = server.url + "/v1/chat/completions"
    plain = dict(model=name, messages=[{"role": "user", "content": "How many r's are in strawberry?"}], stream=True,
                 max_completion_tokens=args.max_tokens, temperature=0.5, top_p=0.5, seed=1, reasoning_effort="high",
                 thinking_budget=8, stream_options={"include_usage": True})
    page = dict(plain, logprobs=True, top_logprobs=10, return_token_ids=True)

    def run(body: dict) -> tuple[float, int, int]:
        t0, tokens, size = time.perf_counter(), 0, 0
        with httpx.stream("POST", url, json=body, timeout=600) as r:
            for line in r.iter_lines():
                size += len(line) + 1
                if '"usage"' in line and '"choices": []' in line:
                    tokens = json.loads(line[6:])["usage"]["completion_tokens"]
        return time.perf_counter() - t0, tokens, size

    times: dict[str, list[float]] = {"plain": [], "page": []}
    tokens, sizes = {}, {}
    run(plain)  # warm up
    for _ in range(args.repeats):
        for key, body in (("plain", plain), ("page", page)):
            dt, tokens[key], sizes[key] = run(body)
            times[key].append(dt)
    server.close()
    assert tokens["plain"] == tokens["page"], tokens  # the same seeded reply

    rows = []
    for key in ("plain", "page"):
        med = statistics.median(times[key])
        rows.append(f"| {key} | {tokens[key]} | {sizes[key] / 1024:.0f} KiB | {med * 1000:.0f} ms | "
                    f"{min(times[key]) * 1000:.0f} ms | {tokens[key] / med:.0f} |")
    # each page run against the plain run just before it: a paired ratio cancels the drift of a shared machine
    slower = statistics.median([b / a for a, b in zip(times["plain"], times["page"])]) - 1
    best = min(times["page"]) / min(times["plain"]) - 1
    body = f"""## The web page's stream vs the plain API (`bench/web.py`)

{name} ({info["parameters"]:,} parameters), one stream at a time, {args.repeats}
runs each alternating, CPU ({platform.processor() or platform.machine()}, one torch thread, 2 cores shared with
other work). The page's request adds `logprobs` with 10 raw and 10 filtered alternatives per token,
`return_token_ids` and the usage chunk.

| request | tokens | stream size | median | best | tokens/s (median) |
|---|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

The page's stream takes **{100 * slower:+.1f} %** longer (median of the {args.repeats} paired ratios page / plain;
{100 * best:+.1f} % best against best); goal: at most +10 %. Its panels (attention, next token, ...) are separate requests made after the reply ends.
"""
    print(body)
    if not args.no_write:
        write_section("web", body)


if __name__ == "__main__":
    main()
