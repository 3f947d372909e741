"""Our DPO and reward losses against TRL's own trainers, on the same weights (exported to
Hugging Face format) and the same batch of pairs."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from lanternlm.data.preference import Pair, render_pair
from lanternlm.model import GPT, GPTConfig, padded_vocab_size
from lanternlm.train.dpo import answer_logprobs, dpo_loss
from lanternlm.train.pairs import RenderedPair, collate_pairs
from lanternlm.train.reward import bradley_terry_loss, collate_scored

from sft_helpers import train_tokenizer

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def setup():
    tokenizer = train_tokenizer()
    rng = random.Random(1)
    rows = []
    for i in range(6):
        a, b = rng.randint(1, 999), rng.randint(1, 999)
        pair = Pair([{"role": "user", "content": f"What is {a} + {b}?" + " Please." * (i % 3)}],
                    {"role": "assistant", "content": f"{a + b}.", "thinking": f"{a} plus {b}"},
                    {"role": "assistant", "content": f"{a + b + 1}", "thinking": "guess" * (i + 1)}, "high")
        rows.append(RenderedPair(i, *render_pair(pair, tokenizer)))
    config = GPTConfig(vocab_size=padded_vocab_size(tokenizer.vocab_size), block_size=256, n_layer=2, n_head=4,
                       n_kv_head=2, n_embd=32, pos_encoding="rope", norm="rmsnorm", mlp="swiglu", bias=False,
                       tie_embeddings=False)
    torch.manual_seed(0)
    return tokenizer, rows, config


def hf_tokenizer(tokenizer, directory):
    from transformers import PreTrainedTokenizerFast

    tokenizer.to_hf_json(directory / "tokenizer.json")
    return PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"), pad_token="<|pad|>",
                                   eos_token="<|end|>")


def split(rendered):
    """TRL's processed layout: the prompt, then the completion (our masked-in part)."""
    start = rendered.mask.index(1)
    return rendered.ids[:start], rendered.ids[start:]


@pytest.mark.parametrize("kind", ["sigmoid", "ipo"])
def test_dpo_loss_and_rewards_equal_trl_dpo_trainer(setup, tmp_path, kind):
    from lanternlm.interop.hf import to_hf

    tokenizer, rows, config = setup
    policy, reference = GPT(config), GPT(config)
    for p in reference.parameters():  # a reference that differs from the policy
        p.data.add_(0.02 * torch.randn_like(p))
    beta = 0.2

    x, y, _ = collate_pairs(rows, tokenizer.pad_id)
    with torch.no_grad():
        logps, tokens = answer_logprobs(policy, x, y)
        ref_logps, _ = answer_logprobs(reference, x, y)
    losses, rc, rr = dpo_loss(*logps.chunk(2), *ref_logps.chunk(2), beta=beta, kind=kind,
                              chosen_tokens=tokens.chunk(2)[0], rejected_tokens=tokens.chunk(2)[1])

    examples, texts = [], []
    for row in rows:
        prompt, chosen = split(row.chosen)
        prompt_r, rejected = split(row.rejected)
        assert prompt == prompt_r
        examples.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
        # TRL tokenizes text itself: the same conversations as text, special tokens spelled out
        texts.append({"prompt": tokenizer.decode(prompt), "chosen": tokenizer.decode(chosen),
                      "rejected": tokenizer.decode(rejected)})
    args = trl.DPOConfig(output_dir=str(tmp_path), beta=beta, loss_type=[kind], report_to=[],
                         per_device_train_batch_size=len(rows), max_length=None, use_cpu=True, bf16=False)
    trainer = trl.DPOTrainer(model=to_hf(policy), ref_model=to_hf(reference), args=args,
                             train_dataset=datasets.Dataset.from_list(texts),
                             processing_class=hf_tokenizer(tokenizer, tmp_path))
    processed = [{k: trainer.train_dataset[i][k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
                 for i in range(len(rows))]
    assert processed == examples  # TRL's tokenization gives our ids: the same batch
    batch = trainer.data_collator(processed)
    trainer.model.eval()  # TRL's metrics under "eval"; both models in fp32 (bf16=False)
    with torch.no_grad():
        theirs = trainer.compute_loss(trainer.model, batch)
    logged = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    assert theirs.item() == pytest.approx(losses.mean().item(), rel=1e-4, abs=1e-5)
    assert logged["rewards/chosen"] == pytest.approx(rc.mean().item(), rel=1e-4, abs=1e-5)
    assert logged["rewards/rejected"] == pytest.approx(rr.mean().item(), rel=1e-4, abs=1e-5)
    assert logged["rewards/margins"] == pytest.approx((rc - rr).mean().item(), rel=1e-4, abs=1e-5)
    assert logged["logps/chosen"] == pytest.approx(logps.chunk(2)[0].mean().item(), rel=1e-4)


def test_reward_loss_equals_trl_reward_trainer(setup, tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from lanternlm.interop.hf import to_hf

    tokenizer, rows, config = setup
    language_model = GPT(config)  # the trunk, exported as a causal LM below
    model = GPT(dataclasses.replace(config, reward_head=True)).eval()
    trunk = {k: v for k, v in language_model.state_dict().items() if not k.startswith("lm_head.")}
    assert model.load_state_dict(trunk, strict=False).missing_keys == ["reward_head.weight"]
    x, last, _ = collate_scored(rows, tokenizer.pad_id)
    with torch.no_grad():
        scores = model.rewards(x, last)
    ours = bradley_terry_loss(*scores.chunk(2), center_coef=0.01).mean()

    causal = to_hf(language_model)  # the trunk; the reward head goes into the classifier's `score`
    hf_config = LlamaConfig(**{**causal.config.to_dict(), "num_labels": 1, "pad_token_id": tokenizer.pad_id})
    classifier = LlamaForSequenceClassification(hf_config)
    state = {k.removeprefix("model."): v for k, v in causal.state_dict().items() if k.startswith("model.")}
    classifier.model.load_state_dict(state)
    classifier.score.weight.data.copy_(model.reward_head.weight)
    examples = [{"chosen_ids": r.chosen.ids, "rejected_ids": r.rejected.ids} for r in rows]
    args = trl.RewardConfig(output_dir=str(tmp_path), report_to=[], per_device_train_batch_size=len(rows),
                            center_rewards_coefficient=0.01, max_length=None, use_cpu=True, bf16=False)
    trainer = trl.RewardTrainer(model=classifier, args=args, train_dataset=datasets.Dataset.from_list(examples),
                                processing_class=hf_tokenizer(tokenizer, tmp_path))
    batch = trainer.data_collator([dict(e) for e in examples])
    trainer.model.eval()  # TRL's metrics under "eval"; both models in fp32 (bf16=False)
    with torch.no_grad():
        theirs = trainer.compute_loss(trainer.model, batch)
    assert theirs.item() == pytest.approx(ours.item(), rel=1e-4, abs=1e-5)
    margin = trainer._metrics["eval"]["margin"][-1]
    assert margin == pytest.approx((scores.chunk(2)[0] - scores.chunk(2)[1]).mean().item(), rel=1e-4, abs=1e-5)
