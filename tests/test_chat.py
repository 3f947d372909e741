"""The conversation format: exact ids and masks, generation prompts, parsing, files."""

import json

import pytest

from lanternlm.chat import (ChatTokens, Rendered, load_jsonl, reasoning_of, render, render_for_generation, show,
                            split_reply, validate, write_jsonl)
from lanternlm.data.loader import pack
from lanternlm.errors import LanternError
from lanternlm.tokenizer import Tokenizer

CORPUS = ["Reasoning: high medium low none. How many r's are in strawberry? "
          "s t r a w b e r r y, the letter r appears 3 times. Be brief. hello, hi there!"] * 3


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(CORPUS, vocab_size=256 + 8 + 40)


@pytest.fixture(scope="module")
def sp(tok):
    return ChatTokens.of(tok)


def expect(*parts):
    """Concatenate ``(tokens, trained)`` parts into (ids, mask)."""
    ids, mask = [], []
    for tokens, trained in parts:
        ids += tokens
        mask += [trained] * len(tokens)
    return ids, mask


def user(text):
    return {"role": "user", "content": text}


def assistant(text, thinking=None):
    msg = {"role": "assistant", "content": text}
    if thinking is not None:
        msg["thinking"] = thinking
    return msg


# --------------------------------------------------------------------------- worked examples


def test_single_turn_with_thinking_default_medium(tok, sp):
    enc = tok.encode
    r = render([user("How many r's are in strawberry?"), assistant("3", thinking="s t r a w")], tok)
    assert (r.ids, r.mask) == expect(
        ([sp.bos, sp.system, *enc("Reasoning: medium"), sp.end], 0),
        ([sp.user, *enc("How many r's are in strawberry?"), sp.end], 0),
        ([sp.assistant], 0),
        ([sp.think, *enc("s t r a w"), sp.end_think, *enc("3"), sp.end], 1))
    assert r.reasoning == "medium"


def test_single_turn_reasoning_none_has_an_empty_untrained_segment(tok, sp):
    enc = tok.encode
    r = render([user("hi"), assistant("hello", thinking="dropped")], tok, reasoning="none")
    assert (r.ids, r.mask) == expect(
        ([sp.bos, sp.system, *enc("Reasoning: none"), sp.end, sp.user, *enc("hi"), sp.end], 0),
        ([sp.assistant, sp.think, sp.end_think], 0),
        ([*enc("hello"), sp.end], 1))


def test_system_turn_gets_the_level_line_first(tok, sp):
    enc = tok.encode
    messages = [{"role": "system", "content": "Be brief."}, user("hi"), assistant("hello", thinking="a greeting")]
    r = render(messages, tok, reasoning="high")
    assert (r.ids, r.mask) == expect(
        ([sp.bos, sp.system, *enc("Reasoning: high\nBe brief."), sp.end, sp.user, *enc("hi"), sp.end,
          sp.assistant], 0),
        ([sp.think, *enc("a greeting"), sp.end_think, *enc("hello"), sp.end], 1))


def test_level_from_system_line_and_argument_overrides_it(tok):
    messages = [{"role": "system", "content": "Be brief.\nReasoning: low"}, user("hi")]
    assert reasoning_of(messages) == "low"
    assert render(messages, tok).ids == render([{"role": "system", "content": "Reasoning: low\nBe brief."},
                                                user("hi")], tok).ids
    overridden = render(messages, tok, reasoning="high")
    assert overridden.reasoning == "high"
    assert tok.decode(overridden.ids).count("Reasoning:") == 1
    assert "Reasoning: high\nBe brief." in tok.decode(overridden.ids)
    with pytest.raises(LanternError, match="Reasoning: extreme"):
        render([{"role": "system", "content": "Reasoning: extreme"}, user("hi")], tok)
    with pytest.raises(LanternError, match="unknown reasoning level"):
        render([user("hi")], tok, reasoning="max")


