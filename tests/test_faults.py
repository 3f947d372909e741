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
