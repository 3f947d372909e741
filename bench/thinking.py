"""Does thinking help? Base model → SFT → accuracy per task x reasoning level (issue 5 §5).

    python bench/thinking.py --out DIR [--base RUN | --data SHARDS --pretrain-minutes 6]
                             [--sft-minutes 20] [--preset tiny] [--n 50] [--label NAME]

1. **base**: ``--base RUN`` reuses a pretraining run; else ``PRETRAIN_PRESETS["tiny"]`` is
   trained on the shards ``--data`` for ``--pretrain-minutes`` into ``DIR/base``;
2. **SFT**: ``SFT_PRESETS[--preset]`` (tasks letters, arithmetic, reverse, glue at the four
   levels) for ``--sft-minutes`` / ``--sft-steps`` into ``DIR/sft``;
3. **eval**: :func:`lanternlm.evaluate.evaluate_run` on ``--n`` held-out examples per task
   at none / low / medium / high, greedy, plus bits per byte on the base validation shards
   (``--resume`` first continues an earlier ``DIR/sft`` to a larger budget: a second scale);
4. **batching speed**: fine-tuning steps (forward + backward) on the same conversations as
   length-bucketed padded batches (what SFT does) and as packed rows
   (:func:`lanternlm.data.loader.pack`, the alternative), trained tokens per second, median of 3.

Goals checked (issue 5 §5): on at least two tasks high beats none by >= 20 points;
high >= medium >= low; letter counting >= 90 % with reasoning. Writes the ``thinking``
section of ``bench/RESULTS.md`` (the task x level table with counts, the goal checks, the
scale, the timings). There is no outside peer for this measurement: the comparison is
between reasoning levels of the same model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import write_section  # noqa: E402


def goals(result: dict) -> list[str]:
    """The issue's quality goals, each with its verdict: on at least two tasks, high beats
    none by >= 20 points *and* high >= medium >= low; letter counting >= 90 % with
    reasoning, read as: at the default level (medium) and above. ``low`` is the terse
    trace, allowed to be less accurate (that is what the ordering goal asks for); its
    figure is shown too."""
    acc = {(r["task"], r["level"]): r["accuracy"] for r in result["rows"]}
    tasks = sorted({t for t, _ in acc})
    gains = {t: acc.get((t, "high"), 0) - acc.get((t, "none"), 0) for t in tasks}
    ordered = [t for t in tasks if acc.get((t, "high"), 0) >= acc.get((t, "medium"), 0) >= acc.get((t, "low"), 0)]
    both = [t for t in tasks if gains[t] >= 0.20 and t in ordered]
    letters = [acc[("letters", lv)] for lv in ("low", "medium", "high") if ("letters", lv) in acc]
    return [
        f"- on >= 2 tasks, high beats none by >= 20 points and high >= medium >= low: "
        f"**{'met' if len(both) >= 2 else 'missed'}** (both hold for {', '.join(both) or 'no task'}; "
        "gains high - none: " + ", ".join(f"{t} {gains[t] * 100:+.0f}" for t in tasks) +
        f"; high >= medium >= low holds for {', '.join(ordered) or 'no task'})",
        f"- letter counting >= 90 % with reasoning (medium, the default, and high): "
        f"**{'met' if len(letters) == 3 and min(letters[1:]) >= 0.9 else 'missed'}** "
        f"(low/medium/high: " + ", ".join(f"{a:.0%}" for a in letters) + ")",
    ]


def batching_speed(run: Path, steps: int = 6, repeats: int = 3) -> dict[str, float]:
    """Trained tokens per second of SFT steps (forward + backward of the training loop's
    step, :func:`lanternlm.train.loop.accumulate`): bucketed padded batches vs packed rows."""
    from lanternlm.data.loader import bucketed_batches, collate, pack
    from lanternlm.run import Run
    from lanternlm.train.distributed import init_distributed
    from lanternlm.train.loop import accumulate, counted_targets, token_loss
    from lanternlm.train.sft import SFTConfig, build_data

    source = Run(run)
    model, tokenizer = source.model("cpu"), source.tokenizer
    model.train()
    config = SFTConfig(base=str(run), examples_per_task=200, val_per_task=0)
    data, _, _ = build_data(config, tokenizer, model.config.block_size)
    pad, batch = tokenizer.pad_id, 16
    padded = [collate([data[i] for i in b], pad) for b in bucketed_batches([len(r.ids) for r in data], batch, 0)]
    rows = pack(data, model.config.block_size, pad)
    per_row = max(1, sum(len(r.ids) - 1 for r in data[:batch]) // model.config.block_size)
    packed = [(torch.tensor([r.inputs for r in rows[i:i + per_row]]), torch.tensor([r.targets for r in rows[i:i + per_row]]))
              for i in range(0, len(rows), per_row)]
    info = init_distributed("cpu")
    speeds = {}
    for name, batches in (("padded", padded), ("packed", packed)):
        times = []
        for _ in range(repeats):
            trained, t0 = 0, time.perf_counter()
            for x, y in batches[:steps]:
                accumulate(model, [(x, y)], counted_targets, token_loss, info)
                trained += counted_targets((x, y))
            times.append(trained / (time.perf_counter() - t0))
            model.zero_grad()
        speeds[name] = statistics.median(times)
    return speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the runs")
    parser.add_argument("--base", help="existing pretraining run to fine-tune")
    parser.add_argument("--data", help="token shards for pretraining a base (when no --base)")
    parser.add_argument("--pretrain-minutes", type=float, default=6.0)
    parser.add_argument("--preset", default="tiny", help="SFT preset")
    parser.add_argument("--sft-minutes", type=float, default=20.0)
    parser.add_argument("--sft-steps", type=int, help="SFT steps (default: the preset's, within the minutes)")
    parser.add_argument("--examples-per-task", type=int, help="override the preset's")
    parser.add_argument("--lr", type=float, help="override the preset's learning rate")
    parser.add_argument("--n", type=int, default=50, help="held-out examples per task and level")
    parser.add_argument("--label", default="", help="name of this scale in RESULTS.md")
    parser.add_argument("--skip-sft", action="store_true", help="evaluate an existing OUT/sft")
    parser.add_argument("--resume", action="store_true",
                        help="continue OUT/sft up to the new --sft-minutes (total) / --sft-steps, then evaluate")
    parser.add_argument("--section", default="thinking", help="name of the RESULTS.md section to write")
    parser.add_argument("--no-speed", action="store_true", help="skip the batching speed measurement")
    args = parser.parse_args()

    from lanternlm.evaluate import evaluate_run, format_table, markdown_table
    from lanternlm.log import logger, set_verbosity
    from lanternlm.run import Run
    from lanternlm.train.metrics import read_metrics
    from lanternlm.train.pretrain import PRETRAIN_PRESETS, pretrain
    from lanternlm.train.sft import SFT_PRESETS, sft

    set_verbosity()
    out = Path(args.out)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    timings = {}
    if args.base:
        base = Path(args.base)
    else:
        if not args.data:
            parser.error("give --base RUN or --data SHARDS")
        base = out / "base"
        pre = dataclasses.replace(PRETRAIN_PRESETS["tiny"], data=args.data, max_minutes=args.pretrain_minutes)
        pretrain(pre, base)
        timings["pretrain_min"] = (time.perf_counter() - t0) / 60

    run = out / "sft"
    overrides = {"base": str(base), "max_minutes": args.sft_minutes}
    if args.sft_steps:
        overrides["max_steps"] = args.sft_steps
    if args.examples_per_task:
        overrides["examples_per_task"] = args.examples_per_task
    if args.lr:
        overrides["lr"] = args.lr
    config = dataclasses.replace(SFT_PRESETS[args.preset], **overrides)
    t1 = time.perf_counter()
    summary = (json.loads((run / "sft_summary.json").read_text()) if args.skip_sft
               else sft(config, run, resume=args.resume))
    (run / "sft_summary.json").write_text(json.dumps(summary, indent=2))
    timings["sft_min"] = summary["elapsed_s"] / 60 if args.skip_sft else (time.perf_counter() - t1) / 60

    t2 = time.perf_counter()
    result = evaluate_run(run, n=args.n)
    timings["eval_min"] = (time.perf_counter() - t2) / 60
    logger.info("\n" + format_table(result))
    speed = {} if args.no_speed else batching_speed(run)

    base_cfg = Run(base).config
    base_steps = max((r["step"] for r in read_metrics(base / "metrics.jsonl")), default=0)
    mc = Run(run).model_config
    lines = [
        "## Thinking helps? (`bench/thinking.py`)" + (f" — {args.label}" if args.label else ""),
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {platform.machine()} CPU, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s); load average {load_before:.1f} "
        "at the start (times depend on what else runs; the accuracies are what matters).",
        "",
        f"- base: `{base_cfg.get('model')}` preset, {mc.n_layer} layers, width {mc.n_embd}, "
        f"{base_steps} pretraining steps on `{base_cfg.get('data')}`",
        f"- SFT: preset `{args.preset}`, {summary['steps']} steps ({summary['stopped']}), "
        f"{summary['epochs']:.2f} epochs of {config.examples_per_task} conversations x {len(config.tasks)} tasks "
        f"(levels none/low/medium/high in turn), context {mc.block_size}, lr {config.lr}, "
        f"final train loss {summary.get('train_loss', float('nan')):.3f}, val loss {summary.get('val_loss', float('nan')):.3f}",
        f"- eval: {args.n} held-out examples per task and level (test split), greedy, up to 320 tokens",
        "- time: " + ", ".join(f"{k[:-4]} {v:.1f} min" for k, v in timings.items()),
        "",
        "Accuracy (correct/examples, mean thinking tokens):",
        "",
        markdown_table(result),
        "",
    ]
    if result.get("bpb") is not None:
        lines.append(f"Bits per byte on the base validation shards: fine-tuned {result['bpb']:.4f}, base "
                     f"{result['base_bpb']:.4f} ({result['bpb'] - result['base_bpb']:+.4f}: what SFT cost on plain text).")
        lines.append("")
    lines += ["Goals (issue 5 §5):", "", *goals(result), ""]
    if speed:
        lines.append(f"Batching (SFT steps on CPU, trained tokens/s, median of 3): length-bucketed padding "
                     f"{speed['padded']:,.0f}, packed rows {speed['packed']:,.0f} (ratio packed/padded "
                     f"{speed['packed'] / speed['padded']:.2f}). Packing would also need a per-conversation "
                     f"attention mask the model does not have, so SFT pads.")
        lines.append("")
    write_section(args.section, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
