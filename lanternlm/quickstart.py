"""``lantern quickstart``: the whole pipeline on the built-in corpus, in one command.

1. **data** — fetch the built-in corpus (Shakespeare), clean, deduplicate and filter it,
   train a byte-level BPE tokenizer on it and write token shards
   (:func:`lanternlm.data.prepare.prepare`);
2. **pretrain** — train the ``quickstart`` preset (the ``tiny`` model, Muon) for a time budget
   (:func:`lanternlm.train.pretrain.pretrain`);
3. **sample** — print a few continuations from the trained model
   (:func:`lanternlm.train.sample.sample`, through the one inference engine);
4. **report** — a Markdown report with a picture of every glass-box view of the model
   (:func:`lanternlm.inspect.report.write_report`);
5. **chat** — fine-tune the base model on the verifiable tasks and conversational glue at
   every reasoning level, evaluate accuracy per task x level on held-out questions, and
   print a short demo chat (:func:`sft_quick`).

Everything lands in one directory (``runs/quickstart`` by default); a ``quickstart.json``
there records what each step wrote. Each stage is also its own command
(``lantern data prepare``, ``lantern pretrain``, ``lantern sample``): this module only
chains them.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import atomic_write_text, option
from .errors import LanternError
from .log import logger
from .tasks import Example

MARKER = "quickstart.json"

#: What the quickstart's chat step shows at the end; the task questions are graded (the
#: words are held out of training: see :data:`lanternlm.tasks.words.ENGLISH_WORDS`).
DEMO_QUESTIONS = (
    "Hello! Who are you?",
    Example("letters", "strawberry", "How many r's are in strawberry?", "3", {"word": "strawberry", "letter": "r"}),
    Example("arithmetic", "47+385", "What is 47 + 385?", "432", {"a": 47, "b": 385, "op": "add"}),
    Example("reverse", "lantern", "Reverse the word 'lantern'.", "nretnal", {"word": "lantern"}),
)


@dataclass
class QuickstartConfig:
    """Settings of ``lantern quickstart`` (defaults fit a 2-core laptop in about 14 minutes: 5 for the
    base model, 8.5 for the chat model, the rest for data, report, evaluation and demo; 4 minutes
    for the base missed 1.85 bits per byte on a machine half as fast as the fastest measured)."""

    out: str = option("runs/quickstart", "directory that receives the shards, the run and the summary")
    corpus: str = option("builtin:shakespeare", "source of text: builtin:NAME, a file, a folder, a .jsonl/.parquet file or a URL")
    vocab_size: int = option(4096, "vocabulary size of the tokenizer trained on the corpus")
    preset: str = option("quickstart", "pretraining preset (see `lantern pretrain --help`)")
    minutes: float = option(5.0, "pretraining time budget in minutes")
    max_steps: int = option(0, "stop pretraining after this many steps (0 = the preset's, within the time budget)")
    prompt: str = option("ROMEO:", "prompt for the samples printed at the end")
    samples: int = option(3, "how many samples to print")
    sample_tokens: int = option(120, "tokens per sample")
    chat_minutes: float = option(8.5, "chat fine-tuning time budget in minutes (0 = stop after the base model)")
    chat_steps: int = option(0, "stop chat fine-tuning after this many steps (0 = the preset's, within the budget)")
    eval_n: int = option(100, "held-out questions per task and reasoning level in the evaluation (glue has 55)")
    seed: int = option(1337, "seed for training and sampling")
    overwrite: bool = option(False, "replace an earlier quickstart in the same directory")


def _claim(out: Path, overwrite: bool) -> None:
    """Make ``out`` ready: empty, or an earlier quickstart we may replace."""
    if not out.exists() or not any(out.iterdir()):
        out.mkdir(parents=True, exist_ok=True)
        return
    if not (out / MARKER).exists():
        raise LanternError(f"{out} exists and is not a quickstart directory; choose another --out")
    if not overwrite:
        raise LanternError(f"{out} already holds a quickstart; pass --overwrite to replace it "
                           f"or choose another --out")
    shutil.rmtree(out)
    out.mkdir(parents=True)


def _from_preset(presets: dict[str, Any], name: str, **given: Any) -> tuple[Any, dict[str, str]]:
    """Preset ``name`` with the quickstart's own values, and where each value came from."""
    config = dataclasses.replace(presets[name], **given)
    return config, {f.name: "quickstart" if f.name in given else f"preset:{name}"
                    for f in dataclasses.fields(config)}


def sft_quick(base: str | Path, out: str | Path, *, minutes: float = 8.5, eval_n: int = 100,
              eval_max_tokens: int = 256, seed: int = 1337, max_steps: int | None = None) -> dict[str, Any]:
    """The quickstart's chat stage: SFT (preset ``quickstart`` for ``minutes``, or
    ``max_steps``: the task mixture plus 15 % plain text from the base run's own shards, so
    that fine-tuning keeps ordinary text) → evaluation → demo.

    Returns ``{"sft": summary, "eval": result, "table": str, "transcript": str}``; the run
    directory ``out`` holds the chat model, ``eval.json`` and ``eval.png``. About
    ``minutes`` + 1 minute on 2 CPU cores with the defaults.
    """
    from .evaluate import demo_transcript, evaluate_run, format_table
    from .train.sft import SFT_PRESETS, sft

    given: dict[str, Any] = {"base": str(base), "max_minutes": minutes, "seed": seed}
    if max_steps is not None:
        given["max_steps"] = max_steps
    config, sources = _from_preset(SFT_PRESETS, "quickstart", **given)
    summary = sft(config, out, sources=sources)
    result = evaluate_run(out, n=eval_n, max_tokens=eval_max_tokens)
    transcript = demo_transcript(out, DEMO_QUESTIONS, levels=("none", "high"), max_tokens=eval_max_tokens)
    return {"sft": summary, "eval": result, "table": format_table(result), "transcript": transcript}


