"""View 9, memory: how many bytes running the model takes, estimated and measured.

The estimate is ``lantern info``'s arithmetic (:func:`lanternlm.memory.memory_estimate`):
weights + a full KV cache + the activations of one prefill of ``context`` positions (+ a
fixed allowance for the runtime, reported apart). The measurement runs that prefill for
real, with a KV cache, and counts bytes exactly on any device:

- weights and KV cache: the ``nbytes`` of their tensors;
- activations: the peak of the bytes held by tensors *created during the forward pass*.
  A ``TorchDispatchMode`` sees every tensor an operator returns and adds its storage's
  size when it appears; a ``weakref.finalize`` on the storage subtracts it when it is
  freed. This is what the allocator is asked for (not what the OS reports: glibc's and
  PyTorch's caching make process RSS useless at this scale), so it is exact on CPU and
  agrees with ``torch.cuda.max_memory_allocated`` on CUDA up to allocator rounding.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..errors import LanternError
from ..run import Run
from ..memory import format_bytes, memory_estimate
from .common import output_path, pyplot, save

PARTS = ("weights", "kv_cache", "activations")


class LiveBytes(TorchDispatchMode):
    """Within ``with LiveBytes() as live:``, ``live.peak`` is the most bytes that tensors
    created inside the block held at once (storages counted once, freed ones subtracted).

    >>> with torch.inference_mode(), LiveBytes() as live:
    ...     a = torch.zeros(1000)             # 4,000 bytes
    ...     b = a + 1                         # 8,000 held at once
    ...     del a, b
    ...     c = torch.zeros(10)
    >>> live.peak, live.live
    (8000, 40)
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key, size = storage.data_ptr(), storage.nbytes()
                if size == 0 or key in self._sizes or _is_input(args, key):
                    continue
                self._sizes[key] = size
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._free, key)
        return out

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)


def _is_input(args, key: int) -> bool:
    """An operator that returns (a view of) one of its inputs allocates nothing."""
    return any(isinstance(a, torch.Tensor) and a.untyped_storage().data_ptr() == key
               for a in tree_flatten(args)[0])


@dataclass
class MemoryView:
    """Bytes by part (weights, kv_cache, activations) estimated per dtype, and measured for
    the model's own dtype by one prefill of ``context`` tokens."""

    context: int
    batch_size: int
    dtype: str  # the model's weights, as measured
    estimate: dict[str, dict[str, int]]  # dtype -> part -> bytes
    runtime: int  # the runtime allowance of the estimate (not measured)
    measured: dict[str, int] = field(default_factory=dict)
    device: str = "cpu"


_TORCH_DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@torch.inference_mode()
def measure_prefill(model, context: int, batch_size: int = 1) -> dict[str, int]:
    """Exact bytes of the weights, of a KV cache of ``context`` positions, and the peak of
    the activations while prefilling ``context`` tokens into it."""
    from ..model import KVCache

    param = next(model.parameters())
    weights = sum(p.nbytes for p in model.parameters())
    cache = KVCache(model.config, batch_size, context, device=param.device, dtype=param.dtype)
    idx = torch.randint(0, model.config.vocab_size, (batch_size, context), device=param.device,
                        generator=torch.Generator(device=param.device).manual_seed(0))
    with LiveBytes() as live:
        if model.config.reward_head:  # no logits: a reward model's head reads one position
            model.hidden(idx, cache=cache)
        else:
            model(idx, cache=cache)
    return {"weights": weights, "kv_cache": cache.nbytes, "activations": live.peak}


def memory_view(model, context: int | None = None, batch_size: int = 1,
                dtypes: tuple[str, ...] = ("fp32", "bf16", "int8")) -> MemoryView:
    """Estimates for ``dtypes`` and the measurement of the model as loaded."""
    config = model.config
    context = config.block_size if context is None else context
    if not 1 <= context <= config.block_size:
        raise LanternError(f"--context {context}: must be in 1..{config.block_size} (the context window)")
    param = next(model.parameters())
    own = _TORCH_DTYPES.get(param.dtype)
    if own is None:
        raise LanternError(f"memory view: weights of dtype {param.dtype} are not supported")
    estimate = {}
    for name in dict.fromkeys((own, *dtypes)):
        e = memory_estimate(config, name, batch_size, context)
        estimate[name] = {"weights": e.weights, "kv_cache": e.kv_cache, "activations": e.activations}
    view = MemoryView(context, batch_size, own, estimate, e.runtime, device=str(param.device))
    view.measured = measure_prefill(model, context, batch_size)
    return view


def render_memory(view: MemoryView) -> str:
    """A table: parts by dtype (estimate), then the measurement of the loaded model."""
    names = list(view.estimate)
    lines = [f"memory for a prefill of {view.context} tokens (batch {view.batch_size}); "
             f"estimate vs measured ({view.dtype}, {view.device})",
             f"{'part':<12}" + "".join(f"  {'est. ' + n:>12}" for n in names) + f"  {'measured':>12}"]
    for part in PARTS + ("total",):
        est = [sum(view.estimate[n].values()) if part == "total" else view.estimate[n][part] for n in names]
        meas = sum(view.measured.values()) if part == "total" else view.measured[part]
        lines.append(f"{part:<12}" + "".join(f"  {format_bytes(v):>12}" for v in est)
                     + f"  {format_bytes(meas):>12}")
    lines.append(f"(plus about {format_bytes(view.runtime)} for the PyTorch runtime itself, not measured)")
    return "\n".join(lines)


def plot_memory(view: MemoryView, path: str | os.PathLike) -> Path:
    """Stacked bars (weights, KV cache, activations) per dtype, and the measured bar."""
    plt = pyplot()
    bars = [(f"estimate\n{n}", view.estimate[n]) for n in view.estimate]
    bars.append((f"measured\n{view.dtype}, {view.device}", view.measured))
    unit, scale = ("MiB", 2**20) if max(sum(b.values()) for _, b in bars) >= 2**20 else ("KiB", 2**10)
    fig, ax = plt.subplots(figsize=(1.6 * len(bars) + 3, 4.8), dpi=110)
    bottom = [0.0] * len(bars)
    for k, part in enumerate(PARTS):
        values = [b[part] / scale for _, b in bars]
        ax.bar(range(len(bars)), values, bottom=bottom, color=f"C{k}", label=part.replace("_", " "))
        bottom = [a + v for a, v in zip(bottom, values)]
    for i, total in enumerate(bottom):
        ax.text(i, total, f"{total:,.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(bars)), [name for name, _ in bars], fontsize=8)
    ax.set_ylabel(f"memory ({unit})")
    ax.set_title(f"memory to run one prefill of {view.context} tokens (runtime overhead not shown)", fontsize=10)
    ax.legend(fontsize=8)
    ax.margins(y=0.12)
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path)


def memory_command(run: str, context: int | None = None, batch_size: int = 1, out: str | None = None,
                   device: str | None = None) -> str:
    """``lantern inspect memory``: the table; writes ``memory.png``."""
    model = Run(run).model(device)
    view = memory_view(model, context, batch_size)
    png = plot_memory(view, output_path(out or Path(run) / "inspect", "memory.png"))
    return render_memory(view) + f"\nwrote {png}"

