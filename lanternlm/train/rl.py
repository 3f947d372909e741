"""Reinforcement learning: GRPO on the verifiable tasks, or against a reward model (RLHF).

``rl(config, run_dir)`` runs the stage on the one training loop
(:func:`lanternlm.train.loop.train`), from a chat run (``--base``; inherited as in
fine-tuning, :mod:`lanternlm.train.finetune`). The seed's RLHF, "the model generates
multiple outputs, and the preferred one is learned", with a judge that is either the
tasks' verifiers or a reward model::

    questions (tasks' train split, levels in turn, seeded epochs)
        │  G answers each, sampled by the engine from the live weights (one prefill per question)
        ▼                                                   (lanternlm.tasks.rollout.sample_groups)
    judge: verifier (1 right, 0 wrong) + format_reward x well-formed   |  or the reward model's score
        │  A = r - mean of the question's group (optionally / its std)  (lanternlm.train.grpo)
        ▼
    one scoring pass, no gradient: log-probs now (π_old), reference log-probs (β > 0), entropy
        │  batches of whole groups, used for updates_per_batch optimizer steps
        ▼
    loss = Σ over the chosen tokens of the clipped surrogate (+ β KL), / tokens or answers

**What enters the gradient.** Only the tokens the model chose: the answer's tokens and its
``<|end|>`` (ending is a choice too). The prompt and any token the thinking budget forced
are left out (targets -1), and so is padding: rows are right-padded and the model causal,
so a row's losses are those of the row alone.

**Sampling and training agree.** The engine reports each token's log-probability under
the distribution it drew from (temperature included, no other filter is used); the scoring
pass recomputes it with the training forward (``GPT.forward(temperature=...)``). Their
mean and max absolute difference are logged every step (``logprob_diff_mean/max``):
about 1e-6 on the CPU in fp32, larger under bf16.

**Logs** (``metrics.jsonl``, every step; the rollout's values are those of the latest
rollout): ``reward_mean``, ``reward_std`` and ``accuracy`` (verifier), overall and per task
(``reward_mean_letters``, ...); ``format_fraction`` (well-formed answers); ``no_signal_fraction``
(groups whose rewards are all equal: no gradient), ``all_right_fraction``,
``all_wrong_fraction``; ``length_min/mean/max`` (answer tokens), ``cut_fraction`` (answers
cut at ``max_tokens`` or the context), ``thinking_mean``; ``entropy`` (mean over the
chosen tokens); ``logprob_diff_mean/max``; ``rollout_s`` and ``rollout_tokens_per_s``; from
the loss: ``clip_low_fraction``, ``clip_high_fraction`` and, with β > 0, ``kl``; the loop's
``grad_norm``. Every ``eval_every`` steps, on a fixed held-out set (test split, the same
sampling seeds every time): ``val_pass1`` (verifier accuracy of single answers),
``val_passk`` (some of ``eval_samples`` answers right), ``val_reward``, ``val_length_mean``,
``val_cut_fraction``, per task too. The base model's held-out numbers, measured before
training, are in the run record (``base_eval``).

**No signal.** A group whose answers all get the same reward (all right: too easy; all
wrong: too hard) has zero advantages and teaches nothing. When most groups are such, the
log says which tasks and why; when more than ``no_signal_stop`` of them are, for
``no_signal_patience`` rollouts in a row, the run stops (``stopped: no_signal``).

**RLHF** (``--reward-model RM``): the reward run scores each answer (prompt + answer +
``<|end|>``, :meth:`lanternlm.reward.RewardModel.score_replies`); the verifiers still
grade, so ``accuracy`` beside ``reward_mean`` shows whether a rising score still means right
answers. ``stop_accuracy_drop`` stops the run when held-out verifier accuracy falls that
far below its best (the base's included): reward hacking, made visible and stopped.

**Resume** is exact: the rollout stream's state (its position, the batch being reused and
the stop rules' counters) is saved in every checkpoint. Under ``torchrun`` every process
samples its own questions of each global batch with the same seeds one process would use,
so two processes follow the one-process curve. The result is a run of stage ``rl``, a chat
model every command accepts.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..chat import REASONING_LEVELS, ChatTokens, well_formed
from ..config import option
from ..errors import LanternError
from ..log import logger
from ..tasks.registry import TASKS
from . import distributed as D
from . import finetune
from . import grpo
from .distributed import DistInfo
from .finetune import FinetuneConfig, adamw_unless_asked
from .loop import RESUMABLE, Stage, autocast, resolve, train

#: When more than this share of a rollout's groups carry no signal, the log says so (again
#: every WARN_EVERY rollouts while it lasts).
MOST = 0.5
WARN_EVERY = 20
#: Seeds of the held-out questions' answers start here (training questions count from 0).
EVAL_SEED = 10**9


@dataclasses.dataclass
class RLConfig(FinetuneConfig):
    """Everything that decides an RL run (saved as ``config.json``); "inherit" fields take the
    base run's value. The objective's defaults are explained in :mod:`lanternlm.train.grpo`."""

    base: str = option("", "base chat run (lantern sft, dpo, rl): model, tokenizer and settings are inherited from it",
                       path=True)
    batch_size: int = option(4, "questions per micro-batch, each answered group_size times")
    max_steps: int = option(200, "optimizer steps (the schedule's length unless max_minutes stops it first)")
    lr: float = option(2e-5, "peak learning rate (RL nudges a trained model by its own samples: far below SFT's)")
    optimizer: str = adamw_unless_asked()
    warmup_steps: int = option(5, "linear warmup steps")
    eval_every: int = option(20, "held-out pass@1 / pass@k every N steps (and at the end)")
    log_every: int = option(1, "write a metrics.jsonl line every N steps")
    checkpoint_every: int = option(50, "write a checkpoint every N steps (and at the end)")
    reward: str = option("tasks", "the judge: 'tasks' (every task's verifier) or 'tasks:letters,arithmetic' (those "
                                  "tasks); the tasks also give the questions, with --reward-model too")
    reward_model: str = option("", "a reward run (lantern reward) that judges the answers instead of the verifiers "
                                   "(RLHF); the verifiers are still measured", path=True)
    levels: list[str] = option(list(REASONING_LEVELS), "reasoning levels the questions are asked at, in turn")
    group_size: int = option(8, "G: answers sampled per question (one prefill); the group's mean is the baseline "
                                "(GRPO used 64, DAPO 16: 8 keeps a CPU rollout affordable and still finds a right answer "
                                "the model gives 1 time in 4 in 9 groups out of 10)")
    temperature: float = option(1.0, "sampling temperature (the log-probabilities trained are taken at it; 1 = the model's own)")
    max_tokens: int = option(320, "longest answer; one cut there never reached <|end|>: wrong, and counted as cut")
    thinking_budget: Optional[int] = option(None, "most thinking tokens per answer, then <|/think|> is forced (forced tokens "
                                                  "get no gradient; None = no cap)")
    format_reward: float = option(0.1, "added to a verifier's reward for a well-formed answer (thinking segment, "
                                       "<|end|>); small, so a right answer always outranks a wrong one")
    scale_std: bool = option(False, "divide advantages by the group's std (GRPO's original; off: Dr. GRPO, no difficulty bias)")
    aggregation: str = option("token", f"one of {grpo.AGGREGATIONS}: mean over all chosen tokens (DAPO) or per answer first (GRPO)")
    updates_per_batch: int = option(1, "optimizer steps on each sampled batch (> 1: the clipped ratio acts)")
    clip_low: float = option(0.2, "ε_low: a ratio below 1 - ε_low with a negative advantage is clipped (PPO's 0.2)")
    clip_high: float = option(0.28, "ε_high: a ratio above 1 + ε_high with a positive advantage is clipped (DAPO's 0.28)")
    beta: float = option(0.0, "weight of the KL penalty to the reference, the base model (0 = off, no reference kept)")
    train_questions: int = option(2000, "training questions drawn per task (the rollouts go through them in seeded epochs)")
    eval_questions: int = option(32, "held-out (test split) questions per task for pass@1 / pass@k")
    eval_samples: int = option(8, "k: answers sampled per held-out question (pass@1 is their mean, pass@k any right)")
    stop_accuracy_drop: Optional[float] = option(0.1, "stop when held-out verifier accuracy (pass@1) falls this far "
                                                      "below its best, e.g. 0.1 = 10 points: well above the noise of "
                                                      "a few hundred held-out answers (None = never)")
    no_signal_stop: float = option(0.9, "stop when more than this share of the groups get all-equal rewards ...")
    no_signal_patience: int = option(3, "... for this many rollouts in a row")


#: Named starting points (``--preset``).
RL_PRESETS: dict[str, RLConfig] = {
    # 2 CPU cores, minutes: a quickstart-sized chat run.
    "tiny": RLConfig(batch_size=4, max_steps=100, lr=5e-5, max_tokens=256, eval_questions=24, eval_every=20),
    # One GPU, a gpt2-124m-sized chat run.
    "gpu": RLConfig(batch_size=16, group_size=16, max_steps=500, lr=1e-6, eval_questions=100, eval_every=50,
                    checkpoint_every=100, dtype="bfloat16"),
}

#: Fields a resumed run may change besides the loop's.
RL_RESUMABLE = (*RESUMABLE, "stop_accuracy_drop", "no_signal_stop", "no_signal_patience")


def reward_tasks(spec: str) -> list[str]:
    """The tasks a ``--reward`` value names.

    >>> reward_tasks("tasks:letters,arithmetic"), reward_tasks("tasks")[:2]
    (['letters', 'arithmetic'], ['letters', 'arithmetic'])
    """
    kind, _, names = spec.partition(":")
    if kind != "tasks":
        raise LanternError(f"--reward {spec!r}: give 'tasks' or 'tasks:NAME,NAME' (a reward model: --reward-model)")
    chosen = [n for n in names.split(",") if n] if names else list(TASKS)
    unknown = [n for n in chosen if n not in TASKS]
    if unknown or not chosen:
        raise LanternError(f"--reward {spec!r}: unknown tasks {unknown}; known tasks: {', '.join(TASKS)}")
    return chosen


def check_config(config: RLConfig) -> None:
    """Raise :class:`LanternError` naming the first RL field with an impossible value."""
    def bad(name: str, rule: str) -> LanternError:
        return LanternError(f"rl config: {name}={getattr(config, name)!r} is invalid: {rule}")

    finetune.check_config(config, "rl")
    reward_tasks(config.reward)
    if not config.levels or any(level not in REASONING_LEVELS for level in config.levels):
        raise bad("levels", f"choose some of {REASONING_LEVELS}")
    if config.group_size < 2:
        raise bad("group_size", "must be >= 2 (the group's mean is the baseline)")
    if not (math.isfinite(config.temperature) and config.temperature > 0):
        raise bad("temperature", "must be > 0 (RL samples; 0 would be greedy)")
    for name in ("max_tokens", "updates_per_batch", "train_questions", "eval_questions", "no_signal_patience"):
        if getattr(config, name) < 1:
            raise bad(name, "must be >= 1")
    if config.eval_samples < 1:
        raise bad("eval_samples", "must be >= 1")
    if config.thinking_budget is not None and config.thinking_budget < 0:
        raise bad("thinking_budget", "must be >= 0 or None")
    if config.aggregation not in grpo.AGGREGATIONS:
        raise bad("aggregation", f"choose one of {grpo.AGGREGATIONS}")
    for name in ("format_reward", "clip_low", "clip_high", "beta"):
        if not (math.isfinite(getattr(config, name)) and getattr(config, name) >= 0):
            raise bad(name, "must be a finite number >= 0")
    if config.clip_low >= 1:
        raise bad("clip_low", "must be < 1")
    if config.stop_accuracy_drop is not None and not 0 < config.stop_accuracy_drop <= 1:
        raise bad("stop_accuracy_drop", "must be in (0, 1] or None")
    if not 0 < config.no_signal_stop <= 1:
        raise bad("no_signal_stop", "must be in (0, 1]")


# --------------------------------------------------------------------------- answers as rows


@dataclass
class Sample:
    """One answer as training needs it: the prompt, the tokens the model chose (its answer
    and, when it finished, ``<|end|>``), which of them are trained (not forced), their
    log-probabilities at sampling, and the answer's advantage."""

    prompt: list[int]
    actions: list[int]
    trained: list[bool]
    sampled: list[float]
    advantage: float


