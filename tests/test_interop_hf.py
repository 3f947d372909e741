"""Parity with Hugging Face: identical random weights give the same logits (fp32, 1e-4)."""

import dataclasses

import pytest
import torch

from lanternlm.errors import LanternError
from lanternlm.interop.hf import config_from_hf, family, from_hf, hf_config, to_hf
from lanternlm.model import GPT, MODEL_PRESETS

transformers = pytest.importorskip("transformers", reason="needs the [hf] extra (transformers)")

GPT2 = dataclasses.replace(MODEL_PRESETS["gpt2-style-tiny"], norm_eps=1e-5)
LLAMA = dataclasses.replace(MODEL_PRESETS["llama-style-tiny"], rope_theta=500.0)  # GQA 4/2
LLAMA_VARIANTS = {
    "gqa-untied": LLAMA,
    "tied-biased": dataclasses.replace(LLAMA, tie_embeddings=True, bias=True, n_kv_head=1),
}


def random_model(config, seed=0):
    """Our model with every parameter random (norm weights and biases included)."""
    torch.manual_seed(seed)
    model = GPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim == 1 else 0.05) + (p.ndim == 1) * 1.0)
    return model


def max_diff(ours, theirs, idx):
    with torch.no_grad():
        return (ours(idx).logits - theirs(idx).logits).abs().max().item()


def test_gpt2_parity_both_directions():
    ours = random_model(GPT2)
    theirs = to_hf(ours)
    assert isinstance(theirs, transformers.GPT2LMHeadModel)
    idx = torch.randint(0, GPT2.vocab_size, (2, 24))
    assert max_diff(ours, theirs, idx) <= 1e-4
    # and back: a fresh HF model with its own random init
    torch.manual_seed(1)
    hf = transformers.GPT2LMHeadModel(hf_config(GPT2)).eval()
    back = from_hf(hf)
    assert back.config == GPT2
    assert max_diff(back, hf, idx) <= 1e-4


@pytest.mark.parametrize("name", LLAMA_VARIANTS)
def test_llama_parity_both_directions(name):
    config = LLAMA_VARIANTS[name]
    ours = random_model(config)
    theirs = to_hf(ours)
    assert isinstance(theirs, transformers.LlamaForCausalLM)
    idx = torch.randint(0, config.vocab_size, (2, 24))
    assert max_diff(ours, theirs, idx) <= 1e-4
    torch.manual_seed(1)
    hf = transformers.LlamaForCausalLM(hf_config(config)).eval()
    back = from_hf(hf)
    assert back.config == config
    assert max_diff(back, hf, idx) <= 1e-4


def test_round_trip_through_a_saved_hf_directory(tmp_path):
    ours = random_model(LLAMA)
    to_hf(ours).save_pretrained(tmp_path)
    loaded = from_hf(tmp_path)
    for (name, a), (_, b) in zip(ours.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_config_round_trip_and_unsupported_features():
    for config in (GPT2, LLAMA, dataclasses.replace(LLAMA, mlp_hidden=96)):
        assert config_from_hf(hf_config(config)) == config
    assert family(GPT2) == "gpt2" and family(LLAMA) == "llama"
    with pytest.raises(LanternError, match="qk_norm"):
        family(dataclasses.replace(LLAMA, qk_norm=True))
    with pytest.raises(LanternError, match="grouped-query"):
        family(dataclasses.replace(GPT2, n_kv_head=2))
    with pytest.raises(LanternError, match="pos_encoding"):
        family(dataclasses.replace(GPT2, pos_encoding="rope"))
