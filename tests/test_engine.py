"""The engine loop end to end on tiny random models: parity with full recomputation."""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

import lanternlm.engine as engine_module
from lanternlm.engine import Engine
from lanternlm.errors import LanternError
from lanternlm.model import GPT, GPTConfig
from lanternlm.sampling import SamplingParams, sample_next_token, token_presence

GREEDY = SamplingParams(temperature=0)

CONFIGS = {
    "gpt2": GPTConfig(vocab_size=96, block_size=32, n_layer=2, n_head=2, n_embd=32),
    "llama": GPTConfig(vocab_size=96, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                       pos_encoding="rope", norm="rmsnorm", mlp="swiglu", bias=False,
                       tie_embeddings=False, qk_norm=True),
}


def make_model(family: str, seed: int = 0, std: float = 0.3) -> GPT:
    """A random model with large weights, so that its distributions are far from uniform."""
    torch.manual_seed(seed)
    return GPT(dataclasses.replace(CONFIGS[family], init_std=std)).eval()


PROMPTS = [[5, 17, 3, 88, 42, 9, 1], [60], [7, 7, 7, 2]]


@torch.no_grad()
def full_logits(model: GPT, ids: list[int]) -> torch.Tensor:
    """Next-token logits recomputed from scratch over the whole sequence (no cache)."""
    return model(torch.tensor([ids])).logits[0, -1]


@pytest.mark.parametrize("family", CONFIGS)
def test_cached_distributions_equal_full_recomputation(family):
    model = make_model(family)
    engine = Engine(model)
    V = model.config.vocab_size
    completions = engine.generate(PROMPTS, max_tokens=10, top_alternatives=V,
                                  sampling=SamplingParams(temperature=1.0, seed=3))
    for prompt, completion in zip(PROMPTS, completions):
        assert len(completion.events) == 10
        ids = list(prompt)
        for event in completion.events:
            reference = F.log_softmax(full_logits(model, ids), dim=-1)
            cached = torch.full((V,), float("nan"))
            for token, prob in event.raw_top:
                cached[token] = torch.tensor(prob).log()
            assert torch.allclose(cached, reference, atol=1e-5, rtol=0)
            assert abs(event.logprob - reference[event.token].item()) <= 1e-5
            assert event.sampled_logprob == pytest.approx(event.logprob, abs=1e-5)  # no filters
            ids.append(event.token)


@pytest.mark.parametrize("family", CONFIGS)
def test_greedy_equals_argmax_loop_without_cache(family):
    model = make_model(family)
    engine = Engine(model)
    for prompt, completion in zip(PROMPTS, engine.generate(PROMPTS, max_tokens=12, sampling=GREEDY)):
        ids = list(prompt)
        for _ in range(12):
            ids.append(int(full_logits(model, ids).argmax()))
        assert completion.tokens == ids[len(prompt):]
        assert completion.finish_reason == "length"


@pytest.mark.parametrize("family", CONFIGS)
def test_batch_gives_the_same_tokens_as_each_prompt_alone(family):
    engine = Engine(make_model(family))
    alone = [engine.generate([p], max_tokens=12, sampling=GREEDY)[0].tokens for p in PROMPTS]
    batch = [c.tokens for c in engine.generate(PROMPTS, max_tokens=12, sampling=GREEDY)]
    assert batch == alone


