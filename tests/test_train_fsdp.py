"""`--parallel fsdp` (FSDP2, gloo, CPU): two processes, each holding half of every weight
and optimizer state, follow the one-process loss curve with the same global batch, in
pretraining, fine-tuning, DPO and RL; sharded checkpoints (torch.distributed.checkpoint)
resume on another number of processes (2 -> 1 -> 2) and continue the same curve; the
published model.safetensors is the full model."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from lanternlm.checkpoint import load_model
from lanternlm.train.metrics import read_metrics
from sft_helpers import make_base, train_tokenizer
from test_train import make_shards
from test_train_ddp import ENV, FLAGS, SFT_FLAGS, TORCHRUN, assert_same_curves


def lantern(flags, out, processes=1):
    launcher = TORCHRUN if processes == 2 else [sys.executable]
    extra = ["--parallel", "fsdp"] if processes == 2 else []
    subprocess.run([*launcher, "-m", "lanternlm.cli", *flags, *extra, "--out", str(out)], env=ENV, check=True,
                   timeout=300)
    return read_metrics(out / "metrics.jsonl")


def one_and_fsdp(flags, one, two, batch):
    """One process with ``--batch-size batch``, two FSDP processes with half of it."""
    return (lantern([*flags, "--batch-size", str(batch)], one),
            lantern([*flags, "--batch-size", str(batch // 2)], two, processes=2))


def assert_same_weights(one, two, rtol=1e-4, atol=1e-5):
    a, b = load_model(one).state_dict(), load_model(two).state_dict()
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=rtol, atol=atol, msg=name)


@pytest.mark.slow
def test_fsdp_two_processes_match_one(tmp_path):
    data = make_shards(tmp_path / "shards")
    flags = [*FLAGS, "--data", str(data), "--checkpoint-every", "4"]
    a, b = one_and_fsdp(flags, tmp_path / "one", tmp_path / "two", batch=4)
    assert_same_curves(a, b, steps=8)
    assert a[0]["train_loss"] - a[-1]["train_loss"] > 0.5  # it did learn
    ckpt = tmp_path / "two" / "checkpoints" / "step_0000008"
    assert sorted(p.name for p in (ckpt / "sharded").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert torch.load(ckpt / "optimizer.pt", weights_only=True)["optimizers"] == "sharded"
    assert not (tmp_path / "one" / "checkpoints" / "step_0000008" / "sharded").exists()  # one process: as before
    assert_same_weights(tmp_path / "one", tmp_path / "two")  # the published weights are whole


@pytest.mark.slow
@pytest.mark.parametrize("optimizer, rtol", [("adamw", 1e-4), ("muon", 5e-3)])
def test_fsdp_resumes_on_other_numbers_of_processes(tmp_path, optimizer, rtol):
    """2 processes (sharded checkpoint) -> 1 (reads the shards, writes the one-process
    format) -> 2 (shards the one-process checkpoint): the curve of one uninterrupted
    process, the optimizers' states carried across. The learning rate is constant after
    the warmup, so that ``--max-steps`` can mark where each part stops. (Muon's
    Newton-Schulz iteration runs in bfloat16 and turns the float32 rounding of a
    different gradient reduction into ~1e-3 differences, with DDP as with FSDP.)"""
    data = make_shards(tmp_path / "shards")
    flags = [*FLAGS, "--data", str(data), "--optimizer", optimizer, "--min-lr-ratio", "1", "--eval-every", "3",
             "--checkpoint-every", "100"]
    steps = lambda n: ["--max-steps", str(n)]  # noqa: E731
    ref = lantern([*flags, *steps(12), "--batch-size", "4"], tmp_path / "ref")
    run = tmp_path / "run"
    lantern([*flags, *steps(4), "--batch-size", "2"], run, processes=2)
    assert (run / "checkpoints" / "step_0000004" / "sharded").is_dir()
    lantern([*flags, *steps(8), "--batch-size", "4", "--resume"], run)
    assert not (run / "checkpoints" / "step_0000008" / "sharded").exists()
    got = lantern([*flags, *steps(12), "--batch-size", "2", "--resume"], run, processes=2)
    assert [r["step"] for r in got] == list(range(1, 13))
    for key in ("train_loss", "grad_norm", "val_loss"):  # (each part also evaluates at its last step)
        steps_ = [r["step"] for r in ref if key in r]
        np.testing.assert_allclose([r[key] for r in got if r["step"] in steps_], [r[key] for r in ref if key in r],
                                   rtol=rtol, err_msg=key)
    if optimizer == "adamw":  # (with Muon, AdamW's normalised steps of the embeddings amplify the noise)
        assert_same_weights(tmp_path / "ref", run)
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["batch_size"] == 2 and config["parallel"] == "fsdp"


@pytest.mark.slow
def test_fsdp_resume_keeps_the_global_batch(tmp_path):
    """The per-process batch may change with the number of processes; the global batch not."""
    data = make_shards(tmp_path / "shards")
    flags = [*FLAGS, "--data", str(data), "--max-steps", "2", "--checkpoint-every", "2"]
    lantern([*flags, "--batch-size", "2"], tmp_path / "run", processes=2)
    proc = subprocess.run([sys.executable, "-m", "lanternlm.cli", *flags, "--max-steps", "4", "--batch-size", "2",
                           "--resume", "--out", str(tmp_path / "run")], env=ENV, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "global_batch is 4, now 2" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_fsdp_sft_matches_one(tmp_path):
    """Padded chat rows; validation shares of different sizes (run on the gathered weights)."""
    base = make_base(train_tokenizer(), tmp_path)
    a, b = one_and_fsdp([*SFT_FLAGS, "--base", str(base)], tmp_path / "one", tmp_path / "two", batch=4)
    assert_same_curves(a, b, steps=4)
    # AdamW's normalised step turns float32 summation-order differences in the near-zero
    # gradients of rarely predicted vocabulary rows into weight differences of ~1e-5
    assert_same_weights(tmp_path / "one", tmp_path / "two", atol=5e-5)


@pytest.mark.slow
def test_fsdp_dpo_reward_and_rl_match_one(tmp_path):
    """DPO (pairs; the reference table before sharding), a reward model and RL (each
    process samples its answers from the gathered weights, of lengths that differ between
    the processes)."""
    from lanternlm.train.sft import sft
    from sft_helpers import small_sft
    from test_preference import some_pairs

    chat = tmp_path / "chat"
    sft(small_sft(make_base(train_tokenizer(), tmp_path), tasks=["letters"], max_steps=2), chat)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in some_pairs(18)))
    common = ["--base", str(chat), "--block-size", "256", "--max-steps", "4", "--max-minutes", "none", "--lr", "1e-3",
              "--warmup-steps", "1", "--log-every", "1", "--checkpoint-every", "4", "--seed", "0", "--device", "cpu"]
    a, b = one_and_fsdp(["-q", "dpo", *common, "--pairs", str(pairs), "--eval-every", "2"],
                        tmp_path / "dpo1", tmp_path / "dpo2", batch=4)
    assert_same_curves(a, b, steps=4)
    for key in ("margins", "accuracies", "logps_chosen"):
        np.testing.assert_allclose([r[key] for r in b], [r[key] for r in a], rtol=1e-4, atol=1e-6, err_msg=key)

    # the reward model under Muon: its head is a (1, width) matrix, fewer rows than processes
    a, b = one_and_fsdp(["-q", "reward", *common, "--pairs", str(pairs), "--eval-every", "2", "--optimizer", "muon"],
                        tmp_path / "rm1", tmp_path / "rm2", batch=4)
    for key in ("train_loss", "val_loss", "accuracies"):  # (Muon's bfloat16 iteration: see above)
        np.testing.assert_allclose([r[key] for r in b if key in r], [r[key] for r in a if key in r], rtol=5e-3,
                                   err_msg=key)

    rl = ["-q", "rl", *common, "--reward", "tasks:letters", "--group-size", "4", "--max-tokens", "10",
          "--eval-questions", "2", "--eval-samples", "2", "--eval-every", "2", "--updates-per-batch", "2"]
    a, b = one_and_fsdp(rl, tmp_path / "rl1", tmp_path / "rl2", batch=4)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    for key in ("train_loss", "grad_norm", "reward_mean", "reward_std", "entropy", "length_mean",
                "logprob_diff_max", "val_pass1", "val_reward"):
        np.testing.assert_allclose([r[key] for r in b if key in r], [r[key] for r in a if key in r],
                                   rtol=1e-4, atol=1e-6, err_msg=key)
    assert max(r["logprob_diff_max"] for r in b) < 1e-4  # sampled from the live weights, not a stale copy
    assert_same_weights(tmp_path / "rl1", tmp_path / "rl2")


def _tiny_model_and_optimizers():
    import dataclasses

    from lanternlm.model import GPT, MODEL_PRESETS
    from lanternlm.train.optim import build_optimizers

    torch.manual_seed(0)
    conf = dataclasses.replace(MODEL_PRESETS["llama-style-tiny"], n_layer=1, n_head=2, n_kv_head=1, n_embd=16,
                               block_size=8, vocab_size=64)
    model = GPT(conf)
    opts = build_optimizers(model, name="muon", lr=1e-3, muon_lr=0.02, weight_decay=0.1, betas=(0.9, 0.95),
                            fused=False)
    x = torch.randint(0, 64, (2, 8))
    (-model(x, x, reduction="sum").logprobs).backward()
    opts.step()
    return model, opts


def test_sharded_state_round_trips_in_one_process(tmp_path):
    """What one process reads of a sharded checkpoint (here written by one, plain model)."""
    from lanternlm.train import distributed as D

    model, opts = _tiny_model_and_optimizers()
    D.save_sharded(tmp_path / "shards", model, opts.optimizers, D.DistInfo(0, 0, 1, torch.device("cpu")))
    fresh, fresh_opts = _tiny_model_and_optimizers()
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    D.load_sharded(tmp_path / "shards", fresh, fresh_opts.optimizers)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert a.equal(b), name
    for a, b in zip(opts.state_dict(), fresh_opts.state_dict()):
        for key, state in a["state"].items():
            for field, value in state.items():
                assert torch.as_tensor(value).equal(torch.as_tensor(b["state"][key][field])), field


def test_a_sharded_checkpoint_that_cannot_be_written_is_a_clear_error(tmp_path, monkeypatch):
    import errno

    from torch.distributed.checkpoint.filesystem import FileSystemWriter

    from lanternlm.errors import LanternError
    from lanternlm.train import distributed as D

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FileSystemWriter, "write_data", full)
    model, opts = _tiny_model_and_optimizers()
    with pytest.raises(LanternError, match="cannot write the sharded checkpoint .*No space left on device.*--resume"):
        D.save_sharded(tmp_path / "shards", model, opts.optimizers, D.DistInfo(0, 0, 1, torch.device("cpu")))
    assert not (tmp_path / "shards").exists()
