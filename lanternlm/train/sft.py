"""Supervised fine-tuning (SFT): teach a base model the chat format, the tasks and thinking.

``sft(config, run_dir)`` runs the whole stage:

1. **inherit** from the base run ``config.base``: its model (architecture and weights) and
   tokenizer always; its optimizer settings (optimizer, betas, weight decay, clipping,
   device, dtype) for every such field this config leaves at ``None``. Every value's
   origin goes into ``config.json`` (``sources``: ``base``, ``cli``, ``preset:NAME`` or
   ``default``) and the log says which were inherited and which overridden.
   ``block_size`` may be raised for a RoPE model (its positions are computed, not
   learned): chat turns with thinking are longer than the base's training windows;
2. **data**: the built-in tasks' mixture (:func:`lanternlm.tasks.make_sft_mixture`, every
   reasoning level including ``none``) plus any chat JSONL files, each conversation
   rendered by :func:`lanternlm.chat.render` to ids and a loss mask. A validation set
   comes from the tasks' held-out split;
3. **batches**: one conversation per row, right-padded. The loss is the mean
   cross-entropy over the masked-in tokens of the whole optimizer step (targets -1
   elsewhere, ignored by the model's loss). Rows are grouped by length (sorted inside
   windows of shuffled conversations) so that little padding is computed;
4. **loop**: as pretraining, reusing its pieces (optimizer groups, schedule, atomic
   checkpoints, metrics file, loss plot); resume continues with the same batch order.

Why padding and not packing: packing several conversations into one row needs attention
kept inside each conversation (a block-diagonal causal mask and positions restarting at
each conversation). The model's forward has neither (it takes ids only), and with a causal
mask a right-padded row is exactly the conversation alone: its real positions never see
the padding. Bucketing by length keeps the padding small (the share of padded positions is
logged as ``pad_fraction``; about 10 % on the task mixture), so packing would save at most
that share of the compute.

The run directory marks itself as a chat model: ``config.json`` has ``"stage": "sft"``
(the marker :mod:`lanternlm.inspect.thinking` checks) and ``"base"``, the parent run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .. import config as cfg
from ..chat import REASONING_LEVELS, ChatTokens, Rendered, load_jsonl, render
from ..config import option
from ..errors import LanternError
from ..log import logger, progress
from .checkpoint import latest_checkpoint, load_training_state, rng_state, save_checkpoint, set_rng_state
from .metrics import MetricsLog, read_metrics
from .optim import OPTIMIZERS, build_optimizers
from .schedule import SCHEDULES, lr_at

STAGE = "sft"
DEFAULT_TASKS = ["letters", "arithmetic", "reverse", "glue"]

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
    tasks: list[str] = option(DEFAULT_TASKS, "built-in tasks in the mixture, comma-separated (empty: only --data)")
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
    seed: int = option(1337, "seed for the mixture and the batch order")
    device: Optional[str] = option(None, "cpu, cuda, cuda:N or auto (None = inherit)")
    dtype: Optional[str] = option(None, "autocast dtype: auto, bfloat16 or float32 (None = inherit)")


#: Named starting points (``--preset``); any field can still be overridden.
SFT_PRESETS: dict[str, SFTConfig] = {
    # 2 CPU cores, minutes: the tiny base run (context 128) gets context 320 for thinking.
    "tiny": SFTConfig(examples_per_task=3000, block_size=320, batch_size=16, max_steps=3000,
                      lr=1.5e-3, warmup_steps=30, eval_every=100, checkpoint_every=200),
    # One GPU, a gpt2-124m-sized base: more data, a gentler learning rate.
    "gpu": SFTConfig(examples_per_task=20000, batch_size=64, max_steps=3000, lr=3e-4,
                     warmup_steps=100, eval_every=250, checkpoint_every=1000, dtype="bfloat16"),
}

# Fields that may change when a run is resumed; all others must match the saved config.
RESUMABLE_CHANGES = ("max_steps", "max_minutes", "eval_every", "log_every", "checkpoint_every",
                     "keep_checkpoints", "device")


# --------------------------------------------------------------------------- config


def check_config(config: SFTConfig) -> None:
    """Raise :class:`LanternError` naming the first field with an impossible value."""
    def bad(field: str, rule: str) -> LanternError:
        return LanternError(f"sft config: {field}={getattr(config, field)!r} is invalid: {rule}")

    if not config.base:
        raise bad("base", "give the base run directory (--base)")
    if not config.tasks and not config.data:
        raise bad("tasks", "with no --data files, the mixture needs at least one task")
    for name in ("batch_size", "grad_accum", "max_steps", "eval_every", "log_every",
                 "checkpoint_every", "keep_checkpoints"):
        if getattr(config, name) < 1:
            raise bad(name, "must be >= 1")
    if config.examples_per_task < 0 or config.val_per_task < 0:
        raise bad("examples_per_task" if config.examples_per_task < 0 else "val_per_task", "must be >= 0")
    bad_levels = [lv for lv in config.levels if lv not in REASONING_LEVELS]
    if bad_levels or not config.levels:
        raise bad("levels", f"choose some of {REASONING_LEVELS}")
    if config.too_long not in ("drop", "error"):
        raise bad("too_long", "choose 'drop' or 'error'")
    if config.block_size is not None and config.block_size < 2:
        raise bad("block_size", "must be >= 2 or None")
    if config.schedule not in SCHEDULES:
        raise bad("schedule", f"choose one of {SCHEDULES}")
    if config.optimizer is not None and config.optimizer not in OPTIMIZERS:
        raise bad("optimizer", f"choose one of {OPTIMIZERS}")
    if config.dtype is not None and config.dtype not in ("auto", "bfloat16", "float32"):
        raise bad("dtype", "choose auto, bfloat16 or float32")
    if config.lr <= 0:
        raise bad("lr", "must be > 0")
    if config.max_minutes is not None and config.max_minutes <= 0:
        raise bad("max_minutes", "must be > 0 or None")
    if not 0 <= config.min_lr_ratio <= 1:
        raise bad("min_lr_ratio", "must be in [0, 1]")
    if not 0 <= config.multi_turn <= 1:
        raise bad("multi_turn", "must be in [0, 1]")


def base_settings(base: str | Path) -> dict[str, Any]:
    """The base run's saved stage config (``config.json``'s ``"config"``), or {} if it has none.

    Raises :class:`LanternError` when the base is not a model run directory.
    """
    base = Path(base)
    if not (base / "model.json").is_file():
        raise LanternError(f"--base {base}: not a run directory (no model.json there); "
                           f"give a pretraining or fine-tuning run")
    path = base / "config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LanternError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    return data.get("config", {}) if isinstance(data, dict) else {}


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


def model_for(config: SFTConfig, base: str | Path, device: torch.device):
    """The base run's model and tokenizer, with the context length this config asks for.

    Raises :class:`LanternError` when the tokenizer lacks the chat special tokens, or when
    a model with learned positions is asked for a context other than its own.
    """
    from ..checkpoint import load_run
    from ..model import GPT

    model, tokenizer = load_run(base, device=device)
    try:
        ChatTokens.of(tokenizer)
    except LanternError as err:
        raise LanternError(f"--base {base}: the tokenizer cannot render chats ({err}); train it with "
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
    from ..tasks import TASKS, get_task, make_sft_mixture

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


def bucketed_batches(lengths: Sequence[int], batch_size: int, seed: int, window: int = 32) -> list[list[int]]:
    """One epoch of batches (lists of indices): shuffled, rows of similar length together.

    The indices are shuffled, cut into windows of ``window * batch_size``, each window
    sorted by length and cut into batches; then the batches are shuffled. Every index
    appears once; the last batch may be short. The same arguments give the same batches.

    >>> bucketed_batches([5, 1, 4, 2, 3, 6], batch_size=2, seed=0)
    [[5, 0], [3, 1], [2, 4]]
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = window * batch_size
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(items: Sequence[Rendered], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded inputs and targets (-1 = no loss), as long as the longest item.

    >>> x, y = collate([Rendered([9, 1, 2], [0, 1, 1], "none"), Rendered([9, 3], [0, 1], "none")], pad_id=0)
    >>> x.tolist(), y.tolist()
    ([[9, 1], [9, 0]], [[1, 2], [3, -1]])
    """
    T = max(len(r.ids) for r in items) - 1
    x = torch.full((len(items), T), pad_id, dtype=torch.long)  # (B, T)
    y = torch.full((len(items), T), -1, dtype=torch.long)  # (B, T)
    for b, r in enumerate(items):
        n = len(r.ids) - 1
        x[b, :n] = torch.tensor(r.ids[:-1])
        y[b, :n] = torch.tensor(r.targets())
    return x, y


class Batches:
    """Endless epochs of :func:`bucketed_batches`; its position is saved and restored."""

    def __init__(self, data: Sequence[Rendered], batch_size: int, seed: int, pad_id: int) -> None:
        self.data, self.batch_size, self.seed, self.pad_id = data, batch_size, seed, pad_id
        self.lengths = [len(r.ids) for r in data]
        self.epoch, self.index = 0, 0
        self._plan = bucketed_batches(self.lengths, batch_size, seed)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.index >= len(self._plan):
            self.epoch, self.index = self.epoch + 1, 0
            self._plan = bucketed_batches(self.lengths, self.batch_size, self.seed + self.epoch)
        batch = self._plan[self.index]
        self.index += 1
        return collate([self.data[i] for i in batch], self.pad_id)

    @property
    def epochs_done(self) -> float:
        """Passes over the data so far (fractional)."""
        return self.epoch + self.index / max(1, len(self._plan))

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._plan = bucketed_batches(self.lengths, self.batch_size, self.seed + self.epoch)


@torch.no_grad()
def masked_loss(model, data: Sequence[Rendered], pad_id: int, batch_size: int, autocast) -> float:
    """Mean cross-entropy (nats) over the masked-in tokens of ``data``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(data), batch_size):
        x, y = collate(data[start:start + batch_size], pad_id)
        x, y = x.to(model.wte.weight.device), y.to(model.wte.weight.device)
        with autocast:
            logits = model(x).logits  # (B, T, V)
        ce = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten(),
                                               ignore_index=-1, reduction="sum")
        total += ce.item()
        count += int((y != -1).sum())
    model.train(was_training)
    return total / max(1, count)


