"""Pretraining pieces and the loop, on a tiny model and a corpus made inside the test.

``make_shards`` writes a shards directory by the agreed contract (manifest + flat uint16
arrays, every document as ``[eot] + tokens``); the training code reads it through
``lanternlm.data.shards.open_shards``. The subprocess tests (kill + resume, torchrun) live
in ``test_train_resume.py`` and ``test_train_ddp.py`` and reuse these helpers.
"""

import dataclasses
import hashlib
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lanternlm.errors import LanternError
from lanternlm.model import GPT, GPTConfig
from lanternlm.tokenizer import Tokenizer
from lanternlm.train import checkpoint as ckpt_mod
from lanternlm.train import optim, plots, schedule
from lanternlm.train.metrics import Plateau, bits_per_byte, read_metrics
from lanternlm.train.pretrain import PRETRAIN_PRESETS, PretrainConfig, evaluate, model_config_for, pretrain

WORDS = ("the king said to his lord that the night was cold and the sea was dark ; "
         "a fair maid sang of love and of war , and all the court did weep .").split()


def corpus(n_docs: int = 60, seed: int = 0) -> list[str]:
    """Documents of lines built from a small word list (learnable, not memorisable at once)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))).capitalize()
                 for _ in range(rng.randint(2, 5))]
        docs.append("\n".join(lines) + "\n")
    return docs


def make_shards(out: Path, docs: list[str] | None = None, vocab_size: int = 256 + 40 + 8,
                val_docs: int = 8) -> Path:
    """A shards directory per the contract: train/val split, one uint16 shard each."""
    docs = docs if docs is not None else corpus()
    tok = Tokenizer.train(docs, vocab_size=vocab_size)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(out / "tokenizer.json")
    splits = {}
    for name, part in (("train", docs[val_docs:]), ("val", docs[:val_docs])):
        ids = [t for d in part for t in [tok.eot_id] + tok.encode(d)]
        data = np.asarray(ids, dtype="<u2")
        file = f"{name}_00000.bin"
        data.tofile(out / file)
        splits[name] = {"shards": [{"file": file, "tokens": len(ids), "documents": len(part),
                                    "sha256": hashlib.sha256(data.tobytes()).hexdigest()}],
                        "tokens": len(ids), "documents": len(part),
                        "bytes": sum(len(d.encode()) for d in part)}
    manifest = {"format": "lanternlm-shards/1",
                "tokenizer": {"file": "tokenizer.json", "fingerprint": tok.fingerprint(),
                              "vocab_size": tok.vocab_size, "eot_id": tok.eot_id},
                "dtype": "uint16", "splits": splits, "sources": [], "report": {}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def tiny_config(data: Path, **over) -> PretrainConfig:
    """2 layers, 32 wide, context 16: a few ms per step on a CPU."""
    base = dict(data=str(data), model="llama-style-tiny", n_layer=2, n_head=2, n_kv_head=1, n_embd=32,
                block_size=16, batch_size=4, max_steps=12, lr=1e-2, warmup_steps=2, eval_every=6,
                eval_tokens=256, log_every=1, checkpoint_every=6, seed=0, device="cpu")
    base.update(over)
    return PretrainConfig(**base)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("shards"))


# --------------------------------------------------------------------------- pure pieces


def test_cosine_schedule_values():
    kw = dict(max_lr=1.0, min_lr=0.1, warmup_steps=10, total_steps=110)
    assert schedule.cosine_lr(0, **kw) == pytest.approx(0.1)
    assert schedule.cosine_lr(9, **kw) == pytest.approx(1.0)
    assert schedule.cosine_lr(60, **kw) == pytest.approx(0.55)  # half way: (1 + 0.1) / 2
    assert schedule.cosine_lr(110, **kw) == pytest.approx(0.1)
    assert schedule.cosine_lr(500, **kw) == pytest.approx(0.1)
    lrs = [schedule.cosine_lr(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_wsd_schedule_values():
    kw = dict(max_lr=2.0, min_lr=0.0, warmup_steps=0, total_steps=100, decay_fraction=0.25)
    assert [schedule.wsd_lr(s, **kw) for s in (0, 50, 75, 87.5, 100)] == pytest.approx([2, 2, 2, 1, 0])
    with pytest.raises(ValueError, match="unknown schedule"):
        schedule.lr_at("linear", 0, max_lr=1, min_lr=0, warmup_steps=0, total_steps=1)


def test_bits_per_byte_hand_example():
    # two targets: "ab" (2 bytes) with CE 1.0 and "c" (1 byte) with CE 0.5 -> 1.5 nats / 3 bytes
    assert bits_per_byte(1.5, 3) == pytest.approx(1.5 / (3 * math.log(2)))
    with pytest.raises(ValueError):
        bits_per_byte(1.0, 0)


def test_evaluate_bpb_of_a_uniform_model_by_hand(shards):
    # A model with zero token embeddings outputs uniform logits: CE = ln(V) for every target.
    from lanternlm.data.loader import eval_batches
    from lanternlm.data.shards import open_shards
    from lanternlm.train.distributed import DistInfo

    shard_set = open_shards(shards)
    tok = shard_set.tokenizer()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    with torch.no_grad():
        model.wte.weight.zero_()
    lengths = torch.tensor(tok.token_byte_lengths())
    val = shard_set.split("val")
    out = evaluate(model, eval_batches(val, 4, 16, 96), lengths,
                   DistInfo(0, 0, 1, torch.device("cpu")))
    targets = np.asarray(val[0][1:97], dtype=np.int64)  # 6 windows of 16 targets
    nbytes = sum(len(tok.token_bytes(int(t))) if int(t) not in tok.special_tokens.values() else 0
                 for t in targets)
    counted = sum(1 for t in targets if int(t) not in tok.special_tokens.values())
    assert out["val_loss"] == pytest.approx(math.log(tok.vocab_size), rel=1e-6)
    assert out["bpb"] == pytest.approx(counted * math.log(tok.vocab_size) / (math.log(2) * nbytes), rel=1e-6)


def test_plateau_rule_and_state():
    rule = Plateau(patience=2, min_delta=0.1)
    assert [rule.update(v) for v in (5.0, 4.0, 3.95, 3.99)] == [False, False, False, True]
    again = Plateau(patience=2, min_delta=0.1)
    again.load_state_dict(rule.state_dict())
    assert again.best == 4.0 and again.bad == 2
    assert not Plateau(patience=0, min_delta=0).update(1.0)


def test_muon_fallback_matches_torch_muon():
    if not hasattr(torch.optim, "Muon"):
        pytest.skip("torch < 2.9 has no torch.optim.Muon to compare with")
    torch.manual_seed(0)
    ours = [torch.randn(24, 8, requires_grad=True), torch.randn(8, 20, requires_grad=True)]
    ref = [w.detach().clone().requires_grad_() for w in ours]
    a = optim.NewtonSchulzMuon(ours, lr=0.02, weight_decay=0.1)
    b = torch.optim.Muon(ref, lr=0.02, weight_decay=0.1)
    for _ in range(3):
        for w, r in zip(ours, ref):
            w.grad = torch.randn_like(w)
            r.grad = w.grad.clone()
        a.step()
        b.step()
    for w, r in zip(ours, ref):
        torch.testing.assert_close(w, r, rtol=0, atol=1e-6)


def test_muon_takes_block_matrices_adamw_the_rest():
    model = GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=2, n_head=2, n_embd=16, tie_embeddings=False))
    opts = optim.build_optimizers(model, name="muon", lr=1e-3, muon_lr=0.02,
                                  weight_decay=0.1, betas=(0.9, 0.95), fused=False)
    adamw, muon = opts.optimizers
    muon_ids = {id(p) for g in muon.param_groups for p in g["params"]}
    assert id(model.wte.weight) not in muon_ids and id(model.lm_head.weight) not in muon_ids
    assert muon_ids == {id(p) for n, p in model.blocks.named_parameters() if p.dim() == 2}
    decay, no_decay = adamw.param_groups
    assert all(p.dim() == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    total = sum(len(g["params"]) for o in opts.optimizers for g in o.param_groups)
    assert total == len(list(model.parameters()))
    opts.set_lr_factor(0.5)
    assert muon.param_groups[0]["lr"] == pytest.approx(0.01) and decay["lr"] == pytest.approx(5e-4)


def test_loss_plot_is_written(tmp_path):
    records = [{"step": s, "train_loss": 5 - 0.01 * s + 0.1 * math.sin(s)} for s in range(1, 101)]
    records[49]["val_loss"] = 4.5
    plots.plot_loss(records, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_crash_mid_write_keeps_the_previous_one(tmp_path, shards, monkeypatch):
    from lanternlm.run import Run

    tok = Tokenizer.load(shards / "tokenizer.json")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16))
    ckpt_mod.save_checkpoint(tmp_path, 5, model, tok, {"step": 5})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.wte.weight.add_(1.0)

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt_mod.torch, "save", crash)  # dies after the weights, before the state
    with pytest.raises(LanternError, match="simulated.*step_0000005, is intact"):
        ckpt_mod.save_checkpoint(tmp_path, 10, model, tok, {"step": 10})
    monkeypatch.undo()
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))  # the half-written copy is gone
    latest = ckpt_mod.latest_checkpoint(tmp_path)
    assert latest.name == "step_0000005"
    assert ckpt_mod.load_training_state(latest)["step"] == 5
    loaded = Run(tmp_path).model("cpu")
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, before[k])
    # the next successful save replaces the half-written attempt and prunes to `keep`
    for step in (10, 15, 20):
        ckpt_mod.save_checkpoint(tmp_path, step, model, tok, {"step": step}, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_0000015", "step_0000020"]
    assert torch.equal(Run(tmp_path).model("cpu").wte.weight, model.wte.weight)


def test_rng_state_round_trip():
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = ckpt_mod.rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    ckpt_mod.set_rng_state(state)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


# --------------------------------------------------------------------------- the loop


def test_pretrain_reduces_loss_and_writes_the_run(tmp_path, shards):
    run = tmp_path / "run"
    summary = pretrain(tiny_config(shards, max_steps=40, eval_every=20, checkpoint_every=20, lr=2e-2), run)
    recs = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in recs] == list(range(1, 41))
    assert summary["steps"] == 40 and summary["stopped"] == "max_steps"
    first, last = recs[0]["train_loss"], np.mean([r["train_loss"] for r in recs[-5:]])
    assert first == pytest.approx(math.log(320), rel=0.1)  # near uniform at the start
    assert last < first - 1.0
    val = [r for r in recs if "val_loss" in r]
    assert [r["step"] for r in val] == [20, 40] and val[1]["val_loss"] < val[0]["val_loss"]
    assert 0 < val[1]["bpb"] < val[0]["bpb"]
    for name in ("config.json", "model.safetensors", "model.json", "tokenizer.json", "optimizer.pt", "loss.png"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["max_steps"] == 40 and saved["model"]["n_embd"] == 32
    from lanternlm.run import Run
    model, tok = Run(run).model(), Run(run).tokenizer
    assert (model.config.vocab_size, tok.vocab_size) == (320, 304)


def test_grad_accumulation_equals_the_bigger_batch(tmp_path, shards):
    a = pretrain(tiny_config(shards, batch_size=4, grad_accum=1, max_steps=4), tmp_path / "a")
    b = pretrain(tiny_config(shards, batch_size=2, grad_accum=2, max_steps=4), tmp_path / "b")
    la = [r["train_loss"] for r in read_metrics(tmp_path / "a" / "metrics.jsonl")]
    lb = [r["train_loss"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")]
    # the loader deals the same windows: rows 0-1 then 2-3 of the same global batch
    assert a["steps"] == b["steps"] == 4
    assert np.allclose(la, lb, rtol=1e-5, atol=1e-6)


def test_muon_and_wsd_run(tmp_path, shards):
    summary = pretrain(tiny_config(shards, optimizer="muon", schedule="wsd", max_steps=30, eval_every=30), tmp_path / "r")
    recs = read_metrics(tmp_path / "r" / "metrics.jsonl")
    # record n holds the lr of step index n - 1; decay runs over the last 20% (indices 24..30)
    # from 1e-2 towards min_lr = 1e-3, so the last step (index 29) is 5/6 of the way down
    assert [r["lr"] for r in recs[24:]] == pytest.approx([1e-2 - 1.5e-3 * k for k in range(6)])
    assert summary["train_loss"] < recs[0]["train_loss"] - 1.0


def test_early_stop_on_plateau(tmp_path, shards):
    # lr 0 -> val loss never improves -> stops after `patience` evaluations past the first
    summary = pretrain(tiny_config(shards, lr=1e-12, max_steps=100, eval_every=2, early_stop_patience=2,
                                   early_stop_min_delta=0.01), tmp_path / "r")
    assert summary["stopped"] == "plateau" and summary["steps"] == 6


def test_time_budget_stops_the_run(tmp_path, shards):
    summary = pretrain(tiny_config(shards, max_steps=10**6, max_minutes=0.02, eval_every=10**5,
                                   log_every=50, checkpoint_every=10**5), tmp_path / "r")
    assert summary["stopped"] == "time" and 1 <= summary["steps"] < 10**6
    assert summary["elapsed_s"] >= 1.2
    assert "val_loss" in summary and (tmp_path / "r" / "model.safetensors").exists()


@pytest.mark.parametrize("name", sorted(PRETRAIN_PRESETS))
def test_every_preset_builds_and_runs_one_step(name, tmp_path, shards):
    preset = PRETRAIN_PRESETS[name]
    mconf = model_config_for(dataclasses.replace(preset, data=str(shards)), 50257 if name == "gpt2-124m" else 304)
    assert mconf.vocab_size == (50304 if name == "gpt2-124m" else 320)  # padded to a multiple of 64
    if preset.model == "tiny":  # small enough to run for real, one step
        summary = pretrain(dataclasses.replace(preset, data=str(shards), max_steps=1, max_minutes=None,
                                               batch_size=2, block_size=32, eval_tokens=64, device="cpu"),
                           tmp_path / name)
        assert summary["steps"] == 1 and math.isfinite(summary["train_loss"])
    else:  # full size on the meta device: shapes and one forward/backward, no memory
        with torch.device("meta"):
            model = GPT(mconf)
            x = torch.zeros(preset.batch_size, mconf.block_size, dtype=torch.long)
            model(x, x).loss.backward()
        assert mconf.block_size == preset.block_size and model.num_params() == 124_475_904


def test_bad_inputs_are_clear_errors(tmp_path, shards):
    with pytest.raises(LanternError, match="manifest|no such|not found|does not exist"):
        pretrain(tiny_config(tmp_path / "nothing"), tmp_path / "r0")
    with pytest.raises(LanternError, match="vocab_size=100"):
        pretrain(tiny_config(shards, vocab_size=100), tmp_path / "r1")
    with pytest.raises(LanternError, match="not enough tokens"):
        pretrain(tiny_config(shards, batch_size=4096, block_size=64, n_embd=32), tmp_path / "r2")
    with pytest.raises(LanternError, match="model='nope'"):
        pretrain(tiny_config(shards, model="nope"), tmp_path / "r3")
    with pytest.raises(LanternError, match="batch_size=0"):
        pretrain(tiny_config(shards, batch_size=0), tmp_path / "r4")
    with pytest.raises(LanternError, match="optimizer='sgd'"):
        pretrain(tiny_config(shards, optimizer="sgd"), tmp_path / "r5")
    pretrain(tiny_config(shards, max_steps=2), tmp_path / "r6")
    with pytest.raises(LanternError, match="--resume"):
        pretrain(tiny_config(shards, max_steps=2), tmp_path / "r6")
    with pytest.raises(LanternError, match="cannot resume.*lr: saved 0.01, now 0.5"):
        pretrain(tiny_config(shards, max_steps=4, lr=0.5), tmp_path / "r6", resume=True)


def test_resume_needs_a_run_with_a_checkpoint(tmp_path, shards):
    with pytest.raises(LanternError, match="nothing to resume"):
        pretrain(tiny_config(shards, max_steps=2), tmp_path / "none", resume=True)
    run = tmp_path / "early"
    pretrain(tiny_config(shards, max_steps=2), run)
    ckpt_mod.shutil.rmtree(run / "checkpoints")  # as if killed before its first checkpoint
    with pytest.raises(LanternError, match="nothing to resume: the run stopped before its first checkpoint"):
        pretrain(tiny_config(shards, max_steps=3), run, resume=True)
    summary = pretrain(tiny_config(shards, max_steps=3), run)  # started again without --resume
    assert summary["steps"] == 3 and [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3]
    from lanternlm.train.loop import saved_config
    from lanternlm.train.sft import SFTConfig
    with pytest.raises(LanternError, match="holds a run of stage 'pretrain', not 'sft'"):
        saved_config(run, "sft", SFTConfig)


def test_the_record_is_the_run_layers(tmp_path, shards):
    from lanternlm.run import Run, base_vocab_limit

    run = tmp_path / "run"
    pretrain(tiny_config(shards, max_steps=2), run, sources={"lr": "cli"})
    loaded = Run(run)
    assert loaded.stage == "pretrain" and loaded.parent is None and not loaded.chat
    assert loaded.record["sources"]["lr"] == "cli" and loaded.record["sources"]["seed"] == "default"
    assert loaded.vocab_limit == base_vocab_limit(loaded.tokenizer) < loaded.tokenizer.vocab_size


def test_cli_pretrain_records_sources_resumes_and_samples(tmp_path, shards, capsys):
    from lanternlm.cli import main
    from lanternlm.train.sample import sample

    run = tmp_path / "run"
    flags = ["-q", "pretrain", "--data", str(shards), "--out", str(run), "--model", "llama-style-tiny",
             "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--block-size", "16", "--batch-size", "4",
             "--max-minutes", "none", "--log-every", "1", "--device", "cpu"]
    assert main([*flags, "--max-steps", "3"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["sources"]["max_steps"] == "cli" and saved["sources"]["lr"] == "preset:tiny"
    assert saved["config"]["lr"] == PRETRAIN_PRESETS["tiny"].lr
    assert main([*flags, "--max-steps", "5", "--resume"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["sources"]["lr"] == "preset:tiny" and saved["config"]["max_steps"] == 5
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3, 4, 5]

    greedy = sample(run, "The king", num=2, max_tokens=6, temperature=0.0)
    assert len(greedy) == 2 and greedy[0] == greedy[1] and greedy[0].startswith("The king")
    hot = sample(run, "The king", num=3, max_tokens=8, temperature=3.0, seed=4)
    assert len(set(hot)) == 3  # one prompt, three samples: three random streams
    capsys.readouterr()
    assert main(["sample", str(run), "--prompt", "The king", "--num", "1", "--max-tokens", "6",
                 "--temperature", "0"]) == 0
    assert greedy[0] in capsys.readouterr().out
    assert main(["sample", str(tmp_path / "nothing")]) == 2  # a clear error, no traceback