def test_sampling_equals_reference_loop_with_every_filter():
    """The random stream of the module docstring, rule 3, reproduced by a plain loop without
    a cache: sample s's token t is drawn with u[s, t] of the request's torch.rand(n, budget)."""
    model = make_model("llama")
    params = SamplingParams(temperature=0.8, top_k=20, top_p=0.9, min_p=0.02,
                            repetition_penalty=1.3, seed=11)
    prompt = [4, 8, 15, 16, 23, 42]
    got = Engine(model).generate([prompt], max_tokens=15, sampling=params, n=2)
    u = torch.rand(2, 15, generator=torch.Generator().manual_seed(11))  # budget: 15 fit the window
    for s in range(2):
        ids = list(prompt)
        for t in range(15):
            present = token_presence(torch.tensor([ids]), 96)
            ids.append(int(sample_next_token(full_logits(model, ids)[None], params, u[s, t:t + 1], present)))
        assert got[s].tokens == ids[len(prompt):]
    assert got[0].tokens != got[1].tokens


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_presence_and_frequency_penalties_equal_reference_loop(temperature):
    """The penalties count the completion's tokens only (not the prompt's), per sample."""
    model = make_model("gpt2")
    params = SamplingParams(temperature=temperature, presence_penalty=1.5, frequency_penalty=0.7, seed=3)
    prompt = [4, 8, 15, 16, 23, 42]
    got = Engine(model).generate([prompt, prompt[:3]], max_tokens=12, sampling=params, n=2)
    for i, p in enumerate([prompt, prompt[:3]]):
        u = torch.rand(2, 12, generator=torch.Generator().manual_seed(3))
        for s in range(2):
            ids = list(p)
            for t in range(12):
                counts = torch.bincount(torch.tensor(ids[len(p):], dtype=torch.long), minlength=96)[None]
                ids.append(int(sample_next_token(full_logits(model, ids)[None], params, u[s, t:t + 1], counts=counts)))
            assert got[2 * i + s].tokens == ids[len(p):]
    plain = Engine(model).generate([prompt], max_tokens=12, sampling=params.replace(presence_penalty=0, frequency_penalty=0))
    assert plain[0].tokens != got[0].tokens


def test_seed_makes_sampling_reproducible():
    engine = Engine(make_model("gpt2"))
    run = lambda seed: [c.tokens for c in engine.generate(
        PROMPTS, max_tokens=12, sampling=SamplingParams(temperature=1.0, seed=seed))]
    assert run(5) == run(5)
    assert run(5) != run(6)  # 36 draws from wide distributions: equal with negligible chance


def test_vocab_limit_never_produces_padding_ids():
    model = make_model("llama")  # untied head
    with torch.no_grad():  # make the padding rows (ids 80..95) the most likely by far
        model.lm_head.weight[80:] = model.lm_head.weight[:1] * 0 + 5.0
    hot = SamplingParams(temperature=2.0, seed=0)
    unlimited = [t for c in Engine(copy.deepcopy(model)).generate(PROMPTS, max_tokens=10, sampling=hot)
                 for t in c.tokens]
    assert max(unlimited) >= 80  # without the limit the padding ids win
    engine = Engine(model, vocab_limit=80)
    limited = engine.generate(PROMPTS, max_tokens=10, sampling=hot, top_alternatives=5, logprobs=True)
    assert all(t < 80 for c in limited for t in c.tokens)
    with pytest.raises(LanternError, match="vocab_limit"):
        Engine(model, vocab_limit=97)


def test_stop_tokens_end_rows_independently():
    engine = Engine(make_model("gpt2"))
    free = engine.generate(PROMPTS, max_tokens=10, sampling=GREEDY)
    stop = free[0].tokens[3]
    first = free[0].tokens.index(stop)
    out = engine.generate(PROMPTS, max_tokens=10, sampling=GREEDY, stop_tokens=[stop])
    assert out[0].tokens == free[0].tokens[:first]
    assert (out[0].finish_reason, out[0].stop_token) == ("stop", stop)
    for got, want in zip(out[1:], free[1:]):  # other rows go on, unchanged, unless they hit it too
        if stop in want.tokens:
            assert got.tokens == want.tokens[:want.tokens.index(stop)] and got.finish_reason == "stop"
        else:
            assert got.tokens == want.tokens and got.finish_reason == "length"


