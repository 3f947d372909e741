"""`lantern <command>`: the command line. Thin by design.

Each command parses its flags into a stage config (see :mod:`lanternlm.config`)
and calls one library function. Heavy imports (torch) happen inside the handlers
so that ``lantern --help`` stays instant. To add a command, write an
``_add_<name>(sub)`` function below and list it in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from . import __version__
from .errors import LanternError
from .log import set_verbosity

# --------------------------------------------------------------------------- commands


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def command(fn: Callable[[argparse._SubParsersAction], None]):
    """Register an ``_add_<name>(sub)`` function that adds one subcommand."""
    COMMANDS.append(fn)
    return fn


def _add_device_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: auto, CUDA when available, else the CPU)")


def _read_text_arg(text: str) -> str:
    """A TEXT argument, or standard input when it is ``-`` (UTF-8, else a clear error)."""
    from .tokenizer import decode_utf8

    if text != "-":
        return text
    raw = getattr(sys.stdin, "buffer", None)  # bytes, to name one that is not UTF-8
    return decode_utf8(raw.read(), "standard input") if raw is not None else sys.stdin.read()


@command
def _add_quickstart(sub: argparse._SubParsersAction) -> None:
    from .config import add_arguments
    from .quickstart import QuickstartConfig

    p = sub.add_parser("quickstart", help="the whole pipeline on the built-in corpus: data → tokenizer → "
                       "pretraining → samples → report → chat model → eval",
                       description="Fetch the built-in corpus, train a tokenizer, write token shards, "
                       "pretrain the quickstart preset (the tiny model) for a time budget, print samples, write the "
                       "glass-box report, then fine-tune a chat model, evaluate it and show a demo chat.")
    add_arguments(p, QuickstartConfig)
    p.set_defaults(func=_quickstart)


def _quickstart(args: argparse.Namespace) -> None:
    from .config import from_arguments
    from .quickstart import QuickstartConfig, describe, quickstart

    config, _ = from_arguments(QuickstartConfig, args)
    print(describe(quickstart(config)))


@command
def _add_tokenizer(sub: argparse._SubParsersAction) -> None:
    from .config import add_arguments
    from .tokenizer import TokenizerTrainConfig

    parser = sub.add_parser("tokenizer", help="train, inspect and use a byte-level BPE tokenizer",
                            description="Train a BPE tokenizer, encode/decode text, show how text splits.")
    parser.set_defaults(func=lambda args: parser.print_help() or 1)
    actions = parser.add_subparsers(title="actions", metavar="ACTION")

    train = actions.add_parser("train", help="train a tokenizer on text files",
                               description="Train on text files (folders: their *.txt files); writes OUT "
                                           "(one JSON file) and OUT.merges.txt (a readable merge listing).")
    train.add_argument("--input", nargs="+", required=True, metavar="PATH", help="text files or folders")
    train.add_argument("--out", required=True, metavar="FILE", help="where to write the tokenizer JSON")
    add_arguments(train, TokenizerTrainConfig)
    train.set_defaults(func=_tokenizer_train)

    for name, help_text, func in (("encode", "print the token ids of TEXT (or decode ids with --decode)",
                                   _tokenizer_encode),
                                  ("show", "show TEXT split into coloured pieces with their ids", _tokenizer_show),
                                  ("merges", "list the learned merges, one per line", _tokenizer_merges)):
        p = actions.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--tokenizer", required=True, metavar="FILE", help="a tokenizer JSON file")
        if name != "merges":
            p.add_argument("text", metavar="TEXT", help="the text ('-' reads standard input)")
            p.add_argument("--allow-special", action="store_true",
                           help="turn special-token strings like <|endoftext|> into their ids "
                                "(default: encode them as plain text)")
        if name == "encode":
            p.add_argument("--decode", action="store_true", help="TEXT is token ids ('1 2 3'); print the text")
        if name == "show":
            p.add_argument("--no-color", action="store_true", help="plain [piece|id] output, no colours")
        p.set_defaults(func=func)
    _add_tokenizer_import(actions)


def _add_tokenizer_import(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser("import", help="a real tokenizer (tokenizer.json, .tiktoken ranks, model folder) "
                                          "as a lanternlm tokenizer file",
                           description="Read a byte-level BPE tokenizer.json (GPT-2, Llama 3, Qwen2 style), a "
                                       "tiktoken rank file or a model folder, keep its ids, check it against "
                                       "tokenizers / tiktoken on probe strings, and write our tokenizer JSON.")
    p.add_argument("source", metavar="FILE", help="tokenizer.json, NAME.tiktoken, or a folder with tokenizer.json")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the tokenizer JSON")
    p.add_argument("--pattern", default="gpt4",
                   help="rank files: split regex or gpt4, gpt2, llama3, qwen2, o200k (default: gpt4)")
    p.add_argument("--special", action="append", default=[], metavar="NAME=ID",
                   help="rank files: a special token and its id (repeatable)")
    p.add_argument("--bos", metavar="NAME", help="special token that starts a prompt (default: the EOT token)")
    p.add_argument("--eot", metavar="NAME", help="special token between documents (default: tokenizer_config's "
                                                 "eos_token, else <|endoftext|>)")
    p.set_defaults(func=_tokenizer_import)


def _tokenizer_import(args: argparse.Namespace) -> None:
    from .interop.hf_tokenizer import load_tokenizer

    specials = {}
    for item in args.special:
        name, _, number = item.rpartition("=")
        if not name or not number.isdigit():
            raise LanternError(f"--special {item!r}: expected NAME=ID, e.g. '<|endoftext|>=100257'")
        specials[name] = int(number)
    tok = load_tokenizer(args.source, pattern=args.pattern, special_tokens=specials, bos_token=args.bos,
                         eot_token=args.eot)
    tok.save(args.out)
    print(f"{tok!r} -> {args.out}")


def _tokenizer_train(args: argparse.Namespace) -> None:
    from .config import from_arguments
    from .tokenizer import TokenizerTrainConfig, train_files

    config, _ = from_arguments(TokenizerTrainConfig, args)
    train_files(args.input, args.out, config)


def _tokenizer_encode(args: argparse.Namespace) -> None:
    from .tokenizer import Tokenizer, parse_ids

    tok, text = Tokenizer.load(args.tokenizer), _read_text_arg(args.text)
    if args.decode:
        print(tok.decode(parse_ids(text)))
    else:
        print(tok.encode(text, allowed_special="all" if args.allow_special else ()))


def _tokenizer_show(args: argparse.Namespace) -> None:
    from .tokenizer import Tokenizer, render_colored

    print(render_colored(Tokenizer.load(args.tokenizer), _read_text_arg(args.text),
                         color=not args.no_color and sys.stdout.isatty(),
                         allowed_special="all" if args.allow_special else ()))


def _tokenizer_merges(args: argparse.Namespace) -> None:
    from .tokenizer import Tokenizer

    print(Tokenizer.load(args.tokenizer).describe_merges())


@command
def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="model sizes, KV cache and memory: can I run it here?",
                       description="Without an argument: a table of the model presets. With a "
                       "preset name or a model/run directory: parameters, weight bytes per "
                       "dtype, KV-cache bytes, and an estimate of the memory needed to run it.")
    p.add_argument("target", nargs="?", help="preset name or model/run directory")
    p.add_argument("--batch-size", type=int, default=1, help="batch for the memory estimate")
    p.add_argument("--context", type=int, default=None,
                   help="positions for the memory estimate (default: the full context window)")
    p.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> None:
    from .memory import info

    print(info(args.target, batch_size=args.batch_size, context=args.context))



@command
def _add_data(sub: argparse._SubParsersAction) -> None:
    from .config import add_arguments
    from .data.clean import CleanConfig
    from .data.dedup import DedupConfig
    from .data.prepare import PrepareConfig
    from .data.sources import ReadConfig

    parser = sub.add_parser("data", help="fetch corpora and prepare token shards",
                            description="Fetch built-in corpora; clean, deduplicate, filter and "
                                        "tokenize sources into token shards.")
    parser.set_defaults(func=lambda args: parser.print_help() or 1)
    actions = parser.add_subparsers(title="actions", metavar="ACTION")
    cache_help = "cache folder (default: $LANTERN_HOME or ~/.cache/lanternlm)"

    get = actions.add_parser("get", help="fetch and cache a built-in corpus; print its path and size",
                             description="Fetch (once) and cache a built-in corpus; print its path, size "
                                         "and sha256. `lantern data list` names them.")
    get.add_argument("name", metavar="NAME", help="corpus name, e.g. shakespeare")
    get.add_argument("--cache", metavar="DIR", help=cache_help)
    get.add_argument("--mirror", metavar="URL", help="base URL to download from instead of the usual host")
    get.set_defaults(func=_data_get)

    listing = actions.add_parser("list", help="list the built-in corpora", description="List the built-in corpora.")
    listing.set_defaults(func=_data_list)

    prep = actions.add_parser(
        "prepare", help="sources -> cleaned, deduplicated token shards + manifest",
        description="Read SOURCES (files, folders, .jsonl, .parquet, builtin:NAME, https://...#sha256=HEX), "
                    "clean, filter and deduplicate the documents, and write token shards and a manifest "
                    "to --out. Without --tokenizer a tokenizer is trained on the cleaned text.")
    prep.add_argument("sources", nargs="+", metavar="SOURCE", help="what to read")
    prep.add_argument("--out", required=True, metavar="DIR", help="folder for the shards and manifest.json")
    prep.add_argument("--tokenizer", metavar="FILE", help="an existing tokenizer JSON file")
    prep.add_argument("--cache", metavar="DIR", help=cache_help)
    for cls in (PrepareConfig, ReadConfig, CleanConfig, DedupConfig):
        add_arguments(prep, cls)
    prep.set_defaults(func=_data_prepare)

    check = actions.add_parser("check", help="verify a shards folder: sizes, token ids and sha256s",
                               description="Read every shard of DIR once: its size, every id against the "
                                           "tokenizer's vocabulary and its sha256 against the manifest.")
    check.add_argument("dir", metavar="DIR", help="a shards folder (with manifest.json)")
    check.set_defaults(func=_data_check)


def _data_get(args: argparse.Namespace) -> None:
    from .data.builtin import get

    print(get(args.name, cache=args.cache, mirror=args.mirror).describe())


def _data_list(args: argparse.Namespace) -> None:
    from .data.builtin import listing

    print(listing())


def _data_check(args: argparse.Namespace) -> None:
    from .data.shards import open_shards

    print(f"{args.dir}: every shard has its recorded size, sha256 and ids inside the vocabulary\n"
          + open_shards(args.dir, verify=True).describe())


def _data_prepare(args: argparse.Namespace) -> None:
    from .config import from_arguments
    from .data.clean import CleanConfig
    from .data.dedup import DedupConfig
    from .data.prepare import PrepareConfig, prepare, summary
    from .data.sources import ReadConfig

    configs = {name: from_arguments(cls, args)[0] for name, cls in
               (("config", PrepareConfig), ("read", ReadConfig), ("clean", CleanConfig), ("dedup", DedupConfig))}
    print(summary(prepare(args.sources, args.out, args.tokenizer, cache=args.cache, **configs)))

@command
def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    from .config import add_arguments
    from .train.pretrain import PRETRAIN_PRESETS, PretrainConfig

    p = sub.add_parser("pretrain", help="pretrain a model on token shards",
                       description="Train a model from scratch on the shards of --data into the run "
                                   "directory --out (config.json, model.safetensors, metrics.jsonl, "
                                   "loss.png, checkpoints/). Start from --preset and override any "
                                   "field below. Runs unchanged under torchrun (DDP).")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write (or resume)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRETRAIN_PRESETS),
                   help="starting configuration (default: tiny)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, same data order")
    add_arguments(p, PretrainConfig)
    p.set_defaults(func=_pretrain)


def _pretrain(args: argparse.Namespace) -> None:
    from .train.pretrain import pretrain_from_args

    pretrain_from_args(args)


@command
def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="print continuations from a pretrained run",
                       description="Load RUN (a run or model directory) and print --num "
                                   "continuations of --prompt.")
    p.add_argument("run", metavar="RUN", help="run directory (from lantern pretrain)")
    p.add_argument("--prompt", default="", help="text to continue (default: start a new document)")
    p.add_argument("--num", type=int, default=3, help="how many continuations (default: 3)")
    p.add_argument("--max-tokens", type=int, default=200, help="tokens per continuation (default: 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default: 0.8)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _add_device_flag(p)
    p.set_defaults(func=_sample)


def _sample(args: argparse.Namespace) -> None:
    from .train.sample import sample

    texts = sample(args.run, args.prompt, num=args.num, max_tokens=args.max_tokens,
                   temperature=args.temperature, top_k=args.top_k, seed=args.seed, device=args.device)
    print("\n\n".join(f"--- sample {i + 1} ---\n{t}" for i, t in enumerate(texts)))


def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    from .config import add_arguments
    from .sampling import PRESETS, SamplingParams

    p.add_argument("--preset", choices=list(PRESETS),
                   help="temperature/top-p pair from the cheat sheet; flags given override it")
    add_arguments(p, SamplingParams)
    p.add_argument("--max-tokens", type=int, default=200, help="most tokens to generate (default: 200)")
    _add_device_flag(p)
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16", "int8"],
                   help="cast the weights (default: as saved); int8: quantized weights, fastest on CPU")


def _sampling_from_args(args: argparse.Namespace):
    from .config import from_arguments
    from .sampling import SamplingParams, preset

    base = preset(args.preset) if args.preset else SamplingParams()
    return from_arguments(SamplingParams, args, base)[0]


@command
def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="complete a prompt with a run's model (streams the text)",
                       description="Complete PROMPT with the model of run directory RUN. The text "
                                   "streams as it is generated; --show-probs prints every step's "
                                   "candidates and probabilities instead.")
    p.add_argument("run", metavar="RUN", help="run directory (model.safetensors, model.json, tokenizer.json)")
    p.add_argument("prompt", metavar="PROMPT", help="the text to continue ('-' reads standard input)")
    _add_sampling_flags(p)
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop when this text appears (repeatable); it is left out of the output")
    p.add_argument("--num", type=int, default=1, help="number of completions, generated as a batch")
    p.add_argument("--show-probs", action="store_true",
                   help="for each step, print the top candidates with their probabilities "
                        "(raw and after the sampling filters) and the one picked")
    p.add_argument("--top", type=int, default=5, help="candidates shown by --show-probs (default: 5)")
    p.add_argument("--truncate", choices=["left"],
                   help="drop the oldest prompt tokens if the prompt is too long for the context "
                        "window (default: an error)")
    p.add_argument("--no-bos", dest="bos", action="store_false",
                   help="do not start the prompt with <|endoftext|> (the document separator)")
    p.add_argument("--system", help="system message (with --reasoning)")
    _add_thinking_flags(p, "chat models: PROMPT becomes the user's message of a one-turn chat at this "
                           "reasoning level")
    p.set_defaults(func=_generate)


def _add_thinking_flags(p: argparse.ArgumentParser, reasoning_help: str) -> None:
    from .chat import REASONING_LEVELS

    p.add_argument("--reasoning", choices=REASONING_LEVELS, help=reasoning_help)
    p.add_argument("--thinking-budget", type=int, metavar="N",
                   help="most thinking tokens; then <|/think|> is forced and the answer follows")
    p.add_argument("--show-thinking", action="store_true", help="show the thinking (hidden by default)")
    p.add_argument("--best-of", type=int, default=1, metavar="N",
                   help="chat models: sample N answers, show the one --reward-model scores highest")
    p.add_argument("--reward-model", metavar="RM_RUN", help="reward run (lantern reward) that picks the best answer")


def _generate(args: argparse.Namespace) -> int:
    from .terminal import generate_command

    return generate_command(args.run, _read_text_arg(args.prompt), sampling=_sampling_from_args(args),
                            max_tokens=args.max_tokens, stop=args.stop, num=args.num,
                            show_probs=args.show_probs, top=args.top, truncate=args.truncate,
                            bos=args.bos, reasoning=args.reasoning, system=args.system,
                            thinking_budget_tokens=args.thinking_budget, show_thinking=args.show_thinking,
                            device=args.device, dtype=args.dtype, best_of=args.best_of,
                            reward_model=args.reward_model)


@command
def _add_chat(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat with a run's model in the terminal",
                       description="An interactive chat. Chat models (from lantern sft, ...) answer "
                                   "turns; an imported model with a chat template talks through it; "
                                   "base models continue one running text. "
                                   "Type /help inside for commands (/reset, /temp 0.7, /preset "
                                   "chatbot, /quit, ...).")
    p.add_argument("run", metavar="RUN", help="run directory (model.safetensors, model.json, tokenizer.json)")
    _add_sampling_flags(p)
    p.add_argument("--format", choices=["plain", "chat", "template"],
                   help="override the run's format: plain, the history is one text the model "
                        "continues; chat, our user/assistant turns; template, an imported model's own "
                        "chat template (default: chat for a chat model, template for an imported "
                        "model that has one, else plain)")
    p.add_argument("--system", help="system message (chat models, and the template format)")
    _add_thinking_flags(p, "reasoning level of a chat model (default: the system message's "
                           "'Reasoning:' line, else medium)")
    p.set_defaults(func=_chat)


def _chat(args: argparse.Namespace) -> int:
    from .terminal import chat_command

    return chat_command(args.run, sampling=_sampling_from_args(args), max_tokens=args.max_tokens,
                        format=args.format, system=args.system, reasoning=args.reasoning,
                        thinking_budget_tokens=args.thinking_budget, show_thinking=args.show_thinking,
                        device=args.device, dtype=args.dtype, best_of=args.best_of,
                        reward_model=args.reward_model)


@command
def _add_serve(sub: argparse._SubParsersAction) -> None:
    from .config import add_arguments
    from .serve import ServeConfig

    p = sub.add_parser("serve", help="serve runs over an OpenAI-compatible HTTP API",
                       description="Serve each RUN (chat runs: /v1/chat/completions; every run: "
                                   "/v1/completions) on http://HOST:PORT/v1, the model name being the "
                                   "run directory's name. Needs the serve extra: pip install 'lanternlm[serve]'.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories to serve")
    add_arguments(p, ServeConfig)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> None:
    from .config import from_arguments
    from .serve import ServeConfig
    from .serve.app import serve

    config, _ = from_arguments(ServeConfig, args)
    serve(args.runs, config)


@command
def _add_tasks(sub: argparse._SubParsersAction) -> None:
    from .chat import REASONING_LEVELS
    from .tasks import TASKS

    parser = sub.add_parser("tasks", help="verifiable tasks: preview examples, write an SFT mixture",
                            description="The verifiable tasks (letters, arithmetic, reverse, glue): "
                                        "see examples with their thinking traces, or write a "
                                        "fine-tuning mixture as chat JSONL.")
    parser.set_defaults(func=lambda args: parser.print_help() or 1)
    actions = parser.add_subparsers(title="actions", metavar="ACTION")

    show = actions.add_parser("show", help="print examples of a task",
                              description="Print examples of TASK. With --tokenizer, show the rendered "
                                          "conversation with its loss mask (trained tokens green).")
    show.add_argument("task", metavar="TASK", help="letters, arithmetic, reverse or glue")
    show.add_argument("--n", type=int, default=2, help="how many examples (default: 2)")
    show.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    show.add_argument("--split", choices=["train", "test"], default="train", help="(default: train)")
    show.add_argument("--reasoning", choices=REASONING_LEVELS, default="high",
                      help="thinking level of the trace (default: high)")
    show.add_argument("--tokenizer", metavar="FILE", help="tokenizer JSON: show ids and the loss mask")
    show.add_argument("--no-color", action="store_true", help="mark trained text with ⟦...⟧ instead of colour")
    show.set_defaults(func=_tasks_show)

    mix = actions.add_parser("mixture", help="write a fine-tuning mixture as chat JSONL",
                             description="Write N training examples of each task, reasoning levels "
                                         "spread evenly, shuffled, as {\"messages\": [...]} lines.")
    mix.add_argument("--out", required=True, metavar="FILE", help="JSONL file to write")
    mix.add_argument("--tasks", default=",".join(TASKS),
                     help="comma-separated task names (default: all)")
    mix.add_argument("--n", type=int, default=1000, help="examples per task (default: 1000)")
    mix.add_argument("--levels", default=",".join(REASONING_LEVELS),
                     help="comma-separated reasoning levels (default: none,low,medium,high)")
    mix.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    mix.add_argument("--multi-turn", type=float, default=0.1,
                     help="share of conversations joined into two exchanges (default: 0.1)")
    mix.set_defaults(func=_tasks_mixture)

    pairs = actions.add_parser("pairs", help="write on-policy preference pairs: a chat run's right vs wrong answers",
                               description="Ask a chat run each question K times (sampled), grade the answers "
                                           "with the task's verifier and pair a right answer with a wrong one; "
                                           "write them as preference JSONL for lantern dpo / reward --pairs.")
    pairs.add_argument("run", metavar="RUN", help="chat run directory (lantern sft, dpo, rl, ...)")
    pairs.add_argument("--out", required=True, metavar="FILE", help="JSONL file to write")
    pairs.add_argument("--tasks", default="letters,arithmetic,reverse", help="comma-separated task names")
    pairs.add_argument("--n", type=int, default=200, help="questions per task (default: 200)")
    pairs.add_argument("--k", type=int, default=8, help="answers sampled per question (default: 8)")
    pairs.add_argument("--levels", default=",".join(REASONING_LEVELS),
                       help="reasoning levels the questions are asked at, in turn (default: all)")
    pairs.add_argument("--split", choices=["train", "test"], default="train", help="(default: train)")
    pairs.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    pairs.add_argument("--max-tokens", type=int, default=320, help="longest answer (default: 320)")
    pairs.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _add_device_flag(pairs)
    pairs.set_defaults(func=_tasks_pairs)


def _tasks_show(args: argparse.Namespace) -> None:
    from .tasks import preview
    from .tokenizer import Tokenizer

    tokenizer = Tokenizer.load(args.tokenizer) if args.tokenizer else None
    print(preview(args.task, n=args.n, seed=args.seed, split=args.split, reasoning=args.reasoning,
                  tokenizer=tokenizer, color=not args.no_color and sys.stdout.isatty()))


def _tasks_pairs(args: argparse.Namespace) -> None:
    from .data.preference import write_pairs
    from .run import Run
    from .tasks.pairs import on_policy_pairs

    run = Run(args.run)
    if not run.chat:
        raise LanternError(f"{run.path}: a run of stage {run.stage!r} does not answer chat questions; "
                           f"give a chat run (lantern sft)")
    pairs, report = on_policy_pairs(run.engine(args.device), run.tokenizer, args.tasks.split(","), args.n, k=args.k,
                                    levels=args.levels.split(","), split=args.split, seed=args.seed,
                                    temperature=args.temperature, max_tokens=args.max_tokens)
    for row in report:
        print(f"{row['task']:<12} {row['pairs']:>5} pairs from {row['questions']} questions   right "
              f"{row['right']:.0%}   all right {row['all_right']}   all wrong {row['all_wrong']}")
    if not pairs:
        raise LanternError(f"no question got both a right and a wrong answer from {run.path}: nothing written "
                           f"(the tasks are too easy or too hard for this model, see the warnings)")
    write_pairs(args.out, pairs)
    print(f"{len(pairs)} pairs written to {args.out}")


def _tasks_mixture(args: argparse.Namespace) -> None:
    from .tasks import write_mixture

    write_mixture(args.out, args.tasks.split(","), args.n, args.levels.split(","), seed=args.seed,
                  multi_turn=args.multi_turn)


@command
def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="see inside a trained model: tokens, embeddings, attention, "
                                       "next-token probabilities, the loop, loss, thinking, memory",
                       description="Glass-box views of a run. Each prints a terminal view and writes "
                                   "a PNG (default folder: RUN/inspect, or the current folder for tokens).")
    p.set_defaults(func=lambda args: p.print_help() or 1)
    views = p.add_subparsers(title="views", metavar="VIEW")

    def view(name: str, help_text: str, func, run: bool = True, text: bool = True) -> argparse.ArgumentParser:
        v = views.add_parser(name, help=help_text, description=help_text)
        if run:
            v.add_argument("run", metavar="RUN", help="run directory (model.safetensors, model.json, tokenizer.json)")
        if text:
            v.add_argument("text", metavar="TEXT", help="the text ('-' reads standard input)")
        v.add_argument("--out", metavar="DIR", help="folder for the pictures")
        if run:
            _add_device_flag(v)
        v.set_defaults(func=func)
        return v

    v = view("tokens", "TEXT split into coloured pieces with ids; several --tokenizer compare side by side",
             _inspect_tokens, run=False)
    v.add_argument("--tokenizer", action="append", required=True, metavar="PATH",
                   help="a tokenizer JSON file or a run directory (repeat to compare)")
    v.add_argument("--no-color", action="store_true", help="plain output, no colours")
    v = view("embeddings", "nearest neighbours of WORDs in the embedding table and their 2-D PCA map",
             _inspect_embeddings, text=False)
    v.add_argument("words", nargs="+", metavar="WORD", help="words (each must be a single token)")
    v.add_argument("-k", type=int, default=8, help="neighbours per word (default: 8)")
    v = view("attention", "the attention matrix of one head over TEXT (rows attend to columns)", _inspect_attention)
    v.add_argument("--layer", type=int, default=0, help="layer, from 0 (default: 0)")
    v.add_argument("--head", type=int, default=0, help="head, from 0 (default: 0)")
    v.add_argument("--query", metavar="WORD", help="highlight this token's row and name what it attends to most")
    v.add_argument("--grid", action="store_true", help="also draw every head of the layer")
    v.add_argument("--rollout", action="store_true", help="also draw attention rollout across all layers")
    v.add_argument("--no-color", action="store_true", help="plain output, no colours")
    v = view("next", "the next-token distribution after TEXT, and what temperature / top-k / top-p keep",
             _inspect_next)
    v.add_argument("-k", type=int, default=10, help="candidates shown (default: 10)")
    v = view("generate", "the generation loop step by step: context, candidates, chosen token "
                         "(table, image strip, animated GIF)", _inspect_generate)
    v.add_argument("--steps", type=int, default=8, help="tokens to generate (default: 8)")
    v.add_argument("--top", type=int, default=5, help="candidates per step (default: 5)")
    v.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: 0)")
    v.add_argument("--top-k", type=int, default=0, help="keep the k most likely (0 = off)")
    v.add_argument("--top-p", type=float, default=1.0, help="nucleus threshold (1 = off)")
    v.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    v = views.add_parser("loss", help="loss curves of one or more runs overlaid, smoothed, with the plateau mark",
                         description="Raw and smoothed training loss, validation points, and where a "
                                     "plateau rule would stop, for each RUN.")
    v.add_argument("runs", nargs="+", metavar="RUN", help="run directories (metrics.jsonl)")
    v.add_argument("--alpha", type=float, default=0.9, help="EMA smoothing factor (default: 0.9)")
    v.add_argument("--patience", type=int, default=3, help="plateau rule: evaluations without improvement (default: 3)")
    v.add_argument("--min-delta", type=float, default=0.0, help="plateau rule: improvement needed (default: 0)")
    v.add_argument("--out", metavar="DIR", help="folder for the picture (default: RUN/inspect of the first run)")
    v.set_defaults(func=_inspect_loss)
    v = view("thinking", "accuracy and mean thinking length per reasoning level on a task (chat models)",
             _inspect_thinking, text=False)
    v.add_argument("--task", required=True, help="task name (see lantern tasks show)")
    v.add_argument("-n", type=int, default=20, help="held-out questions per level (default: 20)")
    v.add_argument("--max-tokens", type=int, default=320, help="longest answer (default: 320, as lantern eval)")
    v = view("preference", "DPO / reward runs: margins and pair accuracy over steps; answers before and after",
             _inspect_preference, text=False)
    v.add_argument("--tasks", default="", help="tasks whose held-out answers to compare with the parent run's, "
                                               "comma-separated (default: none)")
    v.add_argument("--levels", default="high", help="reasoning levels of those questions (default: high)")
    v.add_argument("-n", type=int, default=10, help="questions per task and level (default: 10)")
    v = view("rl", "RL runs: reward, held-out pass@1 / pass@k and answer lengths over steps; answers before and after",
             _inspect_rl, text=False)
    v.add_argument("--tasks", default="", help="tasks whose held-out answers to compare with the parent run's, "
                                               "comma-separated (default: none)")
    v.add_argument("--levels", default="high", help="reasoning levels of those questions (default: high)")
    v.add_argument("-n", type=int, default=10, help="questions per task and level (default: 10)")
    v = view("memory", "weights + KV cache + activations by dtype, estimated and measured for one forward",
             _inspect_memory, text=False)
    v.add_argument("--context", type=int, help="tokens in the prefill (default: the context window)")
    v.add_argument("--batch-size", type=int, default=1, help="sequences (default: 1)")
    v = view("report", "all views about RUN as Markdown + PNGs (default folder: RUN/report)",
             _inspect_report, text=False)


def _inspect_tokens(args: argparse.Namespace) -> None:
    from .inspect.tokens import tokens_command

    print(tokens_command(_read_text_arg(args.text), args.tokenizer, out=args.out or ".",
                         color=not args.no_color and sys.stdout.isatty()))


def _inspect_embeddings(args: argparse.Namespace) -> None:
    from .inspect.embeddings import embeddings_command

    print(embeddings_command(args.run, args.words, k=args.k, out=args.out, device=args.device))


def _inspect_attention(args: argparse.Namespace) -> None:
    from .inspect.attention import attention_command

    print(attention_command(args.run, _read_text_arg(args.text), args.layer, args.head, args.query,
                            grid=args.grid, with_rollout=args.rollout, out=args.out,
                            color=not args.no_color and sys.stdout.isatty(), device=args.device))


def _inspect_next(args: argparse.Namespace) -> None:
    from .inspect.next_token import next_command

    print(next_command(args.run, _read_text_arg(args.text), k=args.k, out=args.out, device=args.device))


def _inspect_generate(args: argparse.Namespace) -> None:
    from .inspect.loop import loop_command
    from .sampling import SamplingParams

    sampling = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    print(loop_command(args.run, _read_text_arg(args.text), steps=args.steps, sampling=sampling, top=args.top,
                       out=args.out, device=args.device))


def _inspect_loss(args: argparse.Namespace) -> None:
    from .inspect.loss import loss_command

    print(loss_command(args.runs, alpha=args.alpha, patience=args.patience, min_delta=args.min_delta,
                       out=args.out))


def _inspect_preference(args: argparse.Namespace) -> None:
    from .inspect.preference import preference_command

    print(preference_command(args.run, [t for t in args.tasks.split(",") if t], args.levels.split(","), n=args.n,
                             out=args.out, device=args.device))


def _inspect_rl(args: argparse.Namespace) -> None:
    from .inspect.rl import rl_command

    print(rl_command(args.run, [t for t in args.tasks.split(",") if t], args.levels.split(","), n=args.n,
                     out=args.out, device=args.device))


def _inspect_thinking(args: argparse.Namespace) -> None:
    from .inspect.thinking import thinking_command

    print(thinking_command(args.run, args.task, n=args.n, max_tokens=args.max_tokens, out=args.out,
                           device=args.device))


def _inspect_memory(args: argparse.Namespace) -> None:
    from .inspect.memory import memory_command

    print(memory_command(args.run, context=args.context, batch_size=args.batch_size, out=args.out,
                         device=args.device))


def _inspect_report(args: argparse.Namespace) -> None:
    from .inspect.report import write_report

    print(write_report(args.run, args.out, device=args.device))


@command
def _add_sweep(sub: argparse._SubParsersAction) -> None:
    from .config import add_arguments
    from .inspect.sweep import SweepConfig

    p = sub.add_parser("sweep", help="train a few model sizes for the same tokens; plot loss vs parameters",
                       description="Model size vs loss: trains each of --sizes on the same data for the "
                                   "same token budget into OUT/<size>/, then prints the table and writes "
                                   "OUT/sweep.png and OUT/sweep.json. Defaults take minutes on a CPU.")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the runs, the table and the plot")
    add_arguments(p, SweepConfig)
    p.set_defaults(func=_sweep)


def _sweep(args: argparse.Namespace) -> None:
    from .config import from_arguments
    from .inspect.sweep import SweepConfig, sweep_command

    print(sweep_command(from_arguments(SweepConfig, args)[0], args.out))


@command
def _add_sft(sub: argparse._SubParsersAction) -> None:
    from .config import add_arguments
    from .train.sft import SFT_PRESETS, SFTConfig

    p = sub.add_parser("sft", help="fine-tune a base run into a chat model (tasks, thinking levels)",
                       description="Supervised fine-tuning of the run --base into --out: the tasks' "
                                   "conversations at every reasoning level plus any chat JSONL (--data), "
                                   "loss only on the assistant's thinking and answers. Model, tokenizer "
                                   "and optimizer settings are inherited from --base unless given; the log "
                                   "and config.json say which.")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write (or resume)")
    p.add_argument("--preset", default="tiny", choices=sorted(SFT_PRESETS),
                   help="starting configuration (default: tiny)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, same batch order")
    add_arguments(p, SFTConfig)
    p.set_defaults(func=_sft)


def _sft(args: argparse.Namespace) -> None:
    from .train.sft import sft_from_args

    sft_from_args(args)


def _stage_parser(sub: argparse._SubParsersAction, name: str, help_text: str, description: str, presets,
                  cls) -> argparse.ArgumentParser:
    """A training stage's command: --out, --preset, --resume and the config's flags."""
    from .config import add_arguments

    p = sub.add_parser(name, help=help_text, description=description)
    p.add_argument("--out", metavar="RUN_DIR", help="run directory to write (or resume)")
    p.add_argument("--preset", default="tiny", choices=sorted(presets), help="starting configuration (default: tiny)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, same batch order")
    add_arguments(p, cls)
    return p


def _require_out(args: argparse.Namespace) -> None:
    if not args.out:
        raise LanternError("--out RUN_DIR is required: the run directory to write")


@command
def _add_dpo(sub: argparse._SubParsersAction) -> None:
    from .train.dpo import DPO_PRESETS, DPOConfig

    p = _stage_parser(sub, "dpo", "preference tuning (DPO) of a chat run from chosen/rejected pairs",
                      "Direct preference optimization of the chat run --base into --out, from preference "
                      "pairs (--pairs JSONL) or from the run's own right and wrong answers to the tasks "
                      "(--pairs-from-tasks). The reference's log-probabilities are computed once and stored "
                      "with the run. Logs rewards, margins and accuracies per step.", DPO_PRESETS, DPOConfig)
    p.set_defaults(func=_dpo)


def _dpo(args: argparse.Namespace) -> None:
    from .train.dpo import dpo_from_args

    _require_out(args)
    dpo_from_args(args)


@command
def _add_reward(sub: argparse._SubParsersAction) -> None:
    from .train.reward import REWARD_PRESETS, RewardConfig

    p = _stage_parser(sub, "reward", "train a reward model on preference pairs; `reward score` uses one",
                      "Train a Bradley-Terry reward model (the chat run --base with a scalar head on the last "
                      "token) into --out, from --pairs or --pairs-from-tasks. `lantern reward score RUN "
                      "--pairs FILE` scores pairs with a trained one.", REWARD_PRESETS, RewardConfig)
    p.set_defaults(func=_reward)
    actions = p.add_subparsers(title="actions", metavar="ACTION", dest="action")
    score = actions.add_parser("score", help="score conversations or pairs with a reward run",
                               description="Print the reward model's score of each conversation (chat JSONL, "
                                           "ending with the assistant answer) or of each pair's two answers "
                                           "(preference JSONL), one JSON line each; pairs end with the accuracy.")
    score.add_argument("run", metavar="RUN", help="reward run directory (lantern reward)")
    group = score.add_mutually_exclusive_group(required=True)
    group.add_argument("--pairs", metavar="FILE", help="preference JSONL: score chosen and rejected")
    group.add_argument("--chats", metavar="FILE", help="chat JSONL: score each conversation's last answer")
    score.add_argument("--batch-size", type=int, default=16, help="rows per forward pass (default: 16)")
    _add_device_flag(score)
    score.set_defaults(func=_reward_score)


def _reward(args: argparse.Namespace) -> None:
    from .train.reward import reward_from_args

    _require_out(args)
    reward_from_args(args)


@command
def _add_rl(sub: argparse._SubParsersAction) -> None:
    from .train.rl import RL_PRESETS, RLConfig

    p = _stage_parser(sub, "rl", "reinforcement learning (GRPO) of a chat run on the tasks' verifiers or a reward model",
                      "GRPO of the chat run --base into --out: G answers per task question sampled with the live "
                      "weights, judged by the tasks' verifiers (--reward tasks[:letters,...]) or a reward model "
                      "(--reward-model RM_RUN), group-relative advantages. Logs rewards, signal, lengths, entropy "
                      "per step and held-out pass@1 / pass@k; stops when the groups carry no signal or held-out "
                      "accuracy falls.", RL_PRESETS, RLConfig)
    p.set_defaults(func=_rl)


def _rl(args: argparse.Namespace) -> None:
    from .train.rl import rl_from_args

    _require_out(args)
    rl_from_args(args)


def _reward_score(args: argparse.Namespace) -> None:
    import json

    from .reward import RewardModel

    model = RewardModel(args.run, args.device)
    if args.chats:
        from .chat import load_jsonl

        conversations = load_jsonl(args.chats)
        for score in model.score(conversations, args.batch_size):
            print(json.dumps({"score": round(score, 6)}))
        return
    from .data.preference import load_pairs

    pairs = load_pairs(args.pairs)
    scores = model.score_pairs(pairs, args.batch_size)
    right = 0.0
    for chosen, rejected in zip(scores[::2], scores[1::2]):
        right += 1.0 if chosen > rejected else 0.5 if chosen == rejected else 0.0
        print(json.dumps({"chosen": round(chosen, 6), "rejected": round(rejected, 6),
                          "margin": round(chosen - rejected, 6)}))
    print(json.dumps({"pairs": len(pairs), "accuracy": right / len(pairs)}))


@command
def _add_eval(sub: argparse._SubParsersAction) -> None:
    from .chat import REASONING_LEVELS

    p = sub.add_parser("eval", help="accuracy per task x reasoning level, and bits per byte",
                       description="Answer held-out task questions (greedy) at each reasoning level and "
                                   "print the accuracy table; also bits per byte on the base run's "
                                   "validation shards. Writes RUN/eval.json and RUN/eval.png.")
    p.add_argument("run", metavar="RUN", help="run directory of a chat model (from lantern sft)")
    p.add_argument("--tasks", help="comma-separated tasks (default: the ones the run was trained on)")
    p.add_argument("--levels", default=",".join(REASONING_LEVELS), help="comma-separated reasoning levels")
    p.add_argument("--n", type=int, default=100, help="held-out examples per task (default: 100)")
    p.add_argument("--max-tokens", type=int, default=320, help="most tokens per answer (default: 320)")
    p.add_argument("--batch-size", type=int, default=32, help="questions answered together (default: 32)")
    p.add_argument("--thinking-budget", type=int, metavar="N", help="most thinking tokens per answer")
    p.add_argument("--bpb-tokens", type=int, default=32768,
                   help="validation tokens for bits per byte (0 = skip; default: 32768)")
    p.add_argument("--seed", type=int, default=0, help="which held-out examples (default: 0)")
    _add_device_flag(p)
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> None:
    from .evaluate import evaluate_run, format_table

    print(format_table(evaluate_run(
        args.run, tasks=args.tasks.split(",") if args.tasks else None, levels=args.levels.split(","),
        n=args.n, seed=args.seed, max_tokens=args.max_tokens, batch_size=args.batch_size,
        thinking_budget=args.thinking_budget, bpb_tokens=args.bpb_tokens, device=args.device)))


@command
def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a run as a Hugging Face folder or a GGUF file for other tools",
                       description="Export RUN for transformers, vLLM, lm-evaluation-harness (--format hf: "
                                   "config.json, model.safetensors, tokenizer.json, tokenizer_config.json with "
                                   "the chat template, generation_config.json) or for llama.cpp, Ollama and "
                                   "LM Studio (--format gguf: one file).")
    p.add_argument("run", metavar="RUN", help="run directory (lantern pretrain, sft, dpo, rl, import)")
    p.add_argument("--format", choices=["hf", "gguf"], default="hf", help="what to write (default: hf)")
    p.add_argument("--out", required=True, metavar="PATH", help="folder (hf) or file (gguf) to write")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> None:
    if args.format == "gguf":
        from .interop.gguf import export_gguf as export
    else:
        from .interop.export import export_hf as export
    print(export(args.run, args.out))


@command
def _add_import(sub: argparse._SubParsersAction) -> None:
    from .config import add_arguments
    from .interop.importing import ImportConfig

    p = sub.add_parser("import", help="bring a Hugging Face model (GPT-2, Llama, Qwen2-like) in as a run",
                       description="Import SOURCE (a local Hugging Face model folder, or a hub id downloaded "
                                   "with huggingface_hub into its cache) into the run directory --out: weights "
                                   "in our layout, its own tokenizer, a record of stage 'import'. The run works "
                                   "with generate, chat (plain text), inspect, serve and export.")
    p.add_argument("source", metavar="SOURCE", help="model folder or hub id (org/name)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to create")
    add_arguments(p, ImportConfig, skip=("source",))
    p.set_defaults(func=_import)


def _import(args: argparse.Namespace) -> None:
    import dataclasses

    from .config import from_arguments
    from .interop.importing import ImportConfig, import_model

    config, _ = from_arguments(ImportConfig, args)
    print(import_model(dataclasses.replace(config, source=args.source), args.out))


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lantern",
        description="lanternlm: build, train, fine-tune, run and see inside a language model.")
    parser.add_argument("--version", action="version", version=f"lanternlm {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    set_verbosity(quiet=args.quiet, debug=args.debug)
    if not hasattr(args, "func"):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except LanternError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # a training loop says where it stopped and how to go on
        print(f"interrupted: {err}" if str(err) else "interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
