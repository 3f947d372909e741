"""The one training loop: every stage (pretraining, fine-tuning; later DPO, a reward model,
RL) runs on it, and supplies only what makes it that stage::

    a stage module (pretrain.py, sft.py, ...)          train(name, config, run_dir, build, ...)
    ─────────────────────────────────────────          ───────────────────────────────────────────────
    config: a dataclass with the LOOP_FIELDS     ──►   check it; with resume: same setup as the record?
                                                       join the processes torchrun started → info
    build(info) -> Stage:                        ◄──   (seeded with config.seed)
      model      on info.device                  ──►   DDP or FSDP2 (--parallel), optimizers, torch.compile
      tokenizer                                  ──►   the run record, every checkpoint
      batches    this process's micro-batches    ──►   each step: grad_accum micro-batches
      count(b)   what b's loss sums over         ──►     the global count (all micro-batches, all processes)
      loss(m, b) b's summed loss                 ──►     backward of loss(m, b) * world_size / global count;
        [, stats: summed per-unit values]                clip, scheduled lr, optimizer step
      tally(b)   counters of b for the log       ──►   every log_every steps a metrics.jsonl line
      evaluate(m) validation metrics             ──►   every eval_every steps (and last): plateau rule
      [metrics() its own log values]             ──►     added to every metrics.jsonl line
      [stop() a reason to end now]               ──►   after each step (and its evaluation): the last step
                                                       every checkpoint_every steps (and last): checkpoint
                                                 ◄──   the summary; loss.png

**The loss.** A step's loss is the mean over the counted units (tokens for the language
stages, pairs for DPO) of all its micro-batches on all processes: each micro-batch adds
``loss(b) * world_size / global count`` with the count all-reduced before any backward
pass, and DDP averages the gradients over the processes. For pretraining every
micro-batch counts the same; for SFT, where padding and prompts do not count, they
differ, and the mean of per-micro-batch means would weigh a token in a short batch more.

**The log.** Every ``log_every`` steps, every evaluation and every checkpoint step:
``step, train_loss, lr, grad_norm, tokens_per_s`` (positions computed per second over the
training steps since the last line, all processes), ``mfu`` where the device's peak is
known, one ``<name>_fraction`` per other counter of ``tally`` (its share of the
positions: SFT's ``trained_fraction`` and ``pad_fraction``), the mean per counted unit of
each statistic the stage's ``loss`` returns beside the loss (DPO's rewards, margins and
accuracies per pair), ``elapsed_s``, and the evaluation's metrics (``val_loss``, ``bpb``,
...) on evaluation steps.

**Time budget.** With ``max_minutes`` the run stops at the budget and the schedule is
stretched to it: the step count is re-estimated every step from the speed so far
(:func:`steps_in_budget`; process 0 decides and tells the others), so such a run is not
bit-reproducible. One without a budget is.

**Resume** (``resume=True``) continues ``run_dir`` from its latest checkpoint: weights,
optimizer states, step, every process's RNG states, the batch position, the plateau
rule and the counters, so on CPU the resumed run's losses are bit-identical to an
uninterrupted one. The config must equal the saved record's in every field outside the
stage's ``resumable`` list. A run directory without a checkpoint has nothing to resume:
an error says so (start it again without ``resume``).

**Stopping.** SIGINT (Ctrl-C) or SIGTERM ends the step in progress, writes a checkpoint and
raises :class:`KeyboardInterrupt` (:mod:`.interrupt`); a second signal stops at once. A
non-finite training loss, gradient norm or validation loss stops the run with an error
before it is logged or checkpointed (:func:`check_finite`): the last checkpoint is finite.

Under ``torchrun`` every process runs this same function (:mod:`.distributed`): the
batches give each its rows of every global batch, process 0 writes the files. With
``parallel="fsdp"`` the model is sharded in place before the optimizers are built; each
process writes its shards of every checkpoint and process 0 the full weights, and the
evaluation runs on the gathered weights (:func:`~.distributed.gathered`). Resume reads
either kind of checkpoint on any number of processes with the same global batch.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn

from ..config import absolute_paths, from_arguments, from_dict
from ..errors import LanternError
from ..log import logger, progress, set_verbosity
from ..run import RECORD_FILE, Run, read_record, write_record
from . import distributed as D
from .checkpoint import (SHARDS_DIR, STATE_FILE, latest_checkpoint, load_training_state, rng_state, save_checkpoint,
                         set_rng_state, shards_staging)
from .interrupt import stop_on_signals, stop_requested
from .metrics import MetricsLog, Plateau, bits_per_byte, model_flops_utilization, peak_flops, read_metrics
from .optim import OPTIMIZERS, build_optimizers
from .schedule import SCHEDULES, lr_at

#: The fields of a stage config the loop reads; every stage config has them.
LOOP_FIELDS = ("batch_size", "grad_accum", "max_steps", "max_minutes", "optimizer", "lr", "muon_lr",
               "min_lr_ratio", "schedule", "warmup_steps", "decay_fraction", "weight_decay", "beta1",
               "beta2", "grad_clip", "eval_every", "log_every", "checkpoint_every", "keep_checkpoints",
               "early_stop_patience", "early_stop_min_delta", "seed", "device", "dtype", "compile", "parallel")

#: Loop fields that may change when a run is resumed (a stage adds its own). ``batch_size``
#: is per process: it changes with the number of processes, and the batches check that
#: the global batch does not.
RESUMABLE = ("max_steps", "max_minutes", "eval_every", "log_every", "checkpoint_every", "keep_checkpoints",
             "early_stop_patience", "early_stop_min_delta", "device", "compile", "parallel", "batch_size")

#: The values of the ``dtype`` field: the forward passes' autocast.
AUTOCAST_DTYPES = ("auto", "bfloat16", "float32")

#: What a checkpoint's training state holds (see :func:`train`).
STATE_KEYS = ("step", "elapsed_s", "tokens", "optimizers", "batches", "plateau", "rng", "tokenizer")


class Batches(Protocol):
    """What a stage's ``batches`` are: an endless iterator of this process's micro-batches
    whose position is saved in every checkpoint (:class:`lanternlm.data.loader.BatchLoader`,
    :class:`lanternlm.data.loader.ChatBatches`)."""

    epochs_done: float  # passes over the data so far

    def __next__(self) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Stage:
    """What a stage's ``build(info)`` hands the loop (see the module docstring)."""

    model: nn.Module  # a lanternlm.model.GPT on info.device; the loop trains it in place
    tokenizer: Any  # saved with every checkpoint, checked on resume
    batches: Batches
    count: Callable[[Any], int]  # what a micro-batch's loss sums over (counted tokens, pairs, ...)
    # A micro-batch's summed loss through the (wrapped) model; or (loss, stats): statistics
    # summed over its counted units, logged as their means (detached scalars)
    loss: Callable[[nn.Module, Any], torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]]
    tally: Callable[[Any], dict[str, int]]  # a micro-batch's log counters: "tokens" (positions computed), ...
    evaluate: Callable[[nn.Module], dict[str, float]]  # validation metrics, "val_loss" for the plateau rule
    record: dict[str, Any] = field(default_factory=dict)  # extra fields of the run record
    title: str = "loss"  # of loss.png
    # Optional, the same on every process: values of the stage's own added to each log line
    # (RL: its latest rollout's rewards and lengths), and after each step a reason to end
    # the run there, checkpointed (RL: no learning signal; held-out accuracy fell)
    metrics: Callable[[], dict[str, float]] | None = None
    stop: Callable[[], str | None] | None = None


