"""``lantern eval``: a chat model's accuracy per task x reasoning level, and what SFT cost.

For each task and each level (``none`` = no thinking, ``low``, ``medium``, ``high``):

1. ``n`` held-out examples (the task's ``test`` split, never trained on) become prompts
   with :func:`lanternlm.chat.render_for_generation` (the level in the system line);
2. the one :class:`~lanternlm.engine.Engine` answers them in batches, greedily
   (temperature 0), stopping at ``<|end|>``, optionally with a thinking budget;
3. each completion is judged by the task's own :meth:`~lanternlm.tasks.base.Task.grade`
   (thinking and answer split on ids by :func:`lanternlm.chat.split_reply`).

The table reports correct / examples, accuracy, the mean thinking length in tokens, how
many answers never reached ``<|end|>``, and what always giving the most common answer would
score on the same questions (:meth:`~lanternlm.tasks.base.Task.constant_baseline`: a score
is only as good as its distance above that). Beside it, **bits per byte** on the validation shards
of the pretraining run at the root of the run's lineage (:meth:`lanternlm.run.Run.lineage`),
for the model and for that base model: the difference is what fine-tuning cost on ordinary
text. Results go to ``RUN/eval.json`` and a chart ``RUN/eval.png``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import torch

from .chat import REASONING_LEVELS, ChatTokens, render_for_generation, split_reply
from .config import atomic_write_text
from .errors import LanternError
from .log import logger, progress
from .run import Run

EVAL_FILE = "eval.json"


def evaluate_tasks(engine, tokenizer, tasks: Sequence[str], levels: Sequence[str] = REASONING_LEVELS,
                   n: int = 100, *, seed: int = 0, max_tokens: int = 320, batch_size: int = 32,
                   thinking_budget: int | None = None, keep_examples: int = 2) -> list[dict[str, Any]]:
    """Accuracy of ``engine`` on ``n`` held-out examples per task, at each level.

    Returns one row per (task, level): ``task, level, examples, correct, accuracy,
    mean_thinking_tokens, unfinished, baseline`` (``[answer, share]`` or None) and a few ``samples`` (question, thinking, answer,
    correct) to look at.
    """
    from .generate import thinking_budget as budget_for
    from .sampling import SamplingParams
    from .tasks import get_task

    bad = [level for level in levels if level not in REASONING_LEVELS]
    if bad or not levels:
        raise LanternError(f"--levels {','.join(levels)}: choose some of {','.join(REASONING_LEVELS)}")
    if n < 1 or batch_size < 1 or max_tokens < 1:
        raise LanternError(f"n={n}, batch_size={batch_size}, max_tokens={max_tokens}: each must be >= 1")
    chat = ChatTokens.of(tokenizer)
    budget = budget_for(tokenizer, thinking_budget)
    rows = []
    bar = progress(total=len(tasks) * len(levels) * n, desc="eval", unit="answer")
    for task in map(get_task, tasks):
        examples = task.generate(n, seed, split="test", at_most=True)
        if len(examples) < n:
            logger.warning(f"{task.name}: only {len(examples)} distinct held-out examples; evaluating those")
            bar.total -= len(levels) * (n - len(examples))
        baseline = task.constant_baseline(examples)
        for level in levels:
            prompts = [render_for_generation(task.to_conversation(ex, level)[:-1], tokenizer, level)
                       for ex in examples]
            correct = unfinished = thought = 0
            samples = []
            for start in range(0, len(prompts), batch_size):
                batch = prompts[start:start + batch_size]
                completions = engine.generate(batch, max_tokens=max_tokens, sampling=SamplingParams(temperature=0.0),
                                              stop_tokens=[chat.end], truncate="left", thinking=budget)
                for ex, c in zip(examples[start:start + batch_size], completions):
                    graded = task.grade(ex, c.tokens, tokenizer)
                    correct += graded.correct
                    unfinished += c.finish_reason != "stop"
                    thought += len(graded.thinking)
                    if len(samples) < keep_examples:
                        samples.append({"question": ex.question, "thinking": tokenizer.decode(graded.thinking).strip(),
                                        "answer": graded.answer, "expected": ex.answer, "correct": graded.correct})
                bar.update(len(batch))
            rows.append({"task": task.name, "level": level, "examples": len(examples), "correct": correct,
                         "accuracy": correct / len(examples), "mean_thinking_tokens": thought / len(examples),
                         "unfinished": unfinished, "baseline": list(baseline) if baseline else None, "scope": task.scope,
                         "samples": samples})
    bar.close()
    return rows


# --------------------------------------------------------------------------- bits per byte


@torch.no_grad()
def validation_bpb(models: dict[str, tuple[Any, int]], root: Run, tokens: int = 32768,
                   batch_size: int = 8) -> dict[str, float]:
    """Bits per byte of each ``(model, vocab_limit)`` on the first ``tokens`` validation
    tokens of the pretraining run ``root``'s shards.

    Windows are the base model's context, so every model is scored on the same text as
    pretraining's own evaluation, each by the vocabulary rule its engine samples by.
    """
    from .data.loader import eval_batches
    from .data.shards import open_shards
    from .train.distributed import DistInfo
    from .train.loop import evaluate
    from .train.metrics import byte_lengths

    if "data" not in root.config:
        raise LanternError(f"{root.path}: its record names no token shards (config 'data')")
    shards = open_shards(root.config["data"])
    tokenizer = shards.tokenizer()
    block = root.model_config.block_size
    result = {}
    for name, (model, vocab_limit) in models.items():
        device = next(model.parameters()).device
        batches = eval_batches(shards.split("val"), batch_size, block, tokens, device=device)
        result[name] = evaluate(model.eval(), batches, byte_lengths(tokenizer, model.config.vocab_size, device),
                                DistInfo(0, 0, 1, device), vocab_limit=vocab_limit)["bpb"]
    return result


# --------------------------------------------------------------------------- the command


def evaluate_run(run: str | os.PathLike, tasks: Sequence[str] | None = None,
                 levels: Sequence[str] = REASONING_LEVELS, n: int = 100, *, seed: int = 0,
                 max_tokens: int = 320, batch_size: int = 32, thinking_budget: int | None = None,
                 bpb_tokens: int = 32768, device: str | None = None, write: bool = True) -> dict[str, Any]:
    """Evaluate a chat run: task table, bits per byte; writes ``eval.json`` and ``eval.png``.

    ``tasks`` defaults to the ones the run was fine-tuned on (else all built-in tasks).
    """
    from .tasks import TASKS

    loaded = Run(run)
    run = loaded.path
    if not loaded.chat:
        logger.warning(f"{run}: a {loaded.stage or 'bare'} model, not a chat model; it has never seen "
                       f"the chat format, so expect accuracy near 0")
    if tasks is None:
        tasks = list(loaded.config.get("tasks") or TASKS)
    engine, tokenizer = loaded.engine(device), loaded.tokenizer
    rows = evaluate_tasks(engine, tokenizer, tasks, levels, n, seed=seed, max_tokens=max_tokens,
                          batch_size=batch_size, thinking_budget=thinking_budget)
    result: dict[str, Any] = {"run": str(run), "stage": loaded.stage, "n": n, "seed": seed,
                              "max_tokens": max_tokens, "thinking_budget": thinking_budget, "rows": rows}
    try:
        root = loaded.pretraining() if bpb_tokens > 0 else None
        if root is None:
            logger.info("bits per byte skipped: no pretraining run in this run's lineage")
        else:
            models = {"model": (engine.model, loaded.vocab_limit)}
            if root.path.resolve() != run.resolve():
                models["base"] = (root.model(engine.device), root.vocab_limit)
            result.update({"bpb": None, "base_bpb": None, "bpb_data": str(root.path)})
            scores = validation_bpb(models, root, tokens=bpb_tokens)
            result["bpb"], result["base_bpb"] = scores["model"], scores.get("base")
    except LanternError as err:  # the parent or its shards moved or changed: the table still stands
        logger.warning(f"bits per byte skipped: {err}")
    if write:
        atomic_write_text(run / EVAL_FILE, json.dumps(result, indent=2) + "\n")
        plot_eval(result, run / "eval.png")
        logger.info(f"wrote {run / EVAL_FILE} and {run / 'eval.png'}")
    return result


def format_table(result: dict[str, Any]) -> str:
    """The evaluation as a text table (what ``lantern eval`` prints), bits per byte below."""
    lines = [f"{'task':<11} {'level':<7} {'correct':>9} {'accuracy':>8} {'thinking':>9} {'unfinished':>10}"
             f"  {'constant answer':<15}"]
    for r in result["rows"]:
        lines.append(f"{r['task']:<11} {r['level']:<7} {str(r['correct']) + '/' + str(r['examples']):>9} "
                     f"{r['accuracy']:>8.1%} {r['mean_thinking_tokens']:>9.1f} {r['unfinished']:>10}"
                     f"  {_baseline(r)}".rstrip())
    scopes = {r["task"]: r["scope"] for r in result["rows"] if r.get("scope")}
    lines += [f"{task} questions: {scope}" for task, scope in scopes.items()]
    if result.get("bpb") is not None:
        line = f"bits per byte on the base validation set: {result['bpb']:.4f}"
        if result.get("base_bpb") is not None:
            line += f" (base model {result['base_bpb']:.4f}, {result['bpb'] - result['base_bpb']:+.4f} from fine-tuning)"
        lines.append(line)
    return "\n".join(lines)


def _baseline(row: dict[str, Any]) -> str:
    """``'27% ("1")'``: the share always giving the most common answer would score."""
    if not row.get("baseline"):
        return ""
    answer, share = row["baseline"]
    return f"{share:.0%} ({json.dumps(answer)})"


def markdown_table(result: dict[str, Any]) -> str:
    """The task x level accuracies as a Markdown table (one row per task, counts included),
    the constant-answer baseline in the last column."""
    levels = list(dict.fromkeys(r["level"] for r in result["rows"]))
    tasks = list(dict.fromkeys(r["task"] for r in result["rows"]))
    cell = {(r["task"], r["level"]): r for r in result["rows"]}
    first = {r["task"]: r for r in reversed(result["rows"])}
    lines = ["| task | " + " | ".join(levels) + " | constant answer |", "|---|" + "---|" * (len(levels) + 1)]
    scopes = {r["task"]: r["scope"] for r in result["rows"] if r.get("scope")}
    for task in tasks:
        label = f"{task} ({scopes[task]})" if task in scopes else task
        lines.append(f"| {label} | " + " | ".join(
            f"{cell[task, lv]['accuracy']:.0%} ({cell[task, lv]['correct']}/{cell[task, lv]['examples']}, "
            f"{cell[task, lv]['mean_thinking_tokens']:.0f} tok)" if (task, lv) in cell else "-" for lv in levels)
            + f" | {_baseline(first[task]) or '-'} |")
    return "\n".join(lines)


def plot_eval(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Grouped bars: accuracy per task, one bar per reasoning level."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = list(dict.fromkeys(r["level"] for r in result["rows"]))
    tasks = list(dict.fromkeys(r["task"] for r in result["rows"]))
    acc = {(r["task"], r["level"]): r["accuracy"] for r in result["rows"]}
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    width = 0.8 / max(1, len(levels))
    for k, level in enumerate(levels):
        xs = [i + (k - (len(levels) - 1) / 2) * width for i in range(len(tasks))]
        ax.bar(xs, [acc.get((t, level), 0.0) for t in tasks], width, label=level)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"accuracy (held-out, n={result['n']})")
    ax.set_title("accuracy per task and reasoning level")
    ax.legend(title="reasoning")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def demo_transcript(run: str | os.PathLike, questions: Sequence[Any], *,
                    levels: Sequence[str] = ("none", "high"), system: str | None = None,
                    max_tokens: int = 320, thinking_budget: int | None = None,
                    show_thinking: bool = True, device: str | None = None) -> str:
    """A short chat transcript: each question answered greedily at each level.

    What the quickstart prints at its end; thinking shown in ``[thinking] ...`` lines. A
    question may be a task :class:`~lanternlm.tasks.Example`: its answers are then graded
    by the task and marked ``(right)`` or ``(wrong; expected ...)``.
    """
    from .tasks import Example, get_task
    from .generate import thinking_budget as budget_for
    from .sampling import SamplingParams

    loaded = Run(run)
    engine, tokenizer = loaded.engine(device), loaded.tokenizer
    chat = ChatTokens.of(tokenizer)
    budget = budget_for(tokenizer, thinking_budget)
    lines = []
    for question in questions:
        example = question if isinstance(question, Example) else None
        question = example.question if example else question
        lines.append(f"user: {question}")
        for level in levels:
            messages = ([{"role": "system", "content": system}] if system else []) + \
                       [{"role": "user", "content": question}]
            prompt = render_for_generation(messages, tokenizer, level)
            out = engine.generate([prompt], max_tokens=max_tokens, sampling=SamplingParams(temperature=0.0),
                                  stop_tokens=[chat.end], truncate="left", thinking=budget)[0]
            thinking, answer = split_reply(out.tokens, chat)
            if show_thinking and thinking:
                lines += [f"  [thinking, {level}] {line}" for line in tokenizer.decode(thinking).strip().splitlines()]
            text = tokenizer.decode(answer).strip()
            verdict = ""
            if example:
                right = get_task(example.task).evaluate(example, text)
                verdict = "  (right)" if right else f"  (wrong; expected {example.answer})"
            lines.append(f"assistant ({level}): {text}{verdict}")
        lines.append("")
    return "\n".join(lines)
