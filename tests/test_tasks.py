"""Verifiable tasks: deterministic, disjoint splits, correct traces, robust evaluation."""

import re
import statistics
from collections import Counter

import pytest

from lanternlm.chat import REASONING_LEVELS, load_jsonl, render, validate
from lanternlm.errors import LanternError
from lanternlm.tasks import (TASKS, Arithmetic, Example, LetterCounting, WordReversal, get_task, make_sft_mixture,
                             numbers_in, split_of, write_jsonl)
from lanternlm.tasks.base import TEST_PERCENT, as_asked
from lanternlm.tasks.words import ENGLISH_WORDS, word_list
from lanternlm.tokenizer import Tokenizer

LEVELS = ("low", "medium", "high")


def letters_example(word, letter):
    return Example("letters", word, f"How many {letter}'s are in {word}?", str(word.count(letter)),
                   {"word": word, "letter": letter})


def arithmetic_example(a, op, b):
    result = {"add": a + b, "sub": a - b, "mul": a * b}[op]
    return Example("arithmetic", f"{a}{op}{b}", "?", str(result), {"a": a, "b": b, "op": op})


# --------------------------------------------------------------------------- generation and splits


@pytest.mark.parametrize("name", list(TASKS))
def test_generation_is_deterministic_under_a_seed(name):
    task = TASKS[name]
    first = task.generate(30, seed=7)
    assert first == task.generate(30, seed=7)
    assert [e.question for e in first] != [e.question for e in task.generate(30, seed=8)]
    assert all(e.task == name for e in first)


@pytest.mark.parametrize("name", list(TASKS))
def test_train_and_test_never_share_a_key(name):
    task = TASKS[name]
    train = task.generate(1500, seed=0, split="train")
    test = task.generate(20 if name == "glue" else 60, seed=0, split="test")
    assert {e.key for e in train}.isdisjoint({e.key for e in test})
    assert all(task.split(e.key) == "train" for e in train)
    assert all(task.split(e.key) == "test" for e in test)
    assert len({(e.key, *sorted(e.fields.items())) for e in test}) == len(test)  # all distinct


def test_held_out_words_are_about_ten_percent_and_english_words_are_held_out_whole():
    words = word_list()
    assert words == tuple(sorted(set(words))) and len(words) > 1000
    assert all(w.isalpha() and w.islower() and 3 <= len(w) <= 12 for w in words)
    share = sum(split_of("letters", w) == "test" for w in words) / len(words)
    assert abs(share - TEST_PERCENT / 100) < 0.03
    letter_test_words = {e.fields["word"] for e in TASKS["letters"].generate(100, seed=1, split="test")}
    train_words = {e.fields["word"] for e in TASKS["letters"].generate(3000, seed=1)}
    assert letter_test_words.isdisjoint(train_words)
    for name in ("letters", "reverse"):  # "strawberry" and co. are asked about, never trained on
        train = {e.key for e in TASKS[name].generate(5000, seed=2)}
        test = {e.key for e in TASKS[name].generate(300, seed=2, split="test")}
        assert "strawberry" in ENGLISH_WORDS and train.isdisjoint(ENGLISH_WORDS)
        assert 0.2 < len(test & set(ENGLISH_WORDS)) / len(test) < 0.6


def test_a_constant_letter_count_scores_at_most_a_third():
    for seed in range(3):
        answers = Counter(e.answer for e in TASKS["letters"].generate(200, seed=seed, split="test"))
        assert answers.most_common(1)[0][1] / 200 <= 0.35
        assert {"0", "1", "2", "3"} <= set(answers)


@pytest.mark.parametrize("reply,correct", [
    ('The letter u appears 1 time in "urldefrag".', True),
    ("There is one u.", True),
    ("1", True),
    ('The letter u appears 1 time in "crcrcr".', False),  # the example: right number, other word
    ("The letter r appears 1 time.", False),
    ("There is 1 r's.", False),
    ('The letter u appears 2 times in "urldefrag".', False),
])
def test_letters_grading_is_strict_about_the_word_and_letter(reply, correct):
    example = Example("letters", "urldefrag", "How many u's are in urldefrag?", "1",
                      {"word": "urldefrag", "letter": "u"})
    assert TASKS["letters"].evaluate(example, reply) is correct


