"""Reinforcement learning from a chat run: ``lantern rl`` for a time budget, then the figures
issue 12 asks for.

    python bench/rl.py --chat DIR/sft --out DIR --label goal --reward tasks:arithmetic,reverse --minutes 30
    python bench/rl.py --chat DIR/sft --out DIR --label rlhf --reward-model DIR/rm --minutes 30
    python bench/rl.py --chat runs/quickstart/chat --out DIR --label quickstart --reward tasks:letters \\
        --minutes 3 --eval-questions 200 --levels high

1. **RL**: :func:`lanternlm.train.rl.rl` (preset ``tiny`` with the flags here) for
   ``--minutes``; the run's own held-out pass@1 / pass@k (``--eval-questions`` per task,
   ``eval_samples`` answers each) at the base (step 0) and at every evaluation, per task:
   the share of the pass@1 → pass@k gap closed, and pass@k's change; the reward and the
   share of groups without signal at the first and last rollouts, and whether the run
   warned or stopped for lack of signal;
2. **accuracy**: ``lantern eval``'s greedy accuracy per task x level on ``--n`` held-out
   questions, chat run → RL run, the largest drop of any cell and the mean thinking length
   before and after;
3. **RLHF** (``--reward-model``): the reward model's score and the verifier's accuracy, at
   the start and the end of the run (the curve: ``lantern inspect rl``, written here too);
4. **speed**: rollout tokens/s of groups of ``--group-size`` through the scheduler (one
   prefill per question, every answer in one batch: what RL samples with) against the
   engine answering one sample at a time, on ``--speed-questions`` training questions.

Writes section ``rl_<label>`` of ``bench/RESULTS.md`` (unless ``--no-write``). Goals (issue
12 §3) are stated beside each figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.preference import accuracy_table, changed  # noqa: E402
from bench.results import write_section  # noqa: E402
from lanternlm.chat import REASONING_LEVELS  # noqa: E402
from lanternlm.evaluate import evaluate_tasks  # noqa: E402
from lanternlm.run import Run  # noqa: E402
from lanternlm.train.metrics import read_metrics  # noqa: E402
from lanternlm.train.rl import RL_PRESETS, reward_tasks, rl  # noqa: E402


def rollout_speed(chat: Run, tasks: list[str], questions: int, group: int, max_tokens: int) -> tuple[float, float]:
    """Generated tokens/s: groups through the scheduler vs one sample at a time."""
    from lanternlm.chat import ChatTokens, render_for_generation
    from lanternlm.sampling import SamplingParams
    from lanternlm.tasks import get_task
    from lanternlm.tasks.rollout import Question, sample_groups

    engine, tokenizer = chat.engine(), chat.tokenizer
    asked = [Question(get_task(t), ex, "high", 1000 + i) for t in tasks
             for i, ex in enumerate(get_task(t).generate(max(1, questions // len(tasks)), 3))]
    t0 = time.perf_counter()
    groups = list(sample_groups(engine, tokenizer, asked, group, max_tokens=max_tokens, batch_questions=len(asked)))
    batched = sum(len(a.actions(0)) for g in groups for a in g.answers) / (time.perf_counter() - t0)
    end = ChatTokens.of(tokenizer).end
    t0, tokens = time.perf_counter(), 0
    for q in asked:
        prompt = render_for_generation(q.task.to_conversation(q.example, q.level)[:-1], tokenizer, q.level)
        for s in range(group):
            out = engine.generate([prompt], max_tokens=max_tokens, sampling=SamplingParams(seed=q.seed * 100 + s),
                                  stop_tokens=[end], truncate="left")[0]
            tokens += len(out.tokens) + (out.finish_reason == "stop")
    return batched, tokens / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chat", required=True, help="chat run to start from (lantern sft)")
    parser.add_argument("--out", required=True, help="folder for the run")
    parser.add_argument("--label", default="goal", help="scale name: section rl_<label> of RESULTS.md")
    parser.add_argument("--reward", default="tasks:arithmetic,reverse", help="as lantern rl --reward")
    parser.add_argument("--reward-model", default="", help="a reward run: RLHF")
    parser.add_argument("--levels", default=",".join(REASONING_LEVELS), help="levels the questions are asked at")
    parser.add_argument("--minutes", type=float, default=30.0, help="time budget of the RL run")
    parser.add_argument("--max-steps", type=int, default=100000)
    parser.add_argument("--lr", type=float, default=RL_PRESETS["tiny"].lr)
    parser.add_argument("--batch-size", type=int, default=RL_PRESETS["tiny"].batch_size, help="questions per step")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=RL_PRESETS["tiny"].max_tokens)
    parser.add_argument("--eval-questions", type=int, default=50, help="held-out questions per task (pass@k)")
    parser.add_argument("--eval-every", type=int, default=RL_PRESETS["tiny"].eval_every)
    parser.add_argument("--eval-tasks", default="letters,arithmetic,reverse,glue", help="tasks of the accuracy table")
    parser.add_argument("--n", type=int, default=200, help="held-out questions per task and level (greedy table)")
    parser.add_argument("--speed-questions", type=int, default=8, help="questions of the speed check (0 = skip)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    out, chat = Path(args.out), Run(args.chat)
    run = out / f"rl-{args.label}"

    # 1: the run
    config = dataclasses.replace(RL_PRESETS["tiny"], base=args.chat, reward=args.reward, reward_model=args.reward_model,
                                 levels=args.levels.split(","), max_minutes=args.minutes, max_steps=args.max_steps,
                                 lr=args.lr, batch_size=args.batch_size, group_size=args.group_size,
                                 max_tokens=args.max_tokens, eval_questions=args.eval_questions,
                                 eval_every=args.eval_every, checkpoint_every=10**6)
    t0 = time.perf_counter()
    summary = rl(config, run)
    minutes = (time.perf_counter() - t0) / 60
    lines = read_metrics(run / "metrics.jsonl")
    record = json.loads((run / "config.json").read_text())
    base, last = record["base_eval"], [line for line in lines if "val_pass1" in line][-1]
    k = config.eval_samples
    tasks = reward_tasks(args.reward)
    body = [f"## RL at the {args.label} scale (`bench/rl.py`)", "",
            f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {platform.machine()} "
            f"{'CUDA' if torch.cuda.is_available() else 'CPU'}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch thread(s); load average {os.getloadavg()[0]:.1f} at the end.", "",
            f"- chat run: `{args.chat}` ({chat.model_config.n_layer} layers, width {chat.model_config.n_embd}); "
            f"judge: {'the reward model `' + args.reward_model + '`' if args.reward_model else 'the verifiers'}; "
            f"tasks {', '.join(tasks)} at levels {args.levels}",
            f"- GRPO: G {config.group_size}, {config.batch_size} questions per step, lr {config.lr}, "
            f"{summary['steps']} steps, stopped: {summary['stopped']}; **{minutes:.1f} min** including the held-out "
            f"evaluations (goal ≤ 30 min on 2 CPU cores at the goal scale, ≤ 3 at quickstart's)",
            f"- training rollouts: reward {lines[0]['reward_mean']:.3f} → {lines[-1]['reward_mean']:.3f}, accuracy "
            f"{lines[0]['accuracy']:.1%} → {lines[-1]['accuracy']:.1%}, groups without signal "
            f"{lines[0]['no_signal_fraction']:.0%} → {lines[-1]['no_signal_fraction']:.0%}, answer length "
            f"{lines[0]['length_mean']:.0f} → {lines[-1]['length_mean']:.0f} tokens, entropy {lines[0]['entropy']:.2f} → "
            f"{lines[-1]['entropy']:.2f}, max |log-prob at sampling − recomputed| "
            f"{max(line['logprob_diff_max'] for line in lines):.1e}", "",
            f"Held out ({args.eval_questions} questions per task, {k} answers each at temperature "
            f"{config.temperature}), base → RL run:", "",
            "| task | pass@1 | pass@k | gap closed | reward |", "|---|---|---|---|---|"]
    for task in tasks:
        p1a, p1b = base[f"val_pass1_{task}"], last[f"val_pass1_{task}"]
        pka, pkb = base[f"val_passk_{task}"], last[f"val_passk_{task}"]
        gap = f"{(p1b - p1a) / (pka - p1a):.0%}" if pka > p1a else "-"
        body.append(f"| {task} | {p1a:.1%} → {p1b:.1%} | {pka:.1%} → {pkb:.1%} ({(pkb - pka) * 100:+.1f}) | {gap} | "
                    f"{base[f'val_reward_{task}']:.3f} → {last[f'val_reward_{task}']:.3f} "
                    f"({(last[f'val_reward_{task}'] - base[f'val_reward_{task}']) * 100:+.1f} points) |")
    body += ["", f"(goals: half of the pass@1 → pass@{k} gap closed, pass@{k} down by at most 2 points; at "
                 f"quickstart scale held-out reward +5 points on 200 questions)"]
    if lines[0]["no_signal_fraction"] > 0.5 or summary["stopped"] == "no_signal":
        body.append(f"- no learning signal: {lines[0]['no_signal_fraction']:.0%} of the first rollout's groups got "
                    f"equal rewards; the run {'stopped (no_signal)' if summary['stopped'] == 'no_signal' else 'warned'}")
    if args.reward_model:
        body.append(f"- RLHF: reward-model score {lines[0]['reward_mean']:.3f} → {lines[-1]['reward_mean']:.3f} "
                    f"(held out {base['val_reward']:.3f} → {last['val_reward']:.3f}); verifier accuracy held out "
                    f"{base['val_pass1']:.1%} → {last['val_pass1']:.1%} "
                    f"(**{(last['val_pass1'] - base['val_pass1']) * 100:+.1f} points**, goal +3 while the score rises)")

    # 2: greedy accuracy before and after
    t1 = time.perf_counter()
    eval_tasks = args.eval_tasks.split(",")
    after_run = Run(run)
    before = evaluate_tasks(chat.engine(), chat.tokenizer, eval_tasks, REASONING_LEVELS, args.n, keep_examples=args.n)
    after = evaluate_tasks(after_run.engine(), after_run.tokenizer, eval_tasks, REASONING_LEVELS, args.n,
                           keep_examples=args.n)
    table, cells = accuracy_table(before, after)
    think = [sum(r["mean_thinking_tokens"] for r in rows if r["level"] != "none") for rows in (before, after)]
    body += ["", f"Greedy accuracy, chat run → RL run, {args.n} held-out questions per cell "
                 f"({(time.perf_counter() - t1) / 60:.1f} min):", "", table, "",
             f"Largest drop in any cell: {min(b - a for a, b in cells.values()) * 100:+.0f} points (goal: none down "
             f"by more than 2); greedy answers changed: {changed(before, after):.0%}; mean thinking length "
             + (f"{think[1] / think[0] - 1:+.0%}" if think[0] > 0 else "- (none before)") + " (goal ≤ +25 %)."]
    for task in ("arithmetic", "reverse"):
        if (task, "high") in cells:
            a, b = cells[(task, "high")]
            goal = {"arithmetic": "66% → ≥ 76%", "reverse": "69% → ≥ 77%"}[task]
            body.append(f"- {task} at high: {a:.0%} → **{b:.0%}** (goal {goal} at the goal scale)")

    # 3: the curves
    from lanternlm.inspect.rl import plot_rl, rl_view
    png = plot_rl(rl_view(run), run / "inspect" / "rl.png")
    body.append(f"- curves: `{png}` (`lantern inspect rl {run}`)")

    # 4: speed
    if args.speed_questions:
        batched, alone = rollout_speed(chat, tasks, args.speed_questions, args.group_size, args.max_tokens)
        body.append(f"- rollout speed, groups of {args.group_size} on {args.speed_questions} questions: scheduler "
                    f"{batched:,.0f} tokens/s vs one sample at a time {alone:,.0f} tokens/s: **{batched / alone:.1f}x** "
                    f"(goal ≥ 4x)")
    body += ["", "```", " ".join(["python bench/rl.py", *sys.argv[1:]]), "```"]
    text = "\n".join(body)
    print(text)
    if not args.no_write:
        write_section(f"rl_{args.label}", text)


if __name__ == "__main__":
    main()
