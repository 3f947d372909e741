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
