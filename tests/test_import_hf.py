"""`lantern import`: random-weight transformers models (grouped-query attention, untied head,
non-default rope θ, Qwen2's q/k/v biases, GPT-2) come in as runs whose greedy tokens equal
`transformers.generate`, with their own permuted-id tokenizer; from a folder or the hub cache."""

from __future__ import annotations

import io
import json
import shutil

import pytest
import torch

from lanternlm.cli import main
from lanternlm.errors import LanternError
from lanternlm.interop.export import export_hf
from lanternlm.interop.importing import ImportConfig, import_model
from lanternlm.run import Run
from lanternlm.sampling import SamplingParams
from lanternlm.tokenizer import Tokenizer

from interop_helpers import TEXTS, hf_document

transformers = pytest.importorskip("transformers", reason="needs the [hf] extra (transformers)")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


@pytest.fixture(scope="module")
def tokenizer_doc():
    """A tokenizer.json whose single bytes are not ids 0-255 and whose special ids have gaps."""
    return hf_document(Tokenizer.train(TEXTS, 360, special_tokens=SPECIALS, backend="python"), seed=1)


def vocab_size(doc) -> int:
    return 1 + max([*doc["model"]["vocab"].values(), *(t["id"] for t in doc["added_tokens"])])


def hf_models(vocab: int) -> dict:
    common = dict(vocab_size=vocab, initializer_range=0.1)
    llama = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=160, **common)
    return {
        "llama-gqa-untied": transformers.LlamaConfig(num_key_value_heads=2, rope_theta=5000.0,
                                                     tie_word_embeddings=False, **llama),
        "qwen2-biases-tied": transformers.Qwen2Config(num_key_value_heads=1, rope_theta=1e6,
                                                      tie_word_embeddings=True, **llama),
        "gpt2": transformers.GPT2Config(n_positions=160, n_embd=64, n_layer=2, n_head=4, **common),
    }


def hf_folder(path, config, doc, seed=0):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # random biases too (init leaves them zero), so their mapping is tested
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    model.save_pretrained(path)
    (path / "tokenizer.json").write_text(json.dumps(doc), encoding="utf-8")
    (path / "tokenizer_config.json").write_text(json.dumps({  # the class that reads tokenizer.json as it is
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "chat_template": TEMPLATE}))
    return model


@pytest.mark.parametrize("name", ["llama-gqa-untied", "qwen2-biases-tied", "gpt2"])
def test_imported_models_generate_what_transformers_generates(name, tmp_path, tokenizer_doc):
    config = hf_models(vocab_size(tokenizer_doc))[name]
    theirs = hf_folder(tmp_path / "hf", config, tokenizer_doc)
    run = Run(import_model(ImportConfig(source=str(tmp_path / "hf")), tmp_path / "run"))
    assert run.stage == "import" and not run.chat and run.record["hf"]["chat_template"] == TEMPLATE
    tok = run.tokenizer
    prompt = [tok.eot_id] + tok.encode("I love pizza! The lanterns 0000")
    # (the file itself: for model_type qwen2, transformers 5's AutoTokenizer rebuilds Qwen2's own split)
    file = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "hf" / "tokenizer.json"))
    assert prompt == [tok.eot_id] + file.encode("I love pizza! The lanterns 0000", add_special_tokens=False)
    ours = run.model("cpu")
    with torch.no_grad():
        diff = (ours(torch.tensor([prompt])).logits - theirs(torch.tensor([prompt])).logits).abs().max().item()
    assert diff <= 1e-4
    mine = run.engine("cpu").generate([prompt], max_tokens=64, sampling=SamplingParams(temperature=0.0))[0]
    greedy = transformers.GenerationConfig(max_new_tokens=64, do_sample=False)
    with torch.no_grad():
        hf = theirs.generate(torch.tensor([prompt]), generation_config=greedy)[0, len(prompt):]
    assert len(mine.tokens) == 64 and mine.tokens == hf.tolist()
    if name.startswith("qwen2"):  # q/k/v biases kept, the others zero (and left out of a GGUF file)
        state = ours.state_dict()
        assert state["blocks.0.attn.qkv.bias"].abs().sum() > 0 and not state["blocks.0.attn.proj.bias"].any()
        gguf = pytest.importorskip("gguf")
        from lanternlm.interop.gguf import export_gguf

        names = {t.name for t in gguf.GGUFReader(export_gguf(run, tmp_path / "q.gguf")).tensors}
        assert {"blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.0.attn_v.bias"} <= names
        assert not {"blk.0.attn_output.bias", "blk.0.ffn_up.bias", "blk.0.ffn_down.bias"} & names


