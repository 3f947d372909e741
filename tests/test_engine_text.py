"""Text on top of the engine: streaming UTF-8, stop strings, the CLI's generate and chat.

A *scripted* model makes the text predictable: a real GPT whose weights are set so that
its prediction at position p is ``script[p]`` whatever the tokens (blocks silenced, the
position embedding one-hot, the head reading the position out). Greedy generation after
a prompt of n tokens then writes ``script[n-1:]``.
"""

import io
import math

import pytest
import torch

from lanternlm.checkpoint import save_model
from lanternlm.cli import main
from lanternlm.engine import Engine
from lanternlm.generate import complete, encode_prompt, held_back, stream_text
from lanternlm.model import GPT, GPTConfig
from lanternlm.sampling import SamplingParams
from lanternlm.terminal import ChatSession, ChatTemplate, PlainCompletion, chat_loop, probs_table
from lanternlm.tokenizer import Tokenizer
from sft_helpers import scripted_model

GREEDY = SamplingParams(temperature=0)
CORPUS = ["Café au lait, s'il vous plaît. Naïve façade. 日本語のテキスト。 Emoji 🙂🙂 ok.",
          "The cat sat on the mat. The dog sat on the log. Über große Straßen."] * 3


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(CORPUS, vocab_size=256 + 8 + 40)


def script_for(tokenizer, text: str, prompt_len: int = 1) -> list[int]:
    """A script whose greedy completion after a ``prompt_len``-token prompt is ``text``."""
    return [0] * (prompt_len - 1) + tokenizer.encode(text)


def test_scripted_model_writes_its_script(tokenizer):
    text = "Café 日本語 🙂 ok"
    engine = Engine(scripted_model(script_for(tokenizer, text), tokenizer.vocab_size, block_size=64))
    out = engine.generate([[tokenizer.eot_id]], max_tokens=len(tokenizer.encode(text)), sampling=GREEDY)
    assert tokenizer.decode(out[0].tokens) == text


def test_streamed_text_never_splits_a_character(tokenizer):
    text = "日本語のテキスト 🙂🙂 Naïve"
    ids = tokenizer.encode(text)
    split = [i for i in ids if len(tokenizer.token_bytes(i)) < len(tokenizer.decode([i]).encode())
             or "\ufffd" in tokenizer.decode([i])]
    assert split, "the example must contain tokens holding part of a character"
    engine = Engine(scripted_model(ids, tokenizer.vocab_size, block_size=64))
    pieces = list(stream_text(engine, tokenizer, [[tokenizer.eot_id]], max_tokens=len(ids),
                              sampling=GREEDY))
    assert len(pieces) == len(ids)
    assert all("\ufffd" not in p.text for p in pieces)
    assert any(p.text == "" for p in pieces)  # held back until the character completed
    assert "".join(p.text for p in pieces) == text
    assert pieces[-1].finish_reason == "length"


def test_random_model_stream_equals_whole_decode(tokenizer):
    # invalid byte sequences from a random model decode to U+FFFD exactly as a whole decode
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=1, n_head=2,
                          n_embd=16, init_std=0.5))
    prompts = [encode_prompt(tokenizer, "日本"), encode_prompt(tokenizer, "Caf")]
    results = complete(Engine(model), tokenizer, prompts, max_tokens=40,
                       sampling=SamplingParams(seed=1), stop_tokens=[])
    for result in results:
        assert result.text == tokenizer.decode(result.tokens)


def test_complete_numbers_each_prompts_samples_after_it(tokenizer):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=1, n_head=2,
                          n_embd=16, init_std=0.5))
    engine = Engine(model)
    prompts = [encode_prompt(tokenizer, "The cat"), encode_prompt(tokenizer, "日本")]
    settings = SamplingParams(seed=2)
    results = complete(engine, tokenizer, prompts, max_tokens=12, sampling=settings, stop_tokens=[], n=3)
    assert len(results) == 6
    for i, prompt in enumerate(prompts):  # row i * n + s is prompt i's sample s
        samples = engine.generate([prompt], max_tokens=12, sampling=settings, n=3)
        assert [r.tokens for r in results[i * 3:i * 3 + 3]] == [c.tokens for c in samples]
        assert len({tuple(r.tokens) for r in results[i * 3:i * 3 + 3]}) == 3
    assert all(r.text == tokenizer.decode(r.tokens) for r in results)


