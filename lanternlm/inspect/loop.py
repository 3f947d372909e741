"""View 5, the loop: generation one token at a time (context → candidates → chosen token).

The trace is read from the engine's streaming events (:meth:`lanternlm.engine.Engine.stream`
with ``top_alternatives``): the candidates are those the engine's sampler saw, and the
chosen token is the one it drew. Rendered as a table, an image strip (one row per step)
and an animated GIF (one frame per step, matplotlib's PillowWriter).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LanternError
from ..sampling import SamplingParams
from .common import label, output_path, prompt_ids, pyplot, save


@dataclass
class LoopStep:
    """Step ``index``: the text so far, the top candidates ``(token, label, raw probability,
    probability after the filters)`` and the chosen token."""

    index: int
    context: str
    candidates: list[tuple[int, str, float, float]]
    token: int
    token_label: str
    probability: float  # raw probability of the chosen token
    finish_reason: str | None = None


@dataclass
class LoopTrace:
    prompt: str
    sampling: dict
    steps: list[LoopStep] = field(default_factory=list)
    text: str = ""  # the prompt and everything generated


def generation_trace(engine, tokenizer, text: str, steps: int = 8,
                     sampling: SamplingParams = SamplingParams(temperature=0.0),
                     top: int = 5, bos: bool = True) -> LoopTrace:
    """Generate up to ``steps`` tokens after ``text`` and record every step."""
    import math

    from ..generate import default_stop_tokens

    if steps < 1 or top < 1:
        raise LanternError(f"steps={steps}, top={top}: both must be >= 1")
    ids = prompt_ids(tokenizer, text, engine.model, bos)
    trace = LoopTrace(text, {k: v for k, v in vars(sampling).items()})
    generated: list[int] = []
    for event in engine.stream([ids], max_tokens=steps, sampling=sampling,
                               stop_tokens=default_stop_tokens(tokenizer), top_alternatives=top):
        context = text + tokenizer.decode(generated)
        filtered = dict(event.filtered_top or [])
        candidates = [(t, label(tokenizer, t), p, filtered.get(t, 0.0)) for t, p in event.raw_top or []]
        if event.token not in [c[0] for c in candidates]:  # a sampled token outside the top: shown last
            candidates.append((event.token, label(tokenizer, event.token), math.exp(event.logprob),
                               math.exp(event.sampled_logprob)))
        trace.steps.append(LoopStep(event.index, context, candidates, event.token,
                                    label(tokenizer, event.token), math.exp(event.logprob),
                                    event.finish_reason))
        if event.finish_reason != "stop":
            generated.append(event.token)
    trace.text = text + tokenizer.decode(generated)
    return trace


def _tail(text: str, chars: int) -> str:
    """The end of ``text`` on one line, ``…`` marking a cut.

    >>> _tail("once upon\\na time", 8)
    '…⏎a time'
    """
    flat = text.replace("\n", "⏎")
    return flat if len(flat) <= chars else "…" + flat[-(chars - 1):]


def render_loop(trace: LoopTrace, context_chars: int = 40) -> str:
    """One line per step: the end of the context, the candidates, the pick."""
    lines = [f"{'step':>4}  {'context (end)':<{context_chars}}  top candidates (raw probability)  →  chosen"]
    for s in trace.steps:
        cands = ", ".join(f"{lab} {p:.0%}" for _, lab, p, _ in s.candidates)
        end = f"  [{s.finish_reason}]" if s.finish_reason else ""
        lines.append(f"{s.index + 1:>4}  {_tail(s.context, context_chars):<{context_chars}}  "
                     f"{cands}  →  {s.token_label} ({s.probability:.0%}){end}")
    lines.append(f"result: {trace.text!r}")
    return "\n".join(lines)


def _draw_step(ax_text, ax_bars, step: LoopStep, context_chars: int) -> None:
    ax_text.axis("off")
    ax_text.text(0.0, 0.6, f"step {step.index + 1}:  {_tail(step.context, context_chars)}",
                 fontsize=9, family="monospace", va="center", ha="left")
    ax_text.text(0.0, 0.3, f"  → chose {step.token_label} ({step.probability:.0%})", fontsize=9,
                 family="monospace", va="center", ha="left", color="tab:red")
    labels = [lab for _, lab, _, _ in step.candidates]
    probs = [p for _, _, p, _ in step.candidates]
    colours = ["tab:red" if t == step.token else "tab:blue" for t, _, _, _ in step.candidates]
    ax_bars.barh(range(len(probs)), probs, color=colours)
    ax_bars.set_yticks(range(len(probs)), labels, fontsize=8)
    ax_bars.invert_yaxis()
    ax_bars.set_xlim(0, 1)
    ax_bars.tick_params(axis="x", labelsize=7)
    for i, p in enumerate(probs):
        ax_bars.text(min(p + 0.02, 0.85), i, f"{p:.0%}", va="center", fontsize=7)


def plot_loop_strip(trace: LoopTrace, path: str | os.PathLike, context_chars: int = 48,
                    max_steps: int = 12) -> Path:
    """An image strip: per step, the context (left) and the candidates' bars with the
    chosen token in red (right)."""
    if not trace.steps:
        raise LanternError("the trace has no steps")
    plt = pyplot()
    steps = trace.steps[:max_steps]
    top = max(len(s.candidates) for s in steps)
    fig, axes = plt.subplots(len(steps), 2, figsize=(11, (0.22 * top + 0.5) * len(steps) + 0.8),
                             dpi=110, gridspec_kw={"width_ratios": [1.6, 1]}, squeeze=False,
                             constrained_layout=True)
    for (ax_text, ax_bars), step in zip(axes, steps):
        _draw_step(ax_text, ax_bars, step, context_chars)
    axes[-1][1].set_xlabel("probability (red: the token chosen)")
    fig.suptitle("the generation loop: context → next-token probabilities → chosen token", fontsize=11)
    return save(fig, path)


def write_loop_gif(trace: LoopTrace, path: str | os.PathLike, context_chars: int = 48,
                   seconds_per_step: float = 1.2) -> Path:
    """An animated GIF, one frame per step (the seed's next-word prediction animation)."""
    if not trace.steps:
        raise LanternError("the trace has no steps")
    plt = pyplot()
    from matplotlib.animation import FuncAnimation, PillowWriter

    top = max(len(s.candidates) for s in trace.steps)
    fig, (ax_text, ax_bars) = plt.subplots(2, 1, figsize=(8, 0.3 * top + 2.2), dpi=90,
                                           gridspec_kw={"height_ratios": [1, 2.5]})

    def frame(k: int):
        ax_text.clear()
        ax_bars.clear()
        _draw_step(ax_text, ax_bars, trace.steps[k], context_chars)
        ax_bars.set_xlabel("probability (red: the token chosen)")
        fig.tight_layout()
        return []

    animation = FuncAnimation(fig, frame, frames=len(trace.steps), blit=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    animation.save(path, writer=PillowWriter(fps=1 / seconds_per_step))
    plt.close(fig)
    return path


def loop_command(run: str, text: str, steps: int = 8, sampling: SamplingParams = SamplingParams(temperature=0.0),
                 top: int = 5, out: str | None = None, device: str | None = None) -> str:
    """``lantern inspect generate``: the step table; writes ``loop.png`` and ``loop.gif``."""
    from ..run import Run

    loaded = Run(run)
    engine, tokenizer = loaded.engine(device), loaded.tokenizer
    trace = generation_trace(engine, tokenizer, text, steps, sampling, top)
    folder = out or Path(run) / "inspect"
    png = plot_loop_strip(trace, output_path(folder, "loop.png"))
    gif = write_loop_gif(trace, output_path(folder, "loop.gif"))
    return render_loop(trace) + f"\nwrote {png}\nwrote {gif}"
