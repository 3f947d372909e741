"""A run directory, and everything a command needs from it: one place, below every front-end.

Every stage that trains a model writes a run directory::

    config.json         the run record (below): which stage made it, from which parent, with what
    model.safetensors   the weights                 } written by lanternlm.checkpoint
    model.json          the architecture            }
    tokenizer.json      the tokenizer
    metrics.jsonl, loss.png, checkpoints/ ...   what the training loop writes

The run record is ``{"stage": STAGE, "parent": PATH | null, "config": {...}, "sources":
{...}, ...}``: ``stage`` is one of :data:`STAGES`, written explicitly by the stage that
made the run; ``parent`` is the run it started from (a path relative to the run
directory, so a tree of runs can be moved together); ``config`` holds the stage
config's values and ``sources`` where each came from; the config fields that are paths
(``path_fields``: the shards, the base run, data files) are stored relative to the run
directory too, and read back as absolute paths. :func:`write_record` writes it,
:func:`read_record` reads it with clear errors, :class:`Run` answers every question a
command asks of a run:

- its stage, parent and lineage (parent, grandparent, ... up to the pretraining run);
- whether it talks in the chat format (:data:`CHAT_STAGES`) or continues plain text;
- its tokenizer, its model on a device (default: CUDA when available, else the CPU —
  the same for every command), an engine over that model;
- the ids it may sample (:attr:`Run.vocab_limit`).

Also accepted: a bare model directory (``model.json`` and weights, no ``config.json``,
e.g. an export) has no stage and continues plain text; a checkpoint directory
``RUN/checkpoints/step_N`` is read with its run's record; and runs written before stages
were explicit (pretraining runs had no ``stage``, fine-tuning runs named their parent
``base``, relative to the working directory) read as what they are.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .config import atomic_write_text, map_paths, path_fields, read_json
from .errors import LanternError

if TYPE_CHECKING:
    from .engine import Engine
    from .model import GPT, GPTConfig
    from .tokenizer import Tokenizer

RECORD_FILE = "config.json"

#: Every stage that writes run directories, in pipeline order.
STAGES = ("pretrain", "sft", "dpo", "reward", "rl", "import")
#: Stages whose models talk in the chat format of :mod:`lanternlm.chat`.
CHAT_STAGES = ("sft", "dpo", "rl")


def pick_device(name: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when available, else the CPU; anything else as given.

    >>> pick_device("cpu")
    device(type='cpu')
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise LanternError(f"device {name!r}: {err}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LanternError(f"device {name!r}: CUDA is not available here (torch {torch.__version__}); "
                               "use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise LanternError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def base_vocab_limit(tokenizer: "Tokenizer") -> int:
    """How many ids a base model may sample: everything up to ``<|endoftext|>``.

    The special tokens sit at the end of the vocabulary, ``<|endoftext|>`` first; the chat
    markers after it were reserved for fine-tuning and never trained in a base model, so
    sampling one (a small but real chance) only derails the text. If the tokenizer orders
    its specials otherwise, nothing is cut.

    >>> from lanternlm.tokenizer import Tokenizer
    >>> base_vocab_limit(Tokenizer([], special_tokens=["<|endoftext|>", "<|user|>", "<|end|>"]))
    257
    >>> base_vocab_limit(Tokenizer([], special_tokens=["<|user|>", "<|endoftext|>"]))
    258
    """
    from .tokenizer import EOT

    others = [i for name, i in tokenizer.special_tokens.items() if name != EOT]
    if others and min(others) > tokenizer.special_tokens.get(EOT, tokenizer.vocab_size):
        return min(others)
    return tokenizer.vocab_size


# --------------------------------------------------------------------------- the record


def write_record(run_dir: str | os.PathLike, stage: str, config: Any, *,
                 sources: dict[str, str] | None = None, parent: str | os.PathLike | None = None,
                 **extra: Any) -> Path:
    """Write ``run_dir/config.json`` atomically; ``config`` is a stage config dataclass.

    ``extra`` keys (the model's architecture, data counts, ...) are stored beside.
    """
    if stage not in STAGES:
        raise LanternError(f"run record: unknown stage {stage!r}; stages are {STAGES}")
    run_dir = Path(run_dir)

    def relative(path: str | os.PathLike) -> str:
        return os.path.relpath(Path(path).resolve(), run_dir.resolve())

    values, paths = ((dataclasses.asdict(config), path_fields(type(config))) if dataclasses.is_dataclass(config)
                     else (dict(config), ()))
    record = {"stage": stage, "parent": None if parent is None else relative(parent),
              "config": map_paths(values, paths, relative), "path_fields": list(paths),
              "sources": sources or {}, **extra}
    path = run_dir / RECORD_FILE
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def read_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run record of ``run_dir``, with ``stage`` and ``parent`` (an absolute path or
    None) always present; errors name the file and what is wrong with it."""
    run_dir = Path(run_dir)
    path = run_dir / RECORD_FILE
    record = read_json(path)
    if not isinstance(record, dict) or not isinstance(record.get("config", {}), dict):
        raise LanternError(f"{path}: not a run record (expected an object with 'stage' and 'config')")
    record = dict(record)
    if "stage" not in record:  # written before stages were explicit: only pretraining had none
        if "data" not in record.get("config", {}):
            raise LanternError(f"{path}: no 'stage' field; cannot tell which stage made this run")
        record["stage"] = "pretrain"
    if record["stage"] not in STAGES:
        raise LanternError(f"{path}: unknown stage {record['stage']!r}; stages are {STAGES}")
    paths = record.get("path_fields", [])  # written before paths were relative to the run: none
    if not (isinstance(paths, list) and all(isinstance(name, str) for name in paths)):
        raise LanternError(f"{path}: field 'path_fields' is {paths!r}, expected a list of field names")
    record["config"] = map_paths(record.get("config", {}), paths, lambda p: str((run_dir / p).resolve()))
    if "parent" in record:
        link = record["parent"]
        if link is not None and not isinstance(link, str):
            raise LanternError(f"{path}: field 'parent' is {link!r}, expected a path or null")
        record["parent"] = None if link is None else str((run_dir / link).resolve())
    else:  # written before: the parent was 'base', as given on the command line
        record["parent"] = None if record.get("base") is None else str(Path(record["base"]).resolve())
    return record


# --------------------------------------------------------------------------- the run


class Run:
    """One run (or model) directory; see the module docstring.

    >>> Run("no/such/dir")
    Traceback (most recent call last):
    ...
    lanternlm.errors.LanternError: no/such/dir: no such run directory
    """

    def __init__(self, path: str | os.PathLike) -> None:
        from .checkpoint import CONFIG_FILE

        self.path = Path(path)
        if not self.path.is_dir():
            raise LanternError(f"{self.path}: no such run directory")
        if not (self.path / CONFIG_FILE).is_file():
            raise LanternError(f"{self.path}: not a run or model directory (no {CONFIG_FILE}); "
                               "give a directory made by lantern pretrain, sft, ...")
        owner = self.path.parent.parent if self.path.parent.name == "checkpoints" else self.path
        self.record: dict[str, Any] = read_record(owner) if (owner / RECORD_FILE).is_file() else {}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, stage={self.stage!r})"

    @property
    def stage(self) -> str | None:
        """The stage that made the run (:data:`STAGES`), None for a bare model directory."""
        return self.record.get("stage")

    @property
    def config(self) -> dict[str, Any]:
        """The stage config's saved values ({} for a bare model directory)."""
        return self.record.get("config", {})

    @property
    def chat(self) -> bool:
        """Whether the model talks in the chat format (else it continues plain text)."""
        return self.stage in CHAT_STAGES

    @property
    def parent(self) -> "Run | None":
        """The run this one started from, or None (pretraining, bare models)."""
        link = self.record.get("parent")
        if link is None:
            return None
        if not Path(link).is_dir():
            raise LanternError(f"{self.path}: its parent run {link} is missing (moved or deleted?)")
        return Run(link)

    def lineage(self) -> list["Run"]:
        """This run, its parent, the parent's parent, ... (the root last)."""
        runs, seen = [self], {self.path.resolve()}
        while (parent := runs[-1].parent) is not None:
            if parent.path.resolve() in seen:
                raise LanternError(f"{self.path}: the runs' parent links form a loop at {parent.path}")
            seen.add(parent.path.resolve())
            runs.append(parent)
        return runs

    def pretraining(self) -> "Run | None":
        """The pretraining run at the root of the lineage (its shards give bits per byte)."""
        return next((run for run in self.lineage() if run.stage == "pretrain"), None)

    @functools.cached_property
    def tokenizer(self) -> "Tokenizer":
        from .checkpoint import TOKENIZER_FILE
        from .tokenizer import Tokenizer

        path = self.path / TOKENIZER_FILE
        if not path.is_file():
            raise LanternError(f"{path}: no such file; a run directory holds its tokenizer")
        return Tokenizer.load(path)

    @functools.cached_property
    def model_config(self) -> "GPTConfig":
        """The architecture (``model.json``), without loading the weights."""
        from .checkpoint import load_config

        return load_config(self.path)

    @property
    def vocab_limit(self) -> int:
        """How many ids the run's engine may sample: a pretrained model never samples the
        chat markers it was never trained on (:func:`base_vocab_limit`); every other run
        samples every real token (the model's padding rows never)."""
        return base_vocab_limit(self.tokenizer) if self.stage == "pretrain" else self.tokenizer.vocab_size

    def model(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "GPT":
        """The model in eval mode on ``device`` (default :func:`pick_device`), weights as
        saved or cast to ``dtype``; checked against the tokenizer (the fingerprint
        ``model.json`` binds the weights to, and the vocabulary size)."""
        from .checkpoint import TOKENIZER_FILE, load_model, saved_tokenizer

        bound = saved_tokenizer(self.path)
        if bound is not None and bound["fingerprint"] != self.tokenizer.fingerprint():
            raise LanternError(f"{self.path / TOKENIZER_FILE}: not the tokenizer these weights were trained with "
                               f"(fingerprint {self.tokenizer.fingerprint()[:12]}, vocab {self.tokenizer.vocab_size}; "
                               f"model.json says {bound['fingerprint'][:12]}, vocab {bound.get('vocab_size')}); "
                               f"put the run's own tokenizer.json back")
        model = load_model(self.path, device=pick_device(device), dtype=dtype)
        if self.tokenizer.vocab_size > model.config.vocab_size:
            raise LanternError(f"{self.path}: tokenizer has {self.tokenizer.vocab_size} tokens but the "
                               f"model only {model.config.vocab_size}; wrong tokenizer.json?")
        return model

    def engine(self, device: str | torch.device | None = None, dtype: str | None = None) -> "Engine":
        """An engine over the model, sampling the ids :attr:`vocab_limit` allows. ``dtype``
        names one of :data:`lanternlm.engine.DTYPES` (``int8``: quantized weights for the CPU)."""
        from .engine import DTYPES, Engine

        if self.stage == "reward":
            raise LanternError(f"{self.path}: a reward model scores answers, it does not write them; "
                               f"use lantern reward score, or --reward-model with generate/chat")
        if dtype is not None and dtype not in DTYPES:
            raise LanternError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
        if dtype == "int8" and device is None:
            device = "cpu"  # int8 weights are a CPU format
        model = self.model(device, dtype=DTYPES[dtype] if dtype else None)
        return Engine(model, int8=dtype == "int8", vocab_limit=self.vocab_limit)
