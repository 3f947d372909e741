"""What every fine-tuning stage (``sft``, ``dpo``, ``reward``, ``rl``) shares: starting from
a base run.

- :class:`FinetuneConfig`, the fields each such stage has: the base run, the context
  length, and the loop's fields (:data:`lanternlm.train.loop.LOOP_FIELDS`), with the
  optimizer settings left at ``None`` to be **inherited** from the base run. A stage's
  config is a subclass that adds its own fields and may change defaults (a field declared
  again keeps its place): DPO, the reward model and RL declare ``optimizer`` again as
  AdamW unless asked (:func:`adamw_unless_asked`).
- :func:`inherit` fills those ``None`` fields from the base run's record, and
  :func:`describe_inheritance` says in the log what was inherited and what overridden.
- :func:`model_for` loads the base run's model and tokenizer with the context length asked
  for (a RoPE model may take a longer one: chat turns with thinking are longer than the
  base's training windows); a base whose tokenizer lacks the chat special tokens (a model
  imported from Hugging Face) gets them added, in this one place for every stage
  (:func:`add_chat_tokens`), and the loop's run record lists them (``added_special_tokens``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import torch

from ..chat import CHAT_MARKERS
from ..config import option
from ..errors import LanternError
from ..log import logger
from ..run import Run
from ..tokenizer import EOT
from .distributed import PARALLEL
from .loop import AUTOCAST_DTYPES, fill_sources
from .optim import OPTIMIZERS
from .schedule import SCHEDULES

#: Fields that are ``None`` unless given: then they take the base run's value, or this one
#: when the base run's config.json has none (e.g. a model imported from Hugging Face).
INHERITED_DEFAULTS: dict[str, Any] = {"optimizer": "adamw", "muon_lr": 0.02, "beta1": 0.9, "beta2": 0.95,
                                      "weight_decay": 0.0, "grad_clip": 1.0, "device": "auto",
                                      "dtype": "auto"}


def adamw_unless_asked() -> Any:
    """The ``optimizer`` field of the stages that nudge a chat model (DPO, reward, RL):
    AdamW unless asked, never inherited. Their learning rates (1e-4 .. 1e-6) are AdamW
    rates, and Muon's orthogonalised step keeps its size whatever the gradient's, so a chat
    run trained by Muon (the quickstart's) would hand on its SFT-sized Muon rate: measured,
    RL from the quickstart's chat model lost every right answer within 5 steps that way."""
    return option("adamw", f"one of {OPTIMIZERS}; AdamW unless asked (not inherited: this stage's small "
                           "learning rate is an AdamW rate, and Muon's step does not shrink with the gradient)")


@dataclasses.dataclass
class FinetuneConfig:
    """The fields every fine-tuning stage has (saved in ``config.json``); those marked
    "inherit" take the base run's value when left at ``None``."""

    base: str = option("", "base run directory: model, tokenizer and settings are inherited from it", path=True)
    block_size: Optional[int] = option(None, "context length in tokens (None = the base model's; a RoPE model may take a longer one)")
    too_long: str = option("drop", "an example longer than the context: 'drop' it (counted in the log) or 'error'")
    batch_size: int = option(16, "examples per micro-batch")
    grad_accum: int = option(1, "micro-batches accumulated per optimizer step")
    max_steps: int = option(800, "optimizer steps (the schedule's length unless max_minutes stops it first)")
    max_minutes: Optional[float] = option(None, "time budget in minutes: stop then, and stretch the schedule to it (None = no budget)")
    lr: float = option(1e-3, "peak learning rate")
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
    eval_every: int = option(100, "validation every N steps (and at the end)")
    log_every: int = option(10, "write a metrics.jsonl line every N steps")
    checkpoint_every: int = option(200, "write a checkpoint every N steps (and at the end)")
    keep_checkpoints: int = option(2, "how many checkpoints to keep in RUN/checkpoints")
    early_stop_patience: int = option(0, "stop after this many evaluations without improvement (0 = off)")
    early_stop_min_delta: float = option(0.0, "an evaluation improves when val loss drops by more than this")
    seed: int = option(1337, "seed for the data and the batch order")
    device: Optional[str] = option(None, "cpu, cuda, cuda:N or auto (None = inherit)")
    dtype: Optional[str] = option(None, f"autocast dtype, one of {AUTOCAST_DTYPES} (None = inherit)")
    compile: bool = option(False, "torch.compile the model (rows vary in length: expect recompiles)")
    parallel: str = option("ddp", f"under torchrun, one of {PARALLEL}: every process holds the whole model (DDP), "
                                  "or a shard of every weight and optimizer state (FSDP2)")


def check_config(config: FinetuneConfig, name: str) -> None:
    """Raise :class:`LanternError` naming the first shared fine-tuning field with an
    impossible value (the loop checks its fields once they are inherited)."""
    def bad(field: str, rule: str) -> LanternError:
        return LanternError(f"{name} config: {field}={getattr(config, field)!r} is invalid: {rule}")

    if not config.base:
        raise bad("base", "give the base run directory (--base)")
    if config.too_long not in ("drop", "error"):
        raise bad("too_long", "choose 'drop' or 'error'")
    if config.block_size is not None and config.block_size < 2:
        raise bad("block_size", "must be >= 2 or None")


def inherit(config: FinetuneConfig, sources: dict[str, str], base: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    """Fill the config's ``None`` inheritable fields from the base run's settings.

    A field the base run lacks takes :data:`INHERITED_DEFAULTS` (source ``default``).

    >>> conf, src = inherit(FinetuneConfig(base="b", beta2=0.9), {"beta2": "cli"}, {"beta2": 0.99, "beta1": 0.8})
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


def start(config: FinetuneConfig, name: str, run_dir: str | Path,
          sources: dict[str, str] | None) -> tuple[Any, dict[str, str], Run]:
    """The common start of a fine-tuning stage: check the shared fields, open the base
    run (never the output directory itself), inherit. Returns ``(config, sources, base)``."""
    check_config(config, name)
    if Path(config.base).resolve() == Path(run_dir).resolve():
        raise LanternError(f"--out {run_dir} is the base run itself; choose another directory")
    base = Run(config.base)
    config, sources = inherit(config, fill_sources(config, sources), base.config)
    return config, sources, base


def model_for(config: FinetuneConfig, base: Run, device: torch.device):
    """The base run's model and tokenizer, with the context length this config asks for.

    A base whose tokenizer lacks the chat special tokens (a model imported from Hugging
    Face) gets them here, for every fine-tuning stage: :func:`add_chat_tokens`. Raises
    :class:`LanternError` when a model with learned positions is asked for a context other
    than its own.
    """
    from ..model import GPT

    model, tokenizer = add_chat_tokens(base.model(device), base.tokenizer)
    if tokenizer is not base.tokenizer:
        added = {name: i for name, i in tokenizer.special_tokens.items() if name not in base.tokenizer.special_tokens}
        logger.info(f"--base {base.path}: its tokenizer has no chat special tokens; added "
                    + ", ".join(f"{name}={i}" for name, i in added.items())
                    + f" (embedding{'' if model.config.tie_embeddings else ' and head'} rows set to the mean "
                    f"of the vocabulary's; model vocabulary {base.model_config.vocab_size} -> {model.config.vocab_size})")
    block = config.block_size
    if block is None or block == model.config.block_size:
        return model, tokenizer
    if model.config.pos_encoding != "rope":
        raise LanternError(f"block_size={block} differs from the base model's {model.config.block_size}, "
                           f"which has learned positions (one embedding per position); leave block_size unset")
    resized = GPT(dataclasses.replace(model.config, block_size=block)).to(device)
    resized.load_state_dict(model.state_dict())  # RoPE tables are buffers rebuilt for the new length
    return resized, tokenizer


def check_chat_base(base: Run, what: str) -> None:
    """Raise unless ``base`` speaks the chat format or is an imported model (which learns it
    here: its tokenizer gets the chat markers, :func:`add_chat_tokens`). ``what`` names the
    stage in the message ("DPO"). A base of our own pretraining is refused: it has never
    seen a chat, and a preference or RL stage on it is almost always a forgotten ``sft``."""
    if not (base.chat or base.stage == "import"):
        raise LanternError(f"--base {base.path}: a run of stage {base.stage!r} does not speak the chat format; "
                           f"{what} starts from a chat run (lantern sft) or an imported model (lantern import)")


def chat_engine(base: Run, device: str | torch.device | None = None):
    """``(engine, tokenizer)`` that write chats with the base run's model: its own, or for a
    base without the chat markers (an imported model) the model and tokenizer with them
    added (:func:`add_chat_tokens`), sampling the markers too. What the on-policy pair
    sampler uses before training starts."""
    from ..engine import Engine

    model, tokenizer = add_chat_tokens(base.model(device), base.tokenizer)
    if tokenizer is base.tokenizer:
        return base.engine(device), tokenizer
    return Engine(model, vocab_limit=vocab_limit(base, tokenizer)), tokenizer


def chat_tokens_missing(tokenizer) -> list[str]:
    """The special tokens :mod:`lanternlm.chat` renders with that ``tokenizer`` lacks: the
    chat markers, and ``<|endoftext|>`` when it has no end-of-text token of its own."""
    wanted = ([] if tokenizer.eot_token in tokenizer.special_tokens else [EOT]) + list(CHAT_MARKERS)
    return [name for name in wanted if name not in tokenizer.special_tokens]


@torch.no_grad()
def add_chat_tokens(model, tokenizer):
    """``(model, tokenizer)`` able to render chats: unchanged when the tokenizer has the
    chat special tokens, else with the missing ones (:func:`chat_tokens_missing`) added
    as new ids after its vocabulary (:meth:`lanternlm.tokenizer.Tokenizer.with_special_tokens`)
    and the model's embedding (and untied head) grown to hold them, padded to a multiple
    of 64, when its padding rows are too few. A new row starts at the mean of the real
    tokens' rows: an embedding like an average token's, a logit like an average token's,
    so the model's predictions barely move until fine-tuning teaches the markers.
    """
    from ..model import GPT, padded_vocab_size

    missing = chat_tokens_missing(tokenizer)
    if not missing:
        return model, tokenizer
    if model.config.reward_head:
        raise LanternError("a reward model's tokenizer must already have the chat special tokens")
    grown = tokenizer.with_special_tokens(missing)  # (a tokenizer's eot_token is its own or EOT)
    rows = torch.tensor([i for i, n in enumerate(tokenizer.token_byte_lengths()) if n], device=model.wte.weight.device)
    new = torch.tensor([grown.special_tokens[name] for name in missing], device=rows.device)
    if grown.vocab_size > model.config.vocab_size:
        config = dataclasses.replace(model.config, vocab_size=padded_vocab_size(grown.vocab_size))
        bigger = GPT(config).to(device=model.wte.weight.device, dtype=model.wte.weight.dtype)
        state = model.state_dict()
        for name, table in bigger.state_dict().items():  # the vocabulary tables keep their first rows
            if table.shape != state[name].shape:
                table[:model.config.vocab_size] = state[name]
                state[name] = table
        bigger.load_state_dict(state)
        model = bigger.train(model.training)
    tables = [model.wte.weight] + ([] if model.lm_head is None else [model.lm_head.weight])
    for table in tables:
        table[new] = table[rows].mean(dim=0, keepdim=True).to(table.dtype)
    return model, grown


def vocab_limit(base: Run, tokenizer) -> int:
    """How many ids a model fine-tuned from ``base`` with ``tokenizer`` may sample: the base's
    limit (:attr:`lanternlm.run.Run.vocab_limit`), or, when the base samples its whole
    vocabulary, the whole of ``tokenizer``'s, the chat markers :func:`add_chat_tokens` added too."""
    limit = base.vocab_limit
    return tokenizer.vocab_size if limit == base.tokenizer.vocab_size else limit


def describe_inheritance(config: FinetuneConfig, sources: dict[str, str], base_model_config, model,
                         tokenizer, own: tuple[str, ...] = ("lr", "max_steps", "batch_size")) -> list[str]:
    """Log lines: what came from the base run, what this run overrides or sets (the
    fields ``own`` that were given)."""
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
    given = [f"{k}={getattr(config, k)} ({sources[k]})" for k in own if sources.get(k, "default") != "default"]
    if given:
        lines.append("set for this run: " + ", ".join(given))
    return lines