# --------------------------------------------------------------------------- the loop


def sft(config: SFTConfig, run_dir: str | Path, *, resume: bool = False,
        sources: dict[str, str] | None = None) -> dict[str, Any]:
    """Run (or with ``resume``, continue) fine-tuning into ``run_dir``; returns a summary dict."""
    from ..checkpoint import load_config
    from .distributed import pick_device
    from .pretrain import _autocast, _estimate_total

    check_config(config)
    run_dir = Path(run_dir)
    if Path(config.base).resolve() == run_dir.resolve():
        raise LanternError(f"--out {run_dir} is the base run itself; choose another directory")
    ckpt = latest_checkpoint(run_dir) if resume else None
    if not resume and latest_checkpoint(run_dir) is not None:
        raise LanternError(f"{run_dir} already holds a training run; pass --resume to continue it "
                           f"or choose another --out")
    sources = dict(sources or {f.name: "default" for f in dataclasses.fields(SFTConfig)})
    config, sources = inherit(config, sources, base_settings(config.base))
    if resume and (run_dir / "config.json").exists():
        saved = cfg.load(run_dir / "config.json", SFTConfig)
        diffs = [f"{f.name}: saved {getattr(saved, f.name)!r}, now {getattr(config, f.name)!r}"
                 for f in dataclasses.fields(SFTConfig)
                 if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(config, f.name)]
        if diffs:
            raise LanternError(f"{run_dir / 'config.json'}: cannot resume with a different setup: " + "; ".join(diffs))

    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    model, tokenizer = model_for(config, config.base, device)
    for line in describe_inheritance(config, sources, load_config(config.base), model, tokenizer):
        logger.info(line)
    block = model.config.block_size
    train, val, counts = build_data(config, tokenizer, block)
    logger.info(f"data: {counts['train']:,} training conversations ({counts['dropped']:,} longer than "
                f"{block} tokens dropped), {counts['val']} held-out for validation")

    pad_id = tokenizer.special_id("<|pad|>") if "<|pad|>" in tokenizer.special_tokens else tokenizer.eot_id
    batches = Batches(train, config.batch_size, config.seed, pad_id)
    optimizers = build_optimizers(model, name=config.optimizer, lr=config.lr, muon_lr=config.muon_lr,
                                  weight_decay=config.weight_decay, betas=(config.beta1, config.beta2),
                                  fused=device.type == "cuda")
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    step, elapsed_before = 0, 0.0
    if ckpt is not None:
        step, elapsed_before = _restore(ckpt, model, optimizers, batches, tokenizer, device)
        logger.info(f"resuming {run_dir} from step {step} ({ckpt.name})")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.json", config, sources, stage=STAGE, base=str(config.base),
             model=dataclasses.asdict(model.config), data=counts)
    if ckpt is not None:
        metrics.truncate_after(step)
    elif (run_dir / "metrics.jsonl").exists():
        (run_dir / "metrics.jsonl").unlink()

    autocast = _autocast(config, device)
    budget_s = config.max_minutes * 60 if config.max_minutes is not None else None
    total_steps: float = config.max_steps
    stop_reason, record = "max_steps", {}
    window = {"tokens": 0, "trained": 0, "padded": 0, "t": time.perf_counter()}
    t_start = time.perf_counter()
    model.train()
    bar = progress(total=config.max_steps, initial=step, desc="sft", unit="step")
    while step < config.max_steps:
        lr = lr_at(config.schedule, step, max_lr=config.lr, min_lr=config.lr * config.min_lr_ratio,
                   warmup_steps=config.warmup_steps, total_steps=total_steps,
                   decay_fraction=config.decay_fraction)
        optimizers.set_lr_factor(lr / config.lr)
        micro = [next(batches) for _ in range(config.grad_accum)]
        trained = sum(int((y != -1).sum()) for _, y in micro)
        loss_sum = 0.0
        for x, y in micro:
            x, y = x.to(device), y.to(device)
            with autocast:
                loss = model(x, y).loss * (int((y != -1).sum()) / max(1, trained))  # mean over the step
            loss.backward()
            loss_sum += loss.item()
            window["tokens"] += x.numel()
            window["padded"] += int((x == pad_id).sum())
        window["trained"] += trained
        grad_norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), config.grad_clip if config.grad_clip > 0 else math.inf)
        optimizers.step()
        optimizers.zero_grad()
        step += 1
        bar.update(1)

        last = step == config.max_steps
        elapsed = elapsed_before + time.perf_counter() - t_start
        if budget_s is not None:
            total_steps = _estimate_total(step, elapsed, budget_s, config)
            bar.total = max(step + 1, round(total_steps))
            if elapsed >= budget_s:
                last, stop_reason = True, "time"
        evaluated = step % config.eval_every == 0 or last
        if step % config.log_every == 0 or evaluated:
            seconds = time.perf_counter() - window["t"]
            record = {"step": step, "train_loss": loss_sum, "lr": lr, "grad_norm": grad_norm.item(),
                      "tokens_per_s": window["tokens"] / seconds,
                      "trained_tokens_per_s": window["trained"] / seconds,
                      "pad_fraction": window["padded"] / max(1, window["tokens"]), "elapsed_s": elapsed}
            if evaluated and val:
                record["val_loss"] = masked_loss(model, val, pad_id, config.batch_size, autocast)
            metrics.append(record)
            bar.set_postfix(loss=f"{loss_sum:.3f}", **({"val": f"{record['val_loss']:.3f}"} if "val_loss" in record else {}))
            window = {"tokens": 0, "trained": 0, "padded": 0, "t": time.perf_counter()}
        if step % config.checkpoint_every == 0 or last:
            state = {"step": step, "elapsed_s": elapsed, "optimizers": optimizers.state_dict(),
                     "batches": batches.state_dict(), "rng": [rng_state()], "tokenizer": tokenizer.fingerprint()}
            save_checkpoint(run_dir, step, model, tokenizer, state, keep=config.keep_checkpoints)
        if last:
            break
    bar.close()

    summary = {"run_dir": str(run_dir), "steps": step, "stopped": stop_reason, "epochs": batches.epochs_done,
               "params": model.num_params(),
               "elapsed_s": elapsed_before + time.perf_counter() - t_start,
               **{k: record[k] for k in ("train_loss", "val_loss") if k in record}}
    from .plots import plot_loss
    plot_loss(read_metrics(run_dir / "metrics.jsonl"), run_dir / "loss.png", title="SFT loss (masked-in tokens)")
    logger.info(f"fine-tuning done ({stop_reason}) after {step} steps: " + ", ".join(
        f"{k} {summary[k]:.4f}" for k in ("train_loss", "val_loss") if k in summary) + f"; run directory {run_dir}")
    return summary


