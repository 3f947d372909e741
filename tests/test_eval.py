"""lantern eval: accuracy counting on a scripted model, tables, bits per byte, eval.json."""

from __future__ import annotations

import json
import re

import pytest

from lanternlm.chat import ChatTokens, render_for_generation
from lanternlm.cli import main
from lanternlm.engine import Engine
from lanternlm.errors import LanternError
from lanternlm.evaluate import demo_transcript, evaluate_run, evaluate_tasks, format_table, markdown_table
from lanternlm.inspect.thinking import thinking_command
from lanternlm.run import Run
from lanternlm.tasks import TASKS
from lanternlm.train.sft import sft

from sft_helpers import make_base, scripted_model, small_sft, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer()


def engine_for(tokenizer, level: str, reply: list[int]) -> Engine:
    """A scripted engine whose greedy completion of the letters test example 0 at ``level`` is ``reply``."""
    example = TASKS["letters"].generate(1, 0, split="test")[0]
    prompt = render_for_generation(TASKS["letters"].to_conversation(example, level)[:-1], tokenizer, level)
    script = [0] * (len(prompt) - 1) + reply
    return Engine(scripted_model(script, tokenizer.vocab_size, block_size=len(script) + 16)), example


def test_accuracy_thinking_length_and_unfinished_are_counted_exactly(tokenizer):
    t = ChatTokens.of(tokenizer)
    example = TASKS["letters"].generate(1, 0, split="test")[0]
    answer = tokenizer.encode(TASKS["letters"].reply(example))
    thinking = tokenizer.encode("spell and count")
    # empty thinking at low; the none prompt is the low prompt + <|think|><|/think|>: same answer
    engine, _ = engine_for(tokenizer, "low", [t.think, t.end_think, *answer, t.end])
    rows = evaluate_tasks(engine, tokenizer, ["letters"], ["none", "low"], n=1, max_tokens=40)
    assert [(r["level"], r["correct"], r["examples"], r["mean_thinking_tokens"], r["unfinished"]) for r in rows] \
        == [("none", 1, 1, 0.0, 0), ("low", 1, 1, 0.0, 0)]
    assert rows[0]["baseline"] == [example.answer, 1.0]  # one question: its answer is the constant one
    assert rows[1]["samples"][0]["answer"] == TASKS["letters"].reply(example)
    # a real thinking segment is counted in tokens
    engine, _ = engine_for(tokenizer, "high", [t.think, *thinking, t.end_think, *answer, t.end])
    row, = evaluate_tasks(engine, tokenizer, ["letters"], ["high"], n=1, max_tokens=60)
    assert (row["accuracy"], row["mean_thinking_tokens"]) == (1.0, len(thinking))
    assert row["samples"][0]["thinking"] == "spell and count"
    # a wrong count is wrong; an answer cut off before <|end|> is unfinished
    wrong = tokenizer.encode(f"The answer is {int(example.answer) + 1}.")
    engine, _ = engine_for(tokenizer, "none", [*wrong, t.end])
    row, = evaluate_tasks(engine, tokenizer, ["letters"], ["none"], n=1, max_tokens=40)
    assert (row["correct"], row["unfinished"]) == (0, 0)
    engine, _ = engine_for(tokenizer, "high", [t.think, *thinking])
    row, = evaluate_tasks(engine, tokenizer, ["letters"], ["high"], n=1, max_tokens=len(thinking) + 1)
    assert (row["correct"], row["unfinished"], row["mean_thinking_tokens"]) == (0, 1, len(thinking))


def test_bad_levels_and_sizes_are_errors(tokenizer):
    engine = Engine(scripted_model([0], tokenizer.vocab_size))
    with pytest.raises(LanternError, match="--levels ultra"):
        evaluate_tasks(engine, tokenizer, ["letters"], ["ultra"])
    with pytest.raises(LanternError, match="n=0"):
        evaluate_tasks(engine, tokenizer, ["letters"], ["none"], n=0)