@dataclass
class RLBatch:
    """A micro-batch of answers: right-padded rows ``x`` (B, T) and targets ``y`` (B, T) (-1 =
    not trained: prompt, forced tokens, padding), each row's advantage (B,), the log-probs
    at sampling (B, T), the loss weights (B, T) of the aggregation and what they count;
    the scoring pass fills ``old`` (π_old's log-probs) and, with β > 0, ``ref``."""

    x: torch.Tensor
    y: torch.Tensor
    advantages: torch.Tensor
    sampled: torch.Tensor
    weights: torch.Tensor
    count: int
    old: torch.Tensor | None = None
    ref: torch.Tensor | None = None

    def to(self, device) -> "RLBatch":
        return RLBatch(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.state().items()})

    def state(self) -> dict[str, Any]:
        """Its fields, tensors on the CPU (what a checkpoint keeps of a batch being reused)."""
        return {f.name: (lambda v: v.cpu() if isinstance(v, torch.Tensor) else v)(getattr(self, f.name))
                for f in dataclasses.fields(self)}


def collate_samples(samples: Sequence[Sample], pad_id: int, aggregation: str = "token") -> RLBatch:
    """Rows of prompt + actions, right-padded; only the trained actions are targets.

    >>> s = Sample(prompt=[9, 8], actions=[5, 6, 4], trained=[True, False, True], sampled=[-0.5, -0.1, -0.25],
    ...            advantage=0.5)
    >>> b = collate_samples([s, Sample([9], [7], [True], [-1.0], -0.5)], pad_id=0)
    >>> b.x.tolist(), b.y.tolist()
    ([[9, 8, 5, 6], [9, 0, 0, 0]], [[-1, 5, -1, 4], [7, -1, -1, -1]])
    >>> b.sampled.tolist(), b.advantages.tolist(), b.count
    ([[0.0, -0.5, 0.0, -0.25], [-1.0, 0.0, 0.0, 0.0]], [0.5, -0.5], 3)
    """
    T = max(len(s.prompt) + len(s.actions) for s in samples) - 1
    x = torch.full((len(samples), T), pad_id, dtype=torch.long)  # (B, T)
    y = torch.full((len(samples), T), -1, dtype=torch.long)  # (B, T)
    sampled = torch.zeros(len(samples), T)  # (B, T)
    for b, s in enumerate(samples):
        ids = [*s.prompt, *s.actions]
        x[b, :len(ids) - 1] = torch.tensor(ids[:-1])
        first = len(s.prompt) - 1  # the position that predicts the first action
        keep = torch.tensor(s.trained, dtype=torch.bool)
        y[b, first:first + len(s.actions)] = torch.where(keep, torch.tensor(s.actions), -1)
        sampled[b, first:first + len(s.actions)] = torch.where(keep, torch.tensor(s.sampled), 0.0)
    weights, count = grpo.aggregation_weights(y != -1, aggregation)
    return RLBatch(x, y, torch.tensor([s.advantage for s in samples]), sampled, weights, count)


