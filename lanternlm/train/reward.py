"""The reward model: a chat model's network that scores answers, trained on preference pairs.

``reward(config, run_dir)`` runs the stage on the one training loop, from a chat run
(``--base``, inherited as in fine-tuning) on the pairs of :mod:`lanternlm.train.pairs`.

**The model** is the base network with a scalar head (``GPTConfig.reward_head``, n_embd →
1, initialised like every linear layer) read at the last token of the rendered
conversation: the ``<|end|>`` that closes the assistant's answer, whose hidden state has
seen the prompt and the whole answer (:func:`lanternlm.reward.score_rows`).

**The loss** (Bradley–Terry, as in InstructGPT): with ``s_c`` and ``s_r`` the scores of the
chosen and the rejected answer, ``-log σ(s_c - s_r)``, the negative log-likelihood that the
chosen one is preferred; ``center_coef > 0`` adds ``center_coef x (s_c + s_r)²`` (TRL's
``center_rewards_coefficient``), which keeps scores near 0 without changing their
differences much. See :func:`bradley_terry_loss`.

**Logs** per step: ``accuracies`` (share of pairs scored the right way round, ties half),
``margins`` (mean ``s_c - s_r``), ``rewards_chosen``, ``rewards_rejected``; held out at every
evaluation: ``val_loss``, ``val_accuracy``, ``val_margin``. The run record says ``"stage":
"reward"``: :class:`lanternlm.reward.RewardModel` loads it; ``lantern reward score`` uses it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..config import option
from ..errors import LanternError
from ..log import logger
from ..reward import pad_rows
from . import distributed as D
from . import finetune
from . import pairs as P
from .distributed import DistInfo
from .dpo import pair_accuracy
from .loop import RESUMABLE, Stage, check_fresh, resolve, train


@dataclasses.dataclass
class RewardConfig(P.PreferenceConfig):
    """Everything that decides a reward-model run (saved as ``config.json``)."""

    lr: float = option(1e-4, "peak learning rate")
    center_coef: float = option(0.0, "weight of (s_chosen + s_rejected)² added to the loss (0 = off)")


#: Named starting points (``--preset``).
REWARD_PRESETS: dict[str, RewardConfig] = {
    "tiny": RewardConfig(batch_size=8, max_steps=200, lr=2e-4, warmup_steps=10, eval_every=25),
    "gpu": RewardConfig(batch_size=32, max_steps=1000, lr=1e-5, warmup_steps=50, eval_every=100,
                        checkpoint_every=500, dtype="bfloat16"),
}


def check_config(config: RewardConfig) -> None:
    """Raise :class:`LanternError` naming the first reward field with an impossible value."""
    P.check_config(config, "reward")
    if not (math.isfinite(config.center_coef) and config.center_coef >= 0):
        raise LanternError(f"reward config: center_coef={config.center_coef!r} is invalid: must be a finite "
                           f"number >= 0")


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, center_coef: float = 0.0) -> torch.Tensor:
    """Per-pair Bradley–Terry losses ``-log σ(s_c - s_r)`` (+ ``center_coef (s_c + s_r)²``).

    Scores 2 and 1: -log σ(1) = log(1 + e^-1) = 0.3133; equal scores: ln 2; with
    ``center_coef=0.01``, the first pair adds 0.01 x 3² = 0.09.

    >>> t = torch.tensor
    >>> [round(v, 4) for v in bradley_terry_loss(t([2.0, 0.5]), t([1.0, 0.5])).tolist()]
    [0.3133, 0.6931]
    >>> round(bradley_terry_loss(t([2.0]), t([1.0]), center_coef=0.01).item(), 4)
    0.4033
    """
    losses = -F.logsigmoid(chosen - rejected)
    if center_coef > 0:
        losses = losses + center_coef * (chosen + rejected) ** 2
    return losses


def collate_scored(items: Sequence[P.RenderedPair], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Whole rows (not shifted: the score reads the last token) of the B chosen then the B
    rejected conversations, each row's last index, and the pairs' indices.

    >>> from lanternlm.chat import Rendered
    >>> p = P.RenderedPair(3, Rendered([9, 1, 2], [0, 1, 1], "none"), Rendered([9, 3], [0, 1], "none"))
    >>> x, last, index = collate_scored([p], pad_id=0)
    >>> x.tolist(), last.tolist(), index.tolist()
    ([[9, 1, 2], [9, 3, 0]], [2, 1], [3])
    """
    x, last = pad_rows([p.chosen.ids for p in items] + [p.rejected.ids for p in items], pad_id)
    return x, last, torch.tensor([p.index for p in items], dtype=torch.long)


