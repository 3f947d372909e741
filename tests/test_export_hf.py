"""`lantern export --format hf`: transformers loads the folder offline, logits and greedy
tokens equal ours, apply_chat_template gives our ids at every level, the tokenizer is checked."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from lanternlm.chat import REASONING_LEVELS, render, render_for_generation
from lanternlm.cli import main
from lanternlm.errors import LanternError
from lanternlm.generate import default_stop_tokens
from lanternlm.interop.export import export_hf as export
from lanternlm.interop.hf_tokenizer import check_hf_tokenizer
from lanternlm.run import Run
from lanternlm.sampling import SamplingParams
from lanternlm.tokenizer import hf_split_pattern

from interop_helpers import GPT2, LLAMA, make_run, tokenizer

transformers = pytest.importorskip("transformers", reason="needs the [hf] extra (transformers)")

# cl100k_base's current pattern: possessive quantifiers, \p{N}{1,3}+ among them
CL100K = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
          r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
GREEDY = SamplingParams(temperature=0.0)
CONVERSATION = [
    {"role": "system", "content": "Be brief.\nReasoning: low"},
    {"role": "user", "content": "How many r's in strawberry?"},
    {"role": "assistant", "content": "Three.", "thinking": "s t r a w b e r r y"},
    {"role": "user", "content": "And in 0000 lanterns?"},
]


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def exported(request, tmp_path_factory, tok):
    root = tmp_path_factory.mktemp(request.param)
    run = make_run(root / "run", LLAMA if request.param == "llama" else GPT2, tok)
    return Run(run), export(run, root / "hf")


def test_transformers_loads_the_folder_offline_with_equal_logits_and_greedy_tokens(exported):
    run, folder = exported
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    ours = run.model("cpu")
    vocab = run.tokenizer.vocab_size
    assert theirs.config.vocab_size == vocab < ours.config.vocab_size  # the padding rows are left out
    idx = torch.randint(0, vocab, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (theirs(idx).logits - ours(idx).logits[..., :vocab]).abs().max().item()
    assert diff <= 1e-4

    prompt = render_for_generation(CONVERSATION[:2], run.tokenizer)
    stops = default_stop_tokens(run.tokenizer)
    mine = run.engine("cpu").generate([prompt], max_tokens=64, sampling=GREEDY, stop_tokens=stops)[0]
    with torch.no_grad():
        hf = theirs.generate(torch.tensor([prompt]), max_new_tokens=64, do_sample=False)[0, len(prompt):]
    assert hf.tolist() == mine.tokens + ([mine.stop_token] if mine.finish_reason == "stop" else [])
    # and 64 tokens in full, stop tokens off on both sides
    mine = run.engine("cpu").generate([prompt], max_tokens=64, sampling=GREEDY)[0]
    with torch.no_grad():
        hf = theirs.generate(torch.tensor([prompt]), max_new_tokens=64, min_new_tokens=64, do_sample=False,
                             suppress_tokens=None)[0, len(prompt):]
    assert len(mine.tokens) == 64 and hf.tolist() == mine.tokens


def test_apply_chat_template_gives_our_ids_at_every_reasoning_level(exported):
    run, folder = exported
    tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    finished = CONVERSATION[:3]
    for level in (None, *REASONING_LEVELS):
        kwargs = {} if level is None else {"reasoning": level}
        prompt = tok.apply_chat_template(CONVERSATION, add_generation_prompt=True, tokenize=True,
                                         return_dict=False, **kwargs)
        assert list(prompt) == render_for_generation(CONVERSATION, run.tokenizer, level), level
        whole = tok.apply_chat_template(finished, tokenize=True, return_dict=False, **kwargs)
        assert list(whole) == render(finished, run.tokenizer, level).ids, level
    assert tok.decode(render(finished, run.tokenizer).ids) == run.tokenizer.decode(render(finished, run.tokenizer).ids)


def test_generation_config_holds_our_stop_tokens_and_a_base_run_suppresses_the_chat_markers(tmp_path, tok):
    chat = export(make_run(tmp_path / "chat", LLAMA, tok), tmp_path / "chat-hf")
    base_run = make_run(tmp_path / "base", LLAMA, tok, stage="pretrain")
    base = export(base_run, tmp_path / "base-hf")
    chat_config = json.loads((chat / "generation_config.json").read_text())
    assert chat_config["eos_token_id"] == default_stop_tokens(tok) == [tok.eot_id, tok.special_id("<|end|>")]
    assert "suppress_tokens" not in chat_config
    base_config = json.loads((base / "generation_config.json").read_text())
    assert base_config["eos_token_id"] == [tok.eot_id]
    assert base_config["suppress_tokens"] == list(range(Run(base_run).vocab_limit, tok.vocab_size))
    assert "chat_template" not in json.loads((base / "tokenizer_config.json").read_text())
    theirs = transformers.AutoModelForCausalLM.from_pretrained(base, local_files_only=True)
    prompt = [tok.eot_id] + tok.encode("I love")
    mine = Run(base_run).engine("cpu").generate([prompt], max_tokens=24, sampling=GREEDY,
                                                       stop_tokens=[tok.eot_id])[0]
    hf = theirs.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False)[0, len(prompt):]
    assert hf.tolist()[:len(mine.tokens)] == mine.tokens


def test_possessive_intervals_are_rewritten_and_checked(tmp_path):
    tok = tokenizer(pattern=CL100K)
    assert tok.encode("0000") == tok.encode("000") + tok.encode("0")
    folder = export(make_run(tmp_path / "run", LLAMA, tok), tmp_path / "hf")
    written = json.loads((folder / "tokenizer.json").read_text())
    assert written["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] == hf_split_pattern(CL100K)
    hf = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert hf.encode("0000 1234567", add_special_tokens=False) == tok.encode("0000 1234567")
    # the pattern as it was written before: Hugging Face splits "0000" as one chunk
    unrewritten = tok.hf_json()
    unrewritten["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = CL100K
    with pytest.raises(LanternError, match="encodes '0000' as"):
        check_hf_tokenizer(tok, unrewritten)


def test_patterns_that_cannot_be_carried_over_are_refused():
    assert hf_split_pattern(r"^\s+$|\d{2}+|x{2,}") == r"\A\s+\Z|(?>\d{2})|x{2,}"
    with pytest.raises(LanternError, match=r"inline flags \(\?m\)"):
        hf_split_pattern(r"(?m)^\w+$")
    with pytest.raises(LanternError, match="unclosed"):
        hf_split_pattern(r"(\w+")


def test_a_reward_run_is_a_clear_error(tmp_path, tok):
    reward = make_run(tmp_path / "rm", dataclasses.replace(LLAMA, reward_head=True), tok, stage="reward")
    with pytest.raises(LanternError, match="reward model .* no language-model head"):
        export(reward, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_command(tmp_path, tok, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--help"])
    assert exit_.value.code == 0 and "--format" in capsys.readouterr().out
    run = make_run(tmp_path / "run", GPT2, tok)
    assert main(["export", str(run), "--out", str(tmp_path / "hf")]) == 0
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == sorted(
        ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"])
    assert main(["export", str(run), "--out", str(tmp_path / "hf")]) == 0  # again, over the old files
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "no such run directory" in capsys.readouterr().err
