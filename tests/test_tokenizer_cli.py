"""`lantern tokenizer train|encode|show|merges` end to end on a tiny corpus."""

from __future__ import annotations

import pytest

from lanternlm.cli import main
from lanternlm.tokenizer import Tokenizer


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    text = ("I love pizza! I love pasta!\n\nPizza is lovely, and so are the long summer evenings when\n"
            "we eat outside, talk about books, and watch the lanterns over the river.\n")
    path.write_text(text * 5, encoding="utf-8")
    return path


@pytest.mark.parametrize("action", ["train", "encode", "show", "merges"])
def test_every_action_answers_help(action, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["tokenizer", action, "--help"])
    assert exit_.value.code == 0
    assert "usage: lantern tokenizer " + action in capsys.readouterr().out


def test_train_encode_show_merges(corpus_file, tmp_path, capsys):
    out = tmp_path / "tok.json"
    assert main(["tokenizer", "train", "--input", str(corpus_file), "--vocab-size", "290",
                 "--backend", "python", "--out", str(out)]) == 0
    tok = Tokenizer.load(out)
    assert tok.vocab_size == 290
    assert tok == Tokenizer.train([corpus_file.read_text()], 290, backend="rust")
    assert (tmp_path / "tok.merges.txt").read_text().count("\n") == 1 + len(tok.merges) + 8
    capsys.readouterr()

    assert main(["tokenizer", "encode", "--tokenizer", str(out), "I love pizza!"]) == 0
    ids = tok.encode("I love pizza!")
    assert capsys.readouterr().out.strip() == str(ids)
    assert main(["tokenizer", "encode", "--tokenizer", str(out), "--decode", str(ids)]) == 0
    assert capsys.readouterr().out == "I love pizza!\n"
    assert main(["tokenizer", "encode", "--tokenizer", str(out), "--allow-special", "<|endoftext|>"]) == 0
    assert capsys.readouterr().out.strip() == f"[{tok.eot_id}]"

    assert main(["tokenizer", "show", "--tokenizer", str(out), "--no-color", "I love pizza!"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == f"'I love pizza!' -> {ids}"
    assert shown[1] == " ".join(f"[{p}|{i}]" for i, p in tok.render_pieces(ids))
    assert shown[2].startswith(f"{len(ids)} tokens, 13 characters, 13 bytes")

    assert main(["tokenizer", "merges", "--tokenizer", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("256: [")


def test_errors_are_reported_without_traceback(tmp_path, capsys):
    assert main(["tokenizer", "encode", "--tokenizer", str(tmp_path / "nope.json"), "x"]) == 2
    assert "nope.json: tokenizer file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nbad \xff byte\n")
    assert main(["tokenizer", "train", "--input", str(bad), "--out", str(tmp_path / "t.json")]) == 2
    assert "bad.txt: line 2" in capsys.readouterr().err