def test_multi_turn_drops_earlier_thinking_and_trains_every_answer(tok, sp):
    enc = tok.encode
    messages = [user("hi"), assistant("hello", thinking="old thoughts"),
                user("How many r's are in strawberry?"), assistant("3", thinking="s t r")]
    r = render(messages, tok, reasoning="low")
    assert (r.ids, r.mask) == expect(
        ([sp.bos, sp.system, *enc("Reasoning: low"), sp.end, sp.user, *enc("hi"), sp.end], 0),
        ([sp.assistant, sp.think, sp.end_think], 0),
        ([*enc("hello"), sp.end], 1),
        ([sp.user, *enc("How many r's are in strawberry?"), sp.end, sp.assistant], 0),
        ([sp.think, *enc("s t r"), sp.end_think, *enc("3"), sp.end], 1))
    assert "old thoughts" not in tok.decode(r.ids)


def test_final_turn_without_thinking_at_a_level_trains_the_empty_segment(tok, sp):
    r = render([user("hi"), assistant("hello")], tok, reasoning="high")
    tail = [sp.assistant, sp.think, sp.end_think, *tok.encode("hello"), sp.end]
    assert r.ids[-len(tail):] == tail
    assert r.mask[-len(tail):] == [0] + [1] * (len(tail) - 1)


def test_special_token_text_in_content_is_plain_text(tok, sp):
    r = render([user("<|end|><|assistant|>"), assistant("<|think|>")], tok, reasoning="none")
    assert r.ids.count(sp.end) == 3 and r.ids.count(sp.assistant) == 1 and r.ids.count(sp.think) == 1


@pytest.mark.parametrize("level", ["none", "low", "medium", "high"])
def test_generation_prompt_is_a_prefix_ending_where_the_model_continues(tok, sp, level):
    history = [{"role": "system", "content": "Be brief."}, user("hi"), assistant("hello", thinking="x"),
               user("How many r's are in strawberry?")]
    prompt = render_for_generation(history, tok, reasoning=level)
    full = render(history + [assistant("3", thinking="s t r")], tok, reasoning=level)
    context = render(history, tok, reasoning=level)  # the conversation so far, as trained on
    opening = len(prompt) - len(context.ids)
    assert full.ids[:len(prompt)] == prompt and prompt[:len(context.ids)] == context.ids
    assert full.mask[:len(prompt)] == context.mask + [0] * opening and full.mask[len(prompt)] == 1
    if level == "none":
        assert prompt[-3:] == [sp.assistant, sp.think, sp.end_think]
        assert full.ids[len(prompt)] == tok.encode("3")[0]
    else:
        assert prompt[-1] == sp.assistant and full.ids[len(prompt)] == sp.think


def test_generation_needs_a_final_user_message(tok):
    with pytest.raises(LanternError, match="message 1: generation continues after a user message"):
        render_for_generation([user("hi"), assistant("hello")], tok)


def test_split_reply_on_ids(tok, sp):
    messages = [user("hi"), assistant("3 times", thinking="s t r a w")]
    r = render(messages, tok, reasoning="high")
    generated = r.ids[r.ids.index(sp.assistant) + 1:]
    text = lambda parts: tuple(tok.decode(p) for p in parts)
    assert text(split_reply(generated, sp)) == ("s t r a w", "3 times")
    assert text(split_reply(generated + tok.encode("junk"), sp)) == ("s t r a w", "3 times")
    assert text(split_reply(tok.encode("hello") + [sp.end], sp)) == ("", "hello")
    assert text(split_reply([sp.think, *tok.encode("cut off")], sp)) == ("cut off", "")
    assert text(split_reply([*tok.encode(" s t r"), sp.end_think, *tok.encode("3")], sp)) == (" s t r", "3")
    none = render([user("hi"), assistant("yes")], tok, reasoning="none")  # the prompt closed thinking
    assert text(split_reply(none.ids[none.ids.index(sp.end_think) + 1:], sp)) == ("", "yes")


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("messages, match", [
    ([], "non-empty list"),
    ("hi", "non-empty list"),
    ([user("hi"), {"role": "bot", "content": "x"}], "message 1: unknown role 'bot'"),
    ([{"role": "user", "content": "hi", "thinking": "x"}], "message 0: only assistant messages may have"),
    ([user("hi"), {"role": "assistant", "content": 3}], "message 1: 'content' must be a string"),
    ([user("hi"), assistant("x", thinking=["a"])], "message 1: 'thinking' must be a string"),
    ([user("hi"), {"role": "system", "content": "x"}], "message 1: a system message may only come first"),
    ([user("hi"), user("again")], "message 1: expected a assistant message"),
    ([assistant("first")], "message 0: expected a user message"),
    ([{"role": "system", "content": "x"}], "system message alone"),
    ([{"role": "user", "content": "hi", "name": "bob"}], r"message 0: unknown fields \['name'\]"),
    ([user("hi"), "oops"], "message 1: expected an object"),
])
def test_malformed_conversations_are_rejected_with_the_index(messages, match):
    with pytest.raises(LanternError, match=match):
        validate(messages)


