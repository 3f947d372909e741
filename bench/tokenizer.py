"""Benchmark: tokenizer training time and encoding speed against rustbpe, HF tokenizers and tiktoken.

    python bench/tokenizer.py                       # 24 MB corpus, vocab 8192 and 32768, 3 runs
    python bench/tokenizer.py --data DIR --mb 24 --vocab 8192 32768 --runs 3

The corpus is assembled from the text files under ``--data`` (default ``../shared/data``:
TinyStories, Shakespeare, WikiText, C4, GSM8K, instruction and dialogue sets; JSON and
JSONL records contribute all their string fields) and is topped up with Python standard
library sources until ``--mb`` megabytes are reached.

Every contender runs on the same documents in the same process; each figure is the
median of ``--runs`` runs. Parity is checked along the way: our merges must equal
rustbpe's, and our encodings must equal tiktoken's and HF's (loaded from our export).
Results go to this benchmark's own section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import regex

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lanternlm.log import set_verbosity  # noqa: E402
from results import RESULTS, write_section  # noqa: E402
from lanternlm.tokenizer import (DEFAULT_SPECIAL_TOKENS, GPT4_SPLIT_PATTERN, Tokenizer,  # noqa: E402
                                 bpe_encode_chunk)

ROOT = Path(__file__).resolve().parents[1]
SECTION = "tokenizer"
MB = 1e6


# --------------------------------------------------------------------------- corpus


def strings_in(obj) -> list[str]:
    """Every string inside a JSON value, in order."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, list):
        return [s for item in obj for s in strings_in(item)]
    return []


