"""Fault injection: ``kill -9`` at random points of every training stage, then resume; the
final weights must be bit-identical to an uninterrupted run's.

    nice -n 10 python bench/faults.py                      # all stages, 10 kills each
    python bench/faults.py --stages pretrain,rl --kills 3 --no-write

Setup (in ``--work``, a temporary directory by default): a tokenizer trained on task text,
token shards of it, then for each stage its input runs, made once (uninterrupted): the
pretraining reference is the SFT base, the SFT reference the base of DPO, of the reward
model and of RL (judged by that reward model, so that the groups' rewards differ and the
steps change the weights).

Per stage (tiny models, CPU, fixed seed, a step budget, ``--max-minutes none``, a
checkpoint every few steps):

1. **reference**: the stage's ``lantern`` command runs once, uninterrupted, in its own
   process; the times at which ``metrics.jsonl`` gains each line give the start-up time and
   the time per step;
2. **kills**: ``--kills`` points are drawn uniformly over the run's steps (fractional:
   13.4 is 40% of a step's time after step 13 is logged, in its checkpoint write where
   step 13 writes one, else in step 14; 0.4 is 40% into the start-up: imports, data,
   model, restoring the checkpoint) and sorted; for each point the command is started
   (with ``--resume`` when a checkpoint exists, as a user would: without one there is
   nothing to resume), and when this attempt has logged the point's step (or starts past
   it, having resumed from a later checkpoint: then it dies early in its first step) its
   whole process group gets SIGKILL that fraction of the time per step later. Where the
   kill landed is read from what it left: a checkpoint half-written (``checkpoints/.tmp-*``
   or ``.shards-*`` newer than the start), nothing written yet (start-up), or training
   (the last logged step);
3. **finish**: the command resumes once more and runs to the end;
4. **compare**: ``model.safetensors`` (sha256 of the file and every tensor) and the
   logged losses, gradient norms, learning rates and validation scores against the
   reference: equal bit for bit, or the row says what differs.

Stages: ``pretrain``, ``sft``, ``dpo``, ``rl`` (GRPO judged by a reward model) and
``pretrain-fsdp`` (two processes under ``torchrun``, ``--parallel fsdp``: sharded
checkpoints; its reference is the two-process run). Writes section ``faults`` of
``bench/RESULTS.md`` (unless ``--no-write``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import write_section  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
LANTERN = [sys.executable, "-m", "lanternlm.cli", "-q"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "lanternlm.cli", "-q"]
COMMON = ["--max-minutes", "none", "--log-every", "1", "--seed", "0", "--device", "cpu"]
COMPARED = ("train_loss", "grad_norm", "lr", "val_loss", "bpb", "margins", "accuracies", "reward_mean",
            "val_pass1", "val_reward")
STAGES = ("pretrain", "sft", "dpo", "rl", "pretrain-fsdp")


@dataclasses.dataclass
class Stage:
    name: str
    command: list[str]  # without --out / --resume
    steps: int


@dataclasses.dataclass
class Kill:
    point: float  # the drawn point, in steps
    resumed_from: int  # the checkpoint's step the attempt started from (0: a fresh start)
    landed: str  # "start-up", "training, step N", "checkpoint write (step N)" or "finished first"


# --------------------------------------------------------------------------- setup


def prepare(work: Path, only: set[str]) -> dict[str, Stage]:
    """The data and input runs, and each stage's command (see the module docstring)."""
    from lanternlm.data.shards import ShardWriter
    from lanternlm.tasks import make_sft_mixture
    from lanternlm.tokenizer import Tokenizer

    texts = [m["content"] + "\n" + m.get("thinking", "")
             for conv in make_sft_mixture(["letters", "arithmetic", "reverse", "glue"], 60, seed=1) for m in conv]
    tokenizer = Tokenizer.train(texts, vocab_size=256 + 8 + 400)
    shards = work / "shards"
    if not (shards / "manifest.json").exists():
        with ShardWriter(shards, tokenizer, val_fraction=0.2) as writer:
            for text in texts:
                writer.add(text)
            writer.finish()
    model = ["--model", "llama-style-tiny", "--n-layer", "2", "--n-head", "2", "--n-kv-head", "1", "--n-embd", "32",
             "--block-size", "64"]
    pre = ["pretrain", "--preset", "tiny", *model, "--data", str(shards), "--max-steps", "40", "--lr", "1e-2",
           "--warmup-steps", "4", "--eval-every", "10", "--eval-tokens", "512", "--checkpoint-every", "4",
           "--optimizer", "muon", *COMMON]
    stages = {"pretrain": Stage("pretrain", [*LANTERN, *pre, "--batch-size", "4"], 40),
              "pretrain-fsdp": Stage("pretrain-fsdp", [*TORCHRUN, *pre, "--batch-size", "2", "--parallel", "fsdp"], 40)}
    needs_base = only & {"sft", "dpo", "rl"}
    if not needs_base:
        return stages
    base = make_input(work / "inputs" / "base", [*LANTERN, *pre, "--batch-size", "4"])
    sft = ["sft", "--base", str(base), "--examples-per-task", "16", "--val-per-task", "2", "--block-size", "512",
           "--batch-size", "4", "--max-steps", "24", "--lr", "5e-3", "--warmup-steps", "2", "--eval-every", "8",
           "--checkpoint-every", "4", *COMMON]
    stages["sft"] = Stage("sft", [*LANTERN, *sft], 24)
    if not only & {"dpo", "rl"}:
        return stages
    chat = make_input(work / "inputs" / "chat", [*LANTERN, *sft])
    pairs = work / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in arithmetic_pairs(40)), encoding="utf-8")
    tuned = ["--base", str(chat), "--pairs", str(pairs), "--block-size", "256", "--batch-size", "4", "--lr", "1e-3",
             "--warmup-steps", "2", *COMMON]
    stages["dpo"] = Stage("dpo", [*LANTERN, "dpo", *tuned, "--max-steps", "24", "--eval-every", "8",
                                  "--checkpoint-every", "4"], 24)
    if "rl" in only:
        rm = make_input(work / "inputs" / "rm", [*LANTERN, "reward", *tuned, "--max-steps", "8", "--eval-every", "8",
                                                 "--checkpoint-every", "8"])
        rl = ["rl", "--base", str(chat), "--reward", "tasks:letters", "--reward-model", str(rm), "--group-size", "4",
              "--max-tokens", "12", "--eval-questions", "2", "--eval-samples", "2", "--block-size", "256",
              "--batch-size", "4", "--max-steps", "12", "--lr", "1e-3", "--warmup-steps", "1", "--eval-every", "6",
              "--checkpoint-every", "3", "--updates-per-batch", "2", "--no-signal-patience", "1000", *COMMON]
        stages["rl"] = Stage("rl", [*LANTERN, *rl], 12)
    return stages


