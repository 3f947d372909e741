"""Direct preference optimization (DPO): learn from pairs of a preferred and a
non-preferred answer, without a reward model.

``dpo(config, run_dir)`` runs the stage on the one training loop
(:func:`lanternlm.train.loop.train`), starting from a chat run (``--base``; inherited as
in fine-tuning, :mod:`lanternlm.train.finetune`), on the pairs of
:mod:`lanternlm.train.pairs`.

**The loss** (Rafailov et al., 2023). For a pair, let ``c`` and ``r`` be the policy's
log-probabilities of the chosen and the rejected answer (summed over the answer's tokens:
the thinking segment and the reply up to ``<|end|>``; the prompt never counts), and
``c_ref``, ``r_ref`` the reference model's. The implicit rewards are ``β (c - c_ref)`` and
``β (r - r_ref)``; their difference is the margin, and

- ``sigmoid`` (DPO): ``-log σ(β h)`` with ``h = (c - c_ref) - (r - r_ref)``: ln 2 when the
  policy is the reference, falling as the chosen answer gains on the rejected one;
- ``ipo`` (Azar et al., 2023): ``(h' - 1/(2β))²`` with ``h'`` the same difference of
  *per-token mean* log-ratios (as TRL computes it): the margin is pulled to a target
  instead of pushed without end;
- ``rpo_alpha > 0`` adds ``α x`` the chosen answer's mean negative log-likelihood per token
  (Pang et al., 2024, "RPO"): DPO alone often lowers the chosen answer's probability too,
  only less than the rejected one's.

See :func:`dpo_loss`. The loop makes a step's loss the mean over its pairs.

**The reference** is the base model as it was. By default (``reference="precomputed"``)
its log-probabilities of every training and held-out pair are computed once before
training and stored in ``RUN/reference_logprobs.safetensors``, so no second model stays in
memory; ``reference="frozen"`` keeps a frozen copy and scores each batch with it instead.
The two give the same losses.

**Logs** per step: ``rewards_chosen``, ``rewards_rejected``, ``margins``, ``accuracies``
(share of pairs whose margin is positive, ties half: 0.5 at the start), ``logps_chosen``,
``logps_rejected`` (means per pair); at every evaluation the same on the held-out pairs
(``val_loss``, ``val_accuracy``, ``val_margin``, ...). The run record says
``"stage": "dpo"``: every command reads the result as a chat model.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..config import option
from ..errors import LanternError
from ..log import logger
from . import distributed as D
from . import finetune
from . import pairs as P
from .distributed import DistInfo
from .loop import RESUMABLE, Stage, autocast, check_fresh, resolve, train

DPO_LOSSES = ("sigmoid", "ipo")
REFERENCES = ("precomputed", "frozen")
REFERENCE_FILE = "reference_logprobs.safetensors"


@dataclasses.dataclass
class DPOConfig(P.PreferenceConfig):
    """Everything that decides a DPO run (saved as ``config.json``); "inherit" fields take
    the base run's value."""

    lr: float = option(5e-5, "peak learning rate (DPO moves a trained model: far below SFT's)")
    beta: float = option(0.1, "β: how far the policy may move from the reference (higher = closer)")
    loss: str = option("sigmoid", f"one of {DPO_LOSSES}")
    rpo_alpha: float = option(0.0, "weight of the chosen answers' NLL added to the loss (RPO; 0 = off)")
    reference: str = option("precomputed", "the reference's log-probabilities: 'precomputed' once before training "
                                           "(stored with the run), or a 'frozen' copy of the model kept in memory")


#: Named starting points (``--preset``).
DPO_PRESETS: dict[str, DPOConfig] = {
    # 2 CPU cores, minutes: a quickstart-sized chat run, pairs from its own answers.
    "tiny": DPOConfig(batch_size=8, max_steps=150, lr=1e-4, warmup_steps=10, eval_every=25),
    # One GPU, a gpt2-124m-sized chat run.
    "gpu": DPOConfig(batch_size=32, max_steps=1000, lr=5e-6, warmup_steps=50, eval_every=100,
                     checkpoint_every=500, dtype="bfloat16"),
}


def check_config(config: DPOConfig) -> None:
    """Raise :class:`LanternError` naming the first DPO field with an impossible value."""
    def bad(field: str, rule: str) -> LanternError:
        return LanternError(f"dpo config: {field}={getattr(config, field)!r} is invalid: {rule}")

    P.check_config(config, "dpo")
    if not (math.isfinite(config.beta) and config.beta > 0):
        raise bad("beta", "must be a finite number > 0")
    if config.loss not in DPO_LOSSES:
        raise bad("loss", f"choose one of {DPO_LOSSES}")
    if not (math.isfinite(config.rpo_alpha) and config.rpo_alpha >= 0):
        raise bad("rpo_alpha", "must be a finite number >= 0")
    if config.reference not in REFERENCES:
        raise bad("reference", f"choose one of {REFERENCES}")


