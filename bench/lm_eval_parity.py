"""lm-evaluation-harness on a run, two ways: its ``hf`` model on our Hugging Face export,
and its ``local-completions`` model through ``lantern serve``; both must give the same figures.

    pip install lm_eval
    python bench/lm_eval_parity.py --run RUN [--no-write]

Offline, on two tasks written here from local files (``--include_path``, ``dataset_path: json``):

- ``lantern_sums``, multiple choice: "12 + 7 =" with four numbers to choose from (the
  log-likelihood of each continuation; ``acc`` and ``acc_norm``);
- ``lantern_text``, rolling log-likelihood of short texts (word perplexity, bits per byte).

The ``hf`` run loads the folder of ``lantern export --format hf`` with ``transformers``; the
``local-completions`` run sends token ids (the same Hugging Face tokenizer from the folder)
to ``/v1/completions`` with ``echo: true`` and reads the prompt's log-probabilities — what
lm-evaluation-harness does against any OpenAI-compatible server. Written into its section
of bench/RESULTS.md with both commands.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import write_section  # noqa: E402
from serve import Server  # noqa: E402

TASKS = {
    "lantern_sums": """task: lantern_sums
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/sums.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
  - metric: acc_norm
""",
    "lantern_text": """task: lantern_text
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/text.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
""",
}


def write_tasks(folder: Path, n: int) -> None:
    rng = random.Random(0)
    with open(folder / "sums.jsonl", "w") as f:
        for _ in range(n):
            a, b = rng.randint(1, 50), rng.randint(1, 50)
            wrong = rng.sample([a + b + d for d in (-3, -2, -1, 1, 2, 3, 10)], 3)
            choices = [f" {a + b}"] + [f" {w}" for w in wrong]
            rng.shuffle(choices)
            f.write(json.dumps({"context": f"{a} + {b} =", "choices": choices, "label": choices.index(f" {a + b}")}) + "\n")
    from lanternlm.tasks import make_sft_mixture

    with open(folder / "text.jsonl", "w") as f:
        for conversation in make_sft_mixture(["letters", "reverse", "glue"], max(1, n // 6), seed=3)[:n // 2]:
            f.write(json.dumps({"text": " ".join(m["content"] for m in conversation)}) + "\n")
    for name, text in TASKS.items():
        (folder / f"{name}.yaml").write_text(text.format(data=folder))


def lm_eval(model: str, model_args: str, tasks: Path, out: Path) -> tuple[dict, str, float]:
    command = [sys.executable, "-m", "lm_eval", "run", "--model", model, "--model_args", model_args,
               "--tasks", ",".join(TASKS), "--include_path", str(tasks), "--output_path", str(out),
               "--batch_size", "8", "--device", "cpu"]
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"lm_eval failed:\n{done.stderr[-4000:]}")
    results = sorted(out.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)[-1]
    return json.loads(results.read_text())["results"], " ".join(command[2:]), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run (base or chat) to evaluate")
    parser.add_argument("--n", type=int, default=100, help="multiple-choice questions (and n/2 texts)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    import lm_eval as harness

    from lanternlm.interop.export import export_hf
    from lanternlm.run import Run

    run = Run(args.run)
    name = Path(args.run).resolve().name
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "tasks").mkdir()
        write_tasks(tmp / "tasks", args.n)
        folder = export_hf(run, tmp / "hf")
        block = run.model_config.block_size  # both read windows of block - 1 tokens: the server must leave room for one
        hf, hf_command, hf_seconds = lm_eval("hf", f"pretrained={folder},dtype=float32,max_length={block - 1}",
                                             tmp / "tasks", tmp / "out-hf")
        server = Server(args.run, 16)
        try:
            served, api_command, api_seconds = lm_eval(
                "local-completions", f"model={name},base_url={server.url}/v1/completions,tokenizer_backend=huggingface,"
                f"tokenizer={folder},tokenized_requests=True,max_length={block - 1},num_concurrent=8",
                tmp / "tasks", tmp / "out-api")
        finally:
            server.close()
    rows = ["| task | metric | `hf` on the export | `local-completions` via lantern serve | difference |",
            "|---|---|---|---|---|"]
    worst = 0.0
    for task in TASKS:
        for key, value in hf[task].items():
            if "," not in key or "stderr" in key or not isinstance(value, (int, float)):
                continue
            other = served[task][key]
            worst = max(worst, abs(value - other) / max(1.0, abs(value)))
            rows.append(f"| {task} | {key.split(',')[0]} | {value:.6g} | {other:.6g} | {value - other:+.2g} |")
    body = (f"## lm-evaluation-harness: the export and the server agree (`bench/lm_eval_parity.py`)\n\n"
            f"lm-evaluation-harness {harness.__version__}, offline, CPU, run `{args.run}` (stage {run.stage}); "
            f"{args.n} multiple-choice sums and {args.n // 2} rolling-log-likelihood texts written by the bench as "
            f"local JSONL tasks. The `hf` model loads `lantern export --format hf`; `local-completions` sends the "
            f"same tokenizer's ids to `lantern serve` (`echo`, prompt log-probabilities).\n\n" + "\n".join(rows) +
            f"\n\nLargest relative difference: **{worst:.1e}** (fp32 on both sides; the server's logits come from "
            f"our model, the export's from transformers on the same weights). Time: hf {hf_seconds:.0f} s, "
            f"local-completions {api_seconds:.0f} s.\n\nCommands (after `python bench/lm_eval_parity.py --run RUN`"
            f" wrote the tasks and the export):\n\n```\n{hf_command}\n{api_command}\n```\n")
    print(body)
    if not args.no_write:
        write_section("lm_eval", body)


if __name__ == "__main__":
    main()
