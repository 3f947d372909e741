"""Peak memory of `prepare` as the corpus grows: 1x and 10x the built-in corpus.

The 10x corpus is the built-in corpus plus 9 perturbed copies (the words of every
line shuffled with a different seed), so near-duplicate removal keeps them and the
pipeline really has 10x the documents to clean, deduplicate, tokenize and shard.
Each measurement runs in a fresh Python process and reports its own peak RSS.
As a reference point, a naive in-memory version (read every document, tokenize all
at once, concatenate, write) runs on the same corpora in the same way.

    python bench/data_memory.py [--runs 3] [--scale 10]

Writes the `data` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from results import write_section  # noqa: E402

CHILD_PREPARE = """
import json, resource, sys, time
from lanternlm.log import set_verbosity
from lanternlm.data.prepare import prepare
from lanternlm.data.sources import ReadConfig
set_verbosity(quiet=True)
t = time.perf_counter()
m = prepare([sys.argv[1]], sys.argv[2], sys.argv[3], read=ReadConfig(text_split="chunk"))
print(json.dumps({"seconds": time.perf_counter() - t, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "documents": m["report"]["documents_out"], "tokens": m["splits"]["train"]["tokens"] + m["splits"]["val"]["tokens"]}))
"""

CHILD_NAIVE = """
import json, resource, sys, time
from pathlib import Path
import numpy as np
from lanternlm.data.sources import ReadConfig, iter_documents
from lanternlm.tokenizer import Tokenizer
t = time.perf_counter()
tok = Tokenizer.load(sys.argv[3])
docs = [d.text for d in iter_documents(sys.argv[1], ReadConfig(text_split="chunk"))]
ids = np.concatenate([np.array([tok.eot_id] + row, dtype=np.uint16) for row in tok.encode_batch(docs)])
Path(sys.argv[2]).mkdir(parents=True, exist_ok=True)
ids.tofile(Path(sys.argv[2]) / "all.bin")
print(json.dumps({"seconds": time.perf_counter() - t, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "documents": len(docs), "tokens": int(len(ids))}))
"""

CHILD_BASELINE = """
import json, resource
import numpy, pyarrow.parquet
from lanternlm.data import prepare, shards, sources, clean, dedup
from lanternlm.tokenizer import Tokenizer
print(json.dumps({"peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def perturbed(text: str, seed: int) -> str:
    """Every line's words shuffled with ``seed`` (blank lines kept, so paragraphs stay paragraphs)."""
    rng = random.Random(seed)
    out = []
    for line in text.split("\n"):
        words = line.split()
        rng.shuffle(words)
        out.append(" ".join(words))
    return "\n".join(out)


def run_child(code: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                            cwd=ROOT, check=False)
    if result.returncode != 0:
        raise SystemExit(f"child failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--corpus", default="shakespeare", help="built-in corpus to grow from")
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    args = parser.parse_args()

    from lanternlm.data import builtin
    from lanternlm.tokenizer import Tokenizer

    corpus = builtin.get(args.corpus)
    base = {p.stem: p.read_text() for p in corpus.files}
    with tempfile.TemporaryDirectory(prefix="lantern-bench-") as tmp:
        tmp = Path(tmp)
        folders = {1: tmp / "x1", args.scale: tmp / f"x{args.scale}"}
        for scale, folder in folders.items():
            folder.mkdir()
            for copy in range(scale):
                for name, text in base.items():
                    (folder / f"{copy:02d}_{name}.txt").write_text(text if copy == 0 else perturbed(text, copy))
        tokenizer_path = tmp / "tokenizer.json"
        Tokenizer.train(base.values(), vocab_size=8192).save(tokenizer_path)
        baseline = run_child(CHILD_BASELINE)["peak_kb"] / 1024

        rows = []
        for scale, folder in folders.items():
            size_mb = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
            for label, code in (("lanternlm prepare (streaming)", CHILD_PREPARE),
                                ("naive in-memory (reference)", CHILD_NAIVE)):
                runs = [run_child(code, f"dir:{folder}", tmp / f"out-{scale}-{label[:5]}", tokenizer_path)
                        for _ in range(args.runs)]
                peak = statistics.median(r["peak_kb"] for r in runs) / 1024
                seconds = statistics.median(r["seconds"] for r in runs)
                rows.append((label, scale, size_mb, runs[0]["documents"], runs[0]["tokens"], peak, seconds))
                print(f"{label:32} {scale:>3}x {size_mb:7.1f} MB  peak {peak:7.1f} MiB  {seconds:6.1f} s", flush=True)

    peaks = {(label, scale): peak for label, scale, *_, peak, _s in rows}
    lines = [
        "## Data pipeline memory (`bench/data_memory.py`)",
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}; shared with other jobs while it ran, "
        "so times are noisy. Peak RSS is `ru_maxrss` of a fresh process per run (median of "
        f"{args.runs} runs). Corpus: built-in `{corpus.name}` ({len(base)} works); the {args.scale}x corpus adds "
        f"{args.scale - 1} copies with every line's words shuffled (so dedup keeps them). Tokenizer: vocab 8,192 "
        f"trained beforehand; documents are 4,000-character chunks (`--text-split chunk`). Importing the pipeline alone peaks at {baseline:.0f} MiB.",
        "",
        f"Command: `python bench/data_memory.py --runs {args.runs} --scale {args.scale}`",
        "",
        "| pipeline | corpus | MB | documents | tokens | peak RSS MiB | seconds | MB/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, scale, size_mb, docs, tokens, peak, seconds in rows:
        lines.append(f"| {label} | {scale}x | {size_mb:.1f} | {docs:,} | {tokens:,} | {peak:.0f} | {seconds:.1f} | "
                     f"{size_mb / seconds:.2f} |")
    stream = "lanternlm prepare (streaming)"
    naive = "naive in-memory (reference)"
    lines += [
        "",
        f"Growth of peak RSS from 1x to {args.scale}x: lanternlm {peaks[(stream, args.scale)] - peaks[(stream, 1)]:+.0f} MiB "
        f"({peaks[(stream, args.scale)] / peaks[(stream, 1)]:.2f}x), naive {peaks[(naive, args.scale)] - peaks[(naive, 1)]:+.0f} MiB "
        f"({peaks[(naive, args.scale)] / peaks[(naive, 1)]:.2f}x). lanternlm's streaming pipeline holds one "
        "tokenization batch (~1 MB of text) and the dedup indexes, about 2 KB per kept document "
        "(a 512-byte MinHash signature plus LSH bucket entries, and a 16-byte exact-dedup key): the only "
        "part that grows with the corpus. "
        "The naive reference reads the same documents (4,000-character chunks) but does no cleaning or dedup, so it is faster; it is there to show how memory grows when everything is held.",
    ]
    write_section("data", "\n".join(lines), Path(args.results))


if __name__ == "__main__":
    main()
