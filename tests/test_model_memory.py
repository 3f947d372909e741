"""`lantern info` arithmetic: weight and KV-cache bytes equal those of real tensors."""

import dataclasses

import pytest
import torch

from lanternlm.checkpoint import save_model
from lanternlm.cli import main
from lanternlm.errors import LanternError
from lanternlm.memory import check_fits, info, memory_estimate, num_params
from lanternlm.model import GPT, MODEL_PRESETS, KVCache

LLAMA_TINY = MODEL_PRESETS["llama-style-tiny"]


@pytest.mark.parametrize("dtype,torch_dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                               ("fp16", torch.float16)])
def test_estimate_parts_match_real_tensors(dtype, torch_dtype):
    config = dataclasses.replace(LLAMA_TINY, block_size=40)
    model = GPT(config).to(torch_dtype)
    est = memory_estimate(config, dtype, batch_size=3, context=40)
    assert est.weights == sum(p.nbytes for p in model.parameters())
    assert est.kv_cache == KVCache(config, 3, max_len=40, dtype=torch_dtype).nbytes
    assert est.total == est.weights + est.kv_cache + est.activations + est.runtime
    logits = 3 * 40 * config.vocab_size * 4  # one fp32 prefill's logits are included
    assert est.activations > logits
    assert memory_estimate(config, "int8").weights == model.num_params()


def test_estimate_rejects_bad_input():
    with pytest.raises(LanternError, match="dtype"):
        memory_estimate(LLAMA_TINY, "fp8")
    with pytest.raises(LanternError, match="context"):
        memory_estimate(LLAMA_TINY, context=LLAMA_TINY.block_size + 1)


def test_info_for_presets_and_run_directory(tmp_path, capsys):
    table = info()
    for name in MODEL_PRESETS:
        assert name in table
    assert "124.5M" in table  # gpt2-124m
    text = info("gpt2-124m")
    assert "124,475,904" in text and "36.0 KiB per token" in text and "This machine: RAM" in text
    save_model(tmp_path, GPT(LLAMA_TINY))
    text = info(str(tmp_path))
    assert f"{GPT(LLAMA_TINY).num_params():,}" in text and "float32" in text
    with pytest.raises(LanternError, match="neither a preset"):
        info(str(tmp_path / "missing"))
    assert main(["info", "tiny", "--context", "64"]) == 0
    assert "context 64" in capsys.readouterr().out
    assert main(["info", "no-such-preset"]) == 2


def test_check_fits_counts_what_each_process_holds(monkeypatch):
    """16 bytes a parameter to train in one process; under FSDP over 4, the whole fp32
    model (4 bytes) while building it plus a quarter of the 12 bytes of gradients and states."""
    config = MODEL_PRESETS["tiny"]
    n = num_params(config)
    for ram, shards, fits in ((16 * n, 1, True), (16 * n - 1, 1, False), (7 * n, 4, True), (7 * n - 1, 4, False)):
        monkeypatch.setattr("lanternlm.memory.available_memory", lambda: {"RAM": ram})
        if fits:
            check_fits(config, "cpu", training=True, shards=shards)
        else:
            with pytest.raises(LanternError, match="choose smaller sizes"):
                check_fits(config, "cpu", training=True, shards=shards)
    monkeypatch.setattr("lanternlm.memory.available_memory", lambda: {"RAM": 4 * n})
    check_fits(config, "cpu")  # inference: the weights alone
