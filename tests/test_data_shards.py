"""Shards: round trip, split by document, dtype choice, manifest checks, and bad-shard errors."""

import hashlib
import json

import numpy as np
import pytest

from lanternlm.cli import main
from lanternlm.data.clean import CleanConfig
from lanternlm.data.prepare import PrepareConfig, prepare
from lanternlm.data.shards import ShardWriter, is_validation, open_shards
from lanternlm.data.sources import ReadConfig
from lanternlm.errors import LanternError
from lanternlm.tokenizer import Tokenizer

WORDS = ("river stone light garden window morning letter silver candle harbour orchard meadow "
         "lantern bridge valley thunder whisper marble feather copper").split()


def make_docs(n, seed=0):
    rng = np.random.default_rng(seed)
    return [f"Document {i}: " + " ".join(rng.choice(WORDS, size=int(rng.integers(5, 40)))) + "."
            for i in range(n)]


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(make_docs(200, seed=1), vocab_size=256 + 8 + 60)


def read_documents(shards, split, eot):
    """Decode a split back into document texts: split the concatenated ids at every eot."""
    ids = np.concatenate([np.asarray(m) for m in shards.split(split)]) if shards.split(split) else np.zeros(0)
    tok = shards.tokenizer()
    starts = np.flatnonzero(ids == eot).tolist() + [len(ids)]
    assert not starts[:-1] or starts[0] == 0
    return [tok.decode(ids[a + 1:b].tolist()) for a, b in zip(starts[:-1], starts[1:])]


