"""Issue 17 §1: data loss and silent wrong results, each reproduced first, then fixed.

Tiny pieces only (a tokenizer and shards made inside the test, a 2-layer model, a few
steps); each test names the case of the issue it covers.
"""

import json

import pytest

from lanternlm.data.prepare import PrepareConfig, prepare
from lanternlm.data.shards import open_shards
from lanternlm.data.sources import ReadConfig
from lanternlm.errors import LanternError
from lanternlm.tokenizer import Tokenizer
from test_data_shards import make_docs
from test_train import make_shards, tiny_config


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("shards"))


def strict_lines(path):
    """The JSON lines of ``path``, refusing NaN and Infinity (which are not JSON)."""
    def refuse(constant):
        raise ValueError(f"{path}: {constant} is not JSON")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(make_docs(200, seed=1), vocab_size=256 + 8 + 60)


# --------------------------------------------------------------------------- 1. prepare keeps old shards


def test_1_a_failed_prepare_leaves_the_existing_shards(tokenizer, tmp_path):
    good = tmp_path / "a.txt"
    good.write_text("\n\n".join(make_docs(40)) + "\n")
    out = tmp_path / "out"
    settings = dict(config=PrepareConfig(val_fraction=0.25), read=ReadConfig(text_split="paragraph"))
    before = prepare([str(good)], out, tokenizer, **settings)
    files = {p.name: p.read_bytes() for p in out.iterdir()}

    with pytest.raises(LanternError, match="no such file"):          # a typo in a path
        prepare([str(good), str(tmp_path / "typo.txt")], out, tokenizer, **settings)
    bad = tmp_path / "b.jsonl"
    bad.write_text(json.dumps({"text": "fine " * 20}) + "\n{not json\n")
    with pytest.raises(LanternError, match=r"b\.jsonl:2: malformed JSON"):  # one bad JSONL line
        prepare([str(good), str(bad)], out, tokenizer, **settings)

    assert {p.name: p.read_bytes() for p in out.iterdir()} == files   # nothing lost, no temp left behind
    assert open_shards(out, verify=True).manifest == before
    again = prepare([str(good)], out, tokenizer, **settings)           # a good run still replaces them
    assert again["splits"] == before["splits"] and not list(out.glob(".partial-*"))


# --------------------------------------------------------------------------- 2. the download cache


def test_2_downloads_are_cached_by_the_whole_url(tmp_path, caplog):
    import logging

    from lanternlm.data.download import download
    from test_data_download import Server

    server = Server({"a/input.txt": b"first corpus\n", "b/input.txt": b"second corpus\n"})
    try:
        caplog.set_level(logging.WARNING, logger="lanternlm")
        first = download(f"{server.url}/a/input.txt", cache=tmp_path)
        second = download(f"{server.url}/b/input.txt", cache=tmp_path)
    finally:
        server.close()
    assert first.read_bytes() == b"first corpus\n" and second.read_bytes() == b"second corpus\n"
    assert first != second and first.name.endswith("-input.txt")
    assert caplog.text.count("trusting on first use") == 2
    assert second.with_name(second.name + ".sha256").read_text().split()[0] == \
        __import__("hashlib").sha256(b"second corpus\n").hexdigest()


# --------------------------------------------------------------------------- 3. the split pattern


@pytest.mark.parametrize("pattern, message", [
    (r"\w+", r"does not cover all text: 'Hello, world!' would be encoded as 'Helloworld'"),
    ("", "matches empty pieces"),
    ("([", "invalid regex"),
])
def test_3_a_pattern_that_loses_text_is_refused_at_train_and_load(tmp_path, pattern, message):
    with pytest.raises(LanternError, match=message):
        Tokenizer.train(["Hello, world!"] * 3, vocab_size=256 + 8 + 2, pattern=pattern)
    good = Tokenizer.train(["Hello, world!"] * 3, vocab_size=256 + 8 + 2)
    saved = good.to_dict() | {"pattern": pattern}
    (tmp_path / "tok.json").write_text(json.dumps(saved))          # edited by hand after training
    with pytest.raises(LanternError, match=rf"tok\.json: .*{message}"):
        Tokenizer.load(tmp_path / "tok.json")