def _restore(ckpt: Path, model, optimizers, batches: Batches, tokenizer, device) -> tuple[int, float]:
    from ..checkpoint import load_model

    state = load_training_state(ckpt)
    if state["tokenizer"] != tokenizer.fingerprint():
        raise LanternError(f"{ckpt}: the checkpoint was trained with another tokenizer than the base run's")
    saved = load_model(ckpt, device=device)
    if saved.config != model.config:
        raise LanternError(f"{ckpt / 'model.json'}: the saved model ({saved.config}) differs from "
                           f"the configured one ({model.config})")
    model.load_state_dict(saved.state_dict())
    optimizers.load_state_dict(state["optimizers"])
    batches.load_state_dict(state["batches"])
    set_rng_state(state["rng"][0])
    return int(state["step"]), float(state["elapsed_s"])


#: What the quickstart's chat step shows at the end.
DEMO_QUESTIONS = ("Hello! Who are you?", "How many r's are in strawberry?", "What is 47 + 385?",
                  "Reverse the word 'lantern'.")


def sft_quick(base: str | Path, out: str | Path, *, minutes: float = 5.0, eval_n: int = 20,
              eval_max_tokens: int = 256, seed: int = 1337, max_steps: int | None = None) -> dict[str, Any]:
    """The quickstart's chat stage: SFT (preset ``tiny`` for ``minutes``, or ``max_steps``)
    → evaluation → demo.

    Returns ``{"sft": summary, "eval": result, "table": str, "transcript": str}``; the run
    directory ``out`` holds the chat model, ``eval.json`` and ``eval.png``. About
    ``minutes`` + 2 minutes on 2 CPU cores with the defaults.
    """
    from ..evaluate import demo_transcript, evaluate_run, format_table

    given = {"base": str(base), "max_minutes": minutes, "seed": seed}
    if max_steps is not None:
        given["max_steps"] = max_steps
    config = dataclasses.replace(SFT_PRESETS["tiny"], **given)
    sources = {f.name: "preset:tiny" for f in dataclasses.fields(SFTConfig)}
    sources.update({name: "quickstart" for name in given})
    summary = sft(config, out, sources=sources)
    result = evaluate_run(out, n=eval_n, max_tokens=eval_max_tokens)
    transcript = demo_transcript(out, DEMO_QUESTIONS, levels=("none", "high"), max_tokens=eval_max_tokens)
    return {"sft": summary, "eval": result, "table": format_table(result), "transcript": transcript}


def sft_from_args(args) -> dict[str, Any]:
    """``lantern sft``: the config from a preset (or, with ``--resume``, the run's saved
    config) plus the flags given, then :func:`sft`."""
    config, sources = cfg.resolve(SFTConfig, SFT_PRESETS, args)
    summary = sft(config, Path(args.out), resume=args.resume, sources=sources)
    logger.info(json.dumps(summary, indent=2))
    return summary
