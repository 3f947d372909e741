"""Preference tuning: pair files, on-policy task pairs, the DPO and reward stages (worked
values, padding, reference, resume, run records, the CLI), and parity with TRL."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import random

import pytest
import torch

from lanternlm.chat import ChatTokens
from lanternlm.cli import main
from lanternlm.data.preference import Pair, load_pairs, parse_pair, render_pair, write_pairs
from lanternlm.errors import LanternError
from lanternlm.model import GPT, GPTConfig
from lanternlm.reward import RewardModel, best_of
from lanternlm.run import Run
from lanternlm.tasks.base import Example, Task
from lanternlm.tasks.pairs import on_policy_pairs
from lanternlm.train.dpo import DPOConfig, answer_logprobs, dpo, dpo_loss
from lanternlm.train.pairs import RenderedPair, collate_pairs
from lanternlm.train.reward import RewardConfig, bradley_terry_loss, collate_scored, reward
from lanternlm.train.sft import sft

from sft_helpers import make_base, small_sft, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer()


@pytest.fixture(scope="module")
def chat_run(tokenizer, tmp_path_factory):
    root = tmp_path_factory.mktemp("pref")
    run = root / "chat"
    sft(small_sft(make_base(tokenizer, root), tasks=["letters", "arithmetic"], max_steps=2), run)
    return run


def some_pairs(n: int = 12) -> list[dict]:
    rng = random.Random(0)
    out = []
    for i in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        out.append({"prompt": f"What is {a} + {b}?", "chosen": f"{a} + {b} = {a + b}.",
                    "rejected": f"{a} + {b} = {a + b + rng.randint(1, 9)}.", "reasoning": "none"})
    return out


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in some_pairs()))
    return path


def small_dpo(base, pairs_path, **overrides) -> DPOConfig:
    values = dict(base=str(base), pairs=[str(pairs_path)], batch_size=4, max_steps=4, warmup_steps=1, eval_every=2,
                  log_every=1, checkpoint_every=2, lr=1e-3, block_size=256, seed=5)
    return dataclasses.replace(DPOConfig(), **(values | overrides))


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- pair files


def test_pair_layouts_text_conversational_and_implicit_prompt_agree():
    text = parse_pair({"prompt": "hi", "chosen": "hello", "rejected": "go", "system": "Be kind."}, "f:1")
    conversational = parse_pair({"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}],
                                 "chosen": [{"role": "assistant", "content": "hello"}],
                                 "rejected": [{"role": "assistant", "content": "go"}]}, "f:2")
    full = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}]
    implicit = parse_pair({"chosen": full + [{"role": "assistant", "content": "hello"}],
                           "rejected": full + [{"role": "assistant", "content": "go"}]}, "f:3")
    repeated = parse_pair({"prompt": full, "chosen": full + [{"role": "assistant", "content": "hello"}],
                           "rejected": [{"role": "assistant", "content": "go"}]}, "f:4")
    assert text == conversational == implicit == repeated
    assert text.prompt == full and text.chosen == {"role": "assistant", "content": "hello"}


@pytest.mark.parametrize("line, message", [
    ("{not json", "f.jsonl:2: invalid JSON"),
    ('{"prompt": "x", "chosen": "y"}', "f.jsonl:2: missing field(s) ['rejected']"),
    ('{"prompt": 3, "chosen": "y", "rejected": "z"}', "'prompt' must be a string or a message list"),
    ('{"prompt": "x", "chosen": 5, "rejected": "z"}', "f.jsonl:2: chosen: expected a string or one assistant message"),
    ('{"prompt": "x", "chosen": "y", "rejected": "z", "reasoning": "max"}', "'reasoning' is 'max'"),
    ('{"prompt": [{"role": "assistant", "content": "x"}], "chosen": "y", "rejected": "z"}', "expected a user message"),
    ('{"chosen": [{"role": "user", "content": "a"}], "rejected": [{"role": "user", "content": "b"}]}', "share no prompt"),
    ('[1, 2]', "expected a JSON object"),
])
def test_bad_pair_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps(some_pairs(1)[0]) + "\n" + line + "\n")
    with pytest.raises(LanternError) as err:
        load_pairs(path)
    assert message in str(err.value) and "f.jsonl:2" in str(err.value)


def test_pairs_round_trip_and_gzip(tmp_path):
    pairs = [parse_pair(p, "x") for p in some_pairs(3)]
    pairs.append(Pair([{"role": "user", "content": "q"}], {"role": "assistant", "content": "a", "thinking": "t"},
                      {"role": "assistant", "content": "b", "thinking": "u"}, "high"))
    write_pairs(tmp_path / "p.jsonl", pairs)
    assert load_pairs(tmp_path / "p.jsonl") == pairs
    (tmp_path / "p.jsonl.gz").write_bytes(gzip.compress((tmp_path / "p.jsonl").read_bytes()))
    assert load_pairs(tmp_path / "p.jsonl.gz") == pairs
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(LanternError, match="no preference pair"):
        load_pairs(tmp_path / "empty.jsonl")


def test_a_pair_renders_with_the_loss_mask_on_the_answer_only(tokenizer):
    pair = Pair([{"role": "user", "content": "2+2?"}], {"role": "assistant", "content": "4", "thinking": "two twos"},
                {"role": "assistant", "content": "5", "thinking": "hmm"}, "high")
    chosen, rejected = render_pair(pair, tokenizer)
    t = ChatTokens.of(tokenizer)
    for rendered, thinking, answer in ((chosen, "two twos", "4"), (rejected, "hmm", "5")):
        trained = [i for i, m in zip(rendered.ids, rendered.mask) if m]
        assert trained == [t.think, *tokenizer.encode(thinking), t.end_think, *tokenizer.encode(answer), t.end]
    assert chosen.ids[:chosen.mask.index(1)] == rejected.ids[:rejected.mask.index(1)]  # the same prompt


# --------------------------------------------------------------------------- the math


def test_dpo_loss_worked_values_and_ln2_at_the_reference():
    t = torch.tensor
    losses, rc, rr = dpo_loss(t([-5.0, -3.0]), t([-7.0, -4.0]), t([-6.0, -3.0]), t([-6.0, -4.0]), beta=0.5)
    assert losses.tolist() == pytest.approx([math.log(1 + math.exp(-1)), math.log(2)], abs=1e-6)
    assert rc.tolist() == [0.5, 0.0] and rr.tolist() == [-0.5, 0.0]
    ipo, _, _ = dpo_loss(t([-4.0]), t([-9.0]), t([-6.0]), t([-6.0]), beta=0.5, kind="ipo",
                         chosen_tokens=t([2]), rejected_tokens=t([3]))
    assert ipo.item() == pytest.approx(1.0)
    assert bradley_terry_loss(t([2.0]), t([1.0])).item() == pytest.approx(0.313262, abs=1e-6)


def rendered_pairs(tokenizer, n=3):
    rows = [render_pair(parse_pair(p, "x"), tokenizer) for p in some_pairs(n)]
    rows[1] = render_pair(Pair([{"role": "user", "content": "a much longer question " * 4}],
                               {"role": "assistant", "content": "a long answer " * 3},
                               {"role": "assistant", "content": "no"}, "none"), tokenizer)
    return [RenderedPair(i, c, r) for i, (c, r) in enumerate(rows)]


def test_padding_cannot_change_a_pairs_loss_or_gradients(tokenizer):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=256, n_layer=2, n_head=2, n_embd=32,
                          pos_encoding="rope", norm="rmsnorm", mlp="swiglu", bias=False))
    rows = rendered_pairs(tokenizer)
    ref = torch.tensor([[-30.0, -40.0], [-50.0, -20.0], [-31.0, -33.0]])

    def loss_and_grads(items):
        model.zero_grad()
        x, y, index = collate_pairs(items, tokenizer.pad_id)
        logps, _ = answer_logprobs(model, x, y)
        chosen, rejected = logps.chunk(2)
        losses, _, _ = dpo_loss(chosen, rejected, ref[index, 0], ref[index, 1], beta=0.1)
        losses[0].backward()  # the first pair's loss only
        return losses[0].item(), [p.grad.clone() for p in model.parameters()]

    alone, grads_alone = loss_and_grads([rows[0]])
    padded, grads_padded = loss_and_grads([rows[0], rows[1], rows[2]])  # rows[1] is far longer: padding
    assert collate_pairs([rows[0], rows[1]], tokenizer.pad_id)[0].shape[1] > len(rows[0].chosen.ids)
    assert padded == pytest.approx(alone, abs=1e-6)
    for a, b in zip(grads_alone, grads_padded):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- the DPO stage


def test_dpo_starts_at_ln2_trains_resumes_exactly_and_is_a_chat_run(chat_run, pairs_file, tmp_path):
    run = tmp_path / "dpo"
    summary = dpo(small_dpo(chat_run, pairs_file), run)
    lines = metrics(run)
    assert lines[0]["train_loss"] == pytest.approx(math.log(2), abs=1e-5)  # the policy is the reference
    assert lines[0]["margins"] == pytest.approx(0.0, abs=1e-5) and lines[0]["accuracies"] == pytest.approx(0.5)
    for key in ("rewards_chosen", "rewards_rejected", "logps_chosen", "logps_rejected", "grad_norm"):
        assert key in lines[0]
    evaluated = [line for line in lines if "val_accuracy" in line]
    assert [line["step"] for line in evaluated] == [2, 4] and 0 <= evaluated[-1]["val_accuracy"] <= 1
    assert summary["steps"] == 4 and (run / "reference_logprobs.safetensors").is_file()
    record = json.loads((run / "config.json").read_text())
    assert record["stage"] == "dpo" and record["data"]["val"] == 1 and record["data"]["train"] == 11
    assert Run(run).chat and Run(run).parent.path.resolve() == chat_run.resolve()
    assert Run(run).engine("cpu").generate([[1, 2]], max_tokens=3)[0].tokens

    # interrupted after step 2, resumed: the same losses, the same weights
    again = tmp_path / "dpo2"
    dpo(small_dpo(chat_run, pairs_file, max_steps=2), again)
    dpo(small_dpo(chat_run, pairs_file), again, resume=True)
    assert [line["train_loss"] for line in metrics(again)] == [line["train_loss"] for line in lines]
    for (name, a), (_, b) in zip(Run(run).model("cpu").state_dict().items(),
                                 Run(again).model("cpu").state_dict().items()):
        assert torch.equal(a, b), name

    # the glass box: curves, the picture, answers beside the parent's, the report section
    from lanternlm.inspect.preference import preference_command
    from lanternlm.inspect.report import write_report

    text = preference_command(str(run), tasks=["letters"], levels=["none"], n=2, device="cpu")
    assert "margins" in text and "val_accuracy" in text and "of the answers changed" in text
    assert text.count("letters    none") == 2 and (run / "inspect" / "preference.png").is_file()
    assert "## Preference tuning" in write_report(run, device="cpu").read_text()

    # DPO again on the DPO run, and SFT on it: every stage takes it as a base
    dpo(small_dpo(run, pairs_file, max_steps=1, eval_every=1), tmp_path / "dpo-again")
    sft(small_sft(run, tasks=["letters"], max_steps=1), tmp_path / "sft-after")


def test_frozen_reference_gives_the_precomputed_losses_and_ipo_rpo_train(chat_run, pairs_file, tmp_path):
    dpo(small_dpo(chat_run, pairs_file, max_steps=3, reference="precomputed"), tmp_path / "pre")
    dpo(small_dpo(chat_run, pairs_file, max_steps=3, reference="frozen"), tmp_path / "frozen")
    pre, frozen = metrics(tmp_path / "pre"), metrics(tmp_path / "frozen")
    assert [m["train_loss"] for m in frozen] == pytest.approx([m["train_loss"] for m in pre], abs=1e-5)
    assert not (tmp_path / "frozen" / "reference_logprobs.safetensors").exists()
    dpo(small_dpo(chat_run, pairs_file, max_steps=2, loss="ipo", rpo_alpha=0.5), tmp_path / "ipo")
    first = metrics(tmp_path / "ipo")[0]
    # at the reference IPO's loss is (0 - 1/(2β))² = 25 for β = 0.1, plus α x the chosen NLL per token
    assert first["train_loss"] > 25.0


def test_dpo_refuses_bad_settings_and_a_base_run(chat_run, pairs_file, tmp_path):
    for change, message in ((dict(beta=0.0), "beta=0.0"), (dict(loss="hinge"), "loss='hinge'"),
                            (dict(pairs=[]), "--pairs"), (dict(reference="x"), "reference='x'"),
                            (dict(pair_samples=1), "pair_samples=1")):
        with pytest.raises(LanternError, match=message.replace("[", r"\[").replace("(", r"\(")):
            dpo(small_dpo(chat_run, pairs_file, **change), tmp_path / "bad")
    base = Run(chat_run).parent.path
    with pytest.raises(LanternError, match="does not speak the chat format"):
        dpo(small_dpo(base, pairs_file), tmp_path / "from-base")
    with pytest.raises(LanternError, match="no training pair fits"):
        dpo(small_dpo(chat_run, pairs_file, block_size=8), tmp_path / "short")


# --------------------------------------------------------------------------- on-policy pairs


class EvenX(Task):
    """A test task with a real verifier: the answer is right when it holds an even number of x."""

    name = "even-x"

    def sample(self, rng: random.Random) -> Example:
        n = rng.randint(0, 10**6)
        return Example(task=self.name, key=str(n), question=f"Say x's ({n}).", answer="even", fields={"n": n})

    def thinking(self, example, level):
        return "count"

    def reply(self, example):
        return "xx"

    def parse(self, answer_text):
        return "even" if answer_text.count("x") % 2 == 0 else "odd"


def three_token_model(tokenizer, tokens):
    """A real GPT whose every next-token distribution is uniform over ``tokens`` (crafted:
    the final norm outputs a constant, the head reads one coordinate of it)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=256, n_layer=1, n_head=2, n_embd=16,
                          tie_embeddings=False))
    with torch.no_grad():
        model.norm_f.weight.zero_()
        model.norm_f.bias.zero_()
        model.norm_f.bias[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, 0] = -30.0
        model.lm_head.weight[tokens, 0] = 2.0
    return model.eval()