# --------------------------------------------------------------------------- 5. divergence


@pytest.mark.parametrize("field, value, rule", [
    ("lr", float("nan"), "must be a finite number"), ("lr", float("inf"), "must be a finite number"),
    ("beta2", 1.5, r"must be in \[0, 1\)"), ("beta1", -0.1, r"must be in \[0, 1\)"),
    ("weight_decay", float("nan"), "must be a finite number"),
    ("grad_clip", float("inf"), "must be a finite number"),
    ("max_minutes", float("nan"), "must be a finite number"),
])
def test_5_impossible_optimizer_settings_are_refused(shards, tmp_path, field, value, rule):
    from lanternlm.train.pretrain import pretrain

    with pytest.raises(LanternError, match=rf"{field}=.* is invalid: {rule}"):
        pretrain(tiny_config(shards, **{field: value}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_5_a_diverging_run_stops_and_keeps_its_last_finite_checkpoint(shards, tmp_path):
    import torch

    from lanternlm.checkpoint import load_model
    from lanternlm.train.checkpoint import latest_checkpoint
    from lanternlm.train.pretrain import pretrain

    run = tmp_path / "run"
    with pytest.raises(LanternError, match=r"diverged at step \d+ \(.*nan.*checkpoint, step_\d+, is "
                                           r"finite and kept.*lower --lr \(now 1e\+06\)"):
        pretrain(tiny_config(shards, lr=1e6, warmup_steps=0, max_steps=40, checkpoint_every=1,
                             grad_clip=0.0), run)
    lines = strict_lines(run / "metrics.jsonl")                       # valid JSON, no NaN logged
    kept = latest_checkpoint(run)
    assert int(kept.name.split("_")[1]) == lines[-1]["step"]          # the last logged step was checkpointed
    model = load_model(kept)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert load_model(run).state_dict().keys() == model.state_dict().keys()


# --------------------------------------------------------------------------- 4. Ctrl-C and SIGTERM


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_4_a_signal_writes_a_checkpoint_and_the_resumed_run_is_bit_identical(shards, tmp_path, monkeypatch, signum):
    import os
    import signal

    from lanternlm.train import loop
    from lanternlm.train.checkpoint import latest_checkpoint
    from lanternlm.train.metrics import read_metrics
    from lanternlm.train.pretrain import pretrain

    config = tiny_config(shards, max_steps=10, checkpoint_every=500, eval_every=500)
    pretrain(config, tmp_path / "ref")

    real_lr_at = loop.lr_at

    def lr_at(schedule, step, **kw):  # the signal arrives in the middle of step 4
        if step == 3:
            os.kill(os.getpid(), getattr(signal, signum))
        return real_lr_at(schedule, step, **kw)

    monkeypatch.setattr(loop, "lr_at", lr_at)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt, match=rf"interrupted by {signum} at step 4; .*--resume"):
        pretrain(config, run)
    assert latest_checkpoint(run).name == "step_0000004"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    monkeypatch.setattr(loop, "lr_at", real_lr_at)
    pretrain(config, run, resume=True)
    ref, got = read_metrics(tmp_path / "ref" / "metrics.jsonl"), read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in got] == list(range(1, 11))
    for key in ("train_loss", "lr", "grad_norm"):
        assert [r[key] for r in got] == [r[key] for r in ref], key


