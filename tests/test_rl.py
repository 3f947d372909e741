"""Reinforcement learning (GRPO): the objective on worked examples and a hand-computed batch,
padding, batched rollouts against one-by-one, the stage (statistics, held-out pass@k, the
stop rules, exact resume, the run record, the glass box, the CLI)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from lanternlm.chat import ChatTokens
from lanternlm.cli import main
from lanternlm.engine import Engine, ThinkingBudget
from lanternlm.errors import LanternError
from lanternlm.model import GPT, GPTConfig
from lanternlm.run import Run
from lanternlm.tasks.rollout import Question, sample_groups
from lanternlm.train import grpo
from lanternlm.train import rl as R
from lanternlm.train.reward import RewardConfig, reward
from lanternlm.train.rl import RLConfig, Sample, collate_samples, rl
from lanternlm.train.sft import sft

from sft_helpers import make_base, small_sft, train_tokenizer
from test_preference import EvenX, some_pairs, three_token_model


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer()


@pytest.fixture(scope="module")
def runs(tokenizer, tmp_path_factory):
    """A 2-step chat run and a 2-step reward model on it (random-ish but continuous scores)."""
    root = tmp_path_factory.mktemp("rl")
    sft(small_sft(make_base(tokenizer, root), tasks=["letters", "arithmetic"], max_steps=2), root / "chat")
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in some_pairs(12)))
    reward(dataclasses.replace(RewardConfig(), base=str(root / "chat"), pairs=[str(pairs)], batch_size=4,
                               max_steps=2, warmup_steps=1, eval_every=2, log_every=1, checkpoint_every=2,
                               block_size=256), root / "rm")
    return root / "chat", root / "rm"


def small_rl(chat, rm=None, **overrides) -> RLConfig:
    values = dict(base=str(chat), reward="tasks:letters", reward_model=str(rm) if rm else "", batch_size=2,
                  group_size=4, max_steps=4, max_tokens=12, eval_questions=2, eval_samples=2, eval_every=2,
                  log_every=1, checkpoint_every=2, lr=1e-3, block_size=256, warmup_steps=1, seed=5)
    return dataclasses.replace(RLConfig(), **(values | overrides))


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- the objective


def test_group_advantages_worked_example():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.1, 0.1, 1.1, 0.1], [0.5, 0.5, 0.5, 0.5]])
    # means 0.25, 0.6, 0.5: each answer against its own group
    expected = [[0.75, -0.25, -0.25, -0.25], [0.5, -0.5, 0.5, -0.5], [0.0, 0.0, 0.0, 0.0]]
    torch.testing.assert_close(grpo.group_advantages(rewards), torch.tensor(expected), atol=1e-6, rtol=0)
    # std scaling: sample std of [1, 0, 0, 0] is 0.5, of [1.1, 0.1, 1.1, 0.1] sqrt(1/3); no spread stays 0
    scaled = grpo.group_advantages(rewards, scale_std=True, eps=0.0).tolist()
    assert scaled[0] == pytest.approx([1.5, -0.5, -0.5, -0.5], abs=1e-6)
    assert scaled[1] == pytest.approx([0.5 * math.sqrt(3), -0.5 * math.sqrt(3)] * 2, abs=1e-6)
    assert grpo.group_advantages(rewards, scale_std=True)[2].tolist() == [0.0] * 4
    assert grpo.no_signal(rewards).tolist() == [False, False, True]
    with pytest.raises(LanternError):
        grpo.group_advantages(torch.ones(3))


def test_loss_and_gradient_on_a_hand_computed_batch():
    """Two answers: A = +1 (3 tokens, the last padding) and A = -0.5 (2 tokens); ratios
    1, 1.5 (clipped high), - and 0.5 (clipped low), 1.2; β = 0.1 with a reference."""
    old = torch.zeros(2, 3)
    ratios = torch.tensor([[1.0, 1.5, 1.0], [0.5, 1.2, 1.0]])
    logp = torch.log(ratios).requires_grad_(True)
    ref = torch.log(torch.tensor([[0.5, 1.5, 1.0], [0.5, 2.4, 1.0]]))  # ref/π: 0.5, 1, -; 1, 2
    trained = torch.tensor([[1, 1, 0], [1, 1, 0]]).bool()
    weights, count = grpo.aggregation_weights(trained)
    losses, flags = grpo.grpo_token_losses(logp, old, torch.tensor([1.0, -0.5]), clip_low=0.2, clip_high=0.28,
                                           ref_logp=ref, beta=0.1)
    loss = (losses * weights).sum() / count
    kl = lambda q: q - math.log(q) - 1  # noqa: E731  k3 with q = π_ref/π
    # surrogates: 1·1, 1.28·1 (held), -0.5·0.8 (held: min(-0.25, -0.4)), -0.5·1.2
    surrogate = [1.0, 1.28, -0.4, -0.6]
    kls = [kl(0.5), kl(1.0), kl(1.0), kl(2.0)]
    assert count == 4
    assert loss.item() == pytest.approx(sum(-s + 0.1 * k for s, k in zip(surrogate, kls)) / 4, abs=1e-6)
    assert flags["clip_high"].tolist() == [[0, 1, 0], [0, 0, 0]]
    assert flags["clip_low"].tolist() == [[0, 0, 0], [1, 0, 0]]
    loss.backward()
    # d/dlogp: unclipped -A·ρ, clipped 0; the KL adds β (1 - π_ref/π); padding nothing; all / 4
    dkl = [0.1 * (1 - q) for q in (0.5, 1.0, 1.0, 2.0)]
    expected = [[(-1.0 + dkl[0]) / 4, (0.0 + dkl[1]) / 4, 0.0], [(0.0 + dkl[2]) / 4, (0.5 * 1.2 + dkl[3]) / 4, 0.0]]
    torch.testing.assert_close(logp.grad, torch.tensor(expected), atol=1e-6, rtol=0)


def test_loss_is_zero_at_the_first_step_with_centred_advantages_and_no_kl():
    torch.manual_seed(0)
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.3, 0.9, 0.1, 0.2]])
    advantages = grpo.group_advantages(rewards).reshape(-1)  # (8,)
    logp = -torch.rand(8, 6)
    lengths = torch.tensor([6, 3, 5, 2, 6, 6, 4, 1])
    trained = torch.arange(6)[None] < lengths[:, None]
    losses, _ = grpo.grpo_token_losses(logp, logp.detach(), advantages)  # on-policy: ρ = 1
    weights, count = grpo.aggregation_weights(trained, "sequence")
    assert ((losses * weights).sum() / count).item() == pytest.approx(0.0, abs=1e-7)  # Σ A = 0 per group
    weights, count = grpo.aggregation_weights(trained, "token")  # token mean: -Σ A_i L_i / Σ L_i
    expected = -(advantages * lengths).sum() / lengths.sum()
    assert ((losses * weights).sum() / count).item() == pytest.approx(expected.item(), abs=1e-6)
    equal = torch.ones(8, 6).bool()  # equally long answers: 0 as well
    weights, count = grpo.aggregation_weights(equal, "token")
    assert ((losses * weights).sum() / count).item() == pytest.approx(0.0, abs=1e-7)


def test_padding_and_prompt_tokens_cannot_change_a_rows_loss_or_gradients(tokenizer):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32,
                          pos_encoding="rope", norm="rmsnorm", mlp="swiglu", bias=False))
    short = Sample([1, 5, 6], [7, 8, 2], [True, False, True], [-1.0, -1.0, -1.0], 0.7)
    long = Sample([1, 9, 9, 9, 9, 9], [3] * 20, [True] * 20, [-1.0] * 20, -0.7)

    def loss_and_grads(samples):
        model.zero_grad()
        batch = collate_samples(samples, tokenizer.pad_id)
        logp = model(batch.x, batch.y, reduction="none").logprobs
        losses, _ = grpo.grpo_token_losses(logp, logp.detach(), batch.advantages)
        (losses[0] * batch.weights[0]).sum().backward()  # the first row's only
        return (losses[0] * batch.weights[0]).sum().item(), [p.grad.clone() for p in model.parameters()]

    alone, grads_alone = loss_and_grads([short])
    padded, grads_padded = loss_and_grads([short, long])
    assert collate_samples([short, long], tokenizer.pad_id).x.shape[1] > len(short.prompt) + len(short.actions)
    assert collate_samples([short], tokenizer.pad_id).count == 2  # the forced token is not counted
    assert padded == pytest.approx(alone, abs=1e-6)
    for a, b in zip(grads_alone, grads_padded):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_the_objective_moves_a_policy_towards_the_rewarded_answer():
    """A one-step policy over 3 answers, answer 0 rewarded: groups of 8 samples, GRPO steps
    (each batch used twice, the second time through the clipped ratio) raise its probability."""
    torch.manual_seed(0)
    logits = torch.zeros(3, requires_grad=True)
    optimizer = torch.optim.SGD([logits], lr=0.5)
    for _ in range(30):
        with torch.no_grad():
            answers = torch.multinomial(torch.softmax(logits, -1), 8 * 4, replacement=True).reshape(4, 8)  # (Q, G)
            old = torch.log_softmax(logits, -1)[answers].reshape(-1, 1)
        advantages = grpo.group_advantages((answers == 0).double()).reshape(-1)
        for _ in range(2):
            logp = torch.log_softmax(logits, -1)[answers].reshape(-1, 1)  # (Q G, 1): one token each
            losses, _ = grpo.grpo_token_losses(logp, old, advantages)
            optimizer.zero_grad()
            losses.mean().backward()
            optimizer.step()
    assert torch.softmax(logits, -1)[0].item() > 0.9


def test_log_probs_at_a_temperature_and_the_entropy_match_the_full_logits():
    from lanternlm.loss import token_entropy

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    x, y = torch.randint(0, 50, (2, 7)), torch.randint(0, 50, (2, 7))
    logits = model(x).logits[..., :50]  # (2, 7, 50): the engine's vocabulary rule, 50 real ids
    for temperature in (1.0, 0.7):
        expected = torch.log_softmax(logits / temperature, -1).gather(-1, y[..., None])[..., 0]
        got = model(x, y, reduction="none", vocab_limit=50, temperature=temperature).logprobs
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    hidden, _ = model.hidden(x)
    logp = torch.log_softmax(logits, -1)
    torch.testing.assert_close(token_entropy(hidden, model.head_weight, vocab_limit=50, chunk_rows=3),
                               -(logp.exp() * logp).sum(-1), atol=1e-5, rtol=0)


def test_pass_at_k():
    assert grpo.pass_at_k(4, 1, 1) == 0.25 and grpo.pass_at_k(4, 1, 4) == 1.0 and grpo.pass_at_k(4, 0, 2) == 0.0
    assert grpo.pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)


# --------------------------------------------------------------------------- rollouts


def test_a_batched_rollout_equals_the_questions_sampled_one_by_one(tokenizer):
    t = ChatTokens.of(tokenizer)
    x, y = tokenizer.encode("x")[0], tokenizer.encode("y")[0]
    engine = Engine(three_token_model(tokenizer, [x, y, t.think, t.end]), vocab_limit=tokenizer.vocab_size)
    task = EvenX()
    examples = task.generate(5, seed=0)
    questions = [Question(task, ex, "none" if i % 2 else "low", 100 + i) for i, ex in enumerate(examples)]
    budget = ThinkingBudget(t.think, t.end_think, 1)
    together = list(sample_groups(engine, tokenizer, questions, 4, max_tokens=10, batch_questions=5, thinking=budget))
    alone = [g for q in questions for g in sample_groups(engine, tokenizer, [q], 4, max_tokens=10, thinking=budget)]
    assert len(together) == len(alone) == 5
    for a, b in zip(together, alone):
        assert a.prompt == b.prompt and a.question == b.question
        for p, q in zip(a.answers, b.answers):
            assert (p.tokens, p.finished, p.forced, p.correct) == (q.tokens, q.finished, q.forced, q.correct)
            assert p.logprobs == pytest.approx(q.logprobs, abs=1e-5)
    answers = [a for g in together for a in g.answers]
    assert len({tuple(a.tokens) for a in answers}) > 5  # they differ
    assert any(a.finished for a in answers) and any(not a.finished for a in answers)
    # the budget forced <|/think|> after one thinking token; that token stays out of the targets
    forced = [a for a in answers if any(a.forced)]
    assert forced
    a = forced[0]
    batch = collate_samples([Sample(together[0].prompt, a.actions(t.end), [not f for f in a.forced], a.logprobs, 1.0)],
                            tokenizer.pad_id)
    assert t.end_think in a.tokens and batch.count == len(a.actions(t.end)) - sum(a.forced)
    chosen = [lp for lp, f in zip(a.logprobs, a.forced) if not f]
    assert chosen == pytest.approx([math.log(1 / 4)] * len(chosen), abs=1e-4)  # uniform over four tokens
    assert [lp for lp, f in zip(a.logprobs, a.forced) if f][0] < -20  # the model would never have chosen it


# --------------------------------------------------------------------------- the stage


def test_rl_stage_logs_the_signal_evaluates_and_is_a_chat_run(runs, tmp_path):
    chat, rm = runs
    run = tmp_path / "rl"
    summary = rl(small_rl(chat, rm, aggregation="sequence", beta=0.05), run)
    lines = metrics(run)
    first = lines[0]
    assert first["train_loss"] == pytest.approx(0.0, abs=1e-6)  # ρ = 1, Σ A = 0 per group
    assert first["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy is the reference
    assert first["logprob_diff_max"] < 1e-4 and first["logprob_diff_mean"] < 1e-5
    for key in ("reward_mean", "reward_std", "reward_mean_letters", "accuracy", "no_signal_fraction", "length_min",
                "length_mean", "length_max", "cut_fraction", "entropy", "clip_low_fraction", "clip_high_fraction",
                "grad_norm", "rollout_tokens_per_s", "format_fraction", "thinking_mean"):
        assert key in first, key
    assert 0 < first["entropy"] <= math.log(Run(chat).tokenizer.vocab_size) + 1e-4
    assert first["reward_std"] > 0 and first["no_signal_fraction"] == 0  # reward-model scores differ
    assert first["length_min"] <= first["length_mean"] <= first["length_max"] <= 12
    held = [line for line in lines if "val_pass1" in line]
    assert [line["step"] for line in held] == [2, 4]
    assert {"val_passk", "val_reward", "val_pass1_letters", "val_length_mean"} <= set(held[0])
    assert summary["steps"] == 4 and summary["stopped"] == "max_steps"
    record = json.loads((run / "config.json").read_text())
    assert record["stage"] == "rl" and record["judge"] == "reward_model" and record["tasks"] == ["letters"]
    assert 0 <= record["base_eval"]["val_pass1"] <= record["base_eval"]["val_passk"] <= 1
    loaded = Run(run)
    assert loaded.chat and loaded.parent.path.resolve() == chat.resolve()
    assert loaded.engine("cpu").generate([[1, 2]], max_tokens=3)[0].tokens

    # the glass box: curves (held out from the base at step 0), the picture, answers before/after, the report
    from lanternlm.inspect.report import write_report
    from lanternlm.inspect.rl import rl_command

    text = rl_command(str(run), tasks=["letters"], levels=["none"], n=2, device="cpu")
    assert "judged by the reward model" in text and "val_pass1           0:" in text  # the base at step 0
    assert "reward_mean" in text and "length_max" in text and "of the answers changed" in text
    assert (run / "inspect" / "rl.png").is_file()
    assert "## Reinforcement learning" in write_report(run, device="cpu").read_text()

    # every stage takes an rl run as its base: rl again, sft, and lantern eval reads it
    rl(small_rl(run, max_steps=1, eval_every=1, format_reward=0.5), tmp_path / "rl-again")
    sft(small_sft(run, tasks=["letters"], max_steps=1), tmp_path / "sft-after")
    assert main(["eval", str(run), "--tasks", "letters", "--levels", "none", "--n", "2", "--max-tokens", "4",
                 "--bpb-tokens", "0", "--device", "cpu"]) == 0


def test_rl_resumes_exactly_in_the_middle_of_a_reused_batch(runs, tmp_path):
    chat, rm = runs
    straight = tmp_path / "straight"
    rl(small_rl(chat, rm, updates_per_batch=2), straight)
    lines = metrics(straight)
    # steps 1-2 train on rollout 1, steps 3-4 on rollout 2: the same rollout statistics, another loss
    assert lines[0]["reward_mean"] == lines[1]["reward_mean"] != lines[2]["reward_mean"] == lines[3]["reward_mean"]
    assert lines[1]["train_loss"] != lines[0]["train_loss"]
    again = tmp_path / "again"
    rl(small_rl(chat, rm, updates_per_batch=2, max_steps=1), again)  # stopped between the two updates
    rl(small_rl(chat, rm, updates_per_batch=2), again, resume=True)
    resumed = metrics(again)
    for key in ("train_loss", "grad_norm", "reward_mean", "entropy"):
        assert [line[key] for line in resumed] == [line[key] for line in lines], key
    for (name, a), (_, b) in zip(Run(straight).model("cpu").state_dict().items(),
                                 Run(again).model("cpu").state_dict().items()):
        assert torch.equal(a, b), name


def test_no_signal_stops_the_run_and_says_the_task_is_too_hard(runs, tmp_path, caplog):
    chat, _ = runs
    summary = rl(small_rl(chat, format_reward=0.0, max_steps=20, no_signal_patience=2), tmp_path / "silent")
    assert summary["stopped"] == "no_signal" and summary["steps"] == 2
    assert metrics(tmp_path / "silent")[-1]["no_signal_fraction"] == 1.0
    assert "too hard for this model" in caplog.text and "no learning signal" in caplog.text


def test_held_out_accuracy_falling_below_its_best_stops_the_run(runs, tmp_path, monkeypatch, caplog):
    chat, rm = runs
    pass1 = iter([0.5, 0.45, 0.3])  # the base, step 2 (within 0.1 of the best), step 4 (not)

    def scores(*args):
        return {"val_pass1": next(pass1), "val_passk": 0.6, "val_reward": 1.0, "val_length_mean": 5.0,
                "val_cut_fraction": 0.0}

    monkeypatch.setattr(R, "held_out_scores", scores)
    summary = rl(small_rl(chat, rm, max_steps=8, stop_accuracy_drop=0.1), tmp_path / "hacked")
    assert summary["stopped"] == "accuracy_drop" and summary["steps"] == 4
    assert "fell more than 10% below its best 50.0%" in caplog.text and "reward model's score" in caplog.text


def test_rl_refuses_bad_settings_and_a_base_run(runs, tmp_path):
    chat, rm = runs
    for change, message in ((dict(group_size=1), "group_size=1"), (dict(reward="verifier"), "--reward 'verifier'"),
                            (dict(reward="tasks:chess"), "unknown tasks"), (dict(aggregation="mean"), "aggregation"),
                            (dict(temperature=0.0), "temperature=0.0"), (dict(levels=["max"]), "levels")):
        with pytest.raises(LanternError, match=message):
            rl(small_rl(chat, **change), tmp_path / "bad")
    with pytest.raises(LanternError, match="does not speak the chat format"):
        rl(small_rl(Run(chat).parent.path), tmp_path / "from-base")
    with pytest.raises(LanternError, match="not a reward model"):
        rl(small_rl(chat, reward_model=str(chat)), tmp_path / "judge-chat")


def test_cli_rl(runs, tmp_path, capsys):
    chat, rm = runs
    out = tmp_path / "cli-rl"
    flags = ["--base", str(chat), "--reward", "tasks:letters", "--group-size", "2", "--batch-size", "2",
             "--max-tokens", "6", "--eval-questions", "1", "--eval-samples", "2", "--block-size", "256",
             "--device", "cpu"]
    assert main(["rl", *flags, "--reward-model", str(rm), "--out", str(out), "--max-steps", "1"]) == 0
    assert Run(out).stage == "rl"
    assert main(["rl", *flags, "--out", str(out), "--max-steps", "1"]) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert main(["inspect", "rl", str(out), "--device", "cpu"]) == 0
    assert "judged by the reward model" in capsys.readouterr().out
