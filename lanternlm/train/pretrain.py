"""Pretraining: next-token prediction over token shards, on the one training loop.

``pretrain(config, run_dir)`` runs the stage on :func:`lanternlm.train.loop.train`; what
it supplies (:func:`build`):

- the **model**: ``config.model`` (a :data:`lanternlm.model.MODEL_PRESETS` name) with the
  fields this config overrides, the vocabulary taken from the shards' tokenizer
  (:func:`model_config_for`), freshly initialised;
- the **batches**: shuffled windows of the train split, each process its rows of every
  global batch (:class:`lanternlm.data.loader.BatchLoader`);
- the **loss**: cross-entropy summed over every target (:func:`lanternlm.train.loop.token_loss`);
- the **evaluation**: validation loss and bits per byte on the first ``eval_tokens``
  tokens of the val split (:func:`evaluate`), scored by the vocabulary a base model's
  engine samples from (:func:`lanternlm.run.base_vocab_limit`).

The loop does the rest: schedule and time budget, gradient accumulation, clipping, DDP
under ``torchrun``, ``metrics.jsonl``, the plateau rule, atomic checkpoints and exact
resume, ``loss.png``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Optional


from ..config import option
from ..errors import LanternError
from ..log import logger
from .distributed import PARALLEL, DistInfo
from .loop import AUTOCAST_DTYPES, RESUMABLE, Stage, evaluate, resolve, token_loss, train
from .metrics import byte_lengths
from .optim import OPTIMIZERS
from .schedule import SCHEDULES

MODEL_FIELDS = ("n_layer", "n_head", "n_kv_head", "n_embd", "block_size")


@dataclasses.dataclass
class PretrainConfig:
    """Everything that decides a pretraining run (saved as ``config.json`` in the run directory).

    (``Optional[...]`` rather than ``... | None``: the CLI's converter recognises ``typing.Union``.)
    """

    data: str = option("", "directory of token shards (with manifest.json), made by the data command", path=True)
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
    verify_data: bool = option(False, "recompute every shard's sha256 and check every id before training (reads all the data once)")
    log_every: int = option(10, "write a metrics.jsonl line every N steps")
    checkpoint_every: int = option(500, "write a checkpoint every N steps (and at the end)")
    keep_checkpoints: int = option(2, "how many checkpoints to keep in RUN/checkpoints")
    early_stop_patience: int = option(0, "stop after this many evaluations without improvement (0 = off)")
    early_stop_min_delta: float = option(0.0, "an evaluation improves when val loss drops by more than this")
    seed: int = option(1337, "seed for initialisation and data order")
    device: str = option("auto", "cpu, cuda, cuda:N or auto (cuda when available)")
    dtype: str = option("auto", f"autocast dtype, one of {AUTOCAST_DTYPES}: auto = bfloat16 on CUDA, none on CPU")
    compile: bool = option(False, "torch.compile the model")
    parallel: str = option("ddp", f"under torchrun, one of {PARALLEL}: every process holds the whole model (DDP), "
                                  "or a shard of every weight and optimizer state (FSDP2)")


#: Named starting points; any field can still be overridden.
PRETRAIN_PRESETS: dict[str, PretrainConfig] = {
    # A laptop CPU, minutes: 5 on 2 cores, 2,000-5,000 steps of the model's "tiny" preset.
    "tiny": PretrainConfig(model="tiny", batch_size=8, max_steps=20000, max_minutes=5.0, lr=2e-3, warmup_steps=50,
                           min_lr_ratio=0.1, beta2=0.99, weight_decay=0.1, eval_every=100,
                           eval_tokens=32768, log_every=1, checkpoint_every=500),
    # One GPU: nanoGPT's GPT-2 (124M) recipe, ~0.5M tokens per step, 10B tokens.
    "gpt2-124m": PretrainConfig(model="gpt2-124m", block_size=1024, batch_size=32, grad_accum=16,
                                max_steps=19073, lr=6e-4, min_lr_ratio=0.1, warmup_steps=715,
                                weight_decay=0.1, beta1=0.9, beta2=0.95, eval_every=250,
                                eval_tokens=1 << 20, log_every=10, checkpoint_every=1000, compile=True),
}

# The quickstart's base (issue 16): `tiny` trained by Muon. In the same 3,000 steps on the
# built-in corpus it reaches 1.798 bits per byte instead of 1.833 (a step is ~15 % slower), so
# the base's quality holds on slower machines too; the chat model fine-tuned from it is within
# noise of the AdamW base's (bench/RESULTS.md, "Issue 16's route").
PRETRAIN_PRESETS["quickstart"] = dataclasses.replace(PRETRAIN_PRESETS["tiny"], optimizer="muon")

#: Fields that may change when a run is resumed; all others must match the saved config.
RESUMABLE_CHANGES = RESUMABLE + ("eval_tokens", "data", "verify_data")


def check_config(config: PretrainConfig) -> None:
    """Raise :class:`LanternError` naming the first pretraining field with an impossible
    value (the loop checks the fields it reads, :func:`lanternlm.train.loop.check_config`)."""
    def bad(field: str, rule: str) -> LanternError:
        return LanternError(f"pretrain config: {field}={getattr(config, field)!r} is invalid: {rule}")

    if not config.data:
        raise bad("data", "give the shards directory (--data)")
    if config.eval_tokens < 1:
        raise bad("eval_tokens", "must be >= 1")
    for name in MODEL_FIELDS + ("vocab_size",):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise bad(name, "must be >= 1 or None")


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


def build(config: PretrainConfig, info: DistInfo) -> Stage:
    """What pretraining hands the loop on this process (see the module docstring)."""
    from ..data.loader import BatchLoader, eval_batches
    from ..data.shards import open_shards
    from ..memory import check_fits
    from ..model import GPT
    from ..run import base_vocab_limit

    shards = open_shards(config.data, verify=config.verify_data)
    tokenizer = shards.tokenizer()
    mconf = model_config_for(config, tokenizer.vocab_size)
    # The data must hold a batch and a validation window before the model is built and trained.
    batches = BatchLoader(shards.split("train"), config.batch_size, mconf.block_size, seed=config.seed,
                          rank=info.rank, world_size=info.world_size, device=info.device,
                          vocab_size=tokenizer.vocab_size)
    val, vocab_limit = shards.split("val"), base_vocab_limit(tokenizer)
    windows = functools.partial(eval_batches, val, config.batch_size, mconf.block_size, config.eval_tokens,
                                rank=info.rank, world_size=info.world_size, device=info.device,
                                vocab_size=tokenizer.vocab_size)
    windows()
    check_fits(mconf, info.device, training=True, shards=info.world_size if config.parallel == "fsdp" else 1)
    model = GPT(mconf).to(info.device)
    lengths = byte_lengths(tokenizer, mconf.vocab_size, info.device)

    def validation(model) -> dict[str, float]:
        return evaluate(model, windows(), lengths, info, vocab_limit=vocab_limit)

    tokens_per_step = config.batch_size * mconf.block_size * config.grad_accum * info.world_size
    logger.info(f"model {config.model}: {model.num_params():,} parameters, {mconf.n_layer} layers, "
                f"width {mconf.n_embd}, context {mconf.block_size}, vocab {mconf.vocab_size}; "
                f"{tokens_per_step:,} tokens per step")
    return Stage(model=model, tokenizer=tokenizer, batches=batches,
                 count=lambda batch: batch[1].numel(),  # windows have no padding: every target counts
                 loss=token_loss, tally=lambda batch: {"tokens": batch[0].numel()},
                 evaluate=validation, title="pretraining loss")


def pretrain(config: PretrainConfig, run_dir: str | Path, *, resume: bool = False,
             sources: dict[str, str] | None = None) -> dict[str, Any]:
    """Run (or with ``resume``, continue) pretraining into ``run_dir``; returns the summary."""
    check_config(config)
    return train("pretrain", config, run_dir, functools.partial(build, config),
                 resumable=RESUMABLE_CHANGES, resume=resume, sources=sources)


def pretrain_from_args(args) -> dict[str, Any]:
    """``lantern pretrain``: the config from a preset (or, with ``--resume``, the run's saved
    config) plus the flags given, then :func:`pretrain`."""
    config, sources = resolve("pretrain", PretrainConfig, PRETRAIN_PRESETS, args)
    summary = pretrain(config, Path(args.out), resume=args.resume, sources=sources)
    logger.info(json.dumps(summary, indent=2))
    return summary