def test_4_resume_without_a_checkpoint_says_there_is_nothing_to_resume(shards, tmp_path):
    from lanternlm.train.pretrain import pretrain

    run = tmp_path / "run"
    pretrain(tiny_config(shards, max_steps=2), run)
    __import__("shutil").rmtree(run / "checkpoints")                 # as if killed before its first
    metrics = (run / "metrics.jsonl").read_text()
    with pytest.raises(LanternError, match="nothing to resume: the run stopped before its first checkpoint"):
        pretrain(tiny_config(shards, max_steps=3), run, resume=True)
    assert (run / "metrics.jsonl").read_text() == metrics             # nothing truncated
    assert pretrain(tiny_config(shards, max_steps=3), run)["steps"] == 3  # started again on purpose


# --------------------------------------------------------------------------- 7. a full disk


@pytest.mark.parametrize("failing", ["torch.save", "safetensors", "ENOSPC"])
def test_7_a_checkpoint_that_cannot_be_written_is_a_clear_error_and_leaves_the_previous(
        shards, tmp_path, monkeypatch, failing):
    import errno

    import safetensors.torch
    import torch
    from safetensors import SafetensorError

    from lanternlm.run import Run
    from lanternlm.train.checkpoint import latest_checkpoint
    from lanternlm.train.pretrain import pretrain

    run = tmp_path / "run"
    config = tiny_config(shards, max_steps=6, checkpoint_every=2, eval_every=500)
    module, attr = (safetensors.torch, "save_file") if failing == "safetensors" else (torch, "save")
    real, calls = getattr(module, attr), []
    error = {"torch.save": RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed "
                                        "writing file data/0: file write failed"),
             "safetensors": SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })"),
             "ENOSPC": OSError(errno.ENOSPC, "No space left on device")}[failing]

    def full_disk(*args, **kwargs):  # the second checkpoint finds the disk full
        calls.append(1)
        if len(calls) == 2:
            real(*args, **kwargs)  # half written...
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(module, attr, full_disk)
    with pytest.raises(LanternError, match=r"step_0000004: cannot write the checkpoint .*bytes free.*the "
                                           r"previous checkpoint, step_0000002, is intact.*--resume"):
        pretrain(config, run)
    assert latest_checkpoint(run).name == "step_0000002"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_0000002"]  # no temp left
    Run(run).model("cpu")                                               # the run still loads
    monkeypatch.setattr(module, attr, real)
    assert pretrain(config, run, resume=True)["steps"] == 6


# --------------------------------------------------------------------------- 6. shards are verified


def corrupt(shard, position, value):
    """Overwrite the uint16 id at ``position`` of ``shard`` (the file keeps its size)."""
    import numpy as np

    ids = np.fromfile(shard, dtype="<u2")
    ids[position] = value
    ids.tofile(shard)


def test_6_ids_outside_the_vocabulary_are_found_on_open_and_by_the_loader(tmp_path):
    import numpy as np

    from lanternlm.data.loader import BatchLoader

    data = make_shards(tmp_path / "shards")
    vocab = open_shards(data).manifest["tokenizer"]["vocab_size"]
    corrupt(data / "train_00000.bin", 5, 60000)
    with pytest.raises(LanternError, match=r"train_00000\.bin: token id 60000 at position 5 is outside .*lantern data check"):
        open_shards(data)
    ids = np.zeros(300_000, dtype="<u2")              # past the ends open_shards looks at: the loader's check
    ids[150_000] = vocab
    with pytest.raises(LanternError, match=rf"token id {vocab} at position 150000 is outside"):
        loader = BatchLoader([ids], batch_size=64, block_size=63, vocab_size=vocab)
        for _ in range(loader.batches_per_epoch + 1):
            next(loader)


def test_6_verify_data_and_data_check_find_a_corrupt_shard_of_the_right_size(tmp_path, capsys):
    from lanternlm.cli import main
    from lanternlm.train.pretrain import pretrain

    data = make_shards(tmp_path / "shards")
    assert main(["data", "check", str(data)]) == 0
    assert "sha256 and ids inside the vocabulary" in capsys.readouterr().out
    corrupt(data / "train_00000.bin", 7, 3)                     # a valid id, garbage all the same
    open_shards(data)                                            # the cheap check cannot see it
    with pytest.raises(LanternError, match=r"train_00000\.bin: sha256 .* does not match"):
        pretrain(tiny_config(data, verify_data=True), tmp_path / "run")
    assert main(["data", "check", str(data)]) == 2
    assert "does not match the manifest" in capsys.readouterr().err