# --------------------------------------------------------------------------- judging and statistics


@dataclass
class Judged:
    """A group's verdicts, what the statistics are made of (small: gathered from every process)."""

    task: str
    rewards: list[float]
    correct: list[bool]
    formed: list[bool]
    lengths: list[int]
    cut: list[bool]
    thinking: list[int]


def judge_groups(groups, tokenizer, format_reward: float, reward_model=None) -> list[Judged]:
    """The reward of every answer (module docstring): the verifier (1 or 0) plus
    ``format_reward`` for a well-formed one, or the reward model's score."""
    chat = ChatTokens.of(tokenizer)
    judged = []
    for group in groups:
        answers, level = group.answers, group.question.level
        formed = [well_formed(a.tokens, chat, level, a.finished) for a in answers]
        if reward_model is None:
            rewards = [float(a.correct) + format_reward * f for a, f in zip(answers, formed)]
        else:
            room = reward_model.model.config.block_size - len(group.prompt) - 1  # the RM's context holds the row
            rewards = reward_model.score_replies(group.prompt, [a.tokens[:max(0, room)] for a in answers], tokenizer)
        judged.append(Judged(group.question.task.name, rewards, [a.correct for a in answers], formed,
                             [len(a.tokens) for a in answers], [not a.finished for a in answers],
                             [a.thinking for a in answers]))
    return judged


