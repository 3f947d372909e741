"""View 7, size vs loss (``lantern sweep``): train a few model sizes on the same data for
the same number of tokens and plot the final validation loss against the parameter count.

Each size is an ordinary pretraining run (:func:`lanternlm.train.pretrain.pretrain`) in
``OUT/<size>/``; only depth and width change (heads of 32 dimensions), everything else
(data, token budget, context, batch, schedule, seed) is shared. Without ``--data`` the
built-in ``python-docs`` corpus (always available offline) is prepared once into
``OUT/shards``. The defaults take a few minutes on a laptop CPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..config import atomic_write_text, option
from ..errors import LanternError
from ..log import logger
from .common import pyplot, save


@dataclass
class SweepConfig:
    """What ``lantern sweep`` trains (each size gets the same data and token budget)."""

    data: str = option("", "shards directory; empty = prepare the built-in python-docs corpus into OUT/shards")
    sizes: str = option("1x32,2x64,3x96,4x128", "model sizes as LAYERSxWIDTH, comma-separated (width a multiple of 32)")
    tokens: int = option(200_000, "training tokens per size (the shared budget)")
    block_size: int = option(64, "context length = training sequence length")
    batch_size: int = option(8, "sequences per step")
    lr: float = option(3e-3, "peak learning rate (AdamW, warmup + cosine)")
    eval_tokens: int = option(16384, "validation tokens for the final loss")
    vocab_size: int = option(1024, "tokenizer vocabulary when the built-in corpus is prepared")
    seed: int = option(0, "seed for initialisation and data order")
    device: str = option("auto", "cpu, cuda, cuda:N or auto")


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"2x64,4x128"`` → ``[(2, 64), (4, 128)]`` (layers, width).

    >>> parse_sizes("1x32, 2x64")
    [(1, 32), (2, 64)]
    """
    sizes = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            layers, width = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise LanternError(f"--sizes: {part!r} is not LAYERSxWIDTH (e.g. 2x64)") from None
        if layers < 1 or width < 32 or width % 32:
            raise LanternError(f"--sizes: {part!r}: need >= 1 layer and a width that is a multiple of 32")
        sizes.append((layers, width))
    if not sizes:
        raise LanternError("--sizes: give at least one LAYERSxWIDTH")
    return sizes


@dataclass
class SweepRow:
    name: str
    n_layer: int
    n_embd: int
    params: int
    non_embedding_params: int
    steps: int
    tokens: int
    val_loss: float
    bpb: float
    elapsed_s: float


def _shards(config: SweepConfig, out: Path) -> str:
    if config.data:
        return config.data
    folder = out / "shards"
    if not (folder / "manifest.json").is_file():
        from ..data.prepare import PrepareConfig, prepare
        from ..data.sources import ReadConfig

        logger.info("sweep: preparing the built-in python-docs corpus into %s", folder)
        prepare(["builtin:python-docs"], folder, config=PrepareConfig(vocab_size=config.vocab_size, val_fraction=0.05),
                read=ReadConfig(text_split="chunk", chunk_chars=2000))
    return str(folder)


def sweep(config: SweepConfig, out: str | os.PathLike) -> list[SweepRow]:
    """Train every size into ``out/<LxW>/``; write ``out/sweep.json``; return the rows."""
    from ..data.shards import open_shards
    from ..model import num_params
    from ..train.checkpoint import latest_checkpoint
    from ..train.pretrain import PretrainConfig, model_config_for, pretrain

    out = Path(out)
    sizes = parse_sizes(config.sizes)
    for name in ("tokens", "block_size", "batch_size", "eval_tokens"):
        if getattr(config, name) < 1:
            raise LanternError(f"sweep: {name}={getattr(config, name)} must be >= 1")
    done = [f"{layers}x{width}" for layers, width in sizes if latest_checkpoint(out / f"{layers}x{width}")]
    if done:
        raise LanternError(f"{out} already holds a sweep (trained: {', '.join(done)}); choose another --out "
                           f"or delete those runs")
    data = _shards(config, out)
    steps = max(1, math.ceil(config.tokens / (config.batch_size * config.block_size)))
    rows = []
    for layers, width in sizes:
        name = f"{layers}x{width}"
        run = PretrainConfig(data=data, model="tiny", n_layer=layers, n_embd=width, n_head=width // 32,
                             n_kv_head=width // 32, block_size=config.block_size, batch_size=config.batch_size,
                             max_steps=steps, lr=config.lr, warmup_steps=max(1, steps // 10),
                             eval_every=steps, eval_tokens=config.eval_tokens, log_every=max(1, steps // 50),
                             checkpoint_every=steps, keep_checkpoints=1, seed=config.seed, device=config.device)
        logger.info("sweep: training %s (%d steps of %d tokens)", name, steps, config.batch_size * config.block_size)
        summary = pretrain(run, out / name)
        mconf = model_config_for(run, open_shards(data).tokenizer().vocab_size)
        rows.append(SweepRow(name, layers, width, summary["params"], num_params(mconf, non_embedding=True),
                             summary["steps"], summary["tokens"], summary["val_loss"], summary["bpb"],
                             summary["elapsed_s"]))
    atomic_write_text(out / "sweep.json", json.dumps({"config": dataclasses.asdict(config),
                                                      "rows": [dataclasses.asdict(r) for r in rows]}, indent=2) + "\n")
    return rows


def render_sweep(rows: list[SweepRow]) -> str:
    lines = [f"{'size':<8}  {'params':>10}  {'non-emb.':>10}  {'tokens':>9}  {'val loss':>8}  {'bpb':>6}  {'time':>7}"]
    lines += [f"{r.name:<8}  {r.params:>10,}  {r.non_embedding_params:>10,}  {r.tokens:>9,}  "
              f"{r.val_loss:>8.4f}  {r.bpb:>6.3f}  {r.elapsed_s:>6.1f}s" for r in rows]
    return "\n".join(lines)


def plot_sweep(rows: list[SweepRow], path: str | os.PathLike) -> Path:
    """Final validation loss against parameter count (log axis), each point named."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=110)
    ax.plot([r.params for r in rows], [r.val_loss for r in rows], "o-", color="tab:blue")
    for r in rows:
        ax.annotate(f"{r.name}\n{r.val_loss:.3f}", (r.params, r.val_loss), xytext=(6, 4),
                    textcoords="offset points", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("final validation loss (nats per token)")
    ax.set_title(f"model size matters: same data, {rows[0].tokens:,} training tokens each")
    ax.grid(alpha=0.3, which="both")
    ax.margins(x=0.15, y=0.15)
    return save(fig, path)


def sweep_command(config: SweepConfig, out: str) -> str:
    """``lantern sweep``: train, then the table; writes ``OUT/sweep.png``."""
    rows = sweep(config, out)
    png = plot_sweep(rows, Path(out) / "sweep.png")
    return render_sweep(rows) + f"\nwrote {png}"
