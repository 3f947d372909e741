"""Supervised fine-tuning (SFT): teach a base model the chat format, the tasks and thinking.

``sft(config, run_dir)`` runs the stage on the one training loop
(:func:`lanternlm.train.loop.train`):

1. **inherit** from the base run ``config.base`` (read through :class:`lanternlm.run.Run`,
   the same for every fine-tuning stage: :mod:`lanternlm.train.finetune`):
   its model (architecture and weights) and tokenizer always; its optimizer settings
   (optimizer, betas, weight decay, clipping, device, dtype) for every such field this
   config leaves at ``None``. Every value's origin goes into the run record (``sources``:
   ``base``, ``cli``, ``preset:NAME`` or ``default``) and the log says which were
   inherited and which overridden. ``block_size`` may be raised for a RoPE model (its
   positions are computed, not learned): chat turns with thinking are longer than the
   base's training windows;
2. **data**: the built-in tasks' mixture (:func:`lanternlm.tasks.make_sft_mixture`, every
   reasoning level including ``none``, ``task_weights`` setting each task's share) plus
   any chat JSONL files, each conversation rendered by :func:`lanternlm.chat.render` to
   ids and a loss mask, plus, with
   ``text_share``, windows of **ordinary text** from the pretraining run's own training
   shards (every token trained, no chat format: :func:`text_rows`), so that fine-tuning
   does not forget plain text (on the task mixture alone the quickstart's bits per byte
   went from 1.9 to 4.3). With ``copy_steps``, the first steps train on **copy drills**
   only (:func:`copy_rows`: a span of that text, then the same span again, the repeat
   trained): every task starts by reading the question's word or numbers back, and a base
   pretrained for minutes cannot copy yet (it predicts a repeated passage no better than
   the first time). A validation set comes from the tasks' held-out split;
3. **batches**: one conversation per row, right-padded, rows of similar length together,
   each process its rows of every global batch (:class:`lanternlm.data.loader.ChatBatches`);
4. **loss**: cross-entropy over the masked-in tokens (targets -1 elsewhere); the loop
   makes it the mean over the masked-in tokens of the whole optimizer step, all
   processes. **Evaluation**: the same mean over the validation conversations, scored by
   every real token of the tokenizer (what a chat run's engine samples from).

Why padding and not packing: packing several conversations into one row needs attention
kept inside each conversation (a block-diagonal causal mask and positions restarting at
each conversation). The model's forward has neither (it takes ids only), and with a causal
mask a right-padded row is exactly the conversation alone: its real positions never see
the padding. Bucketing by length keeps the padding small (the share of padded positions is
logged as ``pad_fraction``; about 10 % on the task mixture), so packing would save at most
that share of the compute.

The run record says ``"stage": "sft"`` with the base run as its parent, so every command
reads the result as a chat model (:attr:`lanternlm.run.Run.chat`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any


from ..chat import REASONING_LEVELS, Rendered, load_jsonl, render
from ..config import option
from ..errors import LanternError
from ..log import logger
from ..run import Run
from ..tasks import TASKS, get_task, make_sft_mixture, task_counts
from . import finetune
from .distributed import DistInfo
from .finetune import FinetuneConfig
from .loop import RESUMABLE, Stage, counted_targets, evaluate, resolve, token_loss, train


@dataclasses.dataclass
class SFTConfig(FinetuneConfig):
    """Everything that decides a fine-tuning run (saved as ``config.json`` in the run directory).

    Fields left at ``None`` marked "inherit" take the base run's value
    (:class:`lanternlm.train.finetune.FinetuneConfig` has the fields every fine-tuning stage shares).
    """

    base: str = option("", "base run directory (pretraining or an earlier fine-tuning): model, tokenizer and settings are inherited from it", path=True)
    too_long: str = option("drop", "a conversation longer than the context: 'drop' it (counted in the log) or 'error'")
    batch_size: int = option(16, "conversations per micro-batch")
    lr: float = option(1e-3, "peak AdamW learning rate")
    seed: int = option(1337, "seed for the mixture and the batch order")
    tasks: list[str] = option(list(TASKS), "built-in tasks in the mixture, comma-separated (empty: only --data)")
    examples_per_task: int = option(2000, "training conversations drawn per task (levels taken in turn)")
    task_weights: list[float] = option([], "one per task, comma-separated: a task draws examples_per_task x its weight (empty: all the same)")
    levels: list[str] = option(list(REASONING_LEVELS), "reasoning levels the task conversations are spread over")
    multi_turn: float = option(0.1, "share of task conversations joined into two-exchange chats (history without thinking)")
    data: list[str] = option([], "chat JSONL files (one {\"messages\": [...]} per line) added to the mixture, comma-separated", path=True)
    text_share: float = option(0.0, "share of the training rows that are plain-text windows of the pretraining run's training shards (keeps bits per byte on ordinary text)")
    copy_steps: int = option(0, "first optimizer steps trained on copy drills only (a span of the pretraining text, then the same span again): teaches reading back")
    val_per_task: int = option(24, "held-out (test split) conversations per task for the validation loss")
    eval_every: int = option(100, "validation loss every N steps (and at the end)")


#: Named starting points (``--preset``); any field can still be overridden.
SFT_PRESETS: dict[str, SFTConfig] = {
    # 2 CPU cores, minutes: the tiny base run (context 128) gets context 320 for thinking.
    "tiny": SFTConfig(examples_per_task=3000, block_size=320, batch_size=16, max_steps=3000,
                      lr=1.5e-3, warmup_steps=30, eval_every=100, checkpoint_every=200),
    # One GPU, a gpt2-124m-sized base: more data, a gentler learning rate.
    "gpu": SFTConfig(examples_per_task=20000, batch_size=64, max_steps=3000, lr=3e-4,
                     warmup_steps=100, eval_every=250, checkpoint_every=1000, dtype="bfloat16"),
}

# The quickstart's chat stage (issue 16): `tiny` with half the task conversations at `high`
# (the level its goals are about; every thinking level spells the same way), a multiplier of
# one digit (the table states the range), plain text from the pretraining shards so that
# ordinary text is not forgotten, and Muon for the blocks' matrices whatever the base was
# trained with (at 4,000 steps: letters at high 75 % instead of 25 % with AdamW), at half
# the pretraining's Muon rate (0.01: reversal at high 28 % instead of 17 % at 0.02, and less
# plain text forgotten; 0.04 fell back to 38 % on letters). Glue, right ~95 % of the time
# early on, draws a third of the others' conversations and plain text a tenth of the rows
# (was 0.15): the word tasks and arithmetic get ~25 % more of the rows, and at the same
# 2,526 steps the sum of their 12 cells rose from 274 to 357 points (RESULTS.md, issue 16
# round 4). The quickstart gives it a time budget: 8,000 steps is only a cap.
SFT_PRESETS["quickstart"] = dataclasses.replace(
    SFT_PRESETS["tiny"], tasks=["letters", "arithmetic:max_mul_digits=1", "reverse", "glue"],
    task_weights=[1.0, 1.0, 1.0, 1 / 3], levels=["none", "low", "medium", "high", "high", "high"],
    text_share=0.10, examples_per_task=12000, optimizer="muon", muon_lr=0.01, max_steps=8000)

# --------------------------------------------------------------------------- config


def check_config(config: SFTConfig) -> None:
    """Raise :class:`LanternError` naming the first fine-tuning field with an impossible
    value (the loop checks the fields it reads once they are inherited,
    :func:`lanternlm.train.loop.check_config`)."""
    def bad(field: str, rule: str) -> LanternError:
        return LanternError(f"sft config: {field}={getattr(config, field)!r} is invalid: {rule}")

    finetune.check_config(config, "sft")
    if not config.tasks and not config.data:
        raise bad("tasks", "with no --data files, the mixture needs at least one task")
    if config.examples_per_task < 0 or config.val_per_task < 0:
        raise bad("examples_per_task" if config.examples_per_task < 0 else "val_per_task", "must be >= 0")
    bad_levels = [lv for lv in config.levels if lv not in REASONING_LEVELS]
    if bad_levels or not config.levels:
        raise bad("levels", f"choose some of {REASONING_LEVELS}")
    if not 0 <= config.multi_turn <= 1:
        raise bad("multi_turn", "must be in [0, 1]")
    try:
        task_counts(config.tasks, config.examples_per_task, config.task_weights)
    except LanternError as err:
        raise bad("task_weights", f"{err} (--tasks has {len(config.tasks)})") from None
    if not 0 <= config.text_share < 1:
        raise bad("text_share", "must be in [0, 1)")
    if config.copy_steps < 0:
        raise bad("copy_steps", "must be >= 0")


# --------------------------------------------------------------------------- data


def _train_shards(base: Run, tokenizer, flag: str):
    """The train split of ``base``'s pretraining shards and that run's context."""
    from ..data.shards import open_shards

    root = base.pretraining()
    if root is None or "data" not in root.config:
        raise LanternError(f"sft --{flag}: {base.path} has no pretraining run with token shards in its "
                           f"lineage; use --{flag} 0")
    return open_shards(root.config["data"], expect_tokenizer=tokenizer).split("train"), root.model_config.block_size


def copy_rows(base: Run, count: int, seed: int, tokenizer, shortest: int = 16, longest: int = 63) -> list[Rendered]:
    """``count`` copy drills: a span of ``shortest``..``longest`` tokens of the pretraining
    train split, then the same span again; the repeat is trained, but its first token
    (nothing says a repeat begins).

    Measured on the quickstart's base (3,000 steps): it predicts a repeated passage no
    better than the first time (22 % vs 25 % of tokens); 500 steps of these drills alone
    take that to 96 %.
    """
    import numpy as np

    shards, _ = _train_shards(base, tokenizer, "copy-steps")
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        length = int(rng.integers(shortest, longest + 1))
        shard = shards[int(rng.integers(len(shards)))]
        start = int(rng.integers(0, max(1, len(shard) - length)))
        span = [int(t) for t in shard[start:start + length]]
        rows.append(Rendered(span + span, [0] * (len(span) + 1) + [1] * (len(span) - 1), "copy"))
    return rows


def text_rows(base: Run, count: int, seed: int, tokenizer) -> list[Rendered]:
    """``count`` windows of ordinary text from the training shards of ``base``'s
    pretraining run, each as long as that run's context + 1, every target trained.

    Windows are drawn without replacement (seeded) from the non-overlapping cuts of the
    train split (:func:`lanternlm.data.loader.window_starts`); the validation split, which
    bits per byte is measured on, is never read.
    """
    import numpy as np

    from ..data.loader import window_starts

    shards, block = _train_shards(base, tokenizer, "text-share")
    shard, start = window_starts([len(s) for s in shards], block)
    if len(start) == 0:
        raise LanternError(f"sft --text-share: the pretraining shards hold no window of {block + 1} tokens")
    picks = np.random.default_rng(seed).permutation(len(start))[:count]
    return [Rendered([int(t) for t in shards[shard[i]][start[i]:start[i] + block + 1]], [0] + [1] * block, "text")
            for i in picks]


def build_data(config: SFTConfig, tokenizer, block_size: int,
               base: Run | None = None) -> tuple[list[Rendered], list[Rendered], dict[str, int]]:
    """Render the training mixture and the validation set; returns ``(train, val, counts)``.

    A conversation of ``L`` tokens needs ``L - 1`` positions; longer than ``block_size``
    it is dropped (``counts["dropped"]``) or, with ``too_long="error"``, an error naming
    where it came from.
    """
    sourced: list[tuple[str, list[dict]]] = []
    if config.tasks:
        for name in config.tasks:
            get_task(name)  # unknown names fail here, with the list of known ones
        mixture = make_sft_mixture(config.tasks, config.examples_per_task, config.levels,
                                   seed=config.seed, multi_turn=config.multi_turn, weights=config.task_weights)
        sourced += [(f"task mixture conversation {i}", conv) for i, conv in enumerate(mixture)]
    for path in config.data:
        sourced += [(f"{path}: conversation {i + 1}", conv) for i, conv in enumerate(load_jsonl(path))]

    train, dropped, unanswered = [], 0, 0
    for where, conversation in sourced:
        rendered = render(conversation, tokenizer)
        if len(rendered.ids) - 1 > block_size:
            if config.too_long == "error":
                raise LanternError(f"{where}: {len(rendered.ids)} tokens do not fit the context of "
                                   f"{block_size + 1} (block_size {block_size}); raise --block-size "
                                   f"(RoPE models) or pass --too-long drop")
            dropped += 1
            continue
        if sum(rendered.mask) > 0:
            train.append(rendered)
        else:
            unanswered += 1  # nothing to learn: no assistant turn
    if not train:
        raise LanternError(f"sft: no conversation to train on: of {len(sourced)}, {dropped} do not fit the context "
                           f"of {block_size} tokens and {unanswered} without an assistant answer to learn from")
    text = 0
    if config.text_share > 0:
        if base is None:
            raise LanternError("sft --text-share: plain-text windows come from the base run's shards; give the base run")
        rows = text_rows(base, round(len(train) * config.text_share / (1 - config.text_share)), config.seed,
                         tokenizer)
        train += [r if len(r.ids) - 1 <= block_size else Rendered(r.ids[:block_size + 1], r.mask[:block_size + 1],
                                                                    r.reasoning) for r in rows]
        text = len(rows)

    val = []
    for name in config.tasks:
        task = get_task(name)
        for i, example in enumerate(task.generate(config.val_per_task, seed=config.seed, split="test")):
            rendered = render(task.to_conversation(example, config.levels[i % len(config.levels)]), tokenizer)
            if len(rendered.ids) - 1 <= block_size:
                val.append(rendered)
    return train, val, {"conversations": len(sourced), "train": len(train), "dropped": dropped, "val": len(val),
                        "text": text}


# --------------------------------------------------------------------------- the stage


def build(config: SFTConfig, sources: dict[str, str], base: Run, info: DistInfo) -> Stage:
    """What fine-tuning hands the loop on this process (see the module docstring)."""
    from ..data.loader import ChatBatches, Phases, chat_eval_batches

    model, tokenizer = finetune.model_for(config, base, info.device)
    for line in finetune.describe_inheritance(config, sources, base.model_config, model, tokenizer,
                                              own=("lr", "max_steps", "batch_size", "tasks")):
        logger.info(line)
    block = model.config.block_size
    rows, val, counts = build_data(config, tokenizer, block, base)
    logger.info(f"data: {counts['train'] - counts['text']:,} training conversations ({counts['dropped']:,} longer "
                f"than {block} tokens dropped), {counts['text']:,} plain-text windows, {counts['val']} held-out "
                f"for validation")
    pad = tokenizer.pad_id
    batches = ChatBatches(rows, config.batch_size, pad_id=pad, seed=config.seed, rank=info.rank,
                          world_size=info.world_size, device=info.device)
    if config.copy_steps:
        drills = copy_rows(base, config.copy_steps * config.batch_size * info.world_size, config.seed, tokenizer)
        logger.info(f"copy drills: the first {config.copy_steps} steps train on {len(drills):,} repeated spans")
        batches = Phases(ChatBatches(drills, config.batch_size, pad_id=pad, seed=config.seed, rank=info.rank,
                                     world_size=info.world_size, device=info.device), config.copy_steps, batches)

    def validation(model) -> dict[str, float]:
        if not val:
            return {}
        held_out = chat_eval_batches(val, config.batch_size, pad, rank=info.rank, world_size=info.world_size,
                                     device=info.device)
        return evaluate(model, held_out, None, info, vocab_limit=tokenizer.vocab_size)

    def tally(batch) -> dict[str, int]:
        x, _ = batch
        return {"tokens": x.numel(), "trained": counted_targets(batch), "pad": int((x == pad).sum())}

    return Stage(model=model, tokenizer=tokenizer, batches=batches, count=counted_targets, loss=token_loss,
                 tally=tally,
                 evaluate=validation, record={"data": counts}, title="SFT loss (masked-in tokens)")


def sft(config: SFTConfig, run_dir: str | Path, *, resume: bool = False,
        sources: dict[str, str] | None = None) -> dict[str, Any]:
    """Run (or with ``resume``, continue) fine-tuning into ``run_dir``; returns the summary."""
    check_config(config)
    config, sources, base = finetune.start(config, "sft", run_dir, sources)
    return train("sft", config, run_dir, functools.partial(build, config, sources, base),
                 resumable=RESUMABLE, resume=resume, sources=sources, parent=config.base)


def sft_from_args(args) -> dict[str, Any]:
    """``lantern sft``: the config from a preset (or, with ``--resume``, the run's saved
    config) plus the flags given, then :func:`sft`."""
    config, sources = resolve("sft", SFTConfig, SFT_PRESETS, args)
    summary = sft(config, Path(args.out), resume=args.resume, sources=sources)
    logger.info(json.dumps(summary, indent=2))
    return summary
