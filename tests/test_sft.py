"""Supervised fine-tuning: masked loss, padding isolation, inheritance, run record, resume, errors.

The chat batches themselves (bucketing, collation, order, ranks) are tested with the other
loaders in ``test_loader.py``; SFT under ``torchrun`` in ``test_train_ddp.py``."""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lanternlm.chat import render
from lanternlm.cli import main
from lanternlm.data.loader import chat_eval_batches, collate
from lanternlm.errors import LanternError
from lanternlm.model import GPT, GPTConfig
from lanternlm.run import Run
from lanternlm.tasks import TASKS
from lanternlm.train.distributed import DistInfo
from lanternlm.train.loop import accumulate, counted_targets, evaluate, token_loss
from lanternlm.train.sft import sft

from sft_helpers import make_base, small_sft, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer()


@pytest.fixture(scope="module")
def base(tokenizer, tmp_path_factory):
    return make_base(tokenizer, tmp_path_factory.mktemp("sft"))


def conversations(tokenizer, n=5):
    out = []
    for i, name in enumerate(["letters", "arithmetic", "reverse", "glue", "letters"][:n]):
        example = TASKS[name].generate(1, seed=i)[0]
        out.append(render(TASKS[name].to_conversation(example, ["none", "low", "high", "medium", "high"][i]), tokenizer))
    return out


def test_loss_is_cross_entropy_over_masked_in_tokens_only(tokenizer):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=512, n_layer=1, n_head=2, n_embd=16))
    items = conversations(tokenizer)
    x, y = collate(items, pad_id=tokenizer.special_id("<|pad|>"))
    loss = model(x, y).loss
    logits = model(x).logits
    manual, count = 0.0, 0
    for b, item in enumerate(items):
        for t in range(len(item.ids) - 1):
            if item.mask[t + 1]:  # the token at t+1 is trained: predicted from position t
                manual += F.cross_entropy(logits[b, t], torch.tensor(item.ids[t + 1])).item()
                count += 1
    assert count == sum(sum(item.mask[1:]) for item in items) > 0
    assert loss.item() == pytest.approx(manual / count, rel=1e-5)


def test_a_padded_row_computes_exactly_the_conversation_alone(tokenizer):
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=512, n_layer=2, n_head=2, n_embd=16,
                          pos_encoding="rope", norm="rmsnorm", mlp="swiglu", tie_embeddings=False)).eval()
    items = conversations(tokenizer)
    x, _ = collate(items, pad_id=tokenizer.special_id("<|pad|>"))
    together = model(x).logits
    assert len({len(item.ids) for item in items}) > 1  # rows really are padded
    for b, item in enumerate(items):
        alone = model(torch.tensor([item.ids[:-1]])).logits[0]
        torch.testing.assert_close(together[b, :len(item.ids) - 1], alone, rtol=1e-5, atol=1e-5)


def test_accumulated_micro_batches_weigh_every_trained_token_alike(tokenizer):
    torch.manual_seed(3)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=512, n_layer=1, n_head=2, n_embd=16))
    items = conversations(tokenizer)
    micro = [collate(items[:1], tokenizer.pad_id), collate(items[1:], tokenizer.pad_id)]
    assert counted_targets(micro[0]) != counted_targets(micro[1])
    loss, _, _ = accumulate(model, micro, counted_targets, token_loss, DistInfo(0, 0, 1, torch.device("cpu")))
    accumulated = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    whole = model(*collate(items, tokenizer.pad_id)).loss  # one batch: the mean over all trained tokens
    whole.backward()
    assert loss.item() == pytest.approx(whole.item(), rel=1e-5)
    for a, b in zip(accumulated, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_validation_loss_is_the_mean_over_masked_in_tokens_whatever_the_batching(tokenizer):
    torch.manual_seed(2)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size + 20, block_size=512, n_layer=1, n_head=2, n_embd=16))
    items = conversations(tokenizer)
    x, y = collate(items, pad_id=tokenizer.pad_id)
    logits = model(x).logits[..., :tokenizer.vocab_size]  # the padding rows are not tokens
    expected = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1).item()
    single = DistInfo(0, 0, 1, torch.device("cpu"))
    for batch_size in (1, 2, 5):
        batches = chat_eval_batches(items, batch_size, tokenizer.pad_id)
        scores = evaluate(model, batches, None, single,
                          vocab_limit=tokenizer.vocab_size)
        assert scores == {"val_loss": pytest.approx(expected, rel=1e-5)}


