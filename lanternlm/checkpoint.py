"""Model checkpoints on disk: weights in ``model.safetensors``, architecture in ``model.json``.

A model directory (a run directory, or an exported model) holds::

    model.safetensors   the weights (safetensors: no code runs when loading)
    model.json          {"format": "lanternlm-model/1", "config": {GPTConfig fields},
                         "num_params": int, "dtype": "float32",
                         "tokenizer": {"fingerprint": HEX, "vocab_size": int}}
    tokenizer.json      the tokenizer (written by the tokenizer/data/training stages)

Each file is written to a temporary name and renamed into place, so a crash never leaves
a half-written file under the real name. ``model.json`` names the tokenizer the weights
were trained with (its fingerprint), so a run never pairs its weights with another
tokenizer (:meth:`lanternlm.run.Run.model` checks). Training state (optimizer, data position)
belongs to :mod:`lanternlm.train`, not here.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

from .config import atomic_write_text, check_types, read_json, temp_file_beside
from .errors import LanternError
from .model import GPT, GPTConfig

FORMAT = "lanternlm-model/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
TOKENIZER_FILE = "tokenizer.json"


def save_model(directory: str | os.PathLike, model: GPT, tokenizer=None,
               weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory``; returns it.
    With ``tokenizer``, ``model.json`` records its fingerprint (the weights' tokenizer).
    ``weights``: the tensors to write, when not ``model.state_dict()`` (the full weights
    gathered from a model sharded over several processes)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous().cpu()
             for name, tensor in (model.state_dict() if weights is None else weights).items()}
    fd, tmp = temp_file_beside(directory / WEIGHTS_FILE)
    mode = os.fstat(fd).st_mode & 0o777
    os.close(fd)
    try:
        save_file(state, str(tmp), metadata={"format": FORMAT})
        os.chmod(tmp, mode)  # safetensors writes a new file of mode 0600
        os.replace(tmp, directory / WEIGHTS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    meta = {"format": FORMAT, "config": dataclasses.asdict(model.config),
            "num_params": model.num_params(),
            "dtype": str(next(iter(state.values())).dtype).removeprefix("torch.")}
    if tokenizer is not None:
        meta["tokenizer"] = {"fingerprint": tokenizer.fingerprint(), "vocab_size": tokenizer.vocab_size}
    atomic_write_text(directory / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
    return directory


def _meta(directory: str | os.PathLike) -> dict:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise LanternError(f"{path}: no such file; is {directory} a model or run directory?")
    return read_json(path, FORMAT)


def saved_tokenizer(directory: str | os.PathLike) -> dict | None:
    """The fingerprint and size of the tokenizer the weights were trained with (``model.json``'s
    ``tokenizer``), or None for a model saved without one."""
    found = _meta(directory).get("tokenizer")
    if found is not None and not (isinstance(found, dict) and isinstance(found.get("fingerprint"), str)):
        raise LanternError(f"{Path(directory) / CONFIG_FILE}: field 'tokenizer' is {found!r}, expected "
                           '{"fingerprint": HEX, "vocab_size": N}')
    return found


def saved_dtype(directory: str | os.PathLike) -> str:
    """The dtype the weights were saved in (``model.json``'s ``dtype``), e.g. ``float32``."""
    return str(_meta(directory).get("dtype", "unknown"))


def load_config(directory: str | os.PathLike) -> GPTConfig:
    """Read the architecture from ``directory/model.json`` (clear errors for bad files)."""
    path = Path(directory) / CONFIG_FILE
    meta = _meta(directory)
    raw = meta.get("config")
    if not isinstance(raw, dict):
        raise LanternError(f"{path}: field 'config' is missing or not an object")
    known = {f.name for f in dataclasses.fields(GPTConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise LanternError(f"{path}: unknown config field(s) {unknown} (written by a newer "
                           f"lanternlm?); known fields: {sorted(known)}")
    check_types(GPTConfig, raw, str(path))
    try:
        return GPTConfig(**raw)
    except TypeError as err:
        raise LanternError(f"{path}: bad 'config': {err}") from None
    except LanternError as err:
        raise LanternError(f"{path}: {err}") from None


def load_model(directory: str | os.PathLike, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None) -> GPT:
    """Rebuild the model saved by :func:`save_model`, in eval mode.

    The model is built on the meta device (no wasted init), then the weights are loaded
    straight into place. Every tensor must be present with the right shape.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = load_config(directory)
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise LanternError(f"{path}: no such file")
    try:
        state = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise LanternError(f"{path}: cannot read weights, the file is corrupt or truncated "
                           f"({err})") from None
    with torch.device("meta"):
        model = GPT(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise LanternError(f"{path}: weights do not match {CONFIG_FILE}: missing {missing}, "
                           f"unexpected {extra}")
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise LanternError(f"{path}: tensor {name!r} has shape {tuple(state[name].shape)}, "
                               f"{CONFIG_FILE} implies {shape}")
    model.load_state_dict(state, assign=True)
    model.init_buffers()
    model.to(device=device, dtype=dtype)
    return model.eval()