def quickstart(config: QuickstartConfig) -> dict[str, Any]:
    """Run data → tokenizer → shards → pretraining → samples → report → chat; return what
    was written where."""
    from .data.prepare import PrepareConfig, prepare
    from .train.pretrain import PRETRAIN_PRESETS, pretrain
    from .inspect.report import write_report
    from .train.sample import sample

    if config.preset not in PRETRAIN_PRESETS:
        raise LanternError(f"--preset {config.preset!r}: choose one of {sorted(PRETRAIN_PRESETS)}")
    if config.minutes <= 0 or config.chat_minutes < 0:
        raise LanternError(f"--minutes must be > 0 and --chat-minutes >= 0, got {config.minutes} "
                           f"and {config.chat_minutes}")
    out = Path(config.out)
    _claim(out, config.overwrite)
    summary: dict[str, Any] = {"config": dataclasses.asdict(config), "steps": {}}

    def record(step: str, **info: Any) -> None:
        summary["steps"][step] = info
        atomic_write_text(out / MARKER, json.dumps(summary, indent=2) + "\n")

    record("started", at=time.strftime("%Y-%m-%d %H:%M:%S"))
    t0 = time.perf_counter()
    logger.info("[1/5] data: %s → tokenizer (vocab %d) → token shards", config.corpus, config.vocab_size)
    shards = out / "data"
    manifest = prepare([config.corpus], shards, config=PrepareConfig(vocab_size=config.vocab_size))
    record("data", dir=str(shards), seconds=round(time.perf_counter() - t0, 1),
           train_tokens=manifest["splits"]["train"]["tokens"], val_tokens=manifest["splits"]["val"]["tokens"])

    t1 = time.perf_counter()
    logger.info("[2/5] pretrain: preset %s for up to %.1f minutes", config.preset, config.minutes)
    run = out / "run"
    given: dict[str, Any] = {"data": str(shards), "max_minutes": config.minutes, "seed": config.seed}
    if config.max_steps:
        given["max_steps"] = config.max_steps
    train_cfg, sources = _from_preset(PRETRAIN_PRESETS, config.preset, **given)
    result = pretrain(train_cfg, run, sources=sources)
    record("pretrain", dir=str(run), seconds=round(time.perf_counter() - t1, 1), summary=result)

    logger.info("[3/5] samples from %s", run)
    texts = sample(run, config.prompt, num=config.samples, max_tokens=config.sample_tokens, seed=config.seed)
    record("samples", texts=texts)

    logger.info("[4/5] report: every glass-box view of the model")
    report = write_report(run, out / "report", prompt=config.prompt)
    record("report", path=str(report))

    if config.chat_minutes > 0:
        t2 = time.perf_counter()
        logger.info("[5/5] chat: fine-tune on tasks + conversation for up to %.1f minutes, then evaluate",
                    config.chat_minutes)
        chat = sft_quick(run, out / "chat", minutes=config.chat_minutes, eval_n=config.eval_n,
                         seed=config.seed, max_steps=config.chat_steps or None)
        record("chat", dir=str(out / "chat"), seconds=round(time.perf_counter() - t2, 1),
               table=chat["table"], transcript=chat["transcript"])
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    record("done", seconds=summary["seconds"])
    return summary


def describe(summary: dict[str, Any]) -> str:
    """What the CLI prints at the end: the samples, then where everything was written."""
    steps = summary["steps"]
    lines = []
    for i, text in enumerate(steps["samples"]["texts"], 1):
        lines += [f"--- sample {i} ---", text.strip(), ""]
    pre = steps["pretrain"]["summary"]
    if "chat" in steps:
        lines += ["--- chat model: accuracy on held-out questions per reasoning level ---",
                  steps["chat"]["table"].rstrip(), "", "--- demo chat ---", steps["chat"]["transcript"].rstrip(), ""]
    lines.append(f"quickstart finished in {summary['seconds'] / 60:.1f} min")
    lines.append(f"  token shards  {steps['data']['dir']}  ({steps['data']['train_tokens']:,} train tokens)")
    lines.append(f"  model run     {steps['pretrain']['dir']}  "
                 + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in pre.items() if k in ("steps", "val_loss", "bpb")))
    for name in ("loss.png", "metrics.jsonl", "model.safetensors", "tokenizer.json"):
        lines.append(f"    {name}")
    lines.append(f"  report        {steps['report']['path']}  (tokens, embeddings, attention, next token, "
                 f"the loop, loss, memory)")
    if "chat" in steps:
        lines.append(f"  chat model    {steps['chat']['dir']}  (eval.json, eval.png)")
    run = steps["pretrain"]["dir"]
    lines += ["next:", f"  lantern generate {run} \"{summary['config']['prompt']}\" --show-probs",
              f"  lantern inspect attention {run} \"The king is dead\" --query dead",
              f"  lantern info {run}"]
    if "chat" in steps:
        lines.append(f"  lantern chat {steps['chat']['dir']} --reasoning high --show-thinking")
    else:
        lines.append(f"  lantern chat {run}")
    return "\n".join(lines)
