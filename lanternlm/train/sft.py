"""Supervised fine-tuning (SFT): teach a base model the chat format, the tasks and thinking.

``sft(config, run_dir)`` runs the stage on the one training loop
(:func:`lanternlm.train.loop.train`):

1. **inherit** from the base run ``config.base`` (read through :class:`lanternlm.run.Run`):
   its model (architecture and weights) and tokenizer always; its optimizer settings
   (optimizer, betas, weight decay, clipping, device, dtype) for every such field this
   config leaves at ``None``. Every value's origin goes into the run record (``sources``:
   ``base``, ``cli``, ``preset:NAME`` or ``default``) and the log says which were
   inherited and which overridden. ``block_size`` may be raised for a RoPE model (its
   positions are computed, not learned): chat turns with thinking are longer than the
   base's training windows;
2. **data**: the built-in tasks' mixture (:func:`lanternlm.tasks.make_sft_mixture`, every
   reasoning level including ``none``) plus any chat JSONL files, each conversation
   rendered by :func:`lanternlm.chat.render` to ids and a loss mask. A validation set
   comes from the tasks' held-out split;
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
from typing import Any, Optional

import torch

from ..chat import REASONING_LEVELS, ChatTokens, Rendered, load_jsonl, render
from ..config import option
from ..errors import LanternError
from ..log import logger
from ..run import Run
from ..tasks import TASKS, get_task, make_sft_mixture
from .distributed import DistInfo
from .loop import (AUTOCAST_DTYPES, RESUMABLE, Stage, counted_targets, evaluate, fill_sources, resolve,
                   token_loss, train)
from .optim import OPTIMIZERS
from .schedule import SCHEDULES

#: Fields that are ``None`` unless given: then they take the base run's value, or this one
#: when the base run's config.json has none (e.g. a model imported from Hugging Face).
INHERITED_DEFAULTS: dict[str, Any] = {"optimizer": "adamw", "muon_lr": 0.02, "beta1": 0.9, "beta2": 0.95,
                                      "weight_decay": 0.0, "grad_clip": 1.0, "device": "auto",
                                      "dtype": "auto"}


@dataclasses.dataclass
class SFTConfig:
    """Everything that decides a fine-tuning run (saved as ``config.json`` in the run directory).

    Fields left at ``None`` marked "inherit" take the base run's value.
    """

    base: str = option("", "base run directory (pretraining or an earlier fine-tuning): model, tokenizer and settings are inherited from it")
    tasks: list[str] = option(list(TASKS), "built-in tasks in the mixture, comma-separated (empty: only --data)")
    examples_per_task: int = option(2000, "training conversations drawn per task (levels taken in turn)")
    levels: list[str] = option(list(REASONING_LEVELS), "reasoning levels the task conversations are spread over")
    multi_turn: float = option(0.1, "share of task conversations joined into two-exchange chats (history without thinking)")
    data: list[str] = option([], "chat JSONL files (one {\"messages\": [...]} per line) added to the mixture, comma-separated")
    val_per_task: int = option(24, "held-out (test split) conversations per task for the validation loss")
    too_long: str = option("drop", "a conversation longer than the context: 'drop' it (counted in the log) or 'error'")
    block_size: Optional[int] = option(None, "context length in tokens (None = the base model's; a RoPE model may take a longer one)")
    batch_size: int = option(16, "conversations per micro-batch")
    grad_accum: int = option(1, "micro-batches accumulated per optimizer step")
    max_steps: int = option(800, "optimizer steps (the schedule's length unless max_minutes stops it first)")
    max_minutes: Optional[float] = option(None, "time budget in minutes: stop then, and stretch the schedule to it (None = no budget)")
    lr: float = option(1e-3, "peak AdamW learning rate")
    min_lr_ratio: float = option(0.1, "final learning rate as a fraction of the peak")
    schedule: str = option("cosine", f"one of {SCHEDULES}")
    warmup_steps: int = option(20, "linear warmup steps")
    decay_fraction: float = option(0.2, "wsd only: fraction of the steps spent decaying")
    optimizer: Optional[str] = option(None, f"one of {OPTIMIZERS} (None = inherit)")
    muon_lr: Optional[float] = option(None, "peak Muon learning rate (None = inherit)")
    beta1: Optional[float] = option(None, "AdamW beta1 (None = inherit)")
    beta2: Optional[float] = option(None, "AdamW beta2 (None = inherit)")
    weight_decay: Optional[float] = option(None, "decoupled weight decay (None = inherit)")
    grad_clip: Optional[float] = option(None, "clip the global gradient norm, 0 = off (None = inherit)")
    eval_every: int = option(100, "validation loss every N steps (and at the end)")
    log_every: int = option(10, "write a metrics.jsonl line every N steps")
    checkpoint_every: int = option(200, "write a checkpoint every N steps (and at the end)")
    keep_checkpoints: int = option(2, "how many checkpoints to keep in RUN/checkpoints")
    early_stop_patience: int = option(0, "stop after this many evaluations without improvement (0 = off)")
    early_stop_min_delta: float = option(0.0, "an evaluation improves when val loss drops by more than this")
    seed: int = option(1337, "seed for the mixture and the batch order")
    device: Optional[str] = option(None, "cpu, cuda, cuda:N or auto (None = inherit)")
    dtype: Optional[str] = option(None, f"autocast dtype, one of {AUTOCAST_DTYPES} (None = inherit)")
    compile: bool = option(False, "torch.compile the model (rows vary in length: expect recompiles)")


#: Named starting points (``--preset``); any field can still be overridden.
SFT_PRESETS: dict[str, SFTConfig] = {
    # 2 CPU cores, minutes: the tiny base run (context 128) gets context 320 for thinking.
    "tiny": SFTConfig(examples_per_task=3000, block_size=320, batch_size=16, max_steps=3000,
                      lr=1.5e-3, warmup_steps=30, eval_every=100, checkpoint_every=200),
    # One GPU, a gpt2-124m-sized base: more data, a gentler learning rate.
    "gpu": SFTConfig(examples_per_task=20000, batch_size=64, max_steps=3000, lr=3e-4,
                     warmup_steps=100, eval_every=250, checkpoint_every=1000, dtype="bfloat16"),
}

# --------------------------------------------------------------------------- config


def check_config(config: SFTConfig) -> None:
    """Raise :class:`LanternError` naming the first fine-tuning field with an impossible
    value (the loop checks the fields it reads once they are inherited,
    :func:`lanternlm.train.loop.check_config`)."""
    def bad(field: str, rule: str) -> LanternError:
        return LanternError(f"sft config: {field}={getattr(config, field)!r} is invalid: {rule}")

    if not config.base:
        raise bad("base", "give the base run directory (--base)")
    if not config.tasks and not config.data:
        raise bad("tasks", "with no --data files, the mixture needs at least one task")
    if config.examples_per_task < 0 or config.val_per_task < 0:
        raise bad("examples_per_task" if config.examples_per_task < 0 else "val_per_task", "must be >= 0")
    bad_levels = [lv for lv in config.levels if lv not in REASONING_LEVELS]
    if bad_levels or not config.levels:
        raise bad("levels", f"choose some of {REASONING_LEVELS}")
    if config.too_long not in ("drop", "error"):
        raise bad("too_long", "choose 'drop' or 'error'")
    if config.block_size is not None and config.block_size < 2:
        raise bad("block_size", "must be >= 2 or None")
    if not 0 <= config.multi_turn <= 1:
        raise bad("multi_turn", "must be in [0, 1]")


def inherit(config: SFTConfig, sources: dict[str, str], base: dict[str, Any]) -> tuple[SFTConfig, dict[str, str]]:
    """Fill the config's ``None`` inheritable fields from the base run's settings.

    A field the base run lacks takes :data:`INHERITED_DEFAULTS` (source ``default``).

    >>> conf, src = inherit(SFTConfig(base="b", beta2=0.9), {"beta2": "cli"}, {"beta2": 0.99, "beta1": 0.8})
    >>> conf.beta1, src["beta1"], conf.beta2, src["beta2"], conf.optimizer, src["optimizer"]
    (0.8, 'base', 0.9, 'cli', 'adamw', 'default')
    """
    values, sources = {}, dict(sources)
    for name, fallback in INHERITED_DEFAULTS.items():
        if getattr(config, name) is None:
            inherited = base.get(name)
            values[name] = fallback if inherited is None else inherited
            sources[name] = "default" if inherited is None else "base"
    return dataclasses.replace(config, **values), sources


def model_for(config: SFTConfig, base: Run, device: torch.device):
    """The base run's model and tokenizer, with the context length this config asks for.

    Raises :class:`LanternError` when the tokenizer lacks the chat special tokens, or when
    a model with learned positions is asked for a context other than its own.
    """
    from ..model import GPT

    model, tokenizer = base.model(device), base.tokenizer
    try:
        ChatTokens.of(tokenizer)
    except LanternError as err:
        raise LanternError(f"--base {base.path}: the tokenizer cannot render chats ({err}); train it with "
                           f"the default special tokens") from None
    block = config.block_size
    if block is None or block == model.config.block_size:
        return model, tokenizer
    if model.config.pos_encoding != "rope":
        raise LanternError(f"sft config: block_size={block} differs from the base model's "
                           f"{model.config.block_size}, which has learned positions (one embedding per "
                           f"position); leave block_size unset")
    resized = GPT(dataclasses.replace(model.config, block_size=block)).to(device)
    resized.load_state_dict(model.state_dict())  # RoPE tables are buffers rebuilt for the new length
    return resized, tokenizer


def describe_inheritance(config: SFTConfig, sources: dict[str, str], base_model_config, model, tokenizer) -> list[str]:
    """Log lines: what came from the base run, what this run overrides or sets."""
    inherited = [f"{k}={getattr(config, k)}" for k in INHERITED_DEFAULTS if sources.get(k) == "base"]
    overridden = [f"{k}={getattr(config, k)} ({sources[k]})" for k in INHERITED_DEFAULTS
                  if sources.get(k) not in ("base", None)]
    mc = base_model_config
    lines = [f"inherited from base: model (n_layer={mc.n_layer}, n_head={mc.n_head}, n_embd={mc.n_embd}, "
             f"vocab={mc.vocab_size}, {mc.pos_encoding} positions), weights, tokenizer "
             f"(vocab {tokenizer.vocab_size}, fingerprint {tokenizer.fingerprint()[:12]})"
             + (", " + ", ".join(inherited) if inherited else "")]
    if model.config.block_size != mc.block_size:
        overridden.insert(0, f"block_size={model.config.block_size} (base {mc.block_size}; {sources['block_size']})")
    lines.append("overridden: " + (", ".join(overridden) if overridden else "nothing"))
    own = [f"{k}={getattr(config, k)} ({sources[k]})" for k in ("lr", "max_steps", "batch_size", "tasks")
           if sources.get(k, "default") != "default"]
    if own:
        lines.append("set for this run: " + ", ".join(own))
    return lines


# --------------------------------------------------------------------------- data


def build_data(config: SFTConfig, tokenizer, block_size: int) -> tuple[list[Rendered], list[Rendered], dict[str, int]]:
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
                                   seed=config.seed, multi_turn=config.multi_turn)
        sourced += [(f"task mixture conversation {i}", conv) for i, conv in enumerate(mixture)]
    for path in config.data:
        sourced += [(f"{path}: conversation {i + 1}", conv) for i, conv in enumerate(load_jsonl(path))]

    train, dropped = [], 0
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
    if not train:
        raise LanternError(f"sft: no training conversation fits the context of {block_size} tokens")

    val = []
    for name in config.tasks:
        for i, example in enumerate(TASKS[name].generate(config.val_per_task, seed=config.seed, split="test")):
            rendered = render(TASKS[name].to_conversation(example, config.levels[i % len(config.levels)]), tokenizer)
            if len(rendered.ids) - 1 <= block_size:
                val.append(rendered)
    return train, val, {"conversations": len(sourced), "train": len(train), "dropped": dropped, "val": len(val)}


# --------------------------------------------------------------------------- the stage


def build(config: SFTConfig, sources: dict[str, str], base: Run, info: DistInfo) -> Stage:
    """What fine-tuning hands the loop on this process (see the module docstring)."""
    from ..data.loader import ChatBatches, chat_eval_batches

    model, tokenizer = model_for(config, base, info.device)
    for line in describe_inheritance(config, sources, base.model_config, model, tokenizer):
        logger.info(line)
    block = model.config.block_size
    rows, val, counts = build_data(config, tokenizer, block)
    logger.info(f"data: {counts['train']:,} training conversations ({counts['dropped']:,} longer than "
                f"{block} tokens dropped), {counts['val']} held-out for validation")
    pad = tokenizer.pad_id
    batches = ChatBatches(rows, config.batch_size, pad_id=pad, seed=config.seed, rank=info.rank,
                          world_size=info.world_size, device=info.device)

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
    if Path(config.base).resolve() == Path(run_dir).resolve():
        raise LanternError(f"--out {run_dir} is the base run itself; choose another directory")
    base = Run(config.base)
    config, sources = inherit(config, fill_sources(config, sources), base.config)
    return train("sft", config, run_dir, functools.partial(build, config, sources, base),
                 resumable=RESUMABLE, resume=resume, sources=sources, parent=config.base)


def sft_from_args(args) -> dict[str, Any]:
    """``lantern sft``: the config from a preset (or, with ``--resume``, the run's saved
    config) plus the flags given, then :func:`sft`."""
    config, sources = resolve("sft", SFTConfig, SFT_PRESETS, args)
    summary = sft(config, Path(args.out), resume=args.resume, sources=sources)
    logger.info(json.dumps(summary, indent=2))
    return summary