def test_stream_reports_finish_reasons_and_filtered_alternatives():
    engine = Engine(make_model("llama"))
    params = SamplingParams(temperature=0.7, top_k=3, seed=0)
    events = list(engine.stream(PROMPTS, max_tokens=5, sampling=params, top_alternatives=5))
    assert len(events) == 15
    assert [e.index for e in events if e.row == 1] == [0, 1, 2, 3, 4]
    assert [e.finish_reason for e in events if e.row == 2] == [None] * 4 + ["length"]
    for e in events:
        raw_probs = [p for _, p in e.raw_top]
        assert raw_probs == sorted(raw_probs, reverse=True) and len(raw_probs) == 5
        assert len(e.filtered_top) == 3  # top-k removed the others
        assert sum(p for _, p in e.filtered_top) == pytest.approx(1.0, abs=1e-5)
        assert {t for t, _ in e.filtered_top} == {t for t, _ in e.raw_top[:3]}
        assert e.token in {t for t, _ in e.filtered_top}
        chosen = dict(e.filtered_top)[e.token]
        assert e.sampled_logprob == pytest.approx(torch.tensor(chosen).log().item(), abs=1e-5)


def test_generation_stop_ends_one_row():
    engine = Engine(make_model("gpt2"))
    generation = engine.stream(PROMPTS, max_tokens=6, sampling=GREEDY)
    events = []
    for event in generation:
        events.append(event)
        if event.row == 1 and event.index == 1:
            generation.stop(1)
    assert [e.index for e in events if e.row == 1] == [0, 1]
    assert len([e for e in events if e.row == 0]) == 6


def test_context_window_error_and_left_truncation():
    model = make_model("gpt2")
    engine = Engine(model)
    long = list(range(1, 41))  # 40 tokens, window 32
    with pytest.raises(LanternError, match="context window is 32"):
        engine.generate([long], max_tokens=4, sampling=GREEDY)
    with pytest.raises(LanternError, match="truncate"):
        engine.generate([long[:32]], max_tokens=4, sampling=GREEDY)
    out = engine.generate([long], max_tokens=4, sampling=GREEDY, truncate="left")[0]
    assert out.prompt == long[-28:]  # room left for the 4 new tokens
    assert out.tokens == engine.generate([long[-28:]], max_tokens=4, sampling=GREEDY)[0].tokens
    # asking for more than half the window keeps half the window of prompt
    out = engine.generate([long], max_tokens=30, sampling=GREEDY, truncate="left")[0]
    assert out.prompt == long[-16:] and (len(out.tokens), out.finish_reason) == (16, "context")


def test_rows_that_fill_the_window_end_while_others_go_on():
    engine = Engine(make_model("llama"))
    prompts = [list(range(1, 30)), [3, 1, 4]]  # 29 tokens leave room for 3 in a window of 32
    out = engine.generate(prompts, max_tokens=20, sampling=GREEDY)
    assert (len(out[0].tokens), out[0].finish_reason) == (3, "context")
    assert (len(out[1].tokens), out[1].finish_reason) == (20, "length")
    assert out[1].tokens == engine.generate(prompts[1:], max_tokens=20, sampling=GREEDY)[0].tokens
    assert out[0].tokens == engine.generate(prompts[:1], max_tokens=20, sampling=GREEDY)[0].tokens


@pytest.mark.parametrize("prompts,kwargs,match", [
    ([[]], {}, "empty"),
    ([[1, 96]], {}, "outside the model's vocabulary"),
    ([[-1]], {}, "outside"),
    ([], {}, "no prompts"),
    ([[1]], {"max_tokens": 0}, "max_tokens"),
    ([[1]], {"truncate": "right"}, "truncate"),
    ([[1]], {"n": 0}, "samples"),
    ([[1]], {"top_alternatives": -1}, "top_alternatives"),
])
def test_bad_requests_raise(prompts, kwargs, match):
    engine = Engine(make_model("gpt2"))
    with pytest.raises(LanternError, match=match):
        engine.generate(prompts, **{"max_tokens": 3, **kwargs})