def documents_of(path: Path) -> list[str]:
    """Documents in one data file: JSON(L) records, or blank-line separated paragraphs of text."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        raw = fh.read()
    name = path.name.removesuffix(".gz")
    if name.endswith(".jsonl"):
        records = [json.loads(line) for line in raw.splitlines() if line.strip()]
    elif name.endswith(".json"):
        records = json.loads(raw)
    else:
        return [p for p in regex.split(r"\n\s*\n", raw) if p.strip()]
    return ["\n\n".join(strings_in(record)) for record in records]


def gather_corpus(data_dir: Path, target_mb: float) -> tuple[list[str], dict[str, float]]:
    """Data files first, then standard-library sources, until ``target_mb`` MB of text."""
    docs: list[str] = []
    sources: dict[str, float] = {}
    files = sorted(p for p in data_dir.rglob("*") if p.is_file() and p.name != "SHA256SUMS") \
        if data_dir.is_dir() else []
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files += sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)
    total = 0
    for path in files:
        if total >= target_mb * MB:
            break
        try:
            new = documents_of(path)
        except (UnicodeDecodeError, json.JSONDecodeError, OSError):
            continue
        size = sum(len(d.encode("utf-8")) for d in new)
        label = "python stdlib (*.py)" if path.is_relative_to(stdlib) else str(path.relative_to(data_dir))
        sources[label] = sources.get(label, 0) + size / MB
        docs += new
        total += size
    if total < target_mb * MB:
        sys.exit(f"error: could only assemble {total / MB:.1f} MB of text (need {target_mb} MB); "
                 f"point --data at a folder of text/JSON(L) files")
    return docs, sources


# --------------------------------------------------------------------------- contenders


def timed(contenders: dict, runs: int) -> dict:
    """Median wall time and median process CPU time of ``runs`` calls of each contender, and its last result.

    Runs are interleaved (a, b, c, a, b, c, ...) so that a change in machine load hits
    every contender alike. CPU time is the robust measure for single-threaded work on a
    shared machine (it does not count time spent waiting for a core).
    """
    wall: dict = {name: [] for name in contenders}
    cpu: dict = {name: [] for name in contenders}
    results: dict = {}
    for _ in range(runs):
        for name, fn in contenders.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            results[name] = fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name]), results[name])
            for name in contenders}


def train_rustbpe(docs, vocab_size):
    import rustbpe

    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(docs), vocab_size - len(DEFAULT_SPECIAL_TOKENS), pattern=GPT4_SPLIT_PATTERN)
    return trainer


def hf_pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT4_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def train_hf(docs, vocab_size):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = hf_pre_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=DEFAULT_SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=0)
    tok.train_from_iterator(docs, trainer, length=len(docs))
    return tok


def reference_encode(tok: Tokenizer, text: str) -> list[int]:
    ranks = {pair: 256 + r for r, pair in enumerate(tok.merges)}
    return [i for chunk in regex.findall(tok.pattern, text) for i in bpe_encode_chunk(chunk.encode(), ranks)]


def first_difference(a: list, b: list) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


# --------------------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="folder of text/JSON(L)")
    parser.add_argument("--mb", type=float, default=24, help="corpus size in MB (default 24)")
    parser.add_argument("--vocab", type=int, nargs="+", default=[8192, 32768], help="vocabulary sizes")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--encode-mb", type=float, default=5, help="MB of the corpus to encode")
    parser.add_argument("--encode-runs", type=int, default=5, help="runs per encoder (median)")
    parser.add_argument("--python-mb", type=float, default=1, help="MB for the python reference trainer")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args()
    set_verbosity(quiet=True)

    import tiktoken
    import tokenizers

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.time()
    docs, sources = gather_corpus(args.data, args.mb)
    corpus_mb = sum(sources.values())
    log(f"corpus: {corpus_mb:.1f} MB in {len(docs)} documents from {len(sources)} sources")

    # ---- training
    train_rows, parity_notes, trained = [], [], {}
    for vocab in args.vocab:
        got = timed({"ours": lambda: Tokenizer.train(docs, vocab), "rustbpe": lambda: train_rustbpe(docs, vocab),
                     "hf": lambda: train_hf(docs, vocab)}, args.runs)
        (t_ours, c_ours, ours), (t_rust, c_rust, rust), (t_hf, _, hf) = got["ours"], got["rustbpe"], got["hf"]
        theirs = [bytes(b) for b, _ in sorted(rust.get_mergeable_ranks(), key=lambda x: x[1])]
        mine = [ours.token_bytes(i) for i in range(256 + len(ours.merges))]
        if mine != theirs:
            sys.exit(f"error: merges differ from rustbpe at vocab {vocab} (token {first_difference(mine, theirs)})")
        hf_merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                     for m in json.loads(hf.to_str())["model"]["merges"]]
        with tempfile.TemporaryDirectory() as tmp:
            ours.to_hf_json(Path(tmp) / "t.json")
            our_merges = [tuple(m.split(" ")) for m in json.loads((Path(tmp) / "t.json").read_text())["model"]["merges"]]
        split = first_difference(our_merges, hf_merges)
        parity_notes.append(f"vocab {vocab}: merges identical to rustbpe ({len(ours.merges)} merges); "
                            f"HF tokenizers' merges first differ at merge #{split} (its tie-breaking differs)")
        train_rows.append((vocab, t_ours, t_rust, t_hf, c_ours / c_rust))
        trained[vocab] = (ours, rust)
        log(f"train vocab {vocab}: ours {t_ours:.2f}s rustbpe {t_rust:.2f}s hf {t_hf:.2f}s")

    # ---- the python reference trainer on a slice
    slice_docs, size = [], 0
    for d in docs[:: max(1, int(corpus_mb / args.python_mb))]:
        if size >= args.python_mb * MB:
            break
        slice_docs.append(d)
        size += len(d.encode())
    py_vocab = min(args.vocab)
    got = timed({"python": lambda: Tokenizer.train(slice_docs, py_vocab, backend="python"),
                 "rust": lambda: Tokenizer.train(slice_docs, py_vocab, backend="rust")}, args.runs)
    (t_py, _, py), (t_py_rust, _, py_rust) = got["python"], got["rust"]
    if py.merges != py_rust.merges:
        sys.exit("error: python and rust backends learned different merges on the slice")
    log(f"python reference trainer on {size / MB:.2f} MB: {t_py:.2f}s (rust {t_py_rust:.2f}s)")

    # ---- encoding (with the largest vocabulary)
    vocab = max(args.vocab)
    ours, rust = trained[vocab]
    sample, size = [], 0
    for d in docs[:: max(1, int(corpus_mb / args.encode_mb))]:
        sample.append(d)
        size += len(d.encode())
    enc_mb = size / MB
    tik = tiktoken.Encoding(name="bench", pat_str=GPT4_SPLIT_PATTERN, special_tokens={},
                            mergeable_ranks={ours.token_bytes(i): i for i in range(256 + len(ours.merges))})
    with tempfile.TemporaryDirectory() as tmp:
        ours.to_hf_json(Path(tmp) / "tokenizer.json")
        hf = tokenizers.Tokenizer.from_file(str(Path(tmp) / "tokenizer.json"))
    contenders = {
        "lanternlm `encode` (1 thread)": lambda: [ours.encode(d) for d in sample],
        "tiktoken `encode_ordinary` (1 thread)": lambda: [tik.encode_ordinary(d) for d in sample],
        "rustbpe `encode` (1 thread)": lambda: [rust.encode(d) for d in sample],
        "HF tokenizers `encode` (1 thread)": lambda: [hf.encode(d).ids for d in sample],
        "lanternlm `encode_batch`": lambda: ours.encode_batch(sample),
        "tiktoken `encode_ordinary_batch`": lambda: tik.encode_ordinary_batch(sample),
        "rustbpe `batch_encode`": lambda: rust.batch_encode(sample),
        "HF tokenizers `encode_batch`": lambda: [e.ids for e in hf.encode_batch(sample)],
    }
    got = timed(contenders, args.encode_runs)
    reference = got["lanternlm `encode` (1 thread)"][2]
    enc_rows = []  # (name, MB/s wall, MB/s CPU time, same ids as ours)
    for name, (seconds, cpu_seconds, ids) in got.items():
        enc_rows.append((name, enc_mb / seconds, enc_mb / cpu_seconds, ids == reference))
        log(f"{name}: {enc_mb / seconds:.2f} MB/s wall, {enc_mb / cpu_seconds:.2f} MB/s CPU"
            f"{'' if ids == reference else '  (DIFFERENT ids)'}")
    ref_sample = sample[: max(1, len(sample) // 50)]
    ref_mb = sum(len(d.encode()) for d in ref_sample) / MB
    t_ref, cpu_ref, ref_ids = timed({"ref": lambda: [reference_encode(ours, d) for d in ref_sample]}, 1)["ref"]
    enc_rows.append((f"lanternlm reference `bpe_encode_chunk` (pure Python, 1 thread, {ref_mb:.2f} MB)",
                     ref_mb / t_ref, ref_mb / cpu_ref, ref_ids == reference[: len(ref_sample)]))

    # ---- report: single-threaded encoders compare by CPU time, batch encoders by wall time
    rows = {name: (w, c) for name, w, c, _ in enc_rows}
    tik_1 = rows["tiktoken `encode_ordinary` (1 thread)"][1]
    tik_b = rows["tiktoken `encode_ordinary_batch`"][0]
    ours_1 = rows["lanternlm `encode` (1 thread)"][1] / tik_1
    ours_b = rows["lanternlm `encode_batch`"][0] / tik_b

    def versus(name: str, w: float, c: float) -> str:
        return f"{c / tik_1:.3f}x (CPU)" if "1 thread" in name else f"{w / tik_b:.2f}x (wall)"

    lines = [
        "## Tokenizer (`bench/tokenizer.py`)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (rustbpe and HF "
        f"use all of them for training; batch encoders use their default thread pools), Python "
        f"{platform.python_version()}; rustbpe 0.1.0, tokenizers {tokenizers.__version__}, tiktoken "
        f"{tiktoken.__version__}. The machine was shared with other jobs while this ran, so absolute "
        "figures are noisy; ratios from the same run are the meaningful part.",
        "",
        f"Command: `python bench/tokenizer.py --mb {args.mb:g} --runs {args.runs} --vocab "
        f"{' '.join(map(str, args.vocab))}` (median of {args.runs} runs each; total {time.time() - t0:.0f} s).",
        "",
        f"Corpus: {corpus_mb:.1f} MB, {len(docs)} documents: "
        + ", ".join(f"{name} {mb:.1f} MB" for name, mb in sources.items()) + ".",
        "",
        "### Training (seconds, lower is better)",
        "",
        "| vocab | lanternlm (`backend=\"rust\"`) | rustbpe | HF tokenizers | lanternlm / rustbpe | "
        "same, by CPU time | HF / rustbpe |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {v:,} | {o:.2f} | {r:.2f} | {h:.2f} | {o / r:.2f}x | {c:.2f}x | {h / r:.2f}x |"
          for v, o, r, h, c in train_rows],
        "",
        "lanternlm's time includes recovering merge pairs and building its tiktoken encoder. "
        + "; ".join(parity_notes) + ".",
        "",
        f"Reference trainer (`backend=\"python\"`, readable pure Python) on a {size_mb(slice_docs):.2f} MB slice, "
        f"vocab {py_vocab:,}: {t_py:.2f} s vs {t_py_rust:.2f} s with `backend=\"rust\"` "
        f"({t_py / t_py_rust:.1f}x); identical merges.",
        "",
        f"### Encoding ({enc_mb:.1f} MB sample, vocab {vocab:,}, median of {args.encode_runs} runs, MB/s, higher is better)",
        "",
        "| encoder | MB/s (wall) | MB/s (CPU time) | vs tiktoken | same ids as lanternlm |",
        "|---|---:|---:|---:|---|",
        *[f"| {n} | {w:.2f} | {c:.2f} | {versus(n, w, c)} | {'yes' if same else 'NO'} |"
          for n, w, c, same in enc_rows],
        "",
        "Single-threaded encoders are compared by CPU time (robust to the machine's load), batch "
        "encoders by wall time; on this loaded 2-core machine threads barely help anyone.",
        "",
        "Goals (issue 2): training <= 1.5x rustbpe's time: "
        + ", ".join(f"{'met' if o / r <= 1.5 else 'MISSED'} at {v:,} ({o / r:.2f}x)" for v, o, r, _, _ in train_rows)
        + f"; encoding >= 0.95x tiktoken: {'met' if ours_1 >= 0.95 else 'MISSED'} single-threaded "
        f"({ours_1:.3f}x), {'met' if ours_b >= 0.95 else 'MISSED'} batched ({ours_b:.2f}x).",
    ]
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        write_section(SECTION, report)
        log(f"updated {RESULTS}")


def size_mb(docs: list[str]) -> float:
    return sum(len(d.encode()) for d in docs) / MB


if __name__ == "__main__":
    main()