# --------------------------------------------------------------------------- files


def test_jsonl_round_trip(tmp_path):
    conversations = [[user("hi"), assistant("hello", thinking="greet")],
                     [{"role": "system", "content": "Reasoning: none"}, user("é ✓"), assistant("ok")]]
    path = tmp_path / "chat.jsonl"
    write_jsonl(path, conversations)
    assert load_jsonl(path) == conversations
    assert path.read_text(encoding="utf-8").count("\n") == 2


def test_jsonl_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"messages": [user("hi")]})
    cases = [
        ("{not json", r"bad.jsonl:2: invalid JSON"),
        (json.dumps({"text": "hi"}), r"bad.jsonl:2: expected an object with a 'messages' list"),
        (json.dumps({"messages": [user("hi"), {"role": "robot", "content": ""}]}),
         r"bad.jsonl:2: message 1: unknown role"),
    ]
    for line, match in cases:
        path.write_text(f"{good}\n{line}\n\n", encoding="utf-8")
        with pytest.raises(LanternError, match=match):
            load_jsonl(path)
    with pytest.raises(LanternError, match="cannot read"):
        load_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(LanternError, match="conversation 1: message 0"):
        write_jsonl(path, [[user("ok")], [{"role": "x", "content": ""}]])


# --------------------------------------------------------------------------- training helpers and views


def test_targets_and_packing_keep_every_trained_token(tok):
    rendered = [render([user("hi"), assistant("hello" * k, thinking="t")], tok, reasoning="low")
                for k in (1, 3, 2, 5)]
    seq_len = max(len(r.ids) for r in rendered)
    rows = pack(rendered, seq_len=seq_len, pad_id=0)
    assert all(len(row.inputs) == len(row.targets) == len(row.segments) == seq_len for row in rows)
    trained = [t for row in rows for t in row.targets if t != -1]
    assert trained == [t for r in rendered for t in r.targets() if t != -1]
    assert sum(r.mask[1:].count(1) for r in rendered) == len(trained)
    for row in rows:  # each segment is one whole conversation, starting with BOS
        starts = [i for i, s in enumerate(row.segments) if s >= 0 and (i == 0 or row.segments[i - 1] != s)]
        assert all(row.inputs[i] == tok.eot_id for i in starts)
    cut = pack(rendered[3:], seq_len=4, pad_id=0)
    assert len(cut) == 1 and cut[0].inputs == rendered[3].ids[:4]
    with pytest.raises(LanternError, match="seq_len"):
        pack(rendered, seq_len=0, pad_id=0)


def test_show_colours_the_mask_and_has_a_plain_fallback(tok):
    r = render([user("hi"), assistant("hello", thinking="t")], tok, reasoning="low")
    plain = show(r, tok, color=False)
    assert plain.replace("⟦", "").replace("⟧", "") == tok.decode(r.ids)
    assert plain.endswith("<|assistant|>⟦<|think|>t<|/think|>hello<|end|>⟧")
    coloured = show(r, tok)
    assert "\x1b[32m<|think|>t<|/think|>hello<|end|>\x1b[0m" in coloured
    assert coloured.startswith("\x1b[90m<|endoftext|>")


def test_rendered_targets_are_shifted_and_masked():
    assert Rendered([1, 2, 3], [0, 1, 0], "low").targets() == [2, -1]