def test_sft_inherits_logs_marks_the_chat_model_and_trains(base, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="lanternlm")
    run = tmp_path / "chat"
    summary = sft(small_sft(base, beta1=0.8), run,
                  sources={"beta1": "cli", "block_size": "cli", "base": "cli"})
    assert summary["steps"] == 3
    saved = json.loads((run / "config.json").read_text())
    assert saved["stage"] == "sft" and saved["config"]["base"] == os.path.relpath(base, run)  # the tree can move
    assert Run(run).chat and Run(run).parent.path == base.resolve() and Run(run).config["base"] == str(base)
    # beta2 / weight decay come from the base's config.json, beta1 is overridden
    assert saved["config"]["beta2"] == 0.99 and saved["sources"]["beta2"] == "base"
    assert saved["config"]["weight_decay"] == 0.05 and saved["sources"]["weight_decay"] == "base"
    assert saved["config"]["beta1"] == 0.8 and saved["sources"]["beta1"] == "cli"
    assert saved["model"]["block_size"] == 512
    log = caplog.text
    assert "inherited from base: model (n_layer=1" in log and "beta2=0.99" in log
    assert "overridden: block_size=512 (base 64; cli), beta1=0.8 (cli)" in log
    for name in ("model.safetensors", "model.json", "tokenizer.json", "metrics.jsonl", "loss.png"):
        assert (run / name).exists(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and "val_loss" in records[-1]
    assert 0 <= records[0]["pad_fraction"] < 1
    # the weights changed from the base's
    before, after = load_file(base / "model.safetensors"), load_file(run / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("stage", ["sft", "dpo", "reward", "rl"])
def test_only_sft_inherits_a_muon_base_the_nudging_stages_take_adamw(stage):
    """A chat run trained by Muon (the quickstart's) passes Muon on to SFT, but DPO, the
    reward model and RL keep AdamW unless asked: their small rates are AdamW rates."""
    from lanternlm.train.dpo import DPOConfig
    from lanternlm.train.finetune import inherit
    from lanternlm.train.reward import RewardConfig
    from lanternlm.train.rl import RLConfig
    from lanternlm.train.sft import SFTConfig

    cls = {"sft": SFTConfig, "dpo": DPOConfig, "reward": RewardConfig, "rl": RLConfig}[stage]
    parent = {"optimizer": "muon", "muon_lr": 0.01, "beta2": 0.99}
    conf, src = inherit(cls(base="b"), {}, parent)
    assert conf.optimizer == ("muon" if stage == "sft" else "adamw") and conf.beta2 == 0.99
    asked, _ = inherit(cls(base="b", optimizer="muon"), {"optimizer": "cli"}, parent)
    assert (asked.optimizer, asked.muon_lr) == ("muon", 0.01)


def test_resume_continues_exactly(base, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    sft(small_sft(base, max_steps=4, checkpoint_every=2), whole)
    sft(small_sft(base, max_steps=2, checkpoint_every=2), parts)
    with pytest.raises(LanternError, match="already holds a training run"):
        sft(small_sft(base, max_steps=4, checkpoint_every=2), parts)
    with pytest.raises(LanternError, match="cannot resume with a different setup: lr"):
        sft(small_sft(base, max_steps=4, checkpoint_every=2, lr=0.5), parts, resume=True)
    sft(small_sft(base, max_steps=4, checkpoint_every=2), parts, resume=True)
    a, b = load_file(whole / "model.safetensors"), load_file(parts / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    loss = lambda run: [json.loads(line)["train_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert loss(whole) == loss(parts)


def test_chat_jsonl_data_and_too_long_conversations(base, tokenizer, tmp_path):
    data = tmp_path / "chat.jsonl"
    long_answer = "word " * 400
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello there"}]}) + "\n"
                    + json.dumps({"messages": [{"role": "user", "content": "essay"},
                                               {"role": "assistant", "content": long_answer}]}) + "\n")
    with pytest.raises(LanternError, match=r"chat.jsonl: conversation 2: \d+ tokens do not fit"):
        sft(small_sft(base, tasks=[], data=[str(data)], block_size=128, too_long="error"), tmp_path / "a")
    with pytest.raises(LanternError, match="not enough conversations for one batch: 1, but a global batch needs 4"):
        sft(small_sft(base, tasks=[], data=[str(data)], block_size=128, max_steps=1), tmp_path / "b")
    sft(small_sft(base, tasks=[], data=[str(data)], block_size=128, max_steps=1, batch_size=1), tmp_path / "b")
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["data"] == {"conversations": 2, "train": 1, "dropped": 1, "val": 0, "text": 0}


def test_bad_inputs_are_clear_errors(base, tokenizer, tmp_path):
    with pytest.raises(LanternError, match="missing: no such run directory"):
        sft(small_sft(tmp_path / "missing"), tmp_path / "x")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": [{"role": "bot"\n')
    with pytest.raises(LanternError, match=r"bad.jsonl:2: invalid JSON"):
        sft(small_sft(base, data=[str(bad)]), tmp_path / "y")
    with pytest.raises(LanternError, match="unknown task 'sudoku'"):
        sft(small_sft(base, tasks=["sudoku"]), tmp_path / "z")
    with pytest.raises(LanternError, match="levels"):
        sft(small_sft(base, levels=["extreme"]), tmp_path / "z")
    with pytest.raises(LanternError, match=r"task_weights=\[1.0\] is invalid: task weights: 1 given for 2 tasks; give one per task, in order"):
        sft(small_sft(base, tasks=["letters", "glue"], task_weights=[1.0]), tmp_path / "z")
    with pytest.raises(LanternError, match=r"task_weights=\[1.0, 0.0\] is invalid: task weights must be finite and > 0"):
        sft(small_sft(base, tasks=["letters", "glue"], task_weights=[1.0, 0.0]), tmp_path / "z")
    with pytest.raises(LanternError, match="is the base run itself"):
        sft(small_sft(base), base)
    learned = make_base(tokenizer, tmp_path / "gpt2", pos_encoding="learned")
    with pytest.raises(LanternError, match="learned positions"):
        sft(small_sft(learned, block_size=256), tmp_path / "w")


def test_cli_sft_records_sources(base, tmp_path):
    run = tmp_path / "cli"
    assert main(["-q", "sft", "--base", str(base), "--out", str(run), "--examples-per-task", "4",
                 "--val-per-task", "1", "--block-size", "512", "--batch-size", "4", "--max-steps", "1",
                 "--max-minutes", "none", "--tasks", "letters,reverse", "--lr", "0.002"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["sources"]["lr"] == "cli" and saved["sources"]["warmup_steps"] == "preset:tiny"
    assert saved["sources"]["beta2"] == "base" and saved["config"]["tasks"] == ["letters", "reverse"]
    assert main(["sft", "--base", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2


def test_plain_text_rows_are_train_windows_of_the_pretraining_shards(base, tokenizer, tmp_path):
    import numpy as np

    from lanternlm.data.shards import open_shards
    from lanternlm.train.sft import text_rows

    root = Run(base)
    shards = open_shards(root.config["data"])
    train = np.concatenate([np.asarray(s) for s in shards.split("train")]).tolist()
    val = np.concatenate([np.asarray(s) for s in shards.split("val")]).tolist()
    block = root.model_config.block_size
    rows = text_rows(root, 5, seed=0, tokenizer=tokenizer)
    assert rows == text_rows(root, 5, seed=0, tokenizer=tokenizer) and len(rows) == 5
    assert len({tuple(r.ids) for r in rows}) == 5
    window = lambda seq, ids: any(seq[i:i + len(ids)] == ids for i in range(len(seq) - len(ids) + 1))  # noqa: E731
    for r in rows:
        assert len(r.ids) == block + 1 and r.mask == [0] + [1] * block and r.targets() == r.ids[1:]
        assert window(train, r.ids) and not window(val, r.ids)
    run = tmp_path / "mixed"
    sft(small_sft(base, tasks=["letters"], text_share=0.5, max_steps=1), run)
    counts = json.loads((run / "config.json").read_text())["data"]
    assert counts["text"] == counts["train"] - counts["text"] > 0  # as many text windows as conversations
    with pytest.raises(LanternError, match="text_share"):
        sft(small_sft(base, text_share=1.0), tmp_path / "bad")


def test_copy_drills_repeat_a_train_span_and_come_first(base, tokenizer, tmp_path):
    from lanternlm.train.sft import copy_rows

    root = Run(base)
    rows = copy_rows(root, 20, seed=0, tokenizer=tokenizer, shortest=4, longest=9)
    assert rows == copy_rows(root, 20, seed=0, tokenizer=tokenizer, shortest=4, longest=9)
    for r in rows:
        half = len(r.ids) // 2
        assert r.ids[:half] == r.ids[half:] and 4 <= half <= 9
        trained = [t for t in r.targets() if t != -1]
        assert trained == r.ids[half + 1:]  # the repeat, but its first token
    run = tmp_path / "drilled"
    sft(small_sft(base, tasks=["letters"], copy_steps=2, max_steps=3, batch_size=2, eval_every=10), run)
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["copy_steps"] == 2
    with pytest.raises(LanternError, match="copy_steps"):
        sft(small_sft(base, copy_steps=-1), tmp_path / "bad")


def test_phases_resume_where_they_stopped():
    from lanternlm.chat import Rendered
    from lanternlm.data.loader import ChatBatches, Phases

    def stream():
        first = ChatBatches([Rendered([1, i, i], [0, 1, 1], "copy") for i in range(4)], 2, pad_id=0, seed=1)
        then = ChatBatches([Rendered([2, i], [0, 1], "none") for i in range(6)], 2, pad_id=0, seed=1)
        return Phases(first, 3, then)

    a = stream()
    seen = [next(a)[0].tolist() for _ in range(7)]
    b = stream()
    for _ in range(2):
        next(b)
    state = b.state_dict()
    c = stream()
    c.load_state_dict(state)
    assert [next(c)[0].tolist() for _ in range(5)] == seen[2:]
    assert [len(x[0]) for x in seen[:3]] == [2, 2, 2] and len(seen[3][0]) == 1  # 3 drills, then the mixture