def rollout_stats(judged: Sequence[Judged]) -> dict[str, float]:
    """A rollout's reward, signal and length statistics (module docstring), overall and
    per task.

    >>> j = [Judged("letters", [1.1, 0.1], [True, False], [True, True], [10, 30], [False, False], [4, 20]),
    ...      Judged("letters", [0.0, 0.0], [False, False], [False, False], [64, 64], [True, True], [60, 60])]
    >>> s = rollout_stats(j)
    >>> round(s["reward_mean"], 6), s["accuracy"], s["no_signal_fraction"], s["all_wrong_fraction"], s["cut_fraction"]
    (0.3, 0.25, 0.5, 0.5, 0.5)
    >>> s["length_min"], s["length_mean"], s["length_max"], round(s["reward_mean_letters"], 6)
    (10, 42.0, 64, 0.3)
    """
    def summary(groups: Sequence[Judged], suffix: str = "") -> dict[str, float]:
        rewards = torch.tensor([g.rewards for g in groups], dtype=torch.float64)  # (Q, G)
        correct = torch.tensor([g.correct for g in groups], dtype=torch.float64)
        out = {f"reward_mean{suffix}": rewards.mean().item(), f"reward_std{suffix}": rewards.std(unbiased=False).item(),
               f"accuracy{suffix}": correct.mean().item()}
        if not suffix:
            out.update({"format_fraction": sum(sum(g.formed) for g in groups) / rewards.numel(),
                        "no_signal_fraction": grpo.no_signal(rewards).double().mean().item(),
                        "all_right_fraction": (correct.min(dim=1).values == 1).double().mean().item(),
                        "all_wrong_fraction": (correct.max(dim=1).values == 0).double().mean().item()})
        return out

    lengths = [n for g in judged for n in g.lengths]
    stats = summary(judged)
    stats.update({"length_min": min(lengths), "length_mean": sum(lengths) / len(lengths),
                  "length_max": max(lengths), "cut_fraction": sum(sum(g.cut) for g in judged) / len(lengths),
                  "thinking_mean": sum(sum(g.thinking) for g in judged) / len(lengths)})
    for task in dict.fromkeys(g.task for g in judged):
        stats.update(summary([g for g in judged if g.task == task], f"_{task}"))
    return stats


