"""Model checkpoints: exact round-trip, and clear errors for every kind of bad file."""

import dataclasses
import json

import pytest
import torch

from lanternlm.checkpoint import load_config, load_model, save_model
from lanternlm.errors import LanternError
from lanternlm.model import GPT, MODEL_PRESETS

LLAMA_TINY = MODEL_PRESETS["llama-style-tiny"]


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(LLAMA_TINY, qk_norm=True)).eval()
    save_model(tmp_path, model)
    return tmp_path, model


@pytest.mark.parametrize("config", [MODEL_PRESETS["gpt2-style-tiny"], LLAMA_TINY])
def test_round_trip_exact(tmp_path, config):
    torch.manual_seed(0)
    model = GPT(config).eval()
    save_model(tmp_path, model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
    loaded = load_model(tmp_path)
    assert loaded.config == config and not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    idx = torch.randint(0, config.vocab_size, (2, 9))
    assert torch.equal(model(idx).logits, loaded(idx).logits)


def test_load_with_dtype(saved):
    directory, model = saved
    loaded = load_model(directory, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    assert json.loads((directory / "model.json").read_text())["num_params"] == model.num_params()


def test_missing_files(tmp_path, saved):
    with pytest.raises(LanternError, match="model.json: no such file"):
        load_model(tmp_path / "nowhere")
    directory, _ = saved
    (directory / "model.safetensors").unlink()
    with pytest.raises(LanternError, match="model.safetensors: no such file"):
        load_model(directory)


def test_truncated_and_corrupt_weights(saved):
    directory, _ = saved
    weights = directory / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(LanternError, match="corrupt or truncated"):
        load_model(directory)
    weights.write_bytes(b"\xff" * 64)
    with pytest.raises(LanternError, match="corrupt or truncated"):
        load_model(directory)


def test_bad_model_json(saved):
    directory, _ = saved
    path = directory / "model.json"
    meta = json.loads(path.read_text())
    path.write_text("{not json")
    with pytest.raises(LanternError, match="not valid JSON"):
        load_model(directory)
    path.write_text(json.dumps({**meta, "config": {**meta["config"], "n_experts": 8}}))
    with pytest.raises(LanternError, match=r"unknown config field\(s\) \['n_experts'\]"):
        load_config(directory)
    path.write_text(json.dumps({**meta, "format": "something-else/9"}))
    with pytest.raises(LanternError, match="field 'format'"):
        load_config(directory)
    path.write_text(json.dumps({**meta, "config": {**meta["config"], "n_head": 3}}))
    with pytest.raises(LanternError, match="n_embd"):
        load_config(directory)


def test_shape_mismatch_names_the_tensor(saved):
    directory, _ = saved
    path = directory / "model.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "config": {**meta["config"], "vocab_size": 1000}}))
    with pytest.raises(LanternError, match="'wte.weight' has shape"):
        load_model(directory)
    path.write_text(json.dumps({**meta, "config": {**meta["config"], "n_layer": 3}}))
    with pytest.raises(LanternError, match="missing.*blocks.2"):
        load_model(directory)


def test_save_overwrites_atomically(saved):
    directory, model = saved
    with torch.no_grad():
        model.wte.weight.add_(1.0)
    save_model(directory, model)
    leftovers = [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    assert torch.equal(load_model(directory).wte.weight, model.wte.weight)