# --------------------------------------------------------------------------- the pieces


def check_config(config: Any, name: str) -> None:
    """Raise :class:`LanternError` naming the first loop field with an impossible value
    (each stage checks its own fields), or the :data:`LOOP_FIELDS` its config lacks."""
    missing = [key for key in LOOP_FIELDS if not hasattr(config, key)]
    if missing:
        raise LanternError(f"{name} config: {type(config).__name__} lacks the training loop's fields {missing}")

    def bad(field_name: str, rule: str) -> LanternError:
        return LanternError(f"{name} config: {field_name}={getattr(config, field_name)!r} is invalid: {rule}")

    for f in dataclasses.fields(config):
        if isinstance(getattr(config, f.name), float) and not math.isfinite(getattr(config, f.name)):
            raise bad(f.name, "must be a finite number")
    for key in ("batch_size", "grad_accum", "max_steps", "eval_every", "log_every", "checkpoint_every",
                "keep_checkpoints"):
        if getattr(config, key) < 1:
            raise bad(key, "must be >= 1")
    if config.optimizer not in OPTIMIZERS:
        raise bad("optimizer", f"choose one of {OPTIMIZERS}")
    if config.schedule not in SCHEDULES:
        raise bad("schedule", f"choose one of {SCHEDULES}")
    if config.dtype not in AUTOCAST_DTYPES:
        raise bad("dtype", f"choose one of {AUTOCAST_DTYPES}")
    if config.parallel not in D.PARALLEL:
        raise bad("parallel", f"choose one of {D.PARALLEL}")
    if config.max_minutes is not None and config.max_minutes <= 0:
        raise bad("max_minutes", "must be > 0 or None")
    if not 0 <= config.min_lr_ratio <= 1:
        raise bad("min_lr_ratio", "must be in [0, 1]")
    if not 0 < config.decay_fraction <= 1:
        raise bad("decay_fraction", "must be in (0, 1]")
    for key in ("lr", "muon_lr"):
        if getattr(config, key) <= 0:
            raise bad(key, "must be > 0")
    for key in ("grad_clip", "weight_decay", "warmup_steps", "early_stop_patience"):
        if getattr(config, key) < 0:
            raise bad(key, "must be >= 0")
    for key in ("beta1", "beta2"):
        if not 0 <= getattr(config, key) < 1:
            raise bad(key, "must be in [0, 1)")