def test_reversal_and_arithmetic_grading_check_what_they_restate():
    rev = Example("reverse", "lantern", "Reverse the word lantern.", "nretnal", {"word": "lantern"})
    assert TASKS["reverse"].evaluate(rev, '"lantern" reversed is "nretnal".')
    assert TASKS["reverse"].evaluate(rev, "nretnal")
    assert not TASKS["reverse"].evaluate(rev, '"lanterns" reversed is "nretnal".')
    add = Example("arithmetic", "47+385", "What is 47 + 385?", "432", {"a": 47, "b": 385, "op": "add"})
    assert TASKS["arithmetic"].evaluate(add, "47 + 385 = 432.")
    assert TASKS["arithmetic"].evaluate(add, "The answer is 432")
    assert not TASKS["arithmetic"].evaluate(add, "47 + 358 = 432.")


def test_bad_generation_arguments():
    with pytest.raises(LanternError, match="unknown split"):
        TASKS["letters"].generate(3, seed=0, split="val")
    with pytest.raises(LanternError, match="distinct test examples"):
        TASKS["reverse"].generate(5000, seed=0, split="test")
    with pytest.raises(LanternError, match="unknown operations"):
        Arithmetic(ops=("div",))
    with pytest.raises(LanternError, match="max_mul_digits"):
        Arithmetic(max_digits=9)
    with pytest.raises(LanternError, match="no thinking trace for level 'none'"):
        TASKS["letters"].thinking(letters_example("cat", "a"), "none")


# --------------------------------------------------------------------------- evaluation and reward


def test_numbers_in_text():
    assert numbers_in("There are three r's, 1,234 and -5 (not 2.5)") == [3, 1234, -5]


def test_grade_splits_the_reply_ids_and_judges_only_the_answer():
    task, ex = TASKS["letters"], letters_example("strawberry", "r")
    tok = Tokenizer([])
    think, end_think, end = (tok.special_id(s) for s in ("<|think|>", "<|/think|>", "<|end|>"))
    reply = [think, *tok.encode("s t r a w b e r r y, maybe 2"), end_think, *tok.encode(" It's 3!"), end,
             *tok.encode("junk 2")]
    graded = task.grade(ex, reply, tok)
    assert graded.correct and graded.answer == "It's 3!"
    assert tok.decode(graded.thinking) == "s t r a w b e r r y, maybe 2"
    wrong = task.grade(ex, [think, *tok.encode("3"), end_think, *tok.encode("2")], tok)
    assert not wrong.correct and wrong.answer == "2"
    cut_off = task.grade(ex, [think, *tok.encode("s t r 3")], tok)  # never closed: no answer
    assert not cut_off.correct and cut_off.answer == ""


def test_letters_evaluation_accepts_phrasings_and_rejects_wrong_counts():
    task, ex = TASKS["letters"], letters_example("strawberry", "r")
    for good in ("3", "There are 3 r's in strawberry.", "three", "**3**", "The letter r appears 3 times.",
                 "It's 3!", task.reply(ex)):
        assert task.evaluate(ex, good), good
        assert task.reward(ex, good) == 1.0
    for bad in ("2", "There are four.", "", "strawberry"):
        assert not task.evaluate(ex, bad), bad
        assert task.reward(ex, bad) == 0.0
    zero = letters_example("strawberry", "q")
    assert task.evaluate(zero, "There are no q's.") and task.evaluate(zero, task.reply(zero))


def test_arithmetic_evaluation():
    task = TASKS["arithmetic"]
    ex = arithmetic_example(123, "add", 456)
    for good in ("579", "123 + 456 = 579.", "The answer is 579", "= 579", "It is 5,79 ... no: 579"):
        assert task.evaluate(ex, good), good
    for bad in ("578", "123 + 456", "579 = 123 + 456", ""):
        assert not task.evaluate(ex, bad), bad
    neg = arithmetic_example(12, "sub", 30)
    assert task.evaluate(neg, "12 - 30 = -18") and task.evaluate(neg, "−18")
    assert not task.evaluate(neg, "18")


