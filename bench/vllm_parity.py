"""Our Hugging Face export in vLLM (GPU only): greedy tokens against our engine's.

For each run (by default two seeded random-weight runs, Llama-style with grouped-query
attention and an untied head, and GPT-2-style; or ``--run DIR`` runs of your own) the run
is exported with ``lantern export --format hf``, loaded by ``vllm.LLM`` from that folder
(no remote code, fp32), and both decode ``--new-tokens`` greedy tokens from the same prompt
ids (vLLM's ``TokensPrompt``, temperature 0, no stop); the figure is how many prompts give
identical tokens, and the first position where any differ. Writes its section of
bench/RESULTS.md. Needs a CUDA GPU and ``pip install vllm``.

    python bench/vllm_parity.py [--run RUN ...] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from interop_helpers import GPT2, LLAMA, TEXTS, make_run  # noqa: E402
from lanternlm.generate import encode_prompt  # noqa: E402
from lanternlm.interop.export import export_hf  # noqa: E402
from lanternlm.run import Run  # noqa: E402
from lanternlm.sampling import SamplingParams  # noqa: E402
from lanternlm.tokenizer import Tokenizer  # noqa: E402

from results import write_section  # noqa: E402


def compare(run: Run, folder: Path, new_tokens: int) -> dict:
    import vllm

    prompts = [encode_prompt(run.tokenizer, text[:80]) for text in TEXTS[:8]]
    ours = run.engine("cuda").generate(prompts, max_tokens=new_tokens, sampling=SamplingParams(temperature=0.0))
    llm = vllm.LLM(model=str(folder), dtype="float32", enforce_eager=True, gpu_memory_utilization=0.3,
                   max_model_len=run.model_config.block_size)
    theirs = llm.generate([{"prompt_token_ids": ids} for ids in prompts],
                          vllm.SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True))
    firsts = []
    for mine, out in zip(ours, theirs):
        other = list(out.outputs[0].token_ids)
        firsts.append(next((i for i, (a, b) in enumerate(zip(mine.tokens, other)) if a != b), None))
    del llm
    return {"equal": sum(f is None for f in firsts), "prompts": len(prompts),
            "first_difference": min((f for f in firsts if f is not None), default=None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", help="runs to check (default: two random-weight runs)")
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("vllm_parity: needs a CUDA GPU (vLLM serves on GPUs)")
    import vllm

    with tempfile.TemporaryDirectory() as tmp:
        if args.run:
            runs = [Path(r) for r in args.run]
        else:
            tok = Tokenizer.train(TEXTS, 400, backend="python")
            runs = [make_run(Path(tmp) / name, dataclasses.replace(config, block_size=160), tok)
                    for name, config in (("llama", LLAMA), ("gpt2", GPT2))]
        lines = ["## vLLM serves the Hugging Face export (`bench/vllm_parity.py`)", "",
                 f"vLLM {vllm.__version__}, {torch.cuda.get_device_name()}, fp32; greedy, "
                 f"{args.new_tokens} new tokens from the same prompt ids.", "",
                 "| run | prompts with identical tokens | first difference |", "|---|---|---|"]
        for path in runs:
            run = Run(path)
            folder = export_hf(run, Path(tmp) / f"hf-{path.name}")
            result = compare(run, folder, args.new_tokens)
            lines.append(f"| {path.name} ({run.model_config.n_layer} layers, width {run.model_config.n_embd}) | "
                         f"{result['equal']}/{result['prompts']} | {result['first_difference'] or '-'} |")
            print(lines[-1], flush=True)
    write_section("vllm", "\n".join(lines))


if __name__ == "__main__":
    main()
