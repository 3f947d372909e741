"""Issue 17 §2: every common mistake is one clear line on stderr and an exit code != 0.

One table: (command, expected exit code, expected fragment of the message). Each row runs
the CLI in-process (``lanternlm.cli.main``) on tiny files made once for the module: shards,
a 2-step pretraining run, a copy of it recorded as an SFT run, a tokenizer, broken files.
``{name}`` in a command is replaced by the path of fixture file ``name``; a row may give
standard input as bytes. No row may end in a traceback (an exception escaping ``main``).
"""

import io
import json
import logging
import shutil
import sys

import pytest
import torch

from lanternlm.cli import main
from lanternlm.run import write_record
from lanternlm.train.pretrain import pretrain
from lanternlm.train.sft import SFTConfig
from test_data_shards import make_docs
from test_train import make_shards, tiny_config

TINY = ["--model", "llama-style-tiny", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16",
        "--batch-size", "4", "--max-steps", "2", "--max-minutes", "none", "--device", "cpu"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every path a row may name."""
    root = tmp_path_factory.mktemp("cli")
    paths = {"tmp": root, "shards": make_shards(root / "shards"),
             "noval": make_shards(root / "noval", val_docs=0)}
    paths["tok"] = paths["shards"] / "tokenizer.json"
    run = root / "run"
    pretrain(tiny_config(paths["shards"], max_steps=2, checkpoint_every=1), run)
    paths["run"] = run
    sft_run = shutil.copytree(run, root / "sftrun")
    write_record(sft_run, "sft", SFTConfig(base=str(run)), parent=run)
    paths["sftrun"] = sft_run
    corrupt_run = shutil.copytree(run, root / "corruptrun")
    (corrupt_run / "config.json").write_text('{"stage": "pretrain", "config": {"lr": ')
    paths["corruptrun"] = corrupt_run
    typed_run = shutil.copytree(run, root / "typedrun")
    record = json.loads((typed_run / "config.json").read_text())
    record["config"]["lr"] = "fast"
    (typed_run / "config.json").write_text(json.dumps(record))
    paths["typedrun"] = typed_run
    badmodel = shutil.copytree(run, root / "badmodel")
    (badmodel / "model.json").unlink()
    (badmodel / "model.json").write_text("{not json")
    paths["badmodel"] = badmodel

    def write(name, data):
        path = root / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        paths[name.replace(".", "_")] = path
        return path

    write("text.txt", "\n\n".join(make_docs(40)) + "\n")
    write("latin1.txt", "caf\xe9 au lait\n".encode("latin-1"))
    write("corrupt.json", '{"format": "lanternlm-tokenizer", ')
    write("list.json", "[1, 2, 3]")
    write("noanswer.jsonl", "\n".join(json.dumps({"messages": [{"role": "user", "content": f"hi {i}"}]})
                                      for i in range(8)) + "\n")
    write("badchat.jsonl", '{"messages": [{"role": "wizard", "content": "x"}]}\n')
    write("notjson.jsonl", "{oops\n")
    write("pairs.jsonl", json.dumps({"prompt": "q", "chosen": "a"}) + "\n")
    (root / "adir").mkdir()
    paths["adir"] = root / "adir"
    cache = root / "cache" / "corpora" / "python-docs"
    cache.mkdir(parents=True)
    (cache / "corpus.json").write_text('{"name": "python-docs", "files": [')
    paths["cache"] = root / "cache"
    sweep = root / "sweep"
    (sweep / "1x32").mkdir(parents=True)
    shutil.copytree(run, sweep / "1x32", dirs_exist_ok=True)
    paths["sweep"] = sweep
    return paths


# (id, command, exit code, fragment of stderr, standard input)
CASES = [
    # ------------------------------------------------------------ lantern itself
    ("no-command", [], 1, "", None),
    ("unknown-command", ["bogus"], 2, "invalid choice", None),
    # ------------------------------------------------------------ pretrain
    ("pretrain-no-data", ["pretrain", "--out", "{tmp}/p1", *TINY], 2, "give the shards directory (--data)", None),
    ("pretrain-missing-data", ["pretrain", "--data", "{tmp}/nowhere", "--out", "{tmp}/p2", *TINY], 2,
     "no manifest.json", None),
    ("pretrain-data-is-a-file", ["pretrain", "--data", "{text_txt}", "--out", "{tmp}/p3", *TINY], 2,
     "no manifest.json", None),
    ("pretrain-out-is-a-file", ["pretrain", "--data", "{shards}", "--out", "{text_txt}", *TINY], 2,
     "is a file, not a run directory", None),
    ("pretrain-resume-corrupt-record", ["pretrain", "--out", "{corruptrun}", "--resume"], 2,
     "config.json: line 1, column", None),
    ("pretrain-resume-wrong-types", ["pretrain", "--out", "{typedrun}", "--resume"], 2,
     "config.json: field 'lr' is 'fast', expected a float", None),
    ("pretrain-resume-sft-run", ["pretrain", "--out", "{sftrun}", "--resume"], 2,
     "holds a run of stage 'sft', not 'pretrain'", None),
    ("pretrain-over-sft-run", ["pretrain", "--data", "{shards}", "--out", "{sftrun}", *TINY], 2,
     "already holds a run of stage 'sft'; choose another --out", None),
    ("pretrain-over-own-run", ["pretrain", "--data", "{shards}", "--out", "{run}", *TINY], 2,
     "pass --resume to continue it", None),
    ("pretrain-resume-nothing", ["pretrain", "--out", "{tmp}/never", "--resume"], 2, "nothing to resume", None),
    ("pretrain-device-cuda", ["pretrain", "--data", "{shards}", "--out", "{tmp}/p4", *TINY, "--device", "cuda"],
     2, "CUDA is not available", None),
    ("pretrain-device-bogus", ["pretrain", "--data", "{shards}", "--out", "{tmp}/p5", *TINY, "--device", "bogus"],
     2, "device 'bogus'", None),
    ("pretrain-vocab-huge", ["pretrain", "--data", "{shards}", "--out", "{tmp}/p6", *TINY,
                             "--vocab-size", str(10 ** 12)], 2, "vocab_size=1000000000000: must be at most", None),
    ("pretrain-vocab-small", ["pretrain", "--data", "{shards}", "--out", "{tmp}/p7", *TINY, "--vocab-size", "10"],
     2, "smaller than the tokenizer's", None),
    ("pretrain-block-huge", ["pretrain", "--data", "{shards}", "--out", "{tmp}/p8", *TINY,
                             "--block-size", str(10 ** 8)], 2, "block_size=100000000: must be at most", None),
    ("pretrain-block-larger-than-data", ["pretrain", "--data", "{shards}", "--out", "{tmp}/p9", *TINY,
                                         "--block-size", "100000"], 2, "not enough tokens for one batch", None),
    ("pretrain-empty-val", ["pretrain", "--data", "{noval}", "--out", "{tmp}/p10", *TINY], 2,
     "the validation split (0 tokens) is shorter than one window", None),
    ("pretrain-lr-nan", ["pretrain", "--data", "{shards}", "--out", "{tmp}/p11", *TINY, "--lr", "nan"], 2,
     "lr=nan is invalid: must be a finite number", None),
    ("pretrain-beta2", ["pretrain", "--data", "{shards}", "--out", "{tmp}/p12", *TINY, "--beta2", "1.5"], 2,
     "beta2=1.5 is invalid: must be in [0, 1)", None),
    ("pretrain-batch-zero", ["pretrain", "--data", "{shards}", "--out", "{tmp}/p13", *TINY, "--batch-size", "0"],
     2, "batch_size=0 is invalid", None),
    ("pretrain-steps-not-int", ["pretrain", "--data", "{shards}", "--out", "{tmp}/p14", "--max-steps", "abc"], 2,
     "invalid int value: 'abc'", None),
    ("pretrain-seed-none", ["pretrain", "--data", "{shards}", "--out", "{tmp}/p15", "--seed", "none"], 2,
     "invalid int value: 'none'", None),
    ("pretrain-preset", ["pretrain", "--data", "{shards}", "--out", "{tmp}/p16", "--preset", "huge"], 2,
     "invalid choice: 'huge'", None),
    ("pretrain-model", ["pretrain", "--data", "{shards}", "--out", "{tmp}/p17", *TINY, "--model", "nope"], 2,
     "model='nope' is not a model preset", None),
    ("pretrain-optimizer", ["pretrain", "--data", "{shards}", "--out", "{tmp}/p18", *TINY, "--optimizer", "sgd"],
     2, "optimizer='sgd' is invalid", None),
    ("pretrain-dtype", ["pretrain", "--data", "{shards}", "--out", "{tmp}/p19", *TINY, "--dtype", "float16"], 2,
     "dtype='float16' is invalid", None),
    ("pretrain-heads", ["pretrain", "--data", "{shards}", "--out", "{tmp}/p20", *TINY, "--n-head", "3"], 2,
     "must be divisible by n_head=3", None),
    ("pretrain-minutes", ["pretrain", "--data", "{shards}", "--out", "{tmp}/p21", *TINY, "--max-minutes", "-1"],
     2, "max_minutes=-1.0 is invalid", None),
    ("pretrain-too-large", ["pretrain", "--data", "{shards}", "--out", "{tmp}/p22", *TINY, "--n-layer", "4096",
                            "--n-embd", "8192", "--n-head", "64", "--n-kv-head", "8"], 2,
     "for its weights, gradients and optimizer states, more than", None),
    # ------------------------------------------------------------ data
    ("data-no-action", ["data"], 1, "", None),
    ("data-get-unknown", ["data", "get", "nope"], 2, "unknown built-in corpus 'nope'", None),
    ("data-prepare-missing", ["data", "prepare", "{tmp}/missing.txt", "--out", "{tmp}/d1", "--tokenizer", "{tok}"],
     2, "no such file", None),
    ("data-prepare-out-file", ["data", "prepare", "{text_txt}", "--out", "{list_json}", "--tokenizer", "{tok}"],
     2, "is a file; give a folder", None),
    ("data-prepare-tokenizer-missing", ["data", "prepare", "{text_txt}", "--out", "{tmp}/d2",
                                        "--tokenizer", "{tmp}/none.json"], 2, "tokenizer file not found", None),
    ("data-prepare-tokenizer-corrupt", ["data", "prepare", "{text_txt}", "--out", "{tmp}/d3",
                                        "--tokenizer", "{corrupt_json}"], 2, "invalid JSON", None),
    ("data-prepare-not-utf8", ["data", "prepare", "{latin1_txt}", "--out", "{tmp}/d4", "--tokenizer", "{tok}"], 2,
     "latin1.txt", None),
    ("data-prepare-val-fraction", ["data", "prepare", "{text_txt}", "--out", "{tmp}/d5", "--tokenizer", "{tok}",
                                   "--val-fraction", "1.5"], 2, "val_fraction must be in [0, 1)", None),
    ("data-prepare-shard-tokens", ["data", "prepare", "{text_txt}", "--out", "{tmp}/d6", "--tokenizer", "{tok}",
                                   "--shard-tokens", "0"], 2, "shard_tokens must be at least 1", None),
    ("data-prepare-vocab-small", ["data", "prepare", "{text_txt}", "--out", "{tmp}/d7", "--vocab-size", "10"], 2,
     "vocab_size=10 is too small", None),
    ("data-check-missing", ["data", "check", "{tmp}/nowhere"], 2, "no manifest.json", None),
    ("data-check-file", ["data", "check", "{text_txt}"], 2, "no manifest.json", None),
    ("data-get-corrupt-cache", ["-q", "data", "get", "python-docs", "--cache", "{cache}"], 0,
     "corpus.json is not readable", None),
    # ------------------------------------------------------------ tokenizer
    ("tokenizer-pattern-invalid", ["tokenizer", "train", "--input", "{text_txt}", "--out", "{tmp}/t1.json",
                                   "--vocab-size", "300", "--pattern", "(["], 2, "invalid regex", None),
    ("tokenizer-pattern-loses-text", ["tokenizer", "train", "--input", "{text_txt}", "--out", "{tmp}/t2.json",
                                      "--vocab-size", "300", "--pattern", r"\w+"], 2, "does not cover all text", None),
    ("tokenizer-pattern-empty", ["tokenizer", "train", "--input", "{text_txt}", "--out", "{tmp}/t3.json",
                                 "--vocab-size", "300", "--pattern", ""], 2, "matches empty pieces", None),
    ("tokenizer-vocab-huge", ["tokenizer", "train", "--input", "{text_txt}", "--out", "{tmp}/t4.json",
                              "--vocab-size", str(10 ** 12)], 2, "vocab_size=1000000000000 is too large", None),
    ("tokenizer-input-missing", ["tokenizer", "train", "--input", "{tmp}/nothing", "--out", "{tmp}/t5.json"], 2,
     "no such file or folder", None),
    ("tokenizer-out-is-dir", ["tokenizer", "train", "--input", "{text_txt}", "--out", "{adir}",
                              "--vocab-size", "300"], 2, "is a directory, not a file", None),
    ("tokenizer-train-not-utf8", ["tokenizer", "train", "--input", "{latin1_txt}", "--out", "{tmp}/t6.json",
                                  "--vocab-size", "300"], 2, "byte 3 is not UTF-8", None),
    ("tokenizer-backend", ["tokenizer", "train", "--input", "{text_txt}", "--out", "{tmp}/t7.json",
                           "--vocab-size", "300", "--backend", "java"], 2, "backend='java'", None),
    ("tokenizer-encode-missing", ["tokenizer", "encode", "--tokenizer", "{tmp}/none.json", "hi"], 2,
     "tokenizer file not found", None),
    ("tokenizer-encode-corrupt", ["tokenizer", "encode", "--tokenizer", "{corrupt_json}", "hi"], 2,
     "invalid JSON", None),
    ("tokenizer-encode-not-tokenizer", ["tokenizer", "encode", "--tokenizer", "{list_json}", "hi"], 2,
     "field 'format'", None),
    ("tokenizer-decode-words", ["tokenizer", "encode", "--tokenizer", "{tok}", "--decode", "1 x"], 2,
     "expected integers", None),
    ("tokenizer-decode-range", ["tokenizer", "encode", "--tokenizer", "{tok}", "--decode", "999999"], 2,
     "outside this tokenizer's vocabulary", None),
    ("tokenizer-stdin-not-utf8", ["tokenizer", "encode", "--tokenizer", "{tok}", "-"], 2,
     "standard input: byte 0xff at offset 3 is not UTF-8", b"abc\xffdef"),
    ("tokenizer-arg-not-utf8", ["tokenizer", "show", "--tokenizer", "{tok}", "caf\udce9"], 2,
     "byte 0xe9 at character 3 is not UTF-8", None),
    ("tokenizer-no-action", ["tokenizer"], 1, "", None),
    # ------------------------------------------------------------ generate, sample, chat
    ("generate-missing-run", ["generate", "{tmp}/nowhere", "hi"], 2, "no such run directory", None),
    ("generate-not-a-run", ["generate", "{adir}", "hi"], 2, "not a run or model directory", None),
    ("generate-bad-model-json", ["generate", "{badmodel}", "hi", "--device", "cpu"], 2, "model.json: line 1", None),
    ("generate-device-cuda", ["generate", "{run}", "hi", "--device", "cuda"], 2, "CUDA is not available", None),
    ("generate-device-bogus", ["generate", "{run}", "hi", "--device", "bogus"], 2, "device 'bogus'", None),
    ("generate-num-zero", ["generate", "{run}", "hi", "--num", "0", "--device", "cpu"], 2, "--num 0", None),
    ("generate-temperature", ["generate", "{run}", "hi", "--temperature", "-1", "--device", "cpu"], 2,
     "temperature", None),
    ("generate-top-p", ["generate", "{run}", "hi", "--top-p", "2", "--device", "cpu"], 2, "top_p", None),
    ("generate-max-tokens", ["generate", "{run}", "hi", "--max-tokens", "-3", "--device", "cpu"], 2,
     "max_tokens", None),
    ("generate-stdin-not-utf8", ["generate", "{run}", "-", "--device", "cpu"], 2,
     "standard input: byte 0xff at offset 0 is not UTF-8", b"\xff"),
    ("generate-arg-not-utf8", ["generate", "{run}", "\udcff", "--device", "cpu"], 2,
     "byte 0xff at character 0 is not UTF-8", None),
    ("generate-system-without-reasoning", ["generate", "{run}", "hi", "--system", "be brief", "--device", "cpu"],
     2, "need --reasoning", None),
    ("generate-best-of-alone", ["generate", "{run}", "hi", "--best-of", "4", "--device", "cpu"], 2,
     "go together", None),
    ("sample-missing", ["sample", "{tmp}/nowhere"], 2, "no such run directory", None),
    ("sample-num-zero", ["sample", "{run}", "--num", "0", "--device", "cpu"], 2, "num (0) and max_tokens", None),
    ("chat-missing", ["chat", "{tmp}/nowhere"], 2, "no such run directory", None),
    ("chat-reasoning-on-base", ["chat", "{run}", "--reasoning", "high", "--device", "cpu"], 2,
     "need the chat format", None),
    ("chat-format", ["chat", "{run}", "--format", "yaml"], 2, "invalid choice: 'yaml'", None),
    # ------------------------------------------------------------ info
    ("info-negative-batch", ["info", "tiny", "--batch-size", "-1"], 2, "--batch-size -1: must be >= 1", None),
    ("info-zero-context", ["info", "tiny", "--context", "0"], 2, "context 0: must be in 1..", None),
    ("info-unknown", ["info", "nope"], 2, "neither a preset", None),
    ("info-bad-model-json", ["info", "{badmodel}"], 2, "model.json: line 1", None),
    # ------------------------------------------------------------ fine-tuning stages
    ("sft-no-base", ["sft", "--out", "{tmp}/s1"], 2, "give the base run directory (--base)", None),
    ("sft-missing-base", ["sft", "--base", "{tmp}/nowhere", "--out", "{tmp}/s2"], 2, "no such run directory", None),
    ("sft-out-is-base", ["sft", "--base", "{run}", "--out", "{run}"], 2, "is the base run itself", None),
    ("sft-resume-pretrain-run", ["sft", "--base", "{sftrun}", "--out", "{run}", "--resume"], 2,
     "holds a run of stage 'pretrain', not 'sft'", None),
    ("sft-no-assistant", ["sft", "--base", "{run}", "--out", "{tmp}/s3", "--tasks", "", "--data", "{noanswer_jsonl}",
                          "--block-size", "64", "--device", "cpu"], 2, "8 without an assistant answer", None),
    ("sft-bad-chat", ["sft", "--base", "{run}", "--out", "{tmp}/s4", "--tasks", "", "--data", "{badchat_jsonl}",
                      "--device", "cpu"], 2, "badchat.jsonl:1", None),
    ("sft-chat-not-json", ["sft", "--base", "{run}", "--out", "{tmp}/s5", "--tasks", "", "--data",
                           "{notjson_jsonl}", "--device", "cpu"], 2, "notjson.jsonl:1: invalid JSON", None),
    ("sft-levels", ["sft", "--base", "{run}", "--out", "{tmp}/s6", "--levels", "extreme"], 2,
     "levels=['extreme'] is invalid", None),
    ("sft-unknown-task", ["sft", "--base", "{run}", "--out", "{tmp}/s7", "--tasks", "chess", "--device", "cpu"], 2,
     "chess", None),
    ("sft-block-huge", ["sft", "--base", "{run}", "--out", "{tmp}/s8", "--block-size", str(10 ** 8),
                        "--device", "cpu"], 2, "must be at most", None),
    ("dpo-no-out", ["dpo", "--base", "{run}", "--pairs", "{pairs_jsonl}"], 2, "--out RUN_DIR is required", None),
    ("dpo-base-not-chat", ["dpo", "--base", "{run}", "--pairs", "{pairs_jsonl}", "--out", "{tmp}/o1"], 2,
     "does not speak the chat format", None),
    ("dpo-no-pairs", ["dpo", "--base", "{sftrun}", "--out", "{tmp}/o2"], 2, "give preference files", None),
    ("reward-no-out", ["reward", "--base", "{run}", "--pairs", "{pairs_jsonl}"], 2, "--out RUN_DIR is required",
     None),
    ("reward-score-missing", ["reward", "score", "{tmp}/nowhere", "--pairs", "{pairs_jsonl}"], 2,
     "no such run directory", None),
    ("eval-missing", ["eval", "{tmp}/nowhere"], 2, "no such run directory", None),
    # ------------------------------------------------------------ sweep, tasks, inspect
    ("sweep-sizes", ["sweep", "--out", "{tmp}/w1", "--sizes", "1x30"], 2, "--sizes: '1x30'", None),
    ("sweep-again", ["sweep", "--out", "{sweep}", "--data", "{shards}", "--sizes", "1x32", "--device", "cpu"], 2,
     "already holds a sweep (trained: 1x32); choose another --out", None),
    ("tasks-show-unknown", ["tasks", "show", "chess"], 2, "chess", None),
    ("tasks-mixture-out-dir", ["tasks", "mixture", "--out", "{adir}", "--n", "2"], 2, "is a directory, not a file",
     None),
    ("tasks-pairs-base-run", ["tasks", "pairs", "{run}", "--out", "{tmp}/x.jsonl", "--device", "cpu"], 2,
     "does not answer chat questions", None),
    ("inspect-tokens-missing", ["inspect", "tokens", "--tokenizer", "{tmp}/none.json", "hi"], 2, "none.json", None),
    ("inspect-attention-layer", ["inspect", "attention", "{run}", "hello", "--layer", "9", "--device", "cpu"], 2,
     "layer", None),
    ("inspect-loss-missing", ["inspect", "loss", "{tmp}/nowhere"], 2, "nowhere", None),
    ("inspect-next-missing", ["inspect", "next", "{tmp}/nowhere", "hi"], 2, "no such run directory", None),
]


def _fill(arg, files):
    return arg.format(**files) if "{" in arg else arg


@pytest.mark.parametrize("command, code, fragment, stdin", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_mistake_is_one_clear_line(files, command, code, fragment, stdin, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # "--device cuda on a CPU-only torch"
    for handler in logging.getLogger("lanternlm").handlers:  # the log goes to this test's stderr
        if type(handler) is logging.StreamHandler:
            monkeypatch.setattr(handler, "stream", sys.stderr)
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8",
                                                          errors="surrogateescape"))
    try:
        got = main([_fill(arg, files) for arg in command])
    except SystemExit as exit_:  # argparse's own errors
        got = exit_.code
    err = capsys.readouterr().err
    assert got == code, err
    assert "Traceback" not in err
    if code == 2 and "usage: lantern" not in err:  # (argparse prints its usage, then its error line)
        assert err.splitlines()[-1].startswith("error: "), err  # the last line says it all
        err = err.splitlines()[-1]
    assert fragment in err


def test_the_table_is_large_enough():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


def test_files_of_a_run_share_one_mode(files):
    modes = {p.relative_to(files["run"]): oct(p.stat().st_mode & 0o777) for p in files["run"].rglob("*") if p.is_file()}
    assert len(set(modes.values())) == 1, modes  # no 0600 from mkstemp beside 0644 from open


# --------------------------------------------------------------------------- lantern chat


def test_chat_survives_a_line_that_is_not_utf8(files, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9\nThe king\n"), encoding="utf-8"))
    assert main(["chat", str(files["run"]), "--temperature", "0", "--max-tokens", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "that line: byte 0xe9 at character 3 is not UTF-8" in out and "type it again" in out
    assert out.count("> ") == 3  # the chat went on: a reply to the second line, then the end of input


class InterruptedOnce(io.StringIO):
    """An output stream where the user presses Ctrl-C while the first reply is printed."""

    def __init__(self):
        super().__init__()
        self.armed = True

    def write(self, text):
        if self.armed and text and not text.startswith(("lantern chat", "> ")):
            self.armed = False
            raise KeyboardInterrupt
        return super().write(text)


def test_chat_ctrl_c_stops_the_reply_not_the_session(files):
    from lanternlm.run import Run
    from lanternlm.sampling import SamplingParams
    from lanternlm.terminal import ChatSession, PlainCompletion, chat_loop

    run = Run(files["run"])
    session = ChatSession(run.engine("cpu"), run.tokenizer, PlainCompletion(), SamplingParams(temperature=0),
                          max_tokens=3)
    out = InterruptedOnce()
    chat_loop(session, io.StringIO("The king\nThe night\n"), out)
    assert "(reply stopped; it is not kept in the conversation)" in out.getvalue()
    assert [h["text"] for h in session.history][0] == "The night"  # only the second exchange is kept
    assert len(session.history) == 2


def test_chat_reply_of_hidden_thinking_only_says_so():
    from lanternlm.terminal import ChatSession, ChatTemplate
    from sft_helpers import train_tokenizer
    from test_thinking import GREEDY, chat_engine

    tokenizer = train_tokenizer(merges=100)
    fmt = ChatTemplate(reasoning="high")
    engine = chat_engine(tokenizer, fmt.prompt_ids(tokenizer, [], "Hi"), "<|think|>hmm, hmm<|/think|><|end|>")
    out = io.StringIO()
    ChatSession(engine, tokenizer, fmt, GREEDY, max_tokens=20).reply("Hi", out)
    assert out.getvalue() == "(the reply was all thinking, hidden: /thinking on shows it)"
    out = io.StringIO()
    ChatSession(engine, tokenizer, fmt, GREEDY, max_tokens=20, show_thinking=True).reply("Hi", out)
    assert out.getvalue() == "[thinking] hmm, hmm [/thinking]\n"