def test_on_policy_pairs_pair_a_right_with_a_wrong_answer(tokenizer):
    from lanternlm.engine import Engine

    t = ChatTokens.of(tokenizer)
    x, y = tokenizer.encode("x"), tokenizer.encode("y")
    assert len(x) == len(y) == 1
    engine = Engine(three_token_model(tokenizer, [x[0], y[0], t.end]), vocab_limit=tokenizer.vocab_size)
    task = EvenX()
    pairs, report = on_policy_pairs(engine, tokenizer, [task], 12, k=4, levels=["none"], seed=3, max_tokens=12,
                                    batch_questions=5)
    row = report[0]
    assert row["questions"] == 12 and row["samples"] == 48
    assert row["pairs"] == len(pairs) == 12 - row["all_right"] - row["all_wrong"] > 0
    for pair in pairs:
        assert task.parse(pair.chosen["content"]) == "even"
        assert task.parse(pair.rejected["content"]) == "odd"
        assert set(pair.chosen["content"]) <= {"x", "y"} and "thinking" not in pair.chosen
        assert pair.prompt[-1]["role"] == "user" and pair.reasoning == "none"
    again, _ = on_policy_pairs(engine, tokenizer, [task], 12, k=4, levels=["none"], seed=3, max_tokens=12,
                               batch_questions=3)
    assert again == pairs  # the same seed, other batches: the same pairs


