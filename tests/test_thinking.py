"""Thinking at inference: the budget forces <|/think|> exactly, thinking is hidden unless asked."""

from __future__ import annotations

import io

import pytest

from lanternlm.chat import render_for_generation
from lanternlm.checkpoint import save_model
from lanternlm.engine import Engine, ThinkingBudget
from lanternlm.errors import LanternError
from lanternlm.generate import complete, thinking_budget
from lanternlm.sampling import SamplingParams
from lanternlm.terminal import ChatSession, ChatTemplate, chat_loop, generate_command

from sft_helpers import scripted_model, train_tokenizer

GREEDY = SamplingParams(temperature=0)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(merges=100)


@pytest.fixture(scope="module")
def ids(tokenizer):
    a, b = tokenizer.encode("a"), tokenizer.encode("b")
    assert len(a) == len(b) == 1
    return {"a": a[0], "b": b[0], "think": tokenizer.special_id("<|think|>"),
            "end": tokenizer.special_id("<|/think|>"), "bos": tokenizer.eot_id}


def run_script(tokenizer, script, prompts, budget, max_tokens=7):
    engine = Engine(scripted_model(script, tokenizer.vocab_size))
    return [c.tokens for c in engine.generate(prompts, max_tokens=max_tokens, sampling=GREEDY,
                                              thinking=thinking_budget(tokenizer, budget))]


def test_budget_forces_end_of_thinking_exactly_at_the_budget(tokenizer, ids):
    a, E, T, bos = ids["a"], ids["end"], ids["think"], ids["bos"]
    inside = [bos, T]  # the prompt ends inside a thinking segment
    script = [0] + [a] * 20
    assert run_script(tokenizer, script, [inside], None) == [[a] * 7]
    assert run_script(tokenizer, script, [inside], 3) == [[a, a, a, E, a, a, a]]
    assert run_script(tokenizer, script, [inside], 0) == [[E, a, a, a, a, a, a]]
    # the model opens the segment itself: counting starts after its <|think|>
    assert run_script(tokenizer, [T] + [a] * 20, [[bos]], 2) == [[T, a, a, E, a, a, a]]


def test_budget_counts_each_segment_and_rows_apart(tokenizer, ids):
    a, b, E, T, bos = ids["a"], ids["b"], ids["end"], ids["think"], ids["bos"]
    # closes by itself within budget, then opens a second segment that runs over it
    script = [0, a, E, b, T, a, a, a, a, a]
    assert run_script(tokenizer, script, [[bos, T]], 2, max_tokens=8) == [[a, E, b, T, a, a, E, a]]
    # one row inside thinking, one not: only the first is cut
    script = [0, a, a, a, a, a, a, a, a]
    assert run_script(tokenizer, script, [[bos, T], [bos, b]], 1, max_tokens=4) == [[a, E, a, a], [a, a, a, a]]


def test_streamed_generation_applies_the_same_budget(tokenizer, ids):
    a, T, bos = ids["a"], ids["think"], ids["bos"]
    engine = Engine(scripted_model([0] + [a] * 20, tokenizer.vocab_size))
    budget = thinking_budget(tokenizer, 2)
    plain = engine.generate([[bos, T]], max_tokens=5, sampling=GREEDY, thinking=budget)[0]
    detailed = engine.generate([[bos, T]], max_tokens=5, sampling=GREEDY, thinking=budget, logprobs=True)[0]
    assert plain.tokens == detailed.tokens == [a, a, ids["end"], a, a]
    assert detailed.logprobs[2] < -5  # forced: the model itself gave <|/think|> little probability
    text = complete(engine, tokenizer, [[bos, T]], max_tokens=5, sampling=GREEDY, thinking=budget)[0].text
    assert text == "aa<|/think|>aa"


def test_budget_must_be_non_negative():
    with pytest.raises(LanternError, match="thinking budget must be >= 0"):
        ThinkingBudget(think=1, end_think=2, budget=-1)
    assert ThinkingBudget(1, 2, 5).inside([7, 1, 9]) and not ThinkingBudget(1, 2, 5).inside([7, 1, 2])


def chat_engine(tokenizer, prompt_ids, reply):
    """An engine whose greedy reply to ``prompt_ids`` is ``reply`` (text with markers)."""
    script = [0] * (len(prompt_ids) - 1) + tokenizer.encode(reply, allowed_special="all")
    return Engine(scripted_model(script, tokenizer.vocab_size, block_size=max(128, len(script) + 8)))


@pytest.mark.parametrize("show", [False, True])
def test_chat_hides_thinking_unless_shown_and_keeps_only_the_answer(tokenizer, show):
    fmt = ChatTemplate(system="You are a sarcastic assistant.", reasoning="high")
    prompt = fmt.prompt_ids(tokenizer, [], "Is water wet?")
    assert prompt == render_for_generation(
        [{"role": "system", "content": "Reasoning: high\nYou are a sarcastic assistant."},
         {"role": "user", "content": "Is water wet?"}], tokenizer)
    engine = chat_engine(tokenizer, prompt, "<|think|>they ask the obvious<|/think|>Shockingly, yes.<|end|>")
    session = ChatSession(engine, tokenizer, fmt, GREEDY, max_tokens=60, show_thinking=show)
    out = io.StringIO()
    session.reply("Is water wet?", out)
    shown = "[thinking] they ask the obvious [/thinking]\nShockingly, yes." if show else "Shockingly, yes."
    assert out.getvalue() == shown
    assert session.history == [{"role": "user", "content": "Is water wet?"},
                               {"role": "assistant", "content": "Shockingly, yes."}]


def test_chat_commands_set_reasoning_budget_and_display(tokenizer):
    engine = Engine(scripted_model([0], tokenizer.vocab_size))
    session = ChatSession(engine, tokenizer, ChatTemplate(), GREEDY)
    out = io.StringIO()
    chat_loop(session, io.StringIO("/reasoning low\n/budget 12\n/thinking on\n/reasoning max\n/budget x\n"), out)
    assert session.format.reasoning == "low" and session.thinking_budget == 12 and session.show_thinking
    assert "reasoning=low thinking_budget=12 show_thinking=on" in out.getvalue()
    assert "/reasoning: choose one of none, low, medium, high" in out.getvalue()
    assert "/budget: 'x' is not a number" in out.getvalue()


def test_generate_command_with_reasoning(tokenizer, tmp_path):
    prompt = render_for_generation([{"role": "user", "content": "2+2?"}], tokenizer, "low")
    engine = chat_engine(tokenizer, prompt, "<|think|>2+2=4<|/think|>4<|end|>")
    save_model(tmp_path, engine.model)
    tokenizer.save(tmp_path / "tokenizer.json")
    out = io.StringIO()
    generate_command(str(tmp_path), "2+2?", sampling=GREEDY, max_tokens=30, reasoning="low", out=out)
    assert out.getvalue() == "user: 2+2?\nassistant: 4\n"
    out = io.StringIO()
    generate_command(str(tmp_path), "2+2?", sampling=GREEDY, max_tokens=30, reasoning="low",
                     show_thinking=True, out=out)
    assert out.getvalue() == "user: 2+2?\nassistant: [thinking] 2+2=4 [/thinking]\n4\n"
    with pytest.raises(LanternError, match="need --reasoning"):
        generate_command(str(tmp_path), "x", sampling=GREEDY, show_thinking=True, out=out)