def signal_warning(judged: Sequence[Judged]) -> str | None:
    """What the log says when most groups got all-equal rewards (:data:`MOST`): which tasks,
    and whether too easy (all right) or too hard (all wrong) for the model.

    >>> easy = Judged("letters", [1.0, 1.0], [True, True], [True] * 2, [5, 5], [False] * 2, [0, 0])
    >>> hard = Judged("arithmetic", [0.0, 0.0], [False, False], [False] * 2, [5, 5], [True] * 2, [0, 0])
    >>> signal_warning([easy, easy, hard])
    'no learning signal: 100% of the groups got the same reward for all 2 answers (their advantages are 0); letters: 100% of its groups all right, too easy for this model; arithmetic: 100% all wrong, too hard for this model'
    >>> signal_warning([Judged("letters", [1.0, 0.0], [True, False], [True] * 2, [5, 5], [False] * 2, [0, 0])]) is None
    True
    """
    rewards = torch.tensor([g.rewards for g in judged], dtype=torch.float64)
    share = grpo.no_signal(rewards).double().mean().item()
    if share <= MOST:
        return None
    parts = []
    for task in dict.fromkeys(g.task for g in judged):
        mine = [g for g in judged if g.task == task]
        right = sum(all(g.correct) for g in mine) / len(mine)
        wrong = sum(not any(g.correct) for g in mine) / len(mine)
        if max(right, wrong) > MOST:
            parts.append(f"{task}: {right:.0%} of its groups all right, too easy for this model" if right >= wrong
                         else f"{task}: {wrong:.0%} all wrong, too hard for this model")
    return (f"no learning signal: {share:.0%} of the groups got the same reward for all {rewards.shape[1]} answers "
            f"(their advantages are 0)" + "".join(f"; {p}" for p in parts))


# --------------------------------------------------------------------------- the rollouts


@dataclass
class Policy:
    """What sampling and scoring need on this process: the live model, its engine, the
    tokenizer, the judge and the frozen reference (β > 0)."""

    model: Any
    engine: Any
    tokenizer: Any
    reward_model: Any = None
    reference: Any = None
    thinking: Any = None


