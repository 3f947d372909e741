"""`lantern quickstart` end to end on a tiny budget, offline: a local corpus file stands in
for the built-in one (whose fetching is tested in test_data_builtin)."""

import json
import random

import pytest

from lanternlm.cli import main
from lanternlm.errors import LanternError
from lanternlm.quickstart import QuickstartConfig, quickstart


@pytest.fixture()
def corpus(tmp_path):
    """200 scenes of seeded random verse as JSONL (varied enough to pass dedup and filters)."""
    rng = random.Random(0)
    words = ("light window breaks east juliet sun arise fair kill envious moon romeo father refuse "
             "name rose smell sweet night love speak heaven stars eyes cheek hand glove lady dream").split()
    path = tmp_path / "scenes.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(200):
            lines = [f"{rng.choice(['ROMEO', 'JULIET', 'NURSE'])}: "
                     + " ".join(rng.choice(words) for _ in range(rng.randint(6, 14))).capitalize() + "."
                     for _ in range(12)]
            fh.write(json.dumps({"text": "\n".join(lines)}) + "\n")
    return path


@pytest.mark.slow
def test_quickstart_runs_every_stage(tmp_path, corpus, capsys):
    out = tmp_path / "qs"
    code = main(["-q", "quickstart", "--out", str(out), "--corpus", str(corpus), "--vocab-size", "300",
                 "--minutes", "5", "--max-steps", "12", "--samples", "2", "--sample-tokens", "8",
                 "--chat-steps", "3", "--eval-n", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "--- sample 1 ---" in printed and "--- sample 2 ---" in printed
    summary = json.loads((out / "quickstart.json").read_text())
    assert set(summary["steps"]) >= {"data", "pretrain", "samples", "report", "chat", "done"}
    chat = json.loads((out / "chat" / "config.json").read_text())
    assert chat["stage"] == "sft" and (chat["config"]["optimizer"], chat["config"]["muon_lr"]) == ("muon", 0.01)
    assert json.loads((out / "run" / "config.json").read_text())["config"]["optimizer"] == "muon"  # the recipe measured
    assert (out / "chat" / "eval.json").exists() and "--- demo chat ---" in printed
    assert printed.count("  (right)") + printed.count("  (wrong; expected ") == 6  # 3 task questions x 2 levels
    report = out / "report" / "report.md"
    assert report.exists() and "![attention]" in report.read_text()
    assert summary["steps"]["pretrain"]["summary"]["steps"] == 12
    for name in ("model.safetensors", "model.json", "tokenizer.json", "config.json", "metrics.jsonl", "loss.png"):
        assert (out / "run" / name).exists(), name
    assert (out / "data" / "manifest.json").exists()
    # a second run refuses to clobber it unless told to
    with pytest.raises(LanternError, match="--overwrite"):
        quickstart(QuickstartConfig(out=str(out), corpus=str(corpus)))


def test_quickstart_refuses_foreign_directory(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(LanternError, match="not a quickstart directory"):
        quickstart(QuickstartConfig(out=str(tmp_path), corpus="builtin:shakespeare"))
    assert (tmp_path / "precious.txt").read_text() == "keep me"
