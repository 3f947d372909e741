"""Preference tuning from a chat run: on-policy pairs → DPO → accuracy before/after; a reward
model → held-out pair accuracy against single-feature baselines, and best-of-8.

    python bench/preference.py --chat runs/quickstart/chat --out DIR --label quickstart \\
        --tasks letters --dpo-minutes 2 --questions 120 --n 100 --no-reward
    python bench/preference.py --chat DIR/sft --out DIR --label goal --n 500          # the goal scale

1. **pairs**: :func:`lanternlm.tasks.pairs.on_policy_pairs` samples ``--samples`` (8)
   answers per question from the chat run (``--questions`` training questions per task,
   a quarter as many held-out ones from the test split, the levels in turn), pairs a right
   with a wrong answer; the band warnings of tasks outside 20-80 % are printed;
2. **DPO**: ``lantern dpo`` (preset ``tiny`` with the flags here) on those pairs for
   ``--dpo-minutes``; held-out pair accuracy at the start (0.5: the policy is the
   reference) and at every evaluation; whether the held-out chosen answers' log-probability
   ever fell below its start (``val_rewards_chosen`` < 0);
3. **accuracy**: ``lantern eval``'s greedy accuracy per task x level on ``--n`` held-out
   questions, for the chat run and the DPO run, and the share of answers that changed;
4. **reward model** (unless ``--no-reward``): ``lantern reward`` on the same pairs; held-out
   pair accuracy against the best single-feature rule (prefer the longer or the shorter
   answer, or thinking); best-of-8 on ``--bo-task`` at ``high`` (samples at temperature
   1, the reward model picks) against the chat run's greedy accuracy on the same questions.

Writes section ``preference_<label>`` of ``bench/RESULTS.md``. Goals (issue 11 §5) are
stated beside each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import write_section  # noqa: E402
from lanternlm.chat import REASONING_LEVELS, ChatTokens, render_for_generation, split_reply  # noqa: E402
from lanternlm.data.preference import load_pairs, render_pair  # noqa: E402
from lanternlm.evaluate import evaluate_tasks  # noqa: E402
from lanternlm.run import Run  # noqa: E402
from lanternlm.train.dpo import DPO_PRESETS, dpo  # noqa: E402
from lanternlm.train.pairs import TRAIN_PAIRS, VAL_PAIRS  # noqa: E402


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def accuracy_table(before: list[dict], after: list[dict]) -> tuple[str, dict]:
    cells = {}
    lines = ["| task | " + " | ".join(REASONING_LEVELS) + " | constant answer |",
             "|---|" + "---|" * (len(REASONING_LEVELS) + 1)]
    for task in dict.fromkeys(r["task"] for r in before):
        row = []
        for level in REASONING_LEVELS:
            a = next((r for r in before if r["task"] == task and r["level"] == level), None)
            b = next((r for r in after if r["task"] == task and r["level"] == level), None)
            if a is None:
                row.append("")
                continue
            cells[(task, level)] = (a["accuracy"], b["accuracy"])
            row.append(f"{a['accuracy']:.0%} → {b['accuracy']:.0%} ({(b['accuracy'] - a['accuracy']) * 100:+.0f})")
        baseline = next(r.get("baseline") for r in before if r["task"] == task)
        lines.append(f"| {task} | " + " | ".join(row) + f" | {f'{baseline[1]:.0%} ({baseline[0]!r})' if baseline else '-'} |")
    return "\n".join(lines), cells


def changed(before: list[dict], after: list[dict]) -> float:
    pairs = [(a, b) for ra, rb in zip(before, after) for a, b in zip(ra["samples"], rb["samples"])]
    return sum(a["answer"] != b["answer"] for a, b in pairs) / max(1, len(pairs))


def baselines(pairs, tokenizer) -> dict[str, float]:
    """Held-out pair accuracy of rules that look at one feature: prefer the longer answer
    (or the shorter), the longer thinking (or the shorter); ties count half."""
    chat = ChatTokens.of(tokenizer)
    features = {"answer length": [], "thinking length": []}
    for pair in pairs:
        c, r = render_pair(pair, tokenizer)
        lengths = []
        for rendered in (c, r):
            reply = [t for t, m in zip(rendered.ids, rendered.mask) if m]
            thinking, answer = split_reply(reply, chat)
            lengths.append((len(answer), len(thinking)))
        features["answer length"].append((lengths[0][0], lengths[1][0]))
        features["thinking length"].append((lengths[0][1], lengths[1][1]))
    out = {}
    for name, values in features.items():
        longer = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in values) / len(values)
        out[f"longer {name}"], out[f"shorter {name}"] = longer, 1 - longer
    return out


def best_of_eight(chat: Run, rm_run: Path, task_name: str, n: int, seed: int) -> tuple[float, float, int]:
    """Greedy accuracy and best-of-8 (reward model) accuracy on ``n`` held-out questions at high."""
    from lanternlm.reward import RewardModel, best_of_n
    from lanternlm.sampling import SamplingParams
    from lanternlm.tasks import get_task

    task = get_task(task_name)
    tokenizer, engine = chat.tokenizer, chat.engine()
    rm = RewardModel(rm_run)
    examples = task.generate(n, seed, split="test", at_most=True)
    greedy = evaluate_tasks(engine, tokenizer, [task_name], ["high"], len(examples), seed=seed)[0]["accuracy"]
    right = 0
    for start in range(0, len(examples), 8):
        batch = examples[start:start + 8]
        prompts = [render_for_generation(task.to_conversation(ex, "high")[:-1], tokenizer, "high") for ex in batch]
        picked = best_of_n(engine, rm, tokenizer, prompts, 8, max_tokens=320,
                           sampling=SamplingParams(temperature=1.0, seed=seed + start), truncate="left")
        for ex, (best, _, completions) in zip(batch, picked):
            right += task.grade(ex, completions[best].tokens, tokenizer).correct
    return greedy, right / len(examples), len(examples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chat", required=True, help="chat run to start from (lantern sft)")
    parser.add_argument("--out", required=True, help="folder for the runs")
    parser.add_argument("--label", default="goal", help="scale name: section preference_<label> of RESULTS.md")
    parser.add_argument("--tasks", default="letters,arithmetic,reverse")
    parser.add_argument("--eval-tasks", default="letters,arithmetic,reverse,glue", help="tasks of the accuracy table")
    parser.add_argument("--questions", type=int, default=400, help="training questions per task for the pairs")
    parser.add_argument("--samples", type=int, default=8, help="answers per question")
    parser.add_argument("--dpo-minutes", type=float, default=10.0)
    parser.add_argument("--lr", type=float, default=DPO_PRESETS["tiny"].lr)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--rpo-alpha", type=float, default=0.0)
    parser.add_argument("--max-steps", type=int, default=DPO_PRESETS["tiny"].max_steps)
    parser.add_argument("--n", type=int, default=500, help="held-out questions per task and level in the eval")
    parser.add_argument("--no-reward", action="store_true", help="skip the reward model")
    parser.add_argument("--reward-minutes", type=float, default=5.0)
    parser.add_argument("--bo-task", default="arithmetic", help="task of the best-of-8 check")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    tasks = args.tasks.split(",")
    chat = Run(args.chat)
    t0 = time.perf_counter()

    # 1-2: pairs and DPO, one command
    dpo_run = out / f"dpo-{args.label}"
    config = DPO_PRESETS["tiny"]
    from dataclasses import replace
    config = replace(config, base=args.chat, pairs_from_tasks=tasks, pair_questions=args.questions,
                     pair_samples=args.samples, max_minutes=args.dpo_minutes, max_steps=args.max_steps,
                     lr=args.lr, beta=args.beta, rpo_alpha=args.rpo_alpha)
    summary = dpo(config, dpo_run)
    dpo_minutes = (time.perf_counter() - t0) / 60
    lines = read_metrics(dpo_run)
    evals = [line for line in lines if "val_accuracy" in line]
    fell = min(line["val_rewards_chosen"] for line in evals)
    record = json.loads((dpo_run / "config.json").read_text())

    # 3: accuracy before and after
    t1 = time.perf_counter()
    eval_tasks = args.eval_tasks.split(",")
    before = evaluate_tasks(chat.engine(), chat.tokenizer, eval_tasks, REASONING_LEVELS, args.n, keep_examples=args.n)
    after_run = Run(dpo_run)
    after = evaluate_tasks(after_run.engine(), after_run.tokenizer, eval_tasks, REASONING_LEVELS, args.n,
                           keep_examples=args.n)
    table, cells = accuracy_table(before, after)
    eval_minutes = (time.perf_counter() - t1) / 60
    share = changed(before, after)
    worst = min(b - a for a, b in cells.values())

    body = [f"## Preference tuning at the {args.label} scale (`bench/preference.py`)", "",
            f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {platform.machine()} CPU, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s); load average "
            f"{os.getloadavg()[0]:.1f} at the end.", "",
            f"- chat run: `{args.chat}` ({chat.model_config.n_layer} layers, width {chat.model_config.n_embd})",
            f"- pairs: {args.questions} training questions per task ({', '.join(tasks)}), {args.samples} answers "
            f"each at temperature 1, levels in turn: {record['data']['train']} training pairs, "
            f"{record['data']['val']} held out (test-split questions)",
            f"- DPO: sigmoid, β {args.beta}, lr {args.lr}, RPO α {args.rpo_alpha}, batch {config.batch_size} pairs, "
            f"{summary['steps']} steps ({summary['stopped']}); **{dpo_minutes:.1f} min** including the pairs "
            f"(goal ≤ 15 min at the goal scale)",
            "- held-out pair accuracy: 0.50 at the start → " + ", ".join(
                f"{line['val_accuracy']:.2f}" for line in evals) + f" (step {', '.join(str(line['step']) for line in evals)})"
            + f"; final **{evals[-1]['val_accuracy']:.2f}** (goal ≥ 0.80 at the goal scale, ≥ 0.70 at quickstart's)",
            f"- held-out chosen log-probability vs its start (val_rewards_chosen / β): lowest "
            f"{fell / args.beta:+.2f} nats ({'never below the start' if fell >= 0 else 'fell below the start'})",
            f"- greedy answers that changed: **{share:.0%}** of {sum(len(r['samples']) for r in before)} "
            f"(goal ≥ 10 % at quickstart's scale)", "",
            f"Accuracy, chat run → DPO run, {args.n} held-out questions per cell (greedy; {eval_minutes:.1f} min):", "",
            table, "",
            f"Largest drop in any cell: {worst * 100:+.0f} points (goal: no cell down by more than 2).", ""]
    for task in ("arithmetic", "reverse"):
        if (task, "high") in cells:
            a, b = cells[(task, "high")]
            body.append(f"- {task} at high: {(b - a) * 100:+.0f} points (goal +5 at the goal scale)")

    if not args.no_reward:
        from lanternlm.train.reward import REWARD_PRESETS, reward

        rm_run = out / f"rm-{args.label}"
        t2 = time.perf_counter()
        rm_config = replace(REWARD_PRESETS["tiny"], base=args.chat, pairs=[str(dpo_run / TRAIN_PAIRS)],
                            val_pairs=[str(dpo_run / VAL_PAIRS)], max_minutes=args.reward_minutes, max_steps=100000)
        reward(rm_config, rm_run)
        rm_lines = [line for line in read_metrics(rm_run) if "val_accuracy" in line]
        rule = baselines(load_pairs(dpo_run / VAL_PAIRS), chat.tokenizer)
        best_rule = max(rule, key=rule.get)
        acc = rm_lines[-1]["val_accuracy"]
        greedy, bo8, count = best_of_eight(chat, rm_run, args.bo_task, min(args.n, 200), seed=7)
        body += ["", f"Reward model (`lantern reward`, {(time.perf_counter() - t2) / 60:.1f} min with the checks): "
                 f"held-out pair accuracy **{acc:.2f}** (goal ≥ 0.80); single-feature rules: "
                 + ", ".join(f"{k} {v:.2f}" for k, v in rule.items())
                 + f"; best rule {best_rule} {rule[best_rule]:.2f}, reward model {(acc - rule[best_rule]) * 100:+.0f} "
                 f"points above it (goal ≥ +15).",
                 f"Best-of-8 on {args.bo_task} at high, {count} held-out questions: greedy {greedy:.0%}, best-of-8 "
                 f"by the reward model {bo8:.0%} ({(bo8 - greedy) * 100:+.0f} points; goal ≥ +5)."]
    body += ["", "```", " ".join(["python bench/preference.py", *sys.argv[1:]]), "```"]
    text = "\n".join(body)
    print(text)
    if not args.no_write:
        write_section(f"preference_{args.label}", text)


if __name__ == "__main__":
    main()
