"""Serving: the engine's scheduler (continuous batching) against one request after another.

    python bench/scheduler.py --threads 1               # tiny and 124M shapes, CPU fp32; writes bench/RESULTS.md
    python bench/scheduler.py --models tiny --runs 5 --no-write

The workload: ``--requests`` (32) requests with mixed prompt and answer lengths (each drawn
uniformly from ``--prompt-lengths`` and ``--answer-lengths``; greedy and without a stop token,
so a request generates exactly its answer length), arriving over time on a fixed, seeded
schedule: exponential gaps of mean ``--gap-ms`` (per model, see ``GAP_MS``), the first at 0.
Both servers run on the same engine:

- **one after another**: :meth:`Engine.generate` of one prompt at a time in arrival order,
  each starting once it has arrived and the previous one is done;
- **scheduler**: one :class:`~lanternlm.engine.Scheduler` with ``--max-batch`` (16) rows; a
  request is submitted once it has arrived, joins the running batch at the next step when a
  row is free, and leaves it when done.

Throughput = generated tokens / (last completion - first arrival), median of ``--runs`` runs
(after one warm-up request each), the two servers timed in turn within a run. Check: every
completion of the scheduler equals the same request served alone (the baseline's), token for
token. Weights: random with ``--init-std`` (0.1): at GPT-2's 0.02 a random model's next-token
distributions are nearly flat, so the float rounding of different batch shapes can flip an
argmax and the check would measure noise; ``--tiny-run RUN`` serves a trained run at the tiny
shape instead (``runs/quickstart/run`` when it exists). Goal: >= 4x at 16 concurrent requests
for the tiny shape.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from lanternlm.engine import Engine, Request, Scheduler
from lanternlm.model import GPT, MODEL_PRESETS
from lanternlm.sampling import SamplingParams
from results import write_section

SHAPES = {"tiny": "tiny", "124M": "gpt2-124m"}  # label -> MODEL_PRESETS name
GAP_MS = {"tiny": 5.0, "124M": 100.0}  # mean gap between arrivals: well below one request's service time
QUICKSTART_RUN = Path(__file__).resolve().parents[1] / "runs" / "quickstart" / "run"
GREEDY = SamplingParams(temperature=0)


def workload(n: int, prompt_lengths: tuple[int, int], answer_lengths: tuple[int, int], vocab: int,
             gap_ms: float, seed: int) -> list[tuple[float, Request]]:
    """``n`` (arrival in seconds, request) pairs in arrival order, the same for every run."""
    rng = random.Random(seed)
    arrivals, now = [], 0.0
    for i in range(n):
        prompt = [rng.randrange(vocab) for _ in range(rng.randint(*prompt_lengths))]
        arrivals.append((now, Request(prompt, max_tokens=rng.randint(*answer_lengths), sampling=GREEDY)))
        now += rng.expovariate(1000.0 / gap_ms)
    return arrivals


def wait_until(start: float, at: float) -> None:
    delay = start + at - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def one_after_another(engine: Engine, arrivals: list[tuple[float, Request]]) -> tuple[float, list[list[int]]]:
    """Seconds from the first arrival to the last completion, and every request's tokens."""
    start, tokens = time.perf_counter(), []
    for at, request in arrivals:
        wait_until(start, at)
        tokens.append(engine.generate([request.prompt], max_tokens=request.max_tokens, sampling=GREEDY)[0].tokens)
    return time.perf_counter() - start, tokens


def scheduled(engine: Engine, arrivals: list[tuple[float, Request]],
              max_batch: int) -> tuple[float, list[list[int]], float]:
    """As :func:`one_after_another`, plus the mean number of running rows per step."""
    scheduler = Scheduler(engine, max_batch)
    pending, tokens, running = collections.deque(arrivals), collections.defaultdict(list), []
    start = time.perf_counter()
    while pending or not scheduler.idle:
        if scheduler.idle:
            wait_until(start, pending[0][0])
        while pending and pending[0][0] <= time.perf_counter() - start:
            scheduler.submit(pending.popleft()[1])  # ids 0, 1, ... in arrival order
        for event in scheduler.step():
            tokens[event.request].append(event.token)
        running.append(scheduler.num_active)
    seconds = time.perf_counter() - start
    scheduler.close()
    return seconds, [tokens[i] for i in range(len(arrivals))], statistics.mean(running)


def make_model(label: str, args) -> tuple[GPT, str]:
    """The model to serve and how its weights were made."""
    run = args.tiny_run or (QUICKSTART_RUN if QUICKSTART_RUN.is_dir() else None)
    if label == "tiny" and run is not None:
        from lanternlm.run import Run

        return Run(run).model("cpu"), f"trained run `{run}`"
    torch.manual_seed(0)
    config = dataclasses.replace(MODEL_PRESETS[SHAPES[label]], init_std=args.init_std)
    return GPT(config).eval(), f"random, init_std {args.init_std}"