# --------------------------------------------------------------------------- the reward model


def test_reward_model_trains_scores_and_picks_the_best(chat_run, pairs_file, tmp_path, capsys):
    run = tmp_path / "rm"
    config = dataclasses.replace(RewardConfig(), base=str(chat_run), pairs=[str(pairs_file)], batch_size=4,
                                 max_steps=3, warmup_steps=1, eval_every=3, log_every=1, checkpoint_every=3,
                                 block_size=256, lr=1e-3)
    reward(config, run)
    lines = metrics(run)
    assert {"accuracies", "margins", "rewards_chosen", "rewards_rejected"} <= set(lines[0])
    assert "val_accuracy" in lines[-1]
    assert Run(run).stage == "reward" and not Run(run).chat and Run(run).model_config.reward_head
    with pytest.raises(LanternError, match="reward model"):
        Run(run).engine("cpu")
    from lanternlm.inspect.report import write_report

    report = write_report(run, device="cpu").read_text()
    assert "does not predict tokens" in report and "## Preference tuning" in report

    rm = RewardModel(run, "cpu")
    pairs = load_pairs(pairs_file)
    scores = rm.score_pairs(pairs[:3])
    level = {"role": "system", "content": "Reasoning: none"}  # the pairs' level, as a system line
    direct = rm.score([[level, *p.prompt, answer] for p in pairs[:3] for answer in (p.chosen, p.rejected)])
    assert scores == pytest.approx(direct, abs=1e-5)  # batched or not, rendered the same way: the same scores
    alone = rm.score([[level, *pairs[0].prompt, pairs[0].chosen]])
    assert alone[0] == pytest.approx(direct[0], abs=1e-5)
    assert best_of(scores) == scores.index(max(scores))

    assert main(["reward", "score", str(run), "--pairs", str(pairs_file), "--device", "cpu"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out[-1]["pairs"] == 12 and 0 <= out[-1]["accuracy"] <= 1
    assert out[0]["chosen"] == pytest.approx(scores[0], abs=1e-4)
    with pytest.raises(LanternError, match="not a reward model"):
        RewardModel(chat_run)

    # best of n in the front-ends: the answer shown is the best-scored of the samples
    from lanternlm.reward import best_of_n
    from lanternlm.sampling import SamplingParams
    from lanternlm.terminal import chat_command, generate_command

    chat = Run(chat_run)
    prompt = chat.tokenizer.encode("hi")
    [(best, scores, completions)] = best_of_n(chat.engine("cpu"), rm, chat.tokenizer, [[1, *prompt]], 4,
                                              max_tokens=6, sampling=SamplingParams(seed=1))
    assert len(scores) == len(completions) == 4 and scores[best] == max(scores)
    assert scores == pytest.approx(rm.score_replies([1, *prompt], [c.tokens for c in completions]), abs=1e-6)
    import io
    out = io.StringIO()
    generate_command(str(chat_run), "How many r's are in strawberry?", sampling=SamplingParams(seed=2),
                     max_tokens=8, reasoning="none", best_of=3, reward_model=str(run), device="cpu", out=out)
    listed = out.getvalue().split("scores ")[-1].rstrip(")\n").split(", ")
    assert len(listed) == 3 and sum(score.startswith("*") for score in listed) == 1  # the one shown
    out = io.StringIO()
    chat_command(str(chat_run), sampling=SamplingParams(seed=2), max_tokens=8, reasoning="none", best_of=2,
                 reward_model=str(run), device="cpu", lines=io.StringIO("hello\n/quit\n"), out=out)
    assert "(best of 2 by reward; scores" in out.getvalue()
    with pytest.raises(LanternError, match="go together"):
        generate_command(str(chat_run), "x", sampling=SamplingParams(), reasoning="none", best_of=3)


def test_reward_rows_read_the_last_token_and_padding_changes_nothing(tokenizer):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=256, n_layer=1, n_head=2, n_embd=16,
                          reward_head=True)).eval()
    rows = rendered_pairs(tokenizer)
    x, last, _ = collate_scored(rows, tokenizer.pad_id)
    together = model.rewards(x, last)
    for i, row in enumerate(rows):
        for k, rendered in ((i, row.chosen), (len(rows) + i, row.rejected)):
            ids = torch.tensor([rendered.ids])
            alone = model.rewards(ids, torch.tensor([len(rendered.ids) - 1]))
            assert together[k].item() == pytest.approx(alone.item(), abs=1e-5)


