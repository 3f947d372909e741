"""lantern serve: the official openai client against a real server on 127.0.0.1 (sync, async,
streaming), the wire format's details, bad requests, limits, and schemathesis on our own
OpenAPI document."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import threading
import time

import httpx
import openai
import pytest

from lanternlm.chat import ChatTokens, render_for_generation
from lanternlm.engine import Request
from lanternlm.errors import LanternError
from lanternlm.memory import num_params
from lanternlm.run import Run
from lanternlm.sampling import SamplingParams
from lanternlm.serve.app import ServeConfig, create_app, load_models
from lanternlm.serve.worker import Busy, LoopSink, Worker

from serve_helpers import ANSWER, HI, THOUGHT, Server, make_runs

uvicorn = pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def served(runs):
    models = load_models([str(runs["base"]), str(runs["chat"]), str(runs["thinker"])], ServeConfig(max_batch=8))
    server = Server(create_app(models))
    yield server
    server.close()
    for m in models:
        m.worker.close()


@pytest.fixture()
def client(served):
    return openai.OpenAI(base_url=served.url + "/v1", api_key="none", max_retries=0)


def chunks_of(client, **kwargs) -> list:
    return list(client.chat.completions.create(stream=True, **kwargs))


# --------------------------------------------------------------------------- chat


def test_models_and_health(client, served):
    cards = {m.id: m for m in client.models.list().data}
    assert sorted(cards) == ["base", "chat", "thinker"]
    assert cards["chat"].model_extra["chat"] is True and cards["base"].model_extra["stage"] == "pretrain"
    health = httpx.get(served.url + "/health").json()
    assert health["status"] == "ok" and health["models"]["chat"]["max_batch"] == 8


def test_chat_stream_equals_the_answer_and_has_openai_shape(client):
    ask = dict(model="chat", messages=HI, max_tokens=12, seed=7, temperature=0.9, logprobs=True, top_logprobs=3)
    whole = client.chat.completions.create(**ask)
    choice = whole.choices[0]
    chunks = chunks_of(client, stream_options={"include_usage": True}, **ask)
    assert len({(c.id, c.created, c.model) for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:-1])
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [choice.finish_reason] and chunks[-2].choices[0].finish_reason is not None
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == choice.message.content
    streamed = [e for c in chunks[:-1] if c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.model_dump() for e in streamed] == [e.model_dump() for e in choice.logprobs.content]
    # the log-probabilities' bytes join to the content; each is <= 0, with 3 alternatives
    content = choice.logprobs.content
    assert b"".join(bytes(e.bytes) for e in content).decode("utf-8", "replace") == choice.message.content
    assert all(e.logprob <= 0 and len(e.top_logprobs) == 3 for e in content)
    assert all(e.model_extra["filtered_logprob"] <= 0 for e in content)
    stop = 1 if choice.finish_reason == "stop" else 0
    assert whole.usage.completion_tokens == len(content) + whole.usage.completion_tokens_details.reasoning_tokens + stop


def test_usage_prompt_tokens_are_the_rendered_prompt(client, runs):
    out = client.chat.completions.create(model="chat", messages=HI, max_tokens=3, temperature=0)
    assert out.usage.prompt_tokens == len(render_for_generation(HI, runs["tokenizer"]))
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_seed_repeats_and_n_choices(client):
    ask = dict(model="chat", messages=HI, max_tokens=10, seed=3, temperature=1.0, n=3)
    first, again = client.chat.completions.create(**ask), client.chat.completions.create(**ask)
    texts = [c.message.content for c in first.choices]
    assert texts == [c.message.content for c in again.choices] and [c.index for c in first.choices] == [0, 1, 2]
    assert len(set(texts)) > 1  # three samples of a near-uniform model
    chunks = chunks_of(client, **ask)
    for i in range(3):
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == i]
        assert "".join(c.delta.content or "" for c in mine) == texts[i]
        assert sum(c.finish_reason is not None for c in mine) == 1 and mine[-1].finish_reason is not None


def test_thinking_is_reasoning_content_and_the_budget_caps_it(client, runs):
    tokenizer = runs["tokenizer"]
    out = client.chat.completions.create(model="thinker", messages=HI, reasoning_effort="high", temperature=0)
    message = out.choices[0].message
    assert message.content == ANSWER and message.model_extra["reasoning_content"] == THOUGHT
    assert message.model_extra["reasoning"] == THOUGHT and out.choices[0].finish_reason == "stop"
    thought, answer = len(tokenizer.encode(THOUGHT)), len(tokenizer.encode(ANSWER))
    assert out.usage.completion_tokens_details.reasoning_tokens == thought + 2
    assert out.usage.completion_tokens == thought + 2 + answer + 1
    chunks = chunks_of(client, model="thinker", messages=HI, reasoning_effort="high", temperature=0)
    deltas = [c.choices[0].delta for c in chunks]
    assert "".join(d.model_extra.get("reasoning_content") or "" for d in deltas) == THOUGHT
    assert "".join(d.content or "" for d in deltas) == ANSWER
    capped = client.chat.completions.create(model="thinker", messages=HI, reasoning_effort="high", temperature=0,
                                            extra_body={"thinking_budget": 2})
    assert capped.choices[0].message.model_extra["reasoning_content"] == tokenizer.decode(tokenizer.encode(THOUGHT)[:2])
    assert capped.usage.completion_tokens_details.reasoning_tokens == 4
    stopped = client.chat.completions.create(model="thinker", messages=HI, reasoning_effort="high", temperature=0,
                                             stop=[": o"])
    assert stopped.choices[0].message.content == "Answer" and stopped.choices[0].finish_reason == "stop"
    # thinking sent back by a client is dropped, as in lantern chat: the same prompt tokens
    history = HI + [{"role": "assistant", "content": ANSWER, "reasoning_content": "secret"}, HI[0]]
    plain = HI + [{"role": "assistant", "content": ANSWER}, HI[0]]
    count = lambda msgs: httpx.post(str(client.base_url).replace("/v1/", "/tokenize"),
                                    json={"model": "thinker", "messages": msgs}).json()["count"]
    assert count(history) == count(plain)


def test_length_finish_at_max_tokens_and_at_the_context(client):
    out = client.chat.completions.create(model="chat", messages=HI, max_tokens=2, temperature=0,
                                         extra_body={"top_k": 1})
    assert out.choices[0].finish_reason in ("length", "stop")
    long = client.completions.create(model="thinker", prompt=[1] * 100, max_tokens=1000, temperature=0)
    assert long.choices[0].finish_reason == "length"  # past its script the model never stops: the window fills
    assert long.usage.completion_tokens == 128 - 100


def test_async_concurrent_requests_equal_each_alone(served):
    async def go():
        client = openai.AsyncOpenAI(base_url=served.url + "/v1", api_key="none", max_retries=0)
        asks = [dict(model="chat", messages=[{"role": "user", "content": f"question {i}"}], max_tokens=8,
                     seed=i, temperature=0.8) for i in range(6)]
        together = await asyncio.gather(*(client.chat.completions.create(**a) for a in asks))
        alone = [await client.chat.completions.create(**a) for a in asks]
        streamed = []
        for a in asks[:2]:
            parts = [c.choices[0].delta.content or "" async for c in await client.chat.completions.create(
                stream=True, **a) if c.choices]
            streamed.append("".join(parts))
        return together, alone, streamed
    together, alone, streamed = asyncio.run(go())
    assert [t.choices[0].message.content for t in together] == [a.choices[0].message.content for a in alone]
    assert streamed == [a.choices[0].message.content for a in alone[:2]]


# --------------------------------------------------------------------------- completions, tokens


def test_completions_echo_scores_the_prompt(client, runs):
    tokenizer = runs["tokenizer"]
    scored = client.completions.create(model="base", prompt="the cat sat", max_tokens=0, echo=True, logprobs=2)
    lp = scored.choices[0].logprobs
    ids = tokenizer.encode("the cat sat")
    assert scored.choices[0].text == "the cat sat" and len(lp.tokens) == len(ids)
    assert "".join(lp.tokens) == "the cat sat" and lp.text_offset[0] == 0
    assert all(x is not None and x <= 0 for x in lp.token_logprobs) and all(len(t) <= 2 for t in lp.top_logprobs)
    model = Run(runs["base"]).model("cpu")
    import torch
    with torch.no_grad():
        logits = model(torch.tensor([[tokenizer.eot_id, *ids]])).logits[0].float()
    expected = torch.log_softmax(logits[:, :Run(runs["base"]).vocab_limit], -1)
    want = [expected[i, t].item() for i, t in enumerate(ids)]
    assert lp.token_logprobs == pytest.approx(want, abs=1e-4)
    # token-id prompts are echoed whole, the first token without a log-probability
    by_ids = client.completions.create(model="base", prompt=[tokenizer.eot_id, *ids], max_tokens=0, echo=True,
                                       logprobs=0)
    assert by_ids.choices[0].logprobs.token_logprobs[0] is None
    assert by_ids.choices[0].logprobs.token_logprobs[1:] == pytest.approx(want, abs=1e-4)
    # a stop token is not text, but it is listed with its log-probability, as OpenAI does
    thinker_prompt = render_for_generation(HI, tokenizer, "high")
    ended = client.completions.create(model="thinker", prompt=thinker_prompt, max_tokens=50, temperature=0, logprobs=1)
    assert ended.choices[0].finish_reason == "stop" and ended.choices[0].logprobs.tokens[-1] == "<|end|>"
    assert not ended.choices[0].text.endswith("<|end|>")
    both = client.completions.create(model="base", prompt=["a", "b"], max_tokens=3, seed=1, n=2)
    assert [c.index for c in both.choices] == [0, 1, 2, 3]


def test_completions_stream_joins_to_the_text(client):
    ask = dict(model="base", prompt="the", max_tokens=10, seed=2, echo=True)
    whole = client.completions.create(**ask)
    streamed = list(client.completions.create(stream=True, **ask))
    assert "".join(c.choices[0].text for c in streamed) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in streamed if c.choices[0].finish_reason] == [whole.choices[0].finish_reason]


def test_tokenize_and_detokenize(served, runs):
    tokenizer = runs["tokenizer"]
    out = httpx.post(served.url + "/tokenize", json={"model": "chat", "prompt": "hé"}).json()
    assert out["tokens"] == [tokenizer.eot_id, *tokenizer.encode("hé")] and out["count"] == len(out["tokens"])
    assert b"".join(bytes(p["bytes"]) for p in out["pieces"][1:]).decode() == "hé"
    back = httpx.post(served.url + "/detokenize", json={"model": "chat", "tokens": out["tokens"][1:]}).json()
    assert back["prompt"] == "hé" and back["pieces"] == out["pieces"][1:]


def test_token_ids_come_back_and_a_reply_prefix_branches(client, served, runs):
    tokenizer = runs["tokenizer"]
    t = ChatTokens.of(tokenizer)
    thought, answer = tokenizer.encode(THOUGHT), tokenizer.encode(ANSWER)
    ask = dict(model="thinker", messages=HI, reasoning_effort="high", temperature=0, logprobs=True, top_logprobs=3)
    out = client.chat.completions.create(**ask, extra_body={"return_token_ids": True})
    prompt = httpx.post(served.url + "/tokenize", json={"model": "thinker", "messages": HI,
                                                        "reasoning_effort": "high"}).json()["tokens"]
    choice = out.choices[0]
    assert out.model_extra["prompt_token_ids"] == prompt
    assert choice.model_extra["token_ids"] == [t.think, *thought, t.end_think, *answer, t.end]
    assert [e.model_extra["id"] for e in choice.logprobs.content] == answer  # content tokens, with their ids
    assert all(a.model_extra["id"] is not None for e in choice.logprobs.content for a in e.top_logprobs)
    chunks = chunks_of(client, **ask, extra_body={"return_token_ids": True})
    assert chunks[0].model_extra["prompt_token_ids"] == prompt
    assert sum((c.choices[0].model_extra.get("token_ids") or [] for c in chunks), []) == choice.model_extra["token_ids"]
    # branch: the first answer token replaced by another candidate; the script goes on by position
    other = next(a.model_extra["id"] for a in choice.logprobs.content[0].top_logprobs if a.model_extra["id"] != answer[0])
    prefix = [t.think, *thought, t.end_think, other]
    branch = client.chat.completions.create(**ask, extra_body={"reply_prefix": prefix, "return_token_ids": True})
    assert branch.choices[0].message.content == tokenizer.decode(answer[1:])
    assert branch.choices[0].message.model_extra["reasoning_content"] is None
    assert branch.model_extra["prompt_token_ids"] == prompt + prefix and branch.usage.prompt_tokens == len(prompt + prefix)
    # a prefix that stops inside the thinking: the rest of the thinking, then the answer
    mid = client.chat.completions.create(**ask, extra_body={"reply_prefix": [t.think, thought[0]]})
    assert mid.choices[0].message.model_extra["reasoning_content"] == tokenizer.decode(thought[1:])
    assert mid.choices[0].message.content == ANSWER
    bad = httpx.post(served.url + "/v1/chat/completions", json={**ask, "reply_prefix": [10 ** 6]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "reply_prefix"
    # completions: each choice's prompt ids and generated ids, streamed or not
    plain = client.completions.create(model="base", prompt="the", max_tokens=5, seed=1, extra_body={"return_token_ids": True})
    ids = plain.choices[0].model_extra
    assert ids["prompt_token_ids"] == [tokenizer.eot_id, *tokenizer.encode("the")] and len(ids["token_ids"]) == 5
    streamed = list(client.completions.create(model="base", prompt="the", max_tokens=5, seed=1, stream=True,
                                              extra_body={"return_token_ids": True}))
    assert streamed[0].choices[0].model_extra["prompt_token_ids"] == ids["prompt_token_ids"]
    assert sum((c.choices[0].model_extra["token_ids"] for c in streamed), []) == ids["token_ids"]


def test_the_page_and_its_files_are_served(served, runs):
    page = httpx.get(served.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for src in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        assert httpx.get(served.url + src).status_code == 200, src
    assert "/" not in httpx.get(served.url + "/openapi.json").json()["paths"]
    models = load_models([str(runs["chat"])], ServeConfig(max_batch=1))
    server = Server(create_app(models, ServeConfig(api_key="sesame")))
    try:  # the page holds no data: it loads without the key, then asks for it
        assert httpx.get(server.url + "/").status_code == 200
        assert httpx.get(server.url + "/static/app.js").status_code == 200
        assert httpx.get(server.url + "/v1/models").status_code == 401
    finally:
        server.close()
        models[0].worker.close()


# --------------------------------------------------------------------------- bad requests


BAD = [
    ({"model": "chat", "messages": None}, "messages"), ({"model": "chat", "messages": "hi"}, "messages"),
    ({"model": "chat", "messages": [123]}, "messages.0"), ({"model": "chat", "messages": [{}]}, "messages.0.role"),
    ({"model": "chat", "messages": [{"role": 123}]}, "messages.0.role"),
    ({"model": "chat", "messages": []}, "messages"),
    ({"model": "chat", "messages": HI, "temperature": -0.1}, "temperature"),
    ({"model": "chat", "messages": HI, "temperature": 2.5}, "temperature"),
    ({"model": "chat", "messages": HI, "top_p": 0}, "top_p"), ({"model": "chat", "messages": HI, "top_p": 1.5}, "top_p"),
    ({"model": "chat", "messages": HI, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"model": "chat", "messages": HI, "n": 9}, None),  # above the server's 8 rows
    ({"model": "chat", "messages": HI, "presence_penalty": 2.5}, "presence_penalty"),
    ({"model": "chat", "messages": HI, "frequency_penalty": -3}, "frequency_penalty"),
    ({"model": "chat", "messages": HI, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"model": "chat", "messages": [{"role": "user", "content": "word " * 600}]}, None),  # longer than the context
    ({"model": "chat", "messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
    ({"model": "chat", "messages": HI, "stop": [""]}, "stop"),
    ({"model": "base", "messages": HI}, "model"),  # a base model has no chat format
]


@pytest.mark.parametrize("body,param", BAD)
def test_bad_requests_get_openai_errors_and_the_server_goes_on(served, body, param):
    r = httpx.post(served.url + "/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param and error["message"]
    ok = httpx.post(served.url + "/v1/chat/completions", json={"model": "chat", "messages": HI, "max_tokens": 1})
    assert ok.status_code == 200


def test_invalid_json_unknown_model_and_bad_completions(served):
    r = httpx.post(served.url + "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "json_invalid"
    r = httpx.post(served.url + "/v1/chat/completions", json={"model": "gpt-9", "messages": HI})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    for body in ({"model": "base", "prompt": []}, {"model": "base", "prompt": [[]]}, {"model": "base", "prompt": [10 ** 6]},
                 {"model": "base", "prompt": "x", "logprobs": 6}, {"model": "base", "prompt": "x " * 100}):
        assert httpx.post(served.url + "/v1/completions", json=body).status_code == 400, body


def test_api_key_body_limit_and_busy(runs):
    models = load_models([str(runs["chat"])], ServeConfig(max_batch=1))
    server = Server(create_app(models, ServeConfig(api_key="sesame", max_body_bytes=2000)))
    try:
        url = server.url + "/v1/chat/completions"
        body = {"model": "chat", "messages": HI, "max_tokens": 2}
        assert httpx.post(url, json=body).status_code == 401
        assert httpx.post(url, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(server.url + "/health").status_code == 200
        key = openai.OpenAI(base_url=server.url + "/v1", api_key="sesame", max_retries=0)
        assert key.chat.completions.create(**body).choices[0].finish_reason in ("stop", "length")
        big = {"model": "chat", "messages": [{"role": "user", "content": "x" * 5000}]}
        r = httpx.post(url, json=big, headers={"Authorization": "Bearer sesame"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    finally:
        server.close()
        models[0].worker.close()


def test_worker_refuses_beyond_its_queue_and_frees_cancelled_rows(runs):
    engine = Run(runs["thinker"]).engine("cpu")
    worker = Worker(engine, max_batch=1, max_queue=0)
    got, done = [], threading.Event()

    def sink(item):
        got.append(item)
        if item is None:
            done.set()
    try:
        ticket = worker.submit(Request([1, 2, 3], max_tokens=100), sink)
        with pytest.raises(Busy):
            worker.submit(Request([1, 2], max_tokens=5), lambda item: None)
        while not got:
            time.sleep(0.001)
        worker.cancel(ticket)
        assert done.wait(5)
        tokens = sum(len(batch) for batch in got if isinstance(batch, list))
        assert tokens < 100 and worker.scheduler.num_active == 0
        refused = []
        worker.submit(Request([1] * 200, max_tokens=1), refused.append)  # longer than the window
        while None not in refused:
            time.sleep(0.001)
        assert isinstance(refused[0], LanternError)
        assert worker.call(lambda: engine.score([1, 2, 3])).result(5)[0][0] <= 0
    finally:
        worker.close()


def test_a_loop_is_woken_once_per_step_for_all_its_requests(runs):
    """Four concurrent requests on one event loop: their events arrive as each request's
    own ordered stream (its steps' lists, then None), and the worker woke the loop once per
    step for the four, not once per request."""
    engine = Run(runs["thinker"]).engine("cpu")
    worker = Worker(engine, max_batch=4)

    async def go() -> tuple[list[list], int]:
        loop = asyncio.get_running_loop()
        wakes, real = [], loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda *a: (wakes.append(a), real(*a))[1]
        queues = [asyncio.Queue() for _ in range(4)]
        with worker._wake:  # the worker takes its inbox under this lock: all four join one step
            for q in queues:
                worker.submit(Request([1, 2, 3], max_tokens=12), LoopSink(loop, q))
        streams = []
        for q in queues:
            items = [await q.get()]
            while items[-1] is not None:
                items.append(await q.get())
            streams.append(items)
        return streams, len(wakes)
    try:
        streams, wakes = asyncio.run(go())
    finally:
        worker.close()
    for items in streams:
        assert items[-1] is None and all(isinstance(batch, list) for batch in items[:-1])
        assert [e.index for batch in items[:-1] for e in batch] == list(range(12))
    assert wakes == 12  # one per step (the finishes ride with the last), not 4 x 12


def test_a_disconnected_stream_frees_its_row(runs):
    models = load_models([str(runs["thinker"])], ServeConfig(max_batch=1))
    server = Server(create_app(models))
    try:
        body = {"model": "thinker", "messages": HI, "reasoning_effort": "none", "stream": True, "temperature": 0}
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
            next(r.iter_lines())
        deadline = time.time() + 5
        while models[0].worker.load["running"] and time.time() < deadline:
            time.sleep(0.01)
        assert models[0].worker.load == {"running": 0, "waiting": 0, "max_batch": 1, "max_queue": 64}
        t0 = time.perf_counter()
        ok = httpx.post(server.url + "/v1/chat/completions", json={**body, "stream": False, "max_tokens": 2})
        assert ok.status_code == 200 and time.perf_counter() - t0 < 5
    finally:
        server.close()
        models[0].worker.close()


# --------------------------------------------------------------------------- the OpenAPI document


def test_schemathesis_finds_no_server_error_and_no_schema_violation(runs):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import positive_data_acceptance

    models = load_models([str(runs["chat"]), str(runs["base"])], ServeConfig(max_batch=4))
    app = create_app(models)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = []
    try:
        for operation in schema.get_all_operations():
            op = operation.ok()

            @settings(max_examples=25, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                if isinstance(case.body, dict) and "model" in case.body:
                    case.body["model"] = "chat" if "messages" in case.body else "base"
                    for field in ("max_tokens", "max_completion_tokens"):
                        if isinstance(case.body.get(field), int):
                            case.body[field] = min(case.body[field], 8)
                    if isinstance(case.body.get("n"), int):
                        case.body["n"] = min(case.body["n"], 4)
                # positive_data_acceptance is left out: rules a JSON schema cannot state (the
                # order of messages, the prompt fitting the context) are a 400 by design
                case.call_and_validate(excluded_checks=[positive_data_acceptance])
            try:
                given(op.as_strategy())(check)()
            except Exception as err:  # collect every operation's failure
                failures.append(f"{op.method.upper()} {op.path}: {err}")
    finally:
        for m in models:
            m.worker.close()
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------- the glass box


def test_glass_box_endpoints_equal_the_inspection_functions(served, runs):
    from lanternlm.inspect.attention import attention_view
    from lanternlm.inspect.embeddings import embedding_view
    from lanternlm.inspect.next_token import next_token_view

    run = Run(runs["chat"])
    model, tokenizer = run.model("cpu"), run.tokenizer
    settings = [{"name": "cool", "temperature": 0.5}, {"name": "k2", "top_k": 2}]
    got = httpx.post(served.url + "/v1/inspect/next_token",
                     json={"model": "chat", "text": "the cat", "k": 4, "settings": settings}).json()
    want = next_token_view(model, tokenizer, "the cat", 4, {"cool": SamplingParams(temperature=0.5),
                                                              "k2": SamplingParams(top_k=2)})
    assert [tuple(c) for c in got["candidates"]] == want.candidates
    assert got["raw"]["probs"] == pytest.approx(want.raw.probs)
    assert [s["kept"] for s in got["settings"]] == [want.settings[0].kept, 2]
    att = httpx.post(served.url + "/v1/inspect/attention",
                     json={"model": "chat", "text": "the cat sat", "layer": 0, "head": 1, "query": "at"}).json()
    view = attention_view(model, tokenizer, "the cat sat", 0, 1, "at")
    assert att["labels"] == view.labels and sum(att["matrix"], []) == pytest.approx(sum(view.matrix, [])) and att["query"] == view.query
    assert [(i, label) for i, label, _ in att["top"]] == [(i, label) for i, label, _ in view.top]
    assert [w for _, _, w in att["top"]] == pytest.approx([w for _, _, w in view.top])
    bad = httpx.post(served.url + "/v1/inspect/attention", json={"model": "chat", "text": "x", "layer": 5})
    assert bad.status_code == 400 and "layer" in bad.json()["error"]["message"]
    emb = httpx.post(served.url + "/v1/inspect/embeddings", json={"model": "chat", "words": ["the", "cat"], "k": 3}).json()
    want = embedding_view(model, tokenizer, ["the", "cat"], 3, 3)
    assert emb["words"] == [dataclasses.asdict(w) for w in want.words] and emb["missing"] == want.missing
    # token ids instead of text: the same views (chat markers and all)
    ids = [tokenizer.eot_id, *tokenizer.encode("the cat")]
    by_ids = httpx.post(served.url + "/v1/inspect/next_token",
                        json={"model": "chat", "tokens": ids, "k": 4, "settings": settings}).json()
    assert by_ids["ids"] == ids and by_ids["raw"]["probs"] == pytest.approx(got["raw"]["probs"])
    att_ids = httpx.post(served.url + "/v1/inspect/attention",
                         json={"model": "chat", "tokens": [tokenizer.eot_id, *tokenizer.encode("the cat sat")],
                               "layer": 0, "head": 1}).json()
    assert sum(att_ids["matrix"], []) == pytest.approx(sum(view.matrix, []))
    for body in ({"model": "chat"}, {"model": "chat", "text": "x", "tokens": [1]}, {"model": "chat", "tokens": [10 ** 6]}):
        assert httpx.post(served.url + "/v1/inspect/next_token", json=body).status_code == 400, body
    token = emb["words"][0]["token"]
    by_token = httpx.post(served.url + "/v1/inspect/embeddings", json={"model": "chat", "tokens": [token], "k": 3}).json()
    assert by_token["words"][0]["neighbours"] == emb["words"][0]["neighbours"]
    card = httpx.get(served.url + "/v1/inspect/model/chat").json()
    assert card["device"] == "cpu" and card["machine"]["RAM"] > 0
    assert card["parameters"] == num_params(model.config) and card["layers"] == model.config.n_layer
    assert card["context"] == model.config.block_size and card["memory"]["fp32"]["weights"] > card["memory"]["int8"]["weights"]



def test_a_full_server_answers_429_and_serves_again(runs):
    models = load_models([str(runs["chat"])], ServeConfig(max_batch=1, max_queue=0))
    server = Server(create_app(models))
    worker = models[0].worker
    try:
        busy = worker.submit(Request([1] * 8, max_tokens=400), lambda item: None)  # holds the only row
        while worker.load["running"] == 0:
            time.sleep(0.001)
        r = httpx.post(server.url + "/v1/chat/completions", json={"model": "chat", "messages": HI, "max_tokens": 2})
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
        worker.cancel(busy)
        while worker.load["running"]:
            time.sleep(0.001)
        ok = httpx.post(server.url + "/v1/chat/completions", json={"model": "chat", "messages": HI, "max_tokens": 2})
        assert ok.status_code == 200
    finally:
        server.close()
        models[0].worker.close()


def test_a_whole_request_is_delivered_once_with_the_same_events(runs):
    """``whole=True`` (a reply nobody reads token by token): one list with every event,
    then None; the same tokens as the request delivered step by step."""
    engine = Run(runs["thinker"]).engine("cpu")
    worker = Worker(engine, max_batch=4)

    def collect(whole: bool) -> list:
        got, done = [], threading.Event()

        def sink(item):
            got.append(item)
            if item is None:
                done.set()
        worker.submit(Request([1, 2, 3], max_tokens=9, n=2, sampling=SamplingParams(seed=5)), sink, whole=whole)
        assert done.wait(10)
        return got
    try:
        stepwise, whole = collect(False), collect(True)
    finally:
        worker.close()
    assert len(stepwise) == 10 and len(whole) == 2 and whole[1] is None  # 9 steps + None; one list + None
    tokens = lambda items: sorted((e.sample, e.index, e.token) for batch in items[:-1] for e in batch)  # noqa: E731
    assert len(tokens(whole)) == 18 and tokens(whole) == tokens(stepwise)
