"""``lantern import SOURCE --out RUN``: a Hugging Face model as a run of stage ``import``.

SOURCE is a local model folder or a hub id (``org/name``), which ``huggingface_hub``
downloads into its cache (or, with ``offline``, finds there). The run holds::

    model.safetensors, model.json   the weights in our layout (interop/hf.py maps them)
    tokenizer.json                  the model's own tokenizer, its ids kept (interop/hf_tokenizer.py),
                                    checked against `tokenizers` on probe strings
    config.json                     the run record: stage "import", this config, and under "hf"
                                    the source's model type, architecture, chat template, the
                                    special-token strings the template names and its stop ids

Model families: GPT-2, Llama and Llama-like configs (Qwen2, SmolLM: grouped-query attention,
untied head, RoPE θ, biases on q/k/v); anything else is an error naming what is unsupported.
An imported run continues plain text in ``generate``; ``chat`` talks through the model's own
chat template when it has one (:mod:`lanternlm.interop.hf_chat`), else continues plain text.
Fine-tuning it (``sft``, ``dpo``, ``reward``, ``rl``) teaches it our chat format instead.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from ..checkpoint import save_model
from ..config import atomic_dir, option, read_json
from ..errors import LanternError
from ..log import logger
from ..run import write_record
from .hf import _transformers, config_from_hf, from_hf
from .hf_chat import TEMPLATE_TOKENS, template_of
from .hf_tokenizer import load_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.tiktoken", "*.jinja"]  # what a download fetches


@dataclasses.dataclass
class ImportConfig:
    """How to import a Hugging Face model (``lantern import``)."""

    source: str = option("", "a local Hugging Face model folder, or a hub id such as 'org/name'")
    revision: str | None = option(None, "hub branch, tag or commit (default: main)")
    offline: bool = option(False, "use only the huggingface_hub cache, never the network")
    cache_dir: str | None = option(None, "huggingface_hub cache folder (default: its own, $HF_HOME)")
    dtype: str = option("float32", "weights in the run: float32, bfloat16 or float16")


def resolve_source(config: ImportConfig) -> Path:
    """The local folder of ``config.source``: itself, or its snapshot in the hub cache."""
    path = Path(config.source)
    if path.is_dir():
        return path
    parts = config.source.split("/")
    if path.exists() or len(parts) != 2 or not all(parts) or config.source.startswith((".", "/")):
        raise LanternError(f"{config.source}: no such model folder (a hub id looks like 'org/name')")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise LanternError("importing from the hub needs 'huggingface_hub': pip install 'lanternlm[hf]'") from None
    try:
        return Path(snapshot_download(config.source, revision=config.revision, cache_dir=config.cache_dir,
                                      local_files_only=config.offline, allow_patterns=HUB_FILES))
    except Exception as err:  # huggingface_hub's errors: not found, gated, offline and not cached, ...
        where = "in the huggingface_hub cache" if config.offline else "on the hub or in its cache"
        raise LanternError(f"{config.source}: cannot get this model {where} "
                           f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


def _content(token) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or ``{"content": ...}``.

    >>> _content({"__type": "AddedToken", "content": "<s>"}), _content("</s>"), _content(None)
    ('<s>', '</s>', None)
    """
    return token.get("content") if isinstance(token, dict) else token if isinstance(token, str) else None


def import_model(config: ImportConfig, out: str | os.PathLike) -> Path:
    """Import ``config.source`` into the new run directory ``out``; returns ``out``."""
    transformers = _transformers()
    if config.dtype not in DTYPES:
        raise LanternError(f"--dtype {config.dtype!r}: choose one of {', '.join(DTYPES)}")
    folder = resolve_source(config)
    if not (folder / "config.json").is_file():
        raise LanternError(f"{folder}: no config.json; not a Hugging Face model folder")
    hf_config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    ours = config_from_hf(hf_config)  # refuses unsupported families before the weights load
    tokenizer = load_tokenizer(folder)
    if tokenizer.vocab_size > ours.vocab_size:
        raise LanternError(f"{folder}: the tokenizer has {tokenizer.vocab_size} ids but the model "
                           f"{ours.vocab_size}")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    model = from_hf(hf_model).to(DTYPES[config.dtype])
    del hf_model
    names = read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    generation = read_json(folder / "generation_config.json") if (folder / "generation_config.json").is_file() else {}
    eos = generation.get("eos_token_id", getattr(hf_config, "eos_token_id", None))
    hf = {"model_type": hf_config.model_type, "architectures": getattr(hf_config, "architectures", None),
          "folder": str(folder.resolve()), "chat_template": template_of(names, folder),
          "eos_token_ids": [eos] if isinstance(eos, int) else list(eos or []),
          **{name: _content(names.get(name)) for name in TEMPLATE_TOKENS if _content(names.get(name))}}
    with atomic_dir(out) as staging:
        save_model(staging, model)
        tokenizer.save(staging / "tokenizer.json")
        write_record(staging, "import", config, hf=hf)
    logger.info("imported %s (%s, %s parameters, %d-token tokenizer) into %s", config.source,
                hf_config.model_type, f"{model.num_params():,}", tokenizer.vocab_size, out)
    return Path(out)