def test_an_imported_run_exports_back_and_runs_the_commands(tmp_path, tokenizer_doc, capsys):
    config = hf_models(vocab_size(tokenizer_doc))["llama-gqa-untied"]
    original = hf_folder(tmp_path / "hf", config, tokenizer_doc)
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 0
    folder = export_hf(tmp_path / "run", tmp_path / "again")
    back = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    idx = torch.randint(0, config.vocab_size, (1, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (back(idx).logits - original(idx).logits).abs().max().item() <= 1e-4
    assert json.loads((folder / "tokenizer_config.json").read_text())["chat_template"] == TEMPLATE
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "run"), "I love", "--temperature", "0", "--max-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("I love")
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 2  # never over a run
    assert "already exists" in capsys.readouterr().err
    out = str(tmp_path / "views")  # the glass-box views read an imported run as any other
    for view in (["next", "I love", "-k", "3"], ["attention", "I love pizza", "--layer", "1", "--head", "3", "--grid"],
                 ["generate", "I love", "--steps", "3"], ["embeddings", "I", "love", "pizza", "-k", "3"], ["memory", "--context", "16"]):
        assert main(["inspect", view[0], str(tmp_path / "run"), *view[1:], "--out", out, "--device", "cpu"]) in (0, None)
    for name in ("next_token", "attention_l1h3", "attention_l1_heads", "loop", "embeddings", "memory"):
        assert (tmp_path / "views" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_hub_id_from_a_prepopulated_cache(tmp_path, tokenizer_doc):
    config = hf_models(vocab_size(tokenizer_doc))["gpt2"]
    hf_folder(tmp_path / "hf", config, tokenizer_doc)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--lantern--tiny-gpt2"
    shutil.copytree(tmp_path / "hf", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    source = ImportConfig(source="lantern/tiny-gpt2", offline=True, cache_dir=str(tmp_path / "cache"))
    run = Run(import_model(source, tmp_path / "run"))
    assert run.model_config.n_layer == 2 and run.record["config"]["source"] == "lantern/tiny-gpt2"
    with pytest.raises(LanternError, match="cannot get this model in the huggingface_hub cache"):
        import_model(ImportConfig(source="lantern/absent", offline=True, cache_dir=str(tmp_path / "cache")),
                     tmp_path / "run2")


def test_unsupported_models_name_what_is_unsupported(tmp_path, tokenizer_doc):
    vocab = vocab_size(tokenizer_doc)
    llama = hf_models(vocab)["llama-gqa-untied"]
    cases = {
        "model_type 'gpt_neox' is not supported": transformers.GPTNeoXConfig(
            vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4),
        "rope type 'linear'": transformers.LlamaConfig(**{**llama.to_dict(), "rope_scaling": {
            "rope_type": "linear", "factor": 2.0}}),
        "use_sliding_window=True": transformers.Qwen2Config(
            vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
            use_sliding_window=True, sliding_window=16),
    }
    for k, (message, config) in enumerate(cases.items()):
        hf_folder(tmp_path / f"hf{k}", config, tokenizer_doc)
        with pytest.raises(LanternError, match=message):
            import_model(ImportConfig(source=str(tmp_path / f"hf{k}")), tmp_path / f"run{k}")
        assert not (tmp_path / f"run{k}").exists()
    with pytest.raises(LanternError, match="no such model folder"):
        import_model(ImportConfig(source=str(tmp_path / "missing")), tmp_path / "run")


def test_fine_tuning_an_imported_run_adds_the_chat_tokens_and_exports_a_chat_model(tmp_path, tokenizer_doc,
                                                                                    capsys, monkeypatch):
    """sft on an imported run (no chat markers in its tokenizer): the markers become new ids
    after its vocabulary, their rows the mean embedding; the result chats and exports back."""
    from lanternlm.chat import CHAT_MARKERS, render_for_generation
    from lanternlm.serve.app import create_app
    from lanternlm.train.finetune import add_chat_tokens
    from starlette.testclient import TestClient

    config = hf_models(vocab_size(tokenizer_doc))["llama-gqa-untied"]
    hf_folder(tmp_path / "hf", config, tokenizer_doc)
    imported = Run(import_model(ImportConfig(source=str(tmp_path / "hf")), tmp_path / "run"))
    old = imported.tokenizer
    assert main(["sft", "--base", str(tmp_path / "run"), "--out", str(tmp_path / "chat"), "--max-steps", "2",
                 "--batch-size", "2", "--examples-per-task", "4", "--val-per-task", "1", "--tasks", "letters",
                 "--block-size", "512", "--warmup-steps", "1", "--eval-every", "2", "--device", "cpu"]) == 0
    chat = Run(tmp_path / "chat")
    tok = chat.tokenizer
    added = chat.record["added_special_tokens"]
    assert list(added) == list(CHAT_MARKERS) and sorted(added.values()) == list(range(old.vocab_size, tok.vocab_size))
    assert {**old.special_tokens, **added} == tok.special_tokens and tok.encode(TEXTS[1]) == old.encode(TEXTS[1])
    assert chat.chat and chat.model_config.vocab_size >= tok.vocab_size
    # the stage's starting point: old rows kept, new rows the mean of the real tokens' rows
    model, grown = add_chat_tokens(imported.model("cpu"), old)
    assert grown == tok and model.config.vocab_size == chat.model_config.vocab_size
    before = imported.model("cpu").state_dict()
    real = [i for i, n in enumerate(old.token_byte_lengths()) if n]
    for name in ("wte.weight", "lm_head.weight"):
        table = model.state_dict()[name]
        assert torch.equal(table[:config.vocab_size], before[name])
        for i in added.values():
            assert torch.allclose(table[i], before[name][real].mean(0))
    prompt = torch.tensor([old.encode(TEXTS[0])[:20]])
    with torch.no_grad():
        assert torch.allclose(model(prompt).logits[..., :config.vocab_size], imported.model("cpu")(prompt).logits)
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "chat"), "Spell cat", "--temperature", "0", "--max-tokens", "6"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("Spell cat\n"))
    assert main(["chat", str(tmp_path / "chat"), "--temperature", "0", "--max-tokens", "6"]) == 0
    assert "chat format" in capsys.readouterr().out
    folder = export_hf(chat, tmp_path / "hf-chat")
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    back = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    messages = [{"role": "user", "content": "hi"}]
    ids = hf_tok.apply_chat_template(messages, add_generation_prompt=True, reasoning="high", tokenize=True,
                                     return_dict=False)
    assert ids == render_for_generation(messages, tok, "high")
    with torch.no_grad():
        logits = back(torch.tensor([ids])).logits[0, -1]
        ours = chat.model("cpu")(torch.tensor([ids])).logits[0, -1, :tok.vocab_size]
    assert (logits - ours).abs().max().item() <= 1e-4
    served = serve(tmp_path / "run", tmp_path / "chat")  # lantern serve: the imported run completes text, its
    try:                                                 # fine-tuned chat run answers chats too
        with TestClient(create_app(served)) as client:
            cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
            assert cards["run"]["stage"] == "import" and not cards["run"]["chat"] and cards["chat"]["chat"]
            ask = {"prompt": "I love", "max_tokens": 5, "temperature": 0}
            done = client.post("/v1/completions", json={"model": "run", **ask}).json()
            mine = imported.engine("cpu").generate([[old.bos_id, *old.encode("I love")]], max_tokens=5,
                                                   sampling=SamplingParams(temperature=0.0))[0]
            assert done["choices"][0]["text"] == old.decode(mine.tokens)
            assert client.post("/v1/completions", json={"model": "chat", **ask}).status_code == 200
            reply = client.post("/v1/chat/completions", json={"model": "chat", "messages": messages,
                                                              "max_tokens": 5, "temperature": 0}).json()
            assert reply["choices"][0]["message"]["role"] == "assistant" and reply["usage"]["prompt_tokens"] > 0
            refused = client.post("/v1/chat/completions", json={"model": "run", "messages": messages})
            assert refused.status_code == 400
    finally:
        for m in served:
            m.worker.close()


def serve(*runs):
    from lanternlm.serve.app import ServeConfig, load_models

    return load_models([str(r) for r in runs], ServeConfig(device="cpu", max_batch=2))


def test_preference_and_rl_stages_start_from_an_imported_run(tmp_path, tokenizer_doc):
    """dpo, reward and rl take an imported run as their base, as sft does: the chat markers
    are added in the same one place, and the on-policy sampler writes chats with them."""
    from lanternlm.chat import CHAT_MARKERS, render_for_generation
    from lanternlm.train.finetune import chat_engine

    config = hf_models(vocab_size(tokenizer_doc))["llama-gqa-untied"]
    hf_folder(tmp_path / "hf", config, tokenizer_doc)
    base = import_model(ImportConfig(source=str(tmp_path / "hf")), tmp_path / "run")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": q, "chosen": c, "rejected": r}) + "\n" for q, c, r in (
        ("Spell cat", "c a t", "dog"), ("Say hi", "Hello!", "No."), ("2 + 2?", "4", "5"), ("Name a colour", "red", "7"))))
    common = ["--base", str(base), "--device", "cpu", "--block-size", "256", "--max-steps", "1", "--batch-size", "2"]
    assert main(["dpo", *common, "--pairs", str(pairs), "--out", str(tmp_path / "dpo")]) == 0
    assert main(["reward", *common, "--pairs", str(pairs), "--out", str(tmp_path / "rm")]) == 0
    assert main(["rl", *common, "--reward", "tasks:letters", "--group-size", "2", "--max-tokens", "4",
                 "--eval-questions", "1", "--eval-samples", "2", "--out", str(tmp_path / "rl")]) == 0
    engine, tokenizer = chat_engine(Run(base), "cpu")
    for name, stage in (("dpo", "dpo"), ("rm", "reward"), ("rl", "rl")):
        run = Run(tmp_path / name)
        assert run.stage == stage and list(run.record["added_special_tokens"]) == list(CHAT_MARKERS)
        assert run.tokenizer == tokenizer
    prompt = render_for_generation([{"role": "user", "content": "hi"}], tokenizer, "none")
    out = engine.generate([prompt], max_tokens=3, sampling=SamplingParams(temperature=0.0))[0]
    assert len(out.tokens) == 3 and max(out.tokens) < tokenizer.vocab_size