def test_tables():
    rows = [{"task": "letters", "level": lv, "examples": 4, "correct": c, "accuracy": c / 4,
             "mean_thinking_tokens": m, "unfinished": 0, "baseline": ["1", 0.5]}
            for lv, c, m in (("none", 1, 0.0), ("high", 4, 41.5))]
    result = {"rows": rows, "n": 4, "bpb": 2.5, "base_bpb": 2.25}
    assert markdown_table(result) == ("| task | none | high | constant answer |\n|---|---|---|---|\n"
                                      '| letters | 25% (1/4, 0 tok) | 100% (4/4, 42 tok) | 50% ("1") |')
    assert format_table(result).splitlines()[1:] == [
        'letters     none          1/4    25.0%       0.0          0  50% ("1")',
        'letters     high          4/4   100.0%      41.5          0  50% ("1")',
        "bits per byte on the base validation set: 2.5000 (base model 2.2500, +0.2500 from fine-tuning)"]


def test_evaluate_run_writes_results_with_bits_per_byte(tokenizer, tmp_path, capsys):
    base = make_base(tokenizer, tmp_path)
    run = tmp_path / "chat"
    sft(small_sft(base, tasks=["letters", "reverse"], max_steps=2), run)
    assert Run(run).pretraining().path == base.resolve() and Run(base).pretraining().path == base
    result = evaluate_run(run, levels=["none", "high"], n=2, max_tokens=6, bpb_tokens=256)
    assert [(r["task"], r["level"], r["examples"]) for r in result["rows"]] == [
        ("letters", "none", 2), ("letters", "high", 2), ("reverse", "none", 2), ("reverse", "high", 2)]
    assert result["stage"] == "sft" and 0 < result["bpb"] < 20 and 0 < result["base_bpb"] < 20
    assert result["bpb"] != result["base_bpb"]
    assert json.loads((run / "eval.json").read_text())["rows"][0]["task"] == "letters"
    assert (run / "eval.png").stat().st_size > 1000
    assert main(["-q", "eval", str(run), "--tasks", "reverse", "--levels", "low", "--n", "1",
                 "--max-tokens", "4", "--bpb-tokens", "0"]) == 0
    printed = capsys.readouterr().out
    assert "reverse     low           " in printed and "bits per byte" not in printed
    transcript = demo_transcript(run, ["hello"], levels=("none", "high"), max_tokens=4, thinking_budget=1)
    assert transcript.startswith("user: hello\n") and "assistant (none):" in transcript
    example = TASKS["letters"].generate(1, 0, split="test")[0]
    transcript = demo_transcript(run, [example], levels=("none", "high"), max_tokens=6, thinking_budget=1)
    replies = re.findall(r"^assistant \(\w+\): (.*?)  \((right|wrong; expected \d+)\)$", transcript,
                         re.MULTILINE | re.DOTALL)  # a 2-step model's reply may hold a newline
    assert len(replies) == 2
    for text, verdict in replies:  # each answer carries the task's own verdict on it
        assert (verdict == "right") == TASKS["letters"].evaluate(example, text)


def test_eval_and_inspect_thinking_report_the_same_numbers(tokenizer, tmp_path):
    base = make_base(tokenizer, tmp_path)
    run = tmp_path / "chat"
    sft(small_sft(base, tasks=["letters"], max_steps=2), run)
    rows = evaluate_run(run, tasks=["letters"], n=3, max_tokens=12, bpb_tokens=0, write=False)["rows"]
    printed = thinking_command(str(run), "letters", n=3, max_tokens=12, out=str(tmp_path / "pictures"))
    table = [line.split() for line in printed.splitlines()[2:2 + len(rows)]]
    assert table == [[r["level"], f"{r['correct']}/{r['examples']}", f"{r['accuracy']:.0%}",
                      f"{r['mean_thinking_tokens']:.1f}"] for r in rows]
    assert [r["level"] for r in rows] == ["none", "low", "medium", "high"]
