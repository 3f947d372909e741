"""The whole data chain in one call: sources → clean → filter → dedup → (tokenizer) → shards.

``prepare(["builtin:shakespeare", "notes/"], "data/shards")`` reads every source in
order, cleans and filters each document (:mod:`.clean`), drops duplicates
(:mod:`.dedup`), and writes token shards with a manifest (:mod:`.shards`). With no
tokenizer given it first trains one (``vocab_size``) on the first
``tokenizer_sample_bytes`` of the cleaned, deduplicated documents (a first pass
over the sources that stops there), so the tokenizer sees the same text the
shards hold. Everything streams; the returned manifest carries, per source, what
was read and, per step, how many documents and bytes each step removed.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from ..config import option
from ..errors import LanternError
from ..log import logger, progress
from .clean import CleanConfig, Pipeline, Step, cleaning_steps
from .dedup import DedupConfig, ExactDedup, NearDedup
from .shards import ShardWriter
from .sources import Document, ReadConfig, SourceStats, iter_documents, parse_source


@dataclass
class PrepareConfig:
    """Tokenizer and sharding settings of ``lantern data prepare``."""

    vocab_size: int = option(8192, "vocabulary size of the tokenizer trained when none is given")
    tokenizer_sample_bytes: int = option(20_000_000, "train that tokenizer on at most this many bytes of cleaned text")
    val_fraction: float = option(0.02, "share of documents held out for validation (chosen by a hash of the text)")
    shard_tokens: int = option(10_000_000, "tokens per shard file")
    batch_bytes: int = option(1 << 20, "characters of text tokenized per batch")


def build_pipeline(clean: CleanConfig, dedup: DedupConfig) -> Pipeline:
    """Cleaning transforms and quality filters, then exact and near-duplicate removal."""
    steps = cleaning_steps(clean)
    if dedup.dedup_exact:
        steps.append(Step("exact_dedup", "filter", ExactDedup()))
    if dedup.dedup_near:
        steps.append(Step(f"near_dedup(jaccard>={dedup.near_threshold})", "filter",
                          NearDedup(dedup.near_threshold, dedup.num_perm, dedup.shingle_words, dedup.dedup_seed)))
    return Pipeline(steps)


def _stream(sources: Sequence[str], read: ReadConfig, cache, stats: list[SourceStats]) -> Iterator[Document]:
    for spec, record in zip(sources, stats):
        yield from iter_documents(spec, read, cache=cache, stats=record)


def _sample(documents: Iterator[Document], limit: int) -> Iterator[str]:
    taken = 0
    for doc in documents:
        if taken >= limit:
            return
        taken += len(doc.text)
        yield doc.text


def _nothing_survived(stats: list[SourceStats]) -> str:
    return (f"no document survived cleaning and filtering ({sum(s.documents for s in stats)} read from "
            f"{sum(s.files for s in stats)} file(s)); loosen the filters (e.g. --min-chars) or check the sources")


def prepare(sources: Sequence[str], out_dir: str | os.PathLike, tokenizer=None, *,
            config: PrepareConfig | None = None, read: ReadConfig | None = None,
            clean: CleanConfig | None = None, dedup: DedupConfig | None = None,
            cache: str | os.PathLike | None = None) -> dict:
    """Prepare token shards in ``out_dir`` from ``sources`` (spec strings); return the manifest.

    ``tokenizer``: a :class:`~lanternlm.tokenizer.Tokenizer`, a path to a tokenizer
    JSON file, or None to train one on the cleaned documents.
    """
    from ..tokenizer import Tokenizer, check_vocab_size

    config, read = config or PrepareConfig(), read or ReadConfig()
    clean, dedup = clean or CleanConfig(), dedup or DedupConfig()
    if not sources:
        raise LanternError("no sources given; name files, folders, builtin:NAME or URLs")
    kinds = [parse_source(spec).kind for spec in sources]

    if tokenizer is None:
        check_vocab_size(config.vocab_size)  # before reading anything
        logger.info("training a tokenizer (vocab %d) on up to %d bytes of cleaned text",
                    config.vocab_size, config.tokenizer_sample_bytes)
        scratch = [SourceStats(spec, kind) for spec, kind in zip(sources, kinds)]
        sample = _sample(build_pipeline(clean, dedup)(_stream(sources, read, cache, scratch)),
                         config.tokenizer_sample_bytes)
        first = next(sample, None)
        if first is None:
            raise LanternError(_nothing_survived(scratch))
        tokenizer = Tokenizer.train(progress(itertools.chain([first], sample), desc="tokenizer sample", unit="doc"),
                                    config.vocab_size)
    elif isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = Tokenizer.load(tokenizer)

    stats = [SourceStats(spec, kind) for spec, kind in zip(sources, kinds)]
    pipeline = build_pipeline(clean, dedup)
    with ShardWriter(out_dir, tokenizer, shard_tokens=config.shard_tokens, val_fraction=config.val_fraction,
                     batch_bytes=config.batch_bytes) as writer:
        kept = 0
        for doc in progress(pipeline(_stream(sources, read, cache, stats)), desc="documents", unit="doc"):
            writer.add(doc.text)
            kept += 1
        if kept == 0:
            raise LanternError(_nothing_survived(stats))
        report = {"documents_in": sum(s.documents for s in stats), "documents_out": kept,
                  "steps": pipeline.report()}
        settings = {name: dataclasses.asdict(cfg) for name, cfg in
                    (("prepare", config), ("read", read), ("clean", clean), ("dedup", dedup))}
        manifest = writer.finish(sources=[dataclasses.asdict(s) for s in stats], report=report, config=settings)
    splits = manifest["splits"]
    logger.info("wrote %s: train %d docs / %d tokens, val %d docs / %d tokens", Path(out_dir),
                splits["train"]["documents"], splits["train"]["tokens"],
                splits["val"]["documents"], splits["val"]["tokens"])
    return manifest


def summary(manifest: dict) -> str:
    """What ``lantern data prepare`` prints: the per-step report, then the splits."""
    from .clean import format_report

    lines = [format_report(manifest["report"]["steps"]), ""]
    for name, split in manifest["splits"].items():
        lines.append(f"{name:5}  {split['documents']:>9,} documents  {split['tokens']:>12,} tokens  "
                     f"{split['bytes']:>13,} bytes  {len(split['shards'])} shard(s)")
    info = manifest["tokenizer"]
    lines.append(f"tokenizer: vocab {info['vocab_size']:,}, fingerprint {info['fingerprint'][:16]}…, "
                 f"dtype {manifest['dtype']}")
    return "\n".join(lines)