# --------------------------------------------------------------------------- the math


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             *, beta: float = 0.1, kind: str = "sigmoid", chosen_tokens: torch.Tensor | None = None,
             rejected_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO (or IPO) losses and the implicit rewards ``β (logp - logp_ref)`` of the
    chosen and the rejected answers; all (B,). Log-probabilities are summed per answer;
    IPO also needs each answer's token count.

    A worked example, β = 0.5: the policy gives the chosen answer -5 nats (reference -6)
    and the rejected one -7 (reference -6), so h = 1 - (-1) = 2 and the loss is
    -log σ(0.5 x 2) = log(1 + e^-1) = 0.3133; the rewards are 0.5 and -0.5.

    >>> t = lambda *v: torch.tensor(v)
    >>> losses, rc, rr = dpo_loss(t(-5.0), t(-7.0), t(-6.0), t(-6.0), beta=0.5)
    >>> round(losses.item(), 4), rc.item(), rr.item()
    (0.3133, 0.5, -0.5)

    The policy equal to the reference: loss ln 2 = 0.6931, no margin.

    >>> losses, rc, rr = dpo_loss(t(-3.0), t(-4.0), t(-3.0), t(-4.0))
    >>> round(losses.item(), 4), (rc - rr).item()
    (0.6931, 0.0)

    IPO, β = 0.5: chosen -4 over 2 tokens (reference -6), rejected -9 over 3 (reference -6):
    mean log-ratios 1 and -1, h' = 2, target 1/(2β) = 1, loss (2 - 1)² = 1.

    >>> losses, _, _ = dpo_loss(t(-4.0), t(-9.0), t(-6.0), t(-6.0), beta=0.5, kind="ipo",
    ...                         chosen_tokens=t(2), rejected_tokens=t(3))
    >>> losses.item()
    1.0
    """
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    if kind == "sigmoid":
        losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    elif kind == "ipo":
        if chosen_tokens is None or rejected_tokens is None:
            raise LanternError("dpo_loss: IPO needs the answers' token counts")
        h = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise LanternError(f"dpo_loss: kind={kind!r}; choose one of {DPO_LOSSES}")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def pair_accuracy(margins: torch.Tensor) -> torch.Tensor:
    """1 per pair whose margin is positive, 1/2 for a tie, 0 otherwise.

    >>> pair_accuracy(torch.tensor([0.3, 0.0, -1.0])).tolist()
    [1.0, 0.5, 0.0]
    """
    return (margins > 0).float() + 0.5 * (margins == 0).float()


def answer_logprobs(model, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's summed log-probability of its answer (targets != -1) and its count; (2B,) each."""
    logps = model(x, y, reduction="none").logprobs.sum(-1)  # (2B,)
    return logps, (y != -1).sum(-1)


# --------------------------------------------------------------------------- the reference


@torch.no_grad()
def reference_logprobs(model, rows: list[P.RenderedPair], batch_size: int, pad_id: int,
                       info: DistInfo) -> torch.Tensor:
    """(N, 2) summed log-probabilities of each pair's chosen and rejected answer under
    ``model``; each process scores its share, the table is added over processes."""
    from ..data.loader import chat_eval_batches

    table = torch.zeros(len(rows), 2, dtype=torch.float32, device=info.device)
    was_training = model.training
    model.eval()
    for x, y, index in chat_eval_batches(rows, batch_size, pad_id, rank=info.rank, world_size=info.world_size,
                                         device=info.device, collate_fn=P.collate_pairs):
        logps, _ = answer_logprobs(model, x, y)
        table[index] = torch.stack(logps.float().chunk(2), dim=1)  # (B, 2)
    model.train(was_training)
    return D.all_reduce_sum(table, info)


def _fingerprint(rows: list[P.RenderedPair], base: str) -> str:
    digest = hashlib.sha256(str(Path(base).resolve()).encode())
    for row in rows:
        digest.update(json.dumps([row.chosen.ids, row.chosen.mask, row.rejected.ids, row.rejected.mask]).encode())
    return digest.hexdigest()


def stored_reference(run_dir: Path, model, splits: dict[str, list[P.RenderedPair]], batch_size: int, pad_id: int,
                     base: str, info: DistInfo) -> dict[str, torch.Tensor]:
    """The reference tables of every split, read from ``RUN/reference_logprobs.safetensors``
    when it was made for these pairs and this base run, else computed and written there."""
    from safetensors.torch import load_file, save_file

    path = run_dir / REFERENCE_FILE
    fingerprint = _fingerprint([r for rows in splits.values() for r in rows], base)
    if path.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as fh:
                same = (fh.metadata() or {}).get("fingerprint") == fingerprint
            if same:
                logger.info(f"reference log-probabilities: read from {path}")
                return {k: v.to(info.device) for k, v in load_file(path).items()}
        except Exception as err:  # a damaged file is recomputed, not trusted
            logger.warning(f"{path}: unreadable ({err}); computing the reference again")
    tables = {name: reference_logprobs(model, rows, batch_size, pad_id, info) for name, rows in splits.items()}
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({k: v.cpu().contiguous() for k, v in tables.items()}, str(tmp), metadata={"fingerprint": fingerprint})
        tmp.replace(path)
        logger.info(f"reference log-probabilities of {sum(len(r) for r in splits.values()):,} pairs: {path}")
    D.barrier(info)
    return tables


