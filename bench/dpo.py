"""DPO training speed: ours against TRL's ``DPOTrainer``, same model, data and batch, on the CPU.

    python bench/dpo.py --run runs/quickstart/chat --pairs PAIRS.jsonl       # writes bench/RESULTS.md
    python bench/dpo.py --run RUN --pairs PAIRS --steps 30 --runs 3 --no-write

Both train the chat run ``--run`` (exported to Hugging Face format for TRL by
:func:`lanternlm.interop.hf.to_hf`, the same weights) on the pairs of ``--pairs`` (rendered by
:func:`lanternlm.data.preference.render_pair`; TRL tokenizes the same conversations as text
and the bench checks it gets the same ids), with the same settings: sigmoid loss, β 0.1,
AdamW at the same learning rate, ``--batch-size`` pairs per step, no accumulation, fp32, the
reference's log-probabilities precomputed before training (TRL's
``precompute_ref_log_probs``, our default), no evaluation or checkpoint inside the timed
steps. Both run in this process on ``--threads`` torch threads, one after the other.

Speed = non-padding tokens of the pairs trained on / seconds, over the steps after
``--warmup`` steps (optimizer step included), median of ``--runs`` runs. Ours from the
loop's metrics (``tokens_per_s`` x (1 - ``pad_fraction``) per logged step), TRL's from a
callback at each step's end and the attention masks of the batches it trained on.
Goal: ours >= 2x TRL's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import write_section  # noqa: E402
from lanternlm.data.preference import load_pairs, render_pair  # noqa: E402
from lanternlm.log import set_verbosity  # noqa: E402
from lanternlm.run import Run  # noqa: E402
from lanternlm.train.dpo import DPOConfig, dpo  # noqa: E402


def ours(run: str, pairs: str, steps: int, warmup: int, batch: int, lr: float, seed: int) -> float:
    """Our DPO's tokens/s over the steps after the warm-up."""
    with tempfile.TemporaryDirectory() as out:
        config = DPOConfig(base=run, pairs=[pairs], val_fraction=0.0, batch_size=batch, max_steps=steps,
                           warmup_steps=1, lr=lr, eval_every=10 * steps, log_every=1, checkpoint_every=10 * steps,
                           seed=seed, device="cpu", dtype="float32", beta1=0.9, beta2=0.95, weight_decay=0.0,
                           grad_clip=1.0)
        dpo(config, Path(out) / "dpo")
        lines = [json.loads(line) for line in (Path(out) / "dpo" / "metrics.jsonl").read_text().splitlines()]
    timed = [line for line in lines if warmup < line["step"] < steps]  # the last step also checkpoints
    seconds = timed[-1]["elapsed_s"] - lines[warmup - 1]["elapsed_s"]
    tokens = 0.0
    previous = lines[warmup - 1]["elapsed_s"]
    for line in timed:
        window = line["elapsed_s"] - previous
        tokens += line["tokens_per_s"] * window * (1 - line["pad_fraction"])
        previous = line["elapsed_s"]
    return tokens / seconds