def test_bf16_weights_run_and_mostly_agree_with_fp32():
    fp32 = Engine(make_model("gpt2")).generate(PROMPTS, max_tokens=8, sampling=GREEDY)
    bf16 = Engine(make_model("gpt2"), dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    out = bf16.generate(PROMPTS, max_tokens=8, sampling=GREEDY)
    assert [c.finish_reason for c in out] == ["length"] * 3
    # the first token comes from the same prompt: rounding rarely flips a clear argmax
    assert sum(a.tokens[0] == b.tokens[0] for a, b in zip(out, fp32)) >= 2


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("min_weights", [0, engine_module.INT8_MIN_WEIGHTS])
def test_int8_weights_stay_close_to_fp32(family, min_weights, monkeypatch):
    monkeypatch.setattr(engine_module, "INT8_MIN_WEIGHTS", min_weights)  # 0: every linear layer
    model = make_model(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = engine_module.quantize_int8(model)
    int8_layers = [n for n, m in quantized.named_modules() if type(m).__name__ == "Linear"
                   and type(m).__module__.startswith("torch.ao.nn.quantized")]
    assert "lm_head" in int8_layers and (len(int8_layers) > 1) == (min_weights == 0)
    idx = torch.tensor([PROMPTS[0]])
    with torch.no_grad():
        ref, out = model(idx).logits, quantized(idx).logits
    # dynamic int8: logits move by a small fraction of their spread (errors add up layer by layer)
    assert (out - ref).abs().max() <= (0.1 if min_weights == 0 else 0.03) * (ref.max() - ref.min())
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.8
    # the caller's model is untouched (and a tied one stays tied)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert (model.lm_head is None) == model.config.tie_embeddings
    fp32 = Engine(model).generate(PROMPTS, max_tokens=6, sampling=GREEDY)
    int8 = Engine(model, int8=True).generate(PROMPTS, max_tokens=6, sampling=GREEDY)
    assert [c.finish_reason for c in int8] == ["length"] * 3
    assert sum(a.tokens[0] == b.tokens[0] for a, b in zip(int8, fp32)) >= 2


def test_int8_needs_cpu_fp32():
    with pytest.raises(LanternError, match="int8"):
        Engine(make_model("gpt2"), dtype=torch.bfloat16, int8=True)


def test_cuda_graphs_need_cuda():
    with pytest.raises(LanternError, match="CUDA"):
        Engine(make_model("gpt2"), device="cpu", cuda_graphs=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_decode_matches_eager():
    model = make_model("llama")
    prompts = PROMPTS + [list(range(1, 30))]  # the last row fills the window: retired mid-run
    eager = Engine(copy.deepcopy(model), device="cuda").generate(prompts, max_tokens=12, sampling=GREEDY)
    graphs = Engine(model, device="cuda", cuda_graphs=True)
    for _ in range(2):  # the second call replays the captured graph over a fresh cache
        out = graphs.generate(prompts, max_tokens=12, sampling=GREEDY)
        assert [c.tokens for c in out] == [c.tokens for c in eager]
        assert [c.finish_reason for c in out] == ["length"] * 3 + ["context"]


def model_snapshot(model: GPT) -> dict:
    return {"state": {k: (v.clone(), v.dtype, v.device, v.stride()) for k, v in model.state_dict().items()},
            "training": [m.training for m in model.modules()],
            "grads": [p.grad for p in model.parameters()]}


def assert_unchanged(model: GPT, before: dict) -> None:
    after = model_snapshot(model)
    assert after["training"] == before["training"] and all(g is None for g in after["grads"])
    for name, (value, dtype, device, stride) in before["state"].items():
        now = model.state_dict()[name]
        assert (now.dtype, now.device, now.stride()) == (dtype, device, stride), name
        assert torch.equal(now, value), name


@pytest.mark.parametrize("kwargs", [{}, {"dtype": torch.bfloat16}, {"int8": True}, {"vocab_limit": 80}])
@pytest.mark.parametrize("family", CONFIGS)
def test_the_engine_leaves_the_model_as_it_is(family, kwargs):
    model = make_model(family).train()  # a trainer's live policy, in training mode
    model.blocks[0].attn.eval()  # and one submodule's flag set otherwise, kept as it is
    before = model_snapshot(model)
    engine = Engine(model, **kwargs)
    engine.generate(PROMPTS, max_tokens=4, sampling=SamplingParams(temperature=0.9, repetition_penalty=1.2, seed=0),
                    top_alternatives=3)
    list(engine.stream(PROMPTS, max_tokens=3, sampling=GREEDY))
    assert_unchanged(model, before)
    assert (engine.model is model) == (kwargs in ({}, {"vocab_limit": 80}))  # a copy only to cast or quantize


def test_dropout_is_off_while_generating_a_training_model():
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(CONFIGS["gpt2"], dropout=0.5, init_std=0.3)).train()
    engine = Engine(model)
    first = engine.generate(PROMPTS, max_tokens=8, sampling=GREEDY)
    assert model.training and all(m.training for m in model.modules())
    assert [c.tokens for c in first] == [c.tokens for c in engine.generate(PROMPTS, max_tokens=8, sampling=GREEDY)]
    model.eval()
    assert [c.tokens for c in first] == [c.tokens for c in engine.generate(PROMPTS, max_tokens=8, sampling=GREEDY)]


@pytest.mark.parametrize("family", CONFIGS)  # tied head (the embeddings) and untied
def test_live_weight_updates_are_seen_by_the_next_generation(family):
    model = make_model(family)
    engine = Engine(model)  # CPU fp32: the engine multiplies by its own column-major copy of the head
    before = engine.generate(PROMPTS, max_tokens=6, sampling=GREEDY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    for _ in range(3):  # a few training steps on the live model: every weight moves in place
        ids = torch.tensor([PROMPTS[0]])
        model(ids[:, :-1], ids[:, 1:]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = engine.generate(PROMPTS, max_tokens=6, sampling=GREEDY)
    fresh = Engine(copy.deepcopy(model)).generate(PROMPTS, max_tokens=6, sampling=GREEDY)
    assert [c.tokens for c in after] == [c.tokens for c in fresh] != [c.tokens for c in before]
    trained = model.head_weight.detach().clone()
    with torch.no_grad():  # the head alone, in place: every logit 0, so greedy takes id 0
        model.head_weight.zero_()
    assert all(c.tokens == [0] * 6 for c in engine.generate(PROMPTS, max_tokens=6, sampling=GREEDY))
    owner = model.wte if model.lm_head is None else model.lm_head  # a new tensor in its place
    owner.weight = torch.nn.Parameter(trained)
    assert [c.tokens for c in engine.generate(PROMPTS, max_tokens=6, sampling=GREEDY)] == [c.tokens for c in after]
    assert model.head_weight.stride() == (model.config.n_embd, 1)  # the model's own layout stays


def test_an_extreme_repetition_penalty_still_samples_real_tokens():
    """A penalty near 0 (schemathesis found 2e-202) once made two logits infinite, the
    softmax NaN and the sampler return the vocabulary size as a token, which failed the
    next step; now every token is a real one, sampled and greedy."""
    torch.manual_seed(0)
    engine = Engine(GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=1, n_head=2, n_embd=16)), vocab_limit=60)
    for temperature in (1.0, 0.0):
        sampling = SamplingParams(temperature=temperature, repetition_penalty=2e-202, seed=1)
        out = engine.generate([[1, 2, 3, 2, 1]], max_tokens=12, sampling=sampling)[0]
        assert len(out.tokens) == 12 and all(0 <= t < 60 for t in out.tokens)
