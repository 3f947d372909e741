"""Text on top of the engine: streaming UTF-8, stop strings, samples of one prompt.

A *scripted* model makes the text predictable: a real GPT whose weights are set so that
its prediction at position p is ``script[p]`` whatever the tokens (blocks silenced, the
position embedding one-hot, the head reading the position out). Greedy generation after
a prompt of n tokens then writes ``script[n-1:]``.
"""


import pytest
import torch

from lanternlm.engine import Engine
from lanternlm.generate import complete, encode_prompt, held_back, stream_text
from lanternlm.model import GPT, GPTConfig
from lanternlm.sampling import SamplingParams
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