CHATML = ("{{ bos_token }}{% for m in messages %}{% if m.role == 'user' and loop.first and messages[0].role != 'system' %}"
          "<|im_start|>system\nYou are helpful.<|im_end|>\n{% endif %}"
          "<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_chat_on_an_imported_model_uses_its_own_template(tmp_path, tokenizer_doc):
    """An imported chat model talks through its own Jinja template: the prompt ids equal
    transformers' apply_chat_template, the reply ends at its eos id, and lantern chat says so."""
    from lanternlm.interop.hf_chat import hf_chat, template_of
    from lanternlm.terminal import chat_command

    config = hf_models(vocab_size(tokenizer_doc))["qwen2-biases-tied"]
    hf_folder(tmp_path / "hf", config, tokenizer_doc)
    (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>",
        "eos_token": "<|im_end|>", "chat_template": [{"name": "default", "template": CHATML},
                                                     {"name": "tool_use", "template": "{{ tools }}"}]}))
    im_end = next(t["id"] for t in tokenizer_doc["added_tokens"] if t["content"] == "<|im_end|>")
    (tmp_path / "hf" / "generation_config.json").write_text(json.dumps({"eos_token_id": [im_end]}))
    run = Run(import_model(ImportConfig(source=str(tmp_path / "hf")), tmp_path / "run"))
    assert run.record["hf"]["eos_token_ids"] == [im_end] and run.record["hf"]["bos_token"] == "<|endoftext|>"
    chat = hf_chat(run.record, run.tokenizer)
    assert chat.template == CHATML and chat.stop_ids == [im_end]
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    conversations = ([{"role": "user", "content": "Hi there "}],
                     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "é and 日本"},
                      {"role": "assistant", "content": "ok"}, {"role": "user", "content": "again"}])
    for messages in conversations:
        want = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        assert chat.prompt_ids(run.tokenizer, messages) == list(want)
    out = io.StringIO()
    assert chat_command(str(tmp_path / "run"), sampling=SamplingParams(temperature=0.0), max_tokens=6,
                        device="cpu", lines=io.StringIO("Hi there\n"), out=out) == 0
    assert "(template format)" in out.getvalue()
    ids = chat.prompt_ids(run.tokenizer, [{"role": "user", "content": "Hi there"}])
    reply = run.engine("cpu").generate([ids], max_tokens=6, sampling=SamplingParams(temperature=0.0),
                                       stop_tokens=[im_end])[0]
    assert run.tokenizer.decode(reply.tokens) in out.getvalue()
    # the other places a template may live, and none at all
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "chat_template.jinja").write_text(CHATML)
    assert template_of({}, tmp_path / "t") == CHATML and template_of({}, tmp_path / "hf") is None
    assert hf_chat({"hf": {"chat_template": None}}, run.tokenizer) is None
    with pytest.raises(LanternError, match="refused this conversation"):
        HFChatOf("{{ raise_exception('roles must alternate') }}").render([])


def HFChatOf(template):
    from lanternlm.interop.hf_chat import HFChat

    return HFChat(template, {}, [0])
