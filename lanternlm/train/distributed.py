"""Data parallelism from the outside: the model itself has no parallel code.

Under ``torchrun`` (which sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``) every process
builds the same model and reads its own rows of every global batch; :func:`wrap_model`
then applies the config's ``parallel`` (gloo on CPU, NCCL on CUDA):

- ``ddp``: DistributedDataParallel. Every process holds all weights and optimizer
  states; gradients are averaged by an all-reduce.
- ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``), applied to every block and
  then to the whole model, in place. Each process holds ``1 / world_size`` of every
  weight and optimizer state (a ``DTensor`` sharded on dim 0); a block's weights are
  all-gathered for its forward and backward and freed after, gradients reduce-scattered.
  The mixed-precision policy follows the config's ``dtype`` (:func:`mixed_precision`):
  bfloat16 weights in the forward and backward with float32 gradient reduction (and
  float32 sharded weights and optimizer states) where autocast would be bfloat16, so by
  default on CUDA; float32 throughout otherwise (the CPU default).

A sharded model needs all processes for each forward pass. Where processes run different
numbers of them (evaluation shares, sampling answers of different lengths), :func:`gathered`
holds the full weights on every process for the duration. Checkpoints of a sharded model
(:func:`save_sharded`, :func:`load_sharded`) go through ``torch.distributed.checkpoint``:
each process writes its shards, and any number of processes (one included) reads them back.

Without the torchrun variables everything here is a no-op for one process.
"""

from __future__ import annotations

import contextlib
import os
import time
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from ..errors import LanternError
from ..run import pick_device

#: The values of the configs' ``parallel`` field (what several processes do).
PARALLEL = ("ddp", "fsdp")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes, or describe a single process.

    ``device`` as :func:`lanternlm.run.pick_device` takes it; under ``torchrun`` on CUDA
    each process takes the GPU of its local rank."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo(0, 0, 1, pick_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, local_rank, world_size, dev)


