"""``lantern export RUN --format hf|gguf``: a run as files other tools load.

A Hugging Face folder (``--format hf``) holds::

    config.json              GPT2LMHeadModel or LlamaForCausalLM (interop/hf.py maps the weights)
    model.safetensors        the weights under Hugging Face's names
    tokenizer.json           the tokenizer, checked by re-encoding probe strings with `tokenizers`
    tokenizer_config.json    special tokens and, for chat runs, the chat_template (chat_template.py)
    generation_config.json   our stop tokens as eos_token_id; for a base run, the chat markers
                             it never learned as suppress_tokens (our engine never samples them)

The vocabulary is cut to the tokenizer's: the rows our table pads up to a multiple of 64
are left out. ``--format gguf`` writes one file for llama.cpp (:mod:`lanternlm.interop.gguf`,
which shares :func:`exportable_model` and :func:`stop_tokens`).
Every file is complete or absent: the folder is written beside its destination and moved
into place once every check has passed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..config import atomic_dir
from ..errors import LanternError
from ..generate import default_stop_tokens
from ..log import logger
from ..model import GPT
from ..run import Run
from .chat_template import chat_template
from .hf import family, hf_config_dict, hf_state, trim_vocab
from .hf_tokenizer import check_hf_tokenizer


def exportable_model(run: Run) -> GPT:
    """The run's language model on the CPU, vocabulary cut to the tokenizer's; a reward
    model or an architecture no other tool has is a clear error."""
    if run.stage == "reward" or run.model_config.reward_head:
        parent = run.record.get("parent")
        raise LanternError(f"{run.path}: a reward model (stage {run.stage!r}) has a scalar reward head "
                           "and no language-model head, so no text-generation tool can load it; export "
                           f"the chat run it was trained from{f' ({parent})' if parent else ''} instead")
    family(run.model_config)  # raises, naming what no Hugging Face class can hold
    return trim_vocab(run.model("cpu"), run.tokenizer.vocab_size)


def stop_tokens(run: Run) -> list[int]:
    """The ids that end a reply: the end of text, and ``<|end|>`` for a chat run (as the
    terminal's formats)."""
    return default_stop_tokens(run.tokenizer) if run.chat else [run.tokenizer.eot_id]


def export_hf(run: Run | str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the Hugging Face folder described in the module docstring; returns ``out``."""
    from safetensors.torch import save_file

    run = run if isinstance(run, Run) else Run(run)
    out = Path(out)
    tokenizer = run.tokenizer
    model = exportable_model(run)
    document = tokenizer.hf_json()
    checked = check_hf_tokenizer(tokenizer, document)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    stops = stop_tokens(run)
    with atomic_dir(out, replace_files=True) as staging:
        save_file(hf_state(model), staging / "model.safetensors", metadata={"format": "pt"})
        config = hf_config_dict(model.config, stops[0], dtype)
        files = {
            "config.json": config,
            "tokenizer.json": document,
            "tokenizer_config.json": tokenizer_config(run, stops[0]),
            "generation_config.json": generation_config(run, stops),
        }
        for name, content in files.items():
            (staging / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
    logger.info("exported %s (%s, %s) to %s; tokenizer checked on %d strings", run.path,
                config["architectures"][0], "chat template" if run.chat else "no chat template", out, checked)
    return out


def tokenizer_config(run: Run, eos_id: int) -> dict:
    """``tokenizer_config.json``: the fast tokenizer class, its special tokens and the chat
    template: ours for a chat run, an imported model's own for an imported run."""
    tokenizer = run.tokenizer
    names = {i: name for name, i in tokenizer.special_tokens.items()}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": names[tokenizer.bos_id], "eos_token": names[eos_id], "pad_token": names[tokenizer.pad_id],
        "model_max_length": run.model_config.block_size,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False, "add_eos_token": False,
        "added_tokens_decoder": {str(i): {"content": name, "lstrip": False, "normalized": False,
                                          "rstrip": False, "single_word": False, "special": True}
                                 for name, i in tokenizer.special_tokens.items()},
    }
    template = (chat_template(names[tokenizer.bos_id]) if run.chat
                else run.record.get("hf", {}).get("chat_template"))
    if template:
        config["chat_template"] = template
    return config


def generation_config(run: Run, stops: list[int]) -> dict:
    """``generation_config.json``: BOS, the stop tokens, padding; a base run's unlearned
    chat markers suppressed, as our engine's vocabulary limit does."""
    tokenizer = run.tokenizer
    config = {"bos_token_id": tokenizer.bos_id, "eos_token_id": stops, "pad_token_id": tokenizer.pad_id}
    if run.vocab_limit < tokenizer.vocab_size:
        config["suppress_tokens"] = list(range(run.vocab_limit, tokenizer.vocab_size))
    return config
