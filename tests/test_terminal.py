"""The terminal front-ends: lantern generate and lantern chat on scripted models.

A *scripted* model (:func:`sft_helpers.scripted_model`) predicts ``script[p]`` at position p
whatever the tokens, so greedy text is known in advance.
"""

import io
import json
import math

import pytest

from lanternlm.chat import render_for_generation
from lanternlm.checkpoint import save_model
from lanternlm.cli import main
from lanternlm.generate import encode_prompt
from lanternlm.run import Run
from lanternlm.sampling import SamplingParams
from lanternlm.terminal import ChatSession, ChatTemplate, PlainCompletion, chat_loop, probs_table
from lanternlm.tokenizer import Tokenizer
from sft_helpers import scripted_model

GREEDY = SamplingParams(temperature=0)
CORPUS = ["The cat sat on the mat. The dog sat on the log. Hello there, how are you?"] * 3


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(CORPUS, vocab_size=256 + 8 + 40)


def script_for(tokenizer, text: str, prompt_len: int = 1) -> list[int]:
    """A script whose greedy completion after a ``prompt_len``-token prompt is ``text``."""
    return [0] * (prompt_len - 1) + tokenizer.encode(text)



@pytest.fixture
def run_dir(tmp_path, tokenizer):
    prompt_len = len(encode_prompt(tokenizer, "The cat"))
    script = script_for(tokenizer, " sat on the mat.", prompt_len)
    save_model(tmp_path, scripted_model(script, tokenizer.vocab_size, block_size=64))
    tokenizer.save(tmp_path / "tokenizer.json")
    return tmp_path


def test_cli_generate_streams_the_completion(run_dir, capsys, tokenizer):
    assert main(["generate", str(run_dir), "The cat", "--temperature", "0", "--max-tokens", "40",
                 "--stop", " the"]) == 0
    assert capsys.readouterr().out == "The cat sat on\n"