def test_round_trip_split_by_document_and_manifest(tokenizer, tmp_path):
    docs = make_docs(300)
    with ShardWriter(tmp_path, tokenizer, shard_tokens=500, val_fraction=0.1, batch_bytes=2000) as writer:
        for text in docs:
            writer.add(text)
        manifest = writer.finish(sources=[{"spec": "test"}], report={"steps": []})
    shards = open_shards(tmp_path, expect_tokenizer=tokenizer, verify=True)
    assert shards.manifest == manifest == json.loads((tmp_path / "manifest.json").read_text())
    eot = tokenizer.eot_id
    train, val = read_documents(shards, "train", eot), read_documents(shards, "val", eot)
    assert train == [d for d in docs if not is_validation(d, 0.1)]     # order kept, nothing lost
    assert val == [d for d in docs if is_validation(d, 0.1)]
    assert 10 < len(val) < 50 and not set(train) & set(val)
    assert manifest["dtype"] == "uint16" and shards.dtype == np.dtype("<u2")
    assert manifest["tokenizer"] == {"file": "tokenizer.json", "fingerprint": tokenizer.fingerprint(),
                                     "vocab_size": tokenizer.vocab_size, "eot_id": eot}
    train_info = manifest["splits"]["train"]
    assert len(train_info["shards"]) > 3 and all(s["tokens"] == 500 for s in train_info["shards"][:-1])
    assert train_info["tokens"] == sum(len(m) for m in shards.split("train")) == shards.tokens("train")
    assert train_info["documents"] == len(train) == sum(s["documents"] for s in train_info["shards"])
    assert shards.bytes("train") == sum(len(d.encode()) for d in train)
    for shard in train_info["shards"]:
        data = (tmp_path / shard["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        assert np.count_nonzero(np.frombuffer(data, "<u2") == eot) == shard["documents"]
    assert shards.tokenizer() == tokenizer


def test_large_vocab_uses_uint32(tmp_path):
    merges = [(a, b) for a in range(256) for b in range(256)][:65280]     # every byte pair: vocab 65,544
    big = Tokenizer(merges)
    assert big.eot_id > 65535
    with ShardWriter(tmp_path, big, val_fraction=0.0) as writer:
        writer.add("hello world")
        writer.add("second")
        manifest = writer.finish()
    shards = open_shards(tmp_path)
    assert manifest["dtype"] == "uint32" and (tmp_path / "train_00000.bin").stat().st_size % 4 == 0
    ids = np.asarray(shards.split("train")[0])
    assert ids[0] == big.eot_id and read_documents(shards, "train", big.eot_id) == ["hello world", "second"]


def write_small(tokenizer, directory):
    with ShardWriter(directory, tokenizer, shard_tokens=200, val_fraction=0.2) as writer:
        for text in make_docs(60):
            writer.add(text)
        return writer.finish()


def test_bad_shards_are_clear_errors(tokenizer, tmp_path):
    with pytest.raises(LanternError, match="no manifest.json"):
        open_shards(tmp_path)
    write_small(tokenizer, tmp_path)
    other = Tokenizer.train(make_docs(50, seed=9), vocab_size=256 + 8 + 20)
    with pytest.raises(LanternError, match="tokenizer mismatch"):
        open_shards(tmp_path, expect_tokenizer=other)
    with pytest.raises(LanternError, match="no split 'test'"):
        open_shards(tmp_path).split("test")

    shard = tmp_path / "train_00001.bin"
    data = shard.read_bytes()
    shard.write_bytes(data[:-3])                                          # truncated
    with pytest.raises(LanternError, match=r"train_00001\.bin: \d+ bytes, but the manifest says"):
        open_shards(tmp_path)
    shard.write_bytes(data[:-2] + b"\x00\x00" if data[-2:] != b"\x00\x00" else data[:-2] + b"\x01\x00")
    open_shards(tmp_path)                                                 # same size: only a full check notices
    with pytest.raises(LanternError, match="sha256 .* does not match"):
        open_shards(tmp_path, verify=True)
    shard.unlink()
    with pytest.raises(LanternError, match=r"train_00001\.bin: shard listed in .* is missing"):
        open_shards(tmp_path)

    write_small(tokenizer, tmp_path)
    other.save(tmp_path / "tokenizer.json")                               # replaced after writing
    with pytest.raises(LanternError, match="does not match the manifest"):
        open_shards(tmp_path).tokenizer()
    (tmp_path / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(LanternError, match="field 'format'"):
        open_shards(tmp_path)


def test_rewriting_a_folder_removes_stale_shards(tokenizer, tmp_path):
    with ShardWriter(tmp_path, tokenizer, shard_tokens=100, val_fraction=0.0) as writer:
        for text in make_docs(100):
            writer.add(text)
        writer.finish()
    assert (tmp_path / "train_00010.bin").exists()
    with ShardWriter(tmp_path, tokenizer, shard_tokens=100, val_fraction=0.0) as writer:
        writer.add("one short document")
        writer.finish()
    assert sorted(p.name for p in tmp_path.glob("*.bin")) == ["train_00000.bin"]


def test_prepare_end_to_end_with_report(tmp_path):
    docs = make_docs(120, seed=3)
    duplicate = next(d for d in docs[60:] if len(d) >= 60)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("\n\n".join(docs[:60]) + "\n")
    lines = [json.dumps({"text": d}) for d in docs[60:]] + [json.dumps({"text": duplicate.upper()})]
    (tmp_path / "src" / "b.jsonl").write_text("\n".join(lines) + "\n")
    manifest = prepare([str(tmp_path / "src")], tmp_path / "out",
                       config=PrepareConfig(vocab_size=256 + 8 + 40, val_fraction=0.1),
                       read=ReadConfig(text_split="paragraph"),
                       clean=CleanConfig(min_chars=60, max_top_ngram_fraction=1.0))   # word salad repeats bigrams
    kept = [d for d in docs if len(d) >= 60]
    steps = {s["name"]: s["documents_removed"] for s in manifest["report"]["steps"]}
    assert steps["min_chars>=60"] == 120 - len(kept) > 0
    assert steps["exact_dedup"] == 1 and steps["near_dedup(jaccard>=0.8)"] == 0
    assert sum(steps.values()) == 120 + 1 - len(kept)
    assert manifest["report"]["documents_in"] == 121 and manifest["report"]["documents_out"] == len(kept)
    assert manifest["sources"][0]["files"] == 2 and manifest["sources"][0]["documents"] == 121
    assert manifest["config"]["clean"]["min_chars"] == 60
    shards = open_shards(tmp_path / "out", verify=True)
    tok = shards.tokenizer()
    assert tok.vocab_size == 256 + 8 + 40                                  # trained on the cleaned text
    assert read_documents(shards, "train", tok.eot_id) == [d for d in kept if not is_validation(d, 0.1)]
    assert read_documents(shards, "val", tok.eot_id) == [d for d in kept if is_validation(d, 0.1)]


def test_prepare_refuses_when_nothing_survives(tokenizer, tmp_path):
    (tmp_path / "a.txt").write_text("tiny")
    for given in (tokenizer, None):                       # None: it would train a tokenizer first
        with pytest.raises(LanternError, match=r"no document survived .* \(1 read from 1 file\(s\)\)"):
            prepare([str(tmp_path / "a.txt")], tmp_path / "out", given)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_cli_prepare_prints_the_report(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("\n\n".join(make_docs(40)) + "\n")
    tok = Tokenizer.train(make_docs(40), vocab_size=256 + 8 + 30)
    tok.save(tmp_path / "tok.json")
    code = main(["data", "prepare", str(tmp_path / "a.txt"), "--out", str(tmp_path / "out"),
                 "--tokenizer", str(tmp_path / "tok.json"), "--text-split", "paragraph",
                 "--min-chars", "1", "--dedup-near", "false", "--val-fraction", "0.25"])
    out = capsys.readouterr().out
    assert code == 0 and "min_chars>=1" in out and "near_dedup" not in out
    assert "train" in out and "val" in out
    assert open_shards(tmp_path / "out", expect_tokenizer=tok).documents("val") > 0
    assert main(["data", "prepare", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o2")]) == 2