def test_stop_strings_cut_the_text_across_tokens(tokenizer):
    text = "The cat sat on the mat. The dog sat on the log."
    engine = Engine(scripted_model(script_for(tokenizer, text), tokenizer.vocab_size, block_size=64))
    prompt = [[tokenizer.eot_id]]
    out = complete(engine, tokenizer, prompt, max_tokens=40, sampling=GREEDY, stop=["the log", "dog"])
    assert (out[0].text, out[0].finish_reason, out[0].stop) == ("The cat sat on the mat. The ", "stop", "dog")
    pieces = list(stream_text(engine, tokenizer, prompt, max_tokens=40, sampling=GREEDY, stop=["t on"]))
    assert "".join(p.text for p in pieces) == "The cat sa"
    assert not any("t o" in p.text for p in pieces)  # never emitted, then taken back
    # no stop string found: everything comes out, including a held-back tail
    n = len(tokenizer.encode(text))
    out = complete(engine, tokenizer, prompt, max_tokens=n, sampling=GREEDY, stop=["log!"])
    assert (out[0].text, out[0].finish_reason) == (text, "length")


def test_stop_token_and_batch_rows_stop_independently(tokenizer):
    text = "The cat sat."
    script = tokenizer.encode(text) + [tokenizer.eot_id] + tokenizer.encode(" more")
    engine = Engine(scripted_model(script, tokenizer.vocab_size, block_size=64))
    prompts = [[tokenizer.eot_id], [tokenizer.eot_id, 5, 6]]  # row 1 starts 2 tokens later
    out = complete(engine, tokenizer, prompts, max_tokens=30, sampling=GREEDY, stop=["cat"])
    assert (out[0].text, out[0].stop) == ("The ", "cat")
    assert (out[1].text, out[1].finish_reason, out[1].stop) == (
        tokenizer.decode(script[2:len(tokenizer.encode(text))]), "stop", "<|endoftext|>")


def test_held_back():
    assert held_back("abc\nUse", ["\nUser:", "xyz"]) == 4
    assert held_back("abcx", ["\nUser:", "xyz"]) == 1
    assert held_back("abc", []) == 0


# --------------------------------------------------------------------------- terminal and CLI


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
    from lanternlm.checkpoint import load_run

    model, tok = load_run(run_dir)
    session = ChatSession(Engine(model), tok, PlainCompletion(), SamplingParams(), max_tokens=3)
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
    from lanternlm.checkpoint import load_run

    model, tok = load_run(run_dir)
    session = ChatSession(Engine(model), tok, PlainCompletion(), GREEDY, max_tokens=2)
    reply = session.reply("The cat", io.StringIO())
    assert reply == tokenizer.decode(tokenizer.encode(" sat on the mat.")[:2])
    assert [h["text"] for h in session.history] == ["The cat", reply]
    session.reply("Hello", io.StringIO())
    assert session.history[2]["text"] == "\nHello"


def test_chat_template_renders_turns(tokenizer):
    fmt = ChatTemplate(system="Be brief.")
    history = []
    fmt.remember(history, "Hi", "<|think|>hm<|/think|>Hello!")
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


def test_base_model_never_samples_chat_markers(tmp_path, tokenizer):
    """A pretraining run's engine cuts the special ids after <|endoftext|>; a chat run's
    and a bare model directory's keep them."""
    import json

    from lanternlm.generate import base_vocab_limit
    from lanternlm.terminal import load_engine

    user = tokenizer.special_tokens["<|user|>"]
    save_model(tmp_path, scripted_model([user] * 8, tokenizer.vocab_size, block_size=64))
    tokenizer.save(tmp_path / "tokenizer.json")
    assert load_engine(str(tmp_path))[0].vocab_limit == tokenizer.vocab_size  # no config.json
    (tmp_path / "config.json").write_text(json.dumps({"config": {"data": "shards"}}))  # as pretrain writes
    engine, _ = load_engine(str(tmp_path))
    assert engine.vocab_limit == base_vocab_limit(tokenizer) == tokenizer.eot_id + 1
    out = engine.generate([[tokenizer.eot_id]], max_tokens=6, sampling=SamplingParams(temperature=1.0, seed=0))
    assert out[0].tokens and all(t <= tokenizer.eot_id for t in out[0].tokens)
    (tmp_path / "config.json").write_text(json.dumps({"stage": "sft"}))
    chat_engine, _ = load_engine(str(tmp_path))
    assert chat_engine.generate([[tokenizer.eot_id]], max_tokens=1, sampling=GREEDY)[0].tokens == [user]