def check_finite(name: str, line: dict[str, Any], run_dir: Path, lr: float) -> None:
    """Stop a run whose loss or gradient norm is no longer finite (it diverged), before
    the line is logged or a checkpoint of its weights is written: the last finite one stays."""
    bad = [f"{key} {line[key]}" for key in ("train_loss", "grad_norm", "val_loss")
           if key in line and not math.isfinite(line[key])]
    if bad:
        last = latest_checkpoint(run_dir)
        kept = (f"the last checkpoint, {last.name}, is finite and kept" if last is not None
                else "no checkpoint was written before")
        raise LanternError(f"{name}: the run diverged at step {line['step']} ({', '.join(bad)}); {kept}. "
                           f"Start again with a lower --lr (now {lr:g}) or a longer --warmup-steps")


def autocast(dtype: str, device: torch.device):
    """The forward passes' autocast for a config's ``dtype``: bfloat16 when asked for, or
    by default (``auto``) on CUDA; otherwise none."""
    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def steps_in_budget(step: int, elapsed_s: float, budget_s: float, max_steps: int, warmup_steps: int) -> float:
    """How many steps fit in the time budget at the speed so far: the schedule's length
    for a run with ``max_minutes`` (at most ``max_steps``, always past the warmup).

    >>> steps_in_budget(100, 30.0, 60.0, max_steps=1000, warmup_steps=10)
    200.0
    >>> steps_in_budget(100, 30.0, 600.0, max_steps=1000, warmup_steps=10)
    1000.0
    """
    return float(min(max_steps, max(warmup_steps + 1, step * budget_s / max(elapsed_s, 1e-9))))


