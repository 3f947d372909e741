"""Real tokenizers in: byte-level BPE tokenizer.json and tiktoken rank files whose single
bytes are not ids 0-255 and whose special ids have gaps give the ids `tokenizers` /
`tiktoken` give on the same files; saved, reloaded and exported again unchanged."""

from __future__ import annotations

import base64
import json

import pytest

from lanternlm.cli import main
from lanternlm.errors import LanternError
from lanternlm.interop.hf_tokenizer import (PROBES, check_hf_tokenizer, from_hf_json, from_tiktoken,
                                            load_tokenizer, random_probes)
from lanternlm.tokenizer import GPT2_SPLIT_PATTERN, Tokenizer

from interop_helpers import TEXTS, hf_document, permuted_ids, tokenizer

tokenizers = pytest.importorskip("tokenizers", reason="needs the [hf] extra (tokenizers)")
tiktoken = pytest.importorskip("tiktoken")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEXTS_TO_CHECK = list(PROBES) + random_probes(300, seed=7) + TEXTS[:2] + ["<|im_start|>user\nhi<|im_end|>"]


@pytest.mark.parametrize("style", ["split-regex", "gpt2-bytelevel"])
def test_permuted_bytes_and_gapped_specials_encode_as_tokenizers_does(style):
    gpt2 = style == "gpt2-bytelevel"
    ours = Tokenizer.train(TEXTS, 360, special_tokens=SPECIALS, backend="python",
                           **({"pattern": GPT2_SPLIT_PATTERN} if gpt2 else {}))
    doc = hf_document(ours, gpt2_style=gpt2)
    imported = from_hf_json(doc)
    hf = tokenizers.Tokenizer.from_str(json.dumps(doc))
    assert imported.token_bytes(doc["model"]["vocab"]["a"]) == b"a" != imported.token_bytes(ord("a"))
    assert imported.special_tokens == {t["content"]: t["id"] for t in doc["added_tokens"]}
    assert imported.vocab_size == max(hf.get_vocab().values()) + 1 == hf.get_vocab_size() + 6  # 6 gaps
    assert imported.eot_id == doc["added_tokens"][0]["id"]
    for text in TEXTS_TO_CHECK:
        ids = imported.encode(text, allowed_special="all")
        assert ids == hf.encode(text, add_special_tokens=False).ids, text
        assert imported.decode(ids) == text
    gap = doc["added_tokens"][0]["id"] - 1
    with pytest.raises(LanternError, match="unused"):
        imported.decode([gap])
    # the layout survives save/load, and exports back to a file that encodes the same
    assert Tokenizer.from_dict(json.loads(json.dumps(imported.to_dict()))) == imported
    check_hf_tokenizer(imported, imported.hf_json(), TEXTS_TO_CHECK)


def test_a_tiktoken_rank_file_with_bytes_ranked_after_merges(tmp_path):
    ours = tokenizer()
    new = permuted_ids(ours, seed=3)
    path = tmp_path / "ranks.tiktoken"
    path.write_text("".join(f"{base64.b64encode(piece).decode()} {new[i]}\n" for i, piece in ours.vocab.items()))
    specials = {"<|endoftext|>": len(new) + 5, "<|fim|>": len(new) + 9}
    imported = from_tiktoken(path, "gpt4", specials)
    reference = tiktoken.Encoding(name="t", pat_str=ours.pattern, special_tokens=specials,
                                  mergeable_ranks={piece: new[i] for i, piece in ours.vocab.items()})
    assert max(imported.token_bytes(new[b]) == bytes([b]) and new[b] > 256 for b in range(256))
    for text in TEXTS_TO_CHECK:
        assert imported.encode(text, allowed_special="all") == reference.encode(text, allowed_special="all")
    saved = tmp_path / "tok.json"
    imported.save(saved)
    assert Tokenizer.load(saved) == imported and json.loads(saved.read_text())["version"] == 2
    assert ours == Tokenizer.load(_saved(ours, tmp_path)) and ours.to_dict()["version"] == 1  # ours: unchanged
    # our own vocabulary through a rank file comes back as our layout exactly
    plain = tmp_path / "plain.tiktoken"
    plain.write_text("".join(f"{base64.b64encode(p).decode()} {i}\n" for i, p in ours.vocab.items()))
    same = from_tiktoken(plain, ours.pattern, dict(ours.special_tokens))
    assert same.merges == ours.merges and same.to_dict() == ours.to_dict()


def _saved(tok, tmp_path):
    tok.save(tmp_path / "ours.json")
    return tmp_path / "ours.json"


def test_unsupported_files_are_refused_by_name():
    doc = tokenizer().hf_json()
    with pytest.raises(LanternError, match="model type 'WordPiece'"):
        from_hf_json({**doc, "model": {**doc["model"], "type": "WordPiece"}})
    with pytest.raises(LanternError, match="normalizer 'Lowercase'"):
        from_hf_json({**doc, "normalizer": {"type": "Lowercase"}})
    with pytest.raises(LanternError, match="add_prefix_space"):
        from_hf_json({**doc, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True}})
    with pytest.raises(LanternError, match=r"pre-tokenizer sequence \['Digits', 'ByteLevel'\]"):
        from_hf_json({**doc, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, {"type": "ByteLevel", "use_regex": False}]}})
    extra = {**doc["model"]["vocab"], "Ġzzz": 9999}
    with pytest.raises(LanternError, match="no merge makes"):
        from_hf_json({**doc, "model": {**doc["model"], "vocab": extra}})


def test_a_model_folder_and_the_command(tmp_path, capsys):
    ours = Tokenizer.train(TEXTS, 340, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"], backend="python")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(json.dumps(hf_document(ours)))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|end_of_text|>"}}))
    tok = load_tokenizer(folder)
    assert (tok.bos_token, tok.eot_token) == ("<|begin_of_text|>", "<|end_of_text|>")
    assert tok.bos_id == tok.special_id("<|begin_of_text|>") != tok.eot_id
    with pytest.raises(SystemExit):
        main(["tokenizer", "import", "--help"])
    out = tmp_path / "ours.json"
    assert main(["tokenizer", "import", str(folder / "tokenizer.json"), "--out", str(out),
                 "--eot", "<|end_of_text|>"]) == 0
    assert Tokenizer.load(out).eot_token == "<|end_of_text|>"
    assert main(["tokenizer", "import", str(tmp_path / "nope.json"), "--out", str(out)]) == 2
    assert "no such tokenizer file" in capsys.readouterr().err


def test_a_gpt2_folder_with_vocab_json_and_merges_txt(tmp_path):
    """No tokenizer.json (GPT-2's original files): transformers builds one, which is imported."""
    ours = Tokenizer.train(TEXTS, 340, special_tokens=["<|endoftext|>"], pattern=GPT2_SPLIT_PATTERN, backend="python")
    doc = hf_document(ours, gpt2_style=True, seed=5)
    folder = tmp_path / "gpt2"
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(doc["model"]["vocab"]))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(doc["model"]["merges"]) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "GPT2Tokenizer", "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"}))
    tok = load_tokenizer(folder)
    reference = from_hf_json(doc)
    assert tok.pattern == GPT2_SPLIT_PATTERN and tok.vocab == reference.vocab and tok.merges == reference.merges
    assert tok.eot_id == doc["added_tokens"][0]["id"]