# --------------------------------------------------------------------------- the command line


def test_cli_dpo_and_tasks_pairs(chat_run, pairs_file, tmp_path, capsys):
    out = tmp_path / "cli-dpo"
    assert main(["dpo", "--base", str(chat_run), "--pairs", str(pairs_file), "--out", str(out),
                 "--max-steps", "1", "--batch-size", "4", "--block-size", "256", "--device", "cpu"]) == 0
    assert Run(out).stage == "dpo"
    assert main(["dpo", "--base", str(chat_run), "--pairs", str(pairs_file), "--out", str(out),
                 "--max-steps", "1"]) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert main(["dpo", "--base", str(chat_run), "--pairs", str(tmp_path / "missing.jsonl"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "missing.jsonl: cannot read preference pairs" in capsys.readouterr().err
    # a 2-step chat model is never right: no pair, no file, and the reason is said
    assert main(["tasks", "pairs", str(chat_run), "--out", str(tmp_path / "p.jsonl"), "--tasks", "letters",
                 "--n", "2", "--k", "2", "--max-tokens", "8", "--device", "cpu"]) == 2
    printed = capsys.readouterr().err
    assert "too hard" in printed and "no question got both a right and a wrong answer" in printed
    assert not (tmp_path / "p.jsonl").exists()