def token_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The language stages' loss: cross-entropy (nats) summed over the targets != -1 of a
    batch ``(x, y)`` of token rows, through :func:`lanternlm.loss.token_logprobs`."""
    x, y = batch
    return -model(x, y, reduction="sum").logprobs


def counted_targets(batch: tuple[torch.Tensor, torch.Tensor]) -> int:
    """What :func:`token_loss` sums over: the targets != -1 of ``(x, y)``.

    >>> counted_targets((torch.zeros(2, 3), torch.tensor([[5, -1, 7], [-1, -1, 2]])))
    3
    """
    return int((batch[1] != -1).sum())


def fill_sources(config: Any, sources: dict[str, str] | None) -> dict[str, str]:
    """Where each of ``config``'s values came from: as given, ``default`` for the rest.

    >>> @dataclass
    ... class Demo:
    ...     lr: float = 0.1
    ...     steps: int = 10
    >>> fill_sources(Demo(lr=0.5), {"lr": "cli"})
    {'lr': 'cli', 'steps': 'default'}
    """
    return {f.name: "default" for f in dataclasses.fields(config)} | dict(sources or {})


def accumulate(model: nn.Module, micro: list, count: Callable[[Any], int], loss_of: Callable, info: D.DistInfo,
               amp=nullcontext()) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
    """Forward and backward passes of one optimizer step's micro-batches (a stage's
    ``count`` and ``loss``): afterwards the gradients are those of the mean loss over the
    step's counted units on all processes.

    Returns this process's share of that mean (detached: summed over the processes it is
    the step's loss), the global count, and this process's sums of the statistics the
    stage's loss returned (none for a loss that returns a tensor alone).
    """
    total = D.sum_over_processes(sum(count(batch) for batch in micro), info)
    scale = info.world_size / max(1, total)
    share = torch.zeros((), device=info.device)
    stats: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(micro):
        with D.no_sync(model, i < len(micro) - 1), amp:
            out = loss_of(model, batch)
            loss, batch_stats = out if isinstance(out, tuple) else (out, {})
            loss = loss * scale
        loss.backward()
        share += loss.detach()
        for key, value in batch_stats.items():
            stats[key] = stats.get(key, 0.0) + value.detach().double()
    return share / info.world_size, int(total), stats


@torch.no_grad()
def evaluate(model: nn.Module, batches, byte_lengths: torch.Tensor | None, info: D.DistInfo,
             vocab_limit: int | None = None) -> dict[str, float]:
    """Mean validation cross-entropy (nats per counted target) over ``batches`` of ``(x, y)``
    (targets -1 do not count) and, given ``byte_lengths`` (UTF-8 bytes per id), bits per byte.

    Bits per byte = cross-entropy summed over the targets / (ln 2 x their UTF-8 bytes);
    special tokens have no bytes and are left out of both sums. Scores go through
    :func:`lanternlm.loss.token_logprobs`, the ids at and past ``vocab_limit`` left out of
    the normalisation (the rule the run's engine samples by, :attr:`lanternlm.run.Run.vocab_limit`).
    Sums are added over processes, so each may score its own share of the batches. The
    caller sets eval mode and autocast (the loop does, around every stage's evaluation).
    """
    device = next(model.parameters()).device
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # ce, counted targets, ce on bytes, bytes
    for x, y in batches:
        ce = -model(x, y, reduction="none", vocab_limit=vocab_limit).logprobs  # (B, T), 0 where y == -1
        counted = y != -1
        nbytes = (byte_lengths[y.clamp(min=0)] * counted if byte_lengths is not None
                  else torch.zeros_like(y))  # (B, T)
        sums += torch.stack([ce.sum(), counted.sum(), ce[nbytes > 0].sum(), nbytes.sum()]).double()
    D.all_reduce_sum(sums, info)
    ce_sum, count, ce_bytes, nbytes = sums.tolist()
    if count == 0:
        raise LanternError("evaluate: the validation batches hold no counted target")
    scores = {"val_loss": ce_sum / count}
    if byte_lengths is not None:
        scores["bpb"] = bits_per_byte(ce_bytes, int(nbytes))
    return scores


# --------------------------------------------------------------------------- configs and resume


def saved_config(run_dir: str | Path, name: str, cls: type) -> tuple[Any, dict[str, str]]:
    """The config and sources a stage ``name`` saved in ``run_dir``'s record; errors say
    what is wrong (no record, another stage's run, unknown fields)."""
    run_dir = Path(run_dir)
    if not (run_dir / RECORD_FILE).is_file():
        raise LanternError(f"{run_dir}: nothing to resume (no {RECORD_FILE}); leave out --resume to start a run there")
    record = read_record(run_dir)
    if record["stage"] != name:
        raise LanternError(f"{run_dir / RECORD_FILE}: holds a run of stage {record['stage']!r}, not {name!r}; "
                           f"choose another --out")
    config = from_dict(cls, record["config"], str(run_dir / RECORD_FILE))
    try:
        check_config(config, name)
    except LanternError as err:  # an impossible saved value: say where it was read
        raise LanternError(f"{run_dir / RECORD_FILE}: {err}") from None
    return config, dict(record.get("sources", {}))


def resolve(name: str, cls: type, presets: dict[str, Any], args) -> tuple[Any, dict[str, str]]:
    """The config of a stage command (``lantern pretrain``, ``lantern sft``, ...).

    Starts from ``--preset`` or, with ``--resume`` on a run directory (``--out``) that has a
    record, from the saved config; then applies the flags given. Returns ``(config,
    sources)``; a resumed value keeps the source it was first given.
    """
    if args.resume:
        (base, earlier), source = saved_config(args.out, name, cls), "resumed"
    else:
        if args.preset not in presets:
            raise LanternError(f"--preset {args.preset!r}: choose one of {sorted(presets)}")
        base, source, earlier = presets[args.preset], f"preset:{args.preset}", {}
    config, sources = from_arguments(cls, args, base=base, base_source=source)
    return config, {k: earlier.get(k, v) if v == "resumed" else v for k, v in sources.items()}


def check_fresh(run_dir: Path, resume: bool, name: str | None = None) -> Path | None:
    """The run's latest checkpoint; an error when there is one and ``resume`` is not asked
    (advising ``--resume`` only for a run of stage ``name``), or when ``run_dir`` is a file
    (a stage that writes into its run directory before training checks this first)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise LanternError(f"--out {run_dir}: is a file, not a run directory")
    ckpt = latest_checkpoint(run_dir)
    if not resume and ckpt is not None:
        stage = read_record(run_dir)["stage"] if (run_dir / RECORD_FILE).is_file() else name
        if stage != name:
            raise LanternError(f"{run_dir} already holds a run of stage {stage!r}; choose another --out")
        raise LanternError(f"{run_dir} already holds a training run; pass --resume to continue it "
                           f"or choose another --out")
    return ckpt


def _check_resume(run_dir: Path, name: str, config: Any, resumable: tuple[str, ...]) -> None:
    saved, _ = saved_config(run_dir, name, type(config))
    diffs = [f"{f.name}: saved {getattr(saved, f.name)!r}, now {getattr(config, f.name)!r}"
             for f in dataclasses.fields(config)
             if f.name not in resumable and getattr(saved, f.name) != getattr(config, f.name)]
    if diffs:
        raise LanternError(f"{run_dir / RECORD_FILE}: cannot resume with a different setup: " + "; ".join(diffs))


def _save(run_dir: Path, progress_state: dict[str, Any], stage: Stage, optimizers, plateau: Plateau,
          keep: int, info: D.DistInfo) -> None:
    rngs = D.all_gather_objects(rng_state(), info)
    shards = None
    if D.is_sharded(stage.model):  # each process writes its shards; the full weights are gathered
        shards = D.save_sharded(shards_staging(run_dir, progress_state["step"]), stage.model,
                                optimizers.optimizers, info)
    weights = D.full_state_dict(stage.model)
    if info.is_main:
        state = {**progress_state, "optimizers": "sharded" if shards else optimizers.state_dict(),
                 "batches": stage.batches.state_dict(), "plateau": plateau.state_dict(), "rng": rngs,
                 "tokenizer": stage.tokenizer.fingerprint()}
        save_checkpoint(run_dir, progress_state["step"], stage.model, stage.tokenizer, state, keep=keep,
                        weights=weights, shards=shards)
    D.barrier(info)


def _restore(ckpt: Path, stage: Stage, optimizers, plateau: Plateau, info: D.DistInfo) -> dict[str, Any]:
    from ..checkpoint import load_config, load_model

    state = load_training_state(ckpt)
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise LanternError(f"{ckpt / STATE_FILE}: lacks {missing}: written by an older lanternlm, it cannot "
                           f"be resumed; start a new run")
    fingerprint = stage.tokenizer.fingerprint()
    if state["tokenizer"] != fingerprint:
        raise LanternError(f"{ckpt}: the checkpoint was trained with another tokenizer than this run's "
                           f"(fingerprint {state['tokenizer'][:12]} vs {fingerprint[:12]})")
    saved = load_config(ckpt)
    if saved != stage.model.config:
        raise LanternError(f"{ckpt / 'model.json'}: the saved model ({saved}) differs from "
                           f"the configured one ({stage.model.config})")
    if (ckpt / SHARDS_DIR).is_dir():  # written by a sharded model: on any number of processes
        D.load_sharded(ckpt / SHARDS_DIR, stage.model, optimizers.optimizers)
    else:
        D.load_full(stage.model, optimizers.optimizers, load_model(ckpt, device=info.device).state_dict(),
                    state["optimizers"])
    stage.batches.load_state_dict(state["batches"])
    plateau.load_state_dict(state["plateau"])
    rngs = state["rng"]
    set_rng_state(rngs[info.rank] if info.rank < len(rngs) else rngs[0])
    return {"step": int(state["step"]), "elapsed_s": float(state["elapsed_s"]), "tokens": int(state["tokens"])}


def _log_line(step: int, loss: torch.Tensor, lr: float, grad_norm: torch.Tensor, counters: dict[str, int],
              stats: dict[str, torch.Tensor], units: int, seconds: float, peak: float | None, flops: float,
              info: D.DistInfo) -> tuple[dict[str, Any], int]:
    """A metrics line from the step's loss share, the window's counters and statistics,
    each summed over the processes (one all-reduce), and the window's positions computed.
    ``units``: the window's counted units, all processes (what the statistics are means over)."""
    sums = torch.tensor([0.0, *counters.values(), *([0.0] * len(stats))], dtype=torch.float64, device=info.device)
    sums[0] = loss.double()
    if stats:
        sums[1 + len(counters):] = torch.stack(list(stats.values())).to(info.device)
    train_loss, *totals = D.all_reduce_sum(sums, info).tolist()
    window = dict(zip(counters, totals[:len(counters)]))
    line = {"step": step, "train_loss": train_loss, "lr": lr, "grad_norm": grad_norm.item(),
            "tokens_per_s": window["tokens"] / seconds}
    if peak is not None:
        line["mfu"] = model_flops_utilization(line["tokens_per_s"] / info.world_size, flops, peak)
    line.update({f"{key}_fraction": value / max(1, window["tokens"]) for key, value in window.items()
                 if key != "tokens"})
    line.update({key: value / max(1, units) for key, value in zip(stats, totals[len(counters):])})
    return line, int(window["tokens"])


# --------------------------------------------------------------------------- the loop


def added_special_tokens(tokenizer, parent: str | Path | None) -> dict[str, Any]:
    """``{"added_special_tokens": {name: id}}`` for the run record when this run's tokenizer
    has special tokens its parent's lacks (fine-tuning an imported model adds the chat
    markers: :func:`lanternlm.train.finetune.add_chat_tokens`), else ``{}``."""
    if parent is None:
        return {}
    before = Run(parent).tokenizer.special_tokens
    added = {name: i for name, i in tokenizer.special_tokens.items() if name not in before}
    return {"added_special_tokens": added} if added else {}


@stop_on_signals
def train(name: str, config: Any, run_dir: str | Path, build: Callable[[D.DistInfo], Stage], *,
          resumable: tuple[str, ...], resume: bool = False, sources: dict[str, str] | None = None,
          parent: str | Path | None = None) -> dict[str, Any]:
    """Run (or with ``resume``, continue) stage ``name`` (one of :data:`lanternlm.run.STAGES`)
    into ``run_dir``; returns the summary (steps, why it stopped, tokens, epochs, last losses).

    ``build(info)`` makes the stage's :class:`Stage` for this process; ``resumable`` names
    the config fields a resume may change; ``sources`` says where each config value came
    from and ``parent`` is the run this one starts from (both go into the run record).
    """
    from ..model import flops_per_token

    check_config(config, name)
    config = absolute_paths(config)  # as the record reads them back, for the resume check
    run_dir = Path(run_dir)
    ckpt = check_fresh(run_dir, resume, name)
    if resume:
        _check_resume(run_dir, name, config, resumable)
        if ckpt is None:
            raise LanternError(f"{run_dir}: nothing to resume: the run stopped before its first checkpoint "
                               f"(written every {config.checkpoint_every} steps); leave out --resume to start it again")

    info = D.init_distributed(config.device)
    if not info.is_main:
        set_verbosity(quiet=True)
    torch.manual_seed(config.seed)
    stage = build(info)
    model = stage.model
    train_model = D.wrap_model(model, info, config.parallel, config.dtype)  # fsdp: shards model in place
    optimizers = build_optimizers(model, name=config.optimizer, lr=config.lr, muon_lr=config.muon_lr,
                                  weight_decay=config.weight_decay, betas=(config.beta1, config.beta2),
                                  fused=info.device.type == "cuda")
    plateau = Plateau(config.early_stop_patience, config.early_stop_min_delta)
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    done = {"step": 0, "elapsed_s": 0.0, "tokens": 0}  # what the checkpoints carry over
    if ckpt is not None:
        done = _restore(ckpt, stage, optimizers, plateau, info)
        logger.info(f"resuming {run_dir} from step {done['step']} ({ckpt.name})")
        if config.max_minutes is not None:
            logger.warning(f"{run_dir}: a run with a time budget (max_minutes={config.max_minutes:g}) does not resume "
                           f"bit-identically: its schedule follows the measured speed; --max-minutes none for one that does")
    if info.is_main:
        write_record(run_dir, name, config, sources=fill_sources(config, sources), parent=parent,
                     model=dataclasses.asdict(model.config), **added_special_tokens(stage.tokenizer, parent),
                     **stage.record)
        if ckpt is not None:
            metrics.truncate_after(done["step"])
        elif (run_dir / "metrics.jsonl").exists():
            (run_dir / "metrics.jsonl").unlink()

    if config.compile:
        train_model = torch.compile(train_model)
    amp = autocast(config.dtype, info.device)
    peak, flops = peak_flops(info.device), flops_per_token(model.config)
    logger.info(f"{name}: {model.num_params():,} parameters; {config.batch_size} rows x {config.grad_accum} "
                f"micro-batches x {info.world_size} process(es) per step on {info.device}"
                + (f" ({config.parallel})" if info.enabled else ""))

    step = done["step"]
    budget_s = config.max_minutes * 60 if config.max_minutes is not None else None
    total_steps: float = config.max_steps
    stop_reason, record, scores = "max_steps", {}, {}
    counters: dict[str, int] = {}  # the log window's tallies, this process
    stats: dict[str, torch.Tensor] = {}  # the log window's sums of the loss's statistics, this process
    units = 0  # the log window's counted units, all processes
    t_start = t_window = time.perf_counter()
    model.train()
    bar = progress(total=config.max_steps, initial=step, desc=name, unit="step")
    while step < config.max_steps:
        lr = lr_at(config.schedule, step, max_lr=config.lr, min_lr=config.lr * config.min_lr_ratio,
                   warmup_steps=config.warmup_steps, total_steps=total_steps,
                   decay_fraction=config.decay_fraction)
        optimizers.set_lr_factor(lr / config.lr)
        micro = [next(stage.batches) for _ in range(config.grad_accum)]
        loss, counted, step_stats = accumulate(train_model, micro, stage.count, stage.loss, info, amp)
        units += counted
        for key, value in step_stats.items():
            stats[key] = stats.get(key, 0.0) + value
        for batch in micro:
            for key, value in stage.tally(batch).items():
                counters[key] = counters.get(key, 0) + value
        grad_norm = D.clip_grad_norm(model, config.grad_clip if config.grad_clip > 0 else math.inf)
        optimizers.step()
        optimizers.zero_grad()
        step += 1
        bar.update(1)

        last = step == config.max_steps
        elapsed = done["elapsed_s"] + time.perf_counter() - t_start
        if budget_s is not None:
            over, total_steps = D.broadcast_object(
                (elapsed >= budget_s, steps_in_budget(step, elapsed, budget_s, config.max_steps, config.warmup_steps)),
                info)
            if over:
                last, stop_reason = True, "time"
            bar.total = max(step + 1, round(total_steps))
        if stage.stop is not None and not last and (reason := stage.stop()):  # decided before evaluating
            last, stop_reason = True, reason
        if (signal_name := D.broadcast_object(stop_requested(), info)) is not None:  # Ctrl-C, SIGTERM
            last, stop_reason = True, f"interrupted by {signal_name}"
        evaluated = step % config.eval_every == 0 or last
        checkpointed = step % config.checkpoint_every == 0 or last
        logged = step % config.log_every == 0 or evaluated or checkpointed
        if logged:
            record, tokens = _log_line(step, loss, lr, grad_norm, counters, stats, units,
                                       time.perf_counter() - t_window, peak, flops, info)
            done["tokens"] += tokens
            record["elapsed_s"] = elapsed
            if stage.metrics is not None:
                record.update(stage.metrics())
            if evaluated:
                model.eval()
                with torch.no_grad(), amp, D.gathered(model):  # each process scores its share alone
                    scores = stage.evaluate(model)
                model.train()
                record.update(scores)
                if (config.early_stop_patience > 0 and "val_loss" in scores
                        and plateau.update(scores["val_loss"]) and not last):
                    last, checkpointed, stop_reason = True, True, "plateau"
            check_finite(name, record, run_dir, config.lr)
            if info.is_main:
                metrics.append(record)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", refresh=False,  # shown at the next redraw
                            **({"val": f"{scores['val_loss']:.3f}"} if evaluated and "val_loss" in scores else {}))
        if stage.stop is not None and not last and (reason := stage.stop()):  # decided by the evaluation
            last, checkpointed, stop_reason = True, True, reason
        if checkpointed:
            _save(run_dir, {"step": step, "elapsed_s": elapsed, "tokens": done["tokens"]}, stage, optimizers,
                  plateau, config.keep_checkpoints, info)
        if last:
            break
        if logged:  # speed is measured over training steps only
            counters, stats, units, t_window = {}, {}, 0, time.perf_counter()
    bar.close()

    losses = {"train_loss": record["train_loss"], **scores} if record else {}
    summary = {"run_dir": str(run_dir), "steps": step, "stopped": stop_reason, "tokens": done["tokens"],
               "epochs": stage.batches.epochs_done, "params": model.num_params(),
               "elapsed_s": done["elapsed_s"] + time.perf_counter() - t_start, **losses}
    if info.is_main:
        from .plots import plot_loss
        plot_loss(read_metrics(run_dir / "metrics.jsonl"), run_dir / "loss.png", title=stage.title)
        logger.info(f"{name} done ({stop_reason}) after {step} steps: "
                    + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()) + f"; run directory {run_dir}")
    D.shutdown(info)
    if stop_reason.startswith("interrupted"):
        raise KeyboardInterrupt(f"{name} {stop_reason} at step {step}; its checkpoint is written: "
                                f"continue with --resume")
    return summary