def test_cli_generate_show_probs_marks_the_pick(run_dir, capsys):
    assert main(["generate", str(run_dir), "The cat", "--preset", "chatbot", "--max-tokens", "2",
                 "--show-probs", "--top", "3", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("step ") == 2 and "▶ ' sat'" in out
    assert "after filters 100.0%" in out  # top-p 0.5 on a confident model keeps one token
    assert out.rstrip().endswith("The cat sat on")


def test_cli_generate_errors_are_clear(run_dir, capsys):
    assert main(["generate", str(run_dir), "x" * 500, "--max-tokens", "4"]) == 2
    assert "context window is 64" in capsys.readouterr().err
    assert main(["generate", str(run_dir), "hi", "--top-p", "1.5"]) == 2
    assert "top_p" in capsys.readouterr().err
    assert main(["generate", str(run_dir), "x" * 500, "--max-tokens", "4", "--truncate", "left",
                 "--temperature", "0"]) == 0


def test_probs_table_lists_raw_and_filtered(tokenizer):
    from lanternlm.engine import TokenEvent

    a, b, c = tokenizer.encode("a")[0], tokenizer.encode("b")[0], tokenizer.encode("c")[0]
    event = TokenEvent(0, 0, b, None, math.log(0.3), math.log(0.375),
                       [(a, 0.5), (b, 0.3), (c, 0.2)], [(a, 0.625), (b, 0.375)])
    table = probs_table(tokenizer, event, bar_width=10)
    lines = table.splitlines()
    assert lines[0] == "step 1: picked 'b'  (raw 30.0%, after filters 37.5%)"
    assert lines[2].split() == ["'a'", "50.0%", "█████", "62.5%", "██████▎"]
    assert lines[3].split() == ["▶", "'b'", "30.0%", "███", "37.5%", "███▊"]
    assert lines[4].split() == ["'c'", "20.0%", "██", "-"]


def test_chat_loop_plain_completion_with_commands(run_dir, tokenizer):
    run = Run(run_dir)
    session = ChatSession(run.engine(), run.tokenizer, PlainCompletion(), SamplingParams(), max_tokens=3)
    script = io.StringIO("/temp 0\n/top_p 2\n/max_tokens 5\nThe cat\n/settings\n/reset\n/bogus\n"
                         "/preset chatbot\n/help\n/quit\nnever read\n")
    out = io.StringIO()
    chat_loop(session, script, out)
    text = out.getvalue()
    assert "temperature=0.0" in text
    assert "/top_p: sampling: top_p=2.0 is invalid" in text
    assert "> The cat" not in text  # input is not echoed
    assert " sat on the mat" in text  # 5 tokens of the script after "The cat"
    assert "(conversation forgotten)" in text and "unknown command /bogus" in text
    assert "temperature=0.5 top_k=0 top_p=0.5" in text and "/reset" in text
    assert session.history == []


def test_chat_history_is_the_running_text(run_dir, tokenizer):
    run = Run(run_dir)
    session = ChatSession(run.engine(), run.tokenizer, PlainCompletion(), GREEDY, max_tokens=2)
    reply = session.reply("The cat", io.StringIO())
    assert reply == tokenizer.decode(tokenizer.encode(" sat on the mat.")[:2])
    assert [h["text"] for h in session.history] == ["The cat", reply]
    session.reply("Hello", io.StringIO())
    assert session.history[2]["text"] == "\nHello"


def test_chat_template_renders_turns(tokenizer):
    fmt = ChatTemplate(system="Be brief.")
    history = []
    think, end_think = tokenizer.special_id("<|think|>"), tokenizer.special_id("<|/think|>")
    reply = [think, *tokenizer.encode("hm"), end_think, *tokenizer.encode("Hello!")]
    fmt.remember(tokenizer, history, "Hi", tokenizer.decode(reply), reply)
    assert history == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    ids = fmt.prompt_ids(tokenizer, history, "Bye")
    assert ids[0] == tokenizer.eot_id and ids[-1] == tokenizer.special_id("<|assistant|>")
    assert tokenizer.decode(ids).count("<|user|>") == 2
    assert fmt.stop_tokens(tokenizer) == [tokenizer.eot_id, tokenizer.special_id("<|end|>")]


def test_cli_chat_reads_stdin(run_dir, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("The cat\n"))
    assert main(["chat", str(run_dir), "--temperature", "0", "--max-tokens", "3"]) == 0
    out = capsys.readouterr().out
    assert "plain format" in out and " sat on" in out


def test_chat_on_a_chat_run_talks_in_turns_without_flags(tmp_path, tokenizer, capsys, monkeypatch):
    """The run's stage decides the format: an sft run answers turns (the reply stops at
    <|end|>, thinking hidden), where the same weights as a base run would continue text."""
    prompt = render_for_generation([{"role": "user", "content": "Hi"}], tokenizer, "medium")
    think, end_think, end = (tokenizer.special_id(s) for s in ("<|think|>", "<|/think|>", "<|end|>"))
    script = [0] * (len(prompt) - 1) + [think, *tokenizer.encode("hm"), end_think, *tokenizer.encode("Hello there"),
                                        end, *tokenizer.encode(" more")]
    save_model(tmp_path, scripted_model(script, tokenizer.vocab_size, block_size=len(script) + 8))
    tokenizer.save(tmp_path / "tokenizer.json")
    (tmp_path / "config.json").write_text(json.dumps({"stage": "sft", "parent": None, "config": {}}))
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi\n"))
    assert main(["chat", str(tmp_path), "--temperature", "0", "--max-tokens", "30"]) == 0
    out = capsys.readouterr().out
    assert "chat format" in out and "Hello there" in out and "hm" not in out and " more" not in out
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi\n"))
    assert main(["chat", str(tmp_path), "--temperature", "0", "--max-tokens", "30", "--show-thinking"]) == 0
    assert "[thinking] hm [/thinking]" in capsys.readouterr().out
    (tmp_path / "config.json").write_text(json.dumps({"stage": "pretrain", "parent": None, "config": {"data": "x"}}))
    assert main(["chat", str(tmp_path), "--reasoning", "high"]) == 2
    assert "is a pretrain model, which continues plain text" in capsys.readouterr().err


def test_cli_generate_num_gives_different_samples_of_one_prompt(run_dir, capsys):
    assert main(["generate", str(run_dir), "The", "--num", "3", "--max-tokens", "6", "--temperature", "100",
                 "--seed", "1"]) == 0
    samples = [part.split("──\n", 1)[1] for part in capsys.readouterr().out.split("── sample ")[1:]]
    assert len(samples) == 3 and len(set(samples)) == 3  # one request, n=3: three random streams
