"""The scheduler: requests with their own settings joining and leaving a running batch.

Every check compares a request served among others with the same request served alone
(or with full recomputation, in test_engine.py), on a tiny random model with large
weights, so that its distributions are far from flat and float rounding never decides a
token.
"""

import pytest
import torch

from lanternlm.engine import Engine, Request, Scheduler, ThinkingBudget
from lanternlm.errors import LanternError
from lanternlm.model import GPT, GPTConfig
from lanternlm.sampling import SamplingParams

CONFIG = GPTConfig(vocab_size=96, block_size=48, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                   pos_encoding="rope", norm="rmsnorm", mlp="swiglu", bias=False, tie_embeddings=False,
                   init_std=0.3)
GREEDY = SamplingParams(temperature=0)


def make_engine(**kwargs) -> Engine:
    torch.manual_seed(0)
    return Engine(GPT(CONFIG).eval(), **kwargs)


def serve(scheduler: Scheduler, arrivals: list[tuple[int, Request]]) -> list[list[list[int]]]:
    """Submit each request before step ``arrival`` (in the order given) and step until idle;
    the tokens of every request's samples, ``[request][sample]``."""
    pending, tokens, ids, step = list(arrivals), {}, [], 0
    while pending or not scheduler.idle:
        while pending and pending[0][0] <= step:
            ids.append((scheduler.submit(pending[0][1]), pending.pop(0)[1].n))
        for event in scheduler.step():
            tokens.setdefault((event.request, event.sample), []).append(event.token)
        step += 1
    return [[tokens.get((i, s), []) for s in range(n)] for i, n in ids]


def alone(engine: Engine, request: Request) -> list[list[int]]:
    return serve(Scheduler(engine, request.n), [(0, request)])[0]


def test_a_seeded_request_gives_the_same_tokens_whatever_else_runs():
    engine = make_engine()
    target = Request([5, 17, 3, 88], max_tokens=20, sampling=SamplingParams(temperature=0.9, top_k=30, seed=7))
    others = [
        Request([1, 2], max_tokens=6, sampling=GREEDY),
        Request([9] * 7, max_tokens=25, sampling=SamplingParams(temperature=1.3, top_p=0.8,
                                                               repetition_penalty=1.2, seed=1)),
        Request([3, 4, 5], max_tokens=4, sampling=SamplingParams(temperature=0.9, top_k=30, seed=99)),  # same group
        Request([60], max_tokens=30, sampling=SamplingParams(min_p=0.1), n=2),  # fresh randomness
        Request([1, 90, 8], max_tokens=12, sampling=SamplingParams(temperature=0.5, seed=3),
                thinking=ThinkingBudget(think=90, end_think=91, budget=2)),
    ]
    want = alone(engine, target)
    for arrival, max_batch in [(0, 8), (3, 8), (2, 3)]:  # with the others; joining them; queued behind them
        got = serve(Scheduler(engine, max_batch), [(0, r) for r in others] + [(arrival, target)])
        assert got[-1] == want, (arrival, max_batch)
        assert got[0] == alone(engine, others[0]) and got[1] == alone(engine, others[1])


def test_requests_joining_and_leaving_give_the_greedy_tokens_they_give_alone():
    engine = make_engine()
    prompts = [[5, 17, 3, 88, 42, 9, 1], [60], [7, 7, 7, 2], list(range(1, 30)), [11, 12]]
    requests = [Request(p, max_tokens=m, sampling=GREEDY) for p, m in zip(prompts, [9, 20, 3, 15, 12])]
    want = [alone(engine, r) for r in requests]
    arrivals = [(0, requests[0]), (0, requests[1]), (2, requests[2]), (4, requests[3]), (4, requests[4])]
    scheduler = Scheduler(engine, max_batch=3)  # the later ones wait for rows, then move as others leave
    assert serve(scheduler, arrivals) == want
    assert scheduler.num_active == 0 and int(scheduler.cache.lengths.sum()) == 0


def test_cancel_frees_the_row_at_once():
    engine = make_engine()
    requests = [Request([i + 1, i + 2], max_tokens=20, sampling=GREEDY) for i in range(3)]
    scheduler = Scheduler(engine, max_batch=2)
    a, b, c = (scheduler.submit(r) for r in requests)
    assert {e.request for e in scheduler.step()} == {a, b}
    assert (scheduler.num_active, scheduler.num_waiting) == (2, 1)
    scheduler.cancel(a)  # row 0 freed now: b (its prompt cached, its first token not yet fed) moves in
    assert scheduler.num_active == 1 and scheduler.cache.lengths.tolist() == [2, 0]
    events = scheduler.step()  # c is admitted on the next step
    assert sorted(e.request for e in events) == [b, c] and scheduler.num_waiting == 0
    rest = {b: [], c: []}
    while not scheduler.idle:
        for event in scheduler.step():
            rest[event.request].append(event.token)
    assert [events[0].token] + rest[b] == alone(engine, requests[1])[0][1:]
    assert [events[1].token] + rest[c] == alone(engine, requests[2])[0]
    with pytest.raises(LanternError, match="no request 3"):
        scheduler.cancel(3)
    scheduler.cancel(a)  # already gone: nothing happens