def test_reverse_evaluation():
    task = WordReversal()
    ex = Example("reverse", "lantern", "Reverse the word lantern.", "nretnal", {"word": "lantern"})
    for good in ("nretnal", "\"lantern\" reversed is \"nretnal\".", "It's 'nretnal'.", "**nretnal**",
                 "The answer: NRETNAL"):
        assert task.evaluate(ex, good), good
    for bad in ("lantern", "nretnl", "\"nretnal\" reversed is \"lantern\"", ""):
        assert not task.evaluate(ex, bad), bad


def test_glue_rubric():
    task = TASKS["glue"]
    examples = task.generate(200, seed=0)
    kinds = {e.fields["kind"] for e in examples}
    assert kinds == {"greeting", "identity", "capabilities", "refusal", "thanks"}
    for e in examples:
        assert task.evaluate(e, task.reply(e)), e
    refusal = next(e for e in examples if e.fields["kind"] == "refusal")
    assert task.evaluate(refusal, "Sorry, I cannot do that.")
    assert not task.evaluate(refusal, "Sure! Here it is.")
    identity = next(e for e in examples if e.fields["kind"] == "identity")
    assert not task.evaluate(identity, "I am ChatGPT.")
    capabilities = next(e for e in examples if e.fields["kind"] == "capabilities")
    assert not task.evaluate(capabilities, "I can do anything.")
    assert task.evaluate(capabilities, "I count letters and reverse words.")


# --------------------------------------------------------------------------- traces are correct


def test_letter_traces_spell_the_word_and_count_right():
    task = LetterCounting()
    for ex in task.generate(300, seed=3):
        word, letter, count = ex.fields["word"], ex.fields["letter"], int(ex.answer)
        assert count == word.count(letter)
        low = task.thinking(ex, "low").splitlines()
        assert low[:-1] == [f"{i} {ch}" for i, ch in enumerate(word, start=1)]
        assert low[-1] == f"{letter}: {count}"
        medium = task.thinking(ex, "medium").splitlines()
        assert [line.split(",")[0] for line in medium[:-1]] == low[:-1]
        counted = [numbers_in(line)[-1] for line in medium[:-1] if ", count " in line]
        assert counted == list(range(1, count + 1))
        assert medium[-1] == f"Total: {count}"
        high = task.thinking(ex, "high").splitlines()
        assert high[1:-1] == medium[:-1]  # the same numbered lines, in the same tokens
        assert high[0] == f"Spell {as_asked(ex.question, word)} one letter per line and count each {letter}:"
        assert numbers_in(high[-1])[-1] == count


def test_reverse_traces_spell_backwards():
    task = WordReversal()
    for ex in task.generate(200, seed=4):
        word = ex.fields["word"]
        assert ex.answer == word[::-1]
        low = task.thinking(ex, "low").splitlines()
        assert low[0].replace(" ", "") == word and low[1].replace(" ", "") == word[::-1]
        for level in ("medium", "high"):
            trace = task.thinking(ex, level)
            assert f"Joined: {word[::-1]}" in trace
        numbered = [f"{i} {ch}" for i, ch in enumerate(word, start=1)]  # letter counting's own lines
        back = numbered[::-1]
        medium = task.thinking(ex, "medium").splitlines()
        assert medium == numbered + back + [f"Joined: {word[::-1]}"]
        high = task.thinking(ex, "high").splitlines()
        n = len(word)
        assert high[1:n + 1] == numbered and high[n + 1] == f"Read from {n} down to 1:"
        assert high[n + 2:2 * n + 2] == back


EQUATION = re.compile(r"(-?\d+(?:\s*[-+*/]\s*\d+)+)\s*=\s*(-?\d+)")


def check_equations(text):
    """Re-evaluate every ``a op b ... = c`` in a trace; return how many were checked."""
    clean = re.sub(r"\b(carry|borrow) ", "", text)
    checked = 0
    for expr, result in EQUATION.findall(clean):
        assert eval(expr) == int(result), f"{expr} = {result} in:\n{text}"  # digits and + - * / only
        checked += 1
    return checked


CASES = [(4817, "add", 395), (95, "add", 7), (0, "add", 0), (502, "sub", 67), (67, "sub", 502), (1000, "sub", 999),
         (5, "sub", 5), (4817, "mul", 35), (999, "mul", 99), (1234, "mul", 0), (0, "mul", 7), (7, "mul", 10)]


