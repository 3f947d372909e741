"""Our models ↔ Hugging Face ``GPT2LMHeadModel`` and ``LlamaForCausalLM`` (and, into ours,
``Qwen2ForCausalLM`` and other Llama-like configs where the mapping is exact).

Needs the optional ``transformers`` package (``pip install lanternlm[hf]``). No hub access:
:func:`from_hf` takes a model object or a local directory.

The mapping, per block ``i`` (ours ← theirs):

=====================  ===============================  ======================================
ours                   GPT-2 (``transformer.h.i.``)     Llama (``model.layers.i.``)
=====================  ===============================  ======================================
``norm1``              ``ln_1``                         ``input_layernorm``
``attn.qkv``           ``attn.c_attn`` (transposed)     cat(``q_proj``, ``k_proj``, ``v_proj``)
``attn.proj``          ``attn.c_proj`` (transposed)     ``self_attn.o_proj``
``norm2``              ``ln_2``                         ``post_attention_layernorm``
``mlp.fc``             ``mlp.c_fc`` (transposed)        cat(``gate_proj``, ``up_proj``)
``mlp.proj``           ``mlp.c_proj`` (transposed)      ``mlp.down_proj``
=====================  ===============================  ======================================

plus ``wte``/``wpe``/``norm_f``/``lm_head`` ↔ ``transformer.wte``/``wpe``/``ln_f``/``lm_head``
(GPT-2) or ``model.embed_tokens``/``model.norm``/``lm_head`` (Llama). GPT-2's ``Conv1D``
stores weights as (in, out), hence the transposes. Our RoPE uses HF Llama's rotate-half
layout, so q and k need no permutation.

Our model has one ``bias`` switch for every linear layer. A Hugging Face model with biases
on some of them only (Qwen2: on q, k and v; Llama's ``attention_bias`` without ``mlp_bias``)
is read with ``bias=True`` and zero biases where it has none: the same function, exactly.
Exporting it again writes those zeros.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from ..errors import LanternError
from ..model import GPT, GPTConfig


def _transformers():
    try:
        import transformers
    except ImportError:
        raise LanternError("Hugging Face interop needs the 'transformers' package: "
                           "pip install 'lanternlm[hf]'") from None
    return transformers


def family(config: GPTConfig) -> str:
    """``"gpt2"`` or ``"llama"``: which HF architecture holds this config exactly.

    Raises LanternError naming the fields no HF class of that family can represent.
    """
    problems = []
    if config.qk_norm:
        problems.append("qk_norm=True")
    if config.sliding_window is not None:
        problems.append(f"sliding_window={config.sliding_window}")
    gpt2 = (config.pos_encoding, config.norm, config.mlp) == ("learned", "layernorm", "gelu")
    llama = (config.pos_encoding, config.norm, config.mlp) == ("rope", "rmsnorm", "swiglu")
    if gpt2:
        if not config.bias:
            problems.append("bias=False (GPT-2 always has biases)")
        if config.kv_heads != config.n_head:
            problems.append(f"n_kv_head={config.n_kv_head} (GPT-2 has no grouped-query attention)")
    elif not llama:
        problems.append(f"pos_encoding={config.pos_encoding!r}, norm={config.norm!r}, "
                        f"mlp={config.mlp!r} (GPT-2 is learned/layernorm/gelu, "
                        "Llama is rope/rmsnorm/swiglu)")
    if problems:
        raise LanternError("no Hugging Face equivalent for this model: " + "; ".join(problems))
    return "gpt2" if gpt2 else "llama"


def hf_config(config: GPTConfig, eos_token_id: int | None = None) -> Any:
    """The ``transformers`` config (``GPT2Config`` or ``LlamaConfig``) of the same model.

    ``eos_token_id`` (e.g. our tokenizer's ``eot_id``) becomes its BOS and EOS token.
    """
    transformers = _transformers()
    special = {"bos_token_id": eos_token_id, "eos_token_id": eos_token_id}
    if family(config) == "gpt2":
        return transformers.GPT2Config(
            vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
            n_layer=config.n_layer, n_head=config.n_head, n_inner=config.mlp_size,
            activation_function="gelu_new", layer_norm_epsilon=config.norm_eps,
            resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
            initializer_range=config.init_std, tie_word_embeddings=config.tie_embeddings,
            **special)
    return transformers.LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.n_embd,
        intermediate_size=config.mlp_size, num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head, num_key_value_heads=config.kv_heads,
        head_dim=config.head_dim, max_position_embeddings=config.block_size,
        rms_norm_eps=config.norm_eps, rope_theta=config.rope_theta, hidden_act="silu",
        attention_bias=config.bias, mlp_bias=config.bias, attention_dropout=config.dropout,
        initializer_range=config.init_std, tie_word_embeddings=config.tie_embeddings,
        **special)


def _rope_theta(cfg: Any) -> float:
    """RoPE base of a HF Llama config; only plain (unscaled) RoPE maps onto ours."""
    params = getattr(cfg, "rope_parameters", None) or {}  # transformers >= 5
    scaling = getattr(cfg, "rope_scaling", None)  # transformers 4.x
    kind = params.get("rope_type") or (scaling or {}).get("rope_type") or "default"
    if kind != "default":
        raise LanternError(f"HF config: rope type {kind!r} is not supported (only plain RoPE)")
    return float(params.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))


def config_from_hf(cfg: Any) -> GPTConfig:
    """Our :class:`GPTConfig` from a HF ``GPT2Config`` or ``LlamaConfig``.

    ``mlp_hidden`` is left ``None`` when it equals the family's default size.
    """
    config = _config_from_hf(cfg)
    default = dataclasses.replace(config, mlp_hidden=None)
    return default if default.mlp_size == config.mlp_hidden else config


def _config_from_hf(cfg: Any) -> GPTConfig:
    if cfg.model_type == "gpt2":
        if cfg.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
            raise LanternError(f"HF GPT-2 config: activation_function="
                               f"{cfg.activation_function!r} unsupported (need gelu_new)")
        if getattr(cfg, "scale_attn_by_inverse_layer_idx", False) or not cfg.scale_attn_weights:
            raise LanternError("HF GPT-2 config: only the standard 1/sqrt(head_dim) attention "
                               "scaling is supported")
        return GPTConfig(
            vocab_size=cfg.vocab_size, block_size=cfg.n_positions, n_layer=cfg.n_layer,
            n_head=cfg.n_head, n_embd=cfg.n_embd, mlp_hidden=cfg.n_inner or 4 * cfg.n_embd,
            norm_eps=cfg.layer_norm_epsilon, dropout=0.0, init_std=cfg.initializer_range,
            tie_embeddings=cfg.tie_word_embeddings)
    if cfg.model_type in ("llama", "qwen2"):
        name = "Llama" if cfg.model_type == "llama" else "Qwen2"
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        if head_dim * cfg.num_attention_heads != cfg.hidden_size:
            raise LanternError(f"HF {name} config: head_dim={head_dim} x {cfg.num_attention_heads}"
                               f" heads != hidden_size={cfg.hidden_size}; unsupported")
        if cfg.hidden_act != "silu":
            raise LanternError(f"HF {name} config: hidden_act={cfg.hidden_act!r} unsupported (need 'silu')")
        if getattr(cfg, "use_sliding_window", False):
            raise LanternError(f"HF {name} config: use_sliding_window=True (sliding attention on some "
                               "layers only) is unsupported")
        bias = (cfg.model_type == "qwen2" or bool(getattr(cfg, "attention_bias", False))
                or bool(getattr(cfg, "mlp_bias", False)))
        return GPTConfig(
            vocab_size=cfg.vocab_size, block_size=cfg.max_position_embeddings,
            n_layer=cfg.num_hidden_layers, n_head=cfg.num_attention_heads,
            n_kv_head=cfg.num_key_value_heads, n_embd=cfg.hidden_size,
            mlp_hidden=cfg.intermediate_size, pos_encoding="rope", rope_theta=_rope_theta(cfg),
            norm="rmsnorm", norm_eps=cfg.rms_norm_eps, mlp="swiglu", bias=bias,
            tie_embeddings=cfg.tie_word_embeddings, init_std=cfg.initializer_range)
    raise LanternError(f"HF model_type {cfg.model_type!r} is not supported: lanternlm reads 'gpt2', 'llama' "
                       "and Llama-like 'qwen2' models")


def _to_hf_state(model: GPT) -> dict[str, torch.Tensor]:
    """Our state dict renamed (and reshaped) into HF's."""
    c, sd = model.config, model.state_dict()
    out: dict[str, torch.Tensor] = {}
    if family(c) == "gpt2":
        out["transformer.wte.weight"] = sd["wte.weight"]
        out["transformer.wpe.weight"] = sd["wpe.weight"]
        for i in range(c.n_layer):
            ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
            for a, b in (("norm1", "ln_1"), ("norm2", "ln_2")):
                out[f"{theirs}{b}.weight"] = sd[f"{ours}{a}.weight"]
                out[f"{theirs}{b}.bias"] = sd[f"{ours}{a}.bias"]
            for a, b in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
                         ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")):
                out[f"{theirs}{b}.weight"] = sd[f"{ours}{a}.weight"].t()  # Conv1D: (in, out)
                out[f"{theirs}{b}.bias"] = sd[f"{ours}{a}.bias"]
        out["transformer.ln_f.weight"] = sd["norm_f.weight"]
        out["transformer.ln_f.bias"] = sd["norm_f.bias"]
    else:
        q_size, kv_size = c.n_head * c.head_dim, c.kv_heads * c.head_dim
        out["model.embed_tokens.weight"] = sd["wte.weight"]
        for i in range(c.n_layer):
            ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
            out[f"{theirs}input_layernorm.weight"] = sd[f"{ours}norm1.weight"]
            out[f"{theirs}post_attention_layernorm.weight"] = sd[f"{ours}norm2.weight"]
            for kind in ("weight", "bias") if c.bias else ("weight",):
                q, k, v = sd[f"{ours}attn.qkv.{kind}"].split([q_size, kv_size, kv_size])
                out[f"{theirs}self_attn.q_proj.{kind}"] = q
                out[f"{theirs}self_attn.k_proj.{kind}"] = k
                out[f"{theirs}self_attn.v_proj.{kind}"] = v
                out[f"{theirs}self_attn.o_proj.{kind}"] = sd[f"{ours}attn.proj.{kind}"]
                gate, up = sd[f"{ours}mlp.fc.{kind}"].chunk(2)
                out[f"{theirs}mlp.gate_proj.{kind}"] = gate
                out[f"{theirs}mlp.up_proj.{kind}"] = up
                out[f"{theirs}mlp.down_proj.{kind}"] = sd[f"{ours}mlp.proj.{kind}"]
        out["model.norm.weight"] = sd["norm_f.weight"]
    if not c.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out


def _from_hf_state(sd: dict[str, torch.Tensor], c: GPTConfig) -> dict[str, torch.Tensor]:
    """HF's state dict renamed (and reshaped) into ours: the inverse of :func:`_to_hf_state`.
    A Llama-like model's missing biases are zeros (see the module docstring)."""
    out: dict[str, torch.Tensor] = {}
    sd = dict(sd)
    if c.bias and family(c) == "llama":
        for name, weight in list(sd.items()):
            if name.endswith("_proj.weight") and name.removesuffix("weight") + "bias" not in sd:
                sd[name.removesuffix("weight") + "bias"] = weight.new_zeros(weight.shape[0])
    if family(c) == "gpt2":
        out["wte.weight"] = sd["transformer.wte.weight"]
        out["wpe.weight"] = sd["transformer.wpe.weight"]
        for i in range(c.n_layer):
            ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
            for a, b in (("norm1", "ln_1"), ("norm2", "ln_2")):
                out[f"{ours}{a}.weight"] = sd[f"{theirs}{b}.weight"]
                out[f"{ours}{a}.bias"] = sd[f"{theirs}{b}.bias"]
            for a, b in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
                         ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")):
                out[f"{ours}{a}.weight"] = sd[f"{theirs}{b}.weight"].t()  # (out, in)
                out[f"{ours}{a}.bias"] = sd[f"{theirs}{b}.bias"]
        out["norm_f.weight"] = sd["transformer.ln_f.weight"]
        out["norm_f.bias"] = sd["transformer.ln_f.bias"]
    else:
        out["wte.weight"] = sd["model.embed_tokens.weight"]
        for i in range(c.n_layer):
            ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
            out[f"{ours}norm1.weight"] = sd[f"{theirs}input_layernorm.weight"]
            out[f"{ours}norm2.weight"] = sd[f"{theirs}post_attention_layernorm.weight"]
            for kind in ("weight", "bias") if c.bias else ("weight",):
                attn, mlp = f"{theirs}self_attn.", f"{theirs}mlp."
                out[f"{ours}attn.qkv.{kind}"] = torch.cat(
                    [sd[f"{attn}{p}_proj.{kind}"] for p in ("q", "k", "v")])
                out[f"{ours}attn.proj.{kind}"] = sd[f"{attn}o_proj.{kind}"]
                out[f"{ours}mlp.fc.{kind}"] = torch.cat(
                    [sd[f"{mlp}gate_proj.{kind}"], sd[f"{mlp}up_proj.{kind}"]])
                out[f"{ours}mlp.proj.{kind}"] = sd[f"{mlp}down_proj.{kind}"]
        out["norm_f.weight"] = sd["model.norm.weight"]
    if not c.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out


def hf_config_dict(config: GPTConfig, eos_token_id: int | None = None,
                   dtype: str = "float32") -> dict[str, Any]:
    """``config.json`` of a Hugging Face model folder: :func:`hf_config` as a dict, with its
    architecture class, dtype, and ``rope_theta`` also at the top level, where readers
    written for transformers 4 (vLLM, llama.cpp's converter) look for it."""
    cfg = hf_config(config, eos_token_id)
    cfg.architectures = ["GPT2LMHeadModel" if cfg.model_type == "gpt2" else "LlamaForCausalLM"]
    out = cfg.to_dict()
    out.update(dtype=dtype, torch_dtype=dtype)
    if cfg.model_type == "llama":
        out["rope_theta"] = config.rope_theta
    return out


def hf_state(model: GPT) -> dict[str, torch.Tensor]:
    """The weights under Hugging Face's names, contiguous, on the CPU (for safetensors)."""
    return {k: v.detach().cpu().contiguous() for k, v in _to_hf_state(model).items()}


def trim_vocab(model: GPT, vocab_size: int) -> GPT:
    """``model`` with only the first ``vocab_size`` rows of its embedding and head: the
    padding rows (the table is padded to a multiple of 64) dropped, so that the vocabulary
    sizes of weights and tokenizer agree, as llama.cpp requires. Shares the weights."""
    if vocab_size == model.config.vocab_size:
        return model
    if vocab_size > model.config.vocab_size:
        raise LanternError(f"the tokenizer has {vocab_size} tokens but the model only "
                           f"{model.config.vocab_size}")
    config = dataclasses.replace(model.config, vocab_size=vocab_size)
    rows = ("wte.weight", "lm_head.weight")
    state = {k: v[:vocab_size] if k in rows else v for k, v in model.state_dict().items()}
    with torch.device("meta"):
        trimmed = GPT(config)
    trimmed.load_state_dict(state, assign=True)
    trimmed.init_buffers()
    return trimmed.eval()


def to_hf(model: GPT, eos_token_id: int | None = None) -> Any:
    """A ``GPT2LMHeadModel`` or ``LlamaForCausalLM`` holding a copy of ``model``'s weights
    (fp32, eval mode); ``eos_token_id`` as in :func:`hf_config`."""
    transformers = _transformers()
    cfg = hf_config(model.config, eos_token_id)
    cls = (transformers.GPT2LMHeadModel if cfg.model_type == "gpt2"
           else transformers.LlamaForCausalLM)
    hf_model = cls(cfg).float()
    state = {k: v.detach().float().contiguous() for k, v in _to_hf_state(model).items()}
    result = hf_model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if model.config.tie_embeddings else set()
    left = {k for k in result.missing_keys if k not in tied and not k.endswith("attn.bias")}
    if left or result.unexpected_keys:
        raise LanternError(f"export to HF: missing {sorted(left)}, "
                           f"unexpected {sorted(result.unexpected_keys)}")
    return hf_model.eval()


def from_hf(source: Any | str | os.PathLike) -> GPT:
    """Our :class:`GPT` from a HF GPT-2 / Llama model object or a local model directory."""
    if isinstance(source, (str, os.PathLike)):
        transformers = _transformers()
        source = transformers.AutoModelForCausalLM.from_pretrained(str(source),
                                                                   local_files_only=True)
    config = config_from_hf(source.config)
    state = _from_hf_state(source.state_dict(), config)
    with torch.device("meta"):
        model = GPT(config)
    model.load_state_dict({k: v.detach().clone() for k, v in state.items()}, assign=True)
    model.init_buffers()
    return model.eval()
