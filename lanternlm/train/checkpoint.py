"""Training checkpoints that are never half-written.

A checkpoint is a directory ``RUN/checkpoints/step_NNNNNNN/`` holding the model
(``model.safetensors`` + ``model.json``, written by :func:`lanternlm.checkpoint.save_model`),
``tokenizer.json`` and ``optimizer.pt`` (optimizer states, step, RNG states, loader
position, plateau rule, schema below). It is written in this order:

1. everything goes into ``RUN/checkpoints/.tmp-step_NNNNNNN/``, each file fsynced;
2. the directory is renamed to ``step_NNNNNNN`` (atomic on one file system);
3. ``RUN/checkpoints/latest`` is replaced atomically by a file naming it;
4. the run directory's own ``model.safetensors``, ``model.json``, ``tokenizer.json`` and
   ``optimizer.pt`` are pointed at the new files (hard links, swapped in by rename), so
   ``RUN`` itself loads as a model; older checkpoint directories beyond ``keep`` are removed.

A model sharded over several processes (``--parallel fsdp``) adds ``sharded/``: its weights
and optimizer states as ``torch.distributed.checkpoint`` shards, one file per process,
which every process writes into ``RUN/checkpoints/.shards-step_NNNNNNN/`` first (moved into
the temporary directory in step 1). Its ``optimizer.pt`` then holds no optimizer states
(``"optimizers": "sharded"``); ``model.safetensors`` is always the full, unsharded weights,
so a checkpoint loads as a model and resumes on any number of processes.

A crash anywhere before step 3 leaves ``latest`` naming the previous, complete checkpoint;
resume reads only through ``latest``. A write that fails (a full disk) removes the temporary
directory and raises a :class:`~lanternlm.errors.LanternError` saying so.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from torch import nn

from ..config import atomic_write_text, file_in
from ..errors import LanternError

STATE_FILE = "optimizer.pt"
SHARDS_DIR = "sharded"
RUN_FILES = ("model.safetensors", "model.json", "tokenizer.json", STATE_FILE)
#: What a failed write raises: torch.save reports one as RuntimeError ("enforce fail at
#: inline_container.cc"), safetensors as SafetensorError ("os error 28").
WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)


def rng_state() -> dict[str, Any]:
    """The python, numpy, torch (and CUDA) generator states, in types ``weights_only`` loading accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The directory ``RUN/checkpoints/latest`` names, or None when there is none yet."""
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    name = pointer.read_text(encoding="utf-8", errors="replace").strip()
    ckpt = file_in(pointer.parent, name, str(pointer))
    if not name.startswith("step_"):
        raise LanternError(f"{pointer}: names {name!r}, not a checkpoint (step_N); the run directory was "
                           f"altered by hand")
    missing = [name for name in RUN_FILES if not (ckpt / name).exists()]
    if missing:
        raise LanternError(f"{pointer}: checkpoint {ckpt.name} lacks {missing}; "
                           f"the run directory was altered by hand")
    return ckpt


def shards_staging(run_dir: str | os.PathLike, step: int) -> Path:
    """Where every process writes its shards of checkpoint ``step`` (see the module doc)."""
    return Path(run_dir) / "checkpoints" / f".shards-step_{step:07d}"


def save_checkpoint(run_dir: str | os.PathLike, step: int, model: nn.Module, tokenizer: Any,
                    state: dict[str, Any], keep: int = 2, *, weights: dict[str, torch.Tensor] | None = None,
                    shards: Path | None = None) -> Path:
    """Write checkpoint ``step`` atomically (see the module doc) and return its directory.

    ``weights``: the full weights when not ``model.state_dict()`` (a sharded model's);
    ``shards``: the directory of shards the processes wrote (:func:`shards_staging`)."""
    from ..checkpoint import save_model

    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:07d}"
    tmp, final = root / f".tmp-{name}", root / name
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        if shards is not None:
            os.replace(shards, tmp / SHARDS_DIR)
        save_model(tmp, model, tokenizer, weights=weights)
        tokenizer.save(tmp / "tokenizer.json")
        torch.save(state, tmp / STATE_FILE)
        for name_ in RUN_FILES:
            _fsync_file(tmp / name_)
        _fsync_dir(tmp)
    except WRITE_ERRORS as err:  # a full disk, mostly: never leave the half-written copy to fill it
        shutil.rmtree(tmp, ignore_errors=True)
        if shards is not None:
            shutil.rmtree(shards, ignore_errors=True)
        raise _write_failed(final, err) from None
    shutil.rmtree(final, ignore_errors=True)  # a stale copy of this step from an earlier attempt
    os.replace(tmp, final)
    _fsync_dir(root)
    atomic_write_text(root / "latest", name + "\n")
    _publish(final, Path(run_dir))
    _prune(root, keep)
    return final


def _write_failed(ckpt: Path, err: Exception) -> LanternError:
    """The error of a checkpoint that could not be written (its temporary copy is gone)."""
    previous = latest_checkpoint(ckpt.parent.parent)
    kept = f"the previous checkpoint, {previous.name}, is intact" if previous else "there is no earlier checkpoint"
    return LanternError(f"{ckpt}: cannot write the checkpoint ({err}; {shutil.disk_usage(ckpt.parent).free:,} "
                        f"bytes free on its disk); the partial copy was removed and {kept}. Free some space, "
                        f"then continue with --resume")


def _publish(ckpt: Path, run_dir: Path) -> None:
    """Point ``run_dir/<file>`` at ``ckpt/<file>`` for every run file, each swap atomic."""
    for name in RUN_FILES:
        tmp = run_dir / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        try:
            os.link(ckpt / name, tmp)
        except OSError:  # no hard links on this file system
            try:
                shutil.copy2(ckpt / name, tmp)
            except OSError as err:
                tmp.unlink(missing_ok=True)
                raise _write_failed(ckpt, err) from None
        os.replace(tmp, run_dir / name)


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))
    for old in done[:-max(1, keep)]:
        shutil.rmtree(old)
    for stale in [*root.glob(".tmp-step_*"), *root.glob(".shards-step_*")]:
        shutil.rmtree(stale, ignore_errors=True)


def load_training_state(ckpt: Path) -> dict[str, Any]:
    """The ``optimizer.pt`` of a checkpoint, loaded with ``weights_only=True``."""
    try:
        return torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as err:  # a foreign or corrupt file: say which
        raise LanternError(f"{ckpt / STATE_FILE}: cannot read the training state ({err})") from err