class Rollouts:
    """The RL stage's batches (the loop's :class:`~lanternlm.train.loop.Batches`): each
    rollout samples this process's questions of one global batch, judges them, scores
    them once and queues its ``grad_accum`` micro-batches ``updates_per_batch`` times.

    Global question ``j`` of the stream is ``pool[order_e[j mod N]]`` with ``e = j div N``
    (a seeded permutation per epoch) and is sampled with seed ``seed * 1_000_003 + j``;
    rollout r holds questions ``r Q .. (r + 1) Q - 1`` (Q = batch_size x grad_accum x
    processes), micro-batch m of process k the ``batch_size`` from ``r Q + (m W + k) B``.
    The state also carries the stop rules' counters: the no-signal streak and the best
    held-out accuracy (which the stage's evaluation updates).
    """

    def __init__(self, config: RLConfig, policy: Policy, pool: list, info: DistInfo) -> None:
        self.config, self.policy, self.pool, self.info = config, policy, pool, info
        self.per_rollout = config.batch_size * config.grad_accum * info.world_size
        self.rollouts = 0
        self.queue: list[RLBatch] = []
        self.stats: dict[str, float] = {}
        self.streak = 0  # rollouts in a row with more than no_signal_stop of the groups silent
        self.best_accuracy: float | None = None
        self.stop_reason: str | None = None
        self._shares: list = []  # with updates_per_batch > 1: every process's batches of this rollout
        self._order: tuple[int, list[int]] | None = None
        self._warned: int | None = None  # the rollout that last warned of no signal

    # ---------------------------------------------------------------- the stream

    def question(self, j: int):
        """Global question ``j`` of the stream (class docstring)."""
        from ..tasks.rollout import Question

        epoch, position = divmod(j, len(self.pool))
        if self._order is None or self._order[0] != epoch:
            order = list(range(len(self.pool)))
            random.Random(f"rl:{self.config.seed}:{epoch}").shuffle(order)
            self._order = (epoch, order)
        task, example, level = self.pool[self._order[1][position]]
        return Question(task, example, level, self.config.seed * 1_000_003 + j)

    def __iter__(self) -> "Rollouts":
        return self

    def __next__(self) -> RLBatch:
        if not self.queue:
            with D.gathered(self.policy.model):  # a sharded model whole: each process samples and scores alone
                self._rollout()
        return self.queue.pop(0)

    @property
    def epochs_done(self) -> float:
        return self.rollouts * self.per_rollout / len(self.pool)

    def state_dict(self) -> dict[str, Any]:
        return {"rollouts": self.rollouts, "per_rollout": self.per_rollout, "pool": len(self.pool),
                "queue": self._shares if self.queue else [], "left": len(self.queue), "stats": dict(self.stats),
                "streak": self.streak, "best_accuracy": self.best_accuracy}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("per_rollout", "pool"):
            if state[key] != self.state_dict()[key]:
                raise LanternError(f"cannot resume the rollouts: saved {key} is {state[key]}, now "
                                   f"{self.state_dict()[key]} (the questions, batch_size x grad_accum x processes "
                                   f"must match the interrupted run)")
        self.rollouts, self.stats, self.streak = int(state["rollouts"]), dict(state["stats"]), int(state["streak"])
        self.best_accuracy = state["best_accuracy"]
        if state["queue"] and len(state["queue"]) != self.info.world_size:
            raise LanternError(f"cannot resume the rollouts on {self.info.world_size} process(es): the checkpoint "
                               f"was written by {len(state['queue'])} processes in the middle of reusing a rollout "
                               f"(updates_per_batch); resume on as many, or from a checkpoint at a multiple "
                               f"of updates_per_batch steps")
        self._shares = state["queue"]  # every process's batches of the rollout being reused, or none
        mine = [RLBatch(**b) for b in self._shares[self.info.rank]] * self.config.updates_per_batch if self._shares else []
        self.queue = [b.to(self.info.device) for b in mine[len(mine) - int(state["left"]):]]

    # ---------------------------------------------------------------- one rollout

    def _rollout(self) -> None:
        from ..tasks.rollout import sample_groups

        config, policy, info = self.config, self.policy, self.info
        policy.engine.weights_changed()  # the optimizer step changed them (a sharded model: unseen)
        B, W = config.batch_size, info.world_size
        first = self.rollouts * self.per_rollout
        micro_questions = [[self.question(first + (m * W + info.rank) * B + i) for i in range(B)]
                           for m in range(config.grad_accum)]
        t0 = time.perf_counter()
        questions = [q for qs in micro_questions for q in qs]
        groups = list(sample_groups(policy.engine, policy.tokenizer, questions, config.group_size,
                                    temperature=config.temperature, max_tokens=config.max_tokens,
                                    batch_questions=len(questions), thinking=policy.thinking))
        seconds = time.perf_counter() - t0
        judged = judge_groups(groups, policy.tokenizer, config.format_reward, policy.reward_model)
        rewards = torch.tensor([j.rewards for j in judged], dtype=torch.float64)  # (Q, G)
        advantages = grpo.group_advantages(rewards, config.scale_std).tolist()
        end = ChatTokens.of(policy.tokenizer).end
        batches, sums = [], torch.zeros(4, dtype=torch.float64)  # |diff| sum, entropy sum, tokens, generated
        diff_max = 0.0
        for m in range(config.grad_accum):
            samples = [Sample(group.prompt, answer.actions(end), [not f for f in answer.forced], answer.logprobs, a)
                       for group, row in zip(groups[m * B:(m + 1) * B], advantages[m * B:(m + 1) * B])
                       for answer, a in zip(group.answers, row)]
            batch = collate_samples(samples, policy.tokenizer.pad_id, config.aggregation).to(info.device)
            entropy, diff = self._score(batch)
            trained = batch.y != -1
            sums += torch.tensor([diff.sum().item(), entropy.sum().item(), trained.sum().item(),
                                  sum(len(s.actions) for s in samples)], dtype=torch.float64)
            diff_max = max(diff_max, diff.max().item() if trained.any() else 0.0)
            batches.append(batch)

        gathered = D.all_gather_objects((judged, sums.tolist(), diff_max, seconds), info)
        everyone = [g for part in gathered for g in part[0]]
        diff_sum, entropy_sum, tokens, generated = map(sum, zip(*(part[1] for part in gathered)))
        self.stats = {**rollout_stats(everyone), "entropy": entropy_sum / max(1.0, tokens),
                      "logprob_diff_mean": diff_sum / max(1.0, tokens),
                      "logprob_diff_max": max(part[2] for part in gathered),
                      "rollout_s": max(part[3] for part in gathered),
                      "rollout_tokens_per_s": generated / max(1e-9, max(part[3] for part in gathered))}
        self._watch_signal(everyone)
        self.queue = batches * config.updates_per_batch
        # a checkpoint between two updates on this batch must hold it: every process's share
        self._shares = (D.all_gather_objects([b.state() for b in batches], info)
                        if config.updates_per_batch > 1 else [])
        self.rollouts += 1

    @torch.no_grad()
    def _score(self, batch: RLBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Fill ``batch.old`` (and ``batch.ref``) with one forward of the live model as the
        loss will run it; return the entropy and |sampled - recomputed| at the trained tokens."""
        from ..loss import token_entropy, token_logprobs

        config, policy = self.config, self.policy
        limit = policy.engine.vocab_limit
        with autocast(config.dtype, self.info.device):
            hidden, _ = policy.model.hidden(batch.x)  # (B, T, C)
            hidden = hidden / config.temperature if config.temperature != 1.0 else hidden
            batch.old = token_logprobs(hidden, policy.model.head_weight, batch.y, vocab_limit=limit).float()
            entropy = token_entropy(hidden, policy.model.head_weight, vocab_limit=limit)
            if policy.reference is not None:
                batch.ref = policy.reference(batch.x, batch.y, reduction="none", vocab_limit=limit,
                                             temperature=config.temperature).logprobs.float()
        trained = batch.y != -1
        return entropy[trained], (batch.sampled - batch.old).abs()[trained]

    def _watch_signal(self, judged: Sequence[Judged]) -> None:
        """The no-signal rule (module docstring): warn, count the streak, decide to stop."""
        warning = signal_warning(judged)
        share = self.stats["no_signal_fraction"]
        self.streak = self.streak + 1 if share > self.config.no_signal_stop else 0
        if warning and (self._warned is None or self.rollouts - self._warned >= WARN_EVERY):
            logger.warning(f"rl rollout {self.rollouts + 1}: {warning}")
            self._warned = self.rollouts
        if self.streak >= self.config.no_signal_patience:
            logger.warning(f"rl: stopping: more than {self.config.no_signal_stop:.0%} of the groups carried no "
                           f"signal for {self.streak} rollouts in a row; choose tasks or levels inside the "
                           f"model's reach (or a reward model)")
            self.stop_reason = "no_signal"


# --------------------------------------------------------------------------- held out


def training_pool(tasks, config: RLConfig) -> list[tuple]:
    """``(task, example, level)`` of every training question: ``train_questions`` per task
    (train split), the levels taken in turn."""
    pool = []
    for task in tasks:
        examples = task.generate(config.train_questions, config.seed, split="train")
        pool += [(task, example, config.levels[i % len(config.levels)]) for i, example in enumerate(examples)]
    return pool


def held_out_questions(tasks, config: RLConfig) -> list:
    """The fixed held-out set: ``eval_questions`` per task (test split, as ``lantern eval``
    draws them), levels in turn, each with its own seed, the same for every run."""
    from ..tasks.rollout import Question

    questions = []
    for task in tasks:
        for i, example in enumerate(task.generate(config.eval_questions, 0, split="test", at_most=True)):
            questions.append(Question(task, example, config.levels[i % len(config.levels)], EVAL_SEED + len(questions)))
    return questions


@torch.no_grad()
def held_out_scores(policy: Policy, questions: Sequence, config: RLConfig, info: DistInfo) -> dict[str, float]:
    """``eval_samples`` answers to every held-out question (each process its share), judged:
    ``val_pass1`` (the mean of :func:`~lanternlm.train.grpo.pass_at_k` at k = 1),
    ``val_passk`` (at k = eval_samples), ``val_reward``, ``val_length_mean``,
    ``val_cut_fraction``; the first three per task too."""
    from ..tasks.rollout import sample_groups

    names = list(dict.fromkeys(q.task.name for q in questions))
    k = config.eval_samples
    policy.engine.weights_changed()
    sums = torch.zeros(len(names), 7, dtype=torch.float64)  # questions, pass@1, pass@k, reward, length, cut, answers
    groups = sample_groups(policy.engine, policy.tokenizer, questions[info.rank::info.world_size], k,
                           temperature=config.temperature, max_tokens=config.max_tokens,
                           batch_questions=max(1, 128 // k), thinking=policy.thinking)
    for judged in judge_groups(groups, policy.tokenizer, config.format_reward, policy.reward_model):
        right = sum(judged.correct)
        sums[names.index(judged.task)] += torch.tensor(
            [1, grpo.pass_at_k(k, right, 1), grpo.pass_at_k(k, right, k), sum(judged.rewards), sum(judged.lengths),
             sum(judged.cut), k], dtype=torch.float64)
    sums = D.all_reduce_sum(sums.to(info.device), info).cpu()
    total = sums.sum(dim=0)
    scores = {"val_pass1": total[1].item() / total[0].item(), "val_passk": total[2].item() / total[0].item(),
              "val_reward": total[3].item() / total[6].item(), "val_length_mean": total[4].item() / total[6].item(),
              "val_cut_fraction": total[5].item() / total[6].item()}
    for name, row in zip(names, sums.tolist()):
        scores.update({f"val_pass1_{name}": row[1] / row[0], f"val_passk_{name}": row[2] / row[0],
                       f"val_reward_{name}": row[3] / row[6]})
    return scores


# --------------------------------------------------------------------------- the stage


def build(config: RLConfig, sources: dict[str, str], base, info: DistInfo) -> Stage:
    """What RL hands the loop on this process (see the module docstring)."""
    from ..engine import Engine
    from ..generate import thinking_budget
    from ..reward import RewardModel
    from ..tasks import get_task

    model, tokenizer = finetune.model_for(config, base, info.device)
    for line in finetune.describe_inheritance(config, sources, base.model_config, model, tokenizer,
                                              own=("lr", "max_steps", "batch_size", "group_size", "reward")):
        logger.info(line)
    judge = None
    if config.reward_model:
        judge = RewardModel(config.reward_model, info.device)
        if judge.tokenizer.fingerprint() != tokenizer.fingerprint():
            raise LanternError(f"--reward-model {config.reward_model}: its tokenizer is not the chat model's; train "
                               f"the reward model from the same chat lineage")
    policy = Policy(model, Engine(model, vocab_limit=finetune.vocab_limit(base, tokenizer)), tokenizer, judge,
                    copy.deepcopy(model).eval().requires_grad_(False) if config.beta > 0 else None,
                    thinking_budget(tokenizer, config.thinking_budget))
    tasks = [get_task(name) for name in reward_tasks(config.reward)]
    pool, held_out = training_pool(tasks, config), held_out_questions(tasks, config)
    rollouts = Rollouts(config, policy, pool, info)
    logger.info(f"rl: {len(pool):,} training questions ({', '.join(t.name for t in tasks)}; levels "
                f"{','.join(config.levels)}), {config.group_size} answers each, judged by "
                f"{'the reward model ' + config.reward_model if judge else 'the verifiers'}; "
                f"{len(held_out)} held-out questions x {config.eval_samples} answers")
    base_eval = held_out_scores(policy, held_out, config, info)  # before any step: the base model's
    rollouts.best_accuracy = base_eval["val_pass1"]
    logger.info(f"rl: the base model on the held-out questions: pass@1 {base_eval['val_pass1']:.1%}, "
                f"pass@{config.eval_samples} {base_eval['val_passk']:.1%}, reward {base_eval['val_reward']:.3f}")

    def loss(model, batch: RLBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logp = model(batch.x, batch.y, reduction="none", vocab_limit=policy.engine.vocab_limit,
                     temperature=config.temperature).logprobs  # (B, T), 0 where not trained
        losses, flags = grpo.grpo_token_losses(logp, batch.old, batch.advantages, clip_low=config.clip_low,
                                               clip_high=config.clip_high, ref_logp=batch.ref, beta=config.beta)
        w = batch.weights
        stats = {"clip_low_fraction": (flags["clip_low"] * w).sum(), "clip_high_fraction": (flags["clip_high"] * w).sum()}
        if "kl" in flags:
            stats["kl"] = (flags["kl"] * w).sum()
        return (losses * w).sum(), stats

    def evaluation(model) -> dict[str, float]:
        scores = held_out_scores(policy, held_out, config, info)
        best, now = rollouts.best_accuracy, scores["val_pass1"]
        if config.stop_accuracy_drop is not None and best is not None and now < best - config.stop_accuracy_drop:
            logger.warning(f"rl: held-out verifier accuracy {now:.1%} fell more than {config.stop_accuracy_drop:.0%} "
                           f"below its best {best:.1%}" + (" while the reward model's score is "
                                                          f"{scores['val_reward']:.3f}" if judge else "")
                           + ": stopping (stop_accuracy_drop)")
            rollouts.stop_reason = "accuracy_drop"
        rollouts.best_accuracy = now if best is None else max(best, now)
        return scores

    def tally(batch: RLBatch) -> dict[str, int]:
        return {"tokens": batch.x.numel(), "trained": int((batch.y != -1).sum()),
                "pad": int((batch.x == tokenizer.pad_id).sum())}

    record = {"tasks": [t.name for t in tasks], "judge": "reward_model" if judge else "tasks",
              "questions": {"train": len(pool), "held_out": len(held_out)}, "base_eval": base_eval}
    return Stage(model=model, tokenizer=tokenizer, batches=rollouts, count=lambda batch: batch.count, loss=loss,
                 tally=tally, evaluate=evaluation, record=record,
                 title=f"GRPO loss ({config.aggregation} mean, G={config.group_size}, β={config.beta})",
                 metrics=lambda: dict(rollouts.stats), stop=lambda: rollouts.stop_reason)


def rl(config: RLConfig, run_dir: str | Path, *, resume: bool = False,
       sources: dict[str, str] | None = None) -> dict[str, Any]:
    """Run (or with ``resume``, continue) RL into ``run_dir``; returns the summary."""
    check_config(config)
    config, sources, base = finetune.start(config, "rl", run_dir, sources)
    finetune.check_chat_base(base, "RL")
    return train("rl", config, run_dir, functools.partial(build, config, sources, base),
                 resumable=RL_RESUMABLE, resume=resume, sources=sources, parent=config.base)


def rl_from_args(args) -> dict[str, Any]:
    """``lantern rl``: the config from a preset (or, with ``--resume``, the run's saved
    config) plus the flags given, then :func:`rl`."""
    config, sources = resolve("rl", RLConfig, RL_PRESETS, args)
    summary = rl(config, Path(args.out), resume=args.resume, sources=sources)
    logger.info(json.dumps(summary, indent=2))
    return summary