def test_cancelling_waiting_requests_and_single_samples():
    engine = make_engine()
    scheduler = Scheduler(engine, max_batch=3)
    first = scheduler.submit(Request([1, 2], max_tokens=5, sampling=SamplingParams(seed=0), n=3))
    later = scheduler.submit(Request([3], max_tokens=5, sampling=GREEDY))
    dropped = scheduler.submit(Request([4], max_tokens=5, sampling=GREEDY))
    scheduler.cancel(dropped)  # still waiting: never admitted
    scheduler.step()
    scheduler.cancel(first, sample=1)
    assert scheduler.num_active == 2
    events = []
    while not scheduler.idle:
        events += scheduler.step()
    seen = {(e.request, e.sample) for e in events}
    assert seen == {(first, 0), (first, 2), (later, 0)}


def test_n_samples_share_one_prefill_and_sample_zero_does_not_depend_on_n():
    engine = make_engine()
    shapes = []
    hidden = engine.model.hidden

    def counting(idx, **kwargs):
        shapes.append(tuple(idx.shape))
        return hidden(idx, **kwargs)

    engine.model.hidden = counting
    prompt = [5, 17, 3, 88, 42]
    settings = SamplingParams(temperature=1.0, seed=3)
    samples = alone(engine, Request(prompt, max_tokens=12, sampling=settings, n=4))
    prefills = [shape for shape in shapes if shape[1] > 1]
    assert prefills == [(1, len(prompt))]  # the prompt ran through the model once
    assert shapes[1:] == [(4, 1)] * 11  # then the four samples decode together
    del engine.model.hidden
    assert len({tuple(s) for s in samples}) == 4
    assert samples[0] == alone(engine, Request(prompt, max_tokens=12, sampling=settings))[0]


def test_generate_numbers_rows_prompt_times_n_plus_sample():
    engine = make_engine()
    prompts, settings = [[5, 17, 3], [60, 2]], SamplingParams(temperature=1.0, seed=4)
    out = engine.generate(prompts, max_tokens=8, sampling=settings, n=3)
    assert len(out) == 6
    for i, prompt in enumerate(prompts):
        want = alone(engine, Request(prompt, max_tokens=8, sampling=settings, n=3))
        assert [c.tokens for c in out[i * 3:i * 3 + 3]] == want
        assert all(c.prompt == prompt for c in out[i * 3:i * 3 + 3])
    # each prompt is a request of its own: equal prompts with a seed give equal samples
    twice = engine.generate([prompts[0]] * 2, max_tokens=8, sampling=settings)
    assert twice[0].tokens == twice[1].tokens == out[0].tokens


def test_generation_stop_ends_one_sample():
    engine = make_engine()
    generation = engine.stream([[5, 17, 3]], max_tokens=6, sampling=SamplingParams(seed=0), n=3)
    events = []
    for event in generation:
        events.append(event)
        if (event.row, event.index) == (1, 1):
            generation.stop(1)
    assert [e.index for e in events if e.row == 1] == [0, 1]
    assert [len([e for e in events if e.row == r]) for r in (0, 2)] == [6, 6]
    assert all(e.row == e.sample and e.request == 0 for e in events)


def test_forced_tokens_are_marked():
    engine = make_engine(vocab_limit=90)  # the model never samples the markers 90, 91 itself
    budget = ThinkingBudget(think=90, end_think=91, budget=3)
    settings = SamplingParams(temperature=1.0, seed=0)
    inside, outside = engine.generate([[1, 90, 5], [1, 2]], max_tokens=8, thinking=budget, sampling=settings)
    assert inside.tokens[3] == 91 and inside.forced == [False] * 3 + [True] + [False] * 4
    assert outside.forced == [False] * 8 and 91 not in outside.tokens
    events = list(engine.stream([[1, 90]], max_tokens=2, thinking=ThinkingBudget(90, 91, 0), sampling=settings))
    assert [(e.token, e.forced) for e in events][0] == (91, True)  # a budget of 0: forced at once
    assert events[1].forced is False


def test_scheduler_rejects_what_it_cannot_hold():
    engine = make_engine()
    scheduler = Scheduler(engine, max_batch=2, max_len=16)
    with pytest.raises(LanternError, match="n=3 samples"):
        scheduler.submit(Request([1], max_tokens=4, n=3))
    with pytest.raises(LanternError, match="cache positions"):
        scheduler.submit(Request([1] * 10, max_tokens=8))
    with pytest.raises(LanternError, match="context window is 48"):
        scheduler.submit(Request([1] * 48, max_tokens=1))
    with pytest.raises(LanternError, match="outside the model's vocabulary"):
        scheduler.submit(Request([96], max_tokens=1))
    with pytest.raises(LanternError, match="empty"):
        Request([], max_tokens=1)
    with pytest.raises(LanternError, match="max_batch"):
        Scheduler(engine, max_batch=0)
    assert scheduler.step() == [] and scheduler.idle
    scheduler.close()
    with pytest.raises(LanternError, match="closed"):
        scheduler.submit(Request([1], max_tokens=1))