# --------------------------------------------------------------------------- 10. files inside a run


@pytest.fixture(scope="module")
def run(shards, tmp_path_factory):
    from lanternlm.train.pretrain import pretrain

    directory = tmp_path_factory.mktemp("run") / "run"
    pretrain(tiny_config(shards, max_steps=2, checkpoint_every=1), directory)
    return directory


def copy_run(run, tmp_path):
    import shutil

    return shutil.copytree(run, tmp_path / "run")


@pytest.mark.parametrize("pointer", ["../../other/checkpoints/step_0000002", "/tmp/step_0000002", "..", "model.json"])
def test_10_a_latest_pointer_that_leaves_the_run_is_refused(run, shards, tmp_path, pointer):
    from lanternlm.train.pretrain import pretrain

    copied = copy_run(run, tmp_path)
    (copied / "checkpoints" / "latest").write_text(pointer + "\n")
    with pytest.raises(LanternError, match=r"checkpoints/latest: names .*(not a file inside|not a checkpoint)"):
        pretrain(tiny_config(shards, max_steps=3, checkpoint_every=1), copied, resume=True)


@pytest.mark.parametrize("name", ["../train_00000.bin", "/etc/hostname", ""])
def test_10_a_manifest_naming_files_outside_its_folder_is_refused(tmp_path, name):
    data = make_shards(tmp_path / "shards")
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["file"] = name
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LanternError, match=r"manifest\.json: names .* not a file inside"):
        open_shards(data)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["file"] = "train_00000.bin"
    manifest["tokenizer"]["file"] = "../tokenizer.json"
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LanternError, match="not a file inside"):
        open_shards(data).tokenizer()


def test_10_the_weights_are_bound_to_their_tokenizer(run, tmp_path, capsys):
    from lanternlm.cli import main
    from lanternlm.run import Run

    copied = copy_run(run, tmp_path)
    assert json.loads((copied / "model.json").read_text())["tokenizer"]["fingerprint"] == Run(copied).tokenizer.fingerprint()
    smaller = Tokenizer.train(make_docs(50), vocab_size=256 + 8 + 5)
    (copied / "tokenizer.json").unlink()                        # a hard link to the checkpoint's
    smaller.save(copied / "tokenizer.json")
    with pytest.raises(LanternError, match="not the tokenizer these weights were trained with"):
        Run(copied).model("cpu")
    assert main(["generate", str(copied), "The king", "--max-tokens", "3", "--device", "cpu"]) == 2
    assert "not the tokenizer these weights were trained with" in capsys.readouterr().err


@pytest.mark.parametrize("field, value", [("block_size", 10 ** 7), ("vocab_size", 10 ** 12)])
def test_10_sizes_in_model_json_are_bounded_before_allocating(run, tmp_path, field, value):
    from lanternlm.run import Run

    copied = copy_run(run, tmp_path)
    meta = json.loads((copied / "model.json").read_text())
    meta["config"][field] = value
    (copied / "model.json").unlink()
    (copied / "model.json").write_text(json.dumps(meta))
    with pytest.raises(LanternError, match=rf"model\.json: GPTConfig\.{field}={value}: must be at most"):
        Run(copied).model("cpu")


def test_10_a_model_too_large_for_the_machine_is_refused_before_it_is_built(shards, tmp_path):
    from lanternlm.train.pretrain import pretrain

    with pytest.raises(LanternError, match=r"parameters: .* for its weights, gradients and optimizer states, more than"):
        pretrain(tiny_config(shards, n_layer=4096, n_embd=8192, n_head=64, n_kv_head=8), tmp_path / "run")


# --------------------------------------------------------------------------- 9. --FIELD none


