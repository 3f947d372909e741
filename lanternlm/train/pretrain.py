"""Pretraining: next-token prediction over token shards.

``pretrain(config, run_dir)`` runs the whole stage:

1. open the shards (:func:`lanternlm.data.shards.open_shards`), build the model from
   ``config.model`` (a :data:`lanternlm.model.MODEL_PRESETS` name) with the fields this
   config overrides, the vocabulary taken from the shards' tokenizer;
2. loop: for each step, ``grad_accum`` micro-batches forward/backward (bf16 autocast on
   CUDA), clip the gradient norm, set the scheduled learning rate, step the optimizer(s);
3. every ``eval_every`` steps: validation loss and bits per byte on the first
   ``eval_tokens`` tokens of the val split, and the plateau rule when turned on;
4. every ``log_every`` steps a line in ``metrics.jsonl``; every ``checkpoint_every`` steps
   and at the end an atomic checkpoint (:mod:`lanternlm.train.checkpoint`); ``loss.png``
   at the end.

Resume (``resume=True`` on a run directory that has a checkpoint) restores weights,
optimizer, step, RNG states and the loader's position, so on CPU the continued run's
losses are bit-identical to an uninterrupted one. Under ``torchrun`` every process runs
this same function; see :mod:`lanternlm.train.distributed`.

With ``max_minutes`` set, the run stops at the time budget and the schedule is stretched
to it: the total step count is re-estimated every step from the speed so far (so such a
run is not bit-reproducible; one without a budget is).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F

from .. import config as cfg
from ..config import option
from ..errors import LanternError
from ..log import logger, progress, set_verbosity
from . import distributed as D
from .checkpoint import latest_checkpoint, load_training_state, rng_state, save_checkpoint, set_rng_state
from .metrics import MetricsLog, Plateau, bits_per_byte, model_flops_utilization, peak_flops, read_metrics
from .optim import OPTIMIZERS, build_optimizers
from .schedule import SCHEDULES, lr_at

MODEL_FIELDS = ("n_layer", "n_head", "n_kv_head", "n_embd", "block_size")


@dataclasses.dataclass
class PretrainConfig:
    """Everything that decides a pretraining run (saved as ``config.json`` in the run directory).

    (``Optional[...]`` rather than ``... | None``: the CLI's converter recognises ``typing.Union``.)
    """

    data: str = option("", "directory of token shards (with manifest.json), made by the data command")
    model: str = option("tiny", "model preset from lanternlm.model.MODEL_PRESETS")
    n_layer: Optional[int] = option(None, "override the preset's number of Transformer blocks")
    n_head: Optional[int] = option(None, "override the preset's number of attention heads")
    n_kv_head: Optional[int] = option(None, "override the preset's number of key/value heads (grouped-query attention)")
    n_embd: Optional[int] = option(None, "override the preset's model width")
    block_size: Optional[int] = option(None, "override the preset's context length = training sequence length, in tokens")
    vocab_size: Optional[int] = option(None, "model vocabulary size (None = the tokenizer's, padded up to a multiple of 64)")
    batch_size: int = option(16, "sequences per micro-batch, per process")
    grad_accum: int = option(1, "micro-batches accumulated per optimizer step")
    max_steps: int = option(1000, "optimizer steps to run (the schedule's length unless max_minutes stops it first)")
    max_minutes: Optional[float] = option(None, "time budget in minutes: stop then, and stretch the schedule to it (None = no budget)")
    optimizer: str = option("adamw", f"one of {OPTIMIZERS}: AdamW everywhere, or Muon for the blocks' matrices + AdamW for the rest")
    lr: float = option(1e-3, "peak AdamW learning rate")
    muon_lr: float = option(0.02, "peak Muon learning rate (optimizer=muon)")
    min_lr_ratio: float = option(0.1, "final learning rate as a fraction of the peak")
    schedule: str = option("cosine", f"one of {SCHEDULES}: warmup + cosine, or warmup-stable-decay")
    warmup_steps: int = option(100, "linear warmup steps")
    decay_fraction: float = option(0.2, "wsd only: fraction of the steps spent decaying at the end")
    weight_decay: float = option(0.1, "decoupled weight decay on matrices and embeddings")
    beta1: float = option(0.9, "AdamW beta1")
    beta2: float = option(0.95, "AdamW beta2")
    grad_clip: float = option(1.0, "clip the global gradient norm to this (0 = off)")
    eval_every: int = option(100, "evaluate validation loss and bits per byte every N steps (and at the end)")
    eval_tokens: int = option(65536, "how many tokens from the start of the val split to evaluate on")
    log_every: int = option(10, "write a metrics.jsonl line every N steps")
    checkpoint_every: int = option(500, "write a checkpoint every N steps (and at the end)")
    keep_checkpoints: int = option(2, "how many checkpoints to keep in RUN/checkpoints")
    early_stop_patience: int = option(0, "stop after this many evaluations without improvement (0 = off)")
    early_stop_min_delta: float = option(0.0, "an evaluation improves when val loss drops by more than this")
    seed: int = option(1337, "seed for initialisation and data order")
    device: str = option("auto", "cpu, cuda, cuda:N or auto (cuda when available)")
    dtype: str = option("auto", "autocast dtype: auto (bfloat16 on CUDA, none on CPU), bfloat16 or float32")
    compile: bool = option(False, "torch.compile the model")


#: Named starting points; any field can still be overridden.
PRETRAIN_PRESETS: dict[str, PretrainConfig] = {
    # A laptop CPU, minutes: 5 on 2 cores, ~1,200 steps of the model's "tiny" preset.
    "tiny": PretrainConfig(model="tiny", batch_size=8, max_steps=20000, max_minutes=5.0, lr=2e-3, warmup_steps=50,
                           min_lr_ratio=0.1, beta2=0.99, weight_decay=0.1, eval_every=100,
                           eval_tokens=32768, log_every=1, checkpoint_every=500),
    # One GPU: nanoGPT's GPT-2 (124M) recipe, ~0.5M tokens per step, 10B tokens.
    "gpt2-124m": PretrainConfig(model="gpt2-124m", block_size=1024, batch_size=32, grad_accum=16,
                                max_steps=19073, lr=6e-4, min_lr_ratio=0.1, warmup_steps=715,
                                weight_decay=0.1, beta1=0.9, beta2=0.95, eval_every=250,
                                eval_tokens=1 << 20, log_every=10, checkpoint_every=1000, compile=True),
}

# Fields that may change when a run is resumed; all others must match the saved config.
RESUMABLE_CHANGES = ("max_steps", "max_minutes", "eval_every", "eval_tokens", "log_every",
                     "checkpoint_every", "keep_checkpoints", "early_stop_patience",
                     "early_stop_min_delta", "device", "compile", "data")


def check_config(config: PretrainConfig) -> None:
    """Raise :class:`LanternError` naming the first field with an impossible value."""
    def bad(field: str, rule: str) -> LanternError:
        return LanternError(f"pretrain config: {field}={getattr(config, field)!r} is invalid: {rule}")

    if not config.data:
        raise bad("data", "give the shards directory (--data)")
    for name in ("batch_size", "grad_accum", "max_steps", "eval_every", "log_every",
                 "checkpoint_every", "keep_checkpoints", "eval_tokens"):
        if getattr(config, name) < 1:
            raise bad(name, "must be >= 1")
    for name in MODEL_FIELDS + ("vocab_size",):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise bad(name, "must be >= 1 or None")
    if config.optimizer not in OPTIMIZERS:
        raise bad("optimizer", f"choose one of {OPTIMIZERS}")
    if config.schedule not in SCHEDULES:
        raise bad("schedule", f"choose one of {SCHEDULES}")
    if config.dtype not in ("auto", "bfloat16", "float32"):
        raise bad("dtype", "choose auto, bfloat16 or float32")
    if config.max_minutes is not None and config.max_minutes <= 0:
        raise bad("max_minutes", "must be > 0 or None")
    if not 0 <= config.min_lr_ratio <= 1:
        raise bad("min_lr_ratio", "must be in [0, 1]")
    if not 0 < config.decay_fraction <= 1:
        raise bad("decay_fraction", "must be in (0, 1]")
    if config.lr <= 0 or config.muon_lr <= 0:
        raise bad("lr" if config.lr <= 0 else "muon_lr", "must be > 0")
    if config.grad_clip < 0 or config.weight_decay < 0 or config.warmup_steps < 0:
        raise bad("grad_clip" if config.grad_clip < 0 else "weight_decay" if config.weight_decay < 0
                  else "warmup_steps", "must be >= 0")


def model_config_for(config: PretrainConfig, tokenizer_vocab: int):
    """The :class:`lanternlm.model.GPTConfig`: the preset, this config's overrides, the vocabulary."""
    from ..model import MODEL_PRESETS, padded_vocab_size

    if config.model not in MODEL_PRESETS:
        raise LanternError(f"pretrain config: model={config.model!r} is not a model preset; "
                           f"choose one of {sorted(MODEL_PRESETS)}")
    vocab = config.vocab_size if config.vocab_size is not None else padded_vocab_size(tokenizer_vocab)
    if vocab < tokenizer_vocab:
        raise LanternError(f"pretrain config: vocab_size={vocab} is smaller than the tokenizer's "
                           f"{tokenizer_vocab} tokens; leave it unset or make it >= {tokenizer_vocab}")
    overrides = {name: getattr(config, name) for name in MODEL_FIELDS if getattr(config, name) is not None}
    return dataclasses.replace(MODEL_PRESETS[config.model], vocab_size=vocab, **overrides)


def _incompatible(saved: PretrainConfig, now: PretrainConfig) -> list[str]:
    return [f"{f.name}: saved {getattr(saved, f.name)!r}, now {getattr(now, f.name)!r}"
            for f in dataclasses.fields(PretrainConfig)
            if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(now, f.name)]


def _autocast(config: PretrainConfig, device: torch.device):
    if config.dtype == "bfloat16" or (config.dtype == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches, byte_lengths: torch.Tensor, autocast, info: D.DistInfo) -> dict[str, float]:
    """Mean validation cross-entropy (nats/token) and bits per byte over ``batches``.

    Bits per byte = CE summed over targets / (ln 2 x UTF-8 bytes of those targets); special
    tokens have no bytes and are left out of both sums. Sums are added over processes.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=byte_lengths.device)  # ce, tokens, ce on bytes, bytes
    for x, y in batches:
        with autocast:
            logits = model(x).logits  # (B, T, V)
        ce = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")  # (B*T,)
        nbytes = byte_lengths[y.flatten()]  # (B*T,)
        sums += torch.stack([ce.sum(), torch.tensor(ce.numel(), device=ce.device),
                             ce[nbytes > 0].sum(), nbytes.sum()]).double()
    D.all_reduce_sum(sums, info)
    model.train(was_training)
    ce_sum, tokens, ce_bytes, nbytes = sums.tolist()
    return {"val_loss": ce_sum / tokens, "bpb": bits_per_byte(ce_bytes, int(nbytes))}


def pretrain(config: PretrainConfig, run_dir: str | Path, *, resume: bool = False,
             sources: dict[str, str] | None = None) -> dict[str, Any]:
    """Run (or with ``resume``, continue) pretraining into ``run_dir``; returns a summary dict."""
    from ..data.loader import BatchLoader, eval_batches
    from ..data.shards import open_shards
    from ..model import GPT, flops_per_token

    check_config(config)
    run_dir = Path(run_dir)
    ckpt = latest_checkpoint(run_dir) if resume else None
    if not resume and latest_checkpoint(run_dir) is not None:
        raise LanternError(f"{run_dir} already holds a training run; pass --resume to continue it "
                           f"or choose another --out")
    if resume and (run_dir / "config.json").exists():
        diffs = _incompatible(cfg.load(run_dir / "config.json", PretrainConfig), config)
        if diffs:
            raise LanternError(f"{run_dir / 'config.json'}: cannot resume with a different setup: "
                               + "; ".join(diffs))

    info = D.init_distributed(config.device)
    if not info.is_main:
        set_verbosity(quiet=True)
    shards = open_shards(config.data)
    tokenizer = shards.tokenizer()
    train_arrays, val_arrays = shards.split("train"), shards.split("val")
    mconf = model_config_for(config, tokenizer.vocab_size)

    torch.manual_seed(config.seed)
    model = GPT(mconf).to(info.device)
    loader = BatchLoader(train_arrays, config.batch_size, mconf.block_size, seed=config.seed,
                         rank=info.rank, world_size=info.world_size, device=info.device)
    optimizers = build_optimizers(model, name=config.optimizer, lr=config.lr,
                                  muon_lr=config.muon_lr, weight_decay=config.weight_decay,
                                  betas=(config.beta1, config.beta2), fused=info.device.type == "cuda")
    plateau = Plateau(config.early_stop_patience, config.early_stop_min_delta)
    lengths = tokenizer.token_byte_lengths()
    byte_lengths = torch.zeros(mconf.vocab_size, dtype=torch.long)
    byte_lengths[:len(lengths)] = torch.tensor(lengths, dtype=torch.long)
    byte_lengths = byte_lengths.to(info.device)
    metrics = MetricsLog(run_dir / "metrics.jsonl")

    step, elapsed_before = 0, 0.0
    if ckpt is not None:
        step, elapsed_before = _restore(ckpt, model, optimizers, loader, plateau, tokenizer, info)
        logger.info(f"resuming {run_dir} from step {step} ({ckpt.name})")
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.json", config, sources, model=dataclasses.asdict(mconf))
        if ckpt is not None:
            metrics.truncate_after(step)
        elif (run_dir / "metrics.jsonl").exists():
            (run_dir / "metrics.jsonl").unlink()

    train_model = D.wrap_model(model, info)
    if config.compile:
        train_model = torch.compile(train_model)
    autocast = _autocast(config, info.device)
    tokens_per_step = config.batch_size * mconf.block_size * config.grad_accum * info.world_size
    peak = peak_flops(info.device)
    train_flops = flops_per_token(mconf)  # forward + backward
    logger.info(f"model {config.model}: {model.num_params():,} parameters, {mconf.n_layer} layers, "
                f"width {mconf.n_embd}, context {mconf.block_size}, vocab {mconf.vocab_size}; "
                f"{tokens_per_step:,} tokens per step on {info.world_size} x {info.device}")

    budget_s = config.max_minutes * 60 if config.max_minutes is not None else None
    total_steps: float = config.max_steps
    stop_reason, record = "max_steps", {}
    t_start, t_window, window_steps = time.perf_counter(), time.perf_counter(), 0
    bar = progress(total=config.max_steps, initial=step, desc="pretrain", unit="step")
    while step < config.max_steps:
        lr = lr_at(config.schedule, step, max_lr=config.lr, min_lr=config.lr * config.min_lr_ratio,
                   warmup_steps=config.warmup_steps, total_steps=total_steps,
                   decay_fraction=config.decay_fraction)
        optimizers.set_lr_factor(lr / config.lr)
        loss_sum = torch.zeros((), device=info.device)
        for micro in range(config.grad_accum):
            x, y = next(loader)
            with D.no_sync(train_model, micro < config.grad_accum - 1), autocast:
                loss = train_model(x, y).loss / config.grad_accum
            loss.backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), config.grad_clip if config.grad_clip > 0 else math.inf)
        optimizers.step()
        optimizers.zero_grad()
        step += 1
        window_steps += 1
        bar.update(1)

        last = step == config.max_steps
        elapsed = elapsed_before + time.perf_counter() - t_start
        if budget_s is not None:
            over, total_steps = D.broadcast_object((elapsed >= budget_s, _estimate_total(step, elapsed, budget_s, config)), info)
            if over:
                last, stop_reason = True, "time"
            bar.total = max(step + 1, round(total_steps))
        evaluated = step % config.eval_every == 0 or last
        if step % config.log_every == 0 or evaluated:
            train_loss = D.all_reduce_sum(loss_sum, info).item() / info.world_size
            now = time.perf_counter()
            tokens_per_s = window_steps * tokens_per_step / (now - t_window)
            record = {"step": step, "train_loss": train_loss, "lr": lr, "grad_norm": grad_norm.item(),
                      "tokens_per_s": tokens_per_s, "elapsed_s": elapsed}
            if peak is not None:
                record["mfu"] = model_flops_utilization(tokens_per_s / info.world_size, train_flops, peak)
            if evaluated:
                record.update(evaluate(model, eval_batches(val_arrays, config.batch_size, mconf.block_size,
                                                           config.eval_tokens, rank=info.rank,
                                                           world_size=info.world_size, device=info.device),
                                       byte_lengths, autocast, info))
                if config.early_stop_patience > 0 and plateau.update(record["val_loss"]) and not last:
                    last, stop_reason = True, "plateau"
            if info.is_main:
                metrics.append(record)
            bar.set_postfix(loss=f"{train_loss:.3f}", **({"val": f"{record['val_loss']:.3f}"} if evaluated else {}))
        if step % config.checkpoint_every == 0 or last:
            _save(run_dir, step, elapsed, model, tokenizer, optimizers, loader, plateau, config, info)
        if last:
            break
        if step % config.log_every == 0 or evaluated:  # speed is measured over training steps only
            t_window, window_steps = time.perf_counter(), 0
    bar.close()

    summary = {"run_dir": str(run_dir), "steps": step, "stopped": stop_reason,
               "tokens": step * tokens_per_step, "params": model.num_params(),
               "elapsed_s": elapsed_before + time.perf_counter() - t_start,
               **{k: record[k] for k in ("train_loss", "val_loss", "bpb") if k in record}}
    if info.is_main:
        from .plots import plot_loss
        plot_loss(read_metrics(run_dir / "metrics.jsonl"), run_dir / "loss.png")
        logger.info(f"pretraining done ({stop_reason}) after {step} steps: " + ", ".join(
            f"{k} {summary[k]:.4f}" for k in ("train_loss", "val_loss", "bpb") if k in summary)
            + f"; run directory {run_dir}")
    D.shutdown(info)
    return summary


def _estimate_total(step: int, elapsed: float, budget_s: float, config: PretrainConfig) -> float:
    """How many steps fit in the time budget at the speed so far (capped by max_steps)."""
    return float(min(config.max_steps, max(config.warmup_steps + 1, step * budget_s / max(elapsed, 1e-9))))


def _save(run_dir: Path, step: int, elapsed: float, model, tokenizer, optimizers, loader, plateau,
          config: PretrainConfig, info: D.DistInfo) -> None:
    rngs = D.all_gather_objects(rng_state(), info)
    if info.is_main:
        state = {"step": step, "elapsed_s": elapsed, "optimizers": optimizers.state_dict(),
                 "loader": loader.state_dict(), "plateau": plateau.state_dict(), "rng": rngs,
                 "tokenizer": tokenizer.fingerprint()}
        save_checkpoint(run_dir, step, model, tokenizer, state, keep=config.keep_checkpoints)
    D.barrier(info)


def _restore(ckpt: Path, model, optimizers, loader, plateau, tokenizer, info: D.DistInfo) -> tuple[int, float]:
    from ..checkpoint import load_model

    state = load_training_state(ckpt)
    if state["tokenizer"] != tokenizer.fingerprint():
        raise LanternError(f"{ckpt}: the checkpoint was trained with another tokenizer than the "
                           f"shards' (fingerprint {state['tokenizer'][:12]} vs {tokenizer.fingerprint()[:12]})")
    saved = load_model(ckpt, device=info.device)
    if saved.config != model.config:
        raise LanternError(f"{ckpt / 'model.json'}: the saved model ({saved.config}) differs from "
                           f"the configured one ({model.config})")
    model.load_state_dict(saved.state_dict())
    optimizers.load_state_dict(state["optimizers"])
    loader.load_state_dict(state["loader"])
    plateau.load_state_dict(state["plateau"])
    rngs = state["rng"]
    set_rng_state(rngs[info.rank] if info.rank < len(rngs) else rngs[0])
    return int(state["step"]), float(state["elapsed_s"])


def pretrain_from_args(args) -> dict[str, Any]:
    """``lantern pretrain``: the config from a preset (or, with ``--resume``, the run's saved
    config) plus the flags given, then :func:`pretrain`."""
    config, sources = cfg.resolve(PretrainConfig, PRETRAIN_PRESETS, args)
    summary = pretrain(config, Path(args.out), resume=args.resume, sources=sources)
    logger.info(json.dumps(summary, indent=2))
    return summary
