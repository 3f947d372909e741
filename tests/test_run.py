"""The run layer: records with explicit stages, lineage, runs in the old layout, the model
on the default device, the ids each stage may sample, and clear errors."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from lanternlm.checkpoint import save_model
from lanternlm.errors import LanternError
from lanternlm.model import GPT, MODEL_PRESETS
from lanternlm.run import Run, base_vocab_limit, pick_device, read_record, write_record
from lanternlm.sampling import SamplingParams
from lanternlm.tokenizer import Tokenizer

from sft_helpers import scripted_model


@dataclasses.dataclass
class StageConfig:
    base: str = ""
    lr: float = 1e-3
    tasks: list = dataclasses.field(default_factory=lambda: ["letters"])


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(["hello world, hello lantern"] * 4, vocab_size=270)


def model_dir(path, tokenizer, vocab_size=320, model=None):
    """A directory with a model (model.json + weights) and the tokenizer."""
    save_model(path, model if model is not None else
               GPT(dataclasses.replace(MODEL_PRESETS["gpt2-style-tiny"], vocab_size=vocab_size)))
    tokenizer.save(path / "tokenizer.json")
    return path


def test_records_round_trip_with_stage_and_a_parent_relative_to_the_run(tmp_path, tokenizer):
    base = model_dir(tmp_path / "runs" / "base", tokenizer)
    write_record(base, "pretrain", {"data": "shards"})
    chat = model_dir(tmp_path / "runs" / "chat", tokenizer)
    write_record(chat, "sft", StageConfig(base=str(base)), sources={"lr": "cli"}, parent=base, data={"train": 3})
    saved = json.loads((chat / "config.json").read_text())
    assert saved["stage"] == "sft" and saved["parent"] == "../base" and saved["data"] == {"train": 3}
    assert saved["config"] == {"base": str(base), "lr": 1e-3, "tasks": ["letters"]}
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "runs", moved)  # the tree moves together: the link still holds
    run = Run(moved / "chat")
    assert run.stage == "sft" and run.chat and run.config["lr"] == 1e-3
    assert [r.path for r in run.lineage()] == [moved / "chat", (moved / "base").resolve()]
    assert run.pretraining().stage == "pretrain" and not run.parent.chat
    assert read_record(moved / "chat")["parent"] == str((moved / "base").resolve())


def test_runs_written_before_stages_were_explicit_still_load(tmp_path, tokenizer, monkeypatch):
    """Today's layout before this change: pretraining wrote no stage; SFT wrote "stage":
    "sft" and named its parent "base", a path as given from the working directory."""
    monkeypatch.chdir(tmp_path)
    base = model_dir(tmp_path / "runs" / "base", tokenizer)
    (base / "config.json").write_text(json.dumps({
        "config": {"data": "runs/data", "model": "tiny", "lr": 2e-3}, "sources": {"lr": "preset:tiny"},
        "model": {"n_layer": 2}}))
    chat = model_dir(tmp_path / "runs" / "chat", tokenizer)
    (chat / "config.json").write_text(json.dumps({
        "config": {"base": "runs/base", "tasks": ["letters", "glue"]}, "sources": {}, "stage": "sft",
        "base": "runs/base", "model": {}, "data": {"train": 10}}))
    old_base, old_chat = Run("runs/base"), Run("runs/chat")
    assert old_base.stage == "pretrain" and not old_base.chat and old_base.parent is None
    assert old_chat.stage == "sft" and old_chat.chat and old_chat.config["tasks"] == ["letters", "glue"]
    assert old_chat.parent.path == base.resolve() and old_chat.pretraining().path == base.resolve()
    assert old_base.vocab_limit == base_vocab_limit(tokenizer) < old_chat.vocab_limit == tokenizer.vocab_size


def test_a_bare_model_directory_and_a_checkpoint_directory(tmp_path, tokenizer):
    bare = Run(model_dir(tmp_path / "export", tokenizer))
    assert bare.stage is None and not bare.chat and bare.config == {} and bare.parent is None
    assert bare.vocab_limit == tokenizer.vocab_size
    run = tmp_path / "chat"
    step = model_dir(run / "checkpoints" / "step_0000002", tokenizer)
    write_record(run, "sft", StageConfig())
    assert Run(step).stage == "sft" and Run(step).chat  # a checkpoint is read with its run's record


def test_the_model_loads_on_the_default_device_checked_against_the_tokenizer(tmp_path, tokenizer):
    run = Run(model_dir(tmp_path, tokenizer))
    assert pick_device(None) == pick_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = run.model()
    assert next(model.parameters()).device.type == pick_device(None).type and not model.training
    assert run.model_config == model.config and run.tokenizer == tokenizer
    ids = torch.tensor([tokenizer.encode("hello lantern")], device=pick_device(None))
    assert model(ids).logits.shape == (1, ids.shape[1], 320)
    assert run.model("cpu", dtype=torch.bfloat16).wte.weight.dtype == torch.bfloat16
    save_model(tmp_path, GPT(dataclasses.replace(MODEL_PRESETS["gpt2-style-tiny"], vocab_size=200)))
    with pytest.raises(LanternError, match="wrong tokenizer.json"):
        Run(tmp_path).model("cpu")
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(LanternError, match="tokenizer.json: no such file"):
        Run(tmp_path).model("cpu")


def test_a_base_runs_engine_never_samples_chat_markers(tmp_path, tokenizer):
    """The pretrained model was never trained on the markers after <|endoftext|>; a chat
    run's engine and a bare model's may produce every real token."""
    user = tokenizer.special_tokens["<|user|>"]
    model_dir(tmp_path, tokenizer, model=scripted_model([user] * 8, tokenizer.vocab_size, block_size=64))
    assert Run(tmp_path).engine("cpu").vocab_limit == tokenizer.vocab_size  # a bare model directory
    write_record(tmp_path, "pretrain", {"data": "shards"})
    engine = Run(tmp_path).engine("cpu")
    assert engine.vocab_limit == base_vocab_limit(tokenizer) == tokenizer.eot_id + 1
    out = engine.generate([[tokenizer.eot_id]], max_tokens=6, sampling=SamplingParams(temperature=1.0, seed=0))
    assert out[0].tokens and all(t <= tokenizer.eot_id for t in out[0].tokens)
    write_record(tmp_path, "sft", StageConfig())
    greedy = Run(tmp_path).engine("cpu").generate([[tokenizer.eot_id]], max_tokens=1,
                                                  sampling=SamplingParams(temperature=0))
    assert greedy[0].tokens == [user]
    with pytest.raises(LanternError, match="--dtype 'fp8'"):
        Run(tmp_path).engine("cpu", dtype="fp8")
    assert Run(tmp_path).engine(dtype="bf16").dtype == torch.bfloat16


def test_bad_runs_are_clear_errors(tmp_path, tokenizer):
    with pytest.raises(LanternError, match="no such run directory"):
        Run(tmp_path / "missing")
    with pytest.raises(LanternError, match="not a run or model directory"):
        Run(tmp_path)
    run = model_dir(tmp_path / "run", tokenizer)
    (run / "config.json").write_text('{"stage": "sft", "config": {')
    with pytest.raises(LanternError, match=r"config.json: line 1, column \d+: invalid JSON"):
        Run(run)
    (run / "config.json").write_text('["a list"]')
    with pytest.raises(LanternError, match="not a run record"):
        Run(run)
    (run / "config.json").write_text('{"stage": "distill", "config": {}}')
    with pytest.raises(LanternError, match="unknown stage 'distill'"):
        Run(run)
    (run / "config.json").write_text('{"config": {"lr": 1}}')
    with pytest.raises(LanternError, match="no 'stage' field"):
        Run(run)
    with pytest.raises(LanternError, match="unknown stage"):
        write_record(run, "finetune", StageConfig())
    write_record(run, "sft", StageConfig(), parent=tmp_path / "gone")
    with pytest.raises(LanternError, match="parent run .*gone is missing"):
        Run(run).lineage()
    other = model_dir(tmp_path / "other", tokenizer)
    write_record(run, "sft", StageConfig(), parent=other)
    write_record(other, "sft", StageConfig(), parent=run)
    with pytest.raises(LanternError, match="parent links form a loop"):
        Run(run).lineage()
