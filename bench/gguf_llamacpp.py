"""Our GGUF export in llama.cpp (``llama-cpp-python``, built from PyPI): greedy tokens, logits
and tokenization against ours on the same run.

For each run (by default two seeded random-weight runs, Llama-style with grouped-query
attention and an untied head, and GPT-2-style; or ``--run DIR`` runs of your own), the run
is exported with ``lantern export --format gguf`` and loaded by ``llama_cpp.Llama``; then

- **logits**: after each prompt, the largest absolute difference between llama.cpp's
  logits and ours over the whole vocabulary, and whether the top-5 ids agree;
- **greedy**: ``--new-tokens`` greedy tokens from both, fed the same prompt ids (llama.cpp's
  own argmax over its logits, our engine at temperature 0), and the first position where
  they differ;
- **tokenization**: llama.cpp's ``tokenize`` (the pre-tokenizer it picked by name from
  ``tokenizer.ggml.pre``) against our ``encode`` on the export check's probe strings;
- **chat template**: for a chat run, llama-cpp-python's Jinja formatter renders the file's
  ``tokenizer.chat_template`` at each reasoning level, llama.cpp tokenizes it (special
  tokens on), against our :func:`lanternlm.chat.render_for_generation`.

Tolerance: fp32 weights, but llama.cpp's CPU kernels round some intermediates, so logits
agree to about 1e-3 of the largest logit (measured: below 3e-3 absolute on logits up to
about 3); greedy tokens must be equal unless two logits tie that closely. Writes its
section of bench/RESULTS.md.

    pip install llama-cpp-python gguf
    python bench/gguf_llamacpp.py [--run RUN ...] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from interop_helpers import GPT2, LLAMA, TEXTS, make_run  # noqa: E402
from lanternlm.chat import REASONING_LEVELS, render_for_generation  # noqa: E402
from lanternlm.interop.gguf import export_gguf  # noqa: E402
from lanternlm.interop.hf_tokenizer import PROBES, random_probes  # noqa: E402
from lanternlm.run import Run  # noqa: E402
from lanternlm.sampling import SamplingParams  # noqa: E402
from lanternlm.tokenizer import Tokenizer  # noqa: E402

from results import write_section  # noqa: E402

PROMPTS = ["I love pizza! I love", "The lanterns over the river", "1234 numbers 0000 and"]
CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 0000!"},
                {"role": "assistant", "content": "Yo.", "thinking": "greet"}, {"role": "user", "content": "Again?"}]


def compare(run: Run, path: Path, new_tokens: int) -> dict:
    from llama_cpp import Llama

    tok = run.tokenizer
    llm = Llama(model_path=str(path), n_ctx=run.model_config.block_size, logits_all=True, n_threads=1,
                verbose=False)
    model = run.model("cpu")
    engine = run.engine("cpu")
    worst, scale, top_agree, first_diff = 0.0, 0.0, 0, []
    for text in PROMPTS:
        prompt = [tok.bos_id] + tok.encode(text)
        llm.reset()
        llm.eval(prompt)
        theirs = np.asarray(llm.scores[len(prompt) - 1], dtype=np.float32)
        with torch.no_grad():
            ours = model(torch.tensor([prompt])).logits[0, -1, :tok.vocab_size].numpy()
        worst = max(worst, float(np.abs(theirs[:tok.vocab_size] - ours).max()))
        scale = max(scale, float(np.abs(ours).max()))
        top_agree += list(np.argsort(-theirs[:tok.vocab_size])[:5]) == list(np.argsort(-ours)[:5])
        mine = engine.generate([prompt], max_tokens=new_tokens, sampling=SamplingParams(temperature=0.0))[0].tokens
        cpp = []
        for _ in range(new_tokens):
            cpp.append(int(np.argmax(llm.scores[llm.n_tokens - 1][:tok.vocab_size])))
            llm.eval([cpp[-1]])
        first_diff.append(next((i for i, (a, b) in enumerate(zip(mine, cpp)) if a != b), None))
    probes = list(PROBES) + random_probes(200)
    tokenized = sum(llm.tokenize(p.encode(), add_bos=False, special=False) == tok.encode(p) for p in probes)
    chat = "-"
    if run.chat:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        formatter = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"], eos_token="", bos_token="")
        chat = sum(llm.tokenize(formatter(messages=CONVERSATION, reasoning=level).prompt.encode(), add_bos=False,
                                special=True) == render_for_generation(CONVERSATION, tok, level)
                   for level in REASONING_LEVELS)
        chat = f"{chat}/{len(REASONING_LEVELS)}"
    return {"arch": "llama" if run.model_config.pos_encoding == "rope" else "gpt2", "worst": worst, "scale": scale,
            "top5": f"{top_agree}/{len(PROMPTS)}", "greedy": first_diff, "tokenized": f"{tokenized}/{len(probes)}", "chat": chat}


def llama_version() -> str:
    import llama_cpp

    return llama_cpp.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", default=[], help="run directories (default: two random runs)")
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = [Path(r) for r in args.run]
        if not runs:
            tok = Tokenizer.train(TEXTS, 400, backend="python")
            runs = [make_run(Path(tmp) / name, dataclasses.replace(config, block_size=160), tok)
                    for name, config in (("llama", LLAMA), ("gpt2", GPT2))]
        for run_dir in runs:
            run = Run(run_dir)
            path = export_gguf(run, Path(tmp) / f"{run_dir.name}.gguf")
            rows.append(compare(run, path, args.new_tokens))
    lines = ["## GGUF export in llama.cpp (`bench/gguf_llamacpp.py`)", "",
             f"llama-cpp-python {llama_version()} (built from PyPI), fp32 GGUF, CPU, one thread; {args.new_tokens} greedy tokens after each of "
             f"{len(PROMPTS)} prompts; random-weight runs unless named.", "",
             "| arch | max abs logit diff (largest logit) | top-5 ids equal | greedy: first differing position per prompt "
             "| tokenization equal on probes | chat template: prompt ids equal per level |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        greedy = ", ".join("none" if d is None else str(d) for d in row["greedy"])
        lines.append(f"| {row['arch']} | {row['worst']:.2e} ({row['scale']:.1f}) | {row['top5']} | {greedy} | {row['tokenized']} "
                     f"| {row['chat']} |")
    print("\n".join(lines))
    write_section("gguf-llamacpp", "\n".join(lines))


if __name__ == "__main__":
    main()