@pytest.mark.parametrize("level", LEVELS)
def test_arithmetic_traces_are_true_and_end_at_the_result(level):
    task = Arithmetic(max_digits=5, max_mul_digits=3)
    examples = [arithmetic_example(*case) for case in CASES] + task.generate(300, seed=5)
    checked = 0
    for ex in examples:
        trace = task.thinking(ex, level)
        checked += check_equations(trace)
        last = trace.splitlines()[-1]
        assert numbers_in(last.split("=")[-1]) == [int(ex.answer)], trace
        assert task.parse(task.reply(ex)) == ex.answer
    assert checked > 3 * len(examples)


def test_carries_and_borrows_are_written_out():
    task = TASKS["arithmetic"]
    add = task.thinking(arithmetic_example(4817, "add", 395), "medium").splitlines()
    assert add[:2] == ["ones: 7+5=12, write 2, carry 1", "tens: 1+9+1=11, write 1, carry 1"]
    sub = task.thinking(arithmetic_example(502, "sub", 67), "high").splitlines()
    assert sub[2] == "tens: 0-1=-1<6, borrow: 9-6=3, write 3, borrow 1"
    mul = task.thinking(arithmetic_example(4817, "mul", 35), "low").splitlines()
    assert mul == ["4817 * 5 = 24085", "4817 * 30 = 144510", "24085 + 144510 = 168595", "4817 * 35 = 168595"]
    high = task.thinking(arithmetic_example(95, "mul", 7), "high").splitlines()
    assert high[1:4] == ["5*7+0=35, write 5, carry 3", "9*7+3=66, write 66", "95 * 7 = 665"]


@pytest.mark.parametrize("name", list(TASKS))
def test_traces_grow_from_low_to_high(name):
    task = TASKS[name]
    examples = task.generate(100, seed=6)
    mean = {level: statistics.mean(len(task.thinking(e, level)) for e in examples) for level in LEVELS}
    assert mean["low"] < mean["medium"] < mean["high"], mean


# --------------------------------------------------------------------------- conversations and mixture


@pytest.mark.parametrize("name", list(TASKS))
def test_to_conversation_follows_the_chat_format(name):
    task = TASKS[name]
    ex = task.generate(1, seed=0)[0]
    for level in REASONING_LEVELS:
        messages = validate(task.to_conversation(ex, level))
        assert messages[0] == {"role": "system", "content": f"Reasoning: {level}"}
        assert messages[1]["content"] == ex.question
        assert ("thinking" in messages[2]) == (level != "none")
        assert task.evaluate(ex, messages[2]["content"])
    with pytest.raises(LanternError, match="unknown reasoning level"):
        task.to_conversation(ex, "max")


def test_task_weights_set_each_tasks_number_of_conversations():
    mixture = make_sft_mixture(["letters", "glue"], n_per_task=30, seed=2, multi_turn=0.0, weights=[1.0, 1 / 3])
    letters = {e.question for e in get_task("letters").generate(30, seed=2, split="train")}
    glue = sorted(e.question for e in get_task("glue").generate(10, seed=2, split="train"))
    asked = [conv[1]["content"] for conv in mixture]
    assert len(asked) == 40 and sum(q in letters for q in asked) == 30
    assert sorted(q for q in asked if q not in letters) == glue
    with pytest.raises(LanternError, match="2 tasks; give one per task"):
        make_sft_mixture(["letters", "glue"], 3, weights=[1.0])
    with pytest.raises(LanternError, match="finite and > 0"):
        make_sft_mixture(["letters", "glue"], 3, weights=[1.0, -1.0])