def trl_speed(run: str, pairs_path: str, steps: int, warmup: int, batch: int, lr: float, seed: int) -> float:
    """TRL DPOTrainer's tokens/s on the same model, data and settings."""
    import datasets
    import trl
    from transformers import PreTrainedTokenizerFast, TrainerCallback

    from lanternlm.interop.hf import to_hf

    loaded = Run(run)
    tokenizer = loaded.tokenizer
    texts, expected = [], []
    for pair in load_pairs(pairs_path):
        chosen, rejected = render_pair(pair, tokenizer)
        start = chosen.mask.index(1)
        prompt = chosen.ids[:start]
        texts.append({"prompt": tokenizer.decode(prompt), "chosen": tokenizer.decode(chosen.ids[start:]),
                      "rejected": tokenizer.decode(rejected.ids[start:])})
        expected.append(prompt)
    with tempfile.TemporaryDirectory() as out:
        tokenizer.to_hf_json(Path(out) / "tokenizer.json")
        hf_tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(Path(out) / "tokenizer.json"),
                                               pad_token="<|pad|>", eos_token="<|end|>")
        args = trl.DPOConfig(output_dir=out, beta=0.1, loss_type=["sigmoid"], learning_rate=lr,
                             lr_scheduler_type="cosine", warmup_steps=1, per_device_train_batch_size=batch,
                             max_steps=steps, max_length=None, precompute_ref_log_probs=True, bf16=False,
                             use_cpu=True, report_to=[], save_strategy="no", logging_steps=10 * steps,
                             dataloader_num_workers=0, seed=seed, adam_beta2=0.95, weight_decay=0.0,
                             max_grad_norm=1.0)
        trainer = trl.DPOTrainer(model=to_hf(loaded.model("cpu")), args=args,
                                 train_dataset=datasets.Dataset.from_list(texts), processing_class=hf_tokenizer)
        assert [trainer.train_dataset[i]["prompt_ids"] for i in range(len(expected))] == expected, \
            "TRL tokenized the prompts differently: the two would not train on the same ids"
        tokens, ends = [], []
        step = trainer.training_step

        def counted(model, inputs, *rest, **kw):
            tokens.append(int(inputs["attention_mask"].sum()))
            return step(model, inputs, *rest, **kw)

        trainer.training_step = counted

        class Clock(TrainerCallback):
            def on_step_end(self, *a, **kw):
                ends.append(time.perf_counter())

        trainer.add_callback(Clock())
        trainer.train()
    return sum(tokens[warmup:steps - 1]) / (ends[steps - 2] - ends[warmup - 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/quickstart/chat", help="chat run to train (default: the quickstart's)")
    parser.add_argument("--pairs", required=True, help="preference JSONL (e.g. lantern tasks pairs RUN --out FILE)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    set_verbosity(quiet=True)
    mine, theirs = [], []
    for i in range(args.runs):  # alternate, so drifting machine load hits both alike
        mine.append(ours(args.run, args.pairs, args.steps, args.warmup, args.batch_size, args.lr, seed=i))
        theirs.append(trl_speed(args.run, args.pairs, args.steps, args.warmup, args.batch_size, args.lr, seed=i))
        print(f"run {i + 1}: ours {mine[-1]:,.0f} tok/s, TRL {theirs[-1]:,.0f} tok/s ({mine[-1] / theirs[-1]:.2f}x)",
              flush=True)
    ratio = statistics.median(mine) / statistics.median(theirs)
    import trl

    model = Run(args.run).model("cpu")
    body = f"""## DPO training speed (`bench/dpo.py`): ours vs TRL `DPOTrainer`, CPU

Measured {time.strftime('%Y-%m-%d %H:%M')} on {platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, trl {trl.__version__}, {args.threads} torch thread(s); load average {os.getloadavg()[0]:.1f} at the end.

- model: `{args.run}` ({model.num_params():,} parameters, {model.config.n_layer} layers, width {model.config.n_embd}), the same weights for TRL (exported to Hugging Face)
- data: `{args.pairs}`, {args.batch_size} pairs per step, {args.steps} steps, timed after {args.warmup}; reference log-probabilities precomputed by both; fp32; AdamW

| | tokens/s (median of {args.runs}) | per run |
|---|---|---|
| lanternlm `dpo` | {statistics.median(mine):,.0f} | {', '.join(f'{v:,.0f}' for v in mine)} |
| TRL `DPOTrainer` | {statistics.median(theirs):,.0f} | {', '.join(f'{v:,.0f}' for v in theirs)} |

Ours / TRL: **{ratio:.2f}x** (goal >= 2x: **{'met' if ratio >= 2 else 'not met'}**).

```
python bench/dpo.py --run {args.run} --pairs {args.pairs} --steps {args.steps} --batch-size {args.batch_size} --runs {args.runs} --threads {args.threads}
```
"""
    print(body)
    if not args.no_write:
        write_section("dpo_speed", body)


if __name__ == "__main__":
    main()