# --------------------------------------------------------------------------- the stage


def build(config: DPOConfig, sources: dict[str, str], base, run_dir: Path, info: DistInfo) -> Stage:
    """What DPO hands the loop on this process (see the module docstring)."""
    from ..data.loader import ChatBatches, chat_eval_batches

    model, tokenizer = finetune.model_for(config, base, info.device)
    for line in finetune.describe_inheritance(config, sources, base.model_config, model, tokenizer,
                                              own=("lr", "max_steps", "batch_size", "beta", "loss")):
        logger.info(line)
    rows, val, counts = P.prepare(config, run_dir, tokenizer, model.config.block_size)
    pad = tokenizer.pad_id
    frozen = None
    if config.reference == "frozen":
        frozen = copy.deepcopy(model).eval().requires_grad_(False)
        tables = {}
    else:
        with autocast(config.dtype, info.device):  # as the policy's scores in training
            tables = stored_reference(run_dir, model, {"train": rows, "val": val}, 2 * config.batch_size, pad,
                                      config.base, info)
    batches = ChatBatches(rows, config.batch_size, pad_id=pad, seed=config.seed, rank=info.rank,
                          world_size=info.world_size, device=info.device, length=lambda r: r.length,
                          collate_fn=P.collate_pairs)

    def reference(split: str, x, y, index) -> tuple[torch.Tensor, torch.Tensor]:
        if frozen is None:
            ref = tables[split][index]  # (B, 2)
            return ref[:, 0], ref[:, 1]
        with torch.no_grad():
            logps, _ = answer_logprobs(frozen, x, y)
        return logps.float().chunk(2)

    def score(model, batch, split: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y, index = batch
        logps, tokens = answer_logprobs(model, x, y)
        chosen, rejected = logps.chunk(2)
        chosen_tokens, rejected_tokens = tokens.chunk(2)
        ref_chosen, ref_rejected = reference(split, x, y, index)
        losses, rc, rr = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=config.beta, kind=config.loss,
                                  chosen_tokens=chosen_tokens, rejected_tokens=rejected_tokens)
        if config.rpo_alpha > 0:
            losses = losses - config.rpo_alpha * chosen / chosen_tokens.clamp(min=1)
        stats = {"rewards_chosen": rc.sum(), "rewards_rejected": rr.sum(), "margins": (rc - rr).sum(),
                 "accuracies": pair_accuracy(rc - rr).sum(), "logps_chosen": chosen.detach().sum(),
                 "logps_rejected": rejected.detach().sum()}
        return losses.sum(), stats

    def validation(model) -> dict[str, float]:
        if not val:
            return {}
        names = ("loss", "accuracy", "margin", "rewards_chosen", "rewards_rejected", "logps_chosen")
        sums = torch.zeros(len(names) + 1, dtype=torch.float64, device=info.device)
        for batch in chat_eval_batches(val, 2 * config.batch_size, pad, rank=info.rank, world_size=info.world_size,
                                       device=info.device, collate_fn=P.collate_pairs):
            loss, stats = score(model, batch, "val")
            values = [loss, stats["accuracies"], stats["margins"], stats["rewards_chosen"],
                      stats["rewards_rejected"], stats["logps_chosen"], torch.tensor(len(batch[2]))]
            sums += torch.stack([v.double().to(info.device) for v in values])
        *totals, n = D.all_reduce_sum(sums, info).tolist()
        return {f"val_{name}": total / n for name, total in zip(names, totals)}

    def tally(batch) -> dict[str, int]:
        x, y, _ = batch
        return {"tokens": x.numel(), "trained": int((y != -1).sum()), "pad": int((x == pad).sum())}

    return Stage(model=model, tokenizer=tokenizer, batches=batches, count=lambda batch: len(batch[2]),
                 loss=lambda model, batch: score(model, batch, "train"), tally=tally, evaluate=validation,
                 record={"data": counts}, title=f"DPO loss ({config.loss}, β={config.beta})")


def dpo(config: DPOConfig, run_dir: str | Path, *, resume: bool = False,
        sources: dict[str, str] | None = None) -> dict[str, Any]:
    """Run (or with ``resume``, continue) DPO into ``run_dir``; returns the summary."""
    check_config(config)
    config, sources, base = finetune.start(config, "dpo", run_dir, sources)
    finetune.check_chat_base(base, "DPO")
    run_dir = Path(run_dir)
    check_fresh(run_dir, resume, "dpo")  # before sampling pairs into it
    P.make_task_pairs(config, base, run_dir, resume)
    return train("dpo", config, run_dir, functools.partial(build, config, sources, base, run_dir),
                 resumable=RESUMABLE, resume=resume, sources=sources, parent=config.base)


def dpo_from_args(args) -> dict[str, Any]:
    """``lantern dpo``: the config from a preset (or, with ``--resume``, the run's saved
    config) plus the flags given, then :func:`dpo`."""
    config, sources = resolve("dpo", DPOConfig, DPO_PRESETS, args)
    summary = dpo(config, Path(args.out), resume=args.resume, sources=sources)
    logger.info(json.dumps(summary, indent=2))
    return summary
