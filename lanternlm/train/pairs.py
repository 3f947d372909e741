"""What the preference stages (``dpo``, ``reward``) share: where the pairs come from, the
held-out split, rendering, and the batches.

**Pairs** come from preference JSONL files (``pairs``; any layout of
:mod:`lanternlm.data.preference`) and/or are made on-policy from the verifiable tasks
(``pairs_from_tasks``: :func:`lanternlm.tasks.pairs.on_policy_pairs` with the base run's
own model, before training; written to ``RUN/pairs.jsonl`` and ``RUN/val_pairs.jsonl``, which
a resumed run reads again instead of sampling anew).

**Held out**: the ``val_pairs`` files, plus the task pairs made from the tasks' ``test``
split; when neither exists, a seeded ``val_fraction`` of the pairs.

**Batches**: a micro-batch of B pairs is 2B right-padded rows, the B chosen answers first,
then the B rejected ones in the same order (TRL's layout), plus each pair's index; pairs of
similar length go together (:class:`lanternlm.data.loader.ChatBatches`). A pair longer than
the context is dropped (counted) or, with ``too_long="error"``, an error.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..chat import REASONING_LEVELS, Rendered
from ..config import option
from ..data.loader import collate
from ..data.preference import Pair, load_pairs, render_pair, write_pairs
from ..errors import LanternError
from ..log import logger
from .finetune import FinetuneConfig, adamw_unless_asked, chat_engine

TRAIN_PAIRS, VAL_PAIRS = "pairs.jsonl", "val_pairs.jsonl"


@dataclasses.dataclass
class PreferenceConfig(FinetuneConfig):
    """The fields of the preference stages: the pairs, and how task pairs are made."""

    base: str = option("", "base chat run (lantern sft, dpo, ...): model, tokenizer and settings are inherited from it", path=True)
    too_long: str = option("drop", "a pair longer than the context: 'drop' it (counted in the log) or 'error'")
    batch_size: int = option(8, "pairs per micro-batch (twice as many rows)")
    optimizer: str = adamw_unless_asked()
    max_steps: int = option(200, "optimizer steps (the schedule's length unless max_minutes stops it first)")
    warmup_steps: int = option(10, "linear warmup steps")
    eval_every: int = option(25, "held-out pair accuracy every N steps (and at the end)")
    log_every: int = option(5, "write a metrics.jsonl line every N steps")
    checkpoint_every: int = option(100, "write a checkpoint every N steps (and at the end)")
    pairs: list[str] = option([], "preference JSONL files ({prompt, chosen, rejected} per line, text or messages), comma-separated", path=True)
    val_pairs: list[str] = option([], "held-out preference JSONL files, comma-separated (default: val_fraction of --pairs)", path=True)
    val_fraction: float = option(0.1, "share of --pairs held out when there is no other held-out pair")
    pairs_from_tasks: list[str] = option([], "tasks to make on-policy pairs from with the base model (its right vs wrong answers), comma-separated")
    pair_questions: int = option(400, "training questions per task for --pairs-from-tasks (held out: a quarter as many, test split)")
    pair_samples: int = option(8, "answers sampled per question for --pairs-from-tasks")
    pair_levels: list[str] = option(list(REASONING_LEVELS), "reasoning levels the task questions are asked at, in turn")
    pair_temperature: float = option(1.0, "sampling temperature of the answers for --pairs-from-tasks")
    pair_max_tokens: int = option(320, "longest answer sampled for --pairs-from-tasks")


def check_config(config: PreferenceConfig, name: str) -> None:
    """Raise :class:`LanternError` naming the first preference field with an impossible value."""
    from . import finetune

    def bad(field: str, rule: str) -> LanternError:
        return LanternError(f"{name} config: {field}={getattr(config, field)!r} is invalid: {rule}")

    finetune.check_config(config, name)
    if not config.pairs and not config.pairs_from_tasks:
        raise bad("pairs", "give preference files (--pairs) or tasks to make pairs from (--pairs-from-tasks)")
    if not 0 <= config.val_fraction < 1:
        raise bad("val_fraction", "must be in [0, 1)")
    if config.pair_questions < 1:
        raise bad("pair_questions", "must be >= 1")
    if config.pair_samples < 2:
        raise bad("pair_samples", "must be >= 2 (a right and a wrong answer)")
    if not config.pair_levels or any(level not in REASONING_LEVELS for level in config.pair_levels):
        raise bad("pair_levels", f"choose some of {REASONING_LEVELS}")
    if config.pair_temperature <= 0:
        raise bad("pair_temperature", "must be > 0 (the answers must differ)")
    if config.pair_max_tokens < 1:
        raise bad("pair_max_tokens", "must be >= 1")


def make_task_pairs(config: PreferenceConfig, base, run_dir: Path, resume: bool) -> None:
    """With ``pairs_from_tasks``: sample and write ``RUN/pairs.jsonl`` and ``RUN/val_pairs.jsonl``
    from the base run (kept as they are when resuming)."""
    from ..tasks.pairs import on_policy_pairs

    if not config.pairs_from_tasks:
        return
    if resume and (run_dir / TRAIN_PAIRS).is_file() and (run_dir / VAL_PAIRS).is_file():
        logger.info(f"task pairs: reading {run_dir / TRAIN_PAIRS} and {run_dir / VAL_PAIRS} again")
        return
    engine, tokenizer = chat_engine(base, config.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    for split, name, questions in (("train", TRAIN_PAIRS, config.pair_questions),
                                   ("test", VAL_PAIRS, max(1, config.pair_questions // 4))):
        pairs, _ = on_policy_pairs(engine, tokenizer, config.pairs_from_tasks, questions,
                                   k=config.pair_samples, levels=config.pair_levels, split=split,
                                   seed=config.seed, temperature=config.pair_temperature,
                                   max_tokens=config.pair_max_tokens)
        if not pairs:
            raise LanternError(f"--pairs-from-tasks {','.join(config.pairs_from_tasks)}: no {split} question "
                               f"got both a right and a wrong answer from {base.path}; the tasks are too easy "
                               f"or too hard for this model (see the warnings above)")
        write_pairs(run_dir / name, pairs)


def load_split(config: PreferenceConfig, run_dir: Path) -> tuple[list[Pair], list[Pair]]:
    """The training and held-out pairs (module docstring)."""
    train = [p for path in config.pairs for p in load_pairs(path)]
    val = [p for path in config.val_pairs for p in load_pairs(path)]
    if config.pairs_from_tasks:
        train += load_pairs(run_dir / TRAIN_PAIRS)
        val += load_pairs(run_dir / VAL_PAIRS)
    elif not val and config.val_fraction > 0 and len(train) >= 2:
        order = list(range(len(train)))
        random.Random(config.seed).shuffle(order)
        held = max(1, round(config.val_fraction * len(train)))
        val, train = [train[i] for i in order[:held]], [train[i] for i in order[held:]]
    return train, val


@dataclass(frozen=True)
class RenderedPair:
    """A pair rendered for training: its index in its split, the two rows."""

    index: int
    chosen: Rendered
    rejected: Rendered

    @property
    def length(self) -> int:
        return max(len(self.chosen.ids), len(self.rejected.ids))


def render_pairs(pairs: Sequence[Pair], tokenizer, block_size: int, too_long: str,
                 where: str) -> tuple[list[RenderedPair], int]:
    """Render pairs; returns those that fit ``block_size`` (indexed in order) and how
    many were dropped."""
    kept, dropped = [], 0
    for i, pair in enumerate(pairs):
        chosen, rejected = render_pair(pair, tokenizer)
        if max(len(chosen.ids), len(rejected.ids)) - 1 > block_size:
            if too_long == "error":
                raise LanternError(f"{where} pair {i + 1}: {max(len(chosen.ids), len(rejected.ids))} tokens do "
                                   f"not fit the context of {block_size + 1}; raise --block-size (RoPE models) "
                                   f"or pass --too-long drop")
            dropped += 1
            continue
        kept.append(RenderedPair(len(kept), chosen, rejected))
    return kept, dropped


def collate_pairs(items: Sequence[RenderedPair], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows ``(x, y)`` of the B chosen then the B rejected answers, and the pairs' indices.

    >>> from lanternlm.chat import Rendered
    >>> p = RenderedPair(7, Rendered([9, 1, 2], [0, 1, 1], "none"), Rendered([9, 3], [0, 1], "none"))
    >>> x, y, index = collate_pairs([p], pad_id=0)
    >>> x.tolist(), y.tolist(), index.tolist()
    ([[9, 1], [9, 0]], [[1, 2], [3, -1]], [7])
    """
    x, y = collate([p.chosen for p in items] + [p.rejected for p in items], pad_id)  # (2B, T) each
    return x, y, torch.tensor([p.index for p in items], dtype=torch.long)


def prepare(config: PreferenceConfig, run_dir: Path, tokenizer, block_size: int
            ) -> tuple[list[RenderedPair], list[RenderedPair], dict[str, Any]]:
    """The rendered training and held-out pairs, and their counts for the run record."""
    train, val = load_split(config, run_dir)
    train_rows, dropped = render_pairs(train, tokenizer, block_size, config.too_long, "training")
    val_rows, val_dropped = render_pairs(val, tokenizer, block_size, config.too_long, "held-out")
    if not train_rows:
        raise LanternError(f"no training pair fits the context of {block_size} tokens")
    counts = {"train": len(train_rows), "dropped": dropped, "val": len(val_rows), "val_dropped": val_dropped}
    logger.info(f"pairs: {len(train_rows):,} for training ({dropped:,} longer than {block_size} tokens dropped), "
                f"{len(val_rows):,} held out" + (f" ({val_dropped:,} dropped)" if val_dropped else ""))
    if not val_rows:
        logger.warning("no held-out pair: the run reports no held-out accuracy (give --val-pairs)")
    return train_rows, val_rows, counts