def wrap_model(model: nn.Module, info: DistInfo, parallel: str = "ddp", dtype: str = "auto") -> nn.Module:
    """The module to train with when several processes run: ``model`` wrapped in
    DistributedDataParallel (``parallel="ddp"``), or ``model`` itself sharded in place by
    FSDP2 (``"fsdp"``, :func:`shard`); for one process ``model`` unchanged."""
    if parallel not in PARALLEL:
        raise ValueError(f"parallel={parallel!r}: choose one of {PARALLEL}")
    if not info.enabled:
        return model
    if parallel == "fsdp":
        return shard(model, mixed_precision(dtype, info.device))
    from torch.nn.parallel import DistributedDataParallel
    ids = [info.local_rank] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def mixed_precision(dtype: str, device: torch.device):
    """FSDP2's mixed-precision policy for a config's ``dtype`` (the autocast rule of
    :func:`lanternlm.train.loop.autocast`): bfloat16 weights for compute and float32
    gradient reduction when that is bfloat16 (``auto`` on CUDA); float32 otherwise."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda"):
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard(model: nn.Module, policy=None) -> nn.Module:
    """Shard ``model`` (a :class:`lanternlm.model.GPT`) in place with FSDP2: each block is
    one unit (gathered for its own forward and backward), the embeddings, final norm and
    heads the root's; returns ``model``."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = policy or MixedPrecisionPolicy()
    # The losses read the model's outputs (views of the per-token log-probabilities) and
    # never change them in place, which is what this warning is about.
    warnings.filterwarnings("ignore", r"FSDP2-wrapped module \(\w+\) returned a view tensor")
    for block in model.blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy, reshard_after_forward=False)  # the backward needs it next
    # FSDP2 makes the module of the first forward pass the root. Sampling and scoring may
    # call the blocks first (GPT.hidden, under gathered()): settle it now (no public API).
    model._get_fsdp_state()._lazy_init()
    return model


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` is sharded by FSDP2 (:func:`shard`)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def gathered(model: nn.Module) -> Iterator[nn.Module]:
    """Hold ``model``'s full weights on every process while the block runs, so that each
    process may run forward passes of its own (evaluation shares, sampling) without the
    others; a no-op for a model that is not sharded. Every process must enter it."""
    if not is_sharded(model):
        yield model
        return
    units = [m for m in model.modules() if is_sharded(m)]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()  # all-gather, every process
    try:
        yield model
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(unit is not model, recurse=False)  # as shard() set them


def clip_grad_norm(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm of ``model`` to ``max_norm`` (``inf``: do not clip);
    returns the norm before clipping, a plain tensor also for a sharded model."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not is_sharded(model):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    from torch.distributed.tensor import DTensor

    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if isinstance(norm, DTensor):  # partial norms of the shards, summed over the processes
        norm = norm.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


def no_sync(model: nn.Module, skip: bool):
    """Skip the gradient all-reduce for a micro-step that is not the last of its accumulation
    (DDP; a sharded model reduce-scatters every micro-step, which keeps its gradients sharded)."""
    if skip and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- checkpoints


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s full (unsharded) weights. For a sharded model every process must call
    it; process 0 gets the tensors (on the CPU), the others an empty dict."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_sharded(directory: Path, model: nn.Module, optimizers: list[torch.optim.Optimizer],
                 info: DistInfo) -> Path:
    """Write the weights and optimizer states of a sharded ``model`` into ``directory``
    (``torch.distributed.checkpoint``: each process a file of its shards, process 0 the
    ``.metadata``); every process calls it. Returns ``directory``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_state_dict

    if info.is_main:
        shutil.rmtree(directory, ignore_errors=True)  # an earlier attempt's, maybe of more processes
    barrier(info)
    weights, states = get_state_dict(model, optimizers)
    try:
        dcp.save({"model": weights, "optim": states}, checkpoint_id=directory)
    except (CheckpointException, OSError) as err:  # a full disk, mostly: every process hears of it
        if info.is_main:
            shutil.rmtree(directory, ignore_errors=True)
        reasons = ([f"process {rank}: {exc}" for rank, (exc, _) in sorted(err.failures.items())]
                   if isinstance(err, CheckpointException) else [str(err)])
        raise LanternError(f"{directory}: cannot write the sharded checkpoint ({'; '.join(reasons)}); the partial "
                           f"copy was removed and the previous checkpoint is intact. Free some space, then continue "
                           f"with --resume") from None
    return directory


def load_sharded(directory: Path, model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> None:
    """Load what :func:`save_sharded` wrote into ``model`` and ``optimizers``, sharded or
    not, on any number of processes (the shards are cut again for this one)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    weights, states = get_state_dict(model, optimizers)
    saved = {"model": weights, "optim": states}
    with warnings.catch_warnings():  # one process reads them without a process group, as meant
        warnings.filterwarnings("ignore", "torch.distributed is disabled")
        dcp.load(saved, checkpoint_id=directory, no_dist=not dist.is_initialized())
    set_state_dict(model, optimizers, model_state_dict=saved["model"], optim_state_dict=saved["optim"])


def load_full(model: nn.Module, optimizers: list[torch.optim.Optimizer], weights: dict[str, torch.Tensor],
              states: list[dict[str, Any]]) -> None:
    """Load full weights and the optimizers' ``state_dict()`` of a one-process checkpoint
    into ``model`` and ``optimizers``; a sharded model takes its shards of them. Every
    process calls it with the same values."""
    if not is_sharded(model):
        model.load_state_dict(weights)
        for opt, state in zip(optimizers, states, strict=True):
            opt.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    full = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, weights, options=full)
    names = {id(p): name for name, p in model.named_parameters()}
    for opt, state in zip(optimizers, states, strict=True):
        # the saved state names parameters by their place in the optimizer: the same
        # parameters in the same order (build_optimizers), here named as in the model
        mine = [names[id(p)] for group in opt.param_groups for p in group["params"]]
        saved = [i for group in state["param_groups"] for i in group["params"]]
        if len(mine) != len(saved):
            raise ValueError(f"the saved optimizer state holds {len(saved)} parameters, this optimizer {len(mine)}")
        fqn = dict(zip(saved, mine))
        named = {"state": {fqn[i]: values for i, values in state["state"].items()},
                 "param_groups": [{**group, "params": [fqn[i] for i in group["params"]]}
                                  for group in state["param_groups"]]}
        set_optimizer_state_dict(model, opt, named, options=full)


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``values`` over all processes (in place) and return it."""
    if info.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def sum_over_processes(value: float, info: DistInfo) -> float:
    """``value`` summed over all processes (for one process: itself, no device round trip)."""
    if not info.enabled:
        return value
    total = torch.tensor(float(value), dtype=torch.float64, device=info.device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.item()


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every process's ``obj``, in rank order."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every process (e.g. the decision to stop at a time budget)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Leave the process group together, and give gloo's worker threads a moment to drop
    their last finished work before the interpreter shuts down: a worker that frees a
    work's Python-owned tensor (e.g. from ``all_gather_object``) during finalization
    cannot take the GIL and aborts the process ("terminate called without an active
    exception", SIGABRT) after training has finished and its checkpoint is written."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        time.sleep(0.1)  # releases the GIL for the workers