def arithmetic_pairs(n: int) -> list[dict]:
    rng = random.Random(0)
    pairs = []
    for _ in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        pairs.append({"prompt": f"What is {a} + {b}?", "chosen": f"{a} + {b} = {a + b}.",
                      "rejected": f"{a} + {b} = {a + b + rng.randint(1, 9)}.", "reasoning": "none"})
    return pairs


def make_input(out: Path, command: list[str]) -> Path:
    if not (out / "model.safetensors").exists():
        subprocess.run([*command, "--out", str(out)], env=ENV, check=True, stdout=subprocess.DEVNULL)
    return out


# --------------------------------------------------------------------------- one stage


def launch(command: list[str], out: Path, resume: bool) -> subprocess.Popen:
    """The stage command in a process group of its own (torchrun's workers included)."""
    return subprocess.Popen([*command, "--out", str(out), *(["--resume"] if resume else [])], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def checkpoint_step(out: Path) -> int:
    latest = out / "checkpoints" / "latest"
    return int(latest.read_text().strip().split("_")[1]) if latest.exists() else 0


def reference(stage: Stage, out: Path) -> tuple[float, float, float]:
    """Run uninterrupted; returns (start-up s, s per step, wall s), from when log lines appear."""
    metrics = out / "metrics.jsonl"
    t0 = time.perf_counter()
    proc = launch(stage.command, out, resume=False)
    seen, times = 0, []
    while proc.poll() is None:
        lines = metrics.read_bytes().count(b"\n") if metrics.exists() else 0
        if lines > seen:
            times += [time.perf_counter() - t0] * (lines - seen)
            seen = lines
        time.sleep(0.002)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{stage.name}: the reference run failed:\n{proc.stderr.read()}")
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    step = gaps[len(gaps) // 2] if gaps else wall / stage.steps
    return (max(0.0, times[0] - step) if times else wall), step, wall


def landed(out: Path, started: float) -> str:
    """Where a kill landed, from what the killed process left (module docstring)."""
    ckpts = out / "checkpoints"
    partial = [p for p in (ckpts.iterdir() if ckpts.exists() else [])
               if p.name.startswith((".tmp-", ".shards-")) and p.stat().st_mtime >= started]
    metrics = out / "metrics.jsonl"
    if partial:
        return f"checkpoint write (step {int(partial[0].name.rsplit('_', 1)[1])})"
    if not metrics.exists() or metrics.stat().st_mtime < started:
        return "start-up"
    lines = metrics.read_text(encoding="utf-8").splitlines()
    return f"training, step {json.loads(lines[-1])['step']}" if lines else "start-up"


def logged_step(metrics: Path, started: float) -> int | None:
    """The last step this attempt has logged: None while ``metrics.jsonl`` is older than
    its start (a resumed run first cuts the log back to its checkpoint, a fresh one removes
    it; until then the lines are the killed attempt's)."""
    try:
        if metrics.stat().st_mtime < started:
            return None
        tail = metrics.read_bytes()[-4096:].splitlines()
    except FileNotFoundError:
        return None
    return json.loads(tail[-1])["step"] if tail and tail[-1].endswith(b"}") else None


def faulted(stage: Stage, out: Path, points: list[float], startup: float, step_s: float) -> tuple[list[Kill], int]:
    """Kill an attempt at each point, then finish; returns the kills and the step the
    finishing attempt resumed from. Point ``s.f`` (``f`` in [0, 1)): once this attempt has
    logged step ``s`` (or its log starts past it), ``f`` times the time per step later;
    point ``0.f``: ``f`` times the start-up time after the start."""
    kills, metrics = [], out / "metrics.jsonl"
    for point in points:
        resumed_from = checkpoint_step(out)
        started = time.time() - 0.01  # (mtimes are coarser than time.time on some file systems)
        proc = launch(stage.command, out, resume=resumed_from > 0)
        if point < 1:  # in the start-up
            time.sleep(point * startup)
        while point >= 1 and proc.poll() is None and ((step := logged_step(metrics, started)) is None
                                                     or step < int(point)):
            time.sleep(0.001)
        if point >= 1 and proc.poll() is None:
            time.sleep((point - int(point)) * step_s)
        if proc.poll() is not None:  # it ended first
            if proc.returncode != 0:
                raise SystemExit(f"{stage.name}: an attempt failed (exit {proc.returncode}):\n{proc.stderr.read()}")
            kills.append(Kill(point, resumed_from, "finished first"))
            return kills, resumed_from
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills.append(Kill(point, resumed_from, landed(out, started)))
    final_from = checkpoint_step(out)
    proc = launch(stage.command, out, resume=final_from > 0)
    if proc.wait() != 0:
        raise SystemExit(f"{stage.name}: the last resume failed (exit {proc.returncode}):\n{proc.stderr.read()}")
    return kills, final_from


def compare(ref: Path, run: Path) -> tuple[bool, bool, str]:
    """(weights equal, log equal, what differs)."""
    from safetensors.torch import load_file

    from lanternlm.train.metrics import read_metrics

    a, b = load_file(ref / "model.safetensors"), load_file(run / "model.safetensors")
    tensors = [name for name in a if name not in b or not a[name].equal(b[name])] + sorted(set(b) - set(a))
    same_file = _sha256(ref / "model.safetensors") == _sha256(run / "model.safetensors")
    la, lb = read_metrics(ref / "metrics.jsonl"), read_metrics(run / "metrics.jsonl")
    keys = [k for k in COMPARED if any(k in r for r in la)]
    log_same = ([r["step"] for r in la] == [r["step"] for r in lb]
                and all([r.get(k) for r in la] == [r.get(k) for r in lb] for k in keys))
    notes = []
    if tensors or not same_file:
        notes.append(f"tensors differ: {', '.join(tensors[:4]) or 'none (file bytes differ)'}")
    if not log_same:
        notes.append("log differs: " + ", ".join(k for k in keys if [r.get(k) for r in la] != [r.get(k) for r in lb]))
    return not tensors and same_file, log_same, "; ".join(notes)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {STAGES}")
    parser.add_argument("--kills", type=int, default=10, help="kill -9 points per stage")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    parser.add_argument("--work", type=Path, default=None, help="working directory (default: a temporary one)")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args()
    names = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(names) - set(STAGES))
    if unknown:
        parser.error(f"--stages: unknown {unknown}; choose from {STAGES}")

    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="lantern-faults-")
    work = args.work or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    stages = prepare(work, set(names))
    rows, details, all_same = [], [], True
    rng = random.Random(args.seed)
    for name in names:
        stage = stages[name]
        ref, run = work / name / "ref", work / name / "faulted"
        for d in (ref, run):
            subprocess.run(["rm", "-rf", str(d)], check=True)
        startup, step_s, wall = reference(stage, ref)
        points = sorted(rng.uniform(0, stage.steps) for _ in range(args.kills))
        t0 = time.perf_counter()
        kills, final_from = faulted(stage, run, points, startup, step_s)
        spent = time.perf_counter() - t0
        weights_same, log_same, notes = compare(ref, run)
        all_same &= weights_same and log_same
        phases = [k.landed.split(",")[0].split(" (")[0] for k in kills]
        where = " / ".join(str(phases.count(p)) for p in ("start-up", "training", "checkpoint write"))
        if "finished first" in phases:
            where += f" ({phases.count('finished first')} finished before its kill)"
        resumes = ", ".join(str(step) for step in [k.resumed_from for k in kills[1:]] + [final_from])
        rows.append(f"| {name} | {stage.steps} | {len(kills)} | {where} | {resumes} | "
                    f"{'**yes**' if weights_same else 'NO'} | {'yes' if log_same else 'NO'} | "
                    f"{wall:.0f} s / {spent:.0f} s |" + (f" {notes}" if notes else ""))
        details.append(f"- {name}: " + "; ".join(f"{k.point:.1f} → {k.landed}" for k in kills))
        print(rows[-1], flush=True)

    body = "\n".join([
        "## Fault injection: kill -9 and resume, every stage (`bench/faults.py`)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, 1 torch thread per process, under `nice -n 10`. "
        "Tiny models (2 layers x 32 wide; SFT from a 40-step pretraining run, DPO and RL from a 24-step SFT run, "
        f"RL judged by an 8-step reward model), CPU, seed 0, a step "
        f"budget and no time budget, a checkpoint every 3-4 steps. Per stage: {args.kills} points drawn uniformly "
        f"over the run's steps (seed {args.seed}); at each the stage's command (started with `--resume` once a "
        "checkpoint exists) gets SIGKILL to its process group; then it resumes and finishes. `pretrain-fsdp`: 2 "
        "processes under torchrun with `--parallel fsdp` (sharded checkpoints), against an uninterrupted 2-process run.",
        "",
        "| stage | steps | kills | landed in start-up / training / checkpoint write | resumed from (step) | "
        "final weights bit-identical | log bit-identical | uninterrupted / with kills |",
        "|---|---:|---:|---|---|---|---|---:|",
        *rows,
        "",
        "Where each kill landed (point in steps → what the killed process left):",
        "",
        *details,
        "",
        f"Weights: sha256 of `model.safetensors` and every tensor equal; log: the steps and every logged "
        f"{', '.join(f'`{k}`' for k in COMPARED[:5])} (and the stage's own scores) equal as floats. "
        f"Total {time.perf_counter() - t_all:.0f} s. Command: `nice -n 10 python bench/faults.py"
        f"{' --stages ' + args.stages if args.stages != ','.join(STAGES) else ''}"
        f"{' --kills ' + str(args.kills) if args.kills != 10 else ''}`.",
    ])
    print(body)
    if not args.no_write:
        write_section("faults", body)
    if tmp is not None:
        tmp.cleanup()
    sys.exit(0 if all_same else 1)


if __name__ == "__main__":
    main()