@pytest.mark.parametrize("command, field, preset_value", [
    (["pretrain", "--out", "r", "--data", "d", "--max-minutes", "none"], "max_minutes", 5.0),
    (["sft", "--out", "r", "--base", "b", "--block-size", "none"], "block_size", 320),
])
def test_9_none_on_the_command_line_means_none_even_over_a_preset(command, field, preset_value):
    from lanternlm.cli import build_parser
    from lanternlm.train.loop import resolve
    from lanternlm.train.pretrain import PRETRAIN_PRESETS, PretrainConfig
    from lanternlm.train.sft import SFT_PRESETS, SFTConfig

    cls, presets = (PretrainConfig, PRETRAIN_PRESETS) if command[0] == "pretrain" else (SFTConfig, SFT_PRESETS)
    assert getattr(presets["tiny"], field) == preset_value
    config, sources = resolve(command[0], cls, presets, build_parser().parse_args(command))
    assert getattr(config, field) is None and sources[field] == "cli"
    config, sources = resolve(command[0], cls, presets, build_parser().parse_args(command[:-2]))
    assert getattr(config, field) == preset_value and sources[field] == "preset:tiny"


def test_9_resuming_a_time_budgeted_run_says_it_is_not_bit_identical(shards, tmp_path, caplog):
    import logging

    from lanternlm.train.pretrain import pretrain

    pretrain(tiny_config(shards, max_steps=2, max_minutes=60.0), tmp_path / "run")
    caplog.set_level(logging.WARNING, logger="lanternlm")
    pretrain(tiny_config(shards, max_steps=3, max_minutes=60.0), tmp_path / "run", resume=True)
    assert "does not resume bit-identically" in caplog.text


# --------------------------------------------------------------------------- 8. runs that move


def test_8_a_moved_tree_of_runs_resumes_and_finds_its_shards(tmp_path, monkeypatch, capsys):
    import shutil

    from lanternlm.cli import main
    from lanternlm.run import Run
    from lanternlm.train.pretrain import pretrain

    monkeypatch.chdir(tmp_path)
    make_shards(tmp_path / "project" / "shards")
    pretrain(tiny_config("project/shards", max_steps=2), "project/runs/base")   # paths relative to the cwd
    record = json.loads((tmp_path / "project/runs/base/config.json").read_text())
    assert record["config"]["data"] == "../../shards" and record["path_fields"] == ["data"]

    shutil.move(tmp_path / "project", tmp_path / "elsewhere")                 # move the whole tree
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    moved = tmp_path / "elsewhere" / "runs" / "base"
    assert Run(moved).config["data"] == str(tmp_path / "elsewhere" / "shards")
    assert main(["-q", "pretrain", "--out", str(moved), "--resume", "--max-steps", "4"]) == 0
    assert json.loads((moved / "config.json").read_text())["config"]["data"] == "../../shards"


def test_8_list_paths_and_old_records_read_back(tmp_path):
    from lanternlm.run import read_record, write_record
    from lanternlm.train.sft import SFTConfig

    write_record(tmp_path / "sft", "sft", SFTConfig(base=str(tmp_path / "base"), data=[str(tmp_path / "a.jsonl")]),
                 parent=tmp_path / "base")
    raw = json.loads((tmp_path / "sft" / "config.json").read_text())
    assert (raw["config"]["base"], raw["config"]["data"], raw["parent"]) == ("../base", ["../a.jsonl"], "../base")
    back = read_record(tmp_path / "sft")
    assert back["config"]["data"] == [str(tmp_path / "a.jsonl")] and back["parent"] == str(tmp_path / "base")
    raw.pop("path_fields")                                                    # written before: paths as given
    raw["config"]["data"] = ["chats.jsonl"]
    (tmp_path / "sft" / "config.json").write_text(json.dumps(raw))
    assert read_record(tmp_path / "sft")["config"]["data"] == ["chats.jsonl"]