def bench(label: str, args) -> dict:
    model, weights = make_model(label, args)
    engine = Engine(model)
    gap = args.gap_ms if args.gap_ms is not None else GAP_MS[label]
    arrivals = workload(args.requests, args.prompt_lengths, args.answer_lengths,
                        model.config.vocab_size, gap, args.seed)
    total = sum(r.max_tokens for _, r in arrivals)
    engine.generate([arrivals[0][1].prompt], max_tokens=4, sampling=GREEDY)  # warm-up
    alone_speeds, batched_speeds, running, same = [], [], [], 0
    for run in range(args.runs):
        seconds, alone = one_after_another(engine, arrivals)
        alone_speeds.append(total / seconds)
        seconds, batched, mean_running = scheduled(engine, arrivals, args.max_batch)
        batched_speeds.append(total / seconds)
        running.append(mean_running)
        assert all(len(t) == r.max_tokens for t, (_, r) in zip(alone, arrivals))
        same = sum(a == b for a, b in zip(alone, batched))
        print(f"{label} run {run + 1}: one after another {alone_speeds[-1]:,.0f} tok/s, scheduler "
              f"{batched_speeds[-1]:,.0f} tok/s ({mean_running:.1f} rows per step), "
              f"same tokens {same}/{len(arrivals)}", flush=True)
    alone, batched = statistics.median(alone_speeds), statistics.median(batched_speeds)
    return {"label": label, "weights": weights, "gap": gap, "tokens": total, "alone": alone,
            "batched": batched, "ratio": batched / alone, "running": statistics.median(running),
            "ratios": [b / a for a, b in zip(alone_speeds, batched_speeds)], "same": f"{same}/{len(arrivals)}"}


def table(rows: list[dict], max_batch: int) -> str:
    lines = ["| model | weights | mean gap | tokens | one after another | scheduler (<= "
             f"{max_batch} at once) | ratio | per-run ratios | running rows per step | same greedy tokens |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['weights']} | {r['gap']:g} ms | {r['tokens']:,} | "
                     f"{r['alone']:,.0f} tok/s | {r['batched']:,.0f} tok/s | {r['ratio']:.2f}x | "
                     f"{', '.join(f'{x:.2f}' for x in r['ratios'])} | {r['running']:.1f} | {r['same']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,124M", help="shapes: tiny, 124M")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=16, help="the scheduler's rows")
    parser.add_argument("--prompt-lengths", type=int, nargs=2, default=(8, 64), metavar=("MIN", "MAX"))
    parser.add_argument("--answer-lengths", type=int, nargs=2, default=(16, 64), metavar=("MIN", "MAX"))
    parser.add_argument("--gap-ms", type=float, default=None, help="mean gap between arrivals "
                        f"(default per model: {GAP_MS})")
    parser.add_argument("--init-std", type=float, default=0.1, help="random weights' init std")
    parser.add_argument("--tiny-run", default=None, help="a trained run to serve at the tiny shape")
    parser.add_argument("--seed", type=int, default=0, help="the workload's seed")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows = [bench(label, args) for label in args.models.split(",")]
    load_after = os.getloadavg()
    body = (f"## Serving: scheduler vs one request after another (`bench/scheduler.py`)\n\n"
            f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
            f"CPU, fp32. {args.requests} greedy requests, prompts of {args.prompt_lengths[0]}-"
            f"{args.prompt_lengths[1]} tokens, answers of {args.answer_lengths[0]}-{args.answer_lengths[1]} "
            f"(uniform, no stop token), arriving with exponential gaps (seed {args.seed}); served by one "
            f"`Scheduler` of {args.max_batch} rows (requests join the running batch and leave it when "
            f"done) and by `Engine.generate` one request at a time in arrival order, on the same "
            f"engine. Generated tokens/s from the first arrival to the last completion, median of "
            f"{args.runs} runs; the ratio is of the medians. \"Same greedy tokens\" compares every "
            f"scheduler completion with the same request served alone. Goal: >= 4x for the tiny shape "
            f"at 16 concurrent requests.\n\n{table(rows, args.max_batch)}\n\n"
            f"Command: `python {' '.join(sys.argv)}`. Load average (1, 5, 15 min) before: "
            f"{', '.join(f'{x:.2f}' for x in load_before)}; after: "
            f"{', '.join(f'{x:.2f}' for x in load_after)} (2 cores, shared with other sessions).\n")
    print(body)
    if not args.no_write:
        write_section("scheduler", body)


if __name__ == "__main__":
    main()
