"""Issue 17 §3: random corruption of every format we read is a LanternError naming the file.

For each format (tokenizer JSON, shard manifest, chat JSONL, preference JSONL, a run's
config.json, model.json) a valid file is corrupted at random, either in its bytes
(truncated, bytes flipped) or in its structure (a value anywhere in the JSON replaced by
any other JSON value, or removed), and then read *and used* the way the commands use it.
The outcome must be a :class:`LanternError` whose message names the file, or a file that
really works: never another exception.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lanternlm.errors import LanternError
from lanternlm.tokenizer import Tokenizer
from test_data_shards import make_docs

FUZZ = settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", 60)), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=4)


def _places(doc, path=()):
    """Every (path to a value) in a JSON document, the root included."""
    yield path
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _places(value, path + (key,))
    elif isinstance(doc, list):
        for i, value in enumerate(doc[:4]):  # a few items of long lists (merges, files)
            yield from _places(value, path + (i,))


def _mutated(doc, path, action, value):
    """A deep copy of ``doc`` with the value at ``path`` replaced by ``value`` or removed."""
    doc = json.loads(json.dumps(doc))
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if action == "remove":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


@st.composite
def corruptions(draw, text):
    """A corrupted version of the JSON (or JSONL) ``text``."""
    kind = draw(st.sampled_from(["truncate", "bytes", "value", "remove"]))
    data = text.encode()
    if kind == "truncate":
        return data[:draw(st.integers(0, len(data) - 1))]
    if kind == "bytes":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        return bytes(out)
    lines = text.splitlines()
    row = draw(st.integers(0, len(lines) - 1)) if len(lines) > 1 and text.lstrip().startswith("{\"") and \
        all(line.startswith("{") for line in lines) else None
    doc = json.loads(lines[row] if row is not None else text)
    path = draw(st.sampled_from(list(_places(doc))))
    action = "remove" if kind == "remove" and path else "value"
    changed = json.dumps(_mutated(doc, path, action, draw(JSON_VALUES)), allow_nan=True)
    if row is None:
        return changed.encode()
    return "\n".join(lines[:row] + [changed] + lines[row + 1:]).encode() + b"\n"


def check(path: Path, use) -> None:
    """``use()`` works, or fails with a LanternError naming ``path``'s file."""
    try:
        use()
    except LanternError as err:
        assert path.name in str(err) or path.parent.name in str(err), str(err)


# --------------------------------------------------------------------------- the files


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(make_docs(80, seed=1), vocab_size=256 + 8 + 30)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, tokenizer):
    from lanternlm.data.shards import ShardWriter

    out = tmp_path_factory.mktemp("shards")
    with ShardWriter(out, tokenizer, shard_tokens=300, val_fraction=0.3) as writer:
        for text in make_docs(30):
            writer.add(text)
        writer.finish()
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory, shards):
    from test_train import tiny_config
    from lanternlm.train.pretrain import pretrain

    out = tmp_path_factory.mktemp("run") / "run"
    pretrain(tiny_config(shards, max_steps=1, checkpoint_every=1, eval_tokens=32), out)
    return out


def replace_file(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)  # a hard link into a checkpoint: do not write through it
    path.write_bytes(data)


# --------------------------------------------------------------------------- the properties


@FUZZ
@given(data=st.data())
def test_tokenizer_json(tmp_path, tokenizer, data):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    replace_file(path, data.draw(corruptions(path.read_text())))

    def use():
        tok = Tokenizer.load(path)
        assert tok.decode(tok.encode("Hello, world! naïve ☕\n")) == "Hello, world! naïve ☕\n"

    check(path, use)


@FUZZ
@given(data=st.data())
def test_shard_manifest(tmp_path, shards, data):
    from lanternlm.data.loader import eval_batches
    from lanternlm.data.shards import open_shards

    folder = Path(shutil.copytree(shards, tmp_path / "shards", dirs_exist_ok=True))
    manifest = folder / "manifest.json"
    replace_file(manifest, data.draw(corruptions((shards / "manifest.json").read_text())))

    def use():
        opened = open_shards(folder)
        tok = opened.tokenizer()
        for name in ("train", "val"):
            assert sum(len(s) for s in opened.split(name)) == opened.tokens(name)
            opened.bytes(name), opened.documents(name)
        list(eval_batches(opened.split("val"), 2, 8, 64, vocab_size=tok.vocab_size))

    check(manifest, use)


CHATS = "\n".join(json.dumps({"messages": m}) for m in [
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", "thinking": "greet"}],
    [{"role": "system", "content": "Reasoning: low"}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}],
]) + "\n"

PAIRS = "\n".join(json.dumps(p) for p in [
    {"prompt": "Is water wet?", "chosen": "Yes.", "rejected": "No."},
    {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}],
     "rejected": [{"role": "assistant", "content": "go away"}], "reasoning": "low"},
    {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
     "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]},
]) + "\n"


@FUZZ
@given(data=st.data())
def test_chat_jsonl(tmp_path, tokenizer, data):
    from lanternlm.chat import load_jsonl, render

    path = tmp_path / "chats.jsonl"
    replace_file(path, data.draw(corruptions(CHATS)))
    check(path, lambda: [render(conversation, tokenizer) for conversation in load_jsonl(path)])


@FUZZ
@given(data=st.data())
def test_preference_jsonl(tmp_path, tokenizer, data):
    from lanternlm.data.preference import load_pairs, render_pair

    path = tmp_path / "pairs.jsonl"
    replace_file(path, data.draw(corruptions(PAIRS)))
    check(path, lambda: [render_pair(pair, tokenizer) for pair in load_pairs(path)])


@FUZZ
@given(data=st.data())
def test_run_config_json(tmp_path, run, data):
    from lanternlm.run import Run
    from lanternlm.train import loop
    from lanternlm.train.pretrain import PretrainConfig, check_config

    copied = Path(shutil.copytree(run, tmp_path / "run", dirs_exist_ok=True))
    record = copied / "config.json"
    replace_file(record, data.draw(corruptions((run / "config.json").read_text())))

    def use():
        opened = Run(copied)
        opened.stage, opened.chat, opened.lineage(), opened.pretraining()
        config, _ = loop.saved_config(copied, "pretrain", PretrainConfig)  # with the loop's checks
        try:
            check_config(config)
        except LanternError as err:  # the stage's own checks name the field, as for a flag
            assert str(err).startswith("pretrain config: "), str(err)

    check(record, use)


@FUZZ
@given(data=st.data())
def test_model_json(tmp_path, run, data):
    from lanternlm.run import Run

    copied = Path(shutil.copytree(run, tmp_path / "run", dirs_exist_ok=True))
    meta = copied / "model.json"
    replace_file(meta, data.draw(corruptions((run / "model.json").read_text())))

    def use():
        model = Run(copied).model("cpu")
        logits = model(torch.zeros(1, min(8, model.config.block_size), dtype=torch.long)).logits
        assert torch.isfinite(logits).all()  # no silent NaN from a corrupt setting

    check(meta, use)
