"""``lantern export RUN --format gguf``: one file for llama.cpp, Ollama and LM Studio.

Written with the ``gguf`` package (llama.cpp's own writer), the way llama.cpp's
``convert_hf_to_gguf.py`` converts a Hugging Face model: the weights start from the
Hugging Face names of :mod:`lanternlm.interop.hf` and take llama.cpp's names from
``gguf``'s own table (``TensorNameMap``); then, per architecture,

- ``llama``: the query and key rows are permuted from the rotate-half RoPE layout into
  llama.cpp's interleaved pairs (its ``LlamaModel.permute``);
- ``gpt2``: GPT-2's ``Conv1D`` matrices go back to (out, in), and a tied head is written
  as ``output.weight`` too, as the converter does.

Weights are fp32 (``general.file_type`` 0): quantize with llama.cpp's ``llama-quantize``.
The tokenizer is byte-level BPE (``tokenizer.ggml.model = "gpt2"``): tokens in GPT-2's
byte alphabet, merges, special tokens as control tokens, ids without a token as unused
ones. llama.cpp picks its pre-split regex by name (``tokenizer.ggml.pre``), so only split
patterns with a name there are exported (:data:`PRE_TOKENIZERS`). A chat run carries the
chat template of :mod:`lanternlm.interop.chat_template`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..config import atomic_path
from ..errors import LanternError
from ..log import logger
from ..run import Run
from ..tokenizer import END, GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN, bytes_to_unicode
from .chat_template import chat_template
from .export import exportable_model, stop_tokens
from .hf import family, hf_state
from .hf_tokenizer import LLAMA3_SPLIT_PATTERN, QWEN2_SPLIT_PATTERN

PRE_TOKENIZERS = {
    # ours differs from Llama 3's only where the two match the same text: possessive ?+ and
    # ++ that cannot backtrack into a match anyway, and \s*[\r\n] for \s*[\r\n]+
    GPT4_SPLIT_PATTERN: "llama-bpe",
    LLAMA3_SPLIT_PATTERN: "llama-bpe",
    GPT2_SPLIT_PATTERN: "gpt-2",
    QWEN2_SPLIT_PATTERN: "qwen2",
}
"""Split patterns llama.cpp knows, with its name for each."""


def _gguf():
    try:
        import gguf
    except ImportError:
        raise LanternError("GGUF export needs the 'gguf' package: pip install 'lanternlm[gguf]'") from None
    return gguf


def interleave_rope(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of each head from rotate-half pairs ``(i, i + d/2)`` to adjacent pairs
    ``(2i, 2i + 1)``, llama.cpp's RoPE layout (``convert_hf_to_gguf.LlamaModel.permute``).

    >>> interleave_rope(torch.arange(8.0), heads=2).tolist()   # head 0: rows 0 1 | 2 3
    [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]
    """
    return (weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])  # (H, 2, d/2, ...)
            .swapaxes(1, 2).reshape(weight.shape))


def gguf_tensors(model) -> dict[str, torch.Tensor]:
    """The model's weights under llama.cpp's names and layouts (see the module docstring)."""
    gguf = _gguf()
    c = model.config
    arch = family(c)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT2 if arch == "gpt2" else gguf.MODEL_ARCH.LLAMA,
                                     c.n_layer)
    out: dict[str, torch.Tensor] = {}
    for hf_name, tensor in hf_state(model).items():
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise LanternError(f"GGUF export: no llama.cpp name for {hf_name}")
        if arch == "llama" and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            tensor = interleave_rope(tensor, c.n_head)
        elif arch == "llama" and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            tensor = interleave_rope(tensor, c.kv_heads)
        elif arch == "gpt2" and tensor.ndim == 2 and ".h." in hf_name:
            tensor = tensor.t()  # Conv1D (in, out) -> (out, in)
        if hf_name.endswith(".bias") and arch == "llama" and not tensor.any():
            continue  # an imported Qwen2's zero biases (interop/hf.py): llama.cpp need not read them
        out[name] = tensor.float().contiguous()
    if arch == "gpt2" and "output.weight" not in out:
        out["output.weight"] = out["token_embd.weight"]
    return out


def export_gguf(run: Run | str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``run`` as the GGUF file ``out``; returns its path."""
    gguf = _gguf()
    run = run if isinstance(run, Run) else Run(run)
    out = Path(out)
    tokenizer = run.tokenizer
    pre = PRE_TOKENIZERS.get(tokenizer.pattern)
    if pre is None:
        raise LanternError(f"{run.path}: llama.cpp has no pre-tokenizer for the split pattern "
                           f"{tokenizer.pattern!r} (it picks its regex by name; known: GPT-4 / Llama 3, "
                           "GPT-2, Qwen2); export --format hf instead")
    model = exportable_model(run)
    c = model.config
    arch = family(c)
    tensors = gguf_tensors(model)
    stops = stop_tokens(run)
    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_name(run.path.resolve().name)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        writer.add_context_length(c.block_size)
        writer.add_embedding_length(c.n_embd)
        writer.add_block_count(c.n_layer)
        writer.add_feed_forward_length(c.mlp_size)
        writer.add_head_count(c.n_head)
        if arch == "llama":
            writer.add_head_count_kv(c.kv_heads)
            writer.add_rope_dimension_count(c.head_dim)
            writer.add_rope_freq_base(c.rope_theta)
            writer.add_layer_norm_rms_eps(c.norm_eps)
            writer.add_vocab_size(c.vocab_size)
        else:
            writer.add_layer_norm_eps(c.norm_eps)
        _add_tokenizer(writer, gguf, tokenizer, pre, stops, chat=run.chat)
        for name, tensor in tensors.items():
            writer.add_tensor(name, tensor.numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    logger.info("exported %s (%s, %d tensors, pre-tokenizer %s) to %s", run.path, arch, len(tensors), pre, out)
    return out


def _add_tokenizer(writer, gguf, tokenizer, pre: str, stops: list[int], chat: bool) -> None:
    alphabet = bytes_to_unicode()
    vocab = tokenizer.vocab
    specials = {i: name for name, i in tokenizer.special_tokens.items()}
    tokens, types = [], []
    for i in range(tokenizer.vocab_size):
        if i in vocab:
            tokens.append("".join(alphabet[b] for b in vocab[i]))
            types.append(gguf.TokenType.NORMAL)
        elif i in specials:
            tokens.append(specials[i])
            types.append(gguf.TokenType.CONTROL)
        else:
            tokens.append(f"[UNUSED{i}]")
            types.append(gguf.TokenType.UNUSED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([f"{tokens[a]} {tokens[b]}" for a, b in tokenizer.merges])
    writer.add_bos_token_id(tokenizer.bos_id)
    writer.add_eos_token_id(stops[0])
    writer.add_pad_token_id(tokenizer.pad_id)
    writer.add_add_bos_token(False)
    if chat:
        writer.add_eot_token_id(tokenizer.special_id(END))
        writer.add_chat_template(chat_template(tokenizer.decode([tokenizer.bos_id])))