def reward_model_for(config: RewardConfig, base, device: torch.device):
    """The base run's network with a reward head (a reward base keeps its own)."""
    from ..model import GPT

    model, tokenizer = finetune.model_for(config, base, device)
    if model.config.reward_head:
        return model, tokenizer
    scorer = GPT(dataclasses.replace(model.config, reward_head=True)).to(device)
    trunk = {k: v for k, v in model.state_dict().items() if not k.startswith("lm_head.")}  # scores need no LM head
    missing, unexpected = scorer.load_state_dict(trunk, strict=False)
    assert missing == ["reward_head.weight"] and not unexpected, (missing, unexpected)
    return scorer, tokenizer


def build(config: RewardConfig, sources: dict[str, str], base, run_dir: Path, info: DistInfo) -> Stage:
    """What reward-model training hands the loop on this process (module docstring)."""
    from ..data.loader import ChatBatches, chat_eval_batches

    model, tokenizer = reward_model_for(config, base, info.device)
    for line in finetune.describe_inheritance(config, sources, base.model_config, model, tokenizer):
        logger.info(line)
    # a whole row of L tokens takes L positions (not L - 1): keep one position spare
    rows, val, counts = P.prepare(config, run_dir, tokenizer, model.config.block_size - 1)
    pad = tokenizer.pad_id
    batches = ChatBatches(rows, config.batch_size, pad_id=pad, seed=config.seed, rank=info.rank,
                          world_size=info.world_size, device=info.device, length=lambda r: r.length,
                          collate_fn=collate_scored)

    def score(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, last, _ = batch
        chosen, rejected = model(x, reward_at=last).rewards.chunk(2)  # through forward: DDP syncs it
        losses = bradley_terry_loss(chosen, rejected, config.center_coef)
        margins = (chosen - rejected).detach()
        return losses.sum(), {"accuracies": pair_accuracy(margins).sum(), "margins": margins.sum(),
                              "rewards_chosen": chosen.detach().sum(), "rewards_rejected": rejected.detach().sum()}

    def validation(model) -> dict[str, float]:
        if not val:
            return {}
        sums = torch.zeros(4, dtype=torch.float64, device=info.device)
        for batch in chat_eval_batches(val, 2 * config.batch_size, pad, rank=info.rank, world_size=info.world_size,
                                       device=info.device, collate_fn=collate_scored):
            loss, stats = score(model, batch)
            sums += torch.stack([loss.double(), stats["accuracies"].double(), stats["margins"].double(),
                                 torch.tensor(float(len(batch[2])), dtype=torch.float64, device=info.device)])
        loss, accuracy, margin, n = D.all_reduce_sum(sums, info).tolist()
        return {"val_loss": loss / n, "val_accuracy": accuracy / n, "val_margin": margin / n}

    def tally(batch) -> dict[str, int]:
        x, _, _ = batch
        return {"tokens": x.numel(), "pad": int((x == pad).sum())}

    return Stage(model=model, tokenizer=tokenizer, batches=batches, count=lambda batch: len(batch[2]),
                 loss=score, tally=tally, evaluate=validation, record={"data": counts},
                 title="reward model loss (Bradley-Terry)")


def reward(config: RewardConfig, run_dir: str | Path, *, resume: bool = False,
           sources: dict[str, str] | None = None) -> dict[str, Any]:
    """Run (or with ``resume``, continue) reward-model training into ``run_dir``."""
    check_config(config)
    config, sources, base = finetune.start(config, "reward", run_dir, sources)
    if base.stage != "reward":  # (a reward run may be trained further)
        finetune.check_chat_base(base, "a reward model")
    run_dir = Path(run_dir)
    check_fresh(run_dir, resume, "reward")  # before sampling pairs into it
    P.make_task_pairs(config, base, run_dir, resume)
    return train("reward", config, run_dir, functools.partial(build, config, sources, base, run_dir),
                 resumable=RESUMABLE, resume=resume, sources=sources, parent=config.base)


def reward_from_args(args) -> dict[str, Any]:
    """``lantern reward``: preset (or the resumed config) plus the flags given, then :func:`reward`."""
    config, sources = resolve("reward", RewardConfig, REWARD_PRESETS, args)
    summary = reward(config, Path(args.out), resume=args.resume, sources=sources)
    logger.info(json.dumps(summary, indent=2))
    return summary