def test_mixture_is_deterministic_balanced_and_renders(tmp_path):
    mixture = make_sft_mixture(["letters", "arithmetic", "reverse", "glue"], n_per_task=40,
                               levels=REASONING_LEVELS, seed=3, multi_turn=0.2)
    assert mixture == make_sft_mixture(["letters", "arithmetic", "reverse", "glue"], n_per_task=40,
                                       levels=REASONING_LEVELS, seed=3, multi_turn=0.2)
    user_turns = [m for conv in mixture for m in conv if m["role"] == "user"]
    assert len(user_turns) == 4 * 40
    assert any(len(conv) == 5 for conv in mixture)  # some two-exchange conversations
    levels = [conv[0]["content"] for conv in mixture]
    assert all(levels.count(f"Reasoning: {level}") >= 25 for level in REASONING_LEVELS)  # 40 each before joins
    tok = Tokenizer.train([m["content"] for conv in mixture[:50] for m in conv], vocab_size=256 + 8 + 30)
    for conv in mixture:
        rendered = render(conv, tok)
        assert rendered.reasoning == conv[0]["content"].split()[-1]
        assert 0 < sum(rendered.mask) < len(rendered.mask)
    path = tmp_path / "sft.jsonl"
    write_jsonl(path, mixture)
    assert load_jsonl(path) == mixture
    with pytest.raises(LanternError, match="unknown task"):
        make_sft_mixture(["chess"], 1)
    with pytest.raises(LanternError, match="unknown reasoning levels"):
        make_sft_mixture(["letters"], 1, levels=["max"])


def test_preview_and_write_mixture(tmp_path):
    from lanternlm.tasks import preview, write_mixture

    text = preview("letters", n=2, seed=0, reasoning="high")
    example = TASKS["letters"].generate(2, seed=0)[1]
    assert text.count("--- letters #") == 2 and example.question in text and "one letter per line and count each" in text
    assert "thinking" not in preview("letters", n=1, reasoning="none")
    tok = Tokenizer.train(["How many a's are in banana?"] * 3, vocab_size=256 + 8 + 5)
    shown = preview("reverse", n=1, reasoning="low", tokenizer=tok)
    assert "<|assistant|>⟦<|think|>" in shown and "trained]" in shown
    path = tmp_path / "mix.jsonl"
    count = write_mixture(path, ["letters", "glue"], 10, seed=1)
    assert count == len(load_jsonl(path)) == len(make_sft_mixture(["letters", "glue"], 10, seed=1))


def test_a_task_with_few_test_examples_raises_or_gives_what_it_has():
    glue = TASKS["glue"]
    available = glue.generate(10_000, seed=0, split="test", at_most=True)
    assert 0 < len(available) < 10_000
    assert len({(e.key, *sorted(e.fields.items())) for e in available}) == len(available)
    assert glue.generate(len(available), seed=0, split="test") == available
    with pytest.raises(LanternError, match=f"found only {len(available)} distinct test examples"):
        glue.generate(len(available) + 1, seed=0, split="test")


def test_no_held_out_word_or_sum_reaches_the_training_mixture():
    """The SFT mixture (and so every stage that draws training questions from the tasks)
    never asks about the English words or the demo's sum, in any task."""
    mixture = make_sft_mixture(["letters", "arithmetic", "reverse"], n_per_task=3000, seed=3)
    asked = " ".join(turn["content"] for chat in mixture for turn in chat if turn["role"] == "user")
    words = set(re.findall(r"[a-z]+", asked))
    assert not words & set(ENGLISH_WORDS)
    assert "47 + 385" not in asked and "47+385" not in asked
    for name in ("letters", "reverse"):  # and each task's hashed test words stay out of its own training
        trained = {e.key for e in TASKS[name].generate(3000, seed=3)}
        assert not trained & {e.key for e in TASKS[name].generate(200, seed=0, split="test")}


def test_tasks_with_settings_state_their_range():
    from lanternlm.tasks import get_task

    small = get_task("arithmetic:max_mul_digits=1")
    assert small is not TASKS["arithmetic"] and small.spec == "arithmetic:max_mul_digits=1"
    assert small.scope == "+ and - up to 3 digits, * by up to 1 digit"
    assert all(e.fields["b"] < 10 for e in small.generate(300, seed=0) if e.fields["op"] == "mul")
    assert not any(e.key == "47+385" for e in small.generate(3000, seed=0))  # still held out
    assert get_task("arithmetic") is TASKS["arithmetic"] and TASKS["letters"].scope == ""
    with pytest.raises(LanternError, match="KEY=INT"):
        get_task("arithmetic:max_mul_digits=one")
    assert get_task("arithmetic:max_digits=2:max_mul_digits=1").scope == "+ and - up to 2 digits, * by up to 1 digit"
    with pytest.raises(LanternError, match="unexpected keyword"):
        get_task("arithmetic:digits=2")
